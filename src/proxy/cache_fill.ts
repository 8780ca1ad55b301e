// Filling a route's cache entries (cache.ts): the request that fetches an entry claims its key so
// others wait for it (collapsing), the upstream's answer is admitted into the store as its body
// streams (or let through when it may not be stored), and a 304 refreshes a stored entry.

import {
  mergeNotModified,
  parseCacheControl,
  unstorableReason,
  varyNames,
} from "../domain/cache_control.ts";
import type { Directives } from "../domain/cache_control.ts";
import { httpDate } from "../domain/conditional.ts";
import type { StoredResponse } from "../domain/response_cache.ts";
import { entrySize, keyHash, parseTags } from "../domain/response_cache.ts";
import type { CountedResponse } from "../ports.ts";
import { BODY_BYTES } from "../ports.ts";
import { describe, NAME, teeBody, withStatus } from "./cache_response.ts";
import { entryKey, keyHost } from "./cache_request.ts";
import type { UpstreamRoute } from "./cache_request.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import type { CachePolicy } from "./cache.ts";

/** A request fetching an entry that others wait for (request collapsing). */
export interface Fill {
  /** Settles when the entry is stored, or known not to be. */
  settled: Promise<void>;
  /** Requests waiting for it. */
  waiters: number;
  /** It failed (cache.ts): a waiting request fetches again, and the others wait for that one. */
  failed?: { err?: unknown; status?: number };
  /** Called when the last waiting request stops waiting (see fillSignal). */
  idle?: () => void;
}

/**
 * The signal a fill's upstream exchange runs under until its answer's head arrives: the client's,
 * except that a client that leaves while other requests wait for the entry does not end it (each
 * would then go upstream on its own at once; Varnish's fetch goes on without its client too); it
 * ends once they stop waiting. After the head, the body is the tee's business (teeBody). `done`
 * unlinks it from the client.
 */
export function fillSignal(
  ctx: RequestContext,
  fill: Fill,
): { signal: AbortSignal; done: () => void } {
  const client = ctx.req.signal;
  const ac = new AbortController();
  let gone = false;
  const check = () => {
    if (gone && fill.waiters === 0) ac.abort(client.reason);
  };
  const onClient = () => {
    gone = true;
    check();
  };
  if (client.aborted) onClient();
  else client.addEventListener("abort", onClient, { once: true });
  fill.idle = check;
  return {
    signal: ac.signal,
    done() {
      client.removeEventListener("abort", onClient);
      if (fill.idle === check) fill.idle = undefined;
    },
  };
}

/** Counts a request that stopped waiting for `fill`; the last one may end a fill nobody needs. */
export function stopWaiting(fill: Fill): void {
  if (--fill.waiters === 0) fill.idle?.();
}

/** How long an uncacheable answer keeps requests for its key from waiting for each other. */
export const PASS_MS = 60_000;
/** Most keys remembered as uncacheable per route. */
export const PASS_MAX = 10_000;
/**
 * Registers the caller as the one fetching the entry `lock`, for other requests to wait for, and
 * returns the release that lets them go on (once; `uncacheable`: for a while, requests for the
 * key no longer wait for each other).
 */
export function claim(
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
    const id = keyHash(lock);
    policy.passes.delete(id);
    if (uncacheable) {
      if (policy.passes.size >= PASS_MAX) {
        policy.passes.delete(policy.passes.keys().next().value!);
      }
      policy.passes.set(id, deps.clock.now() + PASS_MS);
    }
    d.resolve();
  };
  return { fill, release };
}

export interface Exchange {
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

/**
 * The stored entry refreshed by a 304's fields and timing (RFC 9111 §4.3.4), updated in the store
 * (or dropped when the 304 sets a cookie). Undefined, the entry dropped, when the 304 names
 * another entity tag: it speaks of a representation the store does not hold (§4.3.4 updates
 * none then), and relabelled with that tag the old body would pass every later revalidation.
 */
export function notModified(
  deps: PipelineDeps,
  x: Exchange & { vary: string; entry: StoredResponse },
  o: { res: Response; requestTime: number },
): StoredResponse | undefined {
  const { entry, policy } = x;
  const tag = o.res.headers.get("etag");
  if (tag !== null && (entry.etag === null || opaqueTag(tag) !== opaqueTag(entry.etag))) {
    if (policy.store.peek(x.primary, x.vary) === entry) policy.store.delete(x.primary, x.vary);
    return undefined;
  }
  const fresh: [string, string][] = [];
  o.res.headers.forEach((v, k) => TAG_FIELDS.includes(k) || fresh.push([k, v]));
  const responseTime = deps.clock.now();
  // A 304 without Date is dated when it arrived (RFC 9110 §6.6.1): the stored 200's Date would
  // else date the refreshed entry, stale again at once and served with that old Age.
  if (!o.res.headers.has("date")) fresh.push(["date", httpDate(responseTime)]);
  const headers = mergeNotModified(entry.headers, fresh);
  const updated = describe(headers, {
    status: entry.status,
    statusText: entry.statusText,
    requestTime: o.requestTime,
    responseTime,
    defaultTtl: policy.defaultTtl,
    defaultSwr: policy.defaultSwr,
  });
  updated.body = entry.body;
  // Tags the 304 names replace the entry's; without any it keeps them.
  const sk = o.res.headers.get("surrogate-key");
  const ct = o.res.headers.get("cache-tag");
  updated.tags = sk === null && ct === null ? entry.tags : parseTags(sk, ct);
  // What the merged fields say must hold of the stored answer as of a new one (RFC 9111 §3):
  // one the 304 makes private, no-store or keyed by other Vary fields (the entry sits under the
  // old ones) is dropped, as is one whose 304 sets a cookie.
  const get = (name: string) => {
    const v = headers.filter(([k]) => k === name).map(([, v]) => v);
    return v.length === 0 ? null : v.join(", ");
  };
  const cc = parseCacheControl(get("cache-control"));
  const names = keyNames(get);
  // Only the entry it revalidated: one a newer answer stored meanwhile (or none, after a purge)
  // is not what the 304 speaks of, and its body must not give way to the older one.
  if (policy.store.peek(x.primary, x.vary) !== entry) return updated;
  if (
    o.res.headers.has("set-cookie") || cc.has("no-store") || cc.has("private") ||
    names[0] === "*" || entryKey(names, x.view) !== x.vary
  ) policy.store.delete(x.primary, x.vary);
  else policy.store.update(x.primary, x.vary, updated);
  return updated;
}

/** An entity tag without its weakness marker, for weak comparison (RFC 9110 §8.8.3.2). */
function opaqueTag(tag: string): string {
  const t = tag.trim();
  return t.startsWith("W/") ? t.slice(2) : t;
}

/**
 * The request fields an answer is keyed by: its Vary's, and the ones an upstream commonly forgets
 * to name: Origin for one that echoes an origin in Access-Control-Allow-Origin (without
 * `Vary: Origin`, one origin's answer would be served to the others), and Accept-Encoding for one
 * it compressed (nginx's `gzip on` sends no Vary unless `gzip_vary on`: its gzip bytes would be
 * served to clients that accept none).
 */
function keyNames(get: (name: string) => string | null): string[] {
  const names = varyNames(get("vary"));
  if (names[0] === "*") return names;
  const more: string[] = [];
  const acao = get("access-control-allow-origin");
  if (acao !== null && acao !== "*" && !names.includes("origin")) more.push("origin");
  const coding = get("content-encoding")?.trim().toLowerCase();
  if (coding && coding !== "identity" && !names.includes("accept-encoding")) {
    more.push("accept-encoding");
  }
  return more.length === 0 ? names : [...names, ...more].sort();
}

/**
 * Decides whether the upstream's response is stored, and tees its body into the store if so.
 * `stale`: the variant of the stale entry this request found, which a new full response replaces.
 */
export function admit(
  ctx: RequestContext,
  deps: PipelineDeps,
  res: Response,
  x: Exchange & {
    fwd: string;
    requestTime: number;
    stale: string | undefined;
    /** The store's epoch when the request left: a purge or unsafe request since keeps it out. */
    since: number;
  },
): Response {
  // The tags are the cache's business: read into the entry, never passed on (as Fastly does).
  const surrogateKey = res.headers.get("surrogate-key");
  const cacheTag = res.headers.get("cache-tag");
  if (surrogateKey !== null || cacheTag !== null) res = withoutTagFields(res);
  const h = res.headers;
  const names = keyNames((name) => h.get(name));
  const responseCc = parseCacheControl(h.get("cache-control"));
  let status = `${NAME}; fwd=${x.fwd}; fwd-status=${res.status}`;
  // The upstream is told the host as it came (X-Forwarded-Host, a preserved Host) and builds
  // links, redirects or a tenant's page on it: an answer to `Example.com.` or `example.com:443`,
  // keyed as `example.com`, is served from the store but not stored for its clients (to browsers
  // `example.com.` is another origin; an app may compare hosts byte for byte).
  const why = ctx.req.method === "HEAD"
    ? "head"
    : keyHost(ctx.host, ctx.scheme) !== ctx.host
    ? "host spelling"
    : unstorableReason({
      status: res.status,
      response: responseCc,
      request: x.requestCc,
      hasExpires: h.has("expires"),
      varyStar: names[0] === "*",
      hasSetCookie: h.has("set-cookie"),
      eventStream: /^\s*text\/event-stream\s*(;|$)/i.test(h.get("content-type") ?? ""),
      // A request forward_auth or jwt_auth let through carries an identity as one with
      // Authorization does (RFC 9111 §3.5): its answer is shared only when it says so (public,
      // s-maxage…).
      authorized: x.view("authorization") !== null || ctx.route!.forwardAuth !== null ||
        ctx.route!.jwtAuth !== null,
      defaultTtl: x.policy.defaultTtl,
    });
  const declared = h.get("content-length");
  const tooLarge = declared !== null && Number(declared) > x.policy.maxObjectSize;
  if (why !== null || tooLarge) {
    // A new full response to the same request supersedes the stale entry (a 304 answers the
    // client's own condition and says nothing of it; a HEAD carries no body).
    const full = why !== "head" && res.status !== 304;
    if (x.stale !== undefined && full) x.policy.store.delete(x.primary, x.stale);
    // Said by the answer, not by this request: the next ones would get the same. Not a 304,
    // which answers this request's own condition (a browser revalidating its copy).
    x.release?.(
      full && why !== "request no-store" && why !== "authorization" && why !== "host spelling",
    );
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
  const tags = parseTags(surrogateKey, cacheTag);
  if (tags.length > 0) value.tags = tags;
  if (
    (value.noCache || value.lifetime <= value.initialAge) && value.etag === null &&
    value.lastModified === null
  ) {
    // Stale on arrival, or no-cache (revalidated before every use, whatever default_ttl gives
    // it), and nothing to revalidate it with: it could only ever be fetched again, and storing
    // it would only make requests for it wait for each other (an event stream's, for as long as
    // it runs).
    if (x.stale !== undefined) x.policy.store.delete(x.primary, x.stale);
    x.release?.(true);
    return withStatus(res, status);
  }
  const vary = entryKey(names, x.view);
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
      x.policy.store.set(x.primary, { names, vary, value, since: x.since });
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
    readAhead: x.policy.readAhead,
    inFlight: x.policy.inFlight,
    inFlightMax: x.policy.store.capacity,
  });
  const out: CountedResponse = new Response(tee.body, {
    status: res.status,
    statusText: res.statusText,
    headers: h,
  });
  // The upstream's trailers (an HTTP/2 upstream's) reach this client; the entry keeps none.
  const inner = (res as CountedResponse)[BODY_BYTES];
  if (inner) Object.defineProperty(tee.counter, "trailers", { get: () => inner.trailers });
  out[BODY_BYTES] = tee.counter;
  return withStatus(out, status);
}

/** The fields an upstream tags its answers with (read by parseTags). */
const TAG_FIELDS = ["surrogate-key", "cache-tag"];

/** `res` without its tag fields (a copy when its headers are immutable, as fetch's are). */
export function withoutTagFields(res: Response): Response {
  try {
    for (const f of TAG_FIELDS) res.headers.delete(f);
    return res;
  } catch {
    const h = new Headers(res.headers);
    for (const f of TAG_FIELDS) h.delete(f);
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
