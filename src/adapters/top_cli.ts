// `prox top`: polls a running Prox's admin listener (`/metrics` and `/status`) every interval
// and shows what changed (src/domain/top.ts) as a refreshing screen or, with --format json, as
// one JSON snapshot per interval. --once takes two polls one interval apart and exits.

import { parseDuration } from "../config/duration.ts";
import { parseListenAddr } from "../config/listen.ts";
import { parsePromText } from "../domain/prom_text.ts";
import { notProxStatus, TOP_METRICS, topSnapshot } from "../domain/top.ts";
import type { TopPoll, TopStatus } from "../domain/top.ts";
import { layoutTop } from "../domain/top_layout.ts";
import { ConfigReadError, configReadError, loadSource } from "./config_source.ts";

/** What `prox top` was asked for on the command line. */
export interface TopOptions {
  /** `-c FILE`: the admin address and token come from its `admin` block. */
  config?: string;
  admin?: string;
  token?: string;
  interval?: string;
  once: boolean;
  format: "text" | "json";
  out: (s: string) => void;
  err: (s: string) => void;
  /** How long one request to the admin listener may take (default 5 s; tests shorten it). */
  timeoutMs?: number;
}

const ENABLE = "to enable one, add `admin: { listen_addr: 127.0.0.1:9090 }` to the config " +
  "(a reload applies it), or point --admin at the one it has";

/** An admin address `host:port` as a URL; a wildcard address is reached on loopback. */
export function adminUrl(listenAddr: string): string | null {
  const a = parseListenAddr(listenAddr);
  if (typeof a === "string") return null;
  const host = a.hostname === "0.0.0.0"
    ? "127.0.0.1"
    : a.hostname === "::"
    ? "[::1]"
    : a.hostname.includes(":")
    ? `[${a.hostname}]`
    : a.hostname;
  return `http://${host}:${a.port}`;
}

/** Where to poll and with what token: flags, then PROX_ADMIN_TOKEN, then the config. */
async function target(o: TopOptions): Promise<{ url: string; token?: string } | string> {
  let url = o.admin;
  let token = o.token ?? (Deno.env.get("PROX_ADMIN_TOKEN") || undefined);
  if (o.config !== undefined) {
    let loaded;
    try {
      loaded = await loadSource({ path: o.config });
    } catch (e) {
      const said = configReadError(o.config, e);
      return said instanceof ConfigReadError
        ? said.message
        : `Cannot read config "${o.config}": ${said.message}`;
    }
    const config = loaded.config ?? loaded.candidate;
    if (!config && !url) {
      return `Cannot find the admin listener in "${o.config}": it does not load ` +
        `(prox validate -c ${o.config}); or point --admin at it`;
    }
    const admin = config?.admin;
    if (!admin && !url) {
      return `Cannot find the admin listener: "${o.config}" has no admin listener; ${ENABLE}`;
    }
    if (admin && !url) {
      url = adminUrl(admin.listen_addr) ?? undefined;
      if (!url) return `Cannot use admin.listen_addr "${admin.listen_addr}" of "${o.config}"`;
    }
    token ??= admin?.token;
  }
  url ??= "http://127.0.0.1:9090";
  if (!/^https?:\/\//.test(url)) url = `http://${url}`;
  try {
    new URL(url);
  } catch {
    return `--admin must be a URL such as http://127.0.0.1:9090, not "${o.admin}"`;
  }
  return { url: url.replace(/\/+$/, ""), token };
}

/** Fetches `path` from the admin listener; a string is the error to print. */
async function get(
  base: string,
  path: string,
  o: { token?: string; timeoutMs: number },
): Promise<string | Response> {
  const { token, timeoutMs } = o;
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    const detail = `${(e as Error).message} ${String((e as Error).cause ?? "")}`;
    const why = e instanceof Error && e.name === "TimeoutError"
      ? `no answer in ${timeoutMs / 1000}s`
      : /refused/i.test(detail)
      ? "connection refused"
      : detail.trim();
    return `Cannot reach the Prox admin listener at ${base}: ${why}. Is Prox running with an ` +
      `admin listener there? (${ENABLE})`;
  }
  if (res.status === 401) {
    await discard(res);
    return `The admin listener at ${base} answered 401: ${
      token ? "the token is wrong" : "it needs a token"
    }. Pass --token, set PROX_ADMIN_TOKEN, or -c the config that has admin.token`;
  }
  if (!res.ok) {
    await discard(res);
    return res.status === 404
      ? `${base} is not a Prox admin listener: ${path} answered 404 (the traffic port?)`
      : `The admin listener at ${base} answered ${res.status} for ${path}`;
  }
  return res;
}

/** Drops a response's body; one that already failed (its timeout fired) is dropped as well. */
async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch { /* already errored */ }
}

/** Takes one poll: `/metrics` and `/status` together. */
async function poll(
  base: string,
  o: { token?: string; timeoutMs: number },
): Promise<TopPoll | string> {
  const [m, s] = await Promise.all([get(base, "/metrics", o), get(base, "/status", o)]);
  if (typeof m === "string" || typeof s === "string") {
    if (typeof m !== "string") await discard(m);
    if (typeof s !== "string") await discard(s);
    return typeof m === "string" ? m : s as string;
  }
  // Both bodies at once, each failure its own: a body that stalls past the timeout (or breaks)
  // rejects, and one read left unawaited would reject with nobody to hear it.
  const [mt, st] = await Promise.allSettled([m.text(), s.text()]);
  const unread = (path: string, e: unknown) =>
    `Cannot read ${base}${path}: ${
      e instanceof Error && e.name === "TimeoutError"
        ? `no answer in ${o.timeoutMs / 1000}s`
        : e instanceof Error
        ? e.message
        : String(e)
    }`;
  if (mt.status === "rejected") return unread("/metrics", mt.reason);
  const notProx = `${base} is not a Prox admin listener`;
  const samples = parsePromText(mt.value, (n) => TOP_METRICS.has(n));
  if (typeof samples === "string") return `${notProx}: /metrics ${samples}`;
  if (!samples.some((x) => x.name === "prox_build_info")) {
    return `${notProx}: /metrics has no prox_build_info`;
  }
  if (st.status === "rejected") return unread("/status", st.reason);
  let status: unknown;
  try {
    status = JSON.parse(st.value);
  } catch {
    return `${notProx}: /status is not JSON`;
  }
  const why = notProxStatus(status);
  if (why) return `${notProx}: /status ${why}`;
  return { at: Date.now(), samples, status: status as TopStatus };
}

function width(): number {
  try {
    return Deno.consoleSize().columns || 100;
  } catch {
    return 100; // not a terminal
  }
}

/** Runs `prox top`; returns the exit code (0, 1 when the admin listener fails, 2 usage). */
export async function topCommand(o: TopOptions): Promise<number> {
  const intervalMs = parseDuration(o.interval ?? "1s");
  if (typeof intervalMs === "string" || intervalMs < 100 || intervalMs > 3_600_000) {
    o.err(`prox: --interval must be a duration from 100ms to 1h, e.g. 2s, not "${o.interval}"`);
    return 2;
  }
  const where = await target(o);
  if (typeof where === "string") {
    o.err(`error: ${where}`);
    return 1;
  }
  const tty = Deno.stdout.isTerminal();
  const color = tty && !Deno.env.get("NO_COLOR");
  const asked = { token: where.token, timeoutMs: o.timeoutMs ?? 5000 };
  const first = await poll(where.url, asked);
  if (typeof first === "string") {
    o.err(`error: ${first}`);
    return 1;
  }
  const live = tty && !o.once && o.format === "text";
  if (live) o.out(`\x1b[H\x1b[2JPolling ${where.url} every ${o.interval ?? "1s"}…`);
  let prev: TopPoll | null = first;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
    const cur = await poll(where.url, asked);
    if (typeof cur === "string") {
      if (o.once) {
        o.err(`error: ${cur}`);
        return 1;
      }
      // A live view outlasts a restart or an upgrade: say so and keep polling.
      if (live) o.out(`\x1b[H\x1b[2Jerror: ${cur}\nRetrying every ${o.interval ?? "1s"}…`);
      else o.err(`error: ${cur} (retrying)`);
      prev = null;
      continue;
    }
    if (prev) {
      const snap = topSnapshot(prev, cur);
      if (o.format === "json") o.out(`${JSON.stringify(snap, null, o.once ? 2 : undefined)}\n`);
      else {
        const lines = layoutTop(snap, { width: width(), color });
        // A live screen redraws in place; piped output gets one block per interval.
        o.out(live ? `\x1b[H\x1b[2J${lines.join("\n")}` : `${lines.join("\n")}\n`);
      }
      if (o.once) return 0;
    }
    prev = cur;
  }
}
