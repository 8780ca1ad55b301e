// deno-lint-ignore-file no-console
// An A/B of Prox builds on the HTTP/2 scenario of `make bench` (h2load over TLS, 10 connections
// × 10 streams, the realistic config, Prox pinned to core 0, h2load and the nginx backend to core
// 1), alternating the builds, medians of CPU µs per request:
//   deno run -A bench/h2_ab.ts --roots DIR,DIR [--rounds 5] [--seconds 4] [--path /100b] [--grpc]
//     [--grpc-timeout 10S]
// Each DIR is a checkout of Prox (e.g. `git archive <rev> | tar -x -C DIR`). `--grpc`: the gRPC
// scenario instead (unary calls over h2c to the route with `upstream_protocol: h2c`);
// `--grpc-timeout`: its calls carry that `grpc-timeout` (a deadline, as most gRPC clients set).
import { parseArgs } from "node:util";
import { freePort, proxConfig, spawn, startBackend } from "./procs.ts";
import { measure } from "./load.ts";

const { values: o } = parseArgs({
  args: Deno.args,
  options: {
    roots: { type: "string" },
    rounds: { type: "string", default: "5" },
    seconds: { type: "string", default: "4" },
    path: { type: "string", default: "/100b" },
    grpc: { type: "boolean", default: false },
    "grpc-timeout": { type: "string" },
  },
});
if (!o.roots) throw new Error("--roots DIR,DIR is required");
const dir = await Deno.makeTempDir({ prefix: "prox-h2ab-" });
await Deno.chmod(dir, 0o755);
await using backend = await startBackend(dir, "1");
const runs: { name: string; port: number; child: Deno.ChildProcess; cpu: number[] }[] = [];
for (const root of o.roots.split(",").map((r) => r.replace(/\/$/, ""))) {
  const port = freePort();
  const conf = `${dir}/${runs.length}.yaml`;
  await Deno.writeTextFile(
    conf,
    proxConfig({ port, backend: backend.port, tls: !o.grpc, backendH2c: backend.h2cPort }),
  );
  const v8 = /^V8_FLAGS := (.+)$/m.exec(Deno.readTextFileSync(`${root}/Makefile`))![1];
  const child = await spawn(root, {
    core: "0",
    cmd: [
      Deno.execPath(),
      "run",
      "-A",
      v8,
      `--config=${root}/deno.json`,
      `${root}/mod.ts`,
      "serve",
      "-c",
      conf,
    ],
    ports: [port],
    env: { PROX_LOG_LEVEL: "warn" },
    stderr: "inherit",
  });
  runs.push({ name: root, port, child, cpu: [] });
}
// As run.ts sends it: a gRPC message of 5 bytes of framing and 15 of payload.
const grpcData = `${dir}/grpc-request.bin`;
await Deno.writeFile(grpcData, Uint8Array.from([0, 0, 0, 0, 15, ...new Uint8Array(15)]));
const load = (r: typeof runs[0], seconds: number) =>
  measure(
    "h2load",
    o.grpc ? `http://127.0.0.1:${r.port}/grpc.Bench/Call` : `https://127.0.0.1:${r.port}${o.path}`,
    {
      pid: r.child.pid,
      core: "1",
      seconds,
      connections: 10,
      ...(o.grpc
        ? {
          h2loadArgs: [
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            ...(o["grpc-timeout"] ? ["-H", `grpc-timeout: ${o["grpc-timeout"]}`] : []),
            "-d",
            grpcData,
          ],
        }
        : {}),
    },
  );
for (const r of runs) await load(r, 2); // warm-up
for (let i = 0; i < Number(o.rounds); i++) {
  for (const r of runs) {
    const m = await load(r, Number(o.seconds));
    r.cpu.push(m.cpuUsPerReq);
    console.log(
      `${r.name.padEnd(24)} ${m.rps.toFixed(0).padStart(6)} req/s ${
        m.cpuUsPerReq.toFixed(1).padStart(6)
      } µs/req`,
    );
  }
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
console.log(`\nMedian CPU µs per request (${o.rounds} alternating runs of ${o.seconds} s):`);
for (const r of runs) {
  console.log(`  ${r.name.padEnd(24)} ${median(r.cpu).toFixed(1)}`);
  r.child.kill("SIGTERM");
  await r.child.status;
}
await Deno.remove(dir, { recursive: true });
