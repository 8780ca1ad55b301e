// HTTP/1.1 bytes on the wire for the upstream client: the request head encoder and the response
// head parser (RFC 9112 §2–§6). No I/O here; upstream_h1.ts drives the socket.

import { Buffer } from "node:buffer";
import { ProxyError } from "../domain/errors.ts";
import type { HeaderMap } from "../domain/header_list.ts";

/** How a response body is delimited (RFC 9112 §6.3). */
export type Framing = "none" | "length" | "chunked" | "close";

// Hop-by-hop fields (RFC 9110 §7.6.1) end at this client; the length of every name the parser
// must recognise (these and content-length) lets it lowercase only candidates.
const HOP = new Set([
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
  "proxy-authenticate",
  "proxy-authorization",
]);
const HOP_LENGTHS: boolean[] = [];
for (const n of [...HOP, "connection", "transfer-encoding", "content-length"]) {
  HOP_LENGTHS[n.length] = true;
}

/**
 * A parsed response head. `headers` keep their received order without this hop's fields
 * (Connection, Transfer-Encoding, Keep-Alive, … and those Connection names); framing is resolved.
 */
export interface ResponseHead {
  status: number;
  statusText: string;
  headers: [string, string][];
  /** Minor version: 1 for HTTP/1.1, 0 for HTTP/1.0. */
  minor: number;
  /** Declared Content-Length, or -1. */
  contentLength: number;
  framing: Framing;
  /** The connection must not be reused after this response. */
  close: boolean;
  /** `Keep-Alive: timeout=N` in ms: how long the upstream keeps the connection idle; -1 unsaid. */
  keepAliveMs: number;
  /** Bytes the head took in the buffer, including the final empty line. */
  size: number;
  /**
   * The head was plain ASCII with token names and values of HTAB, SP and visible ASCII only: no
   * field needs a check of its own before it is sent on.
   */
  checked: boolean;
}

const encoder = new TextEncoder();
const win1252 = new TextDecoder("windows-1252");
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
// deno-lint-ignore no-control-regex
const NON_ASCII = /[^\x00-\x7f]/;
const WIDE = /[\u0100-\uffff]/;
/**
 * A response head in plain ASCII whose fields need no check of their own (ResponseHead.checked):
 * a status line of HTAB, SP and visible ASCII, then token names and such values, lines ending in
 * CRLF or LF. One match over the head costs less than a test per field.
 */
const CLEAN_HEAD =
  /^HTTP\/1\.[01] [\t\x20-\x7e]*\r?\n(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r?\n)*\r?\n$/;

/** Encodes a string as Latin-1 bytes (header values are ByteStrings, not UTF-8). */
function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * Node's `Buffer#latin1Slice`, called on a plain Uint8Array: one native call that makes a one-byte
 * string of exactly the bytes. TextDecoder's UTF-8 decode, which it replaced for every head, took
 * about 1.8 µs per upstream answer in Prox (a 230-byte nginx head; 0.14 µs in a loop of its own:
 * `decode` is called from so many places that its op is not called the fast way), this about 0.1.
 */
const latin1Slice = (Buffer.prototype as unknown as {
  latin1Slice?: (this: Uint8Array, start: number, end: number) => string;
}).latin1Slice;

/** Decodes Latin-1 bytes to a string (each byte one code unit). */
export function latin1(buf: Uint8Array, start: number, end: number): string {
  if (latin1Slice !== undefined) return latin1Slice.call(buf, start, end);
  // Without it: heads are nearly always ASCII, which UTF-8 decodes exactly and fastest (about half the cost of
  // windows-1252); any other byte comes out non-ASCII (a BOM too, as it is kept), so test for that.
  const ascii = utf8.decode(buf.subarray(start, end));
  if (!NON_ASCII.test(ascii)) return ascii;
  // windows-1252 is native and equal to Latin-1 except for 0x80–0x9F; redo those rare cases.
  const s = win1252.decode(buf.subarray(start, end));
  if (!WIDE.test(s)) return s;
  let out = "";
  for (let i = start; i < end; i += 4096) {
    out += String.fromCharCode(...buf.subarray(i, Math.min(end, i + 4096)));
  }
  return out;
}

/**
 * A request head as text. `headers` are sent as given (host included); the framing adds the one
 * header this hop owns: `transfer-encoding: chunked` when a body of unknown length follows, or
 * `content-length` (when ≥ 0) for a body whose length is known only here.
 */
export function requestHead(
  method: string,
  target: string,
  opts: { headers: HeaderMap; chunked: boolean; contentLength?: number },
): string {
  let s = method + " " + target + " HTTP/1.1\r\n";
  opts.headers.forEach((v, k) => {
    s += k + ": " + v + "\r\n";
  });
  if (opts.chunked) s += "transfer-encoding: chunked\r\n";
  else if (opts.contentLength !== undefined && opts.contentLength >= 0) {
    s += "content-length: " + opts.contentLength + "\r\n";
  }
  return s + "\r\n";
}

/** The bytes of a head from `requestHead` (Latin-1: header values are ByteStrings, not UTF-8). */
export function headBytes(head: string): Uint8Array {
  return NON_ASCII.test(head) ? latin1Bytes(head) : encoder.encode(head);
}

/**
 * Writes an ASCII head into the start of `buf` and returns its length; -1 when it is not ASCII
 * or does not fit in `room` bytes (then `headBytes` it is, and what was written here is garbage).
 */
export function headInto(head: string, buf: Uint8Array, room: number): number {
  if (head.length > room) return -1;
  // Encoded into exactly as many bytes as it has characters: any other than ASCII takes two or
  // more, so the encoder stops before the end (no separate test for one).
  return encoder.encodeInto(head, buf.subarray(0, head.length)).read === head.length
    ? head.length
    : -1;
}

/** Encodes a request head (`requestHead` then `headBytes`). */
export function encodeRequestHead(
  method: string,
  target: string,
  opts: { headers: HeaderMap; chunked: boolean; contentLength?: number },
): Uint8Array {
  return headBytes(requestHead(method, target, opts));
}

/**
 * Position just after the empty line ending a head in buf[start, end), or -1 if incomplete.
 * `from` (start ≤ from ≤ end): where to look on from, when buf[start, from) was looked at before
 * and held no end (whether an LF ends the head depends only on the bytes before it).
 */
export function findHeadEnd(buf: Uint8Array, start: number, end: number, from = start): number {
  // indexOf searches to the end of the buffer: past a first look, only up to `end`, or a head
  // trickled in many reads had the rest of its (grown) buffer scanned once per read.
  const hay = from > start && end < buf.length ? buf.subarray(0, end) : buf;
  let i = from;
  while (i < end) {
    const lf = hay.indexOf(10, i);
    if (lf < 0 || lf >= end) return -1;
    // An empty line: LF right after the previous LF (or CRLF).
    if (
      lf > start &&
      (buf[lf - 1] === 10 || (buf[lf - 1] === 13 && lf - 1 > start && buf[lf - 2] === 10))
    ) {
      return lf + 1;
    }
    i = lf + 1;
  }
  return -1;
}

const protocolError = (msg: string) => new ProxyError("protocol", msg, { sentNothing: false });

/**
 * Parses a response head from buf[start, end). Returns null while incomplete; throws a
 * `protocol` ProxyError for malformed input or a head over `maxBytes`.
 */
export function parseResponseHead(
  buf: Uint8Array,
  start: number,
  end: number,
  opts: {
    maxBytes: number;
    method: string;
    /**
     * Bytes from `start` an earlier call looked at and found no end of the head in: the search
     * goes on after them, so a head that arrives in many reads is scanned once, not per read.
     */
    scanned?: number;
  },
): ResponseHead | null {
  const headEnd = findHeadEnd(buf, start, end, start + (opts.scanned ?? 0));
  if (headEnd < 0) {
    if (end - start > opts.maxBytes) {
      throw protocolError(`Upstream response header exceeds ${opts.maxBytes} bytes`);
    }
    return null;
  }
  if (headEnd - start > opts.maxBytes) {
    throw protocolError(`Upstream response header exceeds ${opts.maxBytes} bytes`);
  }
  // Any byte beyond ASCII comes out as a character CLEAN_HEAD refuses.
  const text = latin1(buf, start, headEnd);
  const checked = CLEAN_HEAD.test(text);
  let eol = text.indexOf("\n");
  const statusLine = text.charCodeAt(eol - 1) === 13 ? text.slice(0, eol - 1) : text.slice(0, eol);
  // HTTP-version SP status-code SP [reason-phrase] (RFC 9112 §4)
  if (
    statusLine.length < 12 || !statusLine.startsWith("HTTP/1.") || statusLine.charCodeAt(8) !== 32
  ) {
    throw protocolError(`Invalid upstream status line "${statusLine.slice(0, 40)}"`);
  }
  const minor = statusLine.charCodeAt(7) - 48;
  const status = threeDigits(statusLine);
  // A code past 599 is refused as nginx does ("upstream sent invalid status"): no Response takes it.
  if ((minor !== 0 && minor !== 1) || status < 100 || status > 599) {
    throw protocolError(`Invalid upstream status line "${statusLine.slice(0, 40)}"`);
  }
  const statusText = statusLine.length > 13 ? statusLine.slice(13) : "";
  // Framing fields are read after the loop, so a folded line could not be put back where it
  // belongs before they were interpreted: such a head is refused, as nginx does (RFC 9112 §5.2
  // allows either).

  const headers: [string, string][] = [];
  let contentLength = -1;
  let te: string | null = null;
  let conn: string | null = null;
  let keepAliveMs = -1;
  let pos = eol + 1;
  while (pos < text.length) {
    eol = text.indexOf("\n", pos);
    const lineEnd = text.charCodeAt(eol - 1) === 13 ? eol - 1 : eol;
    if (lineEnd === pos) break; // the empty line
    const c0 = text.charCodeAt(pos);
    if (c0 === 32 || c0 === 9) throw protocolError("Folded upstream header line (obs-fold)");
    const colon = text.indexOf(":", pos);
    if (colon <= pos || colon > lineEnd) throw protocolError("Invalid upstream header line");
    const name = text.slice(pos, colon);
    const nc = name.charCodeAt(name.length - 1);
    if (nc === 32 || nc === 9) throw protocolError("Whitespace before colon in upstream header");
    const value = trimOws(text, colon + 1, lineEnd);
    pos = eol + 1;
    const lower = HOP_LENGTHS[name.length] ? name.toLowerCase() : "";
    if (lower === "content-length") {
      const n = parseContentLength(value);
      if (n < 0 || (contentLength >= 0 && n !== contentLength)) {
        throw protocolError(`Invalid upstream Content-Length "${value.slice(0, 40)}"`);
      }
      // Repeated or a list of equal values ("3, 3"): one plain value goes on (RFC 9110 §8.6);
      // HTTP/2 clients refuse the combined "3, 3" (stream error).
      const first = contentLength < 0;
      contentLength = n;
      // Never on a 204 (RFC 9110 §8.6) nor a 205, which has no content (§15.3.6): HTTP/2 clients
      // refuse a length other than 0 on a response without content (stream error).
      if (first && status !== 204 && status !== 205) {
        headers.push([name, value.includes(",") ? String(n) : value]);
      }
      continue;
    } else if (lower === "transfer-encoding") {
      te = te === null ? value : te + ", " + value;
      continue; // this hop's framing: decoded here, never forwarded
    } else if (lower === "connection") {
      conn = conn === null ? value : conn + ", " + value;
      continue;
    } else if (HOP.has(lower)) {
      if (lower === "keep-alive") keepAliveMs = keepAliveTimeout(value, keepAliveMs);
      continue;
    }
    headers.push([name, value]);
  }
  // Fields named in Connection belong to this hop too (RFC 9110 §7.6.1).
  const named = conn === null ? null : tokens(conn);
  if (named && named.some((n) => n !== "close" && n !== "keep-alive")) {
    const drop = new Set(named);
    for (let i = headers.length - 1; i >= 0; i--) {
      if (drop.has(headers[i][0].toLowerCase())) headers.splice(i, 1);
    }
  }

  let framing: Framing;
  let close = minor === 0 ? !hasToken(conn, "keep-alive") : hasToken(conn, "close");
  // A Connection list is tokens (RFC 9110 §7.6.1): one with other bytes ("close\xa0") is no
  // promise to keep the connection open, so it is not reused.
  if (!close && conn !== null && NOT_TOKEN_LIST.test(conn)) close = true;
  if (te !== null && contentLength >= 0) {
    // Both: a sign of response splitting. A proxy that forwards it must drop Content-Length
    // (RFC 9112 §6.3), or the client would cut the decoded body at the stated length (or, for a
    // HEAD, 204 or 304, take it for the length a GET would have).
    close = true;
    contentLength = -1;
    for (let i = headers.length - 1; i >= 0; i--) {
      if (headers[i][0].length === 14 && headers[i][0].toLowerCase() === "content-length") {
        headers.splice(i, 1);
      }
    }
  }
  if (
    opts.method === "HEAD" || status === 204 || status === 304 || (status >= 100 && status < 200)
  ) {
    framing = "none";
  } else if (te !== null) {
    // Transfer-Encoding overrides Content-Length (§6.3). Only chunked is decoded here: any other
    // coding would reach the client still applied with nothing saying so (§6.1).
    if (!isChunkedOnly(te)) {
      throw protocolError(`Unsupported upstream Transfer-Encoding "${te.slice(0, 40)}"`);
    }
    framing = "chunked";
    // An HTTP/1.0 message with Transfer-Encoding has faulty framing: close after it (§6.1).
    if (minor === 0) close = true;
  } else if (contentLength >= 0) {
    framing = "length";
  } else {
    framing = "close";
    close = true;
  }
  return {
    status,
    statusText,
    headers,
    minor,
    contentLength,
    framing,
    close,
    keepAliveMs,
    size: headEnd - start,
    checked,
  };
}

/** The `timeout` parameter of a Keep-Alive field in ms (RFC 2068 §19.7.1.1), else `prev`. */
function keepAliveTimeout(value: string, prev: number): number {
  const m = /(?:^|[,;\s])timeout\s*=\s*"?(\d{1,9})/i.exec(value);
  return m ? Number(m[1]) * 1000 : prev;
}

const DIGITS = /^\d{1,15}$/;
/** A list element: digits with OWS (SP, HTAB) around them, nothing else (RFC 9110 §5.6.1). */
const OWS_DIGITS = /^[ \t]*(\d{1,15})[ \t]*$/;

/**
 * Parses a Content-Length value (a list of equal values is allowed); -1 when invalid. Only OWS
 * is trimmed: String.trim would also take NBSP (obs-text 0xA0), VT or FF, and let "2\xa0" pass.
 */
function parseContentLength(v: string): number {
  if (DIGITS.test(v)) return Number(v);
  let result = -1;
  for (const part of v.split(",")) {
    const m = OWS_DIGITS.exec(part);
    if (m === null) return -1;
    const n = Number(m[1]);
    if (result >= 0 && n !== result) return -1;
    result = n;
  }
  return result;
}

/** A byte no token list has: neither a tchar nor OWS nor a comma (RFC 9110 §5.6.2). */
const NOT_TOKEN_LIST = /[^\t !#$%&'*+\-.^_`|~0-9A-Za-z,]/;

function hasToken(list: string | null, token: string): boolean {
  if (list === null) return false;
  for (const t of list.split(",")) {
    if (trimOws(t, 0, t.length).toLowerCase() === token) return true;
  }
  return false;
}

function tokens(list: string): string[] {
  return list.split(",").map((t) => trimOws(t, 0, t.length).toLowerCase()).filter(Boolean);
}

/**
 * True when the Transfer-Encoding list is exactly one "chunked" (it must not repeat), with only
 * OWS and empty elements around it: "chunked\xa0" is another coding (RFC 9112 §7).
 */
function isChunkedOnly(list: string): boolean {
  let found = false;
  for (const part of list.split(",")) {
    const t = trimOws(part, 0, part.length);
    if (t === "") continue;
    if (found || t.length !== 7 || t.toLowerCase() !== "chunked") return false;
    found = true;
  }
  return found;
}

/** The status code of a status line: exactly three digits, then SP or the end; else -1. */
function threeDigits(line: string): number {
  let n = 0;
  for (let i = 9; i < 12; i++) {
    const d = line.charCodeAt(i) - 48;
    if (!(d >= 0 && d <= 9)) return -1;
    n = n * 10 + d;
  }
  return line.length === 12 || line.charCodeAt(12) === 32 ? n : -1;
}

/** text[start, end) without leading and trailing SP and HTAB (OWS): String.trim would also
 * strip 0xA0, the last byte of many UTF-8 characters read as Latin-1. */
function trimOws(text: string, start: number, end: number): string {
  while (start < end && (text.charCodeAt(start) === 32 || text.charCodeAt(start) === 9)) start++;
  while (end > start && (text.charCodeAt(end - 1) === 32 || text.charCodeAt(end - 1) === 9)) end--;
  return text.slice(start, end);
}

/**
 * Parses a chunk-size line (RFC 9112 §7.1) from buf[start, lf) where lf is its LF: hex digits,
 * then optional BWS and extensions (read past), then CRLF (a bare LF is taken, as in heads).
 * Returns the size; throws for anything else, such as "2 5" (no size: "25" would be 0x25), a CR
 * inside the line or a control character in an extension.
 */
export function parseChunkSize(buf: Uint8Array, start: number, lf: number): number {
  const end = lf > start && buf[lf - 1] === 13 ? lf - 1 : lf;
  let n = 0;
  let digits = 0;
  let significant = 0;
  let i = start;
  for (; i < end; i++) {
    const c = buf[i];
    let d: number;
    if (c >= 48 && c <= 57) d = c - 48;
    else if (c >= 97 && c <= 102) d = c - 87;
    else if (c >= 65 && c <= 70) d = c - 55;
    else break;
    digits++;
    if (n === 0 && d === 0) continue; // leading zeros: any number of them (1*HEXDIG)
    if (++significant > 12) throw protocolError("Chunk size from upstream too large");
    n = n * 16 + d;
  }
  if (digits === 0) throw protocolError("Invalid chunk size from upstream");
  if (i < end) {
    while (i < end && (buf[i] === 32 || buf[i] === 9)) i++; // BWS
    if (i < end && buf[i] !== 59) throw protocolError("Invalid chunk size from upstream");
    // chunk-ext: tokens and quoted strings, read past; no control character but HTAB.
    for (; i < end; i++) {
      const c = buf[i];
      if ((c < 32 && c !== 9) || c === 127) {
        throw protocolError("Invalid chunk extension from upstream");
      }
    }
  }
  return n;
}
