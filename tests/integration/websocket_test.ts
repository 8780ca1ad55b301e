// WebSocket proxying end to end: `ws` (npm) as an independent client and upstream server, the
// real Prox in between.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { waitFor } from "../_harness.ts";
import { rawServer, readRequest, write } from "../_upstream_peers.ts";
import {
  closed,
  connect,
  connectAndWaitClose,
  messages,
  recordingLogger,
  startWsProxy,
  wsRoute,
  wsUpstream,
} from "./_ws.ts";

Deno.test("websocket route relays text and binary in order, with headers and path_rewrite", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(`
routes:
  "/chat":
    type: websocket
    target: "http://127.0.0.1:${up.port}/base"
    path_rewrite: /socket
`);
  const ws = await connect(`${prox.ws}/chat/room?x=1&y=%20`, [], {
    headers: { cookie: "sid=abc", authorization: "Bearer t0k", "x-forwarded-for": "6.6.6.6" },
  });
  const got = messages(ws, 100);
  for (let i = 0; i < 100; i++) {
    if (i % 2) ws.send(`text ${i}`);
    else ws.send(new Uint8Array([i, 0, 255]));
  }
  const all = await got;
  for (let i = 0; i < 100; i++) {
    if (i % 2) {
      assert.equal(all[i].binary, false);
      assert.equal(all[i].data.toString(), `text ${i}`);
    } else {
      assert.equal(all[i].binary, true);
      assert.deepEqual([...all[i].data], [i, 0, 255]);
    }
  }
  const req = up.requests[0];
  assert.equal(req.url, "/base/socket/room?x=1&y=%20");
  assert.equal(req.headers.cookie, "sid=abc");
  assert.equal(req.headers.authorization, "Bearer t0k");
  assert.equal(req.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(req.headers["x-forwarded-proto"], "http");
  assert.ok(req.headers["x-request-id"]);
  ws.close(1000, "done");
  assert.deepEqual(await closed(ws), { code: 1000, reason: "done" });
});

Deno.test("websocket route negotiates the subprotocol with the upstream", async () => {
  await using up = await wsUpstream(undefined, {
    handleProtocols: (offered: Set<string>) => offered.has("v2.chat") ? "v2.chat" : false,
  });
  await using prox = await startWsProxy(wsRoute(up.url));
  const ws = await connect(`${prox.ws}/`, ["v1.chat", "v2.chat"]);
  assert.equal(ws.protocol, "v2.chat");
  assert.equal(up.requests[0].headers["sec-websocket-protocol"], "v1.chat, v2.chat");
  ws.close();
  await closed(ws);
  // No protocol offered: none selected.
  const plain = await connect(`${prox.ws}/`);
  assert.equal(plain.protocol, "");
  plain.close();
  await closed(plain);
});

Deno.test("an upstream choosing a subprotocol the client did not offer gets the client a 502", async () => {
  const upstreamSaw: string[] = [];
  await using up = await wsUpstream((ws) => {
    ws.on("close", (_code, reason) => upstreamSaw.push(reason.toString()));
  }, { handleProtocols: () => "v9.chat" });
  await using prox = await startWsProxy(wsRoute(up.url));
  // The 101 named "v9.chat", which the client then had to refuse.
  await assert.rejects(connect(`${prox.ws}/`, ["v1.chat"]), (err: { status?: number }) => {
    assert.equal(err.status, 502);
    return true;
  });
  assert.deepEqual(await waitFor(() => upstreamSaw[0]), "Subprotocol not offered");
});

Deno.test("an upstream choosing an extension Prox did not offer gets the client a 502", async () => {
  const upstreamSaw: string[] = [];
  await using up = await wsUpstream((ws) => {
    ws.on("close", (_code, reason) => upstreamSaw.push(reason.toString()));
  });
  // Prox offers no extension upstream: a 101 naming one (RFC 6455 §4.1: the client must fail the
  // connection) was taken, and the upstream's compressed frames then failed the session (1011).
  up.server.on(
    "headers",
    (headers) => headers.push("Sec-WebSocket-Extensions: permessage-deflate"),
  );
  await using prox = await startWsProxy(wsRoute(up.url));
  await assert.rejects(connect(`${prox.ws}/`), (err: { status?: number; body?: string }) => {
    assert.equal(err.status, 502);
    assert.match(err.body ?? "", /permessage-deflate/);
    return true;
  });
  assert.deepEqual(await waitFor(() => upstreamSaw[0]), "Extension not offered");
});

Deno.test("websocket close codes and reasons propagate both ways", async () => {
  const upstreamSaw: { code: number; reason: string }[] = [];
  await using up = await wsUpstream((ws) => {
    ws.on("close", (code, reason) => upstreamSaw.push({ code, reason: reason.toString() }));
    ws.on("message", (m) => {
      const [code, ...reason] = m.toString().split(" ");
      ws.close(Number(code), reason.join(" "));
    });
  });
  await using prox = await startWsProxy(wsRoute(up.url));
  // Upstream-initiated, including codes Deno's client API could not send itself.
  for (const code of [1000, 1001, 1008, 1011, 4002]) {
    const ws = await connect(`${prox.ws}/`);
    ws.send(`${code} bye ${code}`);
    assert.deepEqual(await closed(ws), { code, reason: `bye ${code}` });
  }
  // Client-initiated: 1000 and 3000-4999 go through as they are.
  for (const code of [1000, 4001]) {
    const ws = await connect(`${prox.ws}/`);
    ws.close(code, `client ${code}`);
    await closed(ws);
    await waitFor(() => upstreamSaw.find((s) => s.reason === `client ${code}`));
    assert.equal(upstreamSaw.find((s) => s.reason === `client ${code}`)!.code, code);
  }
  // Other client codes reach the upstream as 1000 with the code in the reason.
  const ws = await connect(`${prox.ws}/`);
  ws.close(1001, "leaving");
  await closed(ws);
  const seen = await waitFor(() => upstreamSaw.find((s) => s.reason.startsWith("leaving")));
  assert.deepEqual(seen, { code: 1000, reason: "leaving (1001)" });
  // A client that drops without a close frame is no normal closure (Deno reports code 0).
  const gone = await connect(`${prox.ws}/`);
  gone.terminate();
  const lost = await waitFor(() => upstreamSaw.find((s) => s.reason.includes("(1006)")));
  assert.deepEqual(lost, { code: 1000, reason: "Client connection lost (1006)" });
});

Deno.test("a client's burst of messages followed by its close all reach the upstream before the close", async () => {
  const received: number[] = [];
  let upstreamClose: { code: number; reason: string } | null = null;
  await using up = await wsUpstream((ws) => {
    ws.on("message", (m) => received.push(Number(m.toString().slice(1000))));
    ws.on("close", (code, reason) => upstreamClose = { code, reason: reason.toString() });
  });
  await using prox = await startWsProxy(wsRoute(up.url));
  const ws = await connect(`${prox.ws}/`);
  // The close frame overtook the writes still queued towards the upstream: about half were lost.
  const n = 2000;
  for (let i = 0; i < n; i++) ws.send("x".repeat(1000) + i);
  ws.close(1000, "bye");
  await closed(ws);
  await waitFor(() => upstreamClose);
  assert.equal(received.length, n);
  assert.deepEqual(received.slice(-3), [n - 3, n - 2, n - 1]);
  assert.deepEqual(upstreamClose, { code: 1000, reason: "bye" });
});

Deno.test("a client that never answers pings is closed once, by Prox", async () => {
  await using up = await wsUpstream();
  const logger = recordingLogger();
  await using prox = await startWsProxy(wsRoute(up.url, "ping_interval: 1s"), { logger });
  const ws = await connect(`${prox.ws}/`, [], { autoPong: false });
  assert.equal((await closed(ws)).code, 1001);
  const closes = () => logger.records.filter((r) => r.msg === "WebSocket closed");
  await waitFor(() => closes().length > 0 && up.sockets.size === 0);
  // Deno reported its own close twice, right after each other: counted twice, the gauge of open
  // connections went negative. A later connection's close comes after any such repeat.
  const later = await connect(`${prox.ws}/`);
  later.close(1000, "later");
  await waitFor(() => closes().some((r) => r.reason === "later"));
  assert.deepEqual(closes().map((r) => [r.code, r.closedBy]), [[1001, "prox"], [1000, "client"]]);
});

Deno.test("websocket messages over max_message_size close both sides with 1009", async () => {
  const upstreamSaw: number[] = [];
  await using up = await wsUpstream((ws) => {
    ws.on("close", (code) => upstreamSaw.push(code));
    ws.on("message", (m) => {
      if (m.toString() === "big please") ws.send(Buffer.alloc(2000));
      else ws.send(m);
    });
  });
  await using prox = await startWsProxy(wsRoute(up.url, "max_message_size: 1024"));
  // Exactly at the limit passes, one byte over does not (client → upstream).
  const ws = await connect(`${prox.ws}/`);
  const echoed = messages(ws, 1);
  ws.send("é".repeat(512)); // 1024 UTF-8 bytes
  assert.equal((await echoed)[0].data.toString(), "é".repeat(512));
  ws.send("x".repeat(1025));
  assert.equal((await closed(ws)).code, 1009);
  // Upstream → client.
  const ws2 = await connect(`${prox.ws}/`);
  ws2.send("big please");
  assert.equal((await closed(ws2)).code, 1009);
  assert.deepEqual(prox.tooBig, ["/", "/"]);
  await waitFor(() => upstreamSaw.length === 2);
  assert.deepEqual(upstreamSaw, [1000, 1000]);
});

Deno.test("websocket upstream death closes the client with 1011", async () => {
  await using up = await wsUpstream((ws) => ws.on("message", () => ws.terminate()));
  await using prox = await startWsProxy(wsRoute(up.url));
  const ws = await connect(`${prox.ws}/`);
  ws.send("die");
  assert.equal((await closed(ws)).code, 1011);
});

Deno.test("websocket to an unreachable upstream closes the client with 1014", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await using prox = await startWsProxy(wsRoute(`ws://127.0.0.1:${port}`));
  const c = await connectAndWaitClose(`${prox.ws}/`);
  assert.equal(c.code, 1014);
  assert.equal(c.reason, "Bad gateway");
});

Deno.test("websocket to a name that does not resolve: 1014, logged as HTTP upstreams are", async () => {
  const logger = recordingLogger();
  // RFC 6761: .invalid never resolves. The log said only "dns error".
  await using prox = await startWsProxy(wsRoute("ws://no-such-host.invalid:8080"), { logger });
  const c = await connectAndWaitClose(`${prox.ws}/`);
  assert.equal(c.code, 1014);
  const line = logger.records.find((r) => r.msg === "WebSocket upstream unreachable");
  assert.match(
    String(line?.error),
    /^Cannot connect to upstream "ws:\/\/no-such-host\.invalid:8080": cannot resolve host \(/,
  );
});

Deno.test("websocket upgrade refused by the upstream returns its status to the client", async () => {
  await using up = await wsUpstream(undefined, {
    verifyClient: (_info: unknown, cb: (ok: boolean, code?: number) => void) => cb(false, 403),
  });
  await using prox = await startWsProxy(wsRoute(up.url));
  const err = await connect(`${prox.ws}/`).then(() => null, (e) => e);
  assert.equal(err?.status, 403);
  assert.match(err.body, /refused the WebSocket upgrade/);
});

Deno.test("websocket route answers a plain HTTP request with 400", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(wsRoute(up.url));
  const res = await fetch(`${prox.http}/`);
  assert.equal(res.status, 400);
  assert.match(await res.text(), /only supports WebSocket/);
});

Deno.test("websocket messages over max_frame_size but within max_message_size are relayed (Rust Prox configs: 64 KiB frames, 1 MiB messages)", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(
    wsRoute(up.url, "max_frame_size: 100", "max_message_size: 1000"),
  );
  const ws = await connect(`${prox.ws}/`);
  const echoed = messages(ws, 2);
  ws.send(new Uint8Array(300));
  // Sent as three 100-byte frames: one 300-byte message.
  ws.send(new Uint8Array(100), { fin: false });
  ws.send(new Uint8Array(100), { fin: false });
  ws.send(new Uint8Array(100), { fin: true });
  assert.deepEqual((await echoed).map((m) => m.data.byteLength), [300, 300]);
  ws.send(new Uint8Array(1001));
  assert.equal((await closed(ws)).code, 1009);
  assert.deepEqual(prox.tooBig, ["/"]);
});

Deno.test("a malformed WebSocket handshake gets 400, an unknown version 426", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(wsRoute(up.url));
  const headers = {
    connection: "Upgrade",
    upgrade: "websocket",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "8",
  };
  const old = await fetch(`${prox.http}/`, { headers });
  assert.equal(old.status, 426);
  assert.equal(old.headers.get("sec-websocket-version"), "13");
  await old.body?.cancel();
  const noKey = await fetch(`${prox.http}/`, {
    headers: { ...headers, "sec-websocket-version": "13", "sec-websocket-key": "" },
  });
  assert.equal(noKey.status, 400);
  await noKey.body?.cancel();
  // The same subprotocol offered twice (RFC 6455 §4.1): 400, not a 500 from Deno's client.
  const twice = await fetch(`${prox.http}/`, {
    headers: { ...headers, "sec-websocket-version": "13", "sec-websocket-protocol": "c, c" },
  });
  assert.equal(twice.status, 400);
  await twice.body?.cancel();
  assert.equal(up.requests.length, 0);
});

/** This process's open sockets (Prox, its upstreams and the clients all run here). */
function openSockets(): number {
  return [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
    try {
      return Deno.readLinkSync(`/proc/self/fd/${e.name}`).startsWith("socket:");
    } catch {
      return false;
    }
  }).length;
}

Deno.test("a client that leaves before its upgrade is answered leaves no connection behind", async () => {
  // An upstream that accepts the handshake after 150 ms, and one that drops it after 150 ms (the
  // client gets 1014 then): by then the clients have gone.
  await using slow = await wsUpstream(undefined, {
    verifyClient: (_info: unknown, cb: (ok: boolean) => void) => setTimeout(() => cb(true), 150),
  });
  await using dropping = rawServer(async (c) => {
    await readRequest(c);
    await new Promise((r) => setTimeout(r, 150));
  });
  await using prox = await startWsProxy(`
routes:
  /slow: { type: websocket, target: "${slow.url}" }
  /dropping: { type: websocket, target: "${dropping.url.replace("http", "ws")}" }
`);
  const before = openSockets();
  for (const path of ["/slow", "/dropping", "/slow", "/dropping"]) {
    // The handshake, then the client closes its connection at once.
    const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    await write(
      c,
      `GET ${path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    c.close();
  }
  // Deno 2.9.6 holds the connection of a client upgraded after it left (CLOSE-WAIT) for good.
  await waitFor(() => openSockets() <= before, {
    what: "Prox's side of the clients' connections closed",
    timeoutMs: 5_000,
  });
  assert.equal(slow.sockets.size, 0, "the upstream's WebSocket was closed too");
});
