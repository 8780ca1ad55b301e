// One ACME order (RFC 8555 §7.4) with acme-client, imported lazily so that Prox without ACME
// never pays its ~250 ms import. The account is created once and reused through its stored URL.

import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import type { Config } from "../config/schema.ts";
import type { Logger } from "../ports.ts";
import type { AcmeStore, CertificatePair } from "./acme_store.ts";
import { awaitTxt, dnsPublisher, effectiveRecord } from "./acme_dns.ts";
import { challengeRecord } from "../domain/acme_dns.ts";

/** The `tls.acme` section. */
export type AcmeConfig = NonNullable<NonNullable<Config["tls"]>["acme"]>;

/** Let's Encrypt directories (RFC 8555 §7.1.1), used when `ca_url` is not given. */
export const LETS_ENCRYPT = {
  production: "https://acme-v02.api.letsencrypt.org/directory",
  staging: "https://acme-staging-v02.api.letsencrypt.org/directory",
};

/** The directory URL a config orders from: `ca_url`, else Let's Encrypt (staging or not). */
export function directoryUrl(config: AcmeConfig): string {
  return config.ca_url ?? (config.staging ? LETS_ENCRYPT.staging : LETS_ENCRYPT.production);
}

/** Where pending HTTP-01 key authorizations go while the CA validates them (RFC 8555 §8.3). */
export interface ChallengeSink {
  put(token: string, keyAuthorization: string): Promise<void>;
  remove(token: string): Promise<void>;
}

type OrderOptions = {
  store: AcmeStore;
  sink: ChallengeSink;
  logger: Logger;
  retries?: number;
  /** How often DNS-01 looks for its published record again. Default 2 s. */
  dnsPollMs?: number;
  /**
   * acme-client's first wait before it looks at a pending authorization or order again (it
   * doubles up to 30 s). Default 5 s, acme-client's.
   */
  pollMinMs?: number;
};

/** The longest Retry-After (ms) of a rate-limit answer during the order in progress. */
let retryAfterSeen = 0;

/**
 * Orders one SAN certificate for every configured domain, answering HTTP-01 through `sink`, or
 * DNS-01 through `tls.acme.dns`.
 * The certificate key is a fresh key of `key_type` per order. A failure after the CA answered
 * "rate limited" carries its Retry-After (see `retryAfterOf`).
 */
export async function orderCertificate(
  config: AcmeConfig,
  opts: OrderOptions,
): Promise<CertificatePair> {
  retryAfterSeen = 0;
  try {
    return await placeOrder(config, opts);
  } catch (err) {
    if (retryAfterSeen > 0) {
      throw Object.assign(err instanceof Error ? err : new Error(String(err)), {
        retryAfterMs: retryAfterSeen,
      });
    }
    throw err;
  }
}

/** How long the CA asked to wait (RFC 8555 §6.6, Retry-After) before this failed order, or 0. */
export function retryAfterOf(err: unknown): number {
  const ms = (err as { retryAfterMs?: unknown })?.retryAfterMs;
  return typeof ms === "number" && ms > 0 ? ms : 0;
}

async function placeOrder(config: AcmeConfig, opts: OrderOptions): Promise<CertificatePair> {
  const { store, sink, logger } = opts;
  const acme = await import("acme-client");
  acme.setLogger((msg: string) => logger.debug("acme-client", { msg }));
  // acme-client retries network errors and 5xx itself (5 s, 10 s, …); Prox backs off on top.
  const settings = (acme.axios.defaults as { acmeSettings?: { retryMaxAttempts: number } })
    .acmeSettings;
  if (settings) settings.retryMaxAttempts = opts.retries ?? 3;
  stopLongWaits(acme.axios);
  // axios waits forever by default: a CA that accepts and never answers must not wedge renewal.
  acme.axios.defaults.timeout = 30_000;
  await trustCa(acme, config.ca_cert);
  const url = directoryUrl(config);
  const existing = await store.readAccountKey();
  const accountKey = existing ??
    await store.createAccountKey((await acme.crypto.createPrivateEcdsaKey()).toString());
  let keyId: string;
  let keyType: string | undefined;
  try {
    const pk = createPrivateKey(accountKey);
    keyType = pk.asymmetricKeyType;
    const spki = createPublicKey(pk).export({ type: "spki", format: "der" });
    keyId = createHash("sha256").update(spki).digest("base64url");
  } catch {
    // acme-client would only say "invalid PEM public key", naming no file.
    throw new Error(
      `Cannot use the ACME account key ${
        store.where("account.key")
      }: it is not a PEM private key (remove it to register a new account)`,
    );
  }
  // acme-client signs with RS256 or ES256/384/512 only; another key failed every order with
  // "Unsupported crypto operation".
  if (keyType !== "rsa" && keyType !== "ec") {
    throw new Error(
      `Cannot use the ACME account key ${
        store.where("account.key")
      }: it is an ${keyType} key, and Prox signs ACME requests with ECDSA or RSA keys only (remove it to register a new account)`,
    );
  }
  // None without an email: Let's Encrypt no longer mails about expiry (2025), and RFC 8555
  // §7.3 makes the contact optional.
  const contact = config.email ? [`mailto:${config.email}`] : [];
  const backoff = opts.pollMinMs ? { backoffMin: opts.pollMinMs } : {};

  const register = async (): Promise<InstanceType<typeof acme.Client>> => {
    const externalAccountBinding = eabOf(config);
    const client = new acme.Client({
      directoryUrl: url,
      accountKey,
      ...backoff,
      ...(externalAccountBinding ? { externalAccountBinding } : {}),
    });
    try {
      await client.createAccount({
        termsOfServiceAgreed: true,
        ...(contact.length > 0 ? { contact } : {}),
      });
    } catch (err) {
      // The CA's own words ("externalAccountRequired", "external account binding JWS
      // verification error") name no key of Prox's.
      const why = errorText(err);
      if (!/external ?account/i.test(why)) throw err;
      throw new Error(
        externalAccountBinding
          ? `The ACME CA ${url} refused the external account binding of kid "${externalAccountBinding.kid}": check tls.acme.eab's kid and MAC key against its account page (${why})`
          : `The ACME CA ${url} requires external account binding: set tls.acme.eab { kid, hmac_key } to the EAB credentials from its account page (${why})`,
      );
    }
    await store.writeAccount({
      directoryUrl: url,
      accountUrl: client.getAccountUrl(),
      email: config.email,
      keyId,
    });
    logger.info("ACME account registered", { directory: url, account: client.getAccountUrl() });
    return client;
  };
  // The stored account URL belongs to one key: after the key was removed (as the error above
  // advises) or replaced, requests signed with the new key under that URL fail verification.
  // (An account.json without keyId, from an older Prox, is trusted unless the key is new.)
  const found = await store.readAccount();
  const stored = found?.directoryUrl === url &&
      (found.keyId === undefined ? existing !== null : found.keyId === keyId)
    ? found
    : null;
  let client = stored
    ? new acme.Client({ directoryUrl: url, accountKey, accountUrl: stored.accountUrl, ...backoff })
    : await register();
  if (stored && stored.email !== config.email) {
    await client.updateAccount({ contact });
    await store.writeAccount({ ...stored, email: config.email });
  }

  const kt = config.key_type ?? "p256";
  const [key, csr] = await acme.crypto.createCsr(
    { commonName: config.domains[0], altNames: config.domains },
    kt.startsWith("rsa")
      ? await acme.crypto.createPrivateRsaKey(Number(kt.slice(3)))
      : await acme.crypto.createPrivateEcdsaKey(kt === "p384" ? "P-384" : "P-256"),
  );
  const dns = config.challenge === "dns-01" ? config.dns : undefined;
  const publisher = dns ? dnsPublisher(dns) : null;
  /** Where each DNS-01 value was published (its record's CNAME target), for its cleanup. */
  const published = new Map<string, string>();
  const auto = (c: typeof client) =>
    c.auto({
      csr,
      ...(config.email ? { email: config.email } : {}),
      termsOfServiceAgreed: true,
      challengePriority: [dns ? "dns-01" : "http-01"],
      // acme-client's own pre-check fetches http://<domain>:80 (or asks the system resolver) itself;
      // DNS-01 is checked below, on the servers that matter, and the CA's validation counts.
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        if (challenge.type === "dns-01" && dns && publisher) {
          // The value is the key authorization's SHA-256 (acme-client computes it, RFC 8555 §8.4).
          const record = await effectiveRecord(
            challengeRecord(authz.identifier.value),
            dns.resolvers,
          );
          published.set(keyAuthorization, record);
          await publisher.present(record, keyAuthorization);
          logger.info("ACME DNS-01 record published", { record });
          await awaitTxt(record, keyAuthorization, {
            resolvers: dns.resolvers,
            timeoutMs: dns.propagation_timeout,
            logger,
            pollMs: opts.dnsPollMs,
          });
          return;
        }
        if (challenge.type !== "http-01") {
          throw new Error(`Cannot answer ACME challenge type ${challenge.type}`);
        }
        await sink.put(challenge.token, keyAuthorization);
      },
      challengeRemoveFn: async (authz, challenge, keyAuthorization) => {
        if (challenge.type === "dns-01" && publisher) {
          const record = published.get(keyAuthorization) ??
            challengeRecord(authz.identifier.value);
          // acme-client swallows this error: a record left behind is worth a warning.
          await publisher.cleanup(record, keyAuthorization).catch((err) =>
            logger.warn("ACME DNS-01 record not removed", { record, error: String(err) })
          );
          return;
        }
        await sink.remove(challenge.token);
      },
    });
  let cert: string;
  try {
    cert = await auto(client);
  } catch (err) {
    // The CA forgot the stored account (reset test CA, deactivated account), or it is another
    // key's (an account.json of an older Prox, without keyId, beside a replaced key): register.
    const why = String(errorText(err));
    const unknown = /accountDoesNotExist|account.*(not exist|not found)/i.test(why);
    if (!unknown && !(stored && /JWS verification/i.test(why))) throw err;
    logger.warn(
      unknown
        ? "ACME account unknown to the CA; registering it again"
        : "ACME account key does not sign for the stored account; registering its own",
      { directory: url },
    );
    client = await register();
    cert = await auto(client);
  }
  // An account.json from an older Prox learns its key once an order under it succeeded.
  if (stored && stored.keyId === undefined && client.getAccountUrl() === stored.accountUrl) {
    await store.writeAccount({ ...stored, email: config.email, keyId });
  }
  return { cert, key: key.toString() };
}

/**
 * `tls.acme.eab` as acme-client takes it, the MAC key read now (a rotated variable is used), or
 * undefined without one. An unset or empty variable fails the order, naming it.
 */
export function eabOf(
  config: AcmeConfig,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): { kid: string; hmacKey: string } | undefined {
  const eab = config.eab;
  if (!eab) return undefined;
  const name = eab.hmac_key_env;
  const hmacKey = name === undefined ? eab.hmac_key : env(name);
  if (!hmacKey) {
    const what = name === undefined
      ? "tls.acme.eab.hmac_key is empty"
      : `Environment variable ${name} (tls.acme.eab.hmac_key_env) is ${
        hmacKey === "" ? "empty" : "not set"
      }`;
    throw new Error(`${what}: the ACME account cannot be registered without its MAC key`);
  }
  return { kid: eab.kid, hmacKey };
}

/** A readable message from acme-client/axios errors (which hide the CA's problem document). */
export function errorText(err: unknown): string {
  const e = err as { message?: string; response?: { data?: { detail?: string; type?: string } } };
  const detail = e?.response?.data?.detail ?? e?.response?.data?.type;
  const msg = e?.message ?? String(err);
  if (/reading 'config'/.test(msg)) {
    return "network error talking to the ACME server (is ca_url reachable and ca_cert right?)";
  }
  return detail ? `${msg}: ${detail}` : msg;
}

type Rejected = ((err: unknown) => unknown) & { prox?: true };

/**
 * acme-client retries a rate-limited request itself, sleeping for its Retry-After, which for
 * Let's Encrypt's limits can be days: the order would hang holding the order lock. Such an
 * answer (429, or any Retry-After over a minute) ends the order instead, and Prox backs off
 * at least that long. Wraps acme-client's retrying response interceptor (axios's `handlers`
 * is public).
 */
function stopLongWaits(axios: { interceptors: { response: unknown } }): void {
  const handlers = (axios.interceptors.response as {
    handlers?: ({ rejected?: Rejected | null } | null)[];
  }).handlers ?? [];
  for (const h of handlers) {
    const inner = h?.rejected;
    if (!h || !inner || inner.prox) continue;
    const outer: Rejected = (err) => {
      const e = err as {
        config?: { retryAttempt?: number };
        response?: { status: number; headers?: Record<string, string | undefined> };
      };
      const ms = retryAfterHeaderMs(e.response?.headers?.["retry-after"]);
      if (e.response && (e.response.status === 429 || ms > 60_000)) {
        retryAfterSeen = Math.max(retryAfterSeen, ms);
        if (e.config) e.config.retryAttempt = Infinity; // past retryMaxAttempts: no retry
      }
      return inner(err);
    };
    outer.prox = true;
    h.rejected = outer;
  }
}

/** Retry-After as seconds or an HTTP date (RFC 9110 §10.2.3), in ms from now; 0 when absent. */
function retryAfterHeaderMs(value: string | undefined): number {
  if (!value) return 0;
  const ms = /^\d+$/.test(value.trim()) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/** Trusts `caCertPath` (PEM) besides the system roots for the ACME directory's TLS. */
async function trustCa(
  acme: typeof import("acme-client"),
  caCertPath: string | undefined,
): Promise<void> {
  const https = await import("node:https");
  if (!caCertPath) {
    acme.axios.defaults.httpsAgent = undefined;
    return;
  }
  const tls = await import("node:tls");
  const ca = await Deno.readTextFile(caCertPath);
  acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...tls.rootCertificates, ca] });
}
