import assert from "node:assert/strict";
import {
  headEnd,
  HeadScan,
  MAX_FIELDS,
  NO_HOST,
  parseRequestHead,
  parseRequestHeadAt,
} from "./request_head.ts";
import type { RequestHead } from "./request_head.ts";

const enc = new TextEncoder();
/** parseRequestHeadAt, for a head with Host. */
const at = (b: Uint8Array, start: number, end: number) =>
  parseRequestHeadAt(b, start, end) as RequestHead | null;
/** A head's text as the bytes it stands for (each character one byte, as latin-1). */
const bytes = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));

Deno.test("headEnd finds the blank line after CRLF CRLF or a bare LF, from any offset", () => {
  const b = enc.encode("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n");
  assert.equal(headEnd(b, 0, b.length), 27);
  assert.equal(headEnd(b, 27, b.length), -1);
  // Lines ending in a bare LF end a head too (the engine relays it to Deno.serve, which takes it).
  for (const text of ["GET / HTTP/1.1\nHost: a\n\n", "GET / HTTP/1.1\r\nHost: a\n\r\n"]) {
    const lf = enc.encode(text + "GET /2");
    assert.equal(headEnd(lf, 0, lf.length), text.length, JSON.stringify(text));
    assert.equal(parseRequestHead(text), null);
  }
  const crlfLf = enc.encode("GET / HTTP/1.1\r\nHost: a\r\n\nGET /2");
  assert.equal(headEnd(crlfLf, 0, crlfLf.length), 26);
  // A lone CR is no line end, and a CR LF alone is no blank line.
  const cr = enc.encode("GET / HTTP/1.1\r\nHost: a\r\r\n");
  assert.equal(headEnd(cr, 0, cr.length), -1);
  // `from` is where the window may begin: a scan that resumes three bytes before the previous
  // end of data still finds a blank line split across two reads, and bytes before `from` (the
  // end of the previous request's head) never complete a pattern.
  assert.equal(headEnd(b, 23, b.length), 27);
  assert.equal(headEnd(b, 24, b.length), 27);
  assert.equal(headEnd(b, 25, b.length), -1);
  assert.equal(headEnd(b, 23, 26), -1);
  const next = enc.encode("GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\n");
  assert.equal(headEnd(next, 27, next.length), -1);
});

Deno.test("parseRequestHead takes a plain HTTP/1.1 request, bodiless or with a small body", () => {
  const h = parseRequestHead(
    "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\nX-Two: a \r\nx-two:\tb\r\n" +
      "Content-Length: 0\r\nConnection: keep-alive, Close\r\n\r\n",
  );
  assert.ok(h);
  assert.equal(h.method, "GET");
  assert.equal(h.target, "/a/b?x=1&y=%20");
  assert.equal(h.host, "example.com:8080");
  assert.deepEqual(h.names, ["host", "x-two", "x-two", "content-length", "connection"]);
  assert.deepEqual(h.values, ["example.com:8080", "a", "b", "0", "keep-alive, Close"]);
  assert.equal(h.close, true);
  assert.equal(h.contentLength, 0);
  // A body framed by one plain Content-Length is the engine's to read, whatever its size.
  const post = parseRequestHead("POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n");
  assert.equal(post?.contentLength, 65536);
  const large = parseRequestHead(
    "PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999\r\n\r\n",
  );
  assert.equal(large?.contentLength, 999_999_999_999_999);
  // Expect: 100-continue is the engine's when a body follows (it sends the 100 itself).
  const expect = (v: string, len: number) =>
    parseRequestHead(`PUT / HTTP/1.1\r\nHost: a\r\nExpect: ${v}\r\nContent-Length: ${len}\r\n\r\n`)
      ?.expectContinue;
  assert.equal(expect("100-Continue", 5), true);
  assert.equal(expect("100-continue", 0), false);
  assert.equal(post?.expectContinue, false);
  const k = parseRequestHead("HEAD / HTTP/1.1\r\nhost: a\r\nconnection: closed\r\n\r\n");
  assert.equal(k?.close, false);
  // Several Cookie fields become one, joined by "; " where the first was (as Deno.serve does).
  const c = parseRequestHead(
    "GET / HTTP/1.1\r\nCookie: a=1\r\nHost: a\r\ncookie: b=2; c=3\r\nCOOKIE: d=4\r\n\r\n",
  );
  assert.deepEqual(c?.names, ["cookie", "host"]);
  assert.deepEqual(c?.values, ["a=1; b=2; c=3; d=4", "a"]);
  // obs-text in a value is a byte string, kept as it came.
  assert.equal(
    parseRequestHead("GET / HTTP/1.1\r\nhost: a\r\nx: caf\xe9\r\n\r\n")?.values[1],
    "caf\xe9",
  );
});

Deno.test("parseRequestHead leaves odd bodies, upgrades and oddities to Deno.serve", () => {
  const relayed = [
    // bodies and framing Deno.serve must judge
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 010\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\n",
    "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    // upgrades, h2c, other versions and forms
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAA\r\n\r\n",
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n", // HTTP/1.0 without Host
    "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.10\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.00\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    // malformed or smuggling-shaped heads
    "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n",
    "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX-A: \x7f\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX\xe9: 1\r\n\r\n",
    "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n",
  ];
  for (const text of relayed) {
    assert.equal(parseRequestHead(text), null, JSON.stringify(text));
    // From bytes too, where a plain ASCII head skips the checks of each part.
    const b = bytes(`xx${text}yy`);
    assert.equal(parseRequestHeadAt(b, 2, b.length - 2), null, JSON.stringify(text));
  }
  // An HTTP/1.1 request without Host is the engine's to refuse (RFC 9112 §3.2), not relayed.
  for (const text of ["GET / HTTP/1.1\r\n\r\n", "POST / HTTP/1.1\r\nX-A: \xe9\r\n\r\n"]) {
    const b = bytes(`xx${text}yy`);
    assert.equal(parseRequestHeadAt(b, 2, b.length - 2), NO_HOST, JSON.stringify(text));
  }
});

Deno.test("parseRequestHead ignores the Upgrade of a request other than GET (curl --http2 -d)", () => {
  // Deno.serve answers a bare 400 to a POST with `Connection: Upgrade` (curl --http2 -d over plain
  // HTTP sends `Upgrade: h2c`); nginx serves it over HTTP/1.1 (RFC 9110 §7.8 lets a server ignore
  // Upgrade). Only a GET can open a WebSocket or h2c: any other method's is the engine's.
  const h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" +
    "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n";
  for (const method of ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"]) {
    const text = `${method} /u HTTP/1.1\r\nHost: a\r\n${h2c}Content-Length: 5\r\n\r\n`;
    const h = parseRequestHead(text);
    assert.deepEqual([h?.method, h?.contentLength, h?.chunked], [method, 5, false], method);
    assert.ok(h?.names.includes("upgrade"), "kept: the proxy drops it as hop-by-hop");
    const b = bytes(`xx${text}yy`);
    assert.deepEqual(parseRequestHeadAt(b, 2, b.length - 2), h);
  }
  const ws = "POST /u HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n" +
    "Transfer-Encoding: chunked\r\n\r\n";
  assert.equal(parseRequestHead(ws)?.chunked, true);
  // A GET's upgrade is still Deno.serve's; a HEAD's is ignored too.
  assert.equal(parseRequestHead(`GET / HTTP/1.1\r\nHost: a\r\n${h2c}\r\n`), null);
  assert.equal(parseRequestHead(`HEAD / HTTP/1.1\r\nHost: a\r\n${h2c}\r\n`)?.method, "HEAD");
});

Deno.test("parseRequestHeadAt reads a head's bytes as latin-1, ASCII or not", () => {
  const ascii = "GET /p?q=1 HTTP/1.1\r\nHost: a\r\nX-Tab:\tx y\t\r\nAccept: */*\r\n\r\n";
  const b = bytes(`zz${ascii}GET /next`);
  assert.deepEqual(parseRequestHeadAt(b, 2, 2 + ascii.length), parseRequestHead(ascii));
  assert.deepEqual(at(b, 2, 2 + ascii.length)?.values, ["a", "x y", "*/*"]);
  // obs-text: one byte per character, whether or not the bytes would be UTF-8.
  const obs = "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9\r\nY: caf\xc3\xa9\r\n\r\n";
  assert.deepEqual(at(bytes(obs), 0, obs.length)?.values, [
    "a",
    "caf\xe9",
    "caf\xc3\xa9",
  ]);
});

Deno.test("parseRequestHead takes a chunked body on its own (no length beside it)", () => {
  for (const v of ["chunked", "Chunked", " chunked\t"]) {
    const h = parseRequestHead(`PUT /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:${v}\r\n\r\n`);
    assert.deepEqual([h?.chunked, h?.contentLength, h?.expectContinue], [true, 0, false], v);
  }
  const expect = parseRequestHead(
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
  );
  assert.equal(expect?.expectContinue, true);
  assert.equal(parseRequestHead("POST / HTTP/1.1\r\nHost: a\r\n\r\n")?.chunked, false);
});

Deno.test("parseRequestHead takes HTTP/1.0 with Host: kept alive only when asked, no 100", () => {
  const h = (fields: string) => parseRequestHead(`GET /x HTTP/1.0\r\nHost: a\r\n${fields}\r\n`);
  assert.deepEqual(
    [h("")?.http10, h("")?.close, h("")?.target],
    [true, true, "/x"],
  );
  // RFC 9112 §9.3: persistent only with the keep-alive option, and not with close beside it.
  assert.equal(h("Connection: Keep-Alive\r\n")?.close, false);
  assert.equal(h("Connection: te, keep-alive\r\n")?.close, false);
  assert.equal(h("Connection: keep-alive, close\r\n")?.close, true);
  assert.equal(h("Connection: keep-alives\r\n")?.close, true);
  assert.equal(h("Keep-Alive: timeout=5\r\n")?.close, true);
  // An HTTP/1.0 client cannot read a 100: its expectation is ignored (RFC 9110 §10.1.1).
  const put = parseRequestHead(
    "PUT / HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
  );
  assert.deepEqual([put?.contentLength, put?.expectContinue], [5, false]);
  // HTTP/1.1 is unchanged: open unless closed; a later minor version is HTTP/1.1 (RFC 9110 §2.5).
  for (const minor of ["1", "2", "9"]) {
    const one = parseRequestHead(`GET / HTTP/1.${minor}\r\nHost: a\r\n\r\n`);
    assert.deepEqual([one?.http10, one?.close], [false, false], minor);
  }
});

Deno.test("parseRequestHead takes as many field lines as Deno.serve, and leaves it more", () => {
  const head = (n: number) => {
    let text = "GET / HTTP/1.1\r\nHost: a\r\n";
    // Cookie lines count one by one, as Deno.serve counts them, though they become one field.
    for (let i = 1; i < n; i++) text += i % 2 ? `Cookie: c${i}=1\r\n` : `X-${i}: ${i}\r\n`;
    return text + "\r\n";
  };
  assert.equal(MAX_FIELDS, 128);
  assert.ok(parseRequestHead(head(MAX_FIELDS)));
  assert.equal(parseRequestHead(head(MAX_FIELDS + 1)), null);
});

Deno.test("HeadScan tells a head on its way that can no longer be the engine's, byte by byte", () => {
  const latin1 = (t: string) => Uint8Array.from(t, (ch) => ch.charCodeAt(0));
  /** Feeds `text` in pieces of `step` bytes; the offset of the first piece found not viable. */
  const scan = (text: string, step: number) => {
    const b = latin1("xx" + text), s = new HeadScan();
    for (let to = 2 + step;; to += step) {
      if (!s.viable(b, 2, Math.min(to, b.length))) return Math.min(to, b.length) - 2;
      if (to >= b.length) return -1;
    }
  };
  // Every head parseRequestHead takes stays viable to its end, however it is split.
  const taken = [
    "GET /a?b=%20 HTTP/1.1\r\nHost: a:1\r\nX-Tab:\ta\tb \r\nX-Obs: caf\xe9\r\nX-E:\r\n\r\n",
    "M-SEARCH / HTTP/1.1\r\nhost: a\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
  ];
  for (const text of taken) {
    assert.ok(parseRequestHead(text), text);
    for (const step of [1, 2, 7, 1000]) assert.equal(scan(text, step), -1, `${text} by ${step}`);
  }
  // A head that cannot be taken is found out at its first bad byte, before its blank line, so
  // that Deno.serve (which refuses it at once) answers it as on the default engine.
  const bad: [string, string][] = [
    ["GET /v HTTP/1.1\r\nHost: a\r\n\r", "x"], // a lone CR
    ["GET /v HTTP/1.1\r\nHost: a\r", "\xff"],
    ["GET /v HTTP/1.1\r\nHost: a\r\nX-A: 1\r", "X"],
    ["GET /v HTTP/1.1\r\nHos", "/: a"], // not a token
    ["GET /v HTTP/1.1\r\nX-A", " : 1"], // whitespace before the colon
    ["GET /v HTTP/1.1\r\nX-A: 1\r\n", " fold"],
    ["GET /v HTTP/1.1\r\nX-A: a", "\x00"],
    ["GET /v HTTP/1.1\r\nX-A: a", "\x7f"],
    ["GET /v HTTP/1.1\r\nX-A: a", "\nX-B: b"], // a bare LF (Deno.serve's to take)
    ["GET /v HTTP/", "2.0\r\n"],
    ["GET /v HTTP/1.", "x\r\n"],
    ["GET /v HTTP/1.2", "0\r\n"],
    ["GET /v HTTP/1.0", "0\r\n"],
    ["GET ", "http://a/ HTTP/1.1\r\n"],
    ["GET", "\t/ HTTP/1.1\r\n"],
    ["", "\r\nGET / HTTP/1.1\r\n"],
    ["GET /caf", "\xe9 HTTP/1.1\r\n"],
  ];
  for (const [good, rest] of bad) {
    assert.equal(scan(good, 1), -1, JSON.stringify(good));
    assert.equal(scan(good + rest, 1), good.length + 1, JSON.stringify(good + rest));
  }
  // More field lines than Deno.serve takes.
  let many = "GET / HTTP/1.1\r\n";
  for (let i = 0; i < MAX_FIELDS; i++) many += `X-${i}: ${i}\r\n`;
  assert.equal(scan(many, 100), -1);
  assert.notEqual(scan(many + "X: 1\r\n", 100), -1);
  // reset() starts over for the next head.
  const s = new HeadScan(), b = latin1("GET / HTTP/1.1\r\n\r");
  assert.equal(s.viable(latin1("\x00"), 0, 1), false);
  s.reset();
  assert.equal(s.viable(b, 0, b.length), true);
});

Deno.test("parseRequestHead takes the asterisk-form (the pipeline answers OPTIONS * itself)", () => {
  const head = parseRequestHead("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal(head?.target, "*");
  assert.equal(head?.method, "OPTIONS");
  // Any method: the pipeline answers 400 to those, rather than Deno.serve serving them as `/*`.
  assert.equal(parseRequestHead("GET * HTTP/1.1\r\nHost: a\r\n\r\n")?.target, "*");
  assert.equal(parseRequestHead("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), null);
});
