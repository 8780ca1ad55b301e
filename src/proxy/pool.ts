// A route's upstream pool, resolved once per snapshot: targets with weights and backup flags, the
// policy's selector, and the retry and passive-health settings after defaults. Cached per
// CompiledRoute; the registry keeps the targets' runtime state across reloads, and the selector of a
// pool whose strategy and targets did not change.

import { createHmac } from "node:crypto";
import { createSelector, hash32 } from "../domain/balancer.ts";
import type { Policy, PoolTarget, Selector } from "../domain/balancer.ts";
import { statusMatcher } from "../domain/health.ts";
import type { PassivePolicy } from "../domain/health.ts";
import type { Config } from "../config/schema.ts";
import type {
  LoadBalanceRouteConfig,
  ProxyRouteConfig,
  StickyConfig,
  WebSocketRouteConfig,
} from "../config/schema_route.ts";
import type { CompiledRoute } from "./snapshot.ts";
import type { UpstreamRegistry } from "./state.ts";

/** Retry settings after defaults. */
export interface RetryPolicy {
  /** Retries after the first attempt. */
  attempts: number;
  perTryMs?: number;
  budgetPercent: number;
  idempotencyKey: boolean;
  /** Upstream statuses that send an idempotent request to another target, or null. */
  onStatus: ((status: number) => boolean) | null;
  /** `backoff` in ms: the pause before the first retry, doubling after (0: none). */
  backoffMs?: number;
}

/** Everything forward() needs about a route's targets. */
export interface RoutePool {
  /** Target ids (URLs) in config order; index = selector index. */
  ids: string[];
  /** The ids of backup targets (empty without any). */
  backups: ReadonlySet<string>;
  targets: PoolTarget[];
  policy: Policy;
  selector: Selector;
  hashOn?: { type: "ip" | "header" | "cookie"; name?: string };
  retries: RetryPolicy;
  passive: PassivePolicy;
  /** Upstream statuses that count as failures for passive health, or null. */
  failStatus: ((status: number) => boolean) | null;
  /** `passive_health.max_latency` in ms: a slower answer head is a failure (Infinity: none, 0s). */
  failLatencyMs: number;
  tryWhenDown: boolean;
  /**
   * The active check this route applies to each target (healthCheckKey), by index; null where the
   * route has checks off, so probes made for other routes do not gate it.
   */
  checks: (string | null)[];
  /** Load-aware policy: a request stays in flight until its response body ends. */
  trackBody: boolean;
  /** `slow_start` in ms: how long a returning target's weight ramps up (0: none). */
  slowStartMs: number;
  /**
   * The probe interval and the successes in a row that bring a target back, as the prober counts
   * them (0 is 1); for `Retry-After` when no target is available.
   */
  probes: { intervalMs: number; healthy: number };
  /** Session affinity by cookie (`sticky`), or null. */
  sticky: StickyPolicy | null;
}

/** A route's `sticky`, resolved: the cookie's name, the value per target, its attributes. */
export interface StickyPolicy {
  cookie: string;
  /** The cookie value naming each target, by index: opaque (a hash), not the target's URL. */
  values: string[];
  /** `; Path=/; Max-Age=…; HttpOnly; SameSite=Lax`, without Secure. */
  attributes: string;
  /** Secure: always, never, or (null) when the request came over HTTPS. */
  secure: boolean | null;
}

/** Resolves `sticky` for a route's targets (null when off). */
export function stickyPolicy(
  routeId: string,
  ids: readonly string[],
  spec: StickyConfig | undefined,
  secret?: string,
): StickyPolicy | null {
  if (spec === undefined || spec === false) return null;
  // `sticky: true`: the schema's defaults.
  const o: Exclude<StickyConfig, boolean> = spec === true
    ? { cookie: "prox_sticky", path: "/", same_site: "lax", http_only: true }
    : spec;
  let attributes = `; Path=${o.path}`;
  // Max-Age=0 would delete the cookie at once: 0s is a session cookie (as Traefik's maxAge 0),
  // and a part of a second counts as a whole one.
  if (o.max_age) attributes += `; Max-Age=${Math.ceil(o.max_age / 1000)}`;
  if (o.http_only) attributes += "; HttpOnly";
  attributes += `; SameSite=${o.same_site[0].toUpperCase()}${o.same_site.slice(1)}`;
  return {
    cookie: o.cookie,
    // Keyed (sticky.secret_env): a value no one without the secret can match to an address.
    values: ids.map((id) =>
      secret
        ? createHmac("sha256", secret).update(`${routeId}\n${id}`).digest("hex").slice(0, 16)
        : hash32(`${routeId}\n${id}`).toString(16).padStart(8, "0")
    ),
    attributes,
    // SameSite=None is refused by browsers without Secure.
    secure: o.same_site === "none" ? true : o.secure ?? null,
  };
}

/** Retry defaults when a route has no `retries` block (same as the schema's). */
export const DEFAULT_RETRIES: RetryPolicy = {
  attempts: 2,
  budgetPercent: 20,
  idempotencyKey: false,
  onStatus: null,
};

const LOAD_AWARE: ReadonlySet<Policy> = new Set([
  "least_connections",
  "power_of_two",
  "consistent_hash",
]);

const cache = new WeakMap<CompiledRoute, RoutePool>();

/** Retries of a `websocket` route, which has no `retries` key: one attempt, as it always made. */
const NO_RETRIES: RetryPolicy = { ...DEFAULT_RETRIES, attempts: 0 };

/**
 * The pool of a proxy, load_balance or websocket route (built on first use, then cached); its selector comes
 * from `registry` when given, so an unchanged pool keeps its rotation across reloads.
 */
export function poolOf(
  route: CompiledRoute,
  config: Config,
  opts: { registry?: UpstreamRegistry } = {},
): RoutePool {
  let pool = cache.get(route);
  if (!pool) {
    pool = buildPool(route, config, opts);
    cache.set(route, pool);
  }
  return pool;
}

/** Resolves a route's pool from its config and the top-level defaults. */
export function buildPool(
  route: CompiledRoute,
  config: Config,
  opts: { registry?: UpstreamRegistry } = {},
): RoutePool {
  const cfg = route.config;
  if (cfg.type === "websocket") return websocketPool(route, config, opts);
  if (cfg.type !== "proxy" && cfg.type !== "load_balance") {
    throw new Error(`Cannot build an upstream pool for a ${cfg.type} route`);
  }
  const targets: PoolTarget[] = cfg.type === "proxy"
    ? [{ id: cfg.target, weight: 1, backup: false }]
    : cfg.targets.map((t) =>
      typeof t === "string"
        ? { id: t, weight: 1, backup: false }
        : { id: t.url, weight: t.weight, backup: t.backup }
    );
  const policy: Policy = cfg.type === "proxy" ? "first" : cfg.strategy;
  const r = cfg.retries;
  const p = cfg.passive_health ?? config.passive_health;
  return {
    ids: targets.map((t) => t.id),
    backups: new Set(targets.filter((t) => t.backup).map((t) => t.id)),
    targets,
    policy,
    selector: opts.registry
      ? opts.registry.selector(route.id, {
        signature: `${policy} ${JSON.stringify(targets)}`,
        make: () => createSelector(policy, targets),
      })
      : createSelector(policy, targets),
    // consistent_hash without hash_on keys on the client IP.
    hashOn: cfg.type === "load_balance"
      ? cfg.hash_on ?? (policy === "consistent_hash" ? { type: "ip" } : undefined)
      : undefined,
    sticky: cfg.type === "load_balance"
      ? stickyPolicy(route.id, targets.map((t) => t.id), cfg.sticky, route.stickySecret)
      : null,
    retries: r
      ? {
        attempts: r.attempts,
        perTryMs: r.per_try_timeout,
        budgetPercent: r.budget_percent,
        idempotencyKey: r.idempotency_key,
        backoffMs: r.backoff ?? 0,
        onStatus: r.on_status.length > 0 ? statusMatcher(r.on_status) : null,
      }
      : DEFAULT_RETRIES,
    passive: passivePolicyOf(p),
    failStatus: p.statuses.length > 0 ? statusMatcher(p.statuses) : null,
    // 0s: no limit, as Caddy's `unhealthy_latency` (not "every answer is a failure").
    failLatencyMs: p.max_latency ? p.max_latency : Infinity,
    tryWhenDown: cfg.try_when_down,
    checks: targets.map((t) => healthCheckKey(config, { route: cfg, target: t.id })),
    trackBody: LOAD_AWARE.has(policy),
    // Failover has no shares to ramp.
    slowStartMs: cfg.type === "load_balance" && policy !== "first" ? cfg.slow_start ?? 0 : 0,
    probes: {
      intervalMs: Math.max(1, config.health_check.interval_secs) * 1000,
      healthy: Math.max(1, config.health_check.healthy_threshold),
    },
  };
}

/**
 * A `websocket` route's pool: its one target in the same registry as the other routes' (passive
 * health by the top-level `passive_health`, drains, `/status`), without the keys it does not have:
 * no retries, no active checks (it has no `health_check`), and no try_when_down: an ejected or
 * drained target gets 503 rather than a connect that would fail.
 */
function websocketPool(
  route: CompiledRoute,
  config: Config,
  opts: { registry?: UpstreamRegistry },
): RoutePool {
  const cfg = route.config as WebSocketRouteConfig;
  const targets: PoolTarget[] = [{ id: cfg.target, weight: 1, backup: false }];
  const p = config.passive_health;
  return {
    ids: [cfg.target],
    backups: new Set(),
    targets,
    policy: "first",
    selector: opts.registry
      ? opts.registry.selector(route.id, {
        signature: `first ${JSON.stringify(targets)}`,
        make: () => createSelector("first", targets),
      })
      : createSelector("first", targets),
    sticky: null,
    retries: NO_RETRIES,
    passive: passivePolicyOf(p),
    failStatus: p.statuses.length > 0 ? statusMatcher(p.statuses) : null,
    failLatencyMs: p.max_latency ? p.max_latency : Infinity,
    tryWhenDown: false,
    checks: [null],
    trackBody: false,
    slowStartMs: 0,
    probes: {
      intervalMs: Math.max(1, config.health_check.interval_secs) * 1000,
      healthy: Math.max(1, config.health_check.healthy_threshold),
    },
  };
}

/**
 * What decides a route's active check of a target (path, method, expected status, body match,
 * TLS settings, Host and headers), or null when the route's checks are off. Routes naming the
 * same target with the same check share one probe and its result; a different check is probed
 * and judged on its own, so one route's failing health endpoint does not take the target out of
 * another route (Caddy keys health by check too, caddy#7870).
 */
export function healthCheckKey(
  config: Config,
  o: { route: ProxyRouteConfig | LoadBalanceRouteConfig; target: string },
): string | null {
  const g = config.health_check;
  const r = o.route.health_check;
  if (!(r?.enabled ?? g.enabled)) return null;
  const tls = o.route.tls;
  return JSON.stringify([
    config.backend_health_paths[o.target] ?? r?.path ?? g.path,
    r?.method ?? g.method,
    r?.expected_status ?? g.expected_status,
    r?.body_match ?? g.body_match ?? null,
    tls
      ? [
        tls.ca_cert ?? null,
        tls.insecure_skip_verify,
        tls.server_name ?? null,
        tls.client_cert ?? null,
      ]
      : null,
    ...probeFields(config, o.route),
    o.route.proxy_protocol ?? null,
    o.route.upstream_protocol ?? null,
    r?.grpc_service ?? null,
  ]);
}

/**
 * The Host (null: the target's own) and the extra headers of a route's probes: the route's
 * `health_check.headers` over the top-level ones, name by name, lower-cased and sorted.
 */
export function probeFields(
  config: Config,
  route: ProxyRouteConfig | LoadBalanceRouteConfig,
): [host: string | null, headers: [string, string][]] {
  const g = config.health_check;
  const r = route.health_check;
  const headers = new Map<string, string>();
  for (const h of [g.headers, r?.headers]) {
    for (const [k, v] of Object.entries(h ?? {})) headers.set(k.toLowerCase(), v);
  }
  return [r?.host ?? g.host ?? null, [...headers].sort(([a], [b]) => a < b ? -1 : 1)];
}

/** Targets no route watches passively: `passive_health` is off on every route naming them. */
export function unwatchedTargets(config: Config): string[] {
  const on = new Set<string>();
  const all = new Set<string>();
  for (const r of Object.values(config.routes)) {
    if (r.type !== "proxy" && r.type !== "load_balance" && r.type !== "websocket") continue;
    const ids = r.type !== "load_balance"
      ? [r.target]
      : r.targets.map((t) => typeof t === "string" ? t : t.url);
    const enabled = (r.type === "websocket" ? config.passive_health : r.passive_health ??
      config.passive_health).enabled;
    for (const id of ids) {
      all.add(id);
      if (enabled) on.add(id);
    }
  }
  return [...all].filter((id) => !on.has(id));
}

/**
 * Every upstream target id a config names (proxy, load_balance and websocket routes): the
 * registry's keep-set.
 */
export function configuredTargets(config: Config): string[] {
  const ids = new Set<string>();
  for (const r of Object.values(config.routes)) {
    if (r.type === "proxy" || r.type === "websocket") ids.add(r.target);
    if (r.type === "load_balance") {
      for (const t of r.targets) ids.add(typeof t === "string" ? t : t.url);
    }
  }
  return [...ids];
}

/**
 * The targets of `websocket` routes, which the pool gauges show before their first WebSocket puts
 * them in the registry's list.
 */
export function websocketTargets(config: Config): string[] {
  const ids = new Set<string>();
  for (const r of Object.values(config.routes)) if (r.type === "websocket") ids.add(r.target);
  return [...ids];
}

/** `passive_health` (a route's, the top level's or a tcp entry's) as the health domain takes it. */
export function passivePolicyOf(
  p: Omit<NonNullable<Config["passive_health"]>, "statuses">,
): PassivePolicy {
  return {
    enabled: p.enabled,
    failures: p.failures,
    windowMs: p.window,
    baseEjectionMs: p.base_ejection,
    maxEjectionMs: p.max_ejection,
    panicPercent: p.panic_threshold_percent,
  };
}
