// HTTP caching rules for a shared cache (RFC 9111): Cache-Control parsing, whether a response
// may be stored, its freshness lifetime and current age. Pure: times are ms since the epoch,
// passed in; header values come in as strings.

import { parseHttpDate } from "./conditional.ts";

/** Cache-Control directives by lower-case name; a value is null when the directive has none. */
export type Directives = ReadonlyMap<string, string | null>;

const NO_DIRECTIVES: Directives = new Map();

/**
 * Parses a Cache-Control value (RFC 9111 §5.2): comma-separated `name` or `name=value`, value a
 * token or quoted string. Names are case-insensitive; a repeated directive keeps its first value.
 */
export function parseCacheControl(value: string | null): Directives {
  if (value === null || value.trim() === "") return NO_DIRECTIVES;
  const out = new Map<string, string | null>();
  let i = 0;
  const n = value.length;
  while (i < n) {
    while (i < n && (value[i] === "," || value[i] === " " || value[i] === "\t")) i++;
    let j = i;
    while (j < n && value[j] !== "=" && value[j] !== ",") j++;
    const name = value.slice(i, j).trim().toLowerCase();
    let arg: string | null = null;
    if (j < n && value[j] === "=") {
      j++;
      while (j < n && (value[j] === " " || value[j] === "\t")) j++;
      if (value[j] === '"') {
        let s = "";
        j++;
        while (j < n && value[j] !== '"') {
          if (value[j] === "\\" && j + 1 < n) j++;
          s += value[j++];
        }
        arg = s;
        while (j < n && value[j] !== ",") j++;
      } else {
        const start = j;
        while (j < n && value[j] !== ",") j++;
        arg = value.slice(start, j).trim();
      }
    }
    if (name !== "" && !out.has(name)) out.set(name, arg);
    i = j + 1;
  }
  return out;
}

/**
 * A delta-seconds argument (RFC 9111 §1.2.2): digits only; a value too large becomes 2^31 s.
 * Undefined when absent or malformed (a malformed max-age counts as no max-age).
 */
export function deltaSeconds(d: Directives, name: string): number | undefined {
  const v = d.get(name);
  if (v === undefined || v === null || !/^\d+$/.test(v)) return undefined;
  return Math.min(Number(v), 2 ** 31);
}

/** Status codes this cache understands and stores (RFC 9111 §3): 206 and 304 never are. */
export const STORABLE_STATUS: ReadonlySet<number> = new Set([
  200,
  203,
  204,
  300,
  301,
  302,
  307,
  308,
  404,
  405,
  410,
  414,
  501,
]);

/** Status codes that may be stored without explicit freshness (RFC 9110 §15.1 "heuristically"). */
export const HEURISTIC_STATUS: ReadonlySet<number> = new Set([
  200,
  203,
  204,
  300,
  301,
  308,
  404,
  405,
  410,
  414,
  501,
]);

/** What storability needs to know of one exchange. */
export interface StoreInput {
  status: number;
  /** The response's Cache-Control directives. */
  response: Directives;
  /** The request's Cache-Control directives. */
  request: Directives;
  hasExpires: boolean;
  /** The response's Vary lists `*`. */
  varyStar: boolean;
  hasSetCookie: boolean;
  /** The request carried Authorization. */
  authorized: boolean;
  /** A freshness lifetime (ms) for responses without one; undefined: none (heuristics off). */
  defaultTtl?: number;
  /** The response is an event stream (text/event-stream): a live feed, never a stored answer. */
  eventStream?: boolean;
}

/**
 * Why a response to a GET may not be stored in a shared cache (RFC 9111 §3, §3.5), or null when
 * it may. A Set-Cookie response is never stored, as in nginx and Varnish: replaying one user's
 * cookie to everyone is worse than a miss.
 */
export function unstorableReason(i: StoreInput): string | null {
  if (!STORABLE_STATUS.has(i.status)) return "status";
  if (i.request.has("no-store")) return "request no-store";
  if (i.response.has("no-store")) return "no-store";
  if (i.response.has("private")) return "private";
  if (i.varyStar) return "vary *";
  if (i.hasSetCookie) return "set-cookie";
  // Stored, it would lock its key while it runs (others wait) and replay old events as new.
  if (i.eventStream) return "event stream";
  const r = i.response;
  if (
    i.authorized && !r.has("public") && !r.has("s-maxage") && !r.has("must-revalidate")
  ) return "authorization";
  const explicit = i.hasExpires || r.has("max-age") || r.has("s-maxage") || r.has("public");
  if (explicit) return null;
  // No-cache without freshness: stored, revalidated on every use (useful with validators).
  if (r.has("no-cache")) return null;
  if (i.defaultTtl !== undefined && HEURISTIC_STATUS.has(i.status)) return null;
  return "no freshness";
}

/** The times and fields freshness is computed from (RFC 9111 §4.2). */
export interface Timing {
  /** When the request that produced the response was sent, ms. */
  requestTime: number;
  /** When the response head arrived, ms. */
  responseTime: number;
  date: string | null;
  age: string | null;
  expires: string | null;
}

/**
 * The age the response already had when it arrived, ms (RFC 9111 §4.2.3 corrected_initial_age).
 * Current age = this + (now - responseTime).
 */
export function initialAge(t: Timing): number {
  const date = t.date === null ? null : parseHttpDate(t.date, t.responseTime);
  const apparent = date === null ? 0 : Math.max(0, t.responseTime - date);
  // A list (a chain that appended its own) counts by its first member; an invalid one is ignored
  // (RFC 9111 §5.1); one too large is 2^31 s (§1.2.2).
  const first = t.age?.split(",")[0].trim();
  const ageValue = first !== undefined && /^\d+$/.test(first)
    ? Math.min(Number(first), 2 ** 31) * 1000
    : 0;
  const corrected = ageValue + Math.max(0, t.responseTime - t.requestTime);
  return Math.max(apparent, corrected);
}

/**
 * Freshness lifetime in ms for a shared cache (RFC 9111 §4.2.1): s-maxage, else max-age, else
 * Expires minus Date (an invalid Expires means already expired), else `defaultTtl` (0 without).
 * A malformed s-maxage or max-age (`-1`, `ten`) means already expired too (§4.2.1 encourages
 * it; nginx does not cache such an answer): never Expires or `defaultTtl` in its place.
 */
export function freshnessLifetime(
  response: Directives,
  t: Timing,
  defaultTtl?: number,
): number {
  for (const name of ["s-maxage", "max-age"]) {
    if (!response.has(name)) continue;
    return (deltaSeconds(response, name) ?? 0) * 1000;
  }
  if (t.expires !== null) {
    const exp = parseHttpDate(t.expires, t.responseTime);
    if (exp === null) return 0;
    const date = t.date === null ? null : parseHttpDate(t.date, t.responseTime);
    return Math.max(0, exp - (date ?? t.responseTime));
  }
  return defaultTtl ?? 0;
}

/** What the client's request asks of a stored response (RFC 9111 §5.2.1). */
export interface RequestNeeds {
  /** Must go to the origin (no-cache, max-age=0). */
  revalidate: boolean;
  /** Largest acceptable age in ms (max-age), or Infinity. */
  maxAge: number;
  /** Freshness that must remain, ms (min-fresh). */
  minFresh: number;
  /** Answer 504 rather than contact the origin. */
  onlyIfCached: boolean;
  /** How stale a response the client accepts, ms (max-stale; Infinity without a value). */
  maxStale?: number;
}

/** Reads the request directives a lookup honours. */
export function requestNeeds(request: Directives): RequestNeeds {
  const maxAge = deltaSeconds(request, "max-age");
  const needs: RequestNeeds = {
    revalidate: request.has("no-cache") || maxAge === 0,
    maxAge: maxAge === undefined ? Infinity : maxAge * 1000,
    minFresh: (deltaSeconds(request, "min-fresh") ?? 0) * 1000,
    onlyIfCached: request.has("only-if-cached"),
  };
  // RFC 9111 §5.2.1.2: without a value, any staleness; a malformed value counts as none.
  if (request.get("max-stale") === null) needs.maxStale = Infinity;
  else {
    const s = deltaSeconds(request, "max-stale");
    if (s !== undefined) needs.maxStale = s * 1000;
  }
  return needs;
}

/** What a stored response that may not be served fresh says of being served stale. */
export interface StaleTerms {
  age: number;
  lifetime: number;
  noCache: boolean;
  /** must-revalidate, proxy-revalidate or s-maxage: never served stale (RFC 9111 §4.2.4). */
  mustRevalidate: boolean;
  /** How long past its freshness it may be served while it is refreshed, ms (0: not). */
  staleWhileRevalidate: number;
}

/**
 * Whether a stored response that is not fresh enough may still answer without waiting for the
 * origin: `stale-while-revalidate` (RFC 5861 §3: served, and refreshed in the background) or
 * the request's `max-stale` (RFC 9111 §5.2.1.2); null when neither allows it, or when the
 * request wants freshness (no-cache, max-age exceeded, min-fresh).
 */
export function staleUse(
  o: StaleTerms,
  needs: RequestNeeds,
): "stale-while-revalidate" | "max-stale" | null {
  if (o.noCache || needs.revalidate || needs.minFresh > 0) return null;
  if (o.age > needs.maxAge) return null;
  const stale = o.age - o.lifetime;
  if (stale < 0) return null;
  if (o.staleWhileRevalidate > 0 && stale <= o.staleWhileRevalidate) {
    return "stale-while-revalidate";
  }
  if (!o.mustRevalidate && needs.maxStale !== undefined && stale <= needs.maxStale) {
    return "max-stale";
  }
  return null;
}

/**
 * Whether a stored response may be served without contacting the origin: fresh, not marked
 * no-cache, and within what the request allows.
 */
export function usableWithoutOrigin(
  o: { age: number; lifetime: number; noCache: boolean },
  needs: RequestNeeds,
): boolean {
  if (o.noCache || needs.revalidate) return false;
  if (o.age > needs.maxAge) return false;
  return o.lifetime > o.age && o.lifetime - o.age >= needs.minFresh;
}

/**
 * The header list of a stored response after a 304 (RFC 9111 §3.2, §4.3.4): the 304's fields
 * replace the stored ones of the same name, except those that describe the stored body.
 */
export function mergeNotModified(
  stored: readonly [string, string][],
  fresh: readonly [string, string][],
): [string, string][] {
  const keep = new Set([
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "content-range",
  ]);
  const replaced = new Set<string>();
  for (const [k] of fresh) if (!keep.has(k)) replaced.add(k);
  const out = stored.filter(([k]) => !replaced.has(k));
  for (const [k, v] of fresh) if (!keep.has(k)) out.push([k, v]);
  return out;
}

/** A field name (RFC 9110 §5.1: a token), lower-case. */
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

/**
 * The names a Vary value lists, lower-case; `["*"]` when it contains `*`, or a member that is no
 * field name (`Accept Encoding`): no request's value can be read for it, so none can be shown to
 * match (RFC 9111 §4.1), and reading it would throw.
 */
export function varyNames(vary: string | null): string[] {
  if (vary === null) return [];
  const names = vary.split(",").map((s) => s.trim().toLowerCase()).filter((s) => s !== "");
  if (names.some((n) => n === "*" || !FIELD_NAME.test(n))) return ["*"];
  return [...new Set(names)].sort();
}

/**
 * Whether a response may never be served stale by a shared cache (RFC 9111 §4.2.4, §5.2.2.2,
 * §5.2.2.8, §5.2.2.10: s-maxage implies proxy-revalidate).
 */
export function mustRevalidate(response: Directives): boolean {
  return response.has("must-revalidate") || response.has("proxy-revalidate") ||
    response.has("s-maxage");
}

/**
 * How long after it goes stale a stored response may be served while it is refreshed in the
 * background (RFC 5861 §3 `stale-while-revalidate`), ms: the directive's, else `fallback` (the
 * route's default); 0 under must-revalidate, proxy-revalidate or no-cache. An explicit directive
 * counts beside s-maxage (the origin asked for both, as `s-maxage=60, stale-while-revalidate=300`
 * from Next.js does, and nginx, Varnish and CDNs honour it); the route's default does not.
 */
export function staleWhileRevalidateWindow(response: Directives, fallback = 0): number {
  for (const d of ["must-revalidate", "proxy-revalidate", "no-cache"]) {
    if (response.has(d)) return 0;
  }
  // Without a valid value (a bare `stale-while-revalidate`), the route's default.
  const s = deltaSeconds(response, "stale-while-revalidate");
  if (s !== undefined) return s * 1000;
  return response.has("s-maxage") ? 0 : fallback;
}

/**
 * How long after it goes stale a stored response may still answer when the upstream fails (RFC
 * 5861 §4 `stale-if-error`), ms; 0 when it may not: no such directive, or one that forbids
 * serving stale (must-revalidate, proxy-revalidate, s-maxage, no-cache: RFC 9111 §4.2.4).
 */
export function staleIfErrorWindow(response: Directives): number {
  const s = deltaSeconds(response, "stale-if-error");
  if (s === undefined) return 0;
  for (const d of ["must-revalidate", "proxy-revalidate", "s-maxage", "no-cache"]) {
    if (response.has(d)) return 0;
  }
  return s * 1000;
}
