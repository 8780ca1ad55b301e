// The Metrics port on prom-client, on a Registry of its own. prom-client's `nodejs_*` defaults
// describe Deno's Node-compat layer rather than this process, so only true process metrics are
// registered here (resident memory, CPU seconds, open and max fds, start time).
//
// Labels are bounded: route ids and upstream URLs come from the config, methods outside the
// standard set become "OTHER", statuses are numbers. Label children are cached (bounded) so an
// observation costs a Map lookup rather than prom-client's label hashing.

import { Counter, Gauge, Registry } from "./prom_classes.ts";
import type { ClientInfo, Handler, Metrics, Protocol } from "../ports.ts";
import type { TargetPool } from "./admin_status.ts";
import type { ShedReason } from "../domain/errors.ts";
import { normalizePath } from "../domain/rewrite.ts";
import { HotCounter, HotHistogram } from "./metrics_hot.ts";
import { registerProcessMetrics } from "./metrics_process.ts";

/** The Metrics port plus what the admin listener needs to expose it. */
export interface PromMetrics extends Metrics {
  readonly registry: Registry;
  /** `Content-Type` of the text exposition format 0.0.4. */
  readonly contentType: string;
  /** The whole exposition, collected now. */
  text(): Promise<string>;
  /** Gauges read at scrape time from runtime state (in-flight per target, limiter keys). */
  observe(views: RuntimeViews): void;
}

/** Runtime state the server lets the exposition read at scrape time. */
export interface RuntimeViews {
  upstreams(): readonly { id: string; inFlight: number }[];
  /** Each target's connection pool (admin_status.ts's targetPools). */
  pools?(): ReadonlyMap<string, TargetPool>;
  /** Client keys held per route id by the in-memory rate limiter. */
  limiterKeys(): Record<string, number>;
  /** Bytes and entries held per route id by the response caches. */
  cacheSizes?(): Record<string, { bytes: number; entries: number }>;
  /** What `/readyz` answers: the main listener serves and Prox is not draining. */
  ready?(): boolean;
  /** Prox's own HTTP/1.1 engine's turns (read_gate.ts); null while no listener uses the engine. */
  engineTurns?(): { held: number; waiting: number } | null;
}

/** Latency buckets in seconds: 1 ms to 60 s, dense around typical proxy latencies. */
export const LATENCY_BUCKETS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
];

/** The route label of requests that matched no route (kept by routesConfigured). */
export const NO_ROUTE = "(none)";
/** The route label of requests on the plain-HTTP listener (HTTPS redirects, ACME challenges). */
export const PLAIN_HTTP_ROUTE = "(plain_http)";
/** RFC 9110 §9's methods and PATCH (RFC 5789). */
const METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "CONNECT",
  "OPTIONS",
  "TRACE",
  "PATCH",
]);
const PROTOCOLS: (Protocol | "websocket")[] = ["http/1.1", "h2", "h2c", "h3", "websocket"];

/** Why the upstream pool shed a request (ShedReason): the `reason` label's values. */
const SHED_REASONS: readonly ShedReason[] = ["queue_full", "queue_timeout", "request_timeout"];

/** Maps an HTTP method to a bounded label value. */
export function methodLabel(method: string): string {
  return METHODS.has(method) ? method : "OTHER";
}

/** The parts of a prom-client metric that route pruning needs. */
interface Prunable {
  get(): Promise<{ values: { labels: Record<string, string | number | undefined> }[] }>;
  remove(labels: Record<string, string | number>): void;
}

/** Removes every series of `metric` whose `route` label is not in `keep`; adds those to `removed`. */
async function pruneRoutes(
  metric: Prunable,
  keep: ReadonlySet<string>,
  removed: Set<string>,
): Promise<void> {
  // Prox's own metrics in one pass: removing series one by one scanned every cell each time.
  if (metric instanceof HotCounter || metric instanceof HotHistogram) {
    for (const route of metric.retain("route", keep)) removed.add(route);
    return;
  }
  const done = new Set<string>();
  for (const { labels } of (await metric.get()).values) {
    if (labels.route === undefined || keep.has(String(labels.route))) continue;
    removed.add(String(labels.route));
    const series: Record<string, string | number> = {};
    for (const [k, v] of Object.entries(labels)) if (k !== "le" && v !== undefined) series[k] = v;
    const key = JSON.stringify(series);
    if (done.has(key)) continue;
    done.add(key);
    metric.remove(series);
  }
}

/** Most removed routes (or targets) remembered as gone; the oldest are forgotten first. */
const MAX_GONE = 10_000;

/** The ids removed so far and `removed` now, less those configured again (`keep`), bounded. */
function stillGone(
  before: ReadonlySet<string>,
  removed: ReadonlySet<string>,
  keep: ReadonlySet<string>,
): Set<string> {
  const out = [...before, ...removed].filter((id) => !keep.has(id));
  return new Set(out.slice(Math.max(0, out.length - MAX_GONE)));
}

/** Creates the Prometheus-backed Metrics; `version` goes into `prox_build_info`. */
export function createPromMetrics(
  opts: { version?: string; processMetrics?: boolean } = {},
): PromMetrics {
  const registry = new Registry();
  const registers = [registry];
  const hot = <T extends HotCounter | HotHistogram>(m: T): T => {
    registry.registerMetric(m as unknown as Parameters<Registry["registerMetric"]>[0]);
    return m;
  };

  // The four metrics every request touches are HotCounter/HotHistogram (metrics_hot.ts).
  const requests = hot(
    new HotCounter({
      name: "prox_requests_total",
      help: "Requests answered by Prox, by route id (the route key, never the raw path)",
      labelNames: ["route", "method", "status"],
    }),
  );
  const requestDuration = hot(
    new HotHistogram({
      name: "prox_request_duration_seconds",
      help: "Time from receiving a request to sending the response head, by route id",
      labelNames: ["route", "method"],
      buckets: LATENCY_BUCKETS,
    }),
  );
  const backendRequests = hot(
    new HotCounter({
      name: "prox_backend_requests_total",
      help: "Requests sent to upstream targets; status 599 means no response (transport error), " +
        "499 that the client left before the response head",
      labelNames: ["backend", "route", "status"],
    }),
  );
  const backendDuration = hot(
    new HotHistogram({
      name: "prox_backend_request_duration_seconds",
      help: "Time from sending a request upstream until its response head (or failure)",
      labelNames: ["backend", "route"],
      buckets: LATENCY_BUCKETS,
    }),
  );
  const backendHealth = new Gauge({
    name: "prox_backend_health_status",
    help: "1 when the upstream target is considered healthy, 0 when down or ejected",
    labelNames: ["backend"] as const,
    registers,
    collect() {
      // Listing the upstreams announces ejections that ran out (without traffic, nothing else
      // may): this scrape shows them back up, not the next one.
      runtime?.upstreams();
    },
  });
  // Counted in plain numbers and handed to the gauge when scraped: prom-client's inc and dec
  // hash the label set each time, twice per request.
  const active: Record<string, number> = {};
  for (const p of PROTOCOLS) active[p] = 0;
  new Gauge({
    name: "prox_active_connections",
    help: "Client requests in progress on HTTP/1.1 and HTTP/2 listeners (Deno.serve has no " +
      "connection events), open QUIC connections for h3, open sessions for websocket",
    labelNames: ["protocol"] as const,
    registers,
    collect() {
      for (const p in active) this.set({ protocol: p }, active[p]);
    },
  });
  const refused = new Counter({
    name: "prox_connections_refused_total",
    help: "Client connections closed as they were accepted, by the limit reached " +
      "(limits.max_connections, limits.max_connections_per_ip)",
    labelNames: ["limit"] as const,
    registers,
  });
  const tlsRefused = new Counter({
    name: "prox_tls_client_refused_total",
    help: "Clients tls.client_auth refused, by why (handshake, no_certificate, unverified, " +
      "key_usage, crl_revoked, crl_expired, crl_missing, ocsp_revoked, ocsp_unknown, ocsp_error)",
    labelNames: ["reason"] as const,
    registers,
  });
  const rateLimitHits = new Counter({
    name: "prox_rate_limit_hits_total",
    help: "Rate limiter decisions by route and action (allowed, limited, shadow_limited, error)",
    labelNames: ["route", "action"] as const,
    registers,
  });
  const cacheResults = new Counter({
    name: "prox_cache_requests_total",
    help: "Requests on routes with a response cache, by result (hit, updating: stale while " +
      "refreshed, miss, stale, revalidated, bypass)",
    labelNames: ["route", "result"] as const,
    registers,
  });
  const cacheRefreshes = new Counter({
    name: "prox_cache_refreshes_total",
    help: "Background refreshes of stale entries (stale-while-revalidate) by result (refreshed: " +
      "304, replaced: a new answer, failed: the stale entry stays)",
    labelNames: ["route", "result"] as const,
    registers,
  });
  const cachePurges = new Counter({
    name: "prox_cache_purges_total",
    help: "Admin cache purges by route and what they named (url, prefix, route, tag)",
    labelNames: ["route", "kind"] as const,
    registers,
  });
  const cachePurged = new Counter({
    name: "prox_cache_purged_entries_total",
    help: "Entries admin cache purges dropped, by route",
    labelNames: ["route"] as const,
    registers,
  });
  const forwardAuthChecks = new Counter({
    name: "prox_forward_auth_total",
    help: "Forward auth checks by route and outcome (allowed: 2xx, denied: the auth service's " +
      "refusal went to the client, error: it did not answer and the client got 503)",
    labelNames: ["route", "outcome"] as const,
    registers,
  });
  const accessDenied = new Counter({
    name: "prox_access_denied_total",
    help: "Requests refused by access control, by route and reason (ip, credentials_missing, " +
      "credentials_wrong, throttled, cors_origin, client_cert)",
    labelNames: ["route", "reason"] as const,
    registers,
  });
  const retries = new Counter({
    name: "prox_retries_total",
    help: "Upstream retries by route and reason",
    labelNames: ["route", "reason"] as const,
    registers,
  });
  const ejections = new Counter({
    name: "prox_backend_ejections_total",
    help: "Passive health ejections of an upstream target",
    labelNames: ["backend"] as const,
    registers,
  });
  const sheds = new Counter({
    name: "prox_upstream_shed_total",
    help: "Requests the upstream pool shed with 503 before sending them, by target and reason " +
      "(queue_full, queue_timeout, request_timeout)",
    labelNames: ["backend", "reason"] as const,
    registers,
  });
  const wsTotal = new Counter({
    name: "prox_websocket_connections_total",
    help: "WebSocket sessions proxied since start",
    registers,
  });
  const wsTooBig = new Counter({
    name: "prox_websocket_messages_too_big_total",
    help: "WebSocket sessions closed with 1009 because a frame or message exceeded the limit",
    labelNames: ["route"] as const,
    registers,
  });
  const bodyFailures = new Counter({
    name: "prox_response_body_failures_total",
    help: "Answers cut short after their head went out, by route and the error's kind: timeout " +
      "(an upstream that stalled past timeouts.idle or total), upstream_reset, protocol, " +
      "client_gone (a client that stopped reading), …",
    labelNames: ["route", "kind"] as const,
    registers,
  });
  const mirrors = new Counter({
    name: "prox_mirror_requests_total",
    help: "Mirror copies by route and result: mirrored (the shadow answered, any status), failed " +
      "(no answer), dropped_in_flight (max_in_flight reached), dropped_body_too_large (over " +
      "max_body), dropped_body_incomplete (the client's body did not arrive whole)",
    labelNames: ["route", "result"] as const,
    registers,
  });
  const reloads = new Counter({
    name: "prox_config_reload_total",
    help: "Config loads by result (success, failure): the one at start-up, then each reload",
    labelNames: ["result"] as const,
    registers,
  });
  const rollbacks = new Counter({
    name: "prox_config_reload_rollbacks_total",
    help: "Reloads another worker refused, undone in every worker (workers: N, worker 0)",
    registers,
  });
  const lastReloadOk = new Gauge({
    name: "prox_config_last_reload_successful",
    help: "1 when the last config load or reload succeeded, else 0",
    registers,
  });
  const lastReloadTime = new Gauge({
    name: "prox_config_last_reload_success_timestamp_seconds",
    help: "Unix time of the last successful config load or reload",
    registers,
  });
  const configVersion = new Gauge({
    name: "prox_config_version",
    help: "Version number of the config being served (1 at start, +1 per successful reload)",
    registers,
  });
  const certExpiry = new Gauge({
    name: "prox_tls_certificate_expiry_timestamp_seconds",
    help: "Unix time at which the served TLS certificate chain expires (its earliest notAfter)",
    labelNames: ["name"] as const,
    registers,
  });
  const odAsks = new Counter({
    name: "prox_tls_on_demand_asks_total",
    help: "Answers about on-demand TLS names, from the ask endpoint or its cache",
    labelNames: ["result"] as const,
    registers,
  });
  const odOrders = new Counter({
    name: "prox_tls_on_demand_orders_total",
    help: "ACME orders for on-demand TLS names (renewals too), by outcome",
    labelNames: ["result"] as const,
    registers,
  });
  const odCerts = new Gauge({
    name: "prox_tls_on_demand_certificates",
    help: "On-demand TLS certificates held now (at most tls.acme.on_demand.max_certificates)",
    registers,
  });
  /** The on-demand certificates' expiry series (`on_demand:<name>`), kept across resets. */
  let odExpiry: { name: string; notAfterMs: number }[] = [];
  const setOdExpiry = () => {
    for (const c of odExpiry) certExpiry.set({ name: `on_demand:${c.name}` }, c.notAfterMs / 1000);
  };
  new Gauge({
    name: "prox_build_info",
    help: "Always 1; labels carry the Prox and Deno versions",
    labelNames: ["version", "deno"] as const,
    registers,
  }).set({ version: opts.version ?? "dev", deno: Deno.version.deno }, 1);

  reloads.inc({ result: "success" }, 0);
  reloads.inc({ result: "failure" }, 0);
  for (const result of ["allowed", "refused", "error", "cached_allowed", "cached_refused"]) {
    odAsks.inc({ result }, 0);
  }
  for (const result of ["issued", "failed", "rate_limited"]) odOrders.inc({ result }, 0);
  if (opts.processMetrics !== false) registerProcessMetrics(registry);

  const knownBackends = new Set<string>();
  let runtime: RuntimeViews | null = null;
  new Gauge({
    name: "prox_backend_in_flight_requests",
    help: "Requests in flight to each upstream target (what least_connections balances on)",
    labelNames: ["backend"] as const,
    registers,
    collect() {
      this.reset();
      for (const u of runtime?.upstreams() ?? []) this.set({ backend: u.id }, u.inFlight);
    },
  });
  // The pools' figures, computed once for the five metrics below: a scrape calls their collect()
  // one after another before anything awaits; the next microtask forgets them.
  let poolScrape: ReadonlyMap<string, TargetPool> | null = null;
  const pools = () => {
    if (!poolScrape) {
      poolScrape = runtime?.pools?.() ?? new Map();
      queueMicrotask(() => poolScrape = null);
    }
    return poolScrape;
  };
  new Gauge({
    name: "prox_upstream_connections",
    help: "HTTP/1.1 connections to each target's origin: busy (carrying a request or being " +
      "opened) and idle (kept alive for reuse)",
    labelNames: ["backend", "state"] as const,
    registers,
    collect() {
      this.reset();
      for (const [backend, p] of pools()) {
        this.set({ backend, state: "busy" }, p.busy);
        this.set({ backend, state: "idle" }, p.idle);
      }
    },
  });
  new Gauge({
    name: "prox_upstream_waiting",
    help: "Requests waiting for a connection to each target's origin (upstream_pool queue)",
    labelNames: ["backend"] as const,
    registers,
    collect() {
      this.reset();
      for (const [backend, p] of pools()) this.set({ backend }, p.waiting);
    },
  });
  new Counter({
    name: "prox_upstream_connections_opened_total",
    help: "HTTP/1.1 connections opened to each target's origin (one per request with " +
      "proxy_protocol)",
    labelNames: ["backend"] as const,
    registers,
    collect() {
      this.reset();
      for (const [backend, p] of pools()) this.inc({ backend }, p.opened);
    },
  });
  new Counter({
    name: "prox_upstream_connections_reused_total",
    help: "HTTP/1.1 requests sent to each target's origin on a kept-alive connection",
    labelNames: ["backend"] as const,
    registers,
    collect() {
      this.reset();
      for (const [backend, p] of pools()) this.inc({ backend }, p.reused);
    },
  });
  new Gauge({
    name: "prox_upstream_h2_streams",
    help: "HTTP/2 requests in flight to each target's origin (fetch's connections are not shown)",
    labelNames: ["backend"] as const,
    registers,
    collect() {
      this.reset();
      for (const [backend, p] of pools()) {
        if (p.h2Streams !== null) this.set({ backend }, p.h2Streams);
      }
    },
  });
  new Gauge({
    name: "prox_http1_engine_turns",
    help: "Prox's own HTTP/1.1 engine: turns held by connections reading or serving a request, " +
      "and connections waiting for one",
    labelNames: ["state"] as const,
    registers,
    collect() {
      this.reset();
      const t = runtime?.engineTurns?.();
      if (!t) return;
      this.set({ state: "held" }, t.held);
      this.set({ state: "waiting" }, t.waiting);
    },
  });
  new Gauge({
    name: "prox_rate_limit_keys",
    help: "Client keys held by each route's in-memory rate limiter (its memory use)",
    labelNames: ["route"] as const,
    registers,
    collect() {
      this.reset();
      for (const [route, n] of Object.entries(runtime?.limiterKeys() ?? {})) {
        this.set({ route }, n);
      }
    },
  });

  new Gauge({
    name: "prox_cache_bytes",
    help: "Bytes held by each route's response cache (bodies, header fields and keys)",
    labelNames: ["route"] as const,
    registers,
    collect() {
      this.reset();
      for (const [route, n] of Object.entries(runtime?.cacheSizes?.() ?? {})) {
        this.set({ route }, n.bytes);
      }
    },
  });
  new Gauge({
    name: "prox_cache_entries",
    help: "Responses held by each route's response cache",
    labelNames: ["route"] as const,
    registers,
    collect() {
      this.reset();
      for (const [route, n] of Object.entries(runtime?.cacheSizes?.() ?? {})) {
        this.set({ route }, n.entries);
      }
    },
  });
  new Gauge({
    name: "prox_ready",
    help: "1 when /readyz answers 200 (the main listener serves, not draining), else 0: e.g. " +
      "HTTPS waiting for its first ACME certificate",
    registers,
    collect() {
      if (runtime?.ready) this.set(runtime.ready() ? 1 : 0);
    },
  });

  /** Routes of the config in use, and those the last reload removed. */
  let configured = new Set<string>();
  let gone = new Set<string>();
  let goneBackends = new Set<string>();
  return {
    registry,
    contentType: registry.contentType,
    text: () => registry.metrics(),
    observe(views) {
      runtime = views;
    },
    request(route, method, status, seconds) {
      if (gone.has(route)) return;
      const m = methodLabel(method);
      requests.cell(route, m, String(status)).value++;
      requestDuration.observe(requestDuration.cell(route, m), seconds);
    },
    backendRequest(backend, route, status, seconds) {
      if (gone.has(route) || goneBackends.has(backend)) return;
      backendRequests.cell(backend, route, String(status)).value++;
      backendDuration.observe(backendDuration.cell(backend, route), seconds);
    },
    backendHealth(backend, healthy) {
      knownBackends.add(backend);
      backendHealth.set({ backend }, healthy ? 1 : 0);
    },
    routesConfigured(routes) {
      const keep = new Set([...routes, NO_ROUTE, PLAIN_HTTP_ROUTE]);
      // Requests still in flight on a removed route would re-create its series when they end:
      // what they report is dropped. Kept across later reloads (a WebSocket session outlasts
      // several) until the route comes back.
      const removed = new Set([...configured].filter((r) => !keep.has(r)));
      configured = new Set(routes);
      gone = stillGone(gone, removed, keep);
      const metrics = [
        requests,
        requestDuration,
        backendRequests,
        backendDuration,
        rateLimitHits,
        cacheResults,
        cacheRefreshes,
        cachePurges,
        cachePurged,
        forwardAuthChecks,
        accessDenied,
        retries,
        wsTooBig,
        bodyFailures,
        mirrors,
      ] as unknown as Prunable[];
      return Promise.all(metrics.map((m) => pruneRoutes(m, keep, gone))).then(() => {});
    },
    backendsConfigured(backends) {
      const wanted = new Set(backends);
      // As for routes: requests still in flight to a removed target would bring its series back.
      const removed = new Set([...knownBackends].filter((b) => !wanted.has(b)));
      goneBackends = stillGone(goneBackends, removed, wanted);
      for (const b of knownBackends) {
        if (!wanted.has(b)) {
          knownBackends.delete(b);
          backendHealth.remove({ backend: b });
          ejections.remove({ backend: b });
        }
      }
      for (const reason of SHED_REASONS) {
        for (const b of removed) sheds.remove({ backend: b, reason });
      }
      // Targets a reload removed (new pod addresses on every deploy…) take their series along,
      // so label sets stay bounded by the live config.
      backendRequests.retain("backend", wanted);
      backendDuration.retain("backend", wanted);
      for (const b of wanted) {
        if (knownBackends.has(b)) continue;
        knownBackends.add(b);
        backendHealth.set({ backend: b }, 1);
      }
    },
    rateLimit(route, action) {
      if (gone.has(route)) return;
      rateLimitHits.inc({ route, action });
    },
    cache(route, result) {
      if (gone.has(route)) return;
      cacheResults.inc({ route, result });
    },
    cacheRefresh(route, result) {
      if (gone.has(route)) return;
      cacheRefreshes.inc({ route, result });
    },
    cachePurge(route, kind, entries) {
      if (gone.has(route)) return;
      cachePurges.inc({ route, kind });
      cachePurged.inc({ route }, entries);
    },
    forwardAuth(route, outcome) {
      if (gone.has(route)) return;
      forwardAuthChecks.inc({ route, outcome });
    },
    accessDenied(route, reason) {
      if (gone.has(route)) return;
      accessDenied.inc({ route, reason });
    },
    retry(route, reason) {
      if (gone.has(route)) return;
      retries.inc({ route, reason });
    },
    ejection(backend) {
      ejections.inc({ backend });
    },
    upstreamShed(backend, reason) {
      if (goneBackends.has(backend)) return;
      sheds.inc({ backend, reason });
    },
    connectionOpened(protocol) {
      active[protocol]++;
      if (protocol === "websocket") wsTotal.inc();
    },
    connectionClosed(protocol) {
      active[protocol]--;
    },
    connectionRefused(limit) {
      refused.inc({ limit });
    },
    tlsClientRefused(reason) {
      tlsRefused.inc({ reason });
    },
    websocketMessageTooBig(route) {
      if (gone.has(route)) return;
      wsTooBig.inc({ route });
    },
    responseBodyFailed(route, kind) {
      if (gone.has(route)) return;
      bodyFailures.inc({ route, kind });
    },
    mirror(route, result) {
      if (gone.has(route)) return;
      mirrors.inc({ route, result });
    },
    configReload({ ok, version, at }) {
      reloads.inc({ result: ok ? "success" : "failure" });
      lastReloadOk.set(ok ? 1 : 0);
      if (ok) {
        lastReloadTime.set(at / 1000);
        configVersion.set(version);
      }
    },
    configRollback() {
      rollbacks.inc();
    },
    certificateExpiry(name, notAfterMs, more = []) {
      // Only the certificates served now: a stale series would keep expiry alerts firing.
      certExpiry.reset();
      for (const c of [{ name, notAfterMs }, ...more]) {
        if (c.notAfterMs !== null) certExpiry.set({ name: c.name }, c.notAfterMs / 1000);
      }
      setOdExpiry();
    },
    onDemandAsk(result) {
      odAsks.inc({ result });
    },
    onDemandOrder(result) {
      odOrders.inc({ result });
    },
    onDemandCertificates(certs) {
      // Only the names held: a dropped name's series goes (the label set is max_certificates).
      for (const c of odExpiry) certExpiry.remove({ name: `on_demand:${c.name}` });
      odExpiry = certs;
      setOdExpiry();
      odCerts.set(certs.length);
    },
  };
}

/**
 * Whether a request URL's path is `path` as the routes read it (normalized: `//x`, `/%78` and
 * `/a/../x` are `/x`), else a spelling of it went to a route, and that route's upstream. Most URLs
 * are told apart without parsing: they hold neither the path's last segment nor an escape.
 */
function isMetricsPath(url: string, path: string): boolean {
  // An escape in the query spells no path: most requests with one are not parsed either.
  const pct = url.indexOf("%");
  const query = pct < 0 ? -1 : url.indexOf("?");
  const escaped = pct >= 0 && (query < 0 || pct < query);
  if (!escaped && !url.includes(path.slice(path.lastIndexOf("/") + 1))) return false;
  const p = new URL(url).pathname;
  if (p === path) return true;
  const n = normalizePath(p);
  return n.ok && n.path === path;
}

/**
 * Serves `GET <metrics.path>` (and HEAD: the same head, RFC 9110 §9.3.2) on a traffic listener
 * when `metrics.on_main_listener` is set (read per request: it follows reloads); everything else
 * goes to `handler`. `onRequest` sees every
 * request (the memory reducer's count).
 */
export function withMetricsEndpoint(handler: Handler, o: {
  config: () => { on_main_listener: boolean; path: string };
  text: () => Promise<string>;
  contentType?: string;
  onRequest?: () => void;
  /** A refusal for a client the top-level `ip_access` keeps out, else undefined. */
  refuse?: (req: Request, info: ClientInfo) => Response | undefined;
}): Handler {
  return (req, info) => {
    o.onRequest?.();
    const m = o.config();
    if (
      m.on_main_listener && (req.method === "GET" || req.method === "HEAD") &&
      isMetricsPath(req.url, m.path)
    ) {
      const refused = o.refuse?.(req, info);
      if (refused) return Promise.resolve(refused);
      return o.text().then((t) => {
        // As on the admin listener: a CDN in front of the traffic port must not keep a copy.
        const headers = {
          "content-type": o.contentType ?? "text/plain",
          "cache-control": "no-store",
        };
        if (req.method !== "HEAD") return new Response(t, { headers });
        // Without it, a null body goes out as `content-length: 0`.
        const length = String(new TextEncoder().encode(t).byteLength);
        return new Response(null, { headers: { ...headers, "content-length": length } });
      });
    }
    return handler(req, info);
  };
}
