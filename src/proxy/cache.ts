// A route's response cache (`cache:` on proxy and load_balance routes), around the proxy action:
// look up → serve a fresh entry | revalidate a stale one | wait for a request already fetching the
// entry (collapsing) | forward and copy the body into a new entry as it streams to the client; a
// stale entry stands in for a failed upstream under stale-if-error. Response rules and compression
// run after this on every answer, stored or not; request header rules run before the Vary
// comparison. RFC 9111 rules are in domain/cache_control.ts, the bounded store in
// domain/response_cache.ts, what is read of the request in cache_request.ts, the answers built from
// entries and the copying of miss bodies in cache_response.ts, claiming and storing entries in
// cache_fill.ts, stale-while-revalidate and stale-if-error in cache_stale.ts, ranges of stored
// answers in cache_range.ts.

import {
  parseCacheControl,
  requestNeeds,
  staleUse,
  usableWithoutOrigin,
} from "../domain/cache_control.ts";
import type { ResponseCache, StoredResponse } from "../domain/response_cache.ts";
import { keyHash } from "../domain/response_cache.ts";
import { fromStore, NAME, withStatus } from "./cache_response.ts";
import { rangeFromStore } from "./cache_range.ts";
import {
  BYPASS,
  carriesBody,
  entryKey,
  lookup,
  primaryKey,
  RANGED,
  SAFE,
  upstreamView,
} from "./cache_request.ts";
import type { UpstreamRoute } from "./cache_request.ts";
import {
  admit,
  claim,
  fillSignal,
  notModified,
  stopWaiting,
  withoutTagFields,
} from "./cache_fill.ts";
import type { Exchange, Fill } from "./cache_fill.ts";
import {
  mayRefresh,
  REFRESH_MAX,
  refreshInBackground,
  staleInstead,
  staleOnError,
} from "./cache_stale.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import { proxyAction } from "./actions/proxy.ts";
import { errorResponse } from "./respond.ts";

export type { Fill };
export { REFRESH_MAX };

/** A route's compiled `cache`: its store and limits. */
export interface CachePolicy {
  store: ResponseCache;
  /** Entries being fetched, by primary and secondary key; bounded by the requests in progress. */
  filling: Map<string, Fill>;
  /**
   * Until when (ms) requests for a key known to answer uncacheably go upstream at once rather
   * than wait for each other (Varnish's hit-for-miss); by keyHash, bounded by PASS_MAX.
   */
  passes: Map<number, number>;
  /** Keys being refreshed in the background (stale-while-revalidate); bounded by REFRESH_MAX. */
  refreshing: Set<string>;
  /**
   * Until when (ms) no new refresh starts for a key whose refresh failed; by keyHash, bounded by
   * REFRESH_BACKOFF_MAX.
   */
  refreshBackoff: Map<number, number>;
  /** Bytes of miss bodies read ahead of their clients (teeBody); bounded by READ_AHEAD_MAX. */
  readAhead: { bytes: number };
  /**
   * Bytes of copies kept of bodies still arriving (teeBody), up to the store's capacity: past it
   * a body is not stored.
   */
  inFlight: { bytes: number };
  maxObjectSize: number;
  /** Freshness for cacheable responses that carry none; undefined: such responses are not stored. */
  defaultTtl?: number;
  /** `stale_while_revalidate` for responses that state none, ms. */
  defaultSwr?: number;
}

/** The outcomes counted in `prox_cache_requests_total`. */
export type CacheResult = "hit" | "updating" | "miss" | "stale" | "revalidated" | "bypass";

/**
 * How long a request waits for another one fetching the same entry before it goes upstream
 * itself (nginx's proxy_cache_lock_timeout default).
 */
export const COLLAPSE_WAIT_MS = 5_000;

/** Counts what the cache did (metrics) and notes it for the access line. */
function counted(ctx: RequestContext, deps: PipelineDeps, r: CacheResult): void {
  ctx.cache = r;
  deps.metrics.cache(ctx.route!.id, r);
}

/** Proxies through the route's cache. */
export async function cachedProxy(
  ctx: RequestContext,
  deps: PipelineDeps,
  route: UpstreamRoute,
  policy: CachePolicy,
): Promise<Response> {
  const method = ctx.req.method;
  const store = policy.store;
  /**
   * Lets requests waiting for this one's entry go on; set when this request fetches one. `pass`:
   * the answer was uncacheable, so later requests for the key need not wait.
   */
  let release = (_pass?: boolean) => {};
  const metric = (r: CacheResult) => counted(ctx, deps, r);
  if (method !== "GET" && method !== "HEAD") {
    const res = await proxyAction(ctx, deps, route);
    // RFC 9111 §4.4: a successful unsafe request makes what is stored for its URI outdated.
    if (!SAFE.has(method) && res.status < 400) store.invalidate(primaryKey(ctx, route));
    // RFC 9211 §2.2: forwarded because of its method.
    return withStatus(withoutTagFields(res), `${NAME}; fwd=method; fwd-status=${res.status}`);
  }
  // The request as the upstream gets it: a rule that removes Cache-Control, for one, keeps
  // clients from forcing a refetch.
  const view = upstreamView(ctx, deps, route);
  const ranged = RANGED.some((h) => view(h) !== null);
  if (BYPASS.some((h) => view(h) !== null) || carriesBody(ctx) || ranged) {
    const hit = ranged && !carriesBody(ctx) && !BYPASS.some((h) => view(h) !== null) &&
      rangeFromStore(ctx, deps, { route, policy, view });
    if (hit) {
      metric("hit");
      return hit;
    }
    // RFC 9111 §5.2.1.7: the stored answer or 504, never the upstream.
    if (parseCacheControl(view("cache-control")).has("only-if-cached")) {
      metric("miss");
      return onlyIfCachedMiss(ctx, "bypass");
    }
    metric("bypass");
    const res = withoutTagFields(await proxyAction(ctx, deps, route));
    return withStatus(res, `${NAME}; fwd=bypass`);
  }
  const requestCc = parseCacheControl(view("cache-control"));
  const needs = requestNeeds(requestCc);
  const primary = primaryKey(ctx, route);
  let names = store.varyOf(primary);
  let vary = names && names[0] !== "*" ? entryKey(names, view) : undefined;
  const lock = `${primary}\n${vary ?? ""}`;
  const mayFill = method === "GET" && !requestCc.has("no-store");
  /** A fill claimed for this request while it waited as a reload (go upstream and fill it). */
  let claimed: ReturnType<typeof claim> | undefined;
  if (needs.revalidate && !needs.onlyIfCached && !passing(policy, lock, deps)) {
    const got = await reloadCollapsed(ctx, deps, { policy, primary, view, lock, needs, mayFill });
    if (got instanceof Response) {
      metric("hit");
      return got;
    }
    claimed = got;
    // What the fetches it waited for stored (an entry fetched before it arrived, to revalidate).
    names = store.varyOf(primary);
    vary = names && names[0] !== "*" ? entryKey(names, view) : undefined;
  }
  const entry = vary === undefined ? undefined : store.get(primary, vary);
  let fwd = names === undefined ? "uri-miss" : "vary-miss";
  if (entry) {
    const now = deps.clock.now();
    const age = entry.initialAge + Math.max(0, now - entry.responseTime);
    if (usableWithoutOrigin({ age, lifetime: entry.lifetime, noCache: entry.noCache }, needs)) {
      metric("hit");
      const ttl = Math.floor((entry.lifetime - age) / 1000);
      return fromStore(ctx, entry, { age, status: `${NAME}; hit; ttl=${ttl}` });
    }
    const use = staleUse({ ...entry, age }, needs);
    if (use === "stale-while-revalidate") {
      // RFC 5861 §3: served at once, refreshed in the background, one refresh per key (none
      // while a request already fetches it).
      metric("updating");
      const lock = `${primary}\n${vary}`;
      if (mayRefresh(policy, lock, now)) {
        const x = { route, policy, primary, view, requestCc, vary: vary!, entry, lock };
        void refreshInBackground(ctx, deps, x);
      }
      const ttl = Math.floor((entry.lifetime - age) / 1000);
      return fromStore(ctx, entry, {
        age,
        status: `${NAME}; hit; ttl=${ttl}; fwd=stale; detail=stale-while-revalidate`,
      });
    }
    if (use === "max-stale") {
      // The client accepts it stale (RFC 9111 §5.2.1.2); a negative ttl says how stale (RFC 9211).
      metric("hit");
      const ttl = Math.floor((entry.lifetime - age) / 1000);
      return fromStore(ctx, entry, { age, status: `${NAME}; hit; ttl=${ttl}; detail=max-stale` });
    }
    // RFC 9211 §2.2: `request` when a fresh entry was there but the request's directives
    // refused it, `stale` otherwise.
    fwd = !entry.noCache && entry.lifetime > age ? "request" : "stale";
    if (!needs.onlyIfCached && (entry.etag !== null || entry.lastModified !== null)) {
      // Claimed (when none is under way) for reloads to wait for.
      if (!claimed && mayFill && !policy.filling.has(lock)) claimed = claim(policy, deps, lock);
      const x = { route, policy, primary, view, requestCc, vary: vary!, entry, fwd, ...claimed };
      try {
        return await revalidate(ctx, deps, x);
      } catch (err) {
        if (claimed) failed(claimed, { err });
        throw err;
      }
    }
  }
  if (needs.onlyIfCached) {
    metric("miss");
    return onlyIfCachedMiss(ctx, fwd);
  }
  // Collapsing (RFC 9111 §4): while another request fetches this entry, wait for it rather
  // than send the same request upstream again. One that failed (an error, or a failing status a
  // stale entry stood in for) is followed at once by another waiting request's fetch: the others
  // wait for that one (as nginx's cache lock), within the same COLLAPSE_WAIT_MS.
  const waitStart = deps.clock.monotonic();
  for (
    let filling = policy.filling.get(lock);
    filling && !needs.revalidate && !passing(policy, lock, deps);
    filling = policy.filling.get(lock)
  ) {
    const left = COLLAPSE_WAIT_MS - (deps.clock.monotonic() - waitStart);
    if (left <= 0) break;
    filling.waiters++;
    const settled = await settledWithin(filling.settled, left);
    stopWaiting(filling);
    const now = deps.clock.now();
    const got = lookup(policy.store, primary, view);
    if (got) {
      const age = got.initialAge + Math.max(0, now - got.responseTime);
      if (usableWithoutOrigin({ age, lifetime: got.lifetime, noCache: got.noCache }, needs)) {
        metric("hit");
        const ttl = Math.floor((got.lifetime - age) / 1000);
        return fromStore(ctx, got, { age, status: `${NAME}; hit; ttl=${ttl}; collapsed` });
      }
      // The fetch failed as this request's would: a stale entry stands in as it did for that one.
      const stale = filling.failed && staleOnError(ctx, deps, got, filling.failed);
      if (stale) {
        metric("stale");
        return stale;
      }
    }
    // Nothing stored for a reason of the answer's own or its request's (Authorization, a 304 to
    // its client's condition): the others go on together, never one after another.
    if (!settled || !filling.failed) break;
  }
  metric(entry ? "stale" : "miss");
  const stale = entry ? vary : undefined;
  let fill: Fill | undefined;
  if (claimed) ({ fill, release } = claimed);
  else if (mayFill && !policy.filling.has(lock)) ({ fill, release } = claim(policy, deps, lock));
  const x = { route, policy, primary, view, requestCc, fwd, stale, entry, fill, release };
  try {
    return await forwardAndStore(ctx, deps, x);
  } catch (err) {
    failed(x, { err });
    throw err;
  }
}

/** The 504 for an only-if-cached request the store cannot answer (RFC 9111 §5.2.1.7). */
function onlyIfCachedMiss(ctx: RequestContext, fwd: string): Response {
  const res = errorResponse("timeout", ctx.requestId, {
    message: "Not in the cache (the request said only-if-cached)",
  });
  res.headers.set("cache-status", `${NAME}; fwd=${fwd}; detail=only-if-cached`);
  return res;
}

/**
 * Lets the requests waiting for a fill go on after it failed (an error, a failing status a stale
 * entry stood in for): the first of them fetches, the others wait for it.
 */
function failed(
  x: { fill?: Fill; release?: (uncacheable?: boolean) => void },
  why: { err?: unknown; status?: number },
): void {
  if (x.fill) x.fill.failed = why;
  x.release?.();
}

/** Resolves when `p` settles (true) or `ms` pass (false), whichever is first. */
async function settledWithin(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settled = await Promise.race([
    p.then(() => true),
    new Promise<boolean>((r) => timer = setTimeout(() => r(false), ms)),
  ]);
  clearTimeout(timer);
  return settled;
}

/** Whether requests for `lock` go upstream without waiting (it answered uncacheably lately). */
function passing(policy: CachePolicy, lock: string, deps: PipelineDeps): boolean {
  const pass = policy.passes.get(keyHash(lock));
  return pass !== undefined && pass > deps.clock.now();
}

/**
 * A reload (request `no-cache` or `max-age=0`, RFC 9111 §5.2.1.4) waits for a fetch of its entry
 * under way and is answered with what that stored when its request left at or after the reload
 * arrived: an answer the origin gave since, as the reload asks. A fetch that began earlier is
 * waited out, then the next one, which the first reload to wake claims (returned, to go upstream
 * with) and the others wait for: a flood of reloads costs one upstream request per fetch time, not
 * one each. Undefined: go upstream without a claim (none under way, or no usable answer).
 */
async function reloadCollapsed(
  ctx: RequestContext,
  deps: PipelineDeps,
  x: {
    policy: CachePolicy;
    primary: string;
    view: (name: string) => string | null;
    lock: string;
    needs: ReturnType<typeof requestNeeds>;
    mayFill: boolean;
  },
): Promise<Response | ReturnType<typeof claim> | undefined> {
  const { policy, lock } = x;
  let waited = false;
  for (let round = 0; round < 2; round++) {
    const filling = policy.filling.get(lock);
    if (!filling) {
      // Claimed at once, before another woken reload looks: it waits for this one.
      return waited && x.mayFill ? claim(policy, deps, lock) : undefined;
    }
    filling.waiters++;
    const settled = await settledWithin(filling.settled, COLLAPSE_WAIT_MS);
    stopWaiting(filling);
    if (!settled || passing(policy, lock, deps)) return undefined;
    waited = true;
    const got = lookup(policy.store, x.primary, x.view);
    if (!got || got.requestTime < ctx.startWall) continue; // fetched before it arrived
    const age = got.initialAge + Math.max(0, deps.clock.now() - got.responseTime);
    // Fresh from the origin since it arrived: its own max-age=0 or no-cache is met; the answer's
    // own no-cache (revalidate on every use) and the request's min-fresh still count.
    const needs = { ...x.needs, revalidate: false, maxAge: Infinity };
    if (!usableWithoutOrigin({ age, lifetime: got.lifetime, noCache: got.noCache }, needs)) {
      return undefined;
    }
    const ttl = Math.floor((got.lifetime - age) / 1000);
    return fromStore(ctx, got, { age, status: `${NAME}; hit; ttl=${ttl}; collapsed` });
  }
  return undefined;
}

/** Asks the upstream whether a stale entry still holds (RFC 9111 §4.3.1); a 304 refreshes it. */
async function revalidate(
  ctx: RequestContext,
  deps: PipelineDeps,
  x: Exchange & { vary: string; entry: StoredResponse; fwd: string },
): Promise<Response> {
  const { entry } = x;
  const requestTime = deps.clock.now();
  const since = x.policy.store.epoch;
  let res: Response;
  const detached = x.fill && fillSignal(ctx, x.fill);
  try {
    res = await proxyAction(ctx, deps, x.route, {
      headers(h) {
        for (const name of ["if-none-match", "if-modified-since"]) h.delete(name);
        if (entry.etag !== null) h.set("if-none-match", entry.etag);
        if (entry.lastModified !== null) h.set("if-modified-since", entry.lastModified);
      },
      signal: detached?.signal,
    });
    detached?.done();
  } catch (err) {
    detached?.done();
    failed(x, { err });
    const stale = staleOnError(ctx, deps, entry, { err });
    if (!stale) throw err;
    counted(ctx, deps, "stale");
    return stale;
  }
  const instead = await staleInstead(ctx, deps, entry, res);
  if (instead) {
    failed(x, { status: res.status });
    counted(ctx, deps, "stale");
    return instead;
  }
  if (res.status !== 304) {
    counted(ctx, deps, "stale");
    return admit(ctx, deps, res, { ...x, requestTime, since, stale: x.vary });
  }
  await res.body?.cancel();
  const updated = notModified(deps, x, { res, requestTime });
  if (!updated) {
    // A 304 for another representation: the entry is gone, the request goes again as it came.
    counted(ctx, deps, "stale");
    return forwardAndStore(ctx, deps, { ...x, stale: undefined, entry: undefined });
  }
  counted(ctx, deps, "revalidated");
  x.release?.();
  const status = `${NAME}; fwd=${x.fwd}; fwd-status=304`;
  return fromStore(ctx, updated, { age: updated.initialAge, status });
}

/** Forwards a request the store cannot answer and stores the response when allowed. */
async function forwardAndStore(
  ctx: RequestContext,
  deps: PipelineDeps,
  x: Exchange & { fwd: string; stale: string | undefined; entry?: StoredResponse },
): Promise<Response> {
  const requestTime = deps.clock.now();
  const since = x.policy.store.epoch;
  let res: Response;
  const detached = x.fill && fillSignal(ctx, x.fill);
  try {
    res = await proxyAction(ctx, deps, x.route, { signal: detached?.signal });
    detached?.done();
  } catch (err) {
    detached?.done();
    const stale = x.entry && staleOnError(ctx, deps, x.entry, { err });
    if (!stale) throw err;
    failed(x, { err });
    return stale;
  }
  const instead = x.entry && await staleInstead(ctx, deps, x.entry, res);
  if (instead) {
    failed(x, { status: res.status });
    return instead;
  }
  return admit(ctx, deps, res, { ...x, requestTime, since });
}
