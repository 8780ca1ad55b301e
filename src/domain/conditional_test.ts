import assert from "node:assert/strict";
import {
  acceptedEncodings,
  evaluatePreconditions,
  httpDate,
  ifRangeAllows,
  parseHttpDate,
  parseRange,
  weakEtag,
} from "./conditional.ts";

const MTIME = Date.UTC(2026, 10, 25, 12, 0, 0, 345);
const V = { etag: weakEtag(1000, MTIME), mtime: MTIME };
/** A request a minute after the file changed. */
const LATER = MTIME + 60_000;
const h = (init: Record<string, string>) => new Headers(init);

Deno.test("weakEtag changes with size and mtime", () => {
  assert.match(V.etag, /^W\/"3e8-[0-9a-f]+"$/);
  assert.notEqual(weakEtag(1001, MTIME), V.etag);
  assert.notEqual(weakEtag(1000, MTIME + 1), V.etag);
  assert.equal(httpDate(MTIME), "Wed, 25 Nov 2026 12:00:00 GMT");
  // The remembered last answer follows its input.
  assert.equal(httpDate(MTIME + 86_400_000), "Thu, 26 Nov 2026 12:00:00 GMT");
  assert.equal(httpDate(MTIME + 86_400_000), "Thu, 26 Nov 2026 12:00:00 GMT");
  assert.equal(httpDate(MTIME), "Wed, 25 Nov 2026 12:00:00 GMT");
});

Deno.test("evaluatePreconditions answers If-None-Match with weak comparison", () => {
  assert.equal(
    evaluatePreconditions(h({ "if-none-match": V.etag }), V, { now: LATER }),
    "not_modified",
  );
  const strongForm = V.etag.slice(2);
  assert.equal(
    evaluatePreconditions(h({ "if-none-match": `"x", ${strongForm}` }), V, { now: LATER }),
    "not_modified",
  );
  assert.equal(
    evaluatePreconditions(h({ "if-none-match": "*" }), V, { now: LATER }),
    "not_modified",
  );
  assert.equal(
    evaluatePreconditions(h({ "if-none-match": 'W/"other"' }), V, { now: LATER }),
    "proceed",
  );
});

Deno.test("evaluatePreconditions uses If-Modified-Since only without If-None-Match", () => {
  const same = httpDate(MTIME);
  const before = httpDate(MTIME - 5000);
  assert.equal(
    evaluatePreconditions(h({ "if-modified-since": same }), V, { now: LATER }),
    "not_modified",
  );
  assert.equal(
    evaluatePreconditions(h({ "if-modified-since": before }), V, { now: LATER }),
    "proceed",
  );
  assert.equal(
    evaluatePreconditions(h({ "if-modified-since": "garbage" }), V, { now: LATER }),
    "proceed",
  );
  assert.equal(
    evaluatePreconditions(h({ "if-none-match": 'W/"other"', "if-modified-since": same }), V, {
      now: LATER,
    }),
    "proceed",
  );
});

Deno.test("evaluatePreconditions fails If-Match and If-Unmodified-Since", () => {
  assert.equal(evaluatePreconditions(h({ "if-match": V.etag }), V, { now: LATER }), "failed");
  assert.equal(evaluatePreconditions(h({ "if-match": "*" }), V, { now: LATER }), "proceed");
  const before = httpDate(MTIME - 5000);
  assert.equal(
    evaluatePreconditions(h({ "if-unmodified-since": before }), V, { now: LATER }),
    "failed",
  );
  assert.equal(
    evaluatePreconditions(h({ "if-unmodified-since": httpDate(MTIME) }), V, { now: LATER }),
    "proceed",
  );
});

Deno.test("ifRangeAllows accepts the exact date, and the representation's own weak tag", () => {
  assert.equal(ifRangeAllows(null, V, LATER), true);
  assert.equal(ifRangeAllows(httpDate(MTIME), V, LATER), true);
  assert.equal(ifRangeAllows(httpDate(MTIME - 1000), V, LATER), false);
  // Chrome's cache puts a stored weak ETag in If-Range. Ours names the size and the millisecond
  // of the change, no less than the date does: exactly it, once its second has passed, as nginx
  // (which compares If-Range byte for byte).
  assert.equal(ifRangeAllows(V.etag, V, LATER), true);
  assert.equal(ifRangeAllows(` ${V.etag} `, V, LATER), true);
  assert.equal(ifRangeAllows(V.etag, V, MTIME + 10), false, "within the second of the change");
  assert.equal(ifRangeAllows(V.etag.slice(2), V, LATER), false, "strong, so not this tag");
  assert.equal(ifRangeAllows('W/"other"', V, LATER), false);
  assert.equal(ifRangeAllows('"abc"', V, LATER), false);
  assert.equal(ifRangeAllows(V.etag, { ...V, mtime: null }, LATER), false);
});

Deno.test("ifRangeAllows takes a date only once its second has passed (a strong validator)", () => {
  const date = httpDate(MTIME);
  assert.equal(ifRangeAllows(date, V, MTIME + 655), true, "the next second");
  assert.equal(ifRangeAllows(date, V, MTIME + 60_000), true);
  // The file may change again within the second its date names: not strong yet (§8.8.2.2).
  assert.equal(ifRangeAllows(date, V, MTIME), false);
  assert.equal(ifRangeAllows(date, V, MTIME + 654), false, "still 12:00:00");
});

Deno.test("parseRange handles single, open, suffix, unsatisfiable and ignored ranges", () => {
  assert.deepEqual(parseRange(null, 100), { kind: "full" });
  assert.deepEqual(parseRange("bytes=0-9", 100), { kind: "range", start: 0, end: 9 });
  assert.deepEqual(parseRange("bytes=90-", 100), { kind: "range", start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=-10", 100), { kind: "range", start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=-500", 100), { kind: "range", start: 0, end: 99 });
  assert.deepEqual(parseRange("bytes=50-5000", 100), { kind: "range", start: 50, end: 99 });
  assert.deepEqual(parseRange("bytes=100-", 100), { kind: "unsatisfiable" });
  assert.deepEqual(parseRange("bytes=-0", 100), { kind: "unsatisfiable" });
  // A first-pos past 2^53 is past the end of any file: 416, as nginx, not the whole file.
  assert.deepEqual(parseRange("bytes=99999999999999999999-", 100), { kind: "unsatisfiable" });
  assert.deepEqual(parseRange("bytes=9007199254740993-", 100), { kind: "unsatisfiable" });
  assert.deepEqual(parseRange("bytes=99999999999999999999-99999999999999999999", 100), {
    kind: "unsatisfiable",
  });
  // last-pos below first-pos stays invalid (ignored), compared exactly however long.
  assert.deepEqual(parseRange("bytes=99999999999999999999-99999999999999999998", 100), {
    kind: "full",
  });
  assert.deepEqual(parseRange("bytes=0010-0009", 100), { kind: "full" });
  assert.deepEqual(parseRange("bytes=0009-10", 100), { kind: "range", start: 9, end: 10 });
  assert.deepEqual(parseRange(" BYTES = 2 - 3 ", 100), { kind: "range", start: 2, end: 3 });
  assert.deepEqual(parseRange("bytes=0-1,2-3", 100), { kind: "full" });
});

Deno.test("parseRange is linear on a long run of blanks (was 19 s for 6 KB)", () => {
  const blanks = "bytes=" + "\t".repeat(20_000) + "-" + " ".repeat(20_000) + "x";
  const t = performance.now();
  assert.deepEqual(parseRange(blanks, 100), { kind: "full" });
  assert.deepEqual(parseRange("bytes=" + " ".repeat(20_000) + "x", 100), { kind: "full" });
  assert.ok(performance.now() - t < 500, "parseRange took too long");
  assert.deepEqual(parseRange("bytes=0-", 0), { kind: "unsatisfiable" });
  assert.deepEqual(parseRange("bytes=-5", 0), { kind: "full" }, "suffix on an empty file");
  assert.deepEqual(parseRange("bytes=0-1,5-6", 100), { kind: "full" });
  assert.deepEqual(parseRange("items=0-1", 100), { kind: "full" });
  assert.deepEqual(parseRange("bytes=9-1", 100), { kind: "full" });
  assert.deepEqual(parseRange("bytes=-", 100), { kind: "full" });
});

Deno.test("acceptedEncodings orders by q-value and honours q=0 and *", () => {
  const offered = ["br", "gzip"];
  assert.deepEqual(acceptedEncodings(null, offered), []);
  assert.deepEqual(acceptedEncodings("gzip, deflate, br", offered), ["br", "gzip"]);
  assert.deepEqual(acceptedEncodings("gzip;q=1, br;q=0.5", offered), ["gzip", "br"]);
  assert.deepEqual(acceptedEncodings("br;q=0, gzip", offered), ["gzip"]);
  assert.deepEqual(acceptedEncodings("*", offered), ["br", "gzip"]);
  assert.deepEqual(acceptedEncodings("*;q=0, identity", offered), []);
  assert.deepEqual(acceptedEncodings("identity", offered), []);
  assert.deepEqual(acceptedEncodings("x-gzip", offered), ["gzip"]);
  // A qvalue that is none (negative, not a number, over 1, four decimals) welcomes nothing.
  for (const bad of ["-1", "abc", "2", "0.1234", "1.5", ""]) {
    assert.deepEqual(acceptedEncodings(`br;q=${bad}, gzip;q=0.1`, offered), ["gzip"], bad);
  }
  assert.deepEqual(acceptedEncodings("br;Q=0.5, gzip;q=1.000", offered), ["gzip", "br"]);
});

Deno.test("parseHttpDate reads an RFC 850 two-digit year against the `now` it is given", () => {
  // RFC 9110 §5.6.7: a year more than 50 years ahead of now is the most recent past one.
  const at = (year: number) => Date.UTC(year, 0, 1);
  const date = "Sunday, 06-Nov-94 08:49:37 GMT";
  assert.equal(parseHttpDate(date, at(2026)), Date.UTC(1994, 10, 6, 8, 49, 37));
  assert.equal(parseHttpDate(date, at(2050)), Date.UTC(2094, 10, 6, 8, 49, 37));
  assert.equal(parseHttpDate("Monday, 01-Jan-44 00:00:00 GMT", at(2093)), Date.UTC(2044, 0, 1));
  // 50 years ahead is still ahead; 51 is the past century.
  assert.equal(parseHttpDate("Friday, 01-Jan-76 00:00:00 GMT", at(2026)), Date.UTC(2076, 0, 1));
  assert.equal(parseHttpDate("Friday, 01-Jan-77 00:00:00 GMT", at(2026)), Date.UTC(1977, 0, 1));
});

Deno.test("parseHttpDate takes the three HTTP-date forms and nothing else", () => {
  const t = Date.UTC(1994, 10, 6, 8, 49, 37);
  assert.equal(parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT", LATER), t);
  assert.equal(parseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT", LATER), t);
  assert.equal(parseHttpDate("Sun Nov  6 08:49:37 1994", LATER), t);
  assert.equal(parseHttpDate(httpDate(MTIME), LATER), Math.floor(MTIME / 1000) * 1000);
  // Date.parse accepts all of these; RFC 9110 §13.1.3 says to ignore them.
  for (const bad of ["2099", "Dec 31 2099", "1", "Sun, 06 Nov 1994 08:49:37", "garbage", ""]) {
    assert.equal(parseHttpDate(bad, LATER), null, bad);
  }
  assert.equal(parseHttpDate("Mon, 31 Feb 2025 00:00:00 GMT", LATER), null, "no 31 February");
  assert.equal(parseHttpDate("Sun, 06 Foo 1994 08:49:37 GMT", LATER), null);
  assert.equal(
    evaluatePreconditions(h({ "if-modified-since": "2099" }), V, { now: LATER }),
    "proceed",
    "not a 304 for a date that is not one",
  );
});
