// HTTP validators, preconditions, byte ranges and content-coding negotiation for the static
// route. Pure functions over header values; time comes in as numbers (ms since the epoch).

/** A file's validators: a weak entity tag and its modification time (ms), if known. */
export interface Validators {
  etag: string;
  mtime: number | null;
}

/**
 * Weak entity tag from size and modification time: cheap (no hashing) and changes whenever
 * either does. Weak because a same-size rewrite within one mtime tick would keep it (RFC 9110
 * §8.8.1).
 */
export function weakEtag(size: number, mtime: number | null): string {
  const m = mtime === null ? "0" : Math.floor(mtime).toString(16);
  return `W/"${size.toString(16)}-${m}"`;
}

let lastMs = NaN;
let lastDate = "";

/**
 * `Last-Modified` value (IMF-fixdate) for a time in ms. RFC 9110 §5.6.7. The last answer is kept:
 * a static route serving one file over and over formats the same time.
 */
export function httpDate(ms: number): string {
  if (ms !== lastMs) {
    lastDate = new Date(ms).toUTCString();
    lastMs = ms;
  }
  return lastDate;
}

const MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec";
const IMF_FIXDATE =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$/;
const RFC850_DATE =
  /^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d\d)-([A-Z][a-z]{2})-(\d\d) (\d\d):(\d\d):(\d\d) GMT$/;
const ASCTIME_DATE =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})$/;

/**
 * An HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, or the obsolete RFC 850 and asctime forms) in ms
 * since the epoch; null for anything else, which a recipient must then ignore (§13.1.3).
 * (`Date.parse` took "2099" or a date without a zone, read in the server's local time.) `now`
 * (ms) places an RFC 850 date's two-digit year: the domain reads no clock.
 */
export function parseHttpDate(value: string, now: number): number | null {
  let d: string, mon: string, y: number, h: string, mi: string, s: string;
  let m = IMF_FIXDATE.exec(value);
  if (m) {
    [, d, mon, , h, mi, s] = m;
    y = Number(m[3]);
  } else if ((m = RFC850_DATE.exec(value))) {
    [, d, mon, , h, mi, s] = m;
    // Two-digit years: the most recent year with those digits that is not > 50 years ahead.
    const year = new Date(now).getUTCFullYear();
    y = Math.floor(year / 100) * 100 + Number(m[3]);
    if (y > year + 50) y -= 100;
  } else if ((m = ASCTIME_DATE.exec(value))) {
    [, mon, d, h, mi, s] = m;
    y = Number(m[6]);
  } else return null;
  const month = MONTHS.indexOf(mon) / 3;
  const day = Number(d), hour = Number(h), minute = Number(mi), second = Number(s);
  if (!Number.isInteger(month) || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return null;
  }
  const t = Date.UTC(y, month, day, hour, minute, second);
  // A day past the month's end (31 Feb) would roll over: not a date.
  return new Date(t).getUTCDate() === day ? t : null;
}

function etagList(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

function opaque(tag: string): string {
  return tag.startsWith("W/") ? tag.slice(2) : tag;
}

/** Weak comparison: the opaque tags are equal, whatever their weakness. RFC 9110 §8.8.3.2. */
function weakMatch(a: string, b: string): boolean {
  return opaque(a) === opaque(b);
}

/** Strong comparison: both strong and equal. Our weak ETags never match strongly. */
function strongMatch(a: string, b: string): boolean {
  return !a.startsWith("W/") && !b.startsWith("W/") && a === b;
}

/** The outcome of evaluating a request's preconditions. */
export type Precondition = "proceed" | "not_modified" | "failed";

/**
 * Evaluates If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since in the order of
 * RFC 9110 §13.2.2 for a GET or HEAD of an existing representation; `now` (ms) as for
 * parseHttpDate.
 */
export function evaluatePreconditions(
  headers: Headers,
  v: Validators,
  o: { now: number },
): Precondition {
  const mtimeSec = v.mtime === null ? null : Math.floor(v.mtime / 1000);
  const ifMatch = headers.get("if-match");
  if (ifMatch !== null) {
    const tags = etagList(ifMatch);
    if (!tags.includes("*") && !tags.some((t) => strongMatch(t, v.etag))) return "failed";
  } else {
    const ius = headers.get("if-unmodified-since");
    const since = ius === null ? null : parseHttpDate(ius, o.now);
    if (since !== null && mtimeSec !== null && mtimeSec > Math.floor(since / 1000)) return "failed";
  }
  const inm = headers.get("if-none-match");
  if (inm !== null) {
    const tags = etagList(inm);
    if (tags.includes("*") || tags.some((t) => weakMatch(t, v.etag))) return "not_modified";
    return "proceed";
  }
  const ims = headers.get("if-modified-since");
  const since = ims === null ? null : parseHttpDate(ims, o.now);
  if (since !== null && mtimeSec !== null && mtimeSec <= Math.floor(since / 1000)) {
    return "not_modified";
  }
  return "proceed";
}

/**
 * True when a Range request may be honoured under its If-Range (RFC 9110 §13.1.5): absent, an
 * entity tag that matches strongly, or exactly the Last-Modified date when that date is a strong
 * validator: dated in a second before `now`, the answer's Date (§8.8.2.2). A file changed twice
 * within its mtime's second keeps its date, so a range of the first version must not be spliced
 * onto the second: within that second the whole file goes. The representation's own weak tag
 * (weakEtag: its size and the millisecond of its change) counts as its date does: exactly it,
 * once that second has passed. Chrome's cache sends a stored weak ETag in If-Range (for a
 * Last-Modified a minute older than Date), and nginx compares If-Range byte for byte.
 */
export function ifRangeAllows(value: string | null, v: Validators, now: number): boolean {
  if (value === null) return true;
  const s = value.trim();
  const settled = v.mtime !== null && Math.floor(v.mtime / 1000) < Math.floor(now / 1000);
  if (s.startsWith("W/")) return settled && s === v.etag;
  if (s.startsWith('"')) return strongMatch(s, v.etag);
  const t = parseHttpDate(s, now);
  if (t === null || v.mtime === null) return false;
  return Math.floor(t / 1000) === Math.floor(v.mtime / 1000) && settled;
}

/** What a Range header asks of a representation of `size` bytes. */
export type RangeRequest =
  | { kind: "full" }
  | { kind: "range"; start: number; end: number }
  | { kind: "unsatisfiable" };

/** `x < y` for two strings of decimal digits of any length. */
function digitsLess(x: string, y: string): boolean {
  const a = x.replace(/^0+(?=\d)/, ""), b = y.replace(/^0+(?=\d)/, "");
  return a.length !== b.length ? a.length < b.length : a < b;
}

/**
 * Parses a `Range` header against a size (RFC 9110 §14.2). One range gives 206 or 416; a header
 * that is malformed, uses another unit, or lists several ranges is ignored (the whole file is
 * served with 200, as §14.2 allows) rather than answered with multipart/byteranges.
 */
export function parseRange(value: string | null, size: number): RangeRequest {
  if (value === null) return { kind: "full" };
  // Split by hand: one regex with `\s*(\d*)\s*` backtracked quadratically (a 6 KB header of
  // blanks held the event loop for 19 s).
  const unit = /^bytes\s*=/i.exec(value.trim());
  if (!unit) return { kind: "full" };
  const spec = value.trim().slice(unit[0].length);
  const dash = spec.indexOf("-");
  if (dash < 0) return { kind: "full" };
  const a = spec.slice(0, dash).trim(), b = spec.slice(dash + 1).trim();
  if (!/^\d*$/.test(a) || !/^\d*$/.test(b)) return { kind: "full" };
  if (a === "" && b === "") return { kind: "full" };
  if (a === "") {
    const suffix = Number(b);
    if (suffix === 0) return { kind: "unsatisfiable" };
    // A non-zero suffix is satisfiable even on an empty file (RFC 9110 §14.1.1), but no 206 can
    // describe zero bytes: the whole (empty) file, as nginx.
    if (size === 0) return { kind: "full" };
    return { kind: "range", start: Math.max(0, size - suffix), end: size - 1 };
  }
  // Compared as digit strings: a position past 2^53 is still a number, only not an exact one.
  if (b !== "" && digitsLess(b, a)) return { kind: "full" };
  const start = Number(a);
  // A first-pos beyond any file (even one too long for a safe integer) is unsatisfiable (§14.1.1).
  if (!Number.isSafeInteger(start) || start >= size) return { kind: "unsatisfiable" };
  const end = b === "" ? size - 1 : Number(b);
  return { kind: "range", start, end: Math.min(end, size - 1) };
}

/**
 * The content codings from `offered` that `Accept-Encoding` allows, best first (by q-value, then
 * by the order of `offered`). RFC 9110 §12.5.3.
 */
export function acceptedEncodings(value: string | null, offered: readonly string[]): string[] {
  if (value === null) return [];
  const q = new Map<string, number>();
  for (const part of value.split(",")) {
    const [name, ...params] = part.trim().toLowerCase().split(";");
    if (!name) continue;
    let weight = 1;
    for (const p of params) {
      const kv = /^\s*q\s*=\s*(.*?)\s*$/.exec(p);
      if (!kv) continue;
      // A qvalue is 0 to 1 with up to three decimals (RFC 9110 §12.4.2); another (q=-1, q=abc,
      // q=2) does not say the coding is welcome: not taken as q=1.
      weight = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/.test(kv[1]) ? Number(kv[1]) : 0;
    }
    q.set(name.trim(), weight);
  }
  const star = q.get("*");
  return offered
    .map((enc, i) => ({
      enc,
      i,
      w: q.get(enc) ?? (enc === "gzip" ? q.get("x-gzip") : undefined) ?? star ?? 0,
    }))
    .filter((e) => e.w > 0)
    .sort((x, y) => y.w - x.w || x.i - y.i)
    .map((e) => e.enc);
}
