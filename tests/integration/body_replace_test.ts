// A response_body rule's `replace` (nginx's sub_filter) through the real proxy to a real upstream
// that streams its body in pieces cut inside the strings to find.
import assert from "node:assert/strict";
import { ROOT, startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { gzipSync } from "node:zlib";

const enc = new TextEncoder();

/** A body sent in these pieces, each once the client has taken the one before. */
function pieces(...parts: string[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (i < parts.length) ctl.enqueue(enc.encode(parts[i++]));
      else ctl.close();
    },
  }, { highWaterMark: 0 });
}

const PAGE = [
  "<html><body>see http://back",
  "end.internal/a and caf",
  "é ",
  "http://backend.internal",
  "</bo",
  "dy></html>",
];

async function setup(opts: { tls?: boolean } = {}) {
  const seen: { path: string; ae: string | null }[] = [];
  let hits = 0;
  const up = await startUpstream((req) => {
    const path = new URL(req.url).pathname;
    seen.push({ path, ae: req.headers.get("accept-encoding") });
    const html = { "content-type": "text/html; charset=utf-8" };
    switch (path) {
      case "/page":
        return new Response(pieces(...PAGE), {
          headers: { ...html, etag: '"v1"', "last-modified": "Tue, 01 Jan 2030 00:00:00 GMT" },
        });
      case "/fixed":
        // A declared length the replaced body no longer has.
        return new Response("<p>http://backend.internal</p>", {
          headers: { ...html, "accept-ranges": "bytes" },
        });
      case "/json":
        return Response.json({ url: "http://backend.internal" });
      case "/coded":
        // Labelled as coded: Prox cannot see the strings and passes it on as it is.
        return new Response("http://backend.internal", {
          headers: { ...html, "content-encoding": "x-test" },
        });
      case "/part":
        return new Response("http://backend.internal", {
          status: 206,
          headers: { ...html, "content-range": "bytes 0-22/100" },
        });
      case "/same":
        return new Response(null, { status: 304, headers: { etag: '"v1"' } });
      case "/onex":
        return new Response(pieces("xx", "x", "x"), { headers: { "content-type": "text/plain" } });
      case "/zed":
        hits++;
        return new Response(pieces("old ".repeat(200), "ol", "d"), {
          headers: { ...html, "cache-control": "max-age=60" },
        });
    }
    return new Response("none", { status: 404 });
  });
  const TLS = `${ROOT}/tests/fixtures/tls`;
  const tls = opts.tls ? `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }` : "";
  const prox = await startProxy(
    `
${tls}
health_check: { enabled: false }
routes:
  "/r":
    type: proxy
    target: "${up.url}"
    response_body:
      replace:
        - { find: "http://backend.internal", replace: "https://{host}" }
        - { find: "café", replace: "thé" }
        - { find: "</body>", replace: "<p>{query}</p></body>" }
  "/once":
    type: proxy
    target: "${up.url}"
    response_body: { replace: [{ find: "x", replace: "y" }], once: true, types: ["text/*"] }
  "/z":
    type: proxy
    target: "${up.url}"
    compress: true
    cache: true
    response_body:
      replace: [{ find: "old", replace: "new" }]
`,
    { tls: opts.tls },
  );
  return {
    up,
    prox,
    seen,
    hits: () => hits,
    async [Symbol.asyncDispose]() {
      await prox[Symbol.asyncDispose]();
      await up[Symbol.asyncDispose]();
    },
  };
}

Deno.test("response_body replace: strings cut across pieces are replaced as the body streams", async () => {
  await using s = await setup();
  const host = `127.0.0.1:${s.prox.port}`;
  const res = await fetch(`${s.prox.url}/r/page?x=1&y=2`);
  assert.equal(res.status, 200);
  assert.equal(
    await res.text(),
    `<html><body>see https://${host}/a and thé https://${host}<p>x=1&amp;y=2</p></body></html>`,
  );
  // The upstream was asked for an uncoded body, whatever the client accepts.
  assert.equal(s.seen[0].ae, "identity");
  assert.equal(res.headers.get("etag"), 'W/"v1"');
  assert.equal(res.headers.get("last-modified"), null);
  assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");

  const fixed = await fetch(`${s.prox.url}/r/fixed`);
  assert.equal(fixed.headers.get("content-length"), null);
  assert.equal(fixed.headers.get("accept-ranges"), null);
  assert.equal(await fixed.text(), `<p>https://${host}</p>`);

  // HEAD: the fields a GET gets, no body.
  const head = await fetch(`${s.prox.url}/r/page`, { method: "HEAD" });
  assert.equal(head.headers.get("etag"), 'W/"v1"');
  assert.equal(head.headers.get("last-modified"), null);
  assert.equal(await head.text(), "");
});

Deno.test("response_body replace: other types, coded bodies, 206 and 304 pass as they are", async () => {
  await using s = await setup();
  const json = await fetch(`${s.prox.url}/r/json`);
  assert.deepEqual(await json.json(), { url: "http://backend.internal" });
  const coded = await fetch(`${s.prox.url}/r/coded`);
  assert.equal(coded.headers.get("content-encoding"), "x-test");
  assert.equal(await coded.text(), "http://backend.internal");
  const part = await fetch(`${s.prox.url}/r/part`);
  assert.equal(part.status, 206);
  assert.equal(part.headers.get("content-range"), "bytes 0-22/100");
  assert.equal(await part.text(), "http://backend.internal");
  const same = await fetch(`${s.prox.url}/r/same`);
  assert.equal(same.status, 304);
  assert.equal(same.headers.get("etag"), '"v1"');
  await same.body?.cancel();
});

Deno.test("response_body replace: once, and types beyond the default text/html", async () => {
  await using s = await setup();
  const res = await fetch(`${s.prox.url}/once/onex`);
  assert.equal(await res.text(), "yxxx");
});

Deno.test("response_body replace: the cache stores the upstream's body, each answer is replaced, then compressed", async () => {
  await using s = await setup();
  const want = "new ".repeat(200) + "new";
  for (const status of [/fwd=uri-miss/, /hit/]) {
    const res = await fetch(`${s.prox.url}/z/zed`, { headers: { "accept-encoding": "gzip" } });
    assert.match(res.headers.get("cache-status")!, status);
    assert.equal(res.headers.get("content-encoding"), "gzip");
    // fetch decodes it.
    assert.equal(await res.text(), want);
  }
  assert.equal(s.hits(), 1);
  assert.equal(s.seen.find((x) => x.path === "/zed")!.ae, "identity");
});

Deno.test("response_body replace over HTTP/2", async () => {
  await using s = await setup({ tls: true });
  const ca = await Deno.readTextFile(`${ROOT}/tests/fixtures/tls/ca.pem`);
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const res = await fetch(`https://localhost:${s.prox.port}/r/fixed`, { client });
    assert.equal(res.headers.get("content-length"), null);
    assert.equal(await res.text(), `<p>https://localhost:${s.prox.port}</p>`);
  } finally {
    client.close();
  }
});

Deno.test("response_body replace on a static route: an HTML file's precompressed sibling is not sent in its place", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${root}/page.html`, "<p>old</p>");
    // A sibling holding the same page gzipped: sent as it is, the rule could not see into it.
    await Deno.writeFile(`${root}/page.html.gz`, gzipSync(enc.encode("<p>old</p>")));
    await Deno.writeTextFile(`${root}/app.js`, "old");
    await Deno.writeFile(`${root}/app.js.gz`, gzipSync(enc.encode("old")));
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: static
    root: "${root}"
    precompressed: true
    response_body:
      replace: [{ find: "old", replace: "new" }]
`);
    const page = await fetch(`${prox.url}/page.html`, { headers: { "accept-encoding": "gzip" } });
    assert.equal(page.headers.get("content-encoding"), null);
    assert.equal(await page.text(), "<p>new</p>");
    // Other types still get their sibling (the rule does not apply to them).
    const js = await fetch(`${prox.url}/app.js`, { headers: { "accept-encoding": "gzip" } });
    assert.equal(js.headers.get("content-encoding"), "gzip");
    assert.equal(await js.text(), "old");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
