// Reading the PROXY protocol header a load balancer sends first on a connection to Prox
// (`accept_proxy_protocol`; nginx `listen … proxy_protocol`, HAProxy `accept-proxy`). Pure: bytes
// in, the client's address out. Both versions are read, told apart by their first bytes.
// Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt (§2.1 text, §2.2 binary).

import { formatIp, parseIp } from "./ip.ts";

/** The 12 bytes every v2 header starts with (§2.2). */
const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

/** A v1 line is at most 107 bytes with its CRLF (§2.1). */
export const V1_MAX = 107;

/**
 * The most a v2 header may take here: 16 bytes, the addresses (216 for AF_UNIX) and TLVs. Load
 * balancers add a few (AWS: the VPC endpoint id, Azure: the link id; tens of bytes), and a sender
 * that says 64 KiB is refused rather than waited for.
 */
export const V2_MAX = 4096;

/** What the start of a connection says. */
export type ProxyHeaderRead =
  /** Not enough bytes yet to tell (read more, up to V1_MAX / V2_MAX). */
  | { kind: "incomplete" }
  /** Not a PROXY header, or a broken one: the connection is closed. */
  | { kind: "bad"; reason: string }
  /**
   * A header of `size` bytes. `source` is the client: null for the v2 LOCAL command, v1 UNKNOWN,
   * or an address family that is no IP (the connection's own address stands then, §2.1, §2.2).
   */
  | { kind: "header"; size: number; source: { hostname: string; port: number } | null };

const INCOMPLETE: ProxyHeaderRead = { kind: "incomplete" };

/** Reads a PROXY header (either version) at the start of buf[0, end). */
export function readProxyHeader(buf: Uint8Array, end: number): ProxyHeaderRead {
  if (end === 0) return INCOMPLETE;
  if (buf[0] === 0x0d) return readV2(buf, end);
  if (buf[0] === 0x50) return readV1(buf, end);
  return { kind: "bad", reason: "no PROXY protocol header" };
}

function readV1(buf: Uint8Array, end: number): ProxyHeaderRead {
  const prefix = "PROXY ";
  for (let i = 0; i < prefix.length && i < end; i++) {
    if (buf[i] !== prefix.charCodeAt(i)) return { kind: "bad", reason: "no PROXY protocol header" };
  }
  let lf = -1;
  for (let i = 0; i < end && i < V1_MAX; i++) {
    if (buf[i] === 0x0a) {
      lf = i;
      break;
    }
  }
  if (lf < 0) {
    return end >= V1_MAX ? { kind: "bad", reason: "v1 header longer than 107 bytes" } : INCOMPLETE;
  }
  if (lf === 0 || buf[lf - 1] !== 0x0d) return { kind: "bad", reason: "v1 header without CRLF" };
  let line = "";
  for (let i = 0; i < lf - 1; i++) line += String.fromCharCode(buf[i]);
  const size = lf + 1;
  const parts = line.split(" ");
  // "PROXY UNKNOWN" may carry anything after it, to be ignored (§2.1).
  if (parts[1] === "UNKNOWN") return { kind: "header", size, source: null };
  if (parts.length !== 6 || (parts[1] !== "TCP4" && parts[1] !== "TCP6")) {
    return { kind: "bad", reason: "v1 header is neither TCP4, TCP6 nor UNKNOWN" };
  }
  const v4 = parts[1] === "TCP4";
  const src = v1Address(parts[2], v4);
  const dst = v1Address(parts[3], v4);
  const sport = v1Port(parts[4]);
  const dport = v1Port(parts[5]);
  if (src === null || dst === null || sport < 0 || dport < 0) {
    return { kind: "bad", reason: "v1 header has a malformed address or port" };
  }
  return { kind: "header", size, source: { hostname: formatIp(src), port: sport } };
}

/** An IPv4 octet in decimal without leading zeros (§2.1: no confusion with octal). */
const OCTET = "(0|[1-9]\\d{0,2})";
const V1_IPV4 = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
/** The dotted tail of an IPv6 literal (::ffff:1.2.3.4), held to the same rule. */
const V1_IPV6_TAIL = new RegExp(`:${OCTET}(\\.${OCTET}){3}$`);

/** An address of the family the line names: dotted quads for TCP4, an IPv6 literal for TCP6. */
function v1Address(text: string, v4: boolean): Uint8Array | null {
  if (v4 ? !V1_IPV4.test(text) : !/^[0-9A-Fa-f:.]+$/.test(text)) return null;
  if (!v4 && (!text.includes(":") || (text.includes(".") && !V1_IPV6_TAIL.test(text)))) {
    return null;
  }
  return parseIp(text);
}

/** A port in decimal without leading zeros (§2.1), 0–65535; else -1. */
function v1Port(text: string): number {
  if (!/^(0|[1-9]\d{0,4})$/.test(text)) return -1;
  const n = Number(text);
  return n <= 65535 ? n : -1;
}

function readV2(buf: Uint8Array, end: number): ProxyHeaderRead {
  for (let i = 0; i < V2_SIGNATURE.length && i < end; i++) {
    if (buf[i] !== V2_SIGNATURE[i]) return { kind: "bad", reason: "no PROXY protocol header" };
  }
  if (end < 16) return INCOMPLETE;
  const verCmd = buf[12];
  if (verCmd >> 4 !== 2) return { kind: "bad", reason: "v2 header of another version" };
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return { kind: "bad", reason: "v2 header with an unknown command" };
  const len = (buf[14] << 8) | buf[15];
  const size = 16 + len;
  if (size > V2_MAX) return { kind: "bad", reason: `v2 header longer than ${V2_MAX} bytes` };
  if (end < size) return INCOMPLETE;
  // LOCAL: the sender's own connection (a health check); its addresses are ignored (§2.2).
  if (cmd === 0) return { kind: "header", size, source: null };
  const family = buf[13] >> 4;
  const transport = buf[13] & 0x0f;
  // The listed values only: UNSPEC (0x00), or a family with STREAM or DGRAM; others (0x10, 0x01,
  // …) must be rejected (§2.2).
  if (transport > 2 || family > 3 || (family === 0) !== (transport === 0)) {
    return { kind: "bad", reason: "v2 header with an unknown address family or transport" };
  }
  // AF_UNSPEC and AF_UNIX say nothing of an IP client, nor does a UDP flow of this TCP connection
  // (HAProxy keeps the connection's address for it too): the connection's own address stands.
  if ((family !== 1 && family !== 2) || transport !== 1) {
    return { kind: "header", size, source: null };
  }
  const n = family === 1 ? 4 : 16;
  if (len < 2 * n + 4) return { kind: "bad", reason: "v2 header too short for its addresses" };
  const addr = new Uint8Array(16);
  if (n === 4) {
    addr[10] = addr[11] = 0xff;
    addr.set(buf.subarray(16, 20), 12);
  } else addr.set(buf.subarray(16, 32));
  const at = 16 + 2 * n;
  return {
    kind: "header",
    size,
    source: { hostname: formatIp(addr), port: (buf[at] << 8) | buf[at + 1] },
  };
}
