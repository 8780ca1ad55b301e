// deno-lint-ignore-file no-console
// How many bytes of JavaScript heap Prox allocates per request, and where: runs it with the
// bench's config and the shipped V8 flags (plus --inspect), warms it up with wrk, then samples its
// allocations through the inspector (HeapProfiler sampling, objects the collector has taken
// counted in) over a wrk run, and prints bytes per request by function (self), the largest first.
// Bytes allocated decide how often the young generation is scavenged, and each scavenge pauses the
// requests in flight; unlike times, they do not depend on what else the machine is doing.
//   deno run -A bench/alloc_bytes.ts [--h2] [--path /100b] [--post BYTES] [--seconds 4]
//     [--interval 512] [--top 30]
import { parseArgs } from "node:util";
import { freePort, proxConfig, spawn, startBackend } from "./procs.ts";
import { ROOT } from "../tests/_harness.ts";
import { V8_FLAGS } from "../tests/integration/_process.ts";
import { connectInspector } from "./inspector.ts";

const { values: o } = parseArgs({
  args: Deno.args,
  options: {
    h2: { type: "boolean", default: false },
    path: { type: "string" },
    post: { type: "string", default: "0" },
    seconds: { type: "string", default: "4" },
    interval: { type: "string", default: "512" },
    top: { type: "string", default: "30" },
  },
});
const dir = await Deno.makeTempDir({ prefix: "prox-alloc-bytes-" });
await using backend = await startBackend(dir, "1");
const port = freePort();
const inspectPort = freePort();
const conf = `${dir}/prox.yaml`;
await Deno.writeTextFile(conf, proxConfig({ port, backend: backend.port, tls: o.h2 }));
await using _prox = await spawn("prox", {
  core: "0",
  cmd: [
    Deno.execPath(),
    "run",
    "-A",
    V8_FLAGS,
    `--inspect=127.0.0.1:${inspectPort}`,
    `${ROOT}/mod.ts`,
    "serve",
    "-c",
    conf,
  ],
  ports: [port],
  env: { PROX_LOG_LEVEL: "warn", PROX_H1_ENGINE: "" },
});
const post = Number(o.post);
const script = `${dir}/post.lua`;
await Deno.writeTextFile(script, `wrk.method = "POST"\nwrk.body = string.rep("x", ${post})\n`);
const url = `${o.h2 ? "https" : "http"}://127.0.0.1:${port}${
  o.path ?? (post > 0 ? "/post" : "/100b")
}`;
const load = async (seconds: number): Promise<number> => {
  const out = await new Deno.Command("taskset", {
    args: o.h2 ? ["-c", "1", "h2load", "-c", "10", "-m", "10", "-D", String(seconds), url] : [
      "-c",
      "1",
      "wrk",
      "-t1",
      "-c50",
      `-d${seconds}s`,
      ...(post > 0 ? ["-s", script] : []),
      url,
    ],
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  return Number((o.h2 ? /requests: (\d+) total/ : /(\d+) requests in/).exec(text)?.[1] ?? NaN);
};

const inspector = await connectInspector(inspectPort);
const send = inspector.send;

await load(2); // warm-up: optimized code, pools filled
await send("HeapProfiler.enable");
await send("HeapProfiler.startSampling", {
  samplingInterval: Number(o.interval),
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
});
const requests = await load(Number(o.seconds));
const { result } = await send("HeapProfiler.stopSampling");
inspector.close();

interface Node {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: Node[];
}
const bySite = new Map<string, number>();
let total = 0;
const walk = (n: Node) => {
  if (n.selfSize > 0) {
    const f = n.callFrame;
    const file = f.url.replace(/^.*\/(src|ext:[^/]*|node:[^/]*)\//, "$1/").replace(
      /^file:\/\//,
      "",
    );
    const site = `${f.functionName || "(anon)"} ${file}:${f.lineNumber + 1}`;
    bySite.set(site, (bySite.get(site) ?? 0) + n.selfSize);
    total += n.selfSize;
  }
  for (const c of n.children) walk(c);
};
walk((result!.profile as { head: Node }).head);
console.log(
  `${requests} requests, ${(total / 1e6).toFixed(1)} MB sampled: ` +
    `${Math.round(total / requests)} bytes per request`,
);
for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, Number(o.top))) {
  console.log(`${String(Math.round(bytes / requests)).padStart(7)}  ${site}`);
}
