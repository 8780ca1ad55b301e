// `discover` on load_balance routes: looks up the A and AAAA records of each route's
// `discover.dns` host (or the SRV records of `discover.srv`, then their hosts' addresses), at
// start-up and every `refresh`, and says when what it found changed (the
// server then rebuilds the routes' targets: src/config/discovered.ts). A lookup that fails keeps
// what it found before (a DNS blip must not empty a route; a failed AAAA keeps the IPv6 addresses
// while the A answers are followed). Deno's resolver reports SERVFAIL and REFUSED as it reports
// NXDOMAIN ("no records found": NoRecords), so a name without any address keeps what was found
// too; "no records" for one family while the other has addresses is that family's empty answer.

import type { Config } from "../config/schema.ts";
import { DISCOVER_RETRY_MS, foundName } from "../config/discovered.ts";
import type { Discovered, Found } from "../config/discovered.ts";
import { parseResolver } from "../config/validate_route.ts";
import { timerDelay } from "../config/duration.ts";
import type { Logger } from "../ports.ts";

/**
 * A/AAAA lookup of `name`, on `server` or the system's resolvers: `[]` is an answer known to have
 * no records; NoRecords is thrown for "none found", which may be a server failure.
 */
export type AddressLookup = (
  name: string,
  type: "A" | "AAAA",
  server: { ipAddr: string; port: number } | undefined,
  signal: AbortSignal,
) => Promise<string[]>;

/** SRV lookup of `name` (RFC 2782), as AddressLookup. */
export type SrvLookup = (
  name: string,
  server: { ipAddr: string; port: number } | undefined,
  signal: AbortSignal,
) => Promise<Deno.SrvRecord[]>;

/**
 * No records found: NXDOMAIN or an empty answer, or SERVFAIL or REFUSED, which Deno's resolver
 * (hickory) reports alike, so a route cannot tell a gone service from a resolver's bad minute.
 */
export class NoRecords extends Error {
  constructor(name: string, type: string) {
    super(`No ${type} records found for "${name}" (NXDOMAIN, or SERVFAIL or REFUSED alike)`);
  }
}

const LOOKUP_TIMEOUT_MS = 5_000;

const denoLookup: AddressLookup = async (name, type, server, signal) => {
  try {
    return await Deno.resolveDns(name, type, {
      ...(server ? { nameServer: server } : {}),
      signal: AbortSignal.any([signal, AbortSignal.timeout(LOOKUP_TIMEOUT_MS)]),
    });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new NoRecords(name, type);
    throw err;
  }
};

const denoSrv: SrvLookup = async (name, server, signal) => {
  try {
    return await Deno.resolveDns(name, "SRV", {
      ...(server ? { nameServer: server } : {}),
      signal: AbortSignal.any([signal, AbortSignal.timeout(LOOKUP_TIMEOUT_MS)]),
    });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new NoRecords(name, "SRV");
    throw err;
  }
};

/**
 * An SRV record's weight (0–65535) as a target's (1–1000), relative to the others of its priority
 * (RFC 2782): past 1000 scaled down in proportion (capped, 2000 and 6000 were equal), and a weight
 * 0 beside weighted records is 1 against theirs scaled up to 1000, "a very small chance of being
 * selected" (counted as 1, it took as much as a weight 1 beside it). All 0: equal shares.
 */
export function srvWeight(weight: number, level: { max: number; zero: boolean }): number {
  if (weight === 0 || level.max === 0) return 1;
  const scale = level.zero || level.max > 1000 ? 1000 / level.max : 1;
  return Math.max(1, Math.min(1000, Math.round(weight * scale)));
}

type DiscoverConfig = NonNullable<
  Extract<Config["routes"][string], { type: "load_balance" }>["discover"]
>;

interface Loop {
  /** The route and its `discover`. */
  id: string;
  d: DiscoverConfig;
  timer?: number;
  stopped: boolean;
  /** Aborts a lookup under way when the loop stops. */
  abort: AbortController;
  /** The first lookup (start-up and reloads wait for it). */
  first: Promise<void>;
}

export interface Discovery {
  /** Route id → the addresses found last for `config`'s `discover` (sorted, `max_targets`). */
  foundFor(config: Config): Discovered;
  /**
   * Starts a lookup loop for each `discover` of `config` not running yet and waits for their
   * first lookups; stops none (the serving config may still need them: see retain).
   */
  prepare(config: Config): Promise<void>;
  /** Stops the loops `config` (the one now serving) does not need. */
  retain(config: Config): void;
  close(): void;
}

/** One loop per route and `discover` setting: a reload that changes it starts another. */
const loopKey = (id: string, d: DiscoverConfig) => `${id}\n${JSON.stringify(d)}`;

/** The `discover` of each load_balance route of `config` that has one. */
function discoversOf(config: Config): [string, DiscoverConfig][] {
  return Object.entries(config.routes).flatMap(([id, r]) =>
    r.type === "load_balance" && r.discover ? [[id, r.discover] as [string, DiscoverConfig]] : []
  );
}

/** Compares IPv4 before IPv6, then numerically (10.0.0.2 before 10.0.0.10). */
function byAddress(a: string, b: string): number {
  const v6 = Number(a.includes(":")) - Number(b.includes(":"));
  if (v6 !== 0) return v6;
  const pa = a.split(/[.:]/), pb = b.split(/[.:]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const base = a.includes(":") ? 16 : 10;
    const d = (parseInt(pa[i] ?? "", base) || 0) - (parseInt(pb[i] ?? "", base) || 0);
    if (d !== 0) return d;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

export function createDiscovery(o: {
  logger: Logger;
  /** Called after the addresses of a route changed (not for the first lookups `prepare` awaits). */
  onChange: () => void;
  lookup?: AddressLookup;
  srvLookup?: SrvLookup;
}): Discovery {
  const lookup = o.lookup ?? denoLookup;
  const srvLookup = o.srvLookup ?? denoSrv;
  /** By loop key: the targets found last. */
  const found = new Map<string, readonly Found[]>();
  const loops = new Map<string, Loop>();
  /** Loop keys whose last lookup failed (logged once until one succeeds). */
  const failing = new Set<string>();
  /**
   * By loop key, with `hold`: each target an answer held, and when one last did (bounded: at most
   * 4 × max_targets per key, the longest unseen dropped first).
   */
  const seen = new Map<string, Map<string, { t: Found; at: number }>>();
  /** `targets` with those answers held within `d.hold` before (and remembers what they hold). */
  const held = (key: string, d: DiscoverConfig, targets: Found[]): Found[] => {
    if (!(d.hold > 0)) return targets; // (0, or absent from a config built by hand)
    const now = Date.now();
    let m = seen.get(key);
    if (!m) seen.set(key, m = new Map());
    for (const t of targets) {
      const n = foundName(t);
      m.delete(n); // re-inserted: the map stays in order of when each was last seen
      m.set(n, { t, at: now });
    }
    const here = new Set(targets.map(foundName));
    const out = [...targets];
    for (const [n, e] of m) {
      if (now - e.at > d.hold) m.delete(n);
      else if (!here.has(n)) out.push(e.t);
    }
    for (const n of m.keys()) {
      if (m.size <= 4 * d.max_targets) break;
      m.delete(n);
    }
    return out;
  };

  /** A name's A and AAAA addresses, with the lookups that failed (and whether A, AAAA did). */
  const addresses = async (name: string, d: DiscoverConfig, signal: AbortSignal) => {
    const server = d.resolver ? parseResolver(d.resolver) ?? undefined : undefined;
    const answers = await Promise.allSettled([
      lookup(name, "A", server, signal),
      lookup(name, "AAAA", server, signal),
    ]);
    // "No records" for one family while the other answered is that family's empty answer (an
    // IPv4-only service); for both, or beside a failure, it may be SERVFAIL: a failure.
    const answered = answers.some((a) => a.status === "fulfilled");
    const failedOf = (a: PromiseSettledResult<string[]>) =>
      a.status === "rejected" && !(answered && a.reason instanceof NoRecords);
    return {
      found: answers.flatMap((a) => a.status === "fulfilled" ? a.value : []),
      failed: answers.flatMap((a) => failedOf(a) ? [(a as PromiseRejectedResult).reason] : []),
      v4Failed: failedOf(answers[0]),
      v6Failed: failedOf(answers[1]),
    };
  };
  /** Whether `f`'s address is of the family whose lookup failed. */
  const ofFailed = (f: Found, a: { v4Failed: boolean; v6Failed: boolean }) =>
    f.address.includes(":") ? a.v6Failed : a.v4Failed;

  /**
   * What `d` finds now: targets, the lookups that failed (none found when all did), and which
   * targets found before those failures leave unanswered (`keep`: they stay).
   */
  const lookUp = async (d: DiscoverConfig, signal: AbortSignal) => {
    if (d.dns !== undefined) {
      const name = new URL(d.dns).hostname.replace(/^\[|\]$/g, "");
      const r = await addresses(name, d, signal);
      return {
        name,
        targets: r.found.map((address): Found => ({ address })),
        failed: r.failed,
        total: r.failed.length === 2,
        keep: (f: Found) => ofFailed(f, r),
        more: false,
      };
    }
    const name = d.srv!;
    const server = d.resolver ? parseResolver(d.resolver) ?? undefined : undefined;
    let records: Deno.SrvRecord[];
    try {
      records = await srvLookup(name, server, signal);
    } catch (err) {
      return { name, targets: [], failed: [err], total: true, keep: () => true, more: false };
    }
    // RFC 2782: the lowest priority first; the others stand in (backups). Each host looked up
    // once, at most max_targets of them: the lowest priorities' first, then by name (and port),
    // so that the same ones are kept whatever order the answer came in (DNS servers rotate it).
    const lowest = Math.min(...records.map((r) => r.priority));
    // Weights are relative within a priority: its highest, and whether it has a weight 0.
    const levels = new Map<number, { max: number; zero: boolean }>();
    for (const r of records) {
      const l = levels.get(r.priority) ?? { max: 0, zero: false };
      levels.set(r.priority, { max: Math.max(l.max, r.weight), zero: l.zero || r.weight === 0 });
    }
    const ranked = [...records].sort((a, b) =>
      a.priority - b.priority || (a.target < b.target ? -1 : a.target > b.target ? 1 : 0) ||
      a.port - b.port
    );
    const named = [...new Set(ranked.map((r) => r.target.replace(/\.$/, "")))]
      .filter((h) => h !== "");
    const hosts = named.slice(0, d.max_targets);
    // Each host's first max_targets addresses (in address order): a hostile or broken DNS
    // answering thousands of records for thousands of addresses must not make millions of targets.
    const looked = new Map(
      await Promise.all(hosts.map(async (h) => {
        const a = await addresses(h, d, signal);
        const found = [...new Set(a.found)].sort(byAddress).slice(0, d.max_targets);
        return [h, { ...a, found }] as const;
      })),
    );
    const targets: Found[] = [];
    const names = new Set<string>();
    const failed: unknown[] = [];
    const failedHosts = new Set<string>();
    let more = named.length > hosts.length;
    /** Ports of records whose host's A (4) or AAAA (6) lookup failed. */
    const unanswered = { 4: new Set<number>(), 6: new Set<number>() };
    for (const r of ranked) {
      const host = r.target.replace(/\.$/, "");
      const a = looked.get(host);
      if (!a) continue;
      if (a.failed.length > 0 && !failedHosts.has(host)) {
        failedHosts.add(host);
        failed.push(...a.failed);
      }
      if (a.v4Failed) unanswered[4].add(r.port);
      if (a.v6Failed) unanswered[6].add(r.port);
      // Taken in rank order (primaries first) up to max_targets.
      for (const address of a.found) {
        const t: Found = {
          address,
          port: r.port,
          weight: srvWeight(r.weight, levels.get(r.priority)!),
          backup: r.priority !== lowest,
        };
        const n = foundName(t);
        if (names.has(n)) continue;
        if (names.size >= d.max_targets) {
          more = true;
          break;
        }
        names.add(n);
        targets.push(t);
      }
    }
    const keep = (f: Found) => unanswered[f.address.includes(":") ? 6 : 4].has(f.port ?? -1);
    return { name, targets, failed, total: false, keep, more };
  };

  /** One lookup for route `id`; true when what it found changed. */
  const once = async (id: string, d: DiscoverConfig, key: string, loop: Loop): Promise<boolean> => {
    const { name, targets, failed, total, keep, more } = await lookUp(d, loop.abort.signal);
    if (loop.stopped) return false;
    const had = found.get(key);
    if (failed.length > 0) {
      if (!failing.has(key)) {
        failing.add(key);
        const reason = failed[0] as { message?: string } | undefined;
        o.logger.warn("DNS lookup for discover failed; the route keeps the targets it had", {
          route: id,
          name,
          targets: had?.length ?? 0,
          error: String(reason?.message ?? reason),
        });
      }
      if (total) return false;
      // What did answer is taken; what the failed lookups found before stays (a resolver that
      // fails AAAA must not stop the route following its A records).
      targets.push(...(had ?? []).filter(keep));
    } else if (failing.delete(key)) {
      o.logger.info("DNS lookup for discover answers again", { route: id, name });
    }
    // One target per address and port (a host named by two records counts once).
    const unique = new Map(held(key, d, targets).map((t) => [foundName(t), t]));
    const sorted = [...unique.values()].sort((a, b) =>
      byAddress(a.address, b.address) || (a.port ?? 0) - (b.port ?? 0)
    );
    if ((sorted.length > d.max_targets || more) && had?.length !== d.max_targets) {
      o.logger.warn("discover found more targets than max_targets; the rest are left out", {
        route: id,
        name,
        found: more ? `more than ${d.max_targets}` : sorted.length,
        max_targets: d.max_targets,
      });
    }
    // Past max_targets, backups go first, then the addresses only `hold` keeps (replicas replaced
    // by higher addresses must not leave the live ones out for the gone ones), then the highest
    // addresses; the rest keep their order.
    const answered = new Set(targets.map(foundName));
    const rank = (t: Found) => (t.backup ? 2 : 0) + (answered.has(foundName(t)) ? 0 : 1);
    const kept = new Set(
      [...sorted].sort((a, b) => rank(a) - rank(b)).slice(0, d.max_targets),
    );
    const next = sorted.filter((t) => kept.has(t));
    if (had !== undefined && JSON.stringify(had) === JSON.stringify(next)) return false;
    found.set(key, next);
    const names = (l: readonly Found[]) => l.map(foundName);
    const before = new Set(names(had ?? []));
    const now = new Set(names(next));
    o.logger.info("Discovered targets changed", {
      route: id,
      name,
      targets: next.length,
      added: [...now].filter((n) => !before.has(n)),
      removed: [...before].filter((n) => !now.has(n)),
    });
    return true;
  };

  const start = (id: string, d: DiscoverConfig, key: string): Loop => {
    const loop: Loop = {
      id,
      d,
      stopped: false,
      abort: new AbortController(),
      first: Promise.resolve(),
    };
    // A reload changing only refresh, max_targets or resolver looks up the same name: until that
    // answers, what the route's running loop found stands (a reload during a DNS outage must not
    // empty the route), and so do the addresses it holds (`hold`: dropped at the first answer
    // that left them out, they came and went at each reload).
    for (const [k, l] of loops) {
      const had = found.get(k);
      if (l.id === id && l.d.dns === d.dns && l.d.srv === d.srv && had) {
        found.set(key, had.slice(0, d.max_targets));
        const held = seen.get(k);
        if (held) seen.set(key, new Map(held));
        break;
      }
    }
    const failed = (err: unknown) =>
      o.logger.error("discover lookup failed", { route: id, error: String(err) });
    const schedule = () => {
      if (loop.stopped) return;
      // A refresh past setTimeout's longest delay waits that long (it would fire at once).
      const delay = !found.has(key) && failing.has(key)
        ? Math.min(DISCOVER_RETRY_MS, d.refresh)
        : timerDelay(d.refresh);
      const timer = setTimeout(() => {
        void once(id, d, key, loop).then((changed) => changed && !loop.stopped && o.onChange())
          .catch(failed).finally(schedule);
      }, delay);
      Deno.unrefTimer(timer as unknown as number);
      loop.timer = timer as unknown as number;
    };
    loop.first = once(id, d, key, loop).then(() => {}, failed).finally(schedule);
    return loop;
  };

  const stop = (key: string) => {
    const loop = loops.get(key);
    if (!loop) return;
    loop.stopped = true;
    clearTimeout(loop.timer);
    loop.abort.abort();
    loops.delete(key);
    found.delete(key);
    seen.delete(key);
    failing.delete(key);
  };

  return {
    foundFor(config) {
      const out = new Map<string, readonly Found[]>();
      for (const [id, d] of discoversOf(config)) {
        const f = found.get(loopKey(id, d));
        if (f) out.set(id, f);
      }
      return out;
    },
    async prepare(config) {
      const firsts: Promise<void>[] = [];
      for (const [id, d] of discoversOf(config)) {
        const key = loopKey(id, d);
        if (loops.has(key)) continue;
        const loop = start(id, d, key);
        loops.set(key, loop);
        firsts.push(loop.first);
      }
      await Promise.all(firsts);
    },
    retain(config) {
      const keep = new Set(discoversOf(config).map(([id, d]) => loopKey(id, d)));
      for (const key of [...loops.keys()]) if (!keep.has(key)) stop(key);
    },
    close() {
      for (const key of [...loops.keys()]) stop(key);
    },
  };
}
