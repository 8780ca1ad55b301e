// One contract suite that every policy in POLICIES must pass, plus each policy's own spread.
import assert from "node:assert/strict";
import { seededRandom } from "../../tests/_harness.ts";
import { createSelector, hash32, POLICIES, rampFactor, SLOW_START_MIN } from "./balancer.ts";
import type { PickInput, Policy, PoolTarget, TargetLoad } from "./balancer.ts";

const ALL = Object.keys(POLICIES) as Policy[];
const pool = (n: number, weights?: number[]): PoolTarget[] =>
  Array.from({ length: n }, (_, i) => ({
    id: `http://10.0.0.${i + 1}:80`,
    weight: weights?.[i] ?? 1,
    backup: false,
  }));
const idle = (avail: boolean[] = []): (i: number) => TargetLoad => (i) => ({
  available: avail[i] ?? true,
  inFlight: 0,
  latencyMs: 0,
});

function counts(policy: Policy, p: PoolTarget[], n: number, input: Partial<PickInput> = {}) {
  const sel = createSelector(policy, p);
  const random = input.random ?? seededRandom(7);
  const c = p.map(() => 0);
  for (let k = 0; k < n; k++) {
    const i = sel.pick({ load: idle(), random, key: `client-${k}`, ...input });
    assert.ok(i !== undefined);
    c[i]++;
  }
  return c;
}

for (const policy of ALL) {
  Deno.test(`${policy}: never picks an unavailable or excluded target`, () => {
    const p = pool(5);
    const sel = createSelector(policy, p);
    const rnd = seededRandom(42);
    for (let k = 0; k < 2_000; k++) {
      const avail = p.map(() => rnd() < 0.6);
      const exclude = new Set(rnd() < 0.3 ? [Math.floor(rnd() * 5)] : []);
      const load = (i: number) => ({ available: avail[i], inFlight: k % (i + 2), latencyMs: i });
      const i = sel.pick({ load, exclude, random: rnd, key: `k${k}` });
      const any = avail.some((a, j) => a && !exclude.has(j));
      if (!any) assert.equal(i, undefined);
      else {
        assert.ok(i !== undefined && avail[i] && !exclude.has(i), `picked ${i}`);
      }
    }
  });

  Deno.test(`${policy}: deterministic with an injected random source`, () => {
    const run = () => {
      const sel = createSelector(policy, pool(4, [1, 2, 3, 4]));
      const rnd = seededRandom(99);
      return Array.from({ length: 200 }, (_, k) =>
        sel.pick({
          load: (i) => ({ available: true, inFlight: (k * (i + 1)) % 3, latencyMs: i * 2 }),
          random: rnd,
          key: k % 3 === 0 ? undefined : `user-${k}`,
        }));
    };
    assert.deepEqual(run(), run());
  });

  Deno.test(`${policy}: uses backups only when no primary is available`, () => {
    const p = pool(3);
    p[2].backup = true;
    const sel = createSelector(policy, p);
    const rnd = seededRandom(1);
    for (let k = 0; k < 100; k++) {
      assert.notEqual(sel.pick({ load: idle(), random: rnd, key: `k${k}` }), 2);
    }
    for (let k = 0; k < 20; k++) {
      assert.equal(sel.pick({ load: idle([false, false, true]), random: rnd, key: `k${k}` }), 2);
    }
  });

  Deno.test(`${policy}: spreads as its contract says`, () => SPREAD[policy]());
}

/** Each policy's distribution contract; a new policy fails to compile until it has one. */
const SPREAD: Record<Policy, () => void> = {
  round_robin() {
    const sel = createSelector("round_robin", pool(3));
    const seq = Array.from(
      { length: 9 },
      () => sel.pick({ load: idle(), random: seededRandom(1) }),
    );
    assert.deepEqual(seq, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    assert.deepEqual(counts("round_robin", pool(3), 3_000), [1_000, 1_000, 1_000]);
  },
  random() {
    for (const c of counts("random", pool(4), 40_000)) {
      assert.ok(Math.abs(c - 10_000) < 400, `${c}`);
    }
    // Weighted: shares follow weights within 1 point.
    const w = counts("random", pool(3, [6, 3, 1]), 40_000);
    w.forEach((n, i) => assert.ok(Math.abs(n / 40_000 - [0.6, 0.3, 0.1][i]) < 0.01, `${w}`));
  },
  weighted_round_robin() {
    const w = [5, 3, 2];
    const c = counts("weighted_round_robin", pool(3, w), 10_007);
    c.forEach((n, i) => assert.ok(Math.abs(n / 10_007 - w[i] / 10) < 0.01, `${c}`));
    // Smooth: the heavy target never takes more than two picks in a row for 5:3:2.
    const sel = createSelector("weighted_round_robin", pool(3, w));
    const seq = Array.from(
      { length: 10 },
      () => sel.pick({ load: idle(), random: seededRandom(1) }),
    );
    assert.deepEqual(seq, [0, 1, 2, 0, 0, 1, 0, 2, 1, 0]);
  },
  least_connections() {
    const sel = createSelector("least_connections", pool(3, [1, 1, 2]));
    const inFlight = [4, 2, 3]; // per weight: 4, 2, 1.5
    const load = (i: number) => ({ available: true, inFlight: inFlight[i], latencyMs: 0 });
    assert.equal(sel.pick({ load, random: seededRandom(1) }), 2);
    // Ties rotate, so an idle pool still spreads evenly.
    assert.deepEqual(counts("least_connections", pool(3), 300), [100, 100, 100]);
    // Ties take turns by weight (nginx's least_conn), so sequential traffic honours the weights.
    assert.deepEqual(counts("least_connections", pool(3, [1, 1, 2]), 400), [100, 100, 200]);
    const sel2 = createSelector("least_connections", pool(2, [3, 1]));
    const seq = Array.from(
      { length: 8 },
      () => sel2.pick({ load: idle(), random: seededRandom(1) }),
    );
    assert.deepEqual(seq, [0, 0, 1, 0, 0, 0, 1, 0]);
  },
  power_of_two() {
    const sel = createSelector("power_of_two", pool(3));
    const inFlight = [1, 9, 2];
    const load = (i: number) => ({ available: true, inFlight: inFlight[i], latencyMs: 10 });
    const c = [0, 0, 0];
    const rnd = seededRandom(3);
    for (let k = 0; k < 3_000; k++) c[sel.pick({ load, random: rnd })!]++;
    assert.equal(c[1], 0, "the most loaded target never wins a pair");
    assert.ok(c[0] > c[2] && c[2] > 0, `${c}`);
    // Latency counts too: equal in-flight, 10× slower loses.
    const slow = (i: number) => ({ available: true, inFlight: 0, latencyMs: i === 0 ? 100 : 10 });
    for (let k = 0; k < 100; k++) assert.notEqual(sel.pick({ load: slow, random: rnd }), 0);
    const even = counts("power_of_two", pool(3), 30_000);
    for (const n of even) assert.ok(Math.abs(n - 10_000) < 500, `${even}`);
    // Candidates are drawn by weight: the heavy target meets nearly every pair (and wins it).
    const heavy = counts("power_of_two", pool(4, [1, 3, 1000, 1]), 10_000);
    assert.ok(heavy[2] > 9_800, `${heavy}`);
    const twoToOne = counts("power_of_two", pool(2, [3, 1]), 10_000);
    assert.ok(twoToOne[0] === 10_000, `idle: the lower cost always wins a pair, ${twoToOne}`);
  },
  consistent_hash() {
    const p = pool(5);
    const sel = createSelector("consistent_hash", p);
    const rnd = seededRandom(5);
    const keys = Array.from({ length: 5_000 }, (_, k) => `10.1.${k >> 8}.${k & 255}`);
    const before = keys.map((key) => sel.pick({ load: idle(), random: rnd, key })!);
    // Same key, same target.
    keys.forEach((key, k) => assert.equal(sel.pick({ load: idle(), random: rnd, key }), before[k]));
    // Balanced within 25% of fair share.
    const c = p.map((_, i) => before.filter((x) => x === i).length);
    for (const n of c) assert.ok(Math.abs(n - 1_000) < 250, `${c}`);
    // Target 2 down: only its keys move.
    const after = keys.map((key) =>
      sel.pick({ load: idle([true, true, false, true, true]), random: rnd, key })!
    );
    keys.forEach((_, k) => {
      if (before[k] !== 2) assert.equal(after[k], before[k]);
      else assert.notEqual(after[k], 2);
    });
    // Adding a sixth target moves about 1/6 of the keys, all of them onto the new one.
    const grown = createSelector("consistent_hash", pool(6));
    const moved = keys.filter((key, k) => {
      const j = grown.pick({ load: idle(), random: rnd, key })!;
      if (j !== before[k]) assert.equal(j, 5);
      return j !== before[k];
    }).length;
    assert.ok(moved > 500 && moved < 1_200, `moved ${moved}`);
    // Bounded load: a hot target above 1.25× its share is skipped.
    const hot = before[0];
    const busy = (i: number) => ({ available: true, inFlight: i === hot ? 10 : 1, latencyMs: 0 });
    assert.notEqual(sel.pick({ load: busy, random: rnd, key: keys[0] }), hot);
  },
  first() {
    assert.deepEqual(counts("first", pool(3), 50), [50, 0, 0]);
    const sel = createSelector("first", pool(3));
    assert.equal(sel.pick({ load: idle([false, true, true]), random: seededRandom(1) }), 1);
  },
};

Deno.test("hash32 spreads short keys over the 32-bit range", () => {
  const seen = new Set(Array.from({ length: 10_000 }, (_, i) => hash32(`k${i}`) >>> 28));
  assert.equal(seen.size, 16);
});

Deno.test("retries leave the rotation of first attempts alone", () => {
  // Target 0 always fails and every request is retried: first attempts must still take turns.
  for (const policy of ["round_robin", "weighted_round_robin", "least_connections"] as const) {
    for (const size of [2, 3]) {
      const p = pool(size);
      const sel = createSelector(policy, p);
      const first = p.map(() => 0);
      for (let k = 0; k < 30 * size; k++) {
        const i = sel.pick({ load: idle(), random: seededRandom(k) })!;
        first[i]++;
        if (i === 0) {
          const retry = sel.pick({ load: idle(), random: seededRandom(k), exclude: new Set([0]) });
          assert.notEqual(retry, 0);
        }
      }
      assert.deepEqual(first, p.map(() => 30), `${policy} over ${size} targets`);
    }
  }
});

Deno.test("round_robin keeps each target's turn when another drops out and comes back", () => {
  const sel = createSelector("round_robin", pool(3));
  const avail = [true, true, true];
  const picks: number[] = [];
  for (let k = 0; k < 9; k++) {
    avail[1] = k < 3 || k >= 6; // target 1 is away for a while
    picks.push(sel.pick({ load: idle(avail), random: Math.random })!);
  }
  assert.deepEqual(picks, [0, 1, 2, 0, 2, 0, 1, 2, 0]);
});

Deno.test("consistent_hash: a reload that removes a target or changes a weight moves only that target's keys, whatever the weights", () => {
  const keys = Array.from({ length: 4_000 }, (_, k) => `10.2.${k >> 8}.${k & 255}`);
  const picks = (p: PoolTarget[]) => {
    const sel = createSelector("consistent_hash", p);
    return keys.map((key) => p[sel.pick({ load: idle(), random: seededRandom(1), key })!].id);
  };
  // Weights of 100 each: the total crossed the old ring's size cap, which re-placed every target.
  const five = pool(5, [100, 100, 100, 100, 100]);
  const before = picks(five);
  const gone = five[2].id;
  const after = picks(five.filter((t) => t.id !== gone));
  keys.forEach((_, k) => {
    if (before[k] !== gone) assert.equal(after[k], before[k], `key ${keys[k]} moved`);
  });
  // Shares follow the weights.
  const share = (ids: string[], id: string) => ids.filter((x) => x === id).length / ids.length;
  const mixed = pool(3, [1, 2, 5]);
  const m = picks(mixed);
  [1, 2, 5].forEach((w, i) => {
    const s = share(m, mixed[i].id);
    assert.ok(Math.abs(s - w / 8) < 0.03, `${mixed[i].id}: ${s}`);
  });
  // Raising one target's weight only pulls keys onto it.
  const heavier = picks(pool(3, [1, 2, 9]));
  m.forEach((id, k) => {
    if (heavier[k] !== id) assert.equal(heavier[k], mixed[2].id);
  });
});

Deno.test("consistent_hash: requests without a key follow the weights", () => {
  const c = counts("consistent_hash", pool(2, [1, 3]), 8_000, { key: undefined });
  assert.ok(Math.abs(c[1] / 8_000 - 0.75) < 0.03, `${c}`);
});

Deno.test("rampFactor rises linearly from the minimum share to 1 over the window", () => {
  assert.equal(rampFactor(0, 60_000), SLOW_START_MIN);
  assert.equal(rampFactor(3_000, 60_000), SLOW_START_MIN, "never below the minimum");
  assert.equal(rampFactor(30_000, 60_000), 0.5);
  assert.equal(rampFactor(45_000, 60_000), 0.75);
  assert.equal(rampFactor(60_000, 60_000), 1);
  assert.equal(rampFactor(1e9, 60_000), 1);
  assert.equal(rampFactor(0, 0), 1, "no window, no ramp");
});

/** Policies that share load, whose shares slow start scales; `first` (failover) has none. */
const SHARING = ALL.filter((p) => p !== "first");

for (const policy of SHARING) {
  Deno.test(`${policy}: a target in slow start gets its ramped share of requests`, () => {
    const n = 20_000;
    const full = counts(policy, pool(4), n);
    // Target 0 at 10 %: its weight is 0.1 among 1 + 1 + 1, so about 0.1 / 3.1 of the picks.
    const at = (r: number) => counts(policy, pool(4), n, { ramp: (i) => i === 0 ? r : 1 });
    const low = at(0.1), half = at(0.5);
    const share = (c: number[]) => c[0] / n;
    assert.ok(Math.abs(share(low) - 0.1 / 3.1) < 0.02, `${policy} at 10 %: ${low}`);
    assert.ok(Math.abs(share(half) - 0.5 / 3.5) < 0.03, `${policy} at 50 %: ${half}`);
    assert.ok(Math.abs(share(full) - 0.25) < 0.03, `${policy} full: ${full}`);
    // The others share the rest evenly.
    for (const c of low.slice(1)) assert.ok(Math.abs(c / n - 1 / 3.1) < 0.03, `${low}`);
  });
}

Deno.test("slow start: a lone or all-ramping pool is still served; first ignores the ramp", () => {
  for (const policy of ALL) {
    const c = counts(policy, pool(1), 100, { ramp: () => 0.1 });
    assert.deepEqual(c, [100], policy);
  }
  assert.deepEqual(counts("round_robin", pool(3), 300, { ramp: () => 0.1 }), [100, 100, 100]);
  assert.deepEqual(
    counts("first", pool(3), 50, { ramp: (i) => i === 0 ? 0.1 : 1 }),
    [50, 0, 0],
    "failover: the first target takes all or nothing",
  );
});

Deno.test("round_robin in slow start: the ramping target takes every tenth of its turns", () => {
  const sel = createSelector("round_robin", pool(2));
  const seq = Array.from(
    { length: 22 },
    () => sel.pick({ load: idle(), random: seededRandom(1), ramp: (i) => i === 1 ? 0.1 : 1 }),
  );
  assert.equal(seq.filter((i) => i === 1).length, 2, `${seq}`);
  // A retry (exclusions) neither banks nor spends turns.
  const retry = sel.pick({
    load: idle(),
    random: seededRandom(1),
    exclude: new Set([0]),
    ramp: (i) => i === 1 ? 0.1 : 1,
  });
  assert.equal(retry, 1);
});

Deno.test("consistent_hash in slow start: the ramping target only wins keys back, no other moves", () => {
  const p = pool(5);
  const sel = createSelector("consistent_hash", p);
  const rnd = seededRandom(5);
  const keys = Array.from({ length: 5_000 }, (_, k) => `10.2.${k >> 8}.${k & 255}`);
  const at = (r: number) =>
    keys.map((key) => sel.pick({ load: idle(), random: rnd, key, ramp: (i) => i === 3 ? r : 1 })!);
  const full = at(1), low = at(0.1), half = at(0.5);
  const mine = (a: number[]) => a.filter((x) => x === 3).length;
  assert.ok(
    mine(low) < mine(half) && mine(half) < mine(full),
    `${mine(low)} ${mine(half)} ${mine(full)}`,
  );
  keys.forEach((_, k) => {
    // A key the ramping target holds at 10 % it keeps at 50 % and at full weight.
    if (low[k] === 3) assert.equal(half[k], 3);
    if (half[k] === 3) assert.equal(full[k], 3);
    // Every other key stays where it is at full weight, unless it belongs to the ramping target.
    if (full[k] !== 3) assert.equal(low[k], full[k]);
  });
});
