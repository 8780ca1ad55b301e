// Certificate revocation lists (RFC 5280 §5) for `tls.client_auth.crl_file`: which certificates
// their issuers have revoked, keyed by issuer name (its DER bytes) and serial number. Deno's
// node:tls takes a `crl` option and ignores it, so Prox reads the lists itself and checks each
// verified client certificate against them. Only what that needs is decoded (DER, definite
// lengths). Each list's signature is checked against the CA file's certificates where the list
// is loaded (adapters/crl_verify.ts, with node:crypto): `signedParts` hands it what that needs.

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
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** A serial number's INTEGER contents as upper-case hex without leading zeros ("06" → "6"). */
function serialHex(bytes: Uint8Array): string {
  return hex(bytes).replace(/^0+(?=.)/, "").toUpperCase();
}

/** An ASN.1 UTCTime or GeneralizedTime (the forms RFC 5280 §4.1.2.5 allows) as ms. */
function timeOf(buf: Uint8Array, el: Der): number {
  const s = new TextDecoder().decode(buf.subarray(el.start, el.end));
  const m = el.tag === UTC_TIME
    ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
    : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) throw new Error(`unsupported time "${s}"`);
  let year = Number(m[1]);
  if (el.tag === UTC_TIME) year += year >= 50 ? 1900 : 2000;
  return Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** One decoded list. */
export interface Crl {
  /** The issuer's Name, DER, as hex (what a certificate's issuer field holds byte for byte). */
  issuer: string;
  /** Revoked serial numbers, upper-case hex without leading zeros. */
  revoked: Set<string>;
  /** When the issuer promised the next list (ms), null when it did not say. */
  nextUpdate: number | null;
}

/** Decodes one DER CertificateList; throws with the reason when it is not one. */
export function parseCrl(der: Uint8Array): Crl {
  const list = readDer(der, 0);
  if (list.tag !== SEQUENCE) throw new Error("not a CertificateList");
  const tbs = children(der, list)[0];
  if (!tbs || tbs.tag !== SEQUENCE) throw new Error("not a CertificateList");
  const f = children(der, tbs);
  let i = 0;
  if (f[i]?.tag === INTEGER) i++; // version
  i++; // signature algorithm
  const issuer = f[i++];
  if (!issuer || issuer.tag !== SEQUENCE) throw new Error("no issuer name");
  i++; // thisUpdate
  let nextUpdate: number | null = null;
  if (f[i] && (f[i].tag === UTC_TIME || f[i].tag === GENERALIZED_TIME)) {
    nextUpdate = timeOf(der, f[i++]);
  }
  const revoked = new Set<string>();
  if (f[i]?.tag === SEQUENCE) {
    for (const entry of children(der, f[i++])) {
      const [serial, , exts] = children(der, entry);
      if (!serial || serial.tag !== INTEGER) throw new Error("a revoked entry without a serial");
      // certificateIssuer (an indirect list's entry of another CA) is the critical one there is.
      if (exts?.tag === SEQUENCE) refuseCritical(der, exts, "an entry");
      revoked.add(serialHex(der.subarray(serial.start, serial.end)));
    }
  }
  if (f[i]?.tag === 0xa0 && children(der, f[i])[0]?.tag === SEQUENCE) {
    refuseCritical(der, children(der, f[i])[0], "the list");
  }
  return { issuer: hex(der.subarray(issuer.from, issuer.end)), revoked, nextUpdate };
}

const ISSUING_DISTRIBUTION_POINT = "2.5.29.28";

/** Why a list with each critical extension Prox does not process cannot be read. */
const UNPROCESSED: Record<string, string> = {
  "2.5.29.27": "is a delta CRL (deltaCRLIndicator): it lists only the changes since its base " +
    "list, which Prox needs instead",
  "2.5.29.29": "names another CA in an entry (certificateIssuer): Prox reads a CA's own lists only",
};

/**
 * Throws for a critical extension in `exts` (Extensions, RFC 5280 §4.1) that Prox does not
 * process: RFC 5280 §5.2, §5.3 forbid using such a list (read as a complete one, a delta list
 * let in what its base revokes). An issuing distribution point is read (a list of only some
 * certificates or reasons still revokes those it names), unless it makes the list indirect.
 */
function refuseCritical(der: Uint8Array, exts: Der, where: string): void {
  for (const ext of children(der, exts)) {
    const [id, critical, value] = children(der, ext);
    if (id?.tag !== OBJECT_IDENTIFIER) throw new Error("a malformed extension");
    if (critical?.tag !== BOOLEAN || der[critical.start] === 0) continue;
    const oid = oidOf(der.subarray(id.start, id.end));
    if (oid === ISSUING_DISTRIBUTION_POINT && value?.tag === OCTET_STRING) {
      // indirectCRL [4] BOOLEAN TRUE: its entries may be other CAs' certificates.
      const idp = readDer(der, value.start);
      if (!children(der, idp).some((c) => c.tag === 0x84 && der[c.start] !== 0)) continue;
      throw new Error(
        `${where} is an indirect CRL (issuingDistributionPoint): its entries may be other CAs' ` +
          "certificates, which Prox cannot tell apart",
      );
    }
    throw new Error(
      `${where} ${
        UNPROCESSED[oid] ?? `has a critical extension Prox does not process (${oid})`
      }: RFC 5280 §5.2 forbids using it`,
    );
  }
}

const OBJECT_IDENTIFIER = 0x06;
const BIT_STRING = 0x03;
const BOOLEAN = 0x01;
const OCTET_STRING = 0x04;

/** What checking a CertificateList's signature takes (RFC 5280 §5.1.1). */
export interface SignedParts {
  /** The issuer's Name, DER, as hex (as `Crl.issuer`). */
  issuer: string;
  /** The issuer's common name (CN), for messages; null when it has none. */
  issuerName: string | null;
  /** tbsCertList, DER: what was signed. */
  tbs: Uint8Array;
  /** signatureAlgorithm's OID, dotted ("1.2.840.113549.1.1.11"). */
  algorithm: string;
  /** Its parameters when it is RSASSA-PSS, else null. */
  pss: PssParams | null;
  /** signatureValue's bits. */
  signature: Uint8Array;
}

/** The signed parts of one DER CertificateList; throws with the reason when it is not one. */
export function signedParts(der: Uint8Array): SignedParts {
  const list = readDer(der, 0);
  if (list.tag !== SEQUENCE) throw new Error("not a CertificateList");
  const [tbs, alg, sig] = children(der, list);
  if (!tbs || tbs.tag !== SEQUENCE || !alg || alg.tag !== SEQUENCE || sig?.tag !== BIT_STRING) {
    throw new Error("not a CertificateList");
  }
  const oid = children(der, alg)[0];
  if (!oid || oid.tag !== OBJECT_IDENTIFIER) throw new Error("no signature algorithm");
  const f = children(der, tbs);
  const issuer = f[f[0]?.tag === INTEGER ? 2 : 1];
  if (!issuer || issuer.tag !== SEQUENCE) throw new Error("no issuer name");
  // The BIT STRING's first byte counts the unused bits of its last: 0 for a signature.
  if (sig.end - sig.start < 2 || der[sig.start] !== 0) throw new Error("a malformed signature");
  const algorithm = oidOf(der.subarray(oid.start, oid.end));
  return {
    issuer: hex(der.subarray(issuer.from, issuer.end)),
    issuerName: commonName(der, issuer),
    tbs: der.subarray(tbs.from, tbs.end),
    algorithm,
    pss: algorithm === RSASSA_PSS ? pssParams(der, alg) : null,
    signature: der.subarray(sig.start + 1, sig.end),
  };
}

/** The CN of a Name (RFC 5280 §4.1.2.4), if it has one; null otherwise. */
function commonName(der: Uint8Array, name: Der): string | null {
  for (const rdn of children(der, name)) {
    for (const atv of children(der, rdn)) {
      const [type, value] = children(der, atv);
      if (type?.tag !== OBJECT_IDENTIFIER || !value) continue;
      if (oidOf(der.subarray(type.start, type.end)) !== "2.5.4.3") continue;
      return new TextDecoder().decode(der.subarray(value.start, value.end));
    }
  }
  return null;
}

/** The subject Name (DER, hex) of a DER certificate: what a list it signed names as issuer. */
export function certificateSubject(der: Uint8Array): string {
  return hex(subjectOf(der).bytes);
}

/** The subject's CN of a DER certificate (for messages); null when it has none. */
export function certificateCommonName(der: Uint8Array): string | null {
  return commonName(der, subjectOf(der).el);
}

/** Whether a DER certificate's basicConstraints says it is a CA (RFC 5280 §4.2.1.9). */
export function certificateIsCa(der: Uint8Array): boolean {
  const cert = readDer(der, 0);
  const tbs = children(der, cert)[0];
  if (!tbs || tbs.tag !== SEQUENCE) throw new Error("not a certificate");
  const exts = children(der, tbs).find((e) => e.tag === 0xa3);
  const list = exts ? children(der, exts)[0] : undefined;
  for (const ext of list?.tag === SEQUENCE ? children(der, list) : []) {
    const e = children(der, ext);
    if (e[0]?.tag !== OBJECT_IDENTIFIER) continue;
    if (oidOf(der.subarray(e[0].start, e[0].end)) !== "2.5.29.19") continue;
    const value = e[e[1]?.tag === BOOLEAN ? 2 : 1];
    if (value?.tag !== OCTET_STRING) return false;
    const [ca] = children(der, readDer(der, value.start));
    return ca?.tag === BOOLEAN && der[ca.start] !== 0;
  }
  return false;
}

function subjectOf(der: Uint8Array): { el: Der; bytes: Uint8Array } {
  const cert = readDer(der, 0);
  const tbs = children(der, cert)[0];
  if (!tbs || tbs.tag !== SEQUENCE) throw new Error("not a certificate");
  const f = children(der, tbs);
  // [0] version, serial, signature, issuer, validity, subject
  const subject = f[(f[0]?.tag === 0xa0 ? 1 : 0) + 4];
  if (!subject || subject.tag !== SEQUENCE) throw new Error("not a certificate");
  return { el: subject, bytes: der.subarray(subject.from, subject.end) };
}

/** The issuer Name (DER, hex) and serial number of a DER certificate (RFC 5280 §4.1). */
export function certificateIssuerSerial(der: Uint8Array): { issuer: string; serial: string } {
  const cert = readDer(der, 0);
  const tbs = children(der, cert)[0];
  if (!tbs || tbs.tag !== SEQUENCE) throw new Error("not a certificate");
  const f = children(der, tbs);
  let i = 0;
  if (f[i]?.tag === 0xa0) i++; // [0] version
  const serial = f[i++];
  i++; // signature algorithm
  const issuer = f[i];
  if (!serial || serial.tag !== INTEGER || !issuer) throw new Error("not a certificate");
  return {
    issuer: hex(der.subarray(issuer.from, issuer.end)),
    serial: serialHex(der.subarray(serial.start, serial.end)),
  };
}

/** The DER blocks of a PEM text with the given label ("X509 CRL"). */
export function pemBlocks(text: string, label: string): Uint8Array[] {
  const re = new RegExp(`-----BEGIN ${label}-----([^-]*)-----END ${label}-----`, "g");
  return [...text.matchAll(re)].map((m) =>
    Uint8Array.from(atob(m[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0))
  );
}

/** Checks certificates against a set of lists. */
export interface RevocationCheck {
  /** Whether the DER certificate is on its issuer's list. */
  revoked(der: Uint8Array): boolean;
  /**
   * Whether the DER certificate's issuer has a list here: without one nothing says it was not
   * revoked (OpenSSL's "unable to get certificate CRL", which nginx's ssl_crl refuses).
   */
  listed(der: Uint8Array): boolean;
  /** The issuers that have a list here (their Name, DER, as hex: `certificateSubject`'s). */
  readonly issuers: ReadonlySet<string>;
  /**
   * When the certificate's issuer promised a list newer than every one of its lists here (ms),
   * if that is before `now`: the list is out of date, and a revocation since is not in it. Null
   * when it is current, when the issuer has no list here, or when its list names no next update.
   */
  staleSince(der: Uint8Array, now: number): number | null;
  /**
   * The earliest of the issuers' promised updates (each issuer's latest) that is before `now`,
   * or null: whether any issuer's clients are refused as `staleSince` says (a list that a newer
   * one of its issuer replaces does not count).
   */
  outOfDate(now: number): number | null;
  /** How many lists, and the earliest promised next update (ms, null: none said). */
  readonly lists: number;
  readonly nextUpdate: number | null;
}

/** Builds the check from a PEM file's text (one or more lists); throws when one is not a list. */
export function revocationCheck(text: string): RevocationCheck {
  const blocks = pemBlocks(text, "X509 CRL");
  // A list cut short (a file caught while it is written) would be skipped, and its issuer's
  // revocations with it: the file is refused instead (a reload then keeps the lists served).
  const begun = text.split("-----BEGIN X509 CRL-----").length - 1;
  if (begun > blocks.length) {
    throw new Error(
      `${begun} list${begun === 1 ? " begins" : "s begin"}, ${blocks.length} end${
        blocks.length === 1 ? "s" : ""
      } (-----END X509 CRL-----): the file is incomplete or damaged`,
    );
  }
  if (blocks.length === 0) throw new Error("no X509 CRL in it (-----BEGIN X509 CRL-----)");
  const byIssuer = new Map<string, Set<string>>();
  /** Per issuer, the latest next update its lists promise (Infinity: one promised none). */
  const dueBy = new Map<string, number>();
  let nextUpdate: number | null = null;
  for (const b of blocks) {
    const crl = parseCrl(b);
    const set = byIssuer.get(crl.issuer) ?? new Set<string>();
    for (const s of crl.revoked) set.add(s);
    byIssuer.set(crl.issuer, set);
    dueBy.set(crl.issuer, Math.max(dueBy.get(crl.issuer) ?? -Infinity, crl.nextUpdate ?? Infinity));
    if (crl.nextUpdate !== null) nextUpdate = Math.min(nextUpdate ?? Infinity, crl.nextUpdate);
  }
  return {
    lists: blocks.length,
    nextUpdate,
    issuers: new Set(byIssuer.keys()),
    listed(der) {
      try {
        return byIssuer.has(certificateIssuerSerial(der).issuer);
      } catch {
        return false;
      }
    },
    revoked(der) {
      try {
        const { issuer, serial } = certificateIssuerSerial(der);
        return byIssuer.get(issuer)?.has(serial) ?? false;
      } catch {
        return true; // a certificate that cannot be read is not let in
      }
    },
    outOfDate(now) {
      const past = [...dueBy.values()].filter((due) => due < now);
      return past.length === 0 ? null : Math.min(...past);
    },
    staleSince(der, now) {
      let due: number | undefined;
      try {
        due = dueBy.get(certificateIssuerSerial(der).issuer);
      } catch {
        return null; // revoked() refuses it
      }
      return due !== undefined && due < now ? due : null;
    },
  };
}
