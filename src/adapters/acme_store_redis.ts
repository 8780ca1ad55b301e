// ACME state in Redis (`tls.acme.redis`), for instances that share no file system (containers,
// hosts behind one load balancer): the same AcmeStore as the storage directory, one key per file.
//   <prefix>account.key, <prefix>account.json   the ACME account
//   <prefix>cert:<first-domain>                  {cert, key, directoryUrl, stamp} as one JSON value
//   <prefix>challenge:<token>                    HTTP-01 key authorizations (expire after an hour)
//   <prefix>lock                                 the ordering instance's id (expires when stale)
//   <prefix>backoff                              the back-off after a failed order
// Each value is written by one command, so a reader never sees half a certificate pair.

import { Redis } from "ioredis";
import { pairMatches, TOKEN } from "./acme_store.ts";
import type { AcmeStore, SharedBackoff, StoredAccount } from "./acme_store.ts";
import { wholeChain } from "./pem_chain.ts";
import { deadAfterMs, passwordFromEnv, reasonOf, redactUrl, redisTarget } from "./store_redis.ts";
import { timerDelay } from "../config/duration.ts";

/** `tls.acme.redis`. */
export interface AcmeRedisConfig {
  url: string;
  /** The environment variable holding the password, when not in the url. */
  password_env?: string;
  prefix: string;
  /** Per-command timeout (ms). */
  timeout: number;
}

/** How long a challenge's key authorization is kept (an order takes minutes at most). */
const CHALLENGE_TTL_MS = 3_600_000;

/**
 * Takes the lock; a lock key without expiry (set by hand, restored without its TTL) gets one, so
 * that it goes stale as a lock file does instead of holding every order off for good.
 */
const TAKE = `if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
/** Deletes or extends the lock only while it is still this holder's. */
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;
const REFRESH = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

/** An AcmeStore in Redis; `close` disconnects. Connects lazily: opening never waits for Redis. */
export function openRedisAcmeStore(
  config: AcmeRedisConfig,
  opts: { name: string; warn?: (msg: string, fields: Record<string, unknown>) => void },
): AcmeStore & { close(): Promise<void> } {
  const timeout = timerDelay(config.timeout);
  const [url, auth] = redisTarget(config.url, passwordFromEnv(config.password_env).password);
  const redis = new Redis(url, {
    ...auth,
    lazyConnect: true,
    // Commands wait for a (re)connection, each at most `timeout`; an outage fails the order,
    // which backs off as any failure does.
    maxRetriesPerRequest: 1,
    commandTimeout: timeout,
    // A connection that owes answers and stays silent is dead (a failover, a dropped NAT entry):
    // replaced, rather than failing every step until TCP gives up on it (~15 min).
    socketTimeout: deadAfterMs(timeout),
    // After a failover behind one address (a DNS name, a VIP, a Kubernetes service), the old
    // primary answers writes with READONLY on the open connection for good: a new one reaches
    // the new primary (the failed step is retried as any other).
    reconnectOnError: (err: Error) => /^READONLY/.test(err.message),
    connectTimeout: Math.max(timeout, 1_000),
    retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2_000),
  });
  // Errors reach the caller through rejected commands; without a listener ioredis prints them.
  // The last one says why the connection is down (refused, no such host, certificate…).
  let down = "";
  redis.on("error", (err: unknown) => down = reasonOf(err));
  const shown = redactUrl(config.url);
  let warned = false;
  redis.on("ready", () => {
    down = "";
    // A cache's policy (allkeys-lru, the default of some managed Redis) drops keys without expiry
    // when memory runs short: the account key (a new account, a new EAB key) and the certificate.
    if (warned || !opts.warn) return;
    redis.info("memory").then((info) => {
      const policy = /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
      if (warned || !policy?.startsWith("allkeys-")) return;
      warned = true;
      opts.warn?.("Redis may evict the ACME account key and certificate when its memory is full", {
        redis: shown,
        policy,
        hint: "Set maxmemory-policy to noeviction or volatile-lru, or use a Redis of its own",
      });
    }, () => {});
  });
  const key = (item: string) => `${config.prefix}${item}`;
  const certKey = key(`cert:${opts.name}`);
  const challengeKey = (token: string) => {
    if (!TOKEN.test(token)) throw new Error(`Invalid ACME challenge token "${token}"`);
    return key(`challenge:${token}`);
  };
  /** A command's failure says where Redis is (the URL without its password) and its key. */
  const run = async <T>(what: string, k: string, p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (err) {
      let why = (err as Error).message;
      // ioredis's words for "no connection to send it on" name no cause.
      if (why.startsWith("Reached the max retries per request")) {
        why = `not connected (${down || "connection lost"})`;
      }
      // The prefix is shared with another application, which keeps hashes or lists there.
      const hint = /^WRONGTYPE/.test(why) ? "; give tls.acme.redis.prefix a value of its own" : "";
      throw new Error(`Cannot ${what} in Redis at ${shown} (key ${k}): ${why}${hint}`);
    }
  };
  const json = async (item: string) => {
    const text = await run(`read ${item}`, key(item), redis.get(key(item)));
    try {
      return text ? JSON.parse(text) : null;
    } catch {
      return null;
    }
  };
  const readPair = async () => {
    const text = await run("read the ACME certificate", certKey, redis.get(certKey));
    try {
      const p = text ? JSON.parse(text) : null;
      return typeof p?.cert === "string" && typeof p.key === "string" ? p : null;
    } catch {
      return null;
    }
  };

  return {
    where: (item) => `Redis key ${key(item)} at ${shown}`,
    readAccountKey: () =>
      run("read the ACME account key", key("account.key"), redis.get(key("account.key"))),
    async createAccountKey(pem) {
      await run(
        "store the ACME account key",
        key("account.key"),
        redis.set(key("account.key"), pem, "NX"),
      );
      return (await run(
        "read the ACME account key",
        key("account.key"),
        redis.get(key("account.key")),
      )) ?? pem;
    },
    async readAccount() {
      const a = await json("account.json");
      return typeof a?.accountUrl === "string" && typeof a?.directoryUrl === "string"
        ? a as StoredAccount
        : null;
    },
    async writeAccount(account) {
      await run(
        "store the ACME account",
        key("account.json"),
        redis.set(key("account.json"), JSON.stringify(account)),
      );
    },
    async readCertificate() {
      const p = await readPair();
      // A truncated chain would stop the listener; null orders a new one.
      if (!p || !wholeChain(p.cert) || !pairMatches(p.cert, p.key)) return null;
      return typeof p.directoryUrl === "string"
        ? { cert: p.cert, key: p.key, directoryUrl: p.directoryUrl }
        : { cert: p.cert, key: p.key };
    },
    async writeCertificate(pair) {
      const value = JSON.stringify({ ...pair, stamp: crypto.randomUUID() });
      await run("store the ACME certificate", certKey, redis.set(certKey, value));
    },
    async certificateStamp() {
      const p = await readPair();
      return p ? String(p.stamp ?? p.cert.length) : null;
    },
    async writeChallenge(token, keyAuthorization) {
      const k = challengeKey(token);
      await run(
        "store an ACME challenge",
        k,
        redis.set(k, keyAuthorization, "PX", CHALLENGE_TTL_MS),
      );
    },
    readChallenge: (token) =>
      TOKEN.test(token)
        ? run("read an ACME challenge", challengeKey(token), redis.get(challengeKey(token)))
        : Promise.resolve(null),
    async removeChallenge(token) {
      await run("remove an ACME challenge", challengeKey(token), redis.del(challengeKey(token)));
    },
    // Challenges expire by themselves.
    pruneChallenges: () => Promise.resolve(),
    async readBackoff() {
      const b = await json("backoff");
      return typeof b?.key === "string" && Number.isFinite(b.failures) &&
          Number.isFinite(b.retryAt)
        ? { key: b.key, failures: b.failures, retryAt: b.retryAt, error: String(b.error) }
        : null;
    },
    async writeBackoff(backoff: SharedBackoff | null) {
      const k = key("backoff");
      await run<unknown>(
        "store the ACME back-off",
        k,
        backoff ? redis.set(k, JSON.stringify(backoff)) : redis.del(k),
      );
    },
    // Staleness is Redis's expiry (its clock, not the caller's `now`): a holder that stops
    // refreshing loses the lock `staleMs` later.
    async tryLock({ staleMs }) {
      const id = crypto.randomUUID();
      const lockKey = key("lock");
      const ms = String(Math.max(1, Math.ceil(staleMs)));
      const got = await run(
        "take the ACME order lock",
        lockKey,
        redis.eval(TAKE, 1, lockKey, id, ms),
      )
        .catch((err) => {
          // A take that timed out may still run once a slow Redis gets to it, leaving a lock
          // nobody holds until it is stale (10 min); the release queued behind it undoes that.
          redis.eval(RELEASE, 1, lockKey, id).catch(() => {});
          throw err;
        });
      if (got !== 1) return null;
      return {
        async refresh() {
          await run(
            "refresh the ACME order lock",
            lockKey,
            redis.eval(REFRESH, 1, lockKey, id, ms),
          );
        },
        async release() {
          await run("release the ACME order lock", lockKey, redis.eval(RELEASE, 1, lockKey, id));
        },
      };
    },
    close() {
      redis.disconnect();
      return Promise.resolve();
    },
  };
}
