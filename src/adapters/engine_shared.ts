// What Prox's own engines (h1/server.ts, h2/connection.ts) share around an exchange: the Date
// field of their answers, the `completed` promise of a request's ClientInfo, and what becomes of
// a handler that throws or a body that fails.

import { ProxyError } from "../domain/errors.ts";
import { FileChangedError } from "../ports.ts";
import type { Logger } from "../ports.ts";

let dateAt = 0;
let dateText = "";

/** The Date field's value (RFC 9110 §6.6.1), remade at most once a second. */
export function httpDate(): string {
  const now = Date.now();
  if (now - dateAt >= 1000 || now < dateAt) {
    dateAt = now - (now % 1000);
    dateText = new Date(dateAt).toUTCString();
  }
  return dateText;
}

/**
 * A request's `completed` (ClientInfo): `settle(true)` once its answer is delivered whole,
 * `settle(false)` when it could not be (the client went away). Nobody need be listening.
 */
export function completion(): { completed: Promise<void>; settle(ok: boolean): void } {
  let settle!: (ok: boolean) => void;
  const completed = new Promise<void>((resolve, reject) =>
    settle = (ok) => ok ? resolve() : reject(new Error("client went away"))
  );
  completed.catch(() => {});
  return { completed, settle };
}

/**
 * An answer's body failed after its head went out (an upstream that reset mid-body, a static file
 * changed while sent): logged as Deno.serve's onError would, the client's answer cut short.
 */
export function bodyFailed(logger: Logger, err: unknown): void {
  if (err instanceof ProxyError) {
    logger.warn("Response body failed", {
      requestId: err.request?.requestId ?? null,
      route: err.request?.route ?? null,
      kind: err.kind,
      error: err.message,
    });
  } else if (err instanceof FileChangedError) {
    logger.warn("Response body failed", { error: err.message });
  } else logger.error("Unhandled error in request handler", { error: String(err) });
}

/**
 * The answer for a request whose handler threw `err`: logged, and a 500. (Each engine awaits its
 * handler in a try of its own: a shared async wrapper would cost every request a promise more.)
 */
export function unhandled(logger: Logger, err: unknown): Response {
  logger.error("Unhandled error in request handler", { error: String(err) });
  return new Response("Internal server error\n", { status: 500 });
}
