// `error_pages`: Prox's own error answers (no route, an upstream that is down) carry the
// operator's page, a route's entries before the top level's, values escaped for the page, chosen
// by Accept; `intercept_upstream` replaces the upstream's error answers without reading them; a
// reload swaps the pages; a missing page file is a located config error.
import assert from "node:assert/strict";
import { freePort, ROOT, startUpstream, waitFor } from "../_harness.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { loadSource } from "../../src/server.ts";
import { formatIssue } from "../../src/config/load.ts";
import { startProxy } from "./_proxy.ts";

async function pages(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "prox-pages-" });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${name}`, text);
  }
  return dir;
}

Deno.test("error_pages: no route and a down upstream get the pages, a route's own first", async () => {
  const dir = await pages({
    "404.html": "<h1>Lost: {uri_path}?{query}</h1><p>{request_id}</p>\n",
    "5xx.html": "<h1>{status} {reason}</h1><p>{request_id}</p>\n",
    "5xx.json": '{"error":"{reason}","id":"{request_id}","q":"{query}"}\n',
  });
  const down = `http://127.0.0.1:${freePort()}`;
  try {
    await using prox = await startProxy(`
health_check: { enabled: false }
error_pages:
  404: ${dir}/404.html
  5xx: [${dir}/5xx.html, ${dir}/5xx.json]
routes:
  /app: { type: proxy, target: "${down}", retries: { attempts: 0 } }
  /shop:
    type: proxy
    target: "${down}"
    retries: { attempts: 0 }
    error_pages: { "502, 504": { body: "shop is down ({status})", content_type: text/plain } }
`);
    // No route: the 404 page, values HTML-escaped; Proxy-Status and the request id as before.
    let res = await fetch(`${prox.url}/it's?a=1&b='x'`);
    let body = await res.text();
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.equal(res.headers.get("proxy-status"), "prox; error=destination_not_found");
    const id = res.headers.get("x-request-id")!;
    assert.equal(
      body,
      `<h1>Lost: /it&#39;s?a=1&amp;b=%27x%27</h1><p>${id}</p>\n`,
    );
    assert.equal(res.headers.get("content-length"), String(new TextEncoder().encode(body).length));

    // The upstream is down: the top-level 5xx page (HTML first), or its JSON for a JSON client.
    res = await fetch(`${prox.url}/app/x`);
    body = await res.text();
    assert.equal(res.status, 502);
    assert.equal(res.headers.get("proxy-status"), "prox; error=connection_refused");
    assert.equal(res.headers.get("vary"), "accept");
    assert.equal(
      body,
      `<h1>502 Bad gateway: cannot connect to upstream</h1><p>${
        res.headers.get("x-request-id")
      }</p>\n`,
    );
    res = await fetch(`${prox.url}/app/x?k="v"`, {
      headers: { accept: "text/html;q=0.5, application/json" },
    });
    assert.equal(res.headers.get("content-type"), "application/json");
    const json = await res.json();
    assert.equal(json.error, "Bad gateway: cannot connect to upstream");
    assert.equal(json.id, res.headers.get("x-request-id"));
    assert.equal(json.q, "k=%22v%22");

    // The route's own entry wins over the top level's 5xx.
    res = await fetch(`${prox.url}/shop/cart`);
    assert.equal(res.status, 502);
    assert.equal(await res.text(), "shop is down (502)");
    assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");

    // HEAD: the status and the page's fields, no body.
    res = await fetch(`${prox.url}/shop/cart`, { method: "HEAD" });
    assert.equal(res.status, 502);
    assert.equal(res.headers.get("content-length"), "18");
    assert.equal(await res.text(), "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("error_pages: intercept_upstream replaces listed upstream errors; an endless body is cancelled", async () => {
  let cancelled = false;
  await using up = await startUpstream((req) => {
    const status = Number(new URL(req.url).searchParams.get("status") ?? 200);
    // An error body that never ends: intercepting must not wait for it, and drops it after 1 s.
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode("upstream's own page"));
      },
      cancel() {
        cancelled = true;
      },
    });
    return new Response(status === 200 ? "fine" : body, {
      status,
      headers: {
        "x-app": "1",
        "www-authenticate": 'Bearer realm="app"',
        "content-range": "bytes */1000",
      },
    });
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
error_pages: { 5xx: { body: "sorry: {status}" }, 401: { body: "log in first" }, 416: { body: "bad range" } }
routes:
  /on: { type: proxy, target: "${up.url}", intercept_upstream: true, path_rewrite: / }
  /off: { type: proxy, target: "${up.url}", path_rewrite: / }
`);
  let res = await fetch(`${prox.url}/on/?status=503`);
  assert.equal(res.status, 503);
  assert.equal(await res.text(), "sorry: 503");
  assert.equal(res.headers.get("x-app"), null);
  assert.equal(res.headers.get("proxy-status"), null); // the upstream answered: not Prox's error
  await waitFor(() => cancelled, { what: "the upstream body cancelled" });

  // A 401 keeps the challenge that gives it its meaning.
  res = await fetch(`${prox.url}/on/?status=401`);
  assert.equal(await res.text(), "log in first");
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="app"');
  // A 416 keeps the representation's length (RFC 9110 §15.5.17).
  res = await fetch(`${prox.url}/on/?status=416`);
  assert.equal(await res.text(), "bad range");
  assert.equal(res.headers.get("content-range"), "bytes */1000");

  // A status no page lists, and success, pass through untouched.
  res = await fetch(`${prox.url}/on/?status=404`);
  assert.equal(res.status, 404);
  assert.equal(res.headers.get("x-app"), "1");
  const reader = res.body!.getReader();
  assert.equal(new TextDecoder().decode((await reader.read()).value), "upstream's own page");
  await reader.cancel();
  res = await fetch(`${prox.url}/on/`);
  assert.equal(await res.text(), "fine");

  // Off (the default): the upstream's own error answer.
  res = await fetch(`${prox.url}/off/?status=503`);
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("x-app"), "1");
  const r2 = res.body!.getReader();
  assert.equal(new TextDecoder().decode((await r2.read()).value), "upstream's own page");
  await r2.cancel();
});

Deno.test("error_pages: intercept_upstream drains a small error body and reuses its connection, not a large one", async () => {
  // Each request reports the client port: a new port, a new upstream connection.
  const ports: number[] = [];
  await using up = await startUpstream((req, info) => {
    ports.push(info.remoteAddr.port);
    const size = Number(new URL(req.url).searchParams.get("size"));
    const body = "e".repeat(size);
    // `chunked`: no Content-Length, the length is only known at the end.
    if (new URL(req.url).searchParams.has("chunked")) {
      const bytes = new TextEncoder().encode(body);
      return new Response(
        new ReadableStream({
          start(c) {
            c.enqueue(bytes.subarray(0, 10));
            c.enqueue(bytes.subarray(10));
            c.close();
          },
        }),
        { status: 502 },
      );
    }
    return new Response(body, { status: 503 });
  });
  // One connection at most: the next request waits until the last one released it, reusable
  // (the same port) or closed (a new one).
  await using prox = await startProxy(`
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1 }
error_pages: { 5xx: { body: "sorry: {status}" } }
routes: { /: { type: proxy, target: "${up.url}", intercept_upstream: true, retries: { attempts: 0 } } }
`);
  for (const q of ["size=2000", "size=60000", "size=3000&chunked", "size=10"]) {
    const res = await fetch(`${prox.url}/?${q}`);
    assert.match(await res.text(), /^sorry: 50[23]$/);
  }
  assert.equal(new Set(ports).size, 1, `one connection for small bodies: ${ports}`);
  // Over 64 KiB (declared, or seen in a chunked body): cancelled, the connection closed.
  for (const q of ["size=70000", "size=70000&chunked", "size=10"]) {
    const res = await fetch(`${prox.url}/?${q}`);
    assert.match(await res.text(), /^sorry: 50[23]$/);
  }
  assert.equal(new Set(ports).size, 3, `a new connection after each large body: ${ports}`);
});

Deno.test("error_pages: a reload swaps the pages; a missing page file is a located error", async () => {
  const dir = await pages({ "404.txt": "first {status}" });
  try {
    await using prox = await startProxy(`
error_pages: { 404: ${dir}/404.txt }
routes: { /only: { type: redirect, target: /elsewhere } }
`);
    let res = await fetch(`${prox.url}/nothing`);
    assert.equal(await res.text(), "first 404");
    assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
    await Deno.writeTextFile(`${dir}/404.txt`, "second {status}");
    assert.ok((await prox.server.reload()).ok);
    res = await fetch(`${prox.url}/nothing`);
    assert.equal(await res.text(), "second 404");

    // The file gone: the reload fails, located, and the loaded page keeps serving.
    await Deno.remove(`${dir}/404.txt`);
    const r = await prox.server.reload();
    assert.equal(r.ok, false);
    res = await fetch(`${prox.url}/nothing`);
    assert.equal(await res.text(), "second 404");
    const loaded = await loadSource({
      text:
        `listen_addr: "127.0.0.1:0"\nerror_pages:\n  404: ${dir}/404.txt\nroutes: { /: { type: static, root: "${dir}" } }\n`,
      name: "c.yaml",
    });
    assert.deepEqual(loaded.issues.map(formatIssue), [
      `c.yaml:3:3: error: error_pages.404: Page file not found: ${dir}/404.txt\n` +
      "  fix: Create the file or fix the path (relative to the working directory)",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("error_pages: the same page over HTTPS and HTTP/3, and no body for HEAD over HTTP/3", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  const ca = Deno.readTextFileSync(`${tls}/ca.pem`);
  await using prox = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${tls}/cert.pem", key_path: "${tls}/key.pem" }
protocols: { http3_enabled: true }
error_pages: { 404: { body: "<p>{scheme} {uri_path}</p>", content_type: text/html } }
routes: { /only: { type: redirect, target: /elsewhere } }
`,
    { keepListen: true, tls: true },
  );
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const res = await fetch(`https://localhost:${prox.port}/a&b`, { client });
    assert.equal(res.status, 404);
    assert.equal(await res.text(), "<p>https /a&amp;b</p>");
  } finally {
    client.close();
  }
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  let res = await h3.request("/a&b");
  assert.equal(res.status, 404);
  assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(res.headers.get("proxy-status"), "prox; error=destination_not_found");
  assert.equal(new TextDecoder().decode(res.body), "<p>https /a&amp;b</p>");
  res = await h3.request("/a&b", { method: "HEAD" });
  assert.equal(res.status, 404);
  assert.equal(res.headers.get("content-length"), "21");
  assert.equal(res.body.byteLength, 0);
});

Deno.test("error_pages: the plain-HTTP redirect listener's 400 for a bad Host carries the page", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  const httpPort = freePort();
  await using _prox = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${tls}/cert.pem", key_path: "${tls}/key.pem" }
http_redirect: { listen_addr: "127.0.0.1:${httpPort}" }
error_pages: { 4xx: { body: "<p>{status} {reason} {request_id}</p>", content_type: text/html } }
routes: { /only: { type: redirect, target: /elsewhere } }
`,
    { keepListen: true, tls: true },
  );
  // The Location would move the path: refused, with the operator's page (it was a bare text).
  const c = await Deno.connect({ hostname: "127.0.0.1", port: httpPort });
  let text = "";
  try {
    await c.write(
      new TextEncoder().encode("GET /p HTTP/1.1\r\nHost: evil.test/x\r\nConnection: close\r\n\r\n"),
    );
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await c.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
  } finally {
    c.close();
  }
  assert.match(text, /^HTTP\/1\.1 400 /);
  assert.match(text, /\r\ncontent-type: text\/html; charset=utf-8\r\n/);
  const id = /\r\nx-request-id: ([^\r]+)\r\n/.exec(text)?.[1];
  assert.ok(id, text);
  assert.ok(text.endsWith(`\r\n\r\n<p>400 Invalid Host header ${id}</p>`), text);
  // A good request is still redirected, untouched.
  const res = await fetch(`http://127.0.0.1:${httpPort}/a`, { redirect: "manual" });
  await res.body?.cancel();
  assert.equal(res.status, 308);
});

Deno.test("error_pages: a static route's own 404 gets the page even where the route compresses all", async () => {
  const dir = await pages({ "index.html": "home" });
  try {
    await using prox = await startProxy(`
error_pages: { 404: { body: "<p>no {uri_path}</p>", content_type: text/html } }
routes:
  /:
    type: static
    root: "${dir}"
    compress: { min_length: 0 }
    response_headers: { add: { X-Frame-Options: DENY } }
`);
    const res = await fetch(`${prox.url}/missing`, { headers: { "accept-encoding": "gzip" } });
    assert.equal(res.status, 404);
    assert.equal(await res.text(), "<p>no /missing</p>");
    assert.equal(res.headers.get("x-frame-options"), "DENY"); // the route's header rules stay
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("error_pages: a 429 page keeps Retry-After and RateLimit; a limit's own message stays", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(`
health_check: { enabled: false }
error_pages: { 429: { body: "slow down: {reason}" } }
routes:
  /a: { type: proxy, target: "${up.url}", rate_limit: { by: ip, requests: 1, period: 1m, headers: true } }
  /b: { type: proxy, target: "${up.url}", rate_limit: { by: ip, requests: 1, period: 1m, message: "custom" }, intercept_upstream: true }
`);
  for (const [path, page] of [["/a", "slow down: Too Many Requests"], ["/b", "custom"]]) {
    assert.equal(await (await fetch(`${prox.url}${path}`)).text(), "ok");
    const res = await fetch(`${prox.url}${path}`);
    assert.equal(res.status, 429);
    assert.equal(await res.text(), page);
    assert.equal(res.headers.get("retry-after"), "60");
    if (path === "/a") assert.equal(res.headers.get("ratelimit"), '"default";r=0;t=60');
  }
});

Deno.test("error_pages: intercept_upstream replaces a cached upstream error too", async () => {
  let hits = 0;
  await using up = await startUpstream(() => {
    hits++;
    return new Response("app's 404", { status: 404, headers: { "cache-control": "max-age=60" } });
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
error_pages: { 404: { body: "not here" } }
routes:
  /: { type: proxy, target: "${up.url}", cache: true, intercept_upstream: true }
`);
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${prox.url}/x`);
    assert.equal(res.status, 404);
    assert.equal(await res.text(), "not here", `request ${i + 1}`);
  }
  assert.equal(hits, 1); // the second came from the cache
});

Deno.test("error_pages: intercept_upstream on a compressing route cancels a large error body by its declared length", async () => {
  // Compressed first, the answer lost its Content-Length, and 70,000 bytes of it became a few
  // dozen: read to the end through the compressor, for a page that replaces them.
  const ports: number[] = [];
  await using up = await startUpstream((req, info) => {
    ports.push(info.remoteAddr.port);
    const size = Number(new URL(req.url).searchParams.get("size"));
    return new Response("e".repeat(size), {
      status: 503,
      headers: { "content-type": "text/html" },
    });
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1 }
error_pages: { 5xx: { body: "sorry: {status}" } }
routes:
  /:
    type: proxy
    target: "${up.url}"
    intercept_upstream: true
    retries: { attempts: 0 }
    compress: { min_length: 0 }
`);
  for (const q of ["size=70000", "size=10"]) {
    const res = await fetch(`${prox.url}/?${q}`, { headers: { "accept-encoding": "zstd" } });
    assert.equal(res.headers.get("content-encoding"), null);
    assert.equal(await res.text(), "sorry: 503");
  }
  assert.equal(new Set(ports).size, 2, `a new connection after the large body: ${ports}`);
});

Deno.test("error_pages: intercept_upstream leaves a gRPC request's error answer as the upstream sent it", async () => {
  await using up = await startUpstream(() =>
    new Response("unavailable", {
      status: 503,
      headers: { "content-type": "application/grpc", "grpc-status": "14", "grpc-message": "down" },
    })
  );
  await using prox = await startProxy(`
health_check: { enabled: false }
error_pages: { 5xx: { body: "<h1>sorry</h1>", content_type: text/html } }
routes: { /: { type: proxy, target: "${up.url}", intercept_upstream: true, retries: { attempts: 0 } } }
`);
  // A gRPC client cannot read an HTML page: it needs the upstream's grpc-status.
  const res = await fetch(`${prox.url}/pkg.Svc/Call`, {
    method: "POST",
    headers: { "content-type": "application/grpc", te: "trailers" },
    body: new Uint8Array(5),
  });
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("content-type"), "application/grpc");
  assert.equal(res.headers.get("grpc-status"), "14");
  assert.equal(await res.text(), "unavailable");
  // The same path for a browser still gets the page.
  const page = await fetch(`${prox.url}/pkg.Svc/Call`);
  assert.equal(await page.text(), "<h1>sorry</h1>");
});

Deno.test("error_pages: intercept_upstream keeps the upstream's CORS fields, so a cross-origin script can read the error", async () => {
  await using up = await startUpstream((req) =>
    new Response("not here", {
      status: 404,
      headers: {
        "access-control-allow-origin": req.headers.get("origin") ?? "*",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-request-id",
        vary: "Origin",
        "x-app": "1",
      },
    })
  );
  await using prox = await startProxy(`
health_check: { enabled: false }
error_pages: { 404: { body: "lost" } }
routes: { /: { type: proxy, target: "${up.url}", intercept_upstream: true } }
`);
  const res = await fetch(`${prox.url}/api/x`, { headers: { origin: "https://app.test" } });
  assert.equal(res.status, 404);
  assert.equal(await res.text(), "lost");
  assert.equal(res.headers.get("access-control-allow-origin"), "https://app.test");
  assert.equal(res.headers.get("access-control-allow-credentials"), "true");
  assert.equal(res.headers.get("access-control-expose-headers"), "x-request-id");
  assert.equal(res.headers.get("vary"), "Origin");
  assert.equal(res.headers.get("x-app"), null);
});

Deno.test("error_pages: intercept_upstream leaves a WebSocket handshake the upstream refused unpaged", async () => {
  await using up = await startUpstream(() => new Response("no socket for you", { status: 403 }));
  await using prox = await startProxy(`
health_check: { enabled: false }
error_pages: { 4xx: { body: "PAGE {status}" } }
routes: { /: { type: proxy, target: "${up.url}", intercept_upstream: true, retries: { attempts: 0 } } }
`);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(prox.url).port) });
  let text = "";
  try {
    await c.write(new TextEncoder().encode(
      "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    ));
    const buf = new Uint8Array(4096);
    // Until the head and as many body bytes as it declares (the connection stays open).
    const done = () => {
      const end = text.indexOf("\r\n\r\n");
      const len = /\r\ncontent-length: (\d+)/i.exec(text)?.[1];
      return end >= 0 && len !== undefined && text.length >= end + 4 + Number(len);
    };
    while (!done()) {
      const n = await c.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
  } finally {
    c.close();
  }
  assert.match(text, /^HTTP\/1\.1 403 /);
  assert.doesNotMatch(text, /PAGE/);
  assert.match(text, /refused the WebSocket upgrade/);
});

Deno.test("error_pages: intercept_upstream does not wait for a small error body that stalls", async () => {
  // Each request reports the client port: a new port, a new upstream connection.
  const ports: number[] = [];
  let release!: () => void;
  const stalled = new Promise<void>((r) => release = r);
  await using up = await startUpstream((req, info) => {
    ports.push(info.remoteAddr.port);
    if (!new URL(req.url).searchParams.has("slow")) return new Response("ok");
    // A small declared body of which 10 bytes come, then nothing until the test ends.
    return new Response(
      new ReadableStream({
        async start(c) {
          c.enqueue(new TextEncoder().encode("0123456789"));
          await stalled;
          c.enqueue(new TextEncoder().encode("x".repeat(1990)));
          c.close();
        },
      }),
      { status: 503, headers: { "content-length": "2000" } },
    );
  });
  try {
    await using prox = await startProxy(`
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1 }
error_pages: { 5xx: { body: "sorry {status}" } }
routes:
  /:
    type: proxy
    target: "${up.url}"
    intercept_upstream: true
    retries: { attempts: 0 }
    timeouts: { idle: 3s }
`);
    // The page at once, not a 504 once the idle timeout gave up on the body.
    const res = await fetch(`${prox.url}/?slow`);
    assert.equal(res.status, 503);
    assert.equal(await res.text(), "sorry 503");
    // The stalled body is cancelled after a second: its connection closed, not reused mid-body.
    assert.equal(await (await fetch(`${prox.url}/`)).text(), "ok");
    assert.equal(ports.length, 2);
    assert.notEqual(ports[0], ports[1]);
  } finally {
    release();
  }
});
