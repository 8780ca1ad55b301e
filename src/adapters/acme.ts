// Automatic TLS with ACME: keeps one SAN certificate for `tls.acme.domains` valid. It loads the
// stored certificate (no CA contact while it is valid), orders when it is missing or due
// (renewal_days_before_expiry, with jitter; exponential back-off on failure), answers HTTP-01
// challenges (or publishes DNS-01 records through acme_dns.ts), and hands every new certificate to `onCertificate` (which swaps listeners live).
// Instances sharing `storage_path` take turns through a lock file and load each other's result.

import { createHash, X509Certificate } from "node:crypto";
import type { Logger } from "../ports.ts";
import { ProxyError } from "../domain/errors.ts";
import { renewalAt, renewalReason, retryDelay, sanNames } from "../domain/acme_schedule.ts";
import type { CertificateFacts } from "../domain/acme_schedule.ts";
import { openAcmeStore } from "./acme_store.ts";
import type { AcmeStore, CertificatePair, OrderLock } from "./acme_store.ts";
import { directoryUrl, errorText, orderCertificate, retryAfterOf } from "./acme_order.ts";
import type { AcmeConfig } from "./acme_order.ts";

export type { AcmeConfig } from "./acme_order.ts";
export type { CertificatePair } from "./acme_store.ts";

/** RFC 8555 §8.3: where the CA fetches HTTP-01 key authorizations. */
export const CHALLENGE_PREFIX = "/.well-known/acme-challenge/";

/** What the admin status and tests can see. */
export interface AcmeStatus {
  state: "ok" | "ordering" | "waiting_for_lock" | "failing";
  domains: string[];
  notAfter: number | null;
  renewAt: number | null;
  failures: number;
  lastError: string | null;
  /** Orders this instance placed since it started. */
  orders: number;
  /** How long the back-off after a failed order still holds off the next one (null: none). */
  retryInMs: number | null;
}

/** A running ACME certificate keeper. */
export interface AcmeController {
  /** The certificate to serve now, or null before the first one is obtained. */
  current(): CertificatePair | null;
  /** Resolves once a certificate is available. */
  ready(): Promise<void>;
  /**
   * Answers `GET /.well-known/acme-challenge/<token>` (memory first, then the shared store);
   * rejects with a `not_found` ProxyError for a token it does not know.
   */
  answerChallenge(req: Request): Promise<Response>;
  /**
   * The answer to a request for a pending HTTP-01 token (memory, then the shared store), or null
   * for any other request: the HTTPS listener passes those to its routes.
   */
  knownChallenge(req: Request): Promise<Response | null>;
  /** Applies a reloaded `tls.acme`; new domains order a new certificate in the background. */
  configure(config: AcmeConfig): Promise<void>;
  /** Orders a new certificate now, even if the current one is not due. */
  renewNow(): Promise<void>;
  status(): AcmeStatus;
  /** Stops timers and waits for a running order to end. */
  close(): Promise<void>;
}

/** Tuning for tests and embedding; production uses the defaults. */
export interface AcmeTuning {
  /** Wall clock for expiry decisions (ms since the epoch). */
  now?: () => number;
  random?: () => number;
  /** Longest sleep between checks (picks up certificates other instances stored). Default 10 min. */
  checkIntervalMs?: number;
  /** First retry delay after a failed order (doubles per failure, up to a day). Default 1 min. */
  retryBaseMs?: number;
  /** How often an instance waiting for another's order looks again. Default 2 s. */
  lockPollMs?: number;
  /** A lock older than this is from a crashed instance. Default 10 min. */
  lockStaleMs?: number;
  /** Retries acme-client makes per request on network errors and 5xx. Default 3. */
  clientRetries?: number;
  /** How often DNS-01 looks for its published record again. Default 2 s. */
  dnsPollMs?: number;
  /** acme-client's first wait before looking at a pending authorization again. Default 5 s. */
  pollMinMs?: number;
}

/** Bound on pending challenge tokens held in memory (one per domain and order). */
const MAX_TOKENS = 1000;

/**
 * What an order is for: the `tls.acme` settings, without where this instance listens or mounts
 * the store (a changed order is not held off by another's back-off). A digest: the key goes into
 * the shared back-off record, and the settings hold secrets (an EAB MAC key, a DNS webhook's
 * headers). With the values of the variables the order reads: a MAC key or token fixed there
 * (and restarted) is a changed order as much as one fixed in the file.
 */
const orderKeyOf = (config: AcmeConfig) => {
  const env = (name: string | undefined) => name === undefined ? null : Deno.env.get(name) ?? null;
  const secrets = [env(config.eab?.hmac_key_env), env(config.dns?.token_env)];
  return createHash("sha256")
    .update(JSON.stringify({ ...config, http_listen_addr: 0, storage_path: 0, redis: 0, secrets }))
    .digest("base64url");
};

/**
 * The store `config` names: Redis (`redis`), else the directory `storage_path`. The Redis one
 * (and ioredis with it) is imported only then, as the rate-limit store is.
 */
async function openStore(config: AcmeConfig, logger: Logger): Promise<AcmeStore> {
  const name = config.domains[0];
  const warn = (msg: string, fields: Record<string, unknown>) => logger.warn(msg, fields);
  if (!config.redis) return await openAcmeStore(config.storage_path, { name });
  const { openRedisAcmeStore } = await import("./acme_store_redis.ts");
  return openRedisAcmeStore(config.redis, { name, warn });
}

/** Reads a certificate's facts from its PEM (the leaf: first certificate of the chain). */
export function certificateFacts(pem: string): CertificateFacts | null {
  try {
    const x = new X509Certificate(pem);
    const notAfter = Date.parse(x.validTo);
    const notBefore = Date.parse(x.validFrom);
    if (!Number.isFinite(notAfter)) return null;
    const keyType = keyTypeOf(x);
    return {
      notAfter,
      ...(Number.isFinite(notBefore) ? { notBefore } : {}),
      names: sanNames(x.subjectAltName),
      ...(keyType ? { keyType } : {}),
    };
  } catch {
    return null;
  }
}

/** A certificate's public key as `tls.acme.key_type` names it, or undefined for another kind. */
function keyTypeOf(x: X509Certificate): string | undefined {
  const k = x.publicKey;
  const d = k.asymmetricKeyDetails;
  if (k.asymmetricKeyType === "rsa") return d?.modulusLength ? `rsa${d.modulusLength}` : undefined;
  if (k.asymmetricKeyType !== "ec") return undefined;
  return d?.namedCurve === "prime256v1"
    ? "p256"
    : d?.namedCurve === "secp384r1"
    ? "p384"
    : undefined;
}

/** Opens the store, loads a stored certificate and starts the renewal loop (does not block on it). */
export async function startAcme(
  initial: AcmeConfig,
  opts: AcmeTuning & {
    logger: Logger;
    onCertificate: (pair: CertificatePair, facts: CertificateFacts) => Promise<void> | void;
    /**
     * Asked right before an order is placed (on-demand TLS: its rate bound); a reason refuses
     * the order, which then fails and backs off as a failed one does.
     */
    mayOrder?: () => string | null;
    /** An order failed (on-demand TLS: a handshake waiting for it gives up). */
    onOrderFailed?: (error: string) => void;
  },
): Promise<AcmeController> {
  const { logger } = opts;
  const now = opts.now ?? Date.now;
  const random = opts.random ?? Math.random;
  const checkMs = opts.checkIntervalMs ?? 600_000;
  let config = initial;
  let store: AcmeStore = await openStore(config, logger);
  const tokens = new Map<string, string>();
  let current: CertificatePair | null = null;
  let facts: CertificateFacts | null = null;
  let jitter = random();
  let loadedStamp: string | null = null;
  let failures = 0;
  /** Passes in a row that failed outside an order (the store did not answer). */
  let checkFailures = 0;
  let checkError: string | null = null;
  /** performance.now() before which a failed order is not retried. */
  let retryAt = 0;
  /** The order (`orderKeyOf`) that failed: a config changed since is not held off by it. */
  let retryFor: string | null = null;
  let orders = 0;
  let lastError: string | null = null;
  let state: AcmeStatus["state"] = "ok";
  let forced = false;
  /** A forced order not yet attempted: it goes out whatever back-off holds. */
  let urgent = false;
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> | null = null;
  /** The order lock while this instance orders, and the timer that keeps it fresh. */
  let held: { lock: OrderLock; heartbeat: ReturnType<typeof setInterval> } | null = null;
  let rerun = false;
  /**
   * A certificate the store has not taken yet (Redis down): one issued here, or the one served
   * when a reload moved to another store. Stored first thing on the next pass.
   */
  let unstored: { pair: CertificatePair; ordered: boolean } | null = null;
  let signalReady: () => void = () => {};
  const readyPromise = new Promise<void>((r) => signalReady = r);

  const renewAtFor = (f: CertificateFacts) =>
    renewalAt(f, { renewBeforeDays: config.renewal_days_before_expiry, jitter });

  /** Loads the stored certificate when it changed on disk (restart, or another instance). */
  async function loadStored(): Promise<void> {
    const stamp = await store.certificateStamp();
    if (stamp === null || stamp === loadedStamp) return;
    const pair = await store.readCertificate();
    const f = pair && certificateFacts(pair.cert);
    if (!pair || !f) return; // half-written or foreign: look again next time
    loadedStamp = stamp;
    if (current && pair.cert === current.cert) return;
    if (now() >= f.notAfter && current) return; // keep serving what we have
    // Nor trade it for one that lacks a configured name (an old file under a new first domain,
    // an instance with fewer domains): the next pass orders one that covers them all.
    if (current && facts && covers(facts) && !covers(f)) return;
    // Nor for one from another directory while ours is from the configured one: instances moved
    // to a new ca_url (or off staging) one by one would otherwise load each other's certificate,
    // serve it, and order their own again, in turn, every few minutes into the CA's limits.
    const wanted = directoryUrl(config);
    if (
      current?.directoryUrl === wanted && pair.directoryUrl && pair.directoryUrl !== wanted &&
      facts && covers(facts)
    ) {
      logger.info("ACME stored certificate is from another ACME directory; keeping this one", {
        stored: pair.directoryUrl,
        directory: wanted,
      });
      return;
    }
    await install(pair, f, "storage");
  }

  /** Holds every configured name, with a key of the configured type. */
  const covers = (f: CertificateFacts) => {
    const why = renewalReason(f, {
      domains: config.domains,
      now: 0,
      renewAt: Infinity,
      keyType: config.key_type,
    });
    return why !== "domains" && why !== "key_type";
  };

  async function install(pair: CertificatePair, f: CertificateFacts, from: string) {
    current = pair;
    facts = f;
    jitter = random();
    // An expired one (stored before a long outage) is served while a new one is ordered.
    const expired = now() >= f.notAfter;
    logger[expired ? "warn" : "info"](
      expired
        ? "ACME certificate loaded has expired; serving it until a new one is issued"
        : "ACME certificate loaded",
      {
        from,
        domains: f.names,
        notAfter: new Date(f.notAfter).toISOString(),
        renewAt: new Date(renewAtFor(f)).toISOString(),
      },
    );
    await opts.onCertificate(pair, f);
    signalReady();
  }

  function schedule(ms: number) {
    if (closed) return;
    clearTimeout(timer);
    // setTimeout's limit is 2^31-1 ms; the periodic check keeps long waits short anyway.
    timer = setTimeout(() => void check(), Math.max(1, Math.min(ms, checkMs, 2 ** 31 - 1)));
  }

  /** One pass: load, decide, maybe order, schedule the next pass. Never runs twice at once. */
  function check(): Promise<void> {
    if (closed) return Promise.resolve();
    if (running) {
      rerun = true;
      return running;
    }
    running = pass().then(() => {
      checkFailures = 0;
      if (lastError === checkError) lastError = null;
    }, (err) => {
      // The store did not answer (Redis down, the volume gone): looked at again soon, backing
      // off as after a failed order, not at the next periodic check 10 min away.
      checkFailures++;
      lastError = checkError = errorText(err);
      state = "failing";
      const delay = retryDelay(checkFailures, { random: random(), baseMs: opts.retryBaseMs });
      logger.error("ACME check failed", { error: lastError, retryInMs: Math.min(delay, checkMs) });
      schedule(delay);
    }).finally(() => {
      running = null;
      if (rerun && !closed) {
        rerun = false;
        void check();
      }
    });
    return running;
  }

  /**
   * Stores `unstored`. One served when the store changed is not put over a later certificate of
   * the same CA there (another instance renewed; instances are moved one by one): that one loads.
   */
  async function storeIssued(): Promise<void> {
    const pending = unstored;
    if (!pending) return;
    const { pair } = pending;
    const there = pending.ordered ? null : await store.readCertificate();
    const later = there && certificateFacts(there.cert);
    const keep = later && covers(later) && there.directoryUrl === pair.directoryUrl &&
      later.notAfter > (certificateFacts(pair.cert)?.notAfter ?? 0);
    if (!keep) {
      await store.writeCertificate(pair);
      loadedStamp = await store.certificateStamp();
    }
    if (unstored === pending) unstored = null;
    if (pending.ordered) await store.writeBackoff(null);
  }

  async function pass(): Promise<void> {
    // First: until then the store holds an older certificate, which must not replace it.
    await storeIssued();
    await loadStored();
    // A certificate from another directory (staging → production, a new ca_url) is replaced.
    const reason = () =>
      forced
        ? "forced"
        : current?.directoryUrl && current.directoryUrl !== directoryUrl(config)
        ? "directory"
        : renewalReason(facts, {
          domains: config.domains,
          now: now(),
          renewAt: facts ? renewAtFor(facts) : 0,
          keyType: config.key_type,
        });
    if (!reason()) {
      // Nothing to order (another instance's certificate came from the store, or a reload undid
      // what failed): a failed order of this one's is no longer news, nor is its back-off.
      state = "ok";
      failures = 0;
      retryAt = 0;
      lastError = null;
      return schedule(renewAtFor(facts!) - now());
    }
    // Back-off outlives the periodic check (which still picks up certificates from storage).
    // A reload that changed tls.acme while the failed order was in flight is not held off.
    const wait = retryFor === orderKeyOf(config) ? retryAt - performance.now() : 0;
    // Only the first attempt of a forced order skips the back-off: one that failed retries on it.
    const skipBackoff = urgent;
    urgent = false;
    if (!skipBackoff && wait > 0) return schedule(wait);
    const staleMs = opts.lockStaleMs ?? 600_000;
    const lock = await store.tryLock({ staleMs, now: Date.now() });
    if (!lock) {
      // Another instance is ordering: its result appears in the store.
      state = "waiting_for_lock";
      return schedule(opts.lockPollMs ?? 2_000);
    }
    // Keep the lock fresh while ordering, so a slow CA does not let a second instance in.
    const heartbeat = setInterval(() => void lock.refresh().catch(() => {}), staleMs / 3);
    held = { lock, heartbeat };
    const orderKey = orderKeyOf(config);
    /** Why the issued certificate was not stored: the pass fails (retried soon), not the order. */
    let unsaved: { err: unknown } | null = null;
    try {
      await loadStored(); // it may have finished just before we took the lock
      const why = reason();
      if (!why) return schedule(0);
      // Another instance's failed order of the same certificate holds this one off too: N
      // instances (or workers) must not fail N times in a row into the CA's rate limits.
      const shared = await store.readBackoff();
      if (shared?.key === orderKey) {
        failures = Math.max(failures, shared.failures);
        const left = shared.retryAt - Date.now();
        if (!skipBackoff && left > 0) {
          state = "failing";
          lastError = shared.error;
          retryAt = performance.now() + left;
          retryFor = orderKey;
          logger.warn("ACME order held off: the same order failed recently (shared back-off)", {
            domains: config.domains,
            error: shared.error,
            retryInMs: Math.round(left),
          });
          opts.onOrderFailed?.(shared.error);
          return schedule(left);
        }
      }
      const refused = opts.mayOrder?.() ?? null;
      if (refused) throw new Error(refused);
      state = "ordering";
      logger.info("ACME ordering certificate", { domains: config.domains, reason: why });
      const started = performance.now();
      orders++;
      await store.pruneChallenges({ maxAgeMs: 3_600_000, now: Date.now() });
      const ordered = config.domains;
      // Where it is ordered from, read now: a reload may change ca_url while the order is in
      // flight, and the certificate it brings is still the old directory's (replaced next pass).
      const from = directoryUrl(config);
      const pair = {
        ...await orderCertificate(config, {
          store,
          sink,
          logger,
          retries: opts.clientRetries,
          dnsPollMs: opts.dnsPollMs,
          pollMinMs: opts.pollMinMs,
        }),
        directoryUrl: from,
      };
      const f = certificateFacts(pair.cert);
      if (!f) throw new Error("Cannot read the certificate the CA issued");
      // Served even when the store does not take it: thrown away, it was ordered again after the
      // back-off, spending the CA's duplicate-certificate limit (5 a week at Let's Encrypt).
      unstored = { pair, ordered: true };
      unsaved = await storeIssued().then(() => null, (err) => ({ err }));
      forced = false;
      failures = 0;
      retryAt = 0;
      lastError = null;
      state = "ok";
      logger.info("ACME certificate issued", { ms: Math.round(performance.now() - started) });
      await install(pair, f, "order");
      if (unsaved) throw unsaved;
      // Served all the same, but ordering again at once would loop: back off as after a failure.
      // (Domains a reload added meanwhile are ordered at once: `configure` reruns the check.)
      const still = renewalReason(f, { domains: ordered, now: now(), renewAt: renewAtFor(f) });
      if (still) {
        throw new Error(`The CA issued a certificate that needs renewal at once (${still})`);
      }
      schedule(renewAtFor(f) - now());
    } catch (err) {
      if (unsaved && err === unsaved) throw unsaved.err;
      failures++;
      lastError = errorText(err);
      state = "failing";
      // Never past the expiry of the certificate in hand: at most half the time it has left (a
      // 24 h certificate due with 8 h left saw its back-off grow past them after 9 failures).
      // At least as long as the CA asked, though (rate limits: Retry-After).
      const left = facts ? facts.notAfter - now() : 0;
      const maxMs = left > 0 ? Math.min(24 * 3_600_000, Math.max(left / 2, 60_000)) : undefined;
      const delay = Math.max(
        retryDelay(failures, { random: random(), baseMs: opts.retryBaseMs, maxMs }),
        retryAfterOf(err),
      );
      logger.error("Cannot obtain ACME certificate", {
        domains: config.domains,
        error: lastError,
        failures,
        retryInMs: delay,
      });
      retryAt = performance.now() + delay;
      retryFor = orderKey;
      schedule(delay);
      opts.onOrderFailed?.(lastError);
      const backoff = { key: orderKey, failures, retryAt: Date.now() + delay, error: lastError };
      await store.writeBackoff(backoff).catch((e) =>
        logger.warn("Cannot store the ACME back-off", { error: errorText(e) })
      );
    } finally {
      clearInterval(heartbeat);
      held = null;
      // It expires by itself (staleMs): an order's outcome stands whatever became of the store.
      await lock.release().catch((err) =>
        logger.warn("Cannot release the ACME order lock", { error: errorText(err) })
      );
    }
  }

  const sink = {
    async put(token: string, keyAuthorization: string) {
      if (tokens.size >= MAX_TOKENS) tokens.delete(tokens.keys().next().value!);
      tokens.set(token, keyAuthorization);
      await store.writeChallenge(token, keyAuthorization);
    },
    async remove(token: string) {
      tokens.delete(token);
      await store.removeChallenge(token);
    },
  };

  async function knownChallenge(req: Request): Promise<Response | null> {
    const path = new URL(req.url).pathname;
    if (!path.startsWith(CHALLENGE_PREFIX)) return null;
    const token = path.slice(CHALLENGE_PREFIX.length);
    const keyAuth = tokens.get(token) ?? await store.readChallenge(token).catch(() => null);
    if (keyAuth === undefined || keyAuth === null) return null;
    // With its length: the access log's bytesOut reads it (a string body declares none).
    const body = new TextEncoder().encode(keyAuth);
    return new Response(body, {
      headers: {
        "content-type": "application/octet-stream",
        "content-length": String(body.byteLength),
      },
    });
  }

  // A stored certificate is served from the first moment, without contacting the CA.
  await loadStored().catch((err) =>
    logger.warn("Cannot load the stored ACME certificate", { error: errorText(err) })
  );
  void check();

  return {
    current: () => current,
    ready: () => readyPromise,
    async answerChallenge(req) {
      const answer = await knownChallenge(req);
      if (!answer) throw new ProxyError("not_found", "Not found");
      return answer;
    },
    knownChallenge,
    async configure(next) {
      const moved = next.storage_path !== config.storage_path ||
        JSON.stringify(next.redis) !== JSON.stringify(config.redis) ||
        next.domains[0] !== config.domains[0];
      // Only a changed tls.acme may fix what failed: a reload of other keys keeps the back-off
      // (a config edited in a loop must not hammer the CA into its rate limits).
      const changed = JSON.stringify(next) !== JSON.stringify(config);
      config = next;
      if (changed) retryAt = 0;
      if (moved) {
        const old = store;
        store = await openStore(config, logger);
        // An order in flight keeps the store it began with until it ends.
        void (running ?? Promise.resolve()).then(() => old.close?.());
        loadedStamp = null;
        // What is served now is stored under the new name too (by the pass below, retried while
        // the store does not answer): a restart must not begin with an older file there, nor may
        // the pass load an older one it holds.
        if (current && facts && covers(facts)) {
          unstored = { pair: current, ordered: unstored?.ordered ?? false };
        }
      }
      void check();
    },
    renewNow() {
      forced = true;
      urgent = true;
      return check();
    },
    status: () => ({
      state,
      domains: [...config.domains],
      notAfter: facts?.notAfter ?? null,
      renewAt: facts ? renewAtFor(facts) : null,
      failures,
      lastError,
      orders,
      retryInMs: retryAt > performance.now() && retryFor === orderKeyOf(config)
        ? Math.ceil(retryAt - performance.now())
        : null,
    }),
    async close() {
      closed = true;
      clearTimeout(timer);
      // An order in flight may finish (and store its result) in the background; shutdown
      // does not wait for a slow CA longer than this.
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([running, new Promise((r) => t = setTimeout(r, 2_000))]);
      clearTimeout(t);
      // The process may exit before the order ends: a lock left behind would hold a restarted
      // instance off until it is stale (10 min).
      if (held) {
        clearInterval(held.heartbeat);
        await held.lock.release().catch(() => {});
      }
      // Its store (a Redis connection) stays open until then, for its result or back-off.
      const last = store;
      if (running) void running.then(() => last.close?.());
      else await last.close?.();
    },
  };
}
