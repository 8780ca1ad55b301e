// `tcp` listeners across reloads and shutdown, in metrics and /status, and as the CLI sees them
// (`prox validate`, `prox serve` with workers).

import assert from "node:assert/strict";
import { startServer } from "../../src/server.ts";
import { recordingLogger } from "./_ws.ts";
import {
  accessRecords,
  blackhole,
  dec,
  enc,
  exchange,
  nthAccess,
  rawUpstream,
  readAll,
  writeAll,
} from "./_tcp.ts";
import { freePort, ROOT, run, waitFor } from "../_harness.ts";
import { spawnProx } from "./_process.ts";

const head = (extra = "") =>
  `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
shutdown_timeout: 400ms
${extra}
routes:
  "/": { type: proxy, target: "http://127.0.0.1:9" }
`;

/** One byte out, one byte back: the relay is up. */
async function ping(conn: Deno.Conn): Promise<void> {
  await writeAll(conn, enc.encode("p"));
  assert.equal(await conn.read(new Uint8Array(1)), 1);
}

async function refused(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return false;
  } catch (err) {
    return err instanceof Deno.errors.ConnectionRefused;
  }
}

Deno.test("tcp reload: a changed entry keeps its listener, a removed one stops and its connections are cut after shutdown_timeout", async () => {
  await using up1 = rawUpstream({ stream: true });
  await using up2 = rawUpstream({ reply: () => enc.encode("two") });
  const dir = await Deno.makeTempDir({ prefix: "prox-tcp-" });
  const file = `${dir}/config.yaml`;
  const entry = (name: string, target: string) =>
    `  ${name}:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${target}"]\n`;
  await Deno.writeTextFile(file, `${head()}tcp:\n${entry("a", up1.addr)}${entry("b", up1.addr)}`);
  const logger = recordingLogger();
  const server = await startServer({ path: file }, { logger, watch: false });
  try {
    const aPort = server.tcpAddr("a")!.port;
    const bPort = server.tcpAddr("b")!.port;
    const held = await Deno.connect({ hostname: "127.0.0.1", port: bPort });
    await ping(held);
    await Deno.writeTextFile(file, `${head()}tcp:\n${entry("a", up2.addr)}${entry("c", up2.addr)}`);
    const r = await server.reload({ trigger: "test" });
    assert.equal(r.ok, true, JSON.stringify(r.issues));
    // a: same listener, the new target.
    assert.equal(server.tcpAddr("a")!.port, aPort);
    assert.equal(await exchange(aPort, "x"), "two");
    // c: a new listener; b: gone, but its open connection still relays...
    assert.equal(await exchange(server.tcpAddr("c")!.port, "x"), "two");
    assert.equal(server.tcpAddr("b"), undefined);
    assert.ok(await refused(bPort), "b's listener is closed");
    const t0 = performance.now();
    await ping(held);
    // ...until shutdown_timeout after the reload.
    assert.equal((await readAll(held, 5000)).length, 0);
    held.close();
    assert.ok(performance.now() - t0 >= 250, `cut after ${performance.now() - t0} ms`);
    const cut = await waitFor(() => accessRecords(logger.records).find((rec) => rec.name === "b"));
    assert.equal(cut.outcome, "shutdown");
    assert.equal(cut.bytesIn, 2);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tcp reload: an address that cannot be bound fails the reload at its key, nothing changes", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("ok") });
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const taken = (blocker.addr as Deno.NetAddr).port;
  const dir = await Deno.makeTempDir({ prefix: "prox-tcp-" });
  const file = `${dir}/config.yaml`;
  const config = (addr: string) =>
    `${head()}tcp:\n  db:\n    listen_addr: "${addr}"\n    targets: ["${up.addr}"]\n`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  const server = await startServer({ path: file }, { logger: recordingLogger(), watch: false });
  try {
    const port = server.tcpAddr("db")!.port;
    await Deno.writeTextFile(file, config(`127.0.0.1:${taken}`));
    const r = await server.reload({ trigger: "test" });
    assert.equal(r.ok, false);
    assert.equal(r.issues[0].path, "tcp.db.listen_addr");
    assert.equal(r.issues[0].line, 9);
    assert.match(r.issues[0].message, /Cannot listen on 127\.0\.0\.1:\d+/);
    assert.equal(server.tcpAddr("db")!.port, port);
    assert.equal(await exchange(port, "x"), "ok");
  } finally {
    blocker.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tcp shutdown waits for open connections, then cuts them at shutdown_timeout", async () => {
  await using up = rawUpstream({ stream: true });
  const logger = recordingLogger();
  const text = (grace: string) =>
    head().replace("400ms", grace) +
    `tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n`;
  // Ends by itself within the grace: shutdown does not wait it out.
  const a = await startServer({ text: text("20s"), name: "t.yaml" }, { logger });
  const c1 = await Deno.connect({ hostname: "127.0.0.1", port: a.tcpAddr("db")!.port });
  await ping(c1);
  const t0 = performance.now();
  const stopping = a.shutdown();
  await waitFor(() => logger.records.some((r) => r.msg === "Draining"));
  await ping(c1); // still relaying while draining
  c1.close();
  await stopping;
  assert.ok(performance.now() - t0 < 5000, "shutdown ended when the connection did");
  assert.equal((await nthAccess(logger.records, 1)).outcome, "closed");
  // Still open at the deadline: cut.
  const b = await startServer({ text: text("300ms"), name: "t.yaml" }, { logger });
  const c2 = await Deno.connect({ hostname: "127.0.0.1", port: b.tcpAddr("db")!.port });
  await ping(c2);
  const t1 = performance.now();
  await b.shutdown();
  assert.ok(performance.now() - t1 >= 250);
  assert.equal((await readAll(c2, 5000)).length, 0);
  c2.close();
  assert.equal((await nthAccess(logger.records, 2)).outcome, "shutdown");
});

Deno.test("tcp connections show in /metrics and /status on the admin listener", async () => {
  await using up = rawUpstream({ stream: true });
  const server = await startServer({
    text: head(`admin: { listen_addr: "127.0.0.1:0" }`) +
      `tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n`,
    name: "t.yaml",
  }, { logger: recordingLogger() });
  try {
    const admin = `http://127.0.0.1:${server.admin!.port}`;
    const port = server.tcpAddr("db")!.port;
    const held = await Deno.connect({ hostname: "127.0.0.1", port });
    await ping(held);
    const status = await (await fetch(`${admin}/status`)).json();
    assert.deepEqual(status.tcp, [{
      name: "db",
      listen_addr: `127.0.0.1:${port}`,
      active: 1,
      max_connections: 10000,
      targets: [up.addr],
    }]);
    let metrics = await (await fetch(`${admin}/metrics`)).text();
    assert.match(metrics, /^prox_tcp_active_connections\{name="db"\} 1$/m);
    assert.match(metrics, /^prox_tcp_bytes_total\{name="db",direction="received"\} 1$/m);
    assert.match(metrics, /^prox_tcp_bytes_total\{name="db",direction="sent"\} 1$/m);
    held.close();
    await waitFor(async () => {
      metrics = await (await fetch(`${admin}/metrics`)).text();
      return /^prox_tcp_connections_total\{name="db",outcome="closed"\} 1$/m.test(metrics);
    }, { what: "the closed connection counted" });
    assert.match(metrics, /^prox_tcp_active_connections\{name="db"\} 0$/m);
  } finally {
    await server.shutdown();
  }
});

Deno.test("prox validate locates tcp errors at file:line:col, and lists valid entries", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-tcp-" });
  const file = `${dir}/bad.yaml`;
  const entry = (targets: string) =>
    `tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ${targets}\n`;
  await Deno.writeTextFile(file, head() + entry(`["10.0.0.5"]`));
  await Deno.writeTextFile(
    `${dir}/ok.yaml`,
    head() + entry(`["10.0.0.5:5432", "db:5432"]`) +
      `  tls:\n    listen_addr: "127.0.0.1:0"\n    sni: { "a.example.com": ["10.0.0.7:443"] }\n`,
  );
  const validate = (path: string) =>
    run(Deno.execPath(), [
      "run",
      "-A",
      "--config",
      `${ROOT}/deno.json`,
      `${ROOT}/mod.ts`,
      "validate",
      "-c",
      path,
    ], { env: { NO_COLOR: "1" }, timeoutMs: 30_000 });
  try {
    const ok = await validate(`${dir}/ok.yaml`);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^ {2}tcp: {11}db 127\.0\.0\.1:0 → 10\.0\.0\.5:5432, db:5432$/m);
    assert.match(ok.stdout, /^ {2}tcp: {11}tls 127\.0\.0\.1:0 → sni \(1 name\)$/m);
    const r = await validate(file);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `^${file}:10:15: error: tcp\\.db\\.targets\\.0: Invalid target "10\\.0\\.0\\.5": name the port too`,
        "m",
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("prox serve with workers: every worker holds the tcp listener (SO_REUSEPORT)", async () => {
  await using up = rawUpstream({ reply: (got) => enc.encode(dec.decode(got).toUpperCase()) });
  const tcpPort = freePort();
  await using prox = await spawnProx(
    `listen_addr: "127.0.0.1:{PORT}"
workers: 2
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "http://127.0.0.1:9" }
tcp:
  db:
    listen_addr: "127.0.0.1:${tcpPort}"
    targets: ["${up.addr}"]
`,
  );
  await waitFor(() => {
    const lines = prox.output().split("\n").filter((l) => l.includes('"TCP listening"'));
    return new Set(lines.map((l) => JSON.parse(l).worker)).size === 2;
  }, { what: "both workers listening on the tcp port", timeoutMs: 20_000 });
  const answers = await Promise.all(Array.from({ length: 20 }, () => exchange(tcpPort, "ab")));
  assert.deepEqual(new Set(answers), new Set(["AB"]));
  await waitFor(() => {
    const lines = prox.output().split("\n").filter((l) => l.includes('"tcp access"'));
    return lines.length === 20 && lines.every((l) => JSON.parse(l).outcome === "closed");
  }, { what: "20 JSON access lines" });
});

Deno.test("tcp shutdown does not wait out a connect to a target that does not answer", async () => {
  await using hole = await blackhole();
  const logger = recordingLogger();
  const server = await startServer({
    text: head(`admin: { listen_addr: "127.0.0.1:0" }`).replace("400ms", "100ms") +
      `tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${hole.addr}"]\n` +
      `    timeouts: { connect: 20s }\n`,
    name: "t.yaml",
  }, { logger });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.tcpAddr("db")!.port });
  try {
    const admin = `http://127.0.0.1:${server.admin!.port}`;
    await waitFor(async () => (await (await fetch(`${admin}/status`)).json()).tcp[0].active === 1, {
      what: "the connection accepted",
    });
    const t0 = performance.now();
    await server.shutdown();
    const took = performance.now() - t0;
    assert.ok(took < 5000, `shutdown took ${Math.round(took)} ms (shutdown_timeout: 100ms)`);
    const rec = await nthAccess(logger.records, 1);
    assert.equal(rec.outcome, "shutdown");
    assert.equal(rec.target, null);
  } finally {
    conn.close();
  }
});
