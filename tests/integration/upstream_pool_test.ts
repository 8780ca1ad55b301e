// upstream_pool through the real proxy: a bounded pool per upstream, and load shedding as 503
// with Retry-After once no connection and no queue slot is left (FIFO order: unit tests).
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";

Deno.test("upstream_pool: past queue_limit requests are shed with 503 and Retry-After", async () => {
  const gates: (() => void)[] = [];
  await using up = await startUpstream(async () => {
    await new Promise<void>((r) => gates.push(r));
    return new Response("slow");
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 0 }
routes: { "/": { type: proxy, target: "${up.url}", retries: { attempts: 0 } } }
`);
  const first = fetch(`${prox.url}/1`);
  await waitFor(() => gates.length === 1, { what: "first request at the upstream" });
  const shed = await fetch(`${prox.url}/2`);
  assert.equal(shed.status, 503);
  assert.equal(shed.headers.get("retry-after"), "1");
  assert.match(await shed.text(), /overloaded/);
  gates.shift()!();
  assert.equal(await (await first).text(), "slow");
  // The connection is free again: the next request goes through.
  const next = fetch(`${prox.url}/3`);
  await waitFor(() => gates.length === 1, { what: "next request at the upstream" });
  gates.shift()!();
  assert.equal(await (await next).text(), "slow");
});
