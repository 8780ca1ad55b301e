// readWhole: a small request body with a declared length read into one buffer before the
// upstream is chosen, with its length checked and a stall bounded by the idle timeout.
import assert from "node:assert/strict";
import { ProxyError } from "../domain/errors.ts";
import { bodySource, readWhole, REPLAY_CAP } from "./body_replay.ts";

function streamOf(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const x of chunks) c.enqueue(x);
      c.close();
    },
  });
}

const isKind = (kind: string) => (e: unknown) => e instanceof ProxyError && e.kind === kind;

Deno.test("readWhole keeps a body that came as one chunk and joins one that came in several", async () => {
  const one = new Uint8Array([1, 2, 3, 4]);
  assert.equal(await readWhole(streamOf(one), 4, 1_000), one, "the chunk itself, not a copy");
  const joined = await readWhole(
    streamOf(new Uint8Array([1]), new Uint8Array(0), new Uint8Array([2, 3]), new Uint8Array([4])),
    4,
    0,
  );
  assert.deepEqual(joined, one);
  assert.deepEqual(await readWhole(streamOf(), 0, 1_000), new Uint8Array(0));
});

Deno.test("readWhole refuses a body shorter or longer than its Content-Length", async () => {
  await assert.rejects(readWhole(streamOf(new Uint8Array(3)), 4, 1_000), isKind("bad_request"));
  let cancelled = false;
  const long = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array(3));
      c.enqueue(new Uint8Array(3));
    },
    cancel() {
      cancelled = true;
    },
  });
  await assert.rejects(readWhole(long, 4, 1_000), isKind("bad_request"));
  assert.ok(cancelled, "the rest of an overlong body is not read");
});

Deno.test("readWhole gives request_timeout when the body pauses longer than idle", async () => {
  let cancelled = false;
  const stalled = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array(10)); // then nothing more
    },
    cancel() {
      cancelled = true;
    },
  });
  const t0 = performance.now();
  await assert.rejects(readWhole(stalled, 100, 60), isKind("request_timeout"));
  const took = performance.now() - t0;
  assert.ok(took >= 55, `not before the idle timeout (${took} ms)`);
  assert.ok(cancelled, "the body stream is cancelled");
});

Deno.test("readWhole waits out a slow body that keeps making progress", async () => {
  // A byte every 20 ms for about 500 ms: twice the 250 ms idle timeout in total, but never a
  // pause anywhere near it.
  let i = 0;
  const slow = new ReadableStream<Uint8Array>({
    async pull(c) {
      await new Promise((r) => setTimeout(r, 20));
      c.enqueue(new Uint8Array([i]));
      if (++i === 25) c.close();
    },
  });
  const t0 = performance.now();
  const got = await readWhole(slow, 25, 250);
  assert.deepEqual(got, new Uint8Array(25).map((_, i) => i));
  assert.ok(performance.now() - t0 > 250, "the whole body took longer than the idle timeout");
});

Deno.test("readWhole reports a body that fails as the client going away", async () => {
  const broken = new ReadableStream<Uint8Array>({
    pull(c) {
      c.error(new Error("connection reset"));
    },
  });
  await assert.rejects(readWhole(broken, 10, 1_000), isKind("client_gone"));
});

Deno.test("bodySource does not keep the buffers behind a client's small chunks", async () => {
  // Deno hands out each read of a request body as a view of a 64 KiB buffer of its own: here
  // 256-byte parents stand in for them (1-byte chunks, 80,000 of them, past REPLAY_CAP).
  const n = 80_000;
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (i === n) return c.close();
      const parent = new Uint8Array(256);
      parent[7] = 97 + i++ % 26;
      c.enqueue(parent.subarray(7, 8));
    },
  }, { highWaterMark: 0 });
  const source = await bodySource(body, new Headers(), { wanted: true, idleMs: 0 });
  const replay = source.next() as ReadableStream<Uint8Array>;
  const reader = replay.getReader();
  const held = new Set<ArrayBufferLike>();
  let text = "";
  // What was read for a retry (REPLAY_CAP bytes and one more) is handed out first.
  while (text.length <= REPLAY_CAP) {
    const r = await reader.read();
    held.add(r.value!.buffer);
    text += String.fromCharCode(...r.value!);
  }
  const heldBytes = [...held].reduce((a, b) => a + b.byteLength, 0);
  // Was every parent: 65,537 × 256 B here, 4 GiB with Deno's 64 KiB buffers.
  assert.ok(heldBytes <= 2 * REPLAY_CAP, `${heldBytes} bytes of buffers held`);
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    text += String.fromCharCode(...r.value);
  }
  assert.equal(text.length, n);
  assert.ok([...text].every((c, j) => c.charCodeAt(0) === 97 + j % 26), "bytes intact, in order");
});

Deno.test("bodySource does not keep the 64 KiB buffers behind a client's 4 KiB chunks", async () => {
  // Chunks of 4 KiB and more were kept as they came: on Deno.serve each is a view of a 64 KiB
  // buffer, so 64 KiB of upload held 1 MiB until the request ended.
  const size = 5000;
  const n = 40;
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (i === n) return c.close();
      c.enqueue(new Uint8Array(65_536).fill(97 + i++ % 26).subarray(0, size));
    },
  }, { highWaterMark: 0 });
  const source = await bodySource(body, new Headers(), { wanted: true, idleMs: 0 });
  const reader = (source.next() as ReadableStream<Uint8Array>).getReader();
  const held = new Set<ArrayBufferLike>();
  let got = 0;
  // What was read for a retry (past REPLAY_CAP) is handed out first.
  while (got <= REPLAY_CAP) {
    const r = await reader.read();
    held.add(r.value!.buffer);
    got += r.value!.byteLength;
  }
  const heldBytes = [...held].reduce((a, b) => a + b.byteLength, 0);
  assert.ok(heldBytes <= 2 * REPLAY_CAP + 65_536, `${heldBytes} bytes of buffers held`);
  const bytes: Uint8Array[] = [];
  for (let r = await reader.read(); !r.done; r = await reader.read()) bytes.push(r.value);
  got += bytes.reduce((a, b) => a + b.byteLength, 0);
  assert.equal(got, n * size);
});
