import assert from "node:assert/strict";
import { DeadlineTimers } from "./deadline_timers.ts";

Deno.test("deadline timers: each fires once, in order of its time, and cleared ones never", async () => {
  const timers = new DeadlineTimers();
  const fired: { at: number; id: number }[] = [];
  const entries = [];
  // A fixed pseudo-random sequence: the heap is exercised the same way in every run.
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let id = 0; id < 400; id++) {
    const e = timers.add(1 + Math.floor(rand() * 40), () => fired.push({ at: e.at, id }));
    entries.push({ e, id });
  }
  const cleared = new Set<number>();
  for (const { e, id } of entries) {
    if (rand() < 0.5) {
      timers.clear(e);
      timers.clear(e); // twice: a no-op
      cleared.add(id);
    }
  }
  assert.deepEqual(timers.size, 400 - cleared.size);
  const all = new Promise<void>((resolve) => {
    const last = timers.add(80, () => resolve());
    assert.ok(last.slot >= 0);
  });
  await all;
  assert.deepEqual(fired.length, 400 - cleared.size);
  for (const f of fired) assert.ok(!cleared.has(f.id), `cleared deadline ${f.id} fired`);
  for (let i = 1; i < fired.length; i++) {
    assert.ok(fired[i - 1].at <= fired[i].at, `fired out of order at ${i}`);
  }
  assert.deepEqual(timers.size, 0);
});

Deno.test("deadline timers: clearing every deadline leaves no timer armed", () => {
  // Deno's test sanitizer fails this test if a timer is left behind.
  const timers = new DeadlineTimers();
  const a = timers.add(10_000, () => {});
  const b = timers.add(5_000, () => {});
  timers.clear(a);
  timers.clear(b);
  assert.deepEqual(timers.size, 0);
});

Deno.test("deadline timers: an earlier deadline added later fires first", async () => {
  const timers = new DeadlineTimers();
  const order: string[] = [];
  const late = timers.add(10_000, () => order.push("late"));
  await new Promise<void>((resolve) =>
    timers.add(5, () => {
      order.push("early");
      resolve();
    })
  );
  assert.deepEqual(order, ["early"]);
  timers.clear(late);
});

Deno.test("deadline timers: a deadline added by a firing one is kept, and a throwing fire does not stop the rest", async () => {
  const timers = new DeadlineTimers();
  const order: string[] = [];
  const errors: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    errors.push(e.error);
  };
  globalThis.addEventListener("error", onError);
  try {
    await new Promise<void>((resolve) => {
      timers.add(2, () => {
        order.push("a");
        timers.add(3, () => {
          order.push("c");
          resolve();
        });
        throw new Error("boom");
      });
      timers.add(2, () => order.push("b"));
    });
    // The error is reported after the turn that fired it.
    await new Promise((r) => setTimeout(r, 0));
  } finally {
    globalThis.removeEventListener("error", onError);
  }
  assert.deepEqual(order, ["a", "b", "c"]);
  assert.deepEqual(errors.length, 1);
});
