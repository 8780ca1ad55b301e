import assert from "node:assert/strict";
import { grpcHealthRequest, grpcHealthVerdict } from "./grpc_health.ts";

/** A framed HealthCheckResponse with its protobuf bytes. */
const framed = (...msg: number[]) => Uint8Array.from([0, 0, 0, 0, msg.length, ...msg]);
const ok = { status: 200, grpcStatus: "0", grpcMessage: null };

Deno.test("grpcHealthRequest frames a HealthCheckRequest", () => {
  assert.deepEqual([...grpcHealthRequest("")], [0, 0, 0, 0, 0]);
  assert.deepEqual(
    [...grpcHealthRequest("svc")],
    [0, 0, 0, 0, 5, 0x0a, 3, ...new TextEncoder().encode("svc")],
  );
  // A name of 200 bytes takes a two-byte length varint.
  const long = grpcHealthRequest("x".repeat(200));
  assert.deepEqual([...long.subarray(0, 8)], [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
  assert.equal(long.length, 5 + 203);
});

Deno.test("grpcHealthVerdict: SERVING is healthy, every other answer says why it is not", () => {
  assert.deepEqual(grpcHealthVerdict({ ...ok, body: framed(0x08, 1) }), {
    ok: true,
    reason: "SERVING",
  });
  // Unknown fields are read past.
  assert.equal(grpcHealthVerdict({ ...ok, body: framed(0x12, 1, 0x41, 0x08, 1) }).ok, true);
  assert.deepEqual(grpcHealthVerdict({ ...ok, body: framed(0x08, 2) }), {
    ok: false,
    reason: "NOT_SERVING",
  });
  // proto3 leaves the default (UNKNOWN) out.
  assert.deepEqual(grpcHealthVerdict({ ...ok, body: framed() }), { ok: false, reason: "UNKNOWN" });
  assert.deepEqual(grpcHealthVerdict({ ...ok, status: 503, body: framed(0x08, 1) }), {
    ok: false,
    reason: "status 503",
  });
  assert.match(
    grpcHealthVerdict({ ...ok, grpcStatus: "12", grpcMessage: "nope\n", body: new Uint8Array() })
      .reason,
    /^gRPC status 12 \(no grpc\.health\.v1 service\): nope\?$/,
  );
  assert.equal(
    grpcHealthVerdict({ ...ok, grpcStatus: null, body: framed(0x08, 1) }).reason,
    "no grpc-status in the answer",
  );
  for (
    const body of [
      Uint8Array.from([1, 0, 0, 0, 2, 0x08, 1]), // compressed
      Uint8Array.from([0, 0, 0, 0, 3, 0x08, 1]), // shorter than framed
      framed(0x08), // a key without its value
      framed(0x0b, 1), // wire type 3 (groups) is not taken
      new Uint8Array(),
    ]
  ) {
    assert.deepEqual(grpcHealthVerdict({ ...ok, body }), {
      ok: false,
      reason: "malformed HealthCheckResponse",
    });
  }
});
