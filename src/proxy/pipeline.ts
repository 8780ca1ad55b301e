// The request pipeline, one handler for every protocol. Phases, top to bottom:
//   1. pin the current snapshot            (snapshot.ts)
//   2. identify: request id, client IP behind trusted proxies, scheme, host (domain/headers.ts)
//   3. normalize the path (400 when impossible) (domain/rewrite.ts)
//   4. match a route (404 when none)       (domain/router.ts)
//   5. request filters: may answer early (ip access, CORS preflight, rate limit, basic auth,
//      JWT auth, forward auth, rules)   (filters/)
//   6. action: proxy | load_balance (through the route's cache, cache.ts) | static | redirect |
//      websocket   (actions/)
//   7. response filters (header/body rules, compression, error pages, CORS, Alt-Svc, HSTS,
//      bandwidth)
//   8. log + metrics, exactly once
// Errors become responses in one place (respond.ts + domain/errors.ts statusFor).

import { ProxyError, proxyStatusFor, toProxyError } from "../domain/errors.ts";
import { HOST_FIELD, isTrusted, requestLength, resolveClientIp } from "../domain/headers.ts";
import { withoutParams } from "../domain/router.ts";
import type { RouteEntry } from "../domain/router.ts";
import { authorityOf, normalizePath, plainPath, rawQuery, wireQuery } from "../domain/rewrite.ts";
import { BODY_BYTES, RAW_BODY } from "../ports.ts";
import type { AccessRecord, ClientInfo, CountedResponse, Handler } from "../ports.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import { errorResponse, grpcErrorResponse, grpcRequestType, OWN_ERROR } from "./respond.ts";
import type { OwnError } from "./respond.ts";
import { pageFor, withErrorPage } from "./error_pages.ts";
import { recent } from "./recent.ts";
import { resetOr } from "./body_replay.ts";
import { discard, proxyAction } from "./actions/proxy.ts";
import { cachedProxy } from "./cache.ts";
import { grpcWebAction, grpcWebKind, WEB_STATUS } from "./actions/grpc_web.ts";
import type { WebCounter } from "./actions/grpc_web.ts";
import { redirectAction } from "./actions/redirect.ts";
import { respondAction } from "./actions/respond.ts";
import { applyResponseRules } from "./filters/rules.ts";
import { takeSlot } from "./filters/concurrency.ts";
import { staticAction } from "./actions/static.ts";
import { isWebSocketUpgrade, websocketAction } from "./actions/websocket.ts";
import { applyRateLimit, renameClashingPolicies } from "./filters/rate_limit.ts";
import { applyForwardAuth } from "./filters/forward_auth.ts";
import { checkIpAccess, forbidden } from "./filters/ip_access.ts";
import { checkBasicAuth } from "./filters/basic_auth.ts";
import { checkJwtAuth, queryWithoutTokens, takeQueryToken } from "./filters/jwt_auth.ts";
import { applyCompression } from "./filters/compress.ts";
import { pacedAnswer } from "./filters/bandwidth.ts";
import { answerPreflight, withCors } from "./filters/cors.ts";
import { isPreflight } from "../domain/cors.ts";

const REQUEST_ID = /^[A-Za-z0-9._:@-]{1,128}$/;
/** An http or https request URL, the scheme in any case (RFC 3986 §3.1). */
const HTTP_URL = /^https?:\/\//i;
/** Makes request ids: a per-process random prefix and a counter (cheap, unique, sortable). */
export function requestIdSource(random: () => number): () => string {
  const prefix = Math.floor(random() * 0xffffffff).toString(16).padStart(8, "0");
  let n = 0;
  return () => `${prefix}-${(n++).toString(36).padStart(6, "0")}`;
}

/** Builds the Handler that every listener calls. */
export function createHandler(deps: PipelineDeps): Handler {
  const nextId = requestIdSource(deps.random ?? Math.random);
  const faults: FaultLog = new Map();
  return async (req: Request, info: ClientInfo): Promise<Response> => {
    const ctx = identify(req, info, deps, nextId);
    let res: Response;
    try {
      res = await handle(ctx, deps);
    } catch (err) {
      res = failure(ctx, deps, await resetOr(err, req), faults);
    }
    try {
      return respond(ctx, res);
    } catch (err) {
      // A slot taken must not outlive a bug on the way out (none is known to throw here).
      ctx.release?.();
      throw err;
    }
  };
  /** The response side every answer takes: gRPC errors, error pages, CORS, Alt-Svc, the log. */
  function respond(ctx: RequestContext, res: Response): Response {
    const req = ctx.req;
    // A gRPC client reads Prox's own failures as gRPC statuses; logs and metrics keep the HTTP one.
    if (res.status >= 400 && (res as OwnError)[OWN_ERROR]) {
      const grpc = grpcRequestType(req.headers.get("content-type"));
      if (grpc !== null) {
        ctx.loggedStatus ??= res.status;
        res = grpcErrorResponse(res, grpc);
      }
    }
    if (ctx.snapshot.hasErrorPages && res.status >= 400) res = withErrorPage(ctx, res);
    const route = ctx.route;
    const cors = route?.cors;
    if (cors) res = withCors(ctx, res, cors);
    res = finish(ctx, res);
    // 7d: last, so the bytes paced are the bytes sent (compressed, or an error page's).
    const bandwidth = route?.bandwidth;
    if (bandwidth) res = pacedAnswer(ctx, deps, res, bandwidth);
    dropUnreadBody(ctx);
    record(ctx, deps, res);
    if (ctx.release) releaseWhenDelivered(ctx, res);
    recent.context = ctx;
    recent.response = res;
    return res;
  }
}

/**
 * Wraps a handler that answers outside the routes (the plain-HTTP listener: redirects to HTTPS,
 * ACME challenges) so that its requests get metrics and access lines too, under route `label`.
 * A ProxyError it throws (a bad Host, an unknown challenge) becomes Prox's error answer, which
 * carries the top-level `error_pages` page as on the main listener.
 */
export function observedHandler(
  inner: Handler,
  o: { deps: PipelineDeps; label: string },
): Handler {
  const nextId = requestIdSource(o.deps.random ?? Math.random);
  return async (req, info) => {
    const ctx = identify(req, info, o.deps, nextId);
    let res: Response;
    try {
      res = await inner(req, info);
    } catch (err) {
      const e = toProxyError(err, "");
      if (e.kind === "internal") {
        o.deps.logger.error("Request failed", {
          requestId: ctx.requestId,
          route: o.label,
          error: e.message,
          stack: e.stack,
        });
      }
      ctx.error = proxyStatusFor(e.kind, e.message);
      // A bug's message is for the log only.
      res = errorResponse(
        e.kind,
        ctx.requestId,
        e.kind === "internal" ? {} : { message: e.message },
      );
    }
    if (ctx.snapshot.hasErrorPages && res.status >= 400) res = withErrorPage(ctx, res);
    record(ctx, o.deps, res, o.label);
    return res;
  };
}

/**
 * Phase 2: what the pipeline knows of a request before routing (also `prox explain`'s start).
 * `deps` needs only `snapshot` and `clock`.
 */
export function identify(
  req: Request,
  info: ClientInfo,
  deps: PipelineDeps,
  nextId: () => string,
): RequestContext {
  const snapshot = deps.snapshot();
  // The host is the request target's authority when it has one (absolute form, HTTP/2 and 3),
  // else the Host field's (RFC 9112 §3.2.2, RFC 9113 §8.3.1): the request URL's authority either
  // way. Most request URLs need no parsing: a URL object is made only for an unusual one.
  const hostField = req.headers.get("host");
  let host = info.authority ?? authorityOf(req.url);
  let path = plainPath(req.url);
  let invalid: string | null = null;
  if (hostField !== null && !HOST_FIELD.test(hostField)) invalid = "Invalid Host header";
  // `GET ftp://a.test/x`, HTTP/2 :scheme ftp: a URI Prox does not serve (RFC 9112 §3.2.2 — an
  // absolute-form target names the resource; RFC 9110 §4.2 defines only http and https for HTTP).
  else if (
    !req.url.startsWith("http://") && !req.url.startsWith("https://") && !HTTP_URL.test(req.url)
  ) invalid = "The request target's scheme is not http or https";
  // `http://a.test@example.test/` names example.test, which a person reads as a.test: an error
  // (RFC 9110 §4.2.4; RFC 9113 §8.3.1 forbids it in :authority).
  else if (host !== null && host.includes("@")) invalid = "Userinfo in the request target";
  // An authority Host could not be (`a"b`, `a{b}`: HTTP/2 and 3's :authority, an absolute-form
  // target) is refused as such a Host is, not routed and sent on in X-Forwarded-Host.
  else if (host !== null && host !== hostField && !HOST_FIELD.test(host)) {
    invalid = "Invalid authority in the request target";
  }
  if (invalid === null && (path === null || host === null)) {
    try {
      const url = new URL(req.url);
      path ??= url.pathname;
      host ??= url.host;
    } catch {
      invalid = "Invalid request URL";
    }
  }
  const peer = info.remoteAddr.hostname;
  const trustedPeer = isTrusted(peer, snapshot.trusted);
  const incomingId = req.headers.get("x-request-id");
  const requestId = trustedPeer && incomingId && REQUEST_ID.test(incomingId)
    ? incomingId
    : nextId();
  const fwdProto = trustedPeer ? req.headers.get("x-forwarded-proto") : null;
  return {
    req,
    info,
    snapshot,
    path: invalid === null ? path! : "/",
    query: invalid === null ? wireQuery(rawQuery(req.url)) : "",
    host: invalid === null ? host! : "",
    scheme: fwdProto === "https" || fwdProto === "http" ? fwdProto : info.tls ? "https" : "http",
    clientIp: resolveClientIp(peer, req.headers.get("x-forwarded-for"), snapshot.trusted),
    trustedPeer,
    requestId,
    route: null,
    start: deps.clock.monotonic(),
    startWall: deps.clock.now(),
    upstream: null,
    upstreamStatus: null,
    upstreamMs: null,
    retries: 0,
    error: null,
    extraResponseHeaders: [],
    invalid,
  };
}

/** The request body's declared length for the log (0 when none; agreeing duplicates as one). */
function bytesIn(declared: string | null): number {
  const n = Number(declared ?? 0);
  return n >= 0 ? n : Math.max(requestLength(declared!), 0);
}

/** Size of the header section as sent: names, values and ": " plus CRLF per field. */
function headerBytes(h: Headers): number {
  let n = 0;
  h.forEach((v, k) => n += k.length + v.length + 4); // forEach: for-of is ~10× slower on Headers
  return n;
}

async function handle(ctx: RequestContext, deps: PipelineDeps): Promise<Response> {
  if (deps.draining?.()) throw new ProxyError("shutting_down", "Shutting down");
  const refused = admit(ctx);
  if (refused) return refused;

  const match = ctx.snapshot.router.match(ctx.host, ctx.path, ctx);
  const hidden = paramRefusal(ctx, match);
  if (hidden) return hidden;
  if (!match) {
    // A client the top-level ip_access refuses learns nothing, not even which paths exist.
    const denied = ctx.snapshot.ipAccess && checkIpAccess(ctx, deps, ctx.snapshot.ipAccess);
    if (denied) return denied;
    ctx.error = "destination_not_found";
    return errorResponse("not_found", ctx.requestId, { proxyStatus: { message: "" } });
  }
  const route = match.value;
  deps.routed?.(route.id, ctx.req.method);
  ctx.route = route;
  // Out of the query before any filter may answer: the access log records the query.
  if (route.jwtAuth) takeQueryToken(ctx, route.jwtAuth);

  if (route.ipAccess) {
    const denied = checkIpAccess(ctx, deps, route.ipAccess);
    if (denied) return denied;
  }
  // Whose TLS client certificate may use the route (the listener verified it): 403 as ip_access.
  if (route.clientCert && !route.clientCert(ctx.info.clientCert)) {
    deps.metrics.accessDenied(route.id, "client_cert");
    return forbidden(ctx);
  }
  // A preflight carries no credentials and costs no upstream: answered before limits and auth.
  if (route.cors && isPreflight(ctx.req.method, ctx.req.headers)) {
    return answerPreflight(ctx, deps, route.cors);
  }
  if (route.firstLimits.length > 0) {
    const limited = await applyRateLimit(ctx, deps, route.firstLimits);
    if (limited) return limited;
  }
  if (route.basicAuth) {
    const refused = await checkBasicAuth(ctx, deps, route.basicAuth);
    if (refused) return refused;
  }
  if (route.jwtAuth) {
    const refused = await checkJwtAuth(ctx, deps, route.jwtAuth);
    if (refused) return refused;
  }
  if (route.claimLimits.length > 0) {
    // by: jwt_claim: keyed by the verified token's claim, so after jwt_auth.
    const limited = await applyRateLimit(ctx, deps, route.claimLimits);
    if (limited) return limited;
  }
  if (route.forwardAuth) {
    const denied = await applyForwardAuth(ctx, deps);
    if (denied) return denied;
  }
  if (route.concurrency) {
    // Last: a request another filter refuses takes no slot.
    const refused = takeSlot(ctx, deps, route.concurrency);
    if (refused) return refused;
  }

  const cfg = route.config;
  switch (cfg.type) {
    case "proxy":
    case "load_balance":
      // An Upgrade in an HTTP/1.0 request is ignored (RFC 9110 §7.8): proxied as plain HTTP.
      if (isWebSocketUpgrade(ctx.req) && !ctx.info.http10) {
        return await websocketAction(ctx, deps, cfg);
      }
      // gRPC calls are POSTs (PROTOCOL-HTTP2.md): a GET or HEAD goes on as it is.
      if (cfg.grpc_web && ctx.req.method === "POST") {
        const web = grpcWebKind(ctx.req.headers.get("content-type"));
        if (web) {
          return applyResponseRules(
            ctx,
            await grpcWebAction(ctx, deps, cfg, web),
            route.rules,
            deps.logger,
          );
        }
      }
      return compressed(
        ctx,
        deps,
        applyResponseRules(
          ctx,
          // 6a: the response cache, when the route has one (cache.ts); rules and compression
          // then apply to stored answers as to forwarded ones.
          route.cache === null
            ? await proxyAction(ctx, deps, cfg)
            : await cachedProxy(ctx, deps, cfg, route.cache),
          route.rules,
          deps.logger,
        ),
      );
    case "redirect":
      return redirectAction(ctx, cfg);
    case "respond":
      return compressed(
        ctx,
        deps,
        applyResponseRules(
          ctx,
          respondAction(ctx, cfg, route.rules.ownBody),
          route.rules,
          deps.logger,
        ),
      );
    case "static":
      return compressed(
        ctx,
        deps,
        applyResponseRules(ctx, await staticAction(ctx, deps, cfg), route.rules, deps.logger),
      );
    case "websocket":
      return await websocketAction(ctx, deps, cfg);
  }
}

/**
 * A `concurrency_limit` slot is given back once the answer has been delivered (or abandoned); an
 * upgraded WebSocket's when the session ends (websocket.ts).
 */
function releaseWhenDelivered(ctx: RequestContext, res: Response): void {
  if (ctx.slotHeldBySession && res.status === 101) return;
  const release = ctx.release!;
  const done = ctx.info.completed;
  if (!done || res.status === 101) return release();
  done.then(release, release);
}

/** Most of an unread request body drained after Prox answered without it (then cancelled). */
const DRAIN_CAP = 16 << 20;

/**
 * A request body nobody read (a 429, a forward_auth 401, a redirect, a 404…) is drained in the
 * background over HTTP/2: left alone, Deno's server resets a stream still uploading, and with it
 * the answer (curl: "Stream error in the HTTP/2 framing layer"). Up to the body limit, else 16 MiB.
 */
function dropUnreadBody(ctx: RequestContext): void {
  // HTTP/1.1 needs none: Deno.serve closes or skips the body itself, and reading it would answer
  // a client's `Expect: 100-continue` with a 100, inviting an upload nobody wants.
  const p = ctx.info.protocol;
  if (p !== "h2" && p !== "h2c") return;
  // A body that came whole with its head (Prox's HTTP/2 engine hands it on as bytes) is not being
  // uploaded: asking for `body` would make a stream of the bytes only to drain it (about 1.5 µs
  // per gRPC call or small POST).
  if ((ctx.req as { [RAW_BODY]?: Uint8Array })[RAW_BODY] !== undefined) return;
  const body = ctx.req.body;
  if (body === null || body.locked) return;
  const cfg = ctx.route?.config;
  const limit = (cfg && "max_request_body" in cfg ? cfg.max_request_body : undefined) ??
    ctx.snapshot.config.limits.max_request_body ?? DRAIN_CAP;
  discard(body, Math.min(limit, DRAIN_CAP));
}

/**
 * The route's `compress`, when it has one, applied to its answer (7b: after the rules). Prox's
 * own error answers (a static route's 404) stay as they are, as on every other path: small, and
 * an error page must still find them.
 */
function compressed(ctx: RequestContext, deps: PipelineDeps, res: Response): Response {
  const policy = ctx.route!.compress;
  if (policy === null || !deps.compressor) return res;
  if (res.status >= 400 && (res as OwnError)[OWN_ERROR]) return res;
  // An upstream error answer that an error page replaces (7c) is dropped unsent: compressed, it
  // lost the Content-Length by which a large one is cancelled rather than read, and was encoded
  // for nobody.
  if (
    res.status >= 400 && ctx.route!.intercept && ctx.snapshot.hasErrorPages &&
    pageFor(ctx, res.status)
  ) return res;
  return applyCompression(ctx, res, { policy, compressor: deps.compressor });
}

/**
 * Phase 4's guard: a path parameter or an encoded slash must not choose the route. `/api/admin;x` matched `/api`
 * (not the route `/api/admin`), and a Java upstream, dropping `;x`, served its `/admin` to it.
 * A route whose key holds a `;` itself is taken at its word. The path is read as such an upstream
 * reads it by the routes' `match` too: `path_matches: ^/admin(/|$)` must not miss `/admin;x`.
 */
export function paramRefusal(
  ctx: RequestContext,
  match: RouteEntry<unknown, RequestContext> | undefined,
): Response | undefined {
  const router = ctx.snapshot.router;
  /**
   * Whether the path as an upstream reads it goes to another route: by its segments (another key),
   * or by conditions seeing that path, unless the route taken is a conditional one whose match
   * holds only with what the upstream drops (`path_matches: ";jsessionid="`): it names it, as a
   * key holding `;` does.
   */
  const moves = (read: string) => {
    // A parameter or a separator alone in a segment leaves an empty one (`/api/;x/admin`,
    // `/%2Fadmin`), which Tomcat and servers behind nginx merge as Prox merges `//`.
    const path = read.includes("//") ? read.replace(/\/{2,}/g, "/") : read;
    if (router.match(ctx.host, path, ctx) !== match) return true;
    const view = { ...ctx, path };
    return router.match(ctx.host, path, view) !== match && !(match?.when && !match.when(view));
  };
  if (ctx.path.includes(";") && !match?.prefix.includes(";") && moves(withoutParams(ctx.path))) {
    return errorResponse("bad_request", ctx.requestId, {
      message: "Path parameter (;) in a segment a route names",
    });
  }
  // Likewise an encoded slash or backslash, which Go's r.URL.Path, Spring and others decode into
  // a separator: /admin%2Fx must not reach the "/" route's upstream as its /admin/x.
  if (
    ctx.path.includes("%") && ENCODED_SEPARATOR.test(ctx.path) &&
    !ENCODED_SEPARATOR.test(match?.prefix ?? "")
  ) {
    const decoded = ctx.path.replace(ENCODED_SEPARATORS, "/");
    // Also as a server that decodes separators first and drops parameters after reads it
    // (`/api/;x%2Fadmin` is its /api/admin).
    if (
      !moves(decoded) &&
      !(decoded.includes(";") && !match?.prefix.includes(";") && moves(withoutParams(decoded)))
    ) return undefined;
    return errorResponse("bad_request", ctx.requestId, {
      message: "Encoded slash (%2F or %5C) in a segment a route names",
    });
  }
  return undefined;
}

/** `%2F` and `%5C` (normalizePath upper-cases escapes). */
const ENCODED_SEPARATOR = /%2F|%5C/;
const ENCODED_SEPARATORS = /%2F|%5C/g;

/**
 * Phases 2–3: answers a request that cannot be routed (bad Host or URL, CONNECT, TRACE, header
 * section too large, unnormalizable path), else normalizes `ctx.path` and returns undefined.
 * Throws a ProxyError for the header limit, as the pipeline did.
 */
export function admit(ctx: RequestContext): Response | undefined {
  const refused = ctx.info.refused;
  if (refused) {
    // As the same request over TCP: 405 and 501 are answers, the others client faults (warned).
    if (refused.kind === "method_not_allowed" || refused.kind === "not_implemented") {
      return errorResponse(refused.kind, ctx.requestId, { message: refused.message });
    }
    throw new ProxyError(refused.kind, refused.message);
  }
  if (ctx.invalid !== null) {
    return errorResponse("bad_request", ctx.requestId, { message: ctx.invalid });
  }
  const method = ctx.req.method;
  if (method === "CONNECT" || isMethod(method, "CONNECT")) {
    return errorResponse("not_implemented", ctx.requestId, { message: "CONNECT is not supported" });
  }
  // As nginx: TRACE would echo cookies and credentials back through every proxy on the way.
  if (method === "TRACE" || isMethod(method, "TRACE")) {
    return errorResponse("method_not_allowed", ctx.requestId);
  }
  if (ctx.info.asterisk) {
    ctx.path = "*";
    // Only OPTIONS takes `*` (RFC 9112 §3.2.4). It asks about the server as a whole, which no
    // route or upstream stands for: answered here (as Go's servers, Caddy's among them, do),
    // where it went upstream as `OPTIONS /*` or `OPTIONS /`, a question about another resource.
    if (method !== "OPTIONS") {
      return errorResponse("bad_request", ctx.requestId, {
        message: "Only OPTIONS may have the request target *",
      });
    }
    return new Response(null, { status: 200, headers: ASTERISK_ANSWER });
  }
  const maxHeader = ctx.snapshot.config.limits.max_header_bytes;
  if (maxHeader !== undefined && headerBytes(ctx.req.headers) > maxHeader) {
    throw new ProxyError("header_too_large", `Request header fields exceed ${maxHeader} bytes`);
  }
  const norm = normalizePath(ctx.path);
  if (!norm.ok) return errorResponse("bad_request", ctx.requestId, { message: norm.reason });
  ctx.path = norm.path;
  return undefined;
}

/**
 * `method` is `upper` in another case (`trace`, `Connect`): a distinct method for RFC 9110 §9.1,
 * but one an upstream that ignores case (Jetty's legacy modes) takes for `upper`. Only methods of
 * its length are upper-cased (the others cost a length check).
 */
function isMethod(method: string, upper: string): boolean {
  return method.length === upper.length && method.toUpperCase() === upper;
}

/** The answer to `OPTIONS *`: the methods Prox passes on (TRACE and CONNECT it refuses). */
const ASTERISK_ANSWER: HeadersInit = [
  ["allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"],
  ["content-length", "0"],
];

/** Errors the client's own request caused: each is in the access log already. */
const CLIENT_FAULTS: ReadonlySet<string> = new Set([
  "bad_request",
  "body_too_large",
  "header_too_large",
  "not_implemented",
  "request_timeout",
]);
/** A client fault of one kind is logged at most once per this window, with a count. */
const CLIENT_FAULT_WINDOW_MS = 10_000;

/** Per error kind: when the next client-fault line may be written, and how many were held back. */
type FaultLog = Map<string, { until: number; suppressed: number }>;

function failure(
  ctx: RequestContext,
  deps: PipelineDeps,
  err: unknown,
  faults: FaultLog,
): Response {
  const e = toProxyError(err, ctx.upstream ?? "");
  const fields = {
    requestId: ctx.requestId,
    kind: e.kind,
    route: ctx.route?.id ?? null,
    upstream: ctx.upstream,
    error: e.message,
  };
  if (e.kind === "internal") deps.logger.error("Request failed", { ...fields, stack: e.stack });
  else if (CLIENT_FAULTS.has(e.kind)) {
    // A flood of bad requests must not flood the log.
    const now = deps.clock.monotonic();
    const f = faults.get(e.kind);
    if (f && now < f.until) f.suppressed++;
    else {
      const more = f?.suppressed ? { suppressedSinceLast: f.suppressed } : {};
      deps.logger.warn("Request failed", { ...fields, ...more });
      faults.set(e.kind, { until: now + CLIENT_FAULT_WINDOW_MS, suppressed: 0 });
    }
  } else if (e.kind !== "client_gone") deps.logger.warn("Request failed", fields);
  if (e.kind === "client_gone") ctx.loggedStatus = 499; // nginx's convention; nobody sees the body
  ctx.error = proxyStatusFor(e.kind, e.message);
  const headers = e.retryAfter === undefined ? undefined : { "retry-after": String(e.retryAfter) };
  return errorResponse(e.kind, ctx.requestId, { proxyStatus: e, headers });
}

/**
 * Fields Prox adds to an upstream's own: its rate limits are policies beside the app's, which a
 * client must see too (replacing them announced a quota more permissive than the app's), and a
 * sticky cookie goes beside the app's cookies.
 */
const LISTS: ReadonlySet<string> = new Set(["ratelimit-policy", "ratelimit", "set-cookie"]);

/** Response-side additions that apply to every answer: filter headers, Alt-Svc, HSTS. */
function finish(ctx: RequestContext, res: Response): Response {
  const add = ctx.extraResponseHeaders;
  // With HTTP/3 on, Alt-Svc on the TLS listener is Prox's own (ours over TCP while h3 is up,
  // none over h3): an upstream's names the upstream's alternatives, not this origin's.
  let dropAltSvc = false;
  if (ctx.info.tls && ctx.snapshot.config.protocols.http3_enabled) {
    const ours = ctx.info.protocol !== "h3" ? ctx.snapshot.altSvc : null;
    if (ours) add.push(["alt-svc", ours]);
    else dropAltSvc = res.headers.has("alt-svc");
  }
  const hsts = ctx.info.tls ? ctx.snapshot.config.tls?.hsts : undefined;
  if (hsts) {
    let v = `max-age=${Math.floor(hsts.max_age / 1000)}`;
    if (hsts.include_subdomains) v += "; includeSubDomains";
    if (hsts.preload) v += "; preload";
    add.push(["strict-transport-security", v]);
  }
  if (add.length === 0 && !dropAltSvc) return res;
  renameClashingPolicies(add, res.headers.get("ratelimit-policy"));
  try {
    for (const [k, v] of add) LISTS.has(k) ? res.headers.append(k, v) : res.headers.set(k, v);
    if (dropAltSvc) res.headers.delete("alt-svc");
    return res;
  } catch {
    // Immutable headers (e.g. a Response from fetch): copy once.
    const h = new Headers(res.headers);
    for (const [k, v] of add) LISTS.has(k) ? h.append(k, v) : h.set(k, v);
    if (dropAltSvc) h.delete("alt-svc");
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers: h });
  }
}

function record(ctx: RequestContext, deps: PipelineDeps, res: Response, label?: string): void {
  const seconds = (deps.clock.monotonic() - ctx.start) / 1000;
  const routeLabel = label ?? ctx.route?.id ?? "(none)";
  const status = ctx.loggedStatus ?? res.status;
  const method = ctx.info.refused?.method ?? ctx.req.method;
  deps.metrics.request(routeLabel, method, status, seconds);
  // A body that fails midway is reported by the listener, which sees only the error: this tags it.
  const counted = (res as CountedResponse)[BODY_BYTES];
  if (counted) counted.request = { requestId: ctx.requestId, route: ctx.route?.id ?? null };
  const access = deps.access;
  if (!access || deps.accessEnabled?.() === false) return;
  // A route's `access_log: false` (metrics above still count its requests).
  if (ctx.route?.config.access_log === false) return;
  // HEAD, 204 and 304 carry no body, whatever Content-Length says; 499: the client had left.
  const noBody = method === "HEAD" || res.status === 204 || res.status === 304 ||
    status === 499;
  const declared = noBody ? "0" : res.headers.get("content-length");
  const base: Omit<AccessRecord, "bytesOut" | "durationMs"> = {
    time: ctx.startWall,
    requestId: ctx.requestId,
    clientIp: ctx.clientIp,
    method,
    host: ctx.host,
    path: ctx.path,
    // Before routing (a 405, 431 or 400 of admit), no jwt_auth took its token out yet.
    query: (ctx.route ? ctx.query : queryWithoutTokens(ctx.query, ctx.snapshot.config)).slice(1),
    status,
    bytesIn: bytesIn(ctx.req.headers.get("content-length")),
    route: ctx.route?.id ?? null,
    upstream: ctx.upstream,
    upstreamStatus: ctx.upstreamStatus,
    upstreamMs: ctx.upstreamMs,
    protocol: ctx.info.http10 ? "http/1.0" : ctx.info.protocol,
    tls: ctx.info.tls,
    retries: ctx.retries,
    error: ctx.error,
    userAgent: ctx.req.headers.get("user-agent"),
    referer: ctx.req.headers.get("referer"),
    ...(ctx.authUser === undefined ? {} : { authUser: ctx.authUser }),
  };
  if (ctx.cache !== undefined) base.cache = ctx.cache;
  // Who the client's certificate says it is (tls.client_auth).
  const cert = ctx.info.clientCert;
  if (cert !== undefined) base.tlsClient = cert.subject;
  // The closure keeps only what it needs (not ctx, which holds the whole request).
  const { clock } = deps;
  const grpcAnswer = res.headers.has("grpc-status");
  const start = ctx.start;
  const filter = ctx.snapshot.accessFilter;
  const write = (sent: boolean) => {
    const durationMs = clock.monotonic() - start;
    // Deno.serve may report a body the client abandoned as sent; the counter knows better.
    const delivered = sent && (counted?.ended ?? true);
    // Known once the body ended: the trailers came before its end.
    const grpc = counted?.trailers?.find(([k]) => k === "grpc-status")?.[1] ??
      (counted as WebCounter | undefined)?.[WEB_STATUS] ??
      (grpcAnswer ? res.headers.get("grpc-status") : null);
    if (filter) {
      // Failed whatever its HTTP status: cut short, or a gRPC call's status other than OK.
      const failed = !delivered || (grpc !== null && grpc.trim() !== "0");
      if (!filter(status, durationMs, base.retries, failed)) return;
    }
    access({
      ...base,
      bytesOut: delivered && declared !== null ? Number(declared) : counted?.bytes ?? 0,
      durationMs,
      ...(delivered ? {} : { incomplete: true as const }),
      ...(grpc === null ? {} : { grpcStatus: grpc.slice(0, 16) }),
    });
  };
  // Written once the response is delivered (size and duration then known); a 101 hands the
  // connection over, so it is written at once.
  const done = ctx.info.completed;
  if (!done || res.status === 101) return write(true);
  const pending = deps.accessPending;
  if (!pending) {
    done.then(() => write(true), () => write(false));
    return;
  }
  const cut = () => settle(false);
  const settle = (sent: boolean) => {
    if (!pending.delete(cut)) return; // written already
    write(sent);
  };
  pending.add(cut);
  done.then(() => settle(true), () => settle(false));
}
