// What `GET /status` and the status page show, and where it comes from: the snapshot (routes,
// targets), a recorder that sits on the Metrics port and remembers each backend's last health
// change with its reason and each certificate's expiry, and the server's reload history.

import { bandwidthText } from "../domain/bandwidth.ts";
import { isUnixTarget, originName, unixOrigin } from "../domain/upstream_origin.ts";
import { X509Certificate } from "node:crypto";
import { listFilesOf } from "../config/validate_access.ts";
import type { Metrics } from "../ports.ts";
import type { Snapshot } from "../proxy/snapshot.ts";
import { parseRouteKey } from "../domain/router.ts";
import { rampFactor } from "../domain/balancer.ts";
import { formatListenAddr } from "../config/listen.ts";
import type { AcmeStatus } from "./acme.ts";
import type { OnDemandStatus } from "./acme_on_demand.ts";
import { redactSecrets } from "../config/secret_names.ts";
import type { EngineCounts } from "./http_serve.ts";

/** One upstream target and its health as last reported. */
export interface UpstreamStatus {
  url: string;
  routes: string[];
  /** null when nothing is known; configured targets start up (as the balancer treats them). */
  healthy: boolean | null;
  /** When the current state began (ms since the epoch), if known. */
  since: number | null;
  /** Why the last state change happened, e.g. "3 failed probes: connection refused". */
  reason: string | null;
  /** Requests in flight to this target right now (from the balancer's registry). */
  inFlight: number | null;
  /** Smoothed response-head latency in ms (EWMA), 0 before the first response. */
  latencyMs: number | null;
  /** Milliseconds left in a passive ejection, 0 when not ejected. */
  ejectedForMs: number;
  /** Drained through the admin API: no new requests (`inFlight` counts down those it has). */
  drained: boolean;
  /** Routes whose `slow_start` still ramps this target up: the share of its weight it takes. */
  slowStart: { route: string; weightPercent: number }[];
  /** The connection pool of this target's origin (shared by targets of one origin), if known. */
  pool: TargetPool | null;
}

/** An upstream origin's connection pool in this process, summed over its pool keys. */
export interface TargetPool {
  /** HTTP/1.1 connections carrying a request (or being opened), and parked ones. */
  busy: number;
  idle: number;
  /** Requests waiting for a connection or, over HTTP/2, a request slot. */
  waiting: number;
  /** HTTP/1.1 connections opened and requests sent on a reused one, since start. */
  opened: number;
  reused: number;
  /** HTTP/2 requests in flight (fetch does not show its connections); null: not h2. */
  h2Streams: number | null;
}

/** What the upstream client reports per pool key (upstream_client.ts's UpstreamPoolStats). */
export type PoolRow = TargetPool & { origin: string };

/** Each target's pool figures: the rows of its URL's origin summed (zero when none). */
export function targetPools(
  targets: Iterable<string>,
  rows: readonly PoolRow[],
): Map<string, TargetPool> {
  const byOrigin = new Map<string, TargetPool>();
  for (const r of rows) {
    const p = byOrigin.get(r.origin);
    if (!p) {
      const { origin: _, ...figures } = r;
      byOrigin.set(r.origin, figures);
      continue;
    }
    p.busy += r.busy;
    p.idle += r.idle;
    p.waiting += r.waiting;
    p.opened += r.opened;
    p.reused += r.reused;
    if (r.h2Streams !== null) p.h2Streams = (p.h2Streams ?? 0) + r.h2Streams;
  }
  const out = new Map<string, TargetPool>();
  for (const t of targets) {
    let origin: string;
    try {
      origin = isUnixTarget(t) ? originName(unixOrigin(t)) : httpOrigin(new URL(t));
    } catch {
      continue;
    }
    const p = byOrigin.get(origin);
    out.set(
      t,
      p ? { ...p } : { busy: 0, idle: 0, waiting: 0, opened: 0, reused: 0, h2Streams: null },
    );
  }
  return out;
}

/** The http(s) origin of a target URL: a `websocket` route's ws:// or wss:// one is its pool's. */
function httpOrigin(u: URL): string {
  if (u.protocol === "ws:") return `http://${u.host}`;
  if (u.protocol === "wss:") return `https://${u.host}`;
  return u.origin;
}

/** What the balancer's registry knows about a target (a subset of its `list()` rows). */
export interface UpstreamView {
  id: string;
  inFlight: number;
  latencyMs: number;
  ejectedForMs: number;
  /** How long ago it came back from down or an ejection, or was added by a reload; null: never. */
  backForMs?: number | null;
  drained?: boolean;
}

/** One route as configured. */
export interface RouteStatus {
  id: string;
  type: string;
  prefix: string;
  hosts: string[];
  targets: string[];
  rateLimit: string | null;
  /** ip_access and basic_auth in words ("allow 2, deny 1; basic_auth: 3 users"), null: none. */
  access: string | null;
}

/** The JSON of `GET /status`. */
export interface StatusJson {
  prox: { version: string; deno: string; pid: number; startedAt: number; uptimeSeconds: number };
  ready: boolean;
  draining: boolean;
  config: {
    version: number;
    lastReload: {
      ok: boolean;
      at: number;
      version: number;
      errors: string[];
      warnings: string[];
    } | null;
  };
  listeners: ListenerView[];
  routes: RouteStatus[];
  upstreams: UpstreamStatus[];
  /** Keys held by each route's rate limiter (the memory it uses), when known. */
  limiterKeys: Record<string, number>;
  /** Bytes and responses held by each route's response cache. */
  caches: Record<string, { bytes: number; entries: number }>;
  certificates: { name: string; notAfter: number; daysLeft: number }[];
  /** ACME's state (ordering, failing with its last error, next try), null without ACME. */
  acme: AcmeStatus | null;
  /**
   * `tls.acme.on_demand`: names held (expiry, last use), names backing off (next try), in flight;
   * each list the first 100 (most recent first) beside its total. null without on_demand.
   */
  onDemand: OnDemandStatus | null;
}

/** Records health changes and certificate expiry while passing every call to `inner`. */
export interface StatusRecorder {
  readonly metrics: Metrics;
  health(url: string): { healthy: boolean; since: number; reason: string | null } | undefined;
  certificates(): Map<string, number>;
}

const ASSUMED = "configured; up until a health check says otherwise";

/** Wraps a Metrics so the status page sees what the metrics see; bounded by configured targets. */
export function createStatusRecorder(inner: Metrics, opts: { now: () => number }): StatusRecorder {
  const health = new Map<string, { healthy: boolean; since: number; reason: string | null }>();
  const certs = new Map<string, number>();
  const configured = new Set<string>();
  const metrics: Metrics = {
    ...inner,
    backendHealth(backend, healthy, reason) {
      inner.backendHealth(backend, healthy, reason);
      const prev = health.get(backend);
      const same = prev?.healthy === healthy;
      if (same && prev?.reason !== ASSUMED) {
        // Still down for another cause: the reason follows it, `since` stays.
        if (!healthy && reason !== undefined) prev!.reason = reason;
        return;
      }
      if (!prev && !configured.has(backend) && health.size >= 10_000) return;
      const since = same ? prev!.since : opts.now();
      health.set(backend, { healthy, since, reason: reason ?? null });
    },
    backendsConfigured(backends) {
      inner.backendsConfigured(backends);
      configured.clear();
      for (const b of backends) configured.add(b);
      for (const b of health.keys()) if (!configured.has(b)) health.delete(b);
      for (const b of backends) {
        if (!health.has(b)) health.set(b, { healthy: true, since: opts.now(), reason: ASSUMED });
      }
    },
    certificateExpiry(name, notAfterMs, more = []) {
      inner.certificateExpiry(name, notAfterMs, more);
      certs.clear();
      for (const c of [{ name, notAfterMs }, ...more]) {
        if (c.notAfterMs !== null) certs.set(c.name, c.notAfterMs);
      }
    },
  };
  return { metrics, health: (url) => health.get(url), certificates: () => certs };
}

/**
 * The earliest notAfter of the certificates in a PEM chain (ms), or null when none can be read.
 * The file may hold the key first (as the listener accepts): only CERTIFICATE blocks are read.
 */
export function certificateNotAfter(pem: string): number | null {
  // The earliest of the chain: an expired intermediate breaks clients as an expired leaf does.
  const blocks = pem.match(
    /-----BEGIN ([A-Z0-9 ]*)CERTIFICATE-----[\s\S]*?-----END \1CERTIFICATE-----/g,
  ) ?? [pem];
  let earliest: number | null = null;
  for (const block of blocks) {
    try {
      const t = Date.parse(new X509Certificate(block).validTo);
      if (Number.isFinite(t) && (earliest === null || t < earliest)) earliest = t;
    } catch { /* not a certificate: skipped */ }
  }
  return earliest;
}

function describeLimit(route: Snapshot["config"]["routes"][string]): string | null {
  const all = [...(route.rate_limit ? [route.rate_limit] : []), ...(route.rate_limits ?? [])];
  const parts = all.map((r) => `${r.requests} per ${r.period / 1000}s by ${r.by} (${r.algorithm})`);
  const c = route.concurrency_limit;
  if (c) parts.push(`at most ${c.max} in progress at once by ${c.by}`);
  const bw = "bandwidth" in route ? route.bandwidth : undefined;
  if (bw) {
    parts.push(`bandwidth ${bandwidthText(bw)}${bw.per === "response" ? "" : `, per ${bw.per}`}`);
  }
  return parts.length === 0 ? null : parts.join("; ");
}

/** A route's access control in words: its (or the top level's) ip_access, basic_auth, jwt_auth, cors. */
function describeAccess(
  config: Snapshot["config"],
  r: { id: string; compiled?: { basicAuth: { users: ReadonlyMap<string, string> } | null } },
): string | null {
  const jwt = config.routes[r.id].jwt_auth;
  const own = config.routes[r.id].ip_access;
  const lists = own ?? config.ip_access;
  const parts: string[] = [];
  const files = listFilesOf(lists);
  if (lists && (lists.allow.length > 0 || lists.deny.length > 0 || files.length > 0)) {
    parts.push(
      `ip_access${
        own ? "" : " (top level)"
      }: allow ${lists.allow.length}, deny ${lists.deny.length}${
        files.length > 0 ? ` (and from ${files.join(", ")})` : ""
      }`,
    );
  }
  const auth = r.compiled?.basicAuth;
  if (auth) parts.push(`basic_auth: ${auth.users.size} user${auth.users.size === 1 ? "" : "s"}`);
  if (jwt) {
    // Where its keys come from (never the secret itself, nor a password or key in the URL: as
    // redacted as in /config).
    const jwks = jwt.jwks_url === undefined ? undefined : String(redactSecrets(jwt.jwks_url));
    parts.push(`jwt_auth: ${jwks ?? jwt.key_file ?? jwt.secret_file ?? `$${jwt.secret_env}`}`);
  }
  const route = config.routes[r.id];
  const cors = "cors" in route ? route.cors : undefined;
  if (cors) {
    parts.push(
      `cors: ${
        [...cors.allow_origins, ...(cors.allow_origin_regex ?? []).map((r) => `/${r}/`)].join(", ")
      }${cors.allow_credentials ? " (credentials)" : ""}`,
    );
  }
  return parts.length > 0 ? parts.join("; ") : null;
}

/** One listener line of /status. */
export interface ListenerView {
  name: string;
  addr: string;
  tls: boolean;
  /**
   * On Prox's own HTTP/1.1 engine (`protocols.http1_engine: prox`, the default without TLS):
   * requests it served, connections relayed to Deno.serve, and the process's turns.
   */
  http1Engine?: {
    served: number;
    relayed: number;
    connections: number;
    readBufferBytes: number;
    turns: { held: number; waiting: number };
  };
  /** On Prox's own HTTP/2 engine (TLS listeners, and h2c): requests, connections, streams open. */
  http2Engine?: { served: number; connections: number; streams: number; bufferBytes: number };
}

/** The listener lines of /status: TCP listeners by name, HTTP/3 beside `main`, the admin one. */
export function listenerViews(
  named: readonly (readonly [string, {
    hostname: string;
    port: number;
    tls: boolean;
    counts?: EngineCounts;
  }])[],
  o: { h3: { port: number } | null; admin: { hostname: string; port: number } | null },
): ListenerView[] {
  const views: ListenerView[] = named.map(([name, l]) => {
    const view: ListenerView = { name, addr: formatListenAddr(l), tls: l.tls };
    // Prox's own HTTP/1.1 engine: what it served itself and the connections it relayed.
    if (l.counts) {
      const c = l.counts;
      view.http1Engine = {
        served: c.served,
        relayed: c.relayed,
        connections: c.connections,
        readBufferBytes: c.readBufferBytes,
        turns: { held: c.turnsHeld, waiting: c.turnsWaiting },
      };
      view.http2Engine = {
        served: c.http2Served,
        connections: c.http2Connections,
        streams: c.http2Streams,
        bufferBytes: c.http2BufferBytes,
      };
    }
    return view;
  });
  const main = named.find(([name]) => name === "main")?.[1];
  if (o.h3) {
    views.push({
      name: "http3 (udp)",
      addr: formatListenAddr({ hostname: main?.hostname ?? "", port: o.h3.port }),
      tls: true,
    });
  }
  if (o.admin) {
    views.push({ name: "admin", addr: formatListenAddr(o.admin), tls: false });
  }
  return views;
}

/** Assembles the status JSON from the snapshot and the runtime views. */
export function buildStatus(
  snapshot: Snapshot,
  opts: {
    recorder: StatusRecorder;
    now: number;
    startedAt: number;
    version: string;
    ready: boolean;
    draining: boolean;
    lastReload: { ok: boolean; at: number; version: number; issues: readonly unknown[] } | null;
    listeners: ListenerView[];
    limiterKeys?: Record<string, number>;
    caches?: Record<string, { bytes: number; entries: number }>;
    upstreamViews?: readonly UpstreamView[];
    /** The upstream client's pools; absent: `pool` is null (an injected client). */
    pools?: readonly PoolRow[];
    acme?: AcmeStatus | null;
    onDemand?: OnDemandStatus | null;
  },
): StatusJson {
  const views = new Map((opts.upstreamViews ?? []).map((v) => [v.id, v]));
  const routes: RouteStatus[] = [];
  const byTarget = new Map<string, string[]>();
  const compiled = new Map(snapshot.router.entries.map((e) => [e.value.id, e.value]));
  for (const [id, cfg] of Object.entries(snapshot.config.routes)) {
    const targets = cfg.type === "proxy" || cfg.type === "websocket"
      ? [cfg.target]
      : cfg.type === "load_balance"
      ? cfg.targets.map((t) => typeof t === "string" ? t : t.url)
      : [];
    const key = parseRouteKey(id);
    routes.push({
      id,
      type: cfg.type,
      prefix: key.prefix,
      hosts: [...(key.host ? [key.host] : []), ...(cfg.hosts ?? [])],
      targets,
      rateLimit: describeLimit(cfg),
      access: describeAccess(snapshot.config, { id, compiled: compiled.get(id) }),
    });
    for (const t of targets) byTarget.set(t, [...(byTarget.get(t) ?? []), id]);
  }
  /** A target's ramp on each route with slow start that names it, while below full weight. */
  const ramps = (rs: string[], backForMs: number | null | undefined) => {
    if (backForMs === null || backForMs === undefined) return [];
    return rs.flatMap((route) => {
      const cfg = snapshot.config.routes[route];
      if (cfg.type !== "load_balance" || !cfg.slow_start || cfg.strategy === "first") return [];
      const f = rampFactor(backForMs, cfg.slow_start);
      return f < 1 ? [{ route, weightPercent: Math.floor(f * 100) }] : [];
    });
  };
  const pools = opts.pools ? targetPools(byTarget.keys(), opts.pools) : new Map();
  const upstreams = [...byTarget].map(([url, rs]): UpstreamStatus => {
    const h = opts.recorder.health(url);
    const v = views.get(url);
    return {
      url,
      routes: rs,
      healthy: h?.healthy ?? null,
      since: h?.since ?? null,
      reason: h?.reason ?? null,
      inFlight: v?.inFlight ?? null,
      latencyMs: v ? Math.round(v.latencyMs * 10) / 10 : null,
      ejectedForMs: v?.ejectedForMs ?? 0,
      drained: v?.drained ?? false,
      slowStart: ramps(rs, v?.backForMs),
      pool: pools.get(url) ?? null,
    };
  });
  const certificates = [...opts.recorder.certificates()].map(([name, notAfter]) => ({
    name,
    notAfter,
    daysLeft: Math.floor((notAfter - opts.now) / 86_400_000),
  }));
  const r = opts.lastReload;
  return {
    prox: {
      version: opts.version,
      deno: Deno.version.deno,
      pid: Deno.pid,
      startedAt: opts.startedAt,
      uptimeSeconds: Math.floor((opts.now - opts.startedAt) / 1000),
    },
    ready: opts.ready,
    draining: opts.draining,
    config: {
      version: snapshot.version,
      lastReload: r
        ? {
          ok: r.ok,
          at: r.at,
          version: r.version,
          // A successful reload's warnings are no errors (they were listed as such).
          errors: r.issues.filter((i) => !isWarning(i)).map(issueText),
          warnings: r.issues.filter(isWarning).map(issueText),
        }
        : null,
    },
    listeners: opts.listeners,
    routes,
    upstreams,
    limiterKeys: opts.limiterKeys ?? {},
    caches: opts.caches ?? {},
    certificates,
    acme: opts.acme ?? null,
    onDemand: opts.onDemand ?? null,
  };
}

function isWarning(i: unknown): boolean {
  return (i as { severity?: string } | null)?.severity === "warning";
}

function issueText(i: unknown): string {
  if (i && typeof i === "object" && "message" in i) {
    const o = i as { file?: string; line?: number; col?: number; path?: string; message: string };
    const where = o.file ? `${o.file}:${o.line ?? 0}:${o.col ?? 0}: ` : "";
    return `${where}${o.path ? `${o.path}: ` : ""}${o.message}`;
  }
  return String(i);
}
