// `prox explain`: where a request would go, without sending anything upstream. Every decision is
// made by the live pipeline's own steps (identify, admit, router, limiter keys, pool and selector,
// upstream URL and header building, redirect and static actions); this file only calls them on a
// made-up request and reports what they said. Nothing here runs on the live request path.

import { bandwidthText } from "../domain/bandwidth.ts";
import { originHost, originName } from "../domain/upstream_origin.ts";
import { explainMatch } from "../domain/router.ts";
import type { RouteVerdict } from "../domain/router.ts";
import { toProxyError } from "../domain/errors.ts";
import { noopMetrics } from "../ports.ts";
import { redactSecrets } from "../config/secret_names.ts";
import type { ClientInfo, Clock, FileStore, Logger } from "../ports.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import type { Snapshot } from "./snapshot.ts";
import type { UpstreamRegistry } from "./state.ts";
import { createUpstreamRegistry } from "./state.ts";
import { admit, identify, paramRefusal } from "./pipeline.ts";
import { errorResponse, OWN_ERROR } from "./respond.ts";
import type { OwnError } from "./respond.ts";
import { pageFor } from "./error_pages.ts";
import { clientKeys, isExempt } from "./filters/rate_limit.ts";
import type { CompiledForwardAuth } from "./filters/forward_auth.ts";
import { forbidden, verdictText } from "./filters/ip_access.ts";
import { unauthorized } from "./filters/basic_auth.ts";
import { answerPreflight, corsNote } from "./filters/cors.ts";
import { isPreflight } from "../domain/cors.ts";
import type { CompiledBasicAuth } from "./filters/basic_auth.ts";
import { checkJwtAuth, findToken, jwtRefusal } from "./filters/jwt_auth.ts";
import type { CompiledJwtAuth } from "./filters/jwt_auth.ts";
import { parseBasicAuthorization } from "../domain/basic_auth.ts";
import { ipVerdict } from "../domain/ip_access.ts";
import type { IpAccess } from "../domain/ip_access.ts";
import { buildPool } from "./pool.ts";
import { choose, hashKey, stickyIndex } from "./forward.ts";
import { clientAddresses, requestHeaderRule, targetOf, upstreamHeaders } from "./actions/proxy.ts";
import { applyHeaderRules, placeholderValues } from "./filters/rules.ts";
import { cacheNote } from "./cache_request.ts";
import { redirectAction } from "./actions/redirect.ts";
import { respondAction } from "./actions/respond.ts";
import { staticAction } from "./actions/static.ts";
import { handshakeHeaders, isWebSocketUpgrade, toWebSocketUrl } from "./actions/websocket.ts";

/** The request to explain. */
export interface ExplainRequest {
  method: string;
  /** Absolute URL: its scheme says whether the request came over TLS. */
  url: string;
  headers?: [string, string][];
  /** The TCP peer (before `trusted_proxies`); default 192.0.2.1 (a documentation address). */
  clientIp?: string;
  /**
   * The request carried a valid bearer token that is not at hand (replay: tokens are not logged):
   * jwt_auth lets it through unchecked, with this user (`user_claim`) when given.
   */
  assumedToken?: { user?: string };
}

/** What explain reads: a snapshot, files (static routes) and, over the admin API, live health. */
export interface ExplainDeps {
  snapshot: Snapshot;
  files: FileStore;
  clock: Clock;
  logger: Logger;
  /** The live upstream registry; without one, health is unknown and every target counts as up. */
  registry?: UpstreamRegistry;
}

/** One upstream target as the balancer sees it. */
export interface ExplainedTarget {
  url: string;
  backup: boolean;
  /** Available per live health, or null when health is not known (offline). */
  available: boolean | null;
}

/** The report. */
export interface Explanation {
  request: { method: string; host: string; path: string; query: string; clientIp: string };
  routes: RouteVerdict[];
  /** The route that takes the request, or null. */
  route: string | null;
  /** The route type's action, or "error" when Prox answers before any route action. */
  action: string;
  /** Prox's own answer, when it answers without an upstream (error, redirect, static). */
  answer?: {
    status: number;
    message?: string;
    location?: string;
    file?: string;
    /** The `error_pages` page(s) sent instead of the message: files, or "inline". */
    page?: string;
  };
  upstream?: {
    policy: string;
    targets: ExplainedTarget[];
    /** The target a first attempt would use (seeded: the first pick of a fresh selector). */
    pick: string | null;
    pickReason: string;
    /** The request line's target at the picked (else first) upstream, as a full URL. */
    url: string;
    websocket: boolean;
  };
  /** Request headers the upstream would get, as a diff against the client's. */
  requestHeaders?: {
    added: [string, string][];
    changed: [string, string, string][];
    removed: string[];
  };
  /** The route's response header rules (their conditions are checked on the real response). */
  responseRules: string[];
  /** `key`: the first of `keys`, the keys the request counts against (two for `k=a&k=b`). */
  rateLimits: {
    name: string;
    policy: string;
    by: string;
    key: string | null;
    keys: string[];
    exempt: boolean;
  }[];
  notes: string[];
}

/** The note on a request to a websocket route that is not a handshake (answered 400 live). */
export const NOT_AN_UPGRADE = "Not a WebSocket upgrade: this route answers 400";

/** The request id a dry run gets (a live request gets a new one). */
export const DRY_RUN_ID = "explain-000000";

/** Explains `input` against `deps.snapshot`; sends nothing upstream and counts nothing. */
export async function explainRequest(
  input: ExplainRequest,
  deps: ExplainDeps,
): Promise<Explanation> {
  const url = new URL(input.url);
  const headers = new Headers(input.headers ?? []);
  // As a client sends it (HTTP/1.1): a Host field naming the URL's authority. A Host given as a
  // header wins, as it does on a live listener, which builds the request URL from it.
  const hostField = headers.get("host");
  if (hostField === null) headers.set("host", url.host);
  else {
    try {
      url.host = hostField;
    } catch {
      // Left as it is: identify() answers 400 for a Host that is not a host.
    }
  }
  let req: Request;
  try {
    req = new Request(url, { method: input.method, headers });
  } catch {
    // CONNECT and TRACE, which Fetch refuses to make but a server receives (and Prox refuses).
    req = new Request(url, { headers });
    Object.defineProperty(req, "method", { value: input.method.toUpperCase() });
  }
  const info: ClientInfo = {
    remoteAddr: { hostname: input.clientIp ?? "192.0.2.1", port: 50000 },
    localPort: Number(url.port) || (url.protocol === "https:" ? 443 : 80),
    protocol: "http/1.1",
    tls: url.protocol === "https:",
  };
  const pdeps = pipelineDeps(deps);
  const ctx = identify(req, info, pdeps, () => DRY_RUN_ID);
  const out: Explanation = {
    request: { method: req.method, host: ctx.host, path: ctx.path, query: ctx.query, clientIp: "" },
    routes: [],
    route: null,
    action: "error",
    responseRules: [],
    rateLimits: [],
    notes: [],
  };
  out.request.clientIp = ctx.clientIp;
  let refused: Response | undefined;
  try {
    refused = admit(ctx);
  } catch (err) {
    refused = errorResponse(toProxyError(err, "").kind, ctx.requestId);
  }
  out.request.path = ctx.path;
  if (refused) return await answered(out, refused, ctx);

  const entries = ctx.snapshot.router.entries;
  const match = ctx.snapshot.router.match(ctx.host, ctx.path, ctx);
  out.routes = explainMatch(entries, {
    host: ctx.host,
    path: ctx.path,
    winner: match,
    request: ctx,
  });
  const hidden = paramRefusal(ctx, match);
  if (hidden) return await answered(out, hidden, ctx);
  if (!match) {
    if (!admitted(out, ctx, ctx.snapshot.ipAccess)) {
      return await answered(out, forbidden(ctx), ctx);
    }
    return await answered(out, errorResponse("not_found", ctx.requestId), ctx);
  }
  const route = match.value;
  ctx.route = route;
  out.route = route.id;
  const cfg = route.config;
  out.action = cfg.type;
  if (!admitted(out, ctx, route.ipAccess)) return await answered(out, forbidden(ctx), ctx);
  if (route.clientCert) {
    // No certificate is at hand here, as no token is for jwt_auth.
    out.notes.push(
      "client_cert: a request without a client certificate the rule admits gets 403; taken as admitted",
    );
  }
  if (route.cors) {
    out.notes.push(corsNote(ctx, route.cors));
    if (isPreflight(req.method, req.headers)) {
      return await answered(out, answerPreflight(ctx, pdeps, route.cors), ctx);
    }
  }
  if (route.basicAuth) {
    const refused = authNote(out, ctx, route.basicAuth);
    if (refused) return await answered(out, refused, ctx);
  }
  if (route.jwtAuth) {
    const refused = await jwtNote(out, ctx, {
      auth: route.jwtAuth,
      deps,
      assumed: input.assumedToken,
    });
    if (refused) return await answered(out, refused, ctx);
  }

  for (const limit of route.rateLimits) {
    const keys = clientKeys(limit, ctx);
    out.rateLimits.push({
      name: limit.name,
      policy: limit.policyField,
      by: limit.config.by,
      key: keys[0] ?? null,
      keys,
      exempt: limit.exempt.length > 0 && isExempt(limit.exempt, ctx.clientIp),
    });
  }
  if (route.concurrency) {
    const c = route.concurrency.config;
    // A cookie or query key sent twice holds a slot of each of its two values.
    const keys = clientKeys(route.concurrency, ctx);
    const key = keys.length === 0 ? undefined : keys.join(" and ");
    const exempt = route.concurrency.exempt.length > 0 &&
      isExempt(route.concurrency.exempt, ctx.clientIp);
    out.notes.push(
      exempt
        ? "concurrency_limit: this client address is exempt"
        : key === undefined
        ? `concurrency_limit: no ${c.by} key (on_missing_key: ${c.on_missing_key})`
        : `concurrency_limit: at most ${c.max} requests in progress at once for key ${key}` +
          ` (by ${c.by}; past it ${c.status_code}${c.shadow ? ", shadow: logged only" : ""})`,
    );
  }
  if (route.forwardAuth) out.notes.push(forwardAuthNote(route.forwardAuth, req.method));
  if ("response_headers" in cfg && cfg.response_headers) {
    const r = cfg.response_headers;
    for (const [k, v] of Object.entries({ ...r.add, ...r.set })) {
      out.responseRules.push(`set ${k}: ${v}`);
    }
    for (const [k, v] of Object.entries(r.append ?? {})) {
      out.responseRules.push(`append ${k}: ${v}`);
    }
    for (const k of r.remove ?? []) out.responseRules.push(`remove ${k}`);
    if (r.condition) out.responseRules.push(`when ${JSON.stringify(r.condition)}`);
  }

  if (route.compress) {
    const c = route.compress;
    out.notes.push(
      `Responses of ${c.minLength} bytes or more of a compressible type are compressed ` +
        `(${c.codings.join(", ")}, as Accept-Encoding allows)`,
    );
  }

  if (route.bandwidth) {
    out.notes.push(
      `bandwidth: each answer's body goes to the client at most ${
        bandwidthText(route.bandwidth)
      } (${SCOPE_TEXT[route.bandwidth.per]})`,
    );
  }

  if (route.cache && (cfg.type === "proxy" || cfg.type === "load_balance")) {
    out.notes.push(cacheNote(ctx, pdeps, { route: cfg, policy: route.cache }));
  }

  switch (cfg.type) {
    case "redirect":
      return await answered(out, redirectAction(ctx, cfg), ctx);
    case "respond":
      return await answered(out, respondAction(ctx, cfg, route.rules.ownBody), ctx);
    case "static":
      return await staticAnswer(out, ctx, { deps: pdeps, route: cfg });
    case "websocket":
    case "proxy":
    case "load_balance": {
      const ws = cfg.type === "websocket" || isWebSocketUpgrade(req);
      if (cfg.type === "websocket" && !isWebSocketUpgrade(req)) {
        out.notes.push(NOT_AN_UPGRADE);
      }
      const targets = cfg.type === "websocket" ? [cfg.target] : route.targets;
      let pick: { url: string | null; why: string } = { url: targets[0], why: "only target" };
      // A websocket route's one target: drained or ejected (live only), no upgrade reaches it.
      if (cfg.type !== "websocket" || deps.registry) {
        pick = pickTarget(ctx, deps, out);
      }
      const chosen = pick.url ?? targets[0];
      if (chosen === undefined && cfg.type === "load_balance" && cfg.discover) {
        // Found by DNS, and none is known (none found, or not looked up: `prox explain`).
        const d = cfg.discover;
        out.notes.push(
          `No target known: the targets come from DNS (discover ${d.dns ?? d.srv}); until a ` +
            `lookup finds one, requests get 503 with Retry-After ${Math.ceil(d.refresh / 1000)}` +
            " (prox explain does not look up DNS; the admin API's /explain shows the live ones)",
        );
        out.answer = { status: 503 };
        return out;
      }
      const to = targetOf(ctx, cfg, chosen);
      const wire = ws ? toWebSocketUrl(to.origin.href) : to.origin;
      const origin = wire.protocol === "unix:"
        ? `${originName(wire)}:`
        : `${wire.protocol}//${wire.host}`;
      out.upstream = {
        policy: cfg.type === "websocket" ? "websocket" : out.upstream?.policy ?? "websocket",
        targets: out.upstream?.targets ?? [{ url: targets[0], backup: false, available: null }],
        pick: pick.url,
        pickReason: pick.why,
        url: origin + to.path,
        websocket: ws,
      };
      let sent: Iterable<[string, string]>;
      if (ws) sent = handshakeHeaders(ctx, cfg, { logger: deps.logger });
      else {
        const h = upstreamHeaders(ctx, cfg, to.origin);
        const rule = requestHeaderRule(ctx);
        if (rule) {
          const values = placeholderValues(ctx);
          applyHeaderRules(rule, h, { values, logger: deps.logger, requestId: ctx.requestId });
        }
        sent = h;
      }
      out.requestHeaders = diff(req.headers, sent);
      if (!ws && "request_body" in cfg && cfg.request_body) {
        out.notes.push("request_body rules may replace the body (and its Content-Type)");
      }
      if (route.intercept) {
        out.notes.push(
          "intercept_upstream: an upstream answer with a status error_pages lists gets the page",
        );
      }
      if (cfg.type !== "websocket" && cfg.proxy_protocol) {
        const a = clientAddresses(ctx);
        out.notes.push(
          `proxy_protocol ${cfg.proxy_protocol}: the upstream connection starts with the client's ` +
            `address ${a.source.ip} port ${a.source.port} (a new connection for each request)`,
        );
      }
      const m = route.mirror;
      if (!ws && m) {
        const urls = m.targets.map((t) => {
          const c = targetOf(ctx, cfg, t);
          return `${c.origin.protocol}//${originHost(c.origin)}${c.path}`;
        });
        out.notes.push(
          `Mirrored: ${m.percent}% of requests are copied to ${urls.join(", ")} (answer dropped)`,
        );
      }
      return out;
    }
  }
}

/** The `ip_access` verdict for the client, noted; false when the request would be refused. */
function admitted(out: Explanation, ctx: RequestContext, access: IpAccess | null): boolean {
  if (!access) return true;
  const v = ipVerdict(access, ctx.clientIp);
  out.notes.push(verdictText(v, ctx.clientIp));
  return v.allowed;
}

/**
 * What `basic_auth` makes of the request's credentials, noted; the 401 when it would refuse them
 * without a password check. A password is checked only on a live request (explain runs no bcrypt).
 */
function authNote(
  out: Explanation,
  ctx: RequestContext,
  auth: CompiledBasicAuth,
): Response | undefined {
  const creds = parseBasicAuthorization(ctx.req.headers.get("authorization"));
  if (creds.kind !== "basic") {
    out.notes.push(
      `basic_auth refuses the request: ${
        creds.kind === "none" ? "no Basic credentials" : "malformed Basic credentials"
      } (401 with ${auth.challenge})`,
    );
    return unauthorized(ctx, auth);
  }
  if (!auth.users.has(creds.user)) {
    out.notes.push(`basic_auth refuses the request: no user "${creds.user}" (401)`);
    return unauthorized(ctx, auth);
  }
  out.notes.push(
    `basic_auth: user "${creds.user}" exists; the password is checked on a live request only` +
      (auth.forward ? "" : " (Authorization is not sent upstream)"),
  );
  ctx.authUser = creds.user;
  if (!auth.forward) ctx.dropAuthorization = true;
  return undefined;
}

/**
 * What `jwt_auth` makes of the request's token, noted; the 401 when it refuses it. A token is
 * verified against the route's own keys; one for a JWK Set is checked on a live request only
 * (explain fetches nothing).
 */
async function jwtNote(
  out: Explanation,
  ctx: RequestContext,
  o: { auth: CompiledJwtAuth; deps: ExplainDeps; assumed?: { user?: string } },
): Promise<Response | undefined> {
  const { auth } = o;
  if (o.assumed) {
    out.notes.push("jwt_auth: the token is not at hand; taken as valid");
    if (o.assumed.user !== undefined) ctx.authUser = o.assumed.user;
    if (!auth.forward) ctx.dropAuthorization = true;
    return undefined;
  }
  if (findToken(ctx, auth) === null) {
    out.notes.push(`jwt_auth refuses the request: no bearer token (401)`);
    return jwtRefusal(ctx, auth);
  }
  if (auth.jwksUrl !== undefined) {
    // As /status names it: a password or an api_key in the URL hidden.
    const jwks = String(redactSecrets(auth.jwksUrl));
    out.notes.push(`jwt_auth: the token is checked against ${jwks} on a live request only`);
    return undefined;
  }
  const refused = await checkJwtAuth(ctx, pipelineDeps(o.deps), auth);
  const why = /error_description="(.*)"$/.exec(refused?.headers.get("www-authenticate") ?? "");
  out.notes.push(
    refused
      ? `jwt_auth refuses the token: ${why?.[1] ?? "invalid"} (401)`
      : `jwt_auth: the token is valid${ctx.authUser ? ` (user "${ctx.authUser}")` : ""}`,
  );
  return refused;
}

/** The pick a first attempt would make: the route's own pool and selector, seeded randomness. */
function pickTarget(
  ctx: RequestContext,
  deps: ExplainDeps,
  out: Explanation,
): { url: string | null; why: string } {
  const route = ctx.route!;
  // A fresh selector: the live one's rotation must not move (and round_robin starts at the top).
  const pool = buildPool(route, ctx.snapshot.config);
  const reg = deps.registry ?? createUpstreamRegistry({ ...deps, metrics: noopMetrics });
  const live = deps.registry !== undefined;
  const now = deps.clock.monotonic();
  out.upstream = {
    policy: pool.policy,
    // Available as the route sees it: by its own health check of each target (pool.checks).
    targets: pool.ids.map((id, i) => ({
      url: id,
      backup: pool.backups.has(id),
      available: live
        ? reg.available(id, now, pool.checks[i], { passive: pool.passive.enabled })
        : null,
    })),
    pick: null,
    pickReason: "",
    url: "",
    websocket: false,
  };
  if (!live) out.notes.push("Health is not known offline: every target counts as up");
  for (const id of live ? pool.ids : []) {
    if (reg.drained(id)) out.notes.push(`${id} is drained (admin API): it takes no new requests`);
  }
  if (live && pool.slowStartMs > 0) {
    pool.ids.forEach((id, i) => {
      const r = reg.ramp(id, pool.slowStartMs, now);
      if (r < 1 && out.upstream!.targets[i].available) {
        out.notes.push(`Slow start: ${id} takes ${Math.floor(r * 100)} % of its weight`);
      }
    });
  }
  if (pool.hashOn) {
    const key = hashKey(ctx, pool);
    out.notes.push(
      key === undefined
        ? `No ${pool.hashOn.type} hash key: a live request goes to a random target`
        : `Hash key (${pool.hashOn.type}): ${key}`,
    );
  }
  const sticky = pool.sticky ? stickyIndex(ctx, pool.sticky) : -1;
  if (pool.sticky) {
    out.notes.push(
      sticky >= 0
        ? `Sticky cookie ${pool.sticky.cookie} names ${pool.ids[sticky]}`
        : `No valid sticky cookie ${pool.sticky.cookie}: the answer sets one for the target picked`,
    );
  }
  const picked = choose(pool, reg, {
    tried: new Set(),
    key: hashKey(ctx, pool),
    random: () => 0,
    now,
    prefer: sticky,
  });
  if (!picked) return { url: null, why: "no available target: Prox answers 503" };
  return { url: pool.ids[picked.i], why: picked.why };
}

/** A static route: runs the action on a recording file store and reports the file it served. */
async function staticAnswer(
  out: Explanation,
  ctx: RequestContext,
  o: { deps: PipelineDeps; route: Parameters<typeof staticAction>[2] },
): Promise<Explanation> {
  let served: string | undefined;
  const files: FileStore = {
    async stat(root, rel) {
      const st = await o.deps.files.stat(root, rel);
      if (st?.isFile) served = joinFile(root, rel);
      return st;
    },
    open: (root, rel, range, handle) => o.deps.files.open(root, rel, range, handle),
  };
  // HEAD for GET: the same decision without reading the file.
  if (ctx.req.method === "GET") ctx.req = new Request(ctx.req, { method: "HEAD" });
  const res = await staticAction(ctx, { ...o.deps, files }, o.route);
  await answered(out, res, ctx);
  if (served && res.status < 300) out.answer!.file = served;
  else if (served && res.status === 404) out.answer!.file = served;
  else if (res.status === 404) {
    out.notes.push(`No file for ${ctx.path} under ${o.route.root}`);
  }
  return out;
}

function joinFile(root: string, rel: string): string {
  return rel === "" ? root : `${root.replace(/\/+$/, "")}/${rel}`;
}

/** Records a response Prox makes itself: status, its message or Location, its error page. */
async function answered(
  out: Explanation,
  res: Response,
  ctx: RequestContext,
): Promise<Explanation> {
  const own = (res as OwnError)[OWN_ERROR];
  const page = own && !own.exact && pageFor(ctx, res.status);
  const location = res.headers.get("location");
  const type = res.headers.get("content-type") ?? "";
  let message: string | undefined;
  if (res.status >= 400 && type.startsWith("text/plain")) {
    message = (await res.text()).split("\n")[0];
  } else await res.body?.cancel();
  out.answer = { status: res.status };
  if (message) out.answer.message = message;
  if (location !== null) out.answer.location = location;
  if (page) out.answer.page = page.variants.map((v) => v.source).join(", ");
  if (out.action === "error" && res.status === 404) {
    out.notes.push("No route matched: Prox answers 404");
  }
  return out;
}

/** The changes from the client's headers to the upstream's. */
function diff(
  before: Headers,
  after: Iterable<[string, string]>,
): NonNullable<Explanation["requestHeaders"]> {
  const old = new Map<string, string>();
  before.forEach((v, k) => old.set(k, v));
  const now = new Map<string, string>();
  for (const [k, v] of after) {
    const name = k.toLowerCase();
    now.set(name, now.has(name) ? `${now.get(name)}, ${v}` : v);
  }
  const added: [string, string][] = [];
  const changed: [string, string, string][] = [];
  for (const [k, v] of now) {
    const was = old.get(k);
    if (was === undefined) added.push([k, v]);
    else if (was !== v) changed.push([k, was, v]);
  }
  const removed = [...old.keys()].filter((k) => !now.has(k));
  return { added, changed, removed };
}

function pipelineDeps(deps: ExplainDeps): PipelineDeps {
  return {
    snapshot: () => deps.snapshot,
    clock: deps.clock,
    files: deps.files,
    logger: deps.logger,
    metrics: noopMetrics,
    upstream: {
      send: () => Promise.reject(new Error("Cannot send upstream: explain sends nothing")),
    } as unknown as PipelineDeps["upstream"],
  };
}

/** What forward auth would do first (nothing is sent: the answer decides at run time). */
export function forwardAuthNote(auth: CompiledForwardAuth, method: string): string {
  const copied = auth.copyResponse.length > 0
    ? `, with ${auth.copyResponse.join(", ")} from its answer (the client's own removed)`
    : "";
  return `Checked first against the auth service ${auth.url} (${
    auth.preserveMethod ? method : "GET"
  }, timeout ${auth.timeoutMs} ms): a 2xx lets the request through${copied}; any other ` +
    "answer goes to the client instead; no answer: 503";
}

/** How `bandwidth.per` reads in a note. */
const SCOPE_TEXT = {
  response: "each response on its own",
  client: "shared by the client's answers in progress, by address (IPv6: its /64)",
  route: "shared by all of the route's answers in progress",
} as const;
