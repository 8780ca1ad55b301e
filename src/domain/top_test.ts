import assert from "node:assert/strict";
import { parsePromText } from "./prom_text.ts";
import type { PromSample } from "./prom_text.ts";
import { notProxStatus, topSnapshot } from "./top.ts";
import type { TopPoll, TopStatus } from "./top.ts";
import { formatUptime, layoutTop, truncate } from "./top_layout.ts";

const status = (o: Partial<TopStatus> = {}): TopStatus => ({
  prox: { version: "0.1.0", pid: 42, uptimeSeconds: 3725 },
  ready: true,
  draining: false,
  config: { version: 3, lastReload: { ok: true, at: 5_000, version: 3, errors: [] } },
  upstreams: [
    {
      url: "http://a:1",
      routes: ["/api"],
      healthy: true,
      inFlight: 2,
      latencyMs: 12.34,
      ejectedForMs: 0,
    },
    {
      url: "http://b:1",
      routes: ["/api"],
      healthy: false,
      inFlight: 0,
      latencyMs: 0,
      ejectedForMs: 2500,
    },
  ],
  certificates: [{ name: "cert.pem", notAfter: 0, daysLeft: 9 }],
  ...o,
});

const samples = (text: string): PromSample[] => parsePromText(text) as PromSample[];

const before: TopPoll = {
  at: 10_000,
  status: status(),
  samples: samples(`
prox_requests_total{route="/api",method="GET",status="200",worker="0"} 100
prox_requests_total{route="/api",method="GET",status="200",worker="1"} 50
prox_requests_total{route="/api",method="POST",status="503",worker="0"} 1
prox_requests_total{route="/web",method="GET",status="200",worker="0"} 900
prox_request_duration_seconds_bucket{le="0.01",route="/api",method="GET"} 100
prox_request_duration_seconds_bucket{le="0.1",route="/api",method="GET"} 150
prox_request_duration_seconds_bucket{le="+Inf",route="/api",method="GET"} 151
prox_rate_limit_hits_total{route="/api",action="limited"} 5
prox_rate_limit_hits_total{route="/api",action="allowed"} 146
prox_cache_requests_total{route="/web",result="hit"} 10
prox_backend_requests_total{backend="http://a:1",route="/api",status="200"} 150
prox_upstream_connections_opened_total{backend="http://a:1",worker="0"} 10
prox_upstream_connections_reused_total{backend="http://a:1",worker="0"} 100
`),
};

// Two seconds later: /api got 40 more (10 of them POST 503, all slower), /web restarted its
// counter (a restarted worker: 30 since), a new route appeared.
const after: TopPoll = {
  at: 12_000,
  status: status(),
  samples: samples(`
prox_requests_total{route="/api",method="GET",status="200",worker="0"} 120
prox_requests_total{route="/api",method="GET",status="200",worker="1"} 60
prox_requests_total{route="/api",method="POST",status="503",worker="0"} 11
prox_requests_total{route="/web",method="GET",status="200",worker="0"} 30
prox_requests_total{route="/new",method="GET",status="404",worker="0"} 2
prox_request_duration_seconds_bucket{le="0.01",route="/api",method="GET"} 100
prox_request_duration_seconds_bucket{le="0.1",route="/api",method="GET"} 170
prox_request_duration_seconds_bucket{le="+Inf",route="/api",method="GET"} 191
prox_rate_limit_hits_total{route="/api",action="limited"} 9
prox_rate_limit_hits_total{route="/api",action="allowed"} 186
prox_cache_requests_total{route="/web",result="hit"} 13
prox_cache_requests_total{route="/web",result="miss"} 1
prox_backend_requests_total{backend="http://a:1",route="/api",status="200"} 180
prox_active_connections{protocol="h2",worker="0"} 3
prox_active_connections{protocol="h2",worker="1"} 1
prox_upstream_connections{backend="http://a:1",state="busy",worker="0"} 2
prox_upstream_connections{backend="http://a:1",state="busy",worker="1"} 1
prox_upstream_connections{backend="http://a:1",state="idle",worker="0"} 5
prox_upstream_waiting{backend="http://a:1",worker="0"} 0
prox_upstream_waiting{backend="http://a:1",worker="1"} 3
prox_upstream_connections_opened_total{backend="http://a:1",worker="0"} 20
prox_upstream_connections_opened_total{backend="http://a:1",worker="1"} 2
prox_upstream_connections_reused_total{backend="http://a:1",worker="0"} 118
`),
};

Deno.test("topSnapshot rates counter increases per route, summing methods and workers", () => {
  const s = topSnapshot(before, after);
  assert.equal(s.intervalSeconds, 2);
  assert.deepEqual(s.routes.map((r) => [r.route, r.requests, r.perSecond]), [
    ["/api", 40, 20],
    ["/web", 30, 15], // the counter went down: a restart, counted from 0
    ["/new", 2, 1], // a series first seen counts from 0
  ]);
  const api = s.routes[0];
  assert.deepEqual(api.classes, { "2xx": 15, "3xx": 0, "4xx": 0, "5xx": 5 });
  assert.equal(api.rateLimited, 2);
  assert.deepEqual(s.total, {
    requests: 72,
    perSecond: 36,
    classes: { "2xx": 30, "3xx": 0, "4xx": 1, "5xx": 5 },
    rateLimited: 2,
  });
  assert.deepEqual(s.connections, { h2: 4 });
  assert.deepEqual(s.cache, { lookups: 4, hitRatio: 0.75 });
});

Deno.test("topSnapshot estimates p50/p95 from the buckets' increase, not their totals", () => {
  const api = topSnapshot(before, after).routes[0];
  // In the interval: 0 under 10 ms, 20 in (10, 100] ms, 20 above: p50 is the top of (10, 100].
  assert.equal(api.p50Ms, 100);
  assert.equal(api.p95Ms, 100); // in +Inf: the highest finite bound
  const web = topSnapshot(before, after).routes[1];
  assert.equal(web.p50Ms, null);
});

Deno.test("topSnapshot joins upstream health with their request rate", () => {
  const s = topSnapshot(before, after);
  assert.deepEqual(s.upstreams, [
    {
      url: "http://a:1",
      healthy: true,
      perSecond: 15,
      inFlight: 2,
      latencyMs: 12.3,
      ejectedForSeconds: 0,
      // Workers summed; 12 connections opened and 18 reused in 2 s.
      pool: { busy: 3, idle: 5, waiting: 3, openedPerSecond: 6, reuseRatio: 0.6, h2Streams: null },
    },
    {
      url: "http://b:1",
      healthy: false,
      perSecond: 0,
      inFlight: 0,
      latencyMs: 0,
      ejectedForSeconds: 3,
      pool: null,
    },
  ]);
  // A Prox without pool metrics (older, or embedded with its own client): no pools at all.
  const bare = (p: TopPoll) => ({
    ...p,
    samples: p.samples.filter((x) => !x.name.startsWith("prox_upstream_")),
  });
  assert.ok(topSnapshot(bare(before), bare(after)).upstreams.every((u) => u.pool === null));
  assert.deepEqual(s.config, { version: 3, lastReload: { ok: true, agoSeconds: 7, errors: [] } });
  assert.deepEqual(s.certificates, [{ name: "cert.pem", daysLeft: 9 }]);
});

Deno.test("notProxStatus refuses JSON that is not Prox's status", () => {
  assert.equal(notProxStatus(status()), null);
  assert.equal(notProxStatus([1]), "it has no prox.version");
  assert.equal(notProxStatus({ prox: { version: "1" } }), "it has no config.version");
  assert.equal(notProxStatus(null), "it is not a JSON object");
});

Deno.test("layoutTop fits the width, truncates names and colours only when asked", () => {
  const long = { ...after, samples: [...after.samples] };
  long.samples.push({
    name: "prox_requests_total",
    labels: { route: `example.com/${"x".repeat(80)}`, status: "200" },
    value: 1,
  });
  const s = topSnapshot(before, long);
  const lines = layoutTop(s, { width: 72, color: false });
  for (const l of lines) assert.ok(l.length <= 72, `${l.length}: ${l}`);
  assert.ok(!lines.join("\n").includes("\x1b["));
  assert.match(lines[0], /^prox 0\.1\.0 {2}pid 42 {2}up 1h02m {2}config v3, last reload ok 7s ago/);
  const route = lines.find((l) => l.startsWith("example.com/"))!;
  assert.match(route, /^example\.com\/x+… +0\.5 /);
  const api = lines.find((l) => l.startsWith("/api "))!;
  assert.match(api, /^\/api +20 +15 +0 +0 +5 +100ms +100ms +2$/);
  // Busiest first.
  assert.ok(lines.indexOf(api) < lines.findIndex((l) => l.startsWith("/web ")));
  assert.ok(lines.some((l) => /^http:\/\/b:1 +out 3s +0 +0 +0ms$/.test(l)));
  // The pool table: only targets with pool figures.
  assert.ok(lines.some((l) => /^CONNECTIONS +BUSY +IDLE +WAIT +NEW\/S +REUSE +H2$/.test(l)));
  assert.ok(lines.some((l) => /^http:\/\/a:1 +3 +5 +3 +6 +60% +-$/.test(l)));
  assert.equal(lines.filter((l) => l.startsWith("http://b:1")).length, 1);
  assert.ok(lines.includes("certificate cert.pem: 9 days left"));
  assert.ok(lines.some((l) => l.includes("estimates")));
  const colored = layoutTop(s, { width: 72, color: true }).join("\n");
  assert.ok(colored.includes("\x1b[31m")); // a 5xx route, a down target, a near expiry
});

Deno.test("truncate and formatUptime", () => {
  assert.equal(truncate("abcdef", 4), "abc…");
  assert.equal(truncate("abc", 4), "abc");
  assert.equal(formatUptime(59), "59s");
  assert.equal(formatUptime(61), "1m01s");
  assert.equal(formatUptime(90061), "1d01h");
});

Deno.test("topSnapshot: a worker the previous scrape missed (it answered late) is not counted as new, unlike a restarted one", () => {
  const poll = (at: number, text: string): TopPoll => ({
    at,
    status: status(),
    samples: samples(text),
  });
  // Worker 1 (started long ago) missed the first scrape; worker 2 was restarted in between.
  const prev = poll(
    100_000,
    `prox_requests_total{route="/",method="GET",status="200",worker="0"} 1000
process_start_time_seconds{worker="0"} 10
`,
  );
  const cur = poll(
    101_000,
    `prox_requests_total{route="/",method="GET",status="200",worker="0"} 1010
prox_requests_total{route="/",method="GET",status="200",worker="1"} 500000
prox_requests_total{route="/",method="GET",status="200",worker="2"} 7
process_start_time_seconds{worker="0"} 10
process_start_time_seconds{worker="1"} 10
process_start_time_seconds{worker="2"} 100.5
`,
  );
  const s = topSnapshot(prev, cur);
  assert.deepEqual(s.routes.map((r) => [r.route, r.requests]), [["/", 17]]);
});
