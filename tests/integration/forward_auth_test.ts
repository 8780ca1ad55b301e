// forward_auth through the real proxy: a real auth service and upstream on 127.0.0.1:0, asked by
// real clients (fetch, a `ws` client).
import assert from "node:assert/strict";
import { freePort, interopTest, ROOT, run, startUpstream } from "../_harness.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { startProxy } from "./_proxy.ts";
import { closed, connect, wsUpstream } from "./_ws.ts";

/** An upstream that answers with the request it got, as JSON. */
function echoUpstream(seen: Record<string, string>[] = []) {
  return startUpstream(async (req) => {
    const headers = Object.fromEntries(req.headers);
    seen.push(headers);
    return Response.json({ path: new URL(req.url).pathname, headers, body: await req.text() });
  });
}

/** An auth service whose answer `decide` makes; the requests it got are kept. */
function authService(
  decide: (req: Request) => Response | Promise<Response>,
  seen: { method: string; url: string; headers: Record<string, string>; body: string }[] = [],
) {
  return startUpstream(async (req) => {
    seen.push({
      method: req.method,
      url: req.url,
      headers: Object.fromEntries(req.headers),
      body: await req.text(),
    });
    return decide(req);
  });
}

const routes = (auth: string, upstream: string, extra = "") => `
health_check: { enabled: false }
routes:
  "/app":
    type: proxy
    target: "${upstream}"
    forward_auth:
      url: "${auth}/verify?rd=1"
      copy_response_headers: [X-Auth-User, Remote-Groups]
${extra}`;

Deno.test("forward_auth lets a 2xx through with the auth service's fields set upstream", async () => {
  const asked: { method: string; url: string; headers: Record<string, string>; body: string }[] =
    [];
  await using auth = await authService(
    () => new Response("ok", { headers: { "x-auth-user": "alice", "remote-groups": "dev" } }),
    asked,
  );
  await using up = await echoUpstream();
  await using proxy = await startProxy(routes(auth.url, up.url));
  const res = await fetch(`${proxy.url}/app/x/../page?q=1`, {
    method: "POST",
    body: "payload",
    headers: {
      authorization: "Bearer t0k",
      cookie: "session=abc",
      "x-auth-user": "admin", // forged: the auth service's value replaces it
      "x-secret": "not for the auth service",
    },
  });
  assert.equal(res.status, 200);
  const got = await res.json();
  assert.equal(got.headers["x-auth-user"], "alice");
  assert.equal(got.headers["remote-groups"], "dev");
  assert.equal(got.body, "payload");
  assert.equal(asked.length, 1);
  const a = asked[0];
  assert.equal(a.method, "GET");
  assert.equal(new URL(a.url).pathname + new URL(a.url).search, "/verify?rd=1");
  assert.equal(a.body, "");
  assert.equal(a.headers["authorization"], "Bearer t0k");
  assert.equal(a.headers["cookie"], "session=abc");
  assert.equal(a.headers["x-forwarded-method"], "POST");
  assert.equal(a.headers["x-forwarded-proto"], "http");
  assert.equal(a.headers["x-forwarded-host"], `127.0.0.1:${proxy.port}`);
  assert.equal(a.headers["x-forwarded-uri"], "/app/page?q=1");
  assert.equal(a.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(a.headers["x-secret"], undefined);
  assert.equal(a.headers["x-auth-user"], undefined);
  assert.ok(a.headers["x-request-id"]);
});

Deno.test("forward_auth removes a client's copy of a field the auth service does not set", async () => {
  await using auth = await authService(() => new Response(null, { status: 204 }));
  await using up = await echoUpstream();
  await using proxy = await startProxy(routes(auth.url, up.url));
  const res = await fetch(`${proxy.url}/app/`, { headers: { "Remote-Groups": "admins" } });
  assert.equal(res.status, 200);
  const got = await res.json();
  assert.equal(got.headers["remote-groups"], undefined);
  assert.equal(got.headers["x-auth-user"], undefined);
});

Deno.test("forward_auth passes a 401 to the client, fields and body, and never asks the upstream", async () => {
  const seen: Record<string, string>[] = [];
  await using auth = await authService(() =>
    new Response("who are you?", {
      status: 401,
      headers: { "www-authenticate": 'Bearer realm="app"', "content-type": "text/plain" },
    })
  );
  await using up = await echoUpstream(seen);
  await using proxy = await startProxy(routes(auth.url, up.url));
  const res = await fetch(`${proxy.url}/app/x`);
  assert.equal(res.status, 401);
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="app"');
  assert.ok(res.headers.get("x-request-id"));
  assert.equal(await res.text(), "who are you?");
  assert.equal(seen.length, 0);
});

Deno.test("forward_auth's 401 reaches the client as sent on a route with intercept_upstream", async () => {
  // intercept_upstream pages the upstream's errors; the auth service's login answer is not one.
  await using auth = await authService((req) =>
    new URL(req.url).searchParams.has("let")
      ? new Response(null, { status: 204 })
      : new Response("<form>sign in</form>", {
        status: 401,
        headers: { "content-type": "text/html", "set-cookie": "csrf=1; Path=/" },
      })
  );
  await using up = await startUpstream(() => new Response("upstream 401", { status: 401 }));
  await using proxy = await startProxy(`
health_check: { enabled: false }
error_pages: { 401: { body: "page {status}" } }
routes:
  "/app":
    type: proxy
    target: "${up.url}"
    intercept_upstream: true
    forward_auth: { url: "${auth.url}/verify" }
  "/in":
    type: proxy
    target: "${up.url}"
    intercept_upstream: true
    forward_auth: { url: "${auth.url}/verify?let" }
`);
  const res = await fetch(`${proxy.url}/app/x`);
  assert.equal(res.status, 401);
  assert.equal(res.headers.get("content-type"), "text/html");
  assert.deepEqual(res.headers.getSetCookie(), ["csrf=1; Path=/"]);
  assert.equal(await res.text(), "<form>sign in</form>");
  // The upstream's own 401 still gets the page.
  const upstream = await fetch(`${proxy.url}/in/x`);
  assert.equal(upstream.status, 401);
  assert.equal(await upstream.text(), "page 401");
});

Deno.test("forward_auth passes a 302 to a login page with its Set-Cookie fields", async () => {
  await using auth = await authService(() => {
    const h = new Headers({ location: "https://login.example/start?rd=%2Fapp" });
    h.append("set-cookie", "csrf=1; Path=/; HttpOnly");
    h.append("set-cookie", "rd=/app; Path=/");
    return new Response(null, { status: 302, headers: h });
  });
  await using up = await echoUpstream();
  await using proxy = await startProxy(routes(auth.url, up.url));
  const res = await fetch(`${proxy.url}/app/`, { redirect: "manual" });
  await res.body?.cancel();
  assert.equal(res.status, 302);
  assert.equal(res.headers.get("location"), "https://login.example/start?rd=%2Fapp");
  assert.deepEqual(res.headers.getSetCookie(), ["csrf=1; Path=/; HttpOnly", "rd=/app; Path=/"]);
});

Deno.test("forward_auth answers 503 naming the auth service when it is down", async () => {
  const seen: Record<string, string>[] = [];
  await using up = await echoUpstream(seen);
  await using proxy = await startProxy(routes(`http://127.0.0.1:${freePort()}`, up.url));
  const res = await fetch(`${proxy.url}/app/`);
  await res.body?.cancel();
  assert.equal(res.status, 503);
  assert.equal(
    res.headers.get("proxy-status"),
    'prox; error=connection_refused; details="forward_auth"',
  );
  assert.equal(seen.length, 0);
});

Deno.test("forward_auth answers 503 when the auth service is too slow", async () => {
  const seen: Record<string, string>[] = [];
  const { promise: release, resolve } = Promise.withResolvers<void>();
  await using auth = await startUpstream(async () => {
    await release;
    return new Response("late");
  });
  await using up = await echoUpstream(seen);
  await using proxy = await startProxy(`
health_check: { enabled: false }
routes:
  "/app":
    type: proxy
    target: "${up.url}"
    forward_auth: { url: "${auth.url}/verify", timeout: 200ms }
`);
  try {
    const started = Date.now();
    const res = await fetch(`${proxy.url}/app/`);
    await res.body?.cancel();
    assert.equal(res.status, 503);
    assert.equal(
      res.headers.get("proxy-status"),
      'prox; error=http_response_timeout; details="forward_auth"',
    );
    assert.ok(Date.now() - started < 5_000);
    assert.equal(seen.length, 0);
  } finally {
    resolve();
  }
});

Deno.test("forward_auth at the top level applies to every route type; a route can turn it off", async () => {
  const asked: { method: string; url: string; headers: Record<string, string>; body: string }[] =
    [];
  await using auth = await authService(
    (req) =>
      req.headers.get("x-forwarded-uri")?.startsWith("/open")
        ? new Response("ok")
        : new Response("no", { status: 403 }),
    asked,
  );
  await using up = await echoUpstream();
  await using proxy = await startProxy(`
health_check: { enabled: false }
forward_auth: { url: "${auth.url}/check" }
routes:
  "/open":
    type: redirect
    target: /elsewhere
  "/away":
    type: redirect
    target: /elsewhere
  "/public":
    type: proxy
    target: "${up.url}"
    forward_auth: false
`);
  const open = await fetch(`${proxy.url}/open/x`, { redirect: "manual" });
  await open.body?.cancel();
  assert.equal(open.status, 307);
  const away = await fetch(`${proxy.url}/away/x`, { redirect: "manual" });
  assert.equal(away.status, 403);
  assert.equal(await away.text(), "no");
  const pub = await fetch(`${proxy.url}/public/`);
  assert.equal(pub.status, 200);
  await pub.body?.cancel();
  assert.equal(asked.length, 2);
});

Deno.test("forward_auth checks a WebSocket upgrade and hands the copied fields to its handshake", async () => {
  let allow = false;
  await using auth = await authService(() =>
    allow
      ? new Response("ok", { headers: { "x-auth-user": "alice" } })
      : new Response("no", { status: 401 })
  );
  await using ws = await wsUpstream();
  await using proxy = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: websocket
    target: "${ws.url}"
    forward_auth: { url: "${auth.url}/", copy_response_headers: [X-Auth-User] }
`);
  const url = `ws://127.0.0.1:${proxy.port}/chat`;
  await assert.rejects(connect(url, [], { headers: { "x-auth-user": "admin" } }), {
    status: 401,
  });
  assert.equal(ws.requests.length, 0);
  allow = true;
  const client = await connect(url, [], { headers: { "x-auth-user": "admin" } });
  assert.equal(ws.requests[0].headers["x-auth-user"], "alice");
  const done = closed(client);
  client.close();
  await done;
});

Deno.test("forward_auth send_body gives the auth service and the upstream the same body", async () => {
  const asked: { method: string; url: string; headers: Record<string, string>; body: string }[] =
    [];
  await using auth = await authService(
    (req) => new Response(null, { status: req.method === "PUT" ? 200 : 405 }),
    asked,
  );
  await using up = await echoUpstream();
  await using proxy = await startProxy(`
health_check: { enabled: false }
routes:
  "/app":
    type: proxy
    target: "${up.url}"
    forward_auth:
      url: "${auth.url}/"
      send_body: true
      preserve_method: true
      max_body: 16
`);
  const res = await fetch(`${proxy.url}/app/`, {
    method: "PUT",
    body: '{"a":1}',
    headers: { "content-type": "application/json" },
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).body, '{"a":1}');
  assert.equal(asked[0].body, '{"a":1}');
  assert.equal(asked[0].headers["content-type"], "application/json");
  const big = await fetch(`${proxy.url}/app/`, { method: "PUT", body: "x".repeat(17) });
  await big.body?.cancel();
  assert.equal(big.status, 413);
  assert.equal(asked.length, 1);
});

Deno.test("forward_auth works the same over HTTP/2 and HTTP/3", async () => {
  const TLS = `${ROOT}/tests/fixtures/tls`;
  const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);
  const asked: { method: string; url: string; headers: Record<string, string>; body: string }[] =
    [];
  await using auth = await authService(
    (req) =>
      req.headers.get("cookie") === "s=ok"
        ? new Response("ok", { headers: { "x-auth-user": "alice" } })
        : new Response("login first", { status: 401 }),
    asked,
  );
  await using up = await echoUpstream();
  await using proxy = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
protocols: { http3_enabled: true }
${routes(auth.url, up.url)}`,
    { keepListen: true, tls: true },
  );
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const base = `https://localhost:${proxy.port}/app/p`;
    const denied = await fetch(base, { client });
    assert.equal(denied.status, 401);
    assert.equal(await denied.text(), "login first");
    const ok = await fetch(base, { client, headers: { cookie: "s=ok", "x-auth-user": "eve" } });
    assert.equal(ok.status, 200);
    assert.equal((await ok.json()).headers["x-auth-user"], "alice");
  } finally {
    client.close();
  }
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: proxy.port, caCerts: [ca] });
  const denied = await h3.request("/app/p");
  assert.equal(denied.status, 401);
  assert.equal(new TextDecoder().decode(denied.body), "login first");
  const ok = await h3.request("/app/p", { headers: { cookie: "s=ok", "x-auth-user": "eve" } });
  assert.equal(ok.status, 200);
  assert.equal(JSON.parse(new TextDecoder().decode(ok.body)).headers["x-auth-user"], "alice");
  assert.deepEqual(asked.map((a) => a.headers["x-forwarded-proto"]), [
    "https",
    "https",
    "https",
    "https",
  ]);
});

Deno.test("forward_auth reuses its keep-alive connection to the auth service", async () => {
  const ports = new Set<number>();
  await using auth = await startUpstream((_req, info) => {
    ports.add(info.remoteAddr.port);
    return new Response("ok");
  });
  await using up = await echoUpstream();
  await using proxy = await startProxy(routes(auth.url, up.url));
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${proxy.url}/app/${i}`);
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  assert.equal(ports.size, 1);
});

Deno.test("forward_auth runs after the rate limit: a refused request never reaches the auth service", async () => {
  const asked: { method: string; url: string; headers: Record<string, string>; body: string }[] =
    [];
  await using auth = await authService(() => new Response("ok"), asked);
  await using up = await echoUpstream();
  await using proxy = await startProxy(routes(
    auth.url,
    up.url,
    "    rate_limit: { by: route, requests: 1, period: 1m }",
  ));
  const first = await fetch(`${proxy.url}/app/`);
  await first.body?.cancel();
  const second = await fetch(`${proxy.url}/app/`);
  await second.body?.cancel();
  assert.deepEqual([first.status, second.status], [200, 429]);
  assert.equal(asked.length, 1);
});

Deno.test("forward_auth asks an https auth service it trusts through tls.ca_cert", async () => {
  const TLS = `${ROOT}/tests/fixtures/tls`;
  await using auth = await startUpstream(
    (req) => new Response("ok", { headers: { "x-auth-user": req.headers.get("host") ?? "" } }),
    {
      cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
      key: Deno.readTextFileSync(`${TLS}/key.pem`),
    },
  );
  await using up = await echoUpstream();
  const yaml = (tls: string) => `
health_check: { enabled: false }
routes:
  "/app":
    type: proxy
    target: "${up.url}"
    forward_auth:
      url: "https://localhost:${auth.port}/check"
      copy_response_headers: [X-Auth-User]
${tls}`;
  {
    await using proxy = await startProxy(yaml(`      tls: { ca_cert: "${TLS}/ca.pem" }`));
    const res = await fetch(`${proxy.url}/app/`);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).headers["x-auth-user"], `localhost:${auth.port}`);
  }
  // Without the CA the certificate is not trusted: 503, never the route.
  await using proxy = await startProxy(yaml(""));
  const res = await fetch(`${proxy.url}/app/`);
  await res.body?.cancel();
  assert.equal(res.status, 503);
  assert.match(
    res.headers.get("proxy-status") ?? "",
    /error=tls_certificate_error; details="forward_auth"/,
  );
});

interopTest(
  "an HTTP/2 upload Prox answers without reading (forward_auth 401, 429, redirect) gets that answer, not a stream reset",
  [
    "curl",
  ],
  async () => {
    const TLS = `${ROOT}/tests/fixtures/tls`;
    await using auth = await startUpstream(() => new Response("no", { status: 401 }));
    await using up = await echoUpstream();
    await using proxy = await startProxy(
      `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
health_check: { enabled: false }
routes:
  "/a": { type: proxy, target: "${up.url}", forward_auth: { url: "${auth.url}/" } }
  "/l": { type: proxy, target: "${up.url}", rate_limit: { by: route, requests: 1, period: 1m } }
  "/r": { type: redirect, target: "/elsewhere" }
`,
      { keepListen: true, tls: true },
    );
    const file = await Deno.makeTempFile();
    try {
      // More than Deno.serve's 1 MiB stream window: the upload is still under way when Prox answers.
      await Deno.writeFile(file, new Uint8Array(3 << 20));
      const post = (path: string) =>
        run("curl", [
          "-sS",
          "--http2",
          "--cacert",
          `${TLS}/ca.pem`,
          "-o",
          "/dev/null",
          "-w",
          "%{http_code} %{http_version}",
          "--data-binary",
          `@${file}`,
          `https://localhost:${proxy.port}${path}`,
        ], { timeoutMs: 20_000 });
      const got: string[] = [];
      for (const path of ["/a/x", "/l/x", "/l/x", "/r/x"]) {
        const r = await post(path);
        got.push(`${r.stdout} ${r.stderr.trim()}`.trim());
      }
      assert.deepEqual(got, ["401 2", "200 2", "429 2", "307 2"]);
    } finally {
      await Deno.remove(file);
    }
  },
);

Deno.test("forward_auth with a timeout past 24.8 days waits for the answer (it fired at once: 503)", async () => {
  // setTimeout takes at most 2^31 - 1 ms; beyond that it fired after 1 ms, refusing every request.
  await using auth = await authService(async () => {
    await new Promise((r) => setTimeout(r, 30));
    return new Response("ok");
  });
  await using up = await echoUpstream();
  await using proxy = await startProxy(
    routes(auth.url, up.url).replace("      url:", "      timeout: 30d\n      url:"),
  );
  const res = await fetch(`${proxy.url}/app/`);
  await res.body?.cancel();
  assert.equal(res.status, 200);
});
