// gRPC features at their edges: gRPC health probes against misbehaving targets, gRPC-Web requests
// Prox must read whole (text) or refuse, and Prox's own failures as gRPC statuses. Real servers
// (@grpc/grpc-js, node:http2) on 127.0.0.1:0 and real clients (fetch, curl, node:http2).
import http2 from "node:http2";
import { waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";

onProxEngines();

Deno.test("gRPC health checks: a target that answers Health/Check with a body that never ends fails its probe within timeout_secs, and is probed again", async () => {
  const server = http2.createServer();
  let probes = 0;
  const timers = new Set<ReturnType<typeof setInterval>>();
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    probes++;
    stream.respond({ ":status": 200, "content-type": "application/grpc" });
    // A byte now and then, never the whole message: the idle timeout never fires.
    const t = setInterval(() => stream.write(new Uint8Array([0])), 100);
    timers.add(t);
    stream.on("close", () => {
      clearInterval(t);
      timers.delete(t);
    });
    stream.on("error", () => {});
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  try {
    await using prox = await startProxy(`health_check:
  { enabled: false, interval_secs: 1, timeout_secs: 1, unhealthy_threshold: 1 }
routes:
  "/":
    type: load_balance
    targets: ["http://127.0.0.1:${port}"]
    upstream_protocol: h2c
    health_check: { enabled: true, grpc_service: "" }
`);
    const status = () =>
      fetch(`${prox.url}/x`).then(async (r) => {
        await r.body?.cancel();
        return r.status;
      });
    await waitFor(async () => (await status()) === 503, { timeoutMs: 8_000 });
    await waitFor(() => probes >= 2, { timeoutMs: 8_000 });
  } finally {
    for (const t of timers) clearInterval(t);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
