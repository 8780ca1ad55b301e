import assert from "node:assert/strict";
import { createDiscovery, NoRecords } from "./discovery.ts";
import type { AddressLookup, SrvLookup } from "./discovery.ts";
import type { Config } from "../config/schema.ts";
import { silentLogger } from "../ports.ts";
import { waitFor } from "../../tests/_harness.ts";
import { recordingLogger } from "../../tests/integration/_backend.ts";

/**
 * createDiscovery with a silent logger and an ignored onChange unless `o` gives them; `using`
 * closes it.
 */
function discovery(o: Partial<Parameters<typeof createDiscovery>[0]>) {
  const d = createDiscovery({ logger: silentLogger, onChange: () => {}, ...o });
  return Object.assign(d, { [Symbol.dispose]: () => d.close() });
}

/**
 * SRV records (port 80) for `hosts`, rows of [priority, weight, name, its one IPv4 address], and
 * the address lookup that answers those names (nothing for AAAA).
 */
function srvHosts(hosts: [number, number, string, string][]) {
  const records = hosts.map(([priority, weight, name]) => ({
    priority,
    weight,
    port: 80,
    target: `${name}.`,
  }));
  const ip = Object.fromEntries(hosts.map(([, , name, address]) => [name, address]));
  const lookup: AddressLookup = (name, type) =>
    Promise.resolve(type === "A" && ip[name] ? [ip[name]] : []);
  return { records, lookup };
}

/** A config with one discover route (only what discovery reads). */
const configOf = (discover: Record<string, unknown>) =>
  ({
    routes: {
      "/": { type: "load_balance", discover: { max_targets: 64, refresh: 20, ...discover } },
    },
  }) as unknown as Config;

Deno.test("discovery: a name whose AAAA lookup keeps failing still follows its A records", async () => {
  let a = ["10.0.0.1"];
  const lookup: AddressLookup = (_name, type) =>
    type === "A" ? Promise.resolve(a) : Promise.reject(new Error("SERVFAIL"));
  using d = discovery({ lookup });
  const config = configOf({ dns: "http://app.test:8080" });
  await d.prepare(config);
  assert.deepEqual(d.foundFor(config).get("/"), [{ address: "10.0.0.1" }]);
  a = ["10.0.0.2"];
  await waitFor(() => d.foundFor(config).get("/")?.[0]?.address === "10.0.0.2", {
    what: "the new A record",
    timeoutMs: 2_000,
  });
});

Deno.test("discovery: a failed AAAA lookup keeps the IPv6 addresses found before", async () => {
  let a = ["10.0.0.1"], aaaaFails = false;
  const lookup: AddressLookup = (_name, type) =>
    type === "A"
      ? Promise.resolve(a)
      : aaaaFails
      ? Promise.reject(new Error("timed out"))
      : Promise.resolve(["fd00::1"]);
  using d = discovery({ lookup });
  const config = configOf({ dns: "http://app.test:8080" });
  await d.prepare(config);
  assert.deepEqual(d.foundFor(config).get("/"), [{ address: "10.0.0.1" }, {
    address: "fd00::1",
  }]);
  aaaaFails = true;
  a = ["10.0.0.2"];
  await waitFor(() => d.foundFor(config).get("/")?.[0]?.address === "10.0.0.2", {
    what: "the new A record",
    timeoutMs: 2_000,
  });
  assert.deepEqual(d.foundFor(config).get("/"), [{ address: "10.0.0.2" }, {
    address: "fd00::1",
  }]);
});

Deno.test("discovery: a reload changing refresh while DNS fails keeps the route's targets", async () => {
  let down = false;
  const lookup: AddressLookup = (_name, type) =>
    down
      ? Promise.reject(new Error("timed out"))
      : Promise.resolve(type === "A" ? ["10.0.0.1"] : []);
  using d = discovery({ lookup });
  const before = configOf({ dns: "http://app.test:8080", refresh: 60_000 });
  const after = configOf({ dns: "http://app.test:8080", refresh: 30_000, max_targets: 10 });
  const other = configOf({ dns: "http://api.test:8080", refresh: 30_000 });
  await d.prepare(before);
  down = true;
  await d.prepare(after);
  await d.prepare(other);
  assert.deepEqual(d.foundFor(after).get("/"), [{ address: "10.0.0.1" }]);
  // Another name is another service: nothing of the old one's.
  assert.equal(d.foundFor(other).get("/"), undefined);
});

Deno.test("discovery srv: past max_targets, the hosts kept are the same whatever the answer's order", async () => {
  const { records, lookup } = srvHosts([
    [10, 1, "backup.test", "10.0.0.9"],
    [0, 1, "b.test", "10.0.0.2"],
    [0, 1, "a.test", "10.0.0.1"],
    [0, 1, "c.test", "10.0.0.3"],
  ]);
  let turn = 0;
  const srvLookup: SrvLookup = () => {
    // Each answer rotated, as DNS servers do.
    turn++;
    return Promise.resolve(records.map((_, i) => records[(i + turn) % records.length]));
  };
  let changes = 0;
  using d = discovery({ onChange: () => changes++, lookup, srvLookup });
  const config = configOf({ srv: "_http._tcp.app.test", scheme: "http", max_targets: 2 });
  await d.prepare(config);
  const first = d.foundFor(config).get("/")?.map((f) => f.address);
  assert.deepEqual(first, ["10.0.0.1", "10.0.0.2"]);
  await waitFor(() => turn >= 6, { what: "more lookups", timeoutMs: 2_000 });
  assert.equal(changes, 0);
});

Deno.test("discovery srv: past max_targets, backups are left out before primaries", async () => {
  const srvLookup: SrvLookup = () =>
    Promise.resolve([
      { priority: 0, weight: 1, port: 80, target: "a.test." },
      { priority: 1, weight: 1, port: 80, target: "backup.test." },
    ]);
  const lookup: AddressLookup = (name, type) =>
    Promise.resolve(
      type !== "A" ? [] : name === "a.test" ? ["10.0.0.5", "10.0.0.6"] : ["10.0.0.1"],
    );
  using d = discovery({ lookup, srvLookup });
  const config = configOf({ srv: "_http._tcp.app.test", scheme: "http", max_targets: 2 });
  await d.prepare(config);
  assert.deepEqual(d.foundFor(config).get("/")?.map((f) => [f.address, f.backup]), [
    ["10.0.0.5", false],
    ["10.0.0.6", false],
  ]);
});

Deno.test("discovery: a refresh past setTimeout's longest delay (30d) waits, not loops", async () => {
  let lookups = 0;
  const lookup: AddressLookup = (_name, type) => {
    if (type === "A") lookups++;
    return Promise.resolve(type === "A" ? ["10.0.0.1"] : []);
  };
  using d = discovery({ lookup });
  const config = configOf({ dns: "http://app.test:8080", refresh: 30 * 86_400_000 });
  await d.prepare(config);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(lookups, 1);
});

Deno.test("discovery srv: thousands of records for thousands of addresses stay a bounded job", async () => {
  // 1,500 × 1,500 made 2.25 million targets: seconds of a blocked event loop and a GiB.
  const n = 1_500;
  const records = Array.from({ length: n }, (_, i) => ({
    priority: 0,
    weight: 1,
    port: 1_000 + i,
    target: "h.test.",
  }));
  const addrs = Array.from({ length: n }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
  const srvLookup: SrvLookup = () => Promise.resolve(records);
  const lookup: AddressLookup = (_name, type) => Promise.resolve(type === "A" ? addrs : []);
  using d = discovery({ lookup, srvLookup });
  const config = configOf({ srv: "_http._tcp.app.test", scheme: "http", refresh: 60_000 });
  const t0 = performance.now();
  await d.prepare(config);
  const ms = performance.now() - t0;
  assert.equal(d.foundFor(config).get("/")?.length, 64);
  assert.ok(ms < 1_000, `${Math.round(ms)} ms`);
});

Deno.test("discovery hold: a reload changing refresh keeps the addresses held, and their hold", async () => {
  // A DNS that answers one of two addresses at each lookup (Route 53 multivalue).
  let a = ["10.0.0.1"];
  const lookup: AddressLookup = (_name, type) => Promise.resolve(type === "A" ? a : []);
  using d = discovery({ lookup });
  const before = configOf({ dns: "http://app.test:8080", hold: 3_600_000 });
  const after = configOf({ dns: "http://app.test:8080", refresh: 60_000, hold: 3_600_000 });
  const addresses = (c: Config) => d.foundFor(c).get("/")?.map((f) => f.address);
  await d.prepare(before);
  assert.deepEqual(addresses(before), ["10.0.0.1"]);
  a = ["10.0.0.2"];
  await waitFor(() => addresses(before)?.length === 2, { what: "both held", timeoutMs: 2_000 });
  // A reload changing refresh: its first lookup answers one address, and the other stays held.
  await d.prepare(after);
  assert.deepEqual(addresses(after), ["10.0.0.1", "10.0.0.2"]);
});

Deno.test("discovery hold: past max_targets the addresses the last answer holds come before held ones", async () => {
  // The replicas were replaced: the old address is held, the new one is the only one answering.
  let a = ["10.0.0.5"], lookups = 0;
  const lookup: AddressLookup = (_name, type) =>
    Promise.resolve(type === "A" ? (lookups++, a) : []);
  using d = discovery({ lookup });
  const config = configOf({ dns: "http://app.test:8080", hold: 3_600_000, max_targets: 1 });
  const addresses = () => d.foundFor(config).get("/")?.map((f) => f.address);
  await d.prepare(config);
  assert.deepEqual(addresses(), ["10.0.0.5"]);
  a = ["10.0.0.9"];
  // A lookup under way after it: the one answering 10.0.0.9 is taken.
  const after = lookups + 1;
  await waitFor(() => lookups > after, { what: "the next lookups", timeoutMs: 2_000 });
  assert.deepEqual(addresses(), ["10.0.0.9"]);
});

Deno.test("discovery: no records for the whole name keeps the targets (SERVFAIL looks the same); for one family it is that family's answer", async () => {
  // Deno's resolver throws NotFound for NXDOMAIN, SERVFAIL and REFUSED alike (NoRecords).
  let a: string[] | "none" = ["10.0.0.1", "10.0.0.2"];
  const lookup: AddressLookup = (name, type) =>
    type === "AAAA" || a === "none"
      ? Promise.reject(new NoRecords(name, type))
      : Promise.resolve(a as string[]);
  const logger = recordingLogger();
  using d = discovery({ logger, lookup });
  const config = configOf({ dns: "http://app.test:8080" });
  const addresses = () => d.foundFor(config).get("/")?.map((f) => f.address);
  await d.prepare(config);
  // An IPv4-only name: AAAA's "no records" is no failure, and A's answers are followed.
  assert.deepEqual(addresses(), ["10.0.0.1", "10.0.0.2"]);
  a = ["10.0.0.2"];
  await waitFor(() => addresses()?.length === 1, { what: "10.0.0.1 gone", timeoutMs: 2_000 });
  assert.equal(logger.lines.length, 2, JSON.stringify(logger.lines));
  // Nothing for the name: kept, and said once.
  a = "none";
  await waitFor(() => logger.lines.some((r) => String(r.msg).includes("failed")), {
    what: "the failure logged",
    timeoutMs: 2_000,
  });
  assert.deepEqual(addresses(), ["10.0.0.2"]);
});

Deno.test("discovery srv: no SRV records keeps the targets found before", async () => {
  let none = false;
  const srvLookup: SrvLookup = (name) =>
    none
      ? Promise.reject(new NoRecords(name, "SRV"))
      : Promise.resolve([{ priority: 0, weight: 5, port: 80, target: "a.test." }]);
  const lookup: AddressLookup = (name, type) =>
    type === "A" ? Promise.resolve(["10.0.0.1"]) : Promise.reject(new NoRecords(name, type));
  const logger = recordingLogger();
  using d = discovery({ logger, lookup, srvLookup });
  const config = configOf({ srv: "_http._tcp.app.test", scheme: "http" });
  await d.prepare(config);
  assert.equal(d.foundFor(config).get("/")?.length, 1);
  none = true;
  await waitFor(() => logger.lines.some((r) => String(r.msg).includes("failed")), {
    what: "the failure logged",
    timeoutMs: 2_000,
  });
  assert.equal(d.foundFor(config).get("/")?.length, 1);
});

Deno.test("discovery srv: weights keep their proportions past 1000, and a weight 0 beside weighted records is a very small share (RFC 2782)", async () => {
  const { records, lookup } = srvHosts([
    // Priority 0: 0 (say, Consul's `Weights.Warning: 0`) beside 1.
    [0, 0, "warn.test", "10.0.0.1"],
    [0, 1, "ok.test", "10.0.0.2"],
    // Priority 1 (backups): 2000 and 6000, 1:3; a zero among them too.
    [1, 2000, "b1.test", "10.0.0.3"],
    [1, 6000, "b3.test", "10.0.0.4"],
    [1, 0, "b0.test", "10.0.0.5"],
    // Priority 2: all 0, an equal chance.
    [2, 0, "z1.test", "10.0.0.6"],
    [2, 0, "z2.test", "10.0.0.7"],
  ]);
  const srvLookup: SrvLookup = () => Promise.resolve(records);
  using d = discovery({ lookup, srvLookup });
  const config = configOf({ srv: "_http._tcp.app.test", scheme: "http" });
  await d.prepare(config);
  const w = Object.fromEntries(d.foundFor(config).get("/")!.map((f) => [f.address, f.weight]));
  assert.deepEqual(w, {
    "10.0.0.1": 1,
    "10.0.0.2": 1000,
    "10.0.0.3": 333,
    "10.0.0.4": 1000,
    "10.0.0.5": 1,
    "10.0.0.6": 1,
    "10.0.0.7": 1,
  });
});
