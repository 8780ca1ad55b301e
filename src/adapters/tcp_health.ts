// Active health checks of a tcp entry's targets (`health_check`): every `interval` a TCP connect
// to each distinct target of the entry (its `targets`, or every `sni` group's and `default`'s),
// closed at once (after `send` and the `expect`ed answer, with those); `unhealthy_threshold`
// failures in a row mark a target down, `healthy_threshold` successes bring it back
// (domain/health.ts). connectAny (tcp_open.ts) passes over a down target while another is left.
// One checker per entry plan: a reload that keeps the entry unchanged keeps its checker and
// states, one that changes it starts afresh.

import { applyProbe } from "../domain/health.ts";
import type { ActiveHealth } from "../domain/health.ts";
import type { Logger } from "../ports.ts";
import { timerDelay } from "../config/duration.ts";
import type { TcpPlan, TcpTargetChange } from "./tcp_proxy.ts";
import type { TargetGroup } from "./tcp_open.ts";

/** One target's state as `/status` and the metrics show it. */
export interface TcpTargetHealth {
  target: string;
  status: ActiveHealth["status"];
}

/** A running checker. */
export interface TcpHealthChecker {
  /** Each distinct target's state, in the order the entry names them. */
  states(): TcpTargetHealth[];
  stop(): void;
}

/** The groups of a plan (plain targets, or the sni table's groups and default). */
export function groupsOf(plan: TcpPlan): TargetGroup[] {
  if (plan.plain) return [plan.plain];
  const sni = plan.sni!;
  const all = new Set<TargetGroup>([...sni.exact.values(), ...sni.wildcard.values()]);
  if (sni.fallback) all.add(sni.fallback);
  return [...all];
}

/** The most of a target's answer searched for `expect`. */
const MAX_ANSWER = 4096;

/** Writes `send`, then reads until the answer contains `expect`; throws why it did not. */
async function converse(conn: Deno.Conn, send?: string, expect?: string): Promise<void> {
  if (send !== undefined) {
    const bytes = new TextEncoder().encode(send);
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
  }
  if (expect === undefined) return;
  const dec = new TextDecoder();
  const buf = new Uint8Array(MAX_ANSWER);
  let got = "";
  while (!got.includes(expect)) {
    const said = got === "" ? "" : ` (it answered ${JSON.stringify(got.slice(0, 64))})`;
    if (got.length >= MAX_ANSWER) {
      throw new Error(`no ${JSON.stringify(expect)} in the first ${MAX_ANSWER} bytes${said}`);
    }
    const n = await conn.read(buf);
    if (n === null) throw new Error(`closed before answering ${JSON.stringify(expect)}${said}`);
    got += dec.decode(buf.subarray(0, n), { stream: true });
  }
}

/** Starts probing the targets of `plan` (its `entry.health_check` set); the first round at once. */
export function startTcpHealth(
  plan: TcpPlan,
  o: {
    logger: Logger;
    connect?: typeof Deno.connect;
    onChange?: (change: TcpTargetChange) => void;
  },
): TcpHealthChecker {
  const hc = plan.entry.health_check!;
  const connect = o.connect ?? Deno.connect;
  const groups = groupsOf(plan);
  // Each distinct `host:port` once, with every (group, index) it stands at.
  const targets = new Map<string, { group: TargetGroup; i: number }[]>();
  for (const g of groups) {
    g.labels.forEach((label, i) => {
      let at = targets.get(label);
      if (!at) targets.set(label, at = []);
      at.push({ group: g, i });
    });
  }
  const thresholds = { healthy: hc.healthy_threshold, unhealthy: hc.unhealthy_threshold };
  const probing = new Set<string>();
  /** Connects in flight, aborted by stop(). */
  const inFlight = new Set<AbortController>();
  let stopped = false;

  const probe = async (label: string, at: { group: TargetGroup; i: number }[]) => {
    if (probing.has(label)) return; // the last one still connecting (it has its timeout)
    probing.add(label);
    const { host, port } = at[0].group.targets[at[0].i];
    const ac = new AbortController();
    inFlight.add(ac);
    const timer = setTimeout(() => ac.abort(), timerDelay(hc.timeout));
    let reason = "";
    try {
      const conn = await connect({ hostname: host, port, signal: ac.signal });
      // Past the connect, the timeout ends a conversation by closing the connection.
      const cut = () => conn.close();
      ac.signal.addEventListener("abort", cut, { once: true });
      try {
        await converse(conn, hc.send, hc.expect);
      } finally {
        ac.signal.removeEventListener("abort", cut);
        if (!ac.signal.aborted) conn.close();
      }
    } catch (err) {
      reason = ac.signal.aborted
        ? `no answer within ${hc.timeout} ms`
        : err instanceof Error
        ? err.message
        : String(err);
    } finally {
      clearTimeout(timer);
      probing.delete(label);
      inFlight.delete(ac);
    }
    if (stopped) return;
    const ok = reason === "";
    const prev = at[0].group.active[at[0].i];
    const out = applyProbe(prev, ok, thresholds);
    for (const { group, i } of at) group.active[i] = out.state;
    if (out.transition === "down") {
      o.logger.warn("tcp target marked down by health check", {
        name: plan.name,
        target: label,
        reason,
        failures: out.state.failures,
      });
      const why = `${out.state.failures} failed connect(s): ${reason}`;
      o.onChange?.({ name: plan.name, target: label, up: false, reason: why });
    } else if (out.transition === "up" && prev.status === "down") {
      o.logger.info("tcp target back up: health check passed", {
        name: plan.name,
        target: label,
        successes: out.state.successes,
      });
      const why = `${out.state.successes} successful connect(s)`;
      o.onChange?.({ name: plan.name, target: label, up: true, reason: why });
    }
  };
  const round = () => {
    for (const [label, at] of targets) void probe(label, at);
  };
  round();
  const interval = setInterval(round, timerDelay(hc.interval));
  Deno.unrefTimer(interval);

  return {
    states: () =>
      [...targets].map(([target, at]) => ({ target, status: at[0].group.active[at[0].i].status })),
    stop() {
      stopped = true;
      clearInterval(interval);
      for (const ac of inFlight) ac.abort();
    },
  };
}
