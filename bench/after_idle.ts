// deno-lint-ignore-file no-console
// The first seconds of a burst after a pause: `deno run -A bench/after_idle.ts [rounds]`.
// Starts the nginx backend and Prox (as `make bench` does: pinned to core 0, the realistic
// config, the shipped V8 flags), warms it up for 3 s, then for each round idles for GAP ms (default
// 2500: longer than `memory.reduce_after_idle`, so the memory-reducing GC runs) and loads it with
// SEGS back-to-back one-second wrk runs (default 5). Prints Prox's CPU µs per request and wrk's p99
// for every second, then the median of each second over the rounds. Env: GAP, SEGS,
// BENCH_V8_FLAGS (as in run.ts).

import { measure } from "./load.ts";
import { startBackend, startProx } from "./procs.ts";

const rounds = Number(Deno.args[0] ?? 3);
const gap = Number(Deno.env.get("GAP") ?? 2500);
const segs = Number(Deno.env.get("SEGS") ?? 5);
const dir = await Deno.makeTempDir({ prefix: "prox-idle-" });
try {
  await using backend = await startBackend(dir, "1");
  await using prox = await startProx(dir, { core: "0", backend: backend.port });
  const url = `http://127.0.0.1:${prox.port}/100b`;
  const run = (seconds: number) =>
    measure("wrk", url, { pid: prox.pid, core: "1", seconds, connections: 50 });
  await run(3);
  const table: { cpu: number; p99: number }[][] = [];
  for (let r = 0; r < rounds; r++) {
    await new Promise((ok) => setTimeout(ok, gap));
    const row = [];
    for (let s = 0; s < segs; s++) {
      const m = await run(1);
      row.push({ cpu: m.cpuUsPerReq, p99: m.p99 });
    }
    table.push(row);
    console.log(
      `round ${r + 1}: ` +
        row.map((x) => `${x.cpu.toFixed(0)} µs ${x.p99.toFixed(1)} ms`).join(" | "),
    );
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(
    `median after a ${gap} ms pause, second by second (CPU µs/req, p99): ` +
      Array.from(
        { length: segs },
        (_, s) =>
          `${median(table.map((r) => r[s].cpu)).toFixed(0)} µs ${
            median(table.map((r) => r[s].p99)).toFixed(1)
          } ms`,
      ).join(" | "),
  );
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
