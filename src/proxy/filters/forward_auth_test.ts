import assert from "node:assert/strict";
import { loadConfigText } from "../../config/load.ts";
import { buildSnapshot } from "../snapshot.ts";
import { createHandler } from "../pipeline.ts";
import { noopMetrics, silentLogger } from "../../ports.ts";
import type { ClientInfo, Metrics, UpstreamRequest } from "../../ports.ts";
import { ProxyError } from "../../domain/errors.ts";
import { AUTH_BODY_CAP } from "./forward_auth.ts";
import { forwardAuthNote } from "../explain.ts";
import { setup as setupCache } from "../_cache_fixture.ts";

const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

/** A pipeline whose auth service (http://auth) answers with `auth`; the upstream says "app". */
function setup(
  auth: (r: UpstreamRequest) => Response | Promise<Response>,
  extra = "",
  top = "",
) {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
${top}health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://app"
    forward_auth: { url: "http://auth/check"${extra} }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const asked: UpstreamRequest[] = [];
  const outcomes: string[] = [];
  const statuses: number[] = [];
  const metrics: Metrics = {
    ...noopMetrics,
    forwardAuth: (route, outcome) => void outcomes.push(`${route} ${outcome}`),
  };
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: {
      send: (r) => {
        asked.push(r);
        return r.origin.host === "auth"
          ? Promise.resolve(auth(r))
          : Promise.resolve(new Response("app"));
      },
      close: () => Promise.resolve(),
    },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: silentLogger,
    metrics,
    access: (r) => void statuses.push(r.status),
    random: () => 0.5,
  });
  return { handler, asked, outcomes, statuses };
}

Deno.test("applyForwardAuth counts allowed, denied and failed checks per route", async () => {
  let status = 200;
  const { handler, outcomes } = setup(() => {
    if (status === 0) throw new Error("boom");
    return new Response(null, { status });
  });
  for (const s of [200, 401, 0]) {
    status = s;
    await (await handler(new Request("http://h/x"), info)).body?.cancel();
  }
  assert.deepEqual(outcomes, ["/ allowed", "/ denied", "/ error"]);
});

Deno.test("applyForwardAuth sends the usual client fields, not the others, nor the body", async () => {
  const { handler, asked } = setup(() => new Response(null, { status: 204 }));
  const res = await handler(
    new Request("http://h/x", {
      method: "POST",
      body: "secret body",
      headers: {
        authorization: "Basic YTpi",
        "proxy-authorization": "Basic Yzpk",
        cookie: "s=1",
        accept: "text/html",
        "user-agent": "t",
        "x-requested-with": "XMLHttpRequest",
        "x-other": "1",
        "content-type": "text/plain",
      },
    }),
    info,
  );
  assert.equal(await res.text(), "app");
  const a = asked[0];
  assert.equal(a.method, "GET");
  assert.equal(a.body, null);
  assert.equal(a.target, "/check");
  const names = [...a.headers].map(([k]) => k).sort();
  assert.deepEqual(names, [
    "accept",
    "authorization",
    "cookie",
    "host",
    "proxy-authorization",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-uri",
    "x-request-id",
    "x-requested-with",
  ]);
  assert.equal(a.headers.get("host"), "auth");
  assert.equal(a.headers.get("x-forwarded-for"), "192.0.2.7");
});

Deno.test("applyForwardAuth refuses with 503 an auth answer it cannot pass on", async () => {
  // A denial body past the cap, and an interim status, are failures of the auth service.
  for (
    const make of [
      () => new Response(new Uint8Array(AUTH_BODY_CAP + 1), { status: 403 }),
      () => new Response(null, { status: 101 }),
    ]
  ) {
    const { handler, outcomes } = setup(make);
    const res = await handler(new Request("http://h/x"), info);
    await res.body?.cancel();
    assert.equal(res.status, 503);
    assert.match(res.headers.get("proxy-status") ?? "", /details="forward_auth"/);
    assert.deepEqual(outcomes, ["/ error"]);
  }
});

Deno.test("applyForwardAuth copy_response_cookies adds a 2xx's cookies to the response", async () => {
  const { handler } = setup(() => {
    const h = new Headers();
    h.append("set-cookie", "a=1");
    h.append("set-cookie", "b=2");
    return new Response(null, { status: 200, headers: h });
  }, ", copy_response_cookies: true");
  const res = await handler(new Request("http://h/x"), info);
  await res.body?.cancel();
  assert.deepEqual(res.headers.getSetCookie(), ["a=1", "b=2"]);
});

Deno.test("applyForwardAuth: a client that leaves during the check is logged 499, not an auth error", async () => {
  const { handler, outcomes, statuses } = setup((r) =>
    new Promise((_, reject) => {
      const gone = () => reject(new ProxyError("client_gone", "gone"));
      if (r.signal!.aborted) gone();
      else r.signal!.addEventListener("abort", gone);
    })
  );
  const ctl = new AbortController();
  const pending = handler(new Request("http://h/x", { signal: ctl.signal }), info);
  ctl.abort();
  await (await pending).body?.cancel();
  assert.deepEqual(statuses, [499]);
  assert.deepEqual(outcomes, []);
});

Deno.test("authRequestHeaders takes X-Forwarded-* from a trusted proxy only, as the upstream does", async () => {
  const { handler, asked } = setup(
    () => new Response(null, { status: 204 }),
    "",
    "trusted_proxies: [192.0.2.0/24]\n",
  );
  const { handler: direct, asked: askedDirect } = setup(() => new Response(null, { status: 204 }));
  const headers = {
    "x-forwarded-for": "198.51.100.9",
    "x-forwarded-host": "shop.example",
    "x-forwarded-proto": "https",
  };
  await (await handler(new Request("http://h/x", { headers }), info)).body?.cancel();
  await (await direct(new Request("http://h/x", { headers }), info)).body?.cancel();
  const via = asked[0].headers;
  assert.equal(via.get("x-forwarded-for"), "198.51.100.9, 192.0.2.7");
  assert.equal(via.get("x-forwarded-host"), "shop.example");
  assert.equal(via.get("x-forwarded-proto"), "https");
  const own = askedDirect[0].headers;
  assert.equal(own.get("x-forwarded-for"), "192.0.2.7");
  assert.equal(own.get("x-forwarded-host"), "h");
  assert.equal(own.get("x-forwarded-proto"), "http");
});

Deno.test("authRequestHeaders with copy_request_headers [*] sends every field but hop-by-hop ones", async () => {
  const { handler, asked } = setup(
    () => new Response(null, { status: 204 }),
    ', copy_request_headers: ["*"]',
  );
  const res = await handler(
    new Request("http://h/x", {
      method: "POST",
      body: "abc",
      headers: {
        "x-one": "1",
        "x_forwarded_uri": "/public", // a CGI auth service would read it as X-Forwarded-Uri
        "proxy-authorization": "Basic Yzpk",
        connection: "x-hop",
        "x-hop": "dropped",
        te: "trailers",
        "content-length": "3",
        // The client's own handshake with Prox: the subrequest sends its body at once.
        expect: "100-continue",
      },
    }),
    info,
  );
  await res.body?.cancel();
  const h = asked[0].headers;
  assert.equal(h.get("x-one"), "1");
  assert.equal(h.get("proxy-authorization"), "Basic Yzpk");
  assert.equal(h.get("host"), "auth");
  for (
    const gone of ["x-hop", "connection", "te", "content-length", "x_forwarded_uri", "expect"]
  ) {
    assert.equal(h.get(gone), null, gone);
  }
});

Deno.test("authRequestHeaders with [*] drops a direct client's X-Original-URL, X-Real-IP and other forwarding fields", async () => {
  // Authelia's /api/verify reads X-Original-URL before X-Forwarded-Uri: a client's own would
  // have it check a public URL while the upstream serves another.
  const headers = {
    "x-original-url": "https://app.example/public/",
    "x-original-method": "GET",
    "x-real-ip": "10.0.0.1",
    "x-forwarded-prefix": "/public",
    forwarded: "for=10.0.0.1",
    "x-one": "1",
  };
  const { handler, asked } = setup(
    () => new Response(null, { status: 204 }),
    ', copy_request_headers: ["*"]',
  );
  await (await handler(new Request("http://h/admin", { headers }), info)).body?.cancel();
  const h = asked[0].headers;
  assert.equal(h.get("x-one"), "1");
  assert.equal(h.get("x-forwarded-uri"), "/admin");
  for (const gone of Object.keys(headers).filter((n) => n !== "x-one")) {
    assert.equal(h.get(gone), null, gone);
  }
  // A trusted proxy's are its own account of the request: passed on.
  const trusted = setup(
    () => new Response(null, { status: 204 }),
    ', copy_request_headers: ["*"]',
    "trusted_proxies: [192.0.2.0/24]\n",
  );
  await (await trusted.handler(new Request("http://h/admin", { headers }), info)).body?.cancel();
  assert.equal(trusted.asked[0].headers.get("x-original-url"), "https://app.example/public/");
  assert.equal(trusted.asked[0].headers.get("x-real-ip"), "10.0.0.1");
});

Deno.test("applyForwardAuth send_body: a body that stalls gets 408 within forward_auth.timeout", async () => {
  const { handler, asked, outcomes } = setup(
    () => new Response(null, { status: 204 }),
    ", send_body: true, timeout: 100ms",
  );
  let ctl: ReadableStreamDefaultController<Uint8Array> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      ctl = c;
      c.enqueue(new Uint8Array([1]));
    },
  });
  const res = await handler(
    new Request("http://h/x", { method: "POST", body, duplex: "half" } as RequestInit),
    info,
  );
  await res.body?.cancel();
  assert.equal(res.status, 408);
  assert.equal(asked.length, 0);
  assert.deepEqual(outcomes, []);
  try {
    ctl?.close();
  } catch { /* cancelled already */ }
});

Deno.test("applyForwardAuth send_body: the route's max_request_body still holds for a chunked body", async () => {
  const { handler, asked } = setup(
    () => new Response(null, { status: 204 }),
    ", send_body: true",
    "limits: { max_request_body: 4 }\n",
  );
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array(10));
      c.close();
    },
  });
  const res = await handler(
    new Request("http://h/x", { method: "POST", body, duplex: "half" } as RequestInit),
    info,
  );
  await res.body?.cancel();
  assert.equal(res.status, 413);
  assert.equal(asked.length, 0);
});

/** A caching route behind forward_auth: the auth service names the user by the `u` cookie. */
function cachedBehindAuth(upstream: (user: string | null) => Response) {
  return setupCache((r) => {
    if (r.origin.host === "auth") {
      const user = /u=(\w+)/.exec(r.headers.get("cookie") ?? "")?.[1];
      return new Response(null, { status: 200, headers: user ? { "x-auth-user": user } : {} });
    }
    return upstream(r.headers.get("x-auth-user"));
  }, {
    extra: 'forward_auth: { url: "http://auth/check", copy_response_headers: [X-Auth-User] }',
  });
}

Deno.test("forward_auth + cache: Vary on a copied field keys on the auth service's value", async () => {
  const c = cachedBehindAuth((user) =>
    new Response(`hello ${user}`, {
      headers: { "cache-control": "public, max-age=60", vary: "X-Auth-User" },
    })
  );
  const as = (u: string) => c.get("/me", { headers: { cookie: `u=${u}`, "x-auth-user": "eve" } });
  assert.equal((await as("alice")).text, "hello alice");
  assert.equal((await as("bob")).text, "hello bob");
  assert.equal((await as("alice")).text, "hello alice");
  assert.deepEqual(c.results, ["miss", "miss", "hit"]);
});

Deno.test("forward_auth + cache: an answer to a checked request is stored only when public", async () => {
  const c = cachedBehindAuth((user) =>
    new Response(`hello ${user}`, { headers: { "cache-control": "max-age=60" } })
  );
  assert.equal((await c.get("/me", { headers: { cookie: "u=alice" } })).text, "hello alice");
  assert.equal((await c.get("/me", { headers: { cookie: "u=bob" } })).text, "hello bob");
  assert.deepEqual(c.results, ["miss", "miss"]);
});

Deno.test("applyForwardAuth logs and explains the auth service without its URL's password or secret query", async () => {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://app"
    forward_auth: { url: "http://user:pa55word@auth/check?api_key=K3YVALUE&scope=web" }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const warned: unknown[] = [];
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: {
      send: (r) =>
        r.origin.host === "auth"
          ? Promise.reject(new ProxyError("connect", "Cannot connect: connection refused"))
          : Promise.resolve(new Response("app")),
      close: () => Promise.resolve(),
    },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: { ...silentLogger, warn: (m, f) => void warned.push([m, f]) },
    metrics: noopMetrics,
    random: () => 0.5,
  });
  const res = await handler(new Request("http://h/x"), info);
  await res.body?.cancel();
  assert.equal(res.status, 503);
  const logged = JSON.stringify(warned);
  assert.match(logged, /Forward auth failed/);
  assert.match(logged, /auth\/check\?api_key=/, logged);
  const note = forwardAuthNote(snapshot.router.entries[0].value.forwardAuth!, "GET");
  for (const text of [logged, note]) {
    assert.doesNotMatch(text, /pa55word|K3YVALUE/, text);
    assert.match(text, /scope=web/, text);
  }
});
