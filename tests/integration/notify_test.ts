// `notify`: a real webhook receiver gets a target's going down and coming back (from real health
// checks), a refused and an applied reload, with the configured headers; a receiver that fails
// once gets the event on the retry; `events` filters; a passive ejection is down until it ends.
import assert from "node:assert/strict";
import { freePort, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import type { ProxServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import { withTempDir } from "./_acme.ts";
import { createNotifier, notifyingMetrics } from "../../src/adapters/notify.ts";
import { noopMetrics } from "../../src/ports.ts";

/** A webhook receiver keeping every JSON body and its Authorization; `fail` answers 500 first. */
function receiver(o: { failFirst?: number } = {}) {
  const got: { body: Record<string, unknown>; auth: string | null }[] = [];
  let failures = o.failFirst ?? 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const body = await req.json();
    if (failures > 0) {
      failures--;
      return new Response("busy", { status: 500 });
    }
    got.push({ body, auth: req.headers.get("authorization") });
    return new Response(null, { status: 204 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/hook`,
    got,
    events: () => got.map((g) => g.body.event),
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

Deno.test("notify: a target down and up again, reloads refused and applied, reach the webhook", async () => {
  await using hook = receiver();
  const port = freePort(); // nothing listens there yet: the target starts down
  await withTempDir(async (dir) => {
    const file = `${dir}/prox.yaml`;
    const yaml = (extra = "") =>
      `listen_addr: "127.0.0.1:0"
health_check: { interval_secs: 1, timeout_secs: 1, unhealthy_threshold: 1, healthy_threshold: 1 }
notify:
  webhook: "${hook.url}"
  headers: { Authorization: "Bearer t0k" }
routes:
  /: { type: proxy, target: "http://127.0.0.1:${port}" }
${extra}`;
    await Deno.writeTextFile(file, yaml());
    const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
    try {
      await waitFor(() => hook.events().includes("backend_down"), { what: "backend_down" });
      const down = hook.got.find((g) => g.body.event === "backend_down")!;
      assert.equal(down.auth, "Bearer t0k");
      assert.equal(down.body.backend, `http://127.0.0.1:${port}`);
      assert.match(String(down.body.text), /^prox \S+: upstream http:\/\/127\.0\.0\.1:\d+ is down/);
      await using _up = await startUpstreamOn(port);
      await waitFor(() => hook.events().includes("backend_up"), { what: "backend_up" });
      // A reload refused, then one applied.
      await Deno.writeTextFile(file, yaml("  /x: { type: nonsense }\n"));
      assert.equal((await server.reload()).ok, false);
      await Deno.writeTextFile(file, yaml("  /y: { type: static, root: . }\n"));
      assert.equal((await server.reload()).ok, true);
      await waitFor(() => hook.events().includes("reload"), { what: "reload" });
      const events = hook.events();
      assert.ok(
        events.indexOf("reload_failed") >= 0 &&
          events.indexOf("reload_failed") < events.indexOf("reload"),
      );
      // Start-up is no reload, and an up target at start is no news.
      assert.equal(events.filter((e) => e === "reload").length, 1);
      assert.equal(events.filter((e) => e === "backend_up").length, 1);
    } finally {
      await server.shutdown();
    }
  });
});

/** An upstream on a given port (the one the config named before it listened). */
function startUpstreamOn(port: number) {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen() {} },
    () => new Response("ok"),
  );
  return Promise.resolve({
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  });
}

Deno.test("notify: one retry after a failed delivery; events filters; a full queue drops", async () => {
  await using hook = receiver({ failFirst: 1 });
  let config = { webhook: hook.url, timeout: 2000, events: ["backend_down" as const] };
  const n = createNotifier({ config: () => config, logger: silentLogger, instance: "t" });
  n.send("backend_up", "ignored", {});
  n.send("backend_down", "a is down", { backend: "a" });
  await n.settled();
  assert.deepEqual(hook.events(), ["backend_down"]);
  assert.equal(hook.got[0].body.text, "prox t: a is down");
  // Unfiltered: every event; more than the queue holds at once are dropped, and the next one
  // sent says how many.
  config = { webhook: hook.url, timeout: 2000, events: undefined as never };
  for (let i = 0; i < 150; i++) n.send("reload", `r${i}`, {});
  await n.settled();
  const reloads = hook.got.filter((g) => g.body.event === "reload");
  assert.ok(reloads.length <= 101 && reloads.length >= 100, String(reloads.length));
  assert.ok(reloads.some((g) => Number(g.body.droppedBefore) > 0));
  n.close();
});

Deno.test("notify: a webhook that never answers is let go at shutdown, and not tried again", async () => {
  let requests = 0;
  let aborted = false;
  const hook = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    requests++;
    // Holds the delivery open until Prox gives up on it.
    return new Promise<Response>((resolve) => {
      req.signal.addEventListener("abort", () => {
        aborted = true;
        resolve(new Response(null, { status: 204 }));
      });
    });
  });
  try {
    await withTempDir(async (dir) => {
      const file = `${dir}/prox.yaml`;
      const yaml = (extra = "") =>
        `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
notify: { webhook: "http://127.0.0.1:${hook.addr.port}/hook", timeout: 60s }
routes:
  /: { type: static, root: . }
${extra}`;
      await Deno.writeTextFile(file, yaml());
      const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
      await Deno.writeTextFile(file, yaml("  /x: { type: nonsense }\n"));
      assert.equal((await server.reload()).ok, false);
      await waitFor(() => requests === 1, { what: "the delivery under way" });
      const t0 = Date.now();
      await server.shutdown();
      assert.ok(Date.now() - t0 < 5_000, `shutdown took ${Date.now() - t0} ms`);
      // The delivery is cancelled, not left to its 60 s timeout (and then a retry).
      await waitFor(() => aborted, { what: "the delivery cancelled", timeoutMs: 3_000 });
      assert.equal(requests, 1);
    });
  } finally {
    await hook.shutdown();
  }
});

Deno.test("notify: certificate_changed for each certificate replaced (tls.sni too), not for one removed", async () => {
  await using hook = receiver();
  const n = createNotifier({
    config: () => ({ webhook: hook.url, timeout: 2000 }),
    logger: silentLogger,
    instance: "t",
  });
  const m = notifyingMetrics(noopMetrics, n);
  const day = 86_400_000;
  m.certificateExpiry("main.pem", 10 * day, [{ name: "b.pem", notAfterMs: 20 * day }]);
  m.certificateExpiry("main.pem", 10 * day, [{ name: "b.pem", notAfterMs: 20 * day }]);
  // b.pem's file replaced by a renewed one: that is news; main.pem unchanged is not.
  m.certificateExpiry("main.pem", 10 * day, [{ name: "b.pem", notAfterMs: 50 * day }]);
  // TLS turned off by a reload: no certificate is served, none "now served".
  m.certificateExpiry("main", null, []);
  await n.settled();
  assert.deepEqual(hook.got.map((g) => [g.body.event, g.body.name]), [
    ["certificate_changed", "b.pem"],
  ]);
  n.close();
});

Deno.test("notify: an invalid webhook URL is located, not echoed (it may carry a credential)", async () => {
  const { loadConfigText } = await import("../../src/config/load.ts");
  const secret = "htps://hooks.example/T0/B0/s3cr3t";
  const issues = loadConfigText(
    `listen_addr: "127.0.0.1:1"\nnotify: { webhook: "${secret}" }\nroutes:\n  /: { type: static, root: . }\n`,
    { file: "c.yaml", env: { exists: () => true } },
  ).issues.map((i) => `${i.line}:${i.col} ${i.message}`);
  assert.equal(issues.length, 1);
  assert.match(issues[0], /^2:\d+ Invalid webhook URL/);
  assert.doesNotMatch(issues[0], /s3cr3t/);
});

/**
 * Runs `fn` against a Prox (from a file) that notifies `hook`, with one proxy route to an upstream
 * answering 503 where `fails(path)` says (which ejects it: one failure is enough) and 200
 * elsewhere; `health` is the config's health_check line, `ejection` the base ejection.
 */
async function withPassiveProx(
  hook: { url: string },
  o: { health: string; ejection: string; fails: (path: string) => boolean },
  fn: (server: ProxServer, target: string) => Promise<void>,
): Promise<void> {
  const up = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response("x", { status: o.fails(new URL(req.url).pathname) ? 503 : 200 }),
  );
  const target = `http://127.0.0.1:${up.addr.port}`;
  try {
    await withTempDir(async (dir) => {
      const file = `${dir}/prox.yaml`;
      await Deno.writeTextFile(
        file,
        `listen_addr: "127.0.0.1:0"
health_check: ${o.health}
passive_health: { failures: 1, statuses: [503], base_ejection: ${o.ejection}, panic_threshold_percent: 0 }
notify: { webhook: "${hook.url}" }
routes:
  /: { type: proxy, target: "${target}" }
`,
      );
      const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
      try {
        await fn(server, target);
      } finally {
        await server.shutdown();
      }
    });
  } finally {
    await up.shutdown();
  }
}

Deno.test("notify: a passive ejection of a target health checks call up is down, then up once when it ends", async () => {
  await using hook = receiver();
  // Health probes (any path but /fail) pass; requests to /fail get 503, which ejects.
  await withPassiveProx(hook, {
    health: "{ interval_secs: 1, timeout_secs: 1, unhealthy_threshold: 1, healthy_threshold: 1 }",
    ejection: "2s",
    fails: (path) => path === "/fail",
  }, async (server, target) => {
    const url = `http://127.0.0.1:${server.port}`;
    // A probe has passed (the target is known up) before the ejection.
    await waitFor(() => server.upstreams.list().some((u) => u.status === "up"), {
      what: "target up",
    });
    const res = await fetch(`${url}/fail`);
    await res.body?.cancel();
    await waitFor(() => hook.events().includes("backend_down"), { what: "backend_down" });
    const down = hook.got.find((g) => g.body.event === "backend_down")!;
    assert.equal(down.body.backend, target);
    assert.match(String(down.body.reason), /ejected/);
    // Probes keep passing during the ejection: no backend_up until it ends.
    await waitFor(() => hook.events().includes("backend_up"), { what: "backend_up" });
    const events = hook.events();
    assert.deepEqual(events.filter((e) => e !== "reload"), ["backend_down", "backend_up"]);
    const back = hook.got.find((g) => g.body.event === "backend_up")!;
    assert.ok(
      Date.parse(String(back.body.time)) - Date.parse(String(down.body.time)) >= 1500,
      "backend_up came before the ejection ended",
    );
  });
});

Deno.test("notify: with health checks off, an ejection's end is told when it ends, with no request after it", async () => {
  await using hook = receiver();
  await withPassiveProx(hook, {
    health: "{ enabled: false }",
    ejection: "1s",
    fails: () => true,
  }, async (server) => {
    const res = await fetch(`http://127.0.0.1:${server.port}/`);
    await res.body?.cancel();
    await waitFor(() => hook.events().includes("backend_down"), { what: "backend_down" });
    // No request after the ejection: its end is seen by the once-a-second look all the same.
    await waitFor(() => hook.events().includes("backend_up"), { what: "backend_up" });
    const [down, back] = ["backend_down", "backend_up"].map((e) =>
      hook.got.find((g) => g.body.event === e)!
    );
    assert.match(String(back.body.reason), /ejection ended/);
    assert.ok(Date.parse(String(back.body.time)) - Date.parse(String(down.body.time)) >= 900);
  });
});
