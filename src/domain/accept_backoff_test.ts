import assert from "node:assert/strict";
import { ACCEPT_BACKOFF_INITIAL, acceptFailed } from "./accept_backoff.ts";
import type { AcceptBackoff } from "./accept_backoff.ts";

/** Failures at the given times (ms), each retried after its delay; what each decided. */
function run(times: number[]) {
  let s: AcceptBackoff = ACCEPT_BACKOFF_INITIAL;
  return times.map((now) => {
    const r = acceptFailed(s, now);
    s = r.state;
    return r;
  });
}

Deno.test("acceptFailed keeps backing off while failures come between working accepts", () => {
  // Out of descriptors: each failure is retried after its delay, an accept works (a descriptor
  // came free) and the next fails at once. Accepts that work do not reset the back-off.
  let now = 0;
  const delays: number[] = [];
  let s: AcceptBackoff = ACCEPT_BACKOFF_INITIAL;
  for (let i = 0; i < 10; i++) {
    const r = acceptFailed(s, now);
    s = r.state;
    delays.push(r.delayMs);
    now += r.delayMs + 1; // the retry, one accept that works, the next failure
  }
  assert.deepEqual(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]);
});

Deno.test("acceptFailed starts over after five seconds without a failure", () => {
  const [a, b, c, d] = run([0, 150, 400 + 5_000, 400 + 5_000 + 100 + 4_999]);
  assert.deepEqual([a.delayMs, b.delayMs], [100, 200]);
  // Retried at 350 (150 + 200): a failure 5 s after that starts from 100 again.
  assert.equal(c.delayMs, 100);
  // Retried at 5,500: a failure within 5 s of it doubles.
  assert.equal(d.delayMs, 200);
});

Deno.test("acceptFailed logs the first failure, then at most one line a minute with the count left out", () => {
  // A steady failure every 100 ms for three minutes (delays kept short by the caller's loop).
  const times = Array.from({ length: 1_800 }, (_, i) => i * 100);
  const logged = run(times).map((r, i) => [times[i], r.log, r.suppressed] as const).filter((x) =>
    x[1]
  );
  assert.deepEqual(logged.map(([t]) => t), [0, 60_000, 120_000]);
  // Each line after the first counts the failures not logged since the one before.
  assert.deepEqual(logged.map(([, , n]) => n), [0, 599, 599]);
  // After a quiet spell the first failure is logged again at once.
  const [, quiet] = run([0, 10_000]);
  assert.equal(quiet.log, true);
});
