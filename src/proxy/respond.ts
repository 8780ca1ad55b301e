// Building responses. Error responses: the status from the one table in domain/errors.ts, a short
// reason and the request id; never an internal host or a stack trace.

import { proxyStatusFor, reasonFor, statusFor } from "../domain/errors.ts";
import type { ErrorKind } from "../domain/errors.ts";
import { grpcStatusFields } from "../domain/grpc.ts";

const encoder = new TextEncoder();

/** Marks Prox's own error answers, which `error_pages` may replace (error_pages.ts). */
export const OWN_ERROR: unique symbol = Symbol("prox.ownError");

/**
 * Marks an answer another service wrote for the client (forward_auth's denial: a login page, its
 * cookies), or a WebSocket handshake the upstream refused: `intercept_upstream` leaves it as it is.
 */
export const PASSED_ON: unique symbol = Symbol("prox.passedOn");

/**
 * A Response made by errorResponse: its kind, the short reason it says, and whether its body is
 * one the config wrote (a rate limit's message: that route's page already).
 */
export interface OwnError {
  [OWN_ERROR]?: { kind: ErrorKind; message: string; exact: boolean };
}

/** A Response marked with PASSED_ON. */
export interface PassedOn {
  [PASSED_ON]?: true;
}

/** A small text error response carrying the request id. */
export function errorResponse(
  kind: ErrorKind,
  requestId: string,
  opts: {
    status?: number;
    message?: string;
    exact?: boolean;
    headers?: HeadersInit;
    /** Says why as a proxy (RFC 9209 `Proxy-Status`): the failure's message refines the kind. */
    proxyStatus?: { message: string };
  } = {},
): Response {
  const status = opts.status ?? statusFor(kind);
  // `exact`: a body the config wrote, sent as written (the id stays in X-Request-Id).
  const exact = opts.exact && opts.message !== undefined;
  const message = opts.message ?? reasonFor(kind);
  const body = encoder.encode(exact ? message : `${message}\nrequest id: ${requestId}\n`);
  const headers = new Headers(opts.headers);
  headers.set("content-type", exact ? typeOfMessage(message) : "text/plain; charset=utf-8");
  // Some messages quote what the client sent (up to 40 bytes): never to be sniffed as HTML.
  headers.set("x-content-type-options", "nosniff");
  // Declared, so the access log's bytesOut counts this body (it reads Content-Length).
  headers.set("content-length", String(body.byteLength));
  headers.set("x-request-id", requestId);
  headers.set("cache-control", "no-store");
  if (opts.proxyStatus) {
    headers.set("proxy-status", `prox; error=${proxyStatusFor(kind, opts.proxyStatus.message)}`);
  }
  // Load shed (upstream pool queue full): tell clients when to come back (RFC 9110 §10.2.3).
  if (kind === "overloaded" && !headers.has("retry-after")) headers.set("retry-after", "1");
  // 499 is not a valid Response status in the Fetch standard; the client is gone anyway.
  const res: Response & OwnError = new Response(body, {
    status: status === 499 ? 400 : status,
    headers,
  });
  res[OWN_ERROR] = { kind, message, exact: exact === true };
  return res;
}

/** Content types of configured messages, worked out once each (they come from the config). */
const messageTypes = new Map<string, string>();

/**
 * The content type of a body the config wrote (a rate limit's `message`): JSON for a JSON object
 * or array, which API clients that check the type (.NET's ReadFromJsonAsync, Feign) refused as
 * text/plain; else plain text.
 */
export function typeOfMessage(message: string): string {
  let type = messageTypes.get(message);
  if (type !== undefined) return type;
  type = "text/plain; charset=utf-8";
  const t = message.trimStart();
  if (t.startsWith("{") || t.startsWith("[")) {
    try {
      JSON.parse(t);
      type = "application/json";
    } catch { /* text that starts with a brace */ }
  }
  if (messageTypes.size >= 256) messageTypes.clear(); // (reloads with other messages)
  messageTypes.set(message, type);
  return type;
}

/**
 * A Response whose header fields are appended to its own headers. Passing a list or a Headers as
 * `init.headers` costs a few µs more per response: Web IDL first converts it to a sequence of
 * sequences (iterating a Headers also sorts it). Throws a TypeError for a field Fetch rejects, as
 * `init.headers` would.
 */
export function responseWith(
  body: BodyInit | null,
  init: { status: number; statusText?: string },
  fields: readonly (readonly [string, string])[],
): Response {
  const res = new Response(body, init);
  const h = res.headers;
  for (let i = 0; i < fields.length; i++) h.append(fields[i][0], fields[i][1]);
  return res;
}

/** The gRPC status (grpc/doc/statuscodes.md) of each kind of Prox's own failures. */
const GRPC_STATUS: Record<ErrorKind, number> = {
  bad_request: 13, // INTERNAL, as gRPC maps an HTTP 400
  not_found: 12, // UNIMPLEMENTED: no such method here
  unauthorized: 16, // UNAUTHENTICATED
  forbidden: 7, // PERMISSION_DENIED
  method_not_allowed: 12,
  not_implemented: 12,
  body_too_large: 8, // RESOURCE_EXHAUSTED
  header_too_large: 8,
  request_timeout: 4, // DEADLINE_EXCEEDED
  rate_limited: 8,
  connect: 14, // UNAVAILABLE
  upstream_reset: 14,
  protocol: 14,
  timeout: 4,
  no_healthy_upstream: 14,
  overloaded: 14,
  shutting_down: 14,
  client_gone: 1, // CANCELLED
  internal: 13,
};

/** The gRPC (or gRPC-Web) content type a request was sent with, or null for other requests. */
export function grpcRequestType(contentType: string | null): string | null {
  if (contentType === null) return null;
  const m = /^application\/grpc(-web(?:-text)?)?(\+[a-z0-9._-]+)?[ \t]*(?:;|$)/i.exec(contentType);
  return m ? `application/grpc${(m[1] ?? "").toLowerCase()}${(m[2] ?? "").toLowerCase()}` : null;
}

/**
 * One of Prox's own error answers as a gRPC client reads it: HTTP 200 with the status in the head
 * (a trailers-only answer: `grpc-status`, `grpc-message`), as Envoy answers gRPC requests it
 * fails itself. A gRPC client reading Prox's text body as messages instead reported nonsense
 * ("message larger than max"). The answer's other fields (request id, Proxy-Status, Retry-After,
 * RateLimit…) stay.
 */
export function grpcErrorResponse(res: Response & OwnError, type: string): Response {
  const own = res[OWN_ERROR]!;
  res.body?.cancel().catch(() => {});
  const headers = new Headers(res.headers);
  headers.delete("content-length");
  headers.set("content-type", type);
  for (const [k, v] of grpcStatusFields(GRPC_STATUS[own.kind] ?? 2, own.message)) headers.set(k, v);
  const out: Response & OwnError = new Response(null, { status: 200, headers });
  out[OWN_ERROR] = own;
  return out;
}
