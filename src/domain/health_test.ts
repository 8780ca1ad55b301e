import assert from "node:assert/strict";
import {
  ACTIVE_INITIAL,
  applyProbe,
  carryOver,
  eject,
  isAvailable,
  mayEject,
  mayEjectTiered,
  PASSIVE_INITIAL,
  recordOutcome,
  statusMatcher,
  unEject,
} from "./health.ts";
import type { ActiveHealth, PassiveHealth, PassivePolicy, Transition } from "./health.ts";

const th = { healthy: 2, unhealthy: 3 };

function probes(results: string, start: ActiveHealth = ACTIVE_INITIAL) {
  let s = start;
  const transitions: Transition[] = [];
  for (const r of results) {
    const out = applyProbe(s, r === "+", th);
    s = out.state;
    transitions.push(out.transition);
  }
  return { state: s, transitions };
}

Deno.test("applyProbe: the first result decides an unknown target", () => {
  assert.equal(probes("+").state.status, "up");
  assert.deepEqual(probes("+").transitions, ["up"]);
  assert.equal(probes("-").state.status, "down");
  assert.ok(isAvailable(ACTIVE_INITIAL, PASSIVE_INITIAL, 0), "unknown counts as available");
});

Deno.test("applyProbe: unhealthy_threshold consecutive failures mark down", () => {
  const r = probes("+--");
  assert.equal(r.state.status, "up");
  const d = probes("+---");
  assert.equal(d.state.status, "down");
  assert.deepEqual(d.transitions, ["up", null, null, "down"]);
});

Deno.test("applyProbe: a success resets the failure streak (the seed summed them)", () => {
  assert.equal(probes("+-+-+-+--").state.status, "up");
});

Deno.test("applyProbe: healthy_threshold consecutive successes bring it back", () => {
  const down = probes("-").state;
  assert.equal(probes("+", down).state.status, "down");
  assert.equal(probes("+-+", down).state.status, "down");
  const back = probes("+-++", down);
  assert.equal(back.state.status, "up");
  assert.deepEqual(back.transitions, [null, null, null, "up"]);
});

const policy: PassivePolicy = {
  enabled: true,
  failures: 3,
  windowMs: 10_000,
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  panicPercent: 50,
};

function outcomes(results: string, times: number[], start: PassiveHealth = PASSIVE_INITIAL) {
  let s = start;
  let ejected = false;
  [...results].forEach((r, k) => {
    const out = recordOutcome(s, r === "+", { now: times[k], policy });
    s = out.state;
    ejected ||= out.eject;
  });
  return { state: s, ejected };
}

Deno.test("recordOutcome: consecutive failures within the window ask for ejection", () => {
  assert.equal(outcomes("---", [0, 1_000, 2_000]).ejected, true);
  assert.equal(outcomes("--+-", [0, 1, 2, 3]).ejected, false, "a success resets the streak");
  assert.equal(outcomes("---", [0, 1_000, 20_000]).ejected, false, "window expired");
  // The window slides: the last three failures (9 s, 10.5 s, 11 s) fall within 10 s.
  assert.equal(outcomes("----", [0, 9_000, 10_500, 11_000]).ejected, true, "sliding window");
  assert.equal(outcomes("----", [0, 6_000, 12_000, 18_000]).ejected, false, "spread out");
  assert.equal(outcomes("-".repeat(100), [...Array(100).keys()]).state.times.length, 3, "bounded");
  assert.equal(
    recordOutcome(PASSIVE_INITIAL, false, {
      now: 0,
      policy: { ...policy, failures: 1, enabled: false },
    }).eject,
    false,
  );
});

Deno.test("eject: the cool-down doubles on repeated ejection, capped, and decays", () => {
  let s = PASSIVE_INITIAL;
  const durations: number[] = [];
  let now = 0;
  for (let k = 0; k < 6; k++) {
    const out = eject(s, { now, policy });
    durations.push(out.durationMs);
    s = out.state;
    assert.ok(!isAvailable(ACTIVE_INITIAL, s, now));
    assert.ok(!isAvailable(ACTIVE_INITIAL, s, s.ejectedUntil - 1));
    assert.ok(isAvailable(ACTIVE_INITIAL, s, s.ejectedUntil));
    now = s.ejectedUntil + 1;
  }
  assert.deepEqual(durations, [30_000, 60_000, 120_000, 240_000, 300_000, 300_000]);
  // In service for longer than the max cool-down: back to the base duration.
  const later = eject(s, { now: s.ejectedUntil + 300_001, policy });
  assert.equal(later.durationMs, 30_000);
  assert.equal(unEject(s, now).ejectedUntil, 0);
});

Deno.test("recordOutcome: no new ejection request while already ejected", () => {
  const ej = eject(PASSIVE_INITIAL, { now: 0, policy }).state;
  assert.equal(outcomes("---", [1, 2, 3], ej).ejected, false);
  assert.equal(outcomes("---", [30_001, 30_002, 30_003], ej).ejected, true);
});

Deno.test("mayEject: the panic threshold keeps enough targets in service", () => {
  assert.equal(mayEject(3, 3, 50), true); // 2 of 3 remain
  assert.equal(mayEject(2, 3, 50), false); // 1 of 3 would remain
  assert.equal(mayEject(1, 1, 50), false);
  assert.equal(mayEject(1, 1, 0), true);
  assert.equal(mayEject(0, 3, 0), false);
});

Deno.test("mayEjectTiered: backups stand in for the primaries", () => {
  const t = (available: number, total: number) => ({ available, total });
  const p = (backup: boolean) => ({ backup, panicPercent: 50 });
  // Without backups, the same as mayEject.
  assert.equal(mayEjectTiered({ primary: t(3, 3), backup: t(0, 0) }, p(false)), true);
  assert.equal(mayEjectTiered({ primary: t(2, 3), backup: t(0, 0) }, p(false)), false);
  // The last primary goes while a backup is up; not while every backup is out too.
  assert.equal(mayEjectTiered({ primary: t(1, 2), backup: t(1, 1) }, p(false)), true);
  assert.equal(mayEjectTiered({ primary: t(1, 2), backup: t(0, 1) }, p(false)), false);
  // A backup: by the same sum.
  assert.equal(mayEjectTiered({ primary: t(2, 2), backup: t(1, 1) }, p(true)), true);
  assert.equal(mayEjectTiered({ primary: t(0, 2), backup: t(2, 2) }, p(true)), true);
  assert.equal(mayEjectTiered({ primary: t(0, 2), backup: t(1, 2) }, p(true)), false);
});

Deno.test("statusMatcher: codes, classes, ranges and lists", () => {
  const m = statusMatcher("2xx");
  assert.ok(m(200) && m(299) && !m(300) && !m(199));
  const l = statusMatcher([200, "301-302", "404"]);
  assert.ok(l(200) && l(301) && l(302) && l(404) && !l(303) && !l(204));
  assert.ok(statusMatcher("200,204")(204));
  assert.throws(() => statusMatcher("2x"), /Cannot read status selector "2x"/);
  assert.throws(() => statusMatcher("600-700"), /outside 100-599/);
  assert.throws(() => statusMatcher("500-400"), /outside 100-599/);
});

Deno.test("carryOver: the old check's status stands until the new check's first result decides", () => {
  const th = { healthy: 3, unhealthy: 3 };
  const down = carryOver({ status: "down", successes: 0, failures: 7 });
  assert.equal(isAvailable(down, PASSIVE_INITIAL, 0), false, "still out before any result");
  assert.deepEqual(applyProbe(down, true, th), {
    state: { status: "up", successes: 1, failures: 0 },
    transition: "up",
  });
  assert.deepEqual(applyProbe(down, false, th), {
    state: { status: "down", successes: 0, failures: 1 },
    transition: null,
  });
  const up = carryOver({ status: "up", successes: 9, failures: 0 });
  assert.equal(applyProbe(up, false, th).transition, "down");
  assert.equal(applyProbe(up, true, th).transition, null);
});
