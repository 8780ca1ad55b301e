// Run by reload_leak_test.ts in its own process (`deno run -A --v8-flags=--expose-gc`): a Prox
// started in-process is reloaded ITERATIONS times between two configs that each time swap the TLS
// certificate (a new listener on the port), rename the tcp entry (a new layer-4 listener), change
// health checks, rate limits, routes and their targets, with the file watch and the admin listener
// on. Prints one JSON line: open fds and the heap after a full GC, sampled along the way.

import { startServer } from "../../src/server.ts";
import type { Logger } from "../../src/ports.ts";
import { ROOT } from "../_harness.ts";

const ITERATIONS = Number(Deno.args[0] ?? 200);
const WARMUP = 20;
const TLS = `${ROOT}/tests/fixtures/tls`;

const up = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("ok"));
const dir = await Deno.makeTempDir({ prefix: "prox-reload-loop-" });
const file = `${dir}/config.yaml`;
const pairs = [["cert.pem", "key.pem"], ["other.pem", "other.key"]].map(([c, k]) => ({
  cert: Deno.readTextFileSync(`${TLS}/${c}`),
  key: Deno.readTextFileSync(`${TLS}/${k}`),
}));

const configFor = (i: number) => {
  const odd = i % 2;
  const target = `http://127.0.0.1:${up.addr.port}`;
  return `listen_addr: "127.0.0.1:0"
shutdown_timeout: 2s
tls:
  cert_path: ${dir}/cert.pem
  key_path: ${dir}/key.pem
admin:
  listen_addr: "127.0.0.1:0"
log:
  level: error
  access_log: false
health_check:
  enabled: true
  interval_secs: 2
  timeout_secs: 1
  path: /health${odd}
tcp:
  db${odd}:
    listen_addr: "127.0.0.1:0"
    targets: ["127.0.0.1:${up.addr.port}"]
    health_check: { interval: 2s, timeout: 1s }
routes:
  "/r${i}":
    type: load_balance
    targets: ["${target}/v${i}", "http://127.0.0.2:${up.addr.port}"]
    rate_limit: { by: ip, requests: ${100 + odd}, period: 1m }
  "/":
    type: proxy
    target: "${target}"
`;
};

const write = async (i: number) => {
  const pair = pairs[i % 2];
  await Deno.writeTextFile(`${dir}/cert.pem`, pair.cert);
  await Deno.writeTextFile(`${dir}/key.pem`, pair.key);
  await Deno.writeTextFile(file, configFor(i));
};

const quiet: Logger = {
  log() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
};
const fds = () => [...Deno.readDirSync("/proc/self/fd")].length;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("Run with --v8-flags=--expose-gc");
const heap = () => {
  gc();
  gc();
  return Deno.memoryUsage().heapUsed;
};

await write(0);
const server = await startServer({ path: file }, { logger: quiet, watch: true });
const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${TLS}/ca.pem`)] });
const samples: { i: number; fds: number; heap: number }[] = [];
let failures = 0;
for (let i = 1; i <= ITERATIONS; i++) {
  await write(i);
  const r = await server.reload({ trigger: "test" });
  if (!r.ok) failures++;
  await fetch(`https://localhost:${server.port}/r${i}/x`, { client })
    .then((res) => res.body?.cancel()).catch(() => {});
  if (i === WARMUP || i % 50 === 0) samples.push({ i, fds: fds(), heap: heap() });
}
await server.shutdown();
client.close();
await up.shutdown();
await Deno.remove(dir, { recursive: true });
await Deno.stdout.write(new TextEncoder().encode(JSON.stringify({ failures, samples }) + "\n"));
