// `concurrency_limit`: requests of one client (or of the route) in progress at once. A slot is
// taken after the route's other filters let the request in, and given back when its answer has
// been delivered (pipeline.ts), or when a WebSocket ends (websocket.ts). Counts live per pipeline
// and route id, so a reload keeps them; a key whose count falls to zero is dropped, so the maps
// hold only requests in flight.

import type { ConcurrencyLimitConfig } from "../../config/schema_route.ts";
import { parseCidr } from "../../domain/ip.ts";
import type { Cidr } from "../../domain/ip.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { errorResponse } from "../respond.ts";
import { clientKeys, isExempt } from "./rate_limit.ts";

/** A route's concurrency limit, ready to run. */
export interface CompiledConcurrency {
  route: string;
  config: ConcurrencyLimitConfig;
  exempt: readonly Cidr[];
}

export function compileConcurrency(
  route: string,
  config: ConcurrencyLimitConfig,
): CompiledConcurrency {
  const exempt = config.exempt_ips.map(parseCidr).filter((c): c is Cidr => c !== null);
  return { route, config, exempt };
}

/** Per pipeline: route id → client key → requests in progress. */
const states = new WeakMap<PipelineDeps, Map<string, Map<string, number>>>();
/** Shadow refusals are logged at most once per interval per route. */
const LOG_INTERVAL_MS = 10_000;
const logged = new WeakMap<PipelineDeps, Map<string, number>>();

/** Client keys holding slots, over all routes: the maps' size, for tests. */
export function slotsInUse(deps: PipelineDeps): number {
  let n = 0;
  for (const counts of states.get(deps)?.values() ?? []) n += counts.size;
  return n;
}

/**
 * Takes a slot for the request, setting `ctx.release`, or answers it: `status_code` when its key
 * has `max` requests in progress (with `Retry-After: 1`), or when the key is missing and
 * `on_missing_key: deny`. Null: go on.
 */
export function takeSlot(
  ctx: RequestContext,
  deps: PipelineDeps,
  limit: CompiledConcurrency,
): Response | null {
  const c = limit.config;
  if (limit.exempt.length > 0 && isExempt(limit.exempt, ctx.clientIp)) return null;
  // A cookie or query parameter sent twice with two values holds a slot of each (its first and
  // last, as rate limits charge both): apps read one or the other, so a fresh junk value beside
  // the real one must not make room for another request of the real one.
  const keys = clientKeys(limit, ctx);
  if (keys.length === 0) {
    if (c.on_missing_key === "allow" || c.shadow) return null;
    deps.metrics.rateLimit(limit.route, "limited");
    return refuse(ctx, c, false);
  }
  let routes = states.get(deps);
  if (!routes) states.set(deps, routes = new Map());
  let counts = routes.get(limit.route);
  if (!counts) routes.set(limit.route, counts = new Map());
  if (keys.some((k) => (counts.get(k) ?? 0) >= c.max)) {
    deps.metrics.rateLimit(limit.route, c.shadow ? "shadow_limited" : "limited");
    if (!c.shadow) return refuse(ctx, c, true);
    logShadow(ctx, deps, limit);
  }
  for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1);
  const map = counts;
  let released = false;
  ctx.release = () => {
    if (released) return;
    released = true;
    for (const k of keys) {
      const left = (map.get(k) ?? 1) - 1;
      if (left > 0) map.set(k, left);
      else map.delete(k);
    }
    if (map.size === 0 && routes.get(limit.route) === map) routes.delete(limit.route);
  };
  return null;
}

function refuse(ctx: RequestContext, c: ConcurrencyLimitConfig, retry: boolean): Response {
  return errorResponse("rate_limited", ctx.requestId, {
    status: c.status_code,
    message: c.message,
    // As rate_limit: a message the config sets is the whole body.
    exact: c.message !== "Too Many Requests",
    // One of the requests in progress may be over in a moment: no longer a wait than that.
    headers: retry ? { "retry-after": "1" } : undefined,
  });
}

function logShadow(ctx: RequestContext, deps: PipelineDeps, limit: CompiledConcurrency): void {
  let last = logged.get(deps);
  if (!last) logged.set(deps, last = new Map());
  const now = deps.clock.monotonic();
  const at = last.get(limit.route);
  if (at !== undefined && now - at < LOG_INTERVAL_MS) return;
  last.set(limit.route, now);
  deps.logger.warn("Concurrency limit exceeded (shadow mode: not refused)", {
    route: limit.route,
    by: limit.config.by,
    max: limit.config.max,
    requestId: ctx.requestId,
  });
}
