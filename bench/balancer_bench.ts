// Cost of one selection per policy over 10 targets (run: deno bench bench/balancer_bench.ts).
import { createSelector, POLICIES } from "../src/domain/balancer.ts";
import type { Policy, TargetLoad } from "../src/domain/balancer.ts";

const pool = Array.from({ length: 10 }, (_, i) => ({
  id: `http://10.0.0.${i + 1}:8080`,
  weight: 1 + (i % 3),
  backup: i === 9,
}));
const loads: TargetLoad[] = pool.map((_, i) => ({
  available: i !== 4,
  inFlight: i % 4,
  latencyMs: 1 + i,
}));
const load = (i: number) => loads[i];
let k = 0;
for (const policy of Object.keys(POLICIES) as Policy[]) {
  const sel = createSelector(policy, pool);
  Deno.bench(`pick ${policy} (10 targets)`, () => {
    sel.pick({ load, random: Math.random, key: `10.1.${k & 255}.${k++ & 255}` });
  });
}
