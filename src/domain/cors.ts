// Cross-origin resource sharing as the server side of the Fetch standard's CORS protocol
// (https://fetch.spec.whatwg.org/#http-cors-protocol): which origins a route admits, the answer to
// a preflight, and the fields an actual response carries. Pure: the pipeline applies the fields
// (src/proxy/filters/cors.ts).

import { compileRegex } from "./conditions.ts";

/** A route's `cors` as the config resolves it (`max_age` in milliseconds). */
export interface CorsSpec {
  allow_origins: string[];
  /** Regular expressions an origin must match whole (checked after the exact entries). */
  allow_origin_regex?: string[];
  allow_methods: string[];
  allow_headers: string[];
  expose_headers: string[];
  allow_credentials: boolean;
  max_age?: number;
}

/** A wildcard origin `scheme://*.suffix[:port]`: one or more whole labels before `suffix`. */
interface OriginPattern {
  /** `https://` */
  scheme: string;
  /** `.example.com` (with the leading dot) */
  suffix: string;
  /** `:8443`, or "" for the scheme's default port */
  port: string;
}

/** A compiled `cors`: everything a request needs, computed once at load. */
export interface CorsPolicy {
  /** `*` is listed: every origin, answered with `Access-Control-Allow-Origin: *`. */
  anyOrigin: boolean;
  exact: ReadonlySet<string>;
  patterns: readonly OriginPattern[];
  /** `allow_origin_regex`, anchored at both ends. */
  regexes: readonly RegExp[];
  credentials: boolean;
  /** `Access-Control-Allow-Methods`, or null to echo the requested method (`*`). */
  methods: string | null;
  /** `Access-Control-Allow-Headers`, null to echo the requested ones (`*`), "" for none. */
  headers: string | null;
  /** `Access-Control-Expose-Headers`, "" for none. */
  expose: string;
  /** `Access-Control-Max-Age` in seconds, "" when unset. */
  maxAge: string;
}

/** The response fields Prox owns on a `cors` route: an upstream's own are removed. */
export const CORS_RESPONSE_FIELDS = [
  "access-control-allow-origin",
  "access-control-allow-credentials",
  "access-control-allow-methods",
  "access-control-allow-headers",
  "access-control-expose-headers",
  "access-control-max-age",
  "access-control-allow-private-network",
] as const;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A comma-separated list of tokens, as `Access-Control-Request-Headers` is. */
const TOKEN_LIST =
  /^[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+([ \t]*,[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*[ \t]*$/;
/** A serialized origin as browsers send it: lower-case scheme and host, no default port. */
const ORIGIN = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#:@\s]+|\[[0-9a-f:.]+\])(:\d{1,5})?$/;
/** The labels a `*` stands for: one or more whole DNS labels. */
const LABELS = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;
const DEFAULT_PORTS: Record<string, string> = { "http://": ":80", "https://": ":443" };

/**
 * An allowed-origin entry in the form requests carry it (`https://app.example.com`), or what is
 * wrong with it. Scheme and host are lower-cased and a default port dropped; a path, query,
 * trailing slash or `null` is refused (a browser's Origin never has them, so it would match
 * nothing, or, for `null`, every sandboxed page and local file).
 */
export function normalizeOrigin(entry: string): { origin: string } | { problem: string } {
  if (entry === "*") return { origin: "*" };
  if (entry.toLowerCase() === "null") {
    return {
      problem: 'The origin "null" is what sandboxed frames, data: URLs and local files send; ' +
        "allowing it allows them all. List the real origins",
    };
  }
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(entry);
  if (!m) {
    return {
      problem: `"${entry}" is not an origin: write scheme://host, e.g. https://app.example.com`,
    };
  }
  const [, scheme, authority, rest] = m;
  if (rest !== "") {
    return {
      problem: `"${entry}" has a path: an origin is scheme://host[:port] only, ` +
        `e.g. ${scheme.toLowerCase()}://${authority.toLowerCase()}`,
    };
  }
  const lower = `${scheme.toLowerCase()}://${authority.toLowerCase()}`;
  const wild = lower.startsWith(`${scheme.toLowerCase()}://*.`);
  if (/[\u0080-\uffff]/.test(authority)) {
    // Browsers send a name with non-ASCII letters in its ASCII form (IDNA): say which.
    const url = URL.parse(wild ? lower.replace("://*.", "://x.") : lower);
    const ascii = url && `${url.protocol}//${wild ? "*." + url.host.slice(2) : url.host}`;
    return {
      problem: `"${entry}" has non-ASCII letters; browsers send ` +
        (ascii ? `"${ascii}"` : "its ASCII (xn--) form") + ": write that",
    };
  }
  const probe = wild ? lower.replace("://*.", "://x.") : lower;
  const p = ORIGIN.exec(probe);
  if (!p || probe.includes("*") || (p[3] && Number(p[3].slice(1)) > 65535)) {
    return {
      problem: `"${entry}" is not an origin: write scheme://host[:port] (a * only as the first ` +
        "label, e.g. https://*.example.com)",
    };
  }
  if (p[1] === "http://" || p[1] === "https://") {
    // As browsers serialize it (WHATWG URL): `[::1]` for `[0:0::1]`, `127.0.0.1` for
    // `127.000.000.001`, `:3000` for `:03000`, no default port; else it would never match.
    const url = URL.parse(probe);
    if (!url || url.host === "") {
      return { problem: `"${entry}" is not an origin: its host is no valid host name or address` };
    }
    const origin = `${p[1]}${url.host}`;
    return { origin: wild ? origin.replace("://x.", "://*.") : origin };
  }
  const port = p[3] === DEFAULT_PORTS[p[1]] ? "" : p[3] ?? "";
  return { origin: `${p[1]}${wild ? "*." : ""}${p[2].slice(wild ? 2 : 0)}${port}` };
}

/** Compiles a validated `cors` (entries already normalized by the schema). */
export function compileCors(spec: CorsSpec): CorsPolicy {
  const exact = new Set<string>();
  const patterns: OriginPattern[] = [];
  let anyOrigin = false;
  for (const o of spec.allow_origins) {
    if (o === "*") anyOrigin = true;
    else if (o.includes("://*.")) {
      const m = ORIGIN.exec(o.replace("://*.", "://x."))!;
      patterns.push({ scheme: m[1], suffix: m[2].slice(1), port: m[3] ?? "" });
    } else exact.add(o);
  }
  const regexes: RegExp[] = [];
  for (const src of spec.allow_origin_regex ?? []) {
    const re = originRegex(src);
    if (typeof re !== "string") regexes.push(re);
  }
  const list = (names: string[]) => names.includes("*") ? null : names.join(", ");
  return {
    anyOrigin,
    exact,
    patterns,
    regexes,
    credentials: spec.allow_credentials,
    methods: list(spec.allow_methods),
    headers: list(spec.allow_headers),
    expose: spec.expose_headers.join(", "),
    maxAge: spec.max_age === undefined ? "" : String(Math.floor(spec.max_age / 1000)),
  };
}

/**
 * An `allow_origin_regex` entry compiled to match a whole origin (`^(?:…)$`, with the conditions'
 * regex safety: Rust-syntax compatible, linear-time fallback), or what is wrong with it.
 */
export function originRegex(source: string): RegExp | string {
  const plain = compileRegex(source);
  if (typeof plain === "string") return plain;
  const re = compileRegex(`^(?:${source})$`);
  return typeof re === "string" ? `Invalid regular expression /${source}/` : re;
}

/** Origins nobody could list on purpose: a regex that admits one admits every site (or, for
 * `null`, every sandboxed frame and local file). */
const STRANGER_ORIGINS = ["https://attacker.invalid", "http://attacker.invalid", "null"];

/**
 * An origin no operator means to admit that `re` (an `allow_origin_regex`) matches, e.g.
 * `https://attacker.invalid` for `https://.*`; undefined when it matches none of them.
 */
export function strangerAdmitted(re: RegExp): string | undefined {
  return STRANGER_ORIGINS.find((o) => re.test(o));
}

/**
 * An origin on another site that `re` (an `allow_origin_regex`, compiled from `source`) admits
 * because its host may be followed by more: `https://example\.com.*` admits
 * `https://example.com.attacker.invalid`, a name under a domain anyone can register. Probed with
 * each literal host the source names; undefined when none is admitted so.
 */
export function suffixAdmitted(re: RegExp, source: string): string | undefined {
  const hosts = source.replaceAll("\\.", ".").match(/[a-z0-9-]+(?:\.[a-z0-9-]+)+/gi) ?? [];
  for (const host of hosts) {
    for (const scheme of ["https://", "http://"]) {
      for (const tail of [".attacker.invalid", "attacker.invalid", "-attacker.invalid"]) {
        const origin = `${scheme}${host}${tail}`;
        if (re.test(origin)) return origin;
      }
    }
  }
  return undefined;
}

/**
 * The first `.` in `source` that is not escaped, in a class or before a quantifier: it matches any
 * character, so `https://app.example.com` admits `https://appxexample.com`, a name anyone can
 * register. Undefined when there is none.
 */
export function unescapedDot(source: string): number | undefined {
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "\\") i++;
    else if (c === "[") inClass = true;
    else if (c === "]") inClass = false;
    else if (c === "." && !inClass && !/[*+?{]/.test(source[i + 1] ?? "")) return i;
  }
  return undefined;
}

/** True when `origin` (a request's `Origin` value) is one the policy names. */
export function originAllowed(policy: CorsPolicy, origin: string): boolean {
  if (policy.anyOrigin || policy.exact.has(origin)) return true;
  if (policy.patterns.length > 0) {
    const m = ORIGIN.exec(origin);
    if (m) {
      const [, scheme, host, port = ""] = m;
      for (const p of policy.patterns) {
        if (p.scheme !== scheme || p.port !== port || !host.endsWith(p.suffix)) continue;
        // `https://*.example.com` admits a.example.com and a.b.example.com: whole labels before
        // the suffix's dot, never evil-example.com, example.com itself or example.com.evil.net.
        if (LABELS.test(host.slice(0, -p.suffix.length))) return true;
      }
    }
  }
  for (const re of policy.regexes) if (re.test(origin)) return true;
  return false;
}

/** True for a CORS preflight: OPTIONS with `Origin` and `Access-Control-Request-Method`. */
export function isPreflight(method: string, headers: Headers): boolean {
  return method === "OPTIONS" && headers.has("origin") &&
    headers.has("access-control-request-method");
}

/** `Access-Control-Allow-Origin` for an admitted origin: `*`, or the origin itself. */
function allowOrigin(policy: CorsPolicy, origin: string): string {
  return policy.anyOrigin && !policy.credentials ? "*" : origin;
}

/**
 * The fields of a preflight's 204 for an admitted origin (Fetch §3.2.3). The browser compares the
 * requested method and headers with them itself; `*` echoes what was asked (valid tokens only).
 */
export function preflightFields(
  policy: CorsPolicy,
  req: { origin: string; method: string; headers: string | null },
): [string, string][] {
  const out: [string, string][] = [[
    "access-control-allow-origin",
    allowOrigin(policy, req.origin),
  ]];
  if (policy.credentials) out.push(["access-control-allow-credentials", "true"]);
  const methods = policy.methods ?? (TOKEN.test(req.method) ? req.method : "");
  if (methods !== "") out.push(["access-control-allow-methods", methods]);
  const headers = policy.headers ??
    (req.headers !== null && TOKEN_LIST.test(req.headers) ? req.headers.trim() : "");
  if (headers !== "") out.push(["access-control-allow-headers", headers]);
  if (policy.maxAge !== "") out.push(["access-control-max-age", policy.maxAge]);
  return out;
}

/** The `Vary` names a preflight answer depends on. */
export function preflightVary(policy: CorsPolicy): string {
  let v = policy.anyOrigin && !policy.credentials ? "" : "Origin, ";
  v += "Access-Control-Request-Method";
  if (policy.headers === null) v += ", Access-Control-Request-Headers";
  return v;
}

/** The fields an actual response carries for an admitted origin. */
export function responseFields(policy: CorsPolicy, origin: string): [string, string][] {
  const out: [string, string][] = [["access-control-allow-origin", allowOrigin(policy, origin)]];
  if (policy.credentials) out.push(["access-control-allow-credentials", "true"]);
  if (policy.expose !== "") out.push(["access-control-expose-headers", policy.expose]);
  return out;
}

/** True when the answers differ by `Origin` (so caches must be told: `Vary: Origin`). */
export function variesByOrigin(policy: CorsPolicy): boolean {
  return !policy.anyOrigin || policy.credentials;
}

/** `vary` with `name` added unless listed already (or `*`), case-insensitively. */
export function mergeVary(vary: string | null, name: string): string {
  if (vary === null || vary.trim() === "") return name;
  const names = vary.split(",").map((s) => s.trim().toLowerCase());
  if (names.includes("*") || names.includes(name.toLowerCase())) return vary;
  return `${vary}, ${name}`;
}
