// The stores of the routes' response caches, kept across reloads: a route whose config did not
// change keeps its entries; a changed route (new target, rules or cache settings) starts empty,
// since what it stored may no longer be what its upstream would answer. Bounded by the routes.

import type { CacheConfig, Config } from "../config/schema.ts";
import { CachePool, ResponseCache } from "../domain/response_cache.ts";
import type { CachePolicy, Fill } from "./cache.ts";

/** Defaults of `cache: true` (the schema's object defaults). */
const DEFAULTS = { max_size: 64 * 1024 * 1024, max_entries: 10_000, max_object_size: 1024 * 1024 };

/** The route stores, by route id, each with the config it was made for. */
export class CacheStores {
  readonly #stores = new Map<
    string,
    {
      fingerprint: string;
      store: ResponseCache;
      filling: Map<string, Fill>;
      passes: Map<number, number>;
      refreshing: Set<string>;
      refreshBackoff: Map<number, number>;
      readAhead: { bytes: number };
      inFlight: { bytes: number };
      pool: CachePool | null;
      /** The store this one replaced, still serving until the new snapshot does (retain). */
      replaced?: ResponseCache;
    }
  >();
  /** The top-level `cache.max_size` every store draws from, or null without one. */
  #pool: CachePool | null = null;

  /**
   * Sets the bound all stores share (the top-level `cache.max_size`; undefined: none). A new or
   * removed bound gives every caching route a new, empty store; a changed one applies (and
   * evicts) once the snapshot built with it serves (retain): a reload that fails after the build
   * leaves the serving stores bound as they were.
   */
  share(maxBytes: number | undefined): void {
    if (maxBytes === undefined) this.#pool = null;
    else if (this.#pool === null) this.#pool = new CachePool(maxBytes);
  }

  /** The policy of a route's `cache` (null without one), reusing the store of an unchanged route. */
  policyFor(id: string, route: { cache?: CacheConfig }): CachePolicy | null {
    const c = route.cache;
    if (c === undefined || c === false) return null;
    const o = c === true ? DEFAULTS : c;
    // The addresses `discover` finds are not the route's settings: their change keeps the store.
    const fingerprint = JSON.stringify(
      "discover" in route && route.discover ? { ...route, targets: undefined } : route,
    );
    let held = this.#stores.get(id);
    if (!held || held.fingerprint !== fingerprint || held.pool !== this.#pool) {
      // The old store is left as it is until the new snapshot serves (retain empties it then):
      // the snapshot that serves it may stay (a reload that fails after this). After such a
      // failure the store replaced first is the one serving; the one in between never served.
      const pool = this.#pool ?? undefined;
      held = {
        replaced: held && (held.replaced ?? held.store),
        fingerprint,
        pool: this.#pool,
        store: new ResponseCache({ maxBytes: o.max_size, maxEntries: o.max_entries, pool }),
        filling: new Map(),
        passes: new Map(),
        refreshing: new Set(),
        refreshBackoff: new Map(),
        readAhead: { bytes: 0 },
        inFlight: { bytes: 0 },
      };
      this.#stores.set(id, held);
    }
    const policy: CachePolicy = {
      store: held.store,
      filling: held.filling,
      passes: held.passes,
      refreshing: held.refreshing,
      refreshBackoff: held.refreshBackoff,
      readAhead: held.readAhead,
      inFlight: held.inFlight,
      maxObjectSize: o.max_object_size,
    };
    if (c !== true && c.default_ttl !== undefined) policy.defaultTtl = c.default_ttl;
    if (c !== true && c.stale_while_revalidate !== undefined) {
      policy.defaultSwr = c.stale_while_revalidate;
    }
    return policy;
  }

  /**
   * Once `config`'s snapshot serves: applies its shared bound, empties the stores changed routes
   * replaced (in a shared pool their entries, reachable no more, would otherwise hold room that
   * live ones need until they were the least recently used) and drops the stores of routes it no
   * longer caches.
   */
  retain(config: Config): void {
    const bound = config.cache?.max_size;
    if (this.#pool !== null && bound !== undefined && this.#pool.maxBytes !== bound) {
      this.#pool.maxBytes = bound;
      ResponseCache.trim(this.#pool);
    }
    for (const [id, held] of this.#stores) {
      held.replaced?.clear();
      held.replaced = undefined;
      const route = config.routes[id];
      if (!route || !("cache" in route) || !route.cache) {
        held.store.clear();
        this.#stores.delete(id);
      }
    }
  }

  /** Bytes and entries held per route id (for metrics). */
  sizes(): Record<string, { bytes: number; entries: number }> {
    const out: Record<string, { bytes: number; entries: number }> = {};
    for (const [id, { store }] of this.#stores) {
      out[id] = { bytes: store.bytes, entries: store.size };
    }
    return out;
  }
}
