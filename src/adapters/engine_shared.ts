// What Prox's own engines (h1/server.ts, h2/connection.ts) share around an exchange: the Date
// field of their answers, a request's ClientInfo and its `completed` promise, and what becomes of
// a handler that throws or a body that fails (a gRPC call's timeout ends it with trailers).

import { ProxyError, reasonFor } from "../domain/errors.ts";
import { DEADLINE_EXCEEDED, grpcStatusFields, isGrpcType } from "../domain/grpc.ts";
import { BODY_BYTES, FileChangedError } from "../ports.ts";
import type {
  ClientCert,
  ClientInfo,
  CountedResponse,
  Logger,
  Metrics,
  Protocol,
} from "../ports.ts";

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
 * What Prox's engines tell the pipeline of a request (ClientInfo), with its `completed` made only
 * when something asks for it (the access log does): a promise, its two resolving functions, a
 * settle closure and a catch per request are not made for nothing. `settle(true)` once the answer
 * is delivered whole, `settle(false)` when it could not be (the client went away).
 */
export class EngineInfo implements ClientInfo {
  readonly writesItself = true;
  /** The request target was `*` (ClientInfo.asterisk). */
  asterisk = false;
  /**
   * Where `earlyHints` writes (the HTTP/1.1 connection, or the HTTP/2 connection with the stream
   * as `#hintsKey`): set by the engine for a client that can take a 1xx, null once the answer is
   * on its way. Objects that exist anyway: no closure per request.
   */
  #hintsTo: HintsWriter | null = null;
  #hintsKey: unknown = null;
  #state = 0; // 0: in work, 1: delivered, 2: not delivered
  #completed: Promise<void> | undefined;
  #resolve: (() => void) | undefined;
  #reject: ((e: Error) => void) | undefined;

  constructor(
    readonly remoteAddr: { hostname: string; port: number },
    readonly localPort: number,
    readonly protocol: Protocol,
    readonly tls: boolean,
    readonly authority: string,
    readonly http10: boolean,
  ) {}

  /** Lets `earlyHints` write to `to` (with `key`) until `hintsDone`. */
  hintsTo(to: HintsWriter, key: unknown): void {
    this.#hintsTo = to;
    this.#hintsKey = key;
  }

  /** The answer's head is next: an upstream's late 103 (a mirror's, say) is not written. */
  hintsDone(): void {
    this.#hintsTo = null;
    this.#hintsKey = null;
  }

  earlyHints(fields: [string, string][]): void {
    this.#hintsTo?.writeEarlyHints(this.#hintsKey, fields);
  }

  /** The client's certificate (tls.client_auth): h1/server.ts puts it on the client's address. */
  get clientCert(): ClientCert | undefined {
    return (this.remoteAddr as { clientCert?: ClientCert }).clientCert;
  }

  get completed(): Promise<void> {
    if (this.#completed) return this.#completed;
    if (this.#state === 1) return this.#completed = Promise.resolve();
    this.#completed = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#completed.catch(() => {});
    if (this.#state === 2) this.#reject!(GONE());
    return this.#completed;
  }

  settle(ok: boolean): void {
    if (this.#state !== 0) return;
    this.#state = ok ? 1 : 2;
    if (ok) this.#resolve?.();
    else this.#reject?.(GONE());
  }
}

/** An engine connection that writes a 103 Early Hints (RFC 8297) for one of its exchanges. */
export interface HintsWriter {
  writeEarlyHints(key: unknown, fields: [string, string][]): void;
}

const GONE = () => new Error("client went away");

/**
 * An answer's body failed after its head went out (an upstream that reset mid-body, a static file
 * changed while sent): logged as Deno.serve's onError would, the client's answer cut short, and
 * counted (prox_response_body_failures_total) when the error names its route.
 */
export function bodyFailed(logger: Logger, err: unknown, metrics?: Metrics): void {
  if (err instanceof ProxyError) {
    const route = err.request?.route;
    if (route) metrics?.responseBodyFailed(route, err.kind);
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
 * A gRPC answer whose body failed on a timeout after its head went out (the call's grpc-timeout,
 * the route's `timeouts.total` or `idle`): its counter now carries trailers `grpc-status: 4`
 * (DEADLINE_EXCEEDED) and `grpc-message: Gateway timeout`, and true says the engine may end the stream with
 * them, as the call's end a gRPC client reads, rather than a reset it reports as a broken stream
 * (UNAVAILABLE or INTERNAL). Only on the failure path: no answer pays for it otherwise.
 */
export function deadlineTrailers(res: Response, err: unknown): boolean {
  if (!(err instanceof ProxyError) || err.kind !== "timeout") return false;
  if (!isGrpcType(res.headers.get("content-type"))) return false;
  const counted = res as CountedResponse;
  const counter = counted[BODY_BYTES] ??= { bytes: 0, ended: false };
  // The reason Prox's own timeout answers give (the error's text may name an upstream).
  counter.trailers = grpcStatusFields(DEADLINE_EXCEEDED, reasonFor(err.kind));
  return true;
}

/**
 * The answer for a request whose handler threw `err`: logged, and a 500. (Each engine awaits its
 * handler in a try of its own: a shared async wrapper would cost every request a promise more.)
 */
export function unhandled(logger: Logger, err: unknown): Response {
  logger.error("Unhandled error in request handler", { error: String(err) });
  return new Response("Internal server error\n", { status: 500 });
}
