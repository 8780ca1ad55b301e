// Where a `tcp` entry sends a connection: its targets (`host:port`), or for TLS passthrough the
// targets its `sni` table names for the ClientHello's server name. Pure.

/** An upstream address as written in `targets` (`10.0.0.5:5432`, `[::1]:6379`, `db:5432`). */
export interface HostPort {
  host: string;
  port: number;
}

/** A DNS name: letters, digits, `-` and `_` in dot-separated labels. */
const NAME = /^([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/i;

/** Parses `host:port` (IPv6 in brackets); returns an error message when it is not one. */
export function parseHostPort(text: string): HostPort | string {
  const fail = `Invalid target "${text}": use host:port, e.g. 10.0.0.5:5432, db.internal:5432 ` +
    `or [2001:db8::5]:5432`;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    return `Invalid target "${text}": a tcp target is host:port, without a scheme`;
  }
  let host: string;
  let port: string;
  if (text.startsWith("[")) {
    const end = text.indexOf("]");
    if (end < 0 || text[end + 1] !== ":") return fail;
    host = text.slice(1, end);
    port = text.slice(end + 2);
    if (!/^[0-9a-f:.]+$/i.test(host) || !host.includes(":")) return fail;
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) return `Invalid target "${text}": name the port too, e.g. ${text}:5432`;
    host = text.slice(0, colon);
    port = text.slice(colon + 1);
    if (host.includes(":")) {
      return `Invalid target "${text}": put IPv6 addresses in brackets, e.g. [::1]:5432`;
    }
    if (!NAME.test(host)) return fail;
  }
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    return `Invalid port in target "${text}": use a number from 1 to 65535`;
  }
  return { host, port: Number(port) };
}

/**
 * Why an `sni` key cannot be matched, or null: a DNS name (`db.example.com`) or a wildcard for
 * one label (`*.internal.example.com`), as in certificates.
 */
export function sniKeyProblem(key: string): string | null {
  const name = key.startsWith("*.") ? key.slice(2) : key;
  if (name.includes("*")) {
    return `"${key}" has a * that is not a whole first label: write *.example.com`;
  }
  if (/[\u0080-\u{10ffff}]/u.test(name)) {
    const ascii = aLabels(name);
    return `"${key}" is not in the ASCII form clients send (RFC 6066 §3)` +
      (ascii ? `: write "${key.startsWith("*.") ? "*." : ""}${ascii}"` : "");
  }
  if (!NAME.test(name.replace(/\.$/, "")) || /^\d+(\.\d+){3}\.?$/.test(name)) {
    return `"${key}" is not a DNS name (clients send no IP address in SNI, RFC 6066 §3)`;
  }
  return null;
}

/** An internationalized name in its A-label (`xn--`) form, or null when it is not a name. */
function aLabels(name: string): string | null {
  try {
    const host = new URL(`http://${name}/`).hostname;
    return NAME.test(host.replace(/\.$/, "")) ? host : null;
  } catch {
    return null;
  }
}

/** An `sni` table compiled for lookups. */
export interface SniTable<T> {
  readonly exact: ReadonlyMap<string, T>;
  /** `*.example.com` stored as `example.com`. */
  readonly wildcard: ReadonlyMap<string, T>;
  readonly fallback: T | null;
}

/** Compiles `sni` (keys lowercased, a final dot dropped) with its `default`. */
export function compileSni<T>(sni: Record<string, T>, fallback?: T): SniTable<T> {
  const exact = new Map<string, T>();
  const wildcard = new Map<string, T>();
  for (const [key, value] of Object.entries(sni)) {
    const k = key.toLowerCase().replace(/\.$/, "");
    if (k.startsWith("*.")) wildcard.set(k.slice(2), value);
    else exact.set(k, value);
  }
  return { exact, wildcard, fallback: fallback ?? null };
}

/**
 * The entry for a server name (lowercase, no final dot, as peekClientHello gives it): an exact
 * key, else the wildcard for its first label, else the fallback (also when there is no name).
 */
export function matchSni<T>(table: SniTable<T>, name: string | null): T | null {
  if (name === null) return table.fallback;
  const exact = table.exact.get(name);
  if (exact !== undefined) return exact;
  const dot = name.indexOf(".");
  const wild = dot > 0 ? table.wildcard.get(name.slice(dot + 1)) : undefined;
  return wild ?? table.fallback;
}
