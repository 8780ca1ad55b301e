import assert from "node:assert/strict";
import { passHints } from "./early_hints.ts";

Deno.test("passHints leaves out Content-Length and values no engine can write", () => {
  const got: [string, string][][] = [];
  const sink = { earlyHints: (f: [string, string][]) => got.push(f) };
  passHints(sink, [["Link", "</a.css>; rel=preload"], ["Content-Length", "0"], [
    "x-bad",
    "a\x01b",
  ]]);
  assert.deepEqual(got, [[["Link", "</a.css>; rel=preload"]]]);
});

Deno.test("passHints passes no 103 with nothing left, and a sink that throws fails nothing", () => {
  let calls = 0;
  passHints({ earlyHints: () => calls++ }, [["content-length", "0"]]);
  passHints({ earlyHints: () => calls++ }, []);
  assert.equal(calls, 0);
  passHints({
    earlyHints: () => {
      throw new Error("gone");
    },
  }, [["link", "</a>"]]);
});

Deno.test("passHints leaves out fields whose name is not a token (an HTTP/1.1 upstream's parser lets them by)", () => {
  // A space, a bare CR or a parenthesis in a name: an HTTP/1.1 client would read a bare CR as a
  // line of its own (or fail the whole answer), an HTTP/2 one resets the stream on such a name.
  const got: [string, string][][] = [];
  passHints({ earlyHints: (f) => got.push(f) }, [
    ["Link", "</a.css>; rel=preload"],
    ["Bad Name", "1"],
    ["X-A\rInjected", "1"],
    ["X(y)", "1"],
    ["", "1"],
    ["X-Ok_1", "2"],
  ]);
  assert.deepEqual(got, [[["Link", "</a.css>; rel=preload"], ["X-Ok_1", "2"]]]);
});
