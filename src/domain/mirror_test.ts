import assert from "node:assert/strict";
import { BodyCapture, MirrorSlots, sampled } from "./mirror.ts";

Deno.test("sampled picks a draw below the percentage, all at 100 and none at 0", () => {
  assert.equal(sampled(10, 0.0999), true);
  assert.equal(sampled(10, 0.1), false);
  assert.equal(sampled(0.5, 0.004), true);
  assert.equal(sampled(0.5, 0.005), false);
  assert.equal(sampled(100, 0.99999), true);
  assert.equal(sampled(0, 0), false);
  // Over many even draws the share is the percentage.
  let n = 0;
  for (let i = 0; i < 1000; i++) if (sampled(25, i / 1000)) n++;
  assert.equal(n, 250);
});

Deno.test("MirrorSlots caps copies per route and forgets a route with none in flight", () => {
  const s = new MirrorSlots();
  assert.ok(s.take("/a", 2));
  assert.ok(s.take("/a", 2));
  assert.equal(s.take("/a", 2), false);
  assert.ok(s.take("/b", 2), "routes are counted apart");
  s.release("/a");
  assert.ok(s.take("/a", 2));
  assert.equal(s.count("/a"), 2);
  for (let i = 0; i < 2; i++) s.release("/a");
  s.release("/b");
  assert.equal(s.routes, 0);
  s.release("/c"); // never taken: no negative count
  assert.equal(s.count("/c"), 0);
  assert.equal(s.routes, 0);
});

Deno.test("BodyCapture copies chunks up to its cap, then lets them go", () => {
  const c = new BodyCapture(10);
  const chunk = new Uint8Array([1, 2, 3, 4]);
  assert.ok(c.push(chunk));
  chunk.fill(9); // a copy: later changes to the chunk do not show
  assert.ok(c.push(new Uint8Array([5, 6, 7, 8, 9, 10])));
  assert.deepEqual([...c.bytes()!], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(c.push(new Uint8Array([11])), false);
  assert.equal(c.over, true);
  assert.equal(c.bytes(), null);
  assert.equal(c.push(new Uint8Array(0)), false, "over stays over");
});

Deno.test("BodyCapture grows from a declared length or 16 KiB, never past its cap", () => {
  const big = new BodyCapture(100_000);
  for (let i = 0; i < 99; i++) assert.ok(big.push(new Uint8Array(1000).fill(i)));
  const bytes = big.bytes()!;
  assert.equal(bytes.byteLength, 99_000);
  assert.equal(bytes[98_999], 98);
  assert.ok(bytes.buffer.byteLength <= 100_000);
  const empty = new BodyCapture(0, 0);
  assert.equal(empty.bytes()!.byteLength, 0);
  assert.equal(empty.push(new Uint8Array(1)), false);
  const exact = new BodyCapture(64, 5);
  assert.ok(exact.push(new Uint8Array(5)));
  assert.equal(exact.bytes()!.buffer.byteLength, 5);
});
