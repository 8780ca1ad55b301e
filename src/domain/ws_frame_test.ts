import assert from "node:assert/strict";
import {
  closePayload,
  encodeFrame,
  encodeMessage,
  Op,
  validCloseCode,
  WsParser,
} from "./ws_frame.ts";
import type { WsEvent } from "./ws_frame.ts";

const MASK = new Uint8Array([1, 2, 3, 4]);
const enc = new TextEncoder();

function server(maxMessage = 1 << 20): WsParser {
  return new WsParser({ maxMessage, masked: true });
}

/** Feeds `bytes` one byte at a time and in one piece: both must give `want`. */
function both(bytes: Uint8Array, want: WsEvent[], maxMessage?: number): void {
  assert.deepEqual(server(maxMessage).push(bytes), want);
  const p = server(maxMessage);
  const got: WsEvent[] = [];
  for (const b of bytes) got.push(...p.push(new Uint8Array([b])));
  assert.deepEqual(got, want);
}

Deno.test("WsParser unmasks text and binary messages, whole or byte by byte", () => {
  both(encodeFrame(Op.TEXT, enc.encode("héllo"), { mask: MASK }), [
    { type: "text", data: "héllo" },
  ]);
  both(encodeFrame(Op.BINARY, new Uint8Array([0, 255, 7]), { mask: MASK }), [
    { type: "binary", data: new Uint8Array([0, 255, 7]) },
  ]);
});

Deno.test("WsParser reads 16-bit and 64-bit lengths", () => {
  for (const n of [125, 126, 65535, 65536, 200_000]) {
    const data = Uint8Array.from({ length: n }, (_, i) => i & 0xff);
    const got = server().push(encodeFrame(Op.BINARY, data, { mask: MASK }));
    assert.deepEqual(got, [{ type: "binary", data }], `length ${n}`);
  }
});

Deno.test("WsParser joins fragments and answers control frames between them", () => {
  const frames = [
    encodeFrame(Op.TEXT, enc.encode("ab"), { mask: MASK, more: true }),
    encodeFrame(Op.PING, enc.encode("p"), { mask: MASK }),
    encodeFrame(Op.CONTINUATION, enc.encode("c"), { mask: MASK, more: true }),
    encodeFrame(Op.CONTINUATION, enc.encode("d"), { mask: MASK }),
  ];
  const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) all.set(f, (at += f.length) - f.length);
  both(all, [{ type: "ping", data: enc.encode("p") }, { type: "text", data: "abcd" }]);
});

Deno.test("WsParser: a UTF-8 sequence split across fragments is valid", () => {
  const e = enc.encode("€"); // 3 bytes
  const a = encodeFrame(Op.TEXT, e.subarray(0, 1), { mask: MASK, more: true });
  const b = encodeFrame(Op.CONTINUATION, e.subarray(1), { mask: MASK });
  const p = server();
  assert.deepEqual(p.push(a), []);
  assert.deepEqual(p.push(b), [{ type: "text", data: "€" }]);
});

Deno.test("WsParser fails protocol errors with 1002 and stops", () => {
  const cases: [string, Uint8Array][] = [
    ["unmasked", encodeFrame(Op.TEXT, enc.encode("x"))],
    [
      "rsv1",
      (() => {
        const f = encodeFrame(Op.TEXT, enc.encode("x"), { mask: MASK });
        f[0] |= 0x40; // permessage-deflate's bit, not negotiated
        return f;
      })(),
    ],
    ["opcode 3", encodeFrame(3, enc.encode("x"), { mask: MASK })],
    ["opcode 0xb", encodeFrame(0xb, new Uint8Array(0), { mask: MASK })],
    ["fragmented ping", encodeFrame(Op.PING, new Uint8Array(0), { mask: MASK, more: true })],
    ["long ping", encodeFrame(Op.PING, new Uint8Array(126), { mask: MASK })],
    ["lone continuation", encodeFrame(Op.CONTINUATION, enc.encode("x"), { mask: MASK })],
    ["close of one byte", encodeFrame(Op.CLOSE, new Uint8Array([3]), { mask: MASK })],
    ["close code 1004", encodeFrame(Op.CLOSE, closePayload(1004), { mask: MASK })],
    ["close code 999", encodeFrame(Op.CLOSE, new Uint8Array([3, 231]), { mask: MASK })],
    ["close code 2000", encodeFrame(Op.CLOSE, closePayload(2000), { mask: MASK })],
  ];
  for (const [name, bytes] of cases) {
    const p = server();
    const got = p.push(bytes);
    assert.equal(got.length, 1, name);
    assert.equal(got[0].type, "error", name);
    assert.equal((got[0] as { code: number }).code, 1002, name);
    assert.deepEqual(p.push(encodeFrame(Op.TEXT, enc.encode("y"), { mask: MASK })), [], name);
  }
  // A new message while one is open.
  const p = server();
  p.push(encodeFrame(Op.TEXT, enc.encode("a"), { mask: MASK, more: true }));
  assert.equal(p.push(encodeFrame(Op.TEXT, enc.encode("b"), { mask: MASK }))[0].type, "error");
});

Deno.test("WsParser fails invalid UTF-8 in text and close reasons with 1007", () => {
  const bad = new Uint8Array([0xc0, 0xaf]); // an overlong "/"
  const surrogate = new Uint8Array([0xed, 0xa0, 0x80]);
  for (const b of [bad, surrogate]) {
    const got = server().push(encodeFrame(Op.TEXT, b, { mask: MASK }));
    assert.deepEqual(got, [{ type: "error", code: 1007, reason: "Invalid UTF-8" }]);
  }
  const close = new Uint8Array([3, 232, 0xff]);
  const got = server().push(encodeFrame(Op.CLOSE, close, { mask: MASK }));
  assert.equal(got[0].type, "error");
  assert.equal((got[0] as { code: number }).code, 1007);
});

Deno.test("WsParser reads close frames with and without a code", () => {
  both(encodeFrame(Op.CLOSE, closePayload(1000, "bye"), { mask: MASK }), [
    { type: "close", code: 1000, reason: "bye" },
  ]);
  both(encodeFrame(Op.CLOSE, new Uint8Array(0), { mask: MASK }), [
    { type: "close", code: 1005, reason: "" },
  ]);
});

Deno.test("WsParser reports a message past maxMessage from its header, before its payload", () => {
  const p = server(100);
  // Only the header of a 1 MiB frame: known too big at once.
  const head = encodeFrame(Op.BINARY, new Uint8Array(1 << 20), { mask: MASK }).subarray(0, 14);
  assert.deepEqual(p.push(head), [{ type: "too_big", size: 1 << 20 }]);
  // Fragments that add up past the limit.
  const q = server(100);
  assert.deepEqual(
    q.push(encodeFrame(Op.BINARY, new Uint8Array(60), { mask: MASK, more: true })),
    [],
  );
  assert.deepEqual(
    q.push(encodeFrame(Op.CONTINUATION, new Uint8Array(60), { mask: MASK }).subarray(0, 2)),
    [{ type: "too_big", size: 120 }],
  );
  // The rest of a message too big is passed over; the frames after it are read.
  const r = server(100);
  const big = encodeFrame(Op.BINARY, new Uint8Array(500), { mask: MASK, more: true });
  const more = encodeFrame(Op.CONTINUATION, new Uint8Array(500), { mask: MASK });
  const close = encodeFrame(Op.CLOSE, closePayload(1000), { mask: MASK });
  assert.deepEqual(r.push(big.subarray(0, 20)), [{ type: "too_big", size: 500 }]);
  assert.deepEqual(r.push(big.subarray(20)), []);
  assert.deepEqual(r.push(more), []);
  assert.deepEqual(r.push(close), [{ type: "close", code: 1000, reason: "" }]);
  // Exactly the limit passes.
  assert.equal(
    server(100).push(encodeFrame(Op.BINARY, new Uint8Array(100), { mask: MASK }))[0].type,
    "binary",
  );
});

Deno.test("encodeMessage splits at maxFrame and a client parser reads it back", () => {
  const data = Uint8Array.from({ length: 1000 }, (_, i) => i & 0xff);
  const frames = encodeMessage(data, 300);
  assert.equal(frames.length, 4);
  const client = new WsParser({ maxMessage: 1 << 20, masked: false });
  const got = frames.flatMap((f) => client.push(f));
  assert.deepEqual(got, [{ type: "binary", data }]);
  assert.equal(encodeMessage("hi").length, 1);
  assert.deepEqual(client.push(encodeMessage("hi")[0]), [{ type: "text", data: "hi" }]);
});

Deno.test("validCloseCode follows RFC 6455 §7.4 and the IANA registry", () => {
  for (
    const c of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
  ) {
    assert.ok(validCloseCode(c), String(c));
  }
  for (const c of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) {
    assert.ok(!validCloseCode(c), String(c));
  }
});

Deno.test("WsParser: empty continuation frames keep nothing (a message of a million of them stays bounded)", () => {
  const p = new WsParser({ maxMessage: 1 << 20, masked: true });
  const mask = new Uint8Array([1, 2, 3, 4]);
  p.push(encodeFrame(Op.TEXT, new TextEncoder().encode("a"), { mask, more: true }));
  const empty = encodeFrame(Op.CONTINUATION, new Uint8Array(0), { mask, more: true });
  const chunk = new Uint8Array(empty.length * 10_000);
  for (let i = 0; i < 10_000; i++) chunk.set(empty, i * empty.length);
  const before = Deno.memoryUsage().heapUsed;
  for (let i = 0; i < 100; i++) assert.deepEqual(p.push(chunk), []);
  const grown = Deno.memoryUsage().heapUsed - before;
  assert.ok(grown < 20 * 1024 * 1024, `heap grew ${grown} bytes for a message of one byte`);
  const last = p.push(encodeFrame(Op.CONTINUATION, new TextEncoder().encode("b"), { mask }));
  assert.deepEqual(last, [{ type: "text", data: "ab" }]);
});

Deno.test("WsParser: the buffer a big frame needed is let go once the frame is read", () => {
  const p = server(4 << 20);
  const big = encodeFrame(Op.BINARY, new Uint8Array(2 << 20), { mask: MASK });
  // As HTTP/2 DATA brings it: 16 KiB at a time, the frame whole only at the end.
  let events: WsEvent[] = [];
  for (let off = 0; off < big.length; off += 16384) {
    events = events.concat(p.push(big.subarray(off, off + 16384)));
  }
  assert.equal(events.length, 1);
  assert.ok(p.capacity <= 64 * 1024, `the parser keeps ${p.capacity} bytes for nothing`);
  // It still parses what comes next.
  assert.deepEqual(p.push(encodeFrame(Op.TEXT, enc.encode("next"), { mask: MASK })), [
    { type: "text", data: "next" },
  ]);
});

Deno.test("WsParser: a message in one-byte fragments holds about its size (not a buffer per fragment)", () => {
  const p = new WsParser({ maxMessage: 1 << 20, masked: true });
  p.push(encodeFrame(Op.BINARY, new Uint8Array([7]), { mask: MASK, more: true }));
  const one = encodeFrame(Op.CONTINUATION, new Uint8Array([7]), { mask: MASK, more: true });
  const chunk = new Uint8Array(one.length * 10_000);
  for (let i = 0; i < 10_000; i++) chunk.set(one, i * one.length);
  const before = Deno.memoryUsage();
  for (let i = 0; i < 100; i++) assert.deepEqual(p.push(chunk), []);
  const after = Deno.memoryUsage();
  // 1 MB of message: a kept slice per fragment took 225 MB of heap (and twice that of RSS).
  const grown = after.heapUsed - before.heapUsed + after.external - before.external;
  assert.ok(grown < 20 * 1024 * 1024, `memory grew ${grown} bytes for a message of 1 MB`);
  const [last] = p.push(encodeFrame(Op.CONTINUATION, new Uint8Array([8]), { mask: MASK }));
  assert.equal(last.type, "binary");
  const data = (last as { data: Uint8Array }).data;
  assert.equal(data.length, 1_000_002);
  assert.ok(data.subarray(0, -1).every((b) => b === 7));
  assert.equal(data.at(-1), 8);
});
