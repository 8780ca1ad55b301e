// What a client gets when no target of a route is available: 503 at once, Proxy-Status
// destination_unavailable, and Retry-After saying when a target may be back.
import assert from "node:assert/strict";
import { waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { Backend } from "./_backend.ts";

/**
 * URLs of `n` ports nobody listens on any more: all are bound before any is freed, so the kernel
 * cannot hand one port out twice (two equal targets would make the config invalid).
 */
async function deadUrls(n: number): Promise<string[]> {
  const backends = Array.from({ length: n }, (_, i) => new Backend(`dead${i}`).start());
  for (const b of backends) await b.kill();
  return backends.map((b) => b.url);
}

Deno.test("all targets ejected: 503 with Retry-After until the soonest ejection ends", async () => {
  const [a, b] = await deadUrls(2);
  await using prox = await startProxy(`
health_check: { enabled: false }
passive_health: { failures: 1, base_ejection: 30s, panic_threshold_percent: 0 }
routes:
  "/": { type: load_balance, targets: ["${a}", "${b}"] }
`);
  // The first request tries both (a connect failure is retried) and ejects both.
  const first = await fetch(prox.url);
  assert.equal(first.status, 502);
  await first.body?.cancel();
  const res = await fetch(prox.url);
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("proxy-status"), "prox; error=destination_unavailable");
  const after = Number(res.headers.get("retry-after"));
  assert.ok(after >= 25 && after <= 30, `Retry-After ${after}`);
  await res.body?.cancel();
});

Deno.test("all targets down by health checks: Retry-After counts the probes still needed", async () => {
  const [dead] = await deadUrls(1);
  await using up = new Backend("up").start();
  up.healthStatus = 500;
  await using prox = await startProxy(`
health_check: { interval_secs: 5, timeout_secs: 1, unhealthy_threshold: 1, healthy_threshold: 3 }
routes:
  "/": { type: load_balance, targets: ["${dead}", "${up.url}"] }
`);
  const reg = prox.server.upstreams;
  await waitFor(() => reg.list().filter((u) => u.status === "down").length === 2);
  const res = await fetch(prox.url);
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("proxy-status"), "prox; error=destination_unavailable");
  // Three passing probes, 5 s apart.
  assert.equal(res.headers.get("retry-after"), "15");
  await res.body?.cancel();
  assert.equal(up.hits, 0, "no target was contacted");
});
