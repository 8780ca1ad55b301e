// One ACME order (RFC 8555 §7.4) with acme-client, imported lazily so that Prox without ACME
// never pays its ~250 ms import. The account is created once and reused through its stored URL.

import { createPrivateKey } from "node:crypto";
import type { Config } from "../config/schema.ts";
import type { Logger } from "../ports.ts";
import type { AcmeStore, CertificatePair } from "./acme_store.ts";

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

/**
 * Orders one SAN certificate for every configured domain, answering HTTP-01 through `sink`.
 * The certificate key is a fresh ECDSA P-256 key per order.
 */
export async function orderCertificate(
  config: AcmeConfig,
  opts: { store: AcmeStore; sink: ChallengeSink; logger: Logger; retries?: number },
): Promise<CertificatePair> {
  const { store, sink, logger } = opts;
  const acme = await import("acme-client");
  acme.setLogger((msg: string) => logger.debug("acme-client", { msg }));
  // acme-client retries network errors and 5xx itself (5 s, 10 s, …); Prox backs off on top.
  const settings = (acme.axios.defaults as { acmeSettings?: { retryMaxAttempts: number } })
    .acmeSettings;
  if (settings) settings.retryMaxAttempts = opts.retries ?? 3;
  // axios waits forever by default: a CA that accepts and never answers must not wedge renewal.
  acme.axios.defaults.timeout = 30_000;
  await trustCa(acme, config.ca_cert);
  const url = directoryUrl(config);
  const accountKey = (await store.readAccountKey()) ??
    await store.createAccountKey((await acme.crypto.createPrivateEcdsaKey()).toString());
  try {
    createPrivateKey(accountKey);
  } catch {
    // acme-client would only say "invalid PEM public key", naming no file.
    throw new Error(
      `Cannot use the ACME account key ${store.dir}/account.key: it is not a PEM private key (remove it to register a new account)`,
    );
  }
  const contact = [`mailto:${config.email}`];

  const register = async (): Promise<InstanceType<typeof acme.Client>> => {
    const client = new acme.Client({ directoryUrl: url, accountKey });
    await client.createAccount({ termsOfServiceAgreed: true, contact });
    await store.writeAccount({
      directoryUrl: url,
      accountUrl: client.getAccountUrl(),
      email: config.email,
    });
    logger.info("ACME account registered", { directory: url, account: client.getAccountUrl() });
    return client;
  };
  const stored = await store.readAccount();
  let client = stored?.directoryUrl === url
    ? new acme.Client({ directoryUrl: url, accountKey, accountUrl: stored.accountUrl })
    : await register();
  if (stored?.directoryUrl === url && stored.email !== config.email) {
    await client.updateAccount({ contact });
    await store.writeAccount({ ...stored, email: config.email });
  }

  const [key, csr] = await acme.crypto.createCsr(
    { commonName: config.domains[0], altNames: config.domains },
    await acme.crypto.createPrivateEcdsaKey(),
  );
  const auto = (c: typeof client) =>
    c.auto({
      csr,
      email: config.email,
      termsOfServiceAgreed: true,
      challengePriority: ["http-01"],
      // acme-client's own pre-check fetches http://<domain>:80 through the system resolver; the
      // CA's validation is the one that counts.
      skipChallengeVerification: true,
      challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
        if (challenge.type !== "http-01") {
          throw new Error(`Cannot answer ACME challenge type ${challenge.type}`);
        }
        await sink.put(challenge.token, keyAuthorization);
      },
      challengeRemoveFn: async (_authz, challenge) => {
        await sink.remove(challenge.token);
      },
    });
  let cert: string;
  try {
    cert = await auto(client);
  } catch (err) {
    // The CA forgot the stored account (reset test CA, deactivated account): register again.
    if (!/accountDoesNotExist|account.*(not exist|not found)/i.test(String(errorText(err)))) {
      throw err;
    }
    logger.warn("ACME account unknown to the CA; registering it again", { directory: url });
    client = await register();
    cert = await auto(client);
  }
  return { cert, key: key.toString() };
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
