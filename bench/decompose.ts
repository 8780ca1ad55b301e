// deno-lint-ignore-file no-console
// Where Prox's time per request goes, and A/B comparisons of builds: alternating wrk runs (one
// pinned core for the proxies, the other for wrk and the nginx backend) against variants that add
// one layer at a time, medians of CPU µs per request.
//
//   deno run -A bench/decompose.ts [--variants full,min,client,raw] [--roots DIR,DIR]
//     [--connections 50] [--path /100b] [--post BYTES] [--rounds 3] [--seconds 4]
//     [--chunked] [--close] [--cpu-prof DIR]
//
// Variants: `full` Prox with the bench's config (10 routes, header rules, metrics), `deno` the same
// on Deno.serve (`http1_engine: deno`), `min` Prox with one plain proxy route, `client` the engine
// and the upstream client alone (engine_client.ts), `raw` the raw-socket relay (raw_proxy.ts). A
// variant may carry extra V8 flags after a `|` (`full|--max-semi-space-size=8`). `--roots` runs
// the Prox variants of each checkout given (an A/B of two builds: `--roots /a,/b`). `--post` sends
// POSTs with a body of that size to /post (`--chunked`: as one chunk of a chunked body). `--close` sends `Connection: close` (a new connection
// per request). `--cpu-prof DIR` profiles each variant and prints the
// functions taking the most self time per request.
import { parseArgs } from "node:util";
import { freePort, proxConfig, spawn, startBackend } from "./procs.ts";
import { measure } from "./load.ts";
import { V8_FLAGS } from "../tests/integration/_process.ts";
import { ROOT } from "../tests/_harness.ts";

const { values: o } = parseArgs({
  args: Deno.args,
  options: {
    variants: { type: "string", default: "full,min,client,raw" },
    roots: { type: "string", default: ROOT },
    connections: { type: "string", default: "50" },
    path: { type: "string" },
    post: { type: "string", default: "0" },
    close: { type: "boolean", default: false },
    chunked: { type: "boolean", default: false },
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "4" },
    "cpu-prof": { type: "string" },
  },
});
const C = Number(o.connections);
const SECONDS = Number(o.seconds);
const POST = Number(o.post);
const path = o.path ?? (POST > 0 ? "/post" : "/100b");
const profDir = o["cpu-prof"];
const dir = await Deno.makeTempDir({ prefix: "prox-decompose-" });
await using backend = await startBackend(dir, "1");
const script = `${dir}/post.lua`;
if (POST > 0 || o.close) {
  await Deno.writeTextFile(
    script,
    (POST > 0 && o.chunked
      // wrk.format would add a Content-Length beside the chunks: the request is written whole.
      ? `local req = "POST ${path} HTTP/1.1\\r\\nHost: bench\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n` +
        `${POST.toString(16)}\\r\\n" .. string.rep("x", ${POST}) .. "\\r\\n0\\r\\n\\r\\n"\n` +
        `request = function() return req end\n`
      : POST > 0
      ? `wrk.method = "POST"\nwrk.body = string.rep("x", ${POST})\n`
      : "") +
      (o.close ? `wrk.headers["Connection"] = "close"\n` : ""),
  );
}

interface Run {
  name: string;
  port: number;
  child: Deno.ChildProcess;
  cpu: number[];
  requests: number;
  prof?: string;
}
const runs: Run[] = [];
const roots = o.roots.split(",").map((r) => r.replace(/\/$/, ""));
for (const root of roots) {
  for (const variant of o.variants.split(",")) {
    const [v, flags] = variant.split("|");
    const port = freePort();
    const v8 = flags ? [`${V8_FLAGS},${flags}`] : V8_FLAGS.split(" ").filter(Boolean);
    let args: string[];
    if (v === "raw") args = [`${root}/bench/raw_proxy.ts`, String(port), String(backend.port)];
    else if (v === "client") {
      args = [`${root}/bench/engine_client.ts`, String(port), String(backend.port)];
    } else {
      const conf = `${dir}/${runs.length}.yaml`;
      await Deno.writeTextFile(
        conf,
        v === "min"
          ? `listen_addr: "127.0.0.1:${port}"\nhealth_check: { enabled: false }\n` +
            `log: { level: warn, access_log: false }\n` +
            `routes: { "/": { type: proxy, target: "http://127.0.0.1:${backend.port}" } }\n`
          : proxConfig({ port, backend: backend.port, engine: v === "deno" ? "deno" : undefined }),
      );
      args = [...v8, `--config=${root}/deno.json`, `${root}/mod.ts`, "serve", "-c", conf];
    }
    const prof = profDir ? `${profDir}/${runs.length}` : undefined;
    const env = Deno.env.toObject();
    delete env.PROX_H1_ENGINE; // the variant says which engine
    const child = await spawn(variant, {
      core: "0",
      cmd: [
        Deno.execPath(),
        "run",
        "-A",
        ...(prof ? ["--cpu-prof", `--cpu-prof-dir=${prof}`] : []),
        ...args,
      ],
      ports: [port],
      env: { ...env, PROX_LOG_LEVEL: "warn" },
      stderr: "inherit",
    });
    const name = roots.length > 1 ? `${root.split("/").pop()}:${variant}` : variant;
    runs.push({ name, port, child, cpu: [], requests: 0, prof });
  }
}
const load = (r: Run, seconds: number) =>
  measure("wrk", `http://127.0.0.1:${r.port}${path}`, {
    pid: r.child.pid,
    core: "1",
    seconds,
    connections: C,
    ...(POST > 0 || o.close ? { script } : {}),
  });
for (const r of runs) r.requests += (await load(r, 2)).requests; // warm-up (profiled too)
for (let i = 0; i < Number(o.rounds); i++) {
  for (const r of runs) {
    const m = await load(r, SECONDS);
    r.cpu.push(m.cpuUsPerReq);
    r.requests += m.requests;
    console.log(
      `${r.name.padEnd(24)} ${m.rps.toFixed(0).padStart(6)} req/s ${
        m.cpuUsPerReq.toFixed(1).padStart(6)
      } µs/req  p99 ${m.p99.toFixed(2)} ms  errors ${m.errors}`,
    );
  }
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
console.log(
  `\nMedian CPU µs per request (${o.rounds} alternating runs of ${SECONDS} s, ${C} conns):`,
);
for (const r of runs) console.log(`  ${r.name.padEnd(24)} ${median(r.cpu).toFixed(1)}`);
// SIGINT: Prox and the reference scripts exit normally on it, so that --cpu-prof writes its file.
for (const r of runs) {
  r.child.kill(r.prof ? "SIGINT" : "SIGTERM");
  await r.child.status;
}
if (profDir) {
  for (const r of runs) {
    for await (const f of Deno.readDir(r.prof!)) {
      const top = selfTimes(JSON.parse(await Deno.readTextFile(`${r.prof}/${f.name}`)));
      console.log(`\n${r.name}: self time per request (µs; start-up counted in, idle left out)`);
      for (const [k, us] of top.slice(0, 25)) {
        console.log(`  ${(us / r.requests).toFixed(2).padStart(7)}  ${k}`);
      }
    }
  }
}
await Deno.remove(dir, { recursive: true });

/** Self time per function of a V8 CPU profile, most first (µs). */
function selfTimes(p: {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}): [string, number][] {
  const byId = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<string, number>();
  p.samples.forEach((id, i) => {
    const cf = byId.get(id)!;
    const key = `${cf.functionName || "(anon)"} ${cf.url.split("/").slice(-2).join("/")}:${
      cf.lineNumber + 1
    }`;
    self.set(key, (self.get(key) ?? 0) + p.timeDeltas[i]);
  });
  return [...self].filter(([k]) => !k.startsWith("(idle)")).sort((a, b) => b[1] - a[1]);
}
