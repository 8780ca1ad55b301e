// QUIC variable-length integers (RFC 9000 §16): 1, 2, 4 or 8 bytes, the top two bits of the
// first byte give the length. Values up to 2^62-1; above 2^53 they lose precision as numbers,
// which only matters for opaque values (GREASE ids, huge setting values) that we clamp or ignore.

/** Largest value a QUIC varint can carry (2^62 - 1), as a number (rounded). */
export const VARINT_MAX = 2 ** 62 - 1;

/** Bytes needed to encode `v` as a QUIC varint (RFC 9000 §16, Table 4). */
export function varintLength(v: number): number {
  if (v < 0 || !Number.isFinite(v)) throw new RangeError(`Cannot encode varint: ${v} out of range`);
  if (v < 64) return 1;
  if (v < 16384) return 2;
  if (v < 1073741824) return 4;
  // Not `v <= VARINT_MAX`: 2^62 - 1 rounds to 2^62 as a double, which then went out as 0.
  if (v < 2 ** 62) return 8;
  throw new RangeError(`Cannot encode varint: ${v} out of range`);
}

/** Writes `v` at `off` and returns the offset after it. */
export function writeVarint(buf: Uint8Array, off: number, v: number): number {
  const n = varintLength(v);
  switch (n) {
    case 1:
      buf[off] = v;
      return off + 1;
    case 2:
      buf[off] = 0x40 | (v >>> 8);
      buf[off + 1] = v & 0xff;
      return off + 2;
    case 4:
      buf[off] = 0x80 | (v >>> 24);
      buf[off + 1] = (v >>> 16) & 0xff;
      buf[off + 2] = (v >>> 8) & 0xff;
      buf[off + 3] = v & 0xff;
      return off + 4;
    default: {
      const hi = Math.floor(v / 2 ** 32);
      const lo = v >>> 0;
      buf[off] = 0xc0 | (hi >>> 24);
      buf[off + 1] = (hi >>> 16) & 0xff;
      buf[off + 2] = (hi >>> 8) & 0xff;
      buf[off + 3] = hi & 0xff;
      buf[off + 4] = lo >>> 24;
      buf[off + 5] = (lo >>> 16) & 0xff;
      buf[off + 6] = (lo >>> 8) & 0xff;
      buf[off + 7] = lo & 0xff;
      return off + 8;
    }
  }
}

/** Encodes `v` as a fresh QUIC varint. */
export function encodeVarint(v: number): Uint8Array {
  const buf = new Uint8Array(varintLength(v));
  writeVarint(buf, 0, v);
  return buf;
}

/** Total length of the varint starting with byte `first`. */
export function varintLengthOf(first: number): number {
  return 1 << (first >> 6);
}

/**
 * Decodes the varint at `off`; `undefined` when `buf` ends before it does (the caller waits
 * for more bytes). Returns the value and the offset after it.
 */
export function decodeVarint(
  buf: Uint8Array,
  off: number,
): { value: number; next: number } | undefined {
  if (off >= buf.length) return undefined;
  const n = varintLengthOf(buf[off]);
  if (off + n > buf.length) return undefined;
  let v = buf[off] & 0x3f;
  for (let i = 1; i < n; i++) v = v * 256 + buf[off + i];
  return { value: v, next: off + n };
}
