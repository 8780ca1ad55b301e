import assert from "node:assert/strict";
import { headBytes, headInto, latin1, parseResponseHead, requestHead } from "./upstream_h1_wire.ts";

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
