// promtool (Debian `prometheus`) on a real exposition and on the monitoring kit.
import assert from "node:assert/strict";
import { interopTest, ROOT, run } from "../_harness.ts";
import { startObserved } from "./_observed.ts";

interopTest("promtool check metrics accepts the live exposition after mixed traffic", [
  "promtool",
], async () => {
  await using p = await startObserved();
  await p.traffic(3);
  await p.server.reload();
  const res = await p.admin("/metrics");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await res.text();
  // The traffic reached every kind of series the checker should see.
  for (
    const s of [
      'prox_requests_total{route="/limited",method="GET",status="429"}',
      'prox_requests_total{route="/down",method="GET",status="502"}',
      'prox_requests_total{route="(none)",method="GET",status="404"}',
      "prox_request_duration_seconds_bucket{",
      "prox_backend_request_duration_seconds_bucket{",
      "prox_tls_certificate_expiry_timestamp_seconds{",
      'prox_config_reload_total{result="success"} 2',
      "prox_upstream_connections{",
      "prox_upstream_waiting{",
      "prox_upstream_connections_opened_total{",
      "prox_upstream_connections_reused_total{",
    ]
  ) assert.ok(text.includes(s), `missing ${s}`);
  const out = await run("promtool", ["check", "metrics"], { stdin: text, timeoutMs: 20_000 });
  assert.equal(out.code, 0, out.stdout + out.stderr);
  assert.equal((out.stdout + out.stderr).trim(), "");
});

interopTest("promtool checks the alert rules, their unit tests and prometheus.yml", [
  "promtool",
], async () => {
  const dir = `${ROOT}/monitoring`;
  const rules = await run("promtool", ["check", "rules", "alerts.yml"], { cwd: dir });
  assert.equal(rules.code, 0, rules.stdout + rules.stderr);
  assert.match(rules.stdout, /SUCCESS: 12 rules found/);
  const tests = await run("promtool", ["test", "rules", "alerts_test.yml"], {
    cwd: dir,
    timeoutMs: 30_000,
  });
  assert.equal(tests.code, 0, tests.stdout + tests.stderr);
  const cfg = await run("promtool", ["check", "config", "--syntax-only", "prometheus.yml"], {
    cwd: dir,
  });
  assert.equal(cfg.code, 0, cfg.stdout + cfg.stderr);
});
