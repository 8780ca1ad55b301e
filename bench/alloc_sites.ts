// deno-lint-ignore-file no-console
// Where Prox makes ArrayBuffers under load: runs it with the bench's config (alloc_preload.ts
// preloaded, pinned to core 0), loads it for 4 s (wrk over HTTP/1.1, or h2load over TLS with
// `--h2`; `--grpc`: unary gRPC calls over h2c, as the bench's gRPC scenario), and prints the
// allocations per request (start-up's counted in) by call site (one in 64 sampled at random).
// `--post BYTES`: POSTs with a body of that size to /post over HTTP/1.1.
//   deno run -A bench/alloc_sites.ts [--h2 | --grpc | --post BYTES] [--path /100b]
import { parseArgs } from "node:util";
import { freePort, proxConfig, spawn, startBackend } from "./procs.ts";
import { ROOT } from "../tests/_harness.ts";

const { values: o } = parseArgs({
  args: Deno.args,
  options: {
    h2: { type: "boolean", default: false },
    grpc: { type: "boolean", default: false },
    path: { type: "string" },
    post: { type: "string", default: "0" },
  },
});
const dir = await Deno.makeTempDir({ prefix: "prox-alloc-" });
await using backend = await startBackend(dir, "1");
const port = freePort();
const conf = `${dir}/prox.yaml`;
await Deno.writeTextFile(
  conf,
  proxConfig({ port, backend: backend.port, tls: o.h2, backendH2c: backend.h2cPort }),
);
// As run.ts sends it: a gRPC message of 5 bytes of framing and 15 of payload.
const grpcData = `${dir}/grpc-request.bin`;
await Deno.writeFile(grpcData, Uint8Array.from([0, 0, 0, 0, 15, ...new Uint8Array(15)]));
const child = await spawn("prox", {
  core: "0",
  cmd: [
    Deno.execPath(),
    "run",
    "-A",
    `--preload=${ROOT}/bench/alloc_preload.ts`,
    `--config=${ROOT}/deno.json`,
    `${ROOT}/mod.ts`,
    "serve",
    "-c",
    conf,
  ],
  ports: [port],
  env: { PROX_LOG_LEVEL: "warn", PROX_H1_ENGINE: "" },
  stderr: "piped",
});
const post = Number(o.post);
const script = `${dir}/post.lua`;
await Deno.writeTextFile(script, `wrk.method = "POST"\nwrk.body = string.rep("x", ${post})\n`);
const url = o.grpc
  ? `http://127.0.0.1:${port}/grpc.Bench/Call`
  : `${o.h2 ? "https" : "http"}://127.0.0.1:${port}${o.path ?? (post > 0 ? "/post" : "/100b")}`;
const grpcArgs = ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", grpcData];
const load = await new Deno.Command("taskset", {
  args: o.h2 || o.grpc
    ? ["-c", "1", "h2load", "-c", "10", "-m", "10", "-D", "4", ...(o.grpc ? grpcArgs : []), url]
    : ["-c", "1", "wrk", "-t1", "-c50", "-d4s", ...(post > 0 ? ["-s", script] : []), url],
  stdout: "piped",
}).output();
const text = new TextDecoder().decode(load.stdout);
const requests = Number(
  (o.h2 || o.grpc ? /requests: (\d+) total/ : /(\d+) requests in/).exec(text)?.[1] ?? NaN,
);
child.kill("SIGWINCH");
const report: string[] = [];
const lines = child.stderr.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines());
for await (const line of lines) {
  report.push(line);
  if (line === "END") break;
}
child.kill("SIGTERM");
await child.status;
const at = report.findIndex((l) => l.startsWith("ALLOCATIONS "));
if (at < 0) throw new Error("No report from the preloaded counter");
const made = Number(report[at].split(" ")[1]);
console.log(
  `${requests} requests, ${made} ArrayBuffers: ${(made / requests).toFixed(3)} per request`,
);
for (const line of report.slice(at + 1).filter((l) => l.includes(" @ "))) {
  const [n, site] = [Number(line.trim().split(/\s+/)[0]), line.trim().replace(/^\d+\s+/, "")];
  console.log(`${(n / requests).toFixed(3).padStart(8)}  ${site}`);
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, c) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const p of parts) c.enqueue(p);
    },
  });
}
