// deno-lint-ignore-file no-console
// How fairly Deno serves many busy connections whose sockets JavaScript reads itself, against
// Deno.serve, which reads them in Rust. Both answer a 100-byte response by themselves; wrk keeps N
// keep-alive connections busy for a few seconds at each N and the table shows p99, max and wrk's
// timeouts (requests still unanswered after 2 s, counted every 2 s).
//   deno run -A bench/read_fairness.ts [seconds per run, default 5] [N,N,…]
// On the bench's 2-core VM (server pinned to core 0, wrk to core 1), on a quiet machine, the
// `Deno.listen` server kept p99 at 3–4 ms up to 125 connections and jumped to 19–340 ms at 150,
// with timeouts from a few hundred connections (at 1,000: p99 0.23–1.7 s in four series);
// Deno.serve stays fair. The step sits at tokio's cooperative budget of 128 (see
// docs/performance.md, eighth round): every socket read JavaScript starts is one future in one task
// of Deno's op driver, which shares one budget per poll.
// The middle row runs the same server with the turns Prox's engine takes (at most 64 connections
// reading or answering at once, the rest waiting in order: src/adapters/h1/read_gate.ts).
// Internal: `read_fairness.ts --serve listen|gated|serve PORT` is the server.
import { parseWrk } from "./load.ts";
import { freePort, spawn } from "./procs.ts";
import { readGate } from "../src/adapters/h1/read_gate.ts";

const BODY = "x".repeat(100);

if (Deno.args[0] === "--serve") {
  const port = Number(Deno.args[2]);
  if (Deno.args[1] === "serve") {
    Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, () => new Response(BODY));
  } else {
    const gated = Deno.args[1] === "gated";
    const answer = new TextEncoder().encode(
      `HTTP/1.1 200 OK\r\ncontent-length: ${BODY.length}\r\n\r\n${BODY}`,
    );
    // One read per request is enough for wrk's small GETs, which it sends one at a time.
    const serve = async (c: Deno.TcpConn) => {
      c.setNoDelay(true);
      const buf = new Uint8Array(8192);
      const turn = { turnEnds: -1, slot: -1 };
      for (;;) {
        // `gated`: Prox's engine's turns (src/adapters/h1/read_gate.ts) around each read and answer.
        if (gated) await readGate.enter(turn);
        try {
          if ((await c.read(buf)) === null) return;
          await c.write(answer);
        } finally {
          if (gated) readGate.leave(turn);
        }
      }
    };
    for await (const c of Deno.listen({ hostname: "127.0.0.1", port })) {
      serve(c as Deno.TcpConn).catch(() => c.close());
    }
  }
} else {
  const seconds = Number(Deno.args[0] ?? 5);
  const counts = (Deno.args[1] ?? "50,100,125,150,200,400,1000").split(",").map(Number);
  const run = async (mode: string, connections: number) => {
    const port = freePort();
    const server = await spawn(`the ${mode} server`, {
      core: "0",
      cmd: [Deno.execPath(), "run", "-A", import.meta.filename!, "--serve", mode, String(port)],
      ports: [port],
      stderr: "inherit",
    });
    try {
      const out = await new Deno.Command("taskset", {
        args: [
          "-c",
          "1",
          "wrk",
          "-t1",
          `-c${connections}`,
          `-d${seconds}s`,
          "--timeout",
          "2s",
          "--latency",
          `http://127.0.0.1:${port}/`,
        ],
        stdout: "piped",
      }).output();
      return parseWrk(new TextDecoder().decode(out.stdout));
    } finally {
      server.kill();
      await server.status;
    }
  };
  console.log("| connections | server | req/s | p50 ms | p99 ms | max ms | wrk timeouts |");
  console.log("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
  for (const n of counts) {
    for (const mode of ["listen", "gated", "serve"]) {
      const r = await run(mode, n);
      const name = mode === "listen"
        ? "Deno.listen, reads in JS"
        : mode === "gated"
        ? "the same with Prox's turns"
        : "Deno.serve";
      console.log(
        `| ${n} | ${name} | ${r.rps.toFixed(0)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${
          r.maxMs.toFixed(0)
        } | ${r.timeouts} |`,
      );
    }
  }
}
