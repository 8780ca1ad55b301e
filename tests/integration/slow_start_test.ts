// Slow start through the real proxy: a target back from failing health checks, or added by a
// reload, gets a small share of the requests at first. The window (1 h) is far longer than the
// test, so the share is the ramp's floor (10 % of its weight) however slow the machine is.
import assert from "node:assert/strict";
import { waitFor } from "../_harness.ts";
import { silentLogger } from "../../src/ports.ts";
import { startServer } from "../../src/server.ts";
import { Backend } from "./_backend.ts";

/** Sends `n` requests one after another and returns how many each backend served. */
async function spread(url: string, n: number, backends: Backend[]): Promise<number[]> {
  const before = backends.map((b) => b.hits);
  for (let i = 0; i < n; i++) {
    const res = await fetch(url);
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  return backends.map((b, i) => b.hits - before[i]);
}

Deno.test("slow_start: a target back from failing health checks, or added by a reload, gets few requests at first", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  await using c = new Backend("c").start();
  const dir = await Deno.makeTempDir({ prefix: "prox-slow-start-" });
  const file = `${dir}/prox.yaml`;
  const config = (targets: string[]) => `
listen_addr: "127.0.0.1:0"
health_check: { interval_secs: 1, timeout_secs: 1, unhealthy_threshold: 1, healthy_threshold: 1 }
routes:
  "/":
    type: load_balance
    targets: ${JSON.stringify(targets)}
    slow_start: 1h
`;
  await Deno.writeTextFile(file, config([a.url, b.url]));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    const reg = server.upstreams;
    const status = (id: string) => reg.list().find((u) => u.id === id)?.status;
    const url = `http://127.0.0.1:${server.port}/`;
    await waitFor(() => status(a.url) === "up" && status(b.url) === "up");
    // At start-up nobody ramps: round robin halves the requests.
    assert.deepEqual(await spread(url, 20, [a, b]), [10, 10]);

    b.healthStatus = 500;
    await waitFor(() => status(b.url) === "down", { what: "b marked down" });
    b.healthStatus = 200;
    await waitFor(() => status(b.url) === "up", { what: "b back up" });
    // Back up: a tenth of its weight, so about 1 request in 11 (10 of 110), not half.
    const [toA, toB] = await spread(url, 110, [a, b]);
    assert.ok(toB >= 5 && toB <= 20, `b served ${toB} of 110 (a ${toA})`);

    // Added by a reload: c ramps, a and b (kept) do not. b (still ramping) and c get about
    // 0.1 / 2.2 of the requests each, so a keeps most of them.
    await Deno.writeTextFile(file, config([a.url, b.url, c.url]));
    assert.ok((await server.reload()).ok);
    await waitFor(() => status(c.url) === "up", { what: "c probed" });
    const [, , toC] = await spread(url, 110, [a, b, c]);
    assert.ok(toC >= 1 && toC <= 15, `c served ${toC} of 110`);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
