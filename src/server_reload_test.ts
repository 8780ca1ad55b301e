import assert from "node:assert/strict";
import {
  createFollowerRounds,
  createReloads,
  RELOAD_HISTORY,
  runInSlices,
} from "./server_reload.ts";
import type { ReloadResult } from "./server_api.ts";

/** Reloads whose runs finish when the test says so; `runs` lists the triggers that ran. */
function manual() {
  const runs: string[] = [];
  const finish: ((ok: boolean) => void)[] = [];
  const recorded: ReloadResult[] = [];
  const reloads = createReloads({
    startedAt: 1000,
    metrics: { configReload: (r) => void recorded.push(r as ReloadResult) },
    run: (trigger) => {
      runs.push(trigger);
      return new Promise((resolve) => {
        finish.push((ok) =>
          resolve(
            reloads.settle({
              ok,
              version: runs.length,
              issues: [],
              at: 2000 + runs.length,
              trigger,
            }),
          )
        );
      });
    },
  });
  return { reloads, runs, finish, recorded };
}

Deno.test("reloads: one at a time, and the requests made meanwhile share one next run", async () => {
  const { reloads, runs, finish } = manual();
  const first = reloads.request("file");
  const second = reloads.request("SIGHUP");
  const third = reloads.request("admin");
  assert.equal(second, third, "requests during a run join the queued one");
  assert.deepEqual(runs, ["file"], "the queued run waits for the running one");
  finish[0](true);
  assert.equal((await first).trigger, "file");
  await Promise.resolve();
  assert.deepEqual(runs, ["file", "SIGHUP"]);
  finish[1](false);
  const r = await second;
  assert.equal(r.trigger, "SIGHUP");
  assert.equal(r.ok, false);
  // Idle again: the next request runs at once.
  const fourth = reloads.request("api");
  assert.deepEqual(runs, ["file", "SIGHUP", "api"]);
  finish[2](true);
  await fourth;
});

Deno.test("reloads: a run that throws does not stall the queue behind it", async () => {
  let n = 0;
  const reloads = createReloads({
    startedAt: 0,
    metrics: { configReload: () => {} },
    run: (trigger) => {
      n++;
      if (n === 1) return Promise.reject(new Error("boom"));
      return Promise.resolve(reloads.settle({ ok: true, version: n, issues: [], at: n, trigger }));
    },
  });
  const first = reloads.request("a");
  const queued = reloads.request("b");
  await assert.rejects(first, /boom/);
  assert.equal((await queued).trigger, "b");
});

Deno.test("reloads: outcomes are counted once, with the metric and the last result", async () => {
  const { reloads, finish, recorded } = manual();
  assert.deepEqual(reloads.stats(), {
    success: 0,
    failure: 0,
    lastSuccessAt: 1000,
    lastFailureAt: null,
  });
  assert.equal(reloads.last(), null);
  const a = reloads.request("file");
  finish[0](false);
  await a;
  const b = reloads.request("file");
  finish[1](true);
  await b;
  assert.deepEqual(reloads.stats(), {
    success: 1,
    failure: 1,
    lastSuccessAt: 2002,
    lastFailureAt: 2001,
  });
  assert.equal(reloads.last()?.version, 2);
  assert.deepEqual(recorded.map((r) => r.ok), [false, true]);
  // idle() settles once nothing runs, whatever the outcome.
  const c = reloads.request("file");
  let idle = false;
  const waiting = reloads.idle().then(() => idle = true);
  await Promise.resolve();
  assert.equal(idle, false);
  finish[2](false);
  await c;
  await waiting;
  assert.equal(idle, true);
});

Deno.test("reloads: the history keeps the latest outcomes, newest first, and no more", () => {
  const reloads = createReloads({
    startedAt: 1000,
    metrics: { configReload: () => {} },
    run: () => Promise.reject(new Error("not used")),
  });
  for (let v = 1; v <= RELOAD_HISTORY + 5; v++) {
    reloads.settle({ ok: v % 2 === 0, version: v, issues: [], at: 2000 + v });
  }
  const h = reloads.history();
  assert.equal(h.length, RELOAD_HISTORY);
  assert.equal(h[0].version, RELOAD_HISTORY + 5);
  assert.equal(h.at(-1)!.version, 6);
  h.pop();
  assert.equal(reloads.history().length, RELOAD_HISTORY, "a copy");
});

Deno.test("reloads: another worker's refusal is noted in the record (last, history, failures) but not counted in this worker's metric", () => {
  const { reloads, recorded } = manual();
  const noted = reloads.note({
    ok: false,
    version: 1,
    issues: [],
    at: 3000,
    trigger: "SIGHUP",
    worker: 1,
  });
  assert.equal(noted.worker, 1);
  assert.equal(reloads.last(), noted);
  assert.deepEqual(reloads.history(), [noted]);
  assert.equal(reloads.stats().failure, 1);
  assert.equal(reloads.stats().lastFailureAt, 3000);
  assert.deepEqual(recorded, [], "worker 1 counts its own failure in its labelled metric");
});

Deno.test("follower rounds: a wait and the answer end with the refusals of that round only", async () => {
  const rounds = createFollowerRounds();
  const waiting = rounds.wait(2, 5_000);
  rounds.refused(1, { worker: 3, error: "older" });
  rounds.refused(2, { worker: 1, error: "boom" });
  // The answer gives worker 0 the refusals it undoes (all or nothing).
  assert.deepEqual(rounds.answered(1), [{ worker: 3, error: "older" }]);
  assert.deepEqual(rounds.answered(2), [{ worker: 1, error: "boom" }]);
  assert.deepEqual(await waiting, [{ worker: 1, error: "boom" }]);
  // Answered before anyone waited: the wait ends at once.
  assert.deepEqual(await rounds.wait(1, 5_000), [{ worker: 3, error: "older" }]);
  // Never answered: null once the time is up.
  assert.equal(await rounds.wait(3, 10), null);
});

Deno.test("runInSlices: lets timers run between slices of a long computation, and returns its value", async () => {
  // 40 steps of 3 ms each: 120 ms of work, which a timer set at its start waited for whole.
  function* steps(): Generator<void, string> {
    for (let i = 0; i < 40; i++) {
      const until = performance.now() + 3;
      while (performance.now() < until) { /* busy */ }
      yield;
    }
    return "built";
  }
  let fired: number | undefined;
  const start = performance.now();
  setTimeout(() => fired = performance.now() - start, 0);
  const value = await runInSlices(steps(), 10);
  const took = performance.now() - start;
  assert.equal(value, "built");
  assert.ok(fired !== undefined, "the timer ran before the computation ended");
  assert.ok(fired < took / 2, `the timer ran after ${fired} ms of ${took} ms`);
});
