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
