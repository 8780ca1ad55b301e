// Memory bound of the in-memory rate limiter: feeds N distinct client keys (random IPv4/IPv6
// addresses, as a flood of spoofed clients would) into one route's limiter and reports the key
// count and the process RSS. Run: deno run -A --v8-flags=--expose-gc bench/rate_limit_memory.ts
//   [--keys 1000000] [--max-keys 100000] [--algorithm token_bucket]

import { parseArgs } from "node:util";
import { createMemoryStore } from "../src/adapters/store_memory.ts";
import { ALGORITHMS, policyOf } from "../src/domain/rate_limit.ts";
import type { Algorithm } from "../src/domain/rate_limit.ts";
import { ipGroupKey } from "../src/domain/ip.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    keys: { type: "string", default: "1000000" },
    "max-keys": { type: "string", default: "100000" },
    algorithm: { type: "string", default: "token_bucket" },
  },
});
const total = Number(values.keys);
const maxKeys = Number(values["max-keys"]);
const algorithm = values.algorithm as Algorithm;
if (!ALGORITHMS.includes(algorithm)) throw new Error(`Unknown algorithm "${algorithm}"`);

const gc = (globalThis as { gc?: () => void }).gc;
const mib = (n: number) => (n / 1024 / 1024).toFixed(1);
const rss = () => {
  gc?.();
  return Deno.memoryUsage();
};

const store = createMemoryStore();
const policy = policyOf(algorithm, { requests: 10, periodMs: 60_000 });
const query = { limiter: "/api#bench", policy, now: 0, maxKeys };
const hex = () => Math.floor(Math.random() * 0x10000).toString(16);

const before = rss();
const t0 = performance.now();
let maxSeen = 0;
for (let i = 0; i < total; i++) {
  const ip = i % 2
    ? `${i & 255}.${(i >> 8) & 255}.${(i >> 16) & 255}.${Math.floor(Math.random() * 256)}`
    : `2001:db8:${hex()}:${hex()}:${hex()}::1`;
  query.now = 1_800_000_000_000 + Math.floor(i / 100); // 100 new clients per ms
  store.consumeSync(`ip:${ipGroupKey(ip, 64)}`, query);
  if ((i & 0xffff) === 0) maxSeen = Math.max(maxSeen, store.keyCount(query.limiter));
}
const elapsed = performance.now() - t0;
maxSeen = Math.max(maxSeen, store.keyCount(query.limiter));
const after = rss();

const report = {
  algorithm,
  distinctKeysFed: total,
  maxKeys,
  keysHeld: store.keyCount(query.limiter),
  maxKeysSeen: maxSeen,
  rssBeforeMiB: mib(before.rss),
  heapUsedBeforeMiB: mib(before.heapUsed),
  rssAfterMiB: mib(after.rss),
  heapUsedAfterMiB: mib(after.heapUsed),
  nsPerDecision: Math.round((elapsed * 1e6) / total),
  gc: Boolean(gc),
};
await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(report, null, 2) + "\n"));
if (report.keysHeld > maxKeys || maxSeen > maxKeys) Deno.exit(1);
