// HTTP/2 framing (RFC 9113 §4, §6): frame types, flags, settings and error codes, and the writer
// that puts frames into one growing buffer, so that the answers of many streams go out in one
// write.

import { BufferPool } from "../buffer_pool.ts";

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const Flag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
  ENABLE_CONNECT_PROTOCOL: 0x8,
} as const;

export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

const NONE = new Uint8Array(0);

/** Write buffers of the default size that idle connections let go, for the next to take. */
const KEPT = new BufferPool(16 * 1024, 64);

/** The client connection preface (RFC 9113 §3.4). */
export const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export const FRAME_HEADER = 9;
/** The largest window a peer may have (2^31 - 1). */
export const MAX_WINDOW = 0x7fffffff;

/** A connection error: GOAWAY with `code`, then the connection closes. */
export class ConnectionError extends Error {
  constructor(readonly code: number, reason: string) {
    super(reason);
    this.name = "ConnectionError";
  }
}

/**
 * The values of a SETTINGS frame from the peer (RFC 9113 §6.5), or null for an ACK; throws a
 * ConnectionError for a frame of the wrong form and for the values §6.5.2 bounds (an initial
 * window past 2^31-1, a frame size out of range, ENABLE_PUSH past 1). Unknown settings are kept
 * for the caller to ignore.
 */
export function settingsOf(
  flags: number,
  stream: number,
  p: Uint8Array,
): [number, number][] | null {
  if (stream !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
  if (flags & Flag.ACK) {
    if (p.length !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ack");
    return null;
  }
  if (p.length % 6 !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS size");
  const out: [number, number][] = [];
  for (let i = 0; i < p.length; i += 6) {
    const key = (p[i] << 8) | p[i + 1];
    const value = ((p[i + 2] << 24) | (p[i + 3] << 16) | (p[i + 4] << 8) | p[i + 5]) >>> 0;
    if (key === Setting.INITIAL_WINDOW_SIZE && value > MAX_WINDOW) {
      throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "Initial window too large");
    }
    if (key === Setting.MAX_FRAME_SIZE && (value < 16384 || value > 16777215)) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range");
    }
    if (key === Setting.ENABLE_PUSH && value > 1) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH out of range");
    }
    out.push([key, value]);
  }
  return out;
}

/**
 * Frames waiting to be written, in one buffer. Writers append; the connection takes what is
 * there (`take`) for one write, and gives the buffer back (`giveBack`) once the write is done, so
 * that two buffers alternate while a write is in flight.
 */
export class FrameWriter {
  /** Made when the first frame comes (an idle connection holds no buffer: `release`). */
  #buf: Uint8Array = NONE;
  #spare: Uint8Array | null = null;
  length = 0;

  constructor(readonly initial = 16 * 1024) {}

  #room(n: number): void {
    const need = this.length + n;
    if (need <= this.#buf.length) return;
    if (this.#buf === NONE && need <= this.initial && this.initial === KEPT.size) {
      // A connection busy again after an idle moment (under h2load, every tenth request or so):
      // a kept buffer, as a fresh one is zero-filled, and every ArrayBuffer costs 0.2–0.7 µs in
      // Deno besides (0.7 where V8's sweeper of ArrayBuffers runs on another core).
      this.#buf = new Uint8Array(KEPT.take());
      return;
    }
    let size = Math.max(this.#buf.length * 2, this.initial);
    while (size < need) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.#buf.subarray(0, this.length));
    this.#buf = bigger;
  }

  #header(length: number, type: number, flags: number, stream: number): void {
    const b = this.#buf;
    let at = this.length;
    b[at++] = length >>> 16;
    b[at++] = (length >>> 8) & 0xff;
    b[at++] = length & 0xff;
    b[at++] = type;
    b[at++] = flags;
    b[at++] = (stream >>> 24) & 0x7f;
    b[at++] = (stream >>> 16) & 0xff;
    b[at++] = (stream >>> 8) & 0xff;
    b[at++] = stream & 0xff;
    this.length = at;
  }

  /** A frame whose payload is `payload` (may be empty). */
  frame(type: number, flags: number, stream: number, payload?: Uint8Array): void {
    const n = payload?.length ?? 0;
    this.#room(FRAME_HEADER + n);
    this.#header(n, type, flags, stream);
    if (n > 0) {
      this.#buf.set(payload!, this.length);
      this.length += n;
    }
  }

  /** A field block as HEADERS and, past `maxFrame`, CONTINUATION frames. */
  headers(stream: number, block: Uint8Array, endStream: boolean, maxFrame: number): void {
    let off = 0;
    let type: number = FrameType.HEADERS;
    do {
      const n = Math.min(maxFrame, block.length - off);
      const last = off + n === block.length;
      let flags = last ? Flag.END_HEADERS : 0;
      if (type === FrameType.HEADERS && endStream) flags |= Flag.END_STREAM;
      this.frame(type, flags, stream, block.subarray(off, off + n));
      off += n;
      type = FrameType.CONTINUATION;
    } while (off < block.length);
  }

  /** A frame with a 32-bit payload (WINDOW_UPDATE, RST_STREAM). */
  u32(type: number, stream: number, value: number): void {
    this.#room(FRAME_HEADER + 4);
    this.#header(4, type, 0, stream);
    const b = this.#buf;
    b[this.length++] = value >>> 24;
    b[this.length++] = (value >>> 16) & 0xff;
    b[this.length++] = (value >>> 8) & 0xff;
    b[this.length++] = value & 0xff;
  }

  settings(values: Array<[number, number]>): void {
    const p = new Uint8Array(values.length * 6);
    const v = new DataView(p.buffer);
    values.forEach(([id, value], i) => {
      v.setUint16(i * 6, id);
      v.setUint32(i * 6 + 2, value);
    });
    this.frame(FrameType.SETTINGS, 0, 0, p);
  }

  goaway(lastStream: number, code: number): void {
    const p = new Uint8Array(8);
    const v = new DataView(p.buffer);
    v.setUint32(0, lastStream & 0x7fffffff);
    v.setUint32(4, code);
    this.frame(FrameType.GOAWAY, 0, 0, p);
  }

  /** What is waiting, for one write; the writer continues in its spare buffer. */
  take(): Uint8Array {
    const out = this.#buf.subarray(0, this.length);
    this.#buf = this.#spare ?? NONE;
    this.#spare = null;
    this.length = 0;
    return out;
  }

  /** The bytes of the buffers held now. */
  get held(): number {
    return this.#buf.length + (this.#spare?.length ?? 0);
  }

  /** Lets the buffers go while nothing waits (an idle connection), to be reused by another. */
  release(): void {
    if (this.#spare !== null) KEPT.give(this.#spare.buffer as ArrayBuffer);
    this.#spare = null;
    if (this.length > 0) return;
    if (this.#buf !== NONE) KEPT.give(this.#buf.buffer as ArrayBuffer);
    this.#buf = NONE;
  }

  /** A buffer `take` gave is written and free again (kept unless it grew past 4× the start). */
  giveBack(buf: Uint8Array): void {
    if (buf.buffer.byteLength <= this.initial * 4) {
      this.#spare = new Uint8Array(buf.buffer as ArrayBuffer);
    }
  }
}

/** DATA payloads smaller than this, queued unread behind a small chunk, are joined to it. */
export const JOIN_BELOW = 1024;

/**
 * Queues a copy of a DATA payload for a body's reader, but joins a small one to the small chunk
 * unread before it (in a buffer of 2 × JOIN_BELOW, filled until that chunk is no longer small).
 * A chunk per frame let one-byte frames hold some 200 bytes of buffer objects per byte of the
 * window. `joined`: what the last call returned; returns the chunk to pass next time.
 */
export function queueCopy(
  queue: Uint8Array<ArrayBuffer>[],
  joined: Uint8Array<ArrayBuffer> | null,
  data: { bytes: Uint8Array; start: number; end: number },
): Uint8Array<ArrayBuffer> | null {
  const { bytes, start, end } = data;
  const size = end - start;
  const n = queue.length;
  const last = n > 0 ? queue[n - 1] : undefined;
  if (last === undefined || size >= JOIN_BELOW || last.length >= JOIN_BELOW) {
    queue.push(bytes.slice(start, end));
    return null;
  }
  // Both under JOIN_BELOW: together they fit. Its own buffer only once the joined one has left
  // the queue (read: the reader may hold its view).
  const view = last === joined
    ? new Uint8Array(last.buffer, 0, last.length + size)
    : new Uint8Array(new ArrayBuffer(2 * JOIN_BELOW), 0, last.length + size);
  if (view.buffer !== last.buffer) view.set(last);
  view.set(bytes.subarray(start, end), last.length);
  queue[n - 1] = view;
  return view;
}

/** A sender waiting for flow-control window: an answer of the HTTP/2 engine, a body of the client. */
export interface WindowWaiter {
  /** Wakes it to send; null when it is not waiting (or woken and not yet run). */
  windowWake: (() => void) | null;
  /** Its stream's window. */
  sendWindow: number;
  /** What it has left to send of its chunk. */
  want: number;
  /** Connection window set aside for it when woken, until it runs. */
  reserved: number;
}

/**
 * Wakes the senders waiting for connection window, in turn, until what they may send uses up
 * `free` (the connection's window less what is set aside already), each's share set aside for it
 * until it runs, rather than all of them for each WINDOW_UPDATE, each to find the window taken by
 * the first. A waiter whose stream's window a smaller SETTINGS_INITIAL_WINDOW_SIZE shut leaves
 * the queue, to wait for its stream's. Counts the wakes in `counter.windowWakes` (for tests);
 * returns the window it set aside.
 */
export function passWindow<W extends WindowWaiter>(
  waiters: Set<W>,
  free: number,
  counter: { windowWakes: number },
): number {
  let left = free;
  if (left <= 0) return 0;
  for (const s of waiters) {
    const wake = s.windowWake;
    if (wake === null) continue; // woken already, not yet run
    if (s.sendWindow <= 0) {
      waiters.delete(s);
      continue;
    }
    const share = Math.min(s.want, s.sendWindow);
    s.reserved = share;
    s.windowWake = null;
    counter.windowWakes++;
    wake();
    left -= share;
    if (left <= 0) break;
  }
  return free - left;
}
