// Hop-by-hop removal, forwarding headers and client-IP resolution behind trusted proxies.
// Operates on Web `Headers` or Prox's own `HeaderList` (plain data, no I/O).

import { cidrContains, formatIp, parseIp } from "./ip.ts";
import type { Cidr } from "./ip.ts";
import { HeaderList, setKnown } from "./header_list.ts";
import type { HeaderMap } from "./header_list.ts";

/**
 * A Host field value: a host and an optional port (RFC 9110 §7.2, RFC 3986 §3.2.2). The server
 * puts it in the request URL, so anything else could move the path ("Host: a/b") or break URL
 * parsing; RFC 9112 §3.2 asks for 400.
 */
export const HOST_FIELD = /^(?:\[[0-9A-Za-z:.%]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?$/;

/**
 * Fields that carry a client address, which the client writes as it likes (the first entries of
 * X-Forwarded-For even behind a proxy that appends): no key for a rate limit, no condition to
 * choose by; `client_ip` is the address Prox resolved. Lower case.
 */
export const CLIENT_ADDRESS_FIELDS: ReadonlySet<string> = new Set([
  "x-forwarded-for",
  "x-real-ip",
  "forwarded",
  "true-client-ip",
  "x-client-ip",
  "x-cluster-client-ip",
  "cf-connecting-ip",
  "fastly-client-ip",
]);

/** Connection-specific headers never forwarded (RFC 9110 §7.6.1), plus the proxy auth pair. */
export const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "proxy-authenticate",
  "proxy-authorization",
];

/**
 * Fields an upstream's trailer section does not pass on to a client: hop-by-hop ones, and those
 * a trailer must not hold (RFC 9110 §6.5.1: framing, routing, request modifiers, authentication,
 * response control data, content metadata). Lower case.
 */
const NOT_TRAILERS: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  "content-length",
  "content-type",
  "content-encoding",
  "content-range",
  "host",
  "authorization",
  "set-cookie",
  "cache-control",
  "expires",
  "location",
  "date",
  "retry-after",
  "vary",
  "age",
]);

/**
 * A request's length from its Content-Length value, or -1 when it is none: plain digits, or a
 * list of one length repeated (RFC 9112 §6.3 (5): such a message has that length), which is what
 * two agreeing Content-Length fields become once joined ("5, 5"). Differing ones are no length.
 */
export function requestLength(value: string): number {
  const n = Number(value);
  if (Number.isSafeInteger(n) && n >= 0 && DIGITS.test(value)) return n;
  const parts = value.split(",");
  const first = parts[0].trim();
  if (parts.length < 2 || !DIGITS.test(first)) return -1;
  for (const p of parts) if (p.trim() !== first) return -1;
  const length = Number(first);
  return Number.isSafeInteger(length) ? length : -1;
}
const DIGITS = /^[0-9]+$/;

/** Whether a trailer field (lower-case name) goes on to the client: not a pseudo-field, not above. */
export function trailerPasses(name: string): boolean {
  return name.charCodeAt(0) !== 58 && !NOT_TRAILERS.has(name);
}

/** Removes hop-by-hop headers, including every header named in `Connection`. */
export function stripHopByHop(h: HeaderMap, keepUpgrade = false): void {
  const named = h.get("connection");
  if (named) {
    for (const n of named.split(",")) {
      const name = n.trim().toLowerCase();
      if (name && !(keepUpgrade && name === "upgrade")) h.delete(name);
    }
  }
  for (const name of HOP_BY_HOP) {
    if (keepUpgrade && (name === "upgrade" || name === "connection")) continue;
    h.delete(name);
  }
}

const HOP_SET = new Set(HOP_BY_HOP);

/**
 * A copy of `src` without hop-by-hop headers (also those named in `Connection`): one pass,
 * cheaper than copying everything and deleting nine names.
 */
export function withoutHopByHop(src: HeaderMap): HeaderList {
  const named = src.get("connection");
  const skip = named
    ? new Set([...HOP_BY_HOP, ...named.split(",").map((n) => n.trim().toLowerCase())])
    : HOP_SET;
  return HeaderList.from(src, skip);
}

/**
 * Removes the fields whose names hold an underscore (`underscores_in_headers: false`, as nginx
 * does by default). CGI, PHP and many frameworks read `X_Forwarded_For` and `X-Forwarded-For` as
 * one variable (`HTTP_X_FORWARDED_FOR`), so a client could set through the one what Prox replaces
 * in the other: the client address, a user that forward_auth or jwt_auth vouched for, framing
 * fields (`Transfer_Encoding`).
 */
export function dropUnderscoredNames(h: HeaderMap): void {
  let named: string[] | undefined;
  h.forEach((_, name) => {
    if (name.includes("_")) (named ??= []).push(name);
  });
  if (named) { for (const name of named) h.delete(name); }
}

/** True when the peer address is in one of the trusted proxy ranges. */
export function isTrusted(peer: string, trusted: readonly Cidr[]): boolean {
  if (trusted.length === 0) return false;
  const addr = parseIp(peer);
  return addr !== null && trusted.some((c) => cidrContains(c, addr));
}

/**
 * The real client IP: the peer, unless the peer is a trusted proxy, in which case the rightmost
 * `X-Forwarded-For` entry that is not itself trusted. An entry that is no address as proxies
 * write one (hopAddress) ends the walk at the peer: nothing further left is believed.
 */
export function resolveClientIp(
  peer: string,
  xff: string | null,
  trusted: readonly Cidr[],
): string {
  if (!xff || !isTrusted(peer, trusted)) return peer;
  const hops = xff.split(",").map((s) => s.trim()).filter(Boolean);
  let addr: Uint8Array | null = null;
  for (let i = hops.length - 1; i >= 0; i--) {
    addr = hopAddress(hops[i]);
    if (!addr) return peer; // garbage: do not trust anything further left
    if (!trusted.some((c) => cidrContains(c, addr!))) break;
  }
  // RFC 5952 text (lower case, zeros compressed), as Deno names an IPv6 peer; an IPv4-mapped one
  // as IPv4 (nginx on `[::]:80 ipv6only=off` writes "::ffff:203.0.113.5"), as the listeners do.
  // Every entry trusted: the first, as nginx's real_ip_recursive.
  return addr ? formatIp(addr) : peer;
}

/** An IPv4 address with no leading zeros (inet_aton reads `010` as octal, 8). */
const V4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
/** What may follow an IPv4 address or `]`: nothing, or a port. */
const PORT = /^(?::(\d{1,5}))?$/;

/**
 * An X-Forwarded-For entry's address: IPv4 with an optional port, IPv6 bare or in brackets with an
 * optional port (RFC 7239 §6 node forms, as nginx and load balancers write them); null for
 * anything else (`unknown`, `_hidden`, a zone, a port of letters, text after the brackets).
 */
function hopAddress(s: string): Uint8Array | null {
  let ip = s;
  let tail = "";
  const first = s.indexOf(":");
  if (s.charCodeAt(0) === 91) { // [
    const end = s.indexOf("]");
    if (end < 0) return null;
    ip = s.slice(1, end);
    tail = s.slice(end + 1);
    if (!ip.includes(":")) return null; // brackets hold IPv6 only (RFC 3986 §3.2.2)
  } else if (first >= 0 && first === s.lastIndexOf(":")) {
    ip = s.slice(0, first);
    tail = s.slice(first);
  }
  const port = PORT.exec(tail);
  if (!port || (port[1] !== undefined && Number(port[1]) > 65535) || ip.includes("%")) return null;
  // An IPv4 address, alone or as the end of an IPv6 one (::ffff:203.0.113.5).
  const dotted = ip.slice(ip.lastIndexOf(":") + 1);
  if (dotted.includes(".") && !V4.test(dotted)) return null;
  return parseIp(ip);
}

const OURS = new Set(["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]);

/** What the forwarding headers describe. */
export interface ForwardInfo {
  peer: string;
  trustedPeer: boolean;
  /** The client's scheme (from a trusted X-Forwarded-Proto, else this hop's). */
  scheme: "http" | "https";
  /** The scheme of the connection to Prox: what Forwarded's proto describes (RFC 7239 §5.4). */
  hopScheme: "http" | "https";
  host: string;
  /** Incoming HTTP version for Via: "1.1", "2", "3". */
  version: string;
  rfc7239: boolean;
}

/**
 * Sets X-Forwarded-For/-Proto/-Host and Via (and optionally RFC 7239 Forwarded). Client-sent
 * values are kept and extended only when the peer is a trusted proxy; otherwise replaced, and any
 * other X-Forwarded-* field, X-Real-IP, X-Original-URL or X-Rewrite-URL removed.
 */
export function setForwardingHeaders(h: HeaderMap, f: ForwardInfo): void {
  const prior = f.trustedPeer ? h.get("x-forwarded-for") : null;
  setKnown(h, "x-forwarded-for", prior ? `${prior}, ${f.peer}` : f.peer);
  if (!f.trustedPeer || !h.has("x-forwarded-proto")) setKnown(h, "x-forwarded-proto", f.scheme);
  if (!f.trustedPeer || !h.has("x-forwarded-host")) {
    if (f.host) setKnown(h, "x-forwarded-host", f.host);
    else h.delete("x-forwarded-host");
  }
  if (!f.trustedPeer) {
    // None of the other X-Forwarded-* a client may send either (-Port, -Prefix, -Ssl, -Scheme…):
    // apps behind Prox build URLs and decide "secure" from them, as from X-Real-IP. Nor the
    // fields some frameworks take for the request path (X-Original-URL, X-Rewrite-URL): a
    // cached answer to one URL would be built from another.
    h.delete("x-real-ip");
    h.delete("x-original-url");
    h.delete("x-rewrite-url");
    let forged: string[] | undefined;
    h.forEach((_, name) => {
      if (name.startsWith("x-forwarded-") && !OURS.has(name)) (forged ??= []).push(name);
    });
    if (forged) { for (const name of forged) h.delete(name); }
  }
  const via = `${f.version} prox`;
  const priorVia = h.get("via");
  setKnown(h, "via", priorVia ? `${priorVia}, ${via}` : via);
  if (f.rfc7239) {
    const entry = forwardedEntry(f);
    const priorFwd = f.trustedPeer ? h.get("forwarded") : null;
    setKnown(h, "forwarded", priorFwd ? `${priorFwd}, ${entry}` : entry);
  } else if (!f.trustedPeer) {
    h.delete("forwarded");
  }
}

/**
 * What a request from a peer that is no trusted proxy never passes on beside the hop-by-hop
 * fields: what Prox sets itself (Host, X-Request-Id, Via, which keeps the client's entries, and the
 * forwarding fields, X-Forwarded-* by prefix), `Expect` (see upstreamFields), and what apps read
 * as the client's address or URL (as setForwardingHeaders).
 */
const UNTRUSTED_DROP: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  "host",
  "x-request-id",
  "via",
  "forwarded",
  "x-real-ip",
  "x-original-url",
  "x-rewrite-url",
  "expect",
]);

/**
 * The upstream request's fields for a client whose peer is not a trusted proxy, built in one pass
 * over the client's: the fields `withoutHopByHop`, `dropUnderscoredNames` (unless
 * `own.underscores`), deleting `Expect`, setting Host (`own.host`), `setForwardingHeaders` and
 * setting X-Request-Id give, with Host first (RFC 9112 §3.2) and Prox's own fields last.
 */
export function untrustedUpstreamFields(
  src: HeaderMap,
  f: ForwardInfo,
  own: { host: string; requestId: string; underscores: boolean },
): HeaderList {
  let drop = UNTRUSTED_DROP;
  // A Via the client's Connection names is the connection's own, not a hop to keep.
  let keepVia = true;
  const named = src.get("connection");
  if (named !== null) {
    for (const n of named.split(",")) {
      const name = n.trim().toLowerCase();
      if (name === "via") keepVia = false;
      // `Connection: keep-alive` (or close) names nothing that is not dropped already.
      else if (name && name !== "close" && !drop.has(name)) {
        if (drop === UNTRUSTED_DROP) drop = new Set(UNTRUSTED_DROP);
        (drop as Set<string>).add(name);
      }
    }
  }
  const out = new HeaderList();
  out.appendChecked("host", own.host);
  let priorVia: string | null = null;
  src.forEach((v, k) => {
    if (drop.has(k) || k.startsWith("x-forwarded-") || (!own.underscores && k.includes("_"))) {
      if (k === "via" && keepVia) priorVia = priorVia === null ? v : `${priorVia}, ${v}`;
      return;
    }
    out.appendChecked(k, v);
  });
  out.appendChecked("x-forwarded-for", f.peer);
  out.appendChecked("x-forwarded-proto", f.scheme);
  if (f.host) out.appendChecked("x-forwarded-host", f.host);
  const via = `${f.version} prox`;
  out.appendChecked("via", priorVia === null ? via : `${priorVia}, ${via}`);
  if (f.rfc7239) out.appendChecked("forwarded", forwardedEntry(f));
  out.appendChecked("x-request-id", own.requestId);
  return out;
}

/** This hop's RFC 7239 Forwarded entry. */
function forwardedEntry(f: ForwardInfo): string {
  const node = f.peer.includes(":") ? `"[${f.peer}]"` : f.peer;
  const hostPart = f.host ? `;host="${f.host.replace(/["\\]/g, "")}"` : "";
  return `for=${node};proto=${f.hopScheme}${hostPart}`;
}

/** The seed's "browser-like" defaults, now opt-in per route; set only when absent. */
export const BROWSER_HEADERS: Readonly<Record<string, string>> = {
  "user-agent":
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
  "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/webp,*/*;q=0.8",
  "accept-language": "en-US,en;q=0.5",
};
