// Reads the server name (SNI) from the first bytes a TLS client sends, without terminating TLS:
// what `tcp` entries with `sni` route on (TLS passthrough). Pure: bytes in, a verdict out. The
// caller keeps reading and calls again while the answer is "more", up to a byte and time bound.
// RFC 8446 §5.1 (records; a handshake message may span several), §4.1.2 (ClientHello),
// RFC 6066 §3 (server_name).

/** How many bytes a ClientHello may take (records included) before the connection is refused. */
export const MAX_HELLO_BYTES = 16 * 1024;

/** What the bytes read so far say. */
export type HelloPeek =
  /** A ClientHello may still follow: read more. */
  | { kind: "more" }
  /**
   * A whole ClientHello; `serverName` lowercased without a final dot, null when it names none or
   * a name that is not a DNS name (an IP literal, bad characters), which is then `invalidName`:
   * the bytes sent, non-printable ones as `\xNN`, at most 254.
   */
  | { kind: "hello"; serverName: string | null; invalidName?: string }
  /** Not a TLS ClientHello, malformed, or larger than the bound. */
  | { kind: "invalid"; reason: string };

const HANDSHAKE = 22;
const CLIENT_HELLO = 1;
const SERVER_NAME_EXT = 0;
const HOST_NAME = 0;
/** RFC 8446 §5.1: a plaintext record's fragment is at most 2^14 bytes. */
const MAX_FRAGMENT = 16384;

/**
 * How far a peek got in a connection's bytes: the complete records read and their handshake
 * bytes. A caller that peeks again as more bytes arrive (the same bytes, longer) passes the same
 * scan, so that each record is read once: a client sending one-byte records a byte at a time
 * would otherwise cost a walk over every record at every read, quadratic in the bytes (seconds of
 * CPU per connection at 16 KiB).
 */
export interface HelloScan {
  /** Where the next record starts. */
  at: number;
  /** The handshake bytes of the complete records before `at`. */
  parts: Uint8Array[];
  held: number;
  /** The ClientHello's declared body length, once its 4-byte header has arrived; else -1. */
  bodyLen: number;
  /** Records looked at by all calls so far (one still arriving each time it is seen). */
  looks: number;
}

/** A scan from the first byte. */
export function helloScan(): HelloScan {
  return { at: 0, parts: [], held: 0, bodyLen: -1, looks: 0 };
}

/**
 * Looks for a complete ClientHello in `buf` (everything the client sent so far). Rejects early
 * what cannot become one: another record type (plain HTTP, SSLv2), a record version other than
 * 3.x, or a ClientHello declared larger than `maxBytes`. With `scan`, the records read by earlier
 * calls (on the same bytes, shorter) are not read again.
 */
export function peekClientHello(
  buf: Uint8Array,
  maxBytes = MAX_HELLO_BYTES,
  scan: HelloScan = helloScan(),
): HelloPeek {
  if (buf.length >= 1 && buf[0] !== HANDSHAKE) return invalid("not a TLS handshake record");
  if (buf.length >= 2 && buf[1] !== 3) return invalid("not a TLS record version (3.x)");
  while (scan.at + 5 <= buf.length) {
    scan.looks++;
    const at = scan.at;
    const type = buf[at];
    const len = (buf[at + 3] << 8) | buf[at + 4];
    if (type !== HANDSHAKE) return invalid("a non-handshake record before the ClientHello ended");
    if (buf[at + 1] !== 3) return invalid("not a TLS record version (3.x)");
    if (len === 0 || len > MAX_FRAGMENT) return invalid(`a handshake record of ${len} bytes`);
    // A record still arriving counts for the message header only (an early size verdict); it is
    // read again, whole, by a later call.
    const complete = at + 5 + len <= buf.length;
    const frag = buf.subarray(at + 5, Math.min(at + 5 + len, buf.length));
    const held = scan.held + frag.length;
    if (scan.bodyLen < 0 && held >= 4) {
      // Read once (records of 1 byte must not make every later record copy the ones before).
      const first = scan.parts.length ? scan.parts[0] : frag;
      const hs = first.length < 4 ? concat([...scan.parts, frag], held) : first;
      if (hs[0] !== CLIENT_HELLO) {
        return invalid("the first handshake message is not a ClientHello");
      }
      scan.bodyLen = (hs[1] << 16) | (hs[2] << 8) | hs[3];
    }
    if (scan.bodyLen >= 0 && scan.bodyLen + 4 > maxBytes) {
      return invalid(`a ClientHello of ${scan.bodyLen + 4} bytes (the limit is ${maxBytes})`);
    }
    if (!complete) break;
    scan.parts.push(frag);
    scan.held = held;
    scan.at = at + 5 + len;
    if (scan.bodyLen >= 0 && held >= 4 + scan.bodyLen) {
      const whole = scan.parts.length === 1 ? scan.parts[0] : concat(scan.parts, held);
      return parseHello(whole.subarray(4, 4 + scan.bodyLen));
    }
  }
  if (buf.length >= maxBytes) return invalid(`no complete ClientHello in ${maxBytes} bytes`);
  return { kind: "more" };
}

function invalid(reason: string): HelloPeek {
  return { kind: "invalid", reason };
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The ClientHello body (§4.1.2) → its server name. */
function parseHello(b: Uint8Array): HelloPeek {
  let p = 2 + 32; // legacy_version, random
  if (p + 1 > b.length) return invalid("a truncated ClientHello");
  p += 1 + b[p]; // legacy_session_id
  if (p + 2 > b.length) return invalid("a truncated ClientHello");
  const suites = (b[p] << 8) | b[p + 1];
  if (suites < 2 || suites % 2) return invalid("a ClientHello without cipher suites");
  p += 2 + suites;
  if (p + 1 > b.length) return invalid("a truncated ClientHello");
  const compression = b[p];
  if (compression < 1) return invalid("a ClientHello without compression methods");
  p += 1 + compression;
  if (p > b.length) return invalid("a truncated ClientHello");
  // No extensions at all (SSL 3.0 style): valid, without a name.
  if (p === b.length) return { kind: "hello", serverName: null };
  if (p + 2 > b.length) return invalid("a truncated ClientHello");
  const extEnd = p + 2 + ((b[p] << 8) | b[p + 1]);
  if (extEnd !== b.length) return invalid("ClientHello extensions of the wrong length");
  p += 2;
  // The whole list is read: a second server_name (which the target might read instead of the
  // one routed on) makes the ClientHello invalid (RFC 8446 §4.2: one extension of a type).
  let found: HelloPeek | null = null;
  while (p + 4 <= extEnd) {
    const type = (b[p] << 8) | b[p + 1];
    const len = (b[p + 2] << 8) | b[p + 3];
    p += 4;
    if (p + len > extEnd) return invalid("a ClientHello extension of the wrong length");
    if (type === SERVER_NAME_EXT) {
      if (found) return invalid("two server_name extensions");
      found = serverName(b.subarray(p, p + len));
      if (found.kind === "invalid") return found;
    }
    p += len;
  }
  if (p !== extEnd) return invalid("ClientHello extensions of the wrong length");
  return found ?? { kind: "hello", serverName: null };
}

/** The server_name extension's data (RFC 6066 §3) → its host_name. */
function serverName(d: Uint8Array): HelloPeek {
  if (d.length < 2 || ((d[0] << 8) | d[1]) !== d.length - 2) {
    return invalid("a server_name extension of the wrong length");
  }
  let p = 2;
  let found: string | null = null;
  let invalidName: string | undefined;
  while (p + 3 <= d.length) {
    const type = d[p];
    const len = (d[p + 1] << 8) | d[p + 2];
    p += 3;
    if (p + len > d.length) return invalid("a server_name entry of the wrong length");
    if (type === HOST_NAME) {
      // RFC 6066 §3: no more than one name of a type.
      if (found !== null || invalidName !== undefined) {
        return invalid("two host_name entries in server_name");
      }
      const name = d.subarray(p, p + len);
      found = hostName(name);
      // Not a DNS name: a ClientHello without a usable name (routed to `default`, as nginx's
      // ssl_preread and HAProxy's req.ssl_sni would), not a malformed one.
      if (found === null) invalidName = printable(name.subarray(0, 254));
    }
    p += len;
  }
  if (p !== d.length) return invalid("a server_name entry of the wrong length");
  return invalidName === undefined
    ? { kind: "hello", serverName: found }
    : { kind: "hello", serverName: null, invalidName };
}

/** Printable ASCII as it is; other bytes and `\` as `\xNN` (for logs). */
function printable(bytes: Uint8Array): string {
  let s = "";
  for (const c of bytes) {
    s += c >= 0x20 && c < 0x7f && c !== 0x5c
      ? String.fromCharCode(c)
      : `\\x${c.toString(16).padStart(2, "0")}`;
  }
  return s;
}

/** Letters, digits, `-`, `_` and dots, 1–253 bytes (RFC 6066: ASCII, no trailing dot). */
function hostName(bytes: Uint8Array): string | null {
  if (bytes.length === 0 || bytes.length > 254) return null;
  let s = "";
  for (const c of bytes) {
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) ||
      c === 0x2d || c === 0x5f || c === 0x2e;
    if (!ok) return null;
    s += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 32 : c);
  }
  if (s.startsWith(".") || s.includes("..")) return null;
  if (s.endsWith(".")) s = s.slice(0, -1);
  if (s === "") return null;
  return s;
}
