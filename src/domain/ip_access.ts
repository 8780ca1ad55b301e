// IP allow/deny lists (`ip_access`), compiled once per config: IPv4 into a table of address ranges
// (each range the entry that decides it, a binary search per lookup: about 20 steps for a million
// entries, and 8 bytes per range), IPv6 into a binary trie (a walk of at most 128 bits), however
// long the lists. Pure.
//
// Semantics: the most specific entry containing the client wins (longest prefix, as a routing
// table); an address and prefix listed in both `allow` and `deny` is denied. A client that no
// entry contains is allowed when `allow` is empty, else denied. Unlike nginx (first match in the
// order written) the result does not depend on order, so a route's list reads the same wherever
// an entry was added; an nginx list written the usual way (specific entries first) means the same.
// IPv4-mapped IPv6 clients (::ffff:a.b.c.d) and rules are IPv4; `::/0` covers IPv6 only, as in
// nginx; `all` covers everyone.

import { formatIp, isV4, parseIp } from "./ip.ts";

/** What `ip_access` says of one client: the verdict and the entry that decided it (null: none). */
export interface IpVerdict {
  allowed: boolean;
  rule: string | null;
  /** The list file (`allow_file`, `deny_file`) and line the deciding entry came from. */
  file?: string;
  line?: number;
}

/** An entry of the lists: as written in the config, or a line of a list file. */
export type ListItem = string | { text: string; file: string; line: number };

/** A compiled entry: what it says and where it was written (a list file's line). */
type Rule = { allow: boolean; text: string; file?: string; line?: number };

/** The compiled lists: a range table for IPv4, a trie for IPv6. */
export interface IpAccess {
  readonly v4: Ranges;
  readonly v6: Trie;
  /** True when `allow` has entries: a client matching none is refused. */
  readonly defaultDeny: boolean;
  /** The `all` entry (deny when in both lists), null without one: it alone covers any address. */
  readonly all: Rule | null;
}

/**
 * IPv4 addresses from `start[i]` up to `start[i + 1] - 1` (the last up to 255.255.255.255) are
 * decided by `rules[rule[i]]` (-1: no entry contains them). `start[0]` is 0.
 */
interface Ranges {
  start: Uint32Array;
  rule: Int32Array;
  rules: Rule[];
}

/** Node i's children are `zero[i]`/`one[i]` (0: none; the root is 0); `rule[i]` its entry. */
interface Trie {
  zero: number[];
  one: number[];
  /** Index into `rules`, -1 when no entry ends at this node. */
  at: number[];
  rules: Rule[];
}

/** One parsed `allow`/`deny` entry: family, the address bytes of that family and prefix length. */
export interface AccessEntry {
  v4: boolean;
  /** 4 or 16 bytes, masked to `bits`. */
  bytes: Uint8Array;
  bits: number;
  /** True when the written address had bits set beyond the prefix (10.0.0.5/8). */
  hostBits: boolean;
  /** `all`: both families, prefix 0. */
  all: boolean;
}

/**
 * Parses an entry: an address (`10.0.0.5`, `::1`), a CIDR block (`10.0.0.0/8`, `2001:db8::/32`)
 * or `all`. An IPv4-mapped IPv6 entry (`::ffff:10.0.0.0/104`) is the IPv4 block. Null: invalid.
 */
export function parseAccessEntry(text: string): AccessEntry | null {
  // The common case (every line of a large IPv4 feed) without the splits and regexes below.
  const block = v4Block(text);
  if (block >= 0) {
    const bits = block % 64;
    const addr = (block - bits) / 64;
    const m = maskedV4(addr, bits);
    const bytes = new Uint8Array([m >>> 24, (m >>> 16) & 255, (m >>> 8) & 255, m & 255]);
    return { v4: true, bytes, bits, hostBits: m !== addr, all: false };
  }
  const s = text.trim();
  if (s.toLowerCase() === "all") {
    return { v4: false, bytes: new Uint8Array(16), bits: 0, hostBits: false, all: true };
  }
  const slash = s.indexOf("/");
  const ip = slash < 0 ? s : s.slice(0, slash);
  const len = slash < 0 ? undefined : s.slice(slash + 1);
  if (ip.startsWith("[") || ip.includes("%")) return null; // brackets and zones are not CIDR
  const addr = parseIp(ip);
  if (!addr) return null;
  const written4 = !ip.includes(":");
  const max = written4 ? 32 : 128;
  const n = len === undefined ? max : /^\d{1,3}$/.test(len) ? Number(len) : NaN;
  if (!(n >= 0 && n <= max)) return null;
  // A mapped IPv6 block of at least /96 is the IPv4 block; a shorter one stays IPv6.
  const v4 = written4 || (isV4(addr) && n >= 96);
  const bytes = v4 ? addr.slice(12) : addr;
  const bits = v4 && !written4 ? n - 96 : n;
  const masked = mask(bytes, bits);
  const hostBits = masked.some((b, i) => b !== bytes[i]);
  return { v4, bytes: masked, bits, hostBits, all: false };
}

/** The entry as a block with its host bits cleared, for messages (`10.0.0.0/8`). */
export function formatEntry(e: AccessEntry): string {
  if (e.all) return "all";
  return `${e.v4 ? Array.from(e.bytes).join(".") : formatIp(e.bytes)}/${e.bits}`;
}

function mask(bytes: Uint8Array, bits: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    out[i] = bytes[i] & (0xff << (8 - keep));
  }
  return out;
}

function newTrie(): Trie {
  return { zero: [0], one: [0], at: [-1], rules: [] };
}

function insert(t: Trie, e: { bytes: Uint8Array; bits: number }, rule: Trie["rules"][0]): void {
  let node = 0;
  for (let d = 0; d < e.bits; d++) {
    const side = (e.bytes[d >> 3] >> (7 - (d & 7))) & 1 ? t.one : t.zero;
    if (side[node] === 0) {
      side[node] = t.at.length;
      t.zero.push(0);
      t.one.push(0);
      t.at.push(-1);
    }
    node = side[node];
  }
  const prev = t.at[node];
  // Listed twice: deny wins over allow (a deny entry is never weakened by an allow).
  if (prev >= 0 && !t.rules[prev].allow) return;
  t.at[node] = t.rules.length;
  t.rules.push(rule);
}

/** One entry of a list file, or why a line is not one. */
export type FileLine = { line: number; entry: string } | { line: number; problem: string };

/**
 * The entries of an `allow_file` / `deny_file`: one address, CIDR block or `all` per line; `#` or
 * `;` starts a comment (whole line or after an entry: Spamhaus DROP's `1.10.16.0/20 ; SBL256894`,
 * an nginx include's `deny 10.0.0.0/8;`, which reads as `10.0.0.0/8`), blank lines are skipped.
 */
export function listFileLines(text: string): FileLine[] {
  const out: FileLine[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const hash = line.indexOf("#");
    const semi = line.indexOf(";");
    const cut = hash < 0 ? semi : semi < 0 ? hash : Math.min(hash, semi);
    let s = (cut < 0 ? line : line.slice(0, cut)).trim();
    if (s === "") continue;
    // nginx's `allow`/`deny` words (a digit or colon first, as in most feeds, cannot be one).
    const c = s.charCodeAt(0) | 0x20;
    if (c === 0x61 || c === 0x64) s = s.replace(/^(?:allow|deny)\s+/i, "").trim();
    out.push(
      v4Block(s) >= 0 || parseAccessEntry(s)
        ? { line: i + 1, entry: s }
        : { line: i + 1, problem: `Invalid address or CIDR block "${s.slice(0, 60)}"` },
    );
  }
  return out;
}

/**
 * `allow` and `deny` with the entries of `allow_file` and `deny_file` added (`read` gives a
 * file's text; a file it does not have adds nothing, and a line that is no entry is skipped:
 * validate reports both). `allowListed`: an `allow_file` is named, so the lists are an allow
 * list even when its files came up empty (a feed read mid-rewrite must not let everyone in).
 */
export function withListFiles(
  lists: {
    allow: readonly string[];
    deny: readonly string[];
    allow_file?: string | readonly string[];
    deny_file?: string | readonly string[];
  },
  read: (file: string) => string | undefined,
): { allow: ListItem[]; deny: ListItem[]; allowListed: boolean } {
  const from = (files: string | readonly string[] | undefined): ListItem[] =>
    (typeof files === "string" ? [files] : files ?? []).flatMap((file) => {
      const text = read(file);
      if (text === undefined) return [];
      return listFileLines(text).flatMap((l) =>
        "entry" in l ? [{ text: l.entry, file, line: l.line }] : []
      );
    });
  return {
    allow: [...lists.allow, ...from(lists.allow_file)],
    deny: [...lists.deny, ...from(lists.deny_file)],
    allowListed: lists.allow_file !== undefined,
  };
}

/**
 * Compiles `allow` and `deny` (entries that do not parse are skipped: validate reports them).
 * `allowListed`: refuse clients no entry names even with `allow` empty (withListFiles).
 */
export function compileIpAccess(
  lists: { allow: readonly ListItem[]; deny: readonly ListItem[]; allowListed?: boolean },
): IpAccess {
  const v6 = newTrie();
  /** The IPv4 blocks: address × 64 + prefix length, and each one's rule (the same index). */
  const blocks: number[] = [];
  const v4Rules: Rule[] = [];
  let all: IpAccess["all"] = null;
  const add = (item: ListItem, allow: boolean) => {
    const text = typeof item === "string" ? item : item.text;
    // An IPv4 block (most lines of a large feed) without parseAccessEntry's allocations.
    const block = v4Block(text);
    const e = block >= 0 ? null : parseAccessEntry(text);
    if (block < 0 && !e) return;
    const rule: Rule = typeof item === "string"
      ? { allow, text: text.trim() }
      : { allow, text: text.trim(), file: item.file, line: item.line };
    if (e === null) {
      const bits = block % 64;
      blocks.push(maskedV4((block - bits) / 64, bits) * 64 + bits);
      v4Rules.push(rule);
      return;
    }
    if (e.all && (all === null || all.allow)) all = rule;
    if (e.all || e.v4) {
      const b = e.bytes;
      const addr = e.all ? 0 : ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
      blocks.push(addr * 64 + e.bits);
      v4Rules.push(rule);
    }
    if (e.all || !e.v4) insert(v6, e, rule);
  };
  for (const t of lists.allow) add(t, true);
  for (const t of lists.deny) add(t, false);
  return {
    v4: ranges(blocks, v4Rules),
    v6,
    defaultDeny: lists.allow.length > 0 || lists.allowListed === true,
    all,
  };
}

/**
 * The range table of IPv4 blocks (address × 64 + prefix length, masked) and their rules: each
 * address decided by the longest block containing it; a block listed twice by the deny among
 * them, else by the last (as the trie of IPv6 does). CIDR blocks nest or are apart, so a stack of
 * the blocks open at each point gives the ranges in one pass over them sorted.
 */
function ranges(blocks: number[], rules: Rule[]): Ranges {
  // Sorted by address, then the larger block (the shorter prefix) first; equal blocks in the
  // order listed.
  const order = new Uint32Array(blocks.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  order.sort((a, b) => blocks[a] - blocks[b] || a - b);
  const starts: number[] = [0];
  const ruleAt: number[] = [-1];
  /** Puts range [from, …) under `rule`, replacing one that began there, joining one like it. */
  const mark = (from: number, rule: number) => {
    const last = starts.length - 1;
    if (starts[last] === from) {
      ruleAt[last] = rule;
      if (last > 0 && ruleAt[last - 1] === rule) {
        starts.pop();
        ruleAt.pop();
      }
      return;
    }
    if (ruleAt[last] === rule) return;
    starts.push(from);
    ruleAt.push(rule);
  };
  /** The blocks containing the point reached: their ends and rules, outermost first. */
  const openEnd: number[] = [];
  const openRule: number[] = [];
  const close = (before: number) => {
    while (openEnd.length > 0 && openEnd[openEnd.length - 1] < before) {
      const end = openEnd.pop()!;
      openRule.pop();
      if (end < 0xffffffff) mark(end + 1, openRule.length > 0 ? openRule[openRule.length - 1] : -1);
    }
  };
  for (let k = 0; k < order.length; k++) {
    const i = order[k];
    const bits = blocks[i] % 64;
    const start = (blocks[i] - bits) / 64;
    close(start);
    // The same block again: the deny among them decides, else the later.
    const top = openEnd.length - 1;
    const end = start + 2 ** (32 - bits) - 1;
    if (
      top >= 0 && openEnd[top] === end && (blocks[order[k - 1]] === blocks[i])
    ) {
      if (!rules[openRule[top]].allow) continue;
      openRule[top] = i;
      mark(start, i);
      continue;
    }
    openEnd.push(end);
    openRule.push(i);
    mark(start, i);
  }
  close(Infinity);
  return { start: Uint32Array.from(starts), rule: Int32Array.from(ruleAt), rules };
}

/**
 * The verdict for a client address as Prox names it (`clientIp`). An address that does not parse
 * matches only `all`.
 */
export function ipVerdict(access: IpAccess, ip: string): IpVerdict {
  // The common case, a dotted quad, without parseIp's allocations (a few µs per request).
  const quad = dottedQuad(ip);
  if (quad >= 0) return find(access, quad);
  const addr = parseIp(ip);
  if (addr === null) {
    const all = access.all;
    return all ? verdictOf(all) : { allowed: !access.defaultDeny, rule: null };
  }
  return isV4(addr)
    ? find(access, ((addr[12] << 24) | (addr[13] << 16) | (addr[14] << 8) | addr[15]) >>> 0)
    : walk(access, access.v6, { quad: -1, bytes: addr, max: 128 });
}

/** The IPv4 address's range (the last that starts at or before it): its entry decides. */
function find(access: IpAccess, addr: number): IpVerdict {
  const { start, rule, rules } = access.v4;
  let lo = 0;
  let hi = start.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (start[mid] <= addr) lo = mid;
    else hi = mid - 1;
  }
  const r = rule[lo];
  return r < 0 ? { allowed: !access.defaultDeny, rule: null } : verdictOf(rules[r]);
}

/** Follows the address's bits down the trie; the deepest entry passed decides. */
function walk(
  access: IpAccess,
  t: Trie,
  a: { quad: number; bytes: Uint8Array | null; max: number },
): IpVerdict {
  const { quad, bytes } = a;
  let node = 0;
  let best = t.at[0];
  for (let d = 0; d < a.max; d++) {
    const bit = bytes === null ? (quad >>> (31 - d)) & 1 : (bytes[d >> 3] >> (7 - (d & 7))) & 1;
    node = bit ? t.one[node] : t.zero[node];
    if (node === 0) break;
    if (t.at[node] >= 0) best = t.at[node];
  }
  if (best < 0) return { allowed: !access.defaultDeny, rule: null };
  return verdictOf(t.rules[best]);
}

function verdictOf(r: Rule): IpVerdict {
  return r.file === undefined
    ? { allowed: r.allow, rule: r.text }
    : { allowed: r.allow, rule: r.text, file: r.file, line: r.line };
}

/** `a.b.c.d` (decimal, 0-255, no leading zeros but "0") as a 32-bit number, else -1. */
function dottedQuad(s: string): number {
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return -1;
      n = n * 256 + part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // leading zero
      part = part * 10 + c - 48;
      if (++digits > 3 || part > 255) return -1;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return n * 256 + part;
}

/** An IPv4 address (a 32-bit number) with the bits past a `bits`-long prefix cleared. */
function maskedV4(addr: number, bits: number): number {
  return bits === 0 ? 0 : (addr & (0xffffffff << (32 - bits))) >>> 0;
}

/**
 * `a.b.c.d` or `a.b.c.d/n` (decimal parts of up to three digits, 0-255; n 0-32, up to three
 * digits; spaces and tabs around) as address × 64 + n (n 32 without a prefix), else -1: the
 * rest (IPv6, `all`, anything unusual) goes through parseAccessEntry's general path.
 */
function v4Block(s: string): number {
  let i = 0;
  let end = s.length;
  while (i < end && (s.charCodeAt(i) === 32 || s.charCodeAt(i) === 9)) i++;
  while (end > i && (s.charCodeAt(end - 1) === 32 || s.charCodeAt(end - 1) === 9)) end--;
  let addr = 0;
  for (let part = 0; part < 4; part++) {
    if (part > 0) {
      if (i >= end || s.charCodeAt(i) !== 46) return -1;
      i++;
    }
    let n = 0;
    let digits = 0;
    while (i < end && digits < 4) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      n = n * 10 + c - 48;
      digits++;
      i++;
    }
    if (digits === 0 || digits > 3 || n > 255) return -1;
    addr = addr * 256 + n;
  }
  if (i === end) return addr * 64 + 32;
  if (s.charCodeAt(i) !== 47) return -1;
  i++;
  let bits = 0;
  let digits = 0;
  while (i < end) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57 || ++digits > 3) return -1;
    bits = bits * 10 + c - 48;
    i++;
  }
  if (digits === 0 || bits > 32) return -1;
  return addr * 64 + bits;
}
