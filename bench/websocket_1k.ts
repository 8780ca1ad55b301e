// 1,000 concurrent WebSockets echoing through a real Prox process: all stay connected, and
// Prox's RSS (read from /proc) stays bounded; also Prox's CPU per message passed on. The upstream
// (Deno.serve echo) and the clients run in this process; Prox runs alone in its own
// (PROX_H1_ENGINE=deno or prox in the environment picks its HTTP/1.1 engine). Run:
//   deno run -A bench/websocket_1k.ts [--connections 1000] [--rounds 20] [--size 1024]
//     [--prox-v8-flags=--max-old-space-size=64]
// Exits 1 when a connection dropped or an echo went missing.

import { parseArgs } from "node:util";
import { cpuSeconds } from "./procs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    connections: { type: "string", default: "1000" },
    rounds: { type: "string", default: "20" },
    size: { type: "string", default: "1024" },
    /** e.g. --max-old-space-size=64: shows whether Prox's heap is bounded or leaking. */
    "prox-v8-flags": { type: "string" },
  },
});
const N = Number(values.connections);
const ROUNDS = Number(values.rounds);
const SIZE = Number(values.size);
const root = new URL("..", import.meta.url).pathname;
const mib = (kib: number) => (kib / 1024).toFixed(1);

/** VmRSS and VmHWM (peak) of a process, in KiB. */
function memOf(pid: number): { rss: number; peak: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { rss: kib("VmRSS"), peak: kib("VmHWM") };
}

const upstream = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
  const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
  socket.onmessage = (e) => socket.send(e.data);
  return response;
});
const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const port = (probe.addr as Deno.NetAddr).port;
probe.close();
const dir = await Deno.makeTempDir({ prefix: "prox-ws-bench-" });
await Deno.writeTextFile(
  `${dir}/prox.yaml`,
  `listen_addr: "127.0.0.1:${port}"
health_check: { enabled: false }
log: { level: warn, access_log: false }
routes:
  "/ws":
    type: websocket
    target: "ws://127.0.0.1:${upstream.addr.port}"
`,
);
const prox = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    ...(values["prox-v8-flags"] ? [`--v8-flags=${values["prox-v8-flags"]}`] : []),
    `${root}mod.ts`,
    "serve",
    "-c",
    `${dir}/prox.yaml`,
    "--no-watch",
  ],
  stdout: "null",
  stderr: "inherit",
}).spawn();

async function waitListening(): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`Cannot connect to Prox on port ${port}`);
}

await waitListening();
const idle = memOf(prox.pid);

// Open N connections, 100 at a time.
const sockets: WebSocket[] = [];
const t0 = performance.now();
for (let i = 0; i < N; i += 100) {
  const batch = Array.from({ length: Math.min(100, N - i) }, () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    ws.binaryType = "arraybuffer";
    sockets.push(ws);
    return new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("Cannot open a WebSocket through Prox"));
    });
  });
  await Promise.all(batch);
}
const openMs = performance.now() - t0;
const connected = memOf(prox.pid);

// Every connection echoes one message per round, all concurrently.
const payload = new Uint8Array(SIZE).fill(42);
let echoes = 0;
const t1 = performance.now();
const cpu1 = cpuSeconds(prox.pid);
for (let r = 0; r < ROUNDS; r++) {
  await Promise.all(sockets.map((ws) =>
    new Promise<void>((resolve) => {
      ws.onmessage = (e) => {
        if ((e.data as ArrayBuffer).byteLength === SIZE) echoes++;
        resolve();
      };
      ws.send(payload);
    })
  ));
}
const echoMs = performance.now() - t1;
const echoCpu = cpuSeconds(prox.pid) - cpu1;
const stillOpen = sockets.filter((ws) => ws.readyState === WebSocket.OPEN).length;
const busy = memOf(prox.pid);

await Promise.all(sockets.map((ws) =>
  new Promise((resolve) => {
    ws.onclose = resolve;
    ws.close(1000, "bench done");
  })
));
await new Promise((r) => setTimeout(r, 500));
const after = memOf(prox.pid);
prox.kill("SIGTERM");
await prox.status;
await upstream.shutdown();
await Deno.remove(dir, { recursive: true });

const report = {
  connections: N,
  rounds: ROUNDS,
  messageBytes: SIZE,
  openMs: Math.round(openMs),
  echoes,
  echoesExpected: N * ROUNDS,
  messagesPerSecond: Math.round((2 * echoes) / (echoMs / 1000)),
  // Prox's CPU (user + system) per message passed on, either way, during the echo rounds.
  proxCpuUsPerMessage: Math.round((echoCpu * 1e6) / (2 * echoes)),
  stillOpen,
  proxRssIdleMiB: mib(idle.rss),
  proxRssConnectedMiB: mib(connected.rss),
  proxRssAfterEchoMiB: mib(busy.rss),
  proxRssPeakMiB: mib(busy.peak),
  proxRssAfterCloseMiB: mib(after.rss),
  perConnectionKiB: Math.round((connected.rss - idle.rss) / N),
};
await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(report, null, 2) + "\n"));
if (stillOpen !== N || echoes !== N * ROUNDS) Deno.exit(1);
