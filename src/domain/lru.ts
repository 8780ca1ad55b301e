// A bounded LRU table of per-client rate-limit states with per-entry expiry. Pure: time is
// passed in. Built for floods of distinct keys: states, expiry times and the recency list live in
// typed arrays indexed by slot, so a key costs its string, one Map entry and 48 bytes, and no
// per-key object is left for the garbage collector. Head of the list = least recently used.
// (Plain Map insertion order is not used for recency: V8 keeps deleted slots at the front that
// every "oldest entry" lookup has to skip, which made eviction O(n).)

import type { RateLimitState } from "./rate_limit.ts";

/** Options for StateLru. */
export interface LruOptions {
  /**
   * Most entries kept. Beyond it, of the `sweepBudget` least recently used, the one soonest back
   * to full quota (expired, else the earliest expiry) is dropped; ties go to the least recent.
   */
  maxEntries: number;
  /** Expired entries checked (and dropped) at the LRU end per write; bounds the work per call. */
  sweepBudget?: number;
}

const NONE = -1;
const INITIAL_SLOTS = 64;

/** Map<string, RateLimitState> with a hard size bound, LRU-end eviction and lazy expiry. */
export class StateLru {
  readonly #index = new Map<string, number>();
  readonly #max: number;
  readonly #budget: number;
  #keys: (string | undefined)[] = [];
  #t = new Float64Array(0);
  #n = new Float64Array(0);
  #p = new Float64Array(0);
  #exp = new Float64Array(0);
  #prev = new Int32Array(0);
  #next = new Int32Array(0);
  #used = 0;
  #free: number[] = [];
  #head = NONE;
  #tail = NONE;
  #evicted = 0;

  constructor(opts: LruOptions) {
    if (!(opts.maxEntries >= 1)) throw new RangeError("StateLru maxEntries must be at least 1");
    this.#max = Math.floor(opts.maxEntries);
    this.#budget = opts.sweepBudget ?? 8;
  }

  /** The live state for `key`, or undefined when absent or expired (expired ones are dropped). */
  get(key: string, now: number): RateLimitState | undefined {
    const s = this.#index.get(key);
    if (s === undefined) return undefined;
    if (this.#exp[s] <= now) {
      this.#remove(s);
      return undefined;
    }
    return { t: this.#t[s], n: this.#n[s], p: this.#p[s] };
  }

  /** Stores `state` until `expiresAt` as the most recently used entry; evicts to stay bounded. */
  set(key: string, state: RateLimitState, opts: { now: number; expiresAt: number }): void {
    let s = this.#index.get(key);
    const existing = s !== undefined;
    if (s !== undefined) this.#unlink(s);
    else {
      // Make room first: expired entries, then live ones.
      this.sweep(opts.now, this.#budget);
      while (this.#index.size >= this.#max && this.#head !== NONE) {
        const victim = this.#cheapest(opts.now);
        if (this.#exp[victim] > opts.now) this.#evicted++;
        this.#remove(victim);
      }
      s = this.#alloc();
      this.#keys[s] = key;
      this.#index.set(key, s);
    }
    this.#t[s] = state.t;
    this.#n[s] = state.n;
    this.#p[s] = state.p;
    this.#exp[s] = opts.expiresAt;
    this.#append(s);
    if (existing) this.sweep(opts.now, this.#budget);
  }

  /** Removes `key`. */
  delete(key: string): boolean {
    const s = this.#index.get(key);
    if (s === undefined) return false;
    this.#remove(s);
    return true;
  }

  /**
   * Drops expired entries from the least recently used end, stopping at the first live one or
   * after `budget` checks. Returns how many were dropped.
   */
  sweep(now: number, budget = Infinity): number {
    let dropped = 0;
    while (this.#head !== NONE && dropped < budget && this.#exp[this.#head] <= now) {
      this.#remove(this.#head);
      dropped++;
    }
    return dropped;
  }

  /** Entries held (expired ones not yet swept included), least recently used first. */
  *entries(): Generator<{ key: string; state: RateLimitState; expiresAt: number }> {
    for (let s = this.#head; s !== NONE; s = this.#next[s]) {
      yield {
        key: this.#keys[s] as string,
        state: { t: this.#t[s], n: this.#n[s], p: this.#p[s] },
        expiresAt: this.#exp[s],
      };
    }
  }

  /** Entries currently held (expired ones not yet swept included). */
  get size(): number {
    return this.#index.size;
  }

  /** Live entries dropped because the table was full (not counting expired ones). */
  get evicted(): number {
    return this.#evicted;
  }

  /**
   * Of the `budget` least recently used entries, the one whose state is soonest back to full
   * quota (an expired one first): dropping it forgets the least. The plain LRU end evicted a
   * client that still owed its quota while expired entries sat right behind it, and a flood of
   * one-request keys pushed a drained client out this way.
   */
  #cheapest(now: number): number {
    let best = this.#head;
    let s = this.#head;
    for (let i = 0; i < this.#budget && s !== NONE && this.#exp[best] > now; i++) {
      if (this.#exp[s] < this.#exp[best]) best = s;
      s = this.#next[s];
    }
    return best;
  }

  #alloc(): number {
    const reused = this.#free.pop();
    if (reused !== undefined) return reused;
    if (this.#used === this.#t.length) this.#grow();
    return this.#used++;
  }

  #grow(): void {
    const size = Math.min(this.#max, Math.max(INITIAL_SLOTS, this.#t.length * 2));
    const f64 = (old: Float64Array) => {
      const a = new Float64Array(size);
      a.set(old);
      return a;
    };
    const i32 = (old: Int32Array) => {
      const a = new Int32Array(size);
      a.set(old);
      return a;
    };
    this.#t = f64(this.#t);
    this.#n = f64(this.#n);
    this.#p = f64(this.#p);
    this.#exp = f64(this.#exp);
    this.#prev = i32(this.#prev);
    this.#next = i32(this.#next);
  }

  #remove(s: number): void {
    this.#unlink(s);
    this.#index.delete(this.#keys[s] as string);
    this.#keys[s] = undefined;
    this.#free.push(s);
  }

  #unlink(s: number): void {
    const prev = this.#prev[s];
    const next = this.#next[s];
    if (prev !== NONE) this.#next[prev] = next;
    else this.#head = next;
    if (next !== NONE) this.#prev[next] = prev;
    else this.#tail = prev;
  }

  #append(s: number): void {
    this.#prev[s] = this.#tail;
    this.#next[s] = NONE;
    if (this.#tail !== NONE) this.#next[this.#tail] = s;
    else this.#head = s;
    this.#tail = s;
  }
}
