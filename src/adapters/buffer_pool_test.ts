import assert from "node:assert/strict";
import { BufferPool } from "./buffer_pool.ts";

Deno.test("BufferPool reuses what it is given, up to its bound, and only buffers of its size", () => {
  const pool = new BufferPool(64, 2);
  const a = pool.take();
  const b = pool.take();
  const c = pool.take();
  assert.equal(a.byteLength, 64);
  assert.notEqual(a, b);
  pool.give(a);
  pool.give(a); // twice: kept once, or two answers would share it
  assert.equal(pool.kept, 1);
  pool.give(new ArrayBuffer(32)); // not its size
  assert.equal(pool.kept, 1);
  pool.give(b);
  pool.give(c); // past the bound: left to the GC
  assert.equal(pool.kept, 2);
  const again = [pool.take(), pool.take()];
  assert.ok(again.includes(a) && again.includes(b));
  assert.equal(pool.kept, 0);
  assert.ok(![a, b, c].includes(pool.take()));
});
