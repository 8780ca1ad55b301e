// A route's response cache (`cache:` on proxy and load_balance routes), around the proxy action:
// look up → serve a fresh entry | revalidate a stale one | wait for a request already fetching the
// entry (collapsing) | forward and copy the body into a new entry as it streams to the client; a
// stale entry stands in for a failed upstream under stale-if-error. Response rules and compression
// run after this on every answer, stored or not; request header rules run before the Vary
// comparison. RFC 9111 rules are in domain/cache_control.ts, the bounded store in
// domain/response_cache.ts, what is read of the request in cache_request.ts, the answers built from
// entries and the copying of miss bodies in cache_response.ts.

import {
  mergeNotModified,
  parseCacheControl,
  requestNeeds,
  staleUse,
  unstorableReason,
  usableWithoutOrigin,
  varyNames,
} from "../domain/cache_control.ts";
import type { Directives } from "../domain/cache_control.ts";
import type { ResponseCache, StoredResponse } from "../domain/response_cache.ts";
import { entrySize, varyKey } from "../domain/response_cache.ts";
import type { CountedResponse } from "../ports.ts";
import { BODY_BYTES } from "../ports.ts";
import { describe, fromStore, teeBody, withStatus } from "./cache_response.ts";
import { BYPASS, lookup, primaryKey, SAFE, upstreamView } from "./cache_request.ts";
import type { UpstreamRoute } from "./cache_request.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import { proxyAction } from "./actions/proxy.ts";
import { statusFor, toProxyError } from "../domain/errors.ts";
import { errorResponse } from "./respond.ts";

/** A request fetching an entry that others wait for (request collapsing). */
export interface Fill {
  /** Settles when the entry is stored, or known not to be. */
  settled: Promise<void>;
  /** Requests waiting for it. */
  waiters: number;
}

/** A route's compiled `cache`: its store and limits. */
export interface CachePolicy {
  store: ResponseCache;
  /** Entries being fetched, by primary and secondary key; bounded by the requests in progress. */
  filling: Map<string, Fill>;
  /**
   * Until when (ms) requests for a key known to answer uncacheably go upstream at once rather
   * than wait for each other (Varnish's hit-for-miss); bounded by PASS_MAX.
   */
  passes: Map<string, number>;
  /** Keys being refreshed in the background (stale-while-revalidate); bounded by REFRESH_MAX. */
  refreshing: Set<string>;
  maxObjectSize: number;
  /** Freshness for cacheable responses that carry none; undefined: such responses are not stored. */
  defaultTtl?: number;
  /** `stale_while_revalidate` for responses that state none, ms. */
  defaultSwr?: number;
}

/** The outcomes counted in `prox_cache_requests_total`. */
export type CacheResult = "hit" | "updating" | "miss" | "stale" | "revalidated" | "bypass";

/** Cache-Status member name (RFC 9211 §2). */
const NAME = "prox";

/**
 * How long a request waits for another one fetching the same entry before it goes upstream
 * itself (nginx's proxy_cache_lock_timeout default).
 */
export const COLLAPSE_WAIT_MS = 5_000;

/** How long an uncacheable answer keeps requests for its key from waiting for each other. */
export const PASS_MS = 60_000;
/** Most keys remembered as uncacheable per route. */
export const PASS_MAX = 10_000;
/**
 * Most background refreshes under way per route; past it a stale entry is still served in its
 * window, and a later request starts the refresh.
 */
export const REFRESH_MAX = 64;

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
    return withStatus(res, `${NAME}; fwd=method; fwd-status=${res.status}`);
  }
  // The request as the upstream gets it: a rule that removes Cache-Control, for one, keeps
  // clients from forcing a refetch.
  const view = upstreamView(ctx, deps, route);
  if (BYPASS.some((h) => view(h) !== null)) {
    metric("bypass");
    return withStatus(await proxyAction(ctx, deps, route), `${NAME}; fwd=bypass`);
  }
  const requestCc = parseCacheControl(view("cache-control"));
  const needs = requestNeeds(requestCc);
  const primary = primaryKey(ctx, route);
  const names = store.varyOf(primary);
  const vary = names && names[0] !== "*" ? varyKey(names, view) : undefined;
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
      if (!policy.filling.has(lock) && policy.refreshing.size < REFRESH_MAX) {
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
      const x = { route, policy, primary, view, requestCc, vary: vary!, entry, fwd };
      return await revalidate(ctx, deps, x);
    }
  }
  if (needs.onlyIfCached) {
    metric("miss");
    const res = errorResponse("timeout", ctx.requestId, {
      message: "Not in the cache (the request said only-if-cached)",
    });
    res.headers.set("cache-status", `${NAME}; fwd=${fwd}; detail=only-if-cached`);
    return res;
  }
  // Collapsing (RFC 9111 §4): while another request fetches this entry, wait for it rather
  // than send the same request upstream again.
  const lock = `${primary}\n${vary ?? ""}`;
  const filling = policy.filling.get(lock);
  const pass = policy.passes.get(lock);
  if (filling && !needs.revalidate && !(pass !== undefined && pass > deps.clock.now())) {
    filling.waiters++;
    await settledWithin(filling.settled, COLLAPSE_WAIT_MS);
    filling.waiters--;
    const now = deps.clock.now();
    const got = lookup(policy.store, primary, view);
    if (got) {
      const age = got.initialAge + Math.max(0, now - got.responseTime);
      if (usableWithoutOrigin({ age, lifetime: got.lifetime, noCache: got.noCache }, needs)) {
        metric("hit");
        const ttl = Math.floor((got.lifetime - age) / 1000);
        return fromStore(ctx, got, { age, status: `${NAME}; hit; ttl=${ttl}; collapsed` });
      }
    }
  }
  metric(entry ? "stale" : "miss");
  const stale = entry ? vary : undefined;
  let fill: Fill | undefined;
  if (method === "GET" && !requestCc.has("no-store") && !policy.filling.has(lock)) {
    ({ fill, release } = claim(policy, deps, lock));
  }
  const x = { route, policy, primary, view, requestCc, fwd, stale, entry, fill, release };
  try {
    return await forwardAndStore(ctx, deps, x);
  } catch (err) {
    release();
    throw err;
  }
}

/**
 * Registers the caller as the one fetching the entry `lock`, for other requests to wait for, and
 * returns the release that lets them go on (once; `uncacheable`: for a while, requests for the
 * key no longer wait for each other).
 */
function claim(
  policy: CachePolicy,
  deps: PipelineDeps,
  lock: string,
): { fill: Fill; release: (uncacheable?: boolean) => void } {
  const d = Promise.withResolvers<void>();
  const fill: Fill = { settled: d.promise, waiters: 0 };
  policy.filling.set(lock, fill);
  let released = false;
  const release = (uncacheable = false) => {
    if (released) return;
    released = true;
    if (policy.filling.get(lock) === fill) policy.filling.delete(lock);
    policy.passes.delete(lock);
    if (uncacheable) {
      if (policy.passes.size >= PASS_MAX) {
        policy.passes.delete(policy.passes.keys().next().value!);
      }
      policy.passes.set(lock, deps.clock.now() + PASS_MS);
    }
    d.resolve();
  };
  return { fill, release };
}

/** Resolves when `p` settles or `ms` pass, whichever is first. */
async function settledWithin(p: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([p, new Promise<void>((r) => timer = setTimeout(r, ms))]);
  clearTimeout(timer);
}

interface Exchange {
  route: UpstreamRoute;
  policy: CachePolicy;
  primary: string;
  /** The request's fields as the upstream gets them. */
  view: (name: string) => string | null;
  requestCc: Directives;
  /** Set when requests may wait for the entry this one fetches. */
  fill?: Fill;
  /**
   * Lets those requests go on: called once the entry is stored or known not to be (`true` when
   * the answer itself is uncacheable).
   */
  release?: (uncacheable?: boolean) => void;
}

/** Asks the upstream whether a stale entry still holds (RFC 9111 §4.3.1); a 304 refreshes it. */
async function revalidate(
  ctx: RequestContext,
  deps: PipelineDeps,
  x: Exchange & { vary: string; entry: StoredResponse; fwd: string },
): Promise<Response> {
  const { entry } = x;
  const requestTime = deps.clock.now();
  let res: Response;
  try {
    res = await proxyAction(ctx, deps, x.route, {
      headers(h) {
        for (const name of ["if-none-match", "if-modified-since"]) h.delete(name);
        if (entry.etag !== null) h.set("if-none-match", entry.etag);
        if (entry.lastModified !== null) h.set("if-modified-since", entry.lastModified);
      },
    });
  } catch (err) {
    const stale = staleOnError(ctx, deps, entry, { err });
    if (!stale) throw err;
    counted(ctx, deps, "stale");
    return stale;
  }
  const instead = await staleInstead(ctx, deps, entry, res);
  if (instead) {
    counted(ctx, deps, "stale");
    return instead;
  }
  if (res.status !== 304) {
    counted(ctx, deps, "stale");
    return admit(ctx, deps, res, { ...x, requestTime, stale: x.vary });
  }
  counted(ctx, deps, "revalidated");
  await res.body?.cancel();
  const updated = notModified(deps, x, { res, requestTime });
  const status = `${NAME}; fwd=${x.fwd}; fwd-status=304`;
  return fromStore(ctx, updated, { age: updated.initialAge, status });
}

/**
 * The stored entry refreshed by a 304's fields and timing (RFC 9111 §4.3.4), updated in the store
 * (or dropped when the 304 sets a cookie).
 */
function notModified(
  deps: PipelineDeps,
  x: Exchange & { vary: string; entry: StoredResponse },
  o: { res: Response; requestTime: number },
): StoredResponse {
  const { entry, policy } = x;
  const fresh: [string, string][] = [];
  o.res.headers.forEach((v, k) => fresh.push([k, v]));
  const headers = mergeNotModified(entry.headers, fresh);
  const updated = describe(headers, {
    status: entry.status,
    statusText: entry.statusText,
    requestTime: o.requestTime,
    responseTime: deps.clock.now(),
    defaultTtl: policy.defaultTtl,
    defaultSwr: policy.defaultSwr,
  });
  updated.body = entry.body;
  if (o.res.headers.has("set-cookie")) policy.store.delete(x.primary, x.vary);
  else policy.store.update(x.primary, x.vary, updated);
  return updated;
}

/** Request fields the cache's own refresh does not take from the client that set it off. */
const NOT_REFRESHED = ["cache-control", "pragma", "if-none-match", "if-modified-since"];

/**
 * Refreshes a stale entry served under stale-while-revalidate, apart from the client's request
 * (whose answer has gone): a conditional request when the entry has validators, a 304 refreshes
 * it, a new answer replaces it as a miss would, and a failure (an error, 500, 502, 503, 504)
 * leaves it as it was until its window ends. Waiting requests collapse onto it.
 */
async function refreshInBackground(
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
  const fail = (error: string) =>
    deps.logger.warn(
      "Background refresh of a stale stored response failed; it is served until its stale-while-revalidate window ends",
      {
        requestId: ctx.requestId,
        route: ctx.route!.id,
        upstream: bg.upstream,
        error,
      },
    );
  const requestTime = deps.clock.now();
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
      notModified(deps, x, { res, requestTime });
      return;
    }
    const requestCc = parseCacheControl(null);
    const out = admit(bg, deps, res, {
      ...x,
      requestCc,
      fwd: "stale",
      requestTime,
      stale: x.vary,
      fill,
      release,
    });
    await drain(out.body, policy.maxObjectSize);
  } catch (err) {
    fail(toProxyError(err).message);
  } finally {
    release();
    policy.refreshing.delete(x.lock);
  }
}

/** Reads a body nobody else reads to its end (up to `limit` bytes), so its copy is stored. */
async function drain(body: ReadableStream<Uint8Array> | null, limit: number): Promise<void> {
  if (body === null) return;
  const reader = body.getReader();
  let n = 0;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) return;
      n += r.value.byteLength;
      if (n > limit) {
        await reader.cancel();
        return;
      }
    }
  } catch {
    // A body that failed is not stored; nothing else to do.
  }
}

/** Forwards a request the store cannot answer and stores the response when allowed. */
async function forwardAndStore(
  ctx: RequestContext,
  deps: PipelineDeps,
  x: Exchange & { fwd: string; stale: string | undefined; entry?: StoredResponse },
): Promise<Response> {
  const requestTime = deps.clock.now();
  let res: Response;
  try {
    res = await proxyAction(ctx, deps, x.route);
  } catch (err) {
    const stale = x.entry && staleOnError(ctx, deps, x.entry, { err });
    if (!stale) throw err;
    x.release?.();
    return stale;
  }
  const instead = x.entry && await staleInstead(ctx, deps, x.entry, res);
  if (instead) {
    x.release?.();
    return instead;
  }
  return admit(ctx, deps, res, { ...x, requestTime });
}

/** The failures a stale entry may stand in for (RFC 5861 §4): 500, 502, 503 and 504. */
const ERROR_STATUS: ReadonlySet<number> = new Set([500, 502, 503, 504]);

/**
 * The stale entry instead of an upstream answer of 500, 502, 503 or 504 when its
 * `stale-if-error` allows (the answer's body is let go), else undefined.
 */
async function staleInstead(
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
function staleOnError(
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

/**
 * Decides whether the upstream's response is stored, and tees its body into the store if so.
 * `stale`: the variant of the stale entry this request found, which a new full response replaces.
 */
function admit(
  ctx: RequestContext,
  deps: PipelineDeps,
  res: Response,
  x: Exchange & { fwd: string; requestTime: number; stale: string | undefined },
): Response {
  const h = res.headers;
  let names = varyNames(h.get("vary"));
  // An app that echoes the Origin in Access-Control-Allow-Origin but forgets `Vary: Origin` (a
  // common slip) would have one origin's answer served to the others: it is keyed by Origin too.
  const acao = h.get("access-control-allow-origin");
  if (acao !== null && acao !== "*" && names[0] !== "*" && !names.includes("origin")) {
    names = [...names, "origin"].sort();
  }
  const responseCc = parseCacheControl(h.get("cache-control"));
  let status = `${NAME}; fwd=${x.fwd}; fwd-status=${res.status}`;
  const why = ctx.req.method === "HEAD" ? "head" : unstorableReason({
    status: res.status,
    response: responseCc,
    request: x.requestCc,
    hasExpires: h.has("expires"),
    varyStar: names[0] === "*",
    hasSetCookie: h.has("set-cookie"),
    // A request forward_auth let through carries an identity as one with Authorization does
    // (RFC 9111 §3.5): its answer is shared only when it says so (public, s-maxage…).
    authorized: x.view("authorization") !== null || ctx.route!.forwardAuth !== null,
    defaultTtl: x.policy.defaultTtl,
  });
  const declared = h.get("content-length");
  const tooLarge = declared !== null && Number(declared) > x.policy.maxObjectSize;
  if (why !== null || tooLarge) {
    // A new full response to the same request supersedes the stale entry (a 304 answers the
    // client's own condition and says nothing of it; a HEAD carries no body).
    const full = why !== "head" && res.status !== 304;
    if (x.stale !== undefined && full) x.policy.store.delete(x.primary, x.stale);
    // Said by the answer, not by this request: the next ones would get the same.
    x.release?.(why !== "head" && why !== "request no-store" && why !== "authorization");
    return withStatus(res, status);
  }
  const headers: [string, string][] = [];
  h.forEach((v, k) => headers.push([k, v]));
  const value = describe(headers, {
    status: res.status,
    statusText: res.statusText,
    requestTime: x.requestTime,
    responseTime: deps.clock.now(),
    defaultTtl: x.policy.defaultTtl,
    defaultSwr: x.policy.defaultSwr,
  });
  if (value.lifetime <= value.initialAge && value.etag === null && value.lastModified === null) {
    // Stale on arrival and nothing to revalidate it with (max-age=0, an Expires in the past):
    // it could only ever be fetched again.
    if (x.stale !== undefined) x.policy.store.delete(x.primary, x.stale);
    x.release?.(true);
    return withStatus(res, status);
  }
  const vary = varyKey(names, x.view);
  if (
    declared !== null &&
    entrySize(`${x.primary}\n${vary}`, value) + Number(declared) > x.policy.store.capacity
  ) {
    // With its header fields and key, more than the whole store holds.
    if (x.stale !== undefined) x.policy.store.delete(x.primary, x.stale);
    x.release?.(true);
    return withStatus(res, status);
  }
  const store = (body: Uint8Array<ArrayBuffer> | null) => {
    // Not when cut short: an upstream that closed early without failing the body.
    if (body !== null && (declared === null || Number(declared) === body.byteLength)) {
      value.body = body;
      x.policy.store.set(x.primary, { names, vary, value });
    }
    x.release?.();
  };
  // RFC 9211 §2.6 allows `stored` only when it was: said when the body's length is known and
  // fits, not for one of unknown length (chunked) that may still turn out too large once the
  // header has gone; that one's next request shows the outcome (hit or miss).
  if (res.body === null || declared !== null) status += "; stored";
  if (res.body === null) {
    store(new Uint8Array(0));
    return withStatus(res, status);
  }
  const fill = x.fill;
  const tee = teeBody(res.body, {
    limit: x.policy.maxObjectSize,
    done: store,
    waits: () => (fill?.waiters ?? 0) > 0,
  });
  const out: CountedResponse = new Response(tee.body, {
    status: res.status,
    statusText: res.statusText,
    headers: h,
  });
  out[BODY_BYTES] = tee.counter;
  return withStatus(out, status);
}
