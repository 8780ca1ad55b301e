import assert from "node:assert/strict";
import { ChunkedDecoder, ChunkedError, MAX_SIZE_LINE, MAX_TRAILERS } from "./chunked.ts";

const latin1 = (t: string) => Uint8Array.from(t, (ch) => ch.charCodeAt(0));

/** Decodes `text` fed `step` bytes at a time: the body, and the bytes left after its end. */
function decode(text: string, step: number): { body: string; rest: string } {
  const b = latin1(text), d = new ChunkedDecoder();
  let body = "", at = 0;
  while (!d.done) {
    if (at >= b.length) throw new Error("the body never ended");
    const to = Math.min(at + step, b.length);
    let from = at;
    while (from < to && !d.done) {
      from += d.decode(b, from, to);
      for (let i = d.dataStart; i < d.dataEnd; i++) body += String.fromCharCode(b[i]);
    }
    at = from;
  }
  return { body, rest: text.slice(at) };
}

Deno.test("ChunkedDecoder decodes a body split anywhere and stops at its end", () => {
  const cases: [string, string][] = [
    ["5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"],
    ["0\r\n\r\n", ""],
    ["A\r\n0123456789\r\n0\r\n\r\n", "0123456789"],
    ['a;ext=1;q="x y"\r\n0123456789\r\n000\r\n\r\n', "0123456789"],
    ["3 ;e\r\nabc\r\n0\t;last\r\n\r\n", "abc"],
    ["2\r\nok\r\n0\r\nX-Sum: 42\r\nX-Other:\tv\r\n\r\n", "ok"],
    ["00000001\r\n\n\r\n0\r\n\r\n", "\n"],
  ];
  for (const [text, body] of cases) {
    for (const step of [1, 2, 3, 5, 1000]) {
      // A request pipelined right after the body is not touched.
      const got = decode(text + "GET / HTTP/1.1\r\n", step);
      assert.deepEqual(
        got,
        { body, rest: "GET / HTTP/1.1\r\n" },
        `${JSON.stringify(text)} by ${step}`,
      );
    }
  }
});

Deno.test("ChunkedDecoder rejects what is not the grammar, and bounds sizes, lines and trailers", () => {
  const bad = [
    "x\r\n",
    "\r\n",
    " 5\r\nhello\r\n0\r\n\r\n",
    "5\nhello\r\n0\r\n\r\n", // a bare LF
    "5\r\nhello\n0\r\n\r\n",
    "5\r\nhelloX\r\n0\r\n\r\n", // more data than the size
    "5 x\r\nhello\r\n",
    "5;a\x00\r\nhello\r\n",
    "-5\r\n",
    "0x5\r\n",
    "+5\r\n",
    "5\r\nhello\r\n0\r\n\n",
    "0\r\nX-A: 1\n\r\n",
    "0\r\n folded\r\n\r\n",
    "0\r\n: empty\r\n\r\n",
    "0\r\nX-A: \x01\r\n\r\n",
    "0\r\nX-A\r\n\r\n", // a trailer line without a colon
    "0\r\nX A: 1\r\n\r\n", // a name that is not a token
    "0\r\nX(A): 1\r\n\r\n",
    "0\r\n\x80: 1\r\n\r\n",
    "20000000000000\r\n", // over 2^53
    "1" + "0".repeat(20) + "\r\n",
    "1;" + "e".repeat(MAX_SIZE_LINE) + "\r\n",
    "0\r\n" + "X-T: v\r\n".repeat(MAX_TRAILERS / 8 + 1) + "\r\n",
  ];
  for (const text of bad) {
    for (const step of [1, 1000]) {
      assert.throws(() => decode(text, step), ChunkedError, `${JSON.stringify(text)} by ${step}`);
    }
  }
  // At the bounds: taken.
  assert.equal(decode("1;" + "e".repeat(MAX_SIZE_LINE - 4) + "\r\nx\r\n0\r\n\r\n", 7).body, "x");
  const d = new ChunkedDecoder(), max = latin1("1fffffffffffff\r\n");
  assert.equal(d.decode(max, 0, max.length), max.length);
  assert.equal(d.dataLeft, Number.MAX_SAFE_INTEGER, "2^53 - 1 is a size");
});

Deno.test("ChunkedDecoder counts data read elsewhere (took) as the chunk's", () => {
  const d = new ChunkedDecoder();
  const head = latin1("6\r\n");
  assert.equal(d.decode(head, 0, head.length), 3);
  assert.equal(d.dataLeft, 6);
  d.took(4);
  assert.equal(d.dataLeft, 2);
  const rest = latin1("ab\r\n0\r\n\r\n");
  assert.equal(d.decode(rest, 0, rest.length), 2);
  assert.deepEqual([d.dataStart, d.dataEnd, d.dataLeft], [0, 2, 0]);
  assert.equal(d.decode(rest, 2, rest.length), rest.length - 2);
  assert.ok(d.done);
});
