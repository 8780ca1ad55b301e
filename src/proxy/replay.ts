// `prox replay`: which logged requests a candidate config would send somewhere else. Each JSON
// access line becomes a request that `prox explain` decides (the live pipeline's own steps, nothing
// sent); its outcome is compared with what the line says happened, or with another config's
// outcome. The tally keeps counts, a bounded number of change groups and a few samples per group.

import { explainRequest, NOT_AN_UPGRADE } from "./explain.ts";
import type { ExplainDeps, ExplainRequest, Explanation } from "./explain.ts";
import type { Snapshot } from "./snapshot.ts";
import { ReplayTally } from "./replay_tally.ts";
import type { Change } from "./replay_tally.ts";

/** What an access line says about one request (the `AccessRecord` fields replay reads). */
export interface LoggedRequest {
  method: string;
  host: string;
  /** Normalized path, without the query string. */
  path: string;
  /** The query string without `?` ("" when none, or when the line predates the `query` field). */
  query: string;
  tls: boolean;
  clientIp: string;
  status: number;
  route: string | null;
  /** The target that got the request, or null when Prox answered itself (or from its cache). */
  upstream: string | null;
  authUser?: string;
  cache?: string;
}

/** Parses one line: the logged request, or why it is not one. Blank lines give null. */
export function parseAccessLine(
  line: string,
): LoggedRequest | { skip: string; logLine?: true } | null {
  const text = line.trim();
  if (text === "") return null;
  // A line a log shipper prefixed (journald's "date host prox[pid]: ") still holds the object.
  const brace = text.indexOf("{");
  let v: unknown;
  try {
    v = JSON.parse(brace > 0 ? text.slice(brace) : text);
  } catch {
    return { skip: "not JSON (replay reads log.access_log: json lines)" };
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return { skip: "not a JSON object" };
  const r = v as Record<string, unknown>;
  if (r.msg !== undefined && r.msg !== "access") {
    return {
      skip: `a log line ("${String(r.msg).slice(0, 60)}"), not an access record`,
      logLine: true,
    };
  }
  const str = (k: string) => typeof r[k] === "string";
  const orNull = (k: string) => r[k] === null || str(k);
  if (
    !str("method") || !str("host") || !str("path") || typeof r.status !== "number" ||
    !orNull("route") || !orNull("upstream")
  ) {
    return { skip: "not an access record (method, host, path, status, route, upstream)" };
  }
  if (r.method === "-" || r.host === "" || !String(r.path).startsWith("/")) {
    return { skip: "a request that was not routed (refused before routing, or OPTIONS *)" };
  }
  const out: LoggedRequest = {
    method: r.method as string,
    host: r.host as string,
    path: r.path as string,
    query: str("query") ? r.query as string : "",
    tls: r.tls === true,
    clientIp: str("clientIp") ? r.clientIp as string : "192.0.2.1",
    status: r.status,
    route: r.route as string | null,
    upstream: r.upstream as string | null,
  };
  if (str("authUser")) out.authUser = r.authUser as string;
  if (str("cache")) out.cache = r.cache as string;
  return out;
}

/**
 * The request an access line stands for. What the log lacks is filled in as the line implies: a
 * logged `authUser` sends Basic credentials for that user (explain checks no password); a 101, or
 * a ws:// or wss:// upstream (only a handshake reaches one), a WebSocket handshake; no other header.
 */
export function requestOf(rec: LoggedRequest): ExplainRequest {
  const headers: [string, string][] = [["host", rec.host]];
  if (rec.authUser !== undefined) {
    const bytes = new TextEncoder().encode(`${rec.authUser}:`);
    headers.push(["authorization", `Basic ${btoa(String.fromCharCode(...bytes))}`]);
  }
  if (isHandshake(rec)) {
    headers.push(
      ["connection", "Upgrade"],
      ["upgrade", "websocket"],
      ["sec-websocket-version", "13"],
      ["sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="],
    );
  }
  return {
    method: rec.method,
    url: `${rec.tls ? "https" : "http"}://${rec.host}${pathAndQuery(rec)}`,
    headers,
    clientIp: rec.clientIp,
    // Tokens are not logged either: a request Prox did not refuse with 401 had a valid one.
    ...(rec.status === 401 ? {} : { assumedToken: { user: rec.authUser } }),
  };
}

/** Whether the logged request was a WebSocket handshake, as far as the line tells. */
function isHandshake(rec: LoggedRequest): boolean {
  return rec.status === 101 || /^wss?:/i.test(rec.upstream ?? "");
}

/** Where a config sends a request, split into the part shared by a route's requests and its own. */
export interface Outcome {
  route: string | null;
  /** The route type's action, or "error" when Prox answers before any route action. */
  action: string;
  /** The status of Prox's own answer; null when an upstream answers. */
  status: number | null;
  /** The destination without the request's path: the targets, or Prox's own answer. */
  dest: string;
  /** This request's upstream URL, Location or file ("" for other answers). */
  detail: string;
  /** The upstream targets, or null when Prox answers itself. */
  targets: string[] | null;
  /** No route matches: Prox answers 404. */
  notFound: boolean;
}

/** The outcome explain reports (targets as a set: the pick depends on health and state). */
export function outcomeOf(e: Explanation): Outcome {
  const base = {
    route: e.route,
    action: e.action,
    notFound: e.route === null && e.answer?.status === 404,
  };
  const u = e.upstream;
  if (u && e.notes.includes(NOT_AN_UPGRADE)) {
    return { ...base, dest: "400 not a WebSocket upgrade", detail: "", targets: null, status: 400 };
  }
  if (u) {
    const targets = u.targets.map((t) => t.url);
    return {
      ...base,
      dest: `${u.websocket ? "websocket" : "upstream"} ${
        u.targets.map((t) => t.backup ? `${t.url} (backup)` : t.url).join(" | ")
      }`,
      detail: u.url,
      targets,
      status: null,
    };
  }
  const a = e.answer ?? { status: 500 };
  const what = e.action === "redirect" || e.action === "static" ? `${e.action} ` : "";
  return {
    ...base,
    dest: `${what}${a.status}${!what && a.message ? ` ${a.message}` : ""}`,
    detail: a.location ?? a.file ?? "",
    targets: null,
    status: a.status,
  };
}

/** Statuses Prox gives from run-time state (limits, health, timeouts, a client gone). */
const RUNTIME = new Set([429, 499, 502, 503, 504]);

const routeLabel = (r: string | null) => r ?? "(no route)";

/**
 * Compares the logged outcome with the candidate's: a different route; a target the route no
 * longer has; an answer from Prox where an upstream answered; an upstream where Prox had answered
 * itself, or another status of its own (unless from state: 429, 503, …, its cache, the auth
 * service of a `forward_auth` route, or a static file, whose status depends on the files and on
 * conditional headers). Null when unchanged.
 */
export function changeFromLog(
  rec: LoggedRequest,
  now: Outcome,
  o: { authService?: boolean } = {},
): Change | null {
  const cached = rec.cache === "hit" || rec.cache === "stale";
  const was = rec.upstream !== null
    ? `upstream ${rec.upstream}`
    : cached
    ? `cache ${rec.status}`
    : `${rec.status} from Prox`;
  let changed = rec.route !== now.route;
  if (!changed && rec.upstream !== null) {
    changed = now.targets === null || !now.targets.includes(rec.upstream);
  } else if (!changed && !cached && !RUNTIME.has(rec.status)) {
    // Behind forward_auth, the auth service's refusal is the answer: it may refuse again.
    changed = now.targets !== null
      ? !o.authService
      : now.action !== "static" && now.status !== rec.status;
  }
  if (!changed) return null;
  return {
    from: `${routeLabel(rec.route)}: ${was}`,
    to: `${routeLabel(now.route)}: ${now.dest}`,
    sample: sampleOf(rec) + (now.detail ? ` → ${now.detail}` : ""),
  };
}

/** Compares two configs' outcomes (route, destination and this request's URL). */
export function changeBetween(rec: LoggedRequest, old: Outcome, now: Outcome): Change | null {
  if (old.route === now.route && old.dest === now.dest && old.detail === now.detail) return null;
  const from = `${routeLabel(old.route)}: ${old.dest}`;
  let to = `${routeLabel(now.route)}: ${now.dest}`;
  if (from === to) to += old.targets ? " (other upstream URL)" : " (other Location or file)";
  const detail = old.detail === now.detail
    ? now.detail
    : `${old.detail || "-"} → ${now.detail || "-"}`;
  return { from, to, sample: sampleOf(rec) + (detail ? `: ${detail}` : "") };
}

function sampleOf(rec: LoggedRequest): string {
  return `${rec.method} ${rec.tls ? "https" : "http"}://${rec.host}${pathAndQuery(rec)}`;
}

function pathAndQuery(rec: LoggedRequest): string {
  return rec.query === "" ? rec.path : `${rec.path}?${rec.query}`;
}

/**
 * Per route, what its decision depends on that the access log does not hold. Only these
 * routes' outcomes are uncertain: routing reads the host, path, method, query and client, which
 * are logged, and other headers only in a conditional route's `match`.
 */
export function routeDoubts(snapshot: Snapshot): Map<string, string[]> {
  const doubts = new Map<string, string[]>();
  // Conditional routes whose match reads a header the log does not hold (it holds Host), by
  // prefix: they and the routes of their prefix decide on what is not replayed.
  const byHeader = new Map<string, string[]>();
  for (const e of snapshot.router.entries) {
    const m = e.value.config.match;
    const reads = (Array.isArray(m) ? m : m ? [m] : []).some((c) =>
      c.has_header !== undefined && c.has_header.name.toLowerCase() !== "host"
    );
    if (reads) byHeader.set(e.prefix, [...(byHeader.get(e.prefix) ?? []), e.key]);
  }
  for (const { value: r, prefix } of snapshot.router.entries) {
    const d: string[] = [];
    const matched = byHeader.get(prefix);
    if (matched) {
      d.push(
        `${MATCH_DOUBT} ${matched.join(", ")} may have held for a logged request ` +
          "and not for its replay, or the other way",
      );
    }
    if (r.basicAuth) {
      d.push(
        "basic_auth: credentials are not logged; a logged authUser counts as signed in, " +
          "any other request as sending none (401)",
      );
    }
    if (r.jwtAuth) {
      d.push(
        "jwt_auth: tokens are not logged; a request logged with another status than 401 counts " +
          "as carrying a valid token, a 401 as carrying none",
      );
    }
    if (r.forwardAuth) {
      d.push("forward_auth: the auth service decides at run time; taken as letting it through");
    }
    if (r.config.type === "websocket") {
      d.push(
        "websocket: the Upgrade header is not logged; a logged 101 or ws:// upstream counts " +
          "as a handshake, any other request as not one (400)",
      );
    }
    if (d.length > 0) doubts.set(r.id, d);
  }
  return doubts;
}

/** The start of the doubt of routes chosen by a `match` on headers (MATCH_DOUBT). */
const MATCH_DOUBT = "match: request headers are not logged (but Host); replayed without them,";

/** What replay assumes for every request (said in its report). */
export const ASSUMPTIONS = [
  "health is not known offline: every target counts as up",
  "no rate limit is reached (limiter state is not replayed)",
  "a line without a query field (written before Prox logged one) is replayed without a query",
  "static routes look their files up on this machine",
];

/** Bound of the outcome cache: a log repeats the same requests, each is explained once. */
const CACHE_MAX = 10_000;

/**
 * Decides logged requests under a candidate (and optionally a current) config and tallies the
 * changes. Deterministic: no health, no limiter state, no randomness (explain's seeded pick).
 */
export class Replayer {
  readonly tally: ReplayTally;
  readonly #candidate: ExplainDeps;
  readonly #against: ExplainDeps | undefined;
  readonly #doubts: Map<string, string[]>;
  readonly #againstDoubts: Map<string, string[]>;
  /** The candidate's routes with `forward_auth`. */
  readonly #authRoutes: Set<string>;
  readonly #cache = new Map<string, [Outcome, Outcome | undefined]>();

  constructor(
    candidate: ExplainDeps,
    o: { against?: ExplainDeps; maxGroups?: number; samples?: number } = {},
  ) {
    this.#candidate = candidate;
    this.#against = o.against;
    this.#doubts = routeDoubts(candidate.snapshot);
    this.#authRoutes = new Set(
      candidate.snapshot.router.entries.filter((e) => e.value.forwardAuth).map((e) => e.value.id),
    );
    this.#againstDoubts = o.against ? routeDoubts(o.against.snapshot) : new Map();
    this.tally = new ReplayTally(o);
  }

  /** Replays one access line; `where` (file:line) names it when it is skipped. */
  async line(text: string, where: string): Promise<void> {
    const rec = parseAccessLine(text);
    if (rec === null) return;
    if ("skip" in rec) return this.tally.skip(where, rec.skip, rec.logLine);
    let now: Outcome, old: Outcome | undefined;
    try {
      [now, old] = await this.#outcomes(rec);
    } catch (e) {
      return this.tally.unreplayed(where, `cannot replay: ${e instanceof Error ? e.message : e}`);
    }
    const change = old ? changeBetween(rec, old, now) : changeFromLog(rec, now, {
      authService: now.route !== null && this.#authRoutes.has(now.route),
    });
    // The doubts of each route that decided the request (candidate and, with --against, current).
    const doubts = new Map<string, [string, string]>();
    const note = (route: string | null, from: Map<string, string[]>) => {
      for (const reason of (route === null ? undefined : from.get(route)) ?? []) {
        doubts.set(`${route}\n${reason}`, [route!, reason]);
      }
    };
    note(now.route, this.#doubts);
    if (old) note(old.route, this.#againstDoubts);
    // The logged route's match on headers decided the logged request, wherever the replay goes.
    const logged = rec.route === null ? undefined : this.#doubts.get(rec.route);
    for (const reason of logged ?? []) {
      if (reason.startsWith(MATCH_DOUBT)) {
        doubts.set(`${rec.route}\n${reason}`, [rec.route!, reason]);
      }
    }
    const notFound = now.notFound && (old ? !old.notFound : rec.route !== null);
    this.tally.add(change, { notFound, doubts: [...doubts.values()] });
  }

  async #outcomes(rec: LoggedRequest): Promise<[Outcome, Outcome | undefined]> {
    const key = [
      rec.method,
      rec.tls,
      rec.host,
      rec.path,
      rec.query,
      rec.clientIp,
      rec.authUser,
      isHandshake(rec),
    ]
      .join("\n");
    const hit = this.#cache.get(key);
    if (hit) return hit;
    const req = requestOf(rec);
    const now = outcomeOf(await explainRequest(req, this.#candidate));
    const old = this.#against ? outcomeOf(await explainRequest(req, this.#against)) : undefined;
    if (this.#cache.size >= CACHE_MAX) this.#cache.clear();
    this.#cache.set(key, [now, old]);
    return [now, old];
  }
}
