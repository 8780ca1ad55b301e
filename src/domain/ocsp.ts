// OCSP (RFC 6960) for `tls.client_auth.ocsp`: the request that asks a responder whether a client
// certificate is revoked, and the decoding of its answer. Only what that needs is encoded and
// decoded (DER, definite lengths). Hashing and signature checks are the adapter's
// (adapters/ocsp_check.ts, with node:crypto): this hands it the bytes they cover.

import {
  children,
  type Der,
  oidOf,
  type PssParams,
  pssParams,
  readDer,
  RSASSA_PSS,
} from "./der.ts";

const SEQUENCE = 0x30;
const INTEGER = 0x02;
const OCTET_STRING = 0x04;
const OBJECT_IDENTIFIER = 0x06;
const BIT_STRING = 0x03;
const BOOLEAN = 0x01;
const ENUMERATED = 0x0a;
const GENERALIZED_TIME = 0x18;

/** SHA-1's AlgorithmIdentifier (1.3.14.3.2.26, NULL parameters): the CertID hash responders take. */
const SHA1_ALGORITHM = Uint8Array.from(
  "300906052b0e03021a0500".match(/../g)!,
  (h) => parseInt(h, 16),
);
const AUTHORITY_INFO_ACCESS = "1.3.6.1.5.5.7.1.1";
const AD_OCSP = "1.3.6.1.5.5.7.48.1";
const BASIC_RESPONSE = "1.3.6.1.5.5.7.48.1.1";
const EXTENDED_KEY_USAGE = "2.5.29.37";
const KP_OCSP_SIGNING = "1.3.6.1.5.5.7.3.9";

/** A DER element of `tag` holding `parts`. */
function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const head = len < 0x80
    ? [tag, len]
    : len < 0x100
    ? [tag, 0x81, len]
    : len < 0x10000
    ? [tag, 0x82, len >> 8, len & 0xff]
    : [tag, 0x83, len >> 16, (len >> 8) & 0xff, len & 0xff];
  const out = new Uint8Array(head.length + len);
  out.set(head);
  let at = head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** What a certificate contributes to an OCSP exchange, as the subject or as the issuer. */
export interface OcspCertFields {
  /** The issuer field, DER (its SHA-1 is the CertID's issuerNameHash for this certificate). */
  issuerName: Uint8Array;
  /** The subject field, DER (a responder named by this certificate has this name). */
  subjectName: Uint8Array;
  /** The serial number's INTEGER contents. */
  serial: Uint8Array;
  /** The subjectPublicKey's bits (its SHA-1 is the issuerKeyHash of what this one issued). */
  publicKey: Uint8Array;
  /** The OCSP responders its authorityInfoAccess names (http: or https: URIs). */
  ocspUrls: string[];
  /** Whether its extendedKeyUsage allows signing OCSP answers (a delegated responder's). */
  ocspSigning: boolean;
}

/** Reads a DER certificate's OCSP fields; throws when it is not a certificate. */
export function ocspCertFields(der: Uint8Array): OcspCertFields {
  const cert = readDer(der, 0);
  const tbs = children(der, cert)[0];
  if (cert.tag !== SEQUENCE || tbs?.tag !== SEQUENCE) throw new Error("not a certificate");
  const f = children(der, tbs);
  let i = f[0]?.tag === 0xa0 ? 1 : 0; // [0] version
  const serial = f[i++];
  i++; // signature algorithm
  const issuer = f[i++];
  i++; // validity
  const subject = f[i++];
  const spki = f[i++];
  if (serial?.tag !== INTEGER || issuer?.tag !== SEQUENCE || subject?.tag !== SEQUENCE) {
    throw new Error("not a certificate");
  }
  const bits = spki?.tag === SEQUENCE ? children(der, spki)[1] : undefined;
  if (bits?.tag !== BIT_STRING || bits.end - bits.start < 1) throw new Error("no public key");
  const out: OcspCertFields = {
    issuerName: der.subarray(issuer.from, issuer.end),
    subjectName: der.subarray(subject.from, subject.end),
    serial: der.subarray(serial.start, serial.end),
    publicKey: der.subarray(bits.start + 1, bits.end),
    ocspUrls: [],
    ocspSigning: false,
  };
  const exts = f.find((e) => e.tag === 0xa3);
  const list = exts ? children(der, exts)[0] : undefined;
  for (const ext of list ? children(der, list) : []) {
    const e = children(der, ext);
    const value = e[e[1]?.tag === BOOLEAN ? 2 : 1];
    if (e[0]?.tag !== OBJECT_IDENTIFIER || value?.tag !== OCTET_STRING) continue;
    const oid = oidOf(der.subarray(e[0].start, e[0].end));
    // Only the two extensions read here are decoded: another's value may be anything.
    if (oid !== AUTHORITY_INFO_ACCESS && oid !== EXTENDED_KEY_USAGE) continue;
    const inner = readDer(der, value.start);
    if (inner.end > value.end) throw new Error("an extension longer than its value");
    if (oid === AUTHORITY_INFO_ACCESS && inner.tag === SEQUENCE) {
      for (const ad of children(der, inner)) {
        const [method, location] = children(der, ad);
        if (method?.tag !== OBJECT_IDENTIFIER || location?.tag !== 0x86) continue;
        if (oidOf(der.subarray(method.start, method.end)) !== AD_OCSP) continue;
        const url = String.fromCharCode(...der.subarray(location.start, location.end));
        if (/^https?:\/\//i.test(url)) out.ocspUrls.push(url);
      }
    } else if (oid === EXTENDED_KEY_USAGE && inner.tag === SEQUENCE) {
      out.ocspSigning = children(der, inner).some((p) =>
        p.tag === OBJECT_IDENTIFIER && oidOf(der.subarray(p.start, p.end)) === KP_OCSP_SIGNING
      );
    }
  }
  return out;
}

/** A CertID (RFC 6960 §4.1.1) with SHA-1 hashes, as responders are asked. */
export interface CertId {
  /** SHA-1 of the checked certificate's issuer field. */
  issuerNameHash: Uint8Array;
  /** SHA-1 of the issuer's public key bits. */
  issuerKeyHash: Uint8Array;
  /** The checked certificate's serial number (INTEGER contents). */
  serial: Uint8Array;
}

function certIdDer(id: CertId): Uint8Array<ArrayBuffer> {
  return tlv(
    SEQUENCE,
    SHA1_ALGORITHM,
    tlv(OCTET_STRING, id.issuerNameHash),
    tlv(OCTET_STRING, id.issuerKeyHash),
    tlv(INTEGER, id.serial),
  );
}

/** The DER OCSPRequest for one certificate (no nonce, no signature: RFC 5019's profile). */
export function ocspRequest(id: CertId): Uint8Array<ArrayBuffer> {
  return tlv(SEQUENCE, tlv(SEQUENCE, tlv(SEQUENCE, tlv(SEQUENCE, certIdDer(id)))));
}

/** One SingleResponse. */
export interface OcspSingle {
  /** Whether its CertID is the one asked about (SHA-1, same hashes and serial). */
  matches(id: CertId): boolean;
  status: "good" | "revoked" | "unknown";
  /** ms */
  thisUpdate: number;
  /** ms; null when the responder gave none (newer information is always available). */
  nextUpdate: number | null;
  /** ms, for a revoked certificate. */
  revokedAt: number | null;
}

/** A decoded OCSPResponse. */
export interface OcspResponse {
  /** responseStatus: 0 successful, 1 malformedRequest, 2 internalError, 3 tryLater, 5 sigRequired, 6 unauthorized. */
  status: number;
  /** tbsResponseData, DER: what was signed (empty unless status is 0). */
  tbs: Uint8Array;
  /** signatureAlgorithm's OID, dotted. */
  algorithm: string;
  /** Its parameters when it is RSASSA-PSS, else null. */
  pss: PssParams | null;
  /** The signature's bits. */
  signature: Uint8Array;
  /** The responder: by name (its subject, DER) or by key (SHA-1 of its public key bits). */
  responder: { name: Uint8Array } | { keyHash: Uint8Array };
  /** The certificates it sent along (a delegated responder's), DER. */
  certs: Uint8Array[];
  responses: OcspSingle[];
}

const equal = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/** An INTEGER's contents without the leading zero bytes DER adds or that a serial may keep. */
const unpadded = (b: Uint8Array) => {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
};

/** A GeneralizedTime (YYYYMMDDHHMMSS[.fff]Z) as ms. */
function generalizedTime(der: Uint8Array, el: Der): number {
  if (el.tag !== GENERALIZED_TIME) throw new Error("not a GeneralizedTime");
  const s = new TextDecoder().decode(der.subarray(el.start, el.end));
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?Z$/.exec(s);
  if (!m) throw new Error(`unsupported time "${s}"`);
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

/** Decodes a DER OCSPResponse; throws with the reason when it is not one Prox can read. */
export function parseOcspResponse(der: Uint8Array): OcspResponse {
  const top = readDer(der, 0);
  if (top.tag !== SEQUENCE || top.end !== der.length) throw new Error("not an OCSPResponse");
  const [statusEl, bytesEl] = children(der, top);
  if (statusEl?.tag !== ENUMERATED || statusEl.end - statusEl.start !== 1) {
    throw new Error("not an OCSPResponse");
  }
  const status = der[statusEl.start];
  const empty: OcspResponse = {
    status,
    tbs: new Uint8Array(0),
    algorithm: "",
    pss: null,
    signature: new Uint8Array(0),
    responder: { keyHash: new Uint8Array(0) },
    certs: [],
    responses: [],
  };
  if (status !== 0) return empty;
  const rb = bytesEl?.tag === 0xa0 ? children(der, bytesEl)[0] : undefined;
  const [type, octets] = rb?.tag === SEQUENCE ? children(der, rb) : [];
  if (type?.tag !== OBJECT_IDENTIFIER || octets?.tag !== OCTET_STRING) {
    throw new Error("a successful answer without responseBytes");
  }
  const kind = oidOf(der.subarray(type.start, type.end));
  if (kind !== BASIC_RESPONSE) throw new Error(`an answer of type ${kind}, not basic`);
  const basic = readDer(der, octets.start);
  if (basic.tag !== SEQUENCE || basic.end !== octets.end) throw new Error("a malformed answer");
  const [tbs, alg, sig, certsEl] = children(der, basic);
  if (tbs?.tag !== SEQUENCE || alg?.tag !== SEQUENCE || sig?.tag !== BIT_STRING) {
    throw new Error("a malformed answer");
  }
  const oid = children(der, alg)[0];
  if (oid?.tag !== OBJECT_IDENTIFIER) throw new Error("no signature algorithm");
  if (sig.end - sig.start < 2 || der[sig.start] !== 0) throw new Error("a malformed signature");
  const certs: Uint8Array[] = [];
  if (certsEl?.tag === 0xa0) {
    const seq = children(der, certsEl)[0];
    for (const c of seq?.tag === SEQUENCE ? children(der, seq) : []) {
      certs.push(der.subarray(c.from, c.end));
    }
  }
  const f = children(der, tbs);
  let i = f[0]?.tag === 0xa0 ? 1 : 0; // [0] version
  const rid = f[i++];
  i++; // producedAt
  const list = f[i];
  if (!rid || list?.tag !== SEQUENCE) throw new Error("a malformed answer");
  let responder: OcspResponse["responder"];
  const ridInner = children(der, rid)[0];
  if (rid.tag === 0xa1 && ridInner?.tag === SEQUENCE) {
    responder = { name: der.subarray(ridInner.from, ridInner.end) };
  } else if (rid.tag === 0xa2 && ridInner?.tag === OCTET_STRING) {
    responder = { keyHash: der.subarray(ridInner.start, ridInner.end) };
  } else throw new Error("a malformed responder id");
  const responses: OcspSingle[] = [];
  for (const single of children(der, list)) {
    const [idEl, statusChoice, thisEl, ...rest] = children(der, single);
    const idParts = idEl?.tag === SEQUENCE ? children(der, idEl) : [];
    const [algEl, nameHash, keyHash, serial] = idParts;
    if (
      algEl?.tag !== SEQUENCE || nameHash?.tag !== OCTET_STRING ||
      keyHash?.tag !== OCTET_STRING || serial?.tag !== INTEGER || !statusChoice || !thisEl
    ) throw new Error("a malformed single response");
    const algOid = children(der, algEl)[0];
    const sha1 = algOid?.tag === OBJECT_IDENTIFIER &&
      oidOf(der.subarray(algOid.start, algOid.end)) === "1.3.14.3.2.26";
    const names = der.subarray(nameHash.start, nameHash.end);
    const keys = der.subarray(keyHash.start, keyHash.end);
    const serialBytes = der.subarray(serial.start, serial.end);
    const next = rest.find((e) => e.tag === 0xa0);
    let revokedAt: number | null = null;
    const which = statusChoice.tag & 0x1f;
    if (statusChoice.tag === 0xa1) {
      revokedAt = generalizedTime(der, children(der, statusChoice)[0] ?? statusChoice);
    } else if (statusChoice.tag !== 0x80 && statusChoice.tag !== 0x82) {
      throw new Error("a malformed certificate status");
    }
    responses.push({
      matches: (id) =>
        sha1 && equal(names, id.issuerNameHash) && equal(keys, id.issuerKeyHash) &&
        equal(unpadded(serialBytes), unpadded(id.serial)),
      status: which === 0 ? "good" : which === 1 ? "revoked" : "unknown",
      thisUpdate: generalizedTime(der, thisEl),
      nextUpdate: next ? generalizedTime(der, children(der, next)[0] ?? next) : null,
      revokedAt,
    });
  }
  const algorithm = oidOf(der.subarray(oid.start, oid.end));
  return {
    status,
    tbs: der.subarray(tbs.from, tbs.end),
    algorithm,
    pss: algorithm === RSASSA_PSS ? pssParams(der, alg) : null,
    signature: der.subarray(sig.start + 1, sig.end),
    responder,
    certs,
    responses,
  };
}

/** responseStatus's names (RFC 6960 §4.2.1), for messages. */
export const RESPONSE_STATUS: Record<number, string> = {
  0: "successful",
  1: "malformedRequest",
  2: "internalError",
  3: "tryLater",
  5: "sigRequired",
  6: "unauthorized",
};
