// The PROXY protocol header Prox sends first on an upstream connection (`proxy_protocol: v1|v2`,
// HAProxy's send-proxy / send-proxy-v2), so that an upstream such as nginx `listen … proxy_protocol`
// sees the client's address. Pure: addresses in, bytes out.
// Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt (§2.1 text, §2.2 binary).

import { formatIp, isV4, parseIp } from "./ip.ts";

/** The header versions an upstream route may ask for. */
export type ProxyProtocolVersion = "v1" | "v2";

/** The client side and Prox's side of the client's connection. */
export interface ProxiedAddresses {
  source: { ip: string; port: number };
  destination: { ip: string; port: number };
}

/** The 12 bytes every v2 header starts with (§2.2). */
const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

const encoder = new TextEncoder();

/**
 * The header for a connection made on behalf of a client (`addrs`), or for one Prox makes on its
 * own behalf (`null`: a health probe), which is v1 `UNKNOWN` or the v2 LOCAL command. Addresses of
 * different families (an IPv6 client a balancer named, on Prox's IPv4 address) go as IPv6, the
 * IPv4 one mapped (::ffff:a.b.c.d), as HAProxy sends them; one that is not an IP gives `UNKNOWN`
 * (v1) or AF_UNSPEC (v2), which tell the upstream to use the connection's own addresses.
 */
export function proxyHeader(
  version: ProxyProtocolVersion,
  addrs: ProxiedAddresses | null,
): Uint8Array {
  const src = addrs && parseIp(addrs.source.ip);
  const dst = addrs && parseIp(addrs.destination.ip);
  const family = !src || !dst ? 0 : isV4(src) && isV4(dst) ? 4 : 6;
  if (version === "v1") {
    if (family === 0) return encoder.encode("PROXY UNKNOWN\r\n");
    // §2.1: addresses in their shortest text form; IPv4 in dotted quads for TCP4, mapped in TCP6.
    const text = (a: Uint8Array) => family === 6 && isV4(a) ? `::ffff:${formatIp(a)}` : formatIp(a);
    return encoder.encode(
      `PROXY TCP${family} ${text(src!)} ${text(dst!)} ${addrs!.source.port} ${
        addrs!.destination.port
      }\r\n`,
    );
  }
  const length = family === 4 ? 12 : family === 6 ? 36 : 0;
  const out = new Uint8Array(16 + length);
  out.set(V2_SIGNATURE);
  out[12] = addrs ? 0x21 : 0x20; // version 2; PROXY (1) or LOCAL (0)
  out[13] = family === 4 ? 0x11 : family === 6 ? 0x21 : 0x00; // AF_INET/AF_INET6 + STREAM
  out[14] = length >> 8;
  out[15] = length & 0xff;
  if (family === 0) return out;
  const size = family === 4 ? 4 : 16;
  out.set(src!.subarray(16 - size), 16);
  out.set(dst!.subarray(16 - size), 16 + size);
  const ports = 16 + 2 * size;
  out[ports] = addrs!.source.port >> 8;
  out[ports + 1] = addrs!.source.port & 0xff;
  out[ports + 2] = addrs!.destination.port >> 8;
  out[ports + 3] = addrs!.destination.port & 0xff;
  return out;
}
