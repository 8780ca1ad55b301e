// A route's response cache (`cache:` on proxy and load_balance routes), around the proxy action:
// look up → serve a fresh entry | revalidate a stale one | forward and copy the body into a new
// entry as it streams to the client. Response rules and compression run after this on every
// answer, stored or not; request header rules run before the Vary comparison. RFC 9111 rules
// are in domain/cache_control.ts, the bounded store in domain/response_cache.ts.

import {
  freshnessLifetime,
  initialAge,
  mergeNotModified,
  parseCacheControl,
  requestNeeds,
  unstorableReason,
  usableWithoutOrigin,
  varyNames,
} from "../domain/cache_control.ts";
import type { Directives } from "../domain/cache_control.ts";
import { parseHttpDate } from "../domain/conditional.ts";
import type { ResponseCache } from "../domain/response_cache.ts";
import { varyKey } from "../domain/response_cache.ts";
import type { StoredResponse } from "../domain/response_cache.ts";
import type { LoadBalanceRouteConfig, ProxyRouteConfig } from "../config/schema.ts";
import { BODY_BYTES } from "../ports.ts";
import type { CountedResponse } from "../ports.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import { proxyAction, requestHeaderRule, targetOf } from "./actions/proxy.ts";
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

/** Proxies through the route's cache. */
export async function cachedProxy(
  ctx: RequestContext,
  deps: PipelineDeps,
  route: UpstreamRoute,
  policy: CachePolicy,
): Promise<Response> {
  const method = ctx.req.method;
  const store = policy.store;
  const metric = (r: CacheResult) => deps.metrics.cache(ctx.route!.id, r);
  if (method !== "GET" && method !== "HEAD") {
    const res = await proxyAction(ctx, deps, route);
    // RFC 9111 §4.4: a successful unsafe request makes what is stored for its URI outdated.
    if (!SAFE.has(method) && res.status < 400) store.invalidate(primaryKey(ctx, route));
    return res;
  }
  // The request as the upstream gets it: a rule that removes Cache-Control, for one, keeps
  // clients from forcing a refetch.
  const view = upstreamView(ctx, deps);
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
 * Looks up request header values as the upstream gets them: after the route's request_headers
 * rule (whose copy of the fields is made on the first lookup, and only on a route with one).
 */
function upstreamView(ctx: RequestContext, deps: PipelineDeps): (name: string) => string | null {
  let headers: Headers = ctx.req.headers;
  let ruled = false;
  return (name) => {
    if (!ruled) {
      ruled = true;
      const rule = requestHeaderRule(ctx);
      if (rule) {
        headers = new Headers(headers);
        applyHeaderRules(rule, headers, {
          values: placeholderValues(ctx),
          logger: deps.logger,
          requestId: ctx.requestId,
        });
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
    deps.metrics.cache(ctx.route!.id, "stale");
    return admit(ctx, deps, res, { ...x, requestTime, stale: x.vary });
  }
  deps.metrics.cache(ctx.route!.id, "revalidated");
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

/** A StoredResponse (without its body yet) for a response's header list and timing. */
function describe(
  headers: [string, string][],
  o: {
    status: number;
    statusText: string;
    requestTime: number;
    responseTime: number;
    defaultTtl?: number;
  },
): StoredResponse {
  const get = (name: string): string | null => {
    let v: string | null = null;
    for (const [k, val] of headers) if (k === name) v = v === null ? val : `${v}, ${val}`;
    return v;
  };
  const timing = {
    requestTime: o.requestTime,
    responseTime: o.responseTime,
    date: get("date"),
    age: get("age"),
    expires: get("expires"),
  };
  const cc = parseCacheControl(get("cache-control"));
  return {
    status: o.status,
    statusText: o.statusText,
    headers: headers.filter(([k]) => k !== "age"),
    body: new Uint8Array(0),
    requestTime: o.requestTime,
    responseTime: o.responseTime,
    initialAge: initialAge(timing),
    lifetime: freshnessLifetime(cc, timing, o.defaultTtl),
    noCache: cc.has("no-cache"),
    etag: get("etag"),
    lastModified: get("last-modified"),
  };
}

/**
 * The body as the client reads it, copied on the way into `done` when it ends whole. Past
 * `limit` bytes, or when the upstream fails or the client leaves, the copy is dropped.
 */
function teeBody(
  body: ReadableStream<Uint8Array>,
  limit: number,
  done: (bytes: Uint8Array<ArrayBuffer>) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let chunks: Uint8Array[] | null = [];
  let size = 0;
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (err) {
        chunks = null;
        ctl.error(err);
        return;
      }
      if (r.done) {
        ctl.close();
        if (chunks) done(concat(chunks, size));
        chunks = null;
        return;
      }
      if (chunks) {
        size += r.value.byteLength;
        // A copy: the upstream client may reuse the chunk's memory once it is handed on.
        if (size > limit) chunks = null;
        else chunks.push(r.value.slice());
      }
      ctl.enqueue(r.value);
    },
    cancel(reason) {
      chunks = null;
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

function concat(chunks: Uint8Array[], size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Statuses whose responses have no body (a Response with one would throw). */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** A response from a stored entry, with its Age (RFC 9111 §5.1) and Cache-Status. */
function fromStore(
  ctx: RequestContext,
  entry: StoredResponse,
  o: { age: number; status: string },
): Response {
  const headers = new Headers();
  for (const [k, v] of entry.headers) headers.append(k, v);
  headers.set("age", String(Math.floor(o.age / 1000)));
  headers.append("cache-status", o.status);
  if (entry.status === 200 && clientCondition(ctx.req.headers, entry)) {
    const h = new Headers();
    for (const name of NOT_MODIFIED_FIELDS) {
      const v = headers.get(name);
      if (v !== null) h.set(name, v);
    }
    return new Response(null, { status: 304, headers: h });
  }
  const init = { status: entry.status, statusText: entry.statusText, headers };
  if (NULL_BODY.has(entry.status)) return new Response(null, init);
  if (ctx.req.method === "HEAD") {
    // The length its GET would get; an empty stream, not null, or Deno.serve would claim 0.
    if (!headers.has("content-length")) headers.set("content-length", String(entry.body.length));
    return new Response(new ReadableStream({ start: (c) => c.close() }), init);
  }
  return new Response(entry.body, init);
}

/** Fields a 304 repeats from the full response (RFC 9110 §15.4.5), plus the cache's own. */
const NOT_MODIFIED_FIELDS = [
  "cache-control",
  "content-location",
  "date",
  "etag",
  "expires",
  "vary",
  "last-modified",
  "age",
  "cache-status",
];

/**
 * True when the client's If-None-Match or If-Modified-Since is satisfied by the stored entry
 * (RFC 9111 §4.3.2): a 304 then answers instead of the body.
 */
function clientCondition(headers: Headers, entry: StoredResponse): boolean {
  const inm = headers.get("if-none-match");
  if (inm !== null) {
    if (entry.etag === null) return false;
    const want = opaque(entry.etag);
    return inm.split(",").some((t) => t.trim() === "*" || opaque(t.trim()) === want);
  }
  const ims = headers.get("if-modified-since");
  if (ims === null || entry.lastModified === null) return false;
  const since = parseHttpDate(ims.trim());
  const modified = parseHttpDate(entry.lastModified.trim());
  return since !== null && modified !== null && modified <= since;
}

/** An entity tag without its weakness marker, for weak comparison (RFC 9110 §8.8.3.2). */
function opaque(tag: string): string {
  return tag.startsWith("W/") ? tag.slice(2) : tag;
}

/** `res` with our Cache-Status member appended (RFC 9211: the last member is nearest the client). */
function withStatus(res: Response, status: string): Response {
  try {
    res.headers.append("cache-status", status);
    return res;
  } catch {
    const h = new Headers(res.headers);
    h.append("cache-status", status);
    const out: CountedResponse = new Response(res.body, {
      status: res.status,
      statusText: res.statusText,
      headers: h,
    });
    const counter = (res as CountedResponse)[BODY_BYTES];
    if (counter) out[BODY_BYTES] = counter;
    return out;
  }
}
