// Request bodies that can be sent again (retries) and response bodies whose end is observed
// (in-flight accounting for load-aware policies). Web streams only.

import { ProxyError } from "../domain/errors.ts";
import { BODY_BYTES, LEND_CHUNKS } from "../ports.ts";
import type { ChunkLending, CountedResponse } from "../ports.ts";

/** Largest request body kept in memory so the request can be replayed on another target. */
export const REPLAY_CAP = 64 * 1024;

/** A request body that can be handed out again when it was small enough to keep. */
export interface BodySource {
  /** True while another attempt can still get the whole body. */
  readonly replayable: boolean;
  next(): ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null;
}

/** The source of a request without a body (replayable as nothing). */
export const NO_BODY: BodySource = Object.freeze({ replayable: true, next: () => null });

/**
 * Keeps a small body (≤ REPLAY_CAP, declared or read so far) in memory for replay; a larger one
 * streams once (the bytes already read, then the rest) and the request is not retried. A body
 * already read whole (bytes) is replayed as it is.
 */
export async function bodySource(
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null,
  headers: Headers,
  o: { wanted: boolean; idleMs: number; deadline?: BodyDeadline },
): Promise<BodySource> {
  if (!body) return NO_BODY;
  if (body instanceof Uint8Array) return { replayable: true, next: () => body };
  const declared = Number(headers.get("content-length") ?? NaN);
  if (!o.wanted || declared > REPLAY_CAP) return once(body);
  const reader = body.getReader();
  const kept = new KeptChunks();
  // Read before any upstream is chosen: a client that stalls gets 408 here (afterwards the
  // upstream client's idle timeout watches the rest).
  const watched = new WatchedRead(reader, o.idleMs, o.deadline);
  try {
    while (kept.size <= REPLAY_CAP) {
      const r = await watched.read();
      if (r.done) {
        const bytes = concat(kept.chunks, kept.size);
        return { replayable: true, next: () => bytes };
      }
      kept.push(r.value);
    }
  } finally {
    watched.done();
  }
  // Over the cap: replay what was read, then pass the rest through.
  const chunks = kept.chunks;
  let i = 0;
  return once(
    new ReadableStream<Uint8Array>({
      async pull(c) {
        if (i < chunks.length) return c.enqueue(chunks[i++]);
        const r = await reader.read();
        if (r.done) c.close();
        else c.enqueue(r.value);
      },
      cancel: (reason) => reader.cancel(reason),
    }),
  );
}

/** Chunks below this size are copied into shared blocks rather than kept. */
const SMALL = 4096;
const BLOCK = 16 * 1024;

/**
 * Chunks of a body kept for replay. Deno hands each read of a request body out as a view of a
 * 64 KiB buffer of its own, so keeping a client's 1-byte chunks kept 64 KiB each: a chunked
 * upload of 5,000 such chunks (30 KB on the wire) took 240 MiB, one of 64 KiB about 4 GiB. Small
 * chunks are copied into blocks of 16 KiB instead; larger ones are kept as they came (at most
 * REPLAY_CAP / SMALL of them) unless their buffer is more than twice their size.
 */
class KeptChunks {
  readonly chunks: Uint8Array[] = [];
  size = 0;
  #block: Uint8Array | null = null;
  #used = 0;
  push(c: Uint8Array): void {
    this.size += c.byteLength;
    if (c.byteLength >= SMALL) {
      // A view of a buffer over twice its size (Deno's 64 KiB one behind a 4 KiB read) would
      // keep all of it: copied to its own size instead.
      this.chunks.push(2 * c.byteLength >= c.buffer.byteLength ? c : c.slice());
      this.#block = null;
      return;
    }
    if (this.#block === null || this.#used + c.byteLength > BLOCK) {
      this.#block = new Uint8Array(BLOCK);
      this.#used = 0;
      this.chunks.push(this.#block.subarray(0, 0));
    }
    this.#block.set(c, this.#used);
    this.#used += c.byteLength;
    this.chunks[this.chunks.length - 1] = this.#block.subarray(0, this.#used);
  }
}

/** The error of a request body that ended before its Content-Length was reached. */
export const SHORT_BODY = "Request body shorter than its Content-Length";

/**
 * `err`, or client_gone when it is a body that ended short of its Content-Length because the
 * client reset its HTTP/2 stream: hyper ends a body reset with CANCEL as if it were complete
 * (a short END_STREAM fails it instead), and only the request's signal, aborted a turn or two
 * later, tells. Such an upload was logged 400 with a warning where the same one cut over
 * HTTP/1.1 was 499. Waits only on this error path.
 */
export async function resetOr(err: unknown, req: Request): Promise<unknown> {
  if (!(err instanceof ProxyError) || err.kind !== "bad_request" || err.message !== SHORT_BODY) {
    return err;
  }
  const signal = req.signal;
  for (let i = 0; i < RESET_TURNS && !signal.aborted; i++) {
    await new Promise((r) => setTimeout(r, 0));
  }
  if (!signal.aborted) return err;
  return new ProxyError("client_gone", "Client reset its request stream", { cause: err });
}

/** Turns of the event loop waited for a reset's abort (it comes within two under load). */
const RESET_TURNS = 4;

/** The next chunk of a client's request body; a body that fails means the client went away. */
export async function readClientChunk(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<ReadableStreamReadResult<Uint8Array>> {
  try {
    return await reader.read();
  } catch (err) {
    // A ProxyError came from Prox itself (e.g. the body limit): as it is.
    throw err instanceof ProxyError
      ? err
      : new ProxyError("client_gone", `Client request body failed: ${String(err)}`, { cause: err });
  }
}

// Stalled bodies are found by one shared ticker rather than a timer per request: a timer and its
// clearing cost about 2 µs per request. Progress is stamped with the time of the last tick (up to
// TICK_MS old) instead of reading the clock, so a body expires once a tick finds it idle for
// `idleMs` + TICK_MS by those stamps: never before a pause of `idleMs`, at most two ticks after.
const TICK_MS = 25;
interface BodyWait {
  /** Tick time of the last progress. */
  since: number;
  idleMs: number;
  expire(): void;
}
const waits = new Set<BodyWait>();
let ticker: ReturnType<typeof setInterval> | undefined;
let tickTime = 0;

function tick(): void {
  tickTime = performance.now();
  for (const w of waits) {
    if (tickTime - w.since >= w.idleMs + TICK_MS) {
      waits.delete(w);
      w.expire();
    }
  }
  if (waits.size === 0) {
    clearInterval(ticker);
    ticker = undefined;
  }
}

function watch(w: BodyWait): void {
  if (ticker === undefined) {
    tickTime = w.since = performance.now();
    ticker = setInterval(tick, TICK_MS);
  }
  waits.add(w);
}

/**
 * Reads a client's body chunk by chunk under the shared ticker: a pause of more than `idleMs`
 * between chunks (0: no limit) rejects with `request_timeout` (408), a failing body with
 * `client_gone`. `done()` stops the watch.
 */
class WatchedRead implements BodyWait {
  since = tickTime;
  expired = false;
  /** The route's `timeouts.total` ran out before the body came whole. */
  overdue = false;
  #unlink = () => {};
  constructor(
    readonly reader: ReadableStreamDefaultReader<Uint8Array>,
    readonly idleMs: number,
    readonly deadline?: BodyDeadline,
  ) {
    if (idleMs > 0) watch(this);
    const signal = deadline?.signal;
    if (!signal) return;
    // The deadline's own expiry only: a client that leaves fails its read as it is.
    const onAbort = () => {
      if (!(signal.reason instanceof ProxyError) || signal.reason.kind !== "timeout") return;
      this.overdue = true;
      this.expire();
    };
    if (signal.aborted) onAbort();
    else {
      signal.addEventListener("abort", onAbort, { once: true });
      this.#unlink = () => signal.removeEventListener("abort", onAbort);
    }
  }
  expire(): void {
    this.expired = true;
    this.reader.cancel().catch(() => {});
  }
  async read(): Promise<ReadableStreamReadResult<Uint8Array>> {
    const r = this.expired ? undefined : await readClientChunk(this.reader);
    if (this.overdue) {
      throw new ProxyError(
        "request_timeout",
        `The request body did not come whole within ${Math.round(this.deadline!.ms)} ms (${
          this.deadline!.what ?? "timeouts.total"
        })`,
      );
    }
    if (this.expired || r === undefined) {
      throw new ProxyError(
        "request_timeout",
        `The request body paused for more than ${this.idleMs} ms (timeouts.idle)`,
      );
    }
    this.since = tickTime;
    return r;
  }
  done(): void {
    waits.delete(this);
    this.#unlink();
  }
}

/**
 * `timeouts.total` for a body read before an upstream is chosen: the deadline's signal (aborted
 * with a `timeout` ProxyError when it passes) and its length for the message. Past it, 408.
 */
export interface BodyDeadline {
  signal: AbortSignal;
  ms: number;
  /** What set it, for the message: `timeouts.total` unless said (a gRPC call's grpc-timeout). */
  what?: string;
}

/**
 * Reads a body of exactly `length` bytes into one buffer, so that it goes upstream in the same
 * write as the request head and can be replayed. A pause of more than `idleMs` between chunks (0:
 * no limit) rejects with `request_timeout` (408); a body that ends short, or goes on past
 * `length`, with `bad_request`.
 */
export async function readWhole(
  body: ReadableStream<Uint8Array>,
  length: number,
  idleMs: number,
  o: { deadline?: BodyDeadline } = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const reader = body.getReader();
  const watched = new WatchedRead(reader, idleMs, o.deadline);
  let out: Uint8Array<ArrayBuffer> | undefined;
  let got = 0;
  try {
    for (;;) {
      const r = await watched.read();
      if (r.done) break;
      const chunk = r.value;
      if (got + chunk.byteLength > length) {
        reader.cancel().catch(() => {});
        throw new ProxyError("bad_request", "Request body longer than its Content-Length");
      }
      // Usually the whole body is one chunk: kept as it is, no copy.
      // (Request bodies are ArrayBuffer-backed.)
      if (got === 0 && chunk.byteLength === length) out = chunk as Uint8Array<ArrayBuffer>;
      else {
        out ??= new Uint8Array(length);
        out.set(chunk, got);
      }
      got += chunk.byteLength;
    }
  } finally {
    watched.done();
  }
  if (got !== length) {
    throw new ProxyError("bad_request", SHORT_BODY);
  }
  return out ?? new Uint8Array(0);
}

/**
 * Reads a body nobody will get (a rule replaced it) to its end, dropping each chunk, so that one
 * over `limit` bytes gets 413 however it is framed: a chunked upload was dropped in the
 * background and its replacement answered 200, where a declared length over the limit got 413.
 * Pauses as in `readWhole` (408).
 */
export async function dropWithin(
  body: ReadableStream<Uint8Array>,
  limit: number,
  idleMs: number,
  o: { deadline?: BodyDeadline } = {},
): Promise<void> {
  const reader = body.getReader();
  const watched = new WatchedRead(reader, idleMs, o.deadline);
  let seen = 0;
  try {
    for (;;) {
      const r = await watched.read();
      if (r.done) return;
      seen += r.value.byteLength;
      if (seen > limit) {
        reader.cancel().catch(() => {});
        throw new ProxyError("body_too_large", `Request body exceeds ${limit} bytes`);
      }
    }
  } finally {
    watched.done();
  }
}

/**
 * A request body the head says nothing about (no Content-Length, no Transfer-Encoding): null once
 * it ends without a byte, else the same bytes. The Fetch API gives every method but GET and HEAD
 * a stream, so a bodyless DELETE, OPTIONS or POST went upstream with an empty chunked body (or
 * `content-length: 0`), and was not retried on a stale connection. `known`: the head says there
 * is none (HTTP/1.1, RFC 9112 §6.3), so it is waited for (pauses as in `readWhole`); otherwise
 * (HTTP/2, where only END_STREAM tells) only what has already arrived is looked at.
 */
export async function nullIfEmpty(
  body: ReadableStream<Uint8Array>,
  o: { idleMs: number; known: boolean; deadline?: BodyDeadline },
): Promise<ReadableStream<Uint8Array> | null> {
  const reader = body.getReader();
  const watched = new WatchedRead(reader, o.idleMs, o.deadline);
  let first: Promise<ReadableStreamReadResult<Uint8Array>>;
  try {
    for (;;) {
      const read = watched.read();
      const r = o.known ? await read : await settledNow(read);
      if (r === undefined) {
        first = read; // still coming: it streams as it is
        break;
      }
      if (r.done) return null;
      if (r.value.byteLength > 0) {
        first = read;
        break;
      }
    }
  } finally {
    watched.done();
  }
  first.catch(() => {}); // taken by the first pull, if the body is ever read
  let pulled = false;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      const r = pulled ? await reader.read() : await first;
      pulled = true;
      if (r.done) c.close();
      else c.enqueue(r.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
}

/** `p`'s value if it settles within this turn of the event loop, else undefined. */
function settledNow<T>(p: Promise<T>): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const turn = new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), 0));
  return Promise.race([p, turn]).finally(() => clearTimeout(timer));
}

/**
 * A body that streams once; it can be handed out again only if nobody has read from it yet.
 * (`locked` cannot tell: a reader that has drained or cancelled the stream releases its lock.)
 */
function once(body: ReadableStream<Uint8Array>): BodySource {
  let touched = false;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  const tracked = new ReadableStream<Uint8Array>({
    async pull(c) {
      touched = true;
      reader ??= body.getReader();
      const r = await reader.read();
      if (r.done) c.close();
      else c.enqueue(r.value);
    },
    cancel(reason) {
      touched = true;
      return (reader ?? body).cancel(reason);
    },
  }, { highWaterMark: 0 });
  // Chunks pass untouched: whoever reads this may take over the lending of the body's own.
  (tracked as ChunkLending)[LEND_CHUNKS] = (body as ChunkLending)[LEND_CHUNKS];
  return {
    get replayable() {
      return !touched && !tracked.locked;
    },
    next: () => touched || tracked.locked ? null : tracked,
  };
}

function concat(chunks: Uint8Array[], size: number): Uint8Array<ArrayBuffer> {
  const all = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.byteLength;
  }
  return all;
}

/** Wraps a response so `done` runs once its body has ended, failed or been cancelled. */
export function onBodyEnd(res: Response, done: () => void): Response {
  let called = false;
  const fin = () => {
    if (!called) {
      called = true;
      done();
    }
  };
  const reader = res.body!.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      try {
        const r = await reader.read();
        if (r.done) {
          fin();
          c.close();
        } else c.enqueue(r.value);
      } catch (err) {
        fin();
        c.error(err);
      }
    },
    cancel(reason) {
      fin();
      return reader.cancel(reason);
    },
  });
  const out: CountedResponse = new Response(body, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
  });
  // The upstream client's byte counter tells the access log what was delivered (bytesOut of a
  // chunked body, `incomplete`); without it the load-aware policies logged 0 bytes.
  const counter = (res as CountedResponse)[BODY_BYTES];
  if (counter) out[BODY_BYTES] = counter;
  return out;
}
