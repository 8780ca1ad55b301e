// Load generators for the benchmark: wrk (HTTP/1.1) and h2load (HTTP/2 over TLS), pinned to a
// core, with their output parsed into one shape. CPU and memory of the proxy are sampled around
// each run from /proc.

import { cpuSeconds, rssBytes } from "./procs.ts";

/** One measured run. */
export interface RunResult {
  rps: number;
  /** Latency percentiles in milliseconds (h2load gives only the mean: p50 holds it, p99 NaN). */
  p50: number;
  p99: number;
  maxMs: number;
  requests: number;
  /** Errors: socket errors, timeouts (wrk: > --timeout), non-2xx/3xx responses, h2load failures. */
  errors: number;
  timeouts: number;
  /** Proxy CPU microseconds per request (user + system, all its processes). */
  cpuUsPerReq: number;
  /** Highest proxy RSS sampled during the run, bytes. */
  rssPeak: number;
}

/** Parses a wrk duration ("1.23ms", "456.00us", "2.00s") into milliseconds. */
export function parseDuration(s: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(s.trim());
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "ms" ? v : m[2] === "s" ? v * 1000 : v * 60_000;
}

/** Parses wrk --latency output. */
export function parseWrk(out: string): Omit<RunResult, "cpuUsPerReq" | "rssPeak"> {
  const pct = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+(\\S+)`, "m").exec(out);
    return m ? parseDuration(m[1]) : NaN;
  };
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const timeouts = sock ? Number(sock[4]) : 0;
  const errors = (sock ? Number(sock[1]) + Number(sock[2]) + Number(sock[3]) : 0) + timeouts +
    non2xx;
  const max = /Latency\s+\S+\s+\S+\s+(\S+)/.exec(out);
  return {
    rps,
    p50: pct("50"),
    p99: pct("99"),
    maxMs: max ? parseDuration(max[1]) : NaN,
    requests,
    errors,
    timeouts,
  };
}

/** Parses h2load output. */
export function parseH2load(out: string): Omit<RunResult, "cpuUsPerReq" | "rssPeak"> {
  const rps = Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const req =
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/
      .exec(out);
  const t = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(out);
  return {
    rps,
    p50: t ? parseDuration(t[3]) : NaN,
    p99: NaN,
    maxMs: t ? parseDuration(t[2]) : NaN,
    requests: req ? Number(req[4]) : 0,
    errors: req ? Number(req[5]) + Number(req[6]) : 0,
    timeouts: req ? Number(req[7]) : 0,
  };
}

/** Runs one load test against `url` and measures the proxy process `pid` meanwhile. */
export async function measure(
  tool: "wrk" | "h2load",
  url: string,
  o: {
    pid: number;
    core: string;
    seconds: number;
    connections: number;
    timeoutS?: number;
    /** A wrk Lua script (e.g. one that makes the requests POSTs). */
    script?: string;
    /** More h2load arguments (a body to POST, header fields). */
    h2loadArgs?: string[];
  },
): Promise<RunResult> {
  const args = tool === "wrk"
    ? [
      "wrk",
      "-t1",
      `-c${o.connections}`,
      `-d${o.seconds}s`,
      `--timeout`,
      `${o.timeoutS ?? 2}s`,
      "--latency",
      ...(o.script ? ["-s", o.script] : []),
      url,
    ]
    : [
      "h2load",
      "-c",
      String(o.connections),
      "-m",
      "10",
      "-D",
      String(o.seconds),
      ...(o.h2loadArgs ?? []),
      url,
    ];
  let rssPeak = rssBytes(o.pid);
  const sampler = setInterval(() => rssPeak = Math.max(rssPeak, rssBytes(o.pid)), 250);
  const cpu0 = cpuSeconds(o.pid);
  const out = await new Deno.Command("taskset", {
    args: ["-c", o.core, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const cpu1 = cpuSeconds(o.pid);
  clearInterval(sampler);
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const r = tool === "wrk" ? parseWrk(text) : parseH2load(text);
  if (!(r.requests > 0)) throw new Error(`${tool} produced no requests:\n${text}`);
  return { ...r, cpuUsPerReq: ((cpu1 - cpu0) * 1e6) / r.requests, rssPeak };
}
