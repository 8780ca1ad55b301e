// `rewrite_location` (nginx's `proxy_redirect default`, Apache's ProxyPassReverse): an upstream's
// Location or Refresh that points at the upstream itself, an address the client cannot reach or
// should not see, is turned back into the path the client asks Prox for. Pure string work.

import { joinPath, parseTarget } from "./rewrite.ts";
import { isUnixTarget } from "./upstream_origin.ts";

/** How a route maps client paths onto one target (upstreamTarget without `path_regex`). */
export interface LocationMap {
  /** The target URL that answered (its origin, and its path as the base of every upstream path). */
  target: string;
  /** The route's prefix (normalized, no trailing slash but for `/`). */
  prefix: string;
  /** The route's `path_rewrite`. */
  rewrite?: string;
  /** A Host the route sends instead of the target's (discovered services): also the upstream's. */
  host?: string;
}

const ABSOLUTE = /^(https?):\/\/([^/?#\\]*)([^?#]*)(.*)$/is;
const DEFAULT_PORT: Record<string, string> = { http: ":80", https: ":443" };

/** `host[:port]` lower-cased, without the scheme's default port (or an empty one). */
function authority(scheme: string, raw: string): string {
  let a = raw.toLowerCase();
  if (a.endsWith(":")) a = a.slice(0, -1);
  const def = DEFAULT_PORT[scheme];
  if (def && a.endsWith(def)) a = a.slice(0, -def.length);
  return a;
}

/**
 * A URL of the upstream's own (its scheme and authority, a path under the target's path and
 * `path_rewrite`) as the client's path (the route prefix in their place), the query and fragment
 * kept; else undefined: other hosts, relative references and paths outside the mapping are left
 * as they are. The result is a relative reference, so the client stays on the host and scheme
 * it used.
 */
export function reverseLocation(value: string, map: LocationMap): string | undefined {
  if (isUnixTarget(map.target)) return undefined;
  // Tabs and line breaks are dropped wherever they are, as URL parsers do (WHATWG URL): left in,
  // `/\t/evil.test` would pass the checks below and reach a browser as `//evil.test`.
  const m = ABSOLUTE.exec(value.trim().replace(/[\t\n\r]/g, ""));
  if (!m) return undefined;
  const scheme = m[1].toLowerCase();
  // Userinfo names another authority than it seems to: left alone.
  if (m[2].includes("@")) return undefined;
  const t = parseTarget(map.target);
  if (t.url.protocol !== scheme + ":") return undefined;
  const host = authority(scheme, m[2]);
  if (host !== t.url.host && (map.host === undefined || host !== authority(scheme, map.host))) {
    return undefined;
  }
  const rewrite = map.rewrite && map.rewrite !== "/" ? map.rewrite.replace(/\/+$/, "") : "";
  let base = joinPath(t.base, rewrite);
  if (base === "/") base = "";
  // A backslash the URL parser takes for a slash: such a path is left as it came.
  if (m[3] !== "" && !m[3].startsWith("/")) return undefined;
  // Dot segments resolved first (`.`, `..`, `%2e`, between backslashes too), as the client's URL
  // parser will: `/base/../admin` is the upstream's `/admin`, outside the target's path, and
  // as `/app/../admin` it would reach another route.
  let path = "/";
  if (m[3] !== "") {
    try {
      path = new URL("http://h" + m[3]).pathname;
    } catch {
      return undefined;
    }
  }
  if (base !== "" && path !== base && !path.startsWith(base + "/")) return undefined;
  const prefix = map.prefix === "/" ? "" : map.prefix;
  let out = prefix + path.slice(base.length);
  // A path the upstream began with `//` or `/\` would read as another host once relative.
  out = out.replace(/^[/\\]{2,}/, "/");
  if (out === "") out = "/";
  return out + m[4];
}

const REFRESH = /^(\s*\d+(?:\.\d*)?\s*[;,]\s*url\s*=\s*)(['"]?)(.*?)(\2\s*)$/is;

/** A `Refresh` field's URL (`5; url=http://…`) reversed as reverseLocation does; else undefined. */
export function reverseRefresh(value: string, map: LocationMap): string | undefined {
  const m = REFRESH.exec(value);
  if (!m) return undefined;
  const url = reverseLocation(m[3], map);
  return url === undefined ? undefined : m[1] + m[2] + url + m[4];
}
