// `tcp` entries against real peers: relaying with half-close, PROXY headers, connect failover,
// idle timeout, max_connections, ip_access, and the access-log line of each connection.

import assert from "node:assert/strict";
import { startProxy } from "./_proxy.ts";
import { recordingLogger } from "./_ws.ts";
import {
  accessRecords,
  blackhole,
  dec,
  enc,
  exchange,
  nthAccess,
  openFds,
  rawUpstream,
  readAll,
  writeAll,
} from "./_tcp.ts";
import { waitFor } from "../_harness.ts";

const base = `
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "http://127.0.0.1:9" }
`;

function tcpPort(p: { server: { tcpAddr(n: string): { port: number } | undefined } }, name = "db") {
  return p.server.tcpAddr(name)!.port;
}

Deno.test("tcp relays both ways and passes the client's FIN on (half-close)", async () => {
  // The upstream answers only once it has read to the end: the answer proves the FIN arrived.
  await using up = rawUpstream({ reply: (got) => enc.encode(`${dec.decode(got)}!`) });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n`,
    { logger },
  );
  const port = tcpPort(prox);
  const big = "x".repeat(300_000);
  assert.equal(await exchange(port, big), `${big}!`);
  const rec = await nthAccess(logger.records, 1);
  assert.equal(rec.name, "db");
  assert.equal(rec.outcome, "closed");
  assert.equal(rec.target, up.addr);
  assert.equal(rec.bytesIn, 300_000);
  assert.equal(rec.bytesOut, 300_001);
  assert.equal(rec.clientIp, "127.0.0.1");
  assert.equal(typeof rec.durationMs, "number");
  assert.equal("serverName" in rec, false);
});

Deno.test("tcp keeps a half-closed upstream direction open until the upstream ends", async () => {
  // The client sends its FIN first but keeps reading: an interactive upstream still answers.
  await using up = rawUpstream({ stream: true });
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n`,
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort(prox) });
  await writeAll(conn, enc.encode("ping"));
  const buf = new Uint8Array(4);
  let got = 0;
  while (got < 4) got += (await conn.read(buf.subarray(got)))!;
  assert.equal(dec.decode(buf), "ping");
  await conn.closeWrite();
  // The upstream saw the FIN and closed: the client's read ends.
  assert.equal((await readAll(conn)).length, 0);
  conn.close();
});

Deno.test("tcp sends a PROXY header (v1 and v2) before the client's bytes", async () => {
  for (const version of ["v1", "v2"]) {
    await using up = rawUpstream({ reply: () => enc.encode("ok") });
    await using prox = await startProxy(
      `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n` +
        `    proxy_protocol: ${version}\n`,
    );
    const port = tcpPort(prox);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const clientPort = (conn.localAddr as Deno.NetAddr).port;
    await writeAll(conn, enc.encode("HELLO"));
    await conn.closeWrite();
    assert.equal(dec.decode(await readAll(conn)), "ok");
    conn.close();
    const got = await waitFor(() => up.received[0]);
    if (version === "v1") {
      assert.equal(
        dec.decode(got),
        `PROXY TCP4 127.0.0.1 127.0.0.1 ${clientPort} ${port}\r\nHELLO`,
      );
    } else {
      const sig = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
      assert.deepEqual([...got.subarray(0, 12)], sig);
      assert.equal(got[12], 0x21); // v2, PROXY
      assert.equal(got[13], 0x11); // TCP over IPv4
      assert.deepEqual([...got.subarray(16, 24)], [127, 0, 0, 1, 127, 0, 0, 1]);
      assert.equal((got[24] << 8) | got[25], clientPort);
      assert.equal((got[26] << 8) | got[27], port);
      assert.equal(dec.decode(got.subarray(28)), "HELLO");
    }
  }
});

Deno.test("tcp accept_proxy_protocol: a balancer's header names the client for ip_access, the log and the header sent on", async () => {
  // An entry behind a TCP load balancer (AWS NLB, HAProxy send-proxy): the balancer's header
  // comes first, in one write with the client's bytes or apart, and is not relayed.
  await using up = rawUpstream({ reply: () => enc.encode("ok") });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n` +
      `    proxy_protocol: v1\n` +
      `    accept_proxy_protocol: { from: ["127.0.0.1"], timeout: 300ms }\n` +
      `    ip_access: { deny: ["198.51.100.0/24"] }\n`,
    { logger },
  );
  const port = tcpPort(prox);
  const proxied = async (parts: string[]) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    for (const p of parts) await writeAll(conn, enc.encode(p));
    await conn.closeWrite();
    const answer = dec.decode(await readAll(conn));
    conn.close();
    return answer;
  };
  assert.equal(await proxied(["PROXY TCP4 203.0.113.7 10.0.0.1 5555 5433\r\nHELLO"]), "ok");
  assert.equal(
    dec.decode(await waitFor(() => up.received[0])),
    `PROXY TCP4 203.0.113.7 127.0.0.1 5555 ${port}\r\nHELLO`,
  );
  const first = await nthAccess(logger.records, 1);
  assert.equal(first.clientIp, "203.0.113.7");
  assert.equal(first.clientPort, 5555);
  assert.equal(first.bytesIn, 5);
  // Split across writes; the balancer's own probe (LOCAL) keeps the connection's address.
  assert.equal(await proxied(["PROXY TCP4 203.0.113.8 10.0.0.1 ", "6666 5433\r\n", "HI"]), "ok");
  assert.equal((await nthAccess(logger.records, 2)).clientIp, "203.0.113.8");
  const local = [
    0x0d,
    0x0a,
    0x0d,
    0x0a,
    0x00,
    0x0d,
    0x0a,
    0x51,
    0x55,
    0x49,
    0x54,
    0x0a,
    0x20,
    0,
    0,
    0,
  ];
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, new Uint8Array(local));
  await conn.closeWrite();
  assert.equal(dec.decode(await readAll(conn)), "ok");
  conn.close();
  assert.equal((await nthAccess(logger.records, 3)).clientIp, "127.0.0.1");
  // ip_access judges the client the header names.
  assert.equal(await proxied(["PROXY TCP4 198.51.100.9 10.0.0.1 1 5433\r\nX"]), "");
  assert.equal((await nthAccess(logger.records, 4)).outcome, "denied");
  // No header, a broken one, or none in time: closed, nothing relayed.
  assert.equal(await proxied(["HELLO\r\n"]), "");
  const bad = await nthAccess(logger.records, 5);
  assert.equal(bad.outcome, "bad_proxy_header");
  assert.equal(bad.error, "no PROXY protocol header");
  const slow = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(slow, enc.encode("PROXY TCP4"));
  assert.equal((await readAll(slow)).length, 0);
  slow.close();
  const late = await nthAccess(logger.records, 6);
  assert.equal(late.outcome, "bad_proxy_header");
  assert.equal(late.error, "no PROXY header within 300 ms");
  assert.equal(up.accepted, 3);
});

Deno.test("tcp accept_proxy_protocol: an IPv6 client on Prox's IPv4 address goes on as TCP6, IPv4-mapped (as HAProxy)", async () => {
  // A dual-stack balancer names an IPv6 client; Prox listens on IPv4. The upstream must still get
  // the client's address, not PROXY UNKNOWN (which makes it use Prox's own).
  for (const version of ["v1", "v2"]) {
    await using up = rawUpstream({ reply: () => enc.encode("ok") });
    await using prox = await startProxy(
      `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n` +
        `    proxy_protocol: ${version}\n` +
        `    accept_proxy_protocol: { from: ["127.0.0.1"] }\n`,
    );
    const port = tcpPort(prox);
    assert.equal(await exchange(port, "PROXY TCP6 2001:db8::7 2001:db8::1 5555 5433\r\nHI"), "ok");
    const got = await waitFor(() => up.received[0]);
    if (version === "v1") {
      assert.equal(
        dec.decode(got),
        `PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 5555 ${port}\r\nHI`,
      );
    } else {
      assert.equal(got[12], 0x21); // v2, PROXY
      assert.equal(got[13], 0x21); // TCP over IPv6
      assert.deepEqual([...got.subarray(16, 20)], [0x20, 0x01, 0x0d, 0xb8]);
      assert.deepEqual([...got.subarray(42, 48)], [0xff, 0xff, 127, 0, 0, 1]);
      assert.equal((got[48] << 8) | got[49], 5555);
      assert.equal((got[50] << 8) | got[51], port);
      assert.equal(dec.decode(got.subarray(52)), "HI");
    }
  }
});

Deno.test("tcp accept_proxy_protocol: a sender's connection closed before any byte (a TCP health check) is closed, not bad_proxy_header", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("ok") });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n` +
      `    accept_proxy_protocol: { from: ["127.0.0.1"] }\n`,
    { logger },
  );
  assert.equal(await exchange(tcpPort(prox), ""), "");
  const rec = await nthAccess(logger.records, 1);
  assert.equal(rec.outcome, "closed");
  assert.equal(rec.error, undefined);
  assert.equal(rec.target, null);
  assert.equal(up.accepted, 0);
});

Deno.test("tcp accept_proxy_protocol: peers not in from send no header and are served as themselves", async () => {
  await using up = rawUpstream({ reply: (got) => got });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n` +
      `    accept_proxy_protocol: { from: ["10.0.0.0/8"] }\n`,
    { logger },
  );
  // A header from a peer the entry does not trust is the client's own bytes, relayed as they are.
  const text = "PROXY TCP4 203.0.113.7 10.0.0.1 5555 5433\r\nHELLO";
  assert.equal(await exchange(tcpPort(prox), text), text);
  assert.equal((await nthAccess(logger.records, 1)).clientIp, "127.0.0.1");
});

Deno.test("tcp moves to the next target when a connect fails, in round-robin turns", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("up") });
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadAddr = `127.0.0.1:${(dead.addr as Deno.NetAddr).port}`;
  dead.close(); // refused from now on
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n` +
      `    targets: ["${deadAddr}", "${up.addr}"]\n`,
    { logger },
  );
  const port = tcpPort(prox);
  for (let i = 1; i <= 3; i++) {
    assert.equal(await exchange(port, "x"), "up");
    const rec = await nthAccess(logger.records, i);
    assert.equal(rec.outcome, "closed");
    assert.equal(rec.target, up.addr);
  }
  assert.equal(up.accepted, 3);
  // The dead target was tried on the turns that were its own (the 1st and 3rd).
  const tries = logger.records.filter((r) => r.msg === "Cannot connect to tcp target");
  assert.equal(tries.length, 2);
  assert.equal(tries[0].target, deadAddr);
});

Deno.test("tcp moves to the next target when a connect does not answer within timeouts.connect", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("up") });
  await using hole = await blackhole();
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n` +
      `    targets: ["${hole.addr}", "${up.addr}"]\n    timeouts: { connect: 300ms }\n`,
    { logger },
  );
  assert.equal(await exchange(tcpPort(prox), "x"), "up");
  const rec = await nthAccess(logger.records, 1);
  assert.equal(rec.target, up.addr);
  const tries = logger.records.filter((r) => r.msg === "Cannot connect to tcp target");
  assert.deepEqual(tries.map((r) => [r.target, r.error]), [[hole.addr, "no answer within 300 ms"]]);
});

Deno.test("tcp passive_health: a target whose connects fail leaves the turns (no more connect timeouts), unless it is the last", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("up") });
  await using hole = await blackhole();
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:
  db:
    listen_addr: "127.0.0.1:0"
` +
      `    targets: ["${hole.addr}", "${up.addr}"]
    timeouts: { connect: 200ms }
` +
      `    passive_health: { failures: 2, base_ejection: 1m }
`,
    { logger },
  );
  for (let i = 0; i < 6; i++) assert.equal(await exchange(tcpPort(prox), "x"), "up");
  // Its own turns (1st and 3rd) cost a connect timeout each; then it is out.
  const tries = logger.records.filter((r) => r.msg === "Cannot connect to tcp target");
  assert.deepEqual(tries.map((r) => r.target), [hole.addr, hole.addr]);
  const ejected = logger.records.filter((r) =>
    r.msg === "tcp target ejected after failed connects"
  );
  assert.deepEqual(ejected.map((r) => [r.target, r.ejectedForMs]), [[hole.addr, 60_000]]);
  assert.equal(up.accepted, 6);
  // A reload that leaves the entry as it was keeps the ejection.
  assert.ok((await prox.server.reload()).ok);
  for (let i = 0; i < 2; i++) assert.equal(await exchange(tcpPort(prox), "x"), "up");
  assert.equal(logger.records.filter((r) => r.msg === "Cannot connect to tcp target").length, 2);
});

Deno.test("tcp passive_health: a lone failing target is still tried (never ejected past the panic threshold)", async () => {
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadAddr = `127.0.0.1:${(dead.addr as Deno.NetAddr).port}`;
  dead.close();
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:
  db:
    listen_addr: "127.0.0.1:0"
    targets: ["${deadAddr}"]
` +
      `    passive_health: { failures: 1 }
`,
    { logger },
  );
  for (let i = 0; i < 3; i++) assert.equal(await exchange(tcpPort(prox), "x"), "");
  assert.equal(logger.records.filter((r) => r.msg === "Cannot connect to tcp target").length, 3);
});

Deno.test("tcp closes a connection when every target refuses (connect_failed)", async () => {
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadAddr = `127.0.0.1:${(dead.addr as Deno.NetAddr).port}`;
  dead.close();
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${deadAddr}"]\n`,
    { logger },
  );
  assert.equal(await exchange(tcpPort(prox), "x"), "");
  const rec = await nthAccess(logger.records, 1);
  assert.equal(rec.outcome, "connect_failed");
  assert.equal(rec.target, null);
  assert.match(String(rec.error), /Cannot connect to any target/);
});

Deno.test("tcp closes both sides after idle timeout without a byte either way", async () => {
  await using up = rawUpstream({ stream: true });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n` +
      `    timeouts: { idle: 300ms }\n`,
    { logger },
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort(prox) });
  const t0 = performance.now();
  // Traffic keeps it open past one idle period.
  for (let i = 0; i < 4; i++) {
    await writeAll(conn, enc.encode("k"));
    assert.equal((await conn.read(new Uint8Array(1)))!, 1);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal((await readAll(conn)).length, 0); // then closed by Prox
  const elapsed = performance.now() - t0;
  conn.close();
  assert.ok(elapsed >= 600, `closed after ${elapsed} ms`);
  const rec = await nthAccess(logger.records, 1);
  assert.equal(rec.outcome, "idle_timeout");
  assert.equal(rec.bytesIn, 4);
  await waitFor(() => up.open === 0, { what: "the upstream side closed too" });
});

Deno.test("tcp max_connections closes connections past the limit at once", async () => {
  await using up = rawUpstream({ stream: true });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n` +
      `    max_connections: 2\n`,
    { logger },
  );
  const port = tcpPort(prox);
  const open: Deno.Conn[] = [];
  for (let i = 0; i < 2; i++) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(c, enc.encode("a"));
    assert.equal(await c.read(new Uint8Array(1)), 1);
    open.push(c);
  }
  assert.equal(await exchange(port, "x"), "");
  assert.equal((await nthAccess(logger.records, 1)).outcome, "over_limit");
  open.pop()!.close();
  await nthAccess(logger.records, 2);
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(c, enc.encode("b"));
  assert.equal(await c.read(new Uint8Array(1)), 1);
  c.close();
  for (const o of open) o.close();
  await waitFor(() => accessRecords(logger.records).length === 4);
});

Deno.test("tcp max_connections_per_ip closes one address's connections past its limit, others go on", async () => {
  // Without it one client holds every slot of max_connections (an sni entry's for free: a
  // connection that sends nothing holds one for timeouts.client_hello).
  await using up = rawUpstream({ stream: true });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "[::]:0"\n    targets: ["${up.addr}"]\n` +
      `    max_connections_per_ip: 2\n`,
    { logger },
  );
  const port = tcpPort(prox);
  const echo = async (c: Deno.Conn) => {
    await writeAll(c, enc.encode("a"));
    assert.equal(await c.read(new Uint8Array(1)), 1);
  };
  const open: Deno.Conn[] = [];
  for (let i = 0; i < 2; i++) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await echo(c);
    open.push(c);
  }
  assert.equal(await exchange(port, "x"), "");
  const refused = await nthAccess(logger.records, 1);
  assert.equal(refused.outcome, "over_limit");
  assert.match(String(refused.error), /2 connections from 127\.0\.0\.1 are open/);
  // Another address is not held back by it.
  const v6 = await Deno.connect({ hostname: "::1", port });
  await echo(v6);
  v6.close();
  await nthAccess(logger.records, 2);
  // One of the address's connections ends: it may open another.
  open.pop()!.close();
  await nthAccess(logger.records, 3);
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  await echo(c);
  c.close();
  for (const o of open) o.close();
  await waitFor(() => accessRecords(logger.records).length === 5);
});

Deno.test("tcp ip_access refuses a denied client before connecting upstream", async () => {
  await using up = rawUpstream();
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n` +
      `    ip_access: { deny: ["127.0.0.0/8"] }\n`,
    { logger },
  );
  assert.equal(await exchange(tcpPort(prox), "x"), "");
  assert.equal((await nthAccess(logger.records, 1)).outcome, "denied");
  assert.equal(up.accepted, 0);
});

Deno.test("tcp leaves no descriptor behind after many short connections", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("k") });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "127.0.0.1:0"\n    targets: ["${up.addr}"]\n`,
    { logger },
  );
  const port = tcpPort(prox);
  assert.equal(await exchange(port, "warm"), "k");
  await nthAccess(logger.records, 1);
  const before = openFds();
  const N = 300;
  for (let i = 0; i < N; i += 30) {
    await Promise.all(Array.from({ length: 30 }, () => exchange(port, "x")));
  }
  // A client that resets mid-relay, and one that never sends anything before it leaves.
  const reset = await Deno.connect({ hostname: "127.0.0.1", port });
  reset.close();
  await waitFor(() => accessRecords(logger.records).length === N + 2, { what: "every record" });
  await waitFor(() => up.open === 0);
  await waitFor(() => openFds() <= before, {
    what: `descriptors back to ${before} (now ${openFds()})`,
  });
});

Deno.test("tcp names IPv4 clients of a dual-stack listener as IPv4 (log, PROXY header)", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("ok") });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  db:\n    listen_addr: "[::]:0"\n    targets: ["${up.addr}"]\n` +
      `    proxy_protocol: v1\n`,
    { logger },
  );
  const port = tcpPort(prox);
  assert.equal(await exchange(port, "x"), "ok");
  const got = dec.decode(await waitFor(() => up.received[0]));
  assert.match(got, new RegExp(`^PROXY TCP4 127\\.0\\.0\\.1 127\\.0\\.0\\.1 \\d+ ${port}\\r\\nx$`));
  assert.equal((await nthAccess(logger.records, 1)).clientIp, "127.0.0.1");
});
