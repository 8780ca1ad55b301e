// The steps before a tcp connection is relayed: with `sni`, reading the ClientHello (bounded in
// bytes and time, not answered), and connecting to a target of the group, in round-robin turns,
// moving to the next on a refused or slow connect.

import { localConnectFailure } from "../domain/errors.ts";
import type { Selector } from "../domain/balancer.ts";
import type { HostPort } from "../domain/tcp_route.ts";
import { helloScan, MAX_HELLO_BYTES, peekClientHello } from "../domain/tls_client_hello.ts";
import type { Logger } from "../ports.ts";
import { eject, mayEject, recordOutcome } from "../domain/health.ts";
import type { ActiveHealth, PassiveHealth, PassivePolicy } from "../domain/health.ts";
import { timerDelay } from "../config/duration.ts";

/** Targets tried in turn for one connection. */
export interface TargetGroup {
  targets: readonly HostPort[];
  /** `host:port` as written, for logs. */
  labels: readonly string[];
  selector: Selector;
  /** Each target's failed connects and ejection (`passive_health`), in this process. */
  health: PassiveHealth[];
  policy: PassivePolicy;
  /** Each target's `health_check` state (tcp_health.ts); `unknown` without checks. */
  active: ActiveHealth[];
}

const AVAILABLE = { available: true, inFlight: 0, latencyMs: 0 };
const OUT = { available: false, inFlight: 0, latencyMs: 0 };

/** Records a connect's outcome for target `i` of `group`; an ejection is logged. */
function connectOutcome(
  group: TargetGroup,
  i: number,
  ok: boolean,
  o: { logger: Logger; name: string; now: number },
): void {
  const r = recordOutcome(group.health[i], ok, { now: o.now, policy: group.policy });
  group.health[i] = r.state;
  if (!r.eject) return;
  const inNow = group.health.filter((h) => o.now >= h.ejectedUntil).length;
  if (!mayEject(inNow, group.health.length, group.policy.panicPercent)) return;
  const e = eject(r.state, { now: o.now, policy: group.policy });
  group.health[i] = e.state;
  o.logger.warn("tcp target ejected after failed connects", {
    name: o.name,
    target: group.labels[i],
    failures: r.state.failures,
    ejectedForMs: e.durationMs,
  });
}

/** Closes a connection that may be closed already. */
export function closeQuietly(c: Deno.Conn | null): void {
  try {
    c?.close();
  } catch { /* already closed */ }
}

/** What the client sent first: a ClientHello and its bytes, or why there is none. */
export type Hello =
  | {
    kind: "hello";
    serverName: string | null;
    /** A server name that is not a DNS name, escaped (`serverName` is then null). */
    invalidName?: string;
    bytes: Uint8Array;
    reason?: undefined;
  }
  | { kind: "bad_hello" | "hello_timeout"; reason: string; bytes: Uint8Array };

/**
 * Reads until the bytes hold a whole ClientHello, at most MAX_HELLO_BYTES and `timeoutMs`; `first`
 * are bytes of it read already (after a PROXY header).
 */
export async function readHello(
  conn: Deno.TcpConn,
  timeoutMs: number,
  first: Uint8Array = new Uint8Array(0),
): Promise<Hello> {
  const buf = new Uint8Array(MAX_HELLO_BYTES);
  const pre = first.subarray(0, MAX_HELLO_BYTES);
  buf.set(pre);
  let len = pre.length;
  let late = false;
  // Each record is read once however many reads bring it (one byte each, from a hostile client).
  const scan = helloScan();
  const timer = setTimeout(() => {
    late = true;
    closeQuietly(conn);
  }, timerDelay(timeoutMs));
  try {
    for (;;) {
      if (len > 0) {
        const peek = peekClientHello(buf.subarray(0, len), MAX_HELLO_BYTES, scan);
        if (peek.kind === "hello") {
          const { serverName, invalidName } = peek;
          return { kind: "hello", serverName, invalidName, bytes: buf.slice(0, len) };
        }
        if (peek.kind === "invalid") {
          return { kind: "bad_hello", reason: peek.reason, bytes: buf.subarray(0, len) };
        }
      }
      let n: number | null;
      try {
        n = await conn.read(buf.subarray(len));
      } catch (err) {
        if (late) break;
        throw err;
      }
      if (n === null) {
        if (late) break;
        return {
          kind: "bad_hello",
          reason: "the client closed before a whole ClientHello",
          bytes: buf.subarray(0, len),
        };
      }
      len += n;
    }
    return {
      kind: "hello_timeout",
      reason: `no whole ClientHello within ${timeoutMs} ms`,
      bytes: buf.subarray(0, len),
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Connects to the group's targets in turn (round robin); the first that accepts wins. `cancel`
 * (the connection cut by shutdown or reload) stops the attempt under way and the turns.
 */
export async function connectAny(
  group: TargetGroup,
  timeoutMs: number,
  o: { random: () => number; logger: Logger; name: string; cancel: AbortSignal },
): Promise<{ conn: Deno.TcpConn; target: string } | { error: string }> {
  const tried = new Set<number>();
  const failures: string[] = [];
  for (;;) {
    if (o.cancel.aborted) return { error: "cut while connecting" };
    const now = Date.now();
    // Ejected targets, and those health checks marked down, only when every other was tried (a
    // wrong verdict must not refuse all).
    const load = (j: number) =>
      now >= group.health[j].ejectedUntil && group.active[j].status !== "down" ? AVAILABLE : OUT;
    const i = group.selector.pick({ load, exclude: tried, random: o.random }) ??
      group.selector.pick({ load: () => AVAILABLE, exclude: tried, random: o.random });
    if (i === undefined) break;
    tried.add(i);
    const t = group.targets[i];
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), timerDelay(timeoutMs));
    try {
      const signal = AbortSignal.any([ac.signal, o.cancel]);
      const conn = await Deno.connect({ hostname: t.host, port: t.port, signal });
      connectOutcome(group, i, true, { ...o, now: Date.now() });
      return { conn, target: group.labels[i] };
    } catch (err) {
      if (o.cancel.aborted) return { error: "cut while connecting" };
      const message = err instanceof Error ? err.message : String(err);
      // This host's descriptors or ports ran out: nothing against the target.
      if (ac.signal.aborted || !localConnectFailure(message)) {
        connectOutcome(group, i, false, { ...o, now: Date.now() });
      }
      const why = ac.signal.aborted
        ? `no answer within ${timeoutMs} ms`
        : err instanceof Error
        ? err.message
        : String(err);
      failures.push(`${group.labels[i]}: ${why}`);
      o.logger.warn("Cannot connect to tcp target", {
        name: o.name,
        target: group.labels[i],
        error: why,
        next: tried.size < group.targets.length,
      });
    } finally {
      clearTimeout(timer);
    }
  }
  return { error: `Cannot connect to any target (${failures.join("; ")})` };
}
