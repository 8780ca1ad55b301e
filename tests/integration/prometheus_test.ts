// A real Prometheus (Debian `prometheus`) scrapes Prox's admin listener with the bearer token,
// loads monitoring/alerts.yml, and answers histogram_quantile over Prox's latency histogram.
// Every dashboard and alert expression must also parse and evaluate against it.
import assert from "node:assert/strict";
import { freePort, interopTest, ROOT, waitFor } from "../_harness.ts";
import { startObserved } from "./_observed.ts";
import { dashboardQueries } from "./_promql.ts";

/** A legend as Grafana renders it: a label the series lacks shows as its name. */
function renderLegend(format: string, labels: Record<string, string>): string {
  return format.replace(/\{\{\s*(.+?)\s*\}\}/g, (_, name) => labels[name] || name);
}

interface PromResult {
  status: string;
  error?: string;
  data: {
    resultType: string;
    result: { metric: Record<string, string>; value: [number, string] }[];
  };
}

interopTest("Prometheus scrapes the admin listener and answers histogram_quantile", [
  "prometheus",
], async () => {
  await using p = await startObserved();
  const dir = await Deno.makeTempDir({ prefix: "prox-prom-" });
  await Deno.copyFile(`${ROOT}/monitoring/alerts.yml`, `${dir}/alerts.yml`);
  await Deno.writeTextFile(`${dir}/token`, p.token);
  await Deno.writeTextFile(
    `${dir}/prometheus.yml`,
    `global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: [alerts.yml]
scrape_configs:
  - job_name: prox
    authorization: { type: Bearer, credentials_file: ${dir}/token }
    static_configs:
      # Twice, as workers 0 and 1: with \`workers: N\` every series carries a worker label.
      - { targets: ["${new URL(p.adminUrl).host}"], labels: { worker: "0" } }
      - { targets: ["${new URL(p.adminUrl).host}"], labels: { worker: "1" } }
`,
  );
  const port = freePort();
  const child = new Deno.Command("prometheus", {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const api = `http://127.0.0.1:${port}/api/v1`;
  const query = async (q: string): Promise<PromResult> =>
    await (await fetch(`${api}/query?query=${encodeURIComponent(q)}`)).json();
  try {
    // The scrape uses the token and succeeds.
    await waitFor(async () => {
      const t = await (await fetch(`${api}/targets`)).json();
      const active: { health: string }[] = t.data?.activeTargets ?? [];
      return active.length === 2 && active.every((a) => a.health === "up");
    }, { timeoutMs: 30_000, intervalMs: 200, what: "the prox target to be up" });

    // Keep traffic flowing until two scrapes see the histogram grow, then ask for p95.
    const p95 =
      'histogram_quantile(0.95, sum by (le) (rate(prox_request_duration_seconds_bucket{route="/api"}[30s])))';
    const value = await waitFor(async () => {
      await p.traffic(2);
      const r = await query(p95);
      const v = Number(r.data?.result?.[0]?.value?.[1]);
      return Number.isFinite(v) ? v : null;
    }, { timeoutMs: 30_000, intervalMs: 300, what: "a histogram_quantile answer" });
    // A third of /api requests wait 15 ms upstream, so p95 is at least in the 10–25 ms bucket;
    // the upper bound leaves room for a loaded machine.
    assert.ok(value >= 0.01 && value <= 2.5, `p95 = ${value}`);

    const up = await query('prox_backend_health_status{job="prox"}');
    assert.equal(up.data.result.length, 4);

    const rules = await (await fetch(`${api}/rules`)).json();
    const names = rules.data.groups.flatMap((g: { rules: { name: string }[] }) =>
      g.rules.map((r) => r.name)
    );
    assert.ok(names.includes("ProxBackendDown") && names.includes("ProxHighLatencyP95"), names);
    assert.ok(
      rules.data.groups.every((g: { rules: { health: string }[] }) =>
        g.rules.every((r) => r.health !== "err")
      ),
    );

    // Every dashboard query parses and evaluates (Grafana variables replaced), and its series
    // have distinct legends although each is scraped from two workers.
    for (const { panel, expr, legend } of dashboardQueries()) {
      const q = expr
        .replaceAll("$__rate_interval", "1m")
        .replace(/\$\w+/g, ".*");
      const r = await query(q.startsWith("label_values") ? "vector(1)" : q);
      assert.equal(r.status, "success", `${panel}: ${q}: ${r.error}`);
      if (legend === undefined) continue;
      const names = r.data.result.map((s) => renderLegend(legend, s.metric));
      assert.equal(new Set(names).size, names.length, `${panel}: legends ${names.join(", ")}`);
    }
  } finally {
    child.kill("SIGTERM");
    const out = await child.output();
    const log = new TextDecoder().decode(out.stderr);
    await Deno.remove(dir, { recursive: true });
    assert.ok(!/level=error/.test(log), log);
  }
});
