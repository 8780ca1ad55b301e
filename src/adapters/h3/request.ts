// One HTTP/3 request stream (RFC 9114 §4.1): HEADERS, DATA*, optional trailers, FIN in; the
// shared Handler's Response out as HEADERS, DATA frames, then its upstream's trailers if any.
// The request body is pulled from DATA frames only as the handler reads it, so QUIC flow control
// pushes back on the client.

import { BODY_BYTES } from "../../ports.ts";
import type { ClientInfo, CountedResponse, Handler, Logger } from "../../ports.ts";
import {
  encodeFrame,
  frameHeader,
  FrameType,
  H3ConnectionError,
  H3Error,
  HTTP2_ONLY_FRAMES,
} from "./frames.ts";
import {
  interimFields,
  MessageError,
  parseRequestHead,
  parseTrailers,
  parseUrgency,
  type RequestHead,
  responseFields,
  responseHasNoBody,
  trailerFields,
} from "./message.ts";
import { decodeFieldSection, encodeFieldSection, type Field, QpackError } from "./qpack.ts";
import { StreamReader, TruncatedError } from "./stream_reader.ts";
import { timerDelay } from "../../config/duration.ts";
import { deadlineTrailers } from "../engine_shared.ts";
import { type ErrorKind, ProxyError } from "../../domain/errors.ts";

/** What a request stream needs from its connection. */
export interface RequestContext {
  handler: Handler;
  logger: Logger;
  info: ClientInfo;
  maxFieldSectionSize: number;
  /** Aborted when the connection goes away. */
  signal: AbortSignal;
  /** Time allowed between the stream opening and its complete HEADERS frame. */
  headerTimeoutMs: number;
  /** Closes the whole connection with an HTTP/3 error code (RFC 9114 §8). */
  closeConnection(code: number, reason: string): void;
  /**
   * The connection's requests whose answer has not started, which its keep-alive tick probes
   * (H3RequestInfo.probe): a client that cancelled one is found out.
   */
  waiting: Set<{ probe(): void }>;
}

/** An interim `:status 100` response (RFC 9114 §4.1). */
const CONTINUE = encodeFrame(FrameType.HEADERS, encodeFieldSection([[":status", "100"]]));

/**
 * An empty frame of a reserved type (RFC 9114 §7.2.8), which a client ignores on a request
 * stream as anywhere: written to learn whether the client still wants the answer.
 */
const PROBE_FRAME = frameHeader(0x1f * 2 + 0x21, 0);

/**
 * One request's ClientInfo: the connection's, its own `completed` and refusal, and
 * `earlyHints`, which writes an upstream's 103 as an interim HEADERS frame (RFC 9114 §4.1,
 * RFC 8297) until the final answer starts. A class, not a closure per request.
 */
class H3RequestInfo implements ClientInfo {
  readonly remoteAddr: ClientInfo["remoteAddr"];
  readonly localPort: number;
  readonly protocol: ClientInfo["protocol"];
  readonly tls: boolean;
  readonly completed: Promise<void>;
  readonly refused: ClientInfo["refused"];
  readonly asterisk?: true;
  #writer: WritableStreamDefaultWriter<Uint8Array> | null;
  readonly #abort: AbortController;

  constructor(
    base: ClientInfo,
    o: {
      completed: Promise<void>;
      refused?: ClientInfo["refused"];
      asterisk?: true;
      writer: WritableStreamDefaultWriter<Uint8Array>;
      /** Aborts the request as its client's leaving does. */
      abort: AbortController;
    },
  ) {
    this.remoteAddr = base.remoteAddr;
    this.localPort = base.localPort;
    this.protocol = base.protocol;
    this.tls = base.tls;
    this.completed = o.completed;
    this.refused = o.refused;
    if (o.asterisk) this.asterisk = o.asterisk;
    // A refused request has no upstream to hint for.
    this.#writer = o.refused ? null : o.writer;
    this.#abort = o.abort;
  }

  /**
   * A client that cancels a request whose stream it has ended (a long poll left) says so with
   * STOP_SENDING only, and Deno reports that on a write alone: an ignored frame is written, and
   * its failure aborts the request, so the upstream is not waited for on behalf of nobody.
   */
  probe(): void {
    this.#writer?.write(PROBE_FRAME).catch(() => this.#abort.abort());
  }

  earlyHints(fields: [string, string][]): void {
    const frame = encodeFrame(FrameType.HEADERS, encodeFieldSection(interimFields(103, fields)));
    this.#writer?.write(frame).catch(() => {});
  }

  /** The final answer is next: a late 103 (a mirror's, say) is not written. */
  hintsDone(): void {
    this.#writer = null;
  }
}

/** Frames that may never appear on a request stream (RFC 9114 §7.2). */
function unexpectedOnRequest(type: number): boolean {
  return type === FrameType.SETTINGS || type === FrameType.GOAWAY ||
    type === FrameType.MAX_PUSH_ID ||
    type === FrameType.CANCEL_PUSH || type === FrameType.PUSH_PROMISE ||
    type === FrameType.PRIORITY_UPDATE || type === FrameType.PRIORITY_UPDATE + 1 ||
    HTTP2_ONLY_FRAMES.has(type);
}

/**
 * Reads a HEADERS payload and decodes it; QPACK errors are connection errors. Null, read no
 * further, when it is larger than `max`: the refusal is known, and the rest of a frame declared
 * at a gigabyte is not waited for (the stream is cancelled once refused).
 */
async function readFields(r: StreamReader, len: number, max: number): Promise<Field[] | null> {
  if (len > max) return null;
  const payload = await r.exact(len, "HEADERS frame");
  try {
    return decodeFieldSection(payload, { maxSize: max });
  } catch (err) {
    if (err instanceof QpackError) {
      throw new H3ConnectionError(H3Error.QPACK_DECOMPRESSION_FAILED, err.message);
    }
    throw err;
  }
}

/**
 * The request body as a stream of DATA payloads; checks content-length against what arrived
 * and validates trailers (which a Web Request cannot carry, so they are dropped).
 * `onFirstRead` runs when the handler first asks for the body (100 Continue).
 */
function bodyStream(
  r: StreamReader,
  o: {
    ctx: RequestContext;
    contentLength: number | null;
    onError: (err: unknown) => void;
    onFirstRead?: () => void;
  },
): ReadableStream<Uint8Array> {
  const { ctx, contentLength, onError } = o;
  let onFirstRead = o.onFirstRead;
  let remaining = 0; // bytes left in the current DATA frame
  let received = 0;
  let trailersSeen = false;
  let cancelled = false;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      onFirstRead?.();
      onFirstRead = undefined;
      try {
        while (remaining === 0) {
          const type = await r.varint("frame type");
          if (type === null) {
            if (contentLength !== null && received !== contentLength) {
              throw new MessageError(
                400,
                `Request body is ${received} bytes, content-length says ${contentLength}`,
              );
            }
            c.close();
            return;
          }
          const len = await r.varint("frame length");
          if (len === null) {
            throw new H3ConnectionError(H3Error.FRAME_ERROR, "Truncated frame header");
          }
          if (trailersSeen && type <= FrameType.HEADERS) {
            throw new H3ConnectionError(H3Error.FRAME_UNEXPECTED, "Frame after trailers");
          }
          if (type === FrameType.DATA) remaining = len;
          else if (type === FrameType.HEADERS) {
            const fields = await readFields(r, len, ctx.maxFieldSectionSize);
            if (fields === null) throw new MessageError(431, "Trailers too large");
            parseTrailers(fields);
            trailersSeen = true;
          } else if (unexpectedOnRequest(type)) {
            throw new H3ConnectionError(
              H3Error.FRAME_UNEXPECTED,
              `Frame 0x${type.toString(16)} on a request stream`,
            );
          } else await r.skip(len);
        }
        const chunk = await r.upTo(remaining, "DATA frame");
        remaining -= chunk.length;
        received += chunk.length;
        if (contentLength !== null && received > contentLength) {
          throw new MessageError(400, `Request body exceeds content-length ${contentLength}`);
        }
        c.enqueue(chunk.slice());
      } catch (err) {
        // Cancelled by its reader (an upstream answered without reading it all): the read in
        // progress fails, which is no news. Taken for the client's, it aborted the request's
        // signal, and with it the answer being sent (an early 413 arrived empty).
        if (cancelled) return;
        // A malformed body (RFC 9114 §4.1.2) is the client's error, not a client that left:
        // 400, logged as such (a plain error here reads as "client gone", 499). The request's
        // signal stays as it is: aborting it told an upstream exchange watching it that the
        // client had gone, which logged 499 for an answered request.
        if (err instanceof MessageError) {
          // Its own status (trailers past the limit: 431, as a head), not always 400.
          return c.error(new ProxyError(refusalKind(err.status), err.message, { cause: err }));
        }
        onError(err);
        c.error(err);
      }
    },
    async cancel() {
      cancelled = true;
      await r.cancel();
    },
  }, { highWaterMark: 0 });
}

/** Serves one bidirectional request stream end to end; never throws. */
export async function serveRequest(
  stream: Deno.QuicBidirectionalStream,
  ctx: RequestContext,
  prioritized = false,
): Promise<void> {
  const r = new StreamReader(stream.readable);
  const writer = stream.writable.getWriter();
  // One signal per request, aborted by the client going away or the connection closing
  // (a listener rather than AbortSignal.any, which costs a weak ref and GC work per request).
  const abort = new AbortController();
  const signal = abort.signal;
  const onConnectionGone = () => abort.abort(ctx.signal.reason);
  if (ctx.signal.aborted) onConnectionGone();
  else ctx.signal.addEventListener("abort", onConnectionGone, { once: true });
  const fail = (err: unknown) => {
    // A frame cut short by the client's FIN is a connection error (RFC 9114 §7.1); an end we
    // caused (header timeout, unread body cancelled) is not.
    if (err instanceof TruncatedError && !r.cancelled) {
      err = new H3ConnectionError(H3Error.FRAME_ERROR, err.message);
    }
    if (err instanceof H3ConnectionError) ctx.closeConnection(err.code, err.message);
    abort.abort(err);
  };
  let method = "GET";
  /** The final response has started: no more interim ones. */
  let responding = false;
  // A stream that never sends its HEADERS would be held forever (slowloris): give up on it.
  const headerTimer = setTimeout(() => r.cancel(), timerDelay(ctx.headerTimeoutMs));
  let fields: Field[] | null | undefined;
  /** The client's :method, for the log line of a request refused here ("-" when unknown). */
  let refusedMethod = "-";
  /** Runs the handler and writes its response; settles the access log's `completed`. */
  const answer = async (req: Request, refused?: ClientInfo["refused"], asterisk?: true) => {
    // Settles once the response is written in full (or not): the access log waits for it.
    const completed = Promise.withResolvers<void>();
    completed.promise.catch(() => {});
    let res: Response;
    const info = new H3RequestInfo(ctx.info, {
      completed: completed.promise,
      refused,
      asterisk,
      writer,
      abort,
    });
    ctx.waiting.add(info);
    try {
      res = await ctx.handler(req, info);
    } catch (err) {
      ctx.logger.error("HTTP/3 handler failed", { error: String(err) });
      res = new Response("Internal Server Error\n", { status: 500 });
    }
    ctx.waiting.delete(info);
    info.hintsDone();
    responding = true;
    const sent = await writeResponse(writer, res, {
      method,
      ctx,
      onClientGone: () => abort.abort(),
      clientGone: signal,
    }).catch((err) => {
      completed.reject(err);
      throw err;
    });
    if (sent) completed.resolve();
    else completed.reject(new Error("HTTP/3 response not delivered"));
  };
  try {
    while (fields === undefined) {
      const type = await r.varint("frame type");
      if (type === null) { // FIN before any HEADERS: H3_REQUEST_INCOMPLETE (no reset codes on Deno)
        clearTimeout(headerTimer);
        await writer.close().catch(() => {});
        return;
      }
      const len = await r.varint("frame length");
      if (len === null) throw new H3ConnectionError(H3Error.FRAME_ERROR, "Truncated frame header");
      if (type === FrameType.HEADERS) fields = await readFields(r, len, ctx.maxFieldSectionSize);
      else if (type === FrameType.DATA || unexpectedOnRequest(type)) {
        throw new H3ConnectionError(
          H3Error.FRAME_UNEXPECTED,
          `Frame 0x${type.toString(16)} before HEADERS`,
        );
      } else await r.skip(len); // unknown and reserved frame types are ignored (§9)
    }
    clearTimeout(headerTimer);
    if (fields === null) throw new MessageError(431, "Request header fields too large");
    refusedMethod = fields.find(([k]) => k === ":method")?.[1] ?? "-";
    const head = parseRequestHead(fields, { maxFieldSectionSize: ctx.maxFieldSectionSize });
    method = head.method;
    const priority = prioritized ? undefined : head.headers.find(([k]) => k === "priority");
    const urgency = priority ? parseUrgency(priority[1]) : null;
    if (urgency !== null) stream.writable.sendOrder = 7 - urgency; // RFC 9218 §4.1
    const hasBody = method !== "GET" && method !== "HEAD";
    // A client that sent `Expect: 100-continue` waits for it before sending the body; like
    // Deno.serve over TCP, it goes out when the handler first reads the body (RFC 9110 §10.1.1).
    const expects = head.headers.some(([k, v]) =>
      k === "expect" && v.toLowerCase() === "100-continue"
    );
    const onFirstRead = expects
      ? () => void (responding || writer.write(CONTINUE).catch(() => {}))
      : undefined;
    const body = hasBody
      ? bodyStream(r, { ctx, contentLength: head.contentLength, onError: fail, onFirstRead })
      : null;
    if (!hasBody) {
      // A GET or HEAD that carries content is refused (501), as on HTTP/1.1 and HTTP/2: a Web
      // Request cannot take it on, and forwarding the request without it would change it. Known
      // once the stream ends or a DATA frame with content comes (clients end a GET's stream with
      // its head); one still open after the header timeout goes on, and content after that
      // fails it rather than being dropped.
      const look = { late: false };
      const rest = drainRest(r, { maxFieldSectionSize: ctx.maxFieldSectionSize, fail, look });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const carries = await Promise.race([
        rest,
        new Promise<false>((resolve) => {
          timer = setTimeout(() => {
            look.late = true;
            resolve(false);
          }, timerDelay(ctx.headerTimeoutMs));
        }),
      ]);
      clearTimeout(timer);
      if (carries) {
        throw new MessageError(501, `A ${method} request with a body cannot be forwarded`);
      }
    }
    const req = toRequest(head, body, signal);
    await answer(req, undefined, head.path === "*" || undefined);
    // Whatever request body the handler left unread is not wanted: STOP_SENDING (§4.1.1).
    await r.cancel();
  } catch (err) {
    clearTimeout(headerTimer);
    if (err instanceof MessageError && !responding) {
      // Refused before a Request could be made: the handler still answers, so the refusal gets
      // a request id, an access line and metrics, as the same request over TCP would.
      const refused = {
        kind: refusalKind(err.status),
        message: err.message,
        method: refusedMethod,
      };
      await answer(standIn(fields, signal), refused).catch(() => {});
      await r.cancel();
      return;
    }
    fail(err);
    if (!(err instanceof H3ConnectionError)) {
      ctx.logger.debug("HTTP/3 request stream failed", { error: String(err) });
    }
    await writer.abort().catch(() => {});
  } finally {
    ctx.signal.removeEventListener("abort", onConnectionGone);
  }
}

/** The error kind of a status this adapter refuses a request with (as `statusFor` maps it). */
function refusalKind(status: number): ErrorKind {
  switch (status) {
    case 405:
      return "method_not_allowed";
    case 431:
      return "header_too_large";
    case 501:
      return "not_implemented";
    default:
      return "bad_request";
  }
}

/** A GET standing in for a refused request: its authority and path when they make a URL. */
function standIn(fields: Field[] | null | undefined, signal: AbortSignal): Request {
  const get = (name: string) => fields?.find(([k]) => k === name)?.[1];
  const authority = get(":authority") ?? get("host") ?? "";
  const path = get(":path") ?? "/";
  try {
    if (!/^[^\s/?#@]+$/.test(authority) || !path.startsWith("/")) throw new Error("unusable");
    return new Request(`https://${authority}${path.replace(NON_ASCII, percentByte)}`, { signal });
  } catch {
    return new Request("https://invalid/", { signal });
  }
}

const NON_ASCII = /[\x80-\xff]/g;
const percentByte = (c: string) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`;

/** Builds the Web Request; what Fetch refuses (odd URL or header bytes) is a 400. */
function toRequest(
  head: RequestHead,
  body: ReadableStream<Uint8Array> | null,
  signal: AbortSignal,
): Request {
  // As over HTTP/1.1 and HTTP/2 (the Request constructor would refuse it: 400).
  if (head.method === "TRACE") throw new MessageError(405, "Method not allowed");
  try {
    const headers = new Headers(head.headers);
    if (!headers.has("host")) headers.set("host", head.authority);
    // Fields are byte strings: raw UTF-8 in :path is percent-encoded byte by byte, as the
    // HTTP/1.1 listener does (the URL parser would encode each byte's char as UTF-8 again).
    // `*` (OPTIONS about the server as a whole): the URL says `/`, ClientInfo.asterisk the rest.
    const path = head.path === "*" ? "/" : head.path.replace(NON_ASCII, percentByte);
    return new Request(`${head.scheme}://${head.authority}${path}`, {
      method: head.method,
      headers,
      body,
      signal,
      // @ts-ignore: duplex is required for streaming bodies but missing from the lib types
      duplex: "half",
    });
  } catch (err) {
    throw new MessageError(
      400,
      `Cannot build the request: ${err instanceof Error ? err.message : err}`,
    );
  }
}

/**
 * Reads and discards whatever follows the head of a GET or HEAD, watching for errors. Resolves
 * false at the stream's end (or a failure, which goes to `fail`), true at the first DATA frame
 * with content; content once `look.late` (the request went on without waiting) fails it.
 */
function drainRest(
  r: StreamReader,
  o: { maxFieldSectionSize: number; fail: (err: unknown) => void; look: { late: boolean } },
): Promise<boolean> {
  // Normally nothing but the FIN is left: a read of Deno's 64 KiB would wait for it, and a
  // cancelled one kept its buffer until the connection's next event (64 KiB per connection).
  r.smallReads(512);
  let settle!: (carries: boolean) => void;
  const known = new Promise<boolean>((resolve) => settle = resolve);
  (async () => {
    let trailers = false;
    for (;;) {
      const type = await r.varint("frame type");
      if (type === null) return settle(false);
      const len = await r.varint("frame length");
      if (len === null) throw new H3ConnectionError(H3Error.FRAME_ERROR, "Truncated frame header");
      // Nothing but unknown frames may follow the trailers (RFC 9114 §4.1), as in bodyStream.
      if (trailers && type <= FrameType.HEADERS) {
        throw new H3ConnectionError(H3Error.FRAME_UNEXPECTED, "Frame after trailers");
      }
      if (type === FrameType.HEADERS) {
        // Decoded and checked as a body's trailers are (then dropped): a QPACK error is the
        // connection's (RFC 9204 §2.2.3), a malformed section ends the request (§4.1.2).
        const fields = await readFields(r, len, o.maxFieldSectionSize);
        if (fields === null) throw new MessageError(431, "Trailers too large");
        parseTrailers(fields);
        trailers = true;
        continue;
      }
      if (unexpectedOnRequest(type)) {
        throw new H3ConnectionError(
          H3Error.FRAME_UNEXPECTED,
          `Frame 0x${type.toString(16)} on a request stream`,
        );
      }
      if (type === FrameType.DATA && len > 0) {
        if (o.look.late) throw new MessageError(501, "Request body after the request went on");
        settle(true);
      }
      await r.skip(len);
    }
  })().catch((err) => {
    settle(false);
    o.fail(err);
  });
  return known;
}

let dateSecond = -1;
let dateValue = "";

/**
 * Now as an IMF-fixdate, made once a second: an origin with a clock must send Date, and a proxy
 * must add it to a response that lacks one (RFC 9110 §6.6.1), as Deno.serve does over TCP.
 */
function httpDate(): string {
  const now = Date.now();
  if (Math.floor(now / 1000) !== dateSecond) {
    dateSecond = Math.floor(now / 1000);
    dateValue = new Date(now).toUTCString();
  }
  return dateValue;
}

/**
 * Chunks up to this size go out with their DATA frame header in one write (one op instead of
 * two; the copy is cheap next to an op); larger ones get a separate header write.
 */
const COALESCE_BELOW = 1024 * 1024;

/**
 * Writes HEADERS then the body as DATA frames, then FIN. Writes wait for QUIC flow control.
 * A body that fails midway cannot be signalled with RESET_STREAM on Deno: with a
 * content-length the short stream tells the client; without one the connection is closed so a
 * truncated body is never mistaken for a complete one.
 */
async function writeResponse(
  writer: WritableStreamDefaultWriter<Uint8Array>,
  res: Response,
  opts: {
    method: string;
    ctx: RequestContext;
    onClientGone: () => void;
    /** Aborted once the client left (or broke its request): then a failed body is no news. */
    clientGone?: AbortSignal;
  },
): Promise<boolean> {
  const fields = responseFields(res.status, res.headers);
  if (!res.headers.has("date")) fields.push(["date", httpDate()]);
  const noBody = responseHasNoBody(opts.method, res.status);
  const head = encodeFrame(FrameType.HEADERS, encodeFieldSection(fields));
  if (noBody || !res.body) {
    await res.body?.cancel().catch(() => {});
    try {
      await writer.write(head);
      await writer.close();
      return true;
    } catch {
      opts.onClientGone();
      return false;
    }
  }
  const reader = res.body.getReader();
  let pending: Uint8Array | null = head;
  try {
    for (;;) {
      let chunk: Uint8Array | undefined;
      let done: boolean;
      try {
        ({ value: chunk, done } = await reader.read());
      } catch (err) {
        // A gRPC call that timed out ends with grpc-status 4 in its trailers (sent below).
        if (!res.headers.has("content-length") && deadlineTrailers(res, err)) break;
        if (pending) await writer.write(pending).catch(() => {});
        if (res.headers.has("content-length")) await writer.abort().catch(() => {});
        else opts.ctx.closeConnection(H3Error.INTERNAL_ERROR, "Response body failed");
        // As over TCP, a client that left is the access log's business, not a warning.
        const log = opts.clientGone?.aborted ? opts.ctx.logger.debug : opts.ctx.logger.warn;
        const tag = err instanceof ProxyError ? err.request : undefined;
        log.call(opts.ctx.logger, "HTTP/3 response body failed midway", {
          requestId: tag?.requestId ?? null,
          route: tag?.route ?? null,
          error: String(err),
        });
        return false;
      }
      if (done) break;
      if (!chunk || chunk.length === 0) continue;
      const fh = frameHeader(FrameType.DATA, chunk.length);
      if (chunk.length < COALESCE_BELOW) {
        const pre = pending ? pending.length : 0;
        const buf = new Uint8Array(pre + fh.length + chunk.length);
        if (pending) buf.set(pending);
        buf.set(fh, pre);
        buf.set(chunk, pre + fh.length);
        pending = null;
        await writer.write(buf);
      } else {
        if (pending) {
          const buf = new Uint8Array(pending.length + fh.length);
          buf.set(pending);
          buf.set(fh, pending.length);
          pending = null;
          await writer.write(buf);
        } else await writer.write(fh);
        await writer.write(chunk);
      }
    }
    // The upstream's trailers (an HTTP/2 upstream's: gRPC's status), known now that the body
    // ended, go last as a HEADERS frame (RFC 9114 §4.1).
    const trailers = (res as CountedResponse)[BODY_BYTES]?.trailers;
    const fields = trailers && trailers.length > 0 ? trailerFields(trailers) : [];
    if (fields.length > 0) {
      const frame = encodeFrame(FrameType.HEADERS, encodeFieldSection(fields));
      if (pending) {
        const buf = new Uint8Array(pending.length + frame.length);
        buf.set(pending);
        buf.set(frame, pending.length);
        pending = buf;
      } else pending = frame;
    }
    if (pending) await writer.write(pending);
    await writer.close();
    return true;
  } catch {
    // The client stopped reading (STOP_SENDING) or the connection is gone: release upstream.
    opts.onClientGone();
    await reader.cancel().catch(() => {});
    return false;
  }
}
