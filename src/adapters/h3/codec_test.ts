import assert from "node:assert/strict";
import { decodeVarint, encodeVarint, varintLength } from "./varint.ts";
import { StreamReader, TruncatedError } from "./stream_reader.ts";
import { huffmanDecode, huffmanDecodeText, huffmanEncode, HuffmanError } from "./huffman.ts";
import {
  bytesToString,
  decodeFieldSection,
  decodePrefixInt,
  encodeFieldSection,
  QpackError,
  stringToBytes,
} from "./qpack.ts";
import { encodeSettings, H3ConnectionError, isGrease, parseSettings } from "./frames.ts";
import { STATIC_TABLE } from "./qpack_static.ts";

const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s/g, "").match(/../g)!.map((b) => parseInt(b, 16)));
const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const ascii = (s: string) => new TextEncoder().encode(s);

Deno.test("decodeVarint reads the RFC 9000 Appendix A.1 examples", () => {
  assert.equal(decodeVarint(hex("c2197c5eff14e88c"), 0)!.value, 151288809941952652);
  assert.equal(decodeVarint(hex("9d7f3e7d"), 0)!.value, 494878333);
  assert.equal(decodeVarint(hex("7bbd"), 0)!.value, 15293);
  assert.equal(decodeVarint(hex("25"), 0)!.value, 37);
  assert.deepEqual(decodeVarint(hex("4025"), 0), { value: 37, next: 2 });
});

Deno.test("encodeVarint round-trips at every length boundary", () => {
  for (const v of [0, 63, 64, 16383, 16384, 1073741823, 1073741824, 2 ** 40 + 5]) {
    const b = encodeVarint(v);
    assert.equal(b.length, varintLength(v));
    assert.deepEqual(decodeVarint(b, 0), { value: v, next: b.length });
  }
  assert.equal(toHex(encodeVarint(494878333)), "9d7f3e7d");
  assert.throws(() => encodeVarint(-1), RangeError);
  assert.throws(() => encodeVarint(2 ** 63), RangeError);
  // 2^62 - 1 is no double: the largest 8-byte varint takes the double below 2^62, not 2^62
  assert.equal(toHex(encodeVarint(2 ** 62 - 512)), "fffffffffffffe00");
  assert.throws(() => encodeVarint(2 ** 62), RangeError);
});

Deno.test("decodeVarint reports truncated input as incomplete", () => {
  assert.equal(decodeVarint(hex("c2197c5eff14e8"), 0), undefined);
  assert.equal(decodeVarint(hex("40"), 0), undefined);
  assert.equal(decodeVarint(new Uint8Array(0), 0), undefined);
});

function chunked(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const x of chunks) c.enqueue(x);
      c.close();
    },
  });
}

Deno.test("StreamReader joins varints and frames split across chunks", async () => {
  const r = new StreamReader(chunked(hex("9d"), hex("7f3e"), hex("7d01"), hex("02"), hex("0304")));
  assert.equal(await r.varint(), 494878333);
  assert.deepEqual(await r.exact(4), hex("01020304"));
  assert.equal(await r.varint(), null);
});

Deno.test("StreamReader throws on a varint or frame cut by end of stream", async () => {
  const r = new StreamReader(chunked(hex("9d7f")));
  await assert.rejects(() => r.varint(), TruncatedError);
  const r2 = new StreamReader(chunked(hex("0102")));
  await assert.rejects(() => r2.exact(3), TruncatedError);
});

Deno.test("huffmanDecode decodes the RFC 7541 Appendix C vectors", () => {
  const vectors: [string, string][] = [
    ["f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"],
    ["a8eb10649cbf", "no-cache"],
    ["25a849e95ba97d7f", "custom-key"],
    ["25a849e95bb8e8b4bf", "custom-value"],
    ["6402", "302"],
    ["aec3771a4b", "private"],
    ["d07abe941054d444a8200595040b8166e082a62d1bff", "Mon, 21 Oct 2013 20:13:21 GMT"],
    ["9d29ad171863c78f0b97c8e9ae82ae43d3", "https://www.example.com"],
    ["9bd9ab", "gzip"],
  ];
  for (const [h, s] of vectors) {
    assert.equal(new TextDecoder().decode(huffmanDecode(hex(h))), s);
    assert.equal(toHex(huffmanEncode(ascii(s))), h);
  }
});

Deno.test("huffmanEncode round-trips every byte value", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.deepEqual(huffmanDecode(huffmanEncode(all)), all);
  for (let i = 0; i < 256; i++) {
    const one = Uint8Array.of(i, 255 - i, i);
    assert.deepEqual(huffmanDecode(huffmanEncode(one)), one);
  }
});

Deno.test("huffmanDecode rejects bad padding and EOS", () => {
  // "a" is 00011: padding must be ones (0x1f), zeros are invalid
  assert.equal(bytesToString(huffmanDecode(hex("1f"))), "a");
  assert.throws(() => huffmanDecode(hex("18")), HuffmanError);
  // padding of 8 or more bits
  assert.throws(() => huffmanDecode(hex("1fff")), HuffmanError);
  // a full EOS symbol (30 ones)
  assert.throws(() => huffmanDecode(hex("ffffffff")), HuffmanError);
});

Deno.test("huffmanDecodeText gives each byte as one character, at any length", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.equal(huffmanDecodeText(huffmanEncode(all)), bytesToString(all));
  assert.equal(huffmanDecodeText(hex("f1e3c2e5f23a6ba0ab90f4ff")), "www.example.com");
  // Past its kept buffer (4 KiB of output) and across 4 KiB parts; and a short one after that
  // (the kept buffer still serves, nothing of the long one shows).
  for (const n of [2_500, 4_096, 4_097, 9_000, 3]) {
    const text = Array.from({ length: n }, (_, i) => String.fromCharCode(32 + (i * 7) % 95))
      .join("");
    assert.equal(huffmanDecodeText(huffmanEncode(ascii(text))), text, `${n} characters`);
  }
  assert.throws(() => huffmanDecodeText(hex("18")), HuffmanError);
  assert.throws(() => huffmanDecodeText(hex("ffffffff")), HuffmanError);
});

Deno.test("decodePrefixInt reads the RFC 7541 C.1 examples", () => {
  assert.deepEqual(decodePrefixInt(hex("0a"), 0, 5), { value: 10, next: 1 });
  assert.deepEqual(decodePrefixInt(hex("1f9a0a"), 0, 5), { value: 1337, next: 3 });
  assert.deepEqual(decodePrefixInt(hex("2a"), 0, 8), { value: 42, next: 1 });
  assert.throws(() => decodePrefixInt(hex("1f9a"), 0, 5), QpackError);
  assert.throws(() => decodePrefixInt(hex("1fffffffffff7f"), 0, 5), QpackError);
});

Deno.test("decodeFieldSection decodes the RFC 9204 B.1 example", () => {
  assert.deepEqual(decodeFieldSection(hex("0000510b2f696e6465782e68746d6c")), [[
    ":path",
    "/index.html",
  ]]);
});

Deno.test("STATIC_TABLE has the 99 entries of RFC 9204 Appendix A", () => {
  assert.equal(STATIC_TABLE.length, 99);
  assert.deepEqual(STATIC_TABLE[17], [":method", "GET"]);
  assert.deepEqual(STATIC_TABLE[25], [":status", "200"]);
  assert.deepEqual(STATIC_TABLE[52], ["content-type", "text/html; charset=utf-8"]);
  assert.deepEqual(STATIC_TABLE[71], [":status", "500"]);
  assert.deepEqual(STATIC_TABLE[98], ["x-frame-options", "sameorigin"]);
});

Deno.test("encodeFieldSection round-trips static, name-ref, literal and Huffman fields", () => {
  const fields: [string, string][] = [
    [":status", "200"],
    ["content-type", "text/html; charset=utf-8"],
    ["content-length", "123"],
    ["x-custom-header", "some value with spaces"],
    ["x-bin", "caf\xe9\x00\x7f"],
    ["set-cookie", "a=1"],
    ["set-cookie", "b=2"],
    ["x-empty", ""],
    ["x-long", "v".repeat(5000)],
  ];
  const enc = encodeFieldSection(fields);
  assert.deepEqual(decodeFieldSection(enc), fields);
  // indexed static: :status 200 is one byte (0xc0 | 25)
  assert.equal(enc[2], 0xc0 | 25);
});

Deno.test("decodeFieldSection stops once the decoded size passes maxSize", () => {
  // 1,000 two-byte references to the 85-byte CSP entry: 2 KB encoded, 117 KB decoded
  const enc = Uint8Array.from([
    0,
    0,
    ...Array.from({ length: 1000 }, () => [0xff, 85 - 63]).flat(),
  ]);
  assert.equal(decodeFieldSection(enc, { maxSize: 16384 }), null);
  assert.equal(decodeFieldSection(enc)!.length, 1000);
});

Deno.test("decodeFieldSection rejects dynamic references and truncation", () => {
  assert.throws(() => decodeFieldSection(hex("0100")), QpackError); // Required Insert Count 1
  assert.throws(() => decodeFieldSection(hex("000080")), QpackError); // dynamic indexed
  assert.throws(() => decodeFieldSection(hex("000010")), QpackError); // post-base indexed
  assert.throws(() => decodeFieldSection(hex("000041")), QpackError); // dynamic name ref
  assert.throws(() => decodeFieldSection(hex("0000ff7f")), QpackError); // static index 190
  assert.throws(() => decodeFieldSection(hex("0000510b2f69")), QpackError); // truncated value
  assert.throws(() => decodeFieldSection(hex("00")), QpackError); // missing Delta Base
  // Sign bit 1 with Required Insert Count 0: a negative Base (RFC 9204 §4.5.1.2)
  assert.throws(() => decodeFieldSection(hex("0080d1")), QpackError);
  assert.throws(() => decodeFieldSection(hex("00ff05d1")), QpackError);
  assert.throws(() => decodeFieldSection(hex("000051" + "81" + "00")), QpackError); // bad padding
});

Deno.test("stringToBytes and bytesToString keep every byte", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.deepEqual(stringToBytes(bytesToString(all)), all);
});

Deno.test("parseSettings keeps GREASE, rejects duplicates and HTTP/2 settings", () => {
  const frame = encodeSettings([[0x06, 65536], [0x21, 7], [0x01, 0]]);
  const s = parseSettings(frame.subarray(2));
  assert.equal(s.get(0x06), 65536);
  assert.equal(s.get(0x21), 7);
  assert.ok(isGrease(0x21) && isGrease(0x21 + 0x1f * 5) && !isGrease(0x06));
  assert.throws(
    () => parseSettings(encodeSettings([[0x06, 1], [0x06, 2]]).subarray(2)),
    H3ConnectionError,
  );
  assert.throws(() => parseSettings(encodeSettings([[0x02, 1]]).subarray(2)), H3ConnectionError);
  assert.throws(() => parseSettings(hex("0640")), H3ConnectionError);
});

Deno.test("parseSettings rejects a boolean setting other than 0 or 1 (RFC 9297 §2.1.1, RFC 9220 §3)", () => {
  for (const id of [0x08, 0x33]) {
    assert.equal(parseSettings(encodeSettings([[id, 1]]).subarray(2)).get(id), 1);
    assert.throws(
      () => parseSettings(encodeSettings([[id, 2]]).subarray(2)),
      (e) => e instanceof H3ConnectionError && e.code === 0x109,
    );
  }
});
