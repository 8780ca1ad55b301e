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
    const src of ["(a)\\1", "\\x41", "\\u0041", "\\k<n>", "é", "(?i:a)", "\\cA", "[\\x41-Z]", "\\q"]
  ) {
    assert.equal(withoutIgnoreCase(src), null, src);
  }
});

Deno.test("compileRegex drops the i flag of a (?i) regex it can spell in both cases", () => {
  const re = compileRegex("(?i)^/re/(a+)+$") as RegExp;
  assert.equal(re.flags, "");
  assert.ok(re.test("/RE/aAa"));
  assert.equal((compileRegex("(?i)(a)\\1") as RegExp).flags, "i");
  assert.match(compileRegex("(?i)[") as string, /^Invalid regular expression \/\(\?i\)\[\//);
});
