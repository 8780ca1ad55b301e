import assert from "node:assert/strict";
import { byteLength, clip, exceeds, upstreamClose } from "./websocket_upstream.ts";

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
