// WebSockets over HTTP/2 (RFC 8441) on Prox's own HTTP/2 engine, with Node's node:http2 as the
// client (extended CONNECT, masked frames it encodes itself) over TLS (ALPN h2) and h2c, and a
// `ws` upstream: what is announced, what is carried both ways, limits, closes, refusals,
// multiplexing with ordinary requests, flow control, reloads.
import assert from "node:assert/strict";
import { interopTest, ROOT, waitFor } from "../_harness.ts";
import { onProxEngines } from "./_proxy.ts";
import { recordingLogger, startWsProxy, wsUpstream } from "./_ws.ts";
import { h2wsClient, on } from "./_h2ws.ts";
import type { H2WsClient } from "./_h2ws.ts";

const TLS_DIR = `${ROOT}/tests/fixtures/tls`;
const TLS = { cert: `${TLS_DIR}/cert.pem`, key: `${TLS_DIR}/key.pem` };
const CA = `${TLS_DIR}/ca.pem`;

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
