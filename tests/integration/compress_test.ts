// Response compression (`compress`) through the real proxy, with curl as the client: raw bytes
// decoded here, headers as sent, an event stream read event by event.

import assert from "node:assert/strict";
import zlib from "node:zlib";
import { interopTest, ROOT, run, startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";

const BIG = JSON.stringify(
  Array.from({ length: 2000 }, (_, i) => ({ id: i, name: `item ${i}`, tags: ["a", "b"] })),
);

/** An upstream answering by path, and a Prox in front of it with `compress: true`. */
async function setup(head = "") {
  // Event streams waiting to send their second event, oldest first.
  const waiting: (() => void)[] = [];
  const release = () => waiting.shift()?.();
  const up = await startUpstream((req) => {
    const path = new URL(req.url).pathname;
    const json = { "content-type": "application/json", etag: '"v1"' };
    switch (path) {
      case "/big":
        // If-None-Match compares weakly (RFC 9110 §13.1.2): W/"v1", the compressed tag, matches.
        if (/^(W\/)?"v1"$/.test(req.headers.get("if-none-match") ?? "")) {
          return new Response(null, { status: 304, headers: { etag: '"v1"', vary: "Origin" } });
        }
        return new Response(BIG, { headers: { ...json, vary: "Origin" } });
      case "/small":
        return new Response('{"ok":true}', { headers: json });
      case "/png":
        return new Response(new Uint8Array(5000), { headers: { "content-type": "image/png" } });
      case "/gzipped":
        return new Response(zlib.gzipSync(BIG), {
          headers: { ...json, "content-encoding": "gzip" },
        });
      case "/no-transform":
        return new Response(BIG, { headers: { ...json, "cache-control": "no-transform" } });
      case "/partial":
        return new Response(BIG.slice(0, 2000), {
          status: 206,
          headers: { ...json, "content-range": `bytes 0-1999/${BIG.length}` },
        });
      case "/events": {
        const enc = new TextEncoder();
        const body = new ReadableStream<Uint8Array>({
          async start(c) {
            c.enqueue(enc.encode("data: one\n\n"));
            // The second event only once the client has seen the first.
            await new Promise<void>((r) => waiting.push(r));
            c.enqueue(enc.encode("data: two\n\n"));
            c.close();
          },
        });
        return new Response(body, { headers: { "content-type": "text/event-stream" } });
      }
      default:
        return new Response("nope", { status: 404 });
    }
  });
  const proxy = await startProxy(
    `${head}routes:
  /:
    type: proxy
    target: ${up.url}
    compress: true
`,
    head ? { keepListen: true, tls: true } : {},
  );
  return {
    up,
    proxy,
    release,
    async [Symbol.asyncDispose]() {
      while (waiting.length) release();
      await proxy[Symbol.asyncDispose]();
      await up[Symbol.asyncDispose]();
    },
  };
}

/** GET (or HEAD) with curl, no decoding: status, lower-case header map, raw body. */
async function curl(url: string, args: string[] = []) {
  const dir = await Deno.makeTempDir();
  try {
    const r = await run("curl", ["-sS", "-D", `${dir}/h`, "-o", `${dir}/b`, ...args, url]);
    assert.equal(r.code, 0, r.stderr);
    const lines = (await Deno.readTextFile(`${dir}/h`)).trim().split("\r\n");
    const headers = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const at = l.indexOf(":");
      headers.set(l.slice(0, at).toLowerCase(), l.slice(at + 1).trim());
    }
    const body = await Deno.readFile(`${dir}/b`).catch(() => new Uint8Array());
    return { status: Number(lines[0].split(" ")[1]), headers, body };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const DECODE = {
  gzip: (b: Uint8Array) => zlib.gunzipSync(b),
  br: (b: Uint8Array) => zlib.brotliDecompressSync(b),
  zstd: (b: Uint8Array) => zlib.zstdDecompressSync(b),
};

interopTest("compress: each coding over HTTP/1.1 and h2c decodes to the upstream's bytes", [
  "curl",
], async () => {
  await using s = await setup();
  for (const http of ["--http1.1", "--http2-prior-knowledge"]) {
    for (const coding of ["gzip", "br", "zstd"] as const) {
      const r = await curl(`${s.proxy.url}/big`, [http, "-H", `Accept-Encoding: ${coding}`]);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("content-encoding"), coding, `${http} ${coding}`);
      assert.equal(r.headers.get("vary"), "Origin, Accept-Encoding");
      assert.equal(r.headers.get("etag"), 'W/"v1"');
      assert.equal(r.headers.get("content-length"), undefined);
      assert.ok(r.body.byteLength < BIG.length / 4, `${coding}: ${r.body.byteLength} bytes`);
      assert.equal(new TextDecoder().decode(DECODE[coding](r.body)), BIG);
    }
  }
  // The client's preference, then the route's order (zstd, br, gzip) on a tie.
  const pick = async (ae: string) =>
    (await curl(`${s.proxy.url}/big`, ["-H", `Accept-Encoding: ${ae}`])).headers.get(
      "content-encoding",
    );
  assert.equal(await pick("gzip, br;q=0.8"), "gzip");
  assert.equal(await pick("gzip, br, zstd"), "zstd");
  assert.equal(await pick("*;q=0.5, zstd;q=0"), "br");
  // curl's own negotiation and decoding.
  const auto = await run("curl", ["-sS", "--compressed", `${s.proxy.url}/big`]);
  assert.equal(auto.stdout, BIG);
});

interopTest("compress: what is left as it is, and HEAD", ["curl"], async () => {
  await using s = await setup();
  const ae = ["-H", "Accept-Encoding: gzip, br, zstd"];
  const plain = async (path: string, args = ae) => {
    const r = await curl(`${s.proxy.url}${path}`, args);
    assert.equal(r.headers.get("content-encoding"), undefined, path);
    return r;
  };
  // Too small, not a compressible type, compressed already, no-transform, a range: no Vary
  // added, since Accept-Encoding did not decide.
  assert.equal((await plain("/small")).headers.get("vary"), undefined);
  assert.equal((await plain("/png")).body.byteLength, 5000);
  const gz = await curl(`${s.proxy.url}/gzipped`, ae);
  assert.equal(gz.headers.get("content-encoding"), "gzip");
  assert.equal(new TextDecoder().decode(zlib.gunzipSync(gz.body)), BIG, "not encoded twice");
  assert.equal((await plain("/no-transform")).body.byteLength, BIG.length);
  assert.equal((await plain("/partial")).status, 206);
  // No acceptable coding: identity, but caches must know the answer depends on the header.
  const none = await plain("/big", ["-H", "Accept-Encoding: identity"]);
  assert.equal(none.headers.get("vary"), "Origin, Accept-Encoding");
  assert.equal(none.headers.get("etag"), '"v1"');
  assert.equal(none.headers.get("content-length"), String(BIG.length));
  // HEAD: the fields GET would have, no length.
  const head = await curl(`${s.proxy.url}/big`, ["-I", ...ae]);
  assert.equal(head.headers.get("content-encoding"), "zstd");
  assert.equal(head.headers.get("content-length"), undefined);
  assert.equal(head.headers.get("etag"), 'W/"v1"');
});

interopTest("compress: a server-sent event arrives before the upstream sends the next", [
  "curl",
], async () => {
  await using s = await setup();
  for (const coding of ["gzip", "br", "zstd"]) {
    const child = new Deno.Command("curl", {
      args: [
        "-sS",
        "-N",
        "--max-time",
        "10",
        "--compressed",
        "-H",
        `Accept-Encoding: ${coding}`,
        `${s.proxy.url}/events`,
      ],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    let seen = "";
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) {
      seen += dec.decode(chunk, { stream: true });
      // The upstream holds the second event until the first has reached curl, decoded.
      if (seen === "data: one\n\n") s.release();
    }
    assert.equal(seen, "data: one\n\ndata: two\n\n", coding);
    assert.equal((await child.status).code, 0);
  }
});

interopTest("compress: a static route compresses what has no precompressed sibling", [
  "curl",
], async () => {
  const root = await Deno.makeTempDir({ prefix: "prox-compress-" });
  try {
    await Deno.writeTextFile(`${root}/app.js`, BIG);
    await Deno.writeTextFile(`${root}/pre.js`, BIG);
    await Deno.writeFile(`${root}/pre.js.gz`, zlib.gzipSync("precompressed"));
    await using proxy = await startProxy(`routes:
  /:
    type: static
    root: ${JSON.stringify(root)}
    precompressed: true
    compress: { algorithms: [gzip] }
`);
    const ae = ["-H", "Accept-Encoding: gzip"];
    const js = await curl(`${proxy.url}/app.js`, ae);
    assert.equal(js.headers.get("content-encoding"), "gzip");
    assert.equal(js.headers.get("accept-ranges"), undefined);
    assert.equal(js.headers.get("vary"), "Accept-Encoding");
    assert.equal(new TextDecoder().decode(zlib.gunzipSync(js.body)), BIG);
    const pre = await curl(`${proxy.url}/pre.js`, ae);
    assert.equal(new TextDecoder().decode(zlib.gunzipSync(pre.body)), "precompressed");
    // A range is served from the identity file, as before.
    const range = await curl(`${proxy.url}/app.js`, [...ae, "-r", "0-9"]);
    assert.equal(range.status, 206);
    assert.equal(new TextDecoder().decode(range.body), BIG.slice(0, 10));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("compress: HTTP/3 answers are compressed alike", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  await using s = await setup(`listen_addr: "127.0.0.1:0"
tls: { cert_path: "${tls}/cert.pem", key_path: "${tls}/key.pem" }
protocols: { http3_enabled: true }
health_check: { enabled: false }
`);
  await using h3 = await connectH3({
    hostname: "127.0.0.1",
    port: s.proxy.port,
    caCerts: [await Deno.readTextFile(`${tls}/ca.pem`)],
  });
  const res = await h3.request("/big", { headers: { "accept-encoding": "br" } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-encoding"), "br");
  assert.equal(res.headers.get("content-length"), null);
  assert.equal(new TextDecoder().decode(DECODE.br(res.body)), BIG);
});

Deno.test("compress: a 304 carries the Vary and ETag its 200 would have, proxied and static", async () => {
  await using s = await setup();
  const get = async (url: string, headers: Record<string, string>) => {
    const res = await fetch(url, { headers });
    await res.body?.cancel();
    return { status: res.status, vary: res.headers.get("vary"), etag: res.headers.get("etag") };
  };
  // The 200 went out compressed as W/"v1" with Vary; revalidating it gets the same fields.
  const big = `${s.proxy.url}/big`;
  const ok = await get(big, { "accept-encoding": "gzip" });
  assert.deepEqual(ok, { status: 200, vary: "Origin, Accept-Encoding", etag: 'W/"v1"' });
  assert.deepEqual(await get(big, { "accept-encoding": "gzip", "if-none-match": 'W/"v1"' }), {
    ...ok,
    status: 304,
  });
  // No coding acceptable: the 200 was identity with the upstream's tag, and Vary.
  assert.deepEqual(await get(big, { "accept-encoding": "identity", "if-none-match": '"v1"' }), {
    status: 304,
    vary: "Origin, Accept-Encoding",
    etag: '"v1"',
  });

  const root = await Deno.makeTempDir({ prefix: "prox-compress-" });
  try {
    await Deno.writeTextFile(`${root}/app.js`, BIG);
    await Deno.writeFile(`${root}/logo.png`, new Uint8Array(5000));
    await Deno.writeTextFile(`${root}/tiny.js`, "1");
    await using proxy = await startProxy(`routes:
  /: { type: static, root: ${JSON.stringify(root)}, compress: true }
`);
    const cases: [string, string | null][] = [
      ["app.js", "Accept-Encoding"],
      ["logo.png", null],
      ["tiny.js", null],
    ];
    for (const [file, vary] of cases) {
      const url = `${proxy.url}/${file}`;
      const first = await get(url, { "accept-encoding": "br" });
      assert.equal(first.vary, vary, file);
      const again = await get(url, { "accept-encoding": "br", "if-none-match": first.etag! });
      assert.deepEqual(again, { ...first, status: 304 }, file);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("compress: a proxied 304 with content-length: 0 still gets the 200's Vary and ETag", async () => {
  // Deno.serve drops a 304's Content-Length; some servers send `0` there (no 200's size).
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      (async () => {
        const buf = new Uint8Array(8192);
        while ((await conn.read(buf).catch(() => null)) !== null) {
          await conn.write(new TextEncoder().encode(
            'HTTP/1.1 304 Not Modified\r\netag: "v1"\r\ncontent-length: 0\r\n\r\n',
          )).catch(() => {});
        }
      })();
    }
  })();
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    await using proxy = await startProxy(`health_check: { enabled: false }
routes:
  /: { type: proxy, target: "http://127.0.0.1:${port}", compress: true }
`);
    const res = await fetch(`${proxy.url}/x`, {
      headers: { "accept-encoding": "gzip", "if-none-match": 'W/"v1"' },
    });
    await res.body?.cancel();
    assert.equal(res.status, 304);
    assert.equal(res.headers.get("vary"), "Accept-Encoding");
    assert.equal(res.headers.get("etag"), 'W/"v1"');
  } finally {
    listener.close();
    for (const c of conns) c.close();
    await serving.catch(() => {});
  }
});
