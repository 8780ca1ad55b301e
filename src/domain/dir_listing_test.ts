import assert from "node:assert/strict";
import { LISTING_MAX, renderListing, sortEntries } from "./dir_listing.ts";

Deno.test("renderListing: sizes, dates, a cut listing said, a path with markup escaped", () => {
  const { body, contentType } = renderListing({
    path: "/<x>/",
    entries: [
      { name: "big.iso", isDirectory: false, size: 5 * 1024 ** 3, mtime: 0 },
      { name: "small", isDirectory: false, size: 12, mtime: null },
      { name: "k", isDirectory: false, size: 1536, mtime: 0 },
    ],
    truncated: true,
    parent: true,
    json: false,
  });
  assert.equal(contentType, "text/html; charset=utf-8");
  assert.match(body, /<title>Index of \/&lt;x&gt;\/<\/title>/);
  assert.match(body, />5\.0 GiB</);
  assert.match(body, />1\.5 KiB</);
  assert.match(body, />12 B</);
  assert.match(body, />1970-01-01 00:00:00</);
  assert.match(body, new RegExp(`Only the first ${LISTING_MAX} entries`));
  assert.ok(body.indexOf('href="../"') < body.indexOf("big.iso"));
});

Deno.test("sortEntries: names in code point order, as their UTF-8 bytes (nginx's strcmp)", () => {
  // U+FF3A (one UTF-16 unit, 0xFF3A) comes before U+1F600 (a surrogate pair, 0xD83D 0xDE00) by
  // code point; comparing UTF-16 units put the emoji first.
  const file = (name: string) => ({ name, isDirectory: false, size: 0, mtime: null });
  const names = ["😀", "Ｚ", "é", "b", "B", "a"].map(file);
  assert.deepEqual(sortEntries(names).map((e) => e.name), ["B", "a", "b", "é", "Ｚ", "😀"]);
});
