import assert from "node:assert/strict";
import { StateLru } from "./lru.ts";

const st = (t: number) => ({ t, n: t * 2, p: t * 3 });

Deno.test("StateLru never holds more than maxEntries and evicts the least recently used", () => {
  const m = new StateLru({ maxEntries: 3 });
  for (const k of ["a", "b", "c"]) m.set(k, st(1), { now: 0, expiresAt: 100 });
  m.set("a", st(2), { now: 1, expiresAt: 100 }); // a becomes most recent
  m.set("d", st(1), { now: 2, expiresAt: 100 }); // evicts b
  assert.equal(m.size, 3);
  assert.equal(m.get("b", 3), undefined);
  assert.deepEqual(m.get("a", 3), st(2));
  assert.equal(m.evicted, 1);
  for (let i = 0; i < 10_000; i++) m.set(`k${i}`, st(i), { now: 3, expiresAt: 100 });
  assert.equal(m.size, 3);
  assert.deepEqual(m.get("k9999", 4), st(9_999));
  assert.deepEqual(m.get("k9997", 4), st(9_997));
  assert.equal(m.get("k9996", 4), undefined);
});

Deno.test("StateLru drops expired entries on read and sweeps idle ones on write", () => {
  const m = new StateLru({ maxEntries: 100 });
  m.set("old1", st(1), { now: 0, expiresAt: 10 });
  m.set("old2", st(1), { now: 0, expiresAt: 10 });
  m.set("live", st(5), { now: 0, expiresAt: 1_000 });
  assert.equal(m.get("old1", 10), undefined);
  assert.equal(m.size, 2);
  m.set("new", st(7), { now: 20, expiresAt: 1_000 }); // sweeps old2 from the LRU end
  assert.equal(m.size, 2);
  assert.deepEqual(m.get("live", 20), st(5));
  assert.equal(m.evicted, 0);
});

Deno.test("StateLru sweep stops at the first live entry and respects its budget", () => {
  const m = new StateLru({ maxEntries: 100, sweepBudget: 2 });
  for (let i = 0; i < 5; i++) m.set(`e${i}`, st(i), { now: 0, expiresAt: 5 });
  m.set("live", st(0), { now: 0, expiresAt: 50 });
  m.set("w", st(0), { now: 6, expiresAt: 50 }); // budget 2: drops e0, e1
  assert.equal(m.size, 5);
  assert.equal(m.sweep(6), 3);
  assert.equal(m.size, 2);
});

Deno.test("StateLru reuses freed slots and keeps the recency order across growth", () => {
  const m = new StateLru({ maxEntries: 1_000 });
  for (let i = 0; i < 500; i++) m.set(`k${i}`, st(i), { now: 0, expiresAt: 10 + i });
  for (let i = 0; i < 500; i += 2) assert.equal(m.delete(`k${i}`), true);
  for (let i = 0; i < 700; i++) m.set(`n${i}`, st(i), { now: 0, expiresAt: 10_000 });
  assert.equal(m.size, 950);
  assert.equal(m.sweep(1_000), 250); // the odd k* expired, all at the LRU end
  assert.equal(m.size, 700);
  assert.deepEqual(m.get("n0", 1_000), st(0));
  assert.equal(m.delete("missing"), false);
});

Deno.test("StateLru rejects a zero bound", () => {
  assert.throws(() => new StateLru({ maxEntries: 0 }), RangeError);
});

Deno.test("StateLru evicts, near the LRU end, an expired entry or the one soonest back to full quota", () => {
  const m = new StateLru({ maxEntries: 3 });
  m.set("drained", st(1), { now: 0, expiresAt: 1_000 });
  m.set("a", st(2), { now: 0, expiresAt: 10 });
  m.set("b", st(3), { now: 0, expiresAt: 10 });
  // Full, least recent entry live, `a` expired right behind it: `a` goes, not `drained`.
  m.set("c", st(4), { now: 20, expiresAt: 500 });
  assert.deepEqual(m.get("drained", 20), st(1));
  assert.equal(m.evicted, 0);
  // A flood of keys that each owe less than the drained client: it keeps its state.
  for (let i = 0; i < 1_000; i++) m.set(`k${i}`, st(i), { now: 21, expiresAt: 600 });
  assert.deepEqual(m.get("drained", 21), st(1));
  assert.equal(m.size, 3);
  assert.deepEqual(m.get("k999", 21), st(999));
});
