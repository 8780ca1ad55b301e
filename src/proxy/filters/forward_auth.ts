// The forward-auth request filter (Traefik ForwardAuth, Caddy forward_auth, nginx auth_request):
// before the route's action, Prox asks an auth service with a subrequest through its own upstream
// client (keep-alive pool, its bounds and queue). A 2xx lets the request through, with the fields
// named in `copy_response_headers` set on the upstream request (the client's own copies removed
// first, so it cannot forge them); any other answer goes to the client as it came (a 302 to a
// login page, a 401 with WWW-Authenticate); an auth service that cannot answer gets the client a
// 503, never the route.

import type { ForwardAuthConfig } from "../../config/schema.ts";
import { HOP_BY_HOP } from "../../domain/headers.ts";
import { HeaderList } from "../../domain/header_list.ts";
import type { HeaderMap } from "../../domain/header_list.ts";
import { ProxyError, proxyStatusFor, toProxyError } from "../../domain/errors.ts";
import type { UpstreamTls } from "../../ports.ts";
import { upstreamTlsOf } from "../upstream_tls.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { errorResponse, PASSED_ON } from "../respond.ts";
import type { PassedOn } from "../respond.ts";
import { readClientChunk } from "../body_replay.ts";
import { withoutCookie } from "./jwt_auth.ts";
import { timerDelay } from "../../config/duration.ts";
import { redactSecrets } from "../../config/secret_names.ts";

/** A route's forward auth, ready to run. */
export interface CompiledForwardAuth {
  /**
   * The auth service URL for logs and `prox explain`, with a password and secret query values
   * redacted as `/config` shows them (the subrequest goes to `origin` + `target`).
   */
  url: string;
  origin: URL;
  /** Path and query of the subrequest, as written in `url`. */
  target: string;
  timeoutMs: number;
  /** Lower-case client fields to send; null: every field but hop-by-hop ones (`*`). */
  copy: readonly string[] | null;
  /** Lower-case fields taken from a 2xx onto the upstream request. */
  copyResponse: readonly string[];
  cookies: boolean;
  preserveMethod: boolean;
  sendBody: boolean;
  maxBody: number;
  tls?: UpstreamTls;
}

/** The largest auth-service body passed to a client (a denial) or drained (a 2xx). */
export const AUTH_BODY_CAP = 64 * 1024;

/** The Proxy-Status `details` that names the auth service as the failing hop (RFC 9209 §2.1.5). */
const DETAILS = "forward_auth";

/**
 * The check a route runs: its own `forward_auth`, none when it says `false`, else the top-level
 * one; null when there is none.
 */
export function compileForwardAuth(
  route: { forward_auth?: false | ForwardAuthConfig },
  opts: {
    top: ForwardAuthConfig | undefined;
    /** CA files the server read (`tls.ca_cert`), by path. */
    files?: ReadonlyMap<string, string>;
  },
): CompiledForwardAuth | null {
  const c = route.forward_auth === false ? undefined : route.forward_auth ?? opts.top;
  if (!c) return null;
  const u = new URL(c.url);
  const lower = (names: readonly string[]) => [...new Set(names.map((n) => n.toLowerCase()))];
  return {
    url: String(redactSecrets(c.url)),
    origin: new URL(u.origin),
    target: `${u.pathname}${u.search}`,
    timeoutMs: c.timeout,
    copy: c.copy_request_headers.includes("*") ? null : lower(c.copy_request_headers),
    copyResponse: lower(c.copy_response_headers),
    cookies: c.copy_response_cookies,
    preserveMethod: c.preserve_method,
    sendBody: c.send_body,
    maxBody: c.max_body,
    tls: upstreamTlsOf(c.tls, opts.files),
  };
}

const HOP = new Set(HOP_BY_HOP);
// Proxy-Authorization is meant for a proxy: the auth service stands in for it (as in Traefik).
HOP.delete("proxy-authorization");

/**
 * Fields that tell a server what the request was or where it came from (Authelia's /api/verify
 * reads X-Original-URL before X-Forwarded-Uri). With `*`, a direct client's own are not sent:
 * the auth service would judge another URL or address than the upstream gets (headers.ts).
 */
function forwardingField(name: string): boolean {
  return name.startsWith("x-forwarded-") || name.startsWith("x-original-") ||
    name === "x-real-ip" || name === "forwarded" || name === "x-rewrite-url";
}

/** The subrequest's header fields: the chosen client fields, then what the request is. */
export function authRequestHeaders(ctx: RequestContext, auth: CompiledForwardAuth): HeaderList {
  const h = new HeaderList();
  const src = ctx.req.headers;
  if (auth.copy === null) {
    const named = (src.get("connection") ?? "").split(",").map((s) => s.trim().toLowerCase());
    const spoofable = !ctx.trustedPeer;
    // Names with underscores stay behind as on the way upstream (underscores_in_headers).
    const underscores = ctx.snapshot.config.underscores_in_headers;
    src.forEach((v, k) => {
      if (
        !HOP.has(k) && !named.includes(k) && k !== "host" && k !== "content-length" &&
        // The client's 100-continue handshake is with Prox; the subrequest's body goes at once.
        k !== "expect" &&
        !(spoofable && forwardingField(k)) && (underscores || !k.includes("_"))
      ) h.append(k, v);
    });
  } else {
    for (const name of auth.copy) {
      const v = src.get(name);
      if (v !== null) h.set(name, v);
    }
  }
  h.set("host", auth.origin.host);
  h.set("x-forwarded-method", ctx.req.method);
  h.set("x-forwarded-proto", ctx.scheme);
  // As the upstream gets it: a trusted proxy's X-Forwarded-Host names the host its client asked
  // for (Authelia and oauth2-proxy build their redirect back from it), else the request's host.
  const fwdHost = ctx.trustedPeer ? src.get("x-forwarded-host") : null;
  if (fwdHost ?? ctx.host) h.set("x-forwarded-host", fwdHost ?? ctx.host);
  else h.delete("x-forwarded-host");
  h.set("x-forwarded-uri", `${ctx.path}${ctx.query}`);
  // The chain Prox sends upstream: a trusted proxy's list extended by the peer, else the peer.
  const prior = ctx.trustedPeer ? src.get("x-forwarded-for") : null;
  const peer = ctx.info.remoteAddr.hostname;
  h.set("x-forwarded-for", prior ? `${prior}, ${peer}` : peer);
  h.set("x-request-id", ctx.requestId);
  return h;
}

/**
 * Puts the auth service's fields and jwt_auth's claims on an upstream request's headers (proxy,
 * load_balance and WebSocket handshakes): the client's fields of those names go first, whatever
 * the answer; jwt_auth's token cookie goes when `strip_token` says so.
 */
export function applyAuthHeaders(ctx: RequestContext, h: HeaderMap): void {
  const route = ctx.route;
  if (!route || (!route.forwardAuth && !route.jwtAuth)) return;
  if (route.forwardAuth) { for (const name of route.forwardAuth.copyResponse) h.delete(name); }
  if (route.jwtAuth) { for (const [, name] of route.jwtAuth.claimHeaders) h.delete(name); }
  if (ctx.dropCookie !== undefined) {
    const rest = withoutCookie(h.get("cookie") ?? "", ctx.dropCookie);
    if (rest === null) h.delete("cookie");
    else h.set("cookie", rest);
  }
  const got = ctx.authHeaders;
  if (got) { for (const [k, v] of got) h.append(k, v); }
}

/**
 * Runs the route's check. Returns the response that ends the request (the auth service's denial,
 * or 503 when it cannot answer), or null to go on with the copied fields in `ctx.authHeaders`.
 */
export async function applyForwardAuth(
  ctx: RequestContext,
  deps: PipelineDeps,
): Promise<Response | null> {
  const auth = ctx.route!.forwardAuth!;
  const route = ctx.route!.id;
  const headers = authRequestHeaders(ctx, auth);
  const timer = new AbortController();
  const client = ctx.req.signal;
  const onClient = () => timer.abort();
  client.addEventListener("abort", onClient, { once: true });
  let timedOut = false;
  const t = setTimeout(() => {
    timedOut = true;
    timer.abort();
  }, timerDelay(auth.timeoutMs));
  /** True while the client's body is read (send_body): failures then are the client's. */
  let reading = false;
  try {
    let body: Uint8Array<ArrayBuffer> | null = null;
    if (auth.sendBody && ctx.req.body) {
      // Under the same timeout: a client that stalls its body must not hold the check forever.
      reading = true;
      body = await readBody(ctx.req.body, bodyLimit(ctx, auth), timer.signal);
      if (timedOut) {
        throw new ProxyError(
          "request_timeout",
          `The request body did not arrive within ${auth.timeoutMs} ms (forward_auth.timeout)`,
        );
      }
      reading = false;
      ctx.body = body;
      const type = ctx.req.headers.get("content-type");
      if (type !== null) headers.set("content-type", type);
    }
    const res = await deps.upstream.send({
      origin: auth.origin,
      target: auth.target,
      method: auth.preserveMethod ? ctx.req.method : "GET",
      headers,
      body,
      timeouts: { connect: auth.timeoutMs, responseHeader: auth.timeoutMs, idle: auth.timeoutMs },
      tls: auth.tls,
      signal: timer.signal,
    });
    if (res.status >= 200 && res.status < 300) {
      await readCapped(res.body, timer.signal, { cap: AUTH_BODY_CAP, keep: false });
      if (timedOut) throw timeoutError(auth);
      allowed(ctx, auth, res.headers);
      deps.metrics.forwardAuth(route, "allowed");
      return null;
    }
    const bytes = await readCapped(res.body, timer.signal, { cap: AUTH_BODY_CAP, keep: true });
    if (timedOut) throw timeoutError(auth);
    if (bytes === null) {
      throw new ProxyError("protocol", `Auth service response body exceeds ${AUTH_BODY_CAP} bytes`);
    }
    const refusal = denial(ctx, res, bytes);
    deps.metrics.forwardAuth(route, "denied");
    return refusal;
  } catch (err) {
    if (client.aborted) {
      throw new ProxyError("client_gone", "Client went away during forward auth", { cause: err });
    }
    // The client's own faults with send_body (413, 408, a body that broke off) are its answer.
    if (reading) throw err;
    const e = timedOut ? timeoutError(auth) : toProxyError(err, auth.url);
    deps.metrics.forwardAuth(route, "error");
    warnThrottled(deps, route, {
      route,
      requestId: ctx.requestId,
      authUrl: auth.url,
      error: e.message,
    });
    const type = proxyStatusFor(e.kind, e.message);
    ctx.error = type;
    return errorResponse("no_healthy_upstream", ctx.requestId, {
      status: 503,
      message: "Service unavailable: auth service did not answer",
      headers: { "proxy-status": `prox; error=${type}; details="${DETAILS}"` },
    });
  } finally {
    clearTimeout(t);
    client.removeEventListener("abort", onClient);
  }
}

function timeoutError(auth: CompiledForwardAuth): ProxyError {
  return new ProxyError("timeout", `Auth service gave no answer within ${auth.timeoutMs} ms`, {
    source: auth.url,
  });
}

/** Keeps the fields a 2xx hands on: for the upstream request, and cookies for the client. */
function allowed(ctx: RequestContext, auth: CompiledForwardAuth, h: Headers): void {
  let got: [string, string][] | undefined;
  for (const name of auth.copyResponse) {
    const v = h.get(name);
    if (v !== null) (got ??= []).push([name, v]);
  }
  if (got) (ctx.authHeaders ??= []).push(...got); // after jwt_auth's, if any
  if (auth.cookies) {
    for (const c of h.getSetCookie()) ctx.extraResponseHeaders.push(["set-cookie", c]);
  }
}

/** The auth service's answer, as the client's: status, fields (Location, Set-Cookie…) and body. */
function denial(ctx: RequestContext, res: Response, bytes: Uint8Array<ArrayBuffer>): Response {
  // A 1xx or 101 cannot be passed on as a final answer: the auth service failed.
  if (res.status < 200) throw new ProxyError("protocol", `Auth service answered ${res.status}`);
  const h = new Headers(res.headers);
  h.delete("content-length");
  h.set("x-request-id", ctx.requestId);
  const noBody = res.status === 204 || res.status === 304;
  const out: Response & PassedOn = new Response(noBody ? null : bytes, {
    status: res.status,
    statusText: res.statusText,
    headers: h,
  });
  // The auth service's answer as it meant it (a login page, its cookies): no error page.
  out[PASSED_ON] = true;
  return out;
}

/**
 * Reads an auth-service body: up to `cap` bytes kept (null when it is longer), or drained and
 * dropped (a longer one cancelled, which only costs the pooled connection). An abort of `signal`
 * (the timeout) cancels the read.
 */
async function readCapped(
  body: ReadableStream<Uint8Array> | null,
  signal: AbortSignal,
  o: { cap: number; keep: boolean },
): Promise<Uint8Array<ArrayBuffer> | null> {
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const stop = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", stop, { once: true });
  const chunks: Uint8Array[] = [];
  let got = 0;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      got += r.value.byteLength;
      if (got > o.cap) {
        await reader.cancel();
        return null;
      }
      if (o.keep) chunks.push(r.value);
    }
  } finally {
    // The lock stays: the body is read or cancelled, and releaseLock() builds a TypeError.
    signal.removeEventListener("abort", stop);
  }
  const out = new Uint8Array(o.keep ? got : 0);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** The smaller of `max_body` and the route's body limit, and which key it is. */
function bodyLimit(ctx: RequestContext, auth: CompiledForwardAuth): { max: number; key: string } {
  const cfg = ctx.route!.config;
  const route = ("max_request_body" in cfg ? cfg.max_request_body : undefined) ??
    ctx.snapshot.config.limits.max_request_body;
  return route !== undefined && route < auth.maxBody
    ? { max: route, key: "max_request_body" }
    : { max: auth.maxBody, key: "forward_auth.max_body" };
}

/** Reads the client's body whole for `send_body`: 413 past `max`; `signal` stops it. */
async function readBody(
  body: ReadableStream<Uint8Array>,
  { max, key }: { max: number; key: string },
  signal: AbortSignal,
): Promise<Uint8Array<ArrayBuffer>> {
  const reader = body.getReader();
  const stop = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", stop, { once: true });
  const chunks: Uint8Array[] = [];
  let got = 0;
  try {
    for (;;) {
      const r = await readClientChunk(reader);
      if (r.done) break;
      got += r.value.byteLength;
      if (got > max) {
        await reader.cancel().catch(() => {});
        throw new ProxyError(
          "body_too_large",
          `Request body exceeds ${max} bytes (${key})`,
        );
      }
      chunks.push(r.value);
    }
  } finally {
    // The lock stays: the body is read or cancelled, and releaseLock() builds a TypeError.
    signal.removeEventListener("abort", stop);
  }
  const out = new Uint8Array(got);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Auth failures are logged at most once per this window per route, with a count. */
const LOG_INTERVAL_MS = 10_000;
const throttles = new WeakMap<PipelineDeps, Map<string, { at: number; suppressed: number }>>();

function warnThrottled(deps: PipelineDeps, route: string, fields: Record<string, unknown>): void {
  let last = throttles.get(deps);
  if (!last) throttles.set(deps, last = new Map());
  const now = deps.clock.monotonic();
  const prev = last.get(route);
  if (prev && now - prev.at < LOG_INTERVAL_MS) {
    prev.suppressed++;
    return;
  }
  if (last.size >= 1_000) last.clear(); // bounded by the routes; a reload may rename them
  last.set(route, { at: now, suppressed: 0 });
  deps.logger.warn("Forward auth failed; request refused with 503", {
    ...fields,
    suppressed: prev?.suppressed ?? 0,
  });
}
