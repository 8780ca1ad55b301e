// `discover` on load_balance routes: what DNS gave for `discover.dns` (addresses) or
// `discover.srv` (records, each with its host's addresses) becomes the route's targets (the config
// the snapshot is built from). Pure: the lookups themselves are src/adapters/discovery.ts.

import type { Config } from "./schema.ts";

type DiscoverConfig = NonNullable<
  Extract<Config["routes"][string], { type: "load_balance" }>["discover"]
>;

/**
 * After a failed lookup while a route has no target yet, the next comes this soon (or at the
 * refresh, if sooner), rather than a refresh later: also the `Retry-After` of its 503s.
 */
export const DISCOVER_RETRY_MS = 2_000;

/** One target found: an address, with an SRV record's port, weight and rank. */
export interface Found {
  /** IPv4 or IPv6 (unbracketed). */
  address: string;
  /** From an SRV record (else the URL's port). */
  port?: number;
  /** From an SRV record's weight (1–1000). */
  weight?: number;
  /** From an SRV record whose priority is not the lowest: used when no other is available. */
  backup?: boolean;
}

/** Route id → the targets last found for its `discover`. */
export type Discovered = ReadonlyMap<string, readonly Found[]>;

/** `discover.dns` with its host replaced by `address` (`http://app:8080/v1` → `http://10.0.0.5:8080/v1`). */
export function targetFor(dns: string, address: string): string {
  const host = address.includes(":") ? `[${address}]` : address;
  return dns.replace(/^(https?:\/\/)(\[[^\]]*\]|[^/?#:]*)/i, (_, scheme) => scheme + host);
}

/** An SRV name's domain, the service's name: `_http._tcp.api.service.consul` → `api.service.consul`. */
export function srvDomain(srv: string): string {
  return srv.replace(/^_[^.]+\._[^.]+\./, "").replace(/\.$/, "");
}

/**
 * The URL requests to discovered targets name (Host, TLS server name, the cache key's path):
 * `dns` as written, or `scheme://` and the SRV name's domain.
 */
export function discoverUrl(d: DiscoverConfig): string {
  return d.dns ?? `${d.scheme}://${srvDomain(d.srv ?? "")}`;
}

/** The Host (and TLS server name with its port dropped) requests to discovered targets carry. */
export function discoveredHost(route: Config["routes"][string]): string | undefined {
  if (route.type !== "load_balance" || !route.discover) return undefined;
  return new URL(discoverUrl(route.discover)).host;
}

/** What a found target is called in logs: its address, with the SRV record's port. */
export function foundName(f: Found): string {
  const host = f.address.includes(":") ? `[${f.address}]` : f.address;
  return f.port === undefined ? f.address : `${host}:${f.port}`;
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
    const d = route.discover;
    const targets = (found.get(key) ?? []).map((f) => {
      const url = f.port === undefined
        ? targetFor(d.dns ?? discoverUrl(d), f.address)
        : `${d.scheme}://${foundName(f)}`;
      return f.weight === undefined && !f.backup
        ? url
        : { url, weight: f.weight ?? 1, backup: f.backup ?? false };
    });
    routes[key] = { ...route, targets };
  }
  return routes ? { ...config, routes } : config;
}
