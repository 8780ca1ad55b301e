// A bounded map with least-recently-used eviction and per-entry expiry, for per-client state that
// grows with traffic. Pure: time is passed in. A Map finds entries; an intrusive doubly-linked
// list keeps recency (head = least recently used), so get, set, evict and each sweep step are
// O(1). (Using Map insertion order alone degrades: V8 leaves deleted slots at the front that
// every "oldest entry" lookup must skip.)

interface Node<V> {
  key: string;
  value: V;
  expiresAt: number;
  prev: Node<V> | null;
  next: Node<V> | null;
}

/** Options for LruMap. */
export interface LruOptions {
  /** Most entries kept; the least recently used is dropped beyond it. */
  maxEntries: number;
  /** Expired entries checked (and dropped) at the front per write; bounds the work per call. */
  sweepBudget?: number;
}

/** Map<string, V> with a hard size bound, LRU eviction and lazy expiry. */
export class LruMap<V> {
  readonly #map = new Map<string, Node<V>>();
  readonly #max: number;
  readonly #budget: number;
  #head: Node<V> | null = null;
  #tail: Node<V> | null = null;
  #evicted = 0;

  constructor(opts: LruOptions) {
    if (!(opts.maxEntries >= 1)) throw new RangeError("LruMap maxEntries must be at least 1");
    this.#max = Math.floor(opts.maxEntries);
    this.#budget = opts.sweepBudget ?? 8;
  }

  /** The live value for `key`, or undefined when absent or expired (expired ones are dropped). */
  get(key: string, now: number): V | undefined {
    const node = this.#map.get(key);
    if (!node) return undefined;
    if (node.expiresAt <= now) {
      this.#remove(node);
      return undefined;
    }
    return node.value;
  }

  /** Stores `value` until `expiresAt` as the most recently used entry; evicts to stay bounded. */
  set(key: string, value: V, opts: { now: number; expiresAt: number }): void {
    let node = this.#map.get(key);
    if (node) {
      node.value = value;
      node.expiresAt = opts.expiresAt;
      this.#unlink(node);
    } else {
      node = { key, value, expiresAt: opts.expiresAt, prev: null, next: null };
      this.#map.set(key, node);
    }
    this.#append(node);
    this.sweep(opts.now, this.#budget);
    while (this.#map.size > this.#max && this.#head) {
      this.#remove(this.#head);
      this.#evicted++;
    }
  }

  /** Removes `key`. */
  delete(key: string): boolean {
    const node = this.#map.get(key);
    if (!node) return false;
    this.#remove(node);
    return true;
  }

  /**
   * Drops expired entries from the least recently used end, stopping at the first live one or
   * after `budget` checks. Returns how many were dropped.
   */
  sweep(now: number, budget = Infinity): number {
    let dropped = 0;
    while (this.#head && dropped < budget && this.#head.expiresAt <= now) {
      this.#remove(this.#head);
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
    this.#head = this.#tail = null;
  }

  #remove(node: Node<V>): void {
    this.#unlink(node);
    this.#map.delete(node.key);
  }

  #unlink(node: Node<V>): void {
    if (node.prev) node.prev.next = node.next;
    else this.#head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.#tail = node.prev;
    node.prev = node.next = null;
  }

  #append(node: Node<V>): void {
    node.prev = this.#tail;
    if (this.#tail) this.#tail.next = node;
    else this.#head = node;
    this.#tail = node;
  }
}
