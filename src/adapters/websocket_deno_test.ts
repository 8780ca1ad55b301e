// The relay of createWebSocketProxy against a real upstream WebSocket, with a client socket whose
// queue the test drains by hand (the shape an HTTP/2 upgrade hands the proxy).
import assert from "node:assert/strict";
import { waitFor } from "../../tests/_harness.ts";
import { noopMetrics, silentLogger } from "../ports.ts";
import { createWebSocketProxy } from "./websocket_deno.ts";
import { WS_UPGRADE } from "./h2/websocket.ts";
import type { ClientSocket } from "./h2/websocket.ts";

/** A client socket that queues what it is sent; `take` reads the oldest message off the queue. */
function slowClient() {
  const queue: number[] = [];
  const closes: { code?: number; reason?: string; delivered: number }[] = [];
  let delivered = 0;
  const socket: ClientSocket & { readyState: number; take(): void } = {
    readyState: 0,
    get bufferedAmount() {
      return queue.reduce((a, b) => a + b, 0);
    },
    binaryType: "arraybuffer",
    onopen: null,
    onmessage: null,
    onclose: null,
    onerror: null,
    send(data) {
      queue.push(typeof data === "string" ? data.length : data.byteLength);
    },
    close(code, reason) {
      closes.push({ code, reason, delivered });
      socket.readyState = 3;
      queueMicrotask(() => socket.onclose?.({ code: code ?? 1005, reason } as CloseEvent));
    },
    take() {
      if (queue.shift() !== undefined) delivered++;
    },
  };
  return { socket, closes, delivered: () => delivered };
}

Deno.test("websocket relay: idle_timeout does not close a connection whose client is still taking queued messages", async () => {
  const N = 12;
  await using up = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => {
      for (let i = 0; i < N; i++) socket.send("x".repeat(100));
    };
    return response;
  });
  const proxy = createWebSocketProxy({
    logger: silentLogger,
    metrics: noopMetrics,
    highWater: 550,
    lowWater: 50,
  });
  const client = slowClient();
  const req = new Request("http://prox/") as Request & { [WS_UPGRADE]?: unknown };
  req[WS_UPGRADE] = () => ({ socket: client.socket, response: new Response(null) });
  await proxy.proxy(req, {
    url: new URL(`ws://127.0.0.1:${up.addr.port}/`),
    headers: new Headers(),
    protocols: [],
    route: "r",
    connectTimeout: 5_000,
    limits: { maxMessageSize: 1 << 20, maxFrameSize: 0, idleTimeout: 400, pingInterval: 0 },
  });
  client.socket.readyState = 1;
  client.socket.onopen?.(new Event("open"));
  // The client takes one message every 100 ms: all twelve take 1.2 s, three times idle_timeout,
  // but never 400 ms go by without one delivered (the upstream waits while 550 bytes are queued).
  const reader = setInterval(() => client.socket.take(), 100);
  try {
    await waitFor(() => client.closes.length > 0 || client.delivered() === N, {
      what: "all delivered or a close",
    });
    assert.deepEqual(client.closes, [], "no close while messages were being taken");
    // Then silence: idle_timeout closes it.
    await waitFor(() => client.closes.length > 0, { what: "the idle close" });
    assert.deepEqual(client.closes[0], { code: 1001, reason: "Idle timeout", delivered: N });
  } finally {
    clearInterval(reader);
    proxy.closeAll(1001, "test over");
    await waitFor(() => proxy.size() === 0);
  }
});
