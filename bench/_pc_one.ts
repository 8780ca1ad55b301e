// deno-lint-ignore-file no-console
// Cost of the request pipeline alone: the real server's Handler with the benchmark's 10-route
// config, called in a loop with an upstream client that answers at once (no sockets).
// `deno run -A bench/pipeline_cost.ts [iterations]`; add --cpu-prof to see where the time goes.
import { startServer } from "../src/server.ts";
import { silentLogger } from "../src/ports.ts";
import type { ClientInfo, UpstreamClient } from "../src/ports.ts";
import { proxConfig } from "./procs.ts";

const n = Number(Deno.args[0] ?? 200_000);
const body = new Uint8Array(100);
const upstream: UpstreamClient = {
  send: () =>
    Promise.resolve(
      new Response(body, {
        headers: [["content-type", "text/plain"], ["content-length", "100"], ["server", "x"]],
      }),
    ),
  close: () => Promise.resolve(),
};
const server = await startServer(
  { text: proxConfig({ port: 0, backend: 9 }), name: "bench.yaml" },
  { logger: silentLogger, upstream },
);
const info: ClientInfo = {
  remoteAddr: { hostname: "127.0.0.1", port: 40000 },
  localPort: server.port,
  protocol: "http/1.1",
  tls: false,
};
const req = () =>
  new Request(`http://127.0.0.1:${server.port}/100b`, {
    headers: { host: `127.0.0.1:${server.port}`, "user-agent": "wrk", accept: "*/*" },
  });
for (let i = 0; i < 20_000; i++) await server.handler(req(), info);
const t0 = performance.now();
const one = req(); for (let i = 0; i < n; i++) await server.handler(one, info);
const t1 = performance.now();
const base = performance.now();
for (let i = 0; i < n; i++) req();
const reqOnly = performance.now() - base;
console.log(
  `pipeline: ${
    ((t1 - t0 - reqOnly) * 1000 / n).toFixed(1)
  } µs per request (request construction excluded)`,
);
await server.shutdown();
