// `health_check` on tcp entries against real peers: a target that stops accepting is marked down
// by the probes and left out of the turns (no connect is tried on it), shown in /status and
// prox_tcp_target_up, and comes back once it accepts again; and what validate says.
import assert from "node:assert/strict";
import { startProxy } from "./_proxy.ts";
import { recordingLogger } from "./_ws.ts";
import { enc, exchange, rawUpstream } from "./_tcp.ts";
import { waitFor } from "../_harness.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { startServer } from "../../src/server.ts";

const base = `
health_check: { enabled: false }
admin: { listen_addr: "127.0.0.1:0" }
routes:
  "/": { type: proxy, target: "http://127.0.0.1:9" }
`;

Deno.test("tcp health_check: a target that stops accepting leaves the turns until it accepts again", async () => {
  await using b = rawUpstream({ reply: () => enc.encode("b") });
  // `a` on a port of its own, closed and opened again on the same port below.
  let a: ReturnType<typeof rawUpstream> | null = rawUpstream({ reply: () => enc.encode("a") });
  const aPort = a.port;
  const aAddr = a.addr;
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:
  db:
    listen_addr: "127.0.0.1:0"
    targets: ["${aAddr}", "${b.addr}"]
    health_check: { interval: 1s, timeout: 500ms, unhealthy_threshold: 1, healthy_threshold: 1 }
`,
    { logger },
  );
  try {
    const port = prox.server.tcpAddr("db")!.port;
    const admin = `http://127.0.0.1:${prox.server.admin!.port}`;
    const status = async () =>
      ((await (await fetch(`${admin}/status`)).json()).tcp as {
        health?: Record<string, string>;
      }[])[0]
        .health;
    const up = async () => await (await fetch(`${admin}/metrics`)).text();
    await waitFor(async () => (await status())?.[aAddr] === "up", { what: "a probed up" });
    assert.match(await up(), new RegExp(`prox_tcp_target_up\\{name="db",target="${aAddr}"\\} 1`));

    await a[Symbol.asyncDispose]();
    a = null;
    await waitFor(
      () => logger.records.some((r) => r.msg === "tcp target marked down by health check"),
      { what: "a marked down" },
    );
    assert.equal((await status())?.[aAddr], "down");
    assert.equal((await status())?.[b.addr], "up");
    assert.match(await up(), new RegExp(`prox_tcp_target_up\\{name="db",target="${aAddr}"\\} 0`));
    // Every connection goes to b, and none tries a first.
    for (let i = 0; i < 4; i++) assert.equal(await exchange(port, "x"), "b");
    assert.equal(logger.records.filter((r) => r.msg === "Cannot connect to tcp target").length, 0);

    a = rawUpstream({ reply: () => enc.encode("a"), port: aPort });
    await waitFor(
      () => logger.records.some((r) => r.msg === "tcp target back up: health check passed"),
      { what: "a back up" },
    );
    const answers = new Set<string>();
    for (let i = 0; i < 4; i++) answers.add(await exchange(port, "x"));
    assert.deepEqual([...answers].sort(), ["a", "b"]);
  } finally {
    await a?.[Symbol.asyncDispose]();
  }
});

Deno.test("tcp health_check: a target going down and coming back is notified as backend_down and backend_up", async () => {
  const got: Record<string, unknown>[] = [];
  const hook = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    got.push(await req.json());
    return new Response(null, { status: 204 });
  });
  // Nothing listens on the target's port yet: it starts down.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  let target: ReturnType<typeof rawUpstream> | null = null;
  try {
    await using _prox = await startProxy(
      `${base}notify: { webhook: "http://127.0.0.1:${hook.addr.port}/" }
tcp:
  db:
    listen_addr: "127.0.0.1:0"
    targets: ["127.0.0.1:${port}"]
    health_check: { interval: 1s, timeout: 500ms, unhealthy_threshold: 1, healthy_threshold: 1 }
`,
    );
    await waitFor(() => got.some((b) => b.event === "backend_down"), { what: "backend_down" });
    const down = got.find((b) => b.event === "backend_down")!;
    assert.equal(down.backend, `tcp://127.0.0.1:${port}`);
    assert.equal(down.tcp, "db");
    assert.match(String(down.text), /tcp target 127\.0\.0\.1:\d+ of db is down \(1 failed connect/);
    target = rawUpstream({ reply: () => enc.encode("x"), port });
    await waitFor(() => got.some((b) => b.event === "backend_up"), { what: "backend_up" });
  } finally {
    await target?.[Symbol.asyncDispose]();
    await hook.shutdown();
  }
});

Deno.test("validate: tcp health_check interval and timeout", () => {
  const issues = (hc: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:0"\nroutes:\n  /: { type: static, root: . }\n` +
        `tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["127.0.0.1:5432"]\n` +
        `    health_check: ${hc}\n`,
      { file: "t.yaml", env: { exists: () => true } },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues("{}"), []);
  assert.match(issues("{ interval: 200ms }").join(), /error tcp\.db\.health_check\.interval/);
  assert.match(
    issues("{ interval: 2s, timeout: 2s }").join(),
    /error tcp\.db\.health_check\.timeout: timeout \(2000 ms\) must be shorter than interval/,
  );
  assert.match(issues("{ intervall: 2s }").join(), /Unknown key "intervall"/);
  assert.deepEqual(issues('{ send: "PING\\r\\n", expect: "+PONG" }'), []);
  assert.match(issues('{ expect: "" }').join(), /error tcp\.db\.health_check\.expect/);
  assert.deepEqual(issues('{ send_hex: "00000008 04d2162f", expect_hex: "4e" }'), []);
  assert.match(
    issues('{ send: "PING", send_hex: "50" }').join(),
    /error tcp\.db\.health_check\.send_hex: send and send_hex are both set/,
  );
  assert.match(
    issues('{ expect_hex: "0x4e" }').join(),
    /error tcp\.db\.health_check\.expect_hex: expect_hex has "x", which is not a hex digit/,
  );
  assert.match(
    issues('{ expect_hex: "4e5" }').join(),
    /error tcp\.db\.health_check\.expect_hex: expect_hex has 3 digits: a byte takes two/,
  );
});

Deno.test("tcp health_check across reloads: an unchanged entry keeps its states, a changed one keeps them and probes afresh, a removed one is gone", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("up") });
  const hole = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = `127.0.0.1:${(hole.addr as Deno.NetAddr).port}`;
  hole.close();
  const dir = await Deno.makeTempDir({ prefix: "prox-tcp-health-" });
  const file = `${dir}/config.yaml`;
  const write = (entry: string) =>
    Deno.writeTextFile(file, `listen_addr: "127.0.0.1:0"${base}${entry}`);
  const db = (connect: string) =>
    `tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${dead}", "${up.addr}"]\n` +
    `    timeouts: { connect: ${connect} }\n` +
    `    health_check: { interval: 1h, unhealthy_threshold: 1, healthy_threshold: 1 }\n`;
  await write(db("5s"));
  const logger = recordingLogger();
  const server = await startServer({ path: file }, { logger, watch: false });
  try {
    const admin = `http://127.0.0.1:${server.admin!.port}`;
    const rows = async () =>
      (await (await fetch(`${admin}/status`)).json()).tcp as {
        name: string;
        health?: Record<string, string>;
      }[];
    const downs = () =>
      logger.records.filter((r) => r.msg === "tcp target marked down by health check").length;
    await waitFor(async () => (await rows())[0].health?.[up.addr] === "up", { what: "up probed" });
    await waitFor(() => downs() === 1, { what: "dead marked down" });
    assert.equal(up.accepted, 1); // the first round's probe

    // Unchanged: no new round (interval 1h), dead stays down and out of the turns.
    assert.ok((await server.reload({ trigger: "test" })).ok);
    assert.deepEqual((await rows())[0].health, { [dead]: "down", [up.addr]: "up" });
    const port = server.tcpAddr("db")!.port;
    for (let i = 0; i < 3; i++) assert.equal(await exchange(port, "x"), "up");
    assert.equal(up.accepted, 4, "no probe since the reload");
    assert.equal(downs(), 1);
    assert.equal(logger.records.filter((r) => r.msg === "Cannot connect to tcp target").length, 0);

    // Changed elsewhere than its targets and checks: the targets keep their states (dead stayed
    // unknown, so in the turns, until the new checker's first probe), and a new checker probes
    // them at once, dead down still (no new transition).
    await write(db("4s"));
    assert.ok((await server.reload({ trigger: "test" })).ok);
    assert.deepEqual((await rows())[0].health, { [dead]: "down", [up.addr]: "up" });
    for (let i = 0; i < 3; i++) assert.equal(await exchange(port, "x"), "up");
    assert.equal(logger.records.filter((r) => r.msg === "Cannot connect to tcp target").length, 0);
    await waitFor(() => up.accepted === 8, { what: "the new checker's probe of up" });
    assert.equal(downs(), 1);

    // Its check changed: the states stand until the new check's first result, which decides.
    await write(db("4s").replace("healthy_threshold: 1", "healthy_threshold: 3"));
    assert.ok((await server.reload({ trigger: "test" })).ok);
    assert.equal((await rows())[0].health?.[dead], "down");
    await waitFor(() => up.accepted === 9, { what: "the newer checker's probe of up" });
    assert.equal(downs(), 1);

    // Removed: no row, no gauge.
    await write("");
    assert.ok((await server.reload({ trigger: "test" })).ok);
    assert.equal((await rows())?.length ?? 0, 0);
    assert.doesNotMatch(await (await fetch(`${admin}/metrics`)).text(), /prox_tcp_target_up\{/);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

/** A server answering "+PONG\r\n" to what it is sent first (a Redis that is up). */
function pongServer(): { addr: string } & AsyncDisposable {
  return answerServer(enc.encode("+PONG\r\n"));
}

/** A server answering `answer` to what it is sent first, then holding the connection. */
function answerServer(answer: Uint8Array): { addr: string } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const serving = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      void (async () => {
        try {
          const buf = new Uint8Array(64);
          if (await conn.read(buf) !== null) await conn.write(answer);
          while (await conn.read(buf) !== null) { /* until the prober closes */ }
        } catch { /* closed */ }
        conns.delete(conn);
        conn.close();
      })();
    }
  })();
  return {
    addr: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) c.close();
      await serving.catch(() => {});
    },
  };
}

/**
 * A tcp entry `name` of `echo` (which never answers as `probe` expects) and `up`, probed every 5 s
 * (timeout 500 ms, thresholds 1) with `probe`'s keys; resolves once `echo` is down.
 */
async function echoDown(name: string, echo: string, up: string, probe: Record<string, string>) {
  const logger = recordingLogger();
  const keys = Object.entries(probe).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ");
  const prox = await startProxy(
    `${base}tcp:
  ${name}:
    listen_addr: "127.0.0.1:0"
    targets: ["${echo}", "${up}"]
    health_check: { interval: 5s, timeout: 500ms, unhealthy_threshold: 1, healthy_threshold: 1, ${keys} }
`,
    { logger },
  );
  const admin = `http://127.0.0.1:${prox.server.admin!.port}`;
  const health = async () => {
    const rows = (await (await fetch(`${admin}/status`)).json()).tcp;
    return (rows as { health?: Record<string, string> }[])[0].health;
  };
  try {
    await waitFor(async () => (await health())?.[echo] === "down", { what: "echo down" });
  } catch (err) {
    await prox[Symbol.asyncDispose]();
    throw err;
  }
  return { prox, logger, health, [Symbol.asyncDispose]: () => prox[Symbol.asyncDispose]() };
}

Deno.test("tcp health_check send/expect: a target that accepts but does not answer what is expected is down", async () => {
  await using pong = pongServer();
  // Accepts and echoes "PING\r\n": never "+PONG".
  await using echo = rawUpstream({ stream: true });
  await using probed = await echoDown("redis", echo.addr, pong.addr, {
    send: "PING\r\n",
    expect: "+PONG",
  });
  const { prox, logger } = probed;
  assert.equal((await probed.health())?.[pong.addr], "up");
  const down = logger.records.find((r) => r.msg === "tcp target marked down by health check")!;
  assert.equal(down.target, echo.addr);
  assert.equal(down.reason, "no answer within 500 ms");
  await waitFor(() => echo.received.length > 0, { what: "the probe's bytes at the echo" });
  assert.deepEqual(echo.received.map((b) => new TextDecoder().decode(b)), ["PING\r\n"]);
  // Connections go to pong only, without trying echo first.
  const accepted = echo.accepted;
  const port = prox.server.tcpAddr("redis")!.port;
  for (let i = 0; i < 3; i++) assert.equal(await exchange(port, "PING\r\n"), "+PONG\r\n");
  assert.equal(echo.accepted, accepted);
});

Deno.test("tcp health_check send_hex/expect_hex: bytes go out as written, and the answer's bytes decide", async () => {
  // PostgreSQL's SSLRequest (length 8, code 80877103), answered "N" (no TLS) by a server that is up.
  await using pg = answerServer(Uint8Array.of(0x4e));
  // Accepts and echoes: never an "N".
  await using echo = rawUpstream({ stream: true });
  await using probed = await echoDown("pg", echo.addr, pg.addr, {
    send_hex: "00000008 04d2162f",
    expect_hex: "4e",
  });
  assert.equal((await probed.health())?.[pg.addr], "up");
  // Byte for byte (0xd2 as one byte, not as UTF-8's two), as the echo saw the probe's connection
  // end.
  await waitFor(() => echo.received.length > 0, { what: "the probe's bytes at the echo" });
  assert.deepEqual([...echo.received[0]], [0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]);
  const down = probed.logger.records.find((r) =>
    r.msg === "tcp target marked down by health check"
  )!;
  assert.equal(down.target, echo.addr);
});

Deno.test("tcp health_check with sni: every name's targets and default's are probed, each once", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("up") });
  const closed = () => {
    const hole = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    hole.close();
    return `127.0.0.1:${(hole.addr as Deno.NetAddr).port}`;
  };
  const [dead, deadB] = [closed(), closed()];
  await using prox = await startProxy(
    `${base}tcp:
  tls:
    listen_addr: "127.0.0.1:0"
    sni: { "a.example": ["${dead}", "${up.addr}"], "*.b.example": ["${deadB}"] }
    default: ["${up.addr}", "${dead}"]
    health_check: { interval: 1h, unhealthy_threshold: 1, healthy_threshold: 1 }
`,
  );
  const admin = `http://127.0.0.1:${prox.server.admin!.port}`;
  const health = async () => {
    const rows = (await (await fetch(`${admin}/status`)).json()).tcp;
    return (rows as { health?: Record<string, string> }[])[0].health;
  };
  await waitFor(async () => (await health())?.[dead] === "down", { what: "dead down" });
  await waitFor(async () => (await health())?.[deadB] === "down", { what: "deadB down" });
  await waitFor(async () => (await health())?.[up.addr] === "up", { what: "up up" });
  assert.deepEqual(Object.keys((await health())!).sort(), [dead, deadB, up.addr].sort());
  assert.equal(up.accepted, 1, "a target named in two groups is probed once a round");
});
