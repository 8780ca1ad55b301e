// Per-request cost of the rate-limit filter: the real pipeline in-process (no sockets), a redirect
// route without and with a limit that never denies, 10,000 distinct client IPs.
// Run: deno run -A bench/rate_limit_overhead.ts [--n 200000] [--algorithm token_bucket]

import { parseArgs } from "node:util";
import { loadConfigText } from "../src/config/load.ts";
import { buildSnapshot } from "../src/proxy/snapshot.ts";
import { createHandler } from "../src/proxy/pipeline.ts";
import { createRateLimitStores, limiterIds } from "../src/adapters/rate_limit_stores.ts";
import { noopMetrics, silentLogger } from "../src/ports.ts";
import type { ClientInfo } from "../src/ports.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    n: { type: "string", default: "200000" },
    algorithm: { type: "string", default: "token_bucket" },
  },
});
const n = Number(values.n);
const text = `listen_addr: "127.0.0.1:0"
routes:
  "/plain": { type: redirect, target: "/x" }
  "/limited":
    type: redirect
    target: "/x"
    rate_limit: { by: ip, requests: 1000000000, period: 1s, algorithm: ${values.algorithm} }
`;
const { config } = loadConfigText(text, { file: "bench.yaml", env: { exists: () => true } });
if (!config) throw new Error("Cannot load the bench config");
const snapshot = buildSnapshot(config, { version: 1 });
const rateLimits = createRateLimitStores();
await rateLimits.configure(
  config.rate_limit_store,
  limiterIds(snapshot.router.entries.map((e) => e.value)),
);
const handler = createHandler({
  snapshot: () => snapshot,
  upstream: { send: () => Promise.reject(new Error("unused")), close: () => Promise.resolve() },
  files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
  clock: { now: () => Date.now(), monotonic: () => performance.now() },
  logger: silentLogger,
  metrics: noopMetrics,
  rateLimits,
});

async function run(path: string): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const info: ClientInfo = {
      remoteAddr: { hostname: `10.${(i >> 8) & 255}.${i & 255}.${i % 39}`, port: 1 },
      localPort: 80,
      protocol: "http/1.1",
      tls: false,
    };
    const res = await handler(new Request(`http://bench${path}`), info);
    if (res.status !== 307) throw new Error(`Unexpected status ${res.status}`);
  }
  return ((performance.now() - t0) * 1e6) / n;
}

await run("/plain"); // warm up
await run("/limited");
const plain = await run("/plain");
const limited = await run("/limited");
const report = {
  algorithm: values.algorithm,
  requests: n,
  nsPerRequestWithout: Math.round(plain),
  nsPerRequestWith: Math.round(limited),
  filterNs: Math.round(limited - plain),
};
await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(report) + "\n"));
