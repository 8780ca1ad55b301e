// Redis store throughput and latency: N decisions against a local redis-server (started here on a
// free port), C at a time, distinct keys. Run: deno run -A bench/rate_limit_redis.ts [--n 20000]
//   [--concurrency 64] [--pool 2] [--algorithm gcra]

import { parseArgs } from "node:util";
import { startRedis } from "../tests/_redis.ts";
import { createRedisStore } from "../src/adapters/store_redis.ts";
import { policyOf } from "../src/domain/rate_limit.ts";
import type { Algorithm } from "../src/domain/rate_limit.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    n: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "64" },
    pool: { type: "string", default: "2" },
    algorithm: { type: "string", default: "gcra" },
  },
});
const n = Number(values.n);
const concurrency = Number(values.concurrency);
const policy = policyOf(values.algorithm as Algorithm, { requests: 100, periodMs: 60_000 });

await using redis = await startRedis();
const store = createRedisStore({
  url: redis.url,
  prefix: "bench:",
  timeoutMs: 1_000,
  poolSize: Number(values.pool),
});
const latencies: number[] = [];
let next = 0;
const t0 = performance.now();
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (next < n) {
    const i = next++;
    const s = performance.now();
    await store.consume(`k${i % 5_000}`, { limiter: "L", policy, now: Date.now(), maxKeys: 1 });
    latencies.push(performance.now() - s);
  }
}));
const seconds = (performance.now() - t0) / 1000;
await store.close();
latencies.sort((a, b) => a - b);
const q = (p: number) => latencies[Math.floor(p * (latencies.length - 1))].toFixed(3);
const report = {
  algorithm: policy.algorithm,
  decisions: n,
  concurrency,
  pool: Number(values.pool),
  perSecond: Math.round(n / seconds),
  p50ms: q(0.5),
  p99ms: q(0.99),
};
await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(report) + "\n"));
