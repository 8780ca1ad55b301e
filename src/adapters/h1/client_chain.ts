// The chain of a client's certificate as revocation checks (crl_file, ocsp) must walk it: each
// certificate followed by the one whose key signed it. node:tls's detailed peer certificate links
// the certificates the client sent by name, so a client could slip in a look-alike issuer (the
// CA's name, a key of its own) and have an OCSP answer checked against that key, or have a
// revoked intermediate's place taken by another. Here a link holds only when the signature
// verifies, and the CAs of ca_cert are tried before what the client sent.

import { createHash, X509Certificate } from "node:crypto";
import { pemBlocks } from "../../domain/crl.ts";

/** How many certificates up a chain are followed (OpenSSL's default depth). */
const MAX_CHAIN = 100;
/**
 * The certificates a client sent that are looked at (real chains hold 1-4): past them, a client
 * sending hundreds of look-alike issuers would cost a signature check each per handshake.
 */
const MAX_SENT = 16;
/** Signature checks remembered (each costs about a millisecond). */
const MAX_REMEMBERED = 4_096;

/** A client certificate's chain, linked by signatures. */
export interface SignedChain {
  /** DER: the client's certificate, then each issuer that signed the one before. */
  certs: Uint8Array[];
  /** Whether the last one signed itself (a root: no one above it to ask or list it). */
  selfSigned: boolean;
  /** Whether the last one is a certificate of ca_cert (a trust anchor, with or without a root). */
  trusted: boolean;
}

/** Builds chains for clients verified against `caPem` (ca_cert). */
export function chainBuilder(caPem: string): (leaf: Uint8Array, sent: Uint8Array[]) => SignedChain {
  const trusted = pemBlocks(caPem, "CERTIFICATE").map((der) => parsed(der)).filter((c) =>
    c !== null
  );
  const signedBy = new Map<string, boolean>();
  const verifies = (child: Parsed, parent: Parsed): boolean => {
    if (child.x.issuer !== parent.x.subject) return false;
    const key = `${child.id}:${parent.id}`;
    let ok = signedBy.get(key);
    if (ok === undefined) {
      try {
        ok = child.x.verify(parent.x.publicKey);
      } catch {
        ok = false;
      }
      if (signedBy.size >= MAX_REMEMBERED) signedBy.delete(signedBy.keys().next().value!);
      signedBy.set(key, ok);
    }
    return ok;
  };
  return (leafDer, sentDer) => {
    const leaf = parsed(leafDer);
    if (leaf === null) return { certs: [leafDer], selfSigned: false, trusted: false };
    const candidates = [
      ...trusted,
      // At most MAX_SENT of what the client sent: each look-alike issuer costs a signature check.
      ...sentDer.slice(0, MAX_SENT).map((d) => parsed(d)).filter((c) => c !== null),
    ];
    const certs = [leaf.der];
    const seen = new Set([leaf.id]);
    let c = leaf;
    const done = (selfSigned: boolean) => ({
      certs,
      selfSigned,
      trusted: trusted.some((t) => t.id === c.id),
    });
    for (let depth = 0; depth < MAX_CHAIN; depth++) {
      if (verifies(c, c)) return done(true);
      const issuer = candidates.find((p) => !seen.has(p.id) && verifies(c, p));
      if (!issuer) break;
      certs.push(issuer.der);
      seen.add(issuer.id);
      c = issuer;
    }
    return done(false);
  };
}

interface Parsed {
  der: Uint8Array;
  x: X509Certificate;
  /** SHA-256 of the DER, hex. */
  id: string;
}

function parsed(der: Uint8Array): Parsed | null {
  try {
    return { der, x: new X509Certificate(der), id: createHash("sha256").update(der).digest("hex") };
  } catch {
    return null;
  }
}
