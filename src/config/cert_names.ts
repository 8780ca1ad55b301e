// Which of the routes' host names a certificate covers, as clients check it (RFC 6125 §6.4: the
// subjectAltName only, never the subject's CN; a wildcard stands for one whole left-most label).

import { parseRouteKey } from "../domain/router.ts";
import { formatIp, parseIp } from "../domain/ip.ts";
import type { Config } from "./schema.ts";

/** A certificate's subjectAltName entries: DNS names and IP addresses. */
export interface CertificateNames {
  dns: readonly string[];
  ip: readonly string[];
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** An IP address in one spelling (`[::1]` and node:crypto's `0:0:0:0:0:0:0:1` alike). */
const canonicalIp = (text: string) => {
  const ip = parseIp(text);
  return ip ? formatIp(ip) : text;
};

/**
 * True when a client connecting to `host` (a name, an IPv4 address or a bracketed IPv6 one)
 * accepts the certificate; with `exactly`, only when an entry names it without a wildcard.
 */
export function certificateCovers(
  names: CertificateNames,
  host: string,
  exactly = false,
): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  if (IPV4.test(h) || h.startsWith("[")) {
    return names.ip.some((ip) => canonicalIp(ip) === canonicalIp(h));
  }
  return names.dns.some((n) => {
    const name = n.toLowerCase().replace(/\.$/, "");
    if (!name.startsWith("*.")) return name === h;
    const dot = h.indexOf(".");
    return !exactly && dot > 0 && h.slice(dot + 1) === name.slice(2);
  });
}

/**
 * Which of `certificates` (`tls.sni`) serves a client asking for `host`: the first that names it
 * exactly, else -1 when `main` (the main certificate, which serves every other name) names it
 * exactly, else the first whose wildcard holds it; -1 when none holds it. nginx, Caddy and HAProxy
 * prefer the exact name too, whichever certificate holds it.
 */
export function chooseCertificate(
  certificates: readonly CertificateNames[],
  host: string,
  main?: CertificateNames,
): number {
  const exact = certificates.findIndex((c) => certificateCovers(c, host, true));
  if (exact >= 0 || (main && certificateCovers(main, host, true))) return exact;
  return certificates.findIndex((c) => certificateCovers(c, host));
}

/**
 * The routes' exact host names (route key hosts and `hosts` entries) the certificate does not
 * cover, each once with the first route naming it. `*.domain` hosts are not checked: a
 * certificate may list the subdomains in use one by one.
 */
export function uncoveredHosts(
  routes: Config["routes"],
  names: CertificateNames,
): { route: string; host: string; index?: number }[] {
  const out: { route: string; host: string; index?: number }[] = [];
  const seen = new Set<string>();
  for (const [key, route] of Object.entries(routes)) {
    const own = parseRouteKey(key).host;
    const hosts: [string, number | undefined][] = [
      ...(own ? [[own, undefined] as [string, undefined]] : []),
      ...(route.hosts ?? []).map((h, i): [string, number] => [h, i]),
    ];
    for (const [host, index] of hosts) {
      const h = host.toLowerCase().replace(/\.$/, "");
      if (h.startsWith("*") || seen.has(h)) continue;
      seen.add(h);
      if (!certificateCovers(names, h)) out.push({ route: key, host: h, index });
    }
  }
  return out;
}
