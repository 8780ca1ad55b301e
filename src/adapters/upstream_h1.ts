// One request/response exchange on an HTTP/1.1 connection (RFC 9112): write the head as given,
// with a body given as bytes, or stream the request body (Content-Length as declared, else
// chunked; see upstream_h1_request.ts), pass a 103's fields on (early_hints.ts) and skip other
// 1xx, parse the head, and hand back a Response whose body streams (small Content-Length bodies
// are read at once, those up to 64 KiB into one chunk).
// The connection is released exactly once, reusable only when both bodies ended cleanly.

import { ProxyError, tagRequest } from "../domain/errors.ts";
import { BODY_BYTES, HEAD_ROOM, LEND_CHUNKS, RAW_BODY } from "../ports.ts";
import type {
  BodyCounter,
  ChunkLending,
  CountedResponse,
  EarlyHintsSink,
  RawBodied,
  UpstreamRequest,
} from "../ports.ts";
import { H1Connection } from "./upstream_h1_conn.ts";
import { responseWith } from "../proxy/respond.ts";
import { WireResponse } from "../proxy/wire_response.ts";
import { HeaderList } from "../domain/header_list.ts";
import { streamedBytes } from "./gc_hint.ts";
import { BufferPool } from "./buffer_pool.ts";
import { latin1, parseChunkSize, parseResponseHead, requestHead } from "./upstream_h1_wire.ts";
import { pumpBody, requestBytes } from "./upstream_h1_request.ts";
import type { ResponseHead } from "./upstream_h1_wire.ts";
import { MAX_TRAILERS } from "./h1/chunked.ts";
import { MAX_INTERIM, passHints } from "./early_hints.ts";

/** Limits for one exchange. */
export interface ExchangeLimits {
  /** Largest response head accepted (status line + headers). */
  maxHeaderBytes: number;
  /** Content-Length bodies up to this size are read whole before the Response is returned. */
  bufferLimit: number;
  /**
   * Larger Content-Length bodies stream; a body (or the rest of one) up to this size is read
   * whole into one chunk first, which Deno.serve then writes at once.
   */
  oneChunkLimit: number;
}

/** Thrown (as a ProxyError cause marker) when a reused connection was found closed. */
export const STALE = Symbol("stale");

const READ_SIZE = 64 * 1024;
/** Room past the body's end in a direct read, so bytes the upstream sent beyond it are seen. */
const SLACK = 16;
/**
 * Buffers for the engines' whole answers (with room for the head), which they give back once
 * written (ports.ts RELEASE): up to 4 KiB (128 kept, 0.6 MiB at most) and up to 64 KiB (64 kept,
 * 4.6 MiB). Two sizes, so that a small answer whose buffer does not come back (a client gone
 * mid-write) costs a small fresh one: a fresh 64 KiB buffer for each 100-byte answer doubled the
 * CPU of HTTP/2 requests before its engine gave them back. The large ones are also the read
 * buffers of connections that brought a larger answer (`enlarged`), with room for the head the
 * body comes with: such an answer is read in place, and its buffer handed on (`readInPlace`).
 */
const SMALL_POOL = new BufferPool(HEAD_ROOM + 4 * 1024 + SLACK, 128);
const LARGE_POOL = new BufferPool(HEAD_ROOM + 8 * 1024 + 64 * 1024 + SLACK, 64);
const giveBack = (buf: ArrayBuffer) =>
  (buf.byteLength === SMALL_POOL.size ? SMALL_POOL : LARGE_POOL).give(buf);
/** The pool whose buffers hold `bytes` (room, body and SLACK), if any. */
const poolFor = (bytes: number) =>
  bytes <= SMALL_POOL.size ? SMALL_POOL : bytes <= LARGE_POOL.size ? LARGE_POOL : undefined;

/**
 * Sends `req` on `conn` and resolves with the response. `release(reusable)` runs once, when the
 * connection is no longer used by this exchange. (Separate arguments rather than one options
 * object: an object built per request, e.g. by spreading `limits`, gets a hidden class that dies
 * with it, and the optimized code that saw it is discarded at the next full GC after a pause.)
 */
export async function exchange(
  conn: H1Connection,
  req: UpstreamRequest,
  limits: ExchangeLimits,
  release: (reusable: boolean) => void,
): Promise<Response> {
  const source = conn.source;
  const t = req.timeouts;
  let parts = 2; // request side + response side
  let reusable = true;
  const part = (ok: boolean) => {
    if (!ok) reusable = false;
    if (--parts === 0) {
      conn.disarm();
      conn.late(null);
      signal?.removeEventListener("abort", onAbort);
      release(reusable && !conn.dead && conn.start === conn.end);
    }
  };
  let signal = req.signal;
  const onAbort = () =>
    conn.fail(new ProxyError("client_gone", "Client went away", { source, sentNothing: true }));
  if (signal) {
    if (signal.aborted) {
      release(true);
      throw new ProxyError("client_gone", "Client went away", { source, sentNothing: true });
    }
    signal.addEventListener("abort", onAbort, { once: true });
  } else if (req.clientSignal) {
    const lookUp = req.clientSignal;
    conn.late(() => {
      signal = lookUp();
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  const body = req.body;
  const declared = req.headers.get("content-length");
  const bytes = body instanceof Uint8Array ? body : null;
  const upload = body instanceof Uint8Array ? null : body;
  const chunked = body !== null && !bytes && declared === null;
  const text = requestHead(req.method, req.target, {
    headers: req.headers,
    chunked,
    contentLength: bytes && declared === null ? bytes.byteLength : -1,
  });
  const { head, rest } = requestBytes(conn, text, bytes);
  let headSeen = false;
  let requestDone = body === null || bytes !== null;
  // A body may take more than one write if the upstream reads slowly: bounded by the idle timeout.
  if (bytes) conn.armIdle(t.idle);
  /** Why the rest of a large body given as bytes could not be written, if it could not. */
  let cut: unknown = null;
  try {
    await conn.write(head);
    if (rest) {
      try {
        await conn.write(rest);
      } catch (err) {
        // The upstream took the head and stopped reading: it may have answered first (an early
        // 413, then a close), which the head read finds, as for a streamed body (and nginx).
        if (!(err instanceof ProxyError) || err.kind !== "upstream_reset" || conn.failure) {
          throw err;
        }
        cut = err;
        requestDone = false;
      }
    }
  } catch (err) {
    part(false);
    part(false);
    throw staleOr(conn, err, { nothingRead: true });
  }
  if (bytes) {
    streamedBytes(bytes.byteLength);
    conn.armHeader(t.responseHeader);
    part(cut === null);
  } else if (upload) {
    conn.armIdle(t.idle);
    pumpBody(conn, upload, { chunked, declared: declared === null ? -1 : Number(declared) }).then(
      () => {
        requestDone = true;
        if (!headSeen) conn.armHeader(t.responseHeader);
        part(true);
      },
      (err) => {
        // A client body failure ends the exchange; an upstream write failure may still come
        // with a response (e.g. an early 413), so the head read decides.
        if (err instanceof ProxyError && err.kind !== "upstream_reset") conn.fail(err);
        part(false);
      },
    );
  } else {
    conn.armHeader(t.responseHeader);
    part(true);
  }

  let res: ResponseHead;
  try {
    res = await readHead(conn, {
      method: req.method,
      max: limits.maxHeaderBytes,
      hints: req.hints,
    });
  } catch (err) {
    conn.fail(null);
    part(false);
    // No answer after a cut body: the write's failure is the one to report.
    if (cut !== null) throw staleOr(conn, cut, { nothingRead: false });
    // Sent again here only when that is safe: the upstream may have read this request and acted
    // on it before it closed (RFC 9112 §9.3.1), so never a non-idempotent one (RFC 9110 §9.2.2).
    throw staleOr(conn, err, {
      nothingRead: conn.nothingRead && body === null && IDEMPOTENT.has(req.method),
    });
  }
  headSeen = true;
  // The response ends the exchange for the upstream: a request body still coming (it answered
  // early) is not sent on, so a client that keeps its upload open cannot hold the connection.
  const responded = (ok: boolean) => {
    if (!requestDone) conn.fail(null);
    part(ok);
  };
  conn.armIdle(t.idle);
  // A response before the whole request body went out: an upstream that did not wait for the
  // body may not read it either and take the rest for its next request, whose response would
  // then answer whoever is sent next on this connection. Not reused (as nginx does).
  if (res.close || !requestDone) reusable = false;
  if (res.keepAliveMs >= 0) conn.idleLimit = idleLimitFor(res.keepAliveMs);

  // An answer `respond` refuses (a control character in a field, a name Fetch rejects) ends its
  // connection as a malformed head does: its framing is not trusted to reuse it (nginx closes).
  if (res.framing === "none") {
    // A null body makes Deno.serve send "content-length: 0", which for HEAD would claim an empty
    // GET body (RFC 9110 §9.3.2): without an upstream length, an empty stream sends no length.
    const headNoLength = req.method === "HEAD" && res.contentLength < 0 &&
      !NULL_BODY_STATUS.has(res.status);
    return respondThen(
      conn,
      responded,
      true,
      res,
      headNoLength ? new ReadableStream({ start: (c) => c.close() }) : null,
    );
  }
  if (res.status === 205) {
    // A 205 has no content (RFC 9110 §15.3.6) and the Fetch API refuses one: an empty body is
    // consumed, anything else means the connection is not reused.
    const ok = res.framing === "length" && res.contentLength === 0;
    return respondThen(conn, responded, ok, res, null, req.lean);
  }
  // For the engine (`lean`), bodies up to oneChunkLimit are read whole too, behind room for the
  // answer's head: it writes both at once without copying the body (ports.ts HEADROOM).
  let room = req.lean ? HEAD_ROOM : 0;
  // Answers that are not small are read into a buffer of LARGE_POOL's from now on (`enlarged`).
  const inPlace = res.framing === "length" && res.contentLength > SMALL_BODY &&
    enlarged(conn, res.contentLength);
  // An error answer a page will replace streams (`streamErrors`): `intercept_upstream` drops its
  // body and must not wait for all of it (one stalling mid-body held the page until timeouts.idle).
  if (
    res.framing === "length" &&
    res.contentLength <= (req.lean ? limits.oneChunkLimit : limits.bufferLimit) &&
    (res.status < 400 || req.streamErrors !== true)
  ) {
    // A lean answer's buffer may come from a pool and go back once the engine wrote it.
    const pool = room > 0 ? poolFor(room + res.contentLength + SLACK) : undefined;
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      if (pool === LARGE_POOL && inPlace) {
        // Read on into the connection's own buffer, behind the head it came with, and handed on:
        // all in front of the body is free (HEAD_ROOM at least, and the upstream's head).
        bytes = await readInPlace(conn, res.contentLength);
        room = bytes.byteOffset;
      } else bytes = await readWhole(conn, res.contentLength, room, pool);
    } catch (err) {
      conn.fail(null);
      responded(false);
      throw err instanceof ProxyError ? err : ioErrorMid(source, err);
    }
    return respondThen(
      conn,
      responded,
      true,
      res,
      bytes,
      req.lean,
      room,
      pool ? giveBack : undefined,
    );
  }
  const counter: BodyCounter = { bytes: 0, ended: false };
  const stream = bodyStream(conn, res, {
    part: responded,
    counter,
    oneChunkLimit: limits.oneChunkLimit,
  });
  let out: CountedResponse;
  try {
    out = respond(res, stream, req.lean);
  } catch (err) {
    await stream.cancel(); // closes the connection and ends the exchange
    throw err;
  }
  out[BODY_BYTES] = counter;
  return out;
}

/** Methods a request of which may be sent again unasked (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/** Statuses the Fetch API allows no body for (a Response with one throws). */
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/** What the Fetch API accepts as a reason phrase (HTAB, SP, VCHAR, obs-text). */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * A field value with a control character other than HTAB (RFC 9110 §5.5). Fetch lets all but CR,
 * LF and NUL through, yet Deno.serve cannot send one: its HTTP/1.1 writer panics (the process
 * exits) and HTTP/2 resets the stream.
 */
const FIELD_CTL = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * Builds the Response; a reason phrase the Fetch API rejects is dropped. `lean` (the request's):
 * a buffered answer may be a WireResponse.
 */
function respond(
  head: ResponseHead,
  body: BodyInit | null,
  lean?: boolean,
  room = 0,
  release?: (buf: ArrayBuffer) => void,
): Response {
  const fields = head.headers;
  for (let i = 0; !head.checked && i < fields.length; i++) {
    if (FIELD_CTL.test(fields[i][1])) {
      throw new ProxyError(
        "protocol",
        `Invalid upstream response head: control character in "${fields[i][0].slice(0, 40)}"`,
      );
    }
  }
  const statusText = REASON_PHRASE.test(head.statusText) ? head.statusText : undefined;
  try {
    if (lean && head.status >= 200) {
      // For Prox's own HTTP/1.1 engine, which writes the answer itself (wire_response.ts).
      const h = new HeaderList();
      for (let i = 0; i < fields.length; i++) {
        const [name, value] = fields[i];
        if (head.checked) h.appendChecked(name.toLowerCase(), value);
        else h.append(name, value);
      }
      const stream = body instanceof ReadableStream ? body : undefined;
      const bytes = stream ? null : body as Uint8Array<ArrayBuffer> | null;
      return new WireResponse(
        bytes,
        head.status,
        statusText ?? "",
        h,
        stream,
        bytes ? room : 0,
        bytes ? release : undefined,
      ) as unknown as Response;
    }
    const res: RawBodied = responseWith(body, { status: head.status, statusText }, head.headers);
    if (body instanceof Uint8Array) res[RAW_BODY] = body;
    return res;
  } catch (err) {
    throw new ProxyError("protocol", `Invalid upstream response head: ${String(err)}`);
  }
}

/**
 * `respond`, then ends the response side with `ok`; if it throws, the connection is closed and
 * the side ends not ok. (Positional arguments, as for `respond`: no object per request.)
 */
function respondThen(
  conn: H1Connection,
  responded: (ok: boolean) => void,
  ok: boolean,
  head: ResponseHead,
  body: BodyInit | null,
  lean?: boolean,
  room?: number,
  release?: (buf: ArrayBuffer) => void,
): Response {
  let out: Response;
  try {
    out = respond(head, body, lean, room, release);
  } catch (err) {
    conn.fail(null);
    responded(false);
    throw err;
  }
  responded(ok);
  return out;
}

/** A stale reused connection (closed before any response byte) is marked for one retry. */
function staleOr(conn: H1Connection, err: unknown, o: { nothingRead: boolean }): ProxyError {
  const e = err instanceof ProxyError ? err : ioErrorMid(conn.source, err);
  if (conn.nothingRead && conn.uses > 1 && !conn.failure && e.kind === "upstream_reset") {
    // A request with a body is not sent again here; forward() may, on the same target.
    e.staleConnection = true;
    if (o.nothingRead) (e as ProxyError & { [STALE]?: boolean })[STALE] = true;
  }
  return e;
}

function ioErrorMid(source: string, err: unknown): ProxyError {
  const msg = err instanceof Error ? err.message : String(err);
  return new ProxyError("upstream_reset", `Upstream "${source}" closed the connection: ${msg}`, {
    source,
    cause: err,
  });
}

/**
 * Reads response heads until a final (non-1xx) one (RFC 9110 §15.2); the fields of a 103 go to
 * `o.hints` when given (early_hints.ts), other interim answers are dropped.
 */
async function readHead(
  conn: H1Connection,
  o: { method: string; max: number; hints: EarlyHintsSink | undefined },
): Promise<ResponseHead> {
  let interim = 0;
  // Bytes of the head so far found to hold no end of it (kept relative to `start`, which a fill
  // may move): each read is searched once, not the whole head again (quadratic in the reads).
  let scanned = 0;
  for (;;) {
    const head = parseResponseHead(conn.buf, conn.start, conn.end, {
      maxBytes: o.max,
      method: o.method,
      scanned,
    });
    if (head === null) {
      scanned = conn.end - conn.start;
      if (!(await conn.fill(o.max + 1024))) {
        throw new ProxyError(
          "upstream_reset",
          conn.nothingRead
            ? `Upstream "${conn.source}" closed the connection before responding`
            : `Upstream "${conn.source}" closed the connection in the response head`,
          { source: conn.source },
        );
      }
      continue;
    }
    conn.start += head.size;
    scanned = 0;
    if (head.status >= 200) {
      if (interim > 0) conn.afterInterim = false;
      return head;
    }
    // The request arrived: a close from now on is no stale connection's (no retry).
    conn.afterInterim = true;
    if (head.status === 101) {
      throw new ProxyError("protocol", `Upstream "${conn.source}" switched protocols unasked`, {
        source: conn.source,
      });
    }
    if (++interim > MAX_INTERIM) {
      throw new ProxyError(
        "protocol",
        `Upstream "${conn.source}" sent over ${MAX_INTERIM} interim (1xx) responses`,
        { source: conn.source },
      );
    }
    if (head.status === 103 && o.hints) passHints(o.hints, head.headers);
  }
}

/**
 * Reads exactly `len` body bytes into one array, `room` bytes into its buffer: a buffer of
 * `pool`'s when given (one holds room + len + SLACK), else a fresh one.
 */
async function readWhole(
  conn: H1Connection,
  len: number,
  room = 0,
  pool?: BufferPool,
): Promise<Uint8Array<ArrayBuffer>> {
  let out: Uint8Array<ArrayBuffer>;
  if (pool) out = new Uint8Array(pool.take(), 0, room + len + SLACK);
  else {
    out = new Uint8Array(room + len + SLACK);
    streamedBytes(len); // garbage once sent (a pooled buffer is not)
  }
  let got = Math.min(conn.end - conn.start, len);
  out.set(conn.buf.subarray(conn.start, conn.start + got), room);
  conn.start += got;
  while (got < len) {
    const n = await conn.readBody(out.subarray(room + got), len - got);
    if (n === null) throw bodyEnded(conn.source);
    got += n;
  }
  return out.subarray(room, room + len);
}

/**
 * Answers larger than this read into a connection buffer of LARGE_POOL's size (`enlarged`): a
 * connection that brought one is likely to bring more.
 */
const SMALL_BODY = SMALL_POOL.size - HEAD_ROOM - SLACK;

/**
 * Whether the connection's buffer is one of LARGE_POOL's, with room for `len` more bytes after
 * `start` (and SLACK); a smaller one is swapped for one of its first. A read that takes what is
 * there in one go matters beyond the copy it saves: the last part of an answer that a backend
 * holds back (Nagle's algorithm, a corked sendfile) comes only once this side acknowledges the
 * rest, which Linux did up to 40 ms later when the first part took two reads (a 64 KiB answer
 * through a 16 KiB first read: p99 40 ms; 3 ms in one read, the rest read for at once).
 */
function enlarged(conn: H1Connection, len: number): boolean {
  if (conn.buf.byteLength < LARGE_POOL.size) {
    const buffer = LARGE_POOL.take();
    if (!conn.enlarge(buffer)) {
      LARGE_POOL.give(buffer);
      return false;
    }
  }
  return conn.buf.byteLength === LARGE_POOL.size && conn.start + len + SLACK <= conn.buf.length;
}

/**
 * Reads the rest of a `len`-byte body into the connection's buffer (`enlarged` made room for
 * it) and hands that buffer on with it, room for the answer's head in front: the connection
 * reads on into a fresh one of LARGE_POOL's, and the engine gives the old one back once written.
 */
async function readInPlace(conn: H1Connection, len: number): Promise<Uint8Array<ArrayBuffer>> {
  while (conn.end - conn.start < len) {
    if (!(await conn.fill(conn.buf.length))) throw bodyEnded(conn.source);
  }
  return conn.handOver(len, LARGE_POOL.take());
}

function bodyEnded(source: string): ProxyError {
  return new ProxyError("upstream_reset", `Upstream "${source}" ended the body early`, { source });
}

/** A trailer field's name: a token (RFC 9110 §5.1). */
const TRAILER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
/** What a field value must not hold (RFC 9110 §5.5): controls other than HTAB. */
// deno-lint-ignore no-control-regex
const BAD_TRAILER_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const OWS_ENDS = /^[ \t]+|[ \t]+$/g;

/** The streaming response body for "length", "chunked" and "close" framing. */
function bodyStream(
  conn: H1Connection,
  head: ResponseHead,
  o: { part: (ok: boolean) => void; counter: BodyCounter; oneChunkLimit: number },
): ReadableStream<Uint8Array> {
  const { part, counter, oneChunkLimit } = o;
  let remaining = head.framing === "length" ? head.contentLength : 0;
  // chunked state: 0 size line, 1 data, 2 CRLF after data, 3 trailers, 4 ended
  let state = 0;
  /** Bytes of trailer fields so far: bounded as a head is. */
  let trailerBytes = 0;
  /** The trailer fields read so far, handed on (BodyCounter.trailers) when the body ends. */
  let trailers: [string, string][] | null = null;
  let finished = false;
  const finish = (ok: boolean) => {
    if (finished) return;
    finished = true;
    part(ok);
  };
  const take = (max: number): Uint8Array => {
    const n = Math.min(max, conn.end - conn.start);
    const out = conn.buf.slice(conn.start, conn.start + n);
    conn.start += n;
    return out;
  };
  /**
   * The buffers of LARGE_POOL's lent out as chunks, once the stream's reader said it gives them
   * back (LEND_CHUNKS); null before: fresh buffers, garbage once written.
   */
  let lent: Set<ArrayBuffer> | null = null;
  const direct = async (max: number): Promise<Uint8Array | null> => {
    const want = Math.min(max, READ_SIZE);
    const pooled = lent !== null;
    const chunk = pooled
      ? new Uint8Array(LARGE_POOL.take(), 0, want + SLACK)
      : new Uint8Array(want + SLACK);
    const n = await conn.readBody(chunk, want);
    if (n === null) return null;
    if (n < 4096) {
      const small = chunk.slice(0, n);
      if (pooled) LARGE_POOL.give(chunk.buffer);
      else streamedBytes(n);
      return small;
    }
    if (pooled) lent!.add(chunk.buffer);
    else streamedBytes(n);
    return chunk.subarray(0, n);
  };
  const needLine = async (): Promise<number> => {
    // Bytes after `start` already searched (relative: a fill may move `start`).
    let seen = 0;
    for (;;) {
      // Only up to `end`: indexOf scans to the end of the buffer, which for a line trickled a
      // byte per read was 16 KiB or more of stale bytes per byte.
      const lf = conn.buf.subarray(0, conn.end).indexOf(10, conn.start + seen);
      if (lf >= 0) return lf;
      seen = conn.end - conn.start;
      // A chunk-size line is bounded on its own; a trailer line by what is left of the trailers'
      // limit (whether it came in one read or in several).
      if (state === 3) {
        if (trailerBytes + conn.end - conn.start > MAX_TRAILERS) {
          throw new ProxyError("protocol", `Upstream trailer fields exceed ${MAX_TRAILERS} bytes`);
        }
      } else if (conn.end - conn.start > 4096) {
        throw new ProxyError("protocol", "Chunk header line from upstream too long");
      }
      if (!(await conn.fill(conn.buf.length + 8192))) throw bodyEnded(conn.source);
    }
  };
  const next = async (): Promise<Uint8Array | null> => {
    if (head.framing === "length") {
      if (remaining === 0) return null;
      if (remaining <= oneChunkLimit) {
        const out = await readWhole(conn, remaining);
        remaining = 0;
        return out;
      }
      const out = conn.end > conn.start ? take(remaining) : await direct(remaining);
      if (out === null) throw bodyEnded(conn.source);
      remaining -= out.byteLength;
      return out;
    }
    if (head.framing === "close") {
      return conn.end > conn.start ? take(Infinity) : await direct(READ_SIZE);
    }
    return await nextChunks();
  };
  // Chunk data already buffered is passed on together, up to READ_SIZE: one enqueue (and one
  // write by Deno.serve) per read from the upstream rather than per chunk, so an upstream that
  // sends 1-byte chunks costs about what its bytes do (1 MB: 1.5 s of CPU, now 0.1).
  const nextChunks = async (): Promise<Uint8Array | null> => {
    // Views of conn.buf (no read refills it meanwhile), copied out once; or one read's buffer.
    const parts: Uint8Array[] = [];
    let size = 0;
    let own: Uint8Array | null = null;
    const joined = (): Uint8Array => {
      if (own) return own;
      const out = new Uint8Array(size);
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.byteLength;
      }
      return out;
    };
    for (;;) {
      if (state === 4) return size > 0 ? joined() : null;
      if (state === 1) {
        if (conn.end > conn.start) {
          const n = Math.min(remaining, conn.end - conn.start);
          parts.push(conn.buf.subarray(conn.start, conn.start + n));
          conn.start += n;
          size += n;
          remaining -= n;
        } else if (size > 0) return joined();
        else {
          own = await direct(remaining);
          if (own === null) throw bodyEnded(conn.source);
          size = own.byteLength;
          remaining -= size;
        }
        if (remaining === 0) state = 2;
        if (own || size >= READ_SIZE) return joined();
        continue;
      }
      let lf = conn.buf.indexOf(10, conn.start);
      if (lf < 0 || lf >= conn.end) {
        // What arrived goes on now rather than waiting for the rest of the framing.
        if (size > 0) return joined();
        lf = await needLine();
      }
      if (state === 0) {
        remaining = parseChunkSize(conn.buf, conn.start, lf);
        conn.start = lf + 1;
        state = remaining === 0 ? 3 : 1;
      } else if (state === 2) {
        const n = lf - conn.start; // CRLF (or a bare LF) must follow the data (RFC 9112 §7.1)
        if (n > 1 || (n === 1 && conn.buf[conn.start] !== 13)) {
          throw new ProxyError("protocol", "Missing CRLF after chunk");
        }
        conn.start = lf + 1;
        state = 0;
      } else {
        const empty = lf === conn.start || (lf === conn.start + 1 && conn.buf[conn.start] === 13);
        trailerBytes += lf + 1 - conn.start;
        if (trailerBytes > MAX_TRAILERS) {
          throw new ProxyError("protocol", `Upstream trailer fields exceed ${MAX_TRAILERS} bytes`);
        }
        if (!empty) {
          // name ":" OWS value OWS (RFC 9112 §7.1.2, as a field line); one that is not is dropped,
          // as the engines drop the fields a trailer must not hold.
          const line = latin1(conn.buf, conn.start, conn.buf[lf - 1] === 13 ? lf - 1 : lf);
          const colon = line.indexOf(":");
          const name = line.slice(0, colon).toLowerCase();
          const value = line.slice(colon + 1).replace(OWS_ENDS, "");
          if (colon > 0 && TRAILER_NAME.test(name) && !BAD_TRAILER_VALUE.test(value)) {
            (trailers ??= []).push([name, value]);
          }
        }
        conn.start = lf + 1;
        if (empty) {
          state = 4;
          // Passed on after the body (by the HTTP/2 and HTTP/3 engines, and the HTTP/1.1 one to
          // clients that take them), as an HTTP/2 upstream's are.
          if (trailers) counter.trailers = trailers;
        }
      }
    }
  };
  const stream: ChunkLending = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      conn.waitingOnReader = false;
      try {
        const chunk = await next();
        if (chunk === null) {
          counter.ended = true;
          ctl.close();
          finish(head.framing !== "close");
        } else {
          counter.bytes += chunk.byteLength;
          ctl.enqueue(chunk);
          // Until the next pull, the client has yet to take this chunk (highWaterMark 0).
          conn.waitingOnReader = true;
        }
      } catch (err) {
        conn.fail(null);
        finish(false);
        const e = err instanceof ProxyError ? err : ioErrorMid(conn.source, err);
        ctl.error(tagRequest(e, counter.request));
      }
    },
    cancel() {
      conn.waitingOnReader = false;
      conn.fail(null);
      finish(false);
    },
  }, { highWaterMark: 0 });
  stream[LEND_CHUNKS] = () => {
    const out = lent ??= new Set();
    return (chunk) => {
      const buffer = chunk.buffer as ArrayBuffer;
      if (!out.delete(buffer)) return false;
      LARGE_POOL.give(buffer);
      return true;
    };
  };
  return stream;
}

/**
 * How long a connection whose upstream announced `Keep-Alive: timeout=ms` is reused: a margin
 * short of it (a second, or half of a shorter timeout), since the upstream's clock started when it
 * sent the response. Node's http server says timeout=5 and closes idle connections after 5 s: a
 * request sent on one just then met a reset.
 */
export function idleLimitFor(ms: number): number {
  return ms - Math.min(1000, ms / 2);
}
