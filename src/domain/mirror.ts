// Traffic mirroring decisions, pure: which requests are copied (sampling with an injected random
// draw) and how many copies a route may have under way (a counter per route, bounded by the routes
// that have copies in flight). The sending lives in proxy/mirror.ts.

/** Whether a request is copied: `draw` in [0, 1) from the caller's random source. */
export function sampled(percent: number, draw: number): boolean {
  return percent >= 100 || draw * 100 < percent;
}

/**
 * Copies in flight per route id. A route's entry goes away when its count drops to 0, so the map
 * holds only routes with copies under way; it survives reloads (a route keeps its count while its
 * copies finish, whatever its new limit).
 */
export class MirrorSlots {
  #inFlight = new Map<string, number>();

  /** Takes one slot of `route` unless `max` are taken; false: the copy is to be dropped. */
  take(route: string, max: number): boolean {
    const n = this.#inFlight.get(route) ?? 0;
    if (n >= max) return false;
    this.#inFlight.set(route, n + 1);
    return true;
  }

  /** Gives back a slot taken with `take`. */
  release(route: string): void {
    const n = this.#inFlight.get(route) ?? 0;
    if (n <= 1) this.#inFlight.delete(route);
    else this.#inFlight.set(route, n - 1);
  }

  /** Copies under way for `route`. */
  count(route: string): number {
    return this.#inFlight.get(route) ?? 0;
  }

  /** Routes with copies under way (the map's size: its memory bound). */
  get routes(): number {
    return this.#inFlight.size;
  }
}

/**
 * A request body copied for a mirror as it streams past, into one buffer of at most `cap` bytes
 * (grown by doubling; chunks are copied, never kept: the primary request owns them). `push`
 * returns false once the body has gone past `cap`, and the bytes are let go.
 */
export class BodyCapture {
  #buf: Uint8Array<ArrayBuffer> | null;
  #used = 0;
  #over = false;

  /** `expected`: the declared length when known (the first buffer is made that size), else -1. */
  constructor(readonly cap: number, expected = -1) {
    this.#buf = new Uint8Array(expected >= 0 ? Math.min(expected, cap) : Math.min(cap, 16_384));
  }

  /** Copies `chunk`; false when the body is now over the cap (and from then on). */
  push(chunk: Uint8Array): boolean {
    if (this.#over) return false;
    const need = this.#used + chunk.byteLength;
    if (need > this.cap) {
      this.#over = true;
      this.#buf = null;
      return false;
    }
    let buf = this.#buf!;
    if (need > buf.byteLength) {
      const grown = new Uint8Array(Math.min(this.cap, Math.max(need, buf.byteLength * 2)));
      grown.set(buf.subarray(0, this.#used));
      this.#buf = buf = grown;
    }
    buf.set(chunk, this.#used);
    this.#used = need;
    return true;
  }

  /** True once the body went past the cap. */
  get over(): boolean {
    return this.#over;
  }

  /** The bytes copied (a view, no copy), or null once over the cap. */
  bytes(): Uint8Array<ArrayBuffer> | null {
    return this.#buf === null ? null : this.#buf.subarray(0, this.#used);
  }
}
