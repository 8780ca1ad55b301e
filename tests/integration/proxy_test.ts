import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream } from "../_harness.ts";
import { proxyRoute, startProxy } from "./_proxy.ts";
import { rawServer, readRequest } from "../_upstream_peers.ts";
import { memoryLogger } from "./_acme.ts";

Deno.test("proxy keeps the query string byte for byte and rewrites the path", async () => {
  await using up = await startUpstream((req) => {
    const u = new URL(req.url);
    return Response.json({ path: u.pathname, search: u.search, host: req.headers.get("host") });
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/proxy":
    type: proxy
    target: "${up.url}"
    path_rewrite: "/anything"
`);
  const res = await fetch(`${prox.url}/proxy/get?a=1&b=%20x&c`);
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.path, "/anything/get");
  assert.equal(body.search, "?a=1&b=%20x&c");
  assert.equal(body.host, `127.0.0.1:${up.port}`);
});

/** Sends `text` on a new connection and returns everything read until the server closes it. */
async function rawExchange(port: number, text: string): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await c.write(new TextEncoder().encode(text));
    let out = "";
    const buf = new Uint8Array(16 * 1024);
    for (let n = await c.read(buf); n !== null; n = await c.read(buf)) {
      out += new TextDecoder().decode(buf.subarray(0, n));
    }
    return out;
  } finally {
    c.close();
  }
}

Deno.test("the query goes upstream byte for byte; a malformed Host gets 400", async () => {
  const lines: string[] = [];
  await using up = rawServer(async (c) => {
    const head = await readRequest(c);
    if (head === null) return;
    lines.push(head.slice(0, head.indexOf("\r\n")));
    await c.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
  });
  const logger = memoryLogger();
  await using prox = await startProxy(
    `
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}/base" }
`,
    { logger },
  );
  const get = (target: string, host: string) =>
    rawExchange(prox.port, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  // A signed URL: re-encoding ' " < > (as URL parsing does) would change what was signed.
  const signed = `/x?sig='a%2Fb'&s="<q>"&t=%27&u=|^`;
  assert.match(await get(signed, "a.test"), /^HTTP\/1\.1 200 /);
  assert.deepEqual(lines, [`GET /base${signed} HTTP/1.1`]);
  // Deno.serve builds the request URL from Host: "a/b" would have moved the path to /b/x, and
  // "a b" made URL parsing throw (500).
  for (const host of ["a/b", "a b", "a?b", "a#b", "a\\b", "u@a", "[", ""]) {
    assert.match(await get("/x", host), /^HTTP\/1\.1 400 /, `Host: ${host}`);
  }
  for (const host of ["A.Test:8080", "[::1]:80", "127.0.0.1", "xn--bcher-kva.example"]) {
    assert.match(await get("/y", host), /^HTTP\/1\.1 200 /, `Host: ${host}`);
  }
  assert.equal(lines.length, 5, "only well-formed requests reach the upstream");
  assert.equal(lines[1], "GET /base/y HTTP/1.1");
  assert.deepEqual(logger.lines.filter((l) => l.startsWith("error")), []);
});

Deno.test("routes match on segment boundaries, longest prefix first", async () => {
  await using up = await startUpstream((req) => new Response(new URL(req.url).pathname));
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/api":
    type: proxy
    target: "${up.url}/a"
  "/api/v1":
    type: proxy
    target: "${up.url}/b"
`);
  assert.equal(await (await fetch(`${prox.url}/api/x`)).text(), "/a/x");
  assert.equal(await (await fetch(`${prox.url}/api/v1/x`)).text(), "/b/x");
  assert.equal(await (await fetch(`${prox.url}/api`)).text(), "/a");
  const miss = await fetch(`${prox.url}/apix`);
  assert.equal(miss.status, 404);
  assert.match(await miss.text(), /request id: /);
});

Deno.test("a path parameter (;) cannot move a request off the route its segments name", async () => {
  await using up = await startUpstream((req) => new Response(new URL(req.url).pathname));
  await using prox = await startProxy(`${proxyRoute(`${up.url}/root`)}
  "/api":
    type: proxy
    target: "${up.url}/a"
  "/api/admin":
    type: redirect
    target: "/denied"
  "/m;v=1":
    type: proxy
    target: "${up.url}/m"
`);
  // Tomcat, Jetty and Spring drop ";x": these went to /a/admin;x and /root/api;x/admin, which
  // such an upstream serves as /a/admin and /root/api/admin, past the /api/admin route.
  // A parameter alone in a segment leaves an empty one, which Tomcat then merges: /api/;x/admin
  // went to /a/;x/admin, served as /a/admin.
  for (
    const path of [
      "/api/admin;x",
      "/api/admin;/y",
      "/api;x/admin",
      "/api;",
      "/api/;x/admin",
      "/;/api/admin",
    ]
  ) {
    const res = await fetch(`${prox.url}${path}`, { redirect: "manual" });
    assert.equal(res.status, 400, path);
    assert.match(await res.text(), /request id: /, path);
  }
  // Where the parameter leaves the route as it is, it goes upstream byte for byte.
  assert.equal(await (await fetch(`${prox.url}/api/x;jsessionid=1`)).text(), "/a/x;jsessionid=1");
  assert.equal(await (await fetch(`${prox.url}/other;v=2/x`)).text(), "/root/other;v=2/x");
  // A route that names a parameter in its key is matched as written.
  assert.equal(await (await fetch(`${prox.url}/m;v=1/x`)).text(), "/m/x");
  const admin = await fetch(`${prox.url}/api/admin/y;z`, { redirect: "manual" });
  await admin.body?.cancel();
  assert.equal(admin.headers.get("location"), "/denied/y;z");
});

Deno.test("an encoded slash (%2F, %5C) cannot move a request off the route its segments name", async () => {
  await using up = await startUpstream((req) => new Response(new URL(req.url).pathname));
  await using prox = await startProxy(`${proxyRoute(`${up.url}/root`)}
  "/api":
    type: proxy
    target: "${up.url}/a"
  "/api/admin":
    type: redirect
    target: "/denied"
`);
  // These went to the "/" route as /root/api%2Fadmin and the like, which an upstream that decodes
  // the path first (Go's r.URL.Path, Spring's UrlPathHelper) serves as /root/api/admin: past the
  // /api/admin route and whatever auth or ip_access it has.
  for (
    const path of [
      "/api%2Fadmin",
      "/api%2fadmin/x",
      "/api/admin%2F",
      "/api%5Cadmin",
      "/api/admin%5cx",
      // The slash decoded next to another: //admin, which servers that merge slashes (Tomcat,
      // nginx in front of an app) read as /admin. These went to /a/%2Fadmin and /root/%2Fapi/admin.
      "/api/%2Fadmin",
      "/%2Fapi/admin",
      "/api%2F%2Fadmin",
      "/api/;x%2Fadmin",
    ]
  ) {
    const res = await fetch(`${prox.url}${path}`, { redirect: "manual" });
    assert.equal(res.status, 400, path);
    assert.match(await res.text(), /request id: /, path);
  }
  // Where the encoded slash leaves the route as it is, it goes upstream as sent.
  assert.equal(await (await fetch(`${prox.url}/api/a%2Fb`)).text(), "/a/a%2Fb");
  assert.equal(await (await fetch(`${prox.url}/other%2Fx`)).text(), "/root/other%2Fx");
});

Deno.test("a request target with userinfo (http://user@host/) gets 400 (RFC 9110 §4.2.4)", async () => {
  const seen: string[] = [];
  await using up = await startUpstream((req) => {
    seen.push(req.url);
    return new Response("ok");
  });
  await using prox = await startProxy(`${proxyRoute(up.url)}
  "example.test/":
    type: proxy
    target: "${up.url}/ex"
`);
  const get = (target: string) =>
    rawExchange(prox.port, `GET ${target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
  // "a.test@example.test" reads as a.test to a person and is example.test to a URL parser.
  for (
    const t of [
      "http://a.test@example.test/x",
      "http://u:p@example.test/x",
      "http://@example.test/",
    ]
  ) {
    const res = await get(t);
    assert.match(res, /^HTTP\/1\.1 400 /, t);
    assert.match(res, /request id: /, t);
  }
  assert.deepEqual(seen, [], "none reaches an upstream");
  assert.match(await get("http://example.test/x"), /^HTTP\/1\.1 200 /);
  assert.equal(new URL(seen[0]).pathname, "/ex/x");
});

interopTest(
  "an authority no Host could hold (a\"b, a{b}) gets 400 over HTTP/1.1's absolute form and HTTP/2's :authority",
  ["curl"],
  async () => {
    const seen: string[] = [];
    await using up = await startUpstream((req) => {
      seen.push(req.url);
      return new Response("ok");
    });
    await using prox = await startProxy(proxyRoute(up.url));
    for (const host of ['a"b', "a{b}"]) {
      const raw = await rawExchange(
        prox.port,
        `GET http://${host}/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`,
      );
      assert.match(raw, /^HTTP\/1\.1 400 /, host);
      // curl sends the Host field as HTTP/2's :authority.
      const h2 = await run("curl", [
        ...["-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"],
        ...["--http2-prior-knowledge", "-H", `Host: ${host}`, `http://127.0.0.1:${prox.port}/x`],
      ]);
      // Deno.serve's HTTP/2 (PROX_H1_ENGINE=deno) resets such a stream itself.
      if (Deno.env.get("PROX_H1_ENGINE") === "deno") assert.notEqual(h2.stdout, "2 200", host);
      else assert.equal(h2.stdout, "2 400", host);
    }
    assert.deepEqual(seen, [], "none reaches an upstream");
    const ok = await run("curl", [
      ...["-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge"],
      ...["-H", "Host: a.test", `http://127.0.0.1:${prox.port}/x`],
    ]);
    assert.equal(ok.stdout, "200");
  },
);

Deno.test("timeouts longer than a timer can wait mean long, not at once", async () => {
  // An upstream that takes 100 ms: long enough for a timer that fires at once to matter.
  await using up = await startUpstream(async () => {
    await new Promise((r) => setTimeout(r, 100));
    return new Response("ok");
  });
  // 25 days is past setTimeout's 2^31-1 ms: such a timer used to fire after 1 ms (504).
  await using prox = await startProxy(`${proxyRoute(up.url)}
    timeouts: { total: 25d, connect: 30d }
    retries: { per_try_timeout: 40d }
`);
  const res = await fetch(`${prox.url}/x`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "ok");
});

Deno.test("an unreachable upstream gives 502 without leaking its address", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await using prox = await startProxy(proxyRoute(`http://127.0.0.1:${port}`));
  const res = await fetch(`${prox.url}/x`);
  assert.equal(res.status, 502);
  const text = await res.text();
  assert.ok(!text.includes(String(port)), text);
  assert.ok(res.headers.get("x-request-id"));
});

Deno.test("redirect carries the remaining path and the query", async () => {
  await using prox = await startProxy(`
routes:
  "/old":
    type: redirect
    target: "https://example.com/new"
    status_code: 301
  "/frag":
    type: redirect
    target: "https://example.com/a?x=1#top"
  "/rel":
    type: redirect
    target: "/rel2#top"
  "/":
    type: redirect
    target: "/static"
    status_code: 302
`);
  const a = await fetch(`${prox.url}/old/a?x=1`, { redirect: "manual" });
  assert.equal(a.status, 301);
  assert.equal(a.headers.get("location"), "https://example.com/new/a?x=1");
  await a.body?.cancel();
  const b = await fetch(`${prox.url}/foo`, { redirect: "manual" });
  assert.equal(b.headers.get("location"), "/static/foo");
  await b.body?.cancel();
  // A fragment in the target stays last, after the carried path and query.
  const f = await fetch(`${prox.url}/frag/p?y=2`, { redirect: "manual" });
  assert.equal(f.headers.get("location"), "https://example.com/a/p?x=1&y=2#top");
  await f.body?.cancel();
  // An empty query adds nothing to the target's (was "?x=1&#top").
  const e = await fetch(`${prox.url}/frag/p?`, { redirect: "manual" });
  assert.equal(e.headers.get("location"), "https://example.com/a/p?x=1#top");
  await e.body?.cancel();
  const r = await fetch(`${prox.url}/rel/p`, { redirect: "manual" });
  assert.equal(r.headers.get("location"), "/rel2/p#top");
  await r.body?.cancel();
  // A raw UTF-8 query (curl --path-as-is sends such bytes; fetch would encode them) is
  // percent-encoded into Location instead of failing with 500.
  const raw = await rawExchange(
    prox.port,
    "GET /old/x?q=\u20ac HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", // UTF-8 on the wire
  );
  assert.match(raw, /^HTTP\/1\.1 301 /);
  assert.match(raw, /\r\nlocation: https:\/\/example\.com\/new\/x\?q=%E2%82%AC\r\n/i);
});

Deno.test("a redirect target with characters a header cannot carry goes out percent-encoded", async () => {
  await using prox = await startProxy(`
routes:
  "/euro": { type: redirect, target: "/€uro" }
  "/menu": { type: redirect, target: "/café menu" }
  "/abs": { type: redirect, target: "https://example.com/a?q=ü" }
  "/exact": { type: redirect, target: "/ü", exact: true }
`);
  const cases: [string, string][] = [
    ["/euro", "/%E2%82%ACuro"], // was a 500 on every request
    ["/menu/x", "/caf%C3%A9%20menu/x"], // was the raw bytes of "café menu"
    ["/abs", "https://example.com/a?q=%C3%BC"],
    ["/exact/y", "/%C3%BC"],
  ];
  for (const [path, location] of cases) {
    const res = await fetch(`${prox.url}${path}`, { redirect: "manual" });
    await res.body?.cancel();
    assert.equal(res.status, 307, path);
    assert.equal(res.headers.get("location"), location, path);
  }
});

const TLS = `${ROOT}/tests/fixtures/tls`;

async function sha256(b: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", b));
  return [...d].map((x) => x.toString(16).padStart(2, "0")).join("");
}

interopTest(
  "request bodies of every size arrive intact over HTTP/1.1 and HTTP/2, and a small one is replayed",
  ["curl"],
  async () => {
    // Sizes around the limits of the data path: empty, the connection's 8 KiB write buffer, the
    // 64 KiB read-whole limit, and a body that streams.
    const sizes = [0, 1, 1000, 8 * 1024 - 100, 8 * 1024, 64 * 1024, 64 * 1024 + 1, 300_000];
    await using up = await startUpstream(async (req) => {
      const b = new Uint8Array(await req.arrayBuffer());
      const te = req.headers.get("transfer-encoding") ?? "-";
      return new Response(`${b.length} ${await sha256(b)} ${te}`);
    });
    const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const deadPort = (dead.addr as Deno.NetAddr).port;
    dead.close();
    await using prox = await startProxy(
      `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
health_check: { enabled: false }
routes:
  "/lb":
    type: load_balance
    strategy: first
    targets: ["http://127.0.0.1:${deadPort}", "${up.url}"]
  "/": { type: proxy, target: "${up.url}" }
`,
      { keepListen: true, tls: true },
    );
    const dir = await Deno.makeTempDir({ prefix: "prox-bodies-" });
    try {
      for (const size of sizes) {
        const body = new Uint8Array(size).map((_, i) => (i * 7 + size) & 0xff);
        await Deno.writeFile(`${dir}/body`, body);
        // Declared lengths go upstream as they came; nothing is re-chunked.
        const want = `${size} ${await sha256(body)} -`;
        for (const version of ["--http1.1", "--http2"]) {
          const out = await run("curl", [
            "-sS",
            version,
            "--cacert",
            `${TLS}/ca.pem`,
            "--data-binary",
            `@${dir}/body`,
            "-H",
            "content-type: application/octet-stream",
            `https://localhost:${prox.port}/upload`,
          ]);
          assert.equal(out.code, 0, out.stderr);
          assert.equal(out.stdout, want, `${size} bytes over ${version}`);
        }
      }
      // The first target refuses connections: the POST goes to the second with its body intact.
      const body = new Uint8Array(1000).map((_, i) => i & 0xff);
      await Deno.writeFile(`${dir}/body`, body);
      const out = await run("curl", [
        "-sS",
        "--cacert",
        `${TLS}/ca.pem`,
        "--data-binary",
        `@${dir}/body`,
        `https://localhost:${prox.port}/lb/upload`,
      ]);
      assert.equal(out.stdout, `1000 ${await sha256(body)} -`, out.stderr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("a control character in an upstream response head gets 502, not a crashed process", async () => {
  const heads: Record<string, string> = {
    ctl: "HTTP/1.1 200 OK\r\nx-bad: a\x01b\r\ncontent-length: 2\r\n\r\nno",
    del: "HTTP/1.1 200 OK\r\nx-bad: a\x7fb\r\ncontent-length: 2\r\n\r\nno",
    esc: "HTTP/1.1 200 OK\r\nx-bad: \x1b[31m\r\ncontent-length: 2\r\n\r\nno",
    ok: "HTTP/1.1 200 OK\r\nx-fine: a\tb \xe9\r\ncontent-length: 2\r\n\r\nok",
  };
  await using up = rawServer(async (c) => {
    const head = await readRequest(c);
    if (head === null) return;
    const name = head.slice(head.indexOf("/") + 1, head.indexOf(" HTTP/"));
    await c.write(Uint8Array.from(heads[name], (ch) => ch.charCodeAt(0)));
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}", retries: { attempts: 0 } }
`);
  // Deno.serve's HTTP/1.1 writer panics on such a value: the whole process used to exit.
  for (const name of ["ctl", "del", "esc"]) {
    const res = await rawExchange(
      prox.port,
      `GET /${name} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`,
    );
    assert.match(res, /^HTTP\/1\.1 502 /, name);
  }
  const res = await fetch(`${prox.url}/ok`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-fine"), "a\tb \xe9");
  assert.equal(await res.text(), "ok");
});

Deno.test("a header rule value with a control character is refused when the config loads", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  // Sent, it made Deno.serve's HTTP/1.1 writer panic; the runtime check is in filters/rules_test.
  await assert.rejects(
    startProxy(`${proxyRoute(up.url)}
    response_headers: { set: { x-t: "a\\x01b", x-u: "fine" } }
`),
    (err: Error & { issues?: { message: string }[] }) =>
      err.issues?.some((i) => /x-t.*control character/.test(i.message)) ?? false,
  );
});

Deno.test("timeouts.total and per_try_timeout also bound the connect (a TLS handshake that hangs)", async () => {
  // Accepts TCP, never answers the ClientHello: the connect (TLS included) hangs. Deno cannot
  // close a TLS connection whose handshake is pending, so this side closes them at the end.
  const { promise: done, resolve: finish } = Promise.withResolvers<null>();
  await using up = rawServer(async (c) => {
    const buf = new Uint8Array(4096);
    while (await Promise.race([c.read(buf), done]) !== null) { /* silent */ }
  });
  using _finish = { [Symbol.dispose]: () => finish(null) };
  const target = up.url.replace("http:", "https:");
  await using prox = await startProxy(`
health_check: { enabled: false }
timeouts: { connect: 5s }
routes:
  /total: { type: proxy, target: "${target}", timeouts: { total: 300ms } }
  /try: { type: proxy, target: "${target}", retries: { attempts: 0, per_try_timeout: 300ms } }
  /h1:
    type: proxy
    target: "${target}"
    timeouts: { total: 300ms }
    upstream_protocol: http1
`);
  // /total and /try wait for the shared HTTP/2 probe; /h1 (no HTTP/2) connects itself.
  for (const path of ["/total", "/try", "/h1"]) {
    const t0 = performance.now();
    const res = await fetch(`${prox.url}${path}/`);
    await res.body?.cancel();
    const ms = performance.now() - t0;
    assert.equal(res.status, 504, path);
    // Both waited out the 5 s connect timeout, then said "within 300 ms".
    assert.ok(ms < 2_500, `${path} answered after ${Math.round(ms)} ms`);
  }
});
