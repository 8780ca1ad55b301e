// The rate-limit request filter: compiled once per route at snapshot build, run after route match.
// It extracts the client key, asks the RateLimitStore, and either lets the request through (adding
// the IETF RateLimit headers to the eventual response) or answers with the configured status.
// Headers: draft-ietf-httpapi-ratelimit-headers-11, §3 (RateLimit-Policy) and §4 (RateLimit).

import type { RateLimitConfig } from "../../config/schema.ts";
import { cidrContains, ipGroupKey, parseCidr, parseIp } from "../../domain/ip.ts";
import type { Cidr } from "../../domain/ip.ts";
import { policyOf } from "../../domain/rate_limit.ts";
import type { RateLimitDecision, RateLimitPolicy } from "../../domain/rate_limit.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import type { RateLimitStore } from "../../ports.ts";
import { errorResponse } from "../respond.ts";

/** A route's limit, ready to run. */
export interface CompiledRateLimit {
  /** Stable limiter id: route id + hash of everything that shapes the counters. */
  id: string;
  route: string;
  /** Policy name in the RateLimit fields. */
  name: string;
  policy: RateLimitPolicy;
  config: RateLimitConfig;
  /** Precomputed `RateLimit-Policy` field value. */
  policyField: string;
  /** Client addresses that are never limited. */
  exempt: readonly Cidr[];
}

/** Where a limit's client key comes from (rate limits and concurrency limits alike). */
export type KeySource = Pick<
  RateLimitConfig,
  "by" | "header_name" | "claim" | "cookie_name" | "query_param" | "ipv6_prefix"
>;

/** Keys longer than this are stored as a SHA-256 digest (bounded memory per key). */
const MAX_KEY_CHARS = 64;
/** Store failures and shadow denials are logged at most once per interval per limiter. */
const LOG_INTERVAL_MS = 10_000;

/**
 * Compiles a route's `rate_limit` and `rate_limits` blocks, in that order. Unnamed policies are
 * called "default" when alone, else "limit1", "limit2"…
 */
export function compileRateLimits(
  routeId: string,
  route: { rate_limit?: RateLimitConfig; rate_limits?: RateLimitConfig[] },
): CompiledRateLimit[] {
  const all = [...(route.rate_limit ? [route.rate_limit] : []), ...(route.rate_limits ?? [])];
  // A generated name never takes one a limit was given (they would share counters).
  const taken = new Set(all.flatMap((c) => c.name === undefined ? [] : [c.name]));
  const ids = new Map<string, number>();
  return all.map((config, i) => {
    let name = config.name;
    if (name === undefined) {
      name = all.length === 1 ? "default" : `limit${i + 1}`;
      for (let n = i + 1; taken.has(name); n++) name = `limit${n}`;
      taken.add(name);
    }
    const compiled = compileRateLimit(routeId, config, { name, named: config.name !== undefined });
    // Two unnamed limits of the same shape on one route still count apart.
    const seen = ids.get(compiled.id) ?? 0;
    ids.set(compiled.id, seen + 1);
    return seen === 0 ? compiled : { ...compiled, id: `${compiled.id}-${seen}` };
  });
}

/** Compiles one limit. */
export function compileRateLimit(
  routeId: string,
  config: RateLimitConfig,
  opts: { name?: string; named?: boolean } = {},
): CompiledRateLimit {
  const name = opts.name ?? config.name ?? "default";
  const policy = policyOf(config.algorithm, {
    requests: config.requests,
    periodMs: config.period,
    burst: config.burst,
  });
  // Only what changes the counters goes into the id: message, status or headers do not reset,
  // nor does a generated name ("default", "limit2"), which moves when another limit is added.
  const shape = JSON.stringify([
    policy.algorithm,
    policy.requests,
    policy.periodMs,
    policy.burst,
    config.by,
    config.header_name?.toLowerCase() ?? "",
    config.cookie_name ?? "",
    config.query_param ?? "",
    ...(config.by === "jwt_claim" ? [config.claim ?? ""] : []),
    config.ipv6_prefix,
    opts.named === false ? "" : name,
  ]);
  return {
    id: `${routeId}#${fnv1a(shape)}`,
    route: routeId,
    name,
    policy,
    config,
    policyField: policyField(policy, { name }),
    exempt: config.exempt_ips.map(parseCidr).filter((c): c is Cidr => c !== null),
  };
}

/**
 * `RateLimit-Policy` value (§3.1): quota `q` per window `w` in whole seconds. A sub-second or
 * fractional period is rescaled to the next whole-second window (never shorter than the period,
 * so `q` is at least `requests`: rounded to the nearest, 1 per 1.4 s was announced as q=0); a
 * burst different from the rate is announced as the vendor parameter `prox-burst`.
 */
export function policyField(policy: RateLimitPolicy, opts: { name?: string } = {}): string {
  const w = Math.max(1, Math.ceil(policy.periodMs / 1000));
  const q = Math.floor((policy.requests * w * 1000) / policy.periodMs);
  const burst = policy.burst !== policy.requests ? `;prox-burst=${sfInt(policy.burst)}` : "";
  return `"${opts.name ?? "default"}";q=${sfInt(q)};w=${sfInt(w)}${burst}`;
}

/** Largest Structured Field integer (RFC 9651 §3.3.1: 15 digits); past it, a client drops the field. */
const SF_INT_MAX = 999_999_999_999_999;

/** `n` as a Structured Field integer: a quota or time beyond 15 digits is as good as unlimited. */
function sfInt(n: number): number {
  return Math.min(n, SF_INT_MAX);
}

/** `RateLimit` value (§4.1): remaining quota `r` and effective window `t` in seconds. */
export function limitField(
  remaining: number,
  seconds: number,
  opts: { name?: string } = {},
): string {
  return `"${opts.name ?? "default"}";r=${sfInt(remaining)};t=${sfInt(seconds)}`;
}

/**
 * Renames Prox's policies in `add` (the fields queued for the response) that the upstream's own
 * `RateLimit-Policy` (`upstream`) names too, as `prox-<name>`: appended beside them, two policies
 * of one name (an app's "default" and Prox's) could not be told apart, nor their RateLimit items.
 */
export function renameClashingPolicies(add: [string, string][], upstream: string | null): void {
  if (!upstream) return;
  const theirs = new Set(upstream.split(",").map(policyName));
  const renamed = new Map<string, string>();
  for (const [k, v] of add) {
    if (k !== "ratelimit-policy") continue;
    for (const name of v.split(",").map(policyName)) {
      if (!theirs.has(name)) continue;
      let next = `prox-${name}`;
      while (theirs.has(next)) next = `prox-${next}`;
      renamed.set(name, next);
    }
  }
  if (renamed.size === 0) return;
  for (const entry of add) {
    if (entry[0] !== "ratelimit-policy" && entry[0] !== "ratelimit") continue;
    entry[1] = entry[1].split(", ").map((m) => {
      const to = renamed.get(policyName(m));
      return to === undefined ? m : `"${to}"${m.slice(m.indexOf(";"))}`;
    }).join(", ");
  }
}

/** The name of one member of a RateLimit(-Policy) list: its string (or token) before `;`. */
function policyName(member: string): string {
  const semi = member.indexOf(";");
  const item = (semi < 0 ? member : member.slice(0, semi)).trim();
  return item.startsWith('"') && item.endsWith('"') && item.length >= 2 ? item.slice(1, -1) : item;
}

/** The client key for a request, or null when the configured source is absent. */
export function clientKey(limit: CompiledRateLimit, ctx: RequestContext): string | null {
  return clientKeys(limit, ctx)[0] ?? null;
}

/**
 * The client keys a request counts against: none when the configured source is absent, else one;
 * two for a cookie or query parameter sent more than once, its first and last values when they
 * differ. Apps read the first (Go, Java, Express, nginx's `$arg_`) or the last (PHP and Django
 * queries): both are charged, so neither a junk value beside the real one nor a duplicate name
 * skips the limit (read as missing, `k=a&k=b` was not limited at all with on_missing_key: allow).
 */
export function clientKeys(limit: { config: KeySource }, ctx: RequestContext): string[] {
  const c = limit.config;
  switch (c.by) {
    case "ip":
      return [`ip:${ipGroupKey(ctx.clientIp, c.ipv6_prefix)}`];
    case "route":
      return ["route"];
    case "header": {
      // Host is the request's authority: HTTP/2 and HTTP/3 requests carry no Host field (RFC 9113
      // §8.3.1), so keying the field let them skip the limit (or be refused, on_missing_key: deny).
      if (c.header_name?.toLowerCase() === "host") return ctx.host === "" ? [] : [`h:${ctx.host}`];
      // A field sent twice arrives joined with ", ". Apps that read one value (Go, Java, Rust,
      // Starlette) read the first: keying the whole line gave `key, <junk>` a fresh bucket each.
      const line = ctx.req.headers.get(c.header_name ?? "");
      const comma = line?.indexOf(",") ?? -1;
      const v = comma < 0 ? line : line!.slice(0, comma).trimEnd();
      return v === null || v === "" ? [] : [`h:${v}`];
    }
    case "cookie":
      return firstAndLast(cookieValues(ctx.req.headers.get("cookie"), c.cookie_name ?? ""), "c:");
    case "jwt_claim": {
      // Set by jwt_auth, which runs before these limits (pipeline.ts); a string or a number.
      const v = ctx.jwtClaims?.[c.claim ?? ""];
      return typeof v === "string" && v !== "" || typeof v === "number" ? [`j:${v}`] : [];
    }
    case "query": {
      // As sent: jwt_auth's token parameter, out of `query` from the start, may be the key.
      const all = new URLSearchParams(ctx.jwtQuery ?? ctx.query).getAll(c.query_param ?? "");
      return firstAndLast(all, "q:");
    }
  }
}

/** The first and the last non-empty value (one key when they are equal), prefixed. */
function firstAndLast(values: string[], prefix: string): string[] {
  const set = values.filter((v) => v !== "");
  if (set.length === 0) return [];
  const first = set[0];
  const last = set[set.length - 1];
  return first === last ? [prefix + first] : [prefix + first, prefix + last];
}

/** Every value of cookie `name` in a Cookie header (RFC 6265 §5.4), in order, unquoted. */
export function cookieValues(header: string | null, name: string): string[] {
  if (!header) return [];
  const out: string[] = [];
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() !== name) continue;
    let v = part.slice(eq + 1).trim();
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
    out.push(v);
  }
  return out;
}

/**
 * The value of cookie `name` in a Cookie header (RFC 6265 §5.4), or null; also null when it is
 * there twice with different values, which apps resolve differently (first or last wins).
 */
export function cookieValue(header: string | null, name: string): string | null {
  const all = cookieValues(header, name);
  return all.length > 0 && all.every((v) => v === all[0]) ? all[0] : null;
}

/**
 * Runs `limits` (the route's, in order; the pipeline runs `by: jwt_claim` ones in a second call,
 * after jwt_auth). Returns a response when the request must stop here, or null to go on (the
 * RateLimit headers are then queued in `ctx.extraResponseHeaders`). A request denied by one limit
 * has already counted against the limits before it, never after it.
 */
export async function applyRateLimit(
  ctx: RequestContext,
  deps: PipelineDeps,
  limits: readonly CompiledRateLimit[] | undefined = ctx.route?.rateLimits,
): Promise<Response | null> {
  const store = deps.rateLimits;
  if (!limits || limits.length === 0 || !store) return null;
  const policies: string[] = [];
  const items: string[] = [];
  // What an earlier call for this request (the limits before jwt_auth) saw.
  const carry = ctx.rateLimitCarry;
  let counted = carry?.counted ?? false;
  let failed = carry?.failed ?? false;
  for (const limit of limits) {
    const outcome = await checkOne(ctx, deps, { limit, store, failed });
    if (outcome instanceof Response) return outcome;
    // The store failed (on_error allows, or the limit is a shadow one): the other limits use the
    // same store, so asking it again would only add its timeout per limit (and count and log the
    // one failure again); they follow on_error without asking.
    if (outcome === STORE_FAILED) {
      failed = true;
      continue;
    }
    counted ||= outcome !== null;
    if (outcome && limit.config.headers && !limit.config.shadow) {
      policies.push(limit.policyField);
      items.push(
        limitField(outcome.remaining, Math.ceil(outcome.resetMs / 1000), { name: limit.name }),
      );
    }
  }
  // Once per request, when every limit let it through: a request a later limit refused is
  // "limited" only (counting it "allowed" by the earlier ones understated refusals).
  const more = ctx.route?.claimLimits.length && limits !== ctx.route.claimLimits;
  if (more) ctx.rateLimitCarry = { counted, failed };
  else if (counted && !failed) deps.metrics.rateLimit(limits[0].route, "allowed");
  if (policies.length > 0) {
    ctx.extraResponseHeaders.push(
      ["ratelimit-policy", policies.join(", ")],
      ["ratelimit", items.join(", ")],
    );
  }
  return null;
}

/** The store could not decide and `on_error: allow` (or shadow mode) let the request through. */
const STORE_FAILED = Symbol("store failed");

/** One limit: a denial response, the decision when allowed, or null when not counted. */
async function checkOne(
  ctx: RequestContext,
  deps: PipelineDeps,
  opts: { limit: CompiledRateLimit; store: RateLimitStore; failed: boolean },
): Promise<Response | RateLimitDecision | typeof STORE_FAILED | null> {
  const { limit, store } = opts;
  if (limit.exempt.length > 0 && isExempt(limit.exempt, ctx.clientIp)) return null;
  const c = limit.config;
  const keys = clientKeys(limit, ctx);
  if (keys.length === 0) {
    if (c.on_missing_key === "allow") return null;
    if (c.shadow) return shadowDenied(ctx, deps, limit);
    deps.metrics.rateLimit(limit.route, "limited");
    return deny(ctx, limit, null);
  }
  const onError = ctx.snapshot.config.rate_limit_store.on_error;
  // A shadow limit never blocks, not even when the store fails with on_error: deny.
  const failOpen = onError === "allow" || c.shadow;
  if (opts.failed) return failOpen ? STORE_FAILED : deny(ctx, limit, STORE_DOWN);
  let decision: RateLimitDecision | undefined;
  try {
    for (const raw of keys) {
      const key = raw.length > MAX_KEY_CHARS ? `#${await sha256(raw)}` : raw;
      const d = await store.consume(key, {
        limiter: limit.id,
        policy: limit.policy,
        now: limiterNow(deps),
        maxKeys: c.max_keys,
      });
      decision = decision ? stricter(decision, d) : d;
    }
  } catch (err) {
    deps.metrics.rateLimit(limit.route, "error");
    logThrottled(
      deps,
      `store:${limit.route}`,
      `Rate limit store failed; requests are ${failOpen ? "allowed" : "denied"} (` +
        (c.shadow ? "shadow mode)" : `on_error: ${onError})`),
      {
        route: limit.route,
        error: err instanceof Error ? err.message : String(err),
      },
    );
    return failOpen ? STORE_FAILED : deny(ctx, limit, STORE_DOWN);
  }
  if (!decision) return null; // (keys is not empty)
  if (decision.allowed) return decision;
  if (c.shadow) return shadowDenied(ctx, deps, limit);
  deps.metrics.rateLimit(limit.route, "limited");
  return deny(ctx, limit, decision);
}

/** Two keys' decisions as one: refused when either is, with the less quota left. */
function stricter(a: RateLimitDecision, b: RateLimitDecision): RateLimitDecision {
  return {
    allowed: a.allowed && b.allowed,
    remaining: Math.min(a.remaining, b.remaining),
    resetMs: Math.max(a.resetMs, b.resetMs),
    retryAfterMs: Math.max(a.retryAfterMs, b.retryAfterMs),
  };
}

/** A refusal in shadow mode: counted and logged (throttled), never sent. */
function shadowDenied(ctx: RequestContext, deps: PipelineDeps, limit: CompiledRateLimit): null {
  deps.metrics.rateLimit(limit.route, "shadow_limited");
  logThrottled(deps, `shadow:${limit.id}`, "Rate limit exceeded (shadow mode: not blocked)", {
    route: limit.route,
    limit: limit.name,
    by: limit.config.by,
    requestId: ctx.requestId,
  });
  return null;
}

/** True when the client address is in one of the limit's `exempt_ips`. */
export function isExempt(exempt: readonly Cidr[], ip: string): boolean {
  const addr = parseIp(ip);
  return addr !== null && exempt.some((c) => cidrContains(c, addr));
}

/** rate_limit.message when the config sets none (config/schema_route.ts). */
const DEFAULT_MESSAGE = "Too Many Requests";

/**
 * Retry-After (s) of a refusal because the store failed (on_error: deny): the Redis client tries
 * to connect again at least this often. Without one, clients retried at once, all of them.
 */
const STORE_RETRY_AFTER_S = 2;
/** deny()'s decision when the store could not decide. */
const STORE_DOWN = Symbol("store down");

/**
 * The limit response: configured status and message, Retry-After (RFC 9110 §10.2.3) unless the
 * key is missing (`decision` null: waiting would not help).
 */
function deny(
  ctx: RequestContext,
  limit: CompiledRateLimit,
  decision: RateLimitDecision | typeof STORE_DOWN | null,
): Response {
  const headers = new Headers();
  if (decision === STORE_DOWN) headers.set("retry-after", String(STORE_RETRY_AFTER_S));
  else if (decision) {
    const seconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000));
    headers.set("retry-after", String(seconds));
    if (limit.config.headers) {
      headers.set("ratelimit-policy", limit.policyField);
      // §6: Retry-After should not point before the end of the effective window.
      headers.set("ratelimit", limitField(0, seconds, { name: limit.name }));
    }
  }
  return errorResponse("rate_limited", ctx.requestId, {
    status: limit.config.status_code,
    message: limit.config.message,
    // A message the config sets is the whole body, as in the Rust Prox (a JSON message stays
    // JSON); the default one gets the request id line like Prox's other answers.
    exact: limit.config.message !== DEFAULT_MESSAGE,
    headers,
  });
}

/** Per pipeline (one server): its wall clock at start minus its monotonic clock then. */
const anchors = new WeakMap<PipelineDeps, number>();

/**
 * Epoch milliseconds that never step: the wall clock read once, then the monotonic clock. A wall
 * clock stepped back (NTP, a restored VM) left every drained client refused until it caught up
 * again; stepped forward, it refilled every bucket.
 */
function limiterNow(deps: PipelineDeps): number {
  let anchor = anchors.get(deps);
  if (anchor === undefined) anchors.set(deps, anchor = deps.clock.now() - deps.clock.monotonic());
  return Math.floor(anchor + deps.clock.monotonic());
}

/** Log throttles per pipeline (one server), then per kind and limiter (store failures: route). */
const throttles = new WeakMap<PipelineDeps, Map<string, { at: number; suppressed: number }>>();

function logThrottled(
  deps: PipelineDeps,
  what: string,
  msg: string,
  fields: Record<string, unknown>,
): void {
  let lastLog = throttles.get(deps);
  if (!lastLog) throttles.set(deps, lastLog = new Map());
  const now = deps.clock.monotonic();
  const prev = lastLog.get(what);
  if (prev && now - prev.at < LOG_INTERVAL_MS) {
    prev.suppressed++;
    return;
  }
  if (lastLog.size >= 1_000) lastLog.clear();
  lastLog.set(what, { at: now, suppressed: 0 });
  deps.logger.warn(msg, { ...fields, suppressed: prev?.suppressed ?? 0 });
}

/** 32-bit FNV-1a as 8 hex digits (limiter ids; not security relevant). */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, "0");
}

async function sha256(s: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}
