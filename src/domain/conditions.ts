// Rule conditions, compiled once at load (regexes included) into a predicate. All given keys are
// ANDed; response conditions see the upstream response, not the request (the seed got that wrong).

import { fromRustSyntax } from "./rust_regex.ts";
import { withoutIgnoreCase } from "./regex_fold.ts";
import { cidrContains, parseCidr, parseIp } from "./ip.ts";
import { hostOnly } from "./router.ts";
import type { Cidr } from "./ip.ts";

/** What a condition can look at. Response fields are absent on the request side. */
export interface ConditionInput {
  method: string;
  path: string;
  /** Raw query string without `?`. */
  query: string;
  headers: Headers;
  /**
   * The request's authority, which `has_header: {name: Host}` sees rather than a Host field:
   * HTTP/2 and HTTP/3 requests carry it as `:authority` instead (RFC 9113 §8.3.1), and beside an
   * absolute-form target a Host field is ignored (RFC 9112 §3.2.2), as routing ignores it.
   */
  authority?: string;
  /** The client's address as Prox resolved it (behind `trusted_proxies`, the one they name). */
  clientIp?: string;
  status?: number;
  responseHeaders?: Headers;
}

/** The config shape of a condition (mirrors config/schema.ts without importing it). */
export interface ConditionSpec {
  path_matches?: string;
  method_is?: string | string[];
  has_header?: { name: string; value_matches?: string };
  query_has?: string | { name: string; value_matches?: string };
  client_ip?: string | string[];
  status_is?: number | string | (number | string)[];
  response_has_header?: { name: string; value_matches?: string };
  /** None of these fields is in the response (Caddy's `not header`). */
  response_lacks_header?: string | string[];
}

/** A compiled condition. */
export type Predicate = (input: ConditionInput) => boolean;

/** Parses a status selector: 404, "404", "5xx", "500-599". Returns [lo, hi] or an error string. */
export function parseStatusSelector(sel: number | string): [number, number] | string {
  if (typeof sel === "number") return [sel, sel];
  const s = sel.trim().toLowerCase();
  let m = /^([1-5])xx$/.exec(s);
  if (m) return [Number(m[1]) * 100, Number(m[1]) * 100 + 99];
  m = /^(\d{3})$/.exec(s);
  if (m) return [Number(m[1]), Number(m[1])];
  m = /^(\d{3})\s*-\s*(\d{3})$/.exec(s);
  if (m && Number(m[1]) <= Number(m[2])) return [Number(m[1]), Number(m[2])];
  return `Invalid status "${sel}": use a code (404), a class ("5xx") or a range ("500-599")`;
}

/** Matches a status against one or more selectors (already validated). */
export function statusMatcher(sel: number | string | (number | string)[]): (s: number) => boolean {
  const ranges = (Array.isArray(sel) ? sel : [sel]).map(parseStatusSelector).filter(
    (r): r is [number, number] => typeof r !== "string",
  );
  return (s) => ranges.some(([lo, hi]) => s >= lo && s <= hi);
}

/** Compiles a regex from config (JavaScript or the seed's Rust syntax), or returns the error. */
export function compileRegex(source: string): RegExp | string {
  try {
    const r = fromRustSyntax(source);
    if (typeof r === "string") return `Invalid regular expression /${source}/: ${r}`;
    new RegExp(r.source, r.flags); // the error message names the original
    // Without `i`, V8's linear-time engine can finish it if it backtracks catastrophically.
    const folded = /i/.test(r.flags) && !/u/.test(r.flags) ? withoutIgnoreCase(r.source) : null;
    return folded === null
      ? new RegExp(r.source, r.flags)
      : new RegExp(folded, r.flags.replace("i", ""));
  } catch (err) {
    // V8 repeats "Invalid regular expression: /…/flags: " before the reason.
    const why = String(err instanceof Error ? err.message : err)
      .replace(/^Invalid regular expression: \/[\s\S]*\/[a-z]*: /, "");
    return `Invalid regular expression /${source}/: ${why}`;
  }
}

/**
 * Why a regex over request paths cannot match a character it names: one beyond ASCII (`é`),
 * which paths carry percent-encoded as UTF-8 (`%C3%A9`: routes and conditions match paths as they
 * arrive); null when it names none. `key` names the config key in the message.
 */
export function encodedPathProblem(
  source: string,
  key: string,
): { message: string; hint: string } | null {
  const ch = /[\u0080-\u{10ffff}]/u.exec(source)?.[0];
  if (ch === undefined || !ch.isWellFormed()) return null;
  const escaped = encodeURIComponent(ch);
  return {
    message: `${key} holds "${ch}", which request paths carry percent-encoded as UTF-8 ` +
      `(${escaped}): the regex never matches it there`,
    hint: `Write ${escaped} for ${ch} (escapes in upper case, as paths are matched)`,
  };
}

/**
 * Whether this runtime can tell which regexes V8's linear-time engine runs: its `l` flag exists
 * under `--enable-experimental-regexp-engine`, one of the V8 flags Prox ships with.
 */
const LINEAR_KNOWN = (() => {
  try {
    new RegExp("", "l");
    return true;
  } catch {
    return false;
  }
})();

/**
 * Why `re` (as compileRegex made it) falls outside V8's linear-time engine, which the shipped V8
 * flags let finish a regex that backtracks catastrophically on a hostile request; null when it
 * does not, or when this runtime cannot tell.
 */
export function backtrackRisk(re: RegExp): string | null {
  if (!LINEAR_KNOWN) return null;
  try {
    new RegExp(re.source, re.flags.replace(/[dgy]/g, "") + "l");
    return null;
  } catch {
    return "V8's linear-time engine cannot run it (a backreference, a lookahead, \\p{…} or " +
      "another Unicode-mode construct, a mid-pattern (?i:…), or (?i) with a character beyond " +
      "ASCII), so a request that makes it backtrack catastrophically can keep Prox busy for " +
      "minutes while every other request waits";
  }
}

/** The fix backtrackRisk's warnings give. */
export const BACKTRACK_HINT =
  "Rewrite it without those constructs (e.g. a lookahead as a second condition), or keep it if " +
  "no repetition in it can match the same text in several ways";

/** A host's final dot, before its port if it has one (`a.test.:80`). */
const FINAL_DOT = /\.(?=:[0-9]*$|$)/;

function headerTest(spec: { name: string; value_matches?: string }) {
  const re = spec.value_matches !== undefined ? compileRegex(spec.value_matches) : undefined;
  const name = spec.name.toLowerCase();
  return (h: Headers | undefined, authority?: string) => {
    const v = name === "host" && authority !== undefined ? authority : h?.get(name);
    if (v === null || v === undefined) return false;
    if (re === undefined) return true;
    if (!(re instanceof RegExp)) return false;
    // The authority in lower case without a final dot (its port kept), or the host as routing
    // reads it (no port either): `^internal\.example\.com$` must not miss "INTERNAL.example.com.:80"
    // and send it elsewhere, nor `^(?!internal\.)` take it. Hosts are case-insensitive (RFC 9110
    // §4.2.3), and every upstream takes these for the same host.
    if (name === "host" && authority !== undefined) {
      return re.test(v.toLowerCase().replace(FINAL_DOT, "")) || re.test(hostOnly(v));
    }
    // Each Set-Cookie is its own field (RFC 6265 §3): joined with ", " they read as one cookie.
    if (name === "set-cookie") return h!.getSetCookie().some((c) => re.test(c));
    return re.test(v);
  };
}

function decodeQueryPart(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    return s; // malformed escapes: compared as written
  }
}

/**
 * Every value of the query parameter `name` (keys and values form-decoded: `+` is a space,
 * `a%5Bb%5D` is `a[b]`); a key without `=` has the value "".
 */
function queryValues(query: string, name: string): string[] {
  const out: string[] = [];
  if (query === "") return out;
  for (const pair of query.split("&")) {
    const eq = pair.indexOf("=");
    if (decodeQueryPart(eq < 0 ? pair : pair.slice(0, eq)) !== name) continue;
    out.push(eq < 0 ? "" : decodeQueryPart(pair.slice(eq + 1)));
  }
  return out;
}

/** Compiles a condition; a missing condition always holds. */
export function compileCondition(spec: ConditionSpec | undefined): Predicate {
  if (!spec) return () => true;
  const checks: Predicate[] = [];
  if (spec.path_matches !== undefined) {
    const re = compileRegex(spec.path_matches);
    checks.push((i) => re instanceof RegExp && re.test(i.path));
  }
  if (spec.method_is !== undefined) {
    const methods = (Array.isArray(spec.method_is) ? spec.method_is : [spec.method_is]).map((m) =>
      m.toUpperCase()
    );
    checks.push((i) => methods.includes(i.method.toUpperCase()));
  }
  if (spec.has_header) {
    const t = headerTest(spec.has_header);
    checks.push((i) => t(i.headers, i.authority));
  }
  if (spec.query_has !== undefined) {
    const q = typeof spec.query_has === "string" ? { name: spec.query_has } : spec.query_has;
    const re = q.value_matches !== undefined ? compileRegex(q.value_matches) : undefined;
    // A repeated key (`?tag=a&tag=b`) matches when any of its values does, as in Caddy.
    checks.push((i) => {
      const vs = queryValues(i.query, q.name);
      return vs.length > 0 &&
        (re === undefined || vs.some((v) => re instanceof RegExp && re.test(v)));
    });
  }
  if (spec.client_ip !== undefined) {
    const blocks = (Array.isArray(spec.client_ip) ? spec.client_ip : [spec.client_ip])
      .map(parseCidr)
      .filter((c): c is Cidr => c !== null);
    checks.push((i) => {
      const a = i.clientIp === undefined ? null : parseIp(i.clientIp);
      return a !== null && blocks.some((b) => cidrContains(b, a));
    });
  }
  if (spec.status_is !== undefined) {
    const m = statusMatcher(spec.status_is);
    checks.push((i) => i.status !== undefined && m(i.status));
  }
  if (spec.response_has_header) {
    const t = headerTest(spec.response_has_header);
    checks.push((i) => t(i.responseHeaders));
  }
  if (spec.response_lacks_header !== undefined) {
    const names = Array.isArray(spec.response_lacks_header)
      ? spec.response_lacks_header
      : [spec.response_lacks_header];
    checks.push((i) =>
      i.responseHeaders !== undefined && !names.some((n) => i.responseHeaders!.has(n))
    );
  }
  return (i) => checks.every((c) => c(i));
}
