// deno-lint-ignore-file no-console
// Differential run of Prox's own HTTP/1.1 engine against Deno.serve: the same bytes to two Prox
// instances (one per engine) on one recording upstream, printing every case where what the
// client got, what the upstream saw or what the access log says differs
// (tests/integration/_h1_diff.ts). The fixed corpus and 300 random inputs run in CI
// (tests/integration/h1_engine_diff_test.ts); this runs more.
//   deno run -A bench/h1_engine_diff.ts [seed, default 1] [count, default 300]
//     [--corpus | --structured | --half-close] [--all] [--show=TEXT]
// Without a flag: `count` random mutations of the corpus (mostly heads the engine relays);
// --structured: `count` well-formed requests built at random (the engine's own ground);
// --corpus: the fixed corpus alone; --half-close: clients that end their sending side (the
// outcome depends on timing); --all: known differences too; --show: print matching cases.
// A difference prints its case name (with seed and index to replay), the input, and both sides.
import { compare, diffRig } from "../tests/integration/_h1_diff.ts";
import type { Input } from "../tests/integration/_h1_diff.ts";
import { corpus, halfCloses } from "../tests/integration/_h1_diff_corpus.ts";
import { mutations, structured } from "../tests/integration/_h1_diff_random.ts";

const seed = Number(Deno.args[0] ?? 1);
const count = Number(Deno.args[1] ?? 300);
const inputs: Input[] = Deno.args.includes("--corpus")
  ? corpus()
  : Deno.args.includes("--half-close")
  ? halfCloses()
  : Deno.args.includes("--structured")
  ? structured(seed, count)
  : mutations(seed, count);
const verbose = Deno.args.includes("--all");
// --show=TEXT prints both sides of every case whose name contains TEXT.
const show = Deno.args.find((a) => a.startsWith("--show="))?.slice(7);

await using rig = await diffRig();
let differ = 0;
for (const input of inputs) {
  const c = await compare(rig, input);
  const nd = JSON.stringify(c.deno, null, 1);
  const np = JSON.stringify(c.prox, null, 1);
  if (show !== undefined && input.name.includes(show)) {
    console.log(`\n=== ${input.name}\ndeno: ${nd}\nprox: ${np}`);
  }
  if (c.same || (c.known && !verbose)) continue;
  const known = c.known;
  differ++;
  console.log(`\n=== ${input.name}${known ? " (a known difference)" : ""}`);
  console.log("input:", JSON.stringify(input.writes.join("").slice(0, 400)));
  console.log(lineDiff(nd.split("\n"), np.split("\n")).map((l) => l.slice(0, 200)).join("\n"));
}
console.log(
  `\n${inputs.length} inputs, ${differ} differ${verbose ? "" : " (known differences left out)"}`,
);

/** The lines that differ, `-` Deno.serve's and `+` the engine's, with a line of context. */
function lineDiff(a: string[], b: string[]): string[] {
  // Longest common subsequence (the outcomes are small).
  const n = a.length, m = b.length;
  const l: number[][] = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      l[i][j] = a[i] === b[j] ? l[i + 1][j + 1] + 1 : Math.max(l[i + 1][j], l[i][j + 1]);
    }
  }
  const out: string[] = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      i++, j++;
    } else if (j < m && (i === n || l[i][j + 1] >= l[i + 1][j])) out.push(`+ ${b[j++]}`);
    else out.push(`- ${a[i++]}`);
  }
  return out;
}
