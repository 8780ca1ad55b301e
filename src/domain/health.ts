// Health of one upstream target: the active state machine (probe results with consecutive
// thresholds), passive outlier ejection (failures within a window, growing cool-down) and the
// panic rule. Pure: time comes in as `now` (ms), nothing here reads a clock.

/** Active probing state. `unknown` until the first probe; the first result decides at once. */
export interface ActiveHealth {
  status: "unknown" | "up" | "down";
  /** Consecutive successes since the last failure. */
  successes: number;
  /** Consecutive failures since the last success. */
  failures: number;
  /**
   * Carried over from a check whose settings a reload changed (carryOver): the status stands
   * until the next result, which decides at once, as from `unknown`.
   */
  carried?: boolean;
}

/** Consecutive results needed to change state (seed keys healthy_threshold/unhealthy_threshold). */
export interface ActiveThresholds {
  healthy: number;
  unhealthy: number;
}

/** The new status when a probe changed it (including the first result after `unknown`). */
export type Transition = "up" | "down" | null;

/** The state of a target nobody has probed yet (counts as available). */
export const ACTIVE_INITIAL: ActiveHealth = Object.freeze({
  status: "unknown",
  successes: 0,
  failures: 0,
});

/**
 * Applies one probe result. Counters are consecutive: a success resets failures and vice versa
 * (the seed summed failures across successes). From `unknown` (or a carried state) one result
 * decides.
 */
export function applyProbe(
  state: ActiveHealth,
  ok: boolean,
  th: ActiveThresholds,
): { state: ActiveHealth; transition: Transition } {
  const successes = ok ? state.successes + 1 : 0;
  const failures = ok ? 0 : state.failures + 1;
  let status = state.status;
  if (status === "unknown" || state.carried) status = ok ? "up" : "down";
  else if (status === "down" && successes >= th.healthy) status = "up";
  else if (status === "up" && failures >= th.unhealthy) status = "down";
  const transition: Transition = status === state.status ? null : status === "up" ? "up" : "down";
  return { state: { status, successes, failures }, transition };
}

/**
 * The state a replacing check starts from: the old check's status, so a target known down stays
 * out (and one known up stays in) until the new check's first result, which decides.
 */
export function carryOver(state: ActiveHealth): ActiveHealth {
  return { status: state.status, successes: 0, failures: 0, carried: true };
}

/** Passive (outlier) detection settings, resolved to milliseconds. */
export interface PassivePolicy {
  enabled: boolean;
  /** Consecutive failures within `windowMs` that eject. */
  failures: number;
  windowMs: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  /** Never eject when fewer than this percentage of a pool's targets would remain available. */
  panicPercent: number;
}

/** Passive state of one target. */
export interface PassiveHealth {
  /** Consecutive failures within the last window (the length of `times`). */
  failures: number;
  /** When those failures happened, oldest first; at most `policy.failures` of them. */
  times: readonly number[];
  /** Ejected while now < ejectedUntil. */
  ejectedUntil: number;
  /** Ejections so far; each doubles the cool-down up to the maximum. */
  ejections: number;
  /** When an ejection that unEject() ended (early, or after it ran out) ended: for the decay. */
  endedAt?: number;
}

/** A target with no passive history. */
export const PASSIVE_INITIAL: PassiveHealth = Object.freeze({
  failures: 0,
  times: Object.freeze([]),
  ejectedUntil: 0,
  ejections: 0,
});

/**
 * Records one request outcome. Returns `eject: true` when the last `policy.failures` outcomes
 * were all failures within one window (sliding); the caller applies the panic rule, then calls
 * `eject()`.
 */
export function recordOutcome(
  state: PassiveHealth,
  ok: boolean,
  opts: { now: number; policy: PassivePolicy },
): { state: PassiveHealth; eject: boolean } {
  const { now, policy } = opts;
  if (ok) {
    return {
      state: state.failures === 0 ? state : { ...state, failures: 0, times: PASSIVE_INITIAL.times },
      eject: false,
    };
  }
  // The streak's failures still inside the window, the newest `policy.failures - 1` of them.
  const keep = state.times.filter((t) => now - t <= policy.windowMs);
  const times = [...keep.slice(Math.max(0, keep.length - policy.failures + 1)), now];
  const next = { ...state, failures: times.length, times };
  const eject = policy.enabled && now >= state.ejectedUntil && next.failures >= policy.failures;
  return { state: next, eject };
}

/** Ejects a target: cool-down = base × 2^(ejections), capped; the count decays after a quiet spell. */
export function eject(
  state: PassiveHealth,
  opts: { now: number; policy: PassivePolicy },
): { state: PassiveHealth; durationMs: number } {
  const { now, policy } = opts;
  // A target that stayed in for a whole max cool-down since its last ejection starts over. An
  // ejection ended early has ejectedUntil 0: its end is endedAt (measured from 0, the decay
  // depended on the uptime: past max_ejection, every such ejection started over at the base).
  const ended = state.ejectedUntil > 0 ? state.ejectedUntil : state.endedAt ?? -Infinity;
  const quiet = state.ejections > 0 && now - ended > policy.maxEjectionMs;
  const prior = quiet ? 0 : state.ejections;
  const durationMs = Math.min(
    policy.baseEjectionMs * 2 ** Math.min(prior, 30),
    policy.maxEjectionMs,
  );
  return {
    state: {
      failures: 0,
      times: PASSIVE_INITIAL.times,
      ejectedUntil: now + durationMs,
      ejections: prior + 1,
    },
    durationMs,
  };
}

/**
 * Clears an ejection early (an active probe saw the target recover) at `now`, which the decay of
 * the next ejection counts from.
 */
export function unEject(state: PassiveHealth, now: number): PassiveHealth {
  if (state.ejectedUntil === 0 && state.failures === 0) return state;
  const endedAt = state.ejectedUntil > 0 ? Math.min(state.ejectedUntil, now) : state.endedAt;
  return { ...state, failures: 0, times: PASSIVE_INITIAL.times, ejectedUntil: 0, endedAt };
}

/**
 * Panic rule: ejecting one more of `total` targets, with `available` currently usable, is allowed
 * only when at least `panicPercent` of the pool would remain available.
 */
export function mayEject(available: number, total: number, panicPercent: number): boolean {
  if (total === 0 || available <= 0) return false;
  return ((available - 1) / total) * 100 >= panicPercent;
}

/** Targets of one tier of a pool (primaries or backups): how many, and how many are usable now. */
export interface Tier {
  available: number;
  total: number;
}

/**
 * Panic rule over a pool with backups. Each tier's share of usable targets is summed (capped at
 * 100 %), as Envoy's priority levels: backups stand in for the primaries, so two failing primaries
 * are ejected while a backup is up (the rule alone kept one in, and the backup idle).
 */
export function mayEjectTiered(
  pool: { primary: Tier; backup: Tier },
  opts: { backup: boolean; panicPercent: number },
): boolean {
  const { primary, backup } = pool;
  const own = opts.backup ? backup : primary;
  if (own.total === 0 || own.available <= 0) return false;
  const share = (t: Tier, minus: number) => t.total === 0 ? 0 : (t.available - minus) / t.total;
  const left = share(primary, opts.backup ? 0 : 1) + share(backup, opts.backup ? 1 : 0);
  return Math.min(1, left) * 100 >= opts.panicPercent;
}

/** Usable right now: not known down by probes and not ejected. */
export function isAvailable(active: ActiveHealth, passive: PassiveHealth, now: number): boolean {
  return active.status !== "down" && now >= passive.ejectedUntil;
}

/** Compiles status selectors (404, "2xx", "500-599", "200,204") into a predicate. */
export function statusMatcher(
  sel: number | string | readonly (number | string)[],
): (s: number) => boolean {
  const parts = (Array.isArray(sel) ? sel : [sel]).flatMap((p) =>
    typeof p === "number" ? [String(p)] : String(p).split(",")
  );
  const ranges: [number, number][] = [];
  for (const raw of parts) {
    const p = raw.trim().toLowerCase();
    let m: RegExpMatchArray | null;
    if ((m = p.match(/^([1-5])xx$/))) ranges.push([+m[1] * 100, +m[1] * 100 + 99]);
    else if ((m = p.match(/^(\d{3})-(\d{3})$/))) ranges.push([+m[1], +m[2]]);
    else if (/^\d{3}$/.test(p)) ranges.push([+p, +p]);
    else throw new Error(`Cannot read status selector "${raw}": use 200, "2xx" or "200-299"`);
    const [lo, hi] = ranges[ranges.length - 1];
    if (lo < 100 || hi > 599 || lo > hi) {
      throw new Error(`Status selector "${raw}" is outside 100-599`);
    }
  }
  return (s) => ranges.some(([lo, hi]) => s >= lo && s <= hi);
}
