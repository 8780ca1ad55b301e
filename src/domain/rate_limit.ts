// Rate-limit decisions, one pure function per algorithm: (limit, state, now) → decision.
// No clocks, no storage: the caller passes the time and keeps the returned state. Every
// decision also says when its state becomes equivalent to "never seen" (`expiresAt`), so a store
// can drop idle keys without changing any future answer.

/** The algorithms a route can choose; `token_bucket` is the default. */
export const ALGORITHMS = ["token_bucket", "fixed_window", "sliding_window", "gcra"] as const;
/** One of ALGORITHMS. */
export type Algorithm = typeof ALGORITHMS[number];

/** A resolved limit: `requests` per `periodMs` sustained; `burst` is the bucket size. */
export interface RateLimitPolicy {
  algorithm: Algorithm;
  requests: number;
  /** Whole milliseconds, at least 1. */
  periodMs: number;
  /** Bucket capacity for token_bucket and gcra (default `requests`); windows ignore it. */
  burst: number;
}

/**
 * Per-key state. Field meaning depends on the algorithm:
 * token_bucket `t` last refill, `n` tokens × periodMs; fixed_window `t` window start, `n` count;
 * sliding_window `t` window start, `n` current count, `p` previous count; gcra `t` + `n`/requests
 * the theoretical arrival time (TAT) in ms.
 */
export interface RateLimitState {
  t: number;
  n: number;
  p: number;
}

/** The answer for one request. */
export interface RateLimitDecision {
  allowed: boolean;
  /** Requests still allowed right now (after this one, when allowed). */
  remaining: number;
  /** Milliseconds until the full quota is available again. */
  resetMs: number;
  /** When denied: milliseconds until a request would be allowed; 0 when allowed. */
  retryAfterMs: number;
}

/** A decision plus the state to store and when that state may be forgotten. */
export interface RateLimitStep extends RateLimitDecision {
  state: RateLimitState;
  /** Absolute ms after which `state` behaves exactly like an absent key. */
  expiresAt: number;
}

/** Decides one request under `policy`; `state` is undefined for a key never seen (or expired). */
export function decide(
  policy: RateLimitPolicy,
  state: RateLimitState | undefined,
  now: number,
): RateLimitStep {
  switch (policy.algorithm) {
    case "token_bucket":
      return tokenBucket(policy, state, now);
    case "fixed_window":
      return fixedWindow(policy, state, now);
    case "sliding_window":
      return slidingWindow(policy, state, now);
    case "gcra":
      return gcra(policy, state, now);
  }
}

/**
 * Token bucket in exact integers: a token is `periodMs` units, the bucket refills `requests`
 * units per millisecond (so `requests` tokens per period) up to `burst` tokens.
 */
export function tokenBucket(
  policy: RateLimitPolicy,
  state: RateLimitState | undefined,
  now: number,
): RateLimitStep {
  const { requests: rate, periodMs: cost } = policy;
  const cap = policy.burst * cost;
  let tokens = cap;
  if (state) {
    // A stored time ahead of now is a clock stepped back: the tokens stay, refill resumes from
    // now (keeping the stored time froze a drained client for as long as the step).
    const elapsed = Math.max(0, now - state.t);
    const missing = cap - state.n;
    tokens = elapsed * rate >= missing ? cap : state.n + elapsed * rate;
  }
  const allowed = tokens >= cost;
  if (allowed) tokens -= cost;
  const resetMs = Math.ceil((cap - tokens) / rate);
  return {
    allowed,
    remaining: Math.floor(tokens / cost),
    resetMs,
    retryAfterMs: allowed ? 0 : Math.ceil((cost - tokens) / rate),
    state: { t: now, n: tokens, p: 0 },
    expiresAt: now + resetMs,
  };
}

/** Fixed windows aligned to multiples of `periodMs` since the epoch: `requests` per window. */
export function fixedWindow(
  policy: RateLimitPolicy,
  state: RateLimitState | undefined,
  now: number,
): RateLimitStep {
  const { requests, periodMs } = policy;
  const start = now - mod(now, periodMs);
  // A clock that stepped back into an older window keeps the newer window's count, in the
  // current window (keeping the newer window's start refused a drained client for the step).
  let count = state && state.t >= start ? state.n : 0;
  const allowed = count < requests;
  if (allowed) count++;
  const resetMs = start + periodMs - now;
  return {
    allowed,
    remaining: requests - count,
    resetMs,
    retryAfterMs: allowed ? 0 : resetMs,
    state: { t: start, n: count, p: 0 },
    expiresAt: start + periodMs,
  };
}

/**
 * Sliding window: the previous window's count weighted by how much of it still overlaps the
 * last `periodMs`, plus the current window's count. Compared in integers (scaled by periodMs).
 */
export function slidingWindow(
  policy: RateLimitPolicy,
  state: RateLimitState | undefined,
  now: number,
): RateLimitStep {
  const { requests: limit, periodMs: P } = policy;
  const start = now - mod(now, P);
  let curr = 0;
  let prev = 0;
  if (state) {
    if (state.t === start) [curr, prev] = [state.n, state.p];
    else if (state.t === start - P) prev = state.n;
    // A clock stepped back: the newer window's counts, in the current window.
    else if (state.t > start) [curr, prev] = [state.n, state.p];
  }
  const e = now - start;
  const weightedPrev = prev * Math.max(0, P - e);
  const allowed = weightedPrev + (curr + 1) * P <= limit * P;
  if (allowed) curr++;
  const used = weightedPrev + curr * P;
  const remaining = Math.max(0, Math.floor((limit * P - used) / P));
  let retryAfterMs = 0;
  if (!allowed) {
    if (curr < limit) {
      // Wait inside this window until the previous window's weight has faded enough.
      const need = P - Math.floor(((limit - curr - 1) * P) / prev);
      retryAfterMs = Math.max(1, need - e);
    } else {
      // Wait for the next window, where this window's count becomes the weighted one.
      const need = Math.max(0, P - Math.floor(((limit - 1) * P) / curr));
      retryAfterMs = P - e + need;
    }
  }
  const resetMs = curr > 0 ? 2 * P - e : prev > 0 ? P - e : 0;
  return {
    allowed,
    remaining,
    resetMs,
    retryAfterMs,
    state: { t: start, n: curr, p: prev },
    expiresAt: now + resetMs,
  };
}

/**
 * GCRA (generic cell rate algorithm): one timestamp per key, the theoretical arrival time (TAT).
 * Emission interval T = periodMs / requests; a request is allowed when TAT + T − now ≤ burst·T.
 * The TAT is kept exactly as `t` whole ms plus `n`/requests ms, so fractional intervals (3 per
 * second) never drift. Behaves like the token bucket with the same burst.
 */
export function gcra(
  policy: RateLimitPolicy,
  state: RateLimitState | undefined,
  now: number,
): RateLimitStep {
  const { requests: R, periodMs: P } = policy;
  const q = Math.floor(P / R);
  const r = P % R;
  // tat = max(stored TAT, now), as (a ms + b/R ms)
  let [a, b] = [now, 0];
  if (state && (state.t > now || (state.t === now && state.n > 0))) [a, b] = [state.t, state.n];
  const limit = policy.burst * P; // burst·T, scaled by R
  // The TAT is never more than burst·T ahead of the time it was stored at: further ahead, the
  // clock stepped back, and the TAT would refuse a drained client for as long as the step.
  if ((a - now) * R + b > limit) [a, b] = [now + Math.floor(limit / R), limit % R];
  let [na, nb] = [a + q, b + r];
  if (nb >= R) [na, nb] = [na + 1, nb - R];
  const allowed = (na - now) * R + nb <= limit;
  const [sa, sb] = allowed ? [na, nb] : [a, b];
  const ahead = (sa - now) * R + sb; // (TAT − now) scaled by R
  const resetMs = Math.ceil(ahead / R);
  return {
    allowed,
    remaining: Math.max(0, Math.floor((limit - ahead) / P)),
    resetMs,
    retryAfterMs: allowed ? 0 : Math.max(1, Math.ceil(((na - now) * R + nb - limit) / R)),
    state: { t: sa, n: sb, p: 0 },
    expiresAt: now + resetMs,
  };
}

function mod(a: number, m: number): number {
  return ((a % m) + m) % m;
}

/** Builds a policy from config numbers; rounds the period to whole milliseconds (at least 1). */
export function policyOf(
  algorithm: Algorithm,
  opts: { requests: number; periodMs: number; burst?: number },
): RateLimitPolicy {
  const periodMs = Math.max(1, Math.round(opts.periodMs));
  const burst = algorithm === "token_bucket" || algorithm === "gcra"
    ? opts.burst ?? opts.requests
    : opts.requests;
  return { algorithm, requests: opts.requests, periodMs, burst };
}
