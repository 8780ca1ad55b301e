// The seed README's header and body manipulation examples, through the real proxy to a real
// upstream, behaving as their comments say.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream } from "../_harness.ts";
import { proxyRoute, startProxy } from "./_proxy.ts";
import { silentLogger } from "../../src/ports.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";

async function echoUpstream() {
  return await startUpstream(async (req) => {
    const u = new URL(req.url);
    if (u.pathname.endsWith("/missing")) {
      return new Response("raw upstream 404", {
        status: 404,
        headers: { "x-error-type": "NotFound", "x-powered-by": "php", etag: '"abc"' },
      });
    }
    return Response.json({
      path: u.pathname,
      method: req.method,
      headers: Object.fromEntries(req.headers),
      body: await req.text(),
    }, { headers: { "x-powered-by": "php" } });
  });
}

const seedRoute = (target: string) => `
health_check: { enabled: false }
routes:
  "/proxy":
    type: "proxy"
    target: "${target}"
    path_rewrite: "/anything"
    request_headers:
      add:
        "X-My-Custom-Header": "MyValue"
        "X-Forwarded-By": "Prox"
        "X-Real-IP": "{client_ip}"
        "X-Trace": "ip={client_ip} route={route} id={request_id}"
      remove: ["User-Agent", "Referer"]
    response_headers:
      add:
        "Server": "Prox"
      remove: ["X-Powered-By"]
    request_body:
      condition:
        path_matches: "/special"
      set_text: "This is a modified request body."
    response_body:
      condition:
        has_header:
          name: "X-Error-Type"
          value_matches: "NotFound"
      set_json:
        error: "Resource not found"
        message: "The requested resource was not found on the server."
        path: "{uri_path}"
        status: 404
`;

Deno.test("request header rules add, overwrite, remove and expand placeholders anywhere", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(seedRoute(up.url));
  const res = await fetch(`${prox.url}/proxy/headers`, {
    headers: { "x-my-custom-header": "OriginalValue", "user-agent": "curl/8", referer: "x" },
  });
  const body = await res.json();
  assert.equal(body.path, "/anything/headers");
  assert.equal(body.headers["x-my-custom-header"], "MyValue");
  assert.equal(body.headers["x-forwarded-by"], "Prox");
  assert.equal(body.headers["x-real-ip"], "127.0.0.1");
  assert.match(body.headers["x-trace"], /^ip=127\.0\.0\.1 route=\/proxy id=[0-9a-f]{8}-/);
  assert.equal(body.headers["user-agent"], undefined);
  assert.equal(body.headers["referer"], undefined);
  assert.equal(res.headers.get("server"), "Prox");
  assert.equal(res.headers.get("x-powered-by"), null);
});

Deno.test("request body rule applies only where path_matches holds", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(seedRoute(up.url));
  const special = await (await fetch(`${prox.url}/proxy/special/post`, {
    method: "POST",
    body: '{"original": "data"}',
    headers: { "content-type": "application/json" },
  })).json();
  assert.equal(special.body, "This is a modified request body.");
  assert.equal(special.headers["content-type"], "text/plain; charset=utf-8");
  assert.equal(special.headers["content-length"], "32");
  const plain = await (await fetch(`${prox.url}/proxy/post`, {
    method: "POST",
    body: '{"original": "data"}',
  })).json();
  assert.equal(plain.body, '{"original": "data"}');
});

Deno.test("response body rule is keyed on the upstream's X-Error-Type response header", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(seedRoute(up.url));
  const res = await fetch(`${prox.url}/proxy/missing`);
  assert.equal(res.status, 404);
  assert.equal(res.headers.get("content-type"), "application/json");
  assert.equal(res.headers.get("etag"), null);
  const body = await res.json();
  assert.deepEqual(body, {
    error: "Resource not found",
    message: "The requested resource was not found on the server.",
    path: "/proxy/missing",
    status: 404,
  });
  // A request header of the same name does not trigger the response rule.
  const ok = await fetch(`${prox.url}/proxy/get`, { headers: { "x-error-type": "NotFound" } });
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).path, "/anything/get");
});

Deno.test("response conditions see the status", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(`${proxyRoute(up.url)}
    response_headers:
      condition: { status_is: "4xx", method_is: [GET, HEAD] }
      set: { "X-Client-Error": "{status} on {method} {uri_path}?{query}" }
      append: { "Vary": "X-Test" }
`);
  const bad = await fetch(`${prox.url}/missing?a=1`);
  await bad.body?.cancel();
  assert.equal(bad.headers.get("x-client-error"), "404 on GET /missing?a=1");
  const good = await fetch(`${prox.url}/fine`);
  await good.body?.cancel();
  assert.equal(good.headers.get("x-client-error"), null);
});

interopTest("has_header on Host sees the authority of HTTP/2 requests, which carry no Host", [
  "curl",
], async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(`${proxyRoute(up.url)}
    request_headers:
      condition: { has_header: { name: Host, value_matches: '^app\\.example:' } }
      set: { "X-Site": "app" }
`);
  for (const version of ["--http1.1", "--http2-prior-knowledge"]) {
    const out = await run("curl", [
      "-sS",
      version,
      "--connect-to",
      `app.example:${prox.port}:127.0.0.1:${prox.port}`,
      `http://app.example:${prox.port}/x`,
    ]);
    assert.equal(JSON.parse(out.stdout).headers["x-site"], "app", `${version}: ${out.stderr}`);
  }
});

Deno.test("has_header on Host sees an absolute-form target's authority, as routing does, not the Host field", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(`${proxyRoute(up.url)}
    preserve_host: true
    request_headers:
      condition: { has_header: { name: Host, value_matches: '^internal\\.' } }
      set: { "X-Internal": "yes" }
`);
  // RFC 9112 §3.2.2: the Host field is ignored for an absolute-form target. The request went to
  // public.example, yet the condition read internal.example from the field.
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  await c.write(
    new TextEncoder().encode(
      "GET http://public.example/x HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
    ),
  );
  const answer = await new Response(c.readable).text();
  const body = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
  assert.equal(body.headers.host, "public.example");
  assert.equal(body.headers["x-internal"], undefined);
});

Deno.test("a replaced response body is a whole 200 answer; a 416 keeps its Content-Range; 204, 205 and 304 keep theirs", async () => {
  await using up = await startUpstream((req) => {
    const path = new URL(req.url).pathname;
    if (path === "/partial") {
      return new Response("0123456789", {
        status: 206,
        headers: { "content-range": "bytes 0-9/100", "repr-digest": "sha-256=:x:" },
      });
    }
    if (path === "/unsatisfiable") {
      return new Response("no", { status: 416, headers: { "content-range": "bytes */100" } });
    }
    if (path === "/cached") return new Response(null, { status: 304, headers: { etag: '"v1"' } });
    if (path === "/reset") return new Response(null, { status: 205 });
    return new Response(null, { status: 204, headers: { "x-up": "1" } });
  });
  await using prox = await startProxy(`${proxyRoute(up.url)}
    response_headers:
      set: { X-Status: "{status}" }
    response_body:
      condition: { status_is: [206, 416, 204, 205, 304] }
      set_text: "replaced"
`);
  const partial = await fetch(`${prox.url}/partial`, { headers: { range: "bytes=0-9" } });
  assert.equal(partial.status, 200);
  assert.equal(partial.headers.get("x-status"), "200");
  assert.equal(partial.headers.get("content-range"), null);
  assert.equal(partial.headers.get("repr-digest"), null);
  assert.equal(await partial.text(), "replaced");
  const unsatisfiable = await fetch(`${prox.url}/unsatisfiable`, {
    headers: { range: "bytes=200-" },
  });
  assert.equal(unsatisfiable.status, 416);
  assert.equal(unsatisfiable.headers.get("content-range"), "bytes */100");
  assert.equal(await unsatisfiable.text(), "replaced");
  const cached = await fetch(`${prox.url}/cached`, { headers: { "if-none-match": '"v1"' } });
  assert.equal(cached.status, 304);
  assert.equal(cached.headers.get("etag"), '"v1"');
  assert.equal(cached.headers.get("content-type"), null);
  // A 205 with the replaced body could not be built: 500.
  const reset = await fetch(`${prox.url}/reset`);
  assert.equal(reset.status, 205);
  assert.equal(await reset.text(), "");
  const empty = await fetch(`${prox.url}/none`);
  assert.equal(empty.status, 204);
  assert.equal(empty.headers.get("content-type"), null);
  assert.equal(await empty.text(), "");
});

Deno.test("routes and path conditions see escaped unreserved characters decoded", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(`${proxyRoute(up.url)}
    request_headers:
      condition: { path_matches: "^/internal/" }
      set: { "X-Internal": "yes" }
  "/admin":
    type: redirect
    target: "https://login.example"
  "/café":
    type: proxy
    target: "${up.url}"
    path_rewrite: /cafe
`);
  // Without the decoding, /%61dmin missed the /admin route and reached the upstream as /admin.
  const admin = await fetch(`${prox.url}/%61dmin/x`, { redirect: "manual" });
  await admin.body?.cancel();
  assert.equal(admin.status, 307);
  const internal = await (await fetch(`${prox.url}/%69nternal/x`)).json();
  assert.equal(internal.path, "/internal/x");
  assert.equal(internal.headers["x-internal"], "yes");
  const cafe = await (await fetch(`${prox.url}/caf%c3%a9/menu`)).json();
  assert.equal(cafe.path, "/cafe/menu");
  // Java upstreams read "..;" as "..": refused rather than sent on to climb out of /cafe.
  const climb = await fetch(`${prox.url}/caf%C3%A9/..;/admin`);
  await climb.body?.cancel();
  assert.equal(climb.status, 400);
});

Deno.test("a request body rule with only content_type relabels the body it keeps", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(`${proxyRoute(up.url)}
    request_body:
      condition: { method_is: POST }
      content_type: "application/vnd.api+json"
`);
  const got = await (await fetch(`${prox.url}/x`, {
    method: "POST",
    body: '{"a":1}',
    headers: { "content-type": "application/json" },
  })).json();
  assert.equal(got.headers["content-type"], "application/vnd.api+json");
  assert.equal(got.body, '{"a":1}');
});

Deno.test("a request body rule on GET reaches an HTTP/2 upstream (over HTTP/1.1) instead of 502", async () => {
  const TLS = `${ROOT}/tests/fixtures/tls`;
  await using up = await startUpstream(
    (req) => new Response(`${req.method} ${req.headers.get("content-length")}`),
    {
      cert: await Deno.readTextFile(`${TLS}/cert.pem`),
      key: await Deno.readTextFile(`${TLS}/key.pem`),
      hostname: "localhost",
    },
  );
  await using prox = await startProxy(`${proxyRoute(up.url)}
    tls: { ca_cert: "${TLS}/ca.pem" }
    request_body: { set_text: "fixed" }
`);
  // The headers fetch would otherwise add itself: with them, HTTP/2 upstreams go through fetch,
  // which refused a GET with a body ("Cannot reach upstream").
  const headers = {
    "user-agent": "t",
    accept: "*/*",
    "accept-language": "en",
    "accept-encoding": "identity",
  };
  for (const method of ["POST", "GET", "POST"]) {
    const res = await fetch(`${prox.url}/x`, {
      method,
      headers,
      body: method === "POST" ? "orig" : undefined,
    });
    assert.equal(res.status, 200, method);
    assert.equal(await res.text(), `${method} 5`); // Deno.serve gives a GET's body to nobody
  }
});

Deno.test("set_json sends integers beyond 2^53 exactly as written in the config", async () => {
  await using up = await startUpstream(() => new Response("upstream"));
  await using prox = await startProxy(`${proxyRoute(up.url)}
    response_body:
      set_json:
        id: 12345678901234567890
        neg: -98765432109876543210
        list: [9007199254740993, 42, 1.5]
        note: "12345678901234567890"
`);
  const res = await fetch(`${prox.url}/x`);
  assert.equal(
    await res.text(),
    '{"id":12345678901234567890,"neg":-98765432109876543210,' +
      '"list":[9007199254740993,42,1.5],"note":"12345678901234567890"}',
  );
});

Deno.test("header values and set_text written as numbers or booleans are sent as written", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(`${proxyRoute(up.url)}
    request_headers:
      add: { X-Api-Version: 2, X-Rate: 1.50 }
    response_headers:
      set: { X-Flag: true }
    request_body:
      set_text: 0042
`);
  const res = await fetch(`${prox.url}/x`, { method: "POST", body: "original" });
  const body = await res.json();
  assert.equal(body.headers["x-api-version"], "2");
  assert.equal(body.headers["x-rate"], "1.50");
  assert.equal(body.body, "0042");
  assert.equal(res.headers.get("x-flag"), "true");
});

Deno.test("response rules apply to the upstream's answers, not to Prox's own 429 and 502", async () => {
  await using up = await startUpstream(() => new Response("app is down", { status: 502 }));
  const rules = `
    rate_limit: { by: route, requests: 1, period: 1m, burst: 1 }
    response_headers:
      set: { X-Rule: "{status}" }
    response_body:
      condition: { status_is: "5xx" }
      set_text: "rewritten"`;
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/up":
    type: proxy
    target: "${up.url}"${rules}
  "/down":
    type: proxy
    target: "http://127.0.0.1:1"${rules}
`);
  const fromApp = await fetch(`${prox.url}/up/`);
  assert.equal(fromApp.status, 502);
  assert.equal(fromApp.headers.get("x-rule"), "502");
  assert.equal(await fromApp.text(), "rewritten");
  const limited = await fetch(`${prox.url}/up/`);
  assert.equal(limited.status, 429);
  assert.equal(limited.headers.get("x-rule"), null);
  assert.match(await limited.text(), /^Too Many Requests/);
  const down = await fetch(`${prox.url}/down/`);
  assert.equal(down.status, 502);
  assert.equal(down.headers.get("x-rule"), null);
  assert.match(await down.text(), /^Bad gateway: cannot connect to upstream\nrequest id: /);
});

Deno.test("a request header rule cannot send Expect upstream, where the body goes with the head", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(`${proxyRoute(up.url)}
    request_headers:
      set: { Expect: "100-continue", X-Ok: "1" }
`);
  const res = await fetch(`${prox.url}/upload`, { method: "POST", body: "hello" });
  const body = await res.json();
  assert.equal(body.headers.expect, undefined);
  assert.equal(body.headers["x-ok"], "1");
  assert.equal(body.body, "hello");
});

Deno.test("a body rule's content type wins over a header rule's Content-Type, on both sides", async () => {
  await using up = await echoUpstream();
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/req":
    type: proxy
    target: "${up.url}"
    request_headers:
      set: { Content-Type: "text/html" }
    request_body:
      set_json: { a: 1 }
  "/res":
    type: proxy
    target: "${up.url}"
    response_headers:
      set: { Content-Type: "text/html", X-Ok: "1" }
    response_body:
      set_text: "replaced"
`);
  const sent = await (await fetch(`${prox.url}/req`, { method: "POST", body: "hello" })).json();
  assert.equal(sent.headers["content-type"], "application/json");
  assert.equal(sent.body, '{"a":1}');
  const res = await fetch(`${prox.url}/res`);
  assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(res.headers.get("x-ok"), "1");
  assert.equal(await res.text(), "replaced");
});

Deno.test("a placeholder expanding beyond Latin-1 ({route} of /日本) goes out as UTF-8 bytes", async () => {
  await using up = await echoUpstream();
  const warnings: string[] = [];
  const logger = { ...silentLogger, warn: (msg: string) => void warnings.push(msg) };
  await using prox = await startProxy(
    `
health_check: { enabled: false }
routes:
  "/日本":
    type: proxy
    target: "${up.url}"
    request_headers:
      set: { X-Route: "route {route}" }
    response_headers:
      set: { X-Route: "{route} é" }
`,
    { logger },
  );
  const res = await fetch(`${prox.url}/日本/x`);
  const asBytes = (s: string) => String.fromCharCode(...new TextEncoder().encode(s));
  // Per placeholder, as the config's own text: "é" alone keeps its one Latin-1 byte.
  assert.equal(res.headers.get("x-route"), `${asBytes("/日本")} é`);
  assert.equal((await res.json()).headers["x-route"], asBytes("route /日本"));
  assert.deepEqual(warnings, []);
});

Deno.test("a replaced request body over max_request_body gets 413 chunked too, over h1, h2 and h3", async () => {
  const TLS = `${ROOT}/tests/fixtures/tls`;
  const ca = await Deno.readTextFile(`${TLS}/ca.pem`);
  const reached: string[] = [];
  await using up = await startUpstream(async (req) => {
    reached.push(await req.text());
    return new Response("ok");
  });
  await using prox = await startProxy(
    `
listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
protocols: { http3_enabled: true }
health_check: { enabled: false }
limits: { max_request_body: 1KiB }
routes:
  "/p": { type: proxy, target: "${up.url}", request_body: { set_text: "replaced" } }
  "/lb": { type: load_balance, targets: ["${up.url}"], request_body: { set_text: "replaced" } }
`,
    { keepListen: true, tls: true },
  );
  /** 4 KiB in 512-byte chunks, no Content-Length (chunked over HTTP/1.1). */
  const chunked = (n = 8) =>
    new ReadableStream<Uint8Array>({
      start(ctl) {
        for (let i = 0; i < n; i++) ctl.enqueue(new Uint8Array(512));
        ctl.close();
      },
    });
  const h2 = Deno.createHttpClient({ caCerts: [ca] });
  const h1 = Deno.createHttpClient({ caCerts: [ca], http2: false });
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  try {
    for (const path of ["/p", "/lb"]) {
      for (const client of [h1, h2]) {
        const url = `https://localhost:${prox.port}${path}`;
        const over = await fetch(url, { method: "POST", body: chunked(), client });
        assert.equal(over.status, 413, `${path} ${client === h1 ? "h1" : "h2"}`);
        await over.body?.cancel();
        const under = await fetch(url, { method: "POST", body: chunked(1), client });
        assert.equal(await under.text(), "ok");
      }
      const over = await h3.request(path, { method: "POST", body: chunked() });
      assert.equal(over.status, 413, `${path} h3`);
      const under = await h3.request(path, { method: "POST", body: chunked(1) });
      assert.equal(under.status, 200);
    }
  } finally {
    h1.close();
    h2.close();
  }
  // Only the uploads within the limit were replaced and sent.
  assert.deepEqual(reached, Array(6).fill("replaced"));
});

Deno.test("response_lacks_header: Cache-Control is added only to answers that came without one", async () => {
  await using up = await startUpstream((req) =>
    new URL(req.url).pathname === "/own"
      ? new Response("own", { headers: { "cache-control": "no-store" } })
      : new Response("none")
  );
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    response_headers:
      set: { Cache-Control: "public, max-age=60" }
      condition: { response_lacks_header: Cache-Control }
`);
  const none = await fetch(`${prox.url}/none`);
  assert.equal(none.headers.get("cache-control"), "public, max-age=60");
  await none.body?.cancel();
  const own = await fetch(`${prox.url}/own`);
  assert.equal(own.headers.get("cache-control"), "no-store");
  await own.body?.cancel();
});
