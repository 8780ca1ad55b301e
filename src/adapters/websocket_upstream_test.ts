import assert from "node:assert/strict";
import type { UpstreamTls, WebSocketProxyRequest } from "../ports.ts";
import {
  byteLength,
  clip,
  connectUpstream,
  exceeds,
  MESSAGE_COST,
  upstreamClose,
} from "./websocket_upstream.ts";

Deno.test("upstreamClose passes 1000 and 3000-4999, maps other codes to 1000 with the code, keeps 1005 (no code)", () => {
  assert.deepEqual(upstreamClose(1000, "bye"), { code: 1000, reason: "bye" });
  assert.deepEqual(upstreamClose(4001, "app"), { code: 4001, reason: "app" });
  assert.deepEqual(upstreamClose(1001, "leaving"), { code: 1000, reason: "leaving (1001)" });
  assert.deepEqual(upstreamClose(1009, ""), { code: 1000, reason: "Message too big (1009)" });
  assert.deepEqual(upstreamClose(1006, ""), {
    code: 1000,
    reason: "Client connection lost (1006)",
  });
  assert.deepEqual(upstreamClose(2999, ""), { code: 1000, reason: "Closed (2999)" });
  // 1005: the client's close frame had no code; the upstream's has none either.
  assert.deepEqual(upstreamClose(1005, ""), { code: 1005, reason: "" });
});

Deno.test("clip keeps close reasons within 123 UTF-8 bytes without splitting characters", () => {
  assert.equal(clip("short"), "short");
  assert.equal(clip("x".repeat(200)).length, 123);
  const euros = clip("€".repeat(50)); // 3 bytes each
  assert.equal(euros, "€".repeat(41));
  assert.equal(new TextEncoder().encode(upstreamClose(1001, "y".repeat(130)).reason).length, 123);
});

Deno.test("exceeds measures text in UTF-8 bytes and binary in bytes", () => {
  assert.equal(exceeds("a".repeat(10), 10), false);
  assert.equal(exceeds("a".repeat(11), 10), true);
  assert.equal(exceeds("é".repeat(5), 10), false); // 10 bytes
  assert.equal(exceeds("é".repeat(6), 10), true); // 12 bytes, 6 code units
  assert.equal(exceeds("😀".repeat(3), 12), false); // 12 bytes, 6 code units
  assert.equal(exceeds("😀".repeat(3), 11), true);
  assert.equal(exceeds(new Uint8Array(10), 10), false);
  assert.equal(exceeds(new Uint8Array(11), 10), true);
  assert.equal(byteLength("é"), 2);
});

Deno.test("connectUpstream: a wss upstream's TLS failure is worded as HTTP upstreams' are", async () => {
  const dir = new URL("../../tests/fixtures/tls/", import.meta.url);
  const read = (f: string) => Deno.readTextFileSync(new URL(f, dir));
  const upgrade = (req: Request) => Deno.upgradeWebSocket(req).response;
  await using signed = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: read("cert.pem"),
    key: read("key.pem"),
    onListen() {},
  }, upgrade);
  await using plain = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, upgrade);
  const limits = {
    maxMessageSize: 1 << 20,
    maxFrameSize: 1 << 20,
    idleTimeout: 0,
    pingInterval: 0,
  } as unknown as WebSocketProxyRequest["limits"];
  const fails = (port: number, tls?: UpstreamTls) =>
    connectUpstream({
      url: new URL(`wss://localhost:${port}/`),
      headers: new Headers(),
      protocols: [],
      route: "/",
      connectTimeout: 2_000,
      tls,
      limits,
    }).then(() => "opened", (e: Error) => e.message);
  const at = (port: number) => `Cannot connect to upstream "wss://localhost:${port}": `;
  // Deno's own clients (the default one, and the one with a CA file).
  for (const tls of [undefined, { caCerts: [read("stranger.pem")] }]) {
    assert.match(
      await fails(signed.addr.port, tls),
      new RegExp(`^${at(signed.addr.port)}TLS certificate rejected \\(.*UnknownIssuer`),
    );
    assert.match(
      await fails(plain.addr.port, tls),
      new RegExp(`^${at(plain.addr.port)}no TLS there, the port may serve plain HTTP`),
    );
  }
});

Deno.test("connectUpstream: queued messages count toward buffered() however small, so the 1013 cap bounds their number", async () => {
  await using up = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => Deno.upgradeWebSocket(req).response,
  );
  const socket = await connectUpstream({
    url: new URL(`ws://127.0.0.1:${up.addr.port}/`),
    headers: new Headers(),
    protocols: [],
    route: "/",
    connectTimeout: 2_000,
    limits: { maxMessageSize: 1 << 20 } as unknown as WebSocketProxyRequest["limits"],
  });
  assert.ok(!("refused" in socket));
  // Written one at a time: all but the first wait in the stream's queue, each holding memory
  // (the queue's entry, its promise) whatever its length. Empty ones counted nothing.
  for (let i = 0; i < 10_000; i++) socket.send("");
  assert.ok(socket.buffered() >= 10_000 * MESSAGE_COST, String(socket.buffered()));
  const closed = Promise.withResolvers<void>();
  socket.start({ message() {}, closed: () => closed.resolve() });
  socket.close(1000, "done", { flush: true });
  await closed.promise;
  assert.equal(socket.buffered(), 0);
});

Deno.test("connectUpstream: an upstream flooding empty messages before the client opens is cut off", async () => {
  const dir = new URL("../../tests/fixtures/tls/", import.meta.url);
  const read = (f: string) => Deno.readTextFileSync(new URL(f, dir));
  const seen = Promise.withResolvers<{ code: number; reason: string }>();
  await using up = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: read("cert.pem"),
    key: read("key.pem"),
    onListen() {},
  }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => {
      for (let i = 0; i < 20_000 && socket.readyState === socket.OPEN; i++) socket.send("");
    };
    socket.onclose = (e) => seen.resolve({ code: e.code, reason: e.reason });
    return response;
  });
  // A CA file: Deno's WebSocket client, whose messages wait in a queue until start().
  const socket = await connectUpstream({
    url: new URL(`wss://localhost:${up.addr.port}/`),
    headers: new Headers(),
    protocols: [],
    route: "/",
    connectTimeout: 2_000,
    tls: { caCerts: [read("ca.pem")] },
    limits: { maxMessageSize: 1024 } as unknown as WebSocketProxyRequest["limits"],
  });
  assert.ok(!("refused" in socket));
  // The client's upgrade has not come (start() not called): 20,000 messages of no bytes held
  // 20,000 queue entries, counted as nothing against the 1 MiB allowed before it.
  const timeout = setTimeout(() => seen.reject(new Error("the upstream was never cut off")), 5_000);
  try {
    assert.deepEqual(await seen.promise, {
      code: 1000,
      reason: "Too much data before the client opened",
    });
  } finally {
    clearTimeout(timeout);
    socket.close(1000, "");
  }
});
