import assert from "node:assert/strict";
import { createOnDemand } from "./acme_on_demand.ts";
import type { AcmeConfig } from "./acme.ts";
import type { Logger } from "../ports.ts";
import { waitFor } from "../../tests/_harness.ts";

const quiet: Logger = { log() {}, debug() {}, info() {}, warn() {}, error() {} };

/** An ask endpoint answering `status`, after `gate` when given; it notes the names asked. */
function askServer(status: (name: string) => number, gate?: Promise<void>) {
  const asked: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const name = new URL(req.url).searchParams.get("domain") ?? "";
    asked.push(name);
    if (gate) await gate;
    return new Response(null, { status: status(name) });
  });
  return {
    asked,
    url: `http://127.0.0.1:${server.addr.port}/allowed`,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** A `tls.acme` with on_demand, its CA on a port where nothing listens (every order fails). */
function config(ask: string, storage: string): AcmeConfig {
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (dead.addr as Deno.NetAddr).port;
  dead.close();
  return {
    enabled: true,
    domains: ["main.example"],
    staging: false,
    ca_url: `https://127.0.0.1:${port}/dir`,
    storage_path: storage,
    renewal_days_before_expiry: 30,
    key_type: "p256",
    challenge: "http-01",
    on_demand: { ask, ask_timeout: 2_000, max_certificates: 2, timeout: 5_000 },
  };
}

/**
 * createOnDemand on a new storage directory (`dir`), its config `edit`ed; closed, and the
 * directory removed, when the test's scope ends (`await using`).
 */
async function onDemand(
  ask: string,
  deps: Parameters<typeof createOnDemand>[1],
  edit: (base: AcmeConfig) => AcmeConfig = (base) => base,
) {
  const dir = await Deno.makeTempDir();
  const od = createOnDemand(edit(config(ask, dir)), deps);
  return Object.assign(od, {
    dir,
    async [Symbol.asyncDispose]() {
      await od.close();
      await Deno.remove(dir, { recursive: true });
    },
  });
}

Deno.test("createOnDemand refuses names that are no DNS name without asking", async () => {
  await using ask = askServer(() => 200);
  await using od = await onDemand(ask.url, { logger: quiet, clientRetries: 0 });
  const refused = [
    ...["10.0.0.1", "a/b.example", "..example", "example", "a..b", "-a.example"],
    // Wildcard forms, IP literals, odd characters, URL syntax: never asked, never ordered.
    ...["*.example", "*", "a.*.example", "::1", "[::1]", "0x7f.0.0.1", "1.2.3.4.", "a_b.example"],
    ...["a b.example", "a%2fb.example", "a.example/x", "a.example:443", "a.example?x=1"],
    ...["a.example&domain=b.example", "a\u0000.example", "\u00e9.example", "a.example.."],
    // Letters that lower-case into ASCII ones (Kelvin sign: k; dotted capital I).
    ...["\u212a.example", "\u0130.example"],
    // Over 253 bytes; a 64-byte label.
    `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(59)}.ex`,
    `${"a".repeat(64)}.example`,
  ];
  for (const name of refused) assert.equal(od.certificate(name), null, name);
  assert.deepEqual(ask.asked, []);
  // The longest allowed: 253 bytes (and its fully qualified form, 254 with the dot), asked once.
  const longest = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(58)}.ex`;
  assert.equal(longest.length, 253);
  const p = od.certificate(longest);
  assert.ok(p instanceof Promise);
  assert.equal(od.certificate(`${longest}.`), p);
  await p;
  assert.deepEqual(ask.asked, [longest]);
});

Deno.test("createOnDemand caches ask's refusal and asks once per name in flight", async () => {
  const { promise: gate, resolve: release } = Promise.withResolvers<void>();
  await using ask = askServer(() => 403, gate);
  await using od = await onDemand(ask.url, { logger: quiet });
  const first = od.certificate("a.example");
  assert.ok(first instanceof Promise);
  // The same name while asked: the same question, not another.
  assert.equal(od.certificate("A.example."), first);
  release();
  assert.equal(await first, null);
  assert.equal(await od.certificate("a.example"), null);
  assert.deepEqual(ask.asked, ["a.example"]);
  assert.deepEqual(od.status(), { held: [], orders: 0 });
});

Deno.test("createOnDemand bounds the names in flight", async () => {
  const { promise: gate, resolve: release } = Promise.withResolvers<void>();
  await using ask = askServer(() => 403, gate);
  await using od = await onDemand(ask.url, { logger: quiet });
  const waits = Array.from({ length: 100 }, (_, i) => od.certificate(`n${i}.example`));
  assert.ok(waits.every((w) => w instanceof Promise));
  // The 101st is refused at once.
  assert.equal(od.certificate("n100.example"), null);
  release();
  assert.deepEqual(await Promise.all(waits), waits.map(() => null));
  // Room again.
  const later = od.certificate("n100.example");
  assert.ok(later instanceof Promise);
  assert.equal(await later, null);
});

Deno.test("createOnDemand backs off a name whose order failed, without asking or ordering again", async () => {
  await using ask = askServer(() => 200);
  const dir = await Deno.makeTempDir();
  const warned: string[] = [];
  const logger: Logger = { ...quiet, warn: (m) => void warned.push(m) };
  const od = createOnDemand(config(ask.url, dir), { logger, clientRetries: 0 });
  try {
    assert.equal(await od.certificate("a.example"), null);
    assert.ok(warned.includes("ACME on-demand certificate not obtained"), warned.join("\n"));
    assert.deepEqual(od.status().held, []);
    // Held off: refused at once, neither asked nor ordered.
    assert.equal(od.certificate("a.example"), null);
    assert.deepEqual(ask.asked, ["a.example"]);
    assert.equal(od.status().orders, 1);
  } finally {
    await od.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("createOnDemand close waits for the keeper of a name whose order failed", async () => {
  await using ask = askServer(() => 200);
  await using od = await onDemand(ask.url, { logger: quiet, clientRetries: 0 });
  assert.equal(await od.certificate("a.example"), null);
  await od.close();
  // The dropped keeper stored its back-off and released its lock before close() resolved: no
  // write into the storage runs on (a caller removing the directory then saw "Directory not
  // empty").
  const files: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`);
      else files.push(e.name);
    }
  };
  await walk(od.dir);
  assert.ok(files.includes("order.backoff.json"), files.join(", "));
  assert.ok(!files.includes("order.lock"), files.join(", "));
});

Deno.test("createOnDemand bounds the orders still running after their handshakes gave up", async () => {
  await using ask = askServer(() => 200);
  const dir = await Deno.makeTempDir();
  // A CA that takes connections and never answers: every order outlasts `timeout`.
  const ca = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of ca) conns.push(c);
  })();
  const base = config(ask.url, dir);
  const od = createOnDemand({
    ...base,
    ca_url: `http://127.0.0.1:${(ca.addr as Deno.NetAddr).port}/dir`,
    on_demand: { ...base.on_demand!, timeout: 200 },
  }, { logger: quiet, lockPollMs: 20 });
  try {
    const waits = Array.from({ length: 100 }, (_, i) => od.certificate(`n${i}.example`));
    assert.deepEqual(await Promise.all(waits), waits.map(() => null));
    // A hundred keepers still wait for the CA: no more are started until some are done.
    assert.equal(od.certificate("m0.example"), null);
    assert.ok(od.status().held.length <= 100, `${od.status().held.length} held`);
  } finally {
    ca.close();
    for (const c of conns) c.close();
    await accepting.catch(() => {});
    await od.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("createOnDemand: a timeout past what a timer holds (2^31 ms) waits, not gives up at once", async () => {
  await using ask = askServer(() => 200);
  // A CA that takes connections and never answers: the order outlasts the test.
  const ca = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of ca) conns.push(conn);
  })();
  const dir = await Deno.makeTempDir();
  const base = await config(ask.url, dir);
  const od = createOnDemand({
    ...base,
    ca_url: `https://127.0.0.1:${(ca.addr as Deno.NetAddr).port}/dir`,
    on_demand: { ...base.on_demand!, timeout: 30 * 86_400_000 },
  }, { logger: quiet, clientRetries: 0 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const got = od.certificate("a.example");
    assert.ok(got instanceof Promise);
    await waitFor(() => od.status().held.includes("a.example"), { what: "the keeper" });
    // Deno runs a timer of 2^31 ms or more at once: the handshake was refused within 1 ms.
    const later = new Promise<"waiting">((r) => timer = setTimeout(() => r("waiting"), 300));
    assert.equal(await Promise.race([got, later]), "waiting");
  } finally {
    clearTimeout(timer);
    ca.close();
    for (const conn of conns) conn.close();
    await accepting;
    await od.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** A CA that takes connections and never answers: every order outlasts the test. */
function silentCa() {
  const ca = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of ca) conns.push(conn);
  })();
  return {
    url: `https://127.0.0.1:${(ca.addr as Deno.NetAddr).port}/dir`,
    async [Symbol.asyncDispose]() {
      ca.close();
      for (const conn of conns) conn.close();
      await accepting.catch(() => {});
    },
  };
}

Deno.test("createOnDemand: handshakes that gave up on a hanging order leave nothing behind", async () => {
  await using ask = askServer(() => 200);
  await using ca = silentCa();
  await using od = await onDemand(
    ask.url,
    { logger: quiet, clientRetries: 0 },
    (base) => ({ ...base, ca_url: ca.url, on_demand: { ...base.on_demand!, timeout: 50 } }),
  );
  assert.equal(await od.certificate("a.example"), null);
  assert.deepEqual(od.status().held, ["a.example"]);
  const before = od.waiting().reactions;
  for (let i = 0; i < 30; i++) {
    const got = od.certificate("a.example");
    assert.ok(got instanceof Promise);
    assert.equal(await got, null);
  }
  // Each gave up at its timeout: no waiter left, and no reaction more than the keeper's own.
  assert.deepEqual(od.waiting(), { handshakes: 0, reactions: before });
  assert.ok(before <= 2, `${before} reactions`);
});

Deno.test("createOnDemand bounds the handshakes waiting for one name", async () => {
  await using ask = askServer(() => 200);
  await using ca = silentCa();
  await using od = await onDemand(
    ask.url,
    { logger: quiet, clientRetries: 0 },
    (base) => ({ ...base, ca_url: ca.url, on_demand: { ...base.on_demand!, timeout: 60_000 } }),
  );
  const first = od.certificate("a.example");
  await waitFor(() => od.waiting().handshakes === 1, { what: "the first handshake waiting" });
  const waits = Array.from({ length: 999 }, () => od.certificate("a.example"));
  assert.ok(waits.every((w) => w instanceof Promise));
  assert.equal(od.waiting().handshakes, 1_000);
  // The 1,001st gets the default certificate at once.
  assert.equal(od.certificate("a.example"), null);
  assert.equal(od.waiting().handshakes, 1_000);
  // Closing wakes them all.
  await od.close();
  assert.deepEqual(await Promise.all([first, ...waits]), [first, ...waits].map(() => null));
  assert.equal(od.waiting().handshakes, 0);
});

Deno.test("createOnDemand: a store that does not answer costs a handshake at most `timeout`", async () => {
  await using ask = askServer(() => 200);
  await using ca = silentCa();
  // A "Redis" that takes connections, reads, and never answers.
  const redis = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of redis) {
      conns.push(conn);
      void conn.readable.pipeTo(new WritableStream()).catch(() => {});
    }
  })();
  const dir = await Deno.makeTempDir();
  const base = config(ask.url, dir);
  const od = createOnDemand({
    ...base,
    ca_url: ca.url,
    redis: {
      url: `redis://127.0.0.1:${(redis.addr as Deno.NetAddr).port}`,
      prefix: "t:",
      timeout: 20_000,
    },
    on_demand: { ...base.on_demand!, timeout: 300 },
  }, { logger: quiet, clientRetries: 0 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const got = od.certificate("a.example");
    assert.ok(got instanceof Promise);
    // Within `timeout` (and some slack), not the store's 20 s.
    const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), 3_000));
    assert.equal(await Promise.race([got, late]), null);
    // The keeper's start goes on: the name is not started twice meanwhile.
    assert.equal(od.certificate("a.example"), null);
    assert.equal(od.report().inFlight, 1);
  } finally {
    clearTimeout(timer);
    redis.close();
    for (const conn of conns) conn.close();
    await accepting.catch(() => {});
    await od.close();
    await Deno.remove(dir, { recursive: true });
  }
});
