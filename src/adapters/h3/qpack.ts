// QPACK field sections with the static table only (RFC 9204). We advertise
// QPACK_MAX_TABLE_CAPACITY=0 and QPACK_BLOCKED_STREAMS=0, so a conforming peer never refers to
// a dynamic table: static references and literals (plain or Huffman) are the whole language.

import { huffmanDecodeText, huffmanEncode, huffmanEncodedLength, HuffmanError } from "./huffman.ts";
import { STATIC_EXACT, STATIC_NAME, STATIC_TABLE } from "./qpack_static.ts";

/** A field line as [name, value]; values are byte strings (one char per byte). */
export type Field = [string, string];

/** A malformed or unsupported field section: connection error QPACK_DECOMPRESSION_FAILED. */
export class QpackError extends Error {
  constructor(reason: string) {
    super(`Cannot decode field section: ${reason}`);
    this.name = "QpackError";
  }
}

/** Bytes → byte string (latin1, one char per byte, like HTTP/1.1 header bytes). */
export function bytesToString(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 4096) {
    s += String.fromCharCode.apply(null, b.subarray(i, i + 4096) as unknown as number[]);
  }
  return s;
}

/** Byte string → bytes (chars above 0xff are UTF-8 encoded). */
export function stringToBytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) return new TextEncoder().encode(s);
    out[i] = c;
  }
  return out;
}

/** Decodes a prefix integer (RFC 7541 §5.1) with an N-bit prefix; returns value and offset. */
export function decodePrefixInt(
  buf: Uint8Array,
  off: number,
  prefixBits: number,
): { value: number; next: number } {
  if (off >= buf.length) throw new QpackError("truncated integer");
  const mask = (1 << prefixBits) - 1;
  let value = buf[off++] & mask;
  if (value < mask) return { value, next: off };
  let shift = 0;
  for (;;) {
    if (off >= buf.length) throw new QpackError("truncated integer");
    const b = buf[off++];
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if (!(b & 0x80)) break;
    if (shift > 28) throw new QpackError("integer too large");
  }
  return { value, next: off };
}

/** Decodes a string literal whose length prefix is `prefixBits` wide, H flag just above it. */
function decodeString(
  buf: Uint8Array,
  off: number,
  prefixBits: number,
): { value: string; next: number } {
  if (off >= buf.length) throw new QpackError("truncated string");
  const huffman = (buf[off] & (1 << prefixBits)) !== 0;
  const len = decodePrefixInt(buf, off, prefixBits);
  const end = len.next + len.value;
  if (end > buf.length) throw new QpackError("string longer than field section");
  const raw = buf.subarray(len.next, end);
  if (!huffman) return { value: bytesToString(raw), next: end };
  try {
    return { value: huffmanDecodeText(raw), next: end };
  } catch (err) {
    if (err instanceof HuffmanError) throw new QpackError(err.message);
    throw err;
  }
}

function staticEntry(index: number): readonly [string, string] {
  const e = STATIC_TABLE[index];
  if (!e) throw new QpackError(`static index ${index} out of range`);
  return e;
}

/**
 * Decodes an encoded field section (RFC 9204 §4.5). Any dynamic-table reference is an error
 * because we announced a zero-capacity table (§2.2.3, §4.5.1.1). Returns null as soon as the
 * decoded size passes `maxSize` (static references expand up to ~70x, so check while decoding).
 */
export function decodeFieldSection(
  buf: Uint8Array,
  opts: { maxSize?: number } = {},
): Field[] | null {
  const max = opts.maxSize ?? Infinity;
  let size = 0; // RFC 9114 §4.2.2: name + value + 32 per field, checked as we go
  const ric = decodePrefixInt(buf, 0, 8);
  if (ric.value !== 0) throw new QpackError("dynamic table reference (Required Insert Count > 0)");
  // Sign bit + Delta Base. Base is otherwise unused here, but a Sign bit of 1 with Required
  // Insert Count 0 makes it negative, which a decoder MUST refuse (RFC 9204 §4.5.1.2).
  if (ric.next < buf.length && buf[ric.next] & 0x80) throw new QpackError("negative Base");
  let off = decodePrefixInt(buf, ric.next, 7).next;
  const fields: Field[] = [];
  while (off < buf.length) {
    const b = buf[off];
    if (b & 0x80) {
      // Indexed field line: 1 T index(6)
      if (!(b & 0x40)) throw new QpackError("dynamic table reference");
      const idx = decodePrefixInt(buf, off, 6);
      const [n, v] = staticEntry(idx.value);
      fields.push([n, v]);
      off = idx.next;
      if ((size += n.length + v.length + 32) > max) return null;
    } else if (b & 0x40) {
      // Literal with name reference: 01 N T index(4), value
      if (!(b & 0x10)) throw new QpackError("dynamic table reference");
      const idx = decodePrefixInt(buf, off, 4);
      const val = decodeString(buf, idx.next, 7);
      const n = staticEntry(idx.value)[0];
      fields.push([n, val.value]);
      off = val.next;
      if ((size += n.length + val.value.length + 32) > max) return null;
    } else if (b & 0x20) {
      // Literal with literal name: 001 N H len(3), name, value
      const name = decodeString(buf, off, 3);
      const val = decodeString(buf, name.next, 7);
      fields.push([name.value, val.value]);
      off = val.next;
      if ((size += name.value.length + val.value.length + 32) > max) return null;
    } else {
      // 0001xxxx indexed post-base, 0000xxxx literal with post-base name: dynamic only
      throw new QpackError("post-base (dynamic table) reference");
    }
  }
  return fields;
}

/** A growable byte buffer for the encoder. */
class Bytes {
  buf = new Uint8Array(256);
  len = 0;
  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  int(first: number, prefixBits: number, value: number): void {
    this.ensure(6);
    const mask = (1 << prefixBits) - 1;
    if (value < mask) {
      this.buf[this.len++] = first | value;
      return;
    }
    this.buf[this.len++] = first | mask;
    value -= mask;
    while (value >= 128) {
      this.buf[this.len++] = (value % 128) | 0x80;
      value = Math.floor(value / 128);
    }
    this.buf[this.len++] = value;
  }
  string(first: number, prefixBits: number, s: string): void {
    const raw = stringToBytes(s);
    const hlen = raw.length > 2 ? huffmanEncodedLength(raw) : raw.length;
    const data = hlen < raw.length ? huffmanEncode(raw) : raw;
    this.int(first | (data === raw ? 0 : 1 << prefixBits), prefixBits, data.length);
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }
}

/**
 * Encodes fields as a QPACK field section using static references and literals, Huffman-coding
 * strings when shorter (RFC 9204 §4.5). Names must already be lowercase.
 */
export function encodeFieldSection(fields: Iterable<readonly [string, string]>): Uint8Array {
  const out = new Bytes();
  out.int(0, 8, 0); // Required Insert Count 0
  out.int(0, 7, 0); // S=0, Delta Base 0
  for (const [name, value] of fields) {
    const exact = STATIC_EXACT.get(`${name}\0${value}`);
    if (exact !== undefined) {
      out.int(0xc0, 6, exact);
      continue;
    }
    const nameIdx = STATIC_NAME.get(name);
    if (nameIdx !== undefined) {
      out.int(0x50, 4, nameIdx);
    } else {
      out.string(0x20, 3, name);
    }
    out.string(0x00, 7, value);
  }
  return out.buf.slice(0, out.len);
}
