import assert from "node:assert/strict";
import { type Algorithm, decide, policyOf } from "./rate_limit.ts";
import type { RateLimitDecision, RateLimitState } from "./rate_limit.ts";

/** Runs requests at the given times; returns "A"/"D" per request plus the last decision. */
function run(
  algorithm: Algorithm,
  opts: { requests: number; periodMs: number; burst?: number },
  times: number[],
) {
  const policy = policyOf(algorithm, opts);
  let state: RateLimitState | undefined;
  const out: string[] = [];
  const steps = [];
  for (const t of times) {
    const step = decide(policy, state, t);
    state = step.state;
    out.push(step.allowed ? "A" : "D");
    steps.push(step);
  }
  return { seq: out.join(""), steps };
}

const rep = (n: number, t: number) => Array(n).fill(t);

Deno.test("tokenBucket allows requests per period sustained, not 1 per period", () => {
  // 10 per minute: a burst of 10, then one token every 6 s.
  const { seq, steps } = run("token_bucket", { requests: 10, periodMs: 60_000 }, [
    ...rep(11, 0),
    5_999,
    6_000,
    6_001,
    12_000,
  ]);
  assert.equal(seq, "AAAAAAAAAAD" + "DADA");
  assert.equal(steps[10].retryAfterMs, 6_000);
  assert.equal(steps[11].retryAfterMs, 1);
  assert.equal(steps[9].remaining, 0);
  assert.equal(steps[0].remaining, 9);
  assert.equal(steps[0].resetMs, 6_000);
  assert.equal(steps[9].resetMs, 60_000);
});

Deno.test("tokenBucket sustains exactly `requests` per period after the burst", () => {
  // After draining, 60 s at a request every 100 ms admits exactly 10 (one per 6 s).
  const times = [...rep(10, 0)];
  for (let t = 100; t <= 60_000; t += 100) times.push(t);
  const { seq } = run("token_bucket", { requests: 10, periodMs: 60_000 }, times);
  assert.equal(seq.slice(10).split("").filter((c) => c === "A").length, 10);
});

Deno.test("tokenBucket honours burst separately from the rate", () => {
  const { seq } = run("token_bucket", { requests: 2, periodMs: 1_000, burst: 5 }, [
    ...rep(6, 0),
    499,
    500,
    1_000,
    1_001,
  ]);
  assert.equal(seq, "AAAAAD" + "DAAD");
});

Deno.test("tokenBucket refills to the cap, never above, and expires when full", () => {
  const { seq, steps } = run("token_bucket", { requests: 3, periodMs: 3_000 }, [
    0,
    1_000_000,
    1_000_000,
    1_000_000,
    1_000_000,
  ]);
  assert.equal(seq, "AAAAD");
  assert.equal(steps[0].expiresAt, 1_000);
});

Deno.test("tokenBucket handles fractional emission intervals exactly (3 per second)", () => {
  const { seq } = run("token_bucket", { requests: 3, periodMs: 1_000 }, [
    ...rep(3, 0),
    333,
    334,
    666,
    667,
    1_000,
  ]);
  assert.equal(seq, "AAA" + "DADAA");
});

Deno.test("fixedWindow allows `requests` per aligned window and resets at the boundary", () => {
  const { seq, steps } = run("fixed_window", { requests: 3, periodMs: 1_000 }, [
    0,
    10,
    999,
    999,
    1_000,
    1_000,
    1_000,
    1_999,
    2_000,
  ]);
  assert.equal(seq, "AAAD" + "AAAD" + "A");
  assert.equal(steps[3].retryAfterMs, 1);
  assert.equal(steps[7].retryAfterMs, 1);
  assert.equal(steps[4].remaining, 2);
  assert.equal(steps[4].resetMs, 1_000);
  assert.equal(steps[4].expiresAt, 2_000);
});

Deno.test("fixedWindow windows are aligned to the epoch, not to the first request", () => {
  const { seq } = run("fixed_window", { requests: 2, periodMs: 60_000 }, [
    59_000,
    59_500,
    59_999,
    60_000,
  ]);
  assert.equal(seq, "AADA");
});

Deno.test("slidingWindow weights the previous window by its remaining overlap", () => {
  // 10 per 1000 ms. Window [0,1000): 10 requests. At 1000 the previous weight is 10·1 → deny.
  // At 1500 the weight is 10·0.5 = 5 → 5 more allowed, then deny.
  const times = [...rep(10, 0), 1_000, ...rep(6, 1_500)];
  const { seq, steps } = run("sliding_window", { requests: 10, periodMs: 1_000 }, times);
  assert.equal(seq, "AAAAAAAAAA" + "D" + "AAAAAD");
  // At 1000: 10·(1000−e) + 1000 ≤ 10000 needs e ≥ 100.
  assert.equal(steps[10].retryAfterMs, 100);
  // At 1500 with curr = 5: 10·(1000−e) + 6000 ≤ 10000 needs e ≥ 600.
  assert.equal(steps[16].retryAfterMs, 100);
  assert.equal(steps[15].remaining, 0);
});

Deno.test("slidingWindow forgets windows older than the previous one", () => {
  const { seq } = run("sliding_window", { requests: 2, periodMs: 1_000 }, [
    0,
    0,
    0,
    2_000,
    2_000,
    2_000,
  ]);
  assert.equal(seq, "AAD" + "AAD");
});

Deno.test("slidingWindow retry-after spans into the next window when the current is full", () => {
  const { steps } = run("sliding_window", { requests: 2, periodMs: 1_000 }, [0, 0, 0]);
  // Next window: 2·(1000−e) + 1000 ≤ 2000 needs e ≥ 500, so 1000 + 500.
  assert.equal(steps[2].retryAfterMs, 1_500);
  const check = run("sliding_window", { requests: 2, periodMs: 1_000 }, [0, 0, 1_499, 1_500]);
  assert.equal(check.seq, "AADA");
  assert.equal(steps[1].resetMs, 2_000);
});

Deno.test("gcra allows the burst then one request per emission interval", () => {
  const { seq, steps } = run("gcra", { requests: 10, periodMs: 60_000 }, [
    ...rep(11, 0),
    5_999,
    6_000,
    6_001,
    12_000,
  ]);
  assert.equal(seq, "AAAAAAAAAAD" + "DADA");
  assert.equal(steps[10].retryAfterMs, 6_000);
  assert.equal(steps[0].remaining, 9);
  assert.equal(steps[9].resetMs, 60_000);
});

Deno.test("gcra with burst 1 spaces requests evenly", () => {
  const { seq } = run("gcra", { requests: 4, periodMs: 1_000, burst: 1 }, [
    0,
    1,
    249,
    250,
    499,
    500,
  ]);
  assert.equal(seq, "ADDADA");
});

Deno.test("gcra and tokenBucket agree on every decision for the same burst", () => {
  let seed = 42;
  const rand = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  const times: number[] = [];
  // Real epoch times: a float TAT near 1.8e12 ms would drift; the exact one must not.
  let t = 1_800_000_000_000;
  for (let i = 0; i < 5_000; i++) times.push(t += Math.floor(rand() * 60));
  for (
    const opts of [
      { requests: 7, periodMs: 1_000 },
      { requests: 6, periodMs: 1_000 },
      { requests: 3, periodMs: 1_000, burst: 5 },
    ]
  ) {
    const a = run("gcra", opts, times);
    const b = run("token_bucket", opts, times);
    assert.equal(a.seq, b.seq);
    const view = (s: RateLimitDecision) => [s.remaining, s.resetMs, s.retryAfterMs].join("/");
    assert.deepEqual(a.steps.map(view), b.steps.map(view));
  }
});

Deno.test("decide: expired state behaves exactly like an absent key", () => {
  for (const algorithm of ["token_bucket", "fixed_window", "sliding_window", "gcra"] as const) {
    const policy = policyOf(algorithm, { requests: 3, periodMs: 1_000 });
    const first = decide(policy, undefined, 10);
    const step = decide(policy, first.state, 20);
    const later = step.expiresAt;
    const withState = decide(policy, step.state, later);
    const fresh = decide(policy, undefined, later);
    assert.deepEqual(
      { ...withState, state: undefined, expiresAt: 0 },
      { ...fresh, state: undefined, expiresAt: 0 },
      algorithm,
    );
  }
});

Deno.test("policyOf rounds periods and ignores burst for windows", () => {
  assert.deepEqual(policyOf("fixed_window", { requests: 5, periodMs: 0.4, burst: 9 }), {
    algorithm: "fixed_window",
    requests: 5,
    periodMs: 1,
    burst: 5,
  });
  assert.equal(policyOf("gcra", { requests: 5, periodMs: 1000, burst: 9 }).burst, 9);
});

Deno.test("gcra stays exact with fractional intervals at real epoch times", () => {
  const b = 1_800_000_000_000;
  const { seq } = run("gcra", { requests: 3, periodMs: 1_000 }, [
    b,
    b,
    b,
    b + 333,
    b + 334,
    b + 666,
    b + 667,
    b + 1_000,
  ]);
  assert.equal(seq, "AAA" + "DADAA");
});

Deno.test("decide: a clock stepped back keeps a drained client refused for a period, not the step", () => {
  // Redis's TIME is its host's wall clock, which an NTP step or a restored VM can set back.
  const P = 60_000;
  const hour = 3_600_000;
  for (const algorithm of ["token_bucket", "fixed_window", "sliding_window", "gcra"] as const) {
    const policy = policyOf(algorithm, { requests: 2, periodMs: P });
    const t = 1_800_000_012_345;
    let state: RateLimitState | undefined;
    for (const now of [t, t, t]) state = decide(policy, state, now).state;
    const back = t - hour;
    const atStep = decide(policy, state, back);
    assert.equal(atStep.allowed, false, `${algorithm}: the step gives no quota back`);
    assert.ok(atStep.retryAfterMs <= 2 * P, `${algorithm}: retry after ${atStep.retryAfterMs} ms`);
    assert.ok(atStep.expiresAt <= back + 2 * P, `${algorithm}: kept until ${atStep.expiresAt}`);
    const later = decide(policy, atStep.state, back + 2 * P);
    assert.equal(later.allowed, true, `${algorithm}: allowed two periods after the step`);
  }
});
