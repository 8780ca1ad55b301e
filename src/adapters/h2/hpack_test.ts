import assert from "node:assert/strict";
import { HPACK_STATIC, HpackDecoder, HpackEncoder, HpackError } from "./hpack.ts";

const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s/g, "").match(/../g)!.map((b) => parseInt(b, 16)));

function decodeAll(d: HpackDecoder, block: Uint8Array, max?: number): [string, string][] {
  const out: [string, string][] = [];
  d.decode(block, (n, v) => out.push([n, v]), max);
  return out;
}

Deno.test("HPACK static table: 61 entries from :authority to www-authenticate", () => {
  assert.equal(HPACK_STATIC.length, 62);
  assert.deepEqual(HPACK_STATIC[1], [":authority", ""]);
  assert.deepEqual(HPACK_STATIC[8], [":status", "200"]);
  assert.deepEqual(HPACK_STATIC[16], ["accept-encoding", "gzip, deflate"]);
  assert.deepEqual(HPACK_STATIC[61], ["www-authenticate", ""]);
});

Deno.test("HpackDecoder decodes RFC 7541 C.3 (requests without Huffman) with its table", () => {
  const d = new HpackDecoder();
  assert.deepEqual(decodeAll(d, hex("828684410f7777772e6578616d706c652e636f6d")), [
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
  ]);
  assert.equal(d.size, 57);
  assert.deepEqual(decodeAll(d, hex("828684be58086e6f2d6361636865")), [
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
    ["cache-control", "no-cache"],
  ]);
  assert.equal(d.size, 110);
  assert.deepEqual(
    decodeAll(
      d,
      hex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"),
    ),
    [
      [":method", "GET"],
      [":scheme", "https"],
      [":path", "/index.html"],
      [":authority", "www.example.com"],
      ["custom-key", "custom-value"],
    ],
  );
  assert.equal(d.size, 164);
});

Deno.test("HpackDecoder decodes RFC 7541 C.4.1 (Huffman-coded strings)", () => {
  const d = new HpackDecoder();
  assert.deepEqual(decodeAll(d, hex("828684418cf1e3c2e5f23a6ba0ab90f4ff")), [
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
  ]);
  assert.equal(d.size, 57);
});

Deno.test("HpackDecoder evicts the oldest entries and obeys table size updates", () => {
  const enc = (name: string, value: string) => {
    // A literal with incremental indexing and a new name (0x40), strings without Huffman.
    const n = new TextEncoder().encode(name), v = new TextEncoder().encode(value);
    return Uint8Array.from([0x40, n.length, ...n, v.length, ...v]);
  };
  const d = new HpackDecoder(100);
  decodeAll(d, enc("aaaa", "1111")); // 40
  decodeAll(d, enc("bbbb", "2222")); // 80
  decodeAll(d, enc("cccc", "3333")); // 120 > 100: "aaaa" goes
  assert.equal(d.size, 80);
  // Index 62 is the newest ("cccc"), 63 the one before; 64 is gone.
  assert.deepEqual(decodeAll(d, hex("be bf")), [["cccc", "3333"], ["bbbb", "2222"]]);
  assert.throws(() => decodeAll(d, hex("c0")), HpackError);
  // A size update to 0 empties the table; one above the announced maximum is an error.
  decodeAll(d, hex("20"));
  assert.equal(d.size, 0);
  assert.throws(() => decodeAll(d, hex("3f 46")), /over 100/); // 31 + 70 = 101
  // An update after a field is an error (RFC 7541 §4.2).
  assert.throws(() => decodeAll(d, hex("82 20")), /after a field/);
});

Deno.test("HpackDecoder refuses index 0, truncated strings and bad Huffman padding", () => {
  assert.throws(() => decodeAll(new HpackDecoder(), hex("80")), /index 0/);
  assert.throws(() => decodeAll(new HpackDecoder(), hex("40 05 61 62")), /longer than the block/);
  assert.throws(() => decodeAll(new HpackDecoder(), hex("40 81 00 00")), HpackError);
  assert.throws(() => decodeAll(new HpackDecoder(), hex("ff ff ff ff ff 0f")), /too large/);
});

Deno.test("HpackDecoder stops passing fields past the list size but keeps its table", () => {
  const d = new HpackDecoder();
  const long = "x".repeat(100);
  const lit = Uint8Array.from([0x40, 1, 0x61, 100, ...new TextEncoder().encode(long)]);
  const got: string[] = [];
  assert.equal(d.decode(lit, (n) => got.push(n), 50), false);
  assert.deepEqual(got, []);
  // The field was still indexed: the next block may refer to it.
  assert.deepEqual(decodeAll(d, hex("be")), [["a", long]]);
});

Deno.test("HpackEncoder's blocks decode to the fields given, statuses by index", () => {
  const e = new HpackEncoder();
  const fields: [string, string][] = [
    ["content-type", "text/plain"],
    ["x-custom", "é and \u00ff"],
    ["set-cookie", "a=1"],
    ["set-cookie", "b=2"],
    ["x-long", "v".repeat(300)],
  ];
  for (const status of [200, 404, 502, 101]) {
    e.begin().status(status);
    for (const [n, v] of fields) e.field(n, v);
    const block = e.block.slice();
    assert.equal(block[0] & 0x80, status === 200 || status === 404 ? 0x80 : 0);
    const out = decodeAll(new HpackDecoder(), block);
    assert.deepEqual(out, [[":status", String(status)], ...fields]);
  }
});

Deno.test("HpackDecoder: a long run of inserts and evictions finds every live entry, none evicted", () => {
  const d = new HpackDecoder(512);
  const model: [string, string][] = []; // newest first, as the dynamic table indexes them
  let size = 0;
  const enc = new TextEncoder();
  for (let n = 0; n < 500; n++) {
    // A literal with incremental indexing and a new name: "k<n>" = "v…" of varying length.
    const name = `k${n}`;
    const value = "v".repeat(n % 37);
    const block = Uint8Array.from([
      0x40,
      name.length,
      ...enc.encode(name),
      value.length,
      ...enc.encode(value),
    ]);
    assert.deepEqual(decodeAll(d, block), [[name, value]]);
    model.unshift([name, value]);
    size += name.length + value.length + 32;
    while (size > 512) {
      const [k, v] = model.pop()!;
      size -= k.length + v.length + 32;
    }
    assert.equal(d.size, size);
    // Every live entry by its index (62 is the newest), and the one past the last refused.
    const indexed = (v: number) => Uint8Array.from(v < 127 ? [0x80 | v] : [0xff, v - 127]);
    for (let i = 0; i < model.length; i++) {
      assert.deepEqual(decodeAll(d, indexed(62 + i)), [model[i]]);
    }
    assert.throws(() => decodeAll(d, indexed(62 + model.length)), HpackError);
  }
});
