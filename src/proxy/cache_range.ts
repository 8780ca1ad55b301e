// Ranges of stored answers (cache.ts): a GET's Range and If-Range answered from a fresh stored
// 200, as nginx's and Varnish's caches do, rather than sent upstream (RFC 9110 §14, §13.1.5).

import { parseCacheControl, requestNeeds, usableWithoutOrigin } from "../domain/cache_control.ts";
import { parseHttpDate, parseRange } from "../domain/conditional.ts";
import type { StoredResponse } from "../domain/response_cache.ts";
import type { CachePolicy } from "./cache.ts";
import { fromStore, NAME } from "./cache_response.ts";
import { lookup, primaryKey } from "./cache_request.ts";
import type { UpstreamRoute } from "./cache_request.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";

/**
 * A GET's Range (and If-Range) answered from a fresh stored 200, as nginx's and Varnish's caches
 * do: 206, 416, or the whole answer (fromStore); undefined when nothing fresh is stored for it
 * (or the request is no GET, or wants the origin), and it goes upstream as it is.
 */
export function rangeFromStore(
  ctx: RequestContext,
  deps: PipelineDeps,
  x: { route: UpstreamRoute; policy: CachePolicy; view: (name: string) => string | null },
): Response | undefined {
  const range = x.view("range");
  if (ctx.req.method !== "GET" || range === null) return undefined;
  const entry = lookup(x.policy.store, primaryKey(ctx, x.route), x.view);
  if (!entry || entry.status !== 200) return undefined;
  const needs = requestNeeds(parseCacheControl(x.view("cache-control")));
  const age = entry.initialAge + Math.max(0, deps.clock.now() - entry.responseTime);
  if (!usableWithoutOrigin({ age, lifetime: entry.lifetime, noCache: entry.noCache }, needs)) {
    return undefined;
  }
  const ttl = Math.floor((entry.lifetime - age) / 1000);
  return fromStore(ctx, entry, {
    age,
    status: `${NAME}; hit; ttl=${ttl}`,
    range: { value: range, ifRange: x.view("if-range") },
  });
}

/**
 * The answer to a Range the stored 200 `entry` (its fields in `headers`, Age and Cache-Status
 * set) allows under its If-Range: 206 for one range, 416 for one past the end; undefined for the
 * whole answer (several ranges or a malformed one, RFC 9110 §14.2; an If-Range that does not hold).
 */
export function rangeOf(
  entry: StoredResponse,
  headers: Headers,
  range: { value: string; ifRange: string | null },
  status: string,
): Response | undefined {
  if (!ifRangeHolds(range.ifRange, entry)) return undefined;
  // RFC 9110 §14.2: one range; several, or a malformed one, get the whole answer.
  const size = entry.body.byteLength;
  const asked = parseRange(range.value, size);
  if (asked.kind === "unsatisfiable") {
    const h = new Headers({ "content-range": `bytes */${size}` });
    h.set("cache-status", status);
    return new Response(null, { status: 416, headers: h });
  }
  if (asked.kind === "range") {
    headers.set("content-range", `bytes ${asked.start}-${asked.end}/${size}`);
    headers.set("content-length", String(asked.end - asked.start + 1));
    const body = entry.body.subarray(asked.start, asked.end + 1);
    return new Response(body, { status: 206, headers });
  }
  return undefined;
}

/**
 * Whether an If-Range lets a range of the stored entry be sent (RFC 9110 §13.1.5): absent, an
 * entity tag equal to the entry's by strong comparison, or exactly its Last-Modified when that
 * is a strong validator (a second or more before its Date, §8.8.2.2).
 */
function ifRangeHolds(value: string | null, entry: StoredResponse): boolean {
  if (value === null) return true;
  const v = value.trim();
  if (v.startsWith("W/")) return false;
  if (v.startsWith('"')) {
    return entry.etag !== null && !entry.etag.startsWith("W/") && v === entry.etag.trim();
  }
  if (entry.lastModified === null) return false;
  const at = entry.responseTime;
  const since = parseHttpDate(v, at);
  const modified = parseHttpDate(entry.lastModified.trim(), at);
  const dateField = entry.headers.find(([k]) => k === "date")?.[1];
  const dated = dateField === undefined ? null : parseHttpDate(dateField.trim(), at);
  return since !== null && since === modified && dated !== null && modified + 1000 <= dated;
}
