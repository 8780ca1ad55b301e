// Active and passive health checks through the real proxy, and how they follow config reloads,
// with real upstream servers that are killed (hard close) and restarted.
import assert from "node:assert/strict";
import { ROOT, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { silentLogger } from "../../src/ports.ts";
import { startServer } from "../../src/server.ts";
import { Backend, recordingLogger } from "./_backend.ts";
import { rawServer, readRequest, write } from "../_upstream_peers.ts";

Deno.test("health_check: method, per-target path, expected status and body match", async () => {
  const seen: string[] = [];
  await using up = new Backend("x").start();
  await using other = await startUpstream((req) => {
    seen.push(`${req.method} ${new URL(req.url).pathname}`);
    return new Response("state: degraded", { status: 299 });
  });
  await using prox = await startProxy(`
health_check: { interval_secs: 60, method: HEAD, expected_status: [200, "299"] }
backend_health_paths:
  "${other.url}": /custom
routes:
  "/a":
    type: proxy
    target: "${other.url}"
  "/b":
    type: proxy
    target: "${up.url}"
    health_check: { method: GET, body_match: "^ok$" }
  "/c":
    type: proxy
    target: "${other.url}/"
    health_check: { method: GET, body_match: "^ok$" }
`);
  const reg = prox.server.upstreams;
  const status = (id: string) => reg.list().find((u) => u.id === id)?.status;
  await waitFor(() => reg.list().length === 3 && reg.list().every((u) => u.status !== "unknown"));
  assert.deepEqual(seen.sort(), ["GET /health", "HEAD /custom"]);
  assert.equal(status(other.url), "up");
  assert.equal(status(up.url), "up");
  assert.equal(status(`${other.url}/`), "down", "body does not match");
});

Deno.test("health_check: routes checking one target differently each go by their own check", async () => {
  // a has /ready for one app only: /b's check of a fails, /a's passes, /c checks nothing.
  const probes = new Set<string>();
  const serve = (name: string) => (req: Request) => {
    const path = new URL(req.url).pathname;
    if (req.headers.get("user-agent") === "prox-health-check") {
      probes.add(`${name} ${path}`);
      const fails = name === "a" && path === "/ready";
      return new Response(fails ? "no" : "ok", { status: fails ? 404 : 200 });
    }
    return new Response(name);
  };
  await using a = await startUpstream(serve("a"));
  await using b = await startUpstream(serve("b"));
  const logger = recordingLogger();
  await using prox = await startProxy(
    `
health_check: { interval_secs: 60 }
routes:
  "/a":
    type: load_balance
    targets: ["${a.url}", "${b.url}"]
  "/b":
    type: load_balance
    targets: ["${a.url}", "${b.url}"]
    health_check: { path: /ready }
  "/c":
    type: load_balance
    targets: ["${a.url}", "${b.url}"]
    health_check: { enabled: false }
`,
    { logger },
  );
  const reg = prox.server.upstreams;
  await waitFor(() => reg.list().filter((u) => u.status !== "unknown").length === 2);
  assert.deepEqual([...probes].sort(), ["a /health", "a /ready", "b /health", "b /ready"]);
  const served = async (route: string) => {
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${prox.url}${route}/x`);
      assert.equal(res.status, 200);
      seen.add(await res.text());
    }
    return [...seen].sort();
  };
  assert.deepEqual(await served("/b"), ["b"], "a is down for /b");
  assert.deepEqual(await served("/a"), ["a", "b"], "and up for /a");
  assert.deepEqual(
    await served("/c"),
    ["a", "b"],
    "a route without checks is not gated by others'",
  );
  // The target as a whole (/status, metrics) is down while one of its checks is.
  assert.equal(reg.list().find((u) => u.id === a.url)?.status, "down");
  const down = logger.lines.filter((l) => l.msg === "Upstream marked down by health check");
  assert.equal(down.length, 1);
});

Deno.test("passive_health: connect failures eject a dead target for the cool-down, panic keeps the last", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  const logger = recordingLogger();
  const count = (msg: string) => logger.lines.filter((l) => l.msg === msg).length;
  await using prox = await startProxy(
    `
health_check: { enabled: false }
passive_health: { failures: 2, window: 10s, base_ejection: 2s, panic_threshold_percent: 50 }
routes:
  "/":
    type: load_balance
    targets: ["${a.url}", "${b.url}"]
`,
    { logger },
  );
  const reg = prox.server.upstreams;
  await b.kill();
  for (let i = 0; i < 20; i++) {
    const res = await fetch(`${prox.url}/p`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "a");
  }
  assert.equal(count("Upstream ejected"), 1);
  assert.ok(!reg.available(b.url));
  // a fails too: ejecting it would leave 0 of 2 (< 50%), so it stays in and requests get 502.
  await a.kill();
  for (let i = 0; i < 4; i++) {
    const res = await fetch(`${prox.url}/p`);
    await res.body?.cancel();
    assert.ok(res.status === 502 || res.status === 503, `status ${res.status}`);
  }
  assert.ok(count("Upstream failing but not ejected: panic threshold") >= 1);
  assert.ok(reg.available(a.url));
  // Cool-down over: b is tried again and serves.
  b.start();
  await waitFor(() => reg.available(b.url), { what: "ejection to end" });
  const res = await fetch(`${prox.url}/p`);
  assert.equal(await res.text(), "b");
  assert.equal(count("Upstream back in rotation: ejection ended"), 1);
});

Deno.test("passive_health: failing primaries are ejected while a backup is up, which then serves", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  await using spare = new Backend("spare").start();
  const logger = recordingLogger();
  const count = (msg: string) => logger.lines.filter((l) => l.msg === msg).length;
  await using prox = await startProxy(
    `
health_check: { enabled: false }
passive_health: { failures: 2 }
routes:
  "/":
    type: load_balance
    targets: ["${a.url}", "${b.url}", { url: "${spare.url}", backup: true }]
`,
    { logger },
  );
  const reg = prox.server.upstreams;
  await a.kill();
  await b.kill();
  // The panic rule counted the backup as one of three: one primary stayed in, got every first
  // attempt, and the retry budget let only a fifth of them reach the backup (the rest: 502).
  await waitFor(async () => {
    await (await fetch(`${prox.url}/p`)).body?.cancel();
    return !reg.available(a.url) && !reg.available(b.url);
  }, { what: "both primaries ejected" });
  assert.equal(count("Upstream ejected"), 2);
  for (let i = 0; i < 10; i++) {
    const res = await fetch(`${prox.url}/p`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "spare");
  }
});

Deno.test("health survives a config reload for targets that did not change", async () => {
  await using up = new Backend("r").start();
  up.healthStatus = 500;
  await using prox = await startProxy(`
health_check: { interval_secs: 60 }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    try_when_down: false
`);
  const reg = prox.server.upstreams;
  await waitFor(() => !reg.available(up.url), { what: "target down" });
  const probes = up.probes;
  const r = await prox.server.reload();
  assert.ok(r.ok);
  assert.equal(prox.server.snapshot().version, 2);
  assert.ok(!reg.available(up.url), "still down after reload");
  const res = await fetch(`${prox.url}/`);
  assert.equal(res.status, 503);
  await res.body?.cancel();
  assert.equal(up.probes, probes, "no re-probe needed");
});

/** Sends `n` sequential requests and counts answers per backend name. */
Deno.test("health_check: HTTPS targets are probed with the route's ca_cert", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  await using up = await startUpstream((req) => new Response(new URL(req.url).pathname), {
    cert: Deno.readTextFileSync(`${tls}/cert.pem`),
    key: Deno.readTextFileSync(`${tls}/key.pem`),
  });
  const other = up.url.replace("127.0.0.1", "localhost");
  await using prox = await startProxy(`
health_check: { interval_secs: 60 }
routes:
  "/trusted":
    type: proxy
    target: "${up.url}"
    tls: { ca_cert: "${tls}/ca.pem" }
  "/untrusted":
    type: proxy
    target: "${other}"
`);
  const reg = prox.server.upstreams;
  const status = (id: string) => reg.list().find((u) => u.id === id)?.status;
  const probed = (id: string) => status(id) === "up" || status(id) === "down";
  await waitFor(() => probed(up.url) && probed(other), { what: "first probes" });
  assert.equal(status(up.url), "up");
  assert.equal(status(other), "down", "unknown CA: the probe fails");
  const res = await fetch(`${prox.url}/trusted/x`);
  assert.equal(await res.text(), "/x");
});

Deno.test("reload: an added target is probed at once and joins; a removed one is forgotten", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  const dir = await Deno.makeTempDir({ prefix: "prox-balancer-" });
  const file = `${dir}/prox.yaml`;
  const config = (targets: string[]) => `
listen_addr: "127.0.0.1:0"
health_check: { interval_secs: 60 }
routes:
  "/":
    type: load_balance
    targets: ${JSON.stringify(targets)}
`;
  await Deno.writeTextFile(file, config([a.url]));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    const reg = server.upstreams;
    await waitFor(() => reg.list().some((u) => u.id === a.url && u.status === "up"));
    await Deno.writeTextFile(file, config([a.url, b.url]));
    assert.ok((await server.reload()).ok);
    // Probed long before the next 60 s round.
    await waitFor(() => reg.list().some((u) => u.id === b.url && u.status === "up"), {
      timeoutMs: 3_000,
      what: "b probed after reload",
    });
    assert.equal(b.probes, 1);
    const names = new Set<string>();
    for (let i = 0; i < 4; i++) {
      names.add(await (await fetch(`http://127.0.0.1:${server.port}/`)).text());
    }
    assert.deepEqual([...names].sort(), ["a", "b"]);
    await Deno.writeTextFile(file, config([b.url]));
    assert.ok((await server.reload()).ok);
    assert.deepEqual(reg.list().map((u) => u.id), [b.url]);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: a shorter interval applies to each target's next probe; a removed target's stops", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  const dir = await Deno.makeTempDir({ prefix: "prox-health-" });
  const file = `${dir}/prox.yaml`;
  const config = (interval: number, targets: string[]) => `
listen_addr: "127.0.0.1:0"
health_check: { interval_secs: ${interval}, timeout_secs: 1 }
routes:
  "/": { type: load_balance, targets: ${JSON.stringify(targets)} }
`;
  await Deno.writeTextFile(file, config(60, [a.url, b.url]));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    const reg = server.upstreams;
    await waitFor(() => reg.list().filter((u) => u.status === "up").length === 2);
    await Deno.writeTextFile(file, config(1, [a.url]));
    assert.ok((await server.reload()).ok);
    // Probed again about a second after its last probe, not 60 s after.
    await waitFor(() => a.probes >= 3, { timeoutMs: 4_000, what: "a probed each second" });
    assert.equal(b.probes, 1, "b's timer went with it");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: turning health checks off puts a target that was down back in rotation", async () => {
  await using up = new Backend("z").start();
  up.healthStatus = 500;
  const dir = await Deno.makeTempDir({ prefix: "prox-balancer-" });
  const file = `${dir}/prox.yaml`;
  const config = (enabled: boolean) => `
listen_addr: "127.0.0.1:0"
health_check: { enabled: ${enabled}, interval_secs: 60 }
routes:
  "/": { type: proxy, target: "${up.url}", try_when_down: false }
`;
  await Deno.writeTextFile(file, config(true));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    await waitFor(() => !server.upstreams.available(up.url), { what: "target down" });
    const before = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(before.status, 503);
    await before.body?.cancel();
    await Deno.writeTextFile(file, config(false));
    assert.ok((await server.reload()).ok);
    assert.ok(server.upstreams.available(up.url));
    const after = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(await after.text(), "z");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("health_check: probes connect as requests do (insecure_skip_verify, server_name)", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  const cert = {
    cert: Deno.readTextFileSync(`${tls}/cert.pem`),
    key: Deno.readTextFileSync(`${tls}/key.pem`),
  };
  await using self = await startUpstream(() => new Response("self"), cert);
  // The certificate does not name 127.0.0.2: only server_name makes it verify.
  await using named = await startUpstream(() => new Response("named"), {
    ...cert,
    hostname: "127.0.0.2",
  });
  await using prox = await startProxy(`
health_check: { interval_secs: 60 }
routes:
  "/self":
    type: proxy
    target: "${self.url}"
    tls: { insecure_skip_verify: true }
  "/named":
    type: proxy
    target: "${named.url}"
    tls: { ca_cert: "${tls}/ca.pem", server_name: example.com }
`);
  const reg = prox.server.upstreams;
  const status = (id: string) => reg.list().find((u) => u.id === id)?.status;
  const probed = (id: string) => status(id) === "up" || status(id) === "down";
  await waitFor(() => probed(self.url) && probed(named.url), { what: "first probes" });
  assert.equal(status(self.url), "up");
  assert.equal(status(named.url), "up");
  for (const [path, body] of [["/self", "self"], ["/named", "named"]]) {
    const res = await fetch(`${prox.url}${path}`);
    assert.equal(await res.text(), body);
  }
});

Deno.test("reload: a probe in flight for a target no longer checked is cancelled, its result dropped", async () => {
  let probes = 0;
  let cancelled = 0;
  const hangs = (req: Request) => {
    if (new URL(req.url).pathname !== "/health") return new Response("ok");
    probes++;
    return new Promise<Response>((resolve) =>
      req.signal.addEventListener("abort", () => {
        cancelled++;
        resolve(new Response("late"));
      })
    );
  };
  await using a = await startUpstream(hangs);
  await using b = await startUpstream(hangs);
  const dir = await Deno.makeTempDir({ prefix: "prox-health-" });
  const file = `${dir}/prox.yaml`;
  const config = (after: boolean) => `
listen_addr: "127.0.0.1:0"
health_check: { interval_secs: 60, timeout_secs: 1 }
routes:
  "/a": { type: proxy, target: "${a.url}", health_check: { enabled: ${!after} } }
${after ? "" : `  "/b": { type: proxy, target: "${b.url}" }`}
`;
  await Deno.writeTextFile(file, config(false));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    await waitFor(() => probes === 2, { what: "probes in flight" });
    await Deno.writeTextFile(file, config(true));
    assert.ok((await server.reload()).ok);
    // Cancelled at the reload (not failed by their 1 s timeout later).
    await waitFor(() => cancelled === 2, { timeoutMs: 3000, what: "probes cancelled" });
    const res = await fetch(`http://127.0.0.1:${server.port}/a`);
    assert.equal(res.status, 200, "a late failed probe marked down a target nobody probes");
    await res.body?.cancel();
    assert.deepEqual(server.upstreams.list().map((u) => u.id), [a.url]);
    assert.ok(server.upstreams.available(a.url));
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: a request in flight to a removed target does not bring back its health series", async () => {
  const hung: (() => void)[] = [];
  await using gone = await startUpstream(async () => {
    await new Promise<void>((r) => hung.push(r));
    return new Response("bad", { status: 502 });
  });
  await using kept = await startUpstream(() => new Response("kept"));
  const dir = await Deno.makeTempDir({ prefix: "prox-health-" });
  const file = `${dir}/prox.yaml`;
  const config = (targets: string[]) => `
listen_addr: "127.0.0.1:0"
metrics: { on_main_listener: true }
health_check: { enabled: false }
passive_health: { failures: 1, statuses: [502], panic_threshold_percent: 0 }
routes:
  "/":
    type: load_balance
    strategy: first
    targets: ${JSON.stringify(targets)}
    retries: { attempts: 0 }
`;
  await Deno.writeTextFile(file, config([gone.url, kept.url]));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    const pending = fetch(`http://127.0.0.1:${server.port}/`);
    await waitFor(() => hung.length === 1, { what: "request in flight" });
    await Deno.writeTextFile(file, config([kept.url]));
    assert.ok((await server.reload()).ok);
    hung[0]();
    const res = await pending;
    assert.equal(res.status, 502);
    await res.body?.cancel();
    assert.deepEqual(server.upstreams.list().map((u) => u.id), [kept.url]);
    const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    const series = metrics.split("\n").filter((l) =>
      /^prox_backend_(health_status|in_flight_requests|ejections_total)\{/.test(l)
    );
    assert.deepEqual(series.filter((l) => l.includes(gone.url)), [], "a removed backend's series");
    assert.match(metrics, new RegExp(`prox_backend_health_status\\{backend="${kept.url}"\\} 1`));
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("health_check: a probe slower than the interval is not overlapped, even after a reload", async () => {
  let open = 0;
  let most = 0;
  let probes = 0;
  let aborted = 0;
  await using up = await startUpstream((req) => {
    if (new URL(req.url).pathname !== "/health") return new Response("ok");
    probes++;
    most = Math.max(most, ++open);
    return new Promise<Response>((resolve) =>
      req.signal.addEventListener("abort", () => {
        open--;
        aborted++;
        resolve(new Response("late"));
      })
    );
  });
  const dir = await Deno.makeTempDir({ prefix: "prox-health-" });
  const file = `${dir}/prox.yaml`;
  const config = (key: string) => `
listen_addr: "127.0.0.1:0"
health_check: { interval_secs: 1, timeout_secs: 2 }
routes:
  "/${key}": { type: proxy, target: "${up.url}" }
`;
  await Deno.writeTextFile(file, config("a"));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    await waitFor(() => probes === 1, { what: "first probe" });
    // A reload while the probe hangs must not start another round beside it.
    await Deno.writeTextFile(file, config("b"));
    assert.ok((await server.reload()).ok);
    await waitFor(() => probes === 2, { what: "second probe" });
    assert.equal(aborted, 1, "the second probe started after the first timed out");
    assert.equal(most, 1);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("health_check: the logged reason says what failed, not always a connect failure", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of listener) {
      await conn.read(new Uint8Array(4096));
      await conn.write(new TextEncoder().encode("HELLO\r\n\r\n")).catch(() => {});
      conn.close();
    }
  })();
  const reasons: unknown[] = [];
  const logger = {
    ...silentLogger,
    warn: (_m: string, f?: Record<string, unknown>) => void reasons.push(f?.reason),
  };
  const url = `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  try {
    await using _prox = await startProxy(
      `
health_check: { interval_secs: 60 }
routes:
  "/": { type: proxy, target: "${url}" }
`,
      { logger },
    );
    await waitFor(() => reasons.length > 0, { what: "target marked down" });
    assert.match(String(reasons[0]), /status line/);
    assert.doesNotMatch(String(reasons[0]), /Cannot connect/);
  } finally {
    listener.close();
    await serving.catch(() => {});
  }
});

Deno.test("reload: turning passive health off ends the ejections it made", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  const dir = await Deno.makeTempDir({ prefix: "prox-health-" });
  const file = `${dir}/prox.yaml`;
  const config = (enabled: boolean) => `
listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
passive_health: { enabled: ${enabled}, failures: 1, base_ejection: 5m, panic_threshold_percent: 0 }
routes:
  "/": { type: load_balance, strategy: first, targets: ["${a.url}", "${b.url}"] }
`;
  await Deno.writeTextFile(file, config(true));
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    await a.kill();
    const res = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(await res.text(), "b");
    assert.ok(!server.upstreams.available(a.url), "ejected");
    a.start();
    await Deno.writeTextFile(file, config(false));
    assert.ok((await server.reload()).ok);
    assert.ok(server.upstreams.available(a.url), "back at once, not in 5 minutes");
    const after = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(await after.text(), "a");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("start-up: a server that cannot listen leaves no health checker probing", async () => {
  let probes = 0;
  await using up = await startUpstream(() => {
    probes++;
    return new Response("ok");
  });
  using busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await assert.rejects(
    startProxy(
      `
listen_addr: "127.0.0.1:${busy.addr.port}"
health_check: { interval_secs: 1 }
routes:
  "/": { type: proxy, target: "${up.url}" }
`,
      { keepListen: true },
    ),
    /Address already in use/,
  );
  // A server that does start probes once; a prober left behind by the failed one would have
  // probed first (it started earlier).
  await using prox = await startProxy(`
health_check: { interval_secs: 60 }
routes:
  "/": { type: proxy, target: "${up.url}" }
`);
  await waitFor(() => prox.server.upstreams.list()[0]?.status === "up", { what: "probed up" });
  assert.equal(probes, 1);
});

Deno.test("health_check: rounds start an interval apart, a hung target does not stretch them", async () => {
  const fast: number[] = [];
  await using quick = await startUpstream(() => {
    fast.push(performance.now());
    return new Response("ok");
  });
  await using hung = await startUpstream((req) =>
    new Promise<Response>((resolve) =>
      req.signal.addEventListener("abort", () => resolve(new Response("late")))
    )
  );
  await using _prox = await startProxy(`
health_check: { interval_secs: 2, timeout_secs: 1 }
routes:
  "/a": { type: proxy, target: "${quick.url}" }
  "/b": { type: proxy, target: "${hung.url}" }
`);
  await waitFor(() => fast.length >= 2, { timeoutMs: 5_000, what: "second round" });
  const gap = fast[1] - fast[0];
  // 1.8-2 s; it was the 1 s timeout of the hung probe plus the interval.
  assert.ok(gap > 1_700 && gap < 2_400, `rounds ${Math.round(gap)} ms apart`);
});

Deno.test("health_check: each target is probed on its own interval, a hung one delays no other", async () => {
  // A probe that hangs until its timeout (longer than the interval here, as with
  // `interval_secs: 0`, which probes every second with the default 2 s timeout) held back every
  // other target's next probe, and so the finding that it went down, until it timed out.
  const quickProbes: number[] = [];
  let healthy = true;
  await using quick = await startUpstream(() => {
    quickProbes.push(performance.now());
    return new Response(healthy ? "ok" : "down", { status: healthy ? 200 : 503 });
  });
  let hungProbes = 0;
  await using hung = await startUpstream((req) => {
    hungProbes++;
    return new Promise<Response>((resolve) =>
      req.signal.addEventListener("abort", () => resolve(new Response("late")))
    );
  });
  await using prox = await startProxy(`
health_check: { interval_secs: 1, timeout_secs: 10, unhealthy_threshold: 1, healthy_threshold: 1 }
routes:
  "/a": { type: proxy, target: "${quick.url}" }
  "/b": { type: proxy, target: "${hung.url}" }
`);
  const status = (id: string) => prox.server.upstreams.list().find((u) => u.id === id)?.status;
  // The fault this guards against shows as gaps of the hung probe's 10 s timeout: a loaded
  // machine's late timers stay far below that.
  await waitFor(() => quickProbes.length >= 3, { timeoutMs: 6_000, what: "three probes of quick" });
  const gaps = quickProbes.slice(1).map((t, i) => Math.round(t - quickProbes[i]));
  assert.ok(gaps.every((g) => g < 3_000), `quick probed about a second apart: ${gaps}`);
  assert.equal(hungProbes, 1, "hung still has its one probe in flight, no second beside it");
  healthy = false;
  const since = performance.now();
  await waitFor(() => status(quick.url) === "down", { timeoutMs: 5_000, what: "quick down" });
  assert.ok(performance.now() - since < 3_000, "found down within about its own interval");
});

Deno.test("health_check: a target's fragment is not part of the probe path", async () => {
  const seen: string[] = [];
  await using up = await startUpstream((req) => {
    const u = new URL(req.url);
    if (u.pathname.endsWith("/health")) seen.push(u.pathname + u.search);
    return new Response("ok");
  });
  // (A target with a query is a config error.)
  await using prox = await startProxy(`
health_check: { interval_secs: 60 }
routes:
  "/b": { type: proxy, target: "${up.url}/base" }
  "/f": { type: proxy, target: "${up.url}/other#frag" }
`);
  await waitFor(() => seen.length === 2, { timeoutMs: 3_000, what: "probes" });
  assert.deepEqual(seen.sort(), ["/base/health", "/other/health"]);
  const res = await fetch(`${prox.url}/f`);
  assert.equal(res.status, 200);
  await res.body?.cancel();
});

Deno.test("passive_health: a target that hangs past timeouts.total counts as failing and is ejected", async () => {
  await using hung = await startUpstream((req) =>
    new Promise<Response>((resolve) =>
      req.signal.addEventListener("abort", () => resolve(new Response("late")))
    )
  );
  await using ok = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(`
health_check: { enabled: false }
passive_health: { failures: 2 }
routes:
  "/":
    type: load_balance
    strategy: first
    targets: ["${hung.url}", "${ok.url}"]
    timeouts: { total: 200ms }
`);
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${prox.url}/`);
    assert.equal(res.status, 504);
    await res.body?.cancel();
  }
  assert.ok(!prox.server.upstreams.available(hung.url), "ejected after two timeouts");
  const res = await fetch(`${prox.url}/`);
  assert.equal(await res.text(), "ok");
});

Deno.test("passive_health: timeouts.total cut short by a slow upload does not charge the target", async () => {
  await using up = await startUpstream(async (req) => {
    await req.body?.pipeTo(new WritableStream()).catch(() => {});
    return new Response("read");
  });
  await using other = await startUpstream(() => new Response("other"));
  await using prox = await startProxy(`
health_check: { enabled: false }
passive_health: { failures: 1, panic_threshold_percent: 0 }
routes:
  "/":
    type: load_balance
    strategy: first
    targets: ["${up.url}", "${other.url}"]
    timeouts: { total: 300ms }
`);
  let stop = () => {};
  const stalled = new Promise<void>((r) => stop = r);
  const body = new ReadableStream<Uint8Array>({
    async start(c) {
      c.enqueue(new Uint8Array(128 * 1024));
      await stalled;
      c.close();
    },
  });
  const res = await fetch(
    `${prox.url}/upload`,
    { method: "POST", body, duplex: "half" } as RequestInit,
  );
  await res.body?.cancel();
  stop();
  assert.ok(res.status === 504 || res.status === 408, `status ${res.status}`);
  assert.ok(prox.server.upstreams.available(up.url), "the client was slow, not the target");
});

Deno.test("passive_health: a stalled upload is the client's and spares the target; a per-try timeout after the upload does not", async () => {
  await using reads = await startUpstream(async (req) => {
    await req.body?.pipeTo(new WritableStream()).catch(() => {});
    return new Response("read");
  });
  // Reads the whole request, never answers, closes when Prox does.
  const hangs = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const hangsUrl = `http://127.0.0.1:${hangs.addr.port}`;
  const served = (async () => {
    for await (const conn of hangs) {
      const buf = new Uint8Array(65536);
      while ((await conn.read(buf).catch(() => null)) !== null) { /* swallow */ }
      conn.close();
    }
  })().catch(() => {});
  await using other = await startUpstream(() => new Response("other"));
  // The per-try timeout runs from the end of the upload; a pause in the upload is timeouts.idle's.
  const route = (target: string) =>
    `{ type: load_balance, strategy: first, targets: ["${target}", "${other.url}"], ` +
    `retries: { per_try_timeout: 300ms }, timeouts: { idle: 1s } }`;
  await using prox = await startProxy(`
health_check: { enabled: false }
passive_health: { failures: 1, panic_threshold_percent: 0 }
routes:
  "/slow": ${route(reads.url)}
  "/hung": ${route(hangsUrl)}
`);
  const upload = async (path: string, stall: boolean) => {
    let stop = () => {};
    const stalled = new Promise<void>((r) => stop = r);
    const body = new ReadableStream<Uint8Array>({
      async start(c) {
        c.enqueue(new Uint8Array(128 * 1024));
        if (stall) await stalled;
        c.close();
      },
    });
    const init = { method: "POST", body, duplex: "half" } as RequestInit;
    const res = await fetch(`${prox.url}${path}`, init);
    await res.body?.cancel();
    stop();
    return res.status;
  };
  assert.equal(await upload("/slow", true), 408);
  assert.ok(prox.server.upstreams.available(reads.url), "the client was slow, not the target");
  assert.equal(await upload("/hung", false), 504);
  assert.ok(!prox.server.upstreams.available(hangsUrl), "all sent, no answer: ejected");
  await prox[Symbol.asyncDispose]();
  hangs.close();
  await served;
});

Deno.test("health_check zeros of a Rust Prox config: thresholds act as 1, interval 0 probes each second", async () => {
  let healthy = true;
  const probes: number[] = [];
  await using up = await startUpstream((req) => {
    if (new URL(req.url).pathname !== "/health") return new Response("app");
    probes.push(Date.now());
    return new Response(healthy ? "ok" : "down", { status: healthy ? 200 : 503 });
  });
  await using prox = await startProxy(`
health_check: { interval_secs: 0, timeout_secs: 1, unhealthy_threshold: 0, healthy_threshold: 0 }
routes:
  "/": { type: proxy, target: "${up.url}" }
`);
  const status = () => prox.server.upstreams.list().find((u) => u.id === up.url)?.status;
  await waitFor(() => status() === "up");
  const before = probes.length;
  healthy = false;
  await waitFor(() => status() === "down", { what: "one failed probe marks it down" });
  assert.equal(probes.length, before + 1, "a threshold of 0 acts as 1");
  healthy = true;
  await waitFor(() => status() === "up", { what: "one good probe brings it back" });
  const gaps = probes.slice(1).map((t, i) => t - probes[i]);
  // About a second apart (arrival times jitter by tens of ms: one came 896 ms after the last),
  // where probing without a pause would put them milliseconds apart.
  assert.ok(gaps.every((g) => g >= 500), `probes about a second apart, not without pause: ${gaps}`);
  const res = await fetch(`${prox.url}/x`);
  assert.equal(await res.text(), "app");
});

Deno.test("health_check: a probe whose body does not arrive in time, or fails, is a failed probe", async () => {
  // The status came first (200 expected), then the body_match read failed: the probe counted as
  // passed, so a target that hung or died mid-answer stayed up.
  await using hangs = await startUpstream(() =>
    new Response(
      new ReadableStream({
        start: (c) => c.enqueue(new TextEncoder().encode("o")),
      }),
    )
  );
  // Closes the connection 1 byte into a 2-byte body.
  await using dies = rawServer(async (c) => {
    if (await readRequest(c) !== null) {
      await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\no");
    }
  });
  await using prox = await startProxy(`
health_check: { interval_secs: 60, timeout_secs: 1, body_match: "^ok$" }
routes:
  "/a": { type: proxy, target: "${hangs.url}" }
  "/b": { type: proxy, target: "${dies.url}" }
`);
  const status = (id: string) => prox.server.upstreams.list().find((u) => u.id === id)?.status;
  const probed = (id: string) => status(id) === "up" || status(id) === "down";
  await waitFor(() => probed(hangs.url) && probed(dies.url), { what: "the first probes' results" });
  assert.equal(status(hangs.url), "down", "no body within timeout_secs");
  assert.equal(status(dies.url), "down", "the body failed");
});

Deno.test("health_check: a 200 whose body never ends (or is cut short) fails the probe, body_match or not", async () => {
  // The status alone decided: a target that flushed its head and then hung (a deadlocked handler)
  // or died mid-body was up, and took requests that hung as its probe did.
  await using hangs = await startUpstream(() =>
    new Response(
      new ReadableStream({
        start: (c) => c.enqueue(new TextEncoder().encode("o")),
      }),
    )
  );
  await using dies = rawServer(async (c) => {
    if (await readRequest(c) !== null) {
      await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\no");
    }
  });
  // A body that ends, and a long one that flows: both pass.
  await using ok = await startUpstream(() => new Response("ok"));
  await using long = await startUpstream(() => new Response("x".repeat(1 << 20)));
  await using prox = await startProxy(`
health_check: { interval_secs: 60, timeout_secs: 1 }
routes:
  "/a": { type: proxy, target: "${hangs.url}" }
  "/b": { type: proxy, target: "${dies.url}" }
  "/c": { type: proxy, target: "${ok.url}" }
  "/d": { type: proxy, target: "${long.url}" }
`);
  const status = (id: string) => prox.server.upstreams.list().find((u) => u.id === id)?.status;
  const all = [hangs.url, dies.url, ok.url, long.url];
  await waitFor(() => all.every((id) => status(id) === "up" || status(id) === "down"), {
    what: "the first probes' results",
  });
  assert.deepEqual(all.map(status), ["down", "down", "up", "up"]);
});
