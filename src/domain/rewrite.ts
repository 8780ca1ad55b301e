// Request path normalization and the upstream URL (target + rewritten path + query, byte for
// byte). Pure string work; the router matches on the normalized path this returns.

/** A normalized request path, or the reason it cannot be normalized (→ 400). */
export type NormalizedPath = { ok: true; path: string } | { ok: false; reason: string };

const PCT = /%([0-9A-Fa-f]{2})/g;
const SLOW_PATH = /%|\/\/|\/\.\.?(?:\/|$)|\\/;

/**
 * Normalizes a raw request path: duplicate slashes merged, dot segments (also percent-encoded)
 * resolved without climbing above the root, invalid percent-encoding, NUL bytes and encoded
 * slashes or backslashes inside a `..` segment refused. Percent-encoding is otherwise kept, so the
 * upstream sees the client's bytes. RFC 3986 §5.2.4.
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
    if (/[/\\]/.test(decoded) && decoded.split(/[/\\]/).some((p) => p === ".." || p === ".")) {
      return { ok: false, reason: "Encoded path separator around a dot segment" };
    }
    out.push(seg);
  }
  let path = "/" + out.join("/");
  if (trailing && out.length > 0) path += "/";
  return { ok: true, path };
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

/**
 * Upstream URL for a proxied request, with the seed's `path_rewrite` semantics fixed: the route
 * prefix is stripped, `rewrite` (if any) is put in front, the target's own path in front of
 * that, and the query string is appended unchanged.
 */
export function upstreamUrl(
  target: string,
  opts: { path: string; prefix: string; rewrite?: string; query: string },
): string {
  const t = parseTarget(target);
  const base = t.base;
  const rest = stripPrefix(opts.path, opts.prefix);
  const rewrite = opts.rewrite && opts.rewrite !== "/" ? opts.rewrite.replace(/\/+$/, "") : "";
  let path = joinPath(joinPath(base, rewrite), rest);
  if (path === "") path = "/";
  if (!path.startsWith("/")) path = "/" + path;
  return `${t.origin}${path}${opts.query}`;
}

const targets = new Map<string, { origin: string; base: string }>();

/** Origin and path of a target URL, parsed once (targets come from the config: few and fixed). */
function parseTarget(target: string): { origin: string; base: string } {
  let t = targets.get(target);
  if (!t) {
    const u = new URL(target);
    t = {
      origin: `${u.protocol}//${u.host}`,
      base: u.pathname === "/" ? "" : u.pathname.replace(/\/+$/, ""),
    };
    if (targets.size >= 4096) targets.clear(); // bounded: reloads may bring new targets
    targets.set(target, t);
  }
  return t;
}
