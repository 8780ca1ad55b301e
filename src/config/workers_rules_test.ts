import assert from "node:assert/strict";
import { loadConfigText } from "./load.ts";
import { workersIssues } from "./workers_rules.ts";

const env = { exists: () => true };
const load = (yaml: string) => loadConfigText(yaml, { file: "c.yaml", env });
const base = (extra: string) =>
  `listen_addr: "127.0.0.1:8080"\nhealth_check:\n  enabled: false\n${extra}routes:\n` +
  `  "/api":\n    type: proxy\n    target: "http://127.0.0.1:9000"\n` +
  `    rate_limit:\n      by: ip\n      requests: 10\n      period: 1s\n`;

Deno.test("workersIssues: nothing to say with workers: 1", () => {
  const r = load(base(""));
  assert.ok(r.config);
  assert.deepEqual(workersIssues(r.config), []);
});

Deno.test("workersIssues: in-memory rate limits warn that each worker has its own buckets", () => {
  const r = load(base("workers: 4\n"));
  assert.ok(r.config, JSON.stringify(r.issues));
  const w = r.issues.find((i) => i.path === "routes./api.rate_limit");
  assert.equal(w?.severity, "warning");
  assert.match(w!.message, /each worker enforces its own buckets: a client may get up to 4x/);
  assert.match(w!.hint ?? "", /type: redis/);
  assert.ok(w!.line > 0, "located in the file");
});

Deno.test("workersIssues: a Redis store makes limits exact (no warning)", () => {
  const r = load(
    base('workers: 4\nrate_limit_store:\n  type: redis\n  url: "redis://127.0.0.1:6379"\n'),
  );
  assert.ok(r.config);
  assert.deepEqual(workersIssues(r.config), []);
});

Deno.test("workersIssues: port 0 is an error with workers > 1", () => {
  const r = load(base("workers: 2\n").replace(":8080", ":0"));
  assert.equal(r.config, undefined);
  const e = r.issues.find((i) => i.severity === "error");
  assert.equal(e?.path, "listen_addr");
  assert.match(e!.message, /workers: 2 needs a fixed port/);
});

Deno.test("workersIssues: metrics on the main listener are fine (gathered from every worker)", () => {
  const r = load(base("workers: 2\nmetrics:\n  on_main_listener: true\n"));
  assert.ok(r.config);
  assert.ok(!r.issues.some((i) => i.path.startsWith("metrics")));
});

Deno.test("workersIssues: port 0 for tls.acme.http_listen_addr is an error with workers > 1 (each worker would answer HTTP-01 on its own port)", () => {
  const r = load(
    base(
      "workers: 2\ntls:\n  acme: { enabled: true, domains: [a.example], email: a@a.example, " +
        'http_listen_addr: "0.0.0.0:0" }\n',
    ),
  );
  const e = r.issues.find((i) => i.path === "tls.acme.http_listen_addr" && i.severity === "error");
  assert.match(e?.message ?? JSON.stringify(r.issues), /workers: 2 needs a fixed port/);
});

Deno.test("workersIssues: a tcp listener on port 0 is an error with workers > 1, also for a --workers override", () => {
  // `prox serve --workers 2` checks a config loaded (and validated) with its own workers: 1.
  const r = load(base('tcp: { db: { listen_addr: "127.0.0.1:0", targets: ["10.0.0.5:5432"] } }\n'));
  assert.ok(r.config, JSON.stringify(r.issues));
  const e = workersIssues({ ...r.config, workers: 2 }).find((i) => i.severity === "error");
  assert.deepEqual(e?.path, ["tcp", "db", "listen_addr"]);
  assert.match(e!.message, /workers: 2 needs a fixed port in "127.0.0.1:0"/);
});

Deno.test("workersIssues: a concurrency_limit warns that each worker counts its own requests in progress", () => {
  const yaml = base("workers: 3\n").replace(
    "    rate_limit:\n      by: ip\n      requests: 10\n      period: 1s\n",
    "    concurrency_limit: { max: 20, by: route }\n",
  );
  const r = load(yaml);
  assert.ok(r.config, JSON.stringify(r.issues));
  const w = r.issues.find((i) => i.path === "routes./api.concurrency_limit");
  assert.equal(w?.severity, "warning", JSON.stringify(r.issues));
  assert.match(w!.message, /each worker counts its own requests in progress: up to 3x max/);
  // Whatever the store: the counts are never shared.
  const redis = load(
    yaml.replace(
      "workers: 3\n",
      'workers: 3\nrate_limit_store: { type: redis, url: "redis://127.0.0.1:6379" }\n',
    ),
  );
  assert.ok(redis.issues.some((i) => i.path === "routes./api.concurrency_limit"));
  assert.ok(!load(yaml.replace("workers: 3\n", "")).issues.some((i) => i.severity === "warning"));
});
