// The in-memory store behind a route's `cache`: stored responses keyed by request (primary key)
// and by the request headers the response's Vary names (secondary key, RFC 9111 §4.1). Bounded
// by total bytes and by entry count; the least recently used entries go first. Pure: holds data,
// knows no time.

import { varyValue } from "./vary_value.ts";

/** One stored response with what freshness is computed from. */
export interface StoredResponse {
  status: number;
  statusText: string;
  /** Header fields as received, hop-by-hop ones already removed. */
  headers: [string, string][];
  body: Uint8Array<ArrayBuffer>;
  /** When the request that produced it was sent and its head arrived, ms since the epoch. */
  requestTime: number;
  responseTime: number;
  /** Age it had on arrival, ms (RFC 9111 §4.2.3); current age adds the time since responseTime. */
  initialAge: number;
  /** Freshness lifetime, ms. */
  lifetime: number;
  /** Stored, but revalidated before every use (response no-cache). */
  noCache: boolean;
  /** How long past its freshness it may still answer when the upstream fails, ms (0: never). */
  staleIfError: number;
  /** How long past its freshness it may answer while a refresh runs, ms (0: never). */
  staleWhileRevalidate: number;
  /** Never served stale at a client's max-stale (must-revalidate, proxy-revalidate, s-maxage). */
  mustRevalidate: boolean;
  etag: string | null;
  lastModified: string | null;
  /** Tags a purge by tag drops it by (from Surrogate-Key and Cache-Tag; see parseTags). */
  tags?: readonly string[];
}

interface Node {
  key: string;
  primary: string;
  value: StoredResponse;
  size: number;
  prev: Node | null;
  next: Node | null;
  /** The store holding it, and its place in the shared pool's LRU order (with a pool). */
  store: ResponseCache;
  poolPrev: Node | null;
  poolNext: Node | null;
}

/**
 * A byte bound that several stores draw from (the top-level `cache: { max_size }`): one LRU
 * order across them, so the least recently used entry of any route goes first.
 */
export class CachePool {
  maxBytes: number;
  bytes = 0;
  /** Least recently used across the stores, and most. */
  head: Node | null = null;
  tail: Node | null = null;

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }
}

/** Bytes counted per entry beyond its body, headers and key (objects, list links). */
const ENTRY_OVERHEAD = 256;

/** Most tags an entry keeps; those beyond are ignored. */
export const MAX_TAGS = 32;
/** Longest tag kept, in bytes (UTF-8); a longer one is ignored. */
export const MAX_TAG_BYTES = 128;
const ENCODER = new TextEncoder();
/** Bytes counted per tag beyond its text (its place in the entry and in the tag index). */
const TAG_OVERHEAD = 32;

/**
 * The tags of an answer: its `Surrogate-Key` (space-separated, as Fastly and Varnish xkey read
 * it) and `Cache-Tag` (comma-separated, as Cloudflare reads it) fields, without repeats, at most
 * MAX_TAGS of at most MAX_TAG_BYTES each (a longer tag and those past the limit are ignored).
 */
export function parseTags(surrogateKey: string | null, cacheTag: string | null): string[] {
  const out = new Set<string>();
  const add = (t: string) => {
    if (t === "" || out.size >= MAX_TAGS) return;
    if (t.length > MAX_TAG_BYTES || ENCODER.encode(t).byteLength > MAX_TAG_BYTES) return;
    out.add(t);
  };
  // Several field lines arrive joined by ", ": a comma separates Surrogate-Key's keys as well.
  if (surrogateKey !== null) { for (const t of surrogateKey.split(/[\s,]+/)) add(t); }
  if (cacheTag !== null) { for (const t of cacheTag.split(",")) add(t.trim()); }
  return [...out];
}

/** The bytes an entry is charged: body, header text, key, tags and a fixed overhead. */
export function entrySize(key: string, r: StoredResponse): number {
  let n = ENTRY_OVERHEAD + key.length + r.body.byteLength;
  for (const [k, v] of r.headers) n += k.length + v.length + 4;
  for (const t of r.tags ?? []) n += t.length + TAG_OVERHEAD;
  return n;
}

/**
 * The secondary key of a request for the Vary names of a stored response: each name with the
 * request's value (null when absent), normalised where the field's syntax allows (varyValue,
 * RFC 9111 §4.1) so that one answer is not stored again for each spelling of the same request.
 */
export function varyKey(names: readonly string[], get: (name: string) => string | null): string {
  if (names.length === 0) return "";
  let s = names.join(",");
  for (const n of names) {
    const v = varyValue(n, get(n));
    s += v === null ? "\0-" : `\0=${v}`;
  }
  return s;
}

/**
 * Most variants (Vary) kept of one URI; past it its least recently used one goes. An answer with
 * `Vary: User-Agent` or `Cookie` has one per kind of client: unbounded, one page could fill the
 * store and push every other page out (CDNs bound variants per object too).
 */
export const MAX_VARIANTS = 100;

/** Most URIs remembered as invalidated while answers fetched before may still arrive. */
export const INVALIDATED_MAX = 10_000;

/**
 * A key's short stand-in (53 bits, cyrb53) for the maps that remember keys past their requests:
 * a key may be the 64 KiB a request head holds, thousands of them hundreds of MiB. Two keys that
 * share one only lose a little (a fill not stored, a wait not shared).
 */
export function keyHash(s: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** Bounded LRU of stored responses. */
export class ResponseCache {
  readonly maxBytes: number;
  readonly maxEntries: number;
  readonly #entries = new Map<string, Node>();
  /**
   * Per primary key: the Vary names of its newest response and the keys of its variants, least
   * recently used first (MAX_VARIANTS).
   */
  readonly #primaries = new Map<string, { names: string[]; keys: Set<string> }>();
  /** Per tag: the keys of the entries carrying it (entries leave it when they go). */
  readonly #tags = new Map<string, Set<string>>();
  #head: Node | null = null; // least recently used
  #tail: Node | null = null;
  #bytes = 0;
  readonly #pool: CachePool | undefined;
  /** Counts invalidations; an answer is stored only if none of its URI came after its `since`. */
  #epoch = 0;
  /**
   * Per primary key's hash (a key may be kilobytes; two sharing a hash only store less), the epoch
   * of its last invalidation: at most INVALIDATED_MAX, the oldest forgotten into #floor.
   */
  readonly #invalidated = new Map<number, number>();
  /** Answers fetched before this epoch are not stored (a purge of many URIs, or a forgotten one). */
  #floor = 0;

  constructor(o: { maxBytes: number; maxEntries: number; pool?: CachePool }) {
    this.maxBytes = o.maxBytes;
    this.maxEntries = o.maxEntries;
    this.#pool = o.pool;
  }

  /** Drops the least recently used entries of `pool`'s stores until it is within its bound. */
  static trim(pool: CachePool): void {
    while (pool.bytes > pool.maxBytes && pool.head !== null) pool.head.store.#remove(pool.head);
  }

  /** The largest entry it can hold: its own bound, or the shared pool's when smaller. */
  get capacity(): number {
    return Math.min(this.maxBytes, this.#pool?.maxBytes ?? Infinity);
  }

  /** Bytes held (as entrySize counts them). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Entries held. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * The epoch to pass as `since` to `set` for an answer whose request leaves now: an invalidation
   * of its URI after this (a purge, an unsafe request, RFC 9111 §4.4) keeps it from being stored,
   * as it may be what the origin said before the change.
   */
  get epoch(): number {
    return this.#epoch;
  }

  /** The Vary names the newest stored response for `primary` lists, or undefined when none. */
  varyOf(primary: string): readonly string[] | undefined {
    return this.#primaries.get(primary)?.names;
  }

  /** The entry for `primary` and secondary key `vary`, marked most recently used. */
  get(primary: string, vary: string): StoredResponse | undefined {
    const node = this.#entries.get(`${primary}\n${vary}`);
    if (!node) return undefined;
    this.#unlink(node);
    this.#append(node);
    const keys = this.#primaries.get(primary)!.keys;
    if (keys.size > 1) {
      keys.delete(node.key);
      keys.add(node.key);
    }
    return node.value;
  }

  /** The entry for `primary` and `vary`, leaving its place in the LRU order alone. */
  peek(primary: string, vary: string): StoredResponse | undefined {
    return this.#entries.get(`${primary}\n${vary}`)?.value;
  }

  /**
   * Stores `value`, replacing the variant with the same keys, and evicts the least recently used
   * until both bounds hold. Returns false (storing nothing) when the entry alone exceeds the
   * byte bound, or its URI was invalidated after `since` (the `epoch` when its request left).
   */
  set(
    primary: string,
    o: { names: string[]; vary: string; value: StoredResponse; since?: number },
  ): boolean {
    const key = `${primary}\n${o.vary}`;
    const size = entrySize(key, o.value);
    if (size > this.capacity) return false;
    if (
      o.since !== undefined &&
      o.since < Math.max(this.#floor, this.#invalidated.get(keyHash(primary)) ?? 0)
    ) {
      return false;
    }
    const old = this.#entries.get(key);
    if (old) this.#remove(old);
    let p = this.#primaries.get(primary);
    if (!p) this.#primaries.set(primary, p = { names: o.names, keys: new Set() });
    p.names = o.names;
    if (p.keys.size >= MAX_VARIANTS) {
      this.#remove(this.#entries.get(p.keys.values().next().value!)!);
    }
    p.keys.add(key);
    const node: Node = {
      key,
      primary,
      value: o.value,
      size,
      prev: null,
      next: null,
      store: this,
      poolPrev: null,
      poolNext: null,
    };
    this.#entries.set(key, node);
    this.#index(node);
    this.#bytes += size;
    if (this.#pool) this.#pool.bytes += size;
    this.#append(node);
    this.#evict(node);
    return true;
  }

  /**
   * Replaces the stored value of an entry in place (after a 304), keeping its place in the LRU
   * order; one that alone no longer fits the byte bound is dropped, as `set` would refuse it.
   */
  update(primary: string, vary: string, value: StoredResponse): void {
    const node = this.#entries.get(`${primary}\n${vary}`);
    if (!node) return;
    const size = entrySize(node.key, value);
    if (size > this.capacity) {
      this.#remove(node);
      return;
    }
    this.#bytes += size - node.size;
    if (this.#pool) this.#pool.bytes += size - node.size;
    node.size = size;
    this.#unindex(node);
    node.value = value;
    this.#index(node);
    this.#evict(node);
  }

  /** Drops one variant. */
  delete(primary: string, vary: string): void {
    const node = this.#entries.get(`${primary}\n${vary}`);
    if (node) this.#remove(node);
  }

  /** Drops every variant of `primary` (RFC 9111 §4.4: after an unsafe request). */
  invalidate(primary: string): number {
    this.#epoch++;
    const h = keyHash(primary);
    this.#invalidated.delete(h);
    if (this.#invalidated.size >= INVALIDATED_MAX) {
      const [oldest, at] = this.#invalidated.entries().next().value!;
      this.#invalidated.delete(oldest);
      this.#floor = Math.max(this.#floor, at);
    }
    this.#invalidated.set(h, this.#epoch);
    return this.#drop(primary);
  }

  #drop(primary: string): number {
    const p = this.#primaries.get(primary);
    if (!p) return 0;
    let n = 0;
    for (const key of [...p.keys]) {
      const node = this.#entries.get(key);
      if (node) {
        this.#remove(node);
        n++;
      }
    }
    return n;
  }

  /**
   * Drops every variant of every primary key that starts with `prefix` (a purge by URL prefix);
   * returns how many entries went. Walks the keys held, so it costs the size of the store.
   */
  invalidatePrefix(prefix: string): number {
    this.#floor = ++this.#epoch; // in-flight answers under the prefix are not told apart
    let n = 0;
    for (const primary of [...this.#primaries.keys()]) {
      if (primary.startsWith(prefix)) n += this.#drop(primary);
    }
    return n;
  }

  /** Drops every entry carrying one of `tags` (a purge by tag); returns how many went. */
  invalidateTags(tags: readonly string[]): number {
    this.#floor = ++this.#epoch; // the tags of in-flight answers are not known yet
    let n = 0;
    for (const tag of tags) {
      for (const key of [...this.#tags.get(tag) ?? []]) {
        const node = this.#entries.get(key);
        if (node) {
          this.#remove(node);
          n++;
        }
      }
    }
    return n;
  }

  /** Distinct tags indexed (bounded by MAX_TAGS per entry held). */
  get tagCount(): number {
    return this.#tags.size;
  }

  /** Drops everything, and keeps answers fetched before from being stored. */
  clear(): void {
    this.#floor = ++this.#epoch;
    this.#invalidated.clear();
    if (this.#pool) {
      for (const node of this.#entries.values()) this.#poolUnlink(node);
      this.#pool.bytes -= this.#bytes;
    }
    this.#entries.clear();
    this.#primaries.clear();
    this.#tags.clear();
    this.#head = this.#tail = null;
    this.#bytes = 0;
  }

  /**
   * Drops least recently used entries, never `keep`, until both bounds hold, then those least
   * recently used in the shared pool, whichever store holds them, until it holds too.
   */
  #evict(keep: Node): void {
    while (
      (this.#bytes > this.maxBytes || this.#entries.size > this.maxEntries) &&
      this.#head !== null && this.#head !== keep
    ) this.#remove(this.#head);
    const pool = this.#pool;
    if (!pool) return;
    while (pool.bytes > pool.maxBytes && pool.head !== null && pool.head !== keep) {
      pool.head.store.#remove(pool.head);
    }
  }

  #remove(node: Node): void {
    this.#unlink(node);
    if (this.#pool) {
      this.#poolUnlink(node);
      this.#pool.bytes -= node.size;
    }
    this.#entries.delete(node.key);
    this.#unindex(node);
    this.#bytes -= node.size;
    const p = this.#primaries.get(node.primary);
    if (p) {
      p.keys.delete(node.key);
      if (p.keys.size === 0) this.#primaries.delete(node.primary);
    }
  }

  #index(node: Node): void {
    for (const t of node.value.tags ?? []) {
      let keys = this.#tags.get(t);
      if (!keys) this.#tags.set(t, keys = new Set());
      keys.add(node.key);
    }
  }

  #unindex(node: Node): void {
    for (const t of node.value.tags ?? []) {
      const keys = this.#tags.get(t);
      if (!keys) continue;
      keys.delete(node.key);
      if (keys.size === 0) this.#tags.delete(t);
    }
  }

  #unlink(node: Node): void {
    if (node.prev) node.prev.next = node.next;
    else this.#head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.#tail = node.prev;
    node.prev = node.next = null;
  }

  #append(node: Node): void {
    node.prev = this.#tail;
    if (this.#tail) this.#tail.next = node;
    else this.#head = node;
    this.#tail = node;
    const pool = this.#pool;
    if (!pool) return;
    // Used now: to the pool's most recent end as well.
    this.#poolUnlink(node);
    node.poolPrev = pool.tail;
    if (pool.tail) pool.tail.poolNext = node;
    else pool.head = node;
    pool.tail = node;
  }

  /** Takes a node out of the pool's order, when it is in it (its bytes are counted apart). */
  #poolUnlink(node: Node): void {
    const pool = this.#pool!;
    if (node.poolPrev) node.poolPrev.poolNext = node.poolNext;
    else if (pool.head === node) pool.head = node.poolNext;
    else return; // not in the pool's order
    if (node.poolNext) node.poolNext.poolPrev = node.poolPrev;
    else pool.tail = node.poolPrev;
    node.poolPrev = node.poolNext = null;
  }
}
