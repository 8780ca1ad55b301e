// Differential test of Prox's own HTTP/1.1 engine against Deno.serve (README "Prox's own HTTP/1.1
// engine"): the same bytes to two Prox instances on one config, one per engine, and what the
// client got and what the upstream saw compared (_h1_diff.ts). The fixed corpus and a few hundred
// seeded random inputs run here; `deno run -A bench/h1_engine_diff.ts SEED COUNT` runs more.
import assert from "node:assert/strict";
import { compare, diffRig } from "./_h1_diff.ts";
import type { Comparison } from "./_h1_diff.ts";
import { corpus } from "./_h1_diff_corpus.ts";
import { KNOWN, knownRewrites } from "./_h1_diff_known.ts";
import { mutations, structured } from "./_h1_diff_random.ts";

Deno.test("the engine answers as Deno.serve does, the known differences aside", async () => {
  await using rig = await diffRig();
  const inputs = [...corpus(), ...structured(1, 150), ...mutations(1, 150)];
  const differing: { name: string; text: string; c: Comparison }[] = [];
  const unknown: string[] = [];
  for (const input of inputs) {
    const c = await compare(rig, input);
    if (c.same) continue;
    differing.push({ name: input.name, text: input.writes.join(""), c });
    if (!c.known) {
      unknown.push(
        `${input.name}: ${JSON.stringify(input.writes.join("")).slice(0, 300)}\n` +
          `  deno: ${JSON.stringify(c.deno).slice(0, 1500)}\n  prox: ${
            JSON.stringify(c.prox).slice(0, 1500)
          }`,
      );
    }
  }
  assert.deepEqual(unknown, [], `Differences beyond the known ones:\n${unknown.join("\n")}`);
  // Each known difference is one the inputs show (none stays in the list after a fix): without its
  // rewrite, some pair differs.
  for (const k of KNOWN) {
    const shown = differing.some(({ text, c }) => {
      const [d, p] = knownRewrites(c.deno, c.prox, k, text);
      return JSON.stringify(d) !== JSON.stringify(p);
    });
    assert.ok(shown, `No input shows the known difference "${k.name}"`);
  }
});
