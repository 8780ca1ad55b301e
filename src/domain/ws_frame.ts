// The WebSocket framing of RFC 6455 §5, for WebSockets Prox terminates itself (over HTTP/2,
// RFC 8441: adapters/h2/websocket.ts). A parser that takes the bytes as they come and gives whole
// messages and control frames, and an encoder for the frames a server writes (unmasked). No
// extension is negotiated, so RSV bits are errors; message sizes are bounded as they are read,
// before the bytes are kept.

/** Opcodes (RFC 6455 §5.2). */
export const Op = {
  CONTINUATION: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;

/** What the parser found: a message, a control frame, or why the connection must fail. */
export type WsEvent =
  | { type: "text"; data: string }
  | { type: "binary"; data: Uint8Array<ArrayBuffer> }
  | { type: "ping"; data: Uint8Array }
  | { type: "pong"; data: Uint8Array }
  /** `code` 1005: a close frame without a code (RFC 6455 §7.1.5). */
  | { type: "close"; code: number; reason: string }
  /**
   * A message past `maxMessage` (1009); `size` is what was known of it (at least limit + 1). The
   * rest of it is passed over.
   */
  | { type: "too_big"; size: number }
  /** 1002 (protocol error) or 1007 (invalid UTF-8): fail the connection (RFC 6455 §7.1.7). */
  | { type: "error"; code: 1002 | 1007; reason: string };

/** The read buffer kept between frames; a bigger one, grown for a big frame, is let go. */
const KEEP_BUFFER = 64 * 1024;

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Whether a close code may be received (RFC 6455 §7.4.1 and IANA's registry: 1012–1014). */
export function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

/** Decodes UTF-8 strictly (invalid sequences, overlongs, surrogates: null). */
export function utf8(bytes: Uint8Array): string | null {
  try {
    return UTF8.decode(bytes);
  } catch {
    return null;
  }
}

/**
 * Parses frames as bytes arrive. `masked`: frames must be masked (a server reading a client,
 * RFC 6455 §5.1) or must not be. After an "error" or "close" event it parses nothing more.
 */
export class WsParser {
  #buf: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  #start = 0;
  #end = 0;
  /** The data message being assembled from fragments (its opcode, 0: none). */
  #msgOp = 0;
  /**
   * Its bytes so far, unmasked into one buffer grown by doubling (up to maxMessage): a buffer
   * per fragment cost a client's message of one-byte frames some 200 bytes of memory per byte.
   */
  #msg: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  #msgSize = 0;
  #failed = false;
  /** Bytes of a message too big still to be passed over (its frames are not kept). */
  #skip = 0;
  /** The message too big goes on in continuation frames, passed over too. */
  #dropping = false;

  constructor(readonly opts: { maxMessage: number; masked: boolean }) {}

  /** Bytes held for a frame not complete yet (bounded by maxMessage plus a frame header). */
  get held(): number {
    return this.#end - this.#start + this.#msgSize;
  }

  /** Bytes the parser keeps allocated for frames not complete yet. */
  get capacity(): number {
    return this.#buf.length;
  }

  /** Takes `chunk` and returns the events of the frames it completed. */
  push(chunk: Uint8Array): WsEvent[] {
    const out: WsEvent[] = [];
    if (this.#failed) return out;
    this.#append(chunk);
    while (!this.#failed) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, this.#end - this.#start);
        this.#start += n;
        this.#skip -= n;
        if (this.#skip > 0) break;
      }
      const ev = this.#next(out);
      if (ev === "need") break;
    }
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
      // The room a big frame needed is not kept for a socket that may idle for days.
      if (this.#buf.length > KEEP_BUFFER) this.#buf = new Uint8Array(0);
    }
    return out;
  }

  #append(chunk: Uint8Array): void {
    const have = this.#end - this.#start;
    if (this.#end + chunk.length > this.#buf.length) {
      if (have + chunk.length <= this.#buf.length) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const bigger = new Uint8Array(Math.max(have + chunk.length, this.#buf.length * 2, 1024));
        bigger.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = bigger;
      }
      this.#start = 0;
      this.#end = have;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  #fail(out: WsEvent[], ev: WsEvent): "need" {
    this.#failed = true;
    out.push(ev);
    return "need";
  }

  /** Parses one frame if it is all there. */
  #next(out: WsEvent[]): "need" | "ok" {
    const b = this.#buf, s = this.#start, avail = this.#end - s;
    if (avail < 2) return "need";
    const fin = (b[s] & 0x80) !== 0;
    const rsv = b[s] & 0x70;
    const op = b[s] & 0x0f;
    const masked = (b[s + 1] & 0x80) !== 0;
    let len = b[s + 1] & 0x7f;
    let at = 2;
    const protocol = (reason: string) => this.#fail(out, { type: "error", code: 1002, reason });
    // No extension is negotiated, so no RSV bit has a meaning (RFC 6455 §5.2).
    if (rsv !== 0) return protocol("Reserved bits set");
    if (masked !== this.opts.masked) {
      return protocol(masked ? "Masked frame from the server" : "Unmasked frame from the client");
    }
    const control = op >= 0x8;
    if (control) {
      if (op !== Op.CLOSE && op !== Op.PING && op !== Op.PONG) return protocol("Unknown opcode");
      // Control frames are short and whole (RFC 6455 §5.5).
      if (!fin) return protocol("Fragmented control frame");
      if (len > 125) return protocol("Control frame longer than 125 bytes");
    } else if (op !== Op.CONTINUATION && op !== Op.TEXT && op !== Op.BINARY) {
      return protocol("Unknown opcode");
    } else if (op === Op.CONTINUATION && this.#msgOp === 0) {
      return protocol("Continuation without a message");
    } else if (op !== Op.CONTINUATION && this.#msgOp !== 0) {
      return protocol("New message before the last one ended");
    }
    if (len === 126) {
      if (avail < 4) return "need";
      len = (b[s + 2] << 8) | b[s + 3];
      at = 4;
    } else if (len === 127) {
      if (avail < 10) return "need";
      if (b[s + 2] & 0x80) return protocol("Frame length with the top bit set");
      // Past 2^53 a length is too big for any limit anyway.
      len = (b[s + 2] * 2 ** 24 + b[s + 3] * 2 ** 16 + b[s + 4] * 2 ** 8 + b[s + 5]) * 2 ** 32 +
        (b[s + 6] * 2 ** 24 + ((b[s + 7] << 16) | (b[s + 8] << 8) | b[s + 9]));
      at = 10;
    }
    const head = at + (masked ? 4 : 0);
    if (!control && (this.#dropping || this.#msgSize + len > this.opts.maxMessage)) {
      // Known from the header: the payload is not waited for, nor kept, and the frames after
      // the message (a close) are read as ever.
      if (!this.#dropping) out.push({ type: "too_big", size: this.#msgSize + len });
      this.#msg = new Uint8Array(0);
      this.#msgSize = 0;
      this.#dropping = !fin;
      this.#msgOp = fin ? 0 : this.#msgOp || op;
      this.#skip = head + len;
      return "ok";
    }
    if (avail < head + len) return "need";
    const from = s + head;
    const mask = masked ? b.subarray(s + at, s + at + 4) : null;
    this.#start = from + len;
    let whole: Uint8Array<ArrayBuffer>;
    if (control || (fin && this.#msgSize === 0)) {
      // A control frame, or a message in one frame (the usual case): one copy, unmasked.
      whole = b.slice(from, from + len);
      if (mask) unmask(whole, 0, len, mask);
      if (control) return this.#control(op, whole, out);
    } else {
      const size = this.#msgSize + len; // at most maxMessage (checked above)
      if (size > this.#msg.length) {
        const grown = new Uint8Array(
          Math.min(this.opts.maxMessage, Math.max(size, 2 * this.#msg.length, 1024)),
        );
        grown.set(this.#msg.subarray(0, this.#msgSize));
        this.#msg = grown;
      }
      this.#msg.set(b.subarray(from, from + len), this.#msgSize);
      if (mask) unmask(this.#msg, this.#msgSize, len, mask);
      this.#msgSize = size;
      if (op !== Op.CONTINUATION) this.#msgOp = op;
      if (!fin) return "ok";
      whole = this.#msg.length === size ? this.#msg : this.#msg.slice(0, size);
    }
    const msgOp = op === Op.CONTINUATION ? this.#msgOp : op;
    this.#msg = new Uint8Array(0);
    this.#msgSize = 0;
    this.#msgOp = 0;
    if (msgOp === Op.BINARY) {
      out.push({ type: "binary", data: whole as Uint8Array<ArrayBuffer> });
      return "ok";
    }
    const text = utf8(whole);
    if (text === null) {
      return this.#fail(out, { type: "error", code: 1007, reason: "Invalid UTF-8" });
    }
    out.push({ type: "text", data: text });
    return "ok";
  }

  #control(op: number, payload: Uint8Array, out: WsEvent[]): "need" | "ok" {
    if (op === Op.PING) out.push({ type: "ping", data: payload });
    else if (op === Op.PONG) out.push({ type: "pong", data: payload });
    else {
      if (payload.length === 0) {
        out.push({ type: "close", code: 1005, reason: "" });
        this.#failed = true; // nothing is read after a close (RFC 6455 §5.5.1)
        return "need";
      }
      if (payload.length === 1) {
        return this.#fail(out, { type: "error", code: 1002, reason: "Close frame of one byte" });
      }
      const code = (payload[0] << 8) | payload[1];
      if (!validCloseCode(code)) {
        return this.#fail(out, { type: "error", code: 1002, reason: "Invalid close code" });
      }
      const reason = utf8(payload.subarray(2));
      if (reason === null) {
        return this.#fail(out, {
          type: "error",
          code: 1007,
          reason: "Invalid UTF-8 in close reason",
        });
      }
      out.push({ type: "close", code, reason });
      this.#failed = true;
      return "need";
    }
    return "ok";
  }
}

/** XORs `len` bytes of `buf` from `at` with the frame's masking key (RFC 6455 §5.3). */
function unmask(buf: Uint8Array, at: number, len: number, mask: Uint8Array): void {
  const m0 = mask[0], m1 = mask[1], m2 = mask[2], m3 = mask[3];
  for (let i = 0; i < len; i++) {
    buf[at + i] ^= (i & 3) === 0 ? m0 : (i & 3) === 1 ? m1 : (i & 3) === 2 ? m2 : m3;
  }
}

/**
 * One frame: FIN set unless `more`; masked with `mask` when given (a client's frames, RFC 6455
 * §5.3; tests use it), else as a server writes them.
 */
export function encodeFrame(
  op: number,
  payload: Uint8Array,
  opts: { more?: boolean; mask?: Uint8Array } = {},
): Uint8Array {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const maskLen = opts.mask ? 4 : 0;
  const out = new Uint8Array(2 + ext + maskLen + len);
  out[0] = (opts.more ? 0 : 0x80) | op;
  out[1] = (opts.mask ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) {
    out[2] = len >> 8;
    out[3] = len & 0xff;
  } else if (ext === 8) {
    const hi = Math.floor(len / 2 ** 32);
    out[2] = hi >>> 24;
    out[3] = (hi >>> 16) & 0xff;
    out[4] = (hi >>> 8) & 0xff;
    out[5] = hi & 0xff;
    out[6] = len >>> 24;
    out[7] = (len >>> 16) & 0xff;
    out[8] = (len >>> 8) & 0xff;
    out[9] = len & 0xff;
  }
  const at = 2 + ext + maskLen;
  out.set(payload, at);
  if (opts.mask) {
    out.set(opts.mask, 2 + ext);
    for (let i = 0; i < len; i++) out[at + i] ^= opts.mask[i & 3];
  }
  return out;
}

/**
 * A data message as frames of at most `maxFrame` payload bytes (0: one frame), text or binary
 * (RFC 6455 §5.4).
 */
export function encodeMessage(
  data: string | Uint8Array,
  maxFrame = 0,
  mask?: () => Uint8Array,
): Uint8Array[] {
  const text = typeof data === "string";
  const bytes = text ? new TextEncoder().encode(data) : data;
  const op = text ? Op.TEXT : Op.BINARY;
  if (maxFrame <= 0 || bytes.length <= maxFrame) {
    return [encodeFrame(op, bytes, { mask: mask?.() })];
  }
  const frames: Uint8Array[] = [];
  for (let off = 0; off < bytes.length; off += maxFrame) {
    const end = Math.min(off + maxFrame, bytes.length);
    frames.push(
      encodeFrame(off === 0 ? op : Op.CONTINUATION, bytes.subarray(off, end), {
        more: end < bytes.length,
        mask: mask?.(),
      }),
    );
  }
  return frames;
}

/** A close frame's payload: the code and the reason (cut by the caller to 123 bytes). */
export function closePayload(code?: number, reason = ""): Uint8Array {
  if (code === undefined || code === 1005) return new Uint8Array(0);
  const r = new TextEncoder().encode(reason);
  const out = new Uint8Array(2 + r.length);
  out[0] = code >> 8;
  out[1] = code & 0xff;
  out.set(r, 2);
  return out;
}
