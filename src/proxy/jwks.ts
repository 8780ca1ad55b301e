// JWT verification keys at run time: a key imported into crypto.subtle once per algorithm, and
// the JWK Sets of `jwks_url`s, fetched through the JwksFetcher port and kept across reloads.
//
// A set is fetched at the first request that needs it (start-up never waits for the IdP), kept for
// its Cache-Control max-age bounded by the route's jwks_min_refresh and jwks_max_refresh, then
// refetched in the background while the old keys keep serving. A token whose `kid` the set lacks
// triggers one refetch at most per jwks_min_refresh (a key rotation is seen at once, a flood of
// made-up kids is not a flood of fetches). A failed fetch keeps the last good keys.

import { deltaSeconds, parseCacheControl } from "../domain/cache_control.ts";
import { keyAlgorithms, webCryptoParams } from "../domain/jwt.ts";
import type { JwtAlg } from "../domain/jwt.ts";
import { readJwks } from "../domain/jwt_keys.ts";
import type { KeySpec } from "../domain/jwt_keys.ts";
import type { Clock, JwksFetcher, Logger } from "../ports.ts";
import { redactSecrets } from "../config/secret_names.ts";

/** A verification key; imported into crypto.subtle on first use, once per algorithm. */
export class VerifyKey {
  readonly spec: KeySpec;
  readonly #imported = new Map<JwtAlg, Promise<CryptoKey | null>>();

  constructor(spec: KeySpec) {
    this.spec = spec;
  }

  get kid(): string | undefined {
    return this.spec.kid;
  }

  /** True when this key may verify `alg` under the route's `algorithms`. */
  allows(alg: JwtAlg, allowed: readonly string[] | undefined): boolean {
    return keyAlgorithms(this.spec.kind, { keyAlg: this.spec.alg, allowed }).includes(alg);
  }

  /** Checks `signature` over `data` with `alg` (which `allows` has accepted). */
  async verify(alg: JwtAlg, data: Uint8Array<ArrayBuffer>, signature: Uint8Array<ArrayBuffer>) {
    let key = this.#imported.get(alg);
    if (!key) {
      key = this.#import(alg);
      this.#imported.set(alg, key);
    }
    const k = await key;
    if (k === null) return false;
    try {
      return await crypto.subtle.verify(webCryptoParams(alg).verifyAlg, k, signature, data);
    } catch {
      return false; // e.g. an ECDSA signature of the wrong length
    }
  }

  async #import(alg: JwtAlg): Promise<CryptoKey | null> {
    const params = webCryptoParams(alg).importAlg;
    const s = this.spec;
    try {
      switch (s.format) {
        case "spki":
          return await crypto.subtle.importKey("spki", s.der, params, false, ["verify"]);
        case "jwk":
          return await crypto.subtle.importKey("jwk", s.jwk as JsonWebKey, params, false, [
            "verify",
          ]);
        case "raw":
          return await crypto.subtle.importKey("raw", s.bytes, params, false, ["verify"]);
      }
    } catch {
      return null; // a key that does not import never verifies
    }
  }
}

/** Most JWK Set URLs remembered (config-bound; the oldest go after reloads dropped them). */
const MAX_SETS = 64;
/** The largest JWK Set read. */
export const MAX_JWKS_BYTES = 1 << 20;
/** A fetch that takes longer fails (the requests waiting on it get 503). */
export const JWKS_TIMEOUT_MS = 5_000;

/** The refresh bounds of one route's set (ms). */
export interface JwksBounds {
  minMs: number;
  maxMs: number;
}

interface SetEntry {
  keys: VerifyKey[] | null;
  /** Monotonic ms after which the set is refetched in the background. */
  staleAt: number;
  /** Monotonic ms of the last fetch begun; -Infinity before the first. */
  fetchedAt: number;
  running: Promise<void> | null;
}

/** The JWK Sets of every `jwks_url`, shared by the snapshots of one server. */
export class JwksCache {
  readonly #sets = new Map<string, SetEntry>();
  readonly #fetcher: JwksFetcher;
  readonly #clock: Clock;
  readonly #logger: Logger;

  constructor(o: { fetcher: JwksFetcher; clock: Clock; logger: Logger }) {
    this.#fetcher = o.fetcher;
    this.#clock = o.clock;
    this.#logger = o.logger;
  }

  /**
   * The keys of `url` for a token with `kid`: fetched now when there are none yet or none with
   * that kid (within the refetch bound), else the ones held (refreshed in the background once
   * stale). Null when the set has never been fetched successfully.
   */
  async keys(url: string, o: { kid?: string; bounds: JwksBounds }): Promise<VerifyKey[] | null> {
    let e = this.#sets.get(url);
    if (!e) {
      if (this.#sets.size >= MAX_SETS) this.#sets.delete(this.#sets.keys().next().value!);
      e = { keys: null, staleAt: 0, fetchedAt: -Infinity, running: null };
      this.#sets.set(url, e);
    }
    const now = this.#clock.monotonic();
    const mayFetch = now - e.fetchedAt >= o.bounds.minMs;
    // A set with keys without kid may hold the token's key: no refetch for its kid then.
    const missing = e.keys === null ||
      (o.kid !== undefined && !e.keys.some((k) => k.kid === o.kid || k.kid === undefined));
    if (missing) {
      if (e.running) await e.running;
      else if (mayFetch) await this.#refresh(url, e, o.bounds);
    } else if (now >= e.staleAt && !e.running) {
      this.#refresh(url, e, o.bounds); // in the background; it never rejects
    }
    return e.keys;
  }

  #refresh(url: string, e: SetEntry, bounds: JwksBounds): Promise<void> {
    e.fetchedAt = this.#clock.monotonic();
    // Logged as /config and /status show it: a password or an api_key in the URL hidden.
    const shown = String(redactSecrets(url));
    const run = this.#fetch(url, bounds).then(
      (got) => {
        // A new or rotated set is said at info (an operator tracing a 401 looks for it); the
        // same keys again only at debug.
        const kids = (keys: VerifyKey[] | null) => keys?.map((k) => k.kid ?? "-").join(",");
        const changed = kids(e.keys) !== kids(got.keys);
        e.keys = got.keys;
        e.staleAt = this.#clock.monotonic() + got.keepMs;
        this.#logger.log(changed ? "info" : "debug", "JWK Set fetched", {
          url: shown,
          kids: kids(got.keys),
          keepSeconds: Math.round(got.keepMs / 1000),
        });
      },
      (err) => {
        // The last good keys stay; the next try waits jwks_min_refresh.
        e.staleAt = this.#clock.monotonic() + bounds.minMs;
        this.#logger.warn("Cannot fetch JWK Set; keeping the last good keys", {
          url: shown,
          keys: e.keys?.length ?? 0,
          error: err instanceof Error ? err.message : String(err),
        });
      },
    ).finally(() => e.running = null);
    e.running = run;
    return run;
  }

  async #fetch(url: string, bounds: JwksBounds): Promise<{ keys: VerifyKey[]; keepMs: number }> {
    const res = await this.#fetcher.fetch(url, {
      timeoutMs: JWKS_TIMEOUT_MS,
      maxBytes: MAX_JWKS_BYTES,
    });
    if (res.status !== 200) throw new Error(`HTTP status ${res.status}`);
    const read = readJwks(res.body);
    if ("error" in read) throw new Error(`The JWK Set ${read.error}`);
    // A JWK Set is public: an HMAC (oct) key in it is a secret anyone can read and sign with.
    const keys = read.keys.filter((k) => k.kind !== "hmac");
    if (keys.length === 0) {
      throw new Error(
        "The JWK Set holds only HMAC (oct) keys, which anyone can read: none is used",
      );
    }
    const cc = parseCacheControl(res.cacheControl);
    // no-cache or no-store: kept for the shortest time allowed, as max-age=0 would be.
    const maxAge = cc.has("no-cache") || cc.has("no-store") ? 0 : deltaSeconds(cc, "max-age");
    const keepMs = Math.min(
      bounds.maxMs,
      Math.max(bounds.minMs, maxAge === undefined ? bounds.maxMs : maxAge * 1000),
    );
    return { keys: keys.map((k) => new VerifyKey(k)), keepMs };
  }
}
