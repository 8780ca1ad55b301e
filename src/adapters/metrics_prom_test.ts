import assert from "node:assert/strict";
import { createPromMetrics, methodLabel, withMetricsEndpoint } from "./metrics_prom.ts";
import type { ClientInfo } from "../ports.ts";

/** The sample lines of an exposition (no comments), as "name{labels} value". */
function samples(text: string): string[] {
  return text.split("\n").filter((l) => l && !l.startsWith("#"));
}

function value(text: string, series: string): number | undefined {
  const line = samples(text).find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("createPromMetrics exports request histograms with _bucket series, not summaries", async () => {
  const m = createPromMetrics({ version: "1.2.3" });
  m.request("/api", "GET", 200, 0.003);
  m.request("/api", "GET", 200, 0.2);
  m.request("/api", "GET", 502, 0.01);
  const t = await m.text();
  assert.match(t, /^# TYPE prox_request_duration_seconds histogram$/m);
  assert.doesNotMatch(t, /summary/);
  assert.equal(value(t, 'prox_requests_total{route="/api",method="GET",status="200"}'), 2);
  assert.equal(value(t, 'prox_requests_total{route="/api",method="GET",status="502"}'), 1);
  assert.equal(
    value(t, 'prox_request_duration_seconds_bucket{le="0.005",route="/api",method="GET"}'),
    1,
  );
  assert.equal(
    value(t, 'prox_request_duration_seconds_bucket{le="+Inf",route="/api",method="GET"}'),
    3,
  );
  assert.equal(value(t, 'prox_request_duration_seconds_count{route="/api",method="GET"}'), 3);
  assert.equal(value(t, 'prox_build_info{version="1.2.3",deno="' + Deno.version.deno + '"}'), 1);
});

Deno.test("createPromMetrics bounds the method label", async () => {
  assert.equal(methodLabel("GET"), "GET");
  assert.equal(methodLabel("FOOBAR"), "OTHER");
  // Every standard method (RFC 9110 §9) keeps its name: TRACE is answered 405 and counted so.
  for (const m of ["HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]) {
    assert.equal(methodLabel(m), m);
  }
  const m = createPromMetrics({ processMetrics: false });
  for (let i = 0; i < 50; i++) m.request("/", `X${i}`, 405, 0.001);
  const t = await m.text();
  assert.equal(value(t, 'prox_requests_total{route="/",method="OTHER",status="405"}'), 50);
  assert.equal(samples(t).filter((l) => l.startsWith("prox_requests_total")).length, 1);
});

Deno.test("createPromMetrics has backend health from start-up and drops removed backends", async () => {
  const m = createPromMetrics({ processMetrics: false });
  m.backendsConfigured(["http://a:1", "http://b:2"]);
  let t = await m.text();
  assert.equal(value(t, 'prox_backend_health_status{backend="http://a:1"}'), 1);
  assert.equal(value(t, 'prox_backend_health_status{backend="http://b:2"}'), 1);
  m.backendHealth("http://b:2", false);
  // A reload keeps b's known state and drops a.
  m.backendsConfigured(["http://b:2", "http://c:3"]);
  t = await m.text();
  assert.equal(value(t, 'prox_backend_health_status{backend="http://a:1"}'), undefined);
  assert.equal(value(t, 'prox_backend_health_status{backend="http://b:2"}'), 0);
  assert.equal(value(t, 'prox_backend_health_status{backend="http://c:3"}'), 1);
});

Deno.test("createPromMetrics backendsConfigured drops every series of removed backends", async () => {
  const m = createPromMetrics({ processMetrics: false });
  m.backendsConfigured(["http://a:1", "http://b:2"]);
  for (const b of ["http://a:1", "http://b:2"]) {
    m.backendRequest(b, "/api", 200, 0.02);
    m.ejection(b);
    m.upstreamShed(b, "queue_full");
  }
  // A reload that moved /api from a to c (the route stays).
  m.backendsConfigured(["http://b:2", "http://c:3"]);
  const t = await m.text();
  assert.deepEqual(samples(t).filter((l) => l.includes("http://a:1")), []);
  assert.equal(
    value(t, 'prox_backend_requests_total{backend="http://b:2",route="/api",status="200"}'),
    1,
  );
  assert.equal(
    value(t, 'prox_backend_request_duration_seconds_count{backend="http://b:2",route="/api"}'),
    1,
  );
  assert.equal(value(t, 'prox_backend_ejections_total{backend="http://b:2"}'), 1);
  assert.equal(value(t, 'prox_upstream_shed_total{backend="http://b:2",reason="queue_full"}'), 1);
  // A request still queued for the removed target does not bring its series back.
  m.upstreamShed("http://a:1", "queue_timeout");
  assert.deepEqual(samples(await m.text()).filter((l) => l.includes("http://a:1")), []);
});

Deno.test("createPromMetrics records backends, limits, retries, ejections, websockets, reloads, certs", async () => {
  const m = createPromMetrics({ processMetrics: false });
  m.backendRequest("http://a:1", "/api", 200, 0.02);
  m.backendRequest("http://a:1", "/api", 599, 5);
  m.rateLimit("/api", "limited");
  m.retry("/api", "connect");
  m.ejection("http://a:1");
  m.connectionOpened("websocket");
  m.connectionOpened("h2");
  m.connectionOpened("h2");
  m.connectionClosed("h2");
  m.websocketMessageTooBig("/ws");
  m.responseBodyFailed("/api", "timeout");
  m.mirror("/api", "mirrored");
  m.mirror("/api", "mirrored");
  m.mirror("/api", "dropped_in_flight");
  m.configReload({ ok: true, version: 2, at: 1_700_000_000_000 });
  m.configReload({ ok: false, version: 2, at: 1_700_000_100_000 });
  m.certificateExpiry("main", 1_800_000_000_000);
  const t = await m.text();
  assert.equal(
    value(t, 'prox_backend_requests_total{backend="http://a:1",route="/api",status="599"}'),
    1,
  );
  assert.equal(
    value(t, 'prox_backend_request_duration_seconds_count{backend="http://a:1",route="/api"}'),
    2,
  );
  assert.equal(value(t, 'prox_rate_limit_hits_total{route="/api",action="limited"}'), 1);
  assert.equal(value(t, 'prox_retries_total{route="/api",reason="connect"}'), 1);
  assert.equal(value(t, 'prox_backend_ejections_total{backend="http://a:1"}'), 1);
  assert.equal(value(t, 'prox_active_connections{protocol="websocket"}'), 1);
  assert.equal(value(t, 'prox_active_connections{protocol="h2"}'), 1);
  assert.equal(value(t, 'prox_active_connections{protocol="h3"}'), 0);
  assert.equal(value(t, "prox_websocket_connections_total"), 1);
  assert.equal(value(t, 'prox_websocket_messages_too_big_total{route="/ws"}'), 1);
  assert.equal(value(t, 'prox_response_body_failures_total{route="/api",kind="timeout"}'), 1);
  assert.equal(value(t, 'prox_mirror_requests_total{route="/api",result="mirrored"}'), 2);
  assert.equal(value(t, 'prox_mirror_requests_total{route="/api",result="dropped_in_flight"}'), 1);
  assert.equal(value(t, 'prox_config_reload_total{result="success"}'), 1);
  assert.equal(value(t, 'prox_config_reload_total{result="failure"}'), 1);
  assert.equal(value(t, "prox_config_last_reload_successful"), 0);
  assert.equal(value(t, "prox_config_last_reload_success_timestamp_seconds"), 1_700_000_000);
  assert.equal(value(t, "prox_config_version"), 2);
  assert.equal(
    value(t, 'prox_tls_certificate_expiry_timestamp_seconds{name="main"}'),
    1_800_000_000,
  );
});

Deno.test("createPromMetrics exports true process metrics and no nodejs_* defaults", async () => {
  const m = createPromMetrics();
  const t = await m.text();
  assert.doesNotMatch(t, /nodejs_/);
  assert.ok(value(t, "process_resident_memory_bytes")! > 1_000_000);
  assert.ok(value(t, "process_cpu_seconds_total")! > 0);
  const start = value(t, "process_start_time_seconds")!;
  assert.ok(Math.abs(start - performance.timeOrigin / 1000) < 1, String(start));
  if (Deno.build.os === "linux") {
    assert.ok(value(t, "process_open_fds")! >= 3);
    assert.ok(value(t, "process_max_fds")! >= 64);
  }
});

Deno.test("createPromMetrics routesConfigured drops every series of removed routes", async () => {
  const m = createPromMetrics({ processMetrics: false });
  for (const r of ["/a", "/b"]) {
    m.request(r, "GET", 200, 0.01);
    m.backendRequest("http://x:1", r, 200, 0.01);
    m.rateLimit(r, "limited");
    m.retry(r, "connect");
  }
  m.request("(none)", "GET", 404, 0.001);
  await m.routesConfigured(["/b"]);
  m.request("/b", "GET", 200, 0.01);
  const t = await m.text();
  assert.doesNotMatch(t, /route="\/a"/);
  assert.equal(value(t, 'prox_requests_total{route="/b",method="GET",status="200"}'), 2);
  assert.equal(value(t, 'prox_requests_total{route="(none)",method="GET",status="404"}'), 1);
  assert.equal(
    value(t, 'prox_request_duration_seconds_bucket{le="+Inf",route="/b",method="GET"}'),
    2,
  );
  assert.equal(value(t, 'prox_rate_limit_hits_total{route="/b",action="limited"}'), 1);
  // A route that comes back starts from zero (a counter reset Prometheus handles).
  await m.routesConfigured(["/a", "/b"]);
  m.request("/a", "GET", 200, 0.01);
  assert.equal(
    value(await m.text(), 'prox_requests_total{route="/a",method="GET",status="200"}'),
    1,
  );
});

Deno.test("createPromMetrics routesConfigured: requests still in flight on a removed route do not bring its series back", async () => {
  const m = createPromMetrics({ processMetrics: false });
  await m.routesConfigured(["/a", "/b"]);
  m.request("/a", "GET", 200, 0.01);
  await m.routesConfigured(["/b"]);
  // Requests that began on the old config end after the reload and report under "/a".
  m.request("/a", "GET", 200, 0.01);
  m.backendRequest("http://x:1", "/a", 200, 0.01);
  m.rateLimit("/a", "limited");
  m.retry("/a", "connect");
  m.websocketMessageTooBig("/a");
  m.request("/b", "GET", 200, 0.01);
  // Likewise a target a reload removed, for requests to it still in flight.
  m.backendsConfigured(["http://x:1", "http://y:1"]);
  m.backendsConfigured(["http://y:1"]);
  m.backendRequest("http://x:1", "/b", 200, 0.01);
  const t = await m.text();
  assert.doesNotMatch(t, /route="\/a"/);
  assert.equal(value(t, 'prox_requests_total{route="/b",method="GET",status="200"}'), 1);
  assert.doesNotMatch(t, /backend="http:\/\/x:1"/);
});

Deno.test("createPromMetrics observe() reads in-flight and limiter keys at scrape time", async () => {
  const m = createPromMetrics({ processMetrics: false });
  let inFlight = 3;
  m.observe({
    upstreams: () => [{ id: "http://a:1", inFlight }],
    limiterKeys: () => ({ "/api": 42 }),
  });
  let t = await m.text();
  assert.equal(value(t, 'prox_backend_in_flight_requests{backend="http://a:1"}'), 3);
  assert.equal(value(t, 'prox_rate_limit_keys{route="/api"}'), 42);
  inFlight = 0;
  t = await m.text();
  assert.equal(value(t, 'prox_backend_in_flight_requests{backend="http://a:1"}'), 0);
});

Deno.test("createPromMetrics HELP texts say what 499 and the start-up load count as", async () => {
  const m = createPromMetrics({ processMetrics: false });
  const text = await m.text();
  assert.match(text, /# HELP prox_backend_requests_total .*599 .*499 /);
  assert.match(text, /# HELP prox_config_reload_total .*start-up/);
});

Deno.test("createPromMetrics: an ejection that ran out shows in the scrape that lists it", async () => {
  const m = createPromMetrics({ processMetrics: false });
  m.backendsConfigured(["http://a:1"]);
  m.backendHealth("http://a:1", false);
  let ejected = true;
  m.observe({
    // As the upstream registry's list(): it announces an ejection that ran out.
    upstreams: () => {
      if (ejected) m.backendHealth("http://a:1", true);
      ejected = false;
      return [{ id: "http://a:1", inFlight: 0 }];
    },
    limiterKeys: () => ({}),
  });
  const t = await m.text();
  assert.equal(value(t, 'prox_backend_health_status{backend="http://a:1"}'), 1);
});

Deno.test("createPromMetrics observe() reads the upstream pools at scrape time", async () => {
  const m = createPromMetrics({ processMetrics: false });
  let opened = 3;
  let calls = 0;
  m.observe({
    upstreams: () => [],
    limiterKeys: () => ({}),
    pools() {
      calls++;
      return new Map([
        ["http://a:1", { busy: 2, idle: 5, waiting: 1, opened, reused: 40, h2Streams: null }],
        ["https://b:2", { busy: 0, idle: 0, waiting: 0, opened: 0, reused: 0, h2Streams: 7 }],
      ]);
    },
  });
  let t = await m.text();
  assert.equal(value(t, 'prox_upstream_connections{backend="http://a:1",state="busy"}'), 2);
  assert.equal(value(t, 'prox_upstream_connections{backend="http://a:1",state="idle"}'), 5);
  assert.equal(value(t, 'prox_upstream_waiting{backend="http://a:1"}'), 1);
  assert.equal(value(t, 'prox_upstream_connections_opened_total{backend="http://a:1"}'), 3);
  assert.equal(value(t, 'prox_upstream_connections_reused_total{backend="http://a:1"}'), 40);
  assert.equal(value(t, 'prox_upstream_h2_streams{backend="https://b:2"}'), 7);
  assert.doesNotMatch(t, /prox_upstream_h2_streams\{backend="http:\/\/a:1"\}/);
  assert.match(t, /# TYPE prox_upstream_connections_opened_total counter/);
  assert.equal(calls, 1, "the pools are read once per scrape");
  opened = 9;
  t = await m.text();
  assert.equal(value(t, 'prox_upstream_connections_opened_total{backend="http://a:1"}'), 9);
});

Deno.test("createPromMetrics shows the engine's turns only while a listener uses the engine", async () => {
  const m = createPromMetrics({ processMetrics: false });
  let turns: { held: number; waiting: number } | null = null;
  m.observe({ upstreams: () => [], limiterKeys: () => ({}), engineTurns: () => turns });
  assert.doesNotMatch(await m.text(), /prox_http1_engine_turns\{/);
  turns = { held: 64, waiting: 3 };
  const t = await m.text();
  assert.equal(value(t, 'prox_http1_engine_turns{state="held"}'), 64);
  assert.equal(value(t, 'prox_http1_engine_turns{state="waiting"}'), 3);
});

Deno.test("every metric createPromMetrics registers has a row in monitoring/README.md's table", async () => {
  const t = await createPromMetrics({ processMetrics: false }).text();
  const names = [...t.matchAll(/^# TYPE (prox_\w+) /gm)].map((m) => m[1]);
  assert.ok(names.length > 20, String(names.length));
  const table = await Deno.readTextFile(new URL("../../monitoring/README.md", import.meta.url));
  const missing = names.filter((n) => !table.includes("| `" + n + "` "));
  assert.deepEqual(missing, [], "add a row for each to monitoring/README.md");
});

Deno.test("createPromMetrics: a removed route or target stays out after later reloads too", async () => {
  const m = createPromMetrics({ processMetrics: false });
  await m.routesConfigured(["/a", "/b"]);
  m.backendsConfigured(["http://x:1", "http://y:1"]);
  m.request("/a", "GET", 200, 0.01);
  await m.routesConfigured(["/b"]);
  m.backendsConfigured(["http://y:1"]);
  // Another reload, while a WebSocket session of "/a" to x (hours long) is still open.
  await m.routesConfigured(["/b", "/c"]);
  m.backendsConfigured(["http://y:1", "http://z:1"]);
  m.websocketMessageTooBig("/a");
  m.request("/a", "GET", 101, 0.01);
  m.backendRequest("http://x:1", "/b", 200, 0.01);
  const t = await m.text();
  assert.doesNotMatch(t, /route="\/a"/);
  assert.doesNotMatch(t, /backend="http:\/\/x:1"/);
  // A route or target that comes back counts again.
  await m.routesConfigured(["/a", "/b"]);
  m.backendsConfigured(["http://x:1"]);
  m.request("/a", "GET", 200, 0.01);
  m.backendRequest("http://x:1", "/a", 200, 0.01);
  const back = await m.text();
  assert.equal(value(back, 'prox_requests_total{route="/a",method="GET",status="200"}'), 1);
  assert.equal(
    value(back, 'prox_backend_requests_total{backend="http://x:1",route="/a",status="200"}'),
    1,
  );
});

Deno.test("createPromMetrics: at the first reload, routes seen only in series stay out too", async () => {
  const m = createPromMetrics({ processMetrics: false });
  m.request("/a", "GET", 200, 0.01);
  m.rateLimit("/a", "limited");
  await m.routesConfigured(["/b"]);
  m.request("/a", "GET", 200, 0.01);
  m.rateLimit("/a", "limited");
  assert.doesNotMatch(await m.text(), /route="\/a"/);
});

Deno.test("createPromMetrics: a reload that removes many routes prunes their series in one pass", async () => {
  const m = createPromMetrics({ processMetrics: false });
  const routes = Array.from({ length: 1000 }, (_, i) => `/r${i}`);
  await m.routesConfigured(routes);
  for (const r of routes) {
    for (const s of [200, 201, 204, 301, 302, 304, 400, 404, 500, 502]) {
      m.request(r, "GET", s, 0.01);
      m.backendRequest("http://a:1", r, s, 0.01);
    }
  }
  // The event loop (every request) waits for it: it took 4 s, one scan of 10,000 cells per series.
  const t0 = performance.now();
  await m.routesConfigured(["/r0"]);
  const ms = performance.now() - t0;
  assert.ok(ms < 1000, `${Math.round(ms)} ms`);
  const t = await m.text();
  assert.equal(t.split("\n").filter((l) => l.startsWith("prox_requests_total{")).length, 10);
  assert.equal(
    t.split("\n").filter((l) => l.startsWith("prox_backend_requests_total{")).length,
    10,
  );
});

Deno.test("createPromMetrics exports on-demand TLS counters, the held count, and expiry of held names only", async () => {
  const m = createPromMetrics({ version: "1.2.3", processMetrics: false });
  // Every result is there from start at 0.
  let t = await m.text();
  for (const r of ["allowed", "refused", "error", "cached_allowed", "cached_refused"]) {
    assert.equal(value(t, `prox_tls_on_demand_asks_total{result="${r}"}`), 0, r);
  }
  for (const r of ["issued", "failed", "rate_limited"]) {
    assert.equal(value(t, `prox_tls_on_demand_orders_total{result="${r}"}`), 0, r);
  }
  m.onDemandAsk("allowed");
  m.onDemandAsk("cached_refused");
  m.onDemandAsk("cached_refused");
  m.onDemandOrder("issued");
  m.onDemandOrder("rate_limited");
  m.onDemandCertificates([
    { name: "a.example", notAfterMs: 1_800_000_000_000 },
    { name: "b.example", notAfterMs: 1_900_000_000_000 },
  ]);
  // The main certificate's report resets the series: the on-demand ones stay.
  m.certificateExpiry("acme:main.example", 1_700_000_000_000);
  t = await m.text();
  assert.equal(value(t, 'prox_tls_on_demand_asks_total{result="allowed"}'), 1);
  assert.equal(value(t, 'prox_tls_on_demand_asks_total{result="cached_refused"}'), 2);
  assert.equal(value(t, 'prox_tls_on_demand_orders_total{result="issued"}'), 1);
  assert.equal(value(t, 'prox_tls_on_demand_orders_total{result="rate_limited"}'), 1);
  assert.equal(value(t, 'prox_tls_on_demand_orders_total{result="failed"}'), 0);
  assert.equal(value(t, "prox_tls_on_demand_certificates"), 2);
  const expiry = (name: string) =>
    value(t, `prox_tls_certificate_expiry_timestamp_seconds{name="${name}"}`);
  assert.equal(expiry("acme:main.example"), 1_700_000_000);
  assert.equal(expiry("on_demand:a.example"), 1_800_000_000);
  assert.equal(expiry("on_demand:b.example"), 1_900_000_000);
  // a dropped: its series goes, b's stays.
  m.onDemandCertificates([{ name: "b.example", notAfterMs: 1_900_000_000_000 }]);
  t = await m.text();
  assert.equal(expiry("on_demand:a.example"), undefined);
  assert.equal(expiry("on_demand:b.example"), 1_900_000_000);
  assert.equal(expiry("acme:main.example"), 1_700_000_000);
  assert.equal(value(t, "prox_tls_on_demand_certificates"), 1);
  m.onDemandCertificates([]);
  m.certificateExpiry("acme:main.example", 1_700_000_000_000);
  t = await m.text();
  assert.equal(expiry("on_demand:b.example"), undefined);
  assert.equal(value(t, "prox_tls_on_demand_certificates"), 0);
});

Deno.test("withMetricsEndpoint parses no URL for a request whose escapes are in its query (routes pay nothing)", async () => {
  const info: ClientInfo = {
    remoteAddr: { hostname: "127.0.0.1", port: 1 },
    localPort: 80,
    protocol: "http/1.1",
    tls: false,
  };
  const handler = withMetricsEndpoint(() => Promise.resolve(new Response("route")), {
    config: () => ({ on_main_listener: true, path: "/metrics" }),
    text: () => Promise.resolve("metrics"),
  });
  const routed = new Request("http://a.test/search?q=a%20b&page=2");
  const metrics = new Request("http://a.test/%6Detrics");
  const Url = globalThis.URL;
  let parsed = 0;
  globalThis.URL = class extends Url {
    constructor(url: string | URL, base?: string | URL) {
      super(url, base);
      parsed++;
    }
  };
  let res: Response;
  try {
    res = await handler(routed, info);
  } finally {
    globalThis.URL = Url;
  }
  assert.equal(await res.text(), "route");
  assert.equal(parsed, 0, "URLs parsed for a request to a route");
  // An escape in the path is still read as the metrics path it spells.
  assert.equal(await (await handler(metrics, info)).text(), "metrics");
});
