// `prox top`'s figures: two scrapes of a running Prox (its `/metrics` samples and `/status`
// JSON) some seconds apart become rates, status classes, latency estimates and health rows.

import { bucketQuantile } from "./prom_text.ts";
import type { PromSample } from "./prom_text.ts";

/** The part of the admin `GET /status` JSON that top reads (src/adapters/admin_status.ts). */
export interface TopStatus {
  prox: { version: string; pid: number; uptimeSeconds: number };
  ready: boolean;
  draining: boolean;
  config: {
    version: number;
    lastReload: { ok: boolean; at: number; version: number; errors: string[] } | null;
  };
  upstreams: {
    url: string;
    routes: string[];
    healthy: boolean | null;
    inFlight: number | null;
    latencyMs: number | null;
    ejectedForMs: number;
  }[];
  certificates: { name: string; notAfter: number; daysLeft: number }[];
}

/** One poll of the admin API. */
export interface TopPoll {
  /** When it was taken (ms since the epoch). */
  at: number;
  samples: PromSample[];
  status: TopStatus;
}

/** Requests, by status class, per second over the interval. */
export interface Classes {
  "2xx": number;
  "3xx": number;
  "4xx": number;
  "5xx": number;
}

/** A route's figures over the interval (rates per second, latency in ms). */
export interface TopRoute {
  route: string;
  requests: number;
  perSecond: number;
  classes: Classes;
  /** Estimated from the duration histogram's buckets; null without requests. */
  p50Ms: number | null;
  p95Ms: number | null;
  rateLimited: number;
}

/** An upstream origin's connection pool: now, and over the interval. */
export interface TopPool {
  /** HTTP/1.1 connections carrying a request, and parked for reuse. */
  busy: number;
  idle: number;
  /** Requests waiting for a connection (or an HTTP/2 request slot). */
  waiting: number;
  /** Connections opened per second (each leaves a TIME_WAIT socket once closed). */
  openedPerSecond: number;
  /** Requests on a reused connection over all HTTP/1.1 requests; null: none in the interval. */
  reuseRatio: number | null;
  /** HTTP/2 requests in flight; null when the origin does not speak h2. */
  h2Streams: number | null;
}

/** What `prox top` shows and `--format json` prints. */
export interface TopSnapshot {
  version: string;
  pid: number;
  uptimeSeconds: number;
  ready: boolean;
  draining: boolean;
  config: {
    version: number;
    lastReload: { ok: boolean; agoSeconds: number; errors: string[] } | null;
  };
  /** Seconds between the two polls the rates come from. */
  intervalSeconds: number;
  /** Requests in progress by protocol (Deno exposes no connection counts; see the README). */
  connections: Record<string, number>;
  total: { requests: number; perSecond: number; classes: Classes; rateLimited: number };
  /** Sorted by requests per second, busiest first. */
  routes: TopRoute[];
  upstreams: {
    url: string;
    healthy: boolean | null;
    perSecond: number;
    inFlight: number | null;
    latencyMs: number | null;
    ejectedForSeconds: number;
    /** Its origin's connection pool, summed over workers; null when /metrics has none. */
    pool: TopPool | null;
  }[];
  /** Response cache hits (hit and updating) over cache lookups in the interval; null: none. */
  cache: { lookups: number; hitRatio: number | null };
  certificates: { name: string; daysLeft: number }[];
  /** Says that p50/p95 are estimates. */
  note: string;
}

/** The metric families top needs from `/metrics`, to parse nothing else. */
export const TOP_METRICS = new Set([
  "prox_requests_total",
  "prox_request_duration_seconds_bucket",
  "prox_backend_requests_total",
  "prox_active_connections",
  "prox_rate_limit_hits_total",
  "prox_cache_requests_total",
  "prox_build_info",
  "process_start_time_seconds",
  "prox_upstream_connections",
  "prox_upstream_waiting",
  "prox_upstream_connections_opened_total",
  "prox_upstream_connections_reused_total",
  "prox_upstream_h2_streams",
]);

/** A counter's increase between polls; a smaller value means Prox restarted (counts from 0). */
function increase(now: number, before: number | undefined): number {
  if (before === undefined || now < before) return now;
  return now - before;
}

/**
 * `prev`'s samples, plus, for a worker (`workers: N`) that the previous scrape missed (it did not
 * answer in time) though it ran already, its current samples: no increase this once, rather than
 * its whole count since start in one interval. A worker started since counts from 0.
 */
function withMissedWorkers(prev: TopPoll, cur: TopPoll): PromSample[] {
  const seen = new Set<string | undefined>(prev.samples.map((s) => s.labels.worker));
  if (prev.samples.length === 0) return prev.samples;
  const missed = new Set<string>();
  for (const s of cur.samples) {
    const w = s.labels.worker;
    if (s.name !== "process_start_time_seconds" || w === undefined || seen.has(w)) continue;
    if (s.value * 1000 < prev.at) missed.add(w);
  }
  if (missed.size === 0) return prev.samples;
  return [...prev.samples, ...cur.samples.filter((s) => missed.has(s.labels.worker ?? ""))];
}

/** Label values of `keys` (every other label, e.g. `method`, `worker`, summed away). */
function keyOf(s: PromSample, keys: string[]): string {
  return JSON.stringify(keys.map((k) => s.labels[k] ?? ""));
}

/** Per-series increases of counter `name` summed by `keys`. */
function increases(prev: PromSample[], cur: PromSample[], name: string, keys: string[]) {
  const full = (s: PromSample) => JSON.stringify(Object.entries(s.labels).sort());
  const before = new Map<string, number>();
  for (const s of prev) if (s.name === name) before.set(full(s), s.value);
  const sums = new Map<string, { labels: Record<string, string>; value: number }>();
  for (const s of cur) {
    if (s.name !== name) continue;
    const k = keyOf(s, keys);
    const row = sums.get(k) ?? { labels: s.labels, value: 0 };
    row.value += increase(s.value, before.get(full(s)));
    sums.set(k, row);
  }
  return [...sums.values()];
}

function classOf(status: string): keyof Classes | null {
  const c = `${status[0]}xx`;
  return c === "2xx" || c === "3xx" || c === "4xx" || c === "5xx" ? c : null;
}

const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

/** Computes what changed between `prev` and `cur` (two polls of the same Prox). */
export function topSnapshot(prevPoll: TopPoll, cur: TopPoll): TopSnapshot {
  const prev = { ...prevPoll, samples: withMissedWorkers(prevPoll, cur) };
  const secs = Math.max((cur.at - prev.at) / 1000, 0.001);
  const rate = (n: number) => round(n / secs);
  const routes = new Map<string, TopRoute>();
  const route = (r: string) => {
    let row = routes.get(r);
    if (!row) {
      row = {
        route: r,
        requests: 0,
        perSecond: 0,
        classes: { "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 },
        p50Ms: null,
        p95Ms: null,
        rateLimited: 0,
      };
      routes.set(r, row);
    }
    return row;
  };
  const total = {
    requests: 0,
    perSecond: 0,
    classes: { "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 },
    rateLimited: 0,
  };
  for (
    const s of increases(prev.samples, cur.samples, "prox_requests_total", ["route", "status"])
  ) {
    const row = route(s.labels.route ?? "");
    row.requests += s.value;
    total.requests += s.value;
    const c = classOf(s.labels.status ?? "");
    if (c) {
      row.classes[c] += s.value;
      total.classes[c] += s.value;
    }
  }
  const buckets = new Map<string, [number, number][]>();
  const bucketRows = increases(
    prev.samples,
    cur.samples,
    "prox_request_duration_seconds_bucket",
    ["route", "le"],
  );
  for (const b of bucketRows) {
    const list = buckets.get(b.labels.route ?? "") ?? [];
    list.push([Number(b.labels.le === "+Inf" ? Infinity : b.labels.le), b.value]);
    buckets.set(b.labels.route ?? "", list);
  }
  for (const [r, list] of buckets) {
    const p50 = bucketQuantile(0.5, list);
    const p95 = bucketQuantile(0.95, list);
    if (p50 === null) continue;
    const row = route(r);
    row.p50Ms = round(p50 * 1000, 1);
    row.p95Ms = p95 === null ? null : round(p95 * 1000, 1);
  }
  const limited = increases(prev.samples, cur.samples, "prox_rate_limit_hits_total", [
    "route",
    "action",
  ]);
  for (const s of limited) {
    if (s.labels.action !== "limited") continue;
    route(s.labels.route ?? "").rateLimited += s.value;
    total.rateLimited += s.value;
  }
  for (const row of routes.values()) {
    row.perSecond = rate(row.requests);
    for (const c of Object.keys(row.classes) as (keyof Classes)[]) {
      row.classes[c] = rate(row.classes[c]);
    }
    row.rateLimited = rate(row.rateLimited);
  }
  total.perSecond = rate(total.requests);
  for (const c of Object.keys(total.classes) as (keyof Classes)[]) {
    total.classes[c] = rate(total.classes[c]);
  }
  total.rateLimited = rate(total.rateLimited);

  const backend = new Map<string, number>();
  for (
    const s of increases(prev.samples, cur.samples, "prox_backend_requests_total", ["backend"])
  ) {
    backend.set(s.labels.backend ?? "", s.value);
  }
  const connections: Record<string, number> = {};
  for (const s of cur.samples) {
    if (s.name !== "prox_active_connections") continue;
    const p = s.labels.protocol ?? "";
    connections[p] = (connections[p] ?? 0) + s.value;
  }
  const pools = poolsOf(prev.samples, cur.samples, secs);
  let lookups = 0;
  let hits = 0;
  for (const s of increases(prev.samples, cur.samples, "prox_cache_requests_total", ["result"])) {
    lookups += s.value;
    if (s.labels.result === "hit" || s.labels.result === "updating") hits += s.value;
  }
  const st = cur.status;
  const last = st.config.lastReload;
  return {
    version: st.prox.version,
    pid: st.prox.pid,
    uptimeSeconds: st.prox.uptimeSeconds,
    ready: st.ready,
    draining: st.draining,
    config: {
      version: st.config.version,
      lastReload: last && {
        ok: last.ok,
        agoSeconds: Math.max(0, Math.round((cur.at - last.at) / 1000)),
        errors: last.errors,
      },
    },
    intervalSeconds: round(secs, 3),
    connections,
    total,
    routes: [...routes.values()].sort((a, b) =>
      b.perSecond - a.perSecond || a.route.localeCompare(b.route)
    ),
    upstreams: st.upstreams.map((u) => ({
      url: u.url,
      healthy: u.healthy,
      perSecond: rate(backend.get(u.url) ?? 0),
      inFlight: u.inFlight,
      latencyMs: u.latencyMs === null ? null : round(u.latencyMs, 1),
      ejectedForSeconds: Math.ceil(u.ejectedForMs / 1000),
      pool: pools?.get(u.url) ?? null,
    })).sort((a, b) => b.perSecond - a.perSecond || a.url.localeCompare(b.url)),
    cache: { lookups, hitRatio: lookups > 0 ? round(hits / lookups, 3) : null },
    certificates: st.certificates.map((c) => ({ name: c.name, daysLeft: c.daysLeft }))
      .sort((a, b) => a.daysLeft - b.daysLeft),
    note: "p50/p95 are estimates from the histogram buckets over the interval",
  };
}

/**
 * Each backend's pool from the `prox_upstream_*` series (workers summed); null when the scrape
 * has none (an older Prox, or one embedded with its own upstream client).
 */
function poolsOf(
  prev: PromSample[],
  cur: PromSample[],
  secs: number,
): Map<string, TopPool> | null {
  const pools = new Map<string, TopPool>();
  const pool = (backend: string) => {
    let p = pools.get(backend);
    if (!p) {
      p = { busy: 0, idle: 0, waiting: 0, openedPerSecond: 0, reuseRatio: null, h2Streams: null };
      pools.set(backend, p);
    }
    return p;
  };
  for (const s of cur) {
    const backend = s.labels.backend ?? "";
    if (s.name === "prox_upstream_connections") {
      if (s.labels.state === "busy") pool(backend).busy += s.value;
      else if (s.labels.state === "idle") pool(backend).idle += s.value;
    } else if (s.name === "prox_upstream_waiting") pool(backend).waiting += s.value;
    else if (s.name === "prox_upstream_h2_streams") {
      const p = pool(backend);
      p.h2Streams = (p.h2Streams ?? 0) + s.value;
    }
  }
  if (pools.size === 0) return null;
  const opened = new Map<string, number>();
  for (
    const s of increases(prev, cur, "prox_upstream_connections_opened_total", ["backend"])
  ) {
    opened.set(s.labels.backend ?? "", s.value);
    pool(s.labels.backend ?? "").openedPerSecond = round(s.value / secs);
  }
  for (
    const s of increases(prev, cur, "prox_upstream_connections_reused_total", ["backend"])
  ) {
    const all = s.value + (opened.get(s.labels.backend ?? "") ?? 0);
    if (all > 0) pool(s.labels.backend ?? "").reuseRatio = round(s.value / all, 3);
  }
  return pools;
}

/** Checks that `/status` JSON looks like Prox's; returns what is missing, or null. */
export function notProxStatus(json: unknown): string | null {
  const j = json as Partial<TopStatus> | null;
  if (typeof j !== "object" || j === null) return "it is not a JSON object";
  if (typeof j.prox?.version !== "string") return "it has no prox.version";
  if (typeof j.config?.version !== "number") return "it has no config.version";
  if (!Array.isArray(j.upstreams) || !Array.isArray(j.certificates)) {
    return "it has no upstreams or certificates";
  }
  return null;
}
