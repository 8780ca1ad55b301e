// Metric values (and access lines) after a known sequence of requests through a real Prox, read
// from the admin listener's exposition.
import assert from "node:assert/strict";
import { ROOT, startHeldUpstream, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import type { TestProxy } from "./_proxy.ts";
import { freePort } from "./_pebble.ts";
import { acmeYaml, memoryLogger, start, withTempDir } from "./_acme.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger } from "../../src/ports.ts";

/** The value of one series in an exposition, or undefined when absent. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** GET `path` (/metrics, /status) on the admin listener of `p`, as text. */
async function admin(p: TestProxy, path: string): Promise<string> {
  return await (await fetch(`http://127.0.0.1:${p.server.admin!.port}${path}`)).text();
}

/** A logger that keeps the fields of each access line (and says nothing). */
function accessLog() {
  const lines: Record<string, unknown>[] = [];
  const logger: Logger = { ...silentLogger, info: (m, f) => m === "access" && lines.push(f!) };
  return { lines, logger };
}

/** A port on 127.0.0.1 that nothing listens on (one the kernel gave out and was closed). */
function closedPort(): number {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  return port;
}

Deno.test("metrics: a request shed by upstream_pool is no backend request", async () => {
  await using up = await startHeldUpstream("slow");
  await using p = await startProxy(`
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 0 }
routes: { "/": { type: proxy, target: "${up.url}", retries: { attempts: 0 } } }
`);
  const first = fetch(`${p.url}/1`);
  await waitFor(() => up.arrived === 1, { what: "first request at the upstream" });
  const shed = await fetch(`${p.url}/2`);
  await shed.body?.cancel();
  assert.equal(shed.status, 503);
  up.release();
  assert.equal(await (await first).text(), "slow");

  const text = await admin(p, "/metrics");
  const route = `route="/"`;
  assert.equal(value(text, `prox_requests_total{${route},method="GET",status="503"}`), 1);
  assert.equal(value(text, `prox_requests_total{${route},method="GET",status="200"}`), 1);
  // One request reached the target; the shed one never left Prox.
  const backend = `backend="${up.url}",${route}`;
  assert.equal(value(text, `prox_backend_requests_total{${backend},status="200"}`), 1);
  assert.equal(value(text, `prox_backend_requests_total{${backend},status="599"}`), undefined);
  assert.equal(value(text, `prox_backend_request_duration_seconds_count{${backend}}`), 1);
});

Deno.test("metrics: requests upstream_pool sheds are counted per target and reason", async () => {
  await using up = await startHeldUpstream("slow");
  await using p = await startProxy(`
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 1, queue_timeout: 100ms }
routes:
  "/": { type: proxy, target: "${up.url}", retries: { attempts: 0 } }
  "/short":
    type: proxy
    target: "${up.url}"
    retries: { attempts: 0 }
    timeouts: { total: 50ms }
`);
  // A failed assertion must not leave the upstream holding its request (disposal would hang).
  using _open = { [Symbol.dispose]: () => up.release() };
  const first = fetch(`${p.url}/1`);
  await waitFor(() => up.arrived === 1, { what: "first request at the upstream" });
  // The queue's one place taken: the next is shed at once, the queued one after queue_timeout.
  const queued = fetch(`${p.url}/2`);
  await waitFor(async () => {
    const t = await admin(p, "/metrics");
    return value(t, `prox_upstream_waiting{backend="${up.url}"}`) === 1;
  }, { what: "the second request in the queue" });
  const full = await fetch(`${p.url}/3`);
  await full.body?.cancel();
  assert.equal(full.status, 503);
  assert.equal(full.headers.get("retry-after"), "1");
  const timedOut = await queued;
  await timedOut.body?.cancel();
  assert.equal(timedOut.status, 503);
  // Its own timeout (timeouts.total) ran out while it waited.
  const overdue = await fetch(`${p.url}/short`);
  await overdue.body?.cancel();
  up.release();
  assert.equal(overdue.status, 504);
  assert.equal(await (await first).text(), "slow");

  const text = await admin(p, "/metrics");
  const shed = (reason: string) =>
    value(text, `prox_upstream_shed_total{backend="${up.url}",reason="${reason}"}`) ?? 0;
  assert.equal(shed("queue_full"), 1);
  assert.equal(shed("queue_timeout"), 1);
  assert.equal(shed("request_timeout"), 1);
});

Deno.test("metrics and access log: a client that leaves before the answer is no backend failure (499, not 599) and got no bytes", async () => {
  const { lines, logger } = accessLog();
  await using up = await startHeldUpstream("slow");
  await using p = await startProxy(
    `
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: false }
log: { access_log: json }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
    { logger },
  );
  const ac = new AbortController();
  const req = fetch(`${p.url}/1`, { signal: ac.signal }).catch(() => null);
  await waitFor(() => up.arrived === 1, { what: "the request at the upstream" });
  ac.abort();
  await req;
  const backend = `backend="${up.url}",route="/"`;
  const text = await waitFor(async () => {
    const t = await admin(p, "/metrics");
    return t.includes(`prox_backend_requests_total{${backend}`) ? t : null;
  }, { what: "the backend series" });
  up.release();
  assert.equal(value(text, `prox_backend_requests_total{${backend},status="599"}`), undefined);
  assert.equal(value(text, `prox_backend_requests_total{${backend},status="499"}`), 1);
  // As nginx logs a 499: no body reached the client.
  await waitFor(() => lines.length === 1, { what: "the access line" });
  assert.equal(lines[0].status, 499);
  assert.equal(lines[0].bytesOut, 0);
});

Deno.test("metrics and access log: requests on the plain-HTTP listener are counted and logged", async () => {
  const httpPort = closedPort();
  const { lines, logger } = accessLog();
  await using p = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${ROOT}/tests/fixtures/tls/cert.pem", key_path: "${ROOT}/tests/fixtures/tls/key.pem" }
admin: { listen_addr: "127.0.0.1:0" }
http_redirect: { listen_addr: "127.0.0.1:${httpPort}" }
health_check: { enabled: false }
log: { access_log: json }
routes: { "/": { type: redirect, target: "/x" } }
`,
    { keepListen: true, tls: true, logger },
  );
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`http://127.0.0.1:${httpPort}/a?b=1`, { redirect: "manual" });
    await res.body?.cancel();
    assert.equal(res.status, 308);
  }
  const text = await admin(p, "/metrics");
  assert.equal(
    value(text, 'prox_requests_total{route="(plain_http)",method="GET",status="308"}'),
    2,
  );
  const line = await waitFor(() => lines.find((l) => l.path === "/a"), { what: "an access line" });
  assert.equal(line.status, 308);
  assert.equal(line.tls, false);
  // A reload keeps the series (it belongs to no configured route).
  const reload = await p.server.reload();
  assert.equal(reload.ok, true);
  const after = await admin(p, "/metrics");
  assert.equal(
    value(after, 'prox_requests_total{route="(plain_http)",method="GET",status="308"}'),
    2,
  );
});

Deno.test("status: a target whose requests all time out shows that latency, not 0 ms", async () => {
  await using up = await startHeldUpstream("late");
  await using p = await startProxy(`
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    timeouts: { response_header: 200ms }
    retries: { attempts: 0 }
`);
  const res = await fetch(`${p.url}/x`);
  await res.body?.cancel();
  assert.equal(res.status, 504);
  up.release();
  const status = JSON.parse(await admin(p, "/status"));
  const target = status.upstreams.find((u: { url: string }) => u.url === up.url);
  assert.ok(target.latencyMs >= 150, `latencyMs ${target.latencyMs}`);
});

Deno.test("metrics, status and log: prox_ready is 0 while HTTPS waits for its first ACME certificate, 1 once serving", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("ok"));
    const yaml = acmeYaml({
      ca: `https://127.0.0.1:${freePort()}/dir`,
      storage: `${dir}/acme`,
      httpPort: freePort(),
      upstream: up.url,
      extra: `admin: { listen_addr: "127.0.0.1:0" }`,
    });
    const logger = memoryLogger();
    const server = await start(yaml, { clientRetries: 0 }, logger);
    try {
      // The start-up line does not present the challenge listener as where Prox serves.
      assert.ok(
        !logger.lines.some((l) => l.startsWith("info Prox listening")),
        logger.lines.join("\n"),
      );
      assert.ok(logger.lines.some((l) => l.startsWith("info Prox started; HTTPS waits")));
      const admin = `http://127.0.0.1:${server.admin!.port}`;
      const ready = await fetch(`${admin}/readyz`);
      await ready.body?.cancel();
      assert.equal(ready.status, 503);
      const text = await (await fetch(`${admin}/metrics`)).text();
      assert.equal(value(text, "prox_ready"), 0);
      // /status says why: ACME fails, with the CA's error and when it tries again.
      const acme = await waitFor(async () => {
        const s = await (await fetch(`${admin}/status`)).json();
        return s.acme?.state === "failing" ? s.acme : null;
      }, { what: "/status to show the failing ACME order" });
      assert.equal(acme.failures, 1);
      assert.match(acme.lastError, /ACME server/);
      assert.ok(acme.retryInMs > 0);
    } finally {
      await server.shutdown();
    }
  });
  await using p = await startProxy(`
admin: { listen_addr: "127.0.0.1:0" }
routes: { "/": { type: static, root: "${ROOT}/static" } }
`);
  const text = await admin(p, "/metrics");
  assert.equal(value(text, "prox_ready"), 1);
});

Deno.test("status: a target that stays down shows the latest probe failure, not the first", async () => {
  let code = 500;
  await using up = await startUpstream(() => new Response("no", { status: code }));
  await using p = await startProxy(`
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: true, interval_secs: 1, timeout_secs: 1, path: /health }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
  const target = async () => {
    const status = JSON.parse(await admin(p, "/status"));
    return status.upstreams.find((u: { url: string }) => u.url === up.url);
  };
  const first = await waitFor(async () => {
    const t = await target();
    return !t.healthy && t.reason.includes("status 500") ? t : null;
  }, { what: "the target down with status 500" });
  code = 503;
  const later = await waitFor(async () => {
    const t = await target();
    return t.reason.includes("status 503") ? t : null;
  }, { timeoutMs: 4_000, what: "the reason to follow the probes" });
  assert.equal(later.healthy, false);
  assert.equal(later.since, first.since);
  assert.match(later.reason, /^\d+ failed probe\(s\): status 503/);
});

Deno.test("metrics and status: with a Redis store no in-memory key count of 0 is reported", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  const deadPort = closedPort();
  await using p = await startProxy(`
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: false }
rate_limit_store: { type: redis, url: "redis://127.0.0.1:${deadPort}", timeout: 50ms }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 2, period: 1m }
`);
  const res = await fetch(`${p.url}/x`);
  await res.body?.cancel();
  assert.equal(res.status, 200);
  const text = await admin(p, "/metrics");
  assert.equal(value(text, 'prox_rate_limit_hits_total{route="/",action="error"}'), 1);
  assert.equal(value(text, 'prox_rate_limit_keys{route="/"}'), undefined);
  const status = JSON.parse(await admin(p, "/status"));
  assert.deepEqual(status.limiterKeys, {});
});
