import assert from "node:assert/strict";
import { ReplayTally } from "./replay_tally.ts";

Deno.test("ReplayTally: groups past the bound are counted, not kept", () => {
  const t = new ReplayTally({ maxGroups: 2, samples: 2 });
  for (let i = 0; i < 5; i++) {
    t.add({ from: `a${i}`, to: "b", sample: `s${i}` }, { notFound: false, doubts: [] });
  }
  t.add({ from: "a0", to: "b", sample: "again" }, { notFound: false, doubts: [] });
  t.add({ from: "a0", to: "b", sample: "third" }, { notFound: false, doubts: [] });
  assert.equal(t.changed, 7);
  assert.equal(t.otherChanges, 3);
  assert.deepEqual(t.groups().map((g) => [g.from, g.count, g.samples]), [
    ["a0", 3, ["s0", "again"]],
    ["a1", 1, ["s1"]],
  ]);
});
