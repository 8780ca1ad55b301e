// The in-memory RateLimitStore: one bounded LRU map of client states per limiter id. The server
// keeps one instance across reloads, so a limit that did not change keeps its counters, and
// calls retain() after each reload to drop limiters that no longer exist.

import { decide } from "../domain/rate_limit.ts";
import type { RateLimitDecision } from "../domain/rate_limit.ts";
import { StateLru } from "../domain/lru.ts";
import type { RateLimitQuery, RateLimitStore } from "../ports.ts";

/** The memory store plus the hooks the composition root and tests use. */
export interface MemoryRateLimitStore extends RateLimitStore {
  /** Synchronous twin of consume (the async one only wraps it). */
  consumeSync(key: string, query: RateLimitQuery): RateLimitDecision;
  /** Forgets every limiter whose id is not in `ids` (after a reload). */
  retain(ids: ReadonlySet<string>): void;
  /** Client keys currently held for a limiter (0 when unknown). */
  keyCount(limiter: string): number;
  /** Limiters currently held. */
  readonly limiterCount: number;
}

/** Creates an empty in-memory store. */
export function createMemoryStore(): MemoryRateLimitStore {
  const limiters = new Map<string, { maxKeys: number; keys: StateLru }>();

  const mapFor = (q: RateLimitQuery): StateLru => {
    let entry = limiters.get(q.limiter);
    if (!entry || entry.maxKeys !== q.maxKeys) {
      const keys = new StateLru({ maxEntries: q.maxKeys });
      // A new bound (max_keys) keeps the counters, the newest when it shrinks: only a change of
      // the limit's shape (another limiter id) starts them afresh.
      for (const e of entry?.keys.entries() ?? []) {
        if (e.expiresAt > q.now) keys.set(e.key, e.state, { now: q.now, expiresAt: e.expiresAt });
      }
      entry = { maxKeys: q.maxKeys, keys };
      limiters.set(q.limiter, entry);
    }
    return entry.keys;
  };

  const consumeSync = (key: string, q: RateLimitQuery): RateLimitDecision => {
    const keys = mapFor(q);
    const step = decide(q.policy, keys.get(key, q.now), q.now);
    if (step.expiresAt > q.now) {
      keys.set(key, step.state, { now: q.now, expiresAt: step.expiresAt });
    } else keys.delete(key);
    return {
      allowed: step.allowed,
      remaining: step.remaining,
      resetMs: step.resetMs,
      retryAfterMs: step.retryAfterMs,
    };
  };

  return {
    consumeSync,
    consume(key, q) {
      try {
        return Promise.resolve(consumeSync(key, q));
      } catch (err) {
        return Promise.reject(err);
      }
    },
    retain(ids) {
      for (const id of limiters.keys()) if (!ids.has(id)) limiters.delete(id);
    },
    keyCount(limiter) {
      return limiters.get(limiter)?.keys.size ?? 0;
    },
    get limiterCount() {
      return limiters.size;
    },
  };
}
