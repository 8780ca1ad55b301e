// One HTTP/1.1 upstream connection: a read buffer over a byte transport, a watchdog for the
// response-header and idle timeouts, and an "idle read" kept pending while the connection sits in
// the pool, so a close by the upstream is noticed before the connection is handed out again.

import { socketReader, socketWriter } from "./socket_read.ts";
import type { SocketRead, SocketWrite } from "./socket_read.ts";
import { SlotSet } from "../domain/slot_set.ts";
import { ProxyError } from "../domain/errors.ts";
import { HEAD_ROOM } from "../ports.ts";

/** The byte stream under a connection (Deno.Conn and the node:tls adapter both fit). */
export interface Transport {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

const INITIAL_BUFFER = 16 * 1024;
/**
 * Where reads into an empty buffer start: the bytes in front are room for the head of the answer
 * a buffer handed on (`handOver`) is written with, as for the upstream client's pooled buffers.
 */
export const BASE = HEAD_ROOM;
/**
 * Connections at once whose buffer was made larger (`enlarge`, 73 KiB each with the upstream
 * client's: 37 MiB at most); past it they keep theirs, and answers are copied out of it.
 */
export const MAX_LARGE = 512;
let large = 0;
/** Bytes of the buffer a request head (and a small body after it) is written from. */
export const WRITE_BUFFER = 8 * 1024;

// One shared ticker checks every armed connection instead of a timer per request (timers were a
// visible share of the per-request CPU). It runs only while some connection is armed or waits
// for a late step (see `late`).
const TICK_MS = 25;
/** H1Connection's #last before the ticker has looked (see #mode). */
const UNSEEN = -1;
/**
 * The first value of the fields that later hold clock readings (idleSince, #last). Not an
 * integer: V8 keeps a field that has held only small integers as one, and the first clock reading
 * then gives the objects a new hidden class, which throws away every optimized function that saw
 * the old one. The pool's sweep stamps idleSince only on a connection parked across it, which
 * under steady load may first happen when traffic pauses: the next second ran at half the
 * throughput while the request path was compiled again (hidden_class_test.ts).
 */
const NO_TIME = -0.5;
const watched = new SlotSet<H1Connection>();
let ticker: ReturnType<typeof setInterval> | undefined;
/** Ticks so far: a late step runs once a whole tick has passed since it was set. */
let ticks = 0;

function tick(): void {
  ticks++;
  const now = performance.now();
  watched.forEach((c) => c.check(now));
  if (watched.size === 0) {
    clearInterval(ticker);
    ticker = undefined;
  }
}

function watch(c: H1Connection): void {
  watched.add(c);
  if (ticker === undefined) ticker = setInterval(tick, TICK_MS);
}

/** Maps a socket error to a ProxyError (the upstream reset or closed the connection). */
export function ioError(err: unknown, source: string): ProxyError {
  if (err instanceof ProxyError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new ProxyError("upstream_reset", `Upstream "${source}" closed the connection: ${msg}`, {
    source,
    cause: err,
  });
}

/** An HTTP/1.1 connection to one upstream origin. */
export class H1Connection {
  readonly transport: Transport;
  readonly source: string;
  /** Its place among the connections the shared ticker watches (-1: not watched). */
  slot = -1;
  /** Read buffer; unread bytes are buf[start, end), reads into an empty one start at BASE. */
  buf: Uint8Array = new Uint8Array(INITIAL_BUFFER);
  start = BASE;
  end = BASE;
  /** Requests sent on this connection so far. */
  uses = 0;
  /**
   * Monotonic ms when the connection was last parked in the pool; -1 (upstream_pool.ts UNSTAMPED)
   * until the pool's sweep stamps it, when only the pool's own idle timeout applies to it
   * (NO_TIME before its first park).
   */
  idleSince = NO_TIME;
  /**
   * How long it may idle before the upstream may close it (from its `Keep-Alive: timeout=N`, with
   * a margin); Infinity when the upstream never said.
   */
  idleLimit = Infinity;
  /** Closed, failed, or seen closing while idle: never hand it out again. */
  dead = false;
  /** The request body is waiting for the client: an idle timeout now is the client's (408). */
  waitingOnClient = false;
  /** The response body waits for the client to take the last chunk: an idle timeout is its too. */
  waitingOnReader = false;
  /**
   * An interim (1xx) response of the current exchange was read, and its bytes dropped from the
   * buffer: something was received even though the buffer looks unread (`nothingRead`).
   */
  afterInterim = false;
  /** Set while a request body is read from the client: stops that read when the connection ends. */
  stopUpload: (() => void) | null = null;
  #failure: ProxyError | null = null;
  /** `fail` has closed the transport. */
  #closed = false;
  #wbuf: Uint8Array | null = null;
  /** Counted among the MAX_LARGE (`enlarge`), until it fails. */
  #large = false;
  /** `buf` past BASE, where a parked connection's read goes: made once per buffer, not per park. */
  #idleView: Uint8Array | null = null;
  /** Reads of `transport` (socket_read.ts: 0 at end of stream). */
  readonly #read: SocketRead;
  /** Writes to `transport`. */
  readonly #write: SocketWrite;
  #pending: Promise<number> | null = null;
  #onDead: (c: H1Connection) => void = () => {};
  #idle = false;
  /**
   * Watchdog: 0 off, 1 response header (deadline from #last), 2 idle (since #last). #last is
   * UNSEEN after an arm or some activity, until the ticker's next look takes its own time for it:
   * no clock read per request, and a timeout fires up to two ticks after it passed, never before.
   */
  #mode = 0;
  #late: (() => void) | null = null;
  #lateTick = 0;
  #limit = 0;
  #last = NO_TIME;

  constructor(transport: Transport, source: string) {
    this.transport = transport;
    this.source = source;
    this.#read = socketReader(transport);
    this.#write = socketWriter(transport);
  }

  /** The error that ended this connection (timeout, client gone, body failure), if any. */
  get failure(): ProxyError | null {
    return this.#failure;
  }

  /** Closes the connection, remembering `err` as the reason the current exchange fails. */
  fail(err: ProxyError | null): void {
    if (err && !this.#failure) this.#failure = err;
    if (this.#large) {
      this.#large = false;
      large--;
    }
    // Not `dead`: a connection can be found closing (the idle read's end of stream after it was
    // handed out) before it is failed, and it must still be closed here.
    if (this.#closed) return;
    this.#closed = true;
    this.dead = true;
    this.disarm();
    try {
      this.transport.close();
    } catch {
      // already closed
    }
    this.stopUpload?.();
  }

  /**
   * Parks the connection in the pool: a read stays pending so an upstream close (or stray bytes)
   * marks it dead and calls `onDead`. The next exchange consumes that read as its first.
   */
  park(since: number, onDead: (c: H1Connection) => void): void {
    this.#idle = true;
    this.idleSince = since;
    this.#onDead = onDead;
    if (this.#pending !== null) return; // parked already (handed over): the read goes on
    this.start = this.end = BASE;
    const p = this.#read(this.#idleView ??= this.buf.subarray(BASE));
    this.#pending = p;
    p.then(this.#idleRead, this.#idleReadFailed);
  }

  // The idle read's reactions, made once per connection rather than once per park (request).
  readonly #idleRead = (n: number): void => {
    if (this.#idle) {
      this.fail(null);
      this.#onDead(this);
    } else if (n === 0) this.dead = true;
  };
  readonly #idleReadFailed = (): void => {
    if (this.#idle) this.#onDead(this);
    this.fail(null);
  };

  /** Takes the connection out of the pool for an exchange. */
  unpark(): void {
    this.#idle = false;
    this.uses++;
  }

  /** Arms the response-header timeout (ms from now; 0 disables). */
  armHeader(ms: number): void {
    this.#mode = ms > 0 ? 1 : 0;
    this.#limit = ms;
    this.#last = UNSEEN;
    if (ms > 0) watch(this);
  }

  /** Arms the idle timeout: the longest pause between two reads or writes (ms; 0 disables). */
  armIdle(ms: number): void {
    this.#mode = ms > 0 ? 2 : 0;
    this.#limit = ms;
    this.#last = UNSEEN;
    if (ms > 0) watch(this);
  }

  /** Stops the watchdog. */
  disarm(): void {
    if (this.#mode !== 0) {
      this.#mode = 0;
      if (this.#late === null) watched.delete(this);
    }
  }

  /**
   * Runs `step` once the current exchange has lasted a whole tick (25–50 ms), unless `late(null)`
   * comes first: how the exchange links the client's signal only when it is slow enough for a
   * disconnect to matter (UpstreamRequest.clientSignal).
   */
  late(step: (() => void) | null): void {
    this.#late = step;
    if (step !== null) {
      this.#lateTick = ticks;
      watch(this);
    } else if (this.#mode === 0) watched.delete(this);
  }

  /** Called by the shared ticker: fails the connection once its current timeout has passed. */
  check(now: number): void {
    const step = this.#late;
    if (step !== null && ticks - this.#lateTick >= 2) {
      this.#late = null;
      if (this.#mode === 0) watched.delete(this);
      step();
    }
    if (this.#mode === 0) return;
    if (this.#last === UNSEEN) {
      this.#last = now; // the arm or the activity came before now: counting from now is never early
      return;
    }
    if (now - this.#last < this.#limit) return;
    if (this.#mode === 2 && this.waitingOnClient) {
      // Not the upstream's fault (no 504, no passive-health failure): the client stalled.
      const msg = `The request body paused for more than ${this.#limit} ms (timeouts.idle)`;
      this.fail(new ProxyError("request_timeout", msg, { source: this.source }));
      return;
    }
    if (this.#mode === 2 && this.waitingOnReader) {
      const msg = `The client read none of the response for ${this.#limit} ms (timeouts.idle)`;
      this.fail(new ProxyError("client_gone", msg, { source: this.source }));
      return;
    }
    const msg = this.#mode === 1
      ? `Upstream "${this.source}" sent no response header within ${this.#limit} ms`
      : `Upstream "${this.source}" was idle for ${this.#limit} ms`;
    this.fail(new ProxyError("timeout", msg, { source: this.source }));
  }

  #touch(): void {
    if (this.#mode === 2) this.#last = UNSEEN;
  }

  /** Reads more bytes into the buffer; false at end of stream. */
  async fill(maxBuffer: number): Promise<boolean> {
    if (this.start === this.end) this.start = this.end = BASE;
    else if (this.end === this.buf.length) {
      if (this.start > BASE) {
        this.buf.copyWithin(BASE, this.start, this.end);
        this.end -= this.start - BASE;
        this.start = BASE;
      } else {
        if (this.buf.length >= maxBuffer) {
          throw new ProxyError("protocol", `Upstream "${this.source}" sent an oversized head`, {
            source: this.source,
          });
        }
        const bigger = new Uint8Array(Math.min(this.buf.length * 2, maxBuffer));
        bigger.set(this.buf.subarray(0, this.end));
        this.buf = bigger;
        this.#idleView = null;
      }
    }
    let p = this.#pending;
    this.#pending = null;
    // The buffer has room here, so 0 is the end of the stream.
    p ??= this.#read(this.buf.subarray(this.end));
    let n: number;
    try {
      n = await p;
    } catch (err) {
      throw this.#failure ?? ioError(err, this.source);
    }
    if (this.#failure) throw this.#failure;
    if (n === 0) return false;
    this.end += n;
    this.#touch();
    return true;
  }

  /**
   * Reads straight into `into` (not empty; the buffer must be empty), bypassing the buffer; null
   * at EOF.
   */
  async readInto(into: Uint8Array): Promise<number | null> {
    let n: number;
    try {
      n = await this.#read(into);
    } catch (err) {
      throw this.#failure ?? ioError(err, this.source);
    }
    if (this.#failure) throw this.#failure;
    this.#touch();
    return n === 0 ? null : n;
  }

  /**
   * Reads body bytes straight into `into` (the buffer must be empty), which has room for more
   * than the `want` bytes the body still has: bytes past the body that the upstream already sent
   * (more than its Content-Length said, or the next chunk's size line) go back into the buffer,
   * where they keep the connection from being reused: an exact-size read left them in the socket,
   * read as the response to the next request (RFC 9112 §6.3: a client must not forward such extra
   * data as a separate response). Null at EOF.
   */
  async readBody(into: Uint8Array, want: number): Promise<number | null> {
    const n = await this.readInto(into);
    if (n === null || n <= want) return n;
    this.buf.set(into.subarray(want, n), BASE);
    this.start = BASE;
    this.end = BASE + n - want;
    return want;
  }

  /** Nothing of a response has been read since the connection was parked or opened. */
  get nothingRead(): boolean {
    return this.end === BASE && !this.afterInterim;
  }

  /**
   * Moves the unread bytes into `buffer` (larger than the buffer in use), which reads go into from
   * now on. Not while a read into the old one is pending (a parked connection's), nor past
   * MAX_LARGE such connections: false then.
   */
  enlarge(buffer: ArrayBuffer): boolean {
    if (this.#pending !== null || buffer.byteLength <= this.buf.byteLength) return false;
    if (!this.#large) {
      if (large >= MAX_LARGE || this.dead) return false;
      large++;
      this.#large = true;
    }
    const buf = new Uint8Array(buffer);
    buf.set(this.buf.subarray(this.start, this.end), BASE);
    this.end = BASE + this.end - this.start;
    this.start = BASE;
    this.buf = buf;
    this.#idleView = null;
    return true;
  }

  /**
   * Hands on the `len` unread bytes at `start` as a view of the buffer they are in, which this
   * connection then no longer uses: what follows them moves into `next`, a buffer of the same
   * size, which reads go into from now on. The caller owns the old buffer (it may go back to a
   * pool once the view is written).
   */
  handOver(len: number, next: ArrayBuffer): Uint8Array<ArrayBuffer> {
    const old = this.buf;
    const out = new Uint8Array(old.buffer as ArrayBuffer, old.byteOffset + this.start, len);
    const buf = new Uint8Array(next);
    const after = this.start + len;
    buf.set(old.subarray(after, this.end), BASE);
    this.end = BASE + this.end - after;
    this.start = BASE;
    this.buf = buf;
    this.#idleView = null;
    return out;
  }

  /**
   * A buffer of WRITE_BUFFER bytes, the same each time, to build the next request in: writes are
   * awaited, so it is free again once `write` has resolved.
   */
  writeBuffer(): Uint8Array {
    return this.#wbuf ??= new Uint8Array(WRITE_BUFFER);
  }

  /** Writes all of `bytes`. */
  async write(bytes: Uint8Array): Promise<void> {
    let off = 0;
    try {
      while (off < bytes.byteLength) {
        off += await this.#write(off === 0 ? bytes : bytes.subarray(off));
        this.#touch();
      }
    } catch (err) {
      throw this.#failure ?? ioError(err, this.source);
    }
    if (this.#failure) throw this.#failure;
  }
}
