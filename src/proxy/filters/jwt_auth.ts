// The `jwt_auth` request filter (after ip_access, rate limits and basic_auth, before forward_auth):
// a bearer JWT (RFC 7519, RFC 6750) from `Authorization`, a cookie or a query parameter, verified
// with crypto.subtle against the route's keys (HMAC secret, PEM or JWK file, JWK Set URL), its
// claims checked; chosen claims go upstream as header fields.
//
// The algorithm comes from the key: a token's `alg` is only accepted when a key of that family
// allows it, so `none` and an RSA public key used as an HMAC secret never verify. A verified token
// is remembered (by SHA-256, until its exp or CACHE_MS, whichever is first), so a client's later
// requests cost one digest instead of a signature check.

import { createHash } from "node:crypto";
import {
  bearerChallenge,
  bearerToken,
  claimHeaderValue,
  claimProblem,
  JWT_ALGS,
  parseJwt,
} from "../../domain/jwt.ts";
import type { ClaimRules, ClaimValue, JwtAlg } from "../../domain/jwt.ts";
import { readKeyFile, readSecret } from "../../domain/jwt_keys.ts";
import type { JwtAuthConfig } from "../../config/schema.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { errorResponse } from "../respond.ts";
import { VerifyKey } from "../jwks.ts";
import type { JwksBounds } from "../jwks.ts";
import { cookieValue } from "./rate_limit.ts";

/** A route's `jwt_auth`, ready to run. */
export interface CompiledJwtAuth {
  realm: string;
  /** The keys from `secret_env`, `secret_file` and `key_file`. */
  keys: readonly VerifyKey[];
  jwksUrl?: string;
  bounds: JwksBounds;
  algorithms?: readonly string[];
  rules: ClaimRules;
  cookie?: string;
  queryParam?: string;
  strip: boolean;
  forward: boolean;
  /** Claim → lower-case header field name. */
  claimHeaders: readonly (readonly [string, string])[];
  userClaim: string;
  /** Verified tokens by SHA-256: their claims and when the entry ends (wall ms). */
  verified: Map<string, { payload: Record<string, unknown>; untilMs: number }>;
  /** Checks under way by SHA-256: concurrent requests with one new token share one. */
  pending: Map<string, Promise<Verdict>>;
}

/** Verified tokens remembered per route (the oldest dropped first). */
export const MAX_VERIFIED = 10_000;
/** Longest a verified token is remembered (a key removed from a JWK Set stops it after this). */
export const CACHE_MS = 5 * 60_000;
/** Keys tried for one token (a set of keys without kids is tried in order, up to this many). */
const MAX_TRIES = 4;

/** A route's verified tokens and the checks under way. */
type TokenState = Pick<CompiledJwtAuth, "verified" | "pending">;

/**
 * The routes' verified tokens, kept across reloads: a route whose jwt_auth, secret and key files
 * did not change keeps them (a reload does not make every client's token checked again); any
 * change starts afresh. Bounded by the routes.
 */
export class TokenCaches {
  readonly #byRoute = new Map<string, { fingerprint: string; state: TokenState }>();

  /** The state of route `id` for a jwt_auth of this fingerprint. */
  stateFor(id: string, fingerprint: string): TokenState {
    let held = this.#byRoute.get(id);
    if (!held || held.fingerprint !== fingerprint) {
      held = { fingerprint, state: { verified: new Map(), pending: new Map() } };
      this.#byRoute.set(id, held);
    }
    return held.state;
  }

  /** Drops the state of routes that have no jwt_auth any more. */
  retain(routes: Readonly<Record<string, { jwt_auth?: unknown }>>): void {
    for (const id of this.#byRoute.keys()) if (!routes[id]?.jwt_auth) this.#byRoute.delete(id);
  }
}

/**
 * Compiles a route's `jwt_auth`. `files` holds the secret and key files the server read, `env`
 * the environment; a key that cannot be read is left out (validate reports it), so a route
 * without any key refuses every token. With `tokens`, route `id` keeps its verified tokens across
 * reloads while nothing that decides them changed.
 */
export function compileJwtAuth(
  cfg: JwtAuthConfig,
  o: {
    files?: ReadonlyMap<string, string>;
    env?: (name: string) => string | undefined;
    id?: string;
    tokens?: TokenCaches;
  },
): CompiledJwtAuth {
  const keys: VerifyKey[] = [];
  const secretText = cfg.secret_env !== undefined
    ? o.env?.(cfg.secret_env)
    : cfg.secret_file !== undefined
    ? o.files?.get(cfg.secret_file)
    : undefined;
  if (secretText !== undefined) {
    const s = readSecret(secretText);
    if ("key" in s) keys.push(new VerifyKey(s.key));
  }
  const keyText = cfg.key_file === undefined ? undefined : o.files?.get(cfg.key_file);
  if (keyText !== undefined) {
    const read = readKeyFile(keyText);
    if ("keys" in read) keys.push(...read.keys.map((k) => new VerifyKey(k)));
  }
  const list = (v: string | string[] | undefined) => v === undefined ? [] : [v].flat();
  // Everything that decides a verdict: the settings, the secret and the key file's content.
  const fingerprint = JSON.stringify([cfg, secretText ?? null, keyText ?? null]);
  const state: TokenState = o.tokens && o.id !== undefined
    ? o.tokens.stateFor(o.id, fingerprint)
    : { verified: new Map(), pending: new Map() };
  const required = new Map<string, ClaimValue[]>(
    Object.entries(cfg.required_claims).map(([k, v]) => [k, [v].flat()]),
  );
  return {
    realm: cfg.realm,
    keys,
    jwksUrl: cfg.jwks_url,
    bounds: { minMs: cfg.jwks_min_refresh, maxMs: cfg.jwks_max_refresh },
    algorithms: cfg.algorithms,
    rules: {
      issuers: list(cfg.issuer),
      audiences: list(cfg.audience),
      leewaySec: cfg.leeway / 1000,
      requireExp: cfg.require_exp,
      required,
    },
    cookie: cfg.cookie,
    queryParam: cfg.query_param,
    strip: cfg.strip_token,
    forward: cfg.forward_authorization,
    claimHeaders: Object.entries(cfg.claims_to_headers).map(([c, h]) => [c, h.toLowerCase()]),
    userClaim: cfg.user_claim,
    ...state,
  };
}

/** Where the token was found. */
type Found = { token: string; from: "header" | "cookie" | "query" };

/**
 * Takes the token parameter out of `ctx.query` (with `strip_token`), keeping the query as sent in
 * `ctx.jwtQuery` for findToken. The pipeline calls it as soon as the route is known: the access
 * log records the query as forwarded, and an answer before jwt_auth (a preflight, a 403 from
 * ip_access, a 429) must not log the token either; nor one refused here (another audience's
 * token may be good elsewhere).
 */
export function takeQueryToken(ctx: RequestContext, auth: CompiledJwtAuth): void {
  if (!auth.strip || auth.queryParam === undefined || ctx.jwtQuery !== undefined) return;
  ctx.jwtQuery = ctx.query;
  if (ctx.query !== "") ctx.query = withoutParam(ctx.query, auth.queryParam);
}

/** Per config: the `query_param` of every jwt_auth that strips its token. */
const tokenParams = new WeakMap<object, readonly string[]>();

/**
 * The query to log for a request answered before its route was known (TRACE, a header section
 * over the limit, a path parameter that would pick another route): no route could take its token
 * out, so every stripped jwt_auth token parameter goes.
 */
export function queryWithoutTokens(
  query: string,
  config: { routes: Readonly<Record<string, { jwt_auth?: JwtAuthConfig }>> },
): string {
  let names = tokenParams.get(config);
  if (!names) {
    const all = Object.values(config.routes).map((r) => r.jwt_auth)
      .filter((a) => a?.strip_token && a.query_param !== undefined)
      .map((a) => a!.query_param!);
    tokenParams.set(config, names = [...new Set(all)]);
  }
  for (const name of names) if (query !== "") query = withoutParam(query, name);
  return query;
}

/** The request's token: `Authorization: Bearer` first, then the cookie, then the query. */
export function findToken(ctx: RequestContext, auth: CompiledJwtAuth): Found | null {
  const header = bearerToken(ctx.req.headers.get("authorization"));
  if (header !== null) return { token: header, from: "header" };
  if (auth.cookie !== undefined) {
    const v = cookieValue(ctx.req.headers.get("cookie"), auth.cookie);
    if (v) return { token: v, from: "cookie" };
  }
  const query = ctx.jwtQuery ?? ctx.query;
  if (auth.queryParam !== undefined && query !== "") {
    const all = new URLSearchParams(query).getAll(auth.queryParam);
    if (all.length === 1 && all[0] !== "") return { token: all[0], from: "query" };
  }
  return null;
}

const encoder = new TextEncoder();

/**
 * SHA-256 of the token, as the cache key (the token itself is not kept). node:crypto's hash is
 * synchronous: about 4 µs against 25 µs for crypto.subtle.digest's asynchronous round trip.
 */
function tokenId(token: string): string {
  return createHash("sha256").update(token).digest("base64");
}

/** A token's claims once verified, or why it is refused; `unavailable`: no keys to decide with. */
type Verdict =
  | { ok: true; payload: Record<string, unknown> }
  | { ok: false; reason: string; unavailable?: true };

/**
 * Lets the request through (the claims' headers queued, `ctx.authUser` set) or answers: 401 with
 * an RFC 6750 challenge, 503 when a JWK Set that is needed has never been fetched.
 */
export async function checkJwtAuth(
  ctx: RequestContext,
  deps: PipelineDeps,
  auth: CompiledJwtAuth,
): Promise<Response | undefined> {
  const route = ctx.route?.id ?? "(none)";
  takeQueryToken(ctx, auth); // done by the pipeline already; `prox explain` comes here first
  const found = findToken(ctx, auth);
  if (found === null) {
    deps.metrics.accessDenied(route, "credentials_missing");
    return jwtRefusal(ctx, auth);
  }
  const nowMs = deps.clock.now();
  const id = tokenId(found.token);
  const hit = auth.verified.get(id);
  let payload: Record<string, unknown>;
  if (hit !== undefined && nowMs < hit.untilMs) payload = hit.payload;
  else {
    let check = auth.pending.get(id);
    if (!check) {
      // Bounded by the requests in progress; verifyToken never rejects.
      check = verifyToken(found.token, { auth, deps, nowMs });
      auth.pending.set(id, check);
      check.then(() => auth.pending.delete(id));
    }
    const v = await check;
    if (!v.ok) {
      deps.logger.debug("JWT refused", { requestId: ctx.requestId, route, reason: v.reason });
      if (v.unavailable) {
        ctx.error = "destination_unavailable";
        return errorResponse("no_healthy_upstream", ctx.requestId, {
          message: "Service unavailable: cannot verify tokens now",
          headers: { "retry-after": String(Math.ceil(auth.bounds.minMs / 1000)) },
          proxyStatus: { message: v.reason },
        });
      }
      deps.metrics.accessDenied(route, "credentials_wrong");
      return jwtRefusal(ctx, auth, v.reason);
    }
    payload = v.payload;
    remember(auth, { id, payload, nowMs });
  }
  allow(ctx, auth, { payload, from: found.from });
  return undefined;
}

/** Checks signature and claims. */
async function verifyToken(
  token: string,
  o: { auth: CompiledJwtAuth; deps: PipelineDeps; nowMs: number },
): Promise<Verdict> {
  const { auth } = o;
  const parsed = parseJwt(token);
  if (!parsed.ok) return parsed;
  const jwt = parsed.jwt;
  if (!(JWT_ALGS as readonly string[]).includes(jwt.alg)) {
    return { ok: false, reason: "The token algorithm is not accepted" };
  }
  const alg = jwt.alg as JwtAlg;
  let keys: readonly VerifyKey[] = auth.keys;
  let unavailable = false;
  if (auth.jwksUrl !== undefined && o.deps.jwks) {
    const set = await o.deps.jwks.keys(auth.jwksUrl, { kid: jwt.kid, bounds: auth.bounds });
    if (set === null) unavailable = true;
    else keys = [...keys, ...set];
  } else if (auth.jwksUrl !== undefined) unavailable = true;
  const candidates = keys.filter((k) =>
    (jwt.kid === undefined || k.kid === undefined || k.kid === jwt.kid) &&
    k.allows(alg, auth.algorithms)
  ).slice(0, MAX_TRIES);
  if (candidates.length === 0) {
    return unavailable
      ? { ok: false, reason: "The JWK Set could not be fetched", unavailable: true }
      : { ok: false, reason: "No key verifies this token's algorithm and key id" };
  }
  const data = encoder.encode(jwt.signingInput);
  let verified = false;
  for (const k of candidates) {
    if (await k.verify(alg, data, jwt.signature)) {
      verified = true;
      break;
    }
  }
  if (!verified) return { ok: false, reason: "The token signature is invalid" };
  const why = claimProblem(jwt.payload, { rules: auth.rules, nowSec: o.nowMs / 1000 });
  return why === null ? { ok: true, payload: jwt.payload } : { ok: false, reason: why };
}

/** Remembers a verified token until its exp (with leeway) or CACHE_MS from now. */
function remember(
  auth: CompiledJwtAuth,
  o: { id: string; payload: Record<string, unknown>; nowMs: number },
): void {
  const exp = o.payload.exp;
  const untilMs = Math.min(
    o.nowMs + CACHE_MS,
    typeof exp === "number" ? (exp + auth.rules.leewaySec) * 1000 : Infinity,
  );
  const cache = auth.verified;
  cache.delete(o.id);
  if (cache.size >= MAX_VERIFIED) cache.delete(cache.keys().next().value!);
  cache.set(o.id, { payload: o.payload, untilMs });
}

/** Queues the claims' header fields, names the user, hides the token as configured. */
function allow(
  ctx: RequestContext,
  auth: CompiledJwtAuth,
  o: { payload: Record<string, unknown>; from: Found["from"] },
): void {
  for (const [claim, header] of auth.claimHeaders) {
    const v = claimHeaderValue(o.payload[claim]);
    if (v !== null) (ctx.authHeaders ??= []).push([header, v]);
  }
  const user = o.payload[auth.userClaim];
  if (typeof user === "string") ctx.authUser = user;
  // A token from a cookie leaves an Authorization field (another scheme) to the upstream.
  if (!auth.forward && o.from === "header") ctx.dropAuthorization = true;
  ctx.jwtClaims = o.payload;
  // Whichever token was used, a token cookie or parameter does not reach the upstream.
  if (auth.strip && auth.cookie !== undefined) ctx.dropCookie = auth.cookie;
}

/** The raw query without parameter `name` (other parameters kept byte for byte), or "". */
export function withoutParam(query: string, name: string): string {
  const kept = query.slice(1).split("&").filter((p) => {
    const eq = p.indexOf("=");
    const key = eq < 0 ? p : p.slice(0, eq);
    try {
      return decodeURIComponent(key.replaceAll("+", " ")) !== name;
    } catch {
      return true;
    }
  });
  return kept.length === 0 || (kept.length === 1 && kept[0] === "") ? "" : `?${kept.join("&")}`;
}

/** 401 with the route's challenge; `reason` for a token that was refused. */
export function jwtRefusal(ctx: RequestContext, auth: CompiledJwtAuth, reason?: string): Response {
  ctx.error = "http_request_denied";
  return errorResponse("unauthorized", ctx.requestId, {
    headers: { "www-authenticate": bearerChallenge(auth.realm, reason) },
    proxyStatus: { message: "" },
  });
}

/** Removes cookie `name` from a Cookie field value; null when nothing is left. */
export function withoutCookie(field: string, name: string): string | null {
  const kept = field.split(";").map((p) => p.trim()).filter((p) => {
    const eq = p.indexOf("=");
    return p !== "" && (eq < 0 ? p : p.slice(0, eq).trim()) !== name;
  });
  return kept.length === 0 ? null : kept.join("; ");
}
