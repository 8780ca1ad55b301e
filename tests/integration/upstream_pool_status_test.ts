// The upstream connection pool as the admin API shows it: /status (per target), /metrics and
// `prox top --once --format json`, with a real upstream holding requests and a real queue.
import assert from "node:assert/strict";
import { ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

const TOKEN = "pool-status-token";
const auth = { authorization: `Bearer ${TOKEN}` };

Deno.test("admin /status, /metrics and prox top show busy, idle, waiting, opened and reused connections", async () => {
  const gates: (() => void)[] = [];
  await using up = await startUpstream(async (req) => {
    if (new URL(req.url).pathname.endsWith("/hold")) {
      await new Promise<void>((r) => gates.push(r));
    }
    return new Response("ok");
  });
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(
    file,
    `listen_addr: "127.0.0.1:0"
admin: { listen_addr: "127.0.0.1:0", token: "${TOKEN}" }
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 2, queue_limit: 8, queue_timeout: 60s }
routes:
  "/api": { type: proxy, target: "${up.url}" }
  "/other": { type: proxy, target: "${up.url}/other" }
`,
  );
  const prox = await startServer({ path: file }, { logger: silentLogger, version: "test" });
  const admin = `http://127.0.0.1:${prox.admin!.port}`;
  const base = `http://127.0.0.1:${prox.port}`;
  const status = async () => {
    const res = await fetch(`${admin}/status`, { headers: auth });
    assert.equal(res.status, 200);
    return await res.json() as {
      upstreams: { url: string; pool: Record<string, number | null> | null }[];
    };
  };
  const poolOf = async (url: string) => (await status()).upstreams.find((u) => u.url === url)!.pool;
  const metric = async (series: string) => {
    const text = await (await fetch(`${admin}/metrics`, { headers: auth })).text();
    const line = text.split("\n").find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  const held: Promise<string>[] = [];
  try {
    // Before any request: an empty pool for each target.
    assert.deepEqual(await poolOf(up.url), {
      busy: 0,
      idle: 0,
      waiting: 0,
      opened: 0,
      reused: 0,
      h2Streams: null,
    });
    // One after another: one connection, kept alive and reused.
    for (let i = 0; i < 4; i++) await (await fetch(`${base}/api/x`)).text();
    assert.deepEqual(await poolOf(up.url), {
      busy: 0,
      idle: 1,
      waiting: 0,
      opened: 1,
      reused: 3,
      h2Streams: null,
    });
    // Three at once over two connections: one waits in the pool's queue.
    for (let i = 0; i < 3; i++) held.push(fetch(`${base}/api/hold`).then((r) => r.text()));
    await waitFor(async () => gates.length === 2 && (await poolOf(up.url))?.waiting === 1, {
      what: "two requests upstream and one waiting",
    });
    const busy = { busy: 2, idle: 0, waiting: 1, opened: 2, reused: 4, h2Streams: null };
    assert.deepEqual(await poolOf(up.url), busy);
    // A target with a path shares its origin's pool.
    assert.deepEqual(await poolOf(`${up.url}/other`), busy);
    const b = `backend="${up.url}"`;
    assert.equal(await metric(`prox_upstream_connections{${b},state="busy"}`), 2);
    assert.equal(await metric(`prox_upstream_connections{${b},state="idle"}`), 0);
    assert.equal(await metric(`prox_upstream_waiting{${b}}`), 1);
    assert.equal(await metric(`prox_upstream_connections_opened_total{${b}}`), 2);
    assert.equal(await metric(`prox_upstream_connections_reused_total{${b}}`), 4);

    // prox top sees the same while the requests are held.
    const top = await run(Deno.execPath(), [
      "run",
      "-A",
      "--config",
      `${ROOT}/deno.json`,
      `${ROOT}/mod.ts`,
      "top",
      "--admin",
      admin,
      "--token",
      TOKEN,
      "--once",
      "--interval",
      "1s",
      "--format",
      "json",
    ], { env: { NO_COLOR: "1" }, timeoutMs: 30_000 });
    assert.equal(top.code, 0, top.stderr);
    const snap = JSON.parse(top.stdout);
    const row = snap.upstreams.find((u: { url: string }) => u.url === up.url);
    assert.deepEqual(row.pool, {
      busy: 2,
      idle: 0,
      waiting: 1,
      openedPerSecond: 0,
      reuseRatio: null,
      h2Streams: null,
    });

    // Released: the waiting request took a connection handed over; both end up idle.
    for (let i = 0; i < 3; i++) {
      await waitFor(() => gates.length > 0, { what: "a held request upstream" });
      gates.shift()!();
    }
    assert.deepEqual(await Promise.all(held.splice(0)), ["ok", "ok", "ok"]);
    await waitFor(async () => (await poolOf(up.url))?.busy === 0, { what: "connections parked" });
    assert.deepEqual(await poolOf(up.url), {
      busy: 0,
      idle: 2,
      waiting: 0,
      opened: 2,
      reused: 5,
      h2Streams: null,
    });
  } finally {
    for (const g of gates.splice(0)) g();
    await Promise.allSettled(held);
    await prox.shutdown();
    await Deno.remove(file);
  }
});
