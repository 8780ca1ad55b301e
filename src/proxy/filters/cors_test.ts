import assert from "node:assert/strict";
import { loadConfigText } from "../../config/load.ts";
import { buildSnapshot } from "../snapshot.ts";
import { createHandler } from "../pipeline.ts";
import { ProxyError } from "../../domain/errors.ts";
import { noopMetrics, silentLogger } from "../../ports.ts";
import type { AccessDenial, ClientInfo } from "../../ports.ts";
import { explainRequest } from "../explain.ts";
import { createMemoryStore } from "../../adapters/store_memory.ts";

const APP = "https://app.example.com";
const HASH = `$2y$10$${"a".repeat(53)}`;

const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

const CONFIG = `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/api":
    type: proxy
    target: http://10.1.1.1
    rate_limit: { by: ip, requests: 1, period: 1m, burst: 1 }
    basic_auth: { users: { alice: "${HASH}" } }
    cors:
      allow_origins: ["${APP}", "https://*.example.org"]
      allow_headers: [Content-Type, Authorization]
      expose_headers: [X-Total]
      allow_credentials: true
      max_age: 10m
  "/down":
    type: proxy
    target: http://10.1.1.2
    cors: { allow_origins: ["*"] }
    error_pages: { 502: { body: "down", content_type: application/json } }
  "/plain":
    type: proxy
    target: http://10.1.1.3
  "/old":
    type: redirect
    target: https://new.example.com
    cors: { allow_origins: ["${APP}"] }
  "/inside":
    type: proxy
    target: http://10.1.1.3
    ip_access: { allow: [10.0.0.0/8] }
    cors: { allow_origins: ["${APP}"] }
`;

/** A pipeline over CONFIG; the fake upstream sets its own CORS fields and Vary. */
function setup() {
  const { config, issues } = loadConfigText(CONFIG, {
    file: "t.yaml",
    env: { exists: () => true },
  });
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const sent: string[] = [];
  const denials: AccessDenial[] = [];
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: {
      send: (r) => {
        sent.push(`${r.method} ${r.target}`);
        if (r.origin.hostname === "10.1.1.2") {
          return Promise.reject(new ProxyError("connect", "refused", { retryable: false }));
        }
        return Promise.resolve(
          new Response("ok", {
            headers: {
              "access-control-allow-origin": "*",
              "access-control-allow-methods": "DELETE",
              vary: "Accept-Encoding",
            },
          }),
        );
      },
      close: () => Promise.resolve(),
    },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: silentLogger,
    metrics: { ...noopMetrics, accessDenied: (_r, why) => void denials.push(why) },
    passwords: { verify: () => Promise.resolve(true) },
    rateLimits: createMemoryStore(),
    random: () => 0.5,
  });
  const call = async (path: string, init: RequestInit = {}) => {
    const res = await handler(new Request(`http://h${path}`, init), info);
    await res.body?.cancel();
    return res;
  };
  return { call, sent, denials, snapshot };
}

const preflight = (origin: string, extra: Record<string, string> = {}): RequestInit => ({
  method: "OPTIONS",
  headers: { origin, "access-control-request-method": "PUT", ...extra },
});

Deno.test("cors: a preflight is answered 204 before rate limits and basic_auth, never proxied", async () => {
  const s = setup();
  for (let i = 0; i < 3; i++) { // the rate limit (1 per minute) is not spent by preflights
    const res = await s.call(
      "/api/items",
      preflight(APP, { "access-control-request-headers": "content-type,authorization" }),
    );
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("access-control-allow-origin"), APP);
    assert.equal(res.headers.get("access-control-allow-credentials"), "true");
    assert.equal(
      res.headers.get("access-control-allow-methods"),
      "GET, HEAD, PUT, PATCH, POST, DELETE",
    );
    assert.equal(res.headers.get("access-control-allow-headers"), "Content-Type, Authorization");
    assert.equal(res.headers.get("access-control-max-age"), "600");
    assert.equal(res.headers.get("vary"), "Origin, Access-Control-Request-Method");
    assert.equal(res.headers.get("www-authenticate"), null);
  }
  // a wildcard subdomain
  const sub = await s.call("/api/x", preflight("https://a.b.example.org"));
  assert.equal(sub.status, 204);
  assert.equal(sub.headers.get("access-control-allow-origin"), "https://a.b.example.org");
  assert.deepEqual(s.sent, []);
  // the one token of the minute is still there for the actual request
  const put = await s.call("/api/items", {
    method: "PUT",
    headers: { origin: APP, authorization: `Basic ${btoa("alice:x")}` },
  });
  assert.equal(put.status, 200);
  assert.deepEqual(s.sent, ["PUT /items"]);
});

Deno.test("cors: a preflight from an origin not listed gets 403 without CORS fields", async () => {
  const s = setup();
  for (
    const origin of ["https://evil.test", "https://example.org", "https://app.example.com.evil"]
  ) {
    const res = await s.call("/api/items", preflight(origin));
    assert.equal(res.status, 403, origin);
    for (const [k] of res.headers) assert.ok(!k.startsWith("access-control-"), k);
    assert.match(res.headers.get("vary")!, /^Origin/);
  }
  assert.deepEqual(s.denials, ["cors_origin", "cors_origin", "cors_origin"]);
  assert.deepEqual(s.sent, []);
});

Deno.test("cors: Prox's own 401, 429 and 502 carry the fields for an admitted origin", async () => {
  const s = setup();
  const h = { origin: APP };
  const unauth = await s.call("/api/x", { headers: h });
  assert.equal(unauth.status, 401);
  assert.equal(unauth.headers.get("access-control-allow-origin"), APP);
  assert.equal(unauth.headers.get("access-control-allow-credentials"), "true");
  assert.equal(unauth.headers.get("access-control-expose-headers"), "X-Total");
  assert.equal(unauth.headers.get("vary"), "Origin");
  const limited = await s.call("/api/x", { headers: h });
  assert.equal(limited.status, 429);
  assert.equal(limited.headers.get("access-control-allow-origin"), APP);
  const bad = await s.call("/down/x", { headers: { origin: "https://any.test" } });
  assert.equal(bad.status, 502); // the error page, readable by the page
  assert.equal(bad.headers.get("content-type"), "application/json");
  assert.equal(bad.headers.get("access-control-allow-origin"), "*");
  assert.equal(bad.headers.get("vary"), null); // `*`: the same for every origin
});

Deno.test("cors: the upstream's Access-Control-* fields give way to Prox's; Vary is merged", async () => {
  const s = setup();
  const auth = { authorization: `Basic ${btoa("alice:x")}` };
  const ok = await s.call("/api/x", { headers: { ...auth, origin: APP } });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get("access-control-allow-origin"), APP);
  assert.equal(ok.headers.get("access-control-allow-methods"), null);
  assert.equal(ok.headers.get("vary"), "Accept-Encoding, Origin");
  // an origin not listed: the upstream's `*` is gone too, so the browser keeps the answer
  const s2 = setup();
  const other = await s2.call("/api/x", { headers: { ...auth, origin: "https://evil.test" } });
  assert.equal(other.status, 200);
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  assert.equal(other.headers.get("vary"), "Accept-Encoding, Origin");
  // a route without cors passes the upstream's fields as they are
  const plain = await s2.call("/plain/x", { headers: { origin: "https://evil.test" } });
  assert.equal(plain.headers.get("access-control-allow-origin"), "*");
  assert.equal(plain.headers.get("vary"), "Accept-Encoding");
});

Deno.test("cors: ip_access refuses a preflight first; a redirect carries the fields", async () => {
  const s = setup();
  const refused = await s.call("/inside/x", preflight(APP));
  assert.equal(refused.status, 403);
  assert.deepEqual(s.denials, ["ip"]);
  // The refusal says nothing of the route's origins, to a preflight or any other request.
  const plain = await s.call("/inside/x", { headers: { origin: APP } });
  for (const res of [refused, plain]) {
    assert.equal(res.status, 403);
    assert.equal(res.headers.get("access-control-allow-origin"), null);
    assert.equal(res.headers.get("vary"), null);
  }
  const moved = await s.call("/old/x", { headers: { origin: APP } });
  assert.equal(moved.status, 307);
  assert.equal(moved.headers.get("location"), "https://new.example.com/x");
  assert.equal(moved.headers.get("access-control-allow-origin"), APP);
  assert.equal(moved.headers.get("vary"), "Origin");
});

Deno.test("cors: prox explain shows the preflight answer and the decision", async () => {
  const s = setup();
  const deps = {
    snapshot: s.snapshot,
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 0, monotonic: () => 0 },
    logger: silentLogger,
  };
  const pre = await explainRequest({
    url: "http://h/api/x",
    method: "OPTIONS",
    headers: [["origin", APP], ["access-control-request-method", "PUT"]],
  }, deps);
  assert.equal(pre.answer?.status, 204);
  assert.ok(pre.notes.some((n) => n.startsWith(`cors: preflight from ${APP} answered by Prox`)));
  const other = await explainRequest({
    url: "http://h/api/x",
    method: "GET",
    headers: [["origin", "https://evil.test"]],
  }, deps);
  assert.ok(other.notes.some((n) => n.includes("https://evil.test is not listed")));
});

Deno.test("cors: allow_origins * answers Access-Control-Allow-Origin: * with or without Origin", async () => {
  const s = setup();
  // A navigation, an <img> or a same-origin call sends no Origin. Its answer had no CORS field
  // and no Vary: Origin, so a browser or CDN cache served it to a later cross-origin fetch, which
  // the browser then refused (Fetch standard, "CORS protocol and HTTP caches").
  for (const headers of [{}, { origin: "https://any.test" }] as Record<string, string>[]) {
    const res = await s.call("/down/x", { headers });
    assert.equal(res.status, 502);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.equal(res.headers.get("vary"), null);
  }
  // A list of origins still answers only those, and says it varies by Origin.
  const listed = await s.call("/old/x");
  assert.equal(listed.headers.get("access-control-allow-origin"), null);
  assert.equal(listed.headers.get("vary"), "Origin");
});
