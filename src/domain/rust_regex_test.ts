import assert from "node:assert/strict";
import { compileRegex } from "./conditions.ts";

const re = (s: string) => {
  const r = compileRegex(s);
  assert.ok(r instanceof RegExp, String(r));
  return r;
};

Deno.test("compileRegex reads Rust ASCII classes, which JavaScript would read as other characters", () => {
  assert.ok(re("^/v[[:digit:]]+/").test("/v12/users"));
  assert.ok(!re("^/v[[:digit:]]+/").test("/v]]/users"));
  assert.ok(re("^[[:alpha:]_-]+$").test("Abc_d-e"));
  assert.ok(!re("^[[:alpha:]_-]+$").test("a:b"));
  assert.ok(re("^[[:^digit:]]+$").test("abc"));
  assert.ok(!re("^[[:^digit:]]+$").test("a1"));
  assert.ok(re("^[[:xdigit:][:space:]]+$").test("fF 09"));
  assert.equal(typeof compileRegex("[a[:^digit:]]"), "string");
  assert.ok(re("^[]a]+$").test("]a]"), "a leading ] is a literal in Rust");
});

Deno.test("compileRegex applies Rust inline flags anywhere, scoped to their group", () => {
  assert.ok(re("^/api/(?i)json$").test("/api/JSON"));
  assert.ok(!re("^/API/(?i)json$").test("/api/json"), "flags apply after them only");
  assert.ok(re("^a(?i)b|c$").test("C"), "the flag spans the alternatives of its group");
  assert.ok(!re("^a(?i)b|c$").test("Ab"));
  assert.ok(re("^(a(?i)b)c$").test("aBc"));
  assert.ok(!re("^(a(?i)b)c$").test("aBC"), "the flag ends with its group");
  assert.ok(re("(?i:x)(?s).y").test("X\ny"));
  assert.ok(re("(?i)a(?-i)b").test("Ab"));
  assert.ok(!re("(?i)a(?-i)b").test("AB"));
  assert.ok(re("(?u)\\w(?-u:x)").test("ax"), "u (Rust's default) is dropped");
});

Deno.test("compileRegex applies Rust verbose mode (?x): whitespace and # comments ignored", () => {
  const r = re("(?x)\n  ^/api   # the prefix\n  /v [0-9]+ \\  x$\n");
  assert.ok(r.test("/api/v2 x"));
  assert.ok(!r.test("/api /v2 x"));
  assert.ok(re("a(?x: b c )d").test("abcd"));
  assert.ok(re("a b(?x)c d").test("a bcd"));
});

Deno.test("compileRegex reads Rust Unicode classes and code point escapes", () => {
  assert.ok(re("^\\pL+$").test("Grüße"));
  assert.ok(!re("^\\pL+$").test("p1"), "not the letter p");
  assert.ok(re("^\\p{Greek}+$").test("αβγ"));
  assert.ok(re("^[\\p{Lu}\\d]+$").test("ÄB1"));
  assert.ok(re("^\\PL$").test("1"));
  assert.ok(re("^\\x{E9}\\u{1F600}\\U0001F600$").test("é😀😀"));
  assert.ok(re("^a\\#b\\ c\\&\\~$").test("a#b c&~"), "Rust's escaped punctuation, also with \\p");
  assert.ok(re("\\pL\\#").test("a#"));
  assert.ok(re("^\\pL+]}$").test("ab]}"), "a lone ] or } is itself, also in u mode");
  assert.ok(re("^a{2}]$").test("aa]"), "quantifier braces are left alone");
  assert.equal(typeof compileRegex("\\p{NoSuchClass}"), "string");
  assert.ok(re("\\<api\\>").test("/v1/api/x"), "word boundaries of regex 1.10");
  assert.ok(!re("\\<api\\>").test("/v1/apix"));
  assert.ok(re("\\b{start}x\\b{end}").test("a x b"));
  assert.ok(!re("\\b{start-half}x").test("ax"));
  assert.ok(re("^\\a$").test("\u0007"));
  assert.ok(re("[\\<]").test("<"), "inside a class \\< is the character");
});

Deno.test("compileRegex leaves JavaScript syntax alone and refuses Rust flags it cannot express", () => {
  assert.ok(re("^/users/(?<id>\\d+)$").test("/users/7"));
  assert.ok(re("(?:a|b)(?=c)").test("bc"));
  assert.ok(re("(?<!x)y").test("ay"));
  assert.ok(re("[\\-a]").test("-"));
  assert.ok(re("^a[^]*b[c]$").test("a\n]xbc"), "[^] is JavaScript's any character");
  assert.ok(re("^[[]$").test("["));
  assert.match(String(compileRegex("(?R)^a$")), /Rust flag "R".*no JavaScript equivalent/);
  assert.match(String(compileRegex("(?q)a")), /Unknown flag "q"/);
  assert.match(String(compileRegex("[unclosed")), /Invalid regular expression \/\[unclosed\//);
});

Deno.test("compileRegex reads Rust's U flag: greedy and lazy quantifiers swapped", () => {
  assert.equal(re("(?U)a+").exec("aaa")?.[0], "a");
  assert.equal(re("(?U)a+?").exec("aaa")?.[0], "aaa");
  assert.equal(re("(?U)a{1,3}").exec("aaa")?.[0], "a");
  assert.equal(re("(?U)<.*>").exec("<a><b>")?.[0], "<a>");
  assert.equal(re("a*(?U:b*)c?").exec("aabbc")?.[0], "aa", "only inside its group");
  assert.equal(re("(?U)(?:x)?").exec("x")?.[0], "", "lazy, and a group's (?: is no quantifier");
  assert.ok(re("(?U)(?<id>\\d+)$").test("/u/42"));
  assert.equal(re("a+?").exec("aaa")?.[0], "a", "without U lazy stays lazy");
});
