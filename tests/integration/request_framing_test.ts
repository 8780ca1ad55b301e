// Client requests at the edges of HTTP/1.1 framing (RFC 9112 §3, §6), sent on raw sockets: what
// a raw upstream receives must match what the request head says, whatever the client sent.
import assert from "node:assert/strict";
import { interopTest, run, waitFor } from "../_harness.ts";
import { rawServer } from "../_upstream_peers.ts";
import { memoryLogger } from "./_acme.ts";
import { startProxy } from "./_proxy.ts";
import { rawExchange } from "./_raw_client.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A raw upstream that records each request (head and Content-Length body) and answers 200. */
function recordingUpstream() {
  const seen: string[] = [];
  const server = rawServer(async (c) => {
    let buf = "";
    const chunk = new Uint8Array(65536);
    for (;;) {
      const end = buf.indexOf("\r\n\r\n");
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
      if (end >= 0 && buf.length >= end + 4 + length) {
        const request = buf.slice(0, end + 4 + length);
        buf = buf.slice(request.length);
        seen.push(request);
        const path = request.slice(request.indexOf(" ") + 1, request.indexOf(" HTTP/"));
        await c.write(
          enc.encode(`HTTP/1.1 200 OK\r\ncontent-length: ${path.length}\r\n\r\n${path}`),
        );
        continue;
      }
      const n = await c.read(chunk);
      if (n === null) return;
      buf += dec.decode(chunk.subarray(0, n));
    }
  });
  return { server, seen };
}

/** Prox with one proxy route to `url`. */
function proxyTo(url: string) {
  return startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${url}" }
`);
}

Deno.test("a GET or HEAD body cannot smuggle a request onto a pooled upstream connection", async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  await using prox = await proxyTo(up.server.url);
  // Deno gives a GET no body, so Prox used to send its Content-Length alone: the upstream then
  // read the start of the next request on the connection as that body.
  const inner = "GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n";
  for (const method of ["GET", "HEAD"]) {
    const res = await rawExchange(
      prox.port,
      `${method} /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789`,
    );
    assert.match(res, /^HTTP\/1\.1 501 /, method);
  }
  const post = await rawExchange(
    prox.port,
    `POST /innocent HTTP/1.1\r\nHost: a.test\r\nContent-Length: ${inner.length}\r\n` +
      `Connection: close\r\n\r\n${inner}`,
  );
  assert.match(post, /^HTTP\/1\.1 200 /);
  assert.ok(post.endsWith("/innocent"), post);
  assert.equal(up.seen.length, 1, "only the POST reached the upstream");
  assert.match(up.seen[0], /^POST \/innocent /);
  assert.ok(up.seen[0].endsWith(inner));
  // A GET without a body, and one with Content-Length: 0, still go through.
  const zero = await rawExchange(
    prox.port,
    "GET /zero HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
  );
  assert.match(zero, /^HTTP\/1\.1 200 /);
});

Deno.test("a request whose head announces no body goes upstream without one", async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/once": { type: proxy, target: "${up.server.url}", retries: { attempts: 0 } }
  "/": { type: proxy, target: "${up.server.url}" }
`);
  // Deno gives these a body stream: it went upstream as an empty chunked body (or, read for
  // retries, with "content-length: 0"), which some upstreams refuse on a DELETE or OPTIONS.
  const methods = ["DELETE", "OPTIONS", "POST"];
  let text = "";
  for (const path of ["/once/a", "/b"]) {
    for (const m of methods) text += `${m} ${path} HTTP/1.1\r\nHost: a.test\r\n\r\n`;
  }
  const res = await rawExchange(prox.port, text, /(HTTP\/1\.1 200 [^]*){6}\/b$/);
  assert.equal(res.match(/HTTP\/1\.1 200 /g)?.length, 6, res);
  assert.equal(up.seen.length, 6);
  for (const seen of up.seen) {
    assert.doesNotMatch(seen, /transfer-encoding|content-length/i, seen);
    assert.ok(seen.endsWith("\r\n\r\n"), seen);
  }
});

Deno.test("a Content-Length with leading zeros goes upstream in plain digits", async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  await using prox = await proxyTo(up.server.url);
  // "010" is ten bytes (RFC 9110 §8.6), but a parser reading it as octal takes eight and the
  // last two as the start of the next request.
  const res = await rawExchange(
    prox.port,
    "POST /z HTTP/1.1\r\nHost: a.test\r\nContent-Length: 010\r\nConnection: close\r\n\r\n0123456789",
  );
  assert.match(res, /^HTTP\/1\.1 200 /, res);
  assert.match(up.seen[0], /\r\ncontent-length: 10\r\n/i);
  assert.ok(up.seen[0].endsWith("\r\n\r\n0123456789"), up.seen[0]);
});

Deno.test("Expect: 100-continue is answered by Prox and not sent upstream", async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  await using prox = await proxyTo(up.server.url);
  // The body goes upstream with the head: an upstream told to expect it could answer at once
  // (417, 401) and read the body as its next request, whose response went to another client.
  const res = await rawExchange(
    prox.port,
    "POST /e HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n" +
      "Connection: close\r\n\r\nhello",
  );
  assert.match(res, /^HTTP\/1\.1 (100 Continue\r\n\r\nHTTP\/1\.1 )?200 /, res);
  assert.equal(up.seen.length, 1);
  assert.doesNotMatch(up.seen[0], /expect/i);
  assert.ok(up.seen[0].endsWith("\r\n\r\nhello"), up.seen[0]);
});

interopTest("an HTTP/2 request that ends with its head goes upstream without a body", [
  "curl",
], async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.server.url}", retries: { attempts: 0 } }
`);
  // END_STREAM on HEADERS: Deno still gives the request an (empty) body stream.
  for (const method of ["DELETE", "OPTIONS", "POST"]) {
    const out = await run("curl", [
      "-sS",
      "--http2-prior-knowledge",
      "-X",
      method,
      "-w",
      "\n%{http_version} %{http_code}",
      `${prox.url}/h2`,
    ]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /\n2 200$/, method);
  }
  assert.equal(up.seen.length, 3);
  for (const seen of up.seen) {
    assert.doesNotMatch(seen, /transfer-encoding|content-length/i, seen);
    assert.ok(seen.endsWith("\r\n\r\n"), seen);
  }
});

interopTest('HTTP/2 Cookie fields go upstream as one line joined by "; " (RFC 9113 §8.2.3)', [
  "nghttp",
], async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.server.url}" }
`);
  // HTTP/2 clients may split Cookie into one field per crumb; an HTTP/1.1 upstream takes one line.
  const out = await run("nghttp", ["-H", "cookie: a=1", "-H", "cookie: b=2", `${prox.url}/c`]);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(up.seen.length, 1);
  assert.deepEqual(up.seen[0].match(/^cookie:.*$/gim), ["cookie: a=1; b=2"]);
});

Deno.test("unsupported framing and methods get 501 or 405, never reach the upstream", async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  await using prox = await proxyTo(up.server.url);
  const gz = await rawExchange(
    prox.port,
    "POST /gz HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n" +
      "5\r\nhello\r\n0\r\n\r\n",
  );
  assert.match(gz, /^HTTP\/1\.1 501 /);
  const connect = await rawExchange(
    prox.port,
    "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    /\r\n\r\n[\s\S]*\n$/,
  );
  assert.match(connect, /^HTTP\/1\.1 501 /);
  const trace = await rawExchange(
    prox.port,
    "TRACE / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
  );
  assert.match(trace, /^HTTP\/1\.1 405 /);
  assert.deepEqual(up.seen, []);
});

Deno.test("TRACE and CONNECT in another case (trace, Connect) get 405 and 501 too, on both engines", async () => {
  // An upstream that reads methods without regard to case (Jetty's legacy compliance modes) would
  // take `trace` for TRACE and echo the cookies and credentials Prox refuses TRACE to protect.
  const up = recordingUpstream();
  await using _up = up.server;
  for (const engine of ["prox", "deno"]) {
    await using prox = await startProxy(`
protocols: { http1_engine: ${engine} }
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.server.url}" } }
`);
    const send = (method: string) =>
      rawExchange(
        prox.port,
        `${method} /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`,
      );
    for (const m of ["trace", "Trace"]) {
      assert.match(await send(m), /^HTTP\/1\.1 405 /, `${engine}: ${m}`);
    }
    for (const m of ["connect", "Connect"]) {
      assert.match(await send(m), /^HTTP\/1\.1 501 /, `${engine}: ${m}`);
    }
    assert.deepEqual(up.seen, [], engine);
    // Other methods go on as they came.
    assert.match(await send("purge"), /^HTTP\/1\.1 200 /, engine);
    assert.equal(up.seen.length, 1, engine);
    up.seen.length = 0;
  }
});

Deno.test("the request target's authority picks the route, not a different Host", async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "a.example/": { type: proxy, target: "${up.server.url}/a" }
  "/": { type: proxy, target: "${up.server.url}/default" }
`);
  const absolute = await rawExchange(
    prox.port,
    "GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
  );
  assert.ok(absolute.endsWith("/a/x"), absolute); // RFC 9112 §3.2.2: Host is ignored
  const origin = await rawExchange(
    prox.port,
    "GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
  );
  assert.ok(origin.endsWith("/a/x"), origin);
  assert.match(up.seen[0], /\r\nx-forwarded-host: a\.example\r\n/i);
});

Deno.test("an absolute-form target of a scheme other than http or https gets 400 (RFC 9112 §3.2.2), on both engines", async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  for (const engine of ["prox", "deno"]) {
    await using prox = await startProxy(`
protocols: { http1_engine: ${engine} }
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.server.url}" } }
`);
    const get = (target: string) =>
      rawExchange(prox.port, `GET ${target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
    // They were proxied as if they were http:// requests for the path.
    for (const target of ["ftp://a.test/x", "ws://a.test/x", "wss://a.test/x", "h://a.test/x"]) {
      assert.match(await get(target), /^HTTP\/1\.1 400 /, `${engine}: ${target}`);
    }
    assert.deepEqual(up.seen, [], engine);
    // The scheme is case-insensitive (RFC 3986 §3.1).
    for (const target of ["http://a.test/x", "HTTP://a.test/x", "https://a.test/x"]) {
      const res = await get(target);
      assert.match(res, /^HTTP\/1\.1 200 /, `${engine}: ${target}`);
      assert.ok(res.endsWith("/x"), res);
    }
    up.seen.length = 0;
  }
});

Deno.test("an absolute-form target whose authority holds a backslash gets 400, on both engines", async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  for (const engine of ["prox", "deno"]) {
    await using prox = await startProxy(`
protocols: { http1_engine: ${engine} }
health_check: { enabled: false }
routes:
  "b.test/": { type: proxy, target: "${up.server.url}/b" }
  "/": { type: proxy, target: "${up.server.url}/default" }
`);
    const get = (target: string) =>
      rawExchange(prox.port, `GET ${target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
    // A backslash is no URI character (RFC 3986 §2): to RFC 3986 `b.test\@evil.test` is userinfo
    // and a host, evil.test, while URL parsing (WHATWG) ends the authority at the backslash. Prox
    // routed it to b.test and sent `/@evil.test/x` upstream: a front end that reads it the other
    // way sees another host than Prox serves.
    for (
      const target of ["http://b.test\\@evil.test/x", "http://b.test\\x/y", "https://b.test\\/z"]
    ) {
      assert.match(await get(target), /^HTTP\/1\.1 400 /, `${engine}: ${target}`);
    }
    assert.deepEqual(up.seen, [], engine);
    // A backslash in the path is the path's (normalized as a slash).
    const res = await get("http://b.test/x\\y");
    assert.match(res, /^HTTP\/1\.1 200 /, `${engine}: ${res}`);
    up.seen.length = 0;
  }
});

Deno.test("a chunked body that stalls before an upstream is chosen gets 408; one cut off is no error", async () => {
  const up = recordingUpstream();
  await using _up = up.server;
  const logger = memoryLogger();
  await using prox = await startProxy(
    `
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.server.url}", timeouts: { idle: 200ms } }
`,
    { logger },
  );
  // Kept for retries (no length, so read before an upstream is chosen): the idle timeout applies.
  const t0 = performance.now();
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(enc.encode(
      "POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ));
    const buf = new Uint8Array(4096);
    const n = await c.read(buf);
    assert.match(dec.decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 408 /);
    assert.ok(performance.now() - t0 >= 190, "not before the idle timeout");
  } finally {
    c.close();
  }
  // A client that leaves in the middle of such a body is no internal error.
  const gone = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  await gone.write(enc.encode(
    "POST /gone HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
  ));
  gone.close();
  const done = await rawExchange(
    prox.port,
    "POST /ok HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
      "5\r\nhello\r\n0\r\n\r\n",
  );
  assert.match(done, /^HTTP\/1\.1 200 /);
  assert.deepEqual(up.seen.map((r) => r.slice(0, r.indexOf("\r\n"))), ["POST /ok HTTP/1.1"]);
  const gotGone = () => logger.lines.find((l) => l.includes('"path":"/gone"'));
  await waitFor(() => gotGone() !== undefined, { what: "the access record of /gone" });
  assert.match(gotGone()!, /"status":499/);
  assert.deepEqual(logger.lines.filter((l) => l.startsWith("error")), []);
});

Deno.test("a streamed body that stalls on its way upstream gets 408, and the upstream is not blamed", async () => {
  // An upstream that answers once the whole chunked body has arrived.
  await using up = rawServer(async (c) => {
    const buf = new Uint8Array(4096);
    for (let got = ""; !got.endsWith("0\r\n\r\n");) {
      const n = await c.read(buf);
      if (n === null) return;
      got += dec.decode(buf.subarray(0, n));
      if (got.startsWith("GET ")) break;
    }
    await c.write(enc.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
  });
  const logger = memoryLogger();
  await using prox = await startProxy(
    `
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    timeouts: { idle: 200ms }
    retries: { attempts: 0 }
    passive_health: { failures: 1, panic_threshold_percent: 0 }
`,
    { logger },
  );
  // No retries: the body streams upstream as it comes; then the client stops sending.
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(enc.encode(
      "POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ));
    const buf = new Uint8Array(4096);
    const n = await c.read(buf);
    // Was 504 "upstream idle", and a passive-health failure that ejected a healthy upstream.
    assert.match(dec.decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 408 /);
  } finally {
    c.close();
  }
  const next = await rawExchange(
    prox.port,
    "GET /next HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
  );
  assert.match(next, /^HTTP\/1\.1 200 /);
  assert.deepEqual(logger.lines.filter((l) => l.includes("ejected")), []);
});
