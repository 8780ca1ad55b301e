// A pull reader over a byte ReadableStream that hands out varints and exact byte counts even
// when the QUIC stack splits them across chunks (it does: a 300 kB POST arrives in many pieces).

import { decodeVarint, varintLengthOf } from "./varint.ts";

/** Thrown when a stream ends in the middle of a varint or a frame. */
export class TruncatedError extends Error {
  constructor(what: string) {
    super(`Cannot read ${what}: stream ended early`);
    this.name = "TruncatedError";
  }
}

/** Buffered reader: varints, exact reads and bounded partial reads over one stream. */
export class StreamReader {
  #stream: ReadableStream<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array> | ReadableStreamBYOBReader;
  #chunk: number;
  #buf: Uint8Array = new Uint8Array(0);
  #pos = 0;
  #done = false;
  #cancelled = false;

  /**
   * With `chunk`, reads go into buffers of that many bytes (a byte stream's BYOB reader): for
   * the streams that live as long as the connection and carry little (control, QPACK). Deno
   * otherwise allocates 64 KiB for every pending read, and the last chunk's view kept that
   * buffer too: 384 KiB per idle HTTP/3 connection.
   */
  constructor(stream: ReadableStream<Uint8Array>, opts: { chunk?: number } = {}) {
    this.#stream = stream;
    this.#chunk = opts.chunk ?? 0;
    this.#reader = this.#chunk > 0 ? stream.getReader({ mode: "byob" }) : stream.getReader();
  }

  /**
   * Reads in `chunk`-byte buffers from now on (see the constructor), for a stream that has
   * little left to send. Call it with no read pending.
   */
  smallReads(chunk: number): void {
    if (this.#chunk > 0 || this.#done) return;
    // What is left of the last chunk, copied: a view would keep its whole 64 KiB alive.
    this.#buf = this.#buf.slice(this.#pos);
    this.#pos = 0;
    this.#reader.releaseLock();
    this.#reader = this.#stream.getReader({ mode: "byob" });
    this.#chunk = chunk;
  }

  /** Bytes buffered but not yet consumed. */
  get buffered(): number {
    return this.#buf.length - this.#pos;
  }

  /** Pulls one more chunk; false at end of stream. */
  async #fill(): Promise<boolean> {
    if (this.#done) return false;
    const { value, done } = this.#reader instanceof ReadableStreamBYOBReader
      ? await this.#reader.read(new Uint8Array(this.#chunk))
      : await this.#reader.read();
    if (done || value === undefined) {
      this.#done = true;
      return false;
    }
    if (this.#pos >= this.#buf.length) {
      this.#buf = value;
    } else {
      const rest = this.#buf.subarray(this.#pos);
      const merged = new Uint8Array(rest.length + value.length);
      merged.set(rest);
      merged.set(value, rest.length);
      this.#buf = merged;
    }
    this.#pos = 0;
    return true;
  }

  /** Reads a varint; `null` on a clean end of stream before its first byte. */
  async varint(what = "varint"): Promise<number | null> {
    while (this.buffered === 0) {
      if (!(await this.#fill())) return null;
    }
    const need = varintLengthOf(this.#buf[this.#pos]);
    while (this.buffered < need) {
      if (!(await this.#fill())) throw new TruncatedError(what);
    }
    const r = decodeVarint(this.#buf, this.#pos)!;
    this.#pos = r.next;
    return r.value;
  }

  /** Reads exactly `n` bytes (copied once, and only when they span chunks). */
  async exact(n: number, what = "frame"): Promise<Uint8Array> {
    if (this.buffered === 0 && n > 0 && !(await this.#fill())) throw new TruncatedError(what);
    if (this.buffered >= n) {
      const out = this.#buf.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      return out;
    }
    const out = new Uint8Array(n);
    for (let off = 0; off < n;) {
      const piece = await this.upTo(n - off, what);
      out.set(piece, off);
      off += piece.length;
    }
    return out;
  }

  /** Reads between 1 and `max` bytes without copying; throws at end of stream. */
  async upTo(max: number, what = "frame"): Promise<Uint8Array> {
    if (this.buffered === 0 && !(await this.#fill())) throw new TruncatedError(what);
    const n = Math.min(max, this.buffered);
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /** Discards `n` bytes without holding them. */
  async skip(n: number, what = "frame"): Promise<void> {
    while (n > 0) n -= (await this.upTo(n, what)).length;
  }

  /** True when the stream ended and nothing is buffered. */
  async atEnd(): Promise<boolean> {
    while (this.buffered === 0) {
      if (!(await this.#fill())) return true;
    }
    return false;
  }

  /** True once `cancel` was called: an end of stream since then is ours, not the peer's. */
  get cancelled(): boolean {
    return this.#cancelled;
  }

  /** Stops reading (STOP_SENDING to the peer when the stream is still open). */
  async cancel(): Promise<void> {
    this.#done = true;
    this.#cancelled = true;
    await this.#reader.cancel().catch(() => {});
  }

  /** Releases the lock without cancelling. */
  release(): void {
    try {
      this.#reader.releaseLock();
    } catch { /* pending read */ }
  }
}
