import assert from "node:assert/strict";
import {
  clientKey,
  compileRateLimit,
  compileRateLimits,
  cookieValue,
  limitField,
  policyField,
} from "./rate_limit.ts";
import { policyOf } from "../../domain/rate_limit.ts";
import { RateLimit } from "../../config/schema.ts";
import { loadConfigText } from "../../config/load.ts";
import { buildSnapshot } from "../snapshot.ts";
import { createHandler } from "../pipeline.ts";
import { noopMetrics, silentLogger } from "../../ports.ts";
import type { ClientInfo } from "../../ports.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { createMemoryStore } from "../../adapters/store_memory.ts";

const cfg = (over: Record<string, unknown>) =>
  RateLimit.parse({ by: "ip", requests: 10, period: "1m", ...over });

Deno.test("policyField announces q per whole-second window, rescaling sub-second periods", () => {
  assert.equal(
    policyField(policyOf("token_bucket", { requests: 10, periodMs: 60_000 })),
    '"default";q=10;w=60',
  );
  assert.equal(policyField(policyOf("gcra", { requests: 5, periodMs: 500 })), '"default";q=10;w=1');
  assert.equal(
    policyField(policyOf("token_bucket", { requests: 2, periodMs: 1_000, burst: 5 })),
    '"default";q=2;w=1;prox-burst=5',
  );
  // A fractional period: the next whole second, never a quota of 0 (1 per 1.4 s was q=0;w=1).
  assert.equal(
    policyField(policyOf("gcra", { requests: 1, periodMs: 1_400 })),
    '"default";q=1;w=2',
  );
  assert.equal(
    policyField(policyOf("fixed_window", { requests: 1, periodMs: 2_400 })),
    '"default";q=1;w=3',
  );
  assert.equal(limitField(3, 7), '"default";r=3;t=7');
});

Deno.test("policyField and limitField keep to structured-field integers (15 digits at most)", () => {
  // RFC 9651 §3.3.1: a client's parser refuses a longer integer, and with it the whole field.
  const huge = policyOf("token_bucket", { requests: 5e15, periodMs: 1_000, burst: 2e15 });
  assert.equal(policyField(huge), '"default";q=999999999999999;w=1;prox-burst=999999999999999');
  // A sub-second period scales a quota under 10^15 past it.
  const fast = policyOf("gcra", { requests: 1e14, periodMs: 1 });
  assert.equal(policyField(fast), '"default";q=999999999999999;w=1');
  assert.equal(limitField(4e15, 7), '"default";r=999999999999999;t=7');
  // A very long period (days of digits) has its window clamped too.
  const slow = policyOf("fixed_window", { requests: 1, periodMs: 1e20 });
  assert.equal(policyField(slow), '"default";q=1;w=999999999999999');
  assert.equal(limitField(0, 1e17), '"default";r=0;t=999999999999999');
});

Deno.test("compileRateLimit ids change with the limit's shape, not with its response", () => {
  const base = compileRateLimit("/api", cfg({}));
  assert.equal(compileRateLimit("/api", cfg({ message: "x", status_code: 503 })).id, base.id);
  assert.equal(compileRateLimit("/api", cfg({ headers: false, shadow: true })).id, base.id);
  assert.notEqual(compileRateLimit("/api", cfg({ requests: 11 })).id, base.id);
  assert.notEqual(compileRateLimit("/api", cfg({ algorithm: "gcra" })).id, base.id);
  assert.notEqual(compileRateLimit("/other", cfg({})).id, base.id);
  assert.equal(base.policy.periodMs, 60_000);
  assert.ok(base.id.startsWith("/api#"));
});

Deno.test("compileRateLimits: adding a limit keeps the others' counters; names never collide", () => {
  const hour = cfg({ requests: 2, period: "1h" });
  const day = cfg({ requests: 100, period: "1d" });
  const alone = compileRateLimits("/api", { rate_limit: hour });
  const both = compileRateLimits("/api", { rate_limit: hour, rate_limits: [day] });
  // The unnamed limit is "default" alone and "limit1" beside another: its counters stay.
  assert.deepEqual([alone[0].name, both[0].name], ["default", "limit1"]);
  assert.equal(both[0].id, alone[0].id);
  // An explicit "limit1" keeps its name; the generated one moves aside, with its own counters.
  const clash = compileRateLimits("/api", {
    rate_limit: hour,
    rate_limits: [{ ...hour, name: "limit1" }],
  });
  assert.deepEqual(clash.map((l) => l.name), ["limit2", "limit1"]);
  assert.notEqual(clash[0].id, clash[1].id);
  // Two unnamed limits of one shape count apart.
  const twins = compileRateLimits("/api", { rate_limits: [hour, hour] });
  assert.notEqual(twins[0].id, twins[1].id);
});

Deno.test("clientKey by: query reads the query as sent, jwt_auth's token parameter too", () => {
  const limit = compileRateLimit("/api", cfg({ by: "query", query_param: "access_token" }));
  const ctx = (o: Partial<RequestContext>) => ({ query: "", ...o }) as RequestContext;
  assert.equal(clientKey(limit, ctx({ query: "?access_token=t1&k=v" })), "q:t1");
  // jwt_auth took the parameter out of `query` (for the log and the upstream) at routing.
  assert.equal(clientKey(limit, ctx({ query: "?k=v", jwtQuery: "?access_token=t1&k=v" })), "q:t1");
  assert.equal(clientKey(limit, ctx({ query: "?k=v" })), null);
});

Deno.test("cookieValue finds a cookie among others and unquotes it", () => {
  assert.equal(cookieValue("a=1; session=xyz; b=2", "session"), "xyz");
  assert.equal(cookieValue('session="q v"', "session"), "q v");
  assert.equal(cookieValue("sessionx=1", "session"), null);
  assert.equal(cookieValue(null, "session"), null);
  // Twice with different values: apps disagree on which one counts, so neither does.
  assert.equal(cookieValue("session=a; session=b", "session"), null);
  assert.equal(cookieValue('session=a; x=1; session="a"', "session"), "a");
});

Deno.test("rate_limit config: exempt_ips must be CIDRs and burst on a window warns", () => {
  const text = `listen_addr: "127.0.0.1:0"
routes:
  "/":
    type: redirect
    target: "https://example.com/x"
    rate_limit:
      by: ip
      requests: 1
      period: 1s
      algorithm: fixed_window
      burst: 3
      exempt_ips: ["10.0.0.0/8", "nope"]
`;
  const out = loadConfigText(text, { file: "t.yaml", env: { exists: () => true } });
  const msgs = out.issues.map((i) => `${i.severity}: ${i.path}: ${i.message}`);
  assert.deepEqual(msgs, [
    "warning: routes./.rate_limit.burst: burst is ignored by fixed_window",
    'error: routes./.rate_limit.exempt_ips.1: Invalid CIDR "nope"',
  ]);
});

Deno.test("rate_limit config: by header of a client-address field warns that a client picks its key", () => {
  const text = (name: string) =>
    `listen_addr: "127.0.0.1:0"
routes:
  "/":
    type: redirect
    target: "https://example.com/x"
    rate_limit: { by: header, header_name: ${name}, on_missing_key: deny, requests: 1, period: 1s }
`;
  for (const name of ["X-Forwarded-For", "x-real-ip", "Forwarded", "True-Client-IP"]) {
    const out = loadConfigText(text(name), { file: "t.yaml", env: { exists: () => true } });
    const msgs = out.issues.map((i) => `${i.severity}: ${i.path}: ${i.message}`);
    assert.equal(msgs.length, 1, `${name}: ${msgs.join("\n")}`);
    assert.match(
      msgs[0],
      /^warning: routes\.\/\.rate_limit\.header_name: .* a client sets \(unless a proxy in front replaces it\): each request can name a key of its own/,
    );
  }
  const key = loadConfigText(text("X-API-Key"), { file: "t.yaml", env: { exists: () => true } });
  assert.deepEqual(key.issues, []);
});

Deno.test("rate_limits config: names must be unique and well-formed", () => {
  const text = `listen_addr: "127.0.0.1:0"
routes:
  "/":
    type: redirect
    target: "https://example.com/x"
    rate_limit: { name: a, by: ip, requests: 1, period: 1s }
    rate_limits:
      - { name: a, by: ip, requests: 10, period: 1m }
      - { name: "b c", by: ip, requests: 10, period: 1h }
`;
  const out = loadConfigText(text, { file: "t.yaml", env: { exists: () => true } });
  const msgs = out.issues.map((i) => `${i.severity}: ${i.path}: ${i.message}`);
  assert.equal(out.config, undefined);
  assert.ok(msgs.some((m) => m.includes("rate_limits.1.name: Use 1-32 letters")), msgs.join("\n"));
  const dup = loadConfigText(text.replace('"b c"', "b"), {
    file: "t.yaml",
    env: { exists: () => true },
  });
  assert.deepEqual(dup.issues.map((i) => `${i.severity}: ${i.path}: ${i.message}`), [
    'error: routes./.rate_limits.0.name: Duplicate rate limit name "a"',
  ]);
});

Deno.test("compileRateLimits names policies and gives equal limits distinct ids", () => {
  const one = compileRateLimits("/r", { rate_limit: cfg({}) });
  assert.deepEqual(one.map((l) => l.name), ["default"]);
  const two = compileRateLimits("/r", { rate_limit: cfg({}), rate_limits: [cfg({})] });
  assert.deepEqual(two.map((l) => l.name), ["limit1", "limit2"]);
  assert.notEqual(two[0].id, two[1].id);
  const named = compileRateLimits("/r", { rate_limits: [cfg({ name: "burst" })] });
  assert.equal(named[0].policyField, '"burst";q=10;w=60');
});

Deno.test("applyRateLimit keeps time with the monotonic clock when the wall clock steps", async () => {
  const { config } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
routes:
  "/": { type: redirect, target: "/x", rate_limit: { by: ip, requests: 1, period: 1s } }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  const snapshot = buildSnapshot(config!, { version: 1 });
  let wall = 1_800_000_000_000;
  let mono = 5_000;
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: { send: () => Promise.reject(new Error("unused")), close: () => Promise.resolve() },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => wall, monotonic: () => mono },
    logger: silentLogger,
    metrics: noopMetrics,
    rateLimits: createMemoryStore(),
    random: () => 0.5,
  });
  const info: ClientInfo = {
    remoteAddr: { hostname: "192.0.2.7", port: 4000 },
    localPort: 80,
    protocol: "http/1.1",
    tls: false,
  };
  const status = async () => {
    const res = await handler(new Request("http://h/"), info);
    await res.body?.cancel();
    return res.status;
  };
  assert.deepEqual([await status(), await status()], [307, 429]);
  // The wall clock steps back an hour while one second passes: the token is back.
  wall -= 3_600_000;
  mono += 1_000;
  assert.equal(await status(), 307);
  // Stepped forward a day with no time passing: still one request per second.
  wall += 86_400_000;
  assert.equal(await status(), 429);
});

Deno.test("applyRateLimit: a shadow limit never blocks, not even when the store fails (on_error: deny)", async () => {
  const handlerFor = (limits: string) => {
    const { config, issues } = loadConfigText(
      `listen_addr: "127.0.0.1:0"
rate_limit_store: { type: redis, url: "redis://127.0.0.1:1", on_error: deny }
routes:
  "/": { type: redirect, target: "/x", ${limits} }
`,
      { file: "t.yaml", env: { exists: () => true } },
    );
    assert.ok(config, JSON.stringify(issues));
    const snapshot = buildSnapshot(config, { version: 1 });
    const asked: string[] = [];
    const hits: string[] = [];
    const handler = createHandler({
      snapshot: () => snapshot,
      upstream: { send: () => Promise.reject(new Error("unused")), close: () => Promise.resolve() },
      files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
      clock: { now: () => 1_800_000_000_000, monotonic: () => 0 },
      logger: silentLogger,
      metrics: { ...noopMetrics, rateLimit: (_route, action) => void hits.push(action) },
      rateLimits: {
        consume: (_key, q) => {
          asked.push(q.limiter);
          return Promise.reject(new Error("Cannot reach Redis: down"));
        },
      },
      random: () => 0.5,
    });
    const status = async () => {
      const res = await handler(new Request("http://h/"), {
        remoteAddr: { hostname: "192.0.2.7", port: 4000 },
        localPort: 80,
        protocol: "http/1.1",
        tls: false,
      });
      await res.body?.cancel();
      return res.status;
    };
    return { status, asked, hits };
  };
  const shadow = handlerFor("rate_limit: { by: ip, requests: 5, period: 1m, shadow: true }");
  assert.equal(await shadow.status(), 307);
  assert.deepEqual(shadow.hits, ["error"]);
  // A real limit after it still follows on_error (deny), without asking the failed store again.
  const both = handlerFor(`rate_limit: { by: ip, requests: 5, period: 1m, shadow: true },
    rate_limits: [{ by: ip, requests: 50, period: 1h }]`);
  assert.equal(await both.status(), 429);
  assert.equal(both.asked.length, 1);
  assert.deepEqual(both.hits, ["error"]);
});

/** A handler for `routes` (YAML lines under `routes:`) with an in-memory store, and a status getter. */
function handlerOf(routes: string, store: Partial<PipelineDeps> = {}) {
  const { config, issues } = loadConfigText(`listen_addr: "127.0.0.1:0"\n${routes}`, {
    file: "t.yaml",
    env: { exists: () => true },
  });
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: { send: () => Promise.reject(new Error("unused")), close: () => Promise.resolve() },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_800_000_000_000, monotonic: () => 0 },
    logger: silentLogger,
    metrics: noopMetrics,
    rateLimits: createMemoryStore(),
    random: () => 0.5,
    ...store,
  });
  const send = async (url: string, headers: HeadersInit = {}) => {
    const res = await handler(new Request(url, { headers }), {
      remoteAddr: { hostname: "192.0.2.7", port: 4000 },
      localPort: 80,
      protocol: "http/1.1",
      tls: false,
    });
    await res.body?.cancel();
    return res;
  };
  return { send, status: async (url: string, h: HeadersInit = {}) => (await send(url, h)).status };
}

Deno.test("applyRateLimit: a cookie or query key sent twice counts against its first and last values", async () => {
  const { status } = handlerOf(`routes:
  "/q": { type: redirect, target: "/x", rate_limit: { by: query, query_param: k, requests: 1, period: 1h } }
  "/c": { type: redirect, target: "/x", rate_limit: { by: cookie, cookie_name: s, requests: 1, period: 1h } }
`);
  assert.equal(await status("http://h/q?k=a"), 307);
  assert.equal(await status("http://h/q?k=a"), 429);
  // Sent twice beside a junk value (the app reads the first or the last): still a's quota. Read
  // as a missing key, these were not limited at all (on_missing_key: allow, the default).
  assert.equal(await status("http://h/q?k=a&k=junk1"), 429);
  assert.equal(await status("http://h/q?k=junk2&k=a"), 429);
  assert.equal(await status("http://h/q?k=&k=a"), 429);
  assert.equal(await status("http://h/q?k=b&k=b"), 307);
  assert.equal(await status("http://h/q?k=b"), 429);
  const c = (v: string) => ({ cookie: v });
  assert.equal(await status("http://h/c", c("s=a")), 307);
  assert.equal(await status("http://h/c", c("s=a; s=junk1")), 429);
  assert.equal(await status("http://h/c", c("s=junk2; x=1; s=a")), 429);
  assert.equal(await status("http://h/c", c("s=d; s=e")), 307); // both fresh: both counted
  assert.equal(await status("http://h/c", c("s=e")), 429);
});

Deno.test("applyRateLimit: a refusal because the store failed (on_error: deny) carries Retry-After", async () => {
  const { send } = handlerOf(
    `rate_limit_store: { type: redis, url: "redis://127.0.0.1:1", on_error: deny }
routes:
  "/": { type: redirect, target: "/x", rate_limit: { by: ip, requests: 5, period: 1m } }
  "/s":
    type: redirect
    target: "/x"
    rate_limit: { by: ip, requests: 5, period: 1m, shadow: true }
    rate_limits: [{ by: ip, requests: 50, period: 1h }]
  "/k": { type: redirect, target: "/x", rate_limit: { by: header, header_name: K, on_missing_key: deny, requests: 5, period: 1m } }
`,
    { rateLimits: { consume: () => Promise.reject(new Error("Cannot reach Redis: down")) } },
  );
  const res = await send("http://h/");
  assert.equal(res.status, 429);
  // RFC 9110 §10.2.3: without it, clients retry at once and keep the store's outage busy.
  assert.equal(res.headers.get("retry-after"), "2");
  assert.equal(res.headers.get("ratelimit"), null); // no quota to announce: none was read
  // A later limit refusing after a shadow one saw the failure (the store is not asked again).
  const after = await send("http://h/s");
  assert.deepEqual([after.status, after.headers.get("retry-after")], [429, "2"]);
  // A missing key is no outage: retrying later would not help.
  assert.equal((await send("http://h/k")).headers.get("retry-after"), null);
});

Deno.test("applyRateLimit: Prox's policy names stay apart from the upstream's own", async () => {
  const { send } = handlerOf(
    `routes:
  "/": { type: proxy, target: "http://127.0.0.1:9", rate_limit: { by: ip, requests: 5, period: 1m } }
`,
    {
      upstream: {
        send: () =>
          Promise.resolve(
            new Response("ok", {
              headers: {
                "ratelimit-policy": '"default";q=1000;w=3600',
                "ratelimit": '"default";r=998;t=3000',
              },
            }),
          ),
        close: () => Promise.resolve(),
      },
    },
  );
  const res = await send("http://h/");
  assert.equal(res.status, 200);
  // Two policies named "default" in one field: a client cannot tell which quota is which.
  const names = (v: string | null) => (v ?? "").split(",").map((m) => m.trim().split(";")[0]);
  const policies = names(res.headers.get("ratelimit-policy"));
  assert.equal(new Set(policies).size, policies.length, res.headers.get("ratelimit-policy")!);
  assert.deepEqual(names(res.headers.get("ratelimit")), policies);
  assert.equal(
    res.headers.get("ratelimit-policy"),
    '"default";q=1000;w=3600, "prox-default";q=5;w=60',
  );
  assert.equal(res.headers.get("ratelimit"), '"default";r=998;t=3000, "prox-default";r=4;t=12');
});

Deno.test("applyRateLimit: a JSON message is sent as application/json, other text as text/plain", async () => {
  const { send } = handlerOf(`routes:
  "/j":
    type: redirect
    target: "/x"
    rate_limit: { by: ip, requests: 1, period: 1m, message: '{"error": "rate_limited"}' }
  "/t": { type: redirect, target: "/x", rate_limit: { by: ip, requests: 1, period: 1m, message: "{slow down" } }
`);
  await send("http://h/j");
  const json = await send("http://h/j");
  assert.equal(json.status, 429);
  // API clients that check the type (.NET ReadFromJsonAsync, Feign) refused a JSON body as text.
  assert.equal(json.headers.get("content-type"), "application/json");
  await send("http://h/t");
  const text = await send("http://h/t");
  assert.equal(text.headers.get("content-type"), "text/plain; charset=utf-8");
});
