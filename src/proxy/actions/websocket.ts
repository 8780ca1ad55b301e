// The `websocket` route action, and WebSocket upgrades arriving on `proxy` and `load_balance`
// routes. Builds the upstream URL (path_rewrite as for proxy routes, ws/wss scheme) and the
// handshake headers, then lets forward() pick the target so balancing, retries and health
// apply; the WebSocketProxy port does the handshake and relaying (adapters/websocket_deno.ts).

import { dropUnderscoredNames, setForwardingHeaders, stripHopByHop } from "../../domain/headers.ts";
import { clientAddresses, targetOf } from "./proxy.ts";
import { proxyHeader } from "../../domain/proxy_protocol.ts";
import { ProxyError } from "../../domain/errors.ts";
import type {
  LoadBalanceRouteConfig,
  ProxyRouteConfig,
  WebSocketRouteConfig,
} from "../../config/schema.ts";
import type {
  Logger,
  UpstreamClient,
  UpstreamRequest,
  WebSocketLimits,
  WebSocketProxyRequest,
} from "../../ports.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { errorResponse, PASSED_ON } from "../respond.ts";
import type { PassedOn } from "../respond.ts";
import { forward, registryOf } from "../forward.ts";
import { applyHeaderRules, placeholderValues, requestInput } from "../filters/rules.ts";
import { applyAuthHeaders } from "../filters/forward_auth.ts";

type WsCapableRoute = WebSocketRouteConfig | ProxyRouteConfig | LoadBalanceRouteConfig;

/** Defaults for routes that do not set them (and for upgrades on proxy routes). */
export const WEBSOCKET_DEFAULTS: WebSocketLimits = {
  maxMessageSize: 16 << 20,
  maxFrameSize: 0,
  idleTimeout: 0,
  pingInterval: 30_000,
};

/** Handshake headers the upstream handshake makes itself (RFC 6455 §4.1); never copied. */
const HANDSHAKE_HEADERS = [
  "host",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "sec-websocket-protocol",
  "content-length",
];

/** True for an HTTP/1.1 WebSocket opening handshake (RFC 6455 §4.2.1). */
export function isWebSocketUpgrade(req: Request): boolean {
  if (req.method !== "GET") return false;
  const upgrade = req.headers.get("upgrade");
  return upgrade !== null && /(^|,)\s*websocket\s*(,|$)/i.test(upgrade);
}

/** Why a WebSocket opening handshake is malformed (RFC 6455 §4.2.1), or null. */
export function checkHandshake(h: Headers): string | null {
  if (!/(^|,)\s*upgrade\s*(,|$)/i.test(h.get("connection") ?? "")) {
    return "Connection header must contain Upgrade";
  }
  const key = h.get("sec-websocket-key");
  if (!key || !/^[A-Za-z0-9+/]{22}==$/.test(key.trim())) {
    return "Missing or invalid Sec-WebSocket-Key";
  }
  if (h.get("sec-websocket-version")?.trim() !== "13") return "Unsupported Sec-WebSocket-Version";
  // Subprotocols are unique tokens (RFC 6455 §4.1); Deno's client refuses anything else.
  // (Empty list elements are ignored, RFC 9110 §5.6.1.2.)
  const named = (h.get("sec-websocket-protocol") ?? "").split(",").map((s) => s.trim())
    .filter(Boolean);
  if (named.some((p) => !TOKEN.test(p))) return "Invalid Sec-WebSocket-Protocol value";
  if (new Set(named).size !== named.length) return "Sec-WebSocket-Protocol names a value twice";
  return null;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The `Sec-WebSocket-Protocol` values a client offered, in order. */
export function offeredProtocols(req: Request): string[] {
  const v = req.headers.get("sec-websocket-protocol");
  return v ? v.split(",").map((s) => s.trim()).filter(Boolean) : [];
}

/** The ws:// or wss:// URL for an http(s) or ws(s) target URL. */
export function toWebSocketUrl(url: string): URL {
  const u = new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u;
}

/** The route's limits with defaults filled in. */
export function websocketLimits(route: WsCapableRoute): WebSocketLimits {
  if (route.type !== "websocket") return WEBSOCKET_DEFAULTS;
  return {
    maxMessageSize: route.max_message_size ?? WEBSOCKET_DEFAULTS.maxMessageSize,
    maxFrameSize: route.max_frame_size ?? WEBSOCKET_DEFAULTS.maxFrameSize,
    idleTimeout: route.idle_timeout ?? WEBSOCKET_DEFAULTS.idleTimeout,
    pingInterval: route.ping_interval ?? WEBSOCKET_DEFAULTS.pingInterval,
  };
}

/** Headers for the upstream handshake: the client's (cookies, auth…) plus forwarding headers. */
export function handshakeHeaders(
  ctx: RequestContext,
  route: WsCapableRoute,
  opts: { logger: Logger },
): Headers {
  const h = new Headers(ctx.req.headers);
  stripHopByHop(h);
  if (!ctx.snapshot.config.underscores_in_headers) dropUnderscoredNames(h);
  for (const name of HANDSHAKE_HEADERS) h.delete(name);
  setForwardingHeaders(h, {
    peer: ctx.info.remoteAddr.hostname,
    trustedPeer: ctx.trustedPeer,
    scheme: ctx.scheme,
    hopScheme: ctx.info.tls ? "https" : "http",
    host: ctx.host,
    version: "1.1",
    rfc7239: route.type !== "websocket" && route.forwarded,
  });
  h.set("x-request-id", ctx.requestId);
  if (ctx.dropAuthorization) h.delete("authorization");
  applyAuthHeaders(ctx, h);
  const rules = ctx.route?.rules.requestHeaders;
  if (rules?.when(requestInput(ctx, ctx.req.headers))) {
    applyHeaderRules(rules, h, {
      values: placeholderValues(ctx),
      logger: opts.logger,
      requestId: ctx.requestId,
    });
  }
  return h;
}

/**
 * Proxies a WebSocket upgrade. On a `websocket` route a request that is not an upgrade gets 400.
 * When no upstream can be reached the client is upgraded and closed with 1014 (Bad Gateway),
 * which a browser can see, unlike an HTTP 502.
 */
export async function websocketAction(
  ctx: RequestContext,
  deps: PipelineDeps,
  route: WsCapableRoute,
): Promise<Response> {
  if (!isWebSocketUpgrade(ctx.req)) {
    return errorResponse("bad_request", ctx.requestId, {
      message: "This route only supports WebSocket connections",
    });
  }
  const ws = deps.websocket;
  if (!ws || !ctx.snapshot.config.protocols.websocket_enabled) {
    return errorResponse("internal", ctx.requestId, {
      status: 501,
      message: "WebSocket proxying is disabled",
    });
  }
  // RFC 6455 §4.1: the opening handshake is HTTP/1.1 or later (an HTTP/1.0 hop may have passed
  // the Upgrade on without knowing it; RFC 9110 §7.8 has it ignored). Deno upgraded it anyway.
  // Known on Prox's own HTTP/1.1 engine; Deno.serve does not say (http1_engine: deno).
  if (ctx.info.http10) {
    return errorResponse("bad_request", ctx.requestId, {
      message: "WebSocket upgrades need HTTP/1.1",
    });
  }
  const handshakeError = checkHandshake(ctx.req.headers);
  if (handshakeError) {
    const version = handshakeError.startsWith("Unsupported");
    return errorResponse("bad_request", ctx.requestId, {
      message: handshakeError,
      // RFC 6455 §4.4: 426 with the versions this server speaks.
      ...(version ? { status: 426, headers: { "sec-websocket-version": "13" } } : {}),
    });
  }
  const original = ctx.req;
  const compiled = ctx.route!;
  const protocols = offeredProtocols(original);
  const limits = websocketLimits(route);
  const headers = handshakeHeaders(ctx, route, deps);
  // Deno forgets a request's headers once it is upgraded; the access log reads them later. The
  // client's signal stays: forward() ends a retry's backoff with it (a client gone meanwhile was
  // connected to the next target all the same).
  ctx.req = new Request(original.url, {
    method: original.method,
    headers: original.headers,
    signal: original.signal,
  });

  // `proxy_protocol` (proxy and load_balance routes): the client's address first on the upstream
  // connection, as for its HTTP requests.
  const pp = route.type !== "websocket" && route.proxy_protocol
    ? proxyHeader(route.proxy_protocol, clientAddresses(ctx))
    : undefined;
  const build = (target: string): UpstreamRequest => {
    const to = targetOf(ctx, route, target);
    return {
      origin: to.origin,
      target: to.path,
      method: "GET",
      headers: new Headers(headers),
      body: null,
      proxyHeader: pp,
      timeouts: compiled.timeouts,
      tls: compiled.upstreamTls,
    };
  };
  // An upgraded connection stays in its target's in-flight count until it ends, so that
  // least_connections, the bounded loads, /status and a drain see open WebSockets (forward()
  // counts only the 101).
  const target = (id: string) => {
    const state = registryOf(deps).get(id);
    let held = false, ended = false;
    return {
      onEnd() {
        if (held && !ended) state.inFlight--;
        ended = true;
        // A concurrency_limit slot the upgraded connection held (below) is given back with it.
        if (held) ctx.release?.();
      },
      opened(res: Response) {
        if (res.status !== 101) {
          // A refused handshake (browsers show no body): intercept_upstream leaves it as it is.
          (res as PassedOn)[PASSED_ON] = true;
          return res;
        }
        if (ended) return res;
        held = true;
        state.inFlight++;
        // The session is the request in progress: its concurrency_limit slot stays taken until
        // it ends (Traefik's inFlightReq and nginx's limit_conn count a WebSocket as long).
        if (ctx.release) ctx.slotHeldBySession = true;
        return res;
      },
    };
  };
  const client: UpstreamClient = {
    send: (u) => {
      const t = target(ctx.upstream!);
      // A unix: origin has no URL origin ("null"): the handshake names localhost, as requests do.
      const unix = u.origin.protocol === "unix:";
      // A Host the route's request_headers rule set (handshakeHeaders dropped the client's):
      // Deno's WebSocket client drops it and sends the URL's, so the relay writes it, as the
      // rule gets its Host sent on HTTP requests (over preserve_host, as there).
      const ruleHost = u.headers.get("host");
      const request: WebSocketProxyRequest = {
        url: toWebSocketUrl((unix ? "http://localhost" : u.origin.origin) + u.target),
        ...(unix ? { unix: u.origin } : {}),
        headers: u.headers instanceof Headers ? u.headers : new Headers([...u.headers]),
        protocols,
        route: compiled.id,
        connectTimeout: u.timeouts.connect,
        signal: u.signal,
        tls: u.tls,
        proxyHeader: u.proxyHeader,
        // The client's Host with preserve_host (pipeline.ts checked it); discovered targets are
        // addresses: the handshake names the service, as requests do.
        host: ruleHost ??
          (route.type !== "websocket" && route.preserve_host && ctx.host
            ? ctx.host
            : compiled.upstreamHost),
        limits,
        requestId: ctx.requestId,
        localPort: ctx.info.localPort,
        onEnd: t.onEnd,
      };
      // The connection counts against its origin's upstream_pool limits for its whole life
      // (waits or is shed as a request is); the adapter waits for the place, and gives it back
      // when the connection closes. forward()'s per-try timeout (u.signal, which follows the
      // client's) ends the wait as for a request.
      request.slot = deps.upstream.hold?.(u, u.signal ?? original.signal);
      return ws.proxy(original, request).then(t.opened);
    },
    close: () => Promise.resolve(),
  };
  try {
    // Balancing, retries (none on `websocket` routes), passive health and drains as for HTTP:
    // a `websocket` route's target is its pool's one (pool.ts), in the same registry.
    return await forward(ctx, { ...deps, upstream: client }, { build });
  } catch (err) {
    if (!(err instanceof ProxyError) || (err.kind !== "connect" && err.kind !== "timeout")) {
      throw err;
    }
    deps.logger.warn("WebSocket upstream unreachable", {
      requestId: ctx.requestId,
      route: compiled.id,
      upstream: ctx.upstream,
      error: err.message,
    });
    return ws.reject(original, 1014, err.kind === "timeout" ? "Upstream timed out" : "Bad gateway");
  }
}
