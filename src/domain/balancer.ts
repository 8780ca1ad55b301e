// Load-balancing policies: one small selector per policy, all behind the same two-line interface.
// Pure: the live view of each target (availability, in-flight count, latency) and the random
// source come in as arguments, so every decision is reproducible in tests.

/** One target of a pool as configured: a stable id (its URL), a weight and a backup flag. */
export interface PoolTarget {
  id: string;
  weight: number;
  /** Used only when no primary target is available. */
  backup: boolean;
}

/** What a selector may know about a target right now. */
export interface TargetLoad {
  /** Healthy and not ejected. */
  available: boolean;
  /** Requests currently in flight to this target (through this proxy). */
  inFlight: number;
  /** Latency EWMA in milliseconds; 0 when unknown. */
  latencyMs: number;
}

/** The per-request input of a selection. */
export interface PickInput {
  /** Live view of target `i` of the pool. */
  load(i: number): TargetLoad;
  /** Indices to skip (targets already tried by this request). */
  exclude?: ReadonlySet<number>;
  /**
   * A retry's pick, which keeps the rotation as it is; by default, one with targets to skip. Set
   * it for a retry that may go to any target (every one tried already).
   */
  retry?: boolean;
  /** Affinity key for consistent_hash (client IP, header or cookie value). */
  key?: string;
  /** Uniform random source in [0, 1). */
  random: () => number;
  /**
   * Slow start: the share of its weight target `i` takes now, in (0, 1]; absent: every target
   * takes its full weight. Policies that share load scale the weight by it (`first` ignores it:
   * failover has no shares).
   */
  ramp?: (i: number) => number;
}

/** Picks the index of a target in the pool, or undefined when none may be used. */
export interface Selector {
  pick(input: PickInput): number | undefined;
}

type Choose = (eligible: number[], input: PickInput) => number;

/** Builds the policy's chooser for a pool; `eligible` is never empty when it is called. */
type PolicyFactory = (pool: readonly PoolTarget[]) => Choose;

/** Bounded-load factor for consistent_hash: no target takes more than 1.25× its fair share. */
export const HASH_LOAD_FACTOR = 1.25;

/** The share of its weight a target starts a slow start with (Envoy's default minimum, 10 %). */
export const SLOW_START_MIN = 0.1;

/**
 * Slow start: the share of its weight a target takes `elapsedMs` into a ramp of `windowMs`,
 * rising linearly from SLOW_START_MIN to 1 (as HAProxy's `slowstart`, nginx Plus' `slow_start`).
 * 1 once the window has passed, or when there is no window.
 */
export function rampFactor(elapsedMs: number, windowMs: number): number {
  if (!(windowMs > 0) || elapsedMs >= windowMs) return 1;
  return Math.max(SLOW_START_MIN, elapsedMs / windowMs);
}

/** Target `i`'s weight now: as configured, scaled by its slow start. */
function weightOf(pool: readonly PoolTarget[], i: number, input: PickInput): number {
  if (input.ramp === undefined) return pool[i].weight;
  const r = input.ramp(i);
  return r >= 1 ? pool[i].weight : pool[i].weight * r;
}

/** True when some target of `eligible` is in slow start (its weight is scaled). */
function ramping(eligible: readonly number[], input: PickInput): boolean {
  if (input.ramp === undefined) return false;
  for (const i of eligible) if (input.ramp(i) < 1) return true;
  return false;
}

/** The policies by their config name (`strategy`). */
export const POLICIES = {
  round_robin: roundRobin,
  random: randomPolicy,
  weighted_round_robin: smoothWeighted,
  least_connections: leastConnections,
  power_of_two: powerOfTwo,
  consistent_hash: consistentHash,
  first: firstAvailable,
} satisfies Record<string, PolicyFactory>;

/** A policy name as written in `strategy`. */
export type Policy = keyof typeof POLICIES;

/**
 * Creates a selector. Eligible = available, not excluded, primary; when no primary is eligible,
 * the available backups are used instead.
 */
export function createSelector(policy: Policy, pool: readonly PoolTarget[]): Selector {
  const choose = POLICIES[policy](pool);
  return {
    pick(input) {
      const primary: number[] = [];
      const backup: number[] = [];
      for (let i = 0; i < pool.length; i++) {
        if (input.exclude?.has(i) || !input.load(i).available) continue;
        (pool[i].backup ? backup : primary).push(i);
      }
      const eligible = primary.length > 0 ? primary : backup;
      return eligible.length === 0 ? undefined : choose(eligible, input);
    },
  };
}

/**
 * Each target in turn: the first eligible one at or after a cursor over the whole pool, so a
 * target that drops out or comes back does not shift the others' turns. A retry (some targets
 * excluded) takes the next one without moving the cursor: otherwise the retry after a failing
 * target would use up the turn of the one after it, and every first attempt would go back to the
 * failing one.
 */
function roundRobin(pool: readonly PoolTarget[]): Choose {
  let cursor = 0;
  /** Slow start: turns a ramping target has banked; it takes a turn once it holds a whole one. */
  const credit = pool.map(() => 0);
  return (eligible, input) => {
    let at = 0;
    while (at < eligible.length && eligible[at] < cursor) at++;
    let pick = eligible[at % eligible.length];
    if (!isRetry(input) && ramping(eligible, input)) {
      // From the cursor on, the first target whose turn is due: a ramping one banks its share of
      // a turn (ramp) each time the rotation reaches it and takes the turn only with a whole one,
      // so it gets `ramp` of its turns. None due (all ramping): the cursor's own.
      for (let k = 0; k < eligible.length; k++) {
        const i = eligible[(at + k) % eligible.length];
        const r = input.ramp!(i);
        if (r >= 1) {
          pick = i;
          break;
        }
        credit[i] += r;
        // (ten times 0.1 is 0.9999999999999999)
        if (credit[i] >= 1 - 1e-9) {
          credit[i] -= 1;
          pick = i;
          break;
        }
      }
    }
    if (!isRetry(input)) cursor = (pick + 1) % pool.length;
    return pick;
  };
}

/** A pick for a retry: policies keep their rotation state for first attempts. */
function isRetry(input: PickInput): boolean {
  return input.retry ?? (input.exclude !== undefined && input.exclude.size > 0);
}

/** Uniform when weights are equal, else proportional to weight. */
function randomPolicy(pool: readonly PoolTarget[]): Choose {
  const uniform = pool.every((t) => t.weight === pool[0].weight);
  return (eligible, input) => {
    if (uniform && !ramping(eligible, input)) {
      return eligible[Math.floor(input.random() * eligible.length)];
    }
    let total = 0;
    for (const i of eligible) total += weightOf(pool, i, input);
    let r = input.random() * total;
    for (const i of eligible) {
      r -= weightOf(pool, i, input);
      if (r < 0) return i;
    }
    return eligible[eligible.length - 1];
  };
}

/**
 * nginx's smooth weighted round robin: exact shares over every cycle, interleaved. A retry takes
 * the one that would come next without moving the cycle.
 */
function smoothWeighted(pool: readonly PoolTarget[]): Choose {
  const current = pool.map(() => 0);
  const configured = (i: number) => pool[i].weight;
  return (eligible, input) =>
    smoothStep(current, {
      among: eligible,
      retry: isRetry(input),
      weight: weights(pool, input, configured),
    });
}

/** The weights of `pool` now, slow start included (`configured` when no target ramps). */
function weights(
  pool: readonly PoolTarget[],
  input: PickInput,
  configured: (i: number) => number,
): (i: number) => number {
  return input.ramp === undefined ? configured : (i) => weightOf(pool, i, input);
}

/**
 * One step of smooth weighted round robin among `among`, on the shared `current` weights. A retry
 * takes the one that would come next without moving the cycle.
 */
function smoothStep(
  current: number[],
  o: { among: number[]; retry: boolean; weight: (i: number) => number },
): number {
  const { among, weight } = o;
  if (o.retry) {
    let next = among[0];
    for (const i of among) {
      if (current[i] + weight(i) > current[next] + weight(next)) next = i;
    }
    return next;
  }
  let total = 0;
  let best = among[0];
  for (const i of among) {
    const w = weight(i);
    current[i] += w;
    total += w;
    if (current[i] > current[best]) best = i;
  }
  current[best] -= total;
  return best;
}

/**
 * Fewest in-flight requests per unit of weight; ties take turns by weight (smooth weighted round
 * robin, as nginx's least_conn), so an idle or lightly loaded pool still honours the weights.
 */
function leastConnections(pool: readonly PoolTarget[]): Choose {
  const current = pool.map(() => 0);
  const configured = (i: number) => pool[i].weight;
  return (eligible, input) => {
    const weight = weights(pool, input, configured);
    let best: number[] = [];
    let bestScore = Infinity;
    for (const i of eligible) {
      const score = input.load(i).inFlight / weight(i);
      if (score < bestScore) {
        bestScore = score;
        best = [i];
      } else if (score === bestScore) best.push(i);
    }
    return best.length === 1
      ? best[0]
      : smoothStep(current, { among: best, retry: isRetry(input), weight });
  };
}

/**
 * Power of two choices: two distinct random candidates, drawn in proportion to weight (as nginx's
 * and HAProxy's `random two`), keep the one with the lower (in-flight + 1) × latency EWMA / weight.
 * Drawn uniformly, a target of weight 1000 among three of weight 1 would meet only half of the
 * pairs, and so get about half of the requests. Slow start scales the draw, not the cost: a
 * ramping target that also lost every pair on cost would get nothing until its ramp ended.
 */
function powerOfTwo(pool: readonly PoolTarget[]): Choose {
  const uniform = pool.every((t) => t.weight === pool[0].weight);
  const cost = (i: number, input: PickInput) => {
    const l = input.load(i);
    return (l.inFlight + 1) * Math.max(l.latencyMs, 1) / pool[i].weight;
  };
  /** An index into `eligible` drawn by weight, `skip` left out (-1: none). */
  const draw = (eligible: readonly number[], input: PickInput, skip: number) => {
    let total = 0;
    for (let k = 0; k < eligible.length; k++) {
      if (k !== skip) total += weightOf(pool, eligible[k], input);
    }
    let r = input.random() * total;
    for (let k = 0; k < eligible.length; k++) {
      if (k === skip) continue;
      r -= weightOf(pool, eligible[k], input);
      if (r < 0) return k;
    }
    return eligible.length - 1 === skip ? eligible.length - 2 : eligible.length - 1;
  };
  return (eligible, input) => {
    const n = eligible.length;
    if (n === 1) return eligible[0];
    let a: number, b: number;
    if (uniform && !ramping(eligible, input)) {
      a = Math.floor(input.random() * n);
      b = Math.floor(input.random() * (n - 1));
      if (b >= a) b++;
    } else {
      a = draw(eligible, input, -1);
      b = draw(eligible, input, a);
    }
    const ia = eligible[a], ib = eligible[b];
    return cost(ib, input) < cost(ia, input) ? ib : ia;
  };
}

/** Config order: the first eligible target takes everything (failover). */
function firstAvailable(): Choose {
  return (eligible) => eligible[0];
}

/** 32-bit FNV-1a followed by murmur3's finalizer (better avalanche for ring placement). */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Consistent hashing by weighted rendezvous (highest random weight, Schindelhauer and Schomaker
 * 2005): each target scores `weight / -ln(u)` with `u` a hash of (target id, key), the highest
 * wins. Shares are exactly proportional to weight, and removing a target, adding one or changing
 * one's weight moves only the keys that target loses or gains, whatever the other weights (a ring
 * of virtual nodes scaled to bound its size re-places every target's nodes when the total weight
 * changes). Bounded load (Mirrokni et al. 2016): a target already above HASH_LOAD_FACTOR × its
 * fair share of in-flight requests is passed over for the next best. Without a key the pick is
 * random, by weight.
 */
function consistentHash(pool: readonly PoolTarget[]): Choose {
  const seeds = pool.map((t) => hash32(t.id));
  return (eligible, input) => {
    // Without a key, a random one: in proportion to weight and within the bounds all the same.
    const k = input.key === undefined ? Math.floor(input.random() * 4294967296) : hash32(input.key);
    // Slow start scales a weight like any change of it: the ramping target wins back its keys
    // gradually, and no other key moves.
    let load = 0, weight = 0;
    const scores = eligible.map((i) => {
      const w = weightOf(pool, i, input);
      load += input.load(i).inFlight;
      weight += w;
      return w / -Math.log((mix32(seeds[i], k) + 0.5) / 4294967296);
    });
    const under = (i: number) =>
      input.load(i).inFlight <
        Math.ceil(HASH_LOAD_FACTOR * (load + 1) * weightOf(pool, i, input) / weight);
    let top = 0;
    for (let j = 1; j < scores.length; j++) if (scores[j] > scores[top]) top = j;
    if (under(eligible[top])) return eligible[top];
    // Over its bound: the next best in score order that is not.
    const order = scores.map((_, j) => j).sort((a, b) => scores[b] - scores[a] || a - b);
    for (const j of order) if (under(eligible[j])) return eligible[j];
    return eligible[top];
  };
}

/** Hashes a pair of 32-bit hashes into one (murmur3's finalizer over each step). */
function mix32(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ b;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h ^ a, 0xcc9e2d51);
  h = Math.imul(h ^ (h >>> 15), 0x1b873593);
  h ^= h >>> 16;
  return h >>> 0;
}
