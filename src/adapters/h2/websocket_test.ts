import assert from "node:assert/strict";
import { H2WebSocket } from "./websocket.ts";
import type { WsStream } from "./websocket.ts";
import { closePayload, encodeFrame, Op, WsParser } from "../../domain/ws_frame.ts";
import type { WsEvent } from "../../domain/ws_frame.ts";

const MASK = new Uint8Array([1, 2, 3, 4]);
const enc = new TextEncoder();

/** A stream in memory: what the client sends, what the socket wrote, and how it ended. */
function stream() {
  let push!: (b: Uint8Array) => void;
  let end!: () => void;
  let fail!: (e: Error) => void;
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      push = (b) => c.enqueue(b);
      end = () => c.close();
      fail = (e) => c.error(e);
    },
  });
  const parser = new WsParser({ maxMessage: 1 << 20, masked: false });
  const got: WsEvent[] = [];
  const state = { ended: false, cancelled: false };
  const io: WsStream = {
    readable,
    write(bytes, last) {
      got.push(...parser.push(bytes));
      if (last) state.ended = true;
      return Promise.resolve(!state.cancelled);
    },
    cancel() {
      state.cancelled = true;
      fail(new Error("reset"));
    },
  };
  return { io, got, state, push, end, fail: (e: Error) => fail(e) };
}

/** Waits for `cond`, a few macrotasks at most. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(cond());
}

function open(s: ReturnType<typeof stream>, idleTimeout = 0) {
  const ws = new H2WebSocket(s.io, { idleTimeout, maxMessage: 1000, maxFrame: 0 });
  const closes: { code: number; reason: string }[] = [];
  const messages: unknown[] = [];
  ws.binaryType = "arraybuffer";
  ws.onclose = (e) => closes.push({ code: e.code, reason: e.reason });
  ws.onmessage = (e) => messages.push(e.data);
  ws.open();
  return { ws, closes, messages };
}

Deno.test("H2WebSocket answers the status 101 to the pipeline and delivers messages", async () => {
  const s = stream();
  const { ws, messages } = open(s);
  assert.equal(ws.response.status, 101);
  s.push(encodeFrame(Op.TEXT, enc.encode("hi"), { mask: MASK }));
  s.push(encodeFrame(Op.BINARY, new Uint8Array([1, 2]), { mask: MASK }));
  await until(() => messages.length === 2);
  assert.equal(messages[0], "hi");
  assert.deepEqual(new Uint8Array(messages[1] as ArrayBuffer), new Uint8Array([1, 2]));
  ws.send("back");
  await until(() => s.got.length === 1);
  assert.deepEqual(s.got, [{ type: "text", data: "back" }]);
  assert.equal(ws.bufferedAmount, 0);
});

Deno.test("H2WebSocket answers a ping with a pong carrying its payload", async () => {
  const s = stream();
  open(s);
  s.push(encodeFrame(Op.PING, enc.encode("abc"), { mask: MASK }));
  await until(() => s.got.length === 1);
  assert.deepEqual(s.got, [{ type: "pong", data: enc.encode("abc") }]);
});

Deno.test("H2WebSocket: the client's close is answered with its code, then END_STREAM", async () => {
  const s = stream();
  const { ws, closes } = open(s);
  s.push(encodeFrame(Op.CLOSE, closePayload(4000, "bye"), { mask: MASK }));
  await until(() => s.state.ended);
  assert.deepEqual(s.got, [{ type: "close", code: 4000, reason: "bye" }]);
  assert.deepEqual(closes, [{ code: 4000, reason: "bye" }]);
  s.end();
  await ws.done;
  assert.equal(s.state.cancelled, false);
});

Deno.test("H2WebSocket fails a protocol error with 1002 and ends the stream", async () => {
  const s = stream();
  const { closes } = open(s);
  s.push(encodeFrame(Op.TEXT, enc.encode("unmasked")));
  await until(() => s.state.ended);
  assert.equal(s.got[0].type, "close");
  assert.equal((s.got[0] as { code: number }).code, 1002);
  assert.equal(closes[0].code, 1002);
});

Deno.test("H2WebSocket: END_STREAM without a close is 1006, and this side ends too", async () => {
  const s = stream();
  const { ws, closes } = open(s);
  s.end();
  await ws.done;
  assert.deepEqual(closes, [{ code: 1006, reason: "" }]);
  assert.ok(s.state.ended);
});

Deno.test("H2WebSocket: a reset stream is 1006; sends after it go nowhere", async () => {
  const s = stream();
  const { ws, closes } = open(s);
  s.io.cancel();
  await ws.done;
  assert.deepEqual(closes, [{ code: 1006, reason: "" }]);
  ws.send("late");
  assert.equal(ws.bufferedAmount, 0);
});

Deno.test("H2WebSocket pings an idle client and gives up on one that does not answer", async () => {
  const s = stream();
  // 0.1 s: a ping after 50 ms without a frame, the close 50 ms after that.
  const { ws, closes } = open(s, 0.1);
  await until(() => s.got.some((e) => e.type === "ping"));
  await ws.done;
  assert.deepEqual(closes, [{ code: 1001, reason: "No response from ping frame." }]);
  assert.ok(s.state.cancelled, "the stream is reset (CANCEL)");
});

Deno.test("H2WebSocket: a client still sending after a ping is not given up on (its pong waits behind its frame)", async () => {
  const s = stream();
  // A ping after 50 ms without a frame; without an answer, the close 50 ms after that.
  const { ws, closes, messages } = open(s, 0.1);
  await until(() => s.got.some((e) => e.type === "ping"));
  // The client had begun a frame the ping arrived in the middle of: its pong can only follow the
  // frame's last byte (RFC 6455 §5.4). As Deno's socket does, bytes coming in are an answer.
  const frame = encodeFrame(Op.BINARY, new Uint8Array(600), { mask: MASK });
  for (let off = 0; off < frame.length && !s.state.cancelled; off += 30) {
    s.push(frame.subarray(off, off + 30));
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(closes, [], "closed while the client was sending");
  await until(() => messages.length === 1);
  ws.close(1000, "done");
  s.push(encodeFrame(Op.CLOSE, closePayload(1000), { mask: MASK }));
  await ws.done;
  assert.deepEqual(closes, [{ code: 1000, reason: "" }]);
});

Deno.test("H2WebSocket: a ping waiting behind data the client has no window for is not counted as unanswered", async () => {
  const s = stream();
  // The client's window is shut: nothing is written until `release` (a slow reader).
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const write = s.io.write;
  s.io.write = async (bytes, last) => {
    await gate;
    return write(bytes, last);
  };
  const { ws, closes } = open(s, 0.1);
  ws.send(new Uint8Array(64 * 1024));
  // A ping is due after 50 ms of the client's silence; it cannot reach the client before the
  // message ahead of it, so the client cannot answer it either. Deno's sockets count the wait
  // for the pong from when the ping is written; Prox, at most from when the 64 KiB ahead of it
  // would be taken at 64 KiB/s (1 s).
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(closes, [], "closed for not answering a ping it was never sent");
  release();
  await until(() => s.got.some((e) => e.type === "ping"));
  s.push(encodeFrame(Op.PONG, new Uint8Array(0), { mask: MASK }));
  ws.close(1000, "done");
  s.push(encodeFrame(Op.CLOSE, closePayload(1000), { mask: MASK }));
  await ws.done;
  assert.deepEqual(closes, [{ code: 1000, reason: "" }]);
});

Deno.test("H2WebSocket reports a message too big to ontoobig without taking it in", async () => {
  const s = stream();
  const { ws } = open(s);
  const sizes: number[] = [];
  ws.ontoobig = (n) => sizes.push(n);
  const big = encodeFrame(Op.BINARY, new Uint8Array(5000), { mask: MASK });
  s.push(big.subarray(0, 8));
  await until(() => sizes.length === 1);
  assert.deepEqual(sizes, [5000]);
  ws.close(1009, "Message too big");
  // The rest of it is passed over; the close after it is read.
  s.push(big.subarray(8));
  s.push(encodeFrame(Op.CLOSE, closePayload(1009), { mask: MASK }));
  await until(() => s.state.ended);
});

Deno.test("H2WebSocket: a stream reset while its close waits for the client's leaves no timer", async () => {
  // Timers counted while they are pending (Deno's test sanitizer does not look at them).
  const pending = new Set<unknown>();
  const [realSet, realClear] = [globalThis.setTimeout, globalThis.clearTimeout];
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    const id = realSet(() => {
      pending.delete(id);
      fn();
    }, ms);
    pending.add(id);
    return id;
  }) as typeof setTimeout;
  globalThis.clearTimeout = ((id?: number) => {
    pending.delete(id);
    realClear(id);
  }) as typeof clearTimeout;
  try {
    const s = stream();
    const { ws, closes } = open(s);
    ws.close(1000, "bye");
    await until(() => s.got.some((e) => e.type === "close"));
    s.fail(new Error("reset"));
    await ws.done;
    assert.deepEqual(closes, [{ code: 1006, reason: "" }]);
    assert.equal(pending.size, 0, "the close's wait (5 s) is still pending");
  } finally {
    for (const id of pending) realClear(id as number);
    globalThis.setTimeout = realSet;
    globalThis.clearTimeout = realClear;
  }
});
