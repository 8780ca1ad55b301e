// Phase 7c: an error answer gets the operator's page (`error_pages`). Prox's own answers are
// marked where they are made (respond.ts); with the route's `intercept_upstream` the upstream's
// error answers qualify too, and their body is dropped: a small one is read to its end in the
// background (its keep-alive connection goes back to the pool), a large or slow one cancelled.
// Only error answers reach this file, and only when a page is configured somewhere: other
// requests pay nothing.

import { lookupPage, negotiatePage, renderPage } from "../domain/error_pages.ts";
import type { PageEntry } from "../domain/error_pages.ts";
import type { RequestContext } from "./context.ts";
import { placeholderValues } from "./filters/rules.ts";
import { grpcRequestType, OWN_ERROR, PASSED_ON } from "./respond.ts";
import type { OwnError, PassedOn } from "./respond.ts";

const encoder = new TextEncoder();

/**
 * An intercepted upstream body is read and dropped up to this size, so that the connection can
 * carry the next request; a larger one (declared or seen) is cancelled, closing the connection.
 */
export const DRAIN_BYTES = 64 << 10;
/** ... and for at most this long: an upstream that stalls mid-body loses its connection. */
export const DRAIN_MS = 1000;

/**
 * An upstream's header fields that give its error status a meaning (kept when intercepted), and
 * its CORS fields: without them a cross-origin script sees a network error, not the status.
 */
const KEPT = [
  "www-authenticate",
  "proxy-authenticate",
  "retry-after",
  "allow",
  "ratelimit",
  "ratelimit-policy",
  "access-control-allow-origin",
  "access-control-allow-credentials",
  "access-control-expose-headers",
  "vary",
];

/** A short reason for an upstream's status, for `{reason}` (none of the upstream's text). */
const REASONS: Record<number, string> = {
  400: "Bad request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not found",
  405: "Method not allowed",
  409: "Conflict",
  410: "Gone",
  413: "Content too large",
  422: "Unprocessable content",
  429: "Too many requests",
  500: "Internal server error",
  501: "Not implemented",
  502: "Bad gateway",
  503: "Service unavailable",
  504: "Gateway timeout",
};

/** The pages for `status` on the request's route (its own entries first, then the top level's). */
export function pageFor(ctx: RequestContext, status: number): PageEntry | undefined {
  const route = ctx.route;
  return (route && lookupPage(route.errorPages, status)) ??
    lookupPage(ctx.snapshot.errorPages, status);
}

/**
 * `res` with its body replaced by the page configured for its status (the route's entries first,
 * then the top level's), or `res` itself when it gets none. Status, `Proxy-Status`, request id and
 * Prox's other fields stay; an intercepted upstream answer keeps only the fields in KEPT.
 */
export function withErrorPage(ctx: RequestContext, res: Response): Response {
  const own = (res as OwnError)[OWN_ERROR];
  // Any other error answer on an intercepting route is the upstream's: just received, or stored
  // by the route's cache (which did not ask the upstream, so ctx.upstreamStatus is not set).
  if (own === undefined ? !ctx.route?.intercept : own.exact) return res;
  if (own?.kind === "client_gone") return res; // nobody reads it
  if ((res as PassedOn)[PASSED_ON]) return res; // forward_auth's denial, as the service sent it
  // A gRPC client reads the upstream's grpc-status, not a page (Prox's own failures reach it as
  // gRPC statuses already: pipeline.ts).
  if (own === undefined && grpcRequestType(ctx.req.headers.get("content-type")) !== null) {
    return res;
  }
  const status = res.status;
  const entry = pageFor(ctx, status);
  if (!entry) return res;
  const page = negotiatePage(entry.variants, ctx.req.headers.get("accept"));
  const values = placeholderValues(ctx, status);
  const reason = own?.message ?? REASONS[status] ??
    (status < 500 ? "Client error" : "Server error");
  const body = encoder.encode(
    renderPage(page, (name) => name === "reason" ? reason : values(name)),
  );
  let headers: Headers;
  if (own) headers = res.headers;
  else {
    // Not sent: a small body is drained for the connection's sake, a large or endless one
    // costs nothing.
    if (res.body) drain(res.body, res.headers.get("content-length"));
    headers = new Headers();
    for (const name of KEPT) {
      const v = res.headers.get(name);
      if (v !== null) headers.set(name, v);
    }
    // A 416's `bytes */N` gives the representation's length (RFC 9110 §15.5.17).
    const range = status === 416 ? res.headers.get("content-range") : null;
    if (range !== null) headers.set("content-range", range);
    headers.set("x-request-id", ctx.requestId);
    headers.set("cache-control", "no-store");
  }
  headers.set("content-type", page.type);
  // The page's type is the operator's word: a browser must not sniff a text page as HTML.
  headers.set("x-content-type-options", "nosniff");
  headers.set("content-length", String(body.byteLength));
  if (entry.variants.length > 1) headers.append("vary", "accept");
  return new Response(body, { status, headers });
}

/**
 * Reads and drops `body` in the background up to DRAIN_BYTES and DRAIN_MS, then cancels what
 * remains: an HTTP/1.1 upstream connection is reused only once its answer was read to the end.
 */
function drain(body: ReadableStream<Uint8Array>, length: string | null): void {
  if (length !== null && Number(length) > DRAIN_BYTES) {
    body.cancel().catch(() => {});
    return;
  }
  const reader = body.getReader();
  const timer = setTimeout(() => reader.cancel().catch(() => {}), DRAIN_MS);
  const pump = async () => {
    let seen = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      seen += value.byteLength;
      if (seen > DRAIN_BYTES) return await reader.cancel();
    }
  };
  pump().catch(() => {}).finally(() => clearTimeout(timer));
}
