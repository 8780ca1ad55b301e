// WebSockets over HTTP/2 (RFC 8441) on Prox's own HTTP/2 engine, with Node's node:http2 as the
// client (extended CONNECT, masked frames it encodes itself) over TLS (ALPN h2) and h2c, and a
// `ws` upstream: what is announced, what is carried both ways, limits, closes, refusals,
// multiplexing with ordinary requests, flow control, reloads.
import assert from "node:assert/strict";
import { chromiumDumpDom, interopTest, ROOT, startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines } from "./_proxy.ts";
import { closed, echo, recordingLogger, startWsProxy, wsRoute, wsUpstream } from "./_ws.ts";
import { h2wsClient, on } from "./_h2ws.ts";
import type { H2WsClient } from "./_h2ws.ts";

const TLS_DIR = `${ROOT}/tests/fixtures/tls`;
const TLS = { cert: `${TLS_DIR}/cert.pem`, key: `${TLS_DIR}/key.pem` };
const CA = `${TLS_DIR}/ca.pem`;

/** An HTTP upstream that answers `body` to everything. */
function startUpstreamText(body: string) {
  return startUpstream(() => new Response(body));
}

// The engine is under test, even when the suite runs on Deno.serve.
onProxEngines();

/** The Node client on Prox: TLS (ALPN h2) unless `h2c`; waits for the server's SETTINGS. */
async function client(port: number, h2c = false): Promise<H2WsClient> {
  const c = await h2wsClient(
    h2c ? `http://127.0.0.1:${port}` : `https://127.0.0.1:${port}`,
    h2c ? undefined : CA,
  );
  const settings = await c.next(on("settings"));
  assert.equal(settings.enableConnectProtocol, true, "SETTINGS_ENABLE_CONNECT_PROTOCOL announced");
  return c;
}

for (const h2c of [false, true]) {
  const kind = h2c ? "h2c" : "TLS";
  interopTest(
    `HTTP/2 WebSocket (${kind}): echo of text and binary both ways, close from the client`,
    [
      "node",
    ],
    async () => {
      await using up = await wsUpstream();
      const logger = recordingLogger();
      await using prox = await startWsProxy(
        `routes:\n  "/ws":\n    type: websocket\n    target: "${up.url}"\n`,
        { tls: h2c ? undefined : TLS, logger },
      );
      await using c = await client(prox.port, h2c);
      c.send({ op: "open", id: 1, path: "/ws" });
      const res = await c.next(on("response", 1));
      assert.equal(res.status, 200);
      assert.equal((res.headers as Record<string, string>)["sec-websocket-accept"], undefined);
      c.send({ op: "text", id: 1, data: "héllo" });
      assert.equal((await c.next(on("text", 1))).data, "héllo");
      c.send({ op: "binary", id: 1, size: 200_000 });
      const sent = await c.next(on("sent", 1));
      const got = await c.next(on("binary", 1));
      assert.equal(got.size, 200_000);
      assert.equal(got.sha, sent.sha);
      // The upstream saw an HTTP/1.1 handshake with Prox's forwarding headers.
      const hs = up.requests[0];
      assert.equal(hs.headers["sec-websocket-extensions"], undefined);
      assert.equal(hs.headers["x-forwarded-proto"], h2c ? "http" : "https");
      c.send({ op: "close", id: 1, code: 1000, reason: "done" });
      const cl = await c.next(on("close", 1));
      assert.equal(cl.code, 1000);
      // END_STREAM follows the close handshake.
      await c.next(on("end", 1));
      c.send({ op: "end", id: 1 });
      const sc = await c.next(on("stream_close", 1));
      assert.equal(sc.rstCode, 0);
      await waitFor(() => up.sockets.size === 0);
      const line = await waitFor(() => logger.records.find((r) => r.msg === "WebSocket closed"));
      assert.equal(line.code, 1000);
      assert.equal(line.closedBy, "client");
    },
  );
}

interopTest("HTTP/2 WebSocket: the upstream's subprotocol choice reaches the client", [
  "node",
], async () => {
  await using up = await wsUpstream(echo, {
    handleProtocols: (offered: Set<string>) => offered.has("v2.chat") ? "v2.chat" : false,
  });
  await using prox = await startWsProxy(wsRoute(up.url), { tls: TLS });
  await using c = await client(prox.port);
  c.send({ op: "open", id: 1, headers: { "sec-websocket-protocol": "v1.chat, v2.chat" } });
  const res = await c.next(on("response", 1));
  assert.equal(res.status, 200);
  assert.equal((res.headers as Record<string, string>)["sec-websocket-protocol"], "v2.chat");
  assert.equal(up.requests[0].headers["sec-websocket-protocol"], "v1.chat, v2.chat");
  c.send({ op: "text", id: 1, data: "x" });
  assert.equal((await c.next(on("text", 1))).data, "x");
});

interopTest("HTTP/2 WebSocket: a message past max_message_size closes both sides with 1009", [
  "node",
], async () => {
  let upstreamClose: Promise<{ code: number; reason: string }> | undefined;
  await using up = await wsUpstream((ws) => {
    upstreamClose = closed(ws);
    echo(ws);
  });
  await using prox = await startWsProxy(wsRoute(up.url, "max_message_size: 1000"), { tls: TLS });
  await using c = await client(prox.port);
  c.send({ op: "open", id: 1 });
  await c.next(on("response", 1));
  c.send({ op: "binary", id: 1, size: 1000 });
  assert.equal((await c.next(on("binary", 1))).size, 1000);
  // 100 KiB: refused from its frame header, before its payload is taken in.
  c.send({ op: "binary", id: 1, size: 100_000 });
  const cl = await c.next(on("close", 1));
  assert.equal(cl.code, 1009);
  c.send({ op: "close", id: 1, code: 1009 });
  await c.next(on("end", 1));
  assert.deepEqual(prox.tooBig, ["/"]);
  const u = await waitFor(() => upstreamClose);
  assert.match((await u).reason, /1009/);
});

interopTest("HTTP/2 WebSocket: the upstream's close reaches the client, then END_STREAM", [
  "node",
], async () => {
  await using up = await wsUpstream((ws) => ws.on("message", () => ws.close(4001, "bye")));
  await using prox = await startWsProxy(wsRoute(up.url), { tls: TLS });
  await using c = await client(prox.port);
  c.send({ op: "open", id: 1 });
  await c.next(on("response", 1));
  c.send({ op: "text", id: 1, data: "close please" });
  const cl = await c.next(on("close", 1));
  assert.deepEqual([cl.code, cl.reason], [4001, "bye"]);
  // The client answers the close; Prox's side then ends.
  c.send({ op: "close", id: 1, code: 4001 });
  await c.next(on("end", 1));
  c.send({ op: "end", id: 1 });
  assert.equal((await c.next(on("stream_close", 1))).rstCode, 0);
});

interopTest("HTTP/2 WebSocket: refusals (upstream's status, not a WebSocket route, bad requests)", [
  "node",
], async () => {
  await using up = await wsUpstream(echo, {
    verifyClient: (_info: unknown, cb: (ok: boolean, code?: number) => void) => cb(false, 403),
  });
  await using prox = await startWsProxy(
    `routes:
  "/ws":
    type: websocket
    target: "${up.url}"
  "/static":
    type: static
    root: "${ROOT}/static"
`,
    { tls: TLS },
  );
  await using c = await client(prox.port);
  // The upstream's 403 is the client's.
  c.send({ op: "open", id: 1, path: "/ws" });
  const refused = await c.next(on("response", 1));
  assert.equal(refused.status, 403);
  await c.next(on("end", 1));
  // A static route does not serve WebSockets: not a 200 that would open one.
  c.send({ op: "open", id: 3, path: "/static/" });
  const notWs = await c.next(on("response", 3));
  assert.equal(notWs.status, 400);
  assert.match((await c.next(on("end", 3))).body as string, /does not serve WebSockets/);
  // Sec-WebSocket-Version other than 13: 400 naming 13 (RFC 6455 §4.4).
  c.send({ op: "open", id: 5, path: "/ws", headers: { "sec-websocket-version": "8" } });
  const version = await c.next(on("response", 5));
  assert.equal(version.status, 400);
  assert.equal((version.headers as Record<string, string>)["sec-websocket-version"], "13");
  // Another :protocol: 501; a CONNECT without :protocol: 405, as before.
  c.send({ op: "open", id: 7, path: "/ws", protocol: "webtransport" });
  assert.equal((await c.next(on("response", 7))).status, 501);
  c.send({ op: "open", id: 9, protocol: null });
  assert.equal((await c.next(on("response", 9))).status, 405);
  // An ordinary request on the same connection is still served.
  c.send({ op: "get", id: 11, path: "/static/" });
  assert.equal((await c.next(on("get", 11))).status, 200);
});

interopTest("HTTP/2 WebSocket: several WebSockets and ordinary requests share one connection", [
  "node",
], async () => {
  await using up = await wsUpstream();
  await using http = await startUpstreamText("plain answer");
  await using prox = await startWsProxy(
    `routes:
  "/ws":
    type: websocket
    target: "${up.url}"
  "/":
    type: proxy
    target: "${http.url}"
`,
    { tls: TLS },
  );
  await using c = await client(prox.port);
  const ids = [1, 3, 5, 7, 9];
  for (const id of ids) c.send({ op: "open", id, path: "/ws" });
  for (const id of ids) assert.equal((await c.next(on("response", id))).status, 200);
  for (let round = 0; round < 3; round++) {
    for (const id of ids) c.send({ op: "text", id, data: `${id}:${round}` });
    c.send({ op: "get", id: 100 + round, path: "/plain" });
  }
  for (let round = 0; round < 3; round++) {
    for (const id of ids) assert.equal((await c.next(on("text", id))).data, `${id}:${round}`);
    const g = await c.next(on("get", 100 + round));
    assert.deepEqual([g.status, g.body], [200, "plain answer"]);
  }
  assert.equal(up.sockets.size, ids.length);
  // The client resets one stream: its upstream is let go, the others go on.
  c.send({ op: "reset", id: 3 });
  await waitFor(() => up.sockets.size === ids.length - 1);
  c.send({ op: "text", id: 5, data: "still here" });
  assert.equal((await c.next(on("text", 5))).data, "still here");
});

interopTest("HTTP/2 WebSocket: a reload closes those of a changed route and keeps the others", [
  "node",
], async () => {
  await using up = await wsUpstream();
  await using other = await wsUpstream();
  const routes = (changed: string) =>
    `routes:\n  "/keep":\n    type: websocket\n    target: "${up.url}"\n  "/change":\n    type: websocket\n    target: "${changed}"\n`;
  await using prox = await startWsProxy(routes(up.url), { tls: TLS, file: true });
  await using c = await client(prox.port);
  c.send({ op: "open", id: 1, path: "/keep" });
  c.send({ op: "open", id: 3, path: "/change" });
  await c.next(on("response", 1));
  await c.next(on("response", 3));
  await prox.reload(routes(other.url));
  const cl = await c.next(on("close", 3));
  assert.deepEqual([cl.code, cl.reason], [1001, "Route changed by a config reload"]);
  c.send({ op: "close", id: 3, code: 1001 });
  await c.next(on("end", 3));
  c.send({ op: "text", id: 1, data: "kept" });
  assert.equal((await c.next(on("text", 1))).data, "kept");
  // Shutdown closes the rest with 1001 (closeAll).
  const shut = prox.server.shutdown();
  assert.equal((await c.next(on("close", 1))).code, 1001);
  c.send({ op: "close", id: 1, code: 1001 });
  await shut;
});

const PAGE = `<!doctype html><title>ws</title><body><p id="out">pending</p><script>
const out = document.getElementById("out");
const ws = new WebSocket("wss://" + location.host + "/live/feed", ["chat.v1"]);
ws.binaryType = "arraybuffer";
ws.onopen = () => { ws.send("hello over h2"); ws.send(new Uint8Array([9, 8, 7])); };
const got = [];
ws.onmessage = (e) => {
  got.push(typeof e.data === "string" ? e.data : "bytes:" + new Uint8Array(e.data).join(","));
  if (got.length === 2) ws.close(4000, "page done");
};
ws.onclose = (e) => { out.textContent = "done " + ws.protocol + " " + got.join("|") + " " + e.code; };
ws.onerror = () => { out.textContent = "error"; };
</script><script src="/wait.js"></script></body>`;

interopTest("headless Chromium opens its WebSocket over HTTP/2 (RFC 8441) when Prox announces it", [
  "chromium",
], async () => {
  const upstreamSaw: string[] = [];
  await using up = await wsUpstream((ws) => {
    ws.on("message", (data, binary) => {
      upstreamSaw.push(binary ? "binary" : data.toString());
      ws.send(data, { binary });
    });
    ws.on("close", (code, reason) => upstreamSaw.push(`close ${code} ${reason}`));
  }, { handleProtocols: (p: Set<string>) => p.has("chat.v1") ? "chat.v1" : false });
  // /wait.js holds the page's load (and so --dump-dom) until the WebSocket has closed.
  await using page = await startUpstream(async (req) => {
    if (new URL(req.url).pathname !== "/wait.js") {
      return new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } });
    }
    await waitFor(() => upstreamSaw.some((s) => s.startsWith("close")), { timeoutMs: 20_000 })
      .catch(() => {});
    await new Promise((r) => setTimeout(r, 200)); // the page's onclose runs
    return new Response("", { headers: { "content-type": "text/javascript" } });
  });
  const logger = recordingLogger();
  await using prox = await startWsProxy(
    `routes:\n  "/":\n    type: proxy\n    target: "${page.url}"\n  "/live":\n    type: websocket\n    target: "${up.url}"\n`,
    { tls: TLS, logger },
  );
  const spki = Deno.readTextFileSync(`${TLS_DIR}/spki.txt`).trim();
  const out = await chromiumDumpDom(`https://localhost:${prox.port}/`, {
    extra: [
      `--ignore-certificate-errors-spki-list=${spki}`,
      "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND",
    ],
  });
  assert.equal(out.code, 0, out.stderr.slice(-2000));
  assert.match(out.stdout, /<p id="out">done chat\.v1 hello over h2\|bytes:9,8,7 4000<\/p>/);
  await waitFor(() => upstreamSaw.includes("close 4000 page done"));
  // The access log says which protocol carried the handshake: HTTP/2's extended CONNECT.
  const access = logger.records.filter((r) => r.msg === "access" && r.path === "/live/feed");
  assert.equal(access.length, 1, JSON.stringify(logger.records.filter((r) => r.msg === "access")));
  assert.equal(access[0].protocol, "h2");
  assert.equal(access[0].status, 101);
});

interopTest("HTTP/2 WebSocket: the route's ip_access and rate limit apply as over HTTP/1.1", [
  "node",
], async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(
    `routes:
  "/denied":
    type: websocket
    target: "${up.url}"
    ip_access: { deny: ["127.0.0.1/32"] }
  "/limited":
    type: websocket
    target: "${up.url}"
    rate_limit: { requests: 1, period: 1m, by: ip }
`,
    { tls: TLS },
  );
  await using c = await client(prox.port);
  c.send({ op: "open", id: 1, path: "/denied" });
  assert.equal((await c.next(on("response", 1))).status, 403);
  c.send({ op: "open", id: 3, path: "/limited" });
  assert.equal((await c.next(on("response", 3))).status, 200);
  c.send({ op: "open", id: 5, path: "/limited" });
  assert.equal((await c.next(on("response", 5))).status, 429);
  assert.equal(up.requests.length, 1);
});

interopTest("HTTP/2 WebSocket: upgrades on a load_balance route are balanced over its targets", [
  "node",
], async () => {
  await using a = await wsUpstream();
  await using b = await wsUpstream();
  await using prox = await startWsProxy(
    `routes:
  "/":
    type: load_balance
    strategy: round_robin
    targets: ["http://127.0.0.1:${a.port}", "http://127.0.0.1:${b.port}"]
`,
    { tls: TLS },
  );
  await using c = await client(prox.port);
  for (const id of [1, 3, 5, 7]) {
    c.send({ op: "open", id, path: "/app" });
    assert.equal((await c.next(on("response", id))).status, 200);
    c.send({ op: "text", id, data: `via ${id}` });
    assert.equal((await c.next(on("text", id))).data, `via ${id}`);
  }
  assert.deepEqual([a.requests.length, b.requests.length], [2, 2]);
  assert.equal(a.requests[0].url, "/app");
});

interopTest(
  "HTTP/2 WebSocket: upstream_pool limits hold: past the limit an upgrade waits or is shed",
  [
    "node",
  ],
  async () => {
    await using up = await wsUpstream();
    await using prox = await startWsProxy(
      `upstream_pool: { max_connections_per_upstream: 1, queue_limit: 1, queue_timeout: 60s }
routes: { "/": { type: proxy, target: "http://127.0.0.1:${up.port}" } }
`,
      { tls: TLS },
    );
    await using c = await client(prox.port);
    c.send({ op: "open", id: 1 });
    assert.equal((await c.next(on("response", 1))).status, 200);
    // The one connection is taken: the next waits, the one after is shed.
    c.send({ op: "open", id: 3 });
    c.send({ op: "open", id: 5 });
    const shed = await c.next(on("response", 5));
    assert.equal(shed.status, 503);
    assert.equal((shed.headers as Record<string, string>)["retry-after"], "1");
    assert.equal(up.requests.length, 1);
    // The first closes: the waiting one gets its connection.
    c.send({ op: "close", id: 1, code: 1000 });
    assert.equal((await c.next(on("response", 3))).status, 200);
    c.send({ op: "text", id: 3, data: "after" });
    assert.equal((await c.next(on("text", 3))).data, "after");
    assert.equal(up.requests.length, 2);
  },
);
