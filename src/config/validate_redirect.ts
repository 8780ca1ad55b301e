// Redirect routes that answer their own Location: every request then redirects again, until the
// browser gives up (ERR_TOO_MANY_REDIRECTS); Caddy and nginx load such a config without a word.

import { compileRouter, normalizePrefix, parseRouteKey } from "../domain/router.ts";
import type { RouteEntry } from "../domain/router.ts";
import type { Config } from "./schema.ts";
import type { Report } from "./validate_route.ts";

/** A host that only a route without hosts matches. */
const ANY_HOST = "host.invalid";

/**
 * Warns at each redirect route whose relative target (a path on this site) the same route
 * matches again: `/old` → `/old/new` sends `/old/x` to `/old/new/x`, then to `/old/new/new/x`.
 * Likewise an absolute target on one of the route's own hosts, with the scheme Prox serves
 * (`https` with `tls`, else `http`): `example.com/` → `https://example.com`. A route for every
 * host is not warned about then (the target may be another server's).
 */
export function warnRedirectLoops(
  config: Config,
  opts: { warn: Report; skip: ReadonlySet<string> },
): void {
  const entries: RouteEntry<string>[] = Object.keys(config.routes).map((key) => {
    const { host, prefix } = parseRouteKey(key);
    const hosts = [...(host ? [host] : []), ...(config.routes[key].hosts ?? [])];
    // A conditional route takes a request only when its match holds, which the redirected
    // request may not (a query or header the redirect drops): it serves no target for sure.
    const when = config.routes[key].match ? { when: () => false } : {};
    return { key, prefix, hosts, value: key, ...when };
  });
  const router = compileRouter(entries);
  const scheme = config.tls ? "https" : "http";
  for (const e of entries) {
    const route = config.routes[e.key];
    if (opts.skip.has(e.key)) continue;
    if (route.type !== "redirect") continue;
    const bare = route.target.replace(/[?#].*$/, "");
    let path: string;
    let hosts: string[];
    if (/^\/(?!\/)/.test(bare)) {
      path = normalizePrefix(bare);
      // The redirected request comes back to the same host: one of the route's, or any other.
      hosts = e.hosts.length > 0
        ? e.hosts.map((h) => h.startsWith("*.") ? "x" + h.slice(1) : h)
        : [ANY_HOST];
    } else {
      const url = e.hosts.length > 0 && new RegExp(`^${scheme}://`, "i").test(bare)
        ? URL.parse(bare)
        : null;
      if (!url) continue;
      path = normalizePrefix(url.pathname);
      hosts = [url.hostname];
    }
    if (!hosts.some((h) => router.match(h, path)?.value === e.key)) continue;
    opts.warn(
      ["routes", e.key, "target"],
      `Redirect target "${route.target}" is served by this route again: every request to it ` +
        "redirects in a loop",
      path === e.prefix
        ? `Point it outside "${e.prefix}"`
        : `Point it outside "${e.prefix}", or add a route for "${path}"`,
    );
  }
}

/** A target with a scheme and an authority (`ftp://…`, `myapp://…`): an absolute URL. */
const ABSOLUTE = /^[a-z][a-z0-9+.-]*:\/\//i;
/** http and https targets, which validate_route.ts checks already. */
const HTTP = /^https?:\/\//i;

/**
 * An error at each redirect route whose target of another scheme than http(s) is no URL
 * (`ftp://a b`): the redirect action parses it per request, and every request failed with a 500.
 */
export function checkRedirectTargets(config: Config, opts: { err: Report; warn: Report }): void {
  for (const [key, route] of Object.entries(config.routes)) {
    if (route.type !== "redirect") continue;
    // `https://{host}{uri}` (Caddy's redir) is text here: clients went to a host named "{host}".
    // `{env.NAME}` is warned about with the other strings that do not expand it (parse.ts).
    const placeholder = /\{(?!env\.)[A-Za-z_][A-Za-z0-9_.]*\}/.exec(route.target);
    if (placeholder) {
      opts.warn(
        ["routes", key, "target"],
        `${placeholder[0]} is no placeholder in a redirect target: it is sent as written`,
        "Write the host itself; the rest of the path and the query follow the target (keep_query)",
      );
    }
    if (route.exact) continue;
    const target = route.target.replace(/[?#].*$/, "");
    if (ABSOLUTE.test(target) && !HTTP.test(target) && !URL.canParse(target)) {
      opts.err(["routes", key, "target"], `Invalid redirect URL "${route.target}"`);
    }
  }
}
