// Request path normalization and the upstream URL (target + rewritten path + query, byte for
// byte). Pure string work; the router matches on the normalized path this returns.

import { isUnixTarget, unixOrigin } from "./upstream_origin.ts";

/** A normalized request path, or the reason it cannot be normalized (→ 400). */
export type NormalizedPath = { ok: true; path: string } | { ok: false; reason: string };

const PCT = /%([0-9A-Fa-f]{2})/g;
/** Unreserved characters (RFC 3986 §2.3): percent-encoding them changes nothing. */
const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * Percent-encoding normalization (RFC 3986 §6.2.2.2): escapes of unreserved characters decoded,
 * the others upper-cased. Routes and conditions then see `/%61pi` as `/api`, as the upstream will.
 */
export function normalizeEscapes(seg: string): string {
  return seg.replace(PCT, (esc, h: string) => {
    const c = String.fromCharCode(parseInt(h, 16));
    return UNRESERVED.test(c) ? c : esc.toUpperCase();
  });
}
const SLOW_PATH = /%|\/\/|\/\.\.?(?:[/;]|$)|\\/;
/**
 * A dot segment with a path parameter (`..;x`): not one for RFC 3986, but Tomcat and other Java
 * servers strip the parameter and climb, so `/api/..;/admin` would leave the rewritten prefix.
 */
const DOT_PARAM = /^\.\.?;/;

/**
 * Normalizes a raw request path: duplicate slashes merged, dot segments (also percent-encoded)
 * resolved without climbing above the root, invalid percent-encoding, NUL bytes and encoded
 * slashes or backslashes inside a `..` segment refused. Escapes of unreserved characters are
 * decoded and the others upper-cased; other bytes are kept. RFC 3986 §5.2.4, §6.2.2.
 */
export function normalizePath(raw: string): NormalizedPath {
  if (!raw.startsWith("/")) {
    if (raw === "*") return { ok: true, path: "*" };
    return { ok: false, reason: "Path must start with /" };
  }
  // Fast path: nothing encoded, no empty or dot segments (WHATWG URL parsing already resolved
  // plain dot segments, but a raw path may come from elsewhere).
  if (!SLOW_PATH.test(raw)) return { ok: true, path: raw };
  if (/%(?![0-9A-Fa-f]{2})/.test(raw)) return { ok: false, reason: "Invalid percent-encoding" };
  const out: string[] = [];
  const segments = raw.split("/");
  const trailing = segments.length > 1 && segments[segments.length - 1] === "";
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i];
    if (seg === "") continue;
    const decoded = seg.replace(PCT, (_, h) => String.fromCharCode(parseInt(h, 16)));
    if (decoded.includes("\0")) return { ok: false, reason: "NUL byte in path" };
    if (decoded === ".") continue;
    if (decoded === "..") {
      out.pop();
      continue;
    }
    if (DOT_PARAM.test(decoded)) return { ok: false, reason: "Dot segment with a path parameter" };
    if (
      /[/\\]/.test(decoded) &&
      decoded.split(/[/\\]/).some((p) => p === ".." || p === "." || DOT_PARAM.test(p))
    ) {
      return { ok: false, reason: "Encoded path separator around a dot segment" };
    }
    out.push(seg.includes("%") ? normalizeEscapes(seg) : seg);
  }
  let path = "/" + out.join("/");
  if (trailing && out.length > 0) path += "/";
  return { ok: true, path };
}

/** Characters URL parsing leaves as they are in a path. */
const PLAIN_PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@\/]*$/;

/**
 * The path of an absolute request URL when URL parsing would return it unchanged (only plain
 * characters, nothing that could be a dot segment), else null. Spares most requests a URL object.
 */
export function plainPath(url: string): string | null {
  const scheme = url.indexOf("://");
  if (scheme < 0) return null;
  const start = url.indexOf("/", scheme + 3);
  if (start <= scheme + 3) return null; // no path, or no host ("http:///x" has host "x")
  // Where the authority ends for URL parsing: a "?", "#" or "\\" before the slash ends it sooner.
  for (let i = scheme + 3; i < start; i++) {
    const c = url.charCodeAt(i);
    if (c === 63 || c === 35 || c === 92) return null;
  }
  const q = url.indexOf("?", start);
  const path = q < 0 ? url.slice(start) : url.slice(start, q);
  return PLAIN_PATH.test(path) && !path.includes("/.") ? path : null;
}

/**
 * The authority of an absolute request URL as it was written (no URL parsing: case and port
 * kept), or null when it has none. The HTTP server writes the request target's authority there
 * (absolute form, HTTP/2 `:authority`) and otherwise the Host field. It ends where RFC 3986 §3.2
 * ends it, not at a backslash as URL parsing does: `b.test\@evil.test` is one (invalid) authority,
 * which a caller that checks it refuses, not the host `b.test`.
 */
export function authorityOf(url: string): string | null {
  const scheme = url.indexOf("://");
  if (scheme < 0) return null;
  let end = scheme + 3;
  while (end < url.length) {
    const c = url.charCodeAt(end);
    if (c === 47 || c === 63 || c === 35) break; // / ? #
    end++;
  }
  return end > scheme + 3 ? url.slice(scheme + 3, end) : null;
}

const NOT_REQUEST_LINE = /[^\x21-\x7e]/;
const encoder = new TextEncoder();

/**
 * The raw query with what no request line or header may hold percent-encoded as UTF-8 (Deno
 * decodes raw UTF-8 bytes of a query into characters, which a Location or an upstream request
 * line cannot carry); usually returned as it is.
 */
export function wireQuery(query: string): string {
  if (!NOT_REQUEST_LINE.test(query)) return query;
  let out = "";
  for (const ch of query) {
    if (!NOT_REQUEST_LINE.test(ch)) out += ch;
    else {for (const b of encoder.encode(ch)) {
        out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
      }}
  }
  return out;
}

/** The raw query string of a request URL including its `?`, or "" (never re-encoded). */
export function rawQuery(url: string): string {
  const hash = url.indexOf("#");
  const end = hash >= 0 ? hash : url.length;
  const q = url.indexOf("?");
  return q >= 0 && q < end ? url.slice(q, end) : "";
}

/** Joins two path parts with exactly one slash between them. */
export function joinPath(a: string, b: string): string {
  if (b === "") return a === "" ? "/" : a;
  if (a === "" || a === "/") return b.startsWith("/") ? b : "/" + b;
  const left = a.endsWith("/") ? a.slice(0, -1) : a;
  return b.startsWith("/") ? left + b : `${left}/${b}`;
}

/**
 * The path after the route prefix: `/api` on `/api/x` → `/x`, on `/api` → "". The prefix is
 * assumed to match on a segment boundary (the router guarantees it).
 */
export function stripPrefix(path: string, prefix: string): string {
  if (prefix === "/" || prefix === "") return path;
  return path.slice(prefix.length);
}

/** A `path_regex` rule: the part of the path `re` matches is replaced (`$1`, `$<name>`). */
export interface PathRegex {
  re: RegExp;
  replace: string;
}

/** Where a request goes upstream: the target's origin and the request target on the wire. */
export interface UpstreamTarget {
  /** Scheme, host and port of the target (its path is not used). Shared: never change it. */
  origin: URL;
  /** Path and query as they go on the request line. */
  path: string;
}

/** Characters that URL parsing would encode or reinterpret in a path, and dot segments. */
const PATH_NEEDS_URL = /[^\x21-\x7e]|["#<>?`{}\\]|\/\.(?:\.)?(?:\/|$)/;
/** A query is passed on as the client sent it unless it has bytes no request line may hold. */
const QUERY_NEEDS_URL = /[^\x21-\x7e]/;

/**
 * The upstream request for a proxied request, with the seed's `path_rewrite` semantics fixed: the
 * route prefix is stripped, `rewrite` (if any) is put in front, the target's own path in front of
 * that, and the query string is appended byte for byte (URL parsing would re-encode `'`, `"`,
 * `<` and `>` in it, which breaks signed URLs). A path from a client was normalized by the
 * pipeline; only a configured rewrite can bring characters that still need encoding or a dot
 * segment: then the path goes through URL parsing; the query's bytes no request line may hold
 * are percent-encoded (wireQuery), the rest of it is left as it is.
 */
export function upstreamTarget(
  target: string,
  opts: {
    path: string;
    prefix: string;
    rewrite?: string;
    query: string;
    /** `path_regex`: the first rule whose regex matches the path replaces what it matched. */
    regex?: readonly PathRegex[];
  },
): UpstreamTarget {
  const t = parseTarget(target);
  let path: string;
  const rule = opts.regex?.find((r) => r.re.test(opts.path));
  if (rule) {
    const replaced = opts.path.replace(rule.re, resolveDots(rule.replace));
    path = joinPath(t.base, tidyRegexPath(replaced));
  } else {
    const rest = stripPrefix(opts.path, opts.prefix);
    const rewrite = opts.rewrite && opts.rewrite !== "/" ? opts.rewrite.replace(/\/+$/, "") : "";
    path = joinPath(joinPath(t.base, rewrite), rest);
  }
  if (path === "") path = "/";
  if (!path.startsWith("/")) path = "/" + path;
  if (PATH_NEEDS_URL.test(path)) {
    // The path alone: the client's query stays as it came (a `?` a rewrite wrote goes before it).
    const u = new URL("http://h" + path);
    path = u.pathname + u.search;
  }
  const query = QUERY_NEEDS_URL.test(opts.query) ? wireQuery(opts.query) : opts.query;
  return { origin: t.url, path: path + query };
}

/** A dot segment, its dots plain or percent-encoded. */
const DOT_SEGMENT = /^(?:\.|%2e){1,2}$/i;

/**
 * A `replace` with its own dot segments resolved (`/x/../$1` is `/$1`): those are the config's
 * word; a dot segment a capture brings is not (tidyRegexPath).
 */
function resolveDots(template: string): string {
  if (!/(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i.test(template)) return template;
  const segs = template.split("/");
  const out: string[] = [];
  segs.forEach((seg, i) => {
    if (!DOT_SEGMENT.test(seg)) return void out.push(seg);
    if (seg.length > 1 && seg !== "%2e" && seg !== "%2E" && out.length > 1) out.pop();
    if (i === segs.length - 1) out.push("");
  });
  return out.join("/");
}

/**
 * A segment a server may take for a dot segment: `.` or `..` (also percent-encoded), one with a
 * parameter (`..;x`, which Tomcat, Jetty and Spring read as `..`), or one that decodes to one
 * beside a slash or backslash (`..%2Fx`). normalizePath refuses or resolves these in a client's
 * path; a capture that starts mid-segment (`item-(.*)` on `item-..;`) can still bring one.
 */
function dotLike(seg: string): boolean {
  if (DOT_SEGMENT.test(seg)) return true;
  const decoded = seg.includes("%")
    ? seg.replace(PCT, (_, h) => String.fromCharCode(parseInt(h, 16)))
    : seg;
  if (DOT_PARAM.test(decoded)) return true;
  return /[/\\]/.test(decoded) &&
    decoded.split(/[/\\]/).some((p) => p === "." || p === ".." || DOT_PARAM.test(p));
}

/**
 * A `path_regex` result as a client path is after normalization: no empty segment (`//x` reads
 * as another host to whatever builds a URL of it) and no dot segment (a capture of `...json`'s
 * `..` must not climb out of the replacement, nor one of `item-..;`'s `..;`: see dotLike); those
 * segments are dropped, a trailing slash kept.
 */
function tidyRegexPath(p: string): string {
  if (!p.includes("//") && !/\/(?:\.|%2e)|%2F|%5C/i.test("/" + p)) return p;
  const segs = p.split("/");
  const last = segs[segs.length - 1];
  const kept = segs.filter((s) => s !== "" && !dotLike(s));
  const trailing = last === "" || dotLike(last);
  return "/" + kept.join("/") + (trailing && kept.length > 0 ? "/" : "");
}

const targets = new Map<string, { url: URL; base: string }>();

/** Origin and path of a target URL, parsed once (targets come from the config: few and fixed). */
export function parseTarget(target: string): { url: URL; base: string } {
  let t = targets.get(target);
  if (!t) {
    if (isUnixTarget(target)) {
      t = { url: unixOrigin(target), base: "" };
    } else {
      const u = new URL(target);
      t = {
        url: new URL(`${u.protocol}//${u.host}`),
        base: u.pathname === "/" ? "" : u.pathname.replace(/\/+$/, ""),
      };
    }
    if (targets.size >= 4096) targets.clear(); // bounded: reloads may bring new targets
    targets.set(target, t);
  }
  return t;
}
