import assert from "node:assert/strict";
import {
  buildStatus,
  certificateNotAfter,
  createStatusRecorder,
  targetPools,
} from "./admin_status.ts";
import { noopMetrics } from "../ports.ts";
import { parseConfig } from "../config/parse.ts";
import { buildSnapshot } from "../proxy/snapshot.ts";

const YAML = `listen_addr: "127.0.0.1:0"
routes:
  "/api":
    type: load_balance
    targets: ["http://a:1", { url: "http://b:2", weight: 2 }]
    rate_limit: { by: ip, requests: 10, period: 1m }
    concurrency_limit: { max: 4, by: header, header_name: X-Key, on_missing_key: deny }
    bandwidth: { rate: 2MiB, after: 1MiB, per: client }
    basic_auth: { users: { a: "$2y$05$${"a".repeat(53)}", b: "$2y$05$${"b".repeat(53)}" } }
  "example.com/":
    type: proxy
    target: "http://a:1"
    jwt_auth: { jwks_url: "https://idp.example/jwks" }
  "/old":
    type: redirect
    target: "/new"
    ip_access: { allow: [10.0.0.0/8], deny_file: /etc/prox/block.txt }
    cors:
      allow_origins: ["https://a.example.com", "https://*.example.org"]
      allow_origin_regex: ['http://localhost:\\d+']
      allow_credentials: true
ip_access: { deny: [192.0.2.1] }
`;

Deno.test("createStatusRecorder keeps the last health change with its reason and time", () => {
  let now = 1000;
  const calls: unknown[] = [];
  const rec = createStatusRecorder({
    ...noopMetrics,
    backendHealth: (...a) => calls.push(a),
  }, { now: () => now });
  rec.metrics.backendsConfigured(["http://a:1", "http://b:2"]);
  assert.equal(rec.health("http://a:1")?.healthy, true);
  now = 2000;
  rec.metrics.backendHealth("http://a:1", true, "probe ok");
  assert.deepEqual(rec.health("http://a:1"), { healthy: true, since: 1000, reason: "probe ok" });
  now = 3000;
  rec.metrics.backendHealth("http://a:1", false, "3 failed probes: connection refused");
  now = 4000;
  rec.metrics.backendHealth("http://a:1", false, "4 failed probes: status 500");
  // Still down since 3000, for the latest cause.
  assert.deepEqual(rec.health("http://a:1"), {
    healthy: false,
    since: 3000,
    reason: "4 failed probes: status 500",
  });
  assert.equal(calls.length, 3);
  rec.metrics.backendsConfigured(["http://b:2"]);
  assert.equal(rec.health("http://a:1"), undefined);
});

Deno.test("buildStatus lists routes with hosts and targets, upstreams with their routes", () => {
  const parsed = parseConfig(YAML, "t.yaml");
  assert.ok(parsed.config, JSON.stringify(parsed.issues));
  const snap = buildSnapshot(parsed.config, { version: 7 });
  const recorder = createStatusRecorder(noopMetrics, { now: () => 0 });
  recorder.metrics.backendsConfigured(["http://a:1", "http://b:2"]);
  recorder.metrics.backendHealth("http://b:2", false, "ejected: 5 failures in 10s");
  recorder.metrics.certificateExpiry("main", 10 * 86_400_000);
  const s = buildStatus(snap, {
    recorder,
    now: 86_400_000,
    startedAt: 0,
    version: "x",
    ready: true,
    draining: false,
    lastReload: {
      ok: false,
      at: 5,
      version: 7,
      issues: [
        { file: "t.yaml", line: 3, col: 5, path: "routes", message: "bad" },
        { severity: "warning", file: "t.yaml", line: 4, col: 1, path: "x", message: "meh" },
      ],
    },
    listeners: [],
    limiterKeys: { "/api": 4 },
    pools: [{
      origin: "http://a:1",
      busy: 1,
      idle: 2,
      waiting: 3,
      opened: 4,
      reused: 5,
      h2Streams: null,
    }],
  });
  assert.equal(s.config.version, 7);
  assert.deepEqual(s.config.lastReload?.errors, ["t.yaml:3:5: routes: bad"]);
  // A warning is not listed among the errors (the dashboard showed it in red).
  assert.deepEqual(s.config.lastReload?.warnings, ["t.yaml:4:1: x: meh"]);
  const host = s.routes.find((r) => r.id === "example.com/")!;
  assert.deepEqual(host.hosts, ["example.com"]);
  assert.equal(host.prefix, "/");
  assert.equal(
    host.access,
    "ip_access (top level): allow 0, deny 1; jwt_auth: https://idp.example/jwks",
  );
  const api = s.routes.find((r) => r.id === "/api")!;
  assert.deepEqual(api.targets, ["http://a:1", "http://b:2"]);
  assert.equal(
    api.rateLimit,
    "10 per 60s by ip (token_bucket); at most 4 in progress at once by header; " +
      "bandwidth 2 MiB/s after the first 1 MiB, per client",
  );
  assert.equal(api.access, "ip_access (top level): allow 0, deny 1; basic_auth: 2 users");
  assert.equal(
    s.routes.find((r) => r.id === "/old")!.access,
    "ip_access: allow 1, deny 0 (and from /etc/prox/block.txt); cors: https://a.example.com, https://*.example.org, " +
      "/http://localhost:\\d+/ (credentials)",
  );
  const a = s.upstreams.find((u) => u.url === "http://a:1")!;
  assert.deepEqual(a.routes, ["/api", "example.com/"]);
  const b = s.upstreams.find((u) => u.url === "http://b:2")!;
  assert.equal(b.healthy, false);
  assert.equal(b.reason, "ejected: 5 failures in 10s");
  assert.deepEqual(a.pool, { busy: 1, idle: 2, waiting: 3, opened: 4, reused: 5, h2Streams: null });
  // A target never connected to yet: an empty pool.
  assert.deepEqual(b.pool, { busy: 0, idle: 0, waiting: 0, opened: 0, reused: 0, h2Streams: null });
  assert.deepEqual(s.certificates, [{ name: "main", notAfter: 864_000_000, daysLeft: 9 }]);
  assert.equal(s.prox.uptimeSeconds, 86_400);
});

Deno.test("certificateNotAfter reads a PEM certificate and rejects garbage", () => {
  const pem = Deno.readTextFileSync(new URL("../../tests/fixtures/tls/cert.pem", import.meta.url));
  const t = certificateNotAfter(pem);
  assert.ok(t !== null && t > Date.UTC(2020, 0, 1), String(t));
  assert.equal(certificateNotAfter("not a certificate"), null);
});

Deno.test("certificateNotAfter reads a file holding the key before the certificate", () => {
  // The listener serves such a file; the expiry metric and /status lost the certificate.
  const dir = new URL("../../tests/fixtures/tls/", import.meta.url);
  const cert = Deno.readTextFileSync(new URL("cert.pem", dir));
  const key = Deno.readTextFileSync(new URL("key.pem", dir));
  assert.equal(certificateNotAfter(key + cert), certificateNotAfter(cert));
  assert.notEqual(certificateNotAfter(cert), null);
});

Deno.test("certificateNotAfter is the chain's earliest: an intermediate expiring first counts", () => {
  const dir = new URL("../../tests/fixtures/tls/", import.meta.url);
  const leaf = Deno.readTextFileSync(new URL("cert.pem", dir));
  const expired = Deno.readTextFileSync(new URL("expired.pem", dir));
  const leafEnd = certificateNotAfter(leaf)!;
  const expiredEnd = certificateNotAfter(expired)!;
  assert.ok(expiredEnd < leafEnd);
  assert.equal(certificateNotAfter(leaf + expired), expiredEnd);
});

Deno.test("buildStatus shows a target's slow start on each route that ramps it", () => {
  const parsed = parseConfig(
    `listen_addr: "127.0.0.1:3000"
routes:
  "/slow": { type: load_balance, targets: ["http://a:1", "http://b:2"], slow_start: 100s }
  "/fast": { type: load_balance, targets: ["http://a:1"] }
  "/first": { type: load_balance, targets: ["http://a:1"], strategy: first, slow_start: 100s }
`,
    "t.yaml",
  );
  assert.ok(parsed.config, JSON.stringify(parsed.issues));
  const view = (id: string, backForMs: number | null) => ({
    id,
    inFlight: 0,
    latencyMs: 0,
    ejectedForMs: 0,
    backForMs,
  });
  const s = buildStatus(buildSnapshot(parsed.config, { version: 1 }), {
    recorder: createStatusRecorder(noopMetrics, { now: () => 0 }),
    now: 0,
    startedAt: 0,
    version: "x",
    ready: true,
    draining: false,
    lastReload: null,
    listeners: [],
    upstreamViews: [view("http://a:1", 25_000), view("http://b:2", null)],
  });
  const of = (url: string) => s.upstreams.find((u) => u.url === url)!.slowStart;
  assert.deepEqual(of("http://a:1"), [{ route: "/slow", weightPercent: 25 }]);
  assert.deepEqual(of("http://b:2"), [], "never left");
});

Deno.test("targetPools sums an origin's pool keys for each target of that origin", () => {
  const zero = { busy: 0, idle: 0, waiting: 0, opened: 0, reused: 0, h2Streams: null };
  const pools = targetPools(
    ["http://a:1", "http://a:1/api", "https://s:443/x", "http://c:3", "unix:/run/x.sock"],
    [
      { ...zero, origin: "http://a:1", busy: 2, idle: 1, opened: 3, reused: 10 },
      // The same origin's PROXY-protocol pool: one connection per request.
      { ...zero, origin: "http://a:1", busy: 1, waiting: 4, opened: 20 },
      // An h2 origin with an HTTP/1.1 pool beside it (requests fetch cannot send).
      { ...zero, origin: "https://s", idle: 1, opened: 1, waiting: 1 },
      { ...zero, origin: "https://s", waiting: 2, h2Streams: 5 },
    ],
  );
  const a = { busy: 3, idle: 1, waiting: 4, opened: 23, reused: 10, h2Streams: null };
  assert.deepEqual(pools.get("http://a:1"), a);
  assert.deepEqual(pools.get("http://a:1/api"), a, "a target with a path shares its origin's pool");
  assert.notEqual(pools.get("http://a:1"), pools.get("http://a:1/api"), "copies, not one object");
  assert.deepEqual(pools.get("https://s:443/x"), {
    busy: 0,
    idle: 1,
    waiting: 3,
    opened: 1,
    reused: 0,
    h2Streams: 5,
  });
  assert.deepEqual(pools.get("http://c:3"), zero);
  assert.equal(pools.get("unix:/run/x.sock")?.opened ?? 0, 0);
});

Deno.test("buildStatus names a route's JWK Set URL without the credentials it may carry", () => {
  const yaml = `listen_addr: "127.0.0.1:0"
routes:
  "/":
    type: proxy
    target: "http://a:1"
    jwt_auth: { jwks_url: "https://svc:IDPPASSWORD@idp.example/jwks?api_key=IDPKEY&v=1", audience: x }
`;
  const parsed = parseConfig(yaml, "t.yaml");
  assert.ok(parsed.config, JSON.stringify(parsed.issues));
  const s = buildStatus(buildSnapshot(parsed.config, { version: 1 }), {
    recorder: createStatusRecorder(noopMetrics, { now: () => 0 }),
    now: 0,
    startedAt: 0,
    version: "x",
    ready: true,
    draining: false,
    lastReload: null,
    listeners: [],
    limiterKeys: {},
  });
  const access = s.routes[0].access ?? "";
  assert.ok(!/IDPPASSWORD|IDPKEY/.test(JSON.stringify(s)), access);
  assert.match(
    access,
    /^jwt_auth: https:\/\/svc:\[redacted\]@idp\.example\/jwks\?api_key=\[redacted\]&v=1$/,
  );
});
