// Multi-core scaling: Prox with `--workers 1` and `--workers 2` against nginx with
// `worker_processes 1` and `2`, on the same static 100-byte file, in one run, alternating
// (nginx, Prox, nginx, Prox …) so both see the same machine noise. The figure of merit is
// Prox's 2-worker/1-worker throughput ratio divided by nginx's (issue 12 asks for ≥ 0.9):
// on a 2-core machine wrk needs a core too, so absolute scaling is capped for everyone.
//
//   deno run -A bench/workers.ts [--seconds 5] [--rounds 1] [--connections 50] [--json FILE]
//
// Needs wrk and nginx (apt-get install -y wrk nginx). Reports req/s, p99 latency and CPU µs per
// request (all processes of each server, from /proc).
// deno-lint-ignore-file no-console

import { parseArgs } from "node:util";
import { V8_FLAGS } from "../tests/integration/_process.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const args = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "1" },
    connections: { type: "string", default: "50" },
    json: { type: "string" },
  },
});
const SECONDS = Number(args.values.seconds);
const ROUNDS = Number(args.values.rounds);
const CONNECTIONS = Number(args.values.connections);
const TICK_US = 1_000_000 / 100; // USER_HZ

for (const tool of ["wrk", "nginx"]) {
  const ok = await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`], stdout: "null" })
    .output().then((o) => o.success);
  if (!ok) {
    console.error(`Cannot run the benchmark: ${tool} is missing (apt-get install -y wrk nginx)`);
    Deno.exit(2);
  }
}

const dir = await Deno.makeTempDir({ prefix: "prox-bench-workers-" });
await Deno.mkdir(`${dir}/www`);
await Deno.writeTextFile(`${dir}/www/index.html`, "x".repeat(99) + "\n");
// nginx workers run as an unprivileged user (www-data when started as root).
await Deno.chmod(dir, 0o755);
await Deno.chmod(`${dir}/www`, 0o755);
await Deno.chmod(`${dir}/www/index.html`, 0o644);

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

interface Running {
  pid: number;
  port: number;
  stop(): Promise<void>;
}

async function waitListening(port: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`);
      await res.body?.cancel();
      if (res.ok) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Cannot reach 127.0.0.1:${port}: the server did not start`);
}

async function startNginx(workers: number): Promise<Running> {
  const port = freePort();
  const conf = `${dir}/nginx-${workers}.conf`;
  await Deno.writeTextFile(
    conf,
    `worker_processes ${workers};
daemon off;
pid ${dir}/nginx-${workers}.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/nginx-tmp;
  proxy_temp_path ${dir}/nginx-tmp;
  fastcgi_temp_path ${dir}/nginx-tmp;
  uwsgi_temp_path ${dir}/nginx-tmp;
  scgi_temp_path ${dir}/nginx-tmp;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${port} reuseport;
    location / { root ${dir}/www; }
  }
}
`,
  );
  const child = new Deno.Command("nginx", {
    args: ["-c", conf, "-p", dir],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const stop = async () => {
    child.kill("SIGQUIT");
    await child.status;
  };
  await waitListening(port).catch(async (err) => {
    await stop();
    throw err;
  });
  return { pid: child.pid, port, stop };
}

async function startProx(workers: number): Promise<Running> {
  const port = freePort();
  const conf = `${dir}/prox.yaml`;
  await Deno.writeTextFile(
    conf,
    `listen_addr: "127.0.0.1:${port}"
health_check:
  enabled: false
log:
  level: warn
  access_log: false
routes:
  "/":
    type: static
    root: ${JSON.stringify(`${dir}/www`)}
`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      // As shipped (the Makefile's V8_FLAGS), as in `make bench`; BENCH_V8_FLAGS="" goes without.
      ...(Deno.env.get("BENCH_V8_FLAGS") ?? V8_FLAGS).split(" ").filter(Boolean),
      `--config=${ROOT}/deno.json`,
      `${ROOT}/mod.ts`,
      "serve",
      "-c",
      conf,
      "--no-watch",
      "--workers",
      String(workers),
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const stop = async () => {
    child.kill("SIGTERM");
    await child.status;
  };
  await waitListening(port).catch(async (err) => {
    await stop();
    throw err;
  });
  return { pid: child.pid, port, stop };
}

/** CPU ticks (user + system) of `pid` and all its descendants. */
function treeTicks(pid: number): number {
  const stats = new Map<number, { ppid: number; ticks: number }>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const s = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      stats.set(Number(e.name), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch { /* gone */ }
  }
  let total = 0;
  const walk = (p: number) => {
    total += stats.get(p)?.ticks ?? 0;
    for (const [child, s] of stats) if (s.ppid === p) walk(child);
  };
  walk(pid);
  return total;
}

interface Sample {
  rps: number;
  p99Ms: number;
  cpuUsPerReq: number;
}

async function wrk(server: Running): Promise<Sample> {
  const before = treeTicks(server.pid);
  const out = await new Deno.Command("wrk", {
    args: [
      "-t1",
      `-c${CONNECTIONS}`,
      `-d${SECONDS}s`,
      "--latency",
      `http://127.0.0.1:${server.port}/`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const after = treeTicks(server.pid);
  const rps = Number(text.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? NaN);
  const requests = Number(text.match(/(\d+) requests in/)?.[1] ?? NaN);
  const p99 = text.match(/99%\s+([\d.]+)(us|ms|s)/);
  const p99Ms = p99
    ? Number(p99[1]) * ({ us: 0.001, ms: 1, s: 1000 } as const)[p99[2] as "ms"]
    : NaN;
  if (/Non-2xx|Socket errors/.test(text)) console.error(`wrk reported errors:\n${text}`);
  return { rps, p99Ms, cpuUsPerReq: ((after - before) * TICK_US) / requests };
}

/** The 1-minute load average: other work on the machine skews the scaling figures. */
function loadavg(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  } catch {
    return "unknown";
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const cases = [
  { name: "nginx 1 worker", start: () => startNginx(1) },
  { name: "prox 1 worker", start: () => startProx(1) },
  { name: "nginx 2 workers", start: () => startNginx(2) },
  { name: "prox 2 workers", start: () => startProx(2) },
];
const samples = new Map<string, Sample[]>(cases.map((c) => [c.name, []]));
console.error(
  `${ROUNDS} round(s) of wrk -t1 -c${CONNECTIONS} -d${SECONDS}s on a 100-byte static file, ` +
    `${navigator.hardwareConcurrency} cores, unpinned, load average ${loadavg()}`,
);
for (let round = 0; round < ROUNDS; round++) {
  for (const c of cases) {
    const server = await c.start();
    try {
      // A short warm-up (JIT, file cache) before the measured run.
      await new Deno.Command("wrk", {
        args: ["-t1", "-c10", "-d1s", `http://127.0.0.1:${server.port}/`],
        stdout: "null",
      }).output();
      const s = await wrk(server);
      samples.get(c.name)!.push(s);
      console.error(`  ${c.name}: ${s.rps.toFixed(0)} req/s, p99 ${s.p99Ms.toFixed(2)} ms`);
    } finally {
      await server.stop();
    }
  }
}

const row = (name: string) => {
  const xs = samples.get(name)!;
  return {
    rps: median(xs.map((s) => s.rps)),
    p99Ms: median(xs.map((s) => s.p99Ms)),
    cpuUsPerReq: median(xs.map((s) => s.cpuUsPerReq)),
  };
};
const result = {
  date: new Date().toISOString(),
  cores: navigator.hardwareConcurrency,
  loadAverageAfter: loadavg(),
  seconds: SECONDS,
  rounds: ROUNDS,
  connections: CONNECTIONS,
  results: Object.fromEntries(cases.map((c) => [c.name, row(c.name)])),
  nginxScaling: row("nginx 2 workers").rps / row("nginx 1 worker").rps,
  proxScaling: row("prox 2 workers").rps / row("prox 1 worker").rps,
  relativeScaling: 0,
};
result.relativeScaling = result.proxScaling / result.nginxScaling;

console.log("| Server | req/s | p99 ms | CPU µs/req |");
console.log("| --- | --- | --- | --- |");
for (const [name, r] of Object.entries(result.results)) {
  console.log(
    `| ${name} | ${r.rps.toFixed(0)} | ${r.p99Ms.toFixed(2)} | ${r.cpuUsPerReq.toFixed(1)} |`,
  );
}
console.log(
  `\n2-worker/1-worker: nginx ${result.nginxScaling.toFixed(2)}x, Prox ${
    result.proxScaling.toFixed(2)
  }x; Prox/nginx scaling ${
    result.relativeScaling.toFixed(2)
  } (target ≥ 0.9); load average ${loadavg()}`,
);
if (args.values.json) await Deno.writeTextFile(args.values.json, JSON.stringify(result, null, 2));
await Deno.remove(dir, { recursive: true });
