// Cross-field rules of access control: `ip_access` (top level and per route).

import { formatEntry, parseAccessEntry } from "../domain/ip_access.ts";
import type { Config, IpAccessConfig } from "./schema.ts";
import type { Report } from "./validate_route.ts";

/** Checks the top-level `ip_access` and every route's. */
export function validateAccess(config: Config, opts: { err: Report; warn: Report }): void {
  if (config.ip_access) checkIpAccess(config.ip_access, ["ip_access"], opts);
  for (const [key, route] of Object.entries(config.routes)) {
    if (route.ip_access) checkIpAccess(route.ip_access, ["routes", key, "ip_access"], opts);
  }
}

/** Entries that do not parse (errors), host bits past the prefix and entries in both lists. */
function checkIpAccess(
  lists: IpAccessConfig,
  path: (string | number)[],
  opts: { err: Report; warn: Report },
): void {
  const denied = new Map<string, string>();
  for (const text of lists.deny) {
    const e = parseAccessEntry(text);
    if (e) denied.set(formatEntry(e), text);
  }
  for (const list of ["allow", "deny"] as const) {
    lists[list].forEach((text, i) => {
      const at = [...path, list, i];
      const e = parseAccessEntry(text);
      if (!e) {
        opts.err(at, `Invalid address or CIDR block "${text}"`, entryHint(text));
        return;
      }
      const block = formatEntry(e);
      if (e.hostBits) {
        const address = text.trim().slice(0, text.trim().indexOf("/"));
        opts.warn(
          at,
          `"${text}" has address bits set past its prefix length: it means ${block}`,
          `Write "${block}" for the block, or "${address}" for the one address`,
        );
      }
      if (list === "allow" && denied.has(block)) {
        opts.warn(
          at,
          `${block} is in both allow and deny: deny wins`,
          `Remove "${text}" from allow, or "${denied.get(block)}" from deny`,
        );
      }
    });
  }
}

/** The fix for an entry that is not an address, a CIDR block or `all`. */
function entryHint(text: string): string {
  const s = text.trim();
  if (/^\[.*\](\/\d+)?$/.test(s)) {
    return `Write the address without brackets: ${s.replace(/[[\]]/g, "")}`;
  }
  if (s.includes("%")) return "Remove the zone id (%…): zones are not matched";
  if (/^[a-z][a-z0-9.-]*$/i.test(s) && /[a-z]/i.test(s.split(".").at(-1)!)) {
    return "Host names are not resolved: write the address or block";
  }
  const len = /\/(\d+)$/.exec(s)?.[1];
  if (len !== undefined) {
    return s.includes(":")
      ? `An IPv6 prefix length is 0 to 128 (here ${len})`
      : `An IPv4 prefix length is 0 to 32 (here ${len})`;
  }
  return "Use an address, a CIDR block or all, e.g. 10.0.0.0/8, 2001:db8::/32, ::1";
}
