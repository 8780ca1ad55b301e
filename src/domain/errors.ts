// The one error type of the data path and the one table that maps it to an HTTP status.
// Adapters translate platform errors into ProxyError at the boundary; nothing else decides a status.

/** What went wrong, independent of where. */
export type ErrorKind =
  | "bad_request" // malformed or unnormalizable request: 400
  | "not_found" // no route: 404
  | "unauthorized" // basic_auth: no or wrong credentials: 401
  | "forbidden" // ip_access refused the client: 403
  | "method_not_allowed" // 405
  | "not_implemented" // a method or request framing Prox cannot forward: 501
  | "body_too_large" // request body over the limit: 413
  | "header_too_large" // 431
  | "request_timeout" // the client paused its request body too long: 408
  | "rate_limited" // 429 (or the configured status)
  | "connect" // could not connect to the upstream: 502
  | "upstream_reset" // the upstream closed or reset mid-exchange: 502
  | "protocol" // the upstream spoke invalid HTTP: 502
  | "timeout" // connect/header/idle/total timeout: 504
  | "no_healthy_upstream" // every target down or ejected: 503
  | "overloaded" // queue full, load shed: 503
  | "shutting_down" // 503
  | "client_gone" // the client went away: 499, logged only
  | "internal"; // a bug: 500

/**
 * Why a request waiting for an upstream connection (`upstream_pool`) was shed: the queue was
 * full, it waited `queue_timeout`, or its own timeout (`per_try_timeout`, `timeouts.total`) ran
 * out while it waited.
 */
export type ShedReason = "queue_full" | "queue_timeout" | "request_timeout";

/** An error on the data path: a kind, the upstream or component it came from, and retryability. */
export class ProxyError extends Error {
  readonly kind: ErrorKind;
  /** Upstream URL or component name; logged, never shown to clients. */
  readonly source: string;
  /** True when the request may be sent again (e.g. nothing reached the upstream). */
  readonly retryable: boolean;
  /** True when not a single byte of the request reached the upstream. */
  readonly sentNothing: boolean;
  /**
   * Closed by the upstream on a reused keep-alive connection before any response byte: most
   * likely its idle timeout racing this request, no sign that the request made it fail.
   */
  staleConnection = false;
  /**
   * Prox's own host failed the connect, not the target: file descriptors, ephemeral ports or
   * buffers ran out (EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS). Passive and active health do not
   * hold it against the target.
   */
  local = false;
  /** The request whose response body failed with this error (see `tagRequest`). */
  request?: RequestTag;
  /** Seconds until a retry may succeed, sent as `Retry-After` (RFC 9110 §10.2.3) with a 503. */
  retryAfter?: number;
  /** Why Prox's own upstream pool shed the request (kind "overloaded"); counted per target. */
  shed?: ShedReason;

  constructor(
    kind: ErrorKind,
    message: string,
    opts: { source?: string; retryable?: boolean; sentNothing?: boolean; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = "ProxyError";
    this.kind = kind;
    this.source = opts.source ?? "";
    this.sentNothing = opts.sentNothing ?? false;
    this.retryable = opts.retryable ?? this.sentNothing;
  }
}

/**
 * Whether a connect error's message is one of the local host's resources running out (Deno's
 * messages end in "(os error N)": ENFILE 23, EMFILE 24, EADDRNOTAVAIL 99, ENOBUFS 105 on Linux),
 * rather than anything the target did.
 */
export function localConnectFailure(message: string): boolean {
  return /\(os error (?:23|24|99|105)\)|too many open files|cannot assign requested address|no buffer space/i
    .test(message);
}

/** Which request an error belongs to, so a warning can be tied to its access-log line. */
export interface RequestTag {
  readonly requestId: string;
  readonly route: string | null;
}

/**
 * `err` with the request it failed (when it is a ProxyError and the request is known): a response
 * body that fails after its head went out is reported by the listener, which only sees the error.
 */
export function tagRequest(err: unknown, tag: RequestTag | undefined): unknown {
  if (tag && err instanceof ProxyError) err.request ??= tag;
  return err;
}

const STATUS: Record<ErrorKind, number> = {
  bad_request: 400,
  not_found: 404,
  unauthorized: 401,
  forbidden: 403,
  method_not_allowed: 405,
  not_implemented: 501,
  body_too_large: 413,
  header_too_large: 431,
  request_timeout: 408,
  rate_limited: 429,
  connect: 502,
  upstream_reset: 502,
  protocol: 502,
  timeout: 504,
  no_healthy_upstream: 503,
  overloaded: 503,
  shutting_down: 503,
  client_gone: 499,
  internal: 500,
};

const REASON: Record<ErrorKind, string> = {
  bad_request: "Bad request",
  not_found: "Not found",
  unauthorized: "Unauthorized",
  forbidden: "Forbidden",
  method_not_allowed: "Method not allowed",
  not_implemented: "Not implemented",
  body_too_large: "Request body too large",
  header_too_large: "Request header fields too large",
  request_timeout: "Request timeout",
  rate_limited: "Too many requests",
  connect: "Bad gateway: cannot connect to upstream",
  upstream_reset: "Bad gateway: upstream closed the connection",
  protocol: "Bad gateway: invalid response from upstream",
  timeout: "Gateway timeout",
  no_healthy_upstream: "Service unavailable: no healthy upstream",
  overloaded: "Service unavailable: overloaded",
  shutting_down: "Service unavailable: shutting down",
  client_gone: "Client closed request",
  internal: "Internal server error",
};

/** HTTP status for an error kind. */
export function statusFor(kind: ErrorKind): number {
  return STATUS[kind];
}

/** The short, client-safe reason for an error kind (never an internal host or stack). */
export function reasonFor(kind: ErrorKind): string {
  return REASON[kind];
}

/**
 * The RFC 9209 error type for a failure Prox answers itself (`Proxy-Status: prox; error=…`): what
 * went wrong on the way to the upstream, in the registry's words. The message refines the kind
 * (the adapters' wording: "connection refused", "cannot resolve host", "timed out"…).
 */
export function proxyStatusFor(kind: ErrorKind, message = ""): string {
  switch (kind) {
    case "connect":
      if (/refused/i.test(message)) return "connection_refused";
      if (/resolve/i.test(message)) return "dns_error";
      if (/certificate/i.test(message)) return "tls_certificate_error";
      if (/TLS|handshake/i.test(message)) return "tls_protocol_error";
      if (/reset/i.test(message)) return "connection_terminated";
      return "destination_unavailable";
    case "timeout":
      if (/Cannot connect/i.test(message)) return "connection_timeout";
      if (/idle/i.test(message)) return "connection_read_timeout";
      return "http_response_timeout";
    case "upstream_reset":
      return "connection_terminated";
    case "protocol":
      return "http_protocol_error";
    case "no_healthy_upstream":
      return "destination_unavailable";
    case "overloaded":
      return "connection_limit_reached";
    case "not_found":
      return "destination_not_found";
    case "rate_limited":
    case "unauthorized":
    case "forbidden":
    case "method_not_allowed":
    case "not_implemented":
      return "http_request_denied";
    case "bad_request":
    case "body_too_large":
    case "header_too_large":
    case "request_timeout":
    case "client_gone":
      return "http_request_error";
    case "shutting_down":
      return "proxy_internal_response";
    case "internal":
      return "proxy_internal_error";
  }
}

/** Wraps anything thrown into a ProxyError; unknown errors become `internal`. */
export function toProxyError(err: unknown, source = ""): ProxyError {
  if (err instanceof ProxyError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ProxyError("internal", message, { source, cause: err });
}
