import assert from "node:assert/strict";
import {
  CROWD,
  crowd,
  type GcFn,
  type ReducerOptions,
  startMemoryReducer,
  trafficSeen,
} from "./gc_hint.ts";

/** A reducer driven by hand: `tick()` runs one idle check; `calls` records each collection. */
function reducer(
  o:
    & { burst: number; idleMs: () => number }
    & Pick<ReducerOptions, "aboveBytes" | "rss" | "onSkip" | "crowdPeak">,
) {
  const calls: Parameters<GcFn>[0][] = [];
  let check = () => {};
  let stopped = false;
  const stop = startMemoryReducer({
    // No crowds unless a test says so (other tests' listeners report to the module's peak).
    crowdPeak: () => 0,
    ...o,
    tickMs: 1000,
    gc: (opts) => calls.push(opts),
    every: (fn, ms) => {
      assert.equal(ms, 1000);
      check = fn;
      return () => stopped = true;
    },
  });
  return {
    calls,
    tick: () => check(),
    requests: (n: number) => {
      for (let i = 0; i < n; i++) trafficSeen();
    },
    stop: () => (stop(), stopped),
  };
}

Deno.test("memory reducer: one memory-reducing GC after the first idle tick that follows a burst", () => {
  const r = reducer({ burst: 10, idleMs: () => 1000 });
  r.requests(10);
  r.tick(); // requests in this tick: not idle
  assert.equal(r.calls.length, 0);
  r.tick();
  assert.deepEqual(r.calls, [{ type: "major", execution: "sync", flavor: "last-resort" }]);
  r.tick();
  r.tick();
  assert.equal(r.calls.length, 1, "once per burst");
  assert.equal(r.stop(), true);
});

Deno.test("memory reducer: no GC without a burst", () => {
  const r = reducer({ burst: 10, idleMs: () => 1000 });
  r.requests(9);
  for (let i = 0; i < 5; i++) r.tick();
  assert.equal(r.calls.length, 0);
  r.requests(1); // the burst counts across ticks
  r.tick();
  r.tick();
  assert.equal(r.calls.length, 1);
});

Deno.test("memory reducer: waits for reduce_after_idle, and traffic restarts the wait", () => {
  let idle = 3000;
  const r = reducer({ burst: 10, idleMs: () => idle });
  r.requests(10);
  r.tick();
  r.tick();
  r.tick();
  assert.equal(r.calls.length, 0, "2 s idle of 3");
  r.requests(1);
  r.tick();
  r.tick();
  r.tick();
  assert.equal(r.calls.length, 0, "the wait starts again after a request");
  r.tick();
  assert.equal(r.calls.length, 1, "3 s idle");
  // Read at every tick (a reload applies): 1.5 s rounds up to two ticks.
  idle = 1500;
  r.requests(10);
  r.tick();
  r.tick();
  assert.equal(r.calls.length, 1);
  r.tick();
  assert.equal(r.calls.length, 2);
});

Deno.test("memory reducer: reduce_after_idle 0s turns it off", () => {
  let idle = 0;
  const r = reducer({ burst: 10, idleMs: () => idle });
  r.requests(10);
  for (let i = 0; i < 5; i++) r.tick();
  assert.equal(r.calls.length, 0);
  idle = 1000; // turned back on by a reload: the burst is still owed
  r.tick();
  assert.equal(r.calls.length, 1);
});

Deno.test("memory reducer: runs only when RSS is above reduce_above; below it the burst is forgotten", () => {
  let rss = 100 * 1048576;
  const skipped: number[] = [];
  const r = reducer({
    burst: 10,
    idleMs: () => 1000,
    aboveBytes: () => 150 * 1048576,
    rss: () => rss,
    onSkip: (bytes) => skipped.push(bytes),
  });
  r.requests(10);
  r.tick();
  r.tick();
  assert.equal(r.calls.length, 0, "below the threshold: memory kept");
  assert.deepEqual(skipped, [100 * 1048576]);
  rss = 200 * 1048576;
  r.tick();
  r.tick();
  assert.equal(r.calls.length, 0, "a skipped burst is not owed later");
  r.requests(10);
  r.tick();
  r.tick();
  assert.deepEqual(r.calls, [{ type: "major", execution: "sync", flavor: "last-resort" }]);
  assert.equal(skipped.length, 1);
});

Deno.test("memory reducer: a burst of a crowd is reduced below reduce_above too, and the crowd is forgotten after", () => {
  const skipped: number[] = [];
  const peaks = [CROWD, 0, CROWD - 1];
  const r = reducer({
    burst: 10,
    idleMs: () => 1000,
    aboveBytes: () => 150 * 1048576,
    rss: () => 100 * 1048576,
    onSkip: (bytes) => skipped.push(bytes),
    crowdPeak: () => peaks.shift()!,
  });
  r.requests(10);
  r.tick();
  r.tick();
  assert.equal(r.calls.length, 1, "a crowd: reduced whatever the RSS");
  for (let i = 0; i < 2; i++) {
    r.requests(10);
    r.tick();
    r.tick();
  }
  assert.equal(r.calls.length, 1, "no crowd, or one short of CROWD: memory kept");
  assert.equal(skipped.length, 2);
});

Deno.test("memory reducer: what listeners report through crowd() is its default peak", () => {
  const calls: unknown[] = [];
  let check = () => {};
  const stop = startMemoryReducer({
    burst: 1,
    tickMs: 1000,
    aboveBytes: () => Number.MAX_SAFE_INTEGER,
    gc: (o) => calls.push(o),
    every: (fn) => {
      check = fn;
      return () => {};
    },
  });
  try {
    crowd(CROWD);
    trafficSeen();
    check();
    check();
    assert.equal(calls.length, 1);
    trafficSeen();
    check();
    check();
    assert.equal(calls.length, 1, "the peak was taken by the first reduction");
  } finally {
    stop();
  }
});
