// DNS-01 (RFC 8555 §8.4) pieces without I/O: where the TXT record goes, which DNS servers a
// `resolvers` entry names, and which zones to ask for the authoritative servers.

import { formatIp, parseIp } from "./ip.ts";

/** A DNS server to query: an IP address literal and a port. */
export interface NameServer {
  ipAddr: string;
  port: number;
}

/**
 * The record name a CA looks up for an identifier, absolute (trailing dot, as lego's httpreq and
 * exec hooks send it). A wildcard's authorization names its base domain already; a leading `*.`
 * is dropped all the same.
 */
export function challengeRecord(identifier: string): string {
  const name = identifier.replace(/^\*\./, "").replace(/\.$/, "").toLowerCase();
  return `_acme-challenge.${name}.`;
}

/** `10.0.0.53`, `10.0.0.53:5353`, `2001:db8::53` or `[2001:db8::53]:53`; else why not. */
export function parseResolver(text: string): NameServer | string {
  const s = text.trim();
  let host = s;
  let port = 53;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracketed) {
    host = bracketed[1];
    if (bracketed[2] !== undefined) port = Number(bracketed[2]);
  } else if (/^[^:]+:\d+$/.test(s)) {
    const i = s.lastIndexOf(":");
    host = s.slice(0, i);
    port = Number(s.slice(i + 1));
  }
  const ip = parseIp(host);
  if (!ip) return `"${text}" is not an IP address`;
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `port ${port} is out of range`;
  return { ipAddr: formatIp(ip), port };
}

/**
 * Where to look for the zone that holds `record` (absolute or not): its parent names from the
 * longest to the shortest, without the root and without the `_acme-challenge` label itself.
 */
export function zoneCandidates(record: string): string[] {
  const labels = record.replace(/\.$/, "").split(".").filter((l) => l !== "");
  const out: string[] = [];
  for (let i = labels[0] === "_acme-challenge" ? 1 : 0; i < labels.length; i++) {
    out.push(labels.slice(i).join("."));
  }
  return out;
}

/** True when a TXT answer (each record a list of strings, joined as RFC 7208 §3.3 does) holds `value`. */
export function txtHolds(answer: string[][], value: string): boolean {
  return answer.some((parts) => parts.join("") === value);
}
