// HTTP/3 frame and stream types, settings and error codes (RFC 9114 §6.2, §7.2, §8.1, §11.2),
// and the encoders for the frames the server sends. Parsing lives with the stream readers.

import { varintLength, writeVarint } from "./varint.ts";

/** Frame types (RFC 9114 §7.2). Reserved types 0x1f*N+0x21 are GREASE and ignored. */
export const FrameType = {
  DATA: 0x00,
  HEADERS: 0x01,
  CANCEL_PUSH: 0x03,
  SETTINGS: 0x04,
  PUSH_PROMISE: 0x05,
  GOAWAY: 0x07,
  MAX_PUSH_ID: 0x0d,
  /** RFC 9218 §7.2 (request stream variant 0xf0700, push 0xf0701): tolerated, ignored. */
  PRIORITY_UPDATE: 0xf0700,
} as const;

/** HTTP/2 frame types that are forbidden in HTTP/3 (RFC 9114 §7.2.8): H3_FRAME_UNEXPECTED. */
export const HTTP2_ONLY_FRAMES: ReadonlySet<number> = new Set([0x02, 0x06, 0x08, 0x09]);

/** Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2). */
export const StreamType = { CONTROL: 0x00, PUSH: 0x01, QPACK_ENCODER: 0x02, QPACK_DECODER: 0x03 };

/** Settings identifiers (RFC 9114 §7.2.4.1, RFC 9204 §5). */
export const Setting = {
  QPACK_MAX_TABLE_CAPACITY: 0x01,
  MAX_FIELD_SECTION_SIZE: 0x06,
  QPACK_BLOCKED_STREAMS: 0x07,
  ENABLE_CONNECT_PROTOCOL: 0x08,
  H3_DATAGRAM: 0x33,
} as const;

/** HTTP/2 setting ids that must not appear in HTTP/3 (RFC 9114 §7.2.4.1): H3_SETTINGS_ERROR. */
export const HTTP2_ONLY_SETTINGS: ReadonlySet<number> = new Set([0x02, 0x03, 0x04, 0x05]);

/** Settings whose value is 0 or 1, anything else H3_SETTINGS_ERROR (RFC 9220 §3, RFC 9297 §2.1.1). */
const BOOLEAN_SETTINGS: ReadonlySet<number> = new Set([
  Setting.ENABLE_CONNECT_PROTOCOL,
  Setting.H3_DATAGRAM,
]);

/** Application error codes (RFC 9114 §8.1, RFC 9204 §6). */
export const H3Error = {
  NO_ERROR: 0x100,
  GENERAL_PROTOCOL_ERROR: 0x101,
  INTERNAL_ERROR: 0x102,
  STREAM_CREATION_ERROR: 0x103,
  CLOSED_CRITICAL_STREAM: 0x104,
  FRAME_UNEXPECTED: 0x105,
  FRAME_ERROR: 0x106,
  EXCESSIVE_LOAD: 0x107,
  ID_ERROR: 0x108,
  SETTINGS_ERROR: 0x109,
  MISSING_SETTINGS: 0x10a,
  REQUEST_REJECTED: 0x10b,
  REQUEST_CANCELLED: 0x10c,
  REQUEST_INCOMPLETE: 0x10d,
  MESSAGE_ERROR: 0x10e,
  CONNECT_ERROR: 0x10f,
  VERSION_FALLBACK: 0x110,
  QPACK_DECOMPRESSION_FAILED: 0x200,
  QPACK_ENCODER_STREAM_ERROR: 0x201,
  QPACK_DECODER_STREAM_ERROR: 0x202,
} as const;

/** A connection error: the connection is closed with `code` (RFC 9114 §8). */
export class H3ConnectionError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.name = "H3ConnectionError";
    this.code = code;
  }
}

/** True for reserved GREASE values 0x1f*N+0x21 (RFC 9114 §7.2.8, §7.2.4.1, §6.2.3). */
export function isGrease(v: number): boolean {
  return v >= 0x21 && (v - 0x21) % 0x1f === 0;
}

/** Encodes a frame header (type + length) followed by nothing; the payload goes after it. */
export function frameHeader(type: number, length: number): Uint8Array {
  const buf = new Uint8Array(varintLength(type) + varintLength(length));
  writeVarint(buf, writeVarint(buf, 0, type), length);
  return buf;
}

/** Encodes a whole frame. */
export function encodeFrame(type: number, payload: Uint8Array): Uint8Array {
  const head = varintLength(type) + varintLength(payload.length);
  const buf = new Uint8Array(head + payload.length);
  writeVarint(buf, writeVarint(buf, 0, type), payload.length);
  buf.set(payload, head);
  return buf;
}

/** Encodes a SETTINGS frame from id/value pairs (RFC 9114 §7.2.4). */
export function encodeSettings(settings: ReadonlyArray<readonly [number, number]>): Uint8Array {
  let len = 0;
  for (const [id, v] of settings) len += varintLength(id) + varintLength(v);
  const payload = new Uint8Array(len);
  let off = 0;
  for (const [id, v] of settings) off = writeVarint(payload, writeVarint(payload, off, id), v);
  return encodeFrame(FrameType.SETTINGS, payload);
}

/** Encodes a GOAWAY frame carrying a stream id (RFC 9114 §5.2, §7.2.6). */
export function encodeGoaway(id: number): Uint8Array {
  const payload = new Uint8Array(varintLength(id));
  writeVarint(payload, 0, id);
  return encodeFrame(FrameType.GOAWAY, payload);
}

/**
 * Parses a SETTINGS payload. Duplicates, HTTP/2-only ids and a boolean setting other than 0 or 1
 * are H3_SETTINGS_ERROR; unknown ids (GREASE included) are kept but carry no meaning (RFC 9114
 * §7.2.4).
 */
export function parseSettings(payload: Uint8Array): Map<number, number> {
  const out = new Map<number, number>();
  let off = 0;
  while (off < payload.length) {
    const id = readVarintIn(payload, off, "SETTINGS");
    const val = readVarintIn(payload, id.next, "SETTINGS");
    off = val.next;
    if (HTTP2_ONLY_SETTINGS.has(id.value)) {
      throw new H3ConnectionError(
        H3Error.SETTINGS_ERROR,
        `HTTP/2 setting 0x${id.value.toString(16)} in HTTP/3`,
      );
    }
    if (out.has(id.value)) {
      throw new H3ConnectionError(
        H3Error.SETTINGS_ERROR,
        `Duplicate setting 0x${id.value.toString(16)}`,
      );
    }
    if (BOOLEAN_SETTINGS.has(id.value) && val.value > 1) {
      throw new H3ConnectionError(
        H3Error.SETTINGS_ERROR,
        `Setting 0x${id.value.toString(16)} must be 0 or 1, not ${val.value}`,
      );
    }
    out.set(id.value, val.value);
  }
  return out;
}

/** Parses a payload that is exactly one varint (GOAWAY, MAX_PUSH_ID, CANCEL_PUSH). */
export function parseSingleVarint(payload: Uint8Array, what: string): number {
  const r = readVarintIn(payload, 0, what);
  if (r.next !== payload.length) {
    throw new H3ConnectionError(H3Error.FRAME_ERROR, `Malformed ${what} frame: trailing bytes`);
  }
  return r.value;
}

function readVarintIn(buf: Uint8Array, off: number, what: string): { value: number; next: number } {
  const n = off < buf.length ? 1 << (buf[off] >> 6) : 0;
  if (n === 0 || off + n > buf.length) {
    throw new H3ConnectionError(H3Error.FRAME_ERROR, `Malformed ${what} frame: truncated varint`);
  }
  let v = buf[off] & 0x3f;
  for (let i = 1; i < n; i++) v = v * 256 + buf[off + i];
  return { value: v, next: off + n };
}
