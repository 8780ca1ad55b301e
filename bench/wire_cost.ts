// deno-lint-ignore-file no-console
// Cost of the request pipeline alone on the path Prox's own HTTP/1.1 engine takes: the real
// server's Handler with the benchmark's 10-route config, called in a loop with the engine's lean
// request (WireRequest, HeaderList) and an upstream client that answers at once with the upstream
// client's lean response (WireResponse): no sockets, no Fetch objects, so the figure moves only
// with the pipeline's own work (a steadier A/B than the wrk-driven decompose.ts for small changes).
// `deno run -A bench/wire_cost.ts [iterations] [rounds]`; add --cpu-prof to see where the time goes.
import { startServer } from "../src/server.ts";
import { silentLogger } from "../src/ports.ts";
import type { ClientInfo, UpstreamClient } from "../src/ports.ts";
import { HeaderList } from "../src/domain/header_list.ts";
import { WireRequest } from "../src/adapters/h1/wire_request.ts";
import { WireResponse } from "../src/proxy/wire_response.ts";
import { proxConfig } from "./procs.ts";

const n = Number(Deno.args[0] ?? 200_000);
const rounds = Number(Deno.args[1] ?? 5);
const body = new Uint8Array(100);
const upstream: UpstreamClient = {
  send: () => {
    const h = new HeaderList();
    h.appendChecked("server", "nginx/1.22.1");
    h.appendChecked("date", "Fri, 27 Nov 2026 20:00:00 GMT");
    h.appendChecked("content-type", "application/octet-stream");
    h.appendChecked("content-length", "100");
    h.appendChecked("connection", "keep-alive");
    h.appendChecked("last-modified", "Fri, 27 Nov 2026 19:00:00 GMT");
    h.appendChecked("etag", '"6565b0a0-64"');
    h.appendChecked("accept-ranges", "bytes");
    return Promise.resolve(new WireResponse(body, 200, "OK", h) as unknown as Response);
  },
  close: () => Promise.resolve(),
};
const server = await startServer(
  { text: proxConfig({ port: 0, backend: 9 }), name: "bench.yaml" },
  { logger: silentLogger, upstream },
);
const never = new AbortController().signal;
const req = () => {
  const h = new HeaderList();
  h.appendChecked("host", `127.0.0.1:${server.port}`);
  h.appendChecked("user-agent", "wrk");
  h.appendChecked("accept", "*/*");
  return new WireRequest("GET", `http://127.0.0.1:${server.port}/100b`, h, () => never);
};
const info = (): ClientInfo => ({
  remoteAddr: { hostname: "127.0.0.1", port: 40000 },
  localPort: server.port,
  protocol: "http/1.1",
  authority: `127.0.0.1:${server.port}`, // as the engine gives it
  tls: false,
  completed: Promise.resolve(),
  writesItself: true,
});
const once = async () => {
  const res = await server.handler(req() as unknown as Request, info());
  if (res.status !== 200) throw new Error(`status ${res.status}`);
};
for (let i = 0; i < 20_000; i++) await once();
const per: number[] = [];
for (let r = 0; r < rounds; r++) {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await once();
  per.push((performance.now() - t0) * 1000 / n);
}
per.sort((a, b) => a - b);
console.log(
  `pipeline on the engine's path: ${
    per[per.length >> 1].toFixed(2)
  } µs per request (median of ${rounds} rounds of ${n}; min ${
    per[0].toFixed(2)
  }, request and answer construction included)`,
);
await server.shutdown();
