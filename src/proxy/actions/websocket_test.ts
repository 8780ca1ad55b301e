import assert from "node:assert/strict";
import {
  checkHandshake,
  isWebSocketUpgrade,
  offeredProtocols,
  toWebSocketUrl,
  WEBSOCKET_DEFAULTS,
  websocketLimits,
} from "./websocket.ts";
import type { WebSocketRouteConfig } from "../../config/schema.ts";
import { loadConfigText } from "../../config/load.ts";

const upgrade = (headers: Record<string, string>, method = "GET") =>
  new Request("http://x/", { method, headers });

Deno.test("isWebSocketUpgrade accepts GET with Upgrade: websocket in any case or list", () => {
  assert.equal(isWebSocketUpgrade(upgrade({ upgrade: "websocket" })), true);
  assert.equal(isWebSocketUpgrade(upgrade({ upgrade: "WebSocket" })), true);
  assert.equal(isWebSocketUpgrade(upgrade({ upgrade: "h2c, websocket" })), true);
  assert.equal(isWebSocketUpgrade(upgrade({ upgrade: "websockets" })), false);
  assert.equal(isWebSocketUpgrade(upgrade({})), false);
  assert.equal(isWebSocketUpgrade(upgrade({ upgrade: "websocket" }, "POST")), false);
});

Deno.test("offeredProtocols splits Sec-WebSocket-Protocol with or without spaces", () => {
  assert.deepEqual(offeredProtocols(upgrade({ "sec-websocket-protocol": "a,b" })), ["a", "b"]);
  assert.deepEqual(offeredProtocols(upgrade({ "sec-websocket-protocol": "a, b ,c" })), [
    "a",
    "b",
    "c",
  ]);
  assert.deepEqual(offeredProtocols(upgrade({})), []);
});

Deno.test("toWebSocketUrl maps http to ws and https to wss, keeping path and query", () => {
  assert.equal(toWebSocketUrl("http://h:1/p?q=1").href, "ws://h:1/p?q=1");
  assert.equal(toWebSocketUrl("https://h/p").href, "wss://h/p");
  assert.equal(toWebSocketUrl("wss://h/p").href, "wss://h/p");
});

Deno.test("websocketLimits fills defaults and reads the route's keys", () => {
  const base = { type: "websocket", target: "ws://h" } as WebSocketRouteConfig;
  assert.deepEqual(websocketLimits(base), WEBSOCKET_DEFAULTS);
  assert.deepEqual(
    websocketLimits({
      ...base,
      max_message_size: 10,
      max_frame_size: 5,
      idle_timeout: 1000,
      ping_interval: 0,
    }),
    { maxMessageSize: 10, maxFrameSize: 5, idleTimeout: 1000, pingInterval: 0 },
  );
});

Deno.test("config takes websocket TLS keys (the relay applies them), warns about big messages", () => {
  const text = `listen_addr: "127.0.0.1:0"
routes:
  "/ws":
    type: websocket
    target: "wss://example.com"
    tls: { insecure_skip_verify: true, server_name: other.example }
    max_message_size: 100000000
`;
  const { config, issues } = loadConfigText(text, { file: "t.yaml", env: { exists: () => true } });
  assert.ok(config);
  const warnings = issues.filter((i) => i.severity === "warning").map((i) => i.message);
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(warnings[0], /over 64 MiB/);
});

Deno.test("checkHandshake requires Connection: upgrade, a 16-byte key and version 13", () => {
  const ok = {
    connection: "keep-alive, Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
  };
  assert.equal(checkHandshake(new Headers(ok)), null);
  const proto = (v: string) => checkHandshake(new Headers({ ...ok, "sec-websocket-protocol": v }));
  assert.equal(proto("chat, superchat"), null);
  assert.equal(proto("chat, , v2"), null, "empty list elements are ignored");
  assert.match(proto("chat, chat")!, /twice/, "RFC 6455 §4.1: unique (Deno's client threw: 500)");
  assert.match(proto("a b")!, /Invalid Sec-WebSocket-Protocol/);
  assert.match(checkHandshake(new Headers({ ...ok, connection: "close" }))!, /Connection/);
  assert.match(checkHandshake(new Headers({ ...ok, "sec-websocket-key": "short" }))!, /Key/);
  assert.match(
    checkHandshake(new Headers({ ...ok, "sec-websocket-version": "8" }))!,
    /Unsupported Sec-WebSocket-Version/,
  );
});
