// deno-lint-ignore-file no-console
// Profiles one proxy under wrk load:
//   deno run -A bench/profile.ts [prox|static|client|bare] [seconds] [path]
// Starts the nginx backend, runs the target with --cpu-prof pinned to core 0, loads it with wrk
// from core 1, then prints the top functions by self time from the V8 CPU profile.
// `static` is Prox serving the backend's files itself (one static route). Env: PROFILE_MIN=1 (Prox
// with one proxy route instead of the bench's config), PROFILE_POST=BYTES (POST bodies of that
// size to /post instead of GETs; the backend answers them), PROFILE_H2=1 (HTTP/2 over TLS with
// h2load, 10 connections × 10 streams, as in the bench; `prox` and `client` only), PROFILE_DENO=1
// (`prox` on Deno.serve, `protocols.http1_engine: deno`, instead of its own HTTP/1.1 engine),
// PROFILE_GRPC=1 (`prox` only: the bench's gRPC scenario, unary calls with h2load over h2c to the
// `upstream_protocol: h2c` route; PROFILE_GRPC_TIMEOUT=10S sends that `grpc-timeout` with each),
// PROFILE_SAVE=FILE (the V8 CPU profile kept there).
import { freePort, proxConfig, spawn, startBackend, TLS } from "./procs.ts";
import { ROOT } from "../tests/_harness.ts";
import { V8_FLAGS } from "../tests/integration/_process.ts";

const which = Deno.args[0] ?? "prox";
const seconds = Number(Deno.args[1] ?? 5);
const dir = await Deno.makeTempDir({ prefix: "prox-prof-" });
await using backend = await startBackend(dir, "1");
const port = freePort();
const h2 = Deno.env.get("PROFILE_H2") === "1";
const grpc = Deno.env.get("PROFILE_GRPC") === "1";
const grpcTimeout = Deno.env.get("PROFILE_GRPC_TIMEOUT");
const conf = `${dir}/prox.yaml`;
const oneRoute = (route: string) =>
  `listen_addr: "127.0.0.1:${port}"\nhealth_check: { enabled: false }\nlog: { level: warn, access_log: false }\nroutes: { "/": ${route} }\n`;
await Deno.writeTextFile(
  conf,
  which === "static"
    ? oneRoute(`{ type: static, root: "${dir}/www" }`)
    : Deno.env.get("PROFILE_MIN")
    ? oneRoute(`{ type: proxy, target: "http://127.0.0.1:${backend.port}" }`)
    : proxConfig({
      port,
      backend: backend.port,
      tls: h2,
      backendH2c: grpc ? backend.h2cPort : undefined,
      engine: Deno.env.get("PROFILE_DENO") === "1" ? "deno" : undefined,
    }),
);
const post = Number(Deno.env.get("PROFILE_POST") ?? 0);
const script = `${dir}/post.lua`;
if (post > 0) {
  await Deno.writeTextFile(
    script,
    `wrk.method = "POST"\nwrk.body = string.rep("x", ${post})\n`,
  );
}
const args = which === "prox" || which === "static"
  // With the V8 flags Prox ships with (the Makefile's), as the bench runs it.
  ? [V8_FLAGS, `--config=${ROOT}/deno.json`, `${ROOT}/mod.ts`, "serve", "-c", conf]
  : which === "bare"
  ? [`${ROOT}/bench/bare_proxy.ts`, String(port), String(backend.port)]
  : h2
  // client_proxy.ts serves TLS on its third port: give it this one and its plain listener another.
  ? [
    `${ROOT}/bench/client_proxy.ts`,
    String(freePort()),
    String(backend.port),
    String(port),
    TLS.cert,
    TLS.key,
  ]
  : [`${ROOT}/bench/client_proxy.ts`, String(port), String(backend.port)];
const child = await spawn(which, {
  core: "0",
  cmd: [Deno.execPath(), "run", "-A", `--cpu-prof`, `--cpu-prof-dir=${dir}/prof`, ...args],
  ports: [port],
  // PROX_H1_ENGINE in the caller's environment would override the config's engine.
  env: { PROX_LOG_LEVEL: "warn", PROX_H1_ENGINE: "" },
  stderr: "inherit",
});
const path = Deno.args[2] ?? (grpc ? "/grpc.Bench/Call" : post > 0 ? "/post" : "/100b");
// As run.ts sends it: a gRPC message of 5 bytes of framing and 15 of payload.
const grpcData = `${dir}/grpc-request.bin`;
if (grpc) await Deno.writeFile(grpcData, Uint8Array.from([0, 0, 0, 0, 15, ...new Uint8Array(15)]));
// h2load as the bench runs it: 10 connections × 10 streams, from core 1.
const h2load = ["-c", "1", "h2load", "-c", "10", "-m", "10", "-D", String(seconds)];
const out = await new Deno.Command("taskset", {
  args: grpc
    ? [
      ...h2load,
      "-H",
      "content-type: application/grpc",
      "-H",
      "te: trailers",
      ...(grpcTimeout ? ["-H", `grpc-timeout: ${grpcTimeout}`] : []),
      "-d",
      grpcData,
      `http://127.0.0.1:${port}${path}`,
    ]
    : h2
    ? [...h2load, `https://127.0.0.1:${port}${path}`]
    : [
      "-c",
      "1",
      "wrk",
      "-t1",
      "-c50",
      `-d${seconds}s`,
      "--latency",
      ...(post > 0 ? ["-s", script] : []),
      `http://127.0.0.1:${port}${path}`,
    ],
  stdout: "piped",
}).output();
console.log(
  new TextDecoder().decode(out.stdout).split("\n").filter((l) =>
    /Req|99%|50%|finished in|requests:/.test(l)
  ).join("\n"),
);
const ss = await new Deno.Command("ss", { args: ["-tan"], stdout: "piped" }).output();
const lines = new TextDecoder().decode(ss.stdout).split("\n").filter((l) =>
  l.includes(`:${backend.port}`)
);
console.log(
  `backend sockets: ${lines.length}, TIME-WAIT: ${
    lines.filter((l) => l.startsWith("TIME-WAIT")).length
  }`,
);
child.kill("SIGINT");
await child.status;
for await (const f of Deno.readDir(`${dir}/prof`)) {
  const text = await Deno.readTextFile(`${dir}/prof/${f.name}`);
  // PROFILE_SAVE=FILE keeps the profile (for Chrome's DevTools, or another look).
  const save = Deno.env.get("PROFILE_SAVE");
  if (save) await Deno.writeTextFile(save, text);
  const prof = JSON.parse(text);
  const self = new Map<string, number>();
  const byId = new Map<
    number,
    { callFrame: { functionName: string; url: string; lineNumber: number } }
  >();
  for (const n of prof.nodes) byId.set(n.id, n);
  const dt = prof.timeDeltas as number[];
  let total = 0;
  (prof.samples as number[]).forEach((id, i) => {
    const n = byId.get(id)!;
    const cf = n.callFrame;
    const key = `${cf.functionName || "(anon)"} ${cf.url.split("/").slice(-2).join("/")}:${
      cf.lineNumber + 1
    }`;
    self.set(key, (self.get(key) ?? 0) + dt[i]);
    total += dt[i];
  });
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  (prof.samples as number[]).forEach((id, i) => {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      if (!cf.url.includes("/src/") && !cf.url.includes("ext:")) continue;
      seen.add(
        `${cf.functionName || "(anon)"} ${cf.url.split("/").slice(-2).join("/")}:${
          cf.lineNumber + 1
        }`,
      );
    }
    for (const k of seen) incl.set(k, (incl.get(k) ?? 0) + dt[i]);
  });
  console.log("--- inclusive ---");
  for (const [k, v] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, 45)) {
    console.log(`${(100 * v / total).toFixed(1).padStart(5)}%  ${k}`);
  }
  console.log("--- self ---");
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 40);
  for (const [k, v] of top) console.log(`${(100 * v / total).toFixed(1).padStart(5)}%  ${k}`);
}
await Deno.remove(dir, { recursive: true });
