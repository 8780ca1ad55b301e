// The rate-limit store the server owns across reloads: the in-memory store (always kept, so
// unchanged limits keep their counters) or Redis when `rate_limit_store.type: redis`. A reload
// calls configure(), which swaps the Redis connection only when its settings changed.

import type { Config } from "../config/schema.ts";
import type { RateLimitQuery, RateLimitStore } from "../ports.ts";
import type { RateLimitDecision } from "../domain/rate_limit.ts";
import { createMemoryStore } from "./store_memory.ts";
import type { MemoryRateLimitStore } from "./store_memory.ts";
// ioredis adds ~30 MB of resident memory: store_redis.ts is imported only when Redis is used.
import type { RedisRateLimitStore } from "./store_redis.ts";

type StoreConfig = Config["rate_limit_store"];

/** The server's store: delegates to memory or Redis as configured. */
export interface RateLimitStores extends RateLimitStore {
  /** Applies `rate_limit_store` and forgets memory limiters whose ids are not in `ids`. */
  configure(cfg: StoreConfig, ids: ReadonlySet<string>): Promise<void>;
  close(): Promise<void>;
  readonly memory: MemoryRateLimitStore;
  /** True while decisions go to Redis (the memory store then only keeps counters for later). */
  readonly redis: boolean;
}

/** The limiter ids a config's snapshot uses (for configure's `ids`). */
export function limiterIds(routes: Iterable<{ rateLimits: { id: string }[] }>): Set<string> {
  const ids = new Set<string>();
  for (const r of routes) for (const l of r.rateLimits) ids.add(l.id);
  return ids;
}

/** Client keys the in-memory limiter holds per route id, for routes with limits (its memory use). */
export function keysPerRoute(
  stores: RateLimitStores,
  routes: Iterable<{ id: string; rateLimits: { id: string }[] }>,
): Record<string, number> {
  const out: Record<string, number> = {};
  // With Redis the keys live there: a count of 0 here would read as no clients.
  if (stores.redis) return out;
  for (const r of routes) {
    if (r.rateLimits.length === 0) continue;
    out[r.id] = r.rateLimits.reduce((n, l) => n + stores.memory.keyCount(l.id), 0);
  }
  return out;
}

/** A Redis store and the decisions under way on it (a replaced one closes when they are done). */
interface RedisEntry {
  sig: string;
  store: RedisRateLimitStore;
  inflight: number;
}

/** Creates the store holder; call configure() before serving. */
export function createRateLimitStores(): RateLimitStores {
  const memory = createMemoryStore();
  let redis: RedisEntry | null = null;
  // Replaced by a reload while decisions were under way on them: closed once those are done (a
  // decision waiting for its connection failed when its store closed under it).
  const retiring = new Set<RedisEntry>();

  const closeEntry = (e: RedisEntry): Promise<void> => {
    retiring.delete(e);
    return e.store.close();
  };
  const retire = (e: RedisEntry | null): Promise<void> => {
    if (!e) return Promise.resolve();
    if (e.inflight === 0) return closeEntry(e);
    retiring.add(e);
    return Promise.resolve();
  };

  // configure() calls, chained; close() sets `closed` (a configure after it opens nothing).
  let queue: Promise<void> = Promise.resolve();
  let closed = false;
  const apply = async (cfg: StoreConfig, ids: ReadonlySet<string>): Promise<void> => {
    memory.retain(ids);
    if (closed || cfg.type === "memory" || !cfg.url) {
      const old = redis;
      redis = null;
      await retire(old);
      return;
    }
    const sig = JSON.stringify([
      cfg.url,
      cfg.password_env,
      cfg.prefix,
      cfg.timeout,
      cfg.pool_size,
    ]);
    if (redis?.sig === sig) return;
    const { createRedisStore, passwordFromEnv } = await import("./store_redis.ts");
    if (closed) return;
    const old = redis;
    redis = {
      sig,
      store: createRedisStore({
        url: cfg.url,
        ...passwordFromEnv(cfg.password_env),
        prefix: cfg.prefix,
        timeoutMs: cfg.timeout,
        poolSize: cfg.pool_size,
      }),
      inflight: 0,
    };
    await retire(old);
  };

  return {
    memory,
    get redis() {
      return redis !== null;
    },
    consume(key: string, q: RateLimitQuery): Promise<RateLimitDecision> {
      const e = redis;
      if (!e) return memory.consume(key, q);
      e.inflight++;
      return e.store.consume(key, q).finally(() => {
        if (--e.inflight === 0 && retiring.has(e)) void closeEntry(e);
      });
    },
    configure(cfg, ids) {
      // One at a time, in call order: the one called last is the config serving (the Redis
      // module's import let an earlier call finish after a later one, and install its store).
      const run = queue.then(() => apply(cfg, ids));
      queue = run.catch(() => {});
      return run;
    },
    async close() {
      closed = true;
      await queue;
      const all = [...retiring, ...(redis ? [redis] : [])];
      redis = null;
      await Promise.all(all.map(closeEntry));
    },
  };
}
