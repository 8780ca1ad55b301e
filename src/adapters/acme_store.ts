// ACME state on disk under `tls.acme.storage_path`, shareable by several Prox instances:
//   account.key, account.json     the ACME account (created once, reused for every order)
//   <first-domain>.crt / .key     the SAN certificate chain and its key (the Rust Prox's names)
//   <first-domain>.meta.json      the directory URL it was ordered from
//   challenges/<token>            HTTP-01 key authorizations while an order is pending
//   order.lock                    held by the one instance that is ordering
//   order.backoff.json            the back-off after a failed order, which every instance keeps
// Private keys are written with mode 0600; every file is replaced atomically (write + rename).

import { createPrivateKey, X509Certificate } from "node:crypto";
import { wholeChain } from "./pem_chain.ts";

/** The ACME account as stored beside its key. */
export interface StoredAccount {
  directoryUrl: string;
  accountUrl: string;
  /** The contact it was registered or last updated with (none: no email configured). */
  email?: string;
  /** The account key's SPKI SHA-256 (base64url): an account of another key is not used. */
  keyId?: string;
}

/** A certificate chain (PEM, leaf first) and its private key (PEM). */
export interface CertificatePair {
  cert: string;
  key: string;
  /** The ACME directory it was ordered from (unknown for files an older Prox wrote). */
  directoryUrl?: string;
}

/** A held order lock; `release` removes it if it is still ours. */
export interface OrderLock {
  /** Marks the lock as alive (a long order is not mistaken for a crashed one). */
  refresh(): Promise<void>;
  release(): Promise<void>;
}

/** The back-off after a failed order, shared by the instances that use the store. */
export interface SharedBackoff {
  /** What was ordered (the `tls.acme` config): another order is not held off. */
  key: string;
  failures: number;
  /** Wall clock (ms since the epoch) before which the same order is not placed again. */
  retryAt: number;
  error: string;
}

/** Where the ACME state is kept: the storage directory, or Redis (acme_store_redis.ts). */
export interface AcmeStore {
  /** Where `item` (e.g. `account.key`) is, for messages. */
  where(item: string): string;
  readAccountKey(): Promise<string | null>;
  /** Writes the account key unless one exists; returns the key that is stored afterwards. */
  createAccountKey(pem: string): Promise<string>;
  readAccount(): Promise<StoredAccount | null>;
  writeAccount(account: StoredAccount): Promise<void>;
  /** The stored pair, or null when absent, unreadable, truncated or when the key does not match. */
  readCertificate(): Promise<CertificatePair | null>;
  writeCertificate(pair: CertificatePair): Promise<void>;
  /** Changes whenever the stored certificate is replaced (mtime + size), null when absent. */
  certificateStamp(): Promise<string | null>;
  writeChallenge(token: string, keyAuthorization: string): Promise<void>;
  readChallenge(token: string): Promise<string | null>;
  removeChallenge(token: string): Promise<void>;
  /** Removes challenge files older than `maxAgeMs` (left by an instance that crashed). */
  pruneChallenges(opts: { maxAgeMs: number; now: number }): Promise<void>;
  readBackoff(): Promise<SharedBackoff | null>;
  /** Records the back-off after a failed order, or clears it (null) after a success. */
  writeBackoff(backoff: SharedBackoff | null): Promise<void>;
  /** Takes the order lock, or returns null when another live instance holds it. */
  tryLock(opts: { staleMs: number; now: number }): Promise<OrderLock | null>;
  /** Lets go of what the store holds open (a connection); none for the directory. */
  close?(): Promise<void>;
}

/** How long a pending HTTP-01 key authorization is answered (as Redis keeps it). */
const CHALLENGE_MAX_AGE_MS = 3_600_000;

/** RFC 8555 §8.3: tokens are base64url; anything else is never a file name. */
export const TOKEN = /^[A-Za-z0-9_-]{1,128}$/;

/** Opens (creating with mode 0700) the storage directory for a certificate named by its first domain. */
export async function openAcmeStore(
  dir: string,
  opts: { name: string },
): Promise<AcmeStore> {
  try {
    await Deno.mkdir(`${dir}/challenges`, { recursive: true, mode: 0o700 });
  } catch (err) {
    // E.g. the default ./acme_storage in a working directory the user cannot write (the image's /).
    const why = (err as Error).message.replace(/ \(os error \d+\).*$/, "").toLowerCase();
    throw new Error(
      `Cannot create the ACME storage "${dir}" (tls.acme.storage_path): ${why}; point storage_path at a writable directory`,
    );
  }
  // An existing directory Prox cannot write (made by root for a Prox running as another user, a
  // read-only mount) failed only when an order took the lock: at renewal, months later, with a
  // stored certificate. Said now, as for one it cannot create.
  for (const where of [dir, `${dir}/challenges`]) {
    const probe = `${where}/.prox-write-check.${crypto.randomUUID().slice(0, 8)}`;
    try {
      await Deno.writeTextFile(probe, "", { createNew: true, mode: 0o600 });
      await Deno.remove(probe);
    } catch (err) {
      await Deno.remove(probe).catch(() => {});
      const why = (err as Error).message.replace(/ \(os error \d+\).*$/, "").toLowerCase();
      throw new Error(
        `Cannot write to the ACME storage "${dir}" (tls.acme.storage_path): ${why}; point storage_path at a writable directory`,
      );
    }
  }
  const certPath = `${dir}/${opts.name}.crt`;
  const keyPath = `${dir}/${opts.name}.key`;
  const metaPath = `${dir}/${opts.name}.meta.json`;
  const lockPath = `${dir}/order.lock`;
  const backoffPath = `${dir}/order.backoff.json`;
  const challengePath = (token: string) => {
    if (!TOKEN.test(token)) throw new Error(`Invalid ACME challenge token "${token}"`);
    return `${dir}/challenges/${token}`;
  };

  return {
    where: (item) => `${dir}/${item}`,
    readAccountKey: () => readOrNull(`${dir}/account.key`),
    async createAccountKey(pem) {
      try {
        const f = await Deno.open(`${dir}/account.key`, {
          write: true,
          createNew: true,
          mode: 0o600,
        });
        try {
          await f.write(new TextEncoder().encode(pem));
        } finally {
          f.close();
        }
        return pem;
      } catch (err) {
        if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
        return (await readOrNull(`${dir}/account.key`)) ?? pem;
      }
    },
    async readAccount() {
      const text = await readOrNull(`${dir}/account.json`);
      if (!text) return null;
      try {
        const a = JSON.parse(text);
        return typeof a.accountUrl === "string" && typeof a.directoryUrl === "string" ? a : null;
      } catch {
        return null;
      }
    },
    writeAccount: (account) =>
      writeAtomic(`${dir}/account.json`, JSON.stringify(account, null, 2) + "\n", 0o644),
    async readCertificate() {
      const [cert, key] = await Promise.all([readOrNull(certPath), readOrNull(keyPath)]);
      if (!cert || !key) return null;
      // A truncated chain would stop the listener; null orders a new one.
      if (!wholeChain(cert) || !pairMatches(cert, key)) return null;
      const meta = await readOrNull(metaPath).then((t) => t && JSON.parse(t)).catch(() => null);
      const directoryUrl = typeof meta?.directoryUrl === "string" ? meta.directoryUrl : undefined;
      return directoryUrl ? { cert, key, directoryUrl } : { cert, key };
    },
    async writeCertificate(pair) {
      // The directory first: a reader that sees it beside the old chain takes the old chain for
      // the new CA's until the chain follows (never the reverse, which would order again).
      if (pair.directoryUrl) {
        const meta = JSON.stringify({ directoryUrl: pair.directoryUrl }) + "\n";
        await writeAtomic(metaPath, meta, 0o644);
      }
      // Key next: a reader that sees the new key with the old chain rejects the mismatch
      // and tries again later.
      await writeAtomic(keyPath, pair.key, 0o600);
      await writeAtomic(certPath, pair.cert, 0o644);
    },
    async certificateStamp() {
      try {
        const st = await Deno.stat(certPath);
        return `${st.mtime?.getTime() ?? 0}|${st.size}`;
      } catch {
        return null;
      }
    },
    writeChallenge: async (token, keyAuth) =>
      await writeAtomic(challengePath(token), keyAuth, 0o644),
    async readChallenge(token) {
      if (!TOKEN.test(token)) return null;
      // One older than an order lasts was left by a crashed instance: pruned only when the next
      // order starts (months later), it was answered until then. Not in flight: 404, as Redis's
      // expired key.
      const st = await Deno.stat(challengePath(token)).catch(() => null);
      if (!st?.mtime || Date.now() - st.mtime.getTime() > CHALLENGE_MAX_AGE_MS) return null;
      return await readOrNull(challengePath(token));
    },
    async removeChallenge(token) {
      await Deno.remove(challengePath(token)).catch(() => {});
    },
    async pruneChallenges({ maxAgeMs, now }) {
      for await (const e of Deno.readDir(`${dir}/challenges`)) {
        const path = `${dir}/challenges/${e.name}`;
        const st = await Deno.stat(path).catch(() => null);
        if (st?.mtime && now - st.mtime.getTime() > maxAgeMs) {
          await Deno.remove(path).catch(() => {});
        }
      }
    },
    async readBackoff() {
      const text = await readOrNull(backoffPath);
      try {
        const b = text ? JSON.parse(text) : null;
        return typeof b?.key === "string" && Number.isFinite(b.failures) &&
            Number.isFinite(b.retryAt)
          ? { key: b.key, failures: b.failures, retryAt: b.retryAt, error: String(b.error) }
          : null;
      } catch {
        return null;
      }
    },
    async writeBackoff(backoff) {
      if (backoff) await writeAtomic(backoffPath, JSON.stringify(backoff) + "\n", 0o644);
      else await Deno.remove(backoffPath).catch(() => {});
    },
    async tryLock({ staleMs, now }) {
      // Before each order: the directory may have been removed since start-up (a reset by
      // hand, a volume remounted), and an order needs it.
      await Deno.mkdir(`${dir}/challenges`, { recursive: true, mode: 0o700 });
      const id = crypto.randomUUID();
      for (let i = 0; i < 2; i++) {
        try {
          const f = await Deno.open(lockPath, { write: true, createNew: true, mode: 0o644 });
          try {
            await f.write(new TextEncoder().encode(JSON.stringify({ id, pid: Deno.pid, at: now })));
          } finally {
            f.close();
          }
          return {
            async refresh() {
              const text = await readOrNull(lockPath);
              if (text?.includes(id)) await Deno.utime(lockPath, new Date(), new Date());
            },
            async release() {
              const text = await readOrNull(lockPath);
              if (text?.includes(id)) await Deno.remove(lockPath).catch(() => {});
            },
          };
        } catch (err) {
          if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
          // A lock left by a crashed instance expires.
          const st = await Deno.stat(lockPath).catch(() => null);
          if (st && now - (st.mtime?.getTime() ?? 0) < staleMs) return null;
          if (st && !await takeOver(lockPath, { staleMs, now })) return null;
        }
      }
      return null;
    },
  };
}

/**
 * Removes a stale lock so that only one of the instances that saw it stale goes on to create its
 * own: a takeover needs `order.lock.takeover`, created exclusively, and looks at the lock again
 * under it (another instance may have taken the lock over meanwhile). A guard left by a crash is
 * removed once it is stale itself. Moving the lock aside instead let a third instance create a
 * lock while the second put back the first one's, so two held it.
 */
async function takeOver(
  lockPath: string,
  o: { staleMs: number; now: number },
): Promise<boolean> {
  const guard = `${lockPath}.takeover`;
  try {
    (await Deno.open(guard, { write: true, createNew: true, mode: 0o644 })).close();
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) return false;
    const gs = await Deno.stat(guard).catch(() => null);
    if (gs && o.now - (gs.mtime?.getTime() ?? 0) >= o.staleMs) {
      await Deno.remove(guard).catch(() => {});
    }
    return false;
  }
  try {
    const st = await Deno.stat(lockPath).catch(() => null);
    // Gone: removed by an earlier takeover, whose owner may be creating its lock right now.
    if (!st) return true;
    if (o.now - (st.mtime?.getTime() ?? 0) < o.staleMs) return false; // taken meanwhile
    // Still the stale file: nobody can create a lock while it exists, or remove it without the guard.
    await Deno.remove(lockPath).catch(() => {});
    return true;
  } finally {
    await Deno.remove(guard).catch(() => {});
  }
}

/** True when `key` is the private key of the chain's first certificate. */
export function pairMatches(cert: string, key: string): boolean {
  try {
    return new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch {
    return false;
  }
}

async function readOrNull(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** Writes to a temporary file in the same directory, then renames it over `path`. */
async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeTextFile(tmp, data, { mode });
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}
