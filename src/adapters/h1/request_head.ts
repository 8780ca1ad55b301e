// The request head parser of Prox's own HTTP/1.1 engine (server.ts). It takes only the plainest
// requests: HTTP/1.1 (or a later minor version, served as 1.1) or HTTP/1.0, an origin-form
// target, one Host, well-formed fields, no upgrade on a GET (another method's Upgrade is ignored),
// no Expect but `100-continue`, and no body but one framed by a single Content-Length in plain
// digits or (HTTP/1.1) by `Transfer-Encoding: chunked` alone, on a method other than GET and
// HEAD, whose bodies the pipeline refuses as on Deno.serve. Everything else (another transfer
// coding, both framings, a WebSocket or h2c upgrade, the HTTP/2 preface, a request without Host,
// an odd or malformed head) is not judged here at all: the engine relays that connection to
// Deno.serve, which answers it as it answers every request with `http1_engine: deno`. So where a
// request ends is decided here only when no parser could read it otherwise, which is where two
// parsers that disagree let requests be smuggled (RFC 9112 §11.2). No Deno APIs: bytes or text
// in, a head or null out.

import { latin1 } from "../upstream_h1_wire.ts";

/** A parsed request head. Field names are lowercase; values as sent, without surrounding OWS. */
export interface RequestHead {
  method: string;
  /** The origin-form request target as sent (`/p?q`), or `*` (asterisk-form, RFC 9112 §3.2.4). */
  target: string;
  names: string[];
  values: string[];
  /** The Host field's value. */
  host: string;
  /**
   * Whether the connection closes after this exchange: the client asked to (`Connection: close`),
   * or it spoke HTTP/1.0 without asking to keep it (`Connection: keep-alive`, RFC 9112 §9.3).
   */
  close: boolean;
  /**
   * An HTTP/1.0 request: its answer goes out as HTTP/1.0, never chunked. A later minor version
   * than 1.1 (HTTP/1.2) is served as HTTP/1.1 (RFC 9110 §2.5).
   */
  http10: boolean;
  /** The body's length (0: none, or chunked). */
  contentLength: number;
  /** The body is chunked (`Transfer-Encoding: chunked`, chunked.ts). */
  chunked: boolean;
  /** `Expect: 100-continue` with a body: the client may wait for a 100 before sending it. */
  expectContinue: boolean;
}

/**
 * parseRequestHead's answer for an HTTP/1.1 request without Host, which a server must refuse with
 * 400 (RFC 9112 §3.2); Deno.serve would make up `localhost` and serve it.
 */
export const NO_HOST = Symbol("an HTTP/1.1 request without Host");

/**
 * parseRequestHead's answer for a head of more than MAX_FIELDS field lines, which gets 431 (RFC
 * 6585 §5); Deno.serve answers 400 as to a malformed head.
 */
export const TOO_MANY_FIELDS = Symbol("a head of too many field lines");

/**
 * The largest request body the engine hands on as bytes when it came with its head (the proxy
 * action's replay cap); a larger one, or one still on its way, is streamed from the socket.
 */
export const BODY_LIMIT = 64 * 1024;

const TCHAR = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// An origin-form target: a slash, then visible ASCII only (RFC 9112 §3.2.1).
const ORIGIN_FORM = /^\/[\x21-\x7e]*$/;
// A field value: HTAB, SP, visible ASCII, obs-text (RFC 9110 §5.5).
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
/**
 * The most field lines Deno.serve takes in a head (it answers 400 to more): a head with more gets
 * 431 from the engine (TOO_MANY_FIELDS, HeadScan.tooMany).
 */
export const MAX_FIELDS = 128;
// The Connection options that end the connection after this exchange, and the one that keeps an
// HTTP/1.0 connection open.
const CLOSE = /(?:^|,)[ \t]*close[ \t]*(?:,|$)/i;
const KEEP_ALIVE = /(?:^|,)[ \t]*keep-alive[ \t]*(?:,|$)/i;
// A length in plain digits, at most 15 (exact as a number): "010" (ten bytes, which a lax parser
// reads as octal) is relayed.
const LENGTH = /^(?:0|[1-9][0-9]{0,14})$/;
/**
 * A head that passes every check below on each part, in plain ASCII: a token method, an
 * origin-form target, HTTP/1.x, token names and values of HTAB, SP and visible ASCII, each
 * line ending in CRLF. One match over the whole head costs less than a test per field; a head it
 * refuses (obs-text, or one parseRequestHead refuses too) is checked field by field.
 */
const CLEAN_HEAD =
  /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ \/[\x21-\x7e]* HTTP\/1\.[0-9]\r\n(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n)*\r\n$/;

/**
 * The offset just past the blank line ending a head in `b[from..to)`, or -1. A head's lines may
 * end in a bare LF (RFC 9112 §2.2 lets a server take one, and Deno.serve does), so LF LF and
 * LF CR LF end one too; such a head is not the engine's (parseRequestHead refuses it) and is
 * relayed at once, where waiting for CRLF CRLF left its client without an answer.
 */
export function headEnd(b: Uint8Array, from: number, to: number): number {
  for (let i = from + 1; i < to; i++) {
    if (b[i] !== 10) continue;
    const p = b[i - 1];
    if (p === 10 || (p === 13 && i - 2 >= from && b[i - 2] === 10)) return i + 1;
  }
  return -1;
}

// The states of HeadScan: where in a head the next byte falls.
const enum S {
  Method0,
  Method,
  Target0,
  Target,
  Version,
  Line,
  Name,
  Value,
  Lf,
  EndLf,
  Done,
}
// "HTTP/1.x", then CRLF: the minor version is the byte at MINOR (any digit, RFC 9110 §2.5).
const VERSION = "HTTP/1.1\r\n";
const MINOR = 7;
// tchar (RFC 9110 §5.6.2) by byte.
const IS_TCHAR = new Uint8Array(256);
for (const ch of "!#$%&'*+-.^_`|~") IS_TCHAR[ch.charCodeAt(0)] = 1;
for (let i = 0; i < 256; i++) {
  if ((i >= 48 && i <= 57) || (i >= 65 && i <= 90) || (i >= 97 && i <= 122)) IS_TCHAR[i] = 1;
}

/**
 * Checks a head still on its way, byte by byte as it comes (each byte once): whether what came
 * so far can still begin a head that parseRequestHead takes. One that cannot (a lone CR, a
 * control byte, a bad name, HTTP/1.2) is relayed at once, so that Deno.serve answers it as on
 * the default engine (400 at the first bad byte) instead of the engine waiting for a blank line
 * that may never come. Offsets are from the head's first byte, which stay valid when the read
 * buffer moves its bytes.
 */
export class HeadScan {
  #state = S.Method0;
  #at = 0;
  #k = 0;
  #lines = 0;

  /** The head has more field lines than MAX_FIELDS (so viable() said false). */
  get tooMany(): boolean {
    return this.#lines > MAX_FIELDS;
  }

  /** The request line came whole: what comes now is the field section. */
  get lineDone(): boolean {
    return this.#state >= S.Line;
  }

  /** Starts over for the next head. */
  reset(): void {
    this.#state = S.Method0;
    this.#at = this.#k = this.#lines = 0;
  }

  /** False once `b[from..to)`, the head so far, cannot be one the engine takes. */
  viable(b: Uint8Array, from: number, to: number): boolean {
    let s = this.#state;
    let i = from + this.#at;
    for (; i < to && s !== S.Done; i++) {
      const x = b[i];
      switch (s) {
        case S.Method0:
        case S.Method:
          if (IS_TCHAR[x]) s = S.Method;
          else if (x === 32 && s === S.Method) s = S.Target0;
          else return false;
          break;
        case S.Target0:
          if (x !== 47) return false; // origin-form begins with "/"
          s = S.Target;
          break;
        case S.Target:
          if (x === 32) {
            s = S.Version;
            this.#k = 0;
          } else if (x < 0x21 || x > 0x7e) return false;
          break;
        case S.Version:
          if (this.#k === MINOR ? x < 48 || x > 57 : x !== VERSION.charCodeAt(this.#k)) {
            return false;
          }
          this.#k++;
          if (this.#k === VERSION.length) s = S.Line;
          break;
        case S.Line:
          if (x === 13) s = S.EndLf;
          else if (IS_TCHAR[x] && this.#lines++ < MAX_FIELDS) s = S.Name;
          else return false; // obs-fold, an empty name, a bare LF, too many lines
          break;
        case S.Name:
          if (x === 58) s = S.Value;
          else if (!IS_TCHAR[x]) return false; // whitespace before the colon among them
          break;
        case S.Value:
          if (x === 13) s = S.Lf;
          else if (x < 0x20 ? x !== 9 : x === 0x7f) return false;
          break;
        case S.Lf:
        case S.EndLf:
          if (x !== 10) return false;
          s = s === S.Lf ? S.Line : S.Done;
          break;
      }
    }
    this.#state = s;
    this.#at = i - from;
    return true;
  }
}

/**
 * Parses the head in `b[start, end)` (up to and including its blank line), as parseRequestHead;
 * NO_HOST for an HTTP/1.1 request without Host, TOO_MANY_FIELDS for one of too many field lines.
 * The head is decoded as latin-1: a byte beyond ASCII comes out as a character CLEAN_HEAD refuses.
 */
export function parseRequestHeadAt(
  b: Uint8Array,
  start: number,
  end: number,
): RequestHead | typeof NO_HOST | typeof TOO_MANY_FIELDS | null {
  const text = latin1(b, start, end);
  return parseHead(text, CLEAN_HEAD.test(text));
}

/**
 * Parses a head (latin-1 text up to and including its blank line); null when the request is not
 * one the engine takes itself (or, NO_HOST to parseRequestHeadAt, one it refuses).
 */
export function parseRequestHead(text: string): RequestHead | null {
  const head = parseHead(text, CLEAN_HEAD.test(text));
  return typeof head === "symbol" ? null : head;
}

/** parseRequestHead; `clean`: CLEAN_HEAD matched, so no part needs its own check. */
function parseHead(
  text: string,
  clean: boolean,
): RequestHead | typeof NO_HOST | typeof TOO_MANY_FIELDS | null {
  const lineEnd = text.indexOf("\r\n");
  const sp1 = text.indexOf(" ");
  const sp2 = text.indexOf(" ", sp1 + 1);
  // "METHOD SP /target SP HTTP/1.x CRLF", exactly: HTTP/1.0, or HTTP/1.1 and any later minor
  // version, which is served as HTTP/1.1 (RFC 9110 §2.5).
  if (sp1 <= 0 || sp2 < 0 || lineEnd !== sp2 + 9 || !text.startsWith("HTTP/1.", sp2 + 1)) {
    return null;
  }
  const minor = text.charCodeAt(sp2 + 8);
  if (minor < 48 || minor > 57) return null;
  const http10 = minor === 48;
  const method = text.slice(0, sp1);
  const target = text.slice(sp1 + 1, sp2);
  if (!clean && (!TCHAR.test(method) || !(ORIGIN_FORM.test(target) || target === "*"))) {
    return null;
  }

  const names: string[] = [];
  const values: string[] = [];
  let host: string | null = null;
  let close = false;
  let keepAlive = false;
  let length = -1;
  let chunked = false;
  let cookie = -1;
  let expect = false;
  let at = lineEnd + 2;
  for (let lines = 0;; lines++) {
    const end = text.indexOf("\r\n", at);
    if (end === at) break; // the blank line
    if (lines === MAX_FIELDS) return TOO_MANY_FIELDS;
    const colon = text.indexOf(":", at);
    if (colon <= at || colon > end) return null;
    const rawName = text.slice(at, colon);
    // A token name excludes whitespace before the colon and obsolete line folding (a field
    // line starting with SP or HTAB), and a value without CR or LF has no bare line ends.
    if (!clean && !TCHAR.test(rawName)) return null;
    const value = trimOws(text.slice(colon + 1, end));
    if (!clean && BAD_VALUE.test(value)) return null;
    at = end + 2;
    const name = rawName.toLowerCase();
    switch (name) {
      case "host":
        if (host !== null) return null;
        host = value;
        break;
      case "content-length":
        // One length, in plain digits; anything else is Deno.serve's to judge.
        if (length >= 0 || !LENGTH.test(value)) return null;
        length = Number(value);
        break;
      case "expect":
        // 100-continue (once) is the engine's: it answers 100 when the body is first read. Any
        // other expectation is Deno.serve's to refuse.
        if (expect || value.toLowerCase() !== "100-continue") return null;
        expect = true;
        break;
      case "transfer-encoding":
        // Chunked alone, once, and only from HTTP/1.1 (HTTP/1.0 has no transfer codings: RFC
        // 9112 §6.1 has such a message's framing treated as faulty). Any other coding or list is
        // Deno.serve's to judge.
        if (chunked || http10 || value.toLowerCase() !== "chunked") return null;
        chunked = true;
        break;
      case "upgrade":
      case "http2-settings":
        // Only a GET opens a WebSocket or h2c (Deno.serve's to judge). Any other method's Upgrade
        // is ignored (RFC 9110 §7.8), as nginx does, and goes no further (hop-by-hop):
        // Deno.serve answers a bare 400 to a POST with `Connection: Upgrade`, which
        // `curl --http2 -d` over plain HTTP sends (`Upgrade: h2c`).
        if (method === "GET") return null;
        break;
      case "connection":
        if (CLOSE.test(value)) close = true;
        if (http10 && KEEP_ALIVE.test(value)) keepAlive = true;
        break;
      case "cookie":
        // Several Cookie fields are one list joined by "; " (RFC 6265 §5.4, RFC 9113 §8.2.3), as
        // Deno.serve gives them: `get("cookie")` would join them with ", ", which no cookie
        // parser splits (jwt_auth's and rate_limit's cookie lookups among them).
        if (cookie >= 0) {
          values[cookie] += "; " + value;
          continue;
        }
        cookie = names.length;
        break;
    }
    names.push(name);
    values.push(value);
  }
  // HTTP/1.0 has no Host: such a request is Deno.serve's to name a host for.
  if (host === null) return http10 ? null : NO_HOST;
  // Both framings at once is a smuggling attempt or a broken client: Deno.serve refuses it.
  if (chunked && length >= 0) return null;
  // Fetch gives a GET or HEAD no body: the pipeline refuses one that has a body (501), as there.
  if ((length > 0 || chunked) && (method === "GET" || method === "HEAD")) return null;
  return {
    method,
    target,
    names,
    values,
    host,
    close: close || (http10 && !keepAlive),
    http10,
    contentLength: Math.max(length, 0),
    chunked,
    // An HTTP/1.0 client cannot read a 100 (a server ignores its expectation, RFC 9110 §10.1.1).
    expectContinue: expect && (length > 0 || chunked) && !http10,
  };
}

function trimOws(s: string): string {
  let a = 0, z = s.length;
  while (a < z && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (z > a && (s.charCodeAt(z - 1) === 32 || s.charCodeAt(z - 1) === 9)) z--;
  return a === 0 && z === s.length ? s : s.slice(a, z);
}
