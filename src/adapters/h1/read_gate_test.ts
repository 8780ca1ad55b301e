import assert from "node:assert/strict";
import { ReadGate, TICK_MS } from "./read_gate.ts";
import type { Reader } from "./read_gate.ts";

/** A gate whose ticker is driven by hand: `tick()` runs one tick while the ticker runs. */
function gate(limit: number) {
  let fn: (() => void) | null = null;
  let starts = 0;
  const g = new ReadGate(limit, (f, ms) => {
    assert.equal(ms, TICK_MS);
    starts++;
    fn = f;
    return () => fn = null;
  });
  return {
    g,
    tick: () => fn?.(),
    ticking: () => fn !== null,
    starts: () => starts,
  };
}
const reader = (): Reader => ({ turnEnds: -1, slot: -1 });
/** Lets queued turns resolve (a turn handed on resolves within a few microtasks). */
const settle = async () => {
  for (let i = 0; i < 5; i++) await null;
};

Deno.test("read gate: turns up to the limit come at once, the rest wait and come in order", async () => {
  const { g } = gate(2);
  const [a, b, c, d] = [reader(), reader(), reader(), reader()];
  assert.equal(g.enter(a), undefined);
  assert.equal(g.enter(b), undefined);
  const order: string[] = [];
  g.enter(c)!.then(() => order.push("c"));
  g.enter(d)!.then(() => order.push("d"));
  assert.equal(g.waiting, 2);
  await settle();
  assert.deepEqual(order, []);
  g.leave(b);
  await settle();
  assert.deepEqual(order, ["c"]);
  assert.ok(c.turnEnds >= 0, "the waiter holds the turn it was given");
  g.leave(a);
  await settle();
  assert.deepEqual(order, ["c", "d"]);
  assert.equal(g.held, 2);
  // A newcomer queues behind nobody but still waits while all turns are held.
  assert.notEqual(g.enter(reader()), undefined);
});

Deno.test("read gate: a turn ends once; leaving without one changes nothing", () => {
  const { g } = gate(1);
  const a = reader();
  g.enter(a);
  g.leave(a);
  g.leave(a);
  g.leave(reader());
  assert.equal(g.held, 0);
  assert.equal(g.enter(reader()), undefined);
  assert.equal(g.held, 1);
});

Deno.test("read gate: an idle turn goes to a waiter after two ticks, a busy one two ticks after its request began", async () => {
  const { g, tick, ticking } = gate(2);
  const idle = reader(), busy = reader(), waiter = reader(), second = reader();
  assert.equal(ticking(), false, "no ticker while no turn is held");
  g.enter(idle);
  g.enter(busy);
  assert.equal(ticking(), true);
  let admitted = 0;
  g.enter(waiter)!.then(() => admitted++);
  tick();
  await settle();
  assert.equal(admitted, 0, "one tick is not yet idle");
  g.busy(busy); // its request came after a tick: serving it restarts the count
  tick();
  await settle();
  assert.equal(admitted, 1);
  assert.equal(idle.turnEnds, -1, "the idle reader lost its turn");
  assert.ok(busy.turnEnds >= 0, "the busy one keeps its turn");
  g.leave(idle); // its read ends later: no second turn is handed out
  assert.equal(g.held, 2);
  g.enter(second)!.then(() => admitted++);
  tick();
  await settle();
  assert.equal(admitted, 2, "two ticks of serving: the request goes on outside the count");
  assert.equal(busy.turnEnds, -1);
  // A turn held for 0.1 s while its request waited for the upstream let 64 requests through per
  // 0.1 s: 640/s behind an upstream that takes that long (bench/slow_upstream.ts).
  g.busy(waiter);
  tick();
  await settle();
  assert.equal(g.held, 2);
  tick();
  await settle();
  assert.equal(g.held, 0, "the last two turns end");
  assert.equal(ticking(), false, "the ticker stops once no turn is held and nobody waits");
});

Deno.test("read gate: an idle turn ends after two ticks with nobody waiting, so a newcomer never waits for it", () => {
  const { g, tick, ticking } = gate(1);
  const idle = reader();
  g.enter(idle);
  tick();
  assert.equal(g.held, 1);
  tick();
  assert.equal(g.held, 0);
  assert.equal(idle.turnEnds, -1);
  assert.equal(ticking(), false);
  assert.equal(g.enter(reader()), undefined, "a turn at once");
  assert.equal(ticking(), true);
});

Deno.test("read gate: thousands of waiters are served first come first served", async () => {
  const { g } = gate(1);
  const first = reader();
  g.enter(first);
  const order: number[] = [];
  const readers = Array.from({ length: 3000 }, () => reader());
  readers.forEach((r, i) => g.enter(r)!.then(() => order.push(i)));
  g.leave(first);
  for (const r of readers) {
    await settle();
    g.leave(r);
  }
  await settle();
  assert.equal(order.length, 3000);
  assert.ok(order.every((v, i) => v === i));
  assert.equal(g.waiting, 0);
  assert.equal(g.held, 0);
});
