// Routes compiled once per config; a match is a lookup per path segment boundary, longest prefix
// first, so matching is O(path length) whatever the number of routes.

import { normalizeEscapes } from "./rewrite.ts";

/** A route as the router sees it: where it came from and what it matches. */
export interface RouteEntry<T, R = unknown> {
  /** The key as written in the config (`/api`, `example.com/api`, `/api#canary`). */
  key: string;
  /** Normalized prefix: starts with `/`, no trailing slash except for `/` itself. */
  prefix: string;
  /** Lower-case host patterns (`example.com`, `*.example.com`); empty = any host. */
  hosts: string[];
  /**
   * A conditional route's `match`: the route takes a request only when it holds. Among routes of
   * one prefix and host rank, one whose match holds comes before one without (the first written
   * of several); when none holds and none is unconditional, a shorter prefix takes the request.
   */
  when?: (request: R) => boolean;
  value: T;
}

/** A compiled router. */
export interface Router<T, R = unknown> {
  /** `request` is what conditional routes look at; without it none of them matches. */
  match(host: string, path: string, request?: R): RouteEntry<T, R> | undefined;
  /**
   * Every route a request for `host` and `path` may be routed to, whatever else it carries: at
   * each prefix from the longest, the unconditional route that would answer, then the
   * conditional ones that could beat it, down to the first prefix with an unconditional route.
   */
  candidates(host: string, path: string): RouteEntry<T, R>[];
  readonly entries: readonly RouteEntry<T, R>[];
}

/**
 * Splits a route key into host and prefix: `example.com/api` → [example.com, /api]; the name of a
 * conditional route (`/api#canary`) is not part of its prefix.
 */
export function parseRouteKey(key: string): { host?: string; prefix: string } {
  const hash = key.indexOf("#");
  if (hash >= 0) key = key.slice(0, hash);
  if (key.startsWith("/")) return { prefix: normalizePrefix(key) };
  const slash = key.indexOf("/");
  const host = (slash < 0 ? key : key.slice(0, slash)).toLowerCase();
  return { host, prefix: normalizePrefix(slash < 0 ? "/" : key.slice(slash)) };
}

/**
 * `/api/` → `/api`, `//a//b` → `/a/b`, `` → `/`; characters a request path arrives with
 * percent-encoded are encoded the same way (`/café` → `/caf%C3%A9`), or the route could never match.
 */
export function normalizePrefix(p: string): string {
  const parts = p.split("/").filter((s) => s !== "");
  const joined = "/" + parts.join("/");
  const encoded = /[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]/.test(joined)
    ? new URL("http://h" + joined).pathname
    : joined;
  // As request paths are (`/%61pi` → `/api`, `%c3` → `%C3`).
  return encoded.includes("%") ? normalizeEscapes(encoded) : encoded;
}

/**
 * The path without its segments' parameters (`/api/admin;x=1/y` → `/api/admin/y`): the path as
 * Tomcat, Jetty and Spring read it (RFC 3986 §3.3 leaves `;` to the server).
 */
export function withoutParams(path: string): string {
  return path.replace(/;[^/]*/g, "");
}

/**
 * Strips a port and a trailing dot and lower-cases a Host header value; an IPv6 address in the
 * compressed form route hosts are written in (`[0:0::1]` is `[::1]`, RFC 5952 as URL parsing
 * writes it).
 */
export function hostOnly(hostHeader: string): string {
  let h = hostHeader.trim().toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    if (end < 0) return h;
    h = h.slice(0, end + 1);
    try {
      return new URL(`http://${h}`).host;
    } catch {
      return h; // no address: compared as it came, so it matches no route's
    }
  }
  const colon = h.lastIndexOf(":");
  if (colon >= 0) h = h.slice(0, colon);
  return h.endsWith(".") ? h.slice(0, -1) : h;
}

/**
 * What a wildcard may stand for: DNS name characters. A Host may also hold `,;=()'` (RFC 3986
 * reg-name), and `evil.com,x.example.com` must not pass as a subdomain: X-Forwarded-Host carries
 * it upstream, where Express and others take the first list element as the host.
 */
const DNS_NAME = /^[a-z0-9_.-]+$/;

/** 2 = exact host, 1 = wildcard, 0 = any host, -1 = no match. */
function hostScore(patterns: string[], host: string): number {
  if (patterns.length === 0) return 0;
  let best = -1;
  for (const p of patterns) {
    if (p === host && !p.startsWith("*.")) return 2;
    if (
      p.startsWith("*.") && host.endsWith(p.slice(1)) && host.length > p.length - 1 &&
      DNS_NAME.test(host)
    ) best = 1;
  }
  return best;
}

/**
 * Whether any route takes requests for a Host (or request-target authority) value: routes given
 * by their host patterns (`[]`: every host), ranked as `match` ranks them. For the plain-HTTP
 * listener, which redirects only the hosts HTTPS serves.
 */
export function hostTaken(
  routeHosts: readonly (readonly string[])[],
): (hostHeader: string) => boolean {
  if (routeHosts.some((h) => h.length === 0)) return () => true;
  const patterns = routeHosts.flat().map((h) => h.toLowerCase().replace(/\.$/, ""));
  return (hostHeader) => hostScore(patterns, hostOnly(hostHeader)) >= 0;
}

/**
 * Compiles route entries. Longest prefix on a segment boundary wins (`/api` matches `/api`,
 * `/api/` and `/api/x`, never `/apix`); among equal prefixes an exact host beats a wildcard,
 * which beats a route without hosts.
 */
export function compileRouter<T, R = unknown>(entries: RouteEntry<T, R>[]): Router<T, R> {
  const byPrefix = new Map<string, RouteEntry<T, R>[]>();
  for (const e of entries) {
    const list = byPrefix.get(e.prefix) ?? [];
    // As hostOnly reads requests: "Example.com." is example.com (else it never matched).
    list.push({ ...e, hosts: e.hosts.map((h) => h.toLowerCase().replace(/\.$/, "")) });
    byPrefix.set(e.prefix, list);
  }
  const pick = (list: RouteEntry<T, R>[] | undefined, host: string, request: R | undefined) => {
    if (!list) return undefined;
    let best: RouteEntry<T, R> | undefined;
    let bestScore = -1;
    /** Whether `best` is a conditional route whose match held: it beats others of its rank. */
    let bestHeld = false;
    for (const e of list) {
      const s = hostScore(e.hosts, host);
      if (e.when === undefined) {
        if (s > bestScore) {
          best = e;
          bestScore = s;
          bestHeld = false;
        }
      } else if (s >= 0 && (s > bestScore || (s === bestScore && !bestHeld))) {
        if (request === undefined || !e.when(request)) continue;
        best = e;
        bestScore = s;
        bestHeld = true;
      }
    }
    return bestScore >= 0 ? best : undefined;
  };
  // No prefix is longer than this: a longer path is tried from its last `/` within it. Trying
  // every `/` of a 60 KB path of 30,000 segments took 2 s (each try slices and hashes).
  let longest = 1;
  for (const p of byPrefix.keys()) longest = Math.max(longest, p.length);
  // Without host patterns every route takes any host: the Host is not even looked at.
  const hosted = entries.some((e) => e.hosts.length > 0);
  return {
    entries,
    match(hostHeader: string, path: string, request?: R) {
      const host = hosted ? hostOnly(hostHeader) : "";
      // Try the whole path, then each shorter prefix ending before a `/`.
      let end = path.length <= longest + 1 ? path.length : path.lastIndexOf("/", longest + 1);
      while (end > 0) {
        const candidate = path.slice(0, end);
        const trimmed = candidate.length > 1 && candidate.endsWith("/")
          ? candidate.slice(0, -1)
          : candidate;
        const hit = pick(byPrefix.get(trimmed), host, request);
        if (hit) return hit;
        end = path.lastIndexOf("/", end - 1);
        if (end === 0) break;
      }
      return pick(byPrefix.get("/"), host, request);
    },
    candidates(hostHeader: string, path: string) {
      const host = hosted ? hostOnly(hostHeader) : "";
      const out: RouteEntry<T, R>[] = [];
      // The prefixes match() tries, in its order (not on the hot path: a generator is fine).
      const prefixes = function* () {
        let end = path.length <= longest + 1 ? path.length : path.lastIndexOf("/", longest + 1);
        while (end > 0) {
          const c = path.slice(0, end);
          yield c.length > 1 && c.endsWith("/") ? c.slice(0, -1) : c;
          end = path.lastIndexOf("/", end - 1);
        }
        yield "/";
      };
      const seen = new Set<string>();
      for (const prefix of prefixes()) {
        const list = byPrefix.get(prefix);
        if (!list || seen.has(prefix)) continue;
        seen.add(prefix);
        // As pick() ranks them: a conditional route of the unconditional one's rank or above.
        const plain = pick(list, host, undefined);
        const floor = plain ? hostScore(plain.hosts, host) : 0;
        if (plain) out.push(plain);
        for (const e of list) {
          if (e.when !== undefined && hostScore(e.hosts, host) >= floor) out.push(e);
        }
        if (plain) break;
      }
      return out;
    },
  };
}

/** Why one route did or did not take a request (`prox explain`). */
export interface RouteVerdict {
  key: string;
  matched: boolean;
  reason: string;
}

/**
 * Explains a match: `winner` is what `match()` returned (the live decision, not recomputed), and
 * every other entry gets the reason it lost, from the same rules: a prefix that is not a segment
 * prefix of the path, a host pattern that does not fit, a shorter prefix, a less specific host.
 */
export function explainMatch<T, R>(
  entries: readonly RouteEntry<T, R>[],
  o: { host: string; path: string; winner: RouteEntry<T, R> | undefined; request?: R },
): RouteVerdict[] {
  const host = hostOnly(o.host);
  const kinds = ["any host", "a wildcard host", "the exact host"];
  const w = o.winner;
  const wScore = w ? hostScore(normalHosts(w.hosts), host) : -1;
  return entries.map((e) => {
    const score = hostScore(normalHosts(e.hosts), host);
    const onPath = e.prefix === "/" || o.path === e.prefix || o.path.startsWith(e.prefix + "/");
    if (w && e.key === w.key) {
      const by = e.hosts.length > 0 ? ` and ${kinds[score]} (${e.hosts.join(", ")})` : "";
      const held = e.when ? "; its match holds" : "";
      return {
        key: e.key,
        matched: true,
        reason: `longest matching prefix ${e.prefix}${by}${held}`,
      };
    }
    let reason: string;
    if (!onPath) reason = `prefix ${e.prefix} does not match path ${o.path}`;
    else if (score < 0) reason = `host ${host} is not one of ${e.hosts.join(", ")}`;
    else if (e.when && (o.request === undefined || !e.when(o.request))) {
      reason = "its match does not hold for this request";
    } else if (w && w.prefix === e.prefix && wScore > score) {
      reason = `${kinds[wScore]} of ${w.key} beats ${kinds[score]}`;
    } else if (e.when && w?.when && w.prefix === e.prefix) {
      reason = `${w.key} comes first and its match holds too`;
    } else if (w?.when && w.prefix === e.prefix) {
      reason = `${w.key}'s match holds: a route with match comes before one without`;
    } else if (w && w.prefix.length > e.prefix.length) {
      reason = `prefix ${e.prefix} is shorter than ${w.prefix}`;
    } else if (w) reason = `${kinds[wScore]} of ${w.key} beats ${kinds[score]}`;
    else reason = "not chosen";
    return { key: e.key, matched: false, reason };
  });
}

function normalHosts(hosts: string[]): string[] {
  return hosts.map((h) => h.toLowerCase().replace(/\.$/, ""));
}
