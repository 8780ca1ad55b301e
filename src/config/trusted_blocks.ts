// Blocks of addresses trusted to name clients (trusted_proxies, accept_proxy_protocol): the one
// mistake the validators warn about, a block that holds every client of an address family.

import { isV4 } from "../domain/ip.ts";
import type { Cidr } from "../domain/ip.ts";

/** The fix for a trusted block that holds every client of an address family. */
export const TRUST_FEW =
  "List only the addresses of the load balancers or CDN in front (e.g. 10.0.0.0/8); keep this " +
  "only if no client can reach Prox but through them";

/** "IPv4" or "IPv6" when `block` holds every address of that family (0.0.0.0/0, ::/0), or null. */
export function wholeFamily(block: Cidr): "IPv4" | "IPv6" | null {
  // IPv4 blocks are stored mapped (::ffff:0:0/96 is 0.0.0.0/0); an IPv6 one never holds IPv4.
  if (block.bits === 96 && isV4(block.addr)) return "IPv4";
  return block.bits === 0 ? "IPv6" : null;
}
