// Metric values after a known sequence of requests through a real Prox, read from the admin
// listener's exposition.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";

/** The value of one series in an exposition, or undefined when absent. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("metrics: a request shed by upstream_pool is no backend request", async () => {
  const gates: (() => void)[] = [];
  await using up = await startUpstream(async () => {
    await new Promise<void>((r) => gates.push(r));
    return new Response("slow");
  });
  await using p = await startProxy(`
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 0 }
routes: { "/": { type: proxy, target: "${up.url}", retries: { attempts: 0 } } }
`);
  const first = fetch(`${p.url}/1`);
  await waitFor(() => gates.length === 1, { what: "first request at the upstream" });
  const shed = await fetch(`${p.url}/2`);
  await shed.body?.cancel();
  assert.equal(shed.status, 503);
  gates.shift()!();
  assert.equal(await (await first).text(), "slow");

  const text = await (await fetch(`http://127.0.0.1:${p.server.admin!.port}/metrics`)).text();
  const route = `route="/"`;
  assert.equal(value(text, `prox_requests_total{${route},method="GET",status="503"}`), 1);
  assert.equal(value(text, `prox_requests_total{${route},method="GET",status="200"}`), 1);
  // One request reached the target; the shed one never left Prox.
  const backend = `backend="${up.url}",${route}`;
  assert.equal(value(text, `prox_backend_requests_total{${backend},status="200"}`), 1);
  assert.equal(value(text, `prox_backend_requests_total{${backend},status="599"}`), undefined);
  assert.equal(value(text, `prox_backend_request_duration_seconds_count{${backend}}`), 1);
});
