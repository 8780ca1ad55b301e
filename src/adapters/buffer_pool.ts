// Buffers of one size, kept for reuse: the upstream client reads a whole small answer for Prox's
// HTTP/1.1 engine into one (behind room for the head), and the engine gives it back once the
// answer went out (ports.ts RELEASE). A fresh buffer per answer is zero-filled, and is garbage
// outside the V8 heap that only a collection frees: at 64 KiB answers that was about a fifth of
// Prox's CPU (zero-filling, and the minor GCs gc_hint.ts asks for to keep RSS flat).

export class BufferPool {
  readonly #free: ArrayBuffer[] = [];

  /** Buffers of `size` bytes; at most `max` are kept (memory held: size × max). */
  constructor(readonly size: number, readonly max: number) {}

  /** A kept buffer, else a fresh one. */
  take(): ArrayBuffer {
    return this.#free.pop() ?? new ArrayBuffer(this.size);
  }

  /** Whether `take` would reuse a buffer (for the tests). */
  get kept(): number {
    return this.#free.length;
  }

  /**
   * Keeps `buf` for reuse, unless the pool is full or it is not one of its size. Whoever gives a
   * buffer back must hold no view of it any more; giving the same buffer twice is ignored.
   */
  give(buf: ArrayBuffer): void {
    if (buf.byteLength !== this.size || this.#free.length >= this.max) return;
    if (this.#free.includes(buf)) return;
    this.#free.push(buf);
  }
}
