// deno-lint-ignore-file no-console
// HTTP/1.0 clients (ApacheBench, many health checkers) against Prox on each engine and nginx:
// `ab` with and without keep-alive, CPU per request of each proxy (pinned to one core).
//
//   deno run -A bench/ab_h10.ts [--requests 20000] [--concurrency 50] [--rounds 2]
import { parseArgs } from "node:util";
import { cpuSeconds, startBackend, startNginxProxy, startProx } from "./procs.ts";
import type { Proc } from "./procs.ts";

const { values: o } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "50" },
    rounds: { type: "string", default: "2" },
  },
});
try {
  await new Deno.Command("ab", { args: ["-V"], stdout: "null", stderr: "null" }).output();
} catch {
  console.error("bench/ab_h10.ts needs ApacheBench: apt-get install -y apache2-utils");
  Deno.exit(2);
}
const dir = await Deno.makeTempDir({ prefix: "prox-ab-" });
await using backend = await startBackend(dir, "1");
const procs: Proc[] = [
  await startProx(dir, { core: "0", backend: backend.port }),
  await startProx(dir, { core: "0", backend: backend.port, engine: "deno" }),
  await startNginxProxy(dir, { core: "0", backend: backend.port }),
];
const names = ["prox", "prox-deno", "nginx"];
const results = new Map<string, number[]>();
for (let r = 0; r < Number(o.rounds); r++) {
  for (const keep of [false, true]) {
    for (const [i, p] of procs.entries()) {
      const args = ["-c", "1", "ab", "-q", "-n", o.requests, "-c", o.concurrency];
      if (keep) args.push("-k");
      args.push(`http://127.0.0.1:${p.port}/100b`);
      const before = cpuSeconds(p.pid);
      const out = await new Deno.Command("taskset", { args, stdout: "piped", stderr: "piped" })
        .output();
      const cpu = cpuSeconds(p.pid) - before;
      const text = new TextDecoder().decode(out.stdout);
      const failed = Number(/Failed requests:\s+(\d+)/.exec(text)?.[1] ?? NaN);
      const rps = Number(/Requests per second:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
      const key = `${names[i]} ${keep ? "keep-alive" : "close"}`;
      const us = cpu * 1e6 / Number(o.requests);
      (results.get(key) ?? results.set(key, []).get(key)!).push(us);
      console.log(`${key}: ${rps} req/s, ${us.toFixed(1)} µs CPU/request, failed ${failed}`);
    }
  }
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
for (const [k, v] of results) console.log(`median ${k}: ${median(v).toFixed(1)} µs`);
for (const p of procs) await p[Symbol.asyncDispose]();
