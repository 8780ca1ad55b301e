// The `proxy` and `load_balance` actions: build the upstream request (URL, headers, streamed
// body with a size cap) and hand it to forward(). The response head comes back without
// hop-by-hop fields: the upstream client drops them (see UpstreamClient in ports.ts).

import { originHost } from "../../domain/upstream_origin.ts";
import {
  BROWSER_HEADERS,
  dropUnderscoredNames,
  requestLength,
  setForwardingHeaders,
  untrustedUpstreamFields,
  withoutHopByHop,
} from "../../domain/headers.ts";
import { upstreamTarget } from "../../domain/rewrite.ts";
import { reverseLocation, reverseRefresh } from "../../domain/location_rewrite.ts";
import type { UpstreamTarget } from "../../domain/rewrite.ts";
import type { HeaderList } from "../../domain/header_list.ts";
import type { HeaderRules } from "../../domain/rules.ts";
import { ProxyError } from "../../domain/errors.ts";
import { formatGrpcTimeout, parseGrpcTimeout } from "../../domain/grpc.ts";
import { proxyHeader } from "../../domain/proxy_protocol.ts";
import type { ProxiedAddresses } from "../../domain/proxy_protocol.ts";
import type { LoadBalanceRouteConfig, ProxyRouteConfig } from "../../config/schema.ts";
import { BODY_BYTES, RAW_BODY } from "../../ports.ts";
import type { CountedResponse, EarlyHintsSink, Protocol, UpstreamRequest } from "../../ports.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { forward } from "../forward.ts";
import { startMirror } from "../mirror.ts";
import { dropWithin, nullIfEmpty, readWhole, REPLAY_CAP } from "../body_replay.ts";
import {
  applyHeaderRules,
  NO_VALUES,
  placeholderValues,
  requestInput,
  ruleBody,
  STALE_BODY_HEADERS,
} from "../filters/rules.ts";
import { timerDelay } from "../../config/duration.ts";
import { applyAuthHeaders } from "../filters/forward_auth.ts";
import { mutableHeaders } from "../filters/rules.ts";
import { asksIdentity } from "../filters/body_replace.ts";
import { WireResponse } from "../wire_response.ts";
import { grpcRequestType } from "../respond.ts";
import { deadlineTimers } from "../deadline_timers.ts";

/**
 * How long an HTTP/2 or HTTP/3 GET or HEAD whose stream is still open is waited for when the
 * route's `timeouts.idle` is `0s` (none): then 408.
 */
const BODILESS_END_MS = 30_000;

/** The protocol version a Via entry names (RFC 9110 §7.6.3). */
const VIA_VERSION: Record<Protocol, string> = { "http/1.1": "1.1", h2: "2", h2c: "2", h3: "3" };

export type UpstreamRoute = ProxyRouteConfig | LoadBalanceRouteConfig;

/** Wraps a body so it errors with 413 once more than `limit` bytes have passed. */
export function limitBody(
  body: ReadableStream<Uint8Array>,
  limit: number,
): ReadableStream<Uint8Array> {
  let seen = 0;
  return body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        seen += chunk.byteLength;
        if (seen > limit) {
          ctl.error(new ProxyError("body_too_large", `Request body exceeds ${limit} bytes`));
          return;
        }
        ctl.enqueue(chunk);
      },
    }),
  );
}

/**
 * Reads and drops a body the upstream will not get, in the background. Cancelling it would reset
 * an HTTP/2 stream the client is still uploading on, and with it the response (curl reports a
 * stream error): the body is drained up to `limit` bytes, then the rest is cancelled. Nothing is
 * kept. (A body a rule replaces on a route with `max_request_body` is read first: `dropWithin`.)
 */
export function discard(body: ReadableStream<Uint8Array>, limit: number): void {
  const reader = body.getReader();
  let seen = 0;
  const pump = async (): Promise<void> => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      seen += value.byteLength;
      if (seen > limit) {
        await reader.cancel();
        return;
      }
    }
  };
  // The lock is never released: nobody reads the body after this, and releaseLock() builds a
  // TypeError (its stack included) for the reader's `closed` promise, ~5 µs a request.
  pump().catch(() => {});
}

/** Builds the request headers sent upstream for a target. */
export function upstreamHeaders(
  ctx: RequestContext,
  route: UpstreamRoute,
  target: URL,
): HeaderList {
  // A Host the request passed (pipeline.ts checks it), or the target's from the config.
  const hostField = route.preserve_host && ctx.host
    ? ctx.host
    : ctx.route?.upstreamHost ?? originHost(target);
  const forwardInfo = {
    peer: ctx.info.remoteAddr.hostname,
    trustedPeer: ctx.trustedPeer,
    scheme: ctx.scheme,
    hopScheme: ctx.info.tls ? "https" : "http",
    host: ctx.host,
    // The received protocol's version (RFC 9110 §7.6.3).
    version: ctx.info.http10 ? "1.0" : VIA_VERSION[ctx.info.protocol],
    rfc7239: route.forwarded,
  } as const;
  const underscores = ctx.snapshot.config.underscores_in_headers;
  let h: HeaderList;
  if (!ctx.trustedPeer) {
    // The usual case, in one pass (the same fields as the steps below).
    h = untrustedUpstreamFields(ctx.req.headers, forwardInfo, {
      host: hostField,
      requestId: ctx.requestId,
      underscores,
    });
  } else {
    h = withoutHopByHop(ctx.req.headers);
    if (!underscores) dropUnderscoredNames(h);
    // The client's 100-continue was answered here, and the body goes with or right after the
    // head: an upstream asked to expect it might answer at once and take the body for its next
    // request, whose response would go to another client (nginx drops it too).
    h.delete("expect");
    h.setChecked("host", hostField);
    setForwardingHeaders(h, forwardInfo);
    h.setChecked("x-request-id", ctx.requestId); // REQUEST_ID's characters, or one Prox made
  }
  // basic_auth checked the password: the upstream gets the user ({auth_user}), not the secret.
  if (ctx.dropAuthorization) h.delete("authorization");
  applyAuthHeaders(ctx, h);
  if (route.browser_headers) {
    for (const [k, v] of Object.entries(BROWSER_HEADERS)) if (!h.has(k)) h.set(k, v);
  }
  return h;
}

/**
 * The route's `request_headers` rule when its condition holds for the request as it arrived
 * (body rule conditions see it after the header rules, as in the seed), else undefined.
 */
export function requestHeaderRule(ctx: RequestContext): HeaderRules | undefined {
  const rule = ctx.route!.rules.requestHeaders;
  return rule && (rule.always || rule.when(requestInput(ctx, ctx.req.headers))) ? rule : undefined;
}

/** The upstream URL for one target: path_rewrite or strip_prefix applied, the query kept. */
export function targetOf(
  ctx: RequestContext,
  route: { path_rewrite?: string },
  target: string,
): UpstreamTarget {
  return upstreamTarget(target, {
    path: ctx.path,
    prefix: ctx.route!.prefix,
    rewrite: route.path_rewrite,
    query: ctx.query,
    regex: ctx.route!.pathRegex,
  });
}

/**
 * What a PROXY protocol header says of the client's connection: the client (behind trusted
 * proxies, its port only when it is the peer itself) and Prox's listening port.
 */
export function clientAddresses(ctx: RequestContext): ProxiedAddresses {
  const peer = ctx.info.remoteAddr;
  const ip = ctx.clientIp;
  return {
    source: { ip, port: ip === peer.hostname ? peer.port : 0 },
    // The listener's own address is not known here (it may be a wildcard): the unspecified one.
    destination: { ip: ip.includes(":") ? "::" : "0.0.0.0", port: ctx.info.localPort },
  };
}

/** Proxies the request to the route's upstream(s); the response body streams through. */
export async function proxyAction(
  ctx: RequestContext,
  deps: PipelineDeps,
  route: UpstreamRoute,
  opts?: {
    /** Edits the upstream request's header fields last (the cache's revalidation conditions). */
    headers?: (h: HeaderList) => void;
    /**
     * Ends the exchange in place of the client's signal (a cache fill others wait for goes on
     * when its own client leaves: cache_fill.ts fillSignal).
     */
    signal?: AbortSignal;
  },
): Promise<Response> {
  const limit = route.max_request_body ?? ctx.snapshot.config.limits.max_request_body;
  const declared = ctx.req.headers.get("content-length");
  let length = declared === null ? -1 : Number(declared);
  // Two Content-Length fields that agree come joined ("5, 5"): that one length (requestLength).
  if (declared !== null && !(Number.isSafeInteger(length) && length >= 0)) {
    length = requestLength(declared);
    if (length < 0) {
      throw new ProxyError("bad_request", `Invalid Content-Length "${declared.slice(0, 40)}"`);
    }
  }
  if (limit !== undefined && length > limit) {
    throw new ProxyError("body_too_large", `Content-Length ${declared} exceeds ${limit}`);
  }
  // Prox's own HTTP/1.1 engine has a small body in memory already (adapters/h1/wire_request.ts).
  let body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null = ctx.body ??
    (ctx.req as { [RAW_BODY]?: Uint8Array<ArrayBuffer> })[RAW_BODY] ?? ctx.req.body;
  const te = ctx.req.headers.get("transfer-encoding");
  if (te !== null && te.trim().toLowerCase() !== "chunked") {
    // Only chunked is decoded on the way in; another coding would go upstream unlabelled.
    throw new ProxyError("not_implemented", `Unsupported Transfer-Encoding "${te.slice(0, 40)}"`);
  }
  // The Fetch API gives a GET or HEAD request no body, even one the client sent, so on
  // Deno.serve and Prox's HTTP/1.1 engine it cannot be forwarded with it; Prox's HTTP/2 and
  // HTTP/3 engines would have it. Refused on every listener alike rather than passed on by some.
  const bodiless = ctx.req.method === "GET" || ctx.req.method === "HEAD";
  const refuseBody = () =>
    new ProxyError(
      "not_implemented",
      `A ${ctx.req.method} request with a body cannot be forwarded`,
    );
  // Its Content-Length must not go upstream without it either: the upstream would take the next
  // request on the connection as the rest of this one.
  if ((body === null || bodiless) && (length > 0 || te !== null)) throw refuseBody();

  const compiled = ctx.route!;
  // `timeouts.total` from here: a body read before an upstream is chosen counts too (a client
  // trickling it in got no answer for as long as timeouts.idle per byte allowed: 408 at total).
  // A gRPC call's own deadline (grpc-timeout, counted from its arrival) when that comes first.
  const call = callDeadline(ctx, deps, route);
  const deadline = call ? startDeadline(opts?.signal ?? ctx.req.signal, call) : undefined;
  const bodyDeadline = deadline && { signal: deadline.signal, ms: call!.ms, what: call!.what };
  /** A read of the client's body before forward(): the deadline ends with its failure. */
  const early = async <T>(read: Promise<T>): Promise<T> => {
    try {
      return await read;
    } catch (err) {
      deadline?.clear();
      throw err;
    }
  };
  if (body instanceof ReadableStream && length < 0 && te === null) {
    // Looked at rather than dropped even when the head says there is none: an HTTP/2 request
    // that carries a Host field passes for HTTP/1.1 (protocolOf). A GET or HEAD whose HEADERS
    // did not end its stream is waited for (up to timeouts.idle): whether it carries content
    // decides between forwarding it and a 501, and the empty DATA frame that ends it may come in
    // a later packet.
    const known = ctx.info.protocol === "http/1.1" || bodiless;
    // With `timeouts.idle: 0s` (none) such a stream, never ended, was held for ever (stream,
    // handler and all): the wait for its end is bounded as HTTP/3 bounds a head's (30 s).
    const idleMs = compiled.timeouts.idle > 0 || ctx.info.protocol === "http/1.1" || !bodiless
      ? compiled.timeouts.idle
      : BODILESS_END_MS;
    body = await early(nullIfEmpty(body, { idleMs, known, deadline: bodyDeadline }));
  }
  if (bodiless && body !== null) {
    if (body instanceof ReadableStream || body.byteLength > 0) {
      if (body instanceof ReadableStream) body.cancel().catch(() => {});
      deadline?.clear();
      throw refuseBody();
    }
    body = null;
  }
  const { requestBody } = compiled.rules;
  const headerRule = requestHeaderRule(ctx);
  const values = (headerRule && !headerRule.fixed) || requestBody
    ? placeholderValues(ctx)
    : NO_VALUES;
  const ruleOpts = { values, logger: deps.logger, requestId: ctx.requestId };
  let replaced: { bytes: Uint8Array<ArrayBuffer>; contentType: string } | undefined;
  /** A rule with only `content_type` relabels the body it keeps. */
  let relabel: string | undefined;
  if (requestBody) {
    const h = new Headers(ctx.req.headers);
    if (headerRule) applyHeaderRules(headerRule, h, ruleOpts);
    const input = requestInput(ctx, h);
    // The condition sees the fields after the header rules: a Host one set too.
    const host = h.get("host");
    if (host !== null && host !== ctx.req.headers.get("host")) input.authority = host;
    if (requestBody.when(input)) {
      const bytes = ruleBody(requestBody, values);
      if (bytes) {
        // Read (and dropped) before the replacement goes: over the limit it is 413, as a
        // declared length would be. Without a limit nothing waits for it.
        if (body instanceof ReadableStream) {
          if (limit !== undefined) {
            const idleMs = compiled.timeouts.idle;
            await early(dropWithin(body, limit, idleMs, { deadline: bodyDeadline }));
          } else discard(body, Infinity);
        }
        replaced = { bytes, contentType: requestBody.contentType };
      } else relabel = requestBody.contentType;
    }
  }

  if (body instanceof ReadableStream && !replaced) {
    // A small body with a declared length is read before an upstream is chosen: it then goes out
    // in one write with the head and can be retried, and a client that stalls while sending it
    // gets 408 without holding an upstream connection. Its length is checked as it is read.
    if (length >= 0 && length <= REPLAY_CAP) {
      const idleMs = compiled.timeouts.idle;
      body = await early(readWhole(body, length, idleMs, { deadline: bodyDeadline }));
    } else if (limit !== undefined) body = limitBody(body, limit);
  }

  // A listener that writes answers itself may get an upstream's buffered one as a WireResponse,
  // when nothing on the way needs a Fetch Response.
  const lean = ctx.info.writesItself === true && compiled.cache === null &&
    compiled.compress === null && !compiled.rules.responseBody && !ctx.snapshot.hasErrorPages;
  // An upstream's 103 Early Hints go to a client whose listener can send one (RFC 8297): not
  // Deno.serve's or an HTTP/1.0 client's (RFC 9110 §15.2). The listener's ClientInfo
  // takes them itself: no closure per request.
  const hints = route.early_hints !== false && ctx.info.earlyHints !== undefined &&
      ctx.info.http10 !== true
    ? ctx.info as EarlyHintsSink
    : undefined;
  // One header for every try of this request: the client's address.
  const pp = route.proxy_protocol
    ? proxyHeader(route.proxy_protocol, clientAddresses(ctx))
    : undefined;
  // A `replace` rule reads the body: the upstream is asked for it uncoded.
  const identity = compiled.rules.responseBody !== undefined && asksIdentity(compiled.rules);
  const build = (target: string): UpstreamRequest => {
    const to = targetOf(ctx, route, target);
    const headers = upstreamHeaders(ctx, route, to.origin);
    if (headerRule) applyHeaderRules(headerRule, headers, ruleOpts);
    if (identity) headers.set("accept-encoding", "identity");
    opts?.headers?.(headers);
    // The upstream is told the time left (as Envoy): never more than the client gave.
    if (call?.grpc) headers.set("grpc-timeout", grpcTimeLeft(call, deps, route));
    if (replaced) {
      for (const h of STALE_BODY_HEADERS) headers.delete(h);
      headers.set("content-type", replaced.contentType);
      headers.set("content-length", String(replaced.bytes.byteLength));
    } else {
      if (relabel !== undefined) headers.set("content-type", relabel);
      // In plain digits: a client's "010" is valid (RFC 9110 §8.6), yet a parser that takes a
      // leading zero for octal would read 8 bytes and the rest as the next request.
      if (length >= 0) headers.set("content-length", String(length));
    }
    return {
      origin: to.origin,
      target: to.path,
      method: ctx.req.method,
      headers,
      body: replaced ? replaced.bytes : body,
      timeouts: compiled.timeouts,
      tls: compiled.upstreamTls,
      signal: deadline?.signal ?? opts?.signal,
      clientSignal: deadline || opts?.signal ? undefined : () => ctx.req.signal,
      proxyHeader: pp,
      protocol: route.upstream_protocol,
      lean,
      hints,
      // Prox's HTTP/2 client watches the deadline through the body itself, sparing the answer a
      // wrapping stream (withDeadline); not with a per-try timeout, whose signal is not this one.
      watchBody: deadline !== undefined && !route.retries?.per_try_timeout,
      streamErrors: compiled.intercept && ctx.snapshot.hasErrorPages,
    };
  };
  const mirror = compiled.mirror
    ? startMirror(ctx, deps, {
      policy: compiled.mirror,
      body: replaced ? replaced.bytes : body,
      length,
      build,
    })
    : undefined;
  // The upstream gets the body through the mirror's copy (unless a rule replaced it).
  if (mirror && !replaced) body = mirror.body;
  let res: Response;
  try {
    res = await forward(ctx, deps, {
      build,
      streamedBody: !replaced && body instanceof ReadableStream,
      deadline: bodyDeadline,
    });
  } catch (err) {
    mirror?.abandon();
    deadline?.clear();
    // A client still sending its body when it passed is told so (408), not sent a 504.
    const client = err instanceof ProxyError && err.kind === "request_timeout";
    if (deadline?.expired() && !client) throw deadline.error(ctx.upstream ?? "");
    throw err;
  }
  if (mirror?.waiting) {
    // An upstream may answer without reading the whole body (nothing in UpstreamClient makes it):
    // once the answer is delivered the body will not pass whole, and copies still waiting for it
    // are dropped. They held their slots for good, until mirroring on the route stopped.
    const abandon = () => mirror.abandon();
    ctx.info.completed?.then(abandon, abandon);
  }
  if (route.rewrite_location && !compiled.pathRegex) res = relocated(ctx, route, res);
  // The client has dropped hop-by-hop fields already (see UpstreamClient).
  return deadline ? watched(res, deadline) : res;
}

/** The answer with its deadline watched: by the upstream client (`watchBody`), or here. */
function watched(res: Response, deadline: Deadline): Response {
  const counter = (res as CountedResponse)[BODY_BYTES];
  if (counter?.watched !== true) return withDeadline(res, deadline);
  if (counter.over) deadline.clear();
  else counter.onOver = () => deadline.clear();
  return res;
}

/**
 * `rewrite_location`: a Location or Refresh of the answering target's own URL becomes the path
 * the client asks Prox for (src/domain/location_rewrite.ts). Not on `path_regex` routes, whose
 * mapping has no way back.
 */
function relocated(ctx: RequestContext, route: UpstreamRoute, res: Response): Response {
  const h = res.headers;
  if (!h.has("location") && !h.has("refresh")) return res;
  const compiled = ctx.route!;
  const map = {
    target: ctx.upstream!,
    prefix: compiled.prefix,
    rewrite: route.path_rewrite,
    host: compiled.upstreamHost,
  };
  const location = h.get("location");
  const refresh = h.get("refresh");
  const newLocation = location === null ? undefined : reverseLocation(location, map);
  const newRefresh = refresh === null ? undefined : reverseRefresh(refresh, map);
  if (newLocation === undefined && newRefresh === undefined) return res;
  let out = res;
  if (!(res instanceof WireResponse) && !mutableHeaders(res)) {
    out = new Response(res.body, {
      status: res.status,
      statusText: res.statusText,
      headers: new Headers(h),
    });
    const counter = (res as CountedResponse)[BODY_BYTES];
    if (counter) (out as CountedResponse)[BODY_BYTES] = counter;
  }
  if (newLocation !== undefined) out.headers.set("location", newLocation);
  if (newRefresh !== undefined) out.headers.set("refresh", newRefresh);
  return out;
}

/**
 * How long the exchange may take from now: `timeouts.total`, or a gRPC call's `grpc-timeout`
 * (what is left of it) when that is shorter. `grpc` is set when the call sent one (its upstream
 * is then told the time left, from `at`, the deadline on the monotonic clock).
 */
interface CallDeadline {
  ms: number;
  at: number;
  what: string;
  grpc: boolean;
}

/**
 * The exchange's deadline, if any. `grpc-timeout` (PROTOCOL-HTTP2.md) is read only on routes
 * that can carry gRPC (`upstream_protocol` h2c or h2, or `grpc_web`), and honoured only on a
 * gRPC request: no other request reads a field more. A malformed one is ignored (as Envoy);
 * one that has run out already (`0n`) fails the call at once (DEADLINE_EXCEEDED).
 */
function callDeadline(
  ctx: RequestContext,
  deps: PipelineDeps,
  route: UpstreamRoute,
): CallDeadline | undefined {
  const total = ctx.route!.totalMs;
  const grpcRoute = route.upstream_protocol === "h2c" || route.upstream_protocol === "h2" ||
    route.grpc_web;
  const field = grpcRoute ? ctx.req.headers.get("grpc-timeout") : null;
  const sent = field === null ? undefined : parseGrpcTimeout(field);
  if (sent === undefined || grpcRequestType(ctx.req.headers.get("content-type")) === null) {
    // (`at` is read only for a gRPC call's field.)
    return total ? { ms: total, at: 0, what: "timeouts.total", grpc: false } : undefined;
  }
  const now = deps.clock.monotonic();
  // Prox's own time so far (filters, an auth check) counts: the client's clock runs from its send.
  const left = sent - (now - ctx.start);
  if (total && total <= left) {
    return { ms: total, at: now + total, what: "timeouts.total", grpc: true };
  }
  if (left <= 0) {
    throw new ProxyError("timeout", `The call's grpc-timeout (${field}) passed before it was sent`);
  }
  return { ms: left, at: now + left, what: `grpc-timeout ${field}`, grpc: true };
}

/** The `grpc-timeout` an upstream gets: the time left, or the route's per-try timeout if less. */
function grpcTimeLeft(call: CallDeadline, deps: PipelineDeps, route: UpstreamRoute): string {
  const left = call.at - deps.clock.monotonic();
  const perTry = route.retries?.per_try_timeout;
  return formatGrpcTimeout(perTry && perTry < left ? perTry : left);
}

/** A deadline for the whole upstream exchange (`timeouts.total`), linked to the client's signal. */
interface Deadline {
  signal: AbortSignal;
  expired(): boolean;
  error(source: string): ProxyError;
  onExpire(f: () => void): void;
  clear(): void;
}

function startDeadline(client: AbortSignal, call: CallDeadline): Deadline {
  const ac = new AbortController();
  const listeners: (() => void)[] = [];
  let expired = false;
  const { ms, what } = call;
  const error = (source: string) =>
    new ProxyError(
      "timeout",
      `No complete upstream response within ${Math.round(ms)} ms (${what})`,
      { source },
    );
  const onClient = () => ac.abort(client.reason);
  // A client gone already (while a filter waited) fires no event: its upstream request is over
  // before it starts, as it is on a route without a deadline.
  if (client.aborted) onClient();
  else client.addEventListener("abort", onClient, { once: true });
  // One shared timer for all deadlines (deadline_timers.ts), not a setTimeout each.
  const timer = deadlineTimers.add(timerDelay(ms), () => {
    expired = true;
    ac.abort(error(""));
    for (const f of listeners) f();
  });
  return {
    signal: ac.signal,
    expired: () => expired,
    error,
    onExpire: (f) => listeners.push(f),
    clear() {
      deadlineTimers.clear(timer);
      client.removeEventListener("abort", onClient);
    },
  };
}

/**
 * Errors the response body (and cancels the upstream's) when the deadline passes mid-body. A
 * pulled stream rather than a TransformStream: pipeThrough's loop cost a gRPC call with a deadline
 * about 20 µs more (a third of its CPU).
 */
function withDeadline(res: Response, deadline: Deadline): Response {
  if (!res.body) {
    deadline.clear();
    return res;
  }
  const reader = res.body.getReader();
  let ctl: ReadableStreamDefaultController<Uint8Array> | undefined;
  /** The body ended, failed, was cancelled or ran out of time: the deadline is over. */
  let over = false;
  const end = () => {
    over = true;
    deadline.clear();
  };
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      ctl = c;
    },
    async pull(c) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (err) {
        if (over) return;
        end();
        return c.error(err);
      }
      if (over) return; // expired meanwhile: the body has its error already
      if (r.done) {
        end();
        c.close();
      } else c.enqueue(r.value);
    },
    // A client that leaves (or an upstream body that fails) ends the deadline too: its timer
    // would otherwise hold the exchange until `timeouts.total` passed.
    cancel(reason) {
      end();
      return reader.cancel(reason);
    },
  });
  deadline.onExpire(() => {
    if (over) return;
    over = true;
    const err = deadline.error("");
    ctl?.error(err);
    reader.cancel(err).catch(() => {});
  });
  const out: CountedResponse = new Response(body, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
  });
  // The upstream client's byte counter still tells the access log what was delivered.
  const counter = (res as CountedResponse)[BODY_BYTES];
  if (counter) out[BODY_BYTES] = counter;
  return out;
}
