// What the `tcp` listeners report: Prometheus metrics (named as metrics_prom.ts names the HTTP
// ones) and one access-log line per closed connection, in the format `log.access_log` asks for.

import { Counter, Gauge } from "./prom_classes.ts";
import type { Registry } from "./prom_classes.ts";
import { clfTime } from "./log_json.ts";
import type { LineSink } from "./log_json.ts";
import type { Logger } from "../ports.ts";

/**
 * How a connection ended: `closed` (both sides finished), `reset` (a read or write failed
 * mid-relay), `idle_timeout`, `connect_failed` (no target accepted), `denied` (ip_access),
 * `over_limit` (max_connections), `no_route` (no sni key and no default), `bad_hello` (not a TLS
 * ClientHello, or too large), `hello_timeout`, `bad_proxy_header` (`accept_proxy_protocol`: no
 * valid header in time), `shutdown` (cut by the drain deadline or a reload that removed its
 * entry).
 */
export type TcpOutcome = typeof TCP_OUTCOMES[number];

/** Every outcome (the `outcome` label's values). */
export const TCP_OUTCOMES = [
  "closed",
  "reset",
  "idle_timeout",
  "connect_failed",
  "denied",
  "over_limit",
  "no_route",
  "bad_hello",
  "hello_timeout",
  "bad_proxy_header",
  "shutdown",
] as const;

/** One closed connection, as the access log writes it. */
export interface TcpRecord {
  time: number;
  /** The `tcp` entry's key. */
  name: string;
  clientIp: string;
  clientPort: number;
  /** The target that accepted (`host:port`), null when none did or none was tried. */
  target: string | null;
  /**
   * With `sni`: the ClientHello's server name (null: none sent; one not a DNS name as sent,
   * escaped); absent otherwise.
   */
  serverName?: string | null;
  /** Bytes from the client (ClientHello included), and bytes to it. */
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  outcome: TcpOutcome;
  /** Why, for outcomes other than `closed`. */
  error?: string;
}

/** The metrics a tcp listener feeds. */
export interface TcpMetrics {
  connection(name: string, outcome: TcpOutcome): void;
  /** `received` from the client, `sent` to it. */
  bytes(name: string, direction: "received" | "sent", n: number): void;
  /** The configured entry names: series of other names are removed and not re-created. */
  retain(names: readonly string[]): void;
}

/** Registers the tcp metrics on `registry`; `active()` and `health()` are read at scrape time. */
export function createTcpMetrics(
  registry: Registry,
  active: () => ReadonlyMap<string, number>,
  health: () => { name: string; target: string; status: string }[] = () => [],
): TcpMetrics {
  const registers = [registry];
  const connections = new Counter({
    name: "prox_tcp_connections_total",
    help: `Connections to tcp listeners by entry and how they ended (${TCP_OUTCOMES.join(", ")})`,
    labelNames: ["name", "outcome"] as const,
    registers,
  });
  const bytes = new Counter({
    name: "prox_tcp_bytes_total",
    help: "Bytes relayed by tcp listeners: received from clients, sent to them",
    labelNames: ["name", "direction"] as const,
    registers,
  });
  new Gauge({
    name: "prox_tcp_active_connections",
    help: "Open connections per tcp entry (in this worker)",
    labelNames: ["name"] as const,
    registers,
    collect() {
      this.reset();
      for (const [name, n] of active()) this.set({ name }, n);
    },
  });
  // Only the entries with health_check, each target once (labels bounded by the config).
  new Gauge({
    name: "prox_tcp_target_up",
    help: "Whether a tcp entry's health checks find the target up (1) or down (0); absent " +
      "before its first probe",
    labelNames: ["name", "target"] as const,
    registers,
    collect() {
      this.reset();
      for (const h of health()) {
        if (h.status !== "unknown") {
          this.set({ name: h.name, target: h.target }, h.status === "up" ? 1 : 0);
        }
      }
    },
  });
  let names: Set<string> | null = null;
  const known = (name: string) => names === null || names.has(name);
  // Children by name and direction: inc with a label object hashes it on every chunk.
  const children = new Map<string, ReturnType<typeof bytes.labels>>();
  return {
    connection(name, outcome) {
      if (known(name)) connections.inc({ name, outcome });
    },
    bytes(name, direction, n) {
      if (!known(name)) return;
      const key = `${direction}|${name}`;
      let c = children.get(key);
      if (!c) children.set(key, c = bytes.labels({ name, direction }));
      c.inc(n);
    },
    retain(list) {
      const before = names ?? new Set<string>();
      names = new Set(list);
      for (const name of before) {
        if (names.has(name)) continue;
        // prom-client removes a series by its whole label set only.
        for (const outcome of TCP_OUTCOMES) connections.remove({ name, outcome });
        for (const direction of ["received", "sent"]) {
          bytes.remove({ name, direction });
          children.delete(`${direction}|${name}`);
        }
      }
    },
  };
}

/**
 * The tcp access-log writer for `log.access_log`: none when false; with an injected `logger`
 * the records go to it as "tcp access" lines; `json` gives JSON lines like the HTTP access log;
 * `common`/`combined` a line in their spirit: `client - - [time] "TCP name target" outcome
 * bytesOut bytesIn durationMs`.
 */
export function tcpAccessLogOf(
  setting: boolean | "json" | "common" | "combined",
  o: { logger?: Logger; sink: LineSink },
): ((rec: TcpRecord) => void) | undefined {
  if (setting === false) return undefined;
  const logger = o.logger;
  if (logger) return (rec) => logger.info("tcp access", { ...rec });
  if (setting === true || setting === "json") {
    return (rec) =>
      o.sink(
        JSON.stringify({
          ...rec,
          time: new Date(rec.time).toISOString(),
          level: "info",
          msg: "tcp access",
          durationMs: Math.round(rec.durationMs * 1000) / 1000,
        }) + "\n",
        "stdout",
      );
  }
  return (rec) =>
    o.sink(
      `${rec.clientIp} - - ${clfTime(rec.time)} "TCP ${rec.name} ${rec.target ?? "-"}" ` +
        `${rec.outcome} ${rec.bytesOut} ${rec.bytesIn} ${Math.round(rec.durationMs)}\n`,
      "stdout",
    );
}
