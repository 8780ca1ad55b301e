// Checks that each revocation list of `tls.client_auth.crl_file` is signed by a certificate of
// the CA file (RFC 5280 §6.3.3 (f)), with node:crypto: a list from another CA, or one altered
// after signing, is refused with the issuer's name, where OpenSSL-based servers (nginx's
// ssl_crl) refuse it too. Lists whose issuer a CA file certificate names are checked with that
// certificate's key; the decoding is domain/crl.ts's.

import { constants, verify, X509Certificate } from "node:crypto";
import { certificateSubject, pemBlocks, signedParts } from "../domain/crl.ts";
import { type PssParams, RSASSA_PSS } from "../domain/der.ts";

/** node:crypto's digest for each signature algorithm an X.509 CRL or OCSP answer may carry (null: none). */
export const ALGORITHMS: Record<string, string | null> = {
  "1.2.840.113549.1.1.5": "sha1", // sha1WithRSAEncryption
  "1.2.840.113549.1.1.11": "sha256", // sha256WithRSAEncryption
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.2.840.10045.4.1": "sha1", // ecdsa-with-SHA1
  "1.2.840.10045.4.3.2": "sha256", // ecdsa-with-SHA256
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.3.101.112": null, // Ed25519
  "1.3.101.113": null, // Ed448
};

/** node:crypto's name of each digest RSASSA-PSS parameters may name. */
const DIGESTS: Record<string, string> = {
  "1.3.14.3.2.26": "sha1",
  "2.16.840.1.101.3.4.2.4": "sha224",
  "2.16.840.1.101.3.4.2.1": "sha256",
  "2.16.840.1.101.3.4.2.2": "sha384",
  "2.16.840.1.101.3.4.2.3": "sha512",
};

/** A signature algorithm as a CRL or OCSP answer names it. */
export interface SignatureAlgorithm {
  /** The OID, dotted. */
  algorithm: string;
  /** RSASSA-PSS's parameters (null for another algorithm). */
  pss: PssParams | null;
}

/**
 * Why Prox cannot check signatures made with `alg`, or null when it can: RSASSA-PSS (RFC 4055)
 * with MGF1 over the message's own digest (what OpenSSL and every CA sign with), and the
 * algorithms of ALGORITHMS.
 */
export function unsupported(alg: SignatureAlgorithm): string | null {
  if (alg.algorithm === RSASSA_PSS) {
    const p = alg.pss;
    if (p === null || !(p.hash in DIGESTS)) return `RSASSA-PSS with digest ${p?.hash}`;
    if (p.mgfHash !== p.hash) return "RSASSA-PSS whose MGF1 digest is not its message digest";
    if (p.trailer !== 1) return `RSASSA-PSS with trailer field ${p.trailer}`;
    return null;
  }
  return alg.algorithm in ALGORITHMS ? null : alg.algorithm;
}

/** Whether `key` made `signature` over `data` with `alg` (false for one `unsupported` names). */
export function signatureVerifies(
  alg: SignatureAlgorithm,
  data: Uint8Array,
  key: X509Certificate["publicKey"],
  signature: Uint8Array,
): boolean {
  if (unsupported(alg) !== null) return false;
  try {
    if (alg.pss !== null) {
      return verify(DIGESTS[alg.pss.hash], data, {
        key,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength: alg.pss.saltLength,
      }, signature);
    }
    return verify(ALGORITHMS[alg.algorithm], data, key, signature);
  } catch {
    return false; // a key of another kind than the algorithm's
  }
}

/**
 * Why the lists of `crlText` (PEM) are not all signed by a certificate of `caText` (PEM), one
 * line per list refused; empty when every list verified. Throws when a list cannot be decoded
 * (domain/crl.ts's message).
 */
export function unsignedLists(crlText: string, caText: string): string[] {
  const cas: { subject: string; cert: X509Certificate }[] = [];
  for (const der of pemBlocks(caText, "CERTIFICATE")) {
    try {
      cas.push({ subject: certificateSubject(der), cert: new X509Certificate(der) });
    } catch { /* not a certificate node:crypto reads: it signs nothing here */ }
  }
  const refused: string[] = [];
  for (const der of pemBlocks(crlText, "X509 CRL")) {
    const list = signedParts(der);
    const name = list.issuerName === null
      ? "a list without a CN"
      : `the list of "${list.issuerName}"`;
    const why = unsupported(list);
    if (why !== null) {
      refused.push(`${name} is signed with an algorithm Prox does not check (${why})`);
      continue;
    }
    const signers = cas.filter((c) => c.subject === list.issuer);
    if (signers.length === 0) {
      refused.push(
        `${name} is not from a CA in ca_cert (no certificate there is its issuer: for an intermediate's list, add the intermediate to ca_cert)`,
      );
      continue;
    }
    const ok = signers.some((c) =>
      signatureVerifies(list, list.tbs, c.cert.publicKey, list.signature)
    );
    if (!ok) refused.push(`${name} does not verify with its issuer's key in ca_cert`);
  }
  return refused;
}
