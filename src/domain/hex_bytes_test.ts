import assert from "node:assert/strict";
import { hexBytes, hexProblem, indexOfBytes, toHex } from "./hex_bytes.ts";

Deno.test("hex bytes: pairs of digits, spaces between them allowed", () => {
  assert.equal(hexProblem("00000008 04d2162F"), null);
  assert.deepEqual([...hexBytes("00000008 04d2162F")], [0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]);
  assert.equal(toHex(hexBytes("ff 00 7f")), "ff007f");
  assert.equal(hexProblem("0x4e"), 'has "x", which is not a hex digit');
  assert.equal(hexProblem("4e5"), "has 3 digits: a byte takes two");
  assert.equal(hexProblem("   "), "holds no bytes");
  assert.equal(hexProblem("4e:50"), 'has ":", which is not a hex digit');
});

Deno.test("indexOfBytes finds a run of bytes, after false starts too", () => {
  const hay = Uint8Array.of(1, 1, 2, 1, 2, 3);
  assert.equal(indexOfBytes(hay, Uint8Array.of(1, 2)), 1);
  assert.equal(indexOfBytes(hay, Uint8Array.of(1, 2, 3)), 3);
  assert.equal(indexOfBytes(hay, Uint8Array.of(2, 3, 4)), -1);
  assert.equal(indexOfBytes(hay, Uint8Array.of(3)), 5);
  assert.equal(indexOfBytes(hay.subarray(0, 5), Uint8Array.of(1, 2, 3)), -1);
  assert.equal(indexOfBytes(new Uint8Array(0), Uint8Array.of(1)), -1);
});
