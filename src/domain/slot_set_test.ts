import assert from "node:assert/strict";
import { SlotSet } from "./slot_set.ts";
import type { Slotted } from "./slot_set.ts";

const member = (name: string) => ({ name, slot: -1 });

Deno.test("SlotSet adds once, deletes by swapping the last member in, and keeps slots true", () => {
  const s = new SlotSet<Slotted & { name: string }>();
  const [a, b, c, d] = ["a", "b", "c", "d"].map(member);
  for (const x of [a, b, c, d, a]) s.add(x);
  assert.equal(s.size, 4);
  assert.ok(s.delete(b));
  assert.ok(!s.delete(b));
  assert.equal(b.slot, -1);
  assert.ok(!s.has(b) && s.has(a) && s.has(c) && s.has(d));
  const seen: string[] = [];
  s.forEach((x) => seen.push(x.name));
  assert.deepEqual(seen.sort(), ["a", "c", "d"]);
  // Every member's slot is where it is.
  s.forEach((x) => {
    assert.ok(x.slot >= 0 && x.slot < s.size);
  });
  for (const x of [a, c, d]) s.delete(x);
  assert.equal(s.size, 0);
  s.add(b);
  assert.equal(b.slot, 0);
});

Deno.test("SlotSet.forEach visits every member once while the callback deletes the one it is given", () => {
  const s = new SlotSet<Slotted & { name: string }>();
  const all = Array.from({ length: 50 }, (_, i) => member(String(i)));
  for (const x of all) s.add(x);
  const seen = new Set<string>();
  s.forEach((x) => {
    assert.ok(!seen.has(x.name), `${x.name} visited twice`);
    seen.add(x.name);
    if (Number(x.name) % 3 === 0) s.delete(x);
  });
  assert.equal(seen.size, 50);
  assert.equal(s.size, 50 - 17);
  let n = 0;
  s.forEach((x) => {
    assert.notEqual(Number(x.name) % 3, 0);
    n++;
  });
  assert.equal(n, 33);
});

Deno.test("SlotSet.forEach skips members deleted ahead of it and does not visit ones added during it", () => {
  const s = new SlotSet<Slotted & { name: string }>();
  const [a, b, c] = ["a", "b", "c"].map(member);
  for (const x of [a, b, c]) s.add(x);
  const seen: string[] = [];
  s.forEach((x) => {
    seen.push(x.name);
    if (x === c) {
      s.delete(a); // not visited yet: skipped
      s.add(member("new"));
    }
  });
  assert.ok(!seen.includes("a") && !seen.includes("new"), seen.join());
  assert.ok(seen.includes("b") && seen.includes("c"));
});
