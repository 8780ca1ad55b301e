import assert from "node:assert/strict";
import { withoutIgnoreCase } from "./regex_fold.ts";
import { compileRegex } from "./conditions.ts";

const SAMPLES = [
  "",
  "a",
  "A",
  "/API/v1/Users",
  "/api/v1/users",
  "Content-TYPE: application/JSON",
  "[]^_`",
  "abc-XYZ_09",
  "ß",
  "é",
  "K",
  "{2}",
  "aaa!",
  "x\ny",
];

Deno.test("withoutIgnoreCase matches what the i flag matches, for ASCII letters", () => {
  const sources = [
    "^/api/v[0-9]+/users$",
    "json",
    "[a-f]+",
    "[^a-z]",
    "[A-z]",
    "[!-~]{3}",
    "[-a]",
    "[a-]",
    "\\bAPI\\b",
    "\\w+\\s\\d",
    "(?<Name>ab)c",
    "(?:x|Y)+",
    "(?=a)A",
    "(?<!b)C",
    "x{2,3}",
    "a{b}",
    "\\.\\[\\]",
    "[\\]a]",
    "[\\da-c]",
    "\\x41",
    "\\u0061b",
    "x\\cJy",
    "a\\0",
    "\\x2e",
    "[\\x41b]+",
    "[^\\u0062\\x2e]",
  ];
  for (const src of sources) {
    const folded = withoutIgnoreCase(src);
    assert.notEqual(folded, null, src);
    const a = new RegExp(src, "i");
    const b = new RegExp(folded!);
    for (const s of [...SAMPLES, ...SAMPLES.map((x) => x.toUpperCase())]) {
      assert.equal(b.test(s), a.test(s), `/${src}/i vs /${folded}/ on ${JSON.stringify(s)}`);
    }
  }
});

Deno.test("withoutIgnoreCase leaves alone what it cannot rewrite exactly", () => {
  for (
    const src of [
      "(a)\\1",
      "\\u00e9",
      "\\x4",
      "\\k<n>",
      "é",
      "(?i:a)",
      "\\c1",
      "[\\x41-Z]",
      "\\q",
      "\\01",
    ]
  ) {
    assert.equal(withoutIgnoreCase(src), null, src);
  }
});

Deno.test("compileRegex drops the i flag of a (?i) regex it can spell in both cases", () => {
  const re = compileRegex("(?i)^/re/(a+)+$") as RegExp;
  assert.equal(re.flags, "");
  assert.ok(re.test("/RE/aAa"));
  assert.equal((compileRegex("(?i)(a)\\1") as RegExp).flags, "i");
  // An escape of an ASCII character (`\x2e`, `\u0041`, `\cJ`, `\0`) is spelled out too: it kept
  // the i flag, and with it `^/(a+)+\x2e$` ran for minutes on a hostile path.
  for (const src of ["(?i)^/(a+)+\\x2e$", "(?i)^/(\\u0041+)+$", "(?i)^/(a+)+\\cJ$"]) {
    assert.equal((compileRegex(src) as RegExp).flags, "", src);
  }
  assert.match(compileRegex("(?i)[") as string, /^Invalid regular expression \/\(\?i\)\[\//);
});
