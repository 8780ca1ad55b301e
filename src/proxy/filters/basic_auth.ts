// The `basic_auth` request filter (after ip_access and rate limits): HTTP Basic authentication
// (RFC 7617) against bcrypt hashes from the config and an htpasswd file.
//
// A bcrypt check costs milliseconds of CPU on the event loop that serves every request, so:
// - a successful check is remembered, keyed by the hash and an HMAC (per-process random key) of
//   user and password, so a client's later requests cost two HMACs; a changed hash misses it;
// - concurrent requests with the same credentials share one check;
// - each client address (IPv6 by /64) gets at most BURST checks, then one per REFILL_MS; the
//   process runs at most GLOBAL_BURST, then GLOBAL_PER_SECOND, and MAX_IN_FLIGHT at once (many
//   addresses must not add up to a saturated event loop): beyond that, 429 without checking;
// - an unknown user is checked against a real user's hash, so timing does not tell who exists:
//   one picked by a keyed hash of the name (users' costs may differ: htpasswd -B writes cost 5,
//   prox hash-password 10), the same for every try of that name. The pick's HMAC is computed for
//   known users too, so not even a 429 (which costs no bcrypt) takes longer for a made-up name.

import { basicChallenge, parseBasicAuthorization } from "../../domain/basic_auth.ts";
import { hashProblem, parseHtpasswd } from "../../domain/htpasswd.ts";
import { ipGroupKey } from "../../domain/ip.ts";
import { StateLru } from "../../domain/lru.ts";
import { tokenBucket } from "../../domain/rate_limit.ts";
import type { RateLimitPolicy, RateLimitState } from "../../domain/rate_limit.ts";
import type { BasicAuthConfig } from "../../config/schema.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { errorResponse } from "../respond.ts";

/** A route's `basic_auth`, ready to run. */
export interface CompiledBasicAuth {
  /** `WWW-Authenticate` value. */
  challenge: string;
  /** User (NFC) → bcrypt hash: the config's `users` over the `users_file`'s. */
  users: ReadonlyMap<string, string>;
  /** The users' hashes, one per user: what an unknown user is checked against. */
  hashes: readonly string[];
  /** Keep the client's `Authorization` for the upstream. */
  forward: boolean;
}

/** Password checks per client address: this many at once… */
export const BURST = 5;
/** …then one per this many milliseconds. */
export const REFILL_MS = 1000;
/** Password checks running at once in one process; more are refused (429). */
export const MAX_IN_FLIGHT = 4;
/** Password checks per process: this many at once… */
export const GLOBAL_BURST = 10;
/** …then this many a second (at cost 10, about a quarter of the event loop's time). */
export const GLOBAL_PER_SECOND = 2;
/** Successful checks remembered (oldest dropped first). */
const MAX_CACHED = 10_000;
/** Client addresses whose check budget is tracked (least recently used dropped first). */
const MAX_CLIENTS = 10_000;

const THROTTLE: RateLimitPolicy = {
  algorithm: "token_bucket",
  requests: 1,
  periodMs: REFILL_MS,
  burst: BURST,
};
const GLOBAL: RateLimitPolicy = {
  algorithm: "token_bucket",
  requests: GLOBAL_PER_SECOND,
  periodMs: 1000,
  burst: GLOBAL_BURST,
};

/**
 * Compiles a route's `basic_auth`; `fileText` is its `users_file`'s content, read by the server
 * (lines that are not usable bcrypt entries are left out; validate reports them).
 */
export function compileBasicAuth(cfg: BasicAuthConfig, fileText?: string): CompiledBasicAuth {
  const users = new Map(fileText === undefined ? [] : parseHtpasswd(fileText).users);
  for (const [user, hash] of Object.entries(cfg.users)) {
    // A hash validate refuses (a bcrypt cost of days per check) is never checked against.
    if (hashProblem(hash) === null) users.set(user.normalize("NFC"), hash);
  }
  return {
    challenge: basicChallenge(cfg.realm),
    users,
    hashes: [...users.values()],
    forward: cfg.forward_authorization,
  };
}

/** Per pipeline (one server): the HMAC key, remembered successes, budgets, checks running. */
interface AuthState {
  key: Promise<CryptoKey>;
  ok: Map<string, true>;
  pending: Map<string, Promise<boolean>>;
  budgets: StateLru;
  /** The process's own bucket (GLOBAL). */
  global: RateLimitState | undefined;
  inFlight: number;
}

const states = new WeakMap<PipelineDeps, AuthState>();

function stateOf(deps: PipelineDeps): AuthState {
  let s = states.get(deps);
  if (!s) {
    const key = crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    s = {
      key: key as Promise<CryptoKey>,
      ok: new Map(),
      pending: new Map(),
      budgets: new StateLru({ maxEntries: MAX_CLIENTS }),
      global: undefined,
      inFlight: 0,
    };
    states.set(deps, s);
  }
  return s;
}

const encoder = new TextEncoder();

/** HMAC-SHA-256 of the parts, NUL-separated, as hex. */
async function mac(key: CryptoKey, parts: string[]): Promise<string> {
  const sig = await crypto.subtle.sign("HMAC", key, encoder.encode(parts.join("\0")));
  return Array.from(new Uint8Array(sig), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Lets the request through (setting `ctx.authUser`) or answers: 401 with the challenge for
 * missing or wrong credentials, 429 when the client (or the process) has no password check left.
 */
export async function checkBasicAuth(
  ctx: RequestContext,
  deps: PipelineDeps,
  auth: CompiledBasicAuth,
): Promise<Response | undefined> {
  const route = ctx.route?.id ?? "(none)";
  const creds = parseBasicAuthorization(ctx.req.headers.get("authorization"));
  if (creds.kind !== "basic") {
    deps.metrics.accessDenied(
      route,
      creds.kind === "none" ? "credentials_missing" : "credentials_wrong",
    );
    return unauthorized(ctx, auth);
  }
  const hash = auth.users.get(creds.user);
  const state = stateOf(deps);
  const key = await state.key;
  // The same keyed hashes for every user, known or not, side by side: a refusal (a 429 costs no
  // bcrypt and can be timed as often as a client likes) must not take longer for a name that
  // does not exist.
  const [secret, decoy] = await Promise.all([
    mac(key, [creds.user, creds.password]),
    decoyHash(key, auth.hashes, creds.user),
  ]);
  // An unknown user costs a check against a real hash too, and always fails.
  const against = hash ?? decoy;
  let ok = false;
  if (against !== undefined) {
    // The hash in the key: a changed hash misses the remembered successes.
    const id = `${against}\0${secret}`;
    if (hash !== undefined && state.ok.has(id)) ok = true;
    else {
      const verdict = await verifyBounded(ctx, deps, {
        state,
        id,
        password: creds.password,
        hash: against,
      });
      if (verdict === "throttled") {
        deps.metrics.accessDenied(route, "throttled");
        return throttled(ctx);
      }
      ok = verdict && hash !== undefined;
      if (ok) remember(state, id);
    }
  }
  if (!ok) {
    deps.metrics.accessDenied(route, "credentials_wrong");
    return unauthorized(ctx, auth);
  }
  ctx.authUser = creds.user;
  if (!auth.forward) ctx.dropAuthorization = true;
  return undefined;
}

/** One password check within the client's and the process's budget; shared when identical. */
async function verifyBounded(
  ctx: RequestContext,
  deps: PipelineDeps,
  o: { state: AuthState; id: string; password: string; hash: string },
): Promise<boolean | "throttled"> {
  const { state } = o;
  const running = state.pending.get(o.id);
  if (running) return await running;
  if (state.inFlight >= MAX_IN_FLIGHT) return "throttled";
  const client = ipGroupKey(ctx.clientIp);
  const now = deps.clock.monotonic();
  const step = tokenBucket(THROTTLE, state.budgets.get(client, now), now);
  if (!step.allowed) return "throttled";
  // Only a check both buckets allow takes a token from either.
  const global = tokenBucket(GLOBAL, state.global, now);
  if (!global.allowed) return "throttled";
  state.global = global.state;
  state.budgets.set(client, step.state, { now, expiresAt: step.expiresAt });
  const passwords = deps.passwords;
  if (!passwords) return false;
  state.inFlight++;
  const check = passwords.verify(o.password, o.hash).catch(() => false);
  state.pending.set(o.id, check);
  try {
    return await check;
  } finally {
    state.inFlight--;
    state.pending.delete(o.id);
  }
}

/**
 * The hash an unknown user is checked against: a real user's, chosen by an HMAC of the name under
 * the per-process key. Always the first user's would time every user of another cost apart from
 * the names that exist in none; chosen afresh on each try, a name's time would vary, which a
 * real user's does not. So one name keeps one hash, and names spread over the users' hashes (and
 * so their costs) as the users do, without the client knowing which.
 */
async function decoyHash(
  key: CryptoKey,
  hashes: readonly string[],
  user: string,
): Promise<string | undefined> {
  if (hashes.length === 0) return undefined;
  const id = await mac(key, ["unknown user", user]);
  return hashes[parseInt(id.slice(0, 8), 16) % hashes.length];
}

/** Remembers a success; the oldest goes once the cache is full. */
function remember(state: AuthState, id: string): void {
  if (state.ok.size >= MAX_CACHED) state.ok.delete(state.ok.keys().next().value!);
  state.ok.set(id, true);
}

/** 401 with the route's challenge (RFC 9110 §11.6.1). */
export function unauthorized(ctx: RequestContext, auth: CompiledBasicAuth): Response {
  ctx.error = "http_request_denied";
  return errorResponse("unauthorized", ctx.requestId, {
    headers: { "www-authenticate": auth.challenge },
    proxyStatus: { message: "" },
  });
}

/** 429: this client (or the process) is out of password checks for now. */
function throttled(ctx: RequestContext): Response {
  ctx.error = "http_request_denied";
  return errorResponse("rate_limited", ctx.requestId, {
    message: "Too many password attempts",
    headers: { "retry-after": String(Math.ceil(REFILL_MS / 1000)) },
    proxyStatus: { message: "" },
  });
}

/**
 * `{auth_user}`: the user name with everything outside printable ASCII (and `%`) percent-encoded
 * as UTF-8, so it is safe in a header value.
 */
export function authUserValue(user: string | undefined): string {
  // toWellFormed: a jwt_auth claim may hold a lone surrogate, on which encodeURIComponent throws.
  return user === undefined
    ? ""
    : user.toWellFormed().replace(/[^\x20-\x24\x26-\x7e]/gu, encodeURIComponent);
}
