// Load balancing, health checks and failover through the real proxy, with real upstream servers
// that are killed (hard close) and restarted mid-load.
import assert from "node:assert/strict";
import { ROOT, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger, LogLevel } from "../../src/ports.ts";
import { startServer } from "../../src/server.ts";

/** A Logger that keeps every message (to count retries, ejections, recoveries). */
function recordingLogger(): Logger & { lines: { level: LogLevel; msg: string }[] } {
  const lines: { level: LogLevel; msg: string }[] = [];
  const log = (level: LogLevel, msg: string) => void lines.push({ level, msg });
  return {
    lines,
    log,
    debug: (m) => log("debug", m),
    info: (m) => log("info", m),
    warn: (m) => log("warn", m),
    error: (m) => log("error", m),
  };
}

/** A named upstream that can be killed (hard close) and restarted on the same port. */
class Backend implements AsyncDisposable {
  port = 0;
  hits = 0;
  probes = 0;
  healthStatus = 200;
  /** Delay before answering a non-health request. */
  delayMs = 0;
  /** While set, non-health requests hang until `release()`. */
  hang = false;
  #hung: (() => void)[] = [];
  #ac: AbortController | null = null;
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;

  constructor(readonly name: string) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  start(): this {
    this.#ac = new AbortController();
    this.#server = Deno.serve({
      hostname: "127.0.0.1",
      port: this.port,
      signal: this.#ac.signal,
      onListen: () => {},
    }, async (req) => {
      if (new URL(req.url).pathname === "/health") {
        this.probes++;
        return new Response(this.healthStatus === 200 ? "ok" : "down", {
          status: this.healthStatus,
        });
      }
      this.hits++;
      if (this.hang) await new Promise<void>((r) => this.#hung.push(r));
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
      return new Response(this.name);
    });
    this.port = this.#server.addr.port;
    return this;
  }

  /** Lets every hung request finish. */
  release(): void {
    this.hang = false;
    for (const r of this.#hung.splice(0)) r();
  }

  /** Hard close: listener and open connections go away at once. */
  async kill(): Promise<void> {
    this.#ac?.abort();
    await this.#server?.finished;
    this.#server = null;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#server) await this.kill();
  }
}

Deno.test("load_balance: killing one of three upstreams mid-run fails no client request, ejects it and brings it back", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  await using c = new Backend("c").start();
  const logger = recordingLogger();
  const count = (msg: string) => logger.lines.filter((l) => l.msg === msg).length;
  await using prox = await startProxy(
    `
health_check: { interval_secs: 1, timeout_secs: 1, unhealthy_threshold: 1, healthy_threshold: 2 }
routes:
  "/":
    type: load_balance
    targets: ["${a.url}", "${b.url}", "${c.url}"]
`,
    { logger },
  );
  const reg = prox.server.upstreams;
  await waitFor(() => reg.list().filter((u) => u.status === "up").length === 3, {
    what: "first probe round",
  });

  const TOTAL = 2_000;
  const statuses = new Map<number, number>();
  let sent = 0;
  let ejectMs = -1;
  const killing: Promise<unknown>[] = [];
  const worker = async () => {
    while (sent < TOTAL) {
      const n = ++sent;
      if (n === 600) {
        const killedAt = performance.now();
        killing.push(b.kill());
        // Out of rotation within one interval of its death (passive ejection or a probe).
        killing.push(
          waitFor(() => !reg.available(b.url), { timeoutMs: 1_000, intervalMs: 5 })
            .then(() => ejectMs = performance.now() - killedAt),
        );
      }
      const res = await fetch(`${prox.url}/x`);
      await res.body?.cancel();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    }
  };
  const loopStart = performance.now();
  await Promise.all(Array.from({ length: 8 }, worker));
  const loopMs = performance.now() - loopStart;
  await Promise.all(killing);
  assert.deepEqual([...statuses], [[200, TOTAL]], "every client request succeeded");

  assert.ok(ejectMs >= 0 && ejectMs < 1_000, `ejected after ${ejectMs} ms`);
  // deno-lint-ignore no-console
  console.log(
    `${TOTAL} requests in ${loopMs.toFixed(0)} ms; b out of rotation ${ejectMs.toFixed(0)} ms ` +
      `after the kill; ` +
      `${count("Retrying upstream request")} retries, ${count("Upstream ejected")} ejection(s)`,
  );
  await waitFor(() => reg.list().find((u) => u.id === b.url)?.status === "down", {
    timeoutMs: 2_500,
    what: "b marked down by the health check",
  });

  // Restart on the same port: back after exactly healthy_threshold (2) successful probes.
  b.probes = 0;
  b.hits = 0;
  b.start();
  await waitFor(() => reg.available(b.url), { timeoutMs: 4_000, what: "b back in rotation" });
  assert.equal(b.probes, 2);
  assert.equal(count("Upstream recovered: health check passed"), 1);
  for (let i = 0; i < 9; i++) await (await fetch(`${prox.url}/y`)).body?.cancel();
  assert.ok(b.hits >= 2, `b served ${b.hits} of 9`);
});

Deno.test("proxy: a single target known down answers 503 at once unless try_when_down", async () => {
  await using up = new Backend("solo").start();
  up.healthStatus = 503;
  await using prox = await startProxy(`
health_check: { interval_secs: 60, timeout_secs: 1 }
routes:
  "/strict":
    type: proxy
    target: "${up.url}"
  "/lenient":
    type: proxy
    target: "${up.url}/"
    try_when_down: true
`);
  const reg = prox.server.upstreams;
  await waitFor(() => !reg.available(up.url) && !reg.available(`${up.url}/`), {
    what: "probe marks the target down",
  });
  const strict = await fetch(`${prox.url}/strict/a`);
  assert.equal(strict.status, 503);
  assert.match(await strict.text(), /no healthy upstream/);
  assert.equal(up.hits, 0, "no request reached the target");
  const lenient = await fetch(`${prox.url}/lenient/a`);
  assert.equal(lenient.status, 200);
  assert.equal(await lenient.text(), "solo");
  assert.equal(up.hits, 1);
});

Deno.test("health_check: method, per-target path, expected status and body match", async () => {
  const seen: string[] = [];
  await using up = new Backend("x").start();
  await using other = await startUpstream((req) => {
    seen.push(`${req.method} ${new URL(req.url).pathname}`);
    return new Response("state: degraded", { status: 299 });
  });
  await using prox = await startProxy(`
health_check: { interval_secs: 60, method: HEAD, expected_status: [200, "299"] }
backend_health_paths:
  "${other.url}": /custom
routes:
  "/a":
    type: proxy
    target: "${other.url}"
  "/b":
    type: proxy
    target: "${up.url}"
    health_check: { method: GET, body_match: "^ok$" }
  "/c":
    type: proxy
    target: "${other.url}/"
    health_check: { method: GET, body_match: "^ok$" }
`);
  const reg = prox.server.upstreams;
  const status = (id: string) => reg.list().find((u) => u.id === id)?.status;
  await waitFor(() => reg.list().length === 3 && reg.list().every((u) => u.status !== "unknown"));
  assert.deepEqual(seen.sort(), ["GET /health", "HEAD /custom"]);
  assert.equal(status(other.url), "up");
  assert.equal(status(up.url), "up");
  assert.equal(status(`${other.url}/`), "down", "body does not match");
});

Deno.test("passive_health: connect failures eject a dead target for the cool-down, panic keeps the last", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  const logger = recordingLogger();
  const count = (msg: string) => logger.lines.filter((l) => l.msg === msg).length;
  await using prox = await startProxy(
    `
health_check: { enabled: false }
passive_health: { failures: 2, window: 10s, base_ejection: 2s, panic_threshold_percent: 50 }
routes:
  "/":
    type: load_balance
    targets: ["${a.url}", "${b.url}"]
`,
    { logger },
  );
  const reg = prox.server.upstreams;
  await b.kill();
  for (let i = 0; i < 20; i++) {
    const res = await fetch(`${prox.url}/p`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "a");
  }
  assert.equal(count("Upstream ejected"), 1);
  assert.ok(!reg.available(b.url));
  // a fails too: ejecting it would leave 0 of 2 (< 50%), so it stays in and requests get 502.
  await a.kill();
  for (let i = 0; i < 4; i++) {
    const res = await fetch(`${prox.url}/p`);
    await res.body?.cancel();
    assert.ok(res.status === 502 || res.status === 503, `status ${res.status}`);
  }
  assert.ok(count("Upstream failing but not ejected: panic threshold") >= 1);
  assert.ok(reg.available(a.url));
  // Cool-down over: b is tried again and serves.
  b.start();
  await waitFor(() => reg.available(b.url), { what: "ejection to end" });
  const res = await fetch(`${prox.url}/p`);
  assert.equal(await res.text(), "b");
  assert.equal(count("Upstream back in rotation: ejection ended"), 1);
});

Deno.test("health survives a config reload for targets that did not change", async () => {
  await using up = new Backend("r").start();
  up.healthStatus = 500;
  await using prox = await startProxy(`
health_check: { interval_secs: 60 }
routes:
  "/":
    type: proxy
    target: "${up.url}"
`);
  const reg = prox.server.upstreams;
  await waitFor(() => !reg.available(up.url), { what: "target down" });
  const probes = up.probes;
  const r = await prox.server.reload();
  assert.ok(r.ok);
  assert.equal(prox.server.snapshot().version, 2);
  assert.ok(!reg.available(up.url), "still down after reload");
  const res = await fetch(`${prox.url}/`);
  assert.equal(res.status, 503);
  await res.body?.cancel();
  assert.equal(up.probes, probes, "no re-probe needed");
});

/** Sends `n` sequential requests and counts answers per backend name. */
async function spread(url: string, n: number, init?: (i: number) => RequestInit) {
  const out: Record<string, number> = {};
  const order: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = await (await fetch(url, init?.(i))).text();
    out[name] = (out[name] ?? 0) + 1;
    order.push(name);
  }
  return { out, order };
}

Deno.test("every policy spreads as specified through the real proxy", async (t) => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  await using c = new Backend("c").start();
  await using spare = new Backend("spare").start();
  const targets = (weights: boolean) =>
    weights
      ? `[{ url: "${a.url}", weight: 3 }, { url: "${b.url}", weight: 2 }, "${c.url}", { url: "${spare.url}", backup: true }]`
      : `["${a.url}", "${b.url}", "${c.url}", { url: "${spare.url}", backup: true }]`;
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/rr": { type: load_balance, targets: ${targets(false)} }
  "/random": { type: load_balance, strategy: random, targets: ${targets(false)} }
  "/wrr": { type: load_balance, strategy: weighted_round_robin, targets: ${targets(true)} }
  "/lc": { type: load_balance, strategy: least_connections, targets: ${targets(false)} }
  "/p2c": { type: load_balance, strategy: power_of_two, targets: ${targets(false)} }
  "/hash":
    type: load_balance
    strategy: consistent_hash
    hash_on: { type: header, name: x-user }
    targets: ${targets(false)}
  "/first": { type: load_balance, strategy: first, targets: ${targets(false)} }
`);
  const u = (p: string) => `${prox.url}${p}`;
  await t.step("round_robin rotates exactly", async () => {
    const { out, order } = await spread(u("/rr"), 300);
    assert.deepEqual(out, { a: 100, b: 100, c: 100 });
    assert.deepEqual(order.slice(0, 6), ["a", "b", "c", "a", "b", "c"]);
  });
  await t.step("weighted_round_robin within 1% of 3:2:1", async () => {
    const { out } = await spread(u("/wrr"), 600);
    assert.deepEqual(out, { a: 300, b: 200, c: 100 });
  });
  await t.step("random uses every primary about equally", async () => {
    const { out } = await spread(u("/random"), 150);
    assert.deepEqual(Object.keys(out).sort(), ["a", "b", "c"], JSON.stringify(out));
    for (const n of Object.values(out)) assert.ok(n >= 25, JSON.stringify(out));
  });
  await t.step("least_connections and power_of_two send less to a slow target", async () => {
    c.delayMs = 100;
    for (const p of ["/lc", "/p2c"]) {
      const out: Record<string, number> = {};
      let left = 120;
      await Promise.all(Array.from({ length: 6 }, async () => {
        while (left-- > 0) {
          const name = await (await fetch(u(p))).text();
          out[name] = (out[name] ?? 0) + 1;
        }
      }));
      const slow = out.c ?? 0;
      assert.ok(slow < Math.min(out.a, out.b) / 2, `${p}: ${JSON.stringify(out)}`);
    }
    c.delayMs = 0;
  });
  await t.step("consistent_hash keeps a key on one target and spreads keys", async () => {
    const { out } = await spread(u("/hash"), 60, () => ({ headers: { "x-user": "alice" } }));
    assert.equal(Object.keys(out).length, 1);
    const many = await spread(u("/hash"), 150, (i) => ({ headers: { "x-user": `user-${i}` } }));
    assert.deepEqual(Object.keys(many.out).sort(), ["a", "b", "c"]);
  });
  await t.step(
    "first sends everything to the first target; the backup stays idle",
    async () => {
      assert.deepEqual((await spread(u("/first"), 20)).out, { a: 20 });
      assert.equal(spare.hits, 0);
    },
  );
});

Deno.test("health_check: HTTPS targets are probed with the route's ca_cert", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  await using up = await startUpstream((req) => new Response(new URL(req.url).pathname), {
    cert: Deno.readTextFileSync(`${tls}/cert.pem`),
    key: Deno.readTextFileSync(`${tls}/key.pem`),
  });
  const other = up.url.replace("127.0.0.1", "localhost");
  await using prox = await startProxy(`
health_check: { interval_secs: 60 }
routes:
  "/trusted":
    type: proxy
    target: "${up.url}"
    tls: { ca_cert: "${tls}/ca.pem" }
  "/untrusted":
    type: proxy
    target: "${other}"
`);
  const reg = prox.server.upstreams;
  const status = (id: string) => reg.list().find((u) => u.id === id)?.status;
  const probed = (id: string) => status(id) === "up" || status(id) === "down";
  await waitFor(() => probed(up.url) && probed(other), { what: "first probes" });
  assert.equal(status(up.url), "up");
  assert.equal(status(other), "down", "unknown CA: the probe fails");
  const res = await fetch(`${prox.url}/trusted/x`);
  assert.equal(await res.text(), "/x");
});

Deno.test("reload: an added target is probed at once and joins; a removed one is forgotten", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  const dir = await Deno.makeTempDir({ prefix: "prox-balancer-" });
  const file = `${dir}/prox.yaml`;
  const config = (targets: string[]) => `
listen_addr: "127.0.0.1:0"
health_check: { interval_secs: 60 }
routes:
  "/":
    type: load_balance
    targets: ${JSON.stringify(targets)}
`;
  await Deno.writeTextFile(file, config([a.url]));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    const reg = server.upstreams;
    await waitFor(() => reg.list().some((u) => u.id === a.url && u.status === "up"));
    await Deno.writeTextFile(file, config([a.url, b.url]));
    assert.ok((await server.reload()).ok);
    // Probed long before the next 60 s round.
    await waitFor(() => reg.list().some((u) => u.id === b.url && u.status === "up"), {
      timeoutMs: 3_000,
      what: "b probed after reload",
    });
    assert.equal(b.probes, 1);
    const names = new Set<string>();
    for (let i = 0; i < 4; i++) {
      names.add(await (await fetch(`http://127.0.0.1:${server.port}/`)).text());
    }
    assert.deepEqual([...names].sort(), ["a", "b"]);
    await Deno.writeTextFile(file, config([b.url]));
    assert.ok((await server.reload()).ok);
    assert.deepEqual(reg.list().map((u) => u.id), [b.url]);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: turning health checks off puts a target that was down back in rotation", async () => {
  await using up = new Backend("z").start();
  up.healthStatus = 500;
  const dir = await Deno.makeTempDir({ prefix: "prox-balancer-" });
  const file = `${dir}/prox.yaml`;
  const config = (enabled: boolean) => `
listen_addr: "127.0.0.1:0"
health_check: { enabled: ${enabled}, interval_secs: 60 }
routes:
  "/": { type: proxy, target: "${up.url}" }
`;
  await Deno.writeTextFile(file, config(true));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    await waitFor(() => !server.upstreams.available(up.url), { what: "target down" });
    const before = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(before.status, 503);
    await before.body?.cancel();
    await Deno.writeTextFile(file, config(false));
    assert.ok((await server.reload()).ok);
    assert.ok(server.upstreams.available(up.url));
    const after = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(await after.text(), "z");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("retries.per_try_timeout: a hung upstream costs two timeouts, then it is ejected", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  await using c = new Backend("c").start();
  b.hang = true;
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: load_balance
    targets: ["${a.url}", "${b.url}", "${c.url}"]
    retries: { per_try_timeout: 200ms }
    passive_health: { failures: 2 }
`);
  try {
    const t0 = performance.now();
    for (let i = 0; i < 12; i++) {
      const res = await fetch(`${prox.url}/h`);
      assert.equal(res.status, 200);
      assert.notEqual(await res.text(), "b");
    }
    const ms = performance.now() - t0;
    // Two timeouts on b eject it (within the retry budget's floor of 3); then b is skipped.
    assert.equal(b.hits, 2);
    assert.ok(!prox.server.upstreams.available(b.url));
    assert.ok(ms < 2 * 200 + 2_000, `${ms} ms`);
  } finally {
    b.release();
  }
});
