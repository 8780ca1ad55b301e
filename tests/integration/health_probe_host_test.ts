// Active probes of a target behind name-based virtual hosts (nginx `server_name`): the probe's
// Host and headers come from `health_check.host` and `health_check.headers`.
import assert from "node:assert/strict";
import { interopTest, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { startNginx } from "./_nginx.ts";

/** nginx serving app.test (its /health wants X-Probe-Token) beside a default server that 404s. */
function virtualHosts() {
  return startNginx(
    `server_name app.test;
    location = /health {
      if ($http_x_probe_token != "s3cret") { return 403; }
      return 200 "ok";
    }
    location / { return 200 "app"; }`,
    { more: (port) => `server { listen 127.0.0.1:${port} default_server; return 404; }` },
  );
}

interopTest(
  "health_check: host and headers reach a name-based virtual host (top level)",
  ["nginx"],
  async () => {
    await using ngx = await virtualHosts();
    await using prox = await startProxy(`
health_check: { interval_secs: 60, host: app.test, headers: { X-Probe-Token: s3cret } }
routes:
  "/": { type: load_balance, targets: ["${ngx.url}"] }
`);
    const reg = prox.server.upstreams;
    const u = await waitFor(() => reg.list().find((u) => u.status !== "unknown"));
    assert.equal(u.status, "up", "nginx answered the probe for app.test");
  },
);

interopTest(
  "health_check: a route's host and headers decide its check; the default Host gets the 404",
  ["nginx"],
  async () => {
    await using ngx = await virtualHosts();
    await using prox = await startProxy(`
health_check: { interval_secs: 60, headers: { X-Probe-Token: s3cret } }
routes:
  "/named":
    type: load_balance
    targets: ["${ngx.url}"]
    health_check: { host: "app.test" }
  "/bare":
    type: load_balance
    targets: ["${ngx.url}"]
`);
    const reg = prox.server.upstreams;
    // Two checks of the one target, both decided: the bare route's (Host 127.0.0.1:port) hits
    // the default server and is down.
    const checks = reg.get(ngx.url).checks;
    await waitFor(() =>
      checks.size === 2 && [...checks.values()].every((c) => c.status !== "unknown")
    );
    assert.deepEqual([...checks.values()].map((c) => c.status).sort(), ["down", "up"]);
    const named = await fetch(`${prox.url}/named`);
    // Forwarded (nginx's default server answers the request itself with 404), not Prox's 503.
    assert.equal(named.status, 404);
    assert.equal(named.headers.get("server")?.startsWith("nginx"), true);
    await named.body?.cancel();
    const bare = await fetch(`${prox.url}/bare`);
    assert.equal(bare.status, 503);
    await bare.body?.cancel();
  },
);

Deno.test("health_check: headers replace the probe's own User-Agent, and reach the target as written", async () => {
  const seen: (string | null)[][] = [];
  await using up = await startUpstream((req) => {
    seen.push([req.headers.get("user-agent"), req.headers.get("x-probe"), req.headers.get("host")]);
    return new Response("ok");
  });
  await using prox = await startProxy(`
health_check: { interval_secs: 60, host: "app.test:8443", headers: { User-Agent: probe/1, X-Probe: "a b" } }
routes:
  "/": { type: proxy, target: "${up.url}" }
`);
  await waitFor(() => seen.length > 0);
  assert.deepEqual(seen[0], ["probe/1", "a b", "app.test:8443"]);
  void prox;
});
