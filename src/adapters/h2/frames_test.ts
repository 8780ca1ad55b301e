import assert from "node:assert/strict";
import { FrameType, FrameWriter } from "./frames.ts";

const payload = (n: number, fill: number) => new Uint8Array(n).fill(fill);

Deno.test("FrameWriter: an idle writer's buffers serve the next writer, never one in flight", () => {
  const a = new FrameWriter();
  a.frame(FrameType.DATA, 0, 1, payload(10, 1));
  const written = a.take();
  a.giveBack(written);
  a.release();
  // A writer busy after an idle moment (or a new connection) takes the buffer let go.
  const b = new FrameWriter();
  b.frame(FrameType.DATA, 0, 3, payload(4, 2));
  const out = b.take();
  assert.equal(out.buffer, written.buffer);
  assert.deepEqual([...out], [0, 0, 4, 0, 0, 0, 0, 0, 3, 2, 2, 2, 2]);

  // A buffer whose write is still going is not the writer's to give: another writer must not get
  // it (its bytes would change under the write).
  b.frame(FrameType.DATA, 0, 5, payload(3, 7));
  const inFlight = b.take();
  b.release();
  const c = new FrameWriter();
  c.frame(FrameType.DATA, 0, 7, payload(3, 9));
  assert.notEqual(c.take().buffer, inFlight.buffer);
  assert.deepEqual([...inFlight.subarray(9)], [7, 7, 7]);
});

Deno.test("FrameWriter: a grown buffer is not kept for others", () => {
  const a = new FrameWriter();
  a.frame(FrameType.DATA, 0, 1, payload(40_000, 1));
  const big = a.take();
  assert.ok(big.buffer.byteLength > 16 * 1024);
  a.giveBack(big);
  a.release();
  const b = new FrameWriter();
  b.frame(FrameType.DATA, 0, 1, payload(1, 1));
  assert.equal(b.take().buffer.byteLength, 16 * 1024);
});
