import assert from "node:assert/strict";
import { FrameType, FrameWriter, JOIN_BELOW, queueCopy } from "./frames.ts";

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

Deno.test("queueCopy joins small payloads to the small chunk unread before them, never to one read", () => {
  const q: Uint8Array<ArrayBuffer>[] = [];
  const bytes = (n: number, v: number) => ({ bytes: new Uint8Array(n).fill(v), start: 0, end: n });
  let joined = queueCopy(q, null, bytes(1, 1));
  for (let i = 0; i < 3; i++) joined = queueCopy(q, joined, bytes(1, 2));
  assert.deepEqual(q.map((c) => [...c]), [[1, 2, 2, 2]]);
  // Read (out of the queue): the next small one starts a chunk of its own; the one read stays.
  const read = q.shift()!;
  joined = queueCopy(q, joined, bytes(1, 3));
  joined = queueCopy(q, joined, bytes(2, 4));
  assert.deepEqual([...read], [1, 2, 2, 2]);
  assert.deepEqual(q.map((c) => [...c]), [[3, 4, 4]]);
  // A chunk no longer small takes nothing more; a large payload is a chunk of its own.
  joined = queueCopy(q, joined, bytes(JOIN_BELOW, 5));
  assert.equal(q.length, 2);
  joined = queueCopy(q, joined, { bytes: Uint8Array.of(9, 6, 9), start: 1, end: 2 });
  joined = queueCopy(q, joined, bytes(1, 7));
  assert.deepEqual(q.map((c) => c.length), [3, JOIN_BELOW, 2]);
  assert.deepEqual([...q[2]], [6, 7]);
});
