// WebSocket upgrades on proxy and load_balance routes, shutdown, reloads, idle timeout and
// backpressure, through the real Prox.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { freePort, startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { noopMetrics } from "../../src/ports.ts";
import {
  closed,
  connect,
  messages,
  recordingLogger,
  startWsProxy,
  wsRoute,
  wsUpstream,
} from "./_ws.ts";

/** A Deno upstream that answers HTTP and echoes WebSockets, tagging replies with `name`. */
function dualUpstream(name: string) {
  return startUpstream((req) => {
    if (req.headers.get("upgrade") !== "websocket") return new Response(`http ${name}`);
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(`${name}: ${e.data}`);
    return response;
  });
}

Deno.test("proxy route carries both HTTP and WebSocket traffic", async () => {
  await using up = await dualUpstream("one");
  await using prox = await startWsProxy(`
routes:
  "/app":
    type: proxy
    target: "${up.url}"
`);
  const res = await fetch(`${prox.http}/app/page`);
  assert.equal(await res.text(), "http one");
  const ws = await connect(`${prox.ws}/app/socket`);
  const got = messages(ws, 1);
  ws.send("hi");
  assert.equal((await got)[0].data.toString(), "one: hi");
  ws.close();
  await closed(ws);
});

Deno.test("load_balance route spreads WebSockets and skips a dead target", async () => {
  await using a = await dualUpstream("a");
  await using b = await dualUpstream("b");
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = (l.addr as Deno.NetAddr).port;
  l.close();
  await using prox = await startWsProxy(`
routes:
  "/":
    type: load_balance
    strategy: round_robin
    targets: ["${a.url}", "${b.url}", "http://127.0.0.1:${dead}"]
`);
  const seen: string[] = [];
  for (let i = 0; i < 6; i++) {
    const ws = await connect(`${prox.ws}/`);
    const got = messages(ws, 1);
    ws.send("x");
    seen.push((await got)[0].data.toString());
    ws.close();
    await closed(ws);
  }
  // The dead target's turns are retried on the next one: every connection succeeds.
  assert.ok(seen.filter((s) => s === "a: x").length >= 2, seen.join());
  assert.ok(seen.filter((s) => s === "b: x").length >= 2, seen.join());
  assert.equal(seen.length, 6);
});

Deno.test("shutdown closes live WebSockets with 1001, and logs that code", async () => {
  await using up = await wsUpstream();
  const logger = recordingLogger();
  const prox = await startWsProxy(wsRoute(up.url), { logger });
  const ws = await connect(`${prox.ws}/`);
  const c = closed(ws);
  await waitFor(() => prox.server.snapshot() && up.sockets.size === 1);
  await prox.server.shutdown();
  assert.deepEqual(await c, { code: 1001, reason: "Server shutting down" });
  // The log said 1005 with no reason: what Deno reported, not what Prox had sent.
  const rec = await waitFor(() => logger.records.find((r) => r.msg === "WebSocket closed"));
  assert.deepEqual([rec.code, rec.reason, rec.closedBy], [1001, "Server shutting down", "prox"]);
});

Deno.test("reload keeps WebSockets on unchanged routes and closes changed ones with 1001", async () => {
  await using up = await wsUpstream();
  const routes = (limit: number) => `
routes:
  "/keep":
    type: websocket
    target: "${up.url}"
  "/change":
    type: websocket
    target: "${up.url}"
    max_message_size: ${limit}
`;
  await using prox = await startWsProxy(routes(1000), { file: true });
  const keep = await connect(`${prox.ws}/keep`);
  const change = await connect(`${prox.ws}/change`);
  const changeClosed = closed(change);
  await prox.reload(routes(2000));
  assert.deepEqual(await changeClosed, { code: 1001, reason: "Route changed by a config reload" });
  const got = messages(keep, 1);
  keep.send("still here");
  assert.equal((await got)[0].data.toString(), "still here");
  keep.close();
  await closed(keep);
});

Deno.test("a reload that replaces the listener closes its WebSockets as Prox's close: 1001 logged, upstream told", async () => {
  const upstreamSaw: string[] = [];
  await using up = await wsUpstream((ws) => {
    ws.on("close", (code, reason) => upstreamSaw.push(`${code} ${reason}`));
  });
  const logger = recordingLogger();
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  const config = (port: number) =>
    `listen_addr: "127.0.0.1:${port}"\nhealth_check: { enabled: false }\n${wsRoute(up.url)}`;
  const first = freePort();
  await Deno.writeTextFile(file, config(first));
  const server = await startServer({ path: file }, { logger, metrics: noopMetrics });
  try {
    const ws = await connect(`ws://127.0.0.1:${first}/`);
    const end = closed(ws);
    await Deno.writeTextFile(file, config(freePort()));
    assert.equal((await server.reload()).ok, true);
    assert.deepEqual(await end, { code: 1001, reason: "Server shutting down" });
    // Deno.serve's drain closed it behind the relay's back: "closed by the client" with 1005,
    // and the upstream was told of a normal close (1000, no reason).
    const rec = await waitFor(() => logger.records.find((r) => r.msg === "WebSocket closed"));
    assert.deepEqual([rec.code, rec.reason, rec.closedBy], [1001, "Server shutting down", "prox"]);
    assert.deepEqual(await waitFor(() => upstreamSaw[0]), "1000 Server shutting down (1001)");
  } finally {
    await server.shutdown();
    await Deno.remove(file);
  }
});

Deno.test("a WebSocket whose upstream was still connecting when a reload changed its route is closed with 1001", async () => {
  let admit: ((ok: boolean) => void) | null = null;
  await using slow = await wsUpstream(undefined, {
    verifyClient: (_info: unknown, cb: (ok: boolean) => void) => admit = cb,
  });
  await using next = await wsUpstream();
  await using prox = await startWsProxy(wsRoute(slow.url), { file: true });
  const opening = connect(`${prox.ws}/`);
  await waitFor(() => admit);
  await prox.reload(wsRoute(next.url));
  admit!(true);
  // It stayed on the old target until some later reload changed the route again.
  const ws = await opening;
  let end: { code: number; reason: string } | null = null;
  closed(ws).then((c) => end = c);
  try {
    assert.deepEqual(await waitFor(() => end, { timeoutMs: 3000 }), {
      code: 1001,
      reason: "Route changed by a config reload",
    });
    await waitFor(() => slow.sockets.size === 0);
  } finally {
    ws.terminate();
  }
});

Deno.test("websocket idle_timeout closes a silent connection with 1001", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(wsRoute(up.url, "idle_timeout: 300ms"));
  const ws = await connect(`${prox.ws}/`);
  const t0 = performance.now();
  // Traffic keeps it open…
  for (let i = 0; i < 4; i++) {
    const got = messages(ws, 1);
    ws.send("tick");
    await got;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(ws.readyState, ws.OPEN);
  // …silence closes it.
  assert.deepEqual(await closed(ws), { code: 1001, reason: "Idle timeout" });
  assert.ok(performance.now() - t0 >= 600);
});

Deno.test("a slow client pauses the upstream instead of filling Prox's memory", async () => {
  const MiB = 1 << 20;
  let upstreamSocket: import("./_ws.ts").WsClient | undefined;
  await using up = await wsUpstream((ws) => upstreamSocket = ws);
  await using prox = await startWsProxy(wsRoute(up.url));
  const ws = await connect(`${prox.ws}/`);
  ws.pause(); // stop reading: TCP backpressure towards Prox
  await waitFor(() => upstreamSocket);
  const chunk = Buffer.alloc(MiB, 7);
  for (let i = 0; i < 64; i++) upstreamSocket!.send(chunk, { binary: true });
  // Prox reads until the client's queue passes its high-water mark, then stops; the rest stays
  // queued in the upstream. Loopback socket buffers hold a few MiB on top.
  await new Promise((r) => setTimeout(r, 500));
  const passed = 64 * MiB - upstreamSocket!.bufferedAmount;
  assert.ok(passed < 16 * MiB, `${(passed / MiB).toFixed(1)} MiB left the upstream`);
  const all = messages(ws, 64);
  ws.resume();
  assert.equal((await all).length, 64);
  ws.close();
  await closed(ws);
});

Deno.test("a client that stops reading is given up on: its paused upstream is closed", async () => {
  const KiB = 1 << 10;
  let upstreamSocket: import("./_ws.ts").WsClient | undefined;
  const upstreamSaw: { code: number; reason: string }[] = [];
  await using up = await wsUpstream((ws) => {
    upstreamSocket = ws;
    ws.on("close", (code, reason) => upstreamSaw.push({ code, reason: reason.toString() }));
  });
  const logger = recordingLogger();
  // Stall allowance: two ping intervals plus one 64 KiB message at 64 KiB/s, 2 s.
  await using prox = await startWsProxy(
    wsRoute(up.url, "ping_interval: 500ms", "max_message_size: 65536"),
    { logger },
  );
  const ws = await connect(`${prox.ws}/`);
  ws.pause(); // reads nothing, pongs nothing, keeps its TCP connection
  await waitFor(() => upstreamSocket);
  const chunk = Buffer.alloc(64 * KiB, 7);
  for (let i = 0; i < 512; i++) upstreamSocket!.send(chunk, { binary: true });
  // Prox's ping and close wait behind the unread data: the upstream stayed paused for good.
  const t0 = performance.now();
  const seen = await waitFor(() => upstreamSaw[0], { timeoutMs: 8000 });
  assert.deepEqual(seen, { code: 1000, reason: "Client stopped reading (1001)" });
  assert.ok(performance.now() - t0 >= 1500);
  const rec = await waitFor(() => logger.records.find((r) => r.msg === "WebSocket closed"));
  assert.deepEqual([rec.code, rec.reason, rec.closedBy], [1001, "Client stopped reading", "prox"]);
  // Once it reads again, the client gets what was queued, then the close.
  ws.resume();
  assert.deepEqual(await closed(ws), { code: 1001, reason: "Client stopped reading" });
});

Deno.test("a client flooding an upstream that does not read is closed with 1013", async () => {
  await using up = await wsUpstream((ws) => ws.pause());
  const logger = recordingLogger();
  await using prox = await startWsProxy(
    wsRoute(up.url),
    { logger },
  );
  const ws = await connect(`${prox.ws}/`);
  const c = closed(ws);
  const chunk = Buffer.alloc(1 << 20, 1);
  for (let i = 0; i < 64 && ws.readyState === ws.OPEN; i++) ws.send(chunk);
  // The close frame can be lost to a TCP reset while the client still has megabytes in flight,
  // so the client may see 1006; what Prox decided is in its log.
  const { code } = await c;
  assert.ok(code === 1013 || code === 1006, String(code));
  const closedBy = logger.records.find((r) => r.msg === "WebSocket closed by Prox");
  assert.equal(closedBy?.code, 1013);
  assert.equal(closedBy?.reason, "Upstream is not reading fast enough");
});

Deno.test("websocket ping_interval pings a silent client", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(wsRoute(up.url, "ping_interval: 200ms"));
  const ws = await connect(`${prox.ws}/`);
  const pinged = new Promise((r) => ws.once("ping", r));
  await pinged; // `ws` answers with a pong, so the connection stays up
  assert.equal(ws.readyState, ws.OPEN);
  ws.close();
  await closed(ws);
});

Deno.test("a ping_interval longer than a timer can wait (25 days and more) does not close at once", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(wsRoute(up.url, "ping_interval: 30d"));
  const ws = await connect(`${prox.ws}/`);
  let pinged = false;
  ws.on("ping", () => pinged = true);
  // Deno's ping timers fired at once: a ping, then 1001 "No response from ping frame.".
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(ws.readyState, ws.OPEN);
  const echoed = messages(ws, 1);
  ws.send("still here");
  assert.equal((await echoed)[0].data.toString(), "still here");
  assert.equal(pinged, false);
  ws.close();
  await closed(ws);
});

Deno.test("protocols.websocket_enabled: false answers upgrades with 501", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(`
protocols: { websocket_enabled: false }
routes:
  "/":
    type: websocket
    target: "${up.url}"
`);
  const err = await connect(`${prox.ws}/`).then(() => null, (e) => e);
  assert.equal(err?.status, 501);
  assert.equal(up.requests.length, 0);
});

Deno.test("a finished WebSocket is logged once with who closed it and message counts", async () => {
  await using up = await wsUpstream();
  const logger = recordingLogger();
  await using prox = await startWsProxy(
    wsRoute(up.url),
    { logger },
  );
  const ws = await connect(`${prox.ws}/`);
  const got = messages(ws, 2);
  ws.send("a");
  ws.send("b");
  await got;
  ws.close(4000, "bye");
  await closed(ws);
  const rec = await waitFor(() => logger.records.find((r) => r.msg === "WebSocket closed"));
  assert.equal(rec.code, 4000);
  assert.equal(rec.reason, "bye");
  assert.equal(rec.closedBy, "client");
  assert.equal(rec.messagesFromClient, 2);
  assert.equal(rec.messagesFromUpstream, 2);
  assert.equal(rec.route, "/");
  assert.ok(typeof rec.requestId === "string" && rec.requestId.length > 0);
});

Deno.test("preserve_host: a WebSocket upgrade carries the client's Host upstream", async () => {
  await using up = await startUpstream((req) => {
    const host = req.headers.get("host") ?? "";
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = () => socket.send(host);
    return response;
  });
  await using prox = await startWsProxy(`
routes:
  "/app":
    type: proxy
    target: "${up.url}"
    preserve_host: true
`);
  const ws = await connect(`${prox.ws}/app/socket`);
  const got = messages(ws, 1);
  ws.send("hi");
  assert.equal((await got)[0].data.toString(), new URL(prox.http).host);
  ws.close();
  await closed(ws);
});
