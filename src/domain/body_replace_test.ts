import assert from "node:assert/strict";
import { StreamReplacer } from "./body_replace.ts";
import type { ReplacePair } from "./body_replace.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function pairs(list: [string, string][]): ReplacePair[] {
  return list.map(([f, r]) => ({ find: enc.encode(f), replace: enc.encode(r) }));
}

/** Runs `input` through a replacer in the chunks given by `cuts` (byte offsets). */
function run(
  list: ReplacePair[],
  input: Uint8Array,
  cuts: number[],
  once = false,
): Uint8Array {
  const r = new StreamReplacer(list, { once });
  const longest = Math.max(...list.map((p) => p.find.byteLength));
  const out: number[] = [];
  let at = 0;
  for (const cut of [...cuts, input.byteLength]) {
    out.push(...r.push(input.subarray(at, cut)));
    assert.ok(r.held <= longest - 1, `held ${r.held} bytes, longest find ${longest}`);
    at = cut;
  }
  out.push(...r.flush());
  return new Uint8Array(out);
}

const latin1 = (b: Uint8Array) => String.fromCharCode(...b);
const escape = (s: string) => s.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&");

/** The whole-body answer: a global alternation, first pair winning at a position. */
function reference(list: ReplacePair[], input: Uint8Array, once: boolean): string {
  const finds = list.map((p) => latin1(p.find));
  const reps = list.map((p) => latin1(p.replace));
  const text = latin1(input);
  if (!once) {
    const re = new RegExp(finds.map(escape).join("|"), "g");
    return text.replace(re, (m) => reps[finds.indexOf(m)]);
  }
  const used = finds.map(() => false);
  let out = "";
  let from = 0;
  while (true) {
    const live = finds.map((f, i) => [f, i] as const).filter(([, i]) => !used[i]);
    if (live.length === 0) break;
    const re = new RegExp(live.map(([f]) => `(${escape(f)})`).join("|"), "g");
    re.lastIndex = from;
    const m = re.exec(text);
    if (!m) break;
    const which = live[m.slice(1).findIndex((g) => g !== undefined)][1];
    out += text.slice(from, m.index) + reps[which];
    used[which] = true;
    from = m.index + m[0].length;
  }
  return out + text.slice(from);
}

Deno.test("StreamReplacer: a match split at every offset is found", () => {
  const list = pairs([["http://backend:8080", "https://example.com"]]);
  const input = enc.encode('<a href="http://backend:8080/x">http://backend:8080</a>');
  const want = '<a href="https://example.com/x">https://example.com</a>';
  for (let i = 0; i <= input.byteLength; i++) {
    assert.equal(dec.decode(run(list, input, [i])), want, `cut at ${i}`);
    for (let j = i; j <= input.byteLength; j++) {
      assert.equal(dec.decode(run(list, input, [i, j])), want, `cuts at ${i}, ${j}`);
    }
  }
});

Deno.test("StreamReplacer: one byte at a time, multi-byte UTF-8 kept whole", () => {
  const list = pairs([["café", "thé"], ["€", "EUR"]]);
  const input = enc.encode("un café à 2 € — cafés, ça");
  const cuts = Array.from({ length: input.byteLength }, (_, i) => i);
  assert.equal(dec.decode(run(list, input, cuts)), "un thé à 2 EUR — thés, ça");
});

Deno.test("StreamReplacer: overlapping finds, the first listed wins at a position", () => {
  // "abcd" is listed first: at "abcd" it wins over "bc" (which starts later) and over "ab".
  const list = pairs([["abcd", "1"], ["ab", "2"], ["bc", "3"]]);
  for (let i = 0; i <= 12; i++) {
    assert.equal(latin1(run(list, enc.encode("abcdabcabxbc"), [i])), "12c2x3", `cut at ${i}`);
  }
  // A partial "abcd" at the end is no match there: the shorter ones apply.
  assert.equal(latin1(run(list, enc.encode("xabc"), [2])), "x2c");
  // Replacement text is not searched again.
  assert.equal(latin1(run(pairs([["a", "aa"]]), enc.encode("aaa"), [1])), "aaaaaa");
  // Self-overlapping find: non-overlapping matches from the left.
  assert.equal(latin1(run(pairs([["aa", "b"]]), enc.encode("aaaaa"), [1, 3])), "bba");
});

Deno.test("StreamReplacer: once replaces each pair's first match only", () => {
  const list = pairs([["x", "1"], ["y", "2"]]);
  for (let i = 0; i <= 6; i++) {
    assert.equal(latin1(run(list, enc.encode("xyxyxy"), [i], true)), "12xyxy");
  }
  assert.equal(latin1(run(pairs([["ab", "Z"]]), enc.encode("abab"), [1], true)), "Zab");
});

Deno.test("StreamReplacer: empty chunks and empty replacements", () => {
  const list = pairs([["<!--x-->", ""]]);
  const r = new StreamReplacer(list);
  const out: number[] = [];
  for (const c of ["", "a<!-", "", "-x", "-", "->b", ""]) out.push(...r.push(enc.encode(c)));
  out.push(...r.flush());
  assert.equal(latin1(new Uint8Array(out)), "ab");
  assert.equal(latin1(new StreamReplacer(list).flush()), "");
  assert.throws(() => new StreamReplacer(pairs([["", "x"]])), RangeError);
});

Deno.test("StreamReplacer: a held prefix that never completes goes out unchanged", () => {
  const list = pairs([["</body>", "<script></script></body>"]]);
  const r = new StreamReplacer(list);
  assert.equal(latin1(r.push(enc.encode("text</bo"))), "text");
  assert.equal(r.held, 4);
  assert.equal(latin1(r.push(enc.encode("ld>"))), "</bold>");
  assert.equal(latin1(r.push(enc.encode("</bod"))), "");
  assert.equal(latin1(r.flush()), "</bod");
});

Deno.test("StreamReplacer: random bodies and chunkings match a whole-body replace", () => {
  // Seeded: a failure can be replayed.
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const alphabet = [0x61, 0x62, 0x63, 0xc3, 0xa9];
  const word = (max: number) =>
    Uint8Array.from({ length: 1 + rand(max) }, () => alphabet[rand(alphabet.length)]);
  for (let t = 0; t < 3000; t++) {
    const list = Array.from({ length: 1 + rand(3) }, () => ({ find: word(4), replace: word(3) }));
    const input = Uint8Array.from({ length: rand(40) }, () => alphabet[rand(alphabet.length)]);
    const cuts: number[] = [];
    for (let at = 0; at < input.byteLength; at += rand(6)) cuts.push(at);
    const once = rand(2) === 1;
    assert.equal(
      latin1(run(list, input, cuts, once)),
      reference(list, input, once),
      `case ${t}: ${JSON.stringify({ list: list.map((p) => latin1(p.find)), input, cuts, once })}`,
    );
  }
});
