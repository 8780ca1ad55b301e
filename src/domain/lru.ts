// A bounded map with least-recently-used eviction and per-entry expiry, for per-client state that
// grows with traffic. Pure: time is passed in. Built on Map's insertion order (delete + set moves
// an entry to the back), so the front is always the least recently used entry.

/** Options for LruMap. */
export interface LruOptions {
  /** Most entries kept; the least recently used is dropped beyond it. */
  maxEntries: number;
  /** Expired entries checked (and dropped) at the front per write; bounds the work per call. */
  sweepBudget?: number;
}

/** Map<string, V> with a hard size bound, LRU eviction and lazy expiry. */
export class LruMap<V> {
  readonly #map = new Map<string, { value: V; expiresAt: number }>();
  readonly #max: number;
  readonly #budget: number;
  #evicted = 0;

  constructor(opts: LruOptions) {
    if (!(opts.maxEntries >= 1)) throw new RangeError("LruMap maxEntries must be at least 1");
    this.#max = Math.floor(opts.maxEntries);
    this.#budget = opts.sweepBudget ?? 8;
  }

  /** The live value for `key`, or undefined when absent or expired (expired ones are dropped). */
  get(key: string, now: number): V | undefined {
    const e = this.#map.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= now) {
      this.#map.delete(key);
      return undefined;
    }
    return e.value;
  }

  /** Stores `value` until `expiresAt` as the most recently used entry; evicts to stay bounded. */
  set(key: string, value: V, opts: { now: number; expiresAt: number }): void {
    this.#map.delete(key);
    this.#map.set(key, { value, expiresAt: opts.expiresAt });
    this.sweep(opts.now, this.#budget);
    while (this.#map.size > this.#max) {
      const oldest = this.#map.keys().next().value as string;
      this.#map.delete(oldest);
      this.#evicted++;
    }
  }

  /** Removes `key`. */
  delete(key: string): boolean {
    return this.#map.delete(key);
  }

  /**
   * Drops expired entries from the least recently used end, stopping at the first live one or
   * after `budget` checks. Returns how many were dropped.
   */
  sweep(now: number, budget = Infinity): number {
    let dropped = 0;
    let checked = 0;
    for (const [key, e] of this.#map) {
      if (checked++ >= budget || e.expiresAt > now) break;
      this.#map.delete(key);
      dropped++;
    }
    return dropped;
  }

  /** Entries currently held (expired ones not yet swept included). */
  get size(): number {
    return this.#map.size;
  }

  /** Live entries dropped because the map was full (not counting expiry). */
  get evicted(): number {
    return this.#evicted;
  }

  /** Removes everything. */
  clear(): void {
    this.#map.clear();
  }
}
