import assert from "node:assert/strict";
import { formatGrpcTimeout, grpcStatusFields, isGrpcType, parseGrpcTimeout } from "./grpc.ts";

Deno.test("parseGrpcTimeout: every unit, in milliseconds", () => {
  assert.equal(parseGrpcTimeout("2H"), 7_200_000);
  assert.equal(parseGrpcTimeout("3M"), 180_000);
  assert.equal(parseGrpcTimeout("5S"), 5_000);
  assert.equal(parseGrpcTimeout("100m"), 100);
  assert.equal(parseGrpcTimeout("2500u"), 2.5);
  assert.equal(parseGrpcTimeout("500u"), 0.5);
  assert.ok(Math.abs(parseGrpcTimeout("1500000n")! - 1.5) < 1e-9);
  assert.equal(parseGrpcTimeout("99999999H"), 99_999_999 * 3_600_000);
  assert.equal(parseGrpcTimeout("00000001m"), 1);
  // Zero: a deadline that has passed (gRPC's servers), not "none".
  assert.equal(parseGrpcTimeout("0m"), 0);
});

Deno.test("parseGrpcTimeout: a malformed value is undefined (ignored, as Envoy does)", () => {
  for (
    const v of [
      "",
      "m",
      "100",
      "100ms",
      "100s", // seconds are `S`
      "100h",
      "123456789m", // nine digits
      "-1m",
      "+1m",
      " 1m",
      "1m ",
      "1.5S",
      "1e3m",
      "１m", // a fullwidth digit
    ]
  ) {
    assert.equal(parseGrpcTimeout(v), undefined, JSON.stringify(v));
  }
});

Deno.test("formatGrpcTimeout: the finest unit that fits eight digits, rounded down", () => {
  assert.equal(formatGrpcTimeout(0.5), "500000n");
  assert.equal(formatGrpcTimeout(99.9999999), "99999999n");
  assert.equal(formatGrpcTimeout(150), "150000u");
  assert.equal(formatGrpcTimeout(4_998.8), "4998800u");
  assert.equal(formatGrpcTimeout(200_000), "200000m");
  assert.equal(formatGrpcTimeout(99_999_999.9), "99999999m");
  assert.equal(formatGrpcTimeout(100_000_000), "100000S");
  assert.equal(formatGrpcTimeout(5_900_000_000_000), "98333333M");
  assert.equal(formatGrpcTimeout(7_200_000_000_000), "2000000H");
  assert.equal(formatGrpcTimeout(1e20), "99999999H");
  // Nothing left: the deadline has passed.
  assert.equal(formatGrpcTimeout(0), "0n");
  assert.equal(formatGrpcTimeout(-3), "0n");
  assert.equal(formatGrpcTimeout(1e-7), "0n");
});

Deno.test("formatGrpcTimeout: never more than the value it was read from", () => {
  for (const v of ["1n", "7u", "333n", "1m", "5S", "59M", "99999999H", "12345678u", "3H"]) {
    const ms = parseGrpcTimeout(v)!;
    for (const spent of [0, 1e-4, 0.3, 1, 17.25]) {
      const out = parseGrpcTimeout(formatGrpcTimeout(ms - spent))!;
      assert.ok(
        out <= Math.max(0, ms - spent) + 1e-9,
        `${v} less ${spent} ms: ${formatGrpcTimeout(ms - spent)}`,
      );
      assert.ok(out <= ms, v);
    }
  }
});

Deno.test("isGrpcType: native gRPC types only, as Envoy's hasGrpcContentType", () => {
  for (
    const t of [
      "application/grpc",
      "application/grpc+proto",
      "Application/GRPC+json",
      "application/grpc; x=1",
    ]
  ) assert.ok(isGrpcType(t), t);
  for (
    const t of [
      null,
      "",
      "application/grpc-web",
      "application/grpc-web-text+proto",
      "application/grpcx",
      "text/plain",
    ]
  ) assert.ok(!isGrpcType(t), String(t));
});

Deno.test("grpcStatusFields: the message percent-encoded and bounded", () => {
  assert.deepEqual(grpcStatusFields(4, "Late: 100% é"), [
    ["grpc-status", "4"],
    ["grpc-message", "Late: 100%25 %C3%A9"],
  ]);
  assert.equal(grpcStatusFields(8, "😀".repeat(3000))[1][1], "%F0%9F%98%80".repeat(1024));
});
