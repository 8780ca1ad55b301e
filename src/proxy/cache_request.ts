// What the response cache (cache.ts) reads of a request: its key, its fields as the upstream
// gets them (after request rules, with the fields Prox writes), the fields that pass the cache by,
// and what the cache would do with it, for `prox explain`.

import { discoverUrl } from "../config/discovered.ts";
import {
  parseCacheControl,
  requestNeeds,
  staleUse,
  usableWithoutOrigin,
} from "../domain/cache_control.ts";
import type { ResponseCache, StoredResponse } from "../domain/response_cache.ts";
import { varyKey } from "../domain/response_cache.ts";
import { BROWSER_HEADERS, HOP_BY_HOP } from "../domain/headers.ts";
import type { HeaderList } from "../domain/header_list.ts";
import type { LoadBalanceRouteConfig, ProxyRouteConfig } from "../config/schema.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import { RAW_BODY } from "../ports.ts";
import type { CachePolicy } from "./cache.ts";
import { requestHeaderRule, targetOf, upstreamHeaders } from "./actions/proxy.ts";
import { applyAuthHeaders } from "./filters/forward_auth.ts";
import { applyHeaderRules, placeholderValues } from "./filters/rules.ts";
import { asksIdentity } from "./filters/body_replace.ts";

/** Methods that leave stored responses alone (RFC 9110 §9.2.1); others invalidate the URI. */
export const SAFE: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Whether a GET or HEAD carries a body (declared by its head, or there): apps that merge body and
 * query parameters answer by it, and the body is no part of the key. Such a request passes the
 * cache by to the proxy action, which refuses it (501) on every listener, rather than being
 * answered from the store for the URL. A body that came whole and empty is none.
 */
export function carriesBody(ctx: RequestContext): boolean {
  // Deno.serve gives a GET no body even when its head declares one: the head says so then.
  const length = ctx.req.headers.get("content-length");
  if ((length !== null && length !== "0") || ctx.req.headers.has("transfer-encoding")) return true;
  if (ctx.body !== undefined) return ctx.body.byteLength > 0;
  const raw = (ctx.req as { [RAW_BODY]?: Uint8Array })[RAW_BODY];
  if (raw !== undefined) return raw.byteLength > 0;
  return ctx.req.body !== null;
}

/** Request fields whose meaning a stored full response cannot answer: forwarded untouched. */
export const BYPASS = ["if-match", "if-unmodified-since"];

/**
 * Fields a fresh stored 200 answers for a GET (a range of it: cache_response.ts), and that pass
 * the cache by otherwise (nothing fresh stored, a HEAD): forwarded untouched.
 */
export const RANGED = ["range", "if-range"];

export type UpstreamRoute = ProxyRouteConfig | LoadBalanceRouteConfig;

/**
 * The target whose path the key takes: the first, or a `discover` route's URL (its targets are
 * its addresses, which come and go; their path is the URL's).
 */
function keyTarget(ctx: RequestContext, route: UpstreamRoute): string {
  return route.type === "load_balance" && route.discover
    ? discoverUrl(route.discover)
    : ctx.route!.targets[0];
}

/** The URI part of the cache key: scheme, host and the upstream path with its full query. */
export function primaryKey(ctx: RequestContext, route: UpstreamRoute): string {
  const target = targetOf(ctx, route, keyTarget(ctx, route)).path;
  return `${ctx.scheme} ${keyHost(ctx.host, ctx.scheme)} ${target}`;
}

/**
 * The key's host: lower case, without a trailing dot or the scheme's default port, so every
 * spelling of one origin (`Example.com.`, `example.com:443` over https) shares one entry and one
 * purge reaches it (URI normalization, RFC 9110 §4.2.3).
 */
export function keyHost(host: string, scheme: "http" | "https"): string {
  let h = host.toLowerCase();
  let port = "";
  const colon = h.lastIndexOf(":");
  if (colon > h.lastIndexOf("]")) {
    port = h.slice(colon + 1);
    h = h.slice(0, colon);
  }
  if (h.endsWith(".")) h = h.slice(0, -1);
  return port === "" || port === (scheme === "https" ? "443" : "80") ? h : `${h}:${port}`;
}

/** The name under which a view gives what a trusted proxy's forwarding fields add to the key. */
const FORWARDED = "\0forwarded";

/**
 * The secondary key of a request for an entry whose answer names `names` in its Vary, plus what
 * a trusted proxy's forwarding fields tell the upstream (see upstreamView): one entry per answer
 * the upstream may give, which a purge of the URL drops with the other variants.
 */
export function entryKey(
  names: readonly string[],
  view: (name: string) => string | null,
): string {
  return varyKey(names, view) + (view(FORWARDED) ?? "");
}

/** The stored entry for a request, if any (without deciding whether it may be served). */
export function lookup(
  store: ResponseCache,
  primary: string,
  view: (name: string) => string | null,
): StoredResponse | undefined {
  const names = store.varyOf(primary);
  if (!names || names[0] === "*") return undefined;
  return store.get(primary, entryKey(names, view));
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
  // A GET's range is served from a fresh stored answer; anything else goes upstream as it is.
  const ranged = RANGED.find((h) => view(h) !== null);
  const rangedBypass = `The cache is passed by: the request has ${ranged}`;
  if (ranged && (method !== "GET" || view("range") === null)) return rangedBypass;
  const primary = primaryKey(ctx, o.route);
  const names = o.policy.store.varyOf(primary);
  const vary = names && names[0] !== "*" ? entryKey(names, view) : undefined;
  const entry = vary === undefined ? undefined : o.policy.store.peek(primary, vary);
  const key = `Cache key "${primary}"${names?.length ? ` + ${names.join(", ")}` : ""}`;
  if (!entry && ranged) return `${rangedBypass} and nothing fresh is stored for it`;
  if (!entry) {
    // As cache_fill.ts decides: an answer to a request carrying an identity is shared only when
    // it says so (RFC 9111 §3.5).
    const identity = view("authorization") !== null || !!ctx.route?.forwardAuth ||
      !!ctx.route?.jwtAuth;
    return `${key}: nothing stored; the answer is stored if its Cache-Control allows` +
      (identity
        ? " (the request carries an identity: only answers marked public, s-maxage or " +
          "must-revalidate)"
        : "");
  }
  const age = entry.initialAge + Math.max(0, deps.clock.now() - entry.responseTime);
  const needs = requestNeeds(parseCacheControl(view("cache-control")));
  const left = Math.floor((entry.lifetime - age) / 1000);
  if (usableWithoutOrigin({ age, lifetime: entry.lifetime, noCache: entry.noCache }, needs)) {
    return `${key}: served from the store (fresh for ${left} s more), not forwarded`;
  }
  if (ranged) return `${rangedBypass} and nothing fresh is stored for it`;
  const use = staleUse({ ...entry, age }, needs);
  if (use === "stale-while-revalidate") {
    return `${key}: stale by ${-left} s, served from the store while it is refreshed in the ` +
      "background (stale-while-revalidate)";
  }
  if (use === "max-stale") {
    return `${key}: stale by ${-left} s, served as the request's max-stale allows`;
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
export function upstreamView(
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
  // A `replace` rule's route asks the upstream for identity (proxy.ts), whatever the client sent.
  const identity = ctx.route!.rules.responseBody !== undefined && asksIdentity(ctx.route!.rules);
  return (name) => {
    if (name === FORWARDED) return ctx.trustedPeer ? trustedForwarding(ctx.req.headers) : null;
    if (identity && name === "accept-encoding") return "identity";
    if (PROX_WRITTEN.has(name) || name.startsWith("x-forwarded-")) {
      if (!full) {
        const to = targetOf(ctx, route, keyTarget(ctx, route));
        full = upstreamHeaders(ctx, route, to.origin);
        if (rule) applyHeaderRules(rule, full, opts());
      }
      return full.get(name);
    }
    if (!headers) {
      headers = ctx.req.headers;
      // The fields forward_auth and jwt_auth set (X-Auth-User, a claim's header…) as the
      // upstream gets them: the client's own copies never reach it, so a Vary on one must not
      // key on them (one user's answer would serve another).
      const auth = ctx.route!.forwardAuth !== null || ctx.route!.jwtAuth !== null;
      if (rule || auth) {
        headers = new Headers(headers);
        if (auth) applyAuthHeaders(ctx, headers);
        if (rule) applyHeaderRules(rule, headers, opts());
      }
    }
    return headers.get(name);
  };
}

/**
 * The forwarding fields a trusted proxy sent that reach the upstream as they came and that apps
 * build links or pick the page from: X-Forwarded-* but -For (Host, Proto, Prefix, Port…),
 * X-Original-URL, X-Rewrite-URL and Forwarded's host= and proto= (RFC 7239 §5.3, §5.4). The key
 * holds them (empty without any): a proxy that passes a client's own on (a cloud load balancer
 * passes fields it does not know) would else let that client's answer be stored for everyone (web
 * cache poisoning). What names each client (X-Forwarded-For, Forwarded's for=) is left out, or
 * every client would have an entry: an upstream that answers by it must name it in Vary.
 */
function trustedForwarding(headers: Headers): string {
  let s = "";
  headers.forEach((v, k) => {
    if (
      (k.startsWith("x-forwarded-") && k !== "x-forwarded-for") || k === "x-original-url" ||
      k === "x-rewrite-url"
    ) s += `\0${k}=${v}`;
    else if (k === "forwarded") s += `\0forwarded=${forwardedHostProto(v)}`;
  });
  return s;
}

/**
 * A Forwarded value's host= and proto= pairs as they came, in order, elements kept apart: split
 * at every `,` and `;`, quoted or not, so that no pair an upstream could read is missed, and two
 * values share a key only when their pairs are the same bytes.
 */
function forwardedHostProto(value: string): string {
  let s = "";
  for (const element of value.split(",")) {
    s += ",";
    for (const pair of element.split(";")) {
      const name = pair.slice(0, pair.indexOf("=") + 1).trim().toLowerCase();
      if (name === "host=" || name === "proto=") s += `;${pair}`;
    }
  }
  return s;
}
