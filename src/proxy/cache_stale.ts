// Stale entries standing in (cache.ts): refreshed in the background while served under
// stale-while-revalidate (RFC 5861 §3), and served in place of a failed upstream under
// stale-if-error (RFC 5861 §4).

import { parseCacheControl } from "../domain/cache_control.ts";
import type { StoredResponse } from "../domain/response_cache.ts";
import { keyHash } from "../domain/response_cache.ts";
import { fromStore, NAME } from "./cache_response.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import { proxyAction } from "./actions/proxy.ts";
import { statusFor, toProxyError } from "../domain/errors.ts";
import { admit, claim, notModified } from "./cache_fill.ts";
import type { Exchange } from "./cache_fill.ts";
import type { CachePolicy } from "./cache.ts";

/**
 * Most background refreshes under way per route; past it a stale entry is still served in its
 * window, and a later request starts the refresh.
 */
export const REFRESH_MAX = 64;

/**
 * After a failed background refresh, how long no new one starts for that entry (it is still
 * served in its window): an upstream that fails fast is not asked once per request.
 */
export const REFRESH_BACKOFF_MS = 2_000;
/** Most entries remembered as backing off per route (the oldest is forgotten first). */
export const REFRESH_BACKOFF_MAX = 10_000;

/** Holds off refreshes of `lock` for REFRESH_BACKOFF_MS from `now`, forgetting the oldest past the bound. */
export function backOff(policy: CachePolicy, lock: string, now: number): void {
  const backoff = policy.refreshBackoff;
  const id = keyHash(lock);
  backoff.delete(id);
  if (backoff.size >= REFRESH_BACKOFF_MAX) backoff.delete(backoff.keys().next().value!);
  backoff.set(id, now + REFRESH_BACKOFF_MS);
}

/** Whether a refresh of `lock` may start now: none under way, none failed just before. */
export function mayRefresh(policy: CachePolicy, lock: string, now: number): boolean {
  if (policy.filling.has(lock) || policy.refreshing.size >= REFRESH_MAX) return false;
  const id = keyHash(lock);
  const until = policy.refreshBackoff.get(id);
  if (until === undefined) return true;
  if (until > now) return false;
  policy.refreshBackoff.delete(id);
  return true;
}

/** Request fields the cache's own refresh does not take from the client that set it off. */
const NOT_REFRESHED = ["cache-control", "pragma", "if-none-match", "if-modified-since"];

/**
 * Refreshes a stale entry served under stale-while-revalidate, apart from the client's request
 * (whose answer has gone): a conditional request when the entry has validators, a 304 refreshes
 * it, a new answer replaces it as a miss would, and a failure (an error, 500, 502, 503, 504)
 * leaves it as it was until its window ends. Waiting requests collapse onto it.
 */
export async function refreshInBackground(
  ctx: RequestContext,
  deps: PipelineDeps,
  x: Exchange & { vary: string; entry: StoredResponse; lock: string },
): Promise<void> {
  const { entry, policy } = x;
  const { fill, release } = claim(policy, deps, x.lock);
  policy.refreshing.add(x.lock);
  const headers = new Headers(ctx.req.headers);
  for (const name of NOT_REFRESHED) headers.delete(name);
  // Its own request, never aborted by the client's connection; its own record of the exchange.
  const bg: RequestContext = {
    ...ctx,
    req: new Request(ctx.req.url, { headers }),
    body: undefined,
    extraResponseHeaders: [],
  };
  const route = ctx.route!.id;
  const fail = (error: string) => {
    deps.metrics.cacheRefresh(route, "failed");
    backOff(policy, x.lock, deps.clock.now());
    deps.logger.warn(
      "Background refresh of a stale stored response failed; it is served until its stale-while-revalidate window ends",
      {
        requestId: ctx.requestId,
        route: ctx.route!.id,
        upstream: bg.upstream,
        error,
      },
    );
  };
  const requestTime = deps.clock.now();
  const since = policy.store.epoch;
  try {
    const res = await proxyAction(bg, deps, x.route, {
      headers(h) {
        if (entry.etag !== null) h.set("if-none-match", entry.etag);
        if (entry.lastModified !== null) h.set("if-modified-since", entry.lastModified);
      },
    });
    if (ERROR_STATUS.has(res.status)) {
      await res.body?.cancel();
      fail(`status ${res.status}`);
      return;
    }
    if (res.status === 304 && (entry.etag !== null || entry.lastModified !== null)) {
      await res.body?.cancel();
      if (notModified(deps, x, { res, requestTime })) {
        deps.metrics.cacheRefresh(route, "refreshed");
      } else fail("a 304 named another entity tag; the stale entry is dropped");
      return;
    }
    const requestCc = parseCacheControl(null);
    const out = admit(bg, deps, res, {
      ...x,
      requestCc,
      fwd: "stale",
      requestTime,
      since,
      stale: x.vary,
      fill,
      release,
    });
    const whole = await drain(out.body, policy.maxObjectSize);
    if (whole) deps.metrics.cacheRefresh(route, "replaced");
    else fail("the answer's body failed midway");
  } catch (err) {
    fail(toProxyError(err).message);
  } finally {
    release();
    policy.refreshing.delete(x.lock);
  }
}

/**
 * Reads a body nobody else reads to its end (up to `limit` bytes, past which it cannot be stored
 * and is let go), so its copy is stored; false when it failed midway.
 */
async function drain(body: ReadableStream<Uint8Array> | null, limit: number): Promise<boolean> {
  if (body === null) return true;
  const reader = body.getReader();
  let n = 0;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) return true;
      n += r.value.byteLength;
      if (n > limit) {
        await reader.cancel();
        return true;
      }
    }
  } catch {
    return false; // not stored: the stale entry stays
  }
}

/** The failures a stale entry may stand in for (RFC 5861 §4): 500, 502, 503 and 504. */
export const ERROR_STATUS: ReadonlySet<number> = new Set([500, 502, 503, 504]);

/**
 * The stale entry instead of an upstream answer of 500, 502, 503 or 504 when its
 * `stale-if-error` allows (the answer's body is let go), else undefined.
 */
export async function staleInstead(
  ctx: RequestContext,
  deps: PipelineDeps,
  entry: StoredResponse,
  res: Response,
): Promise<Response | undefined> {
  if (!ERROR_STATUS.has(res.status)) return undefined;
  const stale = staleOnError(ctx, deps, entry, { status: res.status });
  if (stale) await res.body?.cancel();
  return stale;
}

/**
 * The stale entry as the answer to a failed exchange (an error Prox would answer 500, 502, 503
 * or 504 for, or such an upstream status), when its `stale-if-error` window still holds.
 */
export function staleOnError(
  ctx: RequestContext,
  deps: PipelineDeps,
  entry: StoredResponse,
  o: { err?: unknown; status?: number },
): Response | undefined {
  if (entry.staleIfError <= 0) return undefined;
  if (o.err !== undefined && !ERROR_STATUS.has(statusFor(toProxyError(o.err).kind))) {
    return undefined;
  }
  const age = entry.initialAge + Math.max(0, deps.clock.now() - entry.responseTime);
  if (age - entry.lifetime > entry.staleIfError) return undefined;
  // The failure the client does not see goes to the log, as a failed request's would.
  deps.logger.warn("Upstream failed; answered with a stale stored response (stale-if-error)", {
    requestId: ctx.requestId,
    route: ctx.route!.id,
    upstream: ctx.upstream,
    error: o.err === undefined ? `status ${o.status}` : toProxyError(o.err).message,
  });
  const fwdStatus = o.status === undefined ? "" : `; fwd-status=${o.status}`;
  return fromStore(ctx, entry, {
    age,
    status: `${NAME}; fwd=stale${fwdStatus}; detail=stale-if-error`,
  });
}
