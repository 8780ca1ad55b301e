import assert from "node:assert/strict";
import { interopTest } from "../../tests/_harness.ts";
import { startRedis } from "../../tests/_redis.ts";
import { createRateLimitStores, limiterIds } from "./rate_limit_stores.ts";
import { RateLimitStore } from "../config/schema.ts";
import { policyOf } from "../domain/rate_limit.ts";

const query = (limiter: string) => ({
  limiter,
  policy: policyOf("fixed_window", { requests: 1, periodMs: 86_400_000 }),
  now: Date.now(),
  maxKeys: 10,
});

interopTest(
  "createRateLimitStores switches between memory and Redis on configure, keeping memory state",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const stores = createRateLimitStores();
    try {
      const memory = RateLimitStore.parse({});
      const shared = RateLimitStore.parse({ type: "redis", url: redis.url, timeout: "2s" });
      const ids = new Set(["/a#1"]);
      await stores.configure(memory, ids);
      assert.equal((await stores.consume("k", query("/a#1"))).allowed, true);
      assert.equal((await stores.consume("k", query("/a#1"))).allowed, false);

      await stores.configure(shared, ids); // counters now come from Redis (empty)
      assert.equal((await stores.consume("k", query("/a#1"))).allowed, true);
      await stores.configure({ ...shared }, ids); // same settings: same connection, same state
      assert.equal((await stores.consume("k", query("/a#1"))).allowed, false);

      await stores.configure(memory, ids); // back to memory: its counters were kept
      assert.equal((await stores.consume("k", query("/a#1"))).allowed, false);
      await stores.configure(memory, new Set()); // the limiter left the config
      assert.equal(stores.memory.limiterCount, 0);
    } finally {
      await stores.close();
    }
  },
);

Deno.test("limiterIds collects the ids of routes that have a rate limit", () => {
  const ids = limiterIds([
    { rateLimits: [{ id: "/a#1" }] },
    { rateLimits: [] },
    { rateLimits: [{ id: "/b#2" }, { id: "/b#3" }] },
  ]);
  assert.deepEqual([...ids], ["/a#1", "/b#2", "/b#3"]);
});

interopTest(
  "createRateLimitStores: decisions under way on a Redis store a reload replaces still complete",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const stores = createRateLimitStores();
    try {
      const ids = new Set(["/a#1"]);
      const shared = (timeout: string) =>
        RateLimitStore.parse({ type: "redis", url: redis.url, timeout, on_error: "deny" });
      await stores.configure(shared("2s"), ids);
      // Still connecting: these wait for the first connection of a store about to be replaced.
      const q = { ...query("/a#1"), maxKeys: 100 };
      const pending = Array.from({ length: 20 }, (_, i) => stores.consume(`k${i}`, q));
      await stores.configure(shared("3s"), ids);
      await stores.configure(shared("4s"), ids);
      const settled = await Promise.allSettled(pending);
      assert.deepEqual(
        settled.map((r) => r.status === "fulfilled" ? r.value.allowed : String(r.reason)),
        Array(20).fill(true),
      );
      assert.equal((await stores.consume("k0", q)).allowed, false); // the same Redis counters
    } finally {
      await stores.close();
    }
  },
);

Deno.test("createRateLimitStores: overlapping configure() calls apply in call order", async () => {
  const stores = createRateLimitStores();
  try {
    const ids = new Set<string>();
    const memory = RateLimitStore.parse({});
    const redis = RateLimitStore.parse({ type: "redis", url: "redis://127.0.0.1:1" });
    // The first still loads the Redis module when the second (memory) comes: the second is
    // the config now serving, and must win (the first used to install Redis after it).
    const first = stores.configure(redis, ids);
    await stores.configure(memory, ids);
    await first;
    assert.equal(stores.redis, false);
  } finally {
    await stores.close();
  }
});

Deno.test("createRateLimitStores: a configure() under way when close() is called opens nothing", async () => {
  const stores = createRateLimitStores();
  const pending = stores.configure(
    RateLimitStore.parse({ type: "redis", url: "redis://127.0.0.1:1" }),
    new Set(),
  );
  await stores.close();
  await pending.catch(() => {});
  // A Redis store opened after close() kept its connections (and the process) alive: the
  // test's resource sanitizer fails on them.
  assert.equal(stores.redis, false);
});
