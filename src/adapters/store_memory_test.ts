import assert from "node:assert/strict";
import { createMemoryStore } from "./store_memory.ts";
import { policyOf } from "../domain/rate_limit.ts";
import type { RateLimitQuery } from "../ports.ts";

const q = (now: number, over: Partial<RateLimitQuery> = {}): RateLimitQuery => ({
  limiter: "/api#1",
  policy: policyOf("fixed_window", { requests: 2, periodMs: 1_000 }),
  now,
  maxKeys: 1_000,
  ...over,
});

Deno.test("createMemoryStore keeps separate counters per key and per limiter", async () => {
  const s = createMemoryStore();
  assert.equal((await s.consume("a", q(0))).allowed, true);
  assert.equal((await s.consume("a", q(0))).allowed, true);
  assert.equal((await s.consume("a", q(0))).allowed, false);
  assert.equal((await s.consume("b", q(0))).allowed, true);
  assert.equal((await s.consume("a", q(0, { limiter: "/other#2" }))).allowed, true);
  assert.equal(s.limiterCount, 2);
});

Deno.test("createMemoryStore: a flood of distinct keys never exceeds max_keys", () => {
  const s = createMemoryStore();
  const policy = policyOf("token_bucket", { requests: 10, periodMs: 60_000 });
  for (let i = 0; i < 50_000; i++) s.consumeSync(`ip:${i}`, q(i, { policy, maxKeys: 1_000 }));
  assert.equal(s.keyCount("/api#1"), 1_000);
});

Deno.test("createMemoryStore drops idle keys once their state has expired", () => {
  const s = createMemoryStore();
  for (let i = 0; i < 100; i++) s.consumeSync(`k${i}`, q(0));
  assert.equal(s.keyCount("/api#1"), 100);
  // Window [0,1000) ended: the next writes sweep the expired keys from the LRU end.
  for (let i = 0; i < 20; i++) s.consumeSync("fresh", q(1_000 + i));
  assert.equal(s.keyCount("/api#1"), 1);
});

Deno.test("createMemoryStore.retain forgets limiters that left the config", () => {
  const s = createMemoryStore();
  s.consumeSync("a", q(0));
  s.consumeSync("a", q(0, { limiter: "/gone#9" }));
  s.retain(new Set(["/api#1"]));
  assert.equal(s.limiterCount, 1);
  assert.equal(s.keyCount("/gone#9"), 0);
  assert.equal(s.keyCount("/api#1"), 1);
});

Deno.test("createMemoryStore keeps the counters when max_keys changes", () => {
  const s = createMemoryStore();
  assert.equal(s.consumeSync("ip:1", q(0)).allowed, true);
  assert.equal(s.consumeSync("ip:1", q(1)).allowed, true);
  assert.equal(s.consumeSync("ip:1", q(2)).allowed, false);
  // A reload raises the bound: the client at its limit stays there.
  assert.equal(s.consumeSync("ip:1", q(3, { maxKeys: 2_000 })).allowed, false);
  // Shrunk below the number of keys: the most recently used ones are kept.
  for (let i = 2; i <= 5; i++) s.consumeSync(`ip:${i}`, q(4, { maxKeys: 2_000 }));
  assert.equal(s.consumeSync("ip:5", q(5, { maxKeys: 1 })).remaining, 0, "ip:5 kept its count");
});
