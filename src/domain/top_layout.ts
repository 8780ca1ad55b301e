// `prox top`'s screen: a TopSnapshot laid out as lines no wider than the terminal, names
// truncated with "…", colour (ANSI) only when asked for.

import type { TopSnapshot } from "./top.ts";

/** How to lay out: the terminal's width and whether to colour. */
export interface LayoutOptions {
  width: number;
  color: boolean;
}

/** Cuts `s` to `n` characters, ending with "…" when cut. */
export function truncate(s: string, n: number): string {
  if (n <= 0) return "";
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}

/** `3725` → `1h02m`, `90061` → `1d01h`. */
export function formatUptime(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60);
  const two = (n: number) => String(n).padStart(2, "0");
  if (d > 0) return `${d}d${two(h)}h`;
  if (h > 0) return `${h}h${two(m)}m`;
  return m > 0 ? `${m}m${two(s % 60)}s` : `${s}s`;
}

const num = (n: number) => n >= 100 ? String(Math.round(n)) : String(Math.round(n * 10) / 10);
const ms = (n: number | null) => n === null ? "-" : n >= 1000 ? `${num(n / 1000)}s` : `${num(n)}ms`;

/** Lays out one screen of `prox top`. */
export function layoutTop(snap: TopSnapshot, o: LayoutOptions): string[] {
  const width = Math.max(o.width, 40);
  const paint = (code: string, s: string) => o.color ? `\x1b[${code}m${s}\x1b[0m` : s;
  const red = (s: string) => paint("31", s);
  const bold = (s: string) => paint("1", s);
  const fit = (s: string) => truncate(s, width);
  const out: string[] = [];

  const reload = snap.config.lastReload;
  const state = snap.draining ? "draining" : snap.ready ? "ready" : "not ready";
  const head = fit(
    `prox ${snap.version}  pid ${snap.pid}  up ${formatUptime(snap.uptimeSeconds)}  ` +
      `config v${snap.config.version}` +
      (reload
        ? `, last reload ${reload.ok ? "ok" : "FAILED"} ${formatUptime(reload.agoSeconds)} ago`
        : "") +
      `  ${state}`,
  );
  out.push(reload?.ok === false || state !== "ready" ? red(head) : head);
  if (reload && !reload.ok && reload.errors[0]) out.push(fit(`  ${reload.errors[0]}`));
  const conns = Object.entries(snap.connections).map(([p, n]) => `${p} ${n}`).join("  ");
  out.push(fit(`in progress: ${conns || "-"}`));
  const t = snap.total;
  const cache = snap.cache.hitRatio === null
    ? ""
    : `  cache hits ${Math.round(snap.cache.hitRatio * 100)}% of ${snap.cache.lookups}`;
  out.push(fit(
    `requests ${num(t.perSecond)}/s  2xx ${num(t.classes["2xx"])}  3xx ${num(t.classes["3xx"])}` +
      `  4xx ${num(t.classes["4xx"])}  5xx ${num(t.classes["5xx"])}` +
      `  rate-limited ${num(t.rateLimited)}/s${cache}`,
  ));
  out.push(fit(`over ${num(snap.intervalSeconds)}s; ${snap.note}`));
  out.push("");

  // Routes: the name takes what the figures leave.
  const cols = ["REQ/S", "2XX", "3XX", "4XX", "5XX", "P50~", "P95~", "LIMITED"];
  const w = [8, 7, 6, 6, 6, 8, 8, 8];
  const nameW = Math.max(8, width - w.reduce((a, b) => a + b, 0));
  const row = (name: string, cells: string[]) =>
    fit(truncate(name, nameW - 1).padEnd(nameW) + cells.map((c, i) => c.padStart(w[i])).join(""));
  out.push(bold(row("ROUTE", cols)));
  for (const r of snap.routes) {
    const line = row(r.route, [
      num(r.perSecond),
      num(r.classes["2xx"]),
      num(r.classes["3xx"]),
      num(r.classes["4xx"]),
      num(r.classes["5xx"]),
      ms(r.p50Ms),
      ms(r.p95Ms),
      num(r.rateLimited),
    ]);
    out.push(r.classes["5xx"] > 0 ? red(line) : line);
  }
  if (snap.routes.length === 0) out.push("  (no requests yet)");

  if (snap.upstreams.length > 0) {
    out.push("");
    const uw = [10, 8, 10, 10];
    const urlW = Math.max(8, width - uw.reduce((a, b) => a + b, 0));
    const urow = (u: string, cells: string[]) =>
      fit(truncate(u, urlW - 1).padEnd(urlW) + cells.map((c, i) => c.padStart(uw[i])).join(""));
    out.push(bold(urow("UPSTREAM", ["HEALTH", "REQ/S", "IN FLIGHT", "LATENCY"])));
    for (const u of snap.upstreams) {
      const health = u.healthy === null
        ? "?"
        : u.healthy
        ? "up"
        : u.ejectedForSeconds > 0
        ? `out ${u.ejectedForSeconds}s`
        : "down";
      const line = urow(u.url, [
        health,
        num(u.perSecond),
        u.inFlight === null ? "-" : String(u.inFlight),
        ms(u.latencyMs),
      ]);
      out.push(u.healthy === false ? red(line) : line);
    }
    const pooled = snap.upstreams.filter((u) => u.pool !== null);
    if (pooled.length > 0) {
      // Connections to each target's origin: a queue (WAIT) means the pool limit is reached;
      // NEW/S with low REUSE, that keep-alive does not hold (a TIME_WAIT socket per connection).
      out.push("");
      const pw = [6, 6, 6, 8, 7, 5];
      const poolW = Math.max(8, width - pw.reduce((a, b) => a + b, 0));
      const prow = (u: string, cells: string[]) =>
        fit(
          truncate(u, poolW - 1).padEnd(poolW) + cells.map((c, i) => c.padStart(pw[i])).join(""),
        );
      out.push(bold(prow("CONNECTIONS", ["BUSY", "IDLE", "WAIT", "NEW/S", "REUSE", "H2"])));
      for (const u of pooled) {
        const p = u.pool!;
        const line = prow(u.url, [
          String(p.busy),
          String(p.idle),
          String(p.waiting),
          num(p.openedPerSecond),
          p.reuseRatio === null ? "-" : `${Math.round(p.reuseRatio * 100)}%`,
          p.h2Streams === null ? "-" : String(p.h2Streams),
        ]);
        out.push(p.waiting > 0 ? red(line) : line);
      }
    }
  }
  if (snap.certificates.length > 0) {
    out.push("");
    for (const c of snap.certificates) {
      const line = fit(`certificate ${c.name}: ${c.daysLeft} days left`);
      out.push(c.daysLeft < 14 ? red(line) : line);
    }
  }
  return out;
}
