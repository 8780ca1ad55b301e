// IP address parsing, CIDR matching and prefix grouping. Pure; addresses are 16-byte arrays with
// IPv4 stored as IPv4-mapped IPv6 (::ffff:a.b.c.d) so one code path serves both families.

/** Parses an IPv4 or IPv6 literal (brackets and zone ids allowed) into 16 bytes, or null. */
export function parseIp(text: string): Uint8Array | null {
  let s = text.trim();
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  if (s.includes(":")) return parseV6(s);
  const v4 = parseV4(s);
  if (!v4) return null;
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(v4, 12);
  return out;
}

function parseV4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i])) return null;
    const n = Number(parts[i]);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

function parseV6(s: string): Uint8Array | null {
  const out = new Uint8Array(16);
  let tail: Uint8Array | null = null;
  const lastColon = s.lastIndexOf(":");
  if (s.slice(lastColon + 1).includes(".")) {
    tail = parseV4(s.slice(lastColon + 1));
    if (!tail) return null;
    s = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const head = halves[0] ? halves[0].split(":") : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  if (halves.length === 1 && head.length !== 8) return null;
  if (head.length + rest.length > (halves.length === 2 ? 7 : 8)) return null;
  const groups = [...head, ...Array(8 - head.length - rest.length).fill("0"), ...rest];
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-f]{1,4}$/i.test(groups[i])) return null;
    const n = parseInt(groups[i], 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  }
  if (tail) out.set(tail, 12);
  return out;
}

/** True for an IPv4 (or IPv4-mapped) address. */
export function isV4(addr: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (addr[i] !== 0) return false;
  return addr[10] === 0xff && addr[11] === 0xff;
}

/** A parsed CIDR block; IPv4 prefixes are shifted by 96 bits onto the mapped range. */
export interface Cidr {
  addr: Uint8Array;
  bits: number;
}

/** Parses `10.0.0.0/8`, `::1/128` or a bare address (full length). Returns null when invalid. */
export function parseCidr(text: string): Cidr | null {
  const [ip, len, more] = text.trim().split("/");
  if (more !== undefined) return null; // "10.0.0.0/8/16" is no block, not a /8
  const addr = parseIp(ip);
  if (!addr) return null;
  const v4 = isV4(addr) && !ip.includes(":");
  const max = v4 ? 32 : 128;
  const n = len === undefined ? max : /^\d{1,3}$/.test(len) ? Number(len) : NaN;
  if (!(n >= 0 && n <= max)) return null;
  return { addr: maskTo(addr, v4 ? n + 96 : n), bits: v4 ? n + 96 : n };
}

function maskTo(addr: Uint8Array, bits: number): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    out[i] = addr[i] & (0xff << (8 - keep));
  }
  return out;
}

/**
 * True when `addr` lies inside `cidr`. An IPv6 block shorter than /96 never holds an IPv4 address
 * (stored mapped, ::ffff:a.b.c.d): `::/0` is every IPv6 client, as in nginx and ip_access, and
 * `::ffff:10.0.0.0/8` (the IPv6 block ::/8) must not take in every IPv4 client.
 */
export function cidrContains(cidr: Cidr, addr: Uint8Array): boolean {
  if (cidr.bits < 96 && isV4(addr)) return false;
  const masked = maskTo(addr, cidr.bits);
  for (let i = 0; i < 16; i++) if (masked[i] !== cidr.addr[i]) return false;
  return true;
}

/** Formats 16 bytes back to text: dotted IPv4 for mapped addresses, compressed IPv6 otherwise. */
export function formatIp(addr: Uint8Array): string {
  if (isV4(addr)) return `${addr[12]}.${addr[13]}.${addr[14]}.${addr[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((addr[i * 2] << 8) | addr[i * 2 + 1]);
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/**
 * A grouping key for rate limiting: IPv4 as is, IPv6 truncated to `v6Prefix` bits (a /64 is one
 * subscriber). Unparseable input is returned unchanged.
 */
export function ipGroupKey(ip: string, v6Prefix = 64): string {
  const addr = parseIp(ip);
  if (!addr) return ip;
  if (isV4(addr)) return formatIp(addr);
  return `${formatIp(maskTo(addr, v6Prefix))}/${v6Prefix}`;
}
