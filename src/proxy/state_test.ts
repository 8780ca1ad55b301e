import assert from "node:assert/strict";
import { noopMetrics, silentLogger } from "../ports.ts";
import type { Metrics } from "../ports.ts";
import { createUpstreamRegistry } from "./state.ts";

function registry() {
  let t = 0;
  const health: [string, boolean][] = [];
  const metrics: Metrics = { ...noopMetrics, backendHealth: (b, h) => void health.push([b, h]) };
  const logs: string[] = [];
  const warns: string[] = [];
  const reg = createUpstreamRegistry({
    clock: { now: () => t, monotonic: () => t },
    logger: { ...silentLogger, info: (m) => void logs.push(m), warn: (m) => void warns.push(m) },
    metrics,
  });
  return { reg, health, logs, warns, advance: (ms: number) => t += ms };
}

Deno.test("registry: latency is a peak EWMA that decays without samples", () => {
  const { reg, advance } = registry();
  reg.observe("a", 10);
  assert.equal(reg.latency("a"), 10);
  reg.observe("a", 50);
  assert.equal(reg.latency("a"), 50, "a slower sample counts at once");
  advance(10_000);
  assert.ok(Math.abs(reg.latency("a") - 50 / Math.E) < 0.01, `${reg.latency("a")}`);
  reg.observe("a", 1);
  assert.ok(reg.latency("a") < 50 / Math.E && reg.latency("a") > 1);
  advance(60_000);
  assert.ok(reg.latency("a") < 0.1, "a stale estimate fades, so the target is tried again");
});

Deno.test("registry: probe transitions are exported; retain forgets removed targets", () => {
  const { reg, health } = registry();
  const th = { thresholds: { healthy: 1, unhealthy: 1 }, reason: "test" };
  reg.probe("a", true, th);
  reg.probe("a", true, th);
  reg.probe("a", false, th);
  reg.probe("b", false, th);
  assert.deepEqual(health, [["a", true], ["a", false], ["b", false]]);
  assert.ok(!reg.available("a") && !reg.available("b"));
  reg.retain(["a"], []);
  assert.deepEqual(reg.list().map((u) => u.id), ["a"]);
  assert.ok(!reg.available("a"), "kept state survives");
  assert.ok(reg.available("b"), "forgotten target starts unknown");
});

Deno.test("registry: retry budget allows a floor, then a share of requests, per window", () => {
  const { reg, advance } = registry();
  const granted = () => Array.from({ length: 30 }, () => reg.tryRetry("r", 10)).filter(Boolean);
  assert.equal(granted().length, 3, "floor of 3 with no traffic");
  advance(10_000);
  for (let i = 0; i < 100; i++) reg.countRequest("r");
  assert.equal(granted().length, 10, "10% of 100 requests");
});

Deno.test("registry: refused retries are logged once per budget window, with a count", () => {
  const { reg, advance } = registry();
  assert.equal(reg.retryRefused("r"), 1, "the first refusal is logged");
  for (let i = 0; i < 5; i++) assert.equal(reg.retryRefused("r"), null);
  assert.equal(reg.retryRefused("other"), 1, "per route");
  advance(10_000);
  assert.equal(reg.retryRefused("r"), 6, "the next line counts every refusal since the last");
  assert.equal(reg.retryRefused("r"), null);
});

Deno.test("registry: an ejection that ran out is announced by the next probe or list", () => {
  const { reg, health, advance } = registry();
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 4_000,
    maxEjectionMs: 60_000,
    panicPercent: 0,
  };
  const th = { thresholds: { healthy: 1, unhealthy: 2 }, reason: "test" };
  reg.probe("a", true, th); // up
  reg.outcome("a", false, { pool: ["a", "b"], policy, reason: "reset" });
  assert.deepEqual(health, [["a", true], ["a", false]]);
  advance(5_000);
  // No request has reached "a" since: probes (passing, no transition) still bring it back.
  reg.probe("a", true, th);
  assert.deepEqual(health, [["a", true], ["a", false], ["a", true]]);
  reg.probe("a", true, th);
  assert.equal(health.length, 3, "announced once");
  // Without probes, listing (admin status) does it.
  const other = registry();
  other.reg.outcome("a", false, { pool: ["a", "b"], policy, reason: "reset" });
  other.advance(5_000);
  other.reg.list();
  assert.deepEqual(other.health, [["a", false], ["a", true]]);
});

Deno.test("registry: results arriving after a reload removed the target do not bring it back", () => {
  const { reg, health } = registry();
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 4_000,
    maxEjectionMs: 60_000,
    panicPercent: 0,
  };
  reg.observe("gone", 5);
  reg.retain(["kept"], []);
  // A request (or probe) that started before the reload ends now.
  reg.get("gone").inFlight++;
  reg.observe("gone", 5);
  reg.outcome("gone", false, { pool: ["gone", "kept"], policy, reason: "status 502" });
  reg.probe("gone", false, { thresholds: { healthy: 1, unhealthy: 1 }, reason: "test" });
  assert.deepEqual(reg.list().map((u) => u.id), []);
  assert.deepEqual(health, [], "no health series for a target that is not configured");
  reg.observe("kept", 5);
  assert.deepEqual(reg.list().map((u) => u.id), ["kept"]);
});

Deno.test("registry: the end of an ejection does not announce a target health checks marked down", () => {
  const { reg, health, logs, advance } = registry();
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 4_000,
    maxEjectionMs: 60_000,
    panicPercent: 0,
  };
  const th = { thresholds: { healthy: 1, unhealthy: 1 }, reason: "test" };
  reg.probe("a", true, th);
  reg.outcome("a", false, { pool: ["a"], policy, reason: "reset" });
  reg.probe("a", false, th);
  advance(5_000);
  reg.list();
  assert.deepEqual(health, [["a", true], ["a", false], ["a", false]], "still down");
  assert.deepEqual(logs, [], "not back in rotation");
  assert.ok(!reg.available("a"));
  // Health checks turned off while ejected: healthy again only once the ejection ends.
  reg.outcome("b", false, { pool: ["b"], policy, reason: "reset" });
  reg.probe("b", false, th);
  reg.unprobed("b");
  assert.deepEqual(health.slice(3), [["b", false], ["b", false]], "ejected, not healthy");
  advance(5_000);
  reg.list();
  assert.deepEqual(health.slice(5), [["b", true]]);
});

Deno.test("registry: a target the panic rule keeps in is logged once per window, not per failure", () => {
  const { reg, warns, advance } = registry();
  const policy = {
    enabled: true,
    failures: 2,
    windowMs: 10_000,
    baseEjectionMs: 4_000,
    maxEjectionMs: 60_000,
    panicPercent: 50,
  };
  const fail = () => reg.outcome("only", false, { pool: ["only"], policy, reason: "refused" });
  for (let i = 0; i < 50; i++) fail();
  assert.deepEqual(warns, ["Upstream failing but not ejected: panic threshold"]);
  advance(10_000);
  fail();
  assert.equal(warns.length, 2);
  assert.ok(reg.available("only"));
});

Deno.test("registry: each check of a target is judged apart; the target is down while one is", () => {
  const { reg, health, logs } = registry();
  const th = { healthy: 1, unhealthy: 1 };
  reg.probe("a", true, { check: "x", thresholds: th, reason: "status 200" });
  reg.probe("a", false, { check: "y", thresholds: th, reason: "status 404" });
  assert.ok(reg.available("a", undefined, "x"), "up for routes checking x");
  assert.ok(!reg.available("a", undefined, "y"), "down for routes checking y");
  assert.ok(reg.available("a", undefined, null), "a route without checks goes by passive health");
  assert.ok(!reg.available("a"), "down as a whole");
  assert.equal(reg.list()[0].status, "down");
  // x passing again is no recovery of y: the health series stays down.
  reg.probe("a", true, { check: "x", thresholds: th, reason: "status 200" });
  assert.deepEqual(health, [["a", true], ["a", false]]);
  // The failing check dropped by a reload: up as a whole.
  reg.unprobed("a", "y");
  assert.ok(reg.available("a"));
  assert.deepEqual(health.slice(2), [["a", true]]);
  assert.deepEqual(logs, ["Upstream no longer health-checked: back in rotation"]);
});

Deno.test("registry: slow start ramps a target back from down, from an ejection, or added by a reload", () => {
  const { reg, advance } = registry();
  const W = 60_000;
  const th = { thresholds: { healthy: 1, unhealthy: 1 }, reason: "test" };
  // Start-up: the first probe result is no return, and a target never probed is at full weight.
  reg.retain(["a", "b", "c"], ["r"]);
  advance(1_000);
  reg.probe("a", true, th);
  assert.equal(reg.ramp("a", W), 1);
  assert.equal(reg.ramp("b", W), 1);
  // Down, then up again: 10 % at once, linear to 100 % over the window.
  reg.probe("a", false, th);
  advance(5_000);
  reg.probe("a", true, th);
  assert.equal(reg.ramp("a", W), 0.1);
  advance(30_000);
  assert.equal(reg.ramp("a", W), 0.5);
  assert.equal(reg.ramp("a", 2 * W), 0.25, "the route's window decides");
  advance(30_000);
  assert.equal(reg.ramp("a", W), 1);
  // Ejected for 4 s: the ramp starts when the ejection runs out, whether or not anyone looked.
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 4_000,
    maxEjectionMs: 60_000,
    panicPercent: 0,
  };
  reg.outcome("b", false, { pool: ["b", "c"], policy, reason: "reset" });
  assert.equal(reg.available("b"), false);
  advance(4_000 + 15_000);
  assert.equal(reg.ramp("b", W), 0.25);
  // Added by a reload: it ramps, the targets kept do not.
  reg.retain(["a", "b", "c", "d"], ["r"]);
  assert.equal(reg.ramp("d", W), 0.1);
  assert.equal(reg.ramp("c", W), 1);
  advance(45_000);
  assert.equal(reg.ramp("d", W), 0.75);
  assert.equal(reg.ramp("d", 0), 1, "no window, no ramp");
});

Deno.test("registry: slow start also follows health checks turned off while down, and passive health turned off", () => {
  const { reg, advance } = registry();
  const th = { thresholds: { healthy: 1, unhealthy: 1 }, reason: "test" };
  reg.probe("a", false, { ...th, check: "x" });
  advance(1_000);
  reg.unprobed("a", "x");
  assert.equal(reg.ramp("a", 10_000), 0.1);
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 60_000,
    maxEjectionMs: 60_000,
    panicPercent: 0,
  };
  reg.outcome("b", false, { pool: ["b", "c"], policy, reason: "reset" });
  advance(5_000);
  reg.release(["b"]);
  assert.equal(reg.available("b"), true);
  advance(5_000);
  assert.equal(reg.ramp("b", 10_000), 0.5);
});

Deno.test("registry: backIn is the rest of an ejection, or the probes a down target still needs", () => {
  const { reg, advance } = registry();
  const probes = { intervalMs: 5_000, healthy: 3 };
  assert.equal(reg.backIn("unknown", probes), 0);
  const th = { thresholds: { healthy: 3, unhealthy: 1 }, reason: "test", check: "x" };
  reg.probe("a", false, th);
  assert.equal(reg.backIn("a", { ...probes, check: "x" }), 15_000);
  reg.probe("a", true, th);
  assert.equal(reg.backIn("a", { ...probes, check: "x" }), 10_000, "one passed already");
  assert.equal(reg.backIn("a", { ...probes, check: null }), 0, "a route without checks");
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 30_000,
    maxEjectionMs: 60_000,
    panicPercent: 0,
  };
  reg.outcome("b", false, { pool: ["b", "c"], policy, reason: "reset" });
  advance(12_000);
  assert.equal(reg.backIn("b", probes), 18_000);
});

Deno.test("registry: slow start after an ejection that the first passing probe ends", () => {
  const { reg, advance } = registry();
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 30_000,
    maxEjectionMs: 60_000,
    panicPercent: 0,
  };
  // Ejected by requests before its first probe, which then passes: it ramps from that probe.
  reg.outcome("a", false, { pool: ["a", "b"], policy, reason: "reset" });
  advance(1_000);
  reg.probe("a", true, { thresholds: { healthy: 1, unhealthy: 1 }, reason: "test" });
  assert.equal(reg.available("a"), true);
  advance(5_000);
  assert.equal(reg.ramp("a", 10_000), 0.5);
});

Deno.test("registry: list() says how long ago a target came back, null while out or never", () => {
  const { reg, advance } = registry();
  const th = { thresholds: { healthy: 1, unhealthy: 1 }, reason: "test" };
  const back = () => reg.list().find((u) => u.id === "a")?.backForMs;
  reg.probe("a", true, th);
  assert.equal(back(), null, "never left");
  reg.probe("a", false, th);
  advance(1_000);
  reg.probe("a", true, th);
  advance(2_500);
  assert.equal(back(), 2_500);
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 4_000,
    maxEjectionMs: 60_000,
    panicPercent: 0,
  };
  reg.outcome("a", false, { pool: ["a", "b"], policy, reason: "reset" });
  assert.equal(back(), null, "ejected");
  advance(5_000);
  assert.equal(back(), 1_000, "since the ejection ran out");
});

Deno.test("registry: carryCheck starts a new check from the one it replaces, else the target's", () => {
  const { reg, health, logs } = registry();
  const th = { thresholds: { healthy: 3, unhealthy: 1 }, reason: "test" };
  reg.probe("a", false, { ...th, check: "old" });
  reg.probe("a", true, { ...th, check: "other" });
  // Replacing "old" (down): the new check is down too, before any probe of it, and nothing is
  // announced when "old" goes.
  reg.carryCheck("a", "new", ["old"]);
  reg.unprobed("a", "old");
  assert.equal(reg.available("a", undefined, "new"), false);
  assert.equal(reg.available("a", undefined, "other"), true);
  assert.deepEqual(health, [["a", false]]);
  assert.ok(!logs.some((l) => /no longer/.test(l)));
  // Its first result decides (not healthy_threshold of them).
  reg.probe("a", true, { ...th, check: "new" });
  assert.equal(reg.available("a", undefined, "new"), true);
  assert.deepEqual(health, [["a", false], ["a", true]]);
  // No single predecessor: the target's status (down while any check is).
  reg.probe("b", false, { ...th, check: "x" });
  reg.carryCheck("b", "y", []);
  assert.equal(reg.available("b", undefined, "y"), false);
  // Nothing known: nothing carried (a new target is decided by its first probe).
  reg.carryCheck("c", "z", []);
  assert.equal(reg.available("c", undefined, "z"), true);
});

Deno.test("registry: a drain asked ahead applies once the target is configured (a worker whose DNS lookup has not found it yet)", () => {
  const { reg } = registry();
  reg.retain(["a"], ["/"]);
  assert.equal(reg.drain("b", true, { ahead: true }), false);
  assert.equal(reg.drain("c", true, { ahead: true }), false);
  assert.equal(reg.drain("c", false, { ahead: true }), false);
  assert.equal(reg.drain("d", true), false);
  reg.retain(["a", "b", "c", "d"], ["/"]);
  assert.deepEqual(["a", "b", "c", "d"].map((id) => reg.drained(id)), [false, true, false, false]);
});

Deno.test("registry: the panic rule counts a drained target as unavailable", () => {
  // A drained target takes no requests: counted as available, it let the last target in
  // rotation be ejected, and the route answered 503 for the whole cool-down.
  const { reg } = registry();
  const policy = {
    enabled: true,
    failures: 1,
    windowMs: 10_000,
    baseEjectionMs: 30_000,
    maxEjectionMs: 300_000,
    panicPercent: 50,
  };
  reg.retain(["a", "b"], ["/"]);
  reg.drain("b", true);
  reg.outcome("a", false, { pool: ["a", "b"], policy, reason: "refused" });
  assert.ok(reg.available("a"), "the one target in rotation is kept in");
  reg.drain("b", false);
  reg.outcome("a", false, { pool: ["a", "b"], policy, reason: "refused" });
  assert.ok(!reg.available("a"), "with b back in rotation, a may be ejected");
});

Deno.test("registry: an ejection that health checks ended early still doubles the next one, whatever the uptime", () => {
  // The decay measured the quiet spell from ejectedUntil, which an early end set to 0: once the
  // process had run longer than max_ejection, every such ejection started over at the base.
  for (const uptime of [1_000, 10_000_000]) {
    const { reg, advance } = registry();
    advance(uptime);
    const policy = {
      enabled: true,
      failures: 1,
      windowMs: 10_000,
      baseEjectionMs: 10_000,
      maxEjectionMs: 60_000,
      panicPercent: 0,
    };
    const th = { thresholds: { healthy: 1, unhealthy: 1 }, reason: "test" };
    const fail = () => reg.outcome("a", false, { pool: ["a", "b"], policy, reason: "refused" });
    const ejectedFor = () => reg.list().find((v) => v.id === "a")!.ejectedForMs;
    reg.probe("a", true, th);
    fail();
    assert.equal(ejectedFor(), 10_000);
    advance(2_000);
    reg.probe("a", false, th);
    reg.probe("a", true, th); // back up: the ejection ends early
    assert.equal(ejectedFor(), 0);
    advance(1_000);
    fail();
    assert.equal(
      ejectedFor(),
      20_000,
      `uptime ${uptime}: ejected again soon after, for twice as long`,
    );
    advance(20_000);
    reg.probe("a", false, th);
    reg.probe("a", true, th);
    advance(61_000);
    fail();
    assert.equal(ejectedFor(), 10_000, `uptime ${uptime}: after a quiet spell, the base again`);
  }
});

Deno.test("registry: past 10,000 targets, a configured target's state is never evicted", () => {
  const { reg } = registry();
  // Sixteen discover routes at max_targets 1024 hold more targets than the old hard cap.
  const ids = Array.from({ length: 10_050 }, (_, i) => `http://10.${i >> 8 & 255}.${i & 255}.1:80`);
  reg.retain(ids, []);
  const th = { thresholds: { healthy: 1, unhealthy: 1 }, reason: "refused" };
  reg.probe(ids[0], false, th);
  assert.ok(!reg.available(ids[0]));
  // Every target looked at once (a request's pick reads each of its pool's targets).
  for (const id of ids) reg.get(id);
  assert.ok(!reg.available(ids[0]), "the down target stays down: its state was kept");
  assert.equal(reg.list().length, ids.length);
});

Deno.test("registry: before the config is known, the cap evicts the least recently used target", () => {
  const { reg } = registry();
  const th = { thresholds: { healthy: 1, unhealthy: 1 }, reason: "refused" };
  reg.probe("first", false, th);
  for (let i = 0; i < 9_999; i++) reg.get(`t${i}`);
  reg.get("first"); // used again: now the most recent
  reg.get("new"); // at the cap: the least recently used one (t0) goes
  assert.ok(!reg.available("first"), "a target still in use keeps its state");
  assert.ok(!reg.list().some((u) => u.id === "t0"));
});
