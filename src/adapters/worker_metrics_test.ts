import assert from "node:assert/strict";
import { createWorkerMetrics } from "./worker_metrics.ts";
import { createPromMetrics } from "./metrics_prom.ts";
import { silentLogger } from "../ports.ts";

Deno.test("createWorkerMetrics labels by worker without changing the registry's own series", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-wm-" });
  const m = createPromMetrics({ processMetrics: false });
  const wm = createWorkerMetrics({ index: 0, count: 1, dir, logger: silentLogger });
  try {
    wm.attach(m.registry);
    m.rateLimit("/old", "allowed");
    m.retry("/old", "connect");
    m.request("/old", "GET", 200, 0.01);
    const first = await wm.text();
    assert.match(
      first,
      /^prox_rate_limit_hits_total\{route="\/old",action="allowed",worker="0"\} 1$/m,
    );
    // A reload that removed /old drops its series (prom-client's remove() threw on the leftover
    // worker label, so they stayed).
    await m.routesConfigured(["/new"]);
    const after = await wm.text();
    assert.doesNotMatch(after, /route="\/old"/);
    assert.doesNotMatch(await m.text(), /worker=/);
  } finally {
    wm.close();
    await Deno.remove(dir, { recursive: true });
  }
});
