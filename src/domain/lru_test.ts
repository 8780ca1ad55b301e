import assert from "node:assert/strict";
import { LruMap } from "./lru.ts";

Deno.test("LruMap never holds more than maxEntries and evicts the least recently used", () => {
  const m = new LruMap<number>({ maxEntries: 3 });
  for (const k of ["a", "b", "c"]) m.set(k, 1, { now: 0, expiresAt: 100 });
  m.set("a", 2, { now: 1, expiresAt: 100 }); // a becomes most recent
  m.set("d", 1, { now: 2, expiresAt: 100 }); // evicts b
  assert.equal(m.size, 3);
  assert.equal(m.get("b", 3), undefined);
  assert.equal(m.get("a", 3), 2);
  assert.equal(m.evicted, 1);
  for (let i = 0; i < 10_000; i++) m.set(`k${i}`, i, { now: 3, expiresAt: 100 });
  assert.equal(m.size, 3);
  assert.equal(m.get("k9999", 4), 9_999);
});

Deno.test("LruMap drops expired entries on read and sweeps idle ones on write", () => {
  const m = new LruMap<string>({ maxEntries: 100 });
  m.set("old1", "x", { now: 0, expiresAt: 10 });
  m.set("old2", "x", { now: 0, expiresAt: 10 });
  m.set("live", "y", { now: 0, expiresAt: 1_000 });
  assert.equal(m.get("old1", 10), undefined);
  assert.equal(m.size, 2);
  m.set("new", "z", { now: 20, expiresAt: 1_000 }); // sweeps old2 from the front
  assert.equal(m.size, 2);
  assert.equal(m.get("live", 20), "y");
  assert.equal(m.evicted, 0);
});

Deno.test("LruMap sweep stops at the first live entry and respects its budget", () => {
  const m = new LruMap<number>({ maxEntries: 100, sweepBudget: 2 });
  for (let i = 0; i < 5; i++) m.set(`e${i}`, i, { now: 0, expiresAt: 5 });
  m.set("live", 0, { now: 0, expiresAt: 50 });
  m.set("w", 0, { now: 6, expiresAt: 50 }); // budget 2: drops e0, e1
  assert.equal(m.size, 5);
  assert.equal(m.sweep(6), 3);
  assert.equal(m.size, 2);
});

Deno.test("LruMap rejects a zero bound", () => {
  assert.throws(() => new LruMap({ maxEntries: 0 }), RangeError);
});
