// A route's response cache (`cache:` on proxy and load_balance routes), around the proxy action:
// look up → serve a fresh entry | revalidate a stale one | forward and copy the body into a new
// entry as it streams to the client. Response rules and compression run after this on every
// answer, stored or not; request header rules run before the Vary comparison. RFC 9111 rules
// are in domain/cache_control.ts, the bounded store in domain/response_cache.ts, the answers
// built from entries and the copying of miss bodies in cache_response.ts.

import {
  mergeNotModified,
  parseCacheControl,
  requestNeeds,
  unstorableReason,
  usableWithoutOrigin,
  varyNames,
} from "../domain/cache_control.ts";
import type { Directives } from "../domain/cache_control.ts";
import type { ResponseCache } from "../domain/response_cache.ts";
import { varyKey } from "../domain/response_cache.ts";
import type { StoredResponse } from "../domain/response_cache.ts";
import type { LoadBalanceRouteConfig, ProxyRouteConfig } from "../config/schema.ts";
import { BODY_BYTES } from "../ports.ts";
import type { CountedResponse } from "../ports.ts";
import { describe, fromStore, teeBody, withStatus } from "./cache_response.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import { proxyAction, requestHeaderRule, targetOf, upstreamHeaders } from "./actions/proxy.ts";
import { BROWSER_HEADERS, HOP_BY_HOP } from "../domain/headers.ts";
import type { HeaderList } from "../domain/header_list.ts";
import { applyHeaderRules, placeholderValues } from "./filters/rules.ts";
import { errorResponse } from "./respond.ts";

/** A route's compiled `cache`: its store and limits. */
export interface CachePolicy {
  store: ResponseCache;
  maxObjectSize: number;
  /** Freshness for cacheable responses that carry none; undefined: such responses are not stored. */
  defaultTtl?: number;
}

/** The outcomes counted in `prox_cache_requests_total`. */
export type CacheResult = "hit" | "miss" | "stale" | "revalidated" | "bypass";

/** Cache-Status member name (RFC 9211 §2). */
const NAME = "prox";

/** Methods that leave stored responses alone (RFC 9110 §9.2.1); others invalidate the URI. */
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** Request fields whose meaning a stored full response cannot answer: forwarded untouched. */
const BYPASS = ["range", "if-match", "if-unmodified-since", "if-range"];

type UpstreamRoute = ProxyRouteConfig | LoadBalanceRouteConfig;

/** The URI part of the cache key: scheme, host and the upstream path with its full query. */
export function primaryKey(ctx: RequestContext, route: UpstreamRoute): string {
  const target = targetOf(ctx, route, ctx.route!.targets[0]).path;
  return `${ctx.scheme} ${ctx.host.toLowerCase()} ${target}`;
}

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
  const metric = (r: CacheResult) => counted(ctx, deps, r);
  if (method !== "GET" && method !== "HEAD") {
    const res = await proxyAction(ctx, deps, route);
    // RFC 9111 §4.4: a successful unsafe request makes what is stored for its URI outdated.
    if (!SAFE.has(method) && res.status < 400) store.invalidate(primaryKey(ctx, route));
    return res;
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
  metric(entry ? "stale" : "miss");
  const stale = entry ? vary : undefined;
  const x = { route, policy, primary, view, requestCc, fwd, stale };
  return await forwardAndStore(ctx, deps, x);
}

/**
 * What the cache would do with this request, for `prox explain` and the admin `/explain`: reads
 * the store and changes nothing in it.
 */
export function cacheNote(
  ctx: RequestContext,
  deps: PipelineDeps,
  o: { route: UpstreamRoute; policy: CachePolicy },
): string {
  const method = ctx.req.method;
  if (method !== "GET" && method !== "HEAD") {
    return SAFE.has(method)
      ? `The cache only answers GET and HEAD: ${method} goes to the upstream`
      : `The cache only answers GET and HEAD; a ${method} answered below 400 drops what is ` +
        "stored for this URL";
  }
  const view = upstreamView(ctx, deps, o.route);
  const bypass = BYPASS.find((h) => view(h) !== null);
  if (bypass) return `The cache is passed by: the request has ${bypass}`;
  const primary = primaryKey(ctx, o.route);
  const names = o.policy.store.varyOf(primary);
  const vary = names && names[0] !== "*" ? varyKey(names, view) : undefined;
  const entry = vary === undefined ? undefined : o.policy.store.peek(primary, vary);
  const key = `Cache key "${primary}"${names?.length ? ` + ${names.join(", ")}` : ""}`;
  if (!entry) return `${key}: nothing stored; the answer is stored if its Cache-Control allows`;
  const age = entry.initialAge + Math.max(0, deps.clock.now() - entry.responseTime);
  const needs = requestNeeds(parseCacheControl(view("cache-control")));
  const left = Math.floor((entry.lifetime - age) / 1000);
  if (usableWithoutOrigin({ age, lifetime: entry.lifetime, noCache: entry.noCache }, needs)) {
    return `${key}: served from the store (fresh for ${left} s more), not forwarded`;
  }
  const how = entry.etag !== null
    ? "revalidated with If-None-Match"
    : entry.lastModified !== null
    ? "revalidated with If-Modified-Since"
    : "fetched again";
  return `${key}: stored but ${left > 0 ? "refused by the request" : "stale"}: it would be ${how}`;
}

/** Fields Prox writes on the upstream request itself (headers.ts, proxy.ts), whatever the client sent. */
const PROX_WRITTEN: ReadonlySet<string> = new Set([
  "host",
  "forwarded",
  "via",
  "x-real-ip",
  "x-request-id",
  "expect",
  ...HOP_BY_HOP,
  ...Object.keys(BROWSER_HEADERS),
]);

/**
 * Looks up request header values as the upstream gets them: after the route's request_headers
 * rule (whose copy of the fields is made on the first lookup, and only on a route with one), and
 * for the fields Prox writes itself (X-Forwarded-For, Via…), from the whole upstream header set,
 * built only when a `Vary` names one: an answer that varies by client IP must not be served to
 * another client whose own X-Forwarded-For the upstream never saw.
 */
function upstreamView(
  ctx: RequestContext,
  deps: PipelineDeps,
  route: UpstreamRoute,
): (name: string) => string | null {
  let headers: Headers | undefined;
  let full: HeaderList | undefined;
  const rule = requestHeaderRule(ctx);
  const opts = () => ({
    values: placeholderValues(ctx),
    logger: deps.logger,
    requestId: ctx.requestId,
  });
  return (name) => {
    if (PROX_WRITTEN.has(name) || name.startsWith("x-forwarded-")) {
      if (!full) {
        const to = targetOf(ctx, route, ctx.route!.targets[0]);
        full = upstreamHeaders(ctx, route, to.origin);
        if (rule) applyHeaderRules(rule, full, opts());
      }
      return full.get(name);
    }
    if (!headers) {
      headers = ctx.req.headers;
      if (rule) {
        headers = new Headers(headers);
        applyHeaderRules(rule, headers, opts());
      }
    }
    return headers.get(name);
  };
}

interface Exchange {
  route: UpstreamRoute;
  policy: CachePolicy;
  primary: string;
  /** The request's fields as the upstream gets them. */
  view: (name: string) => string | null;
  requestCc: Directives;
}

/** Asks the upstream whether a stale entry still holds (RFC 9111 §4.3.1); a 304 refreshes it. */
async function revalidate(
  ctx: RequestContext,
  deps: PipelineDeps,
  x: Exchange & { vary: string; entry: StoredResponse; fwd: string },
): Promise<Response> {
  const { entry, policy } = x;
  const requestTime = deps.clock.now();
  const res = await proxyAction(ctx, deps, x.route, {
    headers(h) {
      for (const name of ["if-none-match", "if-modified-since"]) h.delete(name);
      if (entry.etag !== null) h.set("if-none-match", entry.etag);
      if (entry.lastModified !== null) h.set("if-modified-since", entry.lastModified);
    },
  });
  if (res.status !== 304) {
    counted(ctx, deps, "stale");
    return admit(ctx, deps, res, { ...x, requestTime, stale: x.vary });
  }
  counted(ctx, deps, "revalidated");
  await res.body?.cancel();
  const responseTime = deps.clock.now();
  const fresh: [string, string][] = [];
  res.headers.forEach((v, k) => fresh.push([k, v]));
  const headers = mergeNotModified(entry.headers, fresh);
  const updated = describe(headers, {
    status: entry.status,
    statusText: entry.statusText,
    requestTime,
    responseTime,
    defaultTtl: policy.defaultTtl,
  });
  updated.body = entry.body;
  const status = `${NAME}; fwd=${x.fwd}; fwd-status=304`;
  if (res.headers.has("set-cookie")) x.policy.store.delete(x.primary, x.vary);
  else x.policy.store.update(x.primary, x.vary, updated);
  return fromStore(ctx, updated, { age: updated.initialAge, status });
}

/** Forwards a request the store cannot answer and stores the response when allowed. */
async function forwardAndStore(
  ctx: RequestContext,
  deps: PipelineDeps,
  x: Exchange & { fwd: string; stale: string | undefined },
): Promise<Response> {
  const requestTime = deps.clock.now();
  const res = await proxyAction(ctx, deps, x.route);
  return admit(ctx, deps, res, { ...x, requestTime });
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
  const names = varyNames(h.get("vary"));
  const responseCc = parseCacheControl(h.get("cache-control"));
  let status = `${NAME}; fwd=${x.fwd}; fwd-status=${res.status}`;
  const why = ctx.req.method === "HEAD" ? "head" : unstorableReason({
    status: res.status,
    response: responseCc,
    request: x.requestCc,
    hasExpires: h.has("expires"),
    varyStar: names[0] === "*",
    hasSetCookie: h.has("set-cookie"),
    authorized: x.view("authorization") !== null,
    defaultTtl: x.policy.defaultTtl,
  });
  const declared = h.get("content-length");
  const tooLarge = declared !== null && Number(declared) > x.policy.maxObjectSize;
  if (why !== null || tooLarge) {
    // A new full response to the same request supersedes the stale entry (a 304 answers the
    // client's own condition and says nothing of it; a HEAD carries no body).
    const full = why !== "head" && res.status !== 304;
    if (x.stale !== undefined && full) x.policy.store.delete(x.primary, x.stale);
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
  });
  if (value.lifetime <= value.initialAge && value.etag === null && value.lastModified === null) {
    // Stale on arrival and nothing to revalidate it with (max-age=0, an Expires in the past):
    // it could only ever be fetched again.
    if (x.stale !== undefined) x.policy.store.delete(x.primary, x.stale);
    return withStatus(res, status);
  }
  const vary = varyKey(names, x.view);
  const store = (body: Uint8Array<ArrayBuffer>) => {
    if (declared !== null && Number(declared) !== body.byteLength) return; // cut short
    value.body = body;
    x.policy.store.set(x.primary, { names, vary, value });
  };
  status += "; stored";
  if (res.body === null) {
    store(new Uint8Array(0));
    return withStatus(res, status);
  }
  const out: CountedResponse = new Response(teeBody(res.body, x.policy.maxObjectSize, store), {
    status: res.status,
    statusText: res.statusText,
    headers: h,
  });
  const counter = (res as CountedResponse)[BODY_BYTES];
  if (counter) out[BODY_BYTES] = counter;
  return withStatus(out, status);
}
