// Load balancing and failover through the real proxy, with real upstream servers that are killed
// (hard close) and restarted mid-load. Health checks are in health_test.ts.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import { Backend, recordingLogger } from "./_backend.ts";
import { rawServer, readRequest } from "../_upstream_peers.ts";

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

Deno.test("proxy: a single target known down is still tried (as nginx and the Rust Prox); try_when_down: false answers 503 at once", async () => {
  await using up = new Backend("solo").start();
  up.healthStatus = 404; // a backend without a health endpoint: the common case
  await using prox = await startProxy(`
health_check: { interval_secs: 60, timeout_secs: 1 }
routes:
  "/strict":
    type: proxy
    target: "${up.url}"
    try_when_down: false
  "/lenient":
    type: proxy
    target: "${up.url}/"
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

Deno.test("a large upload an upstream read part of is not retried with what is left of it", async () => {
  // The first target reads the head and 20 KB of the body, then closes; the second records.
  await using first = rawServer(async (c) => {
    await readRequest(c, 20_000);
  });
  const second: string[] = [];
  await using next = rawServer(async (c) => {
    const head = await readRequest(c);
    if (head === null) return;
    second.push(head.slice(0, head.indexOf("\r\n")));
    await c.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: load_balance
    strategy: first
    targets: ["${first.url}", "${next.url}"]
`);
  const big = new Uint8Array(200_000).fill(120);
  for (const withLength of [false, true]) {
    // Without a length (a stream) the body goes chunked; over 64 KiB it is never kept for replay.
    const body = withLength ? big : new Blob([big]).stream();
    const res = await fetch(`${prox.url}/doc`, { method: "PUT", body });
    // The first target's failure, not an empty or cut-short PUT to the second (or a 400 blaming
    // the client for the body the first one consumed).
    assert.equal(res.status, 502, `withLength: ${withLength}`);
    await res.body?.cancel();
  }
  assert.deepEqual(second, []);
});

Deno.test("least_connections counts an open WebSocket as in flight until it closes", async () => {
  const echo = (name: string) => (req: Request) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(`${name}: ${e.data}`);
    return response;
  };
  await using a = await startUpstream(echo("a"));
  await using b = await startUpstream(echo("b"));
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: load_balance
    strategy: least_connections
    targets: ["${a.url}", "${b.url}"]
`);
  const inFlight = (url: string) =>
    prox.server.upstreams.list().find((u) => u.id === url)?.inFlight;
  const open = async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${prox.port}/`);
    const got = new Promise<string>((r) => ws.onmessage = (e) => r(String(e.data)));
    await new Promise((r) => ws.onopen = r);
    ws.send("x");
    return { ws, name: (await got)[0] };
  };
  const close = async (ws: WebSocket) => {
    const done = new Promise((r) => ws.onclose = r);
    ws.close();
    await done;
  };
  const first = await open();
  const busy = first.name === "a" ? a.url : b.url;
  assert.equal(inFlight(busy), 1, "the open WebSocket counts");
  // The idle target takes the next ones while the first stays open.
  const second = await open();
  assert.notEqual(second.name, first.name);
  await close(second.ws);
  const third = await open();
  assert.notEqual(
    third.name,
    first.name,
    "the target with an open WebSocket is not the least loaded",
  );
  await close(third.ws);
  await close(first.ws);
  await waitFor(() => inFlight(a.url) === 0 && inFlight(b.url) === 0, { what: "counts back to 0" });
});

Deno.test("a reload keeps the rotation of a pool whose strategy and targets did not change", async () => {
  const named = (name: string) => () => new Response(name);
  await using a = await startUpstream(named("a"));
  await using b = await startUpstream(named("b"));
  await using c = await startUpstream(named("c"));
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  const config = (extra: string) =>
    Deno.writeTextFile(
      file,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/":
    type: load_balance
    targets: ["${a.url}", "${b.url}", "${c.url}"]
${extra}`,
    );
  await config("");
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    const seen: string[] = [];
    for (let k = 0; k < 6; k++) {
      seen.push(await (await fetch(`http://127.0.0.1:${server.port}/`)).text());
      // An unrelated change: another route.
      await config(`  "/other${k}": { type: proxy, target: "${a.url}" }\n`);
      assert.ok((await server.reload()).ok);
    }
    assert.deepEqual(seen, ["a", "b", "c", "a", "b", "c"]);
  } finally {
    await server.shutdown();
    await Deno.remove(file);
  }
});

Deno.test("least_connections, power_of_two, consistent_hash: the access log counts a chunked body's bytes", async () => {
  // Chunked (no Content-Length): only the upstream client's counter knows the size.
  await using up = await startUpstream(() =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new Uint8Array(1000));
          c.enqueue(new Uint8Array(234));
          c.close();
        },
      }),
    )
  );
  const lines: Record<string, unknown>[] = [];
  const logger = {
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => void (m === "access" && lines.push(f!)),
  };
  await using prox = await startProxy(
    `
health_check: { enabled: false }
log: { access_log: json }
routes:
  "/lc": { type: load_balance, strategy: least_connections, targets: ["${up.url}"] }
  "/p2c": { type: load_balance, strategy: power_of_two, targets: ["${up.url}"] }
  "/hash": { type: load_balance, strategy: consistent_hash, targets: ["${up.url}"] }
`,
    { logger },
  );
  for (const path of ["/lc", "/p2c", "/hash"]) {
    const res = await fetch(`${prox.url}${path}`);
    assert.equal((await res.arrayBuffer()).byteLength, 1234);
  }
  await waitFor(() => lines.length === 3, { what: "three access records" });
  assert.deepEqual(lines.map((l) => [l.path, l.bytesOut]), [["/lc", 1234], ["/p2c", 1234], [
    "/hash",
    1234,
  ]]);
});

Deno.test("the access log names the last attempt's upstream status, not one a retry replaced", async () => {
  await using busy = await startUpstream(() => new Response("busy", { status: 503 }));
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadUrl = `http://127.0.0.1:${(dead.addr as Deno.NetAddr).port}`;
  dead.close();
  const lines: Record<string, unknown>[] = [];
  const logger = {
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => void (m === "access" && lines.push(f!)),
  };
  await using prox = await startProxy(
    `
health_check: { enabled: false }
log: { access_log: json }
routes:
  "/":
    type: load_balance
    strategy: first
    targets: ["${busy.url}", "${deadUrl}"]
    retries: { attempts: 1, on_status: [503] }
`,
    { logger },
  );
  // 503 from the first target, retried on the second, which refuses the connection: 502.
  const res = await fetch(`${prox.url}/x`);
  await res.body?.cancel();
  assert.equal(res.status, 502);
  await waitFor(() => lines.length === 1, { what: "the access record" });
  const { status, upstream, upstreamStatus, retries } = lines[0];
  assert.deepEqual({ status, upstream, upstreamStatus, retries }, {
    status: 502,
    upstream: deadUrl,
    upstreamStatus: null,
    retries: 1,
  });
});
