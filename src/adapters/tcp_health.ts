// Active health checks of a tcp entry's targets (`health_check`): every `interval` a TCP connect
// to each distinct target of the entry (its `targets`, or every `sni` group's and `default`'s),
// closed at once (after `send` and the `expect`ed answer, with those; with `proxy_protocol` the
// probe's LOCAL / UNKNOWN header comes first); `unhealthy_threshold`
// failures in a row mark a target down, `healthy_threshold` successes bring it back
// (domain/health.ts). connectAny (tcp_open.ts) passes over a down target while another is left.
// One checker per entry plan: a reload that keeps the entry unchanged keeps its checker and
// states; one that changes it starts a new checker, the targets it still names keeping their
// states (carryTcpHealth).

import { applyProbe, carryOver } from "../domain/health.ts";
import type { ActiveHealth } from "../domain/health.ts";
import type { Logger } from "../ports.ts";
import { timerDelay } from "../config/duration.ts";
import { HEALTH_ANSWER_BYTES } from "../config/schema_tcp.ts";
import { hexBytes, indexOfBytes, toHex } from "../domain/hex_bytes.ts";
import type { TcpPlan, TcpTargetChange } from "./tcp_proxy.ts";
import type { TargetGroup } from "./tcp_open.ts";
import { proxyHeader } from "../domain/proxy_protocol.ts";

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

/** Pairs each group of `next` with the group of `prev` that the same key (or `default`) named. */
function pairedGroups(next: TcpPlan, prev: TcpPlan): [TargetGroup, TargetGroup][] {
  if (next.plain) return prev.plain ? [[next.plain, prev.plain]] : [];
  const pairs: [TargetGroup, TargetGroup][] = [];
  const a = next.sni!, b = prev.sni;
  for (const kind of ["exact", "wildcard"] as const) {
    for (const [name, g] of a[kind]) {
      const old = b?.[kind].get(name);
      if (old) pairs.push([g, old]);
    }
  }
  if (a.fallback && b?.fallback) pairs.push([a.fallback, b.fallback]);
  return pairs;
}

/**
 * A reload that changed an entry (a timeout, a limit, a target added…) keeps the health of the
 * targets it still names, as routes do, rather than put a target known down back in the turns
 * until a probe finds it down again: each target's check state by its `host:port` (as it was when
 * the check did not change, else standing until the new check's first result, which decides),
 * and its failed connects and ejection in the group (targets, an `sni` name's, `default`) that
 * names it still, while passive health stays on.
 */
export function carryTcpHealth(next: TcpPlan, prev: TcpPlan): void {
  const check = (p: TcpPlan) => JSON.stringify([p.entry.health_check, p.entry.proxy_protocol]);
  const sameCheck = check(next) === check(prev);
  const active = new Map<string, ActiveHealth>();
  for (const g of groupsOf(prev)) {
    g.labels.forEach((label, i) => {
      if (!active.has(label)) active.set(label, g.active[i]);
    });
  }
  for (const g of groupsOf(next)) {
    g.labels.forEach((label, i) => {
      const was = active.get(label);
      if (!next.entry.health_check || !prev.entry.health_check || !was) return;
      if (sameCheck) g.active[i] = was;
      else if (was.status !== "unknown") g.active[i] = carryOver(was);
    });
  }
  for (const [g, old] of pairedGroups(next, prev)) {
    // Passive health turned off: its ejections end (as on routes).
    if (!g.policy.enabled) continue;
    g.labels.forEach((label, i) => {
      const j = old.labels.indexOf(label);
      if (j >= 0) g.health[i] = old.health[j];
    });
  }
}

/** The most of a target's answer searched for `expect`. */
const MAX_ANSWER = HEALTH_ANSWER_BYTES;

/** What a probe writes and looks for, as bytes, and how a failure names them. */
interface Conversation {
  send: Uint8Array | null;
  expect: Uint8Array | null;
  /** `expect` as the config wrote it (text, or hex). */
  expected: string;
  /** Shows what the target answered: as text for `expect`, as hex for `expect_hex`. */
  show(answer: Uint8Array): string;
}

/**
 * The conversation a health_check asks for (text as UTF-8, hex as its bytes). With the entry's
 * `proxy_protocol`, the probe's own header (v1 UNKNOWN, v2 LOCAL) comes first, as on the HTTP
 * side and HAProxy's checks: the upstream reads one before anything on every connection.
 */
function conversationOf(entry: TcpPlan["entry"]): Conversation {
  const hc = entry.health_check!;
  const utf8 = new TextEncoder();
  const body = hc.send_hex !== undefined
    ? hexBytes(hc.send_hex)
    : hc.send !== undefined
    ? utf8.encode(hc.send)
    : null;
  const header = entry.proxy_protocol ? proxyHeader(entry.proxy_protocol, null) : null;
  const send = header === null ? body : body === null ? header : concat(header, body);
  if (hc.expect_hex !== undefined) {
    return {
      send,
      expect: hexBytes(hc.expect_hex),
      expected: `bytes ${toHex(hexBytes(hc.expect_hex))}`,
      show: (a) => toHex(a.subarray(0, 32)),
    };
  }
  return {
    send,
    expect: hc.expect === undefined ? null : utf8.encode(hc.expect),
    expected: JSON.stringify(hc.expect),
    show: (a) => JSON.stringify(new TextDecoder().decode(a).slice(0, 64)),
  };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Writes `send`, then reads until the answer contains `expect`; throws why it did not. */
async function converse(conn: Deno.Conn, c: Conversation): Promise<void> {
  if (c.send !== null) {
    for (let off = 0; off < c.send.length;) off += await conn.write(c.send.subarray(off));
  }
  if (c.expect === null) return;
  const buf = new Uint8Array(MAX_ANSWER);
  let got = 0;
  while (indexOfBytes(buf.subarray(0, got), c.expect) < 0) {
    const said = got === 0 ? "" : ` (it answered ${c.show(buf.subarray(0, got))})`;
    if (got === MAX_ANSWER) {
      throw new Error(`no ${c.expected} in the first ${MAX_ANSWER} bytes${said}`);
    }
    const n = await conn.read(buf.subarray(got));
    if (n === null) throw new Error(`closed before answering ${c.expected}${said}`);
    got += n;
  }
}

/** Starts probing the targets of `plan` (its `entry.health_check` set); the first round at once. */
export function startTcpHealth(
  plan: TcpPlan,
  o: {
    logger: Logger;
    connect?: typeof Deno.connect;
    onChange?: (change: TcpTargetChange) => void;
    /** For the rounds' jitter (Math.random by default). */
    random?: () => number;
  },
): TcpHealthChecker {
  const hc = plan.entry.health_check!;
  const conversation = conversationOf(plan.entry);
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
      // Past the connect, the timeout ends a conversation by closing the connection. (A connect
      // done as the timeout fired resolves all the same: its abort is past, and a target that
      // never answered held the probe, and every later one of its target, for ever.)
      const cut = () => conn.close();
      if (ac.signal.aborted) cut();
      else ac.signal.addEventListener("abort", cut, { once: true });
      try {
        await converse(conn, conversation);
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
  const random = o.random ?? Math.random;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Each round up to 10% early, never late, as the HTTP checks: on a fixed interval, the workers
  // of a `workers` Prox (or instances started together) probed every target in lock-step for ever.
  const next = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      round();
      next();
    }, timerDelay(hc.interval * (0.9 + 0.1 * random())));
    Deno.unrefTimer(timer as unknown as number);
  };
  round();
  next();

  return {
    states: () =>
      [...targets].map(([target, at]) => ({ target, status: at[0].group.active[at[0].i].status })),
    stop() {
      stopped = true;
      clearTimeout(timer);
      for (const ac of inFlight) ac.abort();
    },
  };
}
