// `discover` on load_balance routes: the addresses DNS gave for `discover.dns` become the route's
// targets (the config the snapshot is built from), each with the URL's scheme, port and path.
// Pure: the lookups themselves are src/adapters/discovery.ts.

import type { Config } from "./schema.ts";

/** Route id → the addresses last found for its `discover.dns` (IPv4 or IPv6, unbracketed). */
export type Discovered = ReadonlyMap<string, readonly string[]>;

/** `discover.dns` with its host replaced by `address` (`http://app:8080/v1` → `http://10.0.0.5:8080/v1`). */
export function targetFor(dns: string, address: string): string {
  const host = address.includes(":") ? `[${address}]` : address;
  return dns.replace(/^(https?:\/\/)(\[[^\]]*\]|[^/?#:]*)/i, (_, scheme) => scheme + host);
}

/** The Host (and TLS server name with its port dropped) requests to discovered targets carry. */
export function discoveredHost(route: Config["routes"][string]): string | undefined {
  if (route.type !== "load_balance" || !route.discover) return undefined;
  return new URL(route.discover.dns).host;
}

/**
 * `config` with each `discover` route's targets set to what `found` holds for it (none before
 * the first answer). Routes without `discover`, and the config itself, are not changed.
 */
export function withDiscovered(config: Config, found: Discovered): Config {
  let routes: Config["routes"] | null = null;
  for (const [key, route] of Object.entries(config.routes)) {
    if (route.type !== "load_balance" || !route.discover) continue;
    routes ??= { ...config.routes };
    const dns = route.discover.dns;
    routes[key] = { ...route, targets: (found.get(key) ?? []).map((a) => targetFor(dns, a)) };
  }
  return routes ? { ...config, routes } : config;
}
