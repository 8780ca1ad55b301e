// forward(): selection, retry rules, body replay, budget, per-try timeout and passive ejection,
// driven through the real handler with a scripted UpstreamClient and an injected clock.
import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { ProxyError } from "../domain/errors.ts";
import { noopMetrics, silentLogger, UNREAD_BODY } from "../ports.ts";
import type { ClientInfo, Metrics, UpstreamRequest } from "../ports.ts";
import { createHandler } from "./pipeline.ts";
import { buildSnapshot } from "./snapshot.ts";
import { createUpstreamRegistry } from "./state.ts";
import { REPLAY_CAP } from "./body_replay.ts";
import { healthCheckKey, stickyPolicy } from "./pool.ts";
import { backoffDelay } from "./forward.ts";
import { waitFor } from "../../tests/_harness.ts";

const A = "http://10.0.0.1:8080";
const B = "http://10.0.0.2:8080";
const C = "http://10.0.0.3:8080";
const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 5555 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

type Script = (req: UpstreamRequest, n: number) => Response | ProxyError | Promise<Response>;

const connectErr = (req: UpstreamRequest) =>
  new ProxyError("connect", `Cannot connect to upstream "${req.origin.origin}": refused`, {
    sentNothing: true,
  });
const resetErr = (req: UpstreamRequest) =>
  new ProxyError("upstream_reset", `Upstream "${req.origin.origin}" reset the connection`);

function setup(routeYaml: string, script: Script, top = "", opts = { readBodyFirst: true }) {
  const text =
    `listen_addr: "127.0.0.1:0"\nhealth_check: { enabled: false }\n${top}\nroutes:\n  "/":\n${
      routeYaml.replace(/^/gm, "    ")
    }\n`;
  const { config, issues } = loadConfigText(text, { file: "t.yaml", env: { exists: () => true } });
  assert.ok(config, JSON.stringify(issues));
  const snap = buildSnapshot(config, { version: 1 });
  let t = 1_000;
  const clock = { now: () => t, monotonic: () => t };
  const calls: { origin: string; method: string; body: string }[] = [];
  const retries: string[] = [];
  const metrics: Metrics = { ...noopMetrics, retry: (_r, reason) => void retries.push(reason) };
  const upstreams = createUpstreamRegistry({ clock, logger: silentLogger, metrics });
  const warnings: string[] = [];
  const logger = {
    ...silentLogger,
    warn: (m: string, f?: object) => warnings.push(`${m} ${JSON.stringify(f)}`),
  };
  const handler = createHandler({
    snapshot: () => snap,
    upstream: {
      async send(req) {
        // readBodyFirst: false models a client that fails (e.g. to connect) before sending.
        const call = { origin: req.origin.origin, method: req.method, body: "" };
        calls.push(call);
        if (opts.readBodyFirst && req.body) call.body = await new Response(req.body).text();
        const out = await script(req, calls.length);
        if (out instanceof ProxyError) throw out;
        if (!opts.readBodyFirst && req.body) call.body = await new Response(req.body).text();
        return out;
      },
      close: () => Promise.resolve(),
    },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock,
    logger,
    metrics,
    upstreams,
    random: () => 0.5,
  });
  const call = async (init: RequestInit = {}, path = "/x") => {
    const res = await handler(new Request(`http://proxy.test${path}`, init), info);
    return { status: res.status, text: await res.text(), headers: res.headers };
  };
  /** Marks `target` down by the route's own active check (the route must have checks on). */
  const probeDown = (target: string) => {
    const route = config.routes["/"];
    assert.ok(route.type === "proxy" || route.type === "load_balance");
    const check = healthCheckKey(config, { route, target });
    assert.ok(check !== null, "the route has health checks on");
    const thresholds = { healthy: 1, unhealthy: 1 };
    upstreams.probe(target, false, { check, thresholds, reason: "test" });
  };
  return { call, calls, retries, warnings, upstreams, probeDown, advance: (ms: number) => t += ms };
}

const lb = (extra = "") => `type: load_balance\ntargets: ["${A}", "${B}", "${C}"]\n${extra}`;
const ok = (req: UpstreamRequest) => new Response(req.origin.origin);

Deno.test("forward: a connect failure is retried on another target for any method, body replayed", async () => {
  const s = setup(lb(), (req, n) => n === 1 ? connectErr(req) : ok(req));
  const r = await s.call({ method: "POST", body: "payload" });
  assert.equal(r.status, 200);
  assert.equal(s.calls.length, 2);
  assert.equal(s.calls[0].origin, A);
  assert.notEqual(s.calls[1].origin, A);
  assert.deepEqual(s.calls.map((c) => c.body), ["payload", "payload"]);
  assert.deepEqual(s.retries, ["connect"]);
});

Deno.test("forward: after a reset only idempotent methods are retried", async () => {
  const s = setup(lb(), (req, n) => n % 2 === 1 ? resetErr(req) : ok(req));
  assert.equal((await s.call({ method: "PUT", body: "x" })).status, 200);
  assert.equal(s.calls.length, 2);
  const post = await s.call({ method: "POST", body: "x" });
  assert.equal(post.status, 502);
  assert.equal(s.calls.length, 3, "POST was sent once");
  assert.deepEqual(s.retries, ["reset"]);
});

Deno.test("forward: a reset is retried only on a target the request has not tried", async () => {
  // A request that makes its target close the connection is not sent to it again.
  const alone = setup(`type: proxy\ntarget: "${A}"`, resetErr);
  assert.equal((await alone.call()).status, 502);
  assert.deepEqual(alone.calls.map((c) => c.origin), [A], "the lone target once, not three times");
  // Two targets resetting: each once (attempts: 2 would allow a third try).
  const two = setup(`type: load_balance\ntargets: ["${A}", "${B}"]`, resetErr);
  assert.equal((await two.call({ method: "DELETE" })).status, 502);
  assert.deepEqual(two.calls.map((c) => c.origin), [A, B]);
  assert.deepEqual(two.retries, ["reset"]);
  // Nothing sent (a connect failure) is still retried on a target already tried.
  const refused = setup(`type: proxy\ntarget: "${A}"`, connectErr);
  await refused.call();
  assert.equal(refused.calls.length, 3);
});

Deno.test("forward: a connect timeout with nothing sent is retried for POST too", async () => {
  const s = setup(
    lb(),
    (req, n) =>
      n === 1
        ? new ProxyError("timeout", `Cannot connect to "${req.origin.origin}" within 1 ms`, {
          sentNothing: true,
        })
        : ok(req),
  );
  assert.equal((await s.call({ method: "POST", body: "x" })).status, 200);
  assert.deepEqual(s.retries, ["unsent"]);
  // retryable: false (e.g. the local connection pool is full) is respected.
  const full = setup(
    lb(),
    (req) =>
      new ProxyError("connect", `Upstream "${req.origin.origin}" pool full`, {
        sentNothing: true,
        retryable: false,
      }),
  );
  assert.equal((await full.call({ method: "POST", body: "x" })).status, 502);
  assert.equal(full.calls.length, 1);
});

Deno.test("forward: a connect timeout is retried only on a target the request has not tried", async () => {
  // A blackholed target (its host gone, a firewall dropping SYNs) is a hung target: the client
  // waited one connect timeout per attempt on a proxy route's lone target, three by default.
  const connectTimeout = (req: UpstreamRequest) =>
    new ProxyError("timeout", `Cannot connect to "${req.origin.origin}" within 1 ms`, {
      sentNothing: true,
    });
  const alone = setup(`type: proxy\ntarget: "${A}"`, connectTimeout);
  assert.equal((await alone.call({ method: "POST", body: "x" })).status, 504);
  assert.deepEqual(alone.calls.map((c) => c.origin), [A], "the lone target once, not three times");
  const two = setup(`type: load_balance\ntargets: ["${A}", "${B}"]`, connectTimeout);
  await two.call();
  assert.deepEqual(two.calls.map((c) => c.origin), [A, B]);
  assert.deepEqual(two.retries, ["unsent"]);
});

Deno.test("forward: POST with Idempotency-Key is retried after a reset when opted in", async () => {
  const s = setup(
    lb("retries: { idempotency_key: true }"),
    (req, n) => n === 1 ? resetErr(req) : ok(req),
  );
  const r = await s.call({ method: "POST", body: "x", headers: { "idempotency-key": "k1" } });
  assert.equal(r.status, 200);
  assert.equal(s.calls.length, 2);
});

Deno.test("forward: retries.on_status moves idempotent requests to another target", async () => {
  const s = setup(
    lb("retries: { on_status: [503] }"),
    (req) => new Response(req.origin.origin, { status: req.origin.origin === A ? 503 : 200 }),
  );
  const get = await s.call();
  assert.equal(get.status, 200);
  assert.deepEqual(s.calls.map((c) => c.origin).slice(0, 1), [A]);
  assert.deepEqual(s.retries, ["status"]);
  // POST is not idempotent: A's 503 is the answer.
  s.calls.length = 0;
  for (let i = 0; i < 3; i++) {
    const post = await s.call({ method: "POST", body: "x" });
    if (s.calls.at(-1)!.origin === A) assert.equal(post.status, 503);
  }
  assert.equal(s.retries.length, 1);
  // Every target answers 503: the last answer is returned, not an error.
  const all = setup(
    lb("retries: { on_status: [503], attempts: 5 }"),
    () => new Response("busy", { status: 503 }),
  );
  assert.equal((await all.call()).status, 503);
  assert.equal(all.calls.length, 3, "each target once");
});

Deno.test("forward: a status retry goes to an untried target or returns the answer it has", async () => {
  // B and C are down: A's 503 (with its Retry-After) is the answer, sent to A once.
  const down = setup(
    lb("retries: { on_status: [503] }\nhealth_check: { enabled: true }"),
    () => new Response("busy", { status: 503, headers: { "retry-after": "7" } }),
  );
  for (const t of [B, C]) down.probeDown(t);
  const r = await down.call();
  assert.equal(r.status, 503);
  assert.equal(r.text, "busy");
  assert.deepEqual(down.calls.map((c) => c.origin), [A]);
  // A single target that its own 503 ejects: its answer, not Prox's "no healthy upstream".
  const alone = setup(
    `type: proxy\ntarget: "${A}"\nretries: { on_status: [503] }`,
    () => new Response("busy", { status: 503 }),
    "passive_health: { failures: 1, statuses: [503], panic_threshold_percent: 0 }",
  );
  const a = await alone.call();
  assert.equal(a.status, 503);
  assert.equal(a.text, "busy");
  assert.equal(alone.calls.length, 1);
});

Deno.test("forward: attempts bound the retries", async () => {
  const s = setup(lb("retries: { attempts: 1 }"), connectErr);
  assert.equal((await s.call()).status, 502);
  assert.equal(s.calls.length, 2);
  const none = setup(lb("retries: { attempts: 0 }"), connectErr);
  assert.equal((await none.call()).status, 502);
  assert.equal(none.calls.length, 1);
});

Deno.test("forward: the retry budget caps retries at a share of the load", async () => {
  // 0% budget still allows the floor of 3 retries per 10 s window, then none.
  const s = setup(
    lb("strategy: first\nretries: { budget_percent: 0 }"),
    (req) => req.origin.origin === A ? connectErr(req) : ok(req),
    "passive_health: { enabled: false }",
  );
  const statuses = [];
  for (let i = 0; i < 5; i++) statuses.push((await s.call()).status);
  assert.deepEqual(statuses, [200, 200, 200, 502, 502]);
  assert.equal(s.retries.length, 3);
  s.advance(11_000);
  assert.equal((await s.call()).status, 200, "window passed: budget refilled");
  // As the README says: one line per 10 s and route, with the retries refused since the last one.
  const lines = () => s.warnings.filter((w) => w.startsWith("Retry budget exhausted"));
  assert.equal(lines().length, 1);
  assert.match(lines()[0], /"route":"\/","refused":1\}/);
  // 11 s after that line, the next refusal is logged with the one held back; two more are held...
  for (let i = 0; i < 5; i++) await s.call();
  assert.equal(lines().length, 2);
  assert.match(lines()[1], /"refused":2\}/);
  // ...and counted in the next line, a window later.
  s.advance(11_000);
  for (let i = 0; i < 4; i++) await s.call();
  assert.equal(lines().length, 3);
  assert.match(lines()[2], /"refused":3\}/);
});

Deno.test("forward: a body above the replay cap is streamed once and not retried", async () => {
  const s = setup(lb(), (req, n) => n === 1 ? connectErr(req) : ok(req));
  const big = "x".repeat(REPLAY_CAP - 10) + "0123456789abcdef".repeat(1_000);
  // No Content-Length: the cap is found while reading, and every byte still goes through.
  const chunked = new Blob([big]).stream();
  assert.equal((await s.call({ method: "PUT", body: chunked })).status, 502);
  assert.equal(s.calls.length, 1);
  assert.equal(s.calls[0].body, big);
  const declared = await s.call({
    method: "PUT",
    body: big,
    headers: { "content-length": String(big.length) },
  });
  assert.equal(declared.status, 200);
  assert.equal(s.calls.length, 2, "declared over the cap: streamed, single attempt");
  // A client that fails before touching the body leaves it intact: the request fails over.
  const untouched = setup(lb(), (req, n) => n === 1 ? connectErr(req) : ok(req), "", {
    readBodyFirst: false,
  });
  const r = await untouched.call({
    method: "PUT",
    body: big,
    headers: { "content-length": String(big.length) },
  });
  assert.equal(r.status, 200);
  assert.equal(untouched.calls.length, 2);
  assert.equal(untouched.calls[1].body, big, "the second target got every byte");
});

Deno.test("forward: per_try_timeout gives up on a silent target and tries the next", async () => {
  const s = setup(lb("retries: { per_try_timeout: 30ms }"), (req, n) => {
    if (n > 1) return ok(req);
    return new Promise<Response>((_, reject) => {
      req.signal!.addEventListener("abort", () => reject(new ProxyError("client_gone", "aborted")));
    });
  });
  const r = await s.call();
  assert.equal(r.status, 200);
  assert.notEqual(r.text, A);
  assert.equal(s.calls[0].origin, A);
  assert.deepEqual(s.retries, ["timeout"]);
});

Deno.test("forward: a streamed body that was read and released is not replayed empty", async () => {
  // The HTTP/1.1 client reads the body with a reader and releases its lock when done: the
  // stream is unlocked again but drained, so a retry would send nothing (or a short body).
  const big = "y".repeat(REPLAY_CAP * 2);
  const seen: number[] = [];
  const s = setup(
    lb(),
    async (req) => {
      let n = 0;
      if (req.body instanceof ReadableStream) {
        const reader = req.body.getReader();
        for (let r = await reader.read(); !r.done; r = await reader.read()) n += r.value.byteLength;
        reader.releaseLock();
      }
      seen.push(n);
      return resetErr(req) as unknown as Response;
    },
    "",
    { readBodyFirst: false },
  );
  for (
    const headers of [{}, { "content-length": String(big.length) }] as Record<string, string>[]
  ) {
    seen.length = 0;
    const r = await s.call({ method: "PUT", body: new Blob([big]).stream(), headers });
    assert.equal(r.status, 502);
    assert.deepEqual(seen, [big.length], "one attempt, with the whole body");
  }
});

Deno.test("forward: configured statuses eject a target for the cool-down (injected clock)", async () => {
  const s = setup(
    lb(),
    (req) => new Response(req.origin.origin, { status: req.origin.origin === A ? 503 : 200 }),
    "passive_health: { failures: 2, statuses: [503], base_ejection: 10s, panic_threshold_percent: 0 }",
  );
  const seen = [];
  for (let i = 0; i < 9; i++) seen.push((await s.call()).text);
  // Round robin: A, B, C, A (second 503: ejected), then only B and C.
  assert.deepEqual(seen, [A, B, C, A, B, C, B, C, B]);
  assert.ok(!s.upstreams.available(A));
  s.advance(10_000);
  assert.ok(s.upstreams.available(A));
});

Deno.test("forward: a good answer ends a target's failure streak", async () => {
  const statuses = [503, 200, 503, 503];
  const s = setup(
    `type: proxy\ntarget: "${A}"`,
    (_req, n) => new Response(null, { status: statuses[n - 1] }),
    "passive_health: { failures: 2, statuses: [503], base_ejection: 10s, panic_threshold_percent: 0 }",
  );
  assert.equal((await s.call()).status, 503);
  assert.equal((await s.call()).status, 200);
  assert.equal((await s.call()).status, 503);
  // 503, 200, 503: no two failures in a row.
  assert.ok(s.upstreams.available(A));
  assert.equal((await s.call()).status, 503);
  assert.ok(!s.upstreams.available(A));
});

Deno.test("forward: a retry with no target left reports the real failure (502, not 503)", async () => {
  const s = setup(
    `type: proxy\ntarget: "${A}"\ntry_when_down: false`,
    connectErr,
    "passive_health: { failures: 1, panic_threshold_percent: 0 }",
  );
  const r = await s.call();
  assert.equal(r.status, 502);
  assert.equal(s.calls.length, 1, "ejected after the first failure: nothing left to retry");
  assert.equal((await s.call()).status, 503, "the next request fails fast");
  assert.equal(s.calls.length, 1);
});

Deno.test("forward: no available target answers 503 without sending", async () => {
  const s = setup(
    `type: proxy\ntarget: "${A}"\ntry_when_down: false\nhealth_check: { enabled: true }`,
    ok,
  );
  s.probeDown(A);
  const r = await s.call();
  assert.equal(r.status, 503);
  assert.equal(s.calls.length, 0);
});

Deno.test("forward: a drained target does not make Retry-After 1 s", async () => {
  // A drained target comes back only when undrained: it gave `Retry-After: 1` (back in 0 ms)
  // whatever the other targets' ejections said, inviting clients to hammer the route.
  const s = setup(
    `type: load_balance\ntargets: ["${A}", "${B}"]`,
    () => new Response(null, { status: 503 }),
    "passive_health: { failures: 1, statuses: [503], base_ejection: 30s, panic_threshold_percent: 0 }",
  );
  s.upstreams.retain([A, B], ["/"]);
  s.upstreams.drain(B, true);
  assert.equal((await s.call()).status, 503, "A answers 503 and is ejected");
  const r = await s.call();
  assert.equal(r.status, 503);
  assert.equal(s.calls.length, 1, "nothing left to send to");
  assert.equal(r.headers.get("retry-after"), "30", "when A's ejection ends");
  s.upstreams.drain(A, true);
  const none = await s.call();
  assert.equal(none.status, 503);
  assert.equal(none.headers.get("retry-after"), null, "every target drained: no time to give");
});

Deno.test("forward: a route with passive health off is not gated by another route's ejections", async () => {
  // As a route with health checks off is gated only by passive health: a target that another
  // route's failures ejected (its statuses, its path) still takes this route's requests.
  const s = setup(lb("passive_health: { enabled: false }"), ok);
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 30_000,
    maxEjectionMs: 300_000,
    panicPercent: 0,
  };
  for (const t of [A, B, C]) {
    s.upstreams.outcome(t, false, { pool: [A, B, C], policy, reason: "status 500 on /other" });
  }
  assert.ok(!s.upstreams.available(A), "ejected for the routes that watch it");
  const seen = [];
  for (let i = 0; i < 3; i++) seen.push((await s.call()).text);
  assert.deepEqual(seen, [A, B, C]);
});

Deno.test("forward: a request its target's full pool shed goes to a target it has not tried", async () => {
  // Shed with nothing sent (upstream_pool's queue full): the other targets, idle, were not asked,
  // so a slow target's share of the requests got 503 while the rest of the pool had room.
  const shed = (req: UpstreamRequest) =>
    new ProxyError("overloaded", `Upstream "${req.origin.origin}" has 1 requests waiting`, {
      sentNothing: true,
      retryable: false,
    });
  const s = setup(lb(), (req) => req.origin.origin === A ? shed(req) : ok(req));
  const r = await s.call({ method: "POST", body: "payload" });
  assert.equal(r.status, 200);
  assert.equal(s.calls[0].origin, A);
  assert.deepEqual(s.calls.map((c) => c.body), ["payload", "payload"]);
  assert.deepEqual(s.retries, ["overloaded"]);
  // A lone target is not asked again at once: 503 (with Retry-After) as before.
  const alone = setup(`type: proxy\ntarget: "${A}"`, shed);
  const a = await alone.call();
  assert.equal(a.status, 503);
  assert.equal(alone.calls.length, 1);
  assert.deepEqual(alone.retries, []);
});

Deno.test("forward: consistent_hash by cookie keeps a session on one target", async () => {
  const s = setup(lb("strategy: consistent_hash\nhash_on: { type: cookie, name: sid }"), ok);
  const first = (await s.call({ headers: { cookie: "a=1; sid=abc" } })).text;
  for (let i = 0; i < 10; i++) {
    assert.equal((await s.call({ headers: { cookie: `sid=abc; n=${i}` } })).text, first);
  }
});

Deno.test("forward: consistent_hash treats an empty key as no key", async () => {
  const s = setup(lb("strategy: consistent_hash\nhash_on: { type: header, name: x-user }"), ok);
  const none = (await s.call()).text; // no key: the injected random source picks
  assert.equal((await s.call({ headers: { "x-user": "" } })).text, none);
});

Deno.test("sticky: a max_age under a second does not set Max-Age=0, which deletes the cookie", () => {
  // Max-Age=0 tells the browser to drop the cookie at once (RFC 6265 §5.2.2): no client could
  // keep its target, and every answer set the cookie again.
  const attrs = (max_age: number) =>
    stickyPolicy("/", [A], {
      cookie: "srv",
      max_age,
      path: "/",
      same_site: "lax",
      http_only: true,
    })!.attributes;
  assert.equal(attrs(0), "; Path=/; HttpOnly; SameSite=Lax", "0s: a session cookie, as unset");
  assert.equal(attrs(500), "; Path=/; Max-Age=1; HttpOnly; SameSite=Lax");
  assert.equal(attrs(3_600_000), "; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax");
});

Deno.test("forward: a streamed body an upstream client gave back unread (UNREAD_BODY) goes to the next attempt, else is cancelled", async () => {
  const giveBack = (req: UpstreamRequest) =>
    Object.assign(
      new ProxyError("upstream_reset", `Upstream "${req.origin.origin}" refused the stream`, {
        sentNothing: true,
      }),
      { [UNREAD_BODY]: req.body as ReadableStream<Uint8Array> },
    );
  const streamed = (onCancel: () => void) => ({
    method: "POST",
    body: new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode("payload"));
      },
      cancel: onCancel,
    }),
    duplex: "half",
  } as RequestInit);
  const h2c = (extra = "") => `type: proxy\ntarget: "${A}"\nupstream_protocol: h2c\n${extra}`;
  const opts = { readBodyFirst: false };
  // Given back: the next attempt gets it whole (an h2c route's streamed body is not kept).
  const again = setup(h2c(), (req, n) => n === 1 ? giveBack(req) : ok(req), "", opts);
  let cancelled = 0;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode("payload"));
      c.close();
    },
  });
  const r = await again.call({ method: "POST", body, duplex: "half" } as RequestInit);
  assert.equal(r.status, 200);
  assert.deepEqual(again.calls.map((c) => c.body), ["", "payload"]);
  // No attempt left, or no target left (the lone one ejected): the body is cancelled, not left
  // hanging with the client still uploading.
  for (
    const extra of [
      "retries: { attempts: 0 }",
      "passive_health: { failures: 1, panic_threshold_percent: 0 }\ntry_when_down: false",
    ]
  ) {
    const none = setup(h2c(extra), giveBack, "", opts);
    const before = cancelled;
    assert.equal((await none.call(streamed(() => void cancelled++))).status, 502, extra);
    await waitFor(() => cancelled > before, { what: `the body cancelled (${extra})` });
    assert.equal(none.calls.length, 1, extra);
  }
});

Deno.test("forward: a chunked body is read before a target is chosen, as a declared length's is", async () => {
  // The pick came first, then the body was read: a slow upload went to the target chosen when it
  // began, drained (or marked down, or ejected) meanwhile, and least_connections did not count
  // it while it trickled in. A declared length's body is read first (proxy.ts), retries or not.
  for (const extra of ["", "retries: { attempts: 0 }"]) {
    const s = setup(lb(extra), ok);
    const enc = new TextEncoder();
    let asked = () => {};
    const more = new Promise<void>((r) => asked = r);
    let ctl!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start: (c) => void (ctl = c),
      // Called once the first chunk (queued) is taken and more is wanted.
      pull: () => asked(),
    }, { highWaterMark: 0 });
    ctl.enqueue(enc.encode("part one, "));
    const res = s.call({ method: "POST", body });
    // Prox asks for the rest of the body: the upload is under way. The operator drains A now.
    await more;
    assert.ok(s.upstreams.drain(A, true));
    ctl.enqueue(enc.encode("part two"));
    ctl.close();
    const r = await res;
    assert.equal(r.status, 200);
    assert.deepEqual(s.calls.map((c) => [c.origin, c.body]), [[B, "part one, part two"]], extra);
  }
});

Deno.test("forward: passive health counts each attempt, so one request retried on a target twice counts two (README)", async () => {
  // Both targets refuse: attempts A, B, then a tried one again (no untried target left), B by the
  // rotation.
  const s = setup(
    `type: load_balance\ntargets: ["${A}", "${B}"]\nretries: { attempts: 2 }`,
    connectErr,
    "passive_health: { failures: 2, base_ejection: 10s, panic_threshold_percent: 0 }",
  );
  assert.equal((await s.call({ method: "POST", body: "x" })).status, 502);
  assert.deepEqual(s.calls.map((c) => c.origin), [A, B, B]);
  assert.ok(!s.upstreams.available(B), "two failed attempts of one request eject B");
  assert.ok(s.upstreams.available(A), "one failed attempt does not eject A");
});

Deno.test("forward: a retry to a tried target does not use up another request's round_robin turn", async () => {
  const s = setup(
    `type: load_balance\ntargets: ["${A}", "${B}"]\nretries: { attempts: 2 }`,
    (req, n) => n <= 3 ? connectErr(req) : ok(req),
    "passive_health: { enabled: false }",
  );
  // A, B, then B again: the first attempt took A's turn, the retries none.
  assert.equal((await s.call({ method: "POST", body: "x" })).status, 502);
  assert.deepEqual(s.calls.map((c) => c.origin), [A, B, B]);
  // So the next request has B's turn (the retry to a tried target moved the rotation past it).
  assert.equal((await s.call()).text, B);
  assert.equal((await s.call()).text, A);
});

Deno.test("forward: passive_health.max_latency counts a slow answer head as a failure", async () => {
  // A answers after 300 ms (the injected clock), B at once.
  const s: ReturnType<typeof setup> = setup(
    `type: load_balance\ntargets: ["${A}", "${B}"]\nstrategy: first`,
    (req) => {
      if (req.origin.origin === A) s.advance(300);
      return ok(req);
    },
    "passive_health: { failures: 2, max_latency: 250ms, panic_threshold_percent: 0 }",
  );
  assert.equal((await s.call()).text, A, "slow, but answered: the client gets it");
  assert.ok(s.upstreams.available(A), "one slow answer of two allowed");
  assert.equal((await s.call()).text, A);
  assert.ok(!s.upstreams.available(A), "two slow answers in a row eject A");
  assert.equal((await s.call()).text, B, "first goes on to B");
  // At the limit, not over it: no failure.
  const fast = setup(
    `type: proxy\ntarget: "${A}"`,
    (req) => {
      fast.advance(250);
      return ok(req);
    },
    "passive_health: { failures: 1, max_latency: 250ms, panic_threshold_percent: 0 }",
  );
  await fast.call();
  assert.ok(fast.upstreams.available(A));
});

Deno.test("forward: retries.backoff pauses before a retry, and a client that leaves ends the pause", async () => {
  const s = setup(
    `type: proxy\ntarget: "${A}"\nretries: { attempts: 2, backoff: 10s }`,
    connectErr,
  );
  const ac = new AbortController();
  const res = s.call({ signal: ac.signal });
  await waitFor(() => s.calls.length === 1, { what: "the first attempt" });
  ac.abort();
  const r = await res;
  // Without the pause the retries would have gone at once (three connects, then 502).
  assert.equal(s.calls.length, 1, "no retry while the pause ran");
  assert.equal(r.status, 400); // client_gone: logged 499, seen by nobody
  assert.match(r.text, /Client closed request/);
  // A short one: the retry goes after it.
  const quick = setup(
    `type: proxy\ntarget: "${A}"\nretries: { backoff: 1ms }`,
    (req, n) => n === 1 ? connectErr(req) : ok(req),
  );
  assert.equal((await quick.call()).status, 200);
  assert.equal(quick.calls.length, 2);
});

Deno.test("backoffDelay doubles per retry, capped at 10 s, drawn between half and all of it", () => {
  assert.deepEqual([1, 2, 3, 4].map((n) => backoffDelay(100, n, 1)), [100, 200, 400, 800]);
  assert.deepEqual([1, 2, 3].map((n) => backoffDelay(100, n, 0)), [50, 100, 200]);
  assert.equal(backoffDelay(100, 3, 0.5), 300);
  assert.equal(backoffDelay(4_000, 5, 1), 10_000);
  assert.equal(backoffDelay(4_000, 5, 0), 5_000);
  assert.equal(backoffDelay(1, 60, 1), 10_000, "no overflow for many retries");
});

Deno.test("forward: a connect that fails on Prox's own host (EMFILE) is not held against the target", async () => {
  const emfile = (req: UpstreamRequest) => {
    const e = new ProxyError(
      "connect",
      `Cannot connect to upstream "${req.origin.origin}": Too many open files (os error 24)`,
      { sentNothing: true },
    );
    e.local = true;
    return e;
  };
  const s = setup(
    `type: proxy\ntarget: "${A}"\nretries: { attempts: 0 }`,
    emfile,
    "passive_health: { failures: 1, panic_threshold_percent: 0 }",
  );
  assert.equal((await s.call()).status, 502);
  assert.ok(s.upstreams.available(A), "not ejected for the host's own shortage");
  // The same failure from the target (refused) ejects it.
  const t = setup(
    `type: proxy\ntarget: "${A}"\nretries: { attempts: 0 }`,
    connectErr,
    "passive_health: { failures: 1, panic_threshold_percent: 0 }",
  );
  assert.equal((await t.call()).status, 502);
  assert.ok(!t.upstreams.available(A));
});

Deno.test("forward: passive_health.max_latency times from the end of a streamed upload", async () => {
  // A client's upload that takes 1 s is the client's time, not the target's (as per_try_timeout
  // starts once the body has gone): a target that answers at once must not count as slow.
  const big = "u".repeat(REPLAY_CAP * 2);
  const top = "passive_health: { failures: 1, max_latency: 250ms, panic_threshold_percent: 0 }";
  const upload = (uploadMs: number, answerMs: number) => {
    const s: ReturnType<typeof setup> = setup(
      `type: proxy\ntarget: "${A}"`,
      async (req) => {
        assert.ok(req.body instanceof ReadableStream);
        const reader = req.body.getReader();
        let first = true;
        for (let r = await reader.read(); !r.done; r = await reader.read()) {
          if (first) s.advance(uploadMs);
          first = false;
        }
        req.body = null; // read here
        s.advance(answerMs);
        return ok(req);
      },
      top,
      { readBodyFirst: false },
    );
    return s;
  };
  const slowClient = upload(1_000, 0);
  const r = await slowClient.call({ method: "PUT", body: new Blob([big]).stream() });
  assert.equal(r.status, 200);
  assert.ok(slowClient.upstreams.available(A), "a slow upload is not the target's latency");
  const slowTarget = upload(0, 300);
  assert.equal(
    (await slowTarget.call({ method: "PUT", body: new Blob([big]).stream() })).status,
    200,
  );
  assert.ok(!slowTarget.upstreams.available(A), "300 ms after the upload ended is slow");
});

Deno.test("forward: passive_health.max_latency 0s is no limit (as Caddy's unhealthy_latency 0)", async () => {
  const s = setup(
    `type: proxy\ntarget: "${A}"`,
    (req) => {
      s.advance(5);
      return ok(req);
    },
    "passive_health: { failures: 1, max_latency: 0s, panic_threshold_percent: 0 }",
  );
  assert.equal((await s.call()).status, 200);
  assert.ok(s.upstreams.available(A), "0s does not make every answer a failure");
});

Deno.test("forward: passive_health.max_latency does not count the wait for a connection in Prox's own pool", async () => {
  // upstream_pool full: the request waits 1 s in Prox's queue, then the target answers at once.
  const s: ReturnType<typeof setup> = setup(
    `type: proxy\ntarget: "${A}"`,
    (req) => {
      s.advance(1_000);
      req.onConnection?.();
      return ok(req);
    },
    "passive_health: { failures: 1, max_latency: 250ms, panic_threshold_percent: 0 }",
  );
  assert.equal((await s.call()).status, 200);
  assert.ok(s.upstreams.available(A), "Prox's own queue is not the target's latency");
});
