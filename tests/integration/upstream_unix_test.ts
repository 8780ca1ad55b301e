// Upstreams on Unix domain sockets (`target: unix:/path/app.sock`): Deno.serve upstreams listening
// on a socket path, reached by proxy and load_balance routes over HTTP/1.1 (and h2c through a
// node:http2 server), with health checks, pooling and the errors of a socket nobody listens on.
import assert from "node:assert/strict";
import { interopTest, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { nodeServer } from "./_node.ts";
import { connectAndWaitClose, recordingLogger } from "./_ws.ts";
import { loadConfigText } from "../../src/config/load.ts";

/** A Deno.serve upstream on a fresh socket path; answers with what it received. */
function unixUpstream(dir: string, name: string) {
  const path = `${dir}/${name}.sock`;
  const server = Deno.serve({ path, onListen() {} }, async (req) => {
    const u = new URL(req.url);
    const body = await req.arrayBuffer();
    return Response.json({
      name,
      path: u.pathname,
      search: u.search,
      host: req.headers.get("host"),
      xff: req.headers.get("x-forwarded-for"),
      bytes: body.byteLength,
    });
  });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

Deno.test("unix targets: a proxy route reaches a Deno.serve upstream on a socket path", async () => {
  const dir = await Deno.makeTempDir();
  await using up = unixUpstream(dir, "app");
  await using prox = await startProxy(`
health_check: { enabled: false }
metrics: { on_main_listener: true }
routes:
  /api:
    type: proxy
    target: "unix:${up.path}"
  /kept:
    type: proxy
    target: "unix:${up.path}"
    preserve_host: true
  /gone:
    type: proxy
    target: "unix:${dir}/nobody.sock"
`);
  const res = await fetch(`${prox.url}/api/x/y?a=1&b=%20`, { method: "POST", body: "12345" });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    name: "app",
    path: "/x/y",
    search: "?a=1&b=%20",
    host: "localhost",
    xff: "127.0.0.1",
    bytes: 5,
  });
  // A body of 2 MiB streams through.
  const big = new Uint8Array(2 * 1024 * 1024).fill(7);
  const r2 = await fetch(`${prox.url}/api/big`, { method: "PUT", body: big });
  assert.equal((await r2.json()).bytes, big.byteLength);
  using client = Deno.createHttpClient({ allowHost: true });
  const kept = await fetch(`${prox.url}/kept`, { headers: { host: "shop.example" }, client });
  assert.equal((await kept.json()).host, "shop.example");
  // No listener at the path: 502 naming the socket, and the process goes on serving.
  const gone = await fetch(`${prox.url}/gone`);
  assert.equal(gone.status, 502);
  assert.match(
    gone.headers.get("proxy-status") ?? "",
    /connection_refused|destination_unavailable/,
  );
  await gone.body?.cancel();
  // Kept alive and pooled, and the pool's figures are the target's.
  const metrics = await (await fetch(`${prox.url}/metrics`)).text();
  const reused = new RegExp(
    `^prox_upstream_connections_reused_total\\{backend="unix:${up.path}"\\} (\\d+)`,
    "m",
  ).exec(metrics);
  assert.ok(reused && Number(reused[1]) >= 1, metrics.slice(0, 400));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("unix targets: a WebSocket upgrade on a proxy route reaches the upstream's socket", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ws.sock`;
  const logger = recordingLogger();
  const up = Deno.serve({ path, onListen() {} }, (req) => {
    const seen = `${new URL(req.url).pathname} ${req.headers.get("host")}`;
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(`${seen}: ${e.data}`);
    return response;
  });
  try {
    await using prox = await startProxy(
      `
health_check: { enabled: false }
routes:
  /chat: { type: proxy, target: "unix:${path}", path_rewrite: /ws }
  /gone: { type: proxy, target: "unix:${dir}/none.sock" }
`,
      { logger },
    );
    const ws = new WebSocket(`ws://127.0.0.1:${prox.port}/chat/room`);
    const answer = await new Promise<string>((resolve, reject) => {
      ws.onopen = () => ws.send("hi");
      ws.onmessage = (e) => resolve(e.data);
      ws.onerror = (e) => reject(new Error((e as ErrorEvent).message));
    });
    assert.equal(answer, "/ws/room localhost: hi");
    const closed = new Promise((r) => ws.onclose = r);
    ws.close();
    await closed;
    // No socket there: an unreachable upstream, as for a TCP one (1014), not a 500.
    assert.deepEqual(await connectAndWaitClose(`ws://127.0.0.1:${prox.port}/gone`), {
      code: 1014,
      reason: "Bad gateway",
    });
    const line = logger.records.find((r) => r.msg === "WebSocket upstream unreachable");
    assert.match(String(line?.error), /^Cannot connect to upstream "unix:.*\/none\.sock": /);
  } finally {
    await up.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("unix targets: load_balance over two sockets, health checks mark the dead one down", async () => {
  const dir = await Deno.makeTempDir();
  await using a = unixUpstream(dir, "a");
  await using b = unixUpstream(dir, "b");
  const dead = `unix:${dir}/dead.sock`;
  await using prox = await startProxy(`
health_check: { enabled: true, interval_secs: 1, timeout_secs: 1, path: /health }
routes:
  /:
    type: load_balance
    strategy: round_robin
    targets: ["unix:${a.path}", "unix:${b.path}", "${dead}"]
`);
  const status = (id: string) => prox.server.upstreams.list().find((u) => u.id === id)?.status;
  await waitFor(() => status(dead) === "down", { what: "dead socket down" });
  assert.equal(status(`unix:${a.path}`), "up");
  assert.equal(status(`unix:${b.path}`), "up");
  const names = [];
  for (let i = 0; i < 4; i++) names.push((await (await fetch(`${prox.url}/n`)).json()).name);
  assert.deepEqual(names.toSorted(), ["a", "a", "b", "b"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("unix targets: a socket path with a space, # and ? in it is the file named, in /status too", async () => {
  const dir = await Deno.makeTempDir();
  await using up = unixUpstream(dir, "a #b?c=%2F");
  await using prox = await startProxy(`
health_check: { enabled: true, interval_secs: 1, path: /health }
routes:
  /:
    type: proxy
    target: "unix:${up.path}"
`);
  const res = await fetch(`${prox.url}/x?q=1`);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    name: "a #b?c=%2F",
    path: "/x",
    search: "?q=1",
    host: "localhost",
    xff: "127.0.0.1",
    bytes: 0,
  });
  const status = (id: string) => prox.server.upstreams.list().find((u) => u.id === id)?.status;
  await waitFor(() => status(`unix:${up.path}`) === "up", { what: "probed up" });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("unix targets: a socket closed at once under proxy_protocol leaks no descriptor", async () => {
  // Writing the PROXY header failed (EPIPE) and the connection was left open: one descriptor
  // per attempt, until Prox could accept no more.
  const dir = await Deno.makeTempDir();
  const path = `${dir}/shut.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const accepting = (async () => {
    for await (const c of listener) c.close();
  })().catch(() => {});
  try {
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  /:
    type: proxy
    target: "unix:${path}"
    proxy_protocol: v1
`);
    using client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    const fds = () => [...Deno.readDirSync("/proc/self/fd")].length;
    const get = async () => {
      const res = await fetch(`${prox.url}/`, { client });
      await res.body?.cancel();
      return res.status;
    };
    assert.equal(await get(), 502);
    const before = fds();
    for (let i = 0; i < 10; i++) assert.equal(await get(), 502);
    assert.ok(fds() - before < 5, `${fds() - before} more descriptors after 10 requests`);
  } finally {
    listener.close();
    await accepting;
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest(
  "unix targets: upstream_protocol h2c over a socket (node:http2)",
  ["node"],
  async () => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/h2c.sock`;
    const script = `
    const http2 = require("node:http2");
    const server = http2.createServer((req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ version: req.httpVersion, authority: req.headers[":authority"] }));
    });
    server.listen(${JSON.stringify(path)}, () => console.log("up"));
  `;
    try {
      await using node = await nodeServer(script);
      assert.equal(node.line, "up");
      await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  /:
    type: proxy
    target: "unix:${path}"
    upstream_protocol: h2c
`);
      const res = await fetch(`${prox.url}/x`);
      assert.deepEqual(await res.json(), { version: "2.0", authority: "localhost" });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("validate: unix targets, the forms of nginx, Caddy and URIs, and a missing socket", () => {
  const issues = (target: string, exists = true) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"\nroutes:\n  /: { type: proxy, target: "${target}" }\n`,
      { file: "c.yaml", env: { exists: () => exists } },
    ).issues.map((i) => i.message);
  assert.deepEqual(issues("unix:/run/app.sock"), []);
  assert.deepEqual(issues("unix:./app.sock"), []);
  // A space is as good in a socket's path as in any other (macOS "Application Support").
  assert.deepEqual(issues("unix:/run/my app/app.sock"), []);
  assert.match(issues("unix:/run/a\\tb.sock").join(), /write unix: and the socket's path/);
  assert.deepEqual(issues("http://unix:/run/app.sock:/v1"), [
    'Invalid URL "http://unix:/run/app.sock:/v1": a Unix socket is written unix:/run/app.sock ' +
    "(a path for the upstream goes in path_rewrite: /v1)",
  ]);
  assert.match(issues("unix:///run/app.sock").join(), /is written unix:\/run\/app\.sock/);
  assert.match(issues("unix//run/app.sock").join(), /is written unix:\/run\/app\.sock/);
  // The kernel takes 107 bytes of path (sun_path): a longer one failed every request with a 502.
  const long = `/run/${"é".repeat(50)}.sock`;
  assert.deepEqual(issues(`unix:${long}`), [
    `Unix socket path ${long} is 110 bytes long: a Unix socket's path can be at most 107`,
  ]);
  assert.deepEqual(issues(`unix:/run/${"a".repeat(97)}.sock`), []);
  assert.deepEqual(issues("unix:/run/app.sock", false), [
    "No Unix socket at /run/app.sock yet: requests get 502 until the upstream listens there",
  ]);
});
