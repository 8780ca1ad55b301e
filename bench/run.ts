// deno-lint-ignore-file no-console
// `make bench`: Prox (as shipped, and over HTTP/1.1 also on Deno.serve instead of its own engine:
// `prox-deno`) side by side with nginx and haproxy (plus fetch()- and Hono-based Deno proxies,
// Deno.serve with a bare client and with Prox's upstream client alone to split the cost, and
// Deno.serve answering by itself, the ceiling of anything built on it) in front of one nginx
// backend.
// Proxies run on core 0, load generator and backend on core 1; runs alternate proxies
// (A B A B …) and report medians, CPU µs per request, RSS and ratios to nginx.
// Env: BENCH_SECONDS (5), BENCH_RUNS (3), BENCH_ONLY (comma list of scenario names, h3 and
// workers),
// BENCH_V8_FLAGS (Prox's V8 flags; default as shipped).
// Output: bench/results/<stamp>.json and .md, and the table on stdout.

import { measure } from "./load.ts";
import type { RunResult } from "./load.ts";
import {
  startBackend,
  startClientProxy,
  startFetchProxy,
  startHaproxy,
  startNginxProxy,
  startProx,
  startServeAlone,
} from "./procs.ts";
import type { Proc } from "./procs.ts";

const SECONDS = Number(Deno.env.get("BENCH_SECONDS") ?? 5);
const RUNS = Number(Deno.env.get("BENCH_RUNS") ?? 3);
const ONLY = Deno.env.get("BENCH_ONLY")?.split(",");
const PROXY_CORE = "0";
const LOAD_CORE = "1";

interface Scenario {
  name: string;
  tool: "wrk" | "h2load";
  path: string;
  connections: number;
  proxies: string[];
  runs: number;
  seconds: number;
  tls?: boolean;
  /** HTTP/2 with prior knowledge on the proxy's h2c port (its plain port when it has none). */
  h2c?: boolean;
  /** POST a body of this many bytes instead of GET (a wrk script). */
  postBytes?: number;
  /** More h2load arguments. */
  h2loadArgs?: string[];
}

const SCENARIOS: Scenario[] = [
  {
    name: "h1-100b",
    tool: "wrk",
    path: "/100b",
    connections: 50,
    proxies: [
      "prox",
      "prox-deno",
      "nginx",
      "haproxy",
      "deno-fetch",
      "deno-hono",
      "deno-bare",
      "deno-raw",
      "deno-h1client",
      "deno-serve",
    ],
    runs: RUNS,
    seconds: SECONDS,
  },
  {
    name: "h1-64k",
    tool: "wrk",
    path: "/64k",
    connections: 50,
    proxies: ["prox", "prox-deno", "nginx", "haproxy", "deno-raw"],
    runs: RUNS,
    seconds: SECONDS,
  },
  {
    // Not an issue-12 target: request bodies, 1 KiB each (an API's POST), 100 B answers.
    name: "h1-post-1k",
    tool: "wrk",
    path: "/post",
    connections: 50,
    proxies: ["prox", "prox-deno", "nginx", "haproxy"],
    runs: RUNS,
    seconds: SECONDS,
    postBytes: 1024,
  },
  {
    name: "h2-tls-100b",
    tool: "h2load",
    path: "/100b",
    connections: 10,
    proxies: ["prox", "nginx", "haproxy", "deno-h1client", "deno-serve"],
    runs: RUNS,
    seconds: SECONDS,
    tls: true,
  },
  {
    // Not an issue-12 target: a gRPC-like unary call over h2c (a 20-byte POST, 100 B answers) to
    // an h2c backend: Prox's `upstream_protocol: h2c` against nginx's `grpc_pass`.
    name: "grpc-h2c-100b",
    tool: "h2load",
    path: "/grpc.Bench/Call",
    connections: 10,
    proxies: ["prox", "nginx"],
    runs: RUNS,
    seconds: SECONDS,
    h2c: true,
    h2loadArgs: ["-H", "content-type: application/grpc", "-H", "te: trailers"],
  },
  {
    name: "overload-1000c",
    tool: "wrk",
    path: "/100b",
    connections: 1000,
    proxies: ["prox", "prox-deno", "nginx"],
    runs: 1,
    seconds: Math.max(SECONDS, 10),
  },
];

interface Row {
  scenario: string;
  proxy: string;
  runs: RunResult[];
  median: RunResult;
  rssAfterMiB?: number;
}

function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function medianRun(runs: RunResult[]): RunResult {
  const keys = Object.keys(runs[0]) as (keyof RunResult)[];
  return Object.fromEntries(
    keys.map((k) => [k, median(runs.map((r) => r[k]))]),
  ) as unknown as RunResult;
}

async function machine(): Promise<Record<string, string>> {
  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
  const cmd = async (c: string, args: string[]) => {
    try {
      const o = await new Deno.Command(c, { args, stdout: "piped", stderr: "piped" }).output();
      return (new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr)).trim()
        .split("\n")[0];
    } catch {
      return "missing";
    }
  };
  return {
    cpu: cpu ?? "unknown",
    cores: String(navigator.hardwareConcurrency),
    kernel: await cmd("uname", ["-r"]),
    deno: Deno.version.deno,
    nginx: await cmd("nginx", ["-v"]),
    haproxy: await cmd("haproxy", ["-v"]),
    wrk: await cmd("wrk", ["-v"]),
    loadavg: (await Deno.readTextFile("/proc/loadavg")).trim(),
  };
}

const f0 = (x: number) => Number.isNaN(x) ? "–" : Math.round(x).toLocaleString("en-US");
const f2 = (x: number) => Number.isNaN(x) ? "–" : x.toFixed(2);

function table(rows: Row[]): string {
  const out = [
    "| Scenario | Proxy | req/s | p50 ms | p99 ms | max ms | errors | CPU µs/req | RSS MiB | req/s ÷ nginx | CPU ÷ nginx |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of rows) {
    const ngx = rows.find((x) => x.scenario === r.scenario && x.proxy === "nginx")?.median;
    const m = r.median;
    const rss = (m.rssPeak / 1048576).toFixed(0) +
      (r.rssAfterMiB !== undefined ? ` (after: ${r.rssAfterMiB.toFixed(0)})` : "");
    out.push(
      `| ${r.scenario} | ${r.proxy} | ${f0(m.rps)} | ${f2(m.p50)} | ${f2(m.p99)} | ${
        f0(m.maxMs)
      } | ${f0(m.errors)} | ${f0(m.cpuUsPerReq)} | ${rss} | ${ngx ? f2(m.rps / ngx.rps) : "–"} | ${
        ngx ? f2(m.cpuUsPerReq / ngx.cpuUsPerReq) : "–"
      } |`,
    );
  }
  return out.join("\n");
}

/**
 * Prox's rows: `prox` as shipped (its own HTTP/1.1 engine on the plain listener, Deno.serve on the
 * TLS one) and `prox-deno` (`protocols.http1_engine: deno`: the plain listener on Deno.serve).
 */
const PROX_ROWS = [["prox", ""], ["prox-deno", ", on Deno.serve"]] as const;

/** The issue-12 targets, checked against the medians. */
function targets(rows: Row[]): string[] {
  const get = (s: string, p: string) => rows.find((r) => r.scenario === s && r.proxy === p)?.median;
  const lines: string[] = [];
  const check = (what: string, ok: boolean | undefined, detail: string) => {
    if (ok !== undefined) lines.push(`- ${ok ? "PASS" : "MISS"} ${what}: ${detail}`);
  };
  const ratio = (s: string, min: number, what: string, proxy = "prox") => {
    const p = get(s, proxy), n = get(s, "nginx");
    if (p && n) check(what, p.rps / n.rps >= min, `${f2(p.rps / n.rps)}× nginx (target ${min}×)`);
  };
  ratio("h1-100b", 0.7, "HTTP/1.1 100 B req/s");
  ratio("h1-100b", 0.7, "HTTP/1.1 100 B req/s, on Deno.serve", "prox-deno");
  ratio("h1-64k", 0.7, "HTTP/1.1 64 KiB req/s");
  ratio("h1-64k", 0.7, "HTTP/1.1 64 KiB req/s, on Deno.serve", "prox-deno");
  ratio("h2-tls-100b", 0.6, "HTTP/2 TLS req/s");
  const n = get("h1-100b", "nginx");
  for (const [proxy, what] of PROX_ROWS) {
    const p = get("h1-100b", proxy);
    if (p && n) {
      check(
        `HTTP/1.1 100 B p99${what}`,
        p.p99 <= 2 * n.p99,
        `${f2(p.p99)} ms vs nginx ${f2(n.p99)} ms`,
      );
    }
  }
  for (const [proxy, engine] of PROX_ROWS) {
    const p = get("h1-100b", proxy);
    for (
      const [name, what] of [["deno-fetch", "fetch() proxy"], ["deno-hono", "Hono's proxy helper"]]
    ) {
      const b = get("h1-100b", name);
      if (p && b) {
        check(`vs ${what}${engine}`, p.rps / b.rps >= 2.5, `${f2(p.rps / b.rps)}× (target 2.5×)`);
      }
    }
  }
  for (const s of ["h1-100b", "h2-tls-100b"]) {
    const n = get(s, "nginx"), alone = get(s, "deno-serve"), client = get(s, "deno-h1client");
    const bare = get(s, "deno-bare");
    if (!n || !alone) continue;
    lines.push(
      `- note ${s}: Deno.serve answering by itself reaches ${f2(alone.rps / n.rps)}× nginx` +
        (bare ? `, with a bare client (no checks) ${f2(bare.rps / n.rps)}×` : "") +
        (client ? `, with Prox's upstream client alone ${f2(client.rps / n.rps)}×` : "") +
        ": no proxy built on them can go faster",
    );
  }
  for (const s of ["h1-100b", "h1-64k"]) {
    const n = get(s, "nginx"), raw = get(s, "deno-raw");
    if (!n || !raw) continue;
    lines.push(
      `- note ${s}: a relay on raw sockets (no Deno.serve, no Fetch objects) reaches ` +
        `${f2(raw.rps / n.rps)}× nginx: the bound for Prox's own HTTP/1.1 engine`,
    );
  }
  for (const [proxy, what] of PROX_ROWS) {
    const o = rows.find((r) => r.scenario === "overload-1000c" && r.proxy === proxy);
    if (!o) continue;
    check(
      `1,000 connections${what}: none over 2 s`,
      o.median.timeouts === 0 && o.median.maxMs < 2000,
      `max ${f0(o.median.maxMs)} ms, ${o.median.timeouts} timeouts`,
    );
    check(`1,000 connections${what}: p99 < 500 ms`, o.median.p99 < 500, `${f2(o.median.p99)} ms`);
    check(
      `RSS under load < 100 MiB${what}`,
      o.median.rssPeak < 100 * 1048576,
      `${f0(o.median.rssPeak / 1048576)} MiB`,
    );
    if (o.rssAfterMiB !== undefined) {
      check(
        `RSS after the burst < 130 MiB${what}`,
        o.rssAfterMiB < 130,
        `${f0(o.rssAfterMiB)} MiB`,
      );
    }
  }
  return lines;
}

/** HTTP/3: 50 MiB downloads with gtlsclient from Prox and from Caddy (bench/h3_download.ts). */
async function h3Download(): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./h3_download.ts", import.meta.url).pathname,
      "--runs",
      "3",
      "--json",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (out.code !== 0 || !text.startsWith("{")) {
    const why = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1);
    return ["HTTP/3 download: not measured (" + (why || "bench/h3_download.ts failed") + ")", ""];
  }
  const r = JSON.parse(text) as {
    mb: number;
    runs: number;
    results: { server: string; route: string; seconds: number; mibPerSec: number }[];
  };
  return [
    `HTTP/3 download of ${r.mb} MiB with gtlsclient (median of ${r.runs}):`,
    "",
    "| Server | Route | seconds | MiB/s |",
    "| --- | --- | ---: | ---: |",
    ...r.results.map((x) =>
      `| ${x.server} | ${x.route} | ${x.seconds.toFixed(2)} | ${x.mibPerSec.toFixed(1)} |`
    ),
    "",
  ];
}

/** Multi-core scaling (bench/workers.ts): its table, and the target line. */
async function workersScaling(): Promise<{ lines: string[]; target: string }> {
  const json = await Deno.makeTempFile({ prefix: "prox-bench-workers-", suffix: ".json" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./workers.ts", import.meta.url).pathname,
        "--rounds",
        String(RUNS),
        "--seconds",
        String(SECONDS),
        "--json",
        json,
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    const text = out.code === 0 ? await Deno.readTextFile(json) : "";
    if (!text.startsWith("{")) {
      const why = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1);
      const what = `not measured (${why || "bench/workers.ts failed"})`;
      return { lines: [`Multi-core scaling: ${what}`, ""], target: `- MISS multi-core: ${what}` };
    }
    const r = JSON.parse(text) as {
      rounds: number;
      loadAverageAfter: string;
      results: Record<string, { rps: number; p99Ms: number; cpuUsPerReq: number }>;
      nginxScaling: number;
      proxScaling: number;
      relativeScaling: number;
    };
    return {
      lines: [
        `Multi-core scaling (bench/workers.ts: a 100-byte static file, unpinned, wrk -t1 -c50, median of ${r.rounds}; load average after: ${r.loadAverageAfter}):`,
        "",
        "| Server | req/s | p99 ms | CPU µs/req |",
        "| --- | ---: | ---: | ---: |",
        ...Object.entries(r.results).map(([name, x]) =>
          `| ${name} | ${f0(x.rps)} | ${f2(x.p99Ms)} | ${f0(x.cpuUsPerReq)} |`
        ),
        "",
      ],
      target:
        `- ${r.relativeScaling >= 0.9 ? "PASS" : "MISS"} multi-core: Prox's 2-worker/1-worker ` +
        `throughput ${f2(r.proxScaling)}×, nginx's ${f2(r.nginxScaling)}×: ${
          f2(r.relativeScaling)
        } of nginx's scaling (target 0.9)`,
    };
  } finally {
    await Deno.remove(json).catch(() => {});
  }
}

async function main() {
  const dir = await Deno.makeTempDir({ prefix: "prox-bench-" });
  const started: Proc[] = [];
  const rows: Row[] = [];
  try {
    const backend = await startBackend(dir, LOAD_CORE);
    started.push(backend);
    const o = { core: PROXY_CORE, backend: backend.port, backendH2c: backend.h2cPort };
    const procs: Record<string, Proc> = {};
    const scenarios = SCENARIOS.filter((s) => !ONLY || ONLY.includes(s.name));
    const wanted = new Set(scenarios.flatMap((s) => s.proxies));
    for (const name of wanted) {
      const p = name === "prox"
        ? await startProx(dir, o)
        : name === "prox-deno"
        ? await startProx(dir, { ...o, engine: "deno" })
        : name === "nginx"
        ? await startNginxProxy(dir, o)
        : name === "haproxy"
        ? await startHaproxy(dir, o)
        : name === "deno-fetch" || name === "deno-hono" || name === "deno-bare" ||
            name === "deno-raw"
        ? await startFetchProxy(o, name)
        : name === "deno-serve"
        ? await startServeAlone(o)
        : await startClientProxy(o);
      started.push(p);
      procs[name] = p;
    }
    console.log(
      `Proxies pinned to core ${PROXY_CORE}; backend (nginx) and load generator on core ${LOAD_CORE}; ${SECONDS}s runs, ${RUNS} alternating runs, medians.`,
    );
    for (const s of scenarios) {
      let script: string | undefined;
      let h2loadArgs = s.h2loadArgs;
      if (s.h2c) {
        // A gRPC message: 5 bytes of framing and 15 of payload.
        const data = `${dir}/grpc-request.bin`;
        await Deno.writeFile(data, Uint8Array.from([0, 0, 0, 0, 15, ...new Uint8Array(15)]));
        h2loadArgs = [...(h2loadArgs ?? []), "-d", data];
      }
      if (s.postBytes) {
        script = `${dir}/post-${s.postBytes}.lua`;
        await Deno.writeTextFile(
          script,
          `wrk.method = "POST"\nwrk.body = string.rep("x", ${s.postBytes})\n` +
            `wrk.headers["Content-Type"] = "application/octet-stream"\n`,
        );
      }
      const target = (p: Proc) => ({
        url: s.tls
          ? `https://127.0.0.1:${p.tlsPort}${s.path}`
          : `http://127.0.0.1:${s.h2c ? p.h2cPort ?? p.port : p.port}${s.path}`,
        pid: s.tls ? p.tlsPid ?? p.pid : p.pid,
      });
      // Warm-up (JIT, pools; Prox needs a few seconds to settle) for every proxy, then A B A B …
      for (const name of s.proxies) {
        const t = target(procs[name]);
        await measure(s.tool, t.url, {
          ...t,
          core: LOAD_CORE,
          seconds: 3,
          connections: Math.min(s.connections, 50),
          script,
          h2loadArgs,
        });
      }
      const runs = new Map<string, RunResult[]>(s.proxies.map((p) => [p, []]));
      for (let i = 0; i < s.runs; i++) {
        for (const name of s.proxies) {
          const t = target(procs[name]);
          const r = await measure(s.tool, t.url, {
            ...t,
            core: LOAD_CORE,
            seconds: s.seconds,
            connections: s.connections,
            script,
            h2loadArgs,
          });
          runs.get(name)!.push(r);
          console.log(
            `${s.name} ${name} run ${i + 1}: ${f0(r.rps)} req/s, p99 ${f2(r.p99)} ms, ${
              f0(r.cpuUsPerReq)
            } µs/req`,
          );
        }
      }
      for (const [name, rs] of runs) {
        const row: Row = { scenario: s.name, proxy: name, runs: rs, median: medianRun(rs) };
        if (s.name.startsWith("overload")) {
          await new Promise((r) => setTimeout(r, 2000));
          const { rssBytes } = await import("./procs.ts");
          row.rssAfterMiB = rssBytes(target(procs[name]).pid) / 1048576;
        }
        rows.push(row);
      }
    }
  } finally {
    for (const p of started.reverse()) await p[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const h3 = !ONLY || ONLY.includes("h3") ? await h3Download() : [];
  const workers = !ONLY || ONLY.includes("workers") ? await workersScaling() : undefined;
  const info = await machine();
  const date = new Date().toISOString();
  const md = [
    `## Prox benchmark, ${date}`,
    "",
    `Machine: ${info.cpu}, ${info.cores} cores, Linux ${info.kernel}, Deno ${info.deno}, ${info.nginx}, ${info.haproxy}; load average at the end: ${info.loadavg}.`,
    `Layout: each proxy pinned to core ${PROXY_CORE} (taskset); nginx backend and wrk/h2load on core ${LOAD_CORE}. wrk: 1 thread, 50 connections (overload: 1,000, 2 s timeout); h2load: 10 connections × 10 streams over TLS. ${SECONDS}s per run, ${RUNS} runs alternating proxies, medians. CPU = user+system time of the proxy's processes ÷ requests.`,
    "",
    table(rows),
    "",
    "Targets (issue 12):",
    ...targets(rows),
    ...(workers ? [workers.target] : []),
    "",
    ...h3,
    ...(workers?.lines ?? []),
  ].join("\n");
  const outDir = new URL("./results/", import.meta.url);
  await Deno.mkdir(outDir, { recursive: true });
  const stamp = date.replace(/[:.]/g, "-");
  await Deno.writeTextFile(
    new URL(`${stamp}.json`, outDir),
    JSON.stringify({ date, machine: info, rows }, null, 2),
  );
  await Deno.writeTextFile(new URL(`${stamp}.md`, outDir), md);
  await Deno.writeTextFile(new URL("latest.md", outDir), md);
  console.log("\n" + md);
}

if (import.meta.main) await main();
