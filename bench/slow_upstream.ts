// deno-lint-ignore-file no-console
// Prox on Deno.serve against Prox on its own HTTP/1.1 engine when the upstream takes a while to
// answer (an application, not nginx serving a file): wrk keeps N keep-alive connections busy for a
// few seconds per upstream delay. The engine's turns (src/adapters/h1/read_gate.ts: at most 64
// connections reading or serving a request at once) lasted up to 0.1 s while a request waited for
// its upstream, which let at most 64 requests through per min(delay, 0.1 s): with a 50 ms upstream
// and 250 connections, 1,128 req/s on the engine against 2,472 on Deno.serve (27 November, 2
// shared cores). With turns of 5–10 ms the engine was ahead of Deno.serve in every row (0, 20, 50,
// 200 ms; a busier hour: 2,046/1,492, 1,929/1,414, 1,485/1,340, 1,031/925 req/s). The upstream
// pool (256 connections) caps both at 256 / delay.
//   deno run -A bench/slow_upstream.ts [seconds per run, default 4] [delays ms, default 0,20,50,200]
//     [connections, default 250]
// Internal: `slow_upstream.ts --upstream PORT DELAY_MS` is the upstream.
import { parseWrk } from "./load.ts";
import { freePort, startProx, waitPort } from "./procs.ts";

if (Deno.args[0] === "--upstream") {
  const delay = Number(Deno.args[2]);
  Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.args[1]), onListen() {} }, async () => {
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    return new Response("x".repeat(100));
  });
} else {
  const seconds = Number(Deno.args[0] ?? 4);
  const delays = (Deno.args[1] ?? "0,20,50,200").split(",").map(Number);
  const connections = Number(Deno.args[2] ?? 250);
  const dir = await Deno.makeTempDir({ prefix: "prox-slow-upstream-" });
  console.log("| upstream delay | Prox on | req/s | p50 ms | p99 ms | max ms |");
  console.log("| ---: | --- | ---: | ---: | ---: | ---: |");
  try {
    for (const delay of delays) {
      const backend = freePort();
      const upstream = new Deno.Command("taskset", {
        args: [
          "-c",
          "1",
          Deno.execPath(),
          "run",
          "-A",
          import.meta.filename!,
          "--upstream",
          String(backend),
          String(delay),
        ],
        stdout: "null",
      }).spawn();
      try {
        await waitPort(backend, "the upstream");
        for (const engine of ["deno", undefined] as const) {
          await using prox = await startProx(dir, { core: "0", backend, engine });
          const out = await new Deno.Command("taskset", {
            args: [
              "-c",
              "1",
              "wrk",
              "-t1",
              `-c${connections}`,
              `-d${seconds}s`,
              "--timeout",
              "5s",
              "--latency",
              `http://127.0.0.1:${prox.port}/`,
            ],
            stdout: "piped",
          }).output();
          const r = parseWrk(new TextDecoder().decode(out.stdout));
          console.log(
            `| ${delay} ms | ${engine ? "Deno.serve" : "its own engine"} | ${r.rps.toFixed(0)} | ${
              r.p50.toFixed(1)
            } | ${r.p99.toFixed(1)} | ${r.maxMs.toFixed(0)} |`,
          );
        }
      } finally {
        upstream.kill();
        await upstream.status;
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
