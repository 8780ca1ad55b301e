// forward_auth URLs that point at Prox itself, on a route that is checked too: every check asks
// again, each holding a connection and a timeout, until the upstream pool's bounds refuse (503).
// oauth2-proxy or Authelia served behind the same Prox is common; its route needs `forward_auth:
// false`.

import { compileRouter, parseRouteKey } from "../domain/router.ts";
import type { RouteEntry } from "../domain/router.ts";
import { normalizePath } from "../domain/rewrite.ts";
import type { Config } from "./schema.ts";
import { isLoopback, parseListenAddr } from "./listen.ts";
import type { Report } from "./validate_route.ts";

/**
 * Warns at each `forward_auth.url` that Prox's own listener serves with a route that has a
 * forward_auth check of its own (the top level's, inherited, or one it sets).
 */
export function warnForwardAuthLoops(
  config: Config,
  opts: { warn: Report; skip: ReadonlySet<string> },
): void {
  const listen = parseListenAddr(config.listen_addr);
  if (typeof listen === "string" || listen.port === 0) return;
  const checked = (key: string) => {
    const own = config.routes[key].forward_auth;
    return own === false ? false : own !== undefined || config.forward_auth !== undefined;
  };
  const entries: RouteEntry<string>[] = Object.keys(config.routes)
    .filter((k) => !opts.skip.has(k))
    .map((key) => {
      const { host, prefix } = parseRouteKey(key);
      const hosts = [...(host ? [host] : []), ...(config.routes[key].hosts ?? [])];
      // A conditional route takes the check only when its match holds; the route that surely
      // does is the one without match, or a shorter prefix.
      const when = config.routes[key].match ? { when: () => false } : {};
      return { key, prefix, hosts, value: key, ...when };
    });
  const router = compileRouter(entries);
  const ownUrl = (text: string): URL | undefined => {
    const u = new URL(text);
    const port = Number(u.port) || (u.protocol === "https:" ? 443 : 80);
    if (port !== listen.port) return undefined;
    const host = u.hostname.replace(/^\[|\]$/g, "");
    const wildcard = listen.hostname === "0.0.0.0" || listen.hostname === "::";
    return host === listen.hostname ||
        (isLoopback(host) && (wildcard || isLoopback(listen.hostname)))
      ? u
      : undefined;
  };
  const check = (path: (string | number)[], url: string) => {
    const u = ownUrl(url);
    if (!u) return;
    const norm = normalizePath(u.pathname);
    const hit = norm.ok ? router.match(u.host.toLowerCase(), norm.path) : undefined;
    if (!hit || !checked(hit.value)) return;
    opts.warn(
      path,
      `forward_auth url "${url}" is Prox itself, and its route "${hit.value}" is checked too: ` +
        "each check would ask again, until the connection limits refuse it (503)",
      `Set forward_auth: false on route "${hit.value}", or point url at the auth service directly`,
    );
  };
  if (config.forward_auth) check(["forward_auth", "url"], config.forward_auth.url);
  for (const e of entries) {
    const own = config.routes[e.key].forward_auth;
    if (own) check(["routes", e.key, "forward_auth", "url"], own.url);
  }
}
