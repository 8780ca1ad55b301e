// The runtime registry of upstream targets, keyed by stable id (the target URL as configured).
// It outlives snapshots: a reload keeps health, ejections, in-flight counts and latency for every
// target that is still configured, and drops the rest. Transitions are logged and exported here,
// so the active prober and the forwarder report them the same way.

import {
  ACTIVE_INITIAL,
  applyProbe,
  carryOver,
  eject,
  isAvailable,
  mayEjectTiered,
  PASSIVE_INITIAL,
  recordOutcome,
  unEject,
} from "../domain/health.ts";
import type {
  ActiveHealth,
  ActiveThresholds,
  PassiveHealth,
  PassivePolicy,
} from "../domain/health.ts";
import type { Clock, Logger, Metrics } from "../ports.ts";
import { rampFactor } from "../domain/balancer.ts";
import type { Selector } from "../domain/balancer.ts";

/** Live state of one target. */
export interface UpstreamState {
  readonly id: string;
  /** Active health per check (healthCheckKey): routes probing it differently judge it apart. */
  checks: Map<string, ActiveHealth>;
  /** The checks taken together: down while any is down, up once one is up; for /status. */
  active: ActiveHealth;
  passive: PassiveHealth;
  inFlight: number;
  /** Response-head latency EWMA in ms as of `latencyAt`; 0 until the first response. */
  latencyMs: number;
  /** Monotonic time of the last latency sample. */
  latencyAt: number;
  /** Passively ejected and not yet announced back. */
  ejected: boolean;
  /**
   * Monotonic time it last came back: recovered by health checks, health checks turned off while
   * it was down, an ejection ended early, or added by a reload; -Infinity when it never left.
   * The natural end of an ejection is `passive.ejectedUntil`. Slow start ramps from the later.
   */
  backAt: number;
  /** When the panic rule last kept it in (logged), and how many times since without a log. */
  panicLoggedAt: number;
  panicQuiet: number;
}

/**
 * Latency EWMA time constant (ms). Peak-EWMA as in Finagle/Linkerd: a slower sample is taken at
 * once, faster ones blend in by elapsed time, and without samples the estimate decays toward 0,
 * so a target that had one slow answer is tried again instead of starving.
 */
const EWMA_TAU_MS = 10_000;
/**
 * Cap on tracked targets before the first retain() (a registry without a config); afterwards the
 * config bounds them.
 */
const MAX_TARGETS = 10_000;
/** Hard cap on drains asked ahead of their target (see drain's `ahead`). */
const MAX_AHEAD = 1_024;
/** Hard cap on distinct active checks of one target; normally bounded by the config. */
const MAX_CHECKS = 1_000;
/** Retry budget window: ten one-second buckets. */
const BUDGET_BUCKETS = 10;
const BUDGET_BUCKET_MS = 1_000;
/** Retries always allowed per window, so a quiet route can still fail over. */
const BUDGET_MIN_RETRIES = 3;

/** Health checks are on by default (as in the seed); a target without the endpoint needs this. */
const NO_HEALTH_ENDPOINT =
  "The target has no health endpoint at this path: set health_check.path, " +
  "backend_health_paths or health_check.method, or turn health checks off (health_check.enabled: false)";

/** A target's checks taken together: down while any is down, else up once any is up. */
function combined(checks: ReadonlyMap<string, ActiveHealth>): ActiveHealth {
  let up: ActiveHealth | undefined;
  for (const c of checks.values()) {
    if (c.status === "down") return c;
    if (c.status === "up") up ??= c;
  }
  return up ?? ACTIVE_INITIAL;
}

/** When a target last came back: backAt, or the end of an ejection that ran out (later one). */
function backFrom(s: UpstreamState): number {
  // ejectedUntil is 0 when never ejected, or when the ejection ended early (then backAt says).
  return Math.max(s.backAt, s.passive.ejectedUntil > 0 ? s.passive.ejectedUntil : -Infinity);
}

/** What the registry reports for the admin API and tests. */
export interface UpstreamView {
  id: string;
  status: "unknown" | "up" | "down";
  ejectedForMs: number;
  ejections: number;
  inFlight: number;
  latencyMs: number;
  /** How long ago it came back (see UpstreamState.backAt), or null: never left, or still out. */
  backForMs: number | null;
  /** Taken out of rotation through the admin API (drain): no new requests, its own finish. */
  drained: boolean;
}

/** The registry; one per process, shared by every snapshot. */
export interface UpstreamRegistry {
  /** The state of a target, created on first use. */
  get(id: string): UpstreamState;
  /**
   * `at`: the monotonic time now, when the caller has it (saves a clock read per call). `check`:
   * the route's check of the target (its probe results decide), null for a route without checks
   * (only passive health does), omitted for any check (down while one is). `passive: false`:
   * the route has passive health off, so ejections (other routes') do not gate it.
   */
  available(
    id: string,
    at?: number,
    check?: string | null,
    o?: { passive?: boolean },
  ): boolean;
  /**
   * Drains a target (`on`: no new requests, whatever its health, until undrained) or puts it
   * back (ramping with slow start); false when the config names no such target. With `ahead`,
   * such a target's drain waits for the config to name it (a worker whose own DNS lookup has not
   * found a target worker 0 drained yet).
   */
  drain(id: string, on: boolean, o?: { ahead?: boolean }): boolean;
  /** True while the target is drained. */
  drained(id: string): boolean;
  /** Records an active probe result of one of the target's checks; logs and exports transitions. */
  probe(
    id: string,
    ok: boolean,
    opts: {
      check?: string;
      /** The probe's path, named in logs when the target has several checks. */
      path?: string;
      thresholds: ActiveThresholds;
      reason: string;
    },
  ): void;
  /** Forgets the results of a check no longer made (the target counts as available for it). */
  unprobed(id: string, check?: string): void;
  /**
   * A reload added a check of a target already checked (a route's path, host or headers
   * changed, or another route checks it its own way): the new check starts from the status of
   * the one check it replaces (`replaces`: the target's checks the reload dropped, when there is
   * exactly one), else from the target's, which its first result confirms or overturns
   * (carryOver), so a target known down takes no requests meanwhile. Call it before unprobed()
   * of the dropped checks.
   */
  carryCheck(id: string, check: string, replaces: readonly string[]): void;
  /**
   * Records a request outcome for passive health. `pool` is the route's target ids (for the
   * panic rule); a failure streak may eject the target.
   */
  outcome(
    id: string,
    ok: boolean,
    opts: {
      pool: readonly string[];
      /** The pool's backup targets (a subset of `pool`), which stand in for the primaries. */
      backups?: ReadonlySet<string>;
      /** The route's check of each target of `pool` (see available()). */
      checks?: readonly (string | null)[];
      policy: PassivePolicy;
      reason: string;
      at?: number;
    },
  ): void;
  /**
   * How long (ms) until an unavailable target may be back: the rest of its ejection or, while
   * health checks (`check`, as in available()) hold it down, the probes it still needs to pass
   * (`healthy` in a row, `intervalMs` apart). Infinity for a drained target.
   */
  backIn(
    id: string,
    o: {
      at?: number;
      check?: string | null;
      /** False: the route has passive health off (its ejections do not count). */
      passive?: boolean;
      intervalMs: number;
      healthy: number;
    },
  ): number;
  /** Latency sample in ms (response head). */
  observe(id: string, ms: number, at?: number): void;
  /**
   * Slow start: the share of its weight a target takes now (1: all of it), ramping over
   * `windowMs` since it came back (see UpstreamState.backAt).
   */
  ramp(id: string, windowMs: number, at?: number): number;
  /** The latency estimate now (decayed since the last sample). */
  latency(id: string, at?: number): number;
  /** Counts a first attempt for a route's retry budget. */
  countRequest(route: string, at?: number): void;
  /** True (and counted) when a retry fits in the route's budget. */
  tryRetry(route: string, percent: number): boolean;
  /**
   * A retry the budget refused, to be logged: the number of refusals since the last line, or
   * null while the route's last line is younger than the budget window (a dead target would
   * otherwise add a line to every request).
   */
  retryRefused(route: string): number | null;
  /** Ends the ejections of targets no route watches passively any more (a reload turned it off). */
  release(ids: Iterable<string>): void;
  /**
   * The balancing state of a route: kept across reloads while `signature` (strategy and targets)
   * is unchanged, so a reload does not restart every rotation at the first target.
   */
  selector(route: string, o: { signature: string; make: () => Selector }): Selector;
  /**
   * Forgets targets and routes no longer configured; late results for them are ignored. Returns
   * the drained targets it forgot (their drain ends with them).
   */
  retain(ids: Iterable<string>, routes: Iterable<string>): string[];
  list(): UpstreamView[];
  /**
   * Announces (log, health metric, notification) the ejections that have run out: without it an
   * ejection's end is seen only when a request or a probe next looks at the target, and a target
   * nobody sends requests to stayed down on the dashboards.
   */
  settleAll(): void;
}

interface Budget {
  epoch: number;
  requests: number[];
  retries: number[];
  /** When a refused retry was last logged, and the refusals since. */
  refusedLoggedAt: number;
  refused: number;
}

/** Creates the registry. */
export function createUpstreamRegistry(
  deps: { clock: Clock; logger: Logger; metrics: Metrics },
): UpstreamRegistry {
  const states = new Map<string, UpstreamState>();
  const budgets = new Map<string, Budget>();
  const selectors = new Map<string, { signature: string; selector: Selector }>();
  /** The configured targets as of the last retain(), or null before the first. */
  let configured: Set<string> | null = null;
  /** Targets drained through the admin API; only configured ones (retain drops the others). */
  const drainedIds = new Set<string>();
  /** Drains asked `ahead` for targets not configured yet (bounded: the oldest go first). */
  const aheadIds = new Set<string>();
  /** Removed by a reload: a request or probe that started before it must not bring it back. */
  const retired = (id: string) => configured !== null && !configured.has(id);
  const now = () => deps.clock.monotonic();

  const get = (id: string): UpstreamState => {
    const found = states.get(id);
    if (found) {
      // Before the config is known the cap evicts the least recently used: kept in use order.
      if (configured === null) {
        states.delete(id);
        states.set(id, found);
      }
      return found;
    }
    // Once the config is known only its targets are kept (retired), so it bounds the map: a
    // configured target is never evicted (that forgot a target known down, which then took
    // requests again, once sixteen discover routes of 1,024 targets passed the cap).
    if (configured === null && states.size >= MAX_TARGETS) {
      for (const [k, v] of states) {
        if (v.inFlight === 0) {
          states.delete(k);
          break;
        }
      }
    }
    const s: UpstreamState = {
      id,
      checks: new Map(),
      active: ACTIVE_INITIAL,
      passive: PASSIVE_INITIAL,
      inFlight: 0,
      latencyMs: 0,
      latencyAt: 0,
      ejected: false,
      backAt: -Infinity,
      panicLoggedAt: -Infinity,
      panicQuiet: 0,
    };
    if (!retired(id)) states.set(id, s);
    return s;
  };

  const bucketsOf = (route: string, at = now()): Budget => {
    const epoch = Math.floor(at / BUDGET_BUCKET_MS);
    let b = budgets.get(route);
    if (!b) {
      b = {
        epoch,
        requests: Array(BUDGET_BUCKETS).fill(0),
        retries: Array(BUDGET_BUCKETS).fill(0),
        refusedLoggedAt: -Infinity,
        refused: 0,
      };
      budgets.set(route, b);
    }
    // Zero the buckets that fell out of the window since the last use.
    for (let e = Math.max(b.epoch + 1, epoch - BUDGET_BUCKETS + 1); e <= epoch; e++) {
      b.requests[e % BUDGET_BUCKETS] = 0;
      b.retries[e % BUDGET_BUCKETS] = 0;
    }
    b.epoch = Math.max(b.epoch, epoch);
    return b;
  };
  const decayed = (s: UpstreamState, t: number) =>
    s.latencyMs * Math.exp(-Math.max(0, t - s.latencyAt) / EWMA_TAU_MS);
  const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);

  /** Announces (log, health metric) an ejection that has run out, once. */
  const settle = (s: UpstreamState, t: number) => {
    if (s.ejected && t >= s.passive.ejectedUntil) {
      s.ejected = false;
      // A target health checks marked down meanwhile stays out until they bring it back.
      if (s.active.status === "down") return;
      deps.logger.info("Upstream back in rotation: ejection ended", { upstream: s.id });
      deps.metrics.backendHealth(s.id, true, "ejection ended");
    }
  };

  /** The state that decides `check` of `s` (see available()). */
  const activeOf = (s: UpstreamState, check: string | null | undefined) =>
    check === undefined
      ? s.active
      : check === null
      ? ACTIVE_INITIAL
      : s.checks.get(check) ?? ACTIVE_INITIAL;

  const unprobed = (id: string, check = "") => {
    const s = states.get(id);
    if (!s || !s.checks.delete(check)) return;
    const wasDown = s.active.status === "down";
    s.active = combined(s.checks);
    // Still ejected: the end of the ejection announces it (settle).
    if (wasDown && s.active.status !== "down") s.backAt = now();
    if (wasDown && s.active.status !== "down" && !s.ejected) {
      deps.logger.info("Upstream no longer health-checked: back in rotation", { upstream: id });
      deps.metrics.backendHealth(id, true, "health checks turned off");
    }
  };

  return {
    get,
    available(id, at, check, o) {
      if (drainedIds.size > 0 && drainedIds.has(id)) return false;
      const s = states.get(id);
      if (!s) return true;
      const t = at ?? now();
      settle(s, t);
      return isAvailable(activeOf(s, check), o?.passive === false ? PASSIVE_INITIAL : s.passive, t);
    },
    probe(id, ok, opts) {
      if (retired(id)) return;
      const s = get(id);
      const check = opts.check ?? "";
      // Probes run whether or not requests come: an ejection that ran out is announced here too.
      settle(s, now());
      const prev = s.checks.get(check) ?? ACTIVE_INITIAL;
      if (!s.checks.has(check) && s.checks.size >= MAX_CHECKS) return;
      const out = applyProbe(prev, ok, opts.thresholds);
      s.checks.set(check, out.state);
      s.active = combined(s.checks);
      // Of a target checked in several ways, say which check this is.
      const which = s.checks.size > 1 && opts.path ? { path: opts.path } : {};
      const up = s.active.status !== "down";
      if (!out.transition) {
        // Still down: status shows the latest cause (a refused connection may have become a 500).
        if (!ok && out.state.status === "down") {
          deps.metrics.backendHealth(
            id,
            false,
            `${out.state.failures} failed probe(s): ${opts.reason}`,
          );
        }
        return;
      }
      const why = out.transition === "up"
        ? `${out.state.successes} successful probe(s)`
        : `${out.state.failures} failed probe(s): ${opts.reason}`;
      // The target as a whole: down while any of its checks is (another check coming up is no
      // recovery of the one still failing).
      if (up || out.transition === "down") deps.metrics.backendHealth(id, up, why);
      if (out.transition === "down") {
        deps.logger.warn("Upstream marked down by health check", {
          upstream: id,
          ...which,
          reason: opts.reason,
          failures: out.state.failures,
          ...(/^status (404|405|501)\b/.test(opts.reason) ? { hint: NO_HEALTH_ENDPOINT } : {}),
        });
      } else {
        const t = now();
        // Back from down or from an ejection (the first result of an unprobed target that
        // requests did not eject is no return).
        if ((prev.status === "down" || t < s.passive.ejectedUntil) && up) s.backAt = t;
        s.passive = unEject(s.passive, t);
        s.ejected = false;
        if (prev.status === "down") {
          deps.logger.info("Upstream recovered: health check passed", {
            upstream: id,
            ...which,
            successes: out.state.successes,
          });
        }
      }
    },
    carryCheck(id, check, replaces) {
      const s = states.get(id);
      if (!s || s.checks.has(check) || s.checks.size >= MAX_CHECKS) return;
      const from = (replaces.length === 1 ? s.checks.get(replaces[0]) : undefined) ?? s.active;
      if (from.status !== "unknown") s.checks.set(check, carryOver(from));
    },
    unprobed,
    outcome(id, ok, opts) {
      if (retired(id)) return;
      const s = get(id);
      const t = opts.at ?? now();
      const out = recordOutcome(s.passive, ok, { now: t, policy: opts.policy });
      s.passive = out.state;
      if (!out.eject) return;
      const primary = { available: 0, total: 0 };
      const backup = { available: 0, total: 0 };
      opts.pool.forEach((p, i) => {
        const tier = opts.backups?.has(p) ? backup : primary;
        const o = states.get(p);
        tier.total++;
        // A drained target takes no requests: it keeps no traffic in rotation (the failing one
        // itself is the one the rule weighs taking out).
        if (p !== id && drainedIds.has(p)) return;
        if (!o || isAvailable(activeOf(o, opts.checks?.[i]), o.passive, t)) tier.available++;
      });
      const available = primary.available + backup.available;
      const isBackup = opts.backups?.has(id) ?? false;
      const panicPercent = opts.policy.panicPercent;
      if (!mayEjectTiered({ primary, backup }, { backup: isBackup, panicPercent })) {
        // Every failure of a target the rule keeps in would say so again: once per window.
        if (t - s.panicLoggedAt < opts.policy.windowMs) {
          s.panicQuiet++;
          return;
        }
        deps.logger.warn("Upstream failing but not ejected: panic threshold", {
          upstream: id,
          reason: opts.reason,
          available,
          total: opts.pool.length,
          ...(s.panicQuiet > 0 ? { alsoFailedSinceLastLog: s.panicQuiet } : {}),
        });
        s.panicLoggedAt = t;
        s.panicQuiet = 0;
        return;
      }
      const ej = eject(s.passive, { now: t, policy: opts.policy });
      s.passive = ej.state;
      s.ejected = true;
      deps.metrics.ejection(id);
      deps.metrics.backendHealth(
        id,
        false,
        `ejected for ${
          ej.durationMs / 1000
        }s after ${opts.policy.failures} failures: ${opts.reason}`,
      );
      deps.logger.warn("Upstream ejected", {
        upstream: id,
        reason: opts.reason,
        failures: opts.policy.failures,
        ejectionMs: ej.durationMs,
        ejections: ej.state.ejections,
      });
    },
    observe(id, ms, at) {
      if (retired(id)) return;
      const s = get(id);
      const t = at ?? now();
      const prev = decayed(s, t);
      const w = Math.exp(-Math.max(0, t - s.latencyAt) / EWMA_TAU_MS);
      s.latencyMs = ms > prev ? ms : prev * w + ms * (1 - w);
      s.latencyAt = t;
    },
    backIn(id, o) {
      // Back only when undrained: no time can be given.
      if (drainedIds.has(id)) return Infinity;
      const s = states.get(id);
      if (!s) return 0;
      const a = activeOf(s, o.check);
      if (a.status === "down") return Math.max(1, o.healthy - a.successes) * o.intervalMs;
      if (o.passive === false) return 0;
      return Math.max(0, s.passive.ejectedUntil - (o.at ?? now()));
    },
    ramp(id, windowMs, at) {
      const s = states.get(id);
      return s ? rampFactor((at ?? now()) - backFrom(s), windowMs) : 1;
    },
    latency(id, at) {
      const s = states.get(id);
      return s ? decayed(s, at ?? now()) : 0;
    },
    countRequest(route, at) {
      const b = bucketsOf(route, at);
      b.requests[b.epoch % BUDGET_BUCKETS]++;
    },
    tryRetry(route, percent) {
      const b = bucketsOf(route);
      const allowed = Math.max(BUDGET_MIN_RETRIES, (sum(b.requests) * percent) / 100);
      if (sum(b.retries) + 1 > allowed) return false;
      b.retries[b.epoch % BUDGET_BUCKETS]++;
      return true;
    },
    retryRefused(route) {
      const t = now();
      const b = bucketsOf(route, t);
      b.refused++;
      if (t - b.refusedLoggedAt < BUDGET_BUCKETS * BUDGET_BUCKET_MS) return null;
      const n = b.refused;
      b.refusedLoggedAt = t;
      b.refused = 0;
      return n;
    },
    release(ids) {
      const t = now();
      for (const id of ids) {
        const s = states.get(id);
        if (!s || t >= s.passive.ejectedUntil) continue;
        s.passive = unEject(s.passive, t);
        s.ejected = false;
        s.backAt = t;
        if (s.active.status === "down") continue;
        deps.logger.info("Upstream back in rotation: passive health turned off", { upstream: id });
        deps.metrics.backendHealth(id, true, "passive health turned off");
      }
    },
    selector(route, o) {
      const kept = selectors.get(route);
      if (kept?.signature === o.signature) return kept.selector;
      const selector = o.make();
      // One per route; retain() drops those of removed routes.
      if (selectors.size < MAX_TARGETS || kept) selectors.set(route, { ...o, selector });
      return selector;
    },
    drain(id, on, o) {
      if (configured !== null && !configured.has(id)) {
        aheadIds.delete(id);
        if (on && o?.ahead) {
          if (aheadIds.size >= MAX_AHEAD) aheadIds.delete(aheadIds.values().next().value!);
          aheadIds.add(id);
        }
        return false;
      }
      aheadIds.delete(id);
      if (on) {
        drainedIds.add(id);
        get(id);
      } else if (drainedIds.delete(id)) {
        // Back in rotation: it ramps up as a target back from being down does (slow_start).
        get(id).backAt = now();
      }
      return true;
    },
    drained: (id) => drainedIds.has(id),
    retain(ids, routes) {
      const before = configured;
      const keep = configured = new Set(ids);
      for (const k of states.keys()) if (!keep.has(k)) states.delete(k);
      const forgot = [...drainedIds].filter((k) => !keep.has(k));
      for (const k of forgot) drainedIds.delete(k);
      for (const k of aheadIds) {
        if (!keep.has(k)) continue;
        aheadIds.delete(k);
        drainedIds.add(k);
      }
      // Added by a reload (not by the first call, at start-up): new to the pool, it ramps up.
      if (before !== null) {
        const t = now();
        for (const id of keep) if (!before.has(id)) get(id).backAt = t;
      }
      const keepRoutes = new Set(routes);
      for (const k of budgets.keys()) if (!keepRoutes.has(k)) budgets.delete(k);
      for (const k of selectors.keys()) if (!keepRoutes.has(k)) selectors.delete(k);
      return forgot;
    },
    settleAll() {
      const t = now();
      for (const s of states.values()) settle(s, t);
    },
    list() {
      const t = now();
      for (const s of states.values()) settle(s, t);
      return [...states.values()].map((s) => ({
        id: s.id,
        status: s.active.status,
        ejectedForMs: Math.max(0, s.passive.ejectedUntil - t),
        ejections: s.passive.ejections,
        inFlight: s.inFlight,
        latencyMs: decayed(s, t),
        backForMs: t >= backFrom(s) && backFrom(s) > -Infinity ? t - backFrom(s) : null,
        drained: drainedIds.has(s.id),
      }));
    },
  };
}
