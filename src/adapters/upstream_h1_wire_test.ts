import assert from "node:assert/strict";
import {
  headBytes,
  headInto,
  latin1,
  parseChunkSize,
  parseResponseHead,
  requestHead,
} from "./upstream_h1_wire.ts";

const bytes = (...parts: (string | number[])[]) =>
  new Uint8Array(
    parts.flatMap((p) => typeof p === "string" ? [...p].map((c) => c.charCodeAt(0)) : p),
  );

Deno.test("latin1 maps every byte to one code unit, ASCII or not", () => {
  const ascii = bytes("HTTP/1.1 200 OK\r\n");
  assert.equal(latin1(ascii, 0, ascii.length), "HTTP/1.1 200 OK\r\n");
  assert.equal(latin1(ascii, 9, 12), "200");
  // é, and 0x80–0x9F, which windows-1252 would turn into other characters (€, …, Ÿ).
  const high = bytes("caf", [0xe9, 0x80, 0x85, 0x9f, 0xff]);
  assert.equal(latin1(high, 0, high.length), "caf\u00e9\u0080\u0085\u009f\u00ff");
  // A byte-order mark stays three characters (a UTF-8 decoder would drop it).
  const bom = bytes([0xef, 0xbb, 0xbf], "HTTP");
  assert.equal(latin1(bom, 0, bom.length), "\u00ef\u00bb\u00bfHTTP");
});

Deno.test("parseResponseHead keeps Latin-1 field values and rejects a head behind a BOM", () => {
  const opts = { maxBytes: 8192, method: "GET" };
  const head = bytes("HTTP/1.1 200 OK\r\nX-Name: caf", [0xe9], "\r\nContent-Length: 0\r\n\r\n");
  const res = parseResponseHead(head, 0, head.length, opts)!;
  assert.deepEqual(res.headers, [["X-Name", "caf\u00e9"], ["Content-Length", "0"]]);
  assert.equal(res.contentLength, 0);
  assert.equal(res.size, head.length);
  const bom = bytes([0xef, 0xbb, 0xbf], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  assert.throws(() => parseResponseHead(bom, 0, bom.length, opts), /Invalid upstream status line/);
});

Deno.test("parseResponseHead marks a plain ASCII head as needing no check per field", () => {
  const opts = { maxBytes: 8192, method: "GET" };
  const parse = (...parts: (string | number[])[]) => {
    const b = bytes("xx", ...parts, "yy");
    return parseResponseHead(b, 2, b.length - 2, opts)!;
  };
  const clean = parse("HTTP/1.1 200 OK\r\nX-A: 1\tb c\r\nContent-Length: 0\r\nX-B:\r\n\r\n");
  assert.equal(clean.checked, true);
  assert.deepEqual(clean.headers, [["X-A", "1\tb c"], ["Content-Length", "0"], ["X-B", ""]]);
  assert.equal(parse("HTTP/1.0 204 No Content\nX-A: 1\n\n").checked, true);
  // Anything else is checked field by field where it is sent on (upstream_h1.ts).
  for (
    const odd of [
      ["HTTP/1.1 200 OK\r\nX-A: caf", [0xe9], "\r\n\r\n"],
      ["HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n"],
      ["HTTP/1.1 200 OK\r\nX-A: a\x7f\r\n\r\n"],
      ["HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n"],
      ["HTTP/1.1 200 OK\r\nX\x01A: a\r\n\r\n"],
      ["HTTP/1.1 200 O\x01K\r\nX-A: a\r\n\r\n"],
    ]
  ) {
    assert.equal(parse(...odd).checked, false, JSON.stringify(odd));
  }
  // A value with a control character still arrives, for the check to refuse it.
  assert.deepEqual(parse("HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n").headers, [["X-A", "a\x01b"]]);
});

Deno.test("requestHead frames the body; headInto writes an ASCII head in place or declines", () => {
  const headers = new Headers({ host: "a.test", "x-v": "caf\u00e9" });
  const chunked = requestHead("PUT", "/x?y", {
    headers: new Headers({ host: "a" }),
    chunked: true,
  });
  assert.equal(chunked, "PUT /x?y HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n");
  const sized = requestHead("POST", "/", {
    headers: new Headers({ host: "a" }),
    chunked: false,
    contentLength: 5,
  });
  assert.equal(sized, "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\n");

  const buf = new Uint8Array(64).fill(0xff);
  const n = headInto(sized, buf, buf.length);
  assert.equal(n, sized.length);
  assert.deepEqual(buf.subarray(0, n), headBytes(sized));
  assert.equal(buf[n], 0xff, "nothing written past the head");
  assert.equal(headInto(sized, buf, sized.length - 1), -1, "no room: declined");
  // A Latin-1 value is not UTF-8: declined here, one byte per character from headBytes.
  const latin = requestHead("GET", "/", { headers, chunked: false });
  assert.equal(headInto(latin, new Uint8Array(256), 256), -1);
  const bytes = headBytes(latin);
  assert.equal(bytes.length, latin.length);
  assert.ok(bytes.includes(0xe9));
});

Deno.test("parseResponseHead drops Content-Length when Transfer-Encoding frames the body", () => {
  const opts = { maxBytes: 8192, method: "GET" };
  const both = bytes(
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
  );
  const res = parseResponseHead(both, 0, both.length, opts)!;
  assert.equal(res.framing, "chunked");
  assert.equal(res.contentLength, -1);
  assert.deepEqual(res.headers, [["X-A", "1"]]);
  assert.equal(res.close, true, "the connection is not reused after such a response");
  // Only Content-Length: the field stays.
  const one = bytes("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
  assert.deepEqual(parseResponseHead(one, 0, one.length, opts)!.headers, [["Content-Length", "3"]]);
});

Deno.test("parseResponseHead reads Keep-Alive's timeout and drops the field", () => {
  const opts = { maxBytes: 8192, method: "GET" };
  const head = (ka: string) => {
    const b = bytes(`HTTP/1.1 200 OK\r\nKeep-Alive: ${ka}\r\nContent-Length: 0\r\n\r\n`);
    return parseResponseHead(b, 0, b.length, opts)!;
  };
  assert.equal(head("timeout=5").keepAliveMs, 5000);
  assert.equal(head("max=100, timeout=72").keepAliveMs, 72_000);
  assert.equal(head('Timeout = "2"').keepAliveMs, 2000);
  assert.equal(head("max=5").keepAliveMs, -1);
  assert.equal(head("xtimeout=5").keepAliveMs, -1);
  assert.deepEqual(head("timeout=5").headers, [["Content-Length", "0"]]);
});

Deno.test("parseResponseHead refuses what RFC 9112 does not allow a proxy to guess at", () => {
  const opts = { maxBytes: 8192, method: "GET" };
  const parse = (text: string) => {
    const b = bytes(text);
    return parseResponseHead(b, 0, b.length, opts);
  };
  // status-code is three digits followed by SP (§4)
  for (
    const line of ["HTTP/1.1 2001 OK", "HTTP/1.1 200OK", "HTTP/1.1 1e2 Continue", "HTTP/1.1 20 x"]
  ) {
    assert.throws(() => parse(`${line}\r\nContent-Length: 0\r\n\r\n`), /status line/, line);
  }
  assert.equal(parse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")!.status, 200);
  assert.equal(parse("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n")!.statusText, "");
  // obs-fold could hide a framing field's value: refused, as nginx does (§5.2)
  assert.throws(
    () => parse("HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"),
    /obs-fold/,
  );
  // Only chunked is decoded; another coding would pass on still applied (§6.1)
  for (const te of ["gzip, chunked", "chunked, chunked", "gzip", "identity"]) {
    assert.throws(
      () => parse(`HTTP/1.1 200 OK\r\nTransfer-Encoding: ${te}\r\n\r\n`),
      /Transfer-Encoding/,
      te,
    );
  }
  assert.equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n\r\n")!.framing, "chunked");
  // HTTP/1.0 with Transfer-Encoding: faulty framing, never reused (§6.1)
  const old = parse(
    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
  )!;
  assert.equal(old.framing, "chunked");
  assert.equal(old.close, true);
});

Deno.test("parseResponseHead reads Connection tokens with only OWS around them", () => {
  const opts = { maxBytes: 8192, method: "GET" };
  const parse = (status: string, conn: string) => {
    const b = bytes(`${status}\r\nConnection: ${conn}\r\nContent-Length: 0\r\n\r\n`);
    return parseResponseHead(b, 0, b.length, opts)!;
  };
  assert.equal(parse("HTTP/1.0 200 OK", " Keep-Alive\t").close, false);
  assert.equal(parse("HTTP/1.1 200 OK", "x, close ").close, true);
  // "keep-alive\xa0" is no keep-alive token: an HTTP/1.0 answer with it ends its connection.
  assert.equal(parse("HTTP/1.0 200 OK", "keep-alive\xa0").close, true);
  // Nor does a list with other bytes promise to keep it open.
  assert.equal(parse("HTTP/1.1 200 OK", "close\xa0").close, true);
  assert.equal(parse("HTTP/1.1 200 OK", "x-a").close, false);
});

Deno.test("parseResponseHead trims only SP and HTAB around a value", () => {
  const opts = { maxBytes: 8192, method: "GET" };
  // "voilà" in UTF-8 ends in 0xA0, which String.prototype.trim would strip.
  const b = bytes(
    "HTTP/1.1 200 OK\r\nX-Word: \t voil",
    [0xc3, 0xa0],
    " \t\r\nContent-Length: 0\r\n\r\n",
  );
  const res = parseResponseHead(b, 0, b.length, opts)!;
  assert.deepEqual(res.headers[0], ["X-Word", "voil\u00c3\u00a0"]);
});

Deno.test("parseChunkSize takes any number of leading zeros but not a size past 12 hex digits", () => {
  const size = (s: string) => parseChunkSize(bytes(s + "\r\n"), 0, s.length + 1);
  assert.equal(size("0000000000000000005"), 5);
  assert.equal(size("a;ext=1"), 10);
  assert.equal(size("0"), 0);
  assert.throws(() => size("1000000000000"), /too large/);
  assert.throws(() => size("x"), /Invalid chunk size/);
});

Deno.test("parseChunkSize reads past BWS and extensions but nothing else after the digits", () => {
  const size = (s: string, eol = "\r\n") =>
    parseChunkSize(bytes(s + eol), 0, s.length + eol.length - 1);
  assert.equal(size("5 ;a=1"), 5);
  assert.equal(size('5;a="x;\\"y"\t'), 5);
  assert.equal(size("5 \t"), 5);
  assert.equal(size("5", "\n"), 5, "a bare LF is taken");
  // "5 6" is no size (and "56" another one), a CR belongs only before the LF (RFC 9112 §7.1).
  for (const bad of ["5 6", "5\r6", "5x", "5;a\x00b", "5;a\x7fb", " 5", "0x5"]) {
    assert.throws(() => size(bad), /Invalid chunk/, JSON.stringify(bad));
  }
});

Deno.test("parseResponseHead takes only OWS around framing values, not other whitespace", () => {
  const opts = { maxBytes: 8192, method: "GET" };
  const parse = (field: string) => {
    const b = bytes(`HTTP/1.1 200 OK\r\n${field}\r\n\r\n`);
    return parseResponseHead(b, 0, b.length, opts)!;
  };
  assert.equal(parse("Content-Length: 2 ,\t2").contentLength, 2);
  assert.equal(parse("Transfer-Encoding: ,chunked ,").framing, "chunked");
  // NBSP (0xA0) is obs-text, not whitespace, for HTTP (RFC 9110 §5.6.3, §8.6).
  for (const cl of ["2\xa0", "\xa02", "2,\xa02", "2, 2\xa0"]) {
    assert.throws(() => parse(`Content-Length: ${cl}`), /Content-Length/, JSON.stringify(cl));
  }
  assert.throws(() => parse("Transfer-Encoding: chunked\xa0"), /Transfer-Encoding/);
  // With Transfer-Encoding, a bodiless response loses its Content-Length too (§6.3).
  const b = bytes("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
  const head = parseResponseHead(b, 0, b.length, { maxBytes: 8192, method: "HEAD" })!;
  assert.deepEqual([head.framing, head.headers, head.close], ["none", [], true]);
});

Deno.test("parseResponseHead looks past a trickled head's end only once, not per read", () => {
  // indexOf searches to the end of the buffer, not to the end of what was read: each read of a
  // head trickled a byte at a time scanned the rest of the (grown, 64 KiB) buffer again, 270 ms
  // of CPU for a 58 KB head.
  let scanned = 0;
  const indexOf = Uint8Array.prototype.indexOf;
  Object.defineProperty(Uint8Array.prototype, "indexOf", {
    configurable: true,
    writable: true,
    value: function (this: Uint8Array, v: number, from = 0) {
      const at = indexOf.call(this, v, from);
      scanned += (at < 0 ? this.length : at + 1) - from; // the bytes it looked at
      return at;
    },
  });
  const head = bytes("HTTP/1.1 200 OK\r\n" + "x-a: b\r\n".repeat(1000) + "\r\n");
  const buf = new Uint8Array(64 * 1024);
  let got = null;
  try {
    let seen = 0;
    for (let end = 1; got === null; end++) {
      buf[end - 1] = head[end - 1];
      got = parseResponseHead(buf, 0, end, { maxBytes: 65536, method: "GET", scanned: seen });
      seen = end;
    }
  } finally {
    delete (Uint8Array.prototype as { indexOf?: unknown }).indexOf;
  }
  assert.equal(Uint8Array.prototype.indexOf, indexOf, "restored");
  assert.equal(got.size, head.length);
  assert.ok(scanned < buf.length + 4 * head.length, `${scanned} bytes scanned`);
});
