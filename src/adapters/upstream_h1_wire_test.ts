import assert from "node:assert/strict";
import { latin1, parseResponseHead } from "./upstream_h1_wire.ts";

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
