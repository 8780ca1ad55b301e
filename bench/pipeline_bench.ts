// Per-request CPU of the pipeline alone (no sockets): a proxy route with header rules, the real
// upstream registry and pool, an in-memory upstream that answers 100 bytes.
// Run: deno run -A bench/pipeline_bench.ts [--n 200000]   (add --cpu-prof to profile)

import { parseArgs } from "node:util";
import { loadConfigText } from "../src/config/load.ts";
import { buildSnapshot } from "../src/proxy/snapshot.ts";
import { createHandler } from "../src/proxy/pipeline.ts";
import { createUpstreamRegistry } from "../src/proxy/state.ts";
import { noopMetrics, silentLogger } from "../src/ports.ts";
import type { ClientInfo, UpstreamRequest } from "../src/ports.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { n: { type: "string", default: "200000" } },
});
const n = Number(values.n);
const text = `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/a": { type: proxy, target: "http://127.0.0.1:9001" }
  "/b": { type: proxy, target: "http://127.0.0.1:9002" }
  "/api":
    type: proxy
    target: "http://127.0.0.1:9000"
    request_headers: { add: { "X-Real-IP": "{client_ip}" }, remove: [Referer] }
    response_headers: { add: { Server: Prox }, remove: [X-Powered-By] }
`;
const { config, issues } = loadConfigText(text, {
  file: "bench.yaml",
  env: { exists: () => true },
});
if (!config) throw new Error(JSON.stringify(issues));
const snapshot = buildSnapshot(config, { version: 1 });
const clock = { now: () => Date.now(), monotonic: () => performance.now() };
const body = new TextEncoder().encode("x".repeat(100));
const handler = createHandler({
  snapshot: () => snapshot,
  upstream: {
    send: (r: UpstreamRequest) => {
      if (!r.url) throw new Error("no url");
      return Promise.resolve(
        new Response(body, { headers: { "content-type": "text/plain", "x-powered-by": "x" } }),
      );
    },
    close: () => Promise.resolve(),
  },
  files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
  clock,
  logger: silentLogger,
  metrics: noopMetrics,
  upstreams: createUpstreamRegistry({ clock, logger: silentLogger, metrics: noopMetrics }),
});
const info: ClientInfo = {
  remoteAddr: { hostname: "127.0.0.1", port: 5555 },
  localPort: 8080,
  protocol: "http/1.1",
  tls: false,
};
const headers = { host: "bench", "user-agent": "wrk", accept: "*/*", referer: "r" };
for (let round = 0; round < 3; round++) {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const res = await handler(new Request("http://bench/api/users/42?x=1", { headers }), info);
    await res.arrayBuffer();
  }
  const us = ((performance.now() - t0) * 1000) / n;
  // deno-lint-ignore no-console
  console.log(`round ${round}: ${us.toFixed(2)} µs per request`);
}
