// IP allow/deny lists (`ip_access`), compiled once per config into two binary tries (IPv4, IPv6)
// so that a lookup walks at most 32 or 128 bits, however long the lists. Pure.
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

/** The compiled lists: one trie per family. */
export interface IpAccess {
  readonly v4: Trie;
  readonly v6: Trie;
  /** True when `allow` has entries: a client matching none is refused. */
  readonly defaultDeny: boolean;
  /** The `all` entry (deny when in both lists), null without one: it alone covers any address. */
  readonly all: Rule | null;
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
    const cut = lines[i].search(/[#;]/);
    let s = (cut < 0 ? lines[i] : lines[i].slice(0, cut)).trim();
    if (s === "") continue;
    s = s.replace(/^(?:allow|deny)\s+/i, "").trim();
    out.push(
      parseAccessEntry(s)
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
  const v4 = newTrie();
  const v6 = newTrie();
  let all: IpAccess["all"] = null;
  const add = (item: ListItem, allow: boolean) => {
    const text = typeof item === "string" ? item : item.text;
    const e = parseAccessEntry(text);
    if (!e) return;
    const rule: Rule = typeof item === "string"
      ? { allow, text: text.trim() }
      : { allow, text: text.trim(), file: item.file, line: item.line };
    if (e.all && (all === null || all.allow)) all = rule;
    if (e.all || e.v4) insert(v4, { bytes: e.bytes.slice(0, 4), bits: e.bits }, rule);
    if (e.all || !e.v4) insert(v6, e, rule);
  };
  for (const t of lists.allow) add(t, true);
  for (const t of lists.deny) add(t, false);
  return { v4, v6, defaultDeny: lists.allow.length > 0 || lists.allowListed === true, all };
}

/**
 * The verdict for a client address as Prox names it (`clientIp`). An address that does not parse
 * matches only `all`.
 */
export function ipVerdict(access: IpAccess, ip: string): IpVerdict {
  // The common case, a dotted quad, without parseIp's allocations (a few µs per request).
  const quad = dottedQuad(ip);
  if (quad >= 0) return walk(access, access.v4, { quad, bytes: null, max: 32 });
  const addr = parseIp(ip);
  if (addr === null) {
    const all = access.all;
    return all ? verdictOf(all) : { allowed: !access.defaultDeny, rule: null };
  }
  return isV4(addr)
    ? walk(access, access.v4, { quad: -1, bytes: addr.subarray(12), max: 32 })
    : walk(access, access.v6, { quad: -1, bytes: addr, max: 128 });
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
