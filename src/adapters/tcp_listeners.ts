// The running `tcp` listeners, changed as a transaction on reload as listener_set.ts does for the
// HTTP ones: an entry whose address is unchanged keeps its listener (new connections take its new
// settings), one with a new address is bound first, and nothing is swapped unless every bind
// worked. A removed entry stops accepting; its connections may finish for `shutdown_timeout`.

import { formatListenAddr, parseListenAddr } from "../config/listen.ts";
import type { ListenAddr } from "../config/listen.ts";
import type { Config } from "../config/schema.ts";
import { timerDelay } from "../config/duration.ts";
import { bindHint, ListenError, REUSE_PORT } from "./listener_set.ts";
import { compileTcp, listenTcp, tcpPrint } from "./tcp_proxy.ts";
import type { LiveConn, TcpDeps, TcpListener, TcpPlan } from "./tcp_proxy.ts";
import { carryTcpHealth, startTcpHealth } from "./tcp_health.ts";
import type { TcpHealthChecker, TcpTargetHealth } from "./tcp_health.ts";

/** What `/status` shows of one entry. */
export interface TcpView {
  name: string;
  listen_addr: string;
  active: number;
  max_connections: number;
  targets?: string[];
  sni?: string[];
  /** With `health_check`: each target's state (up, down, unknown before its first probe). */
  health?: Record<string, TcpTargetHealth["status"]>;
}

/** A change bound but not applied yet. */
export interface StagedTcp {
  /** Listeners this change bound. */
  readonly bound: number;
  commit(): void;
  abort(): void;
}

/** The tcp listeners of the config in use. */
export interface TcpListeners {
  /** Binds the listeners `config` adds or moves; throws a ListenError (binding nothing). */
  /** `files`: the list files of the entries' `ip_access` (readReferencedFiles). */
  stage(config: Config, files?: ReadonlyMap<string, string>): StagedTcp;
  /** Open connections per entry name (removed entries still finishing included). */
  active(): Map<string, number>;
  views(): TcpView[];
  /** The checked targets' states, by entry (`health_check`; for prox_tcp_target_up). */
  health(): { name: string; target: string; status: TcpTargetHealth["status"] }[];
  /** The bound address of an entry (its real port when configured with port 0). */
  addr(name: string): ListenAddr | undefined;
  /** Stops accepting, waits up to `graceMs` for connections to end, then cuts the rest. */
  shutdown(graceMs: number): Promise<void>;
}

interface EntryState {
  plan: TcpPlan;
  listener: TcpListener;
  conns: Set<LiveConn>;
  /** Open connections by client address (IPv6 by /64), for max_connections_per_ip. */
  perIp: Map<string, number>;
  /** The plan's health checker (`health_check`), null without. */
  checker: TcpHealthChecker | null;
}

/** Plan ids of tcp listeners in ListenError (`tcp:<name>`; listener_set's listenKey reads them). */
export const TCP_PLAN_PREFIX = "tcp:";

/** Creates the (empty) set; `drainMs` is `shutdown_timeout`, read when an entry is removed. */
export function createTcpListeners(deps: TcpDeps & { drainMs: () => number }): TcpListeners {
  let current = new Map<string, EntryState>();
  /** Removed entries whose connections are still open. */
  const leaving = new Set<EntryState>();
  const cutTimers = new Set<ReturnType<typeof setTimeout>>();
  let closed = false;

  const bind = (
    plan: TcpPlan,
    state: { plan: TcpPlan; conns: Set<LiveConn>; perIp: Map<string, number> },
  ) => {
    const addr = parseListenAddr(plan.entry.listen_addr) as ListenAddr;
    try {
      return listenTcp(addr, {
        plan: () => state.plan,
        conns: state.conns,
        perIp: state.perIp,
        reusePort: REUSE_PORT,
        deps,
      });
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new ListenError(
        `Cannot listen on ${formatListenAddr(addr)}: ${msg}${bindHint(err, addr.port)}`,
        TCP_PLAN_PREFIX + plan.name,
      );
    }
  };
  /** The checker `plan` needs, kept when the plan is the one `from` had. */
  const checkerFor = (plan: TcpPlan, from: EntryState | undefined) => {
    if (from && from.plan === plan) return from.checker;
    from?.checker?.stop();
    // At the swap, so that nothing the old plan saw since the reload began is lost.
    if (from) carryTcpHealth(plan, from.plan);
    return plan.entry.health_check
      ? startTcpHealth(plan, { logger: deps.logger, onChange: deps.onTargetHealth })
      : null;
  };
  const retire = (s: EntryState) => {
    s.checker?.stop();
    s.checker = null;
    s.listener.close();
    if (s.conns.size === 0) return;
    leaving.add(s);
    const t = setTimeout(() => {
      cutTimers.delete(t);
      for (const c of s.conns) c.cut("shutdown");
    }, timerDelay(deps.drainMs()));
    Deno.unrefTimer(t);
    cutTimers.add(t);
    void Promise.all([...s.conns].map((c) => c.done)).then(() => {
      leaving.delete(s);
      clearTimeout(t);
      cutTimers.delete(t);
    });
  };

  return {
    stage(config, files) {
      if (closed) throw new Error("Cannot bind tcp listeners: shutting down");
      const next = new Map<string, EntryState>();
      const fresh: { state: EntryState; old?: EntryState }[] = [];
      const keep: { state: EntryState; plan: TcpPlan }[] = [];
      try {
        for (const [name, entry] of Object.entries(config.tcp ?? {})) {
          const old = current.get(name);
          // An unchanged entry keeps its plan, and with it its targets' passive health.
          const plan = old && old.plan.print === tcpPrint(entry, files)
            ? old.plan
            : compileTcp(name, entry, files);
          if (old && old.plan.entry.listen_addr === entry.listen_addr) {
            keep.push({ state: old, plan });
            next.set(name, old);
            continue;
          }
          // Its connections stay with the entry (the limits count them) across the move.
          const state = {
            plan,
            conns: old?.conns ?? new Set<LiveConn>(),
            perIp: old?.perIp ?? new Map<string, number>(),
          } as EntryState;
          state.listener = bind(plan, state);
          fresh.push({ state, old });
          next.set(name, state);
        }
      } catch (err) {
        for (const f of fresh) f.state.listener.close();
        throw err;
      }
      let done = false;
      return {
        bound: fresh.length,
        commit() {
          if (done) return;
          done = true;
          for (const k of keep) {
            k.state.checker = checkerFor(k.plan, k.state);
            k.state.plan = k.plan;
          }
          for (const f of fresh) {
            f.state.checker = checkerFor(f.state.plan, f.old);
            if (f.old) f.old.checker = null;
            f.old?.listener.close();
            deps.logger.info("TCP listening", {
              name: f.state.plan.name,
              addr: formatListenAddr(f.state.listener.addr),
              sni: f.state.plan.sni !== null,
            });
          }
          for (const [name, s] of current) if (!next.has(name)) retire(s);
          current = next;
          // Bound while shutdown began: closed at once.
          if (closed) { for (const f of fresh) f.state.listener.close(); }
        },
        abort() {
          if (done) return;
          done = true;
          for (const f of fresh) f.state.listener.close();
        },
      };
    },
    active() {
      const out = new Map<string, number>();
      for (const s of [...leaving, ...current.values()]) {
        out.set(s.plan.name, (out.get(s.plan.name) ?? 0) + s.conns.size);
      }
      return out;
    },
    views: () =>
      [...current.values()].map((s) => ({
        name: s.plan.name,
        listen_addr: formatListenAddr(s.listener.addr),
        active: s.conns.size,
        max_connections: s.plan.entry.max_connections,
        ...(s.plan.entry.targets ? { targets: s.plan.entry.targets } : {}),
        ...(s.plan.entry.sni ? { sni: Object.keys(s.plan.entry.sni) } : {}),
        ...(s.checker
          ? { health: Object.fromEntries(s.checker.states().map((h) => [h.target, h.status])) }
          : {}),
      })),
    health: () =>
      [...current.values()].flatMap((s) =>
        (s.checker?.states() ?? []).map((h) => ({ name: s.plan.name, ...h }))
      ),
    addr: (name) => current.get(name)?.listener.addr,
    async shutdown(graceMs) {
      closed = true;
      for (const s of current.values()) {
        s.checker?.stop();
        s.listener.close();
      }
      for (const t of cutTimers) clearTimeout(t);
      cutTimers.clear();
      const all = () => [...leaving, ...current.values()].flatMap((s) => [...s.conns]);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((r) => timer = setTimeout(r, timerDelay(graceMs)));
      await Promise.race([Promise.all(all().map((c) => c.done)), late]);
      clearTimeout(timer);
      const rest = all();
      for (const c of rest) c.cut("shutdown");
      await Promise.all(rest.map((c) => c.done));
    },
  };
}
