// A client certificate's names as `{tls_client_subject}`, `{tls_client_issuer}` and
// `{tls_client_san}` write them, decoded from its DER (RFC 5280 §4.1, §4.2.1.6): Deno's node:tls
// joins the subjectAltName values with ", " unescaped, so a value holding ", URI:…" read as a
// second name to a route's `san_matches` (Node.js quotes such values since CVE-2021-44532); and
// its subject leaves out the attributes it has no name for (DC, UID) and groups repeated ones
// out of order, so two different subjects could read the same to `subject_matches`.

import { children, type Der, oidOf, readDer } from "./der.ts";
import { formatIp, isV4 } from "./ip.ts";

const OBJECT_IDENTIFIER = 0x06;
const OCTET_STRING = 0x04;
const BOOLEAN = 0x01;
const SUBJECT_ALT_NAME = "2.5.29.17";

/** A certificate's extensions (its tbsCertificate's [3]), empty when it has none. */
function extensions(der: Uint8Array): { oid: string; value: Uint8Array }[] {
  const tbs = children(der, readDer(der, 0))[0];
  if (!tbs) throw new Error("not a certificate");
  const outer = children(der, tbs).find((f) => f.tag === 0xa3);
  if (!outer) return [];
  const list = children(der, outer)[0];
  if (!list) return [];
  return children(der, list).map((ext) => {
    const f = children(der, ext);
    const oid = f[0];
    const value = f[f[1]?.tag === BOOLEAN ? 2 : 1];
    if (oid?.tag !== OBJECT_IDENTIFIER || value?.tag !== OCTET_STRING) {
      throw new Error("a malformed extension");
    }
    return {
      oid: oidOf(der.subarray(oid.start, oid.end)),
      value: der.subarray(value.start, value.end),
    };
  });
}

/**
 * A name value as Node.js writes it in a subjectAltName list: as is when it is plain, else in
 * double quotes, JSON-escaped with its commas as \u002c, so that one value can never read as two.
 */
function altValue(v: string): string {
  // deno-lint-ignore no-control-regex
  if (!/[",'\\\x00-\x1f\x7f]/.test(v)) return v;
  return JSON.stringify(v).replaceAll(",", "\\u002c");
}

const latin1 = (b: Uint8Array) => String.fromCharCode(...b);

/** One GeneralName (RFC 5280 §4.2.1.6) as OpenSSL names its kind ("DNS:a.example"). */
function generalName(der: Uint8Array, g: Der): string {
  const body = der.subarray(g.start, g.end);
  switch (g.tag) {
    case 0x81:
      return `email:${altValue(latin1(body))}`;
    case 0x82:
      return `DNS:${altValue(latin1(body))}`;
    case 0x86:
      return `URI:${altValue(latin1(body))}`;
    case 0x87:
      if (body.length === 4) return `IP Address:${body.join(".")}`;
      if (body.length !== 16) return "IP Address:<invalid>";
      // (formatIp writes a v4-mapped address as the v4 one it stands for: not what it says.)
      return `IP Address:${isV4(body) ? `::ffff:${body.subarray(12).join(".")}` : formatIp(body)}`;
    case 0x88:
      return `Registered ID:${oidOf(body)}`;
    case 0xa4: {
      const name = children(der, g)[0];
      return `DirName:${altValue(name ? distinguishedName(der, name) : "")}`;
    }
    case 0xa0:
      return "othername:<unsupported>";
    case 0xa3:
      return "X400Name:<unsupported>";
    case 0xa5:
      return "EdiPartyName:<unsupported>";
    default:
      return "<unsupported>";
  }
}

const KEY_USAGE = "2.5.29.15";
const BIT_STRING = 0x03;

/**
 * Whether a certificate may sign, as a TLS client's CertificateVerify does: a keyUsage extension,
 * when present, must assert digitalSignature (RFC 5280 §4.2.1.3, RFC 8446 §4.4.2.4). Deno's TLS
 * ignores keyUsage; OpenSSL-based servers refuse such a client. False for a malformed extension.
 */
export function keyUsageAllowsSigning(der: Uint8Array): boolean {
  const ext = extensions(der).find((e) => e.oid === KEY_USAGE);
  if (!ext) return true;
  const bits = readDer(ext.value, 0);
  // The first content byte counts the unused bits; digitalSignature is the first bit after it.
  if (bits.tag !== BIT_STRING || bits.end - bits.start < 2) return false;
  return (ext.value[bits.start + 1] & 0x80) !== 0;
}

const TLS_FEATURE = "1.3.6.1.5.5.7.1.24";
/** TLS Feature `status_request` (RFC 7633 §4.2: the extension's number, RFC 6066's OCSP). */
const STATUS_REQUEST = 5;

/**
 * Whether a certificate asks clients to require a stapled OCSP answer ("OCSP must-staple": a TLS
 * Feature extension listing status_request, RFC 7633). False for a malformed extension.
 */
export function mustStaple(der: Uint8Array): boolean {
  try {
    const ext = extensions(der).find((e) => e.oid === TLS_FEATURE);
    if (!ext) return false;
    const list = readDer(ext.value, 0);
    if (list.tag !== 0x30) return false;
    return children(ext.value, list).some((n) =>
      n.tag === 0x02 && n.end - n.start === 1 && ext.value[n.start] === STATUS_REQUEST
    );
  } catch {
    return false; // malformed: the listener decides about such a certificate
  }
}

/** A DER certificate's subject and issuer as RFC 4514 writes them (`distinguishedName`). */
export function certificateNames(der: Uint8Array): { subject: string; issuer: string } {
  const tbs = children(der, readDer(der, 0))[0];
  if (!tbs) throw new Error("not a certificate");
  const f = children(der, tbs);
  // [0] version, serial, signature, issuer, validity, subject
  const at = f[0]?.tag === 0xa0 ? 1 : 0;
  const issuer = f[at + 2], subject = f[at + 4];
  if (issuer?.tag !== 0x30 || subject?.tag !== 0x30) throw new Error("not a certificate");
  return { subject: distinguishedName(der, subject), issuer: distinguishedName(der, issuer) };
}

/** The subjectAltName list of a DER certificate, ", " between names; "" without one. */
export function subjectAltNames(der: Uint8Array): string {
  const ext = extensions(der).find((e) => e.oid === SUBJECT_ALT_NAME);
  if (!ext) return "";
  const list = readDer(ext.value, 0);
  return children(ext.value, list).map((g) => generalName(ext.value, g)).join(", ");
}

/** RFC 4514 §3's short names, and OpenSSL's for the attributes it has one for. */
const SHORT_NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.6": "C",
  "2.5.4.9": "STREET",
  "0.9.2342.19200300.100.1.25": "DC",
  "0.9.2342.19200300.100.1.1": "UID",
  "1.2.840.113549.1.9.1": "emailAddress",
  "2.5.4.5": "serialNumber",
  "2.5.4.4": "SN",
  "2.5.4.42": "GN",
  "2.5.4.12": "title",
  "2.5.4.43": "initials",
  "2.5.4.44": "generationQualifier",
  "2.5.4.46": "dnQualifier",
  "2.5.4.65": "pseudonym",
  "2.5.4.17": "postalCode",
  "2.5.4.97": "organizationIdentifier",
};

/** A directory string's text (UTF8String, PrintableString, IA5String, BMPString, …). */
function stringOf(der: Uint8Array, v: Der): string | null {
  const b = der.subarray(v.start, v.end);
  switch (v.tag) {
    case 0x0c: // UTF8String
      return new TextDecoder().decode(b);
    case 0x13: // PrintableString
    case 0x16: // IA5String
    case 0x14: // TeletexString (Latin-1 in practice)
    case 0x1a: // VisibleString
      return latin1(b);
    case 0x1e: // BMPString: UTF-16BE
      return new TextDecoder("utf-16be").decode(b);
    default:
      return null;
  }
}

/**
 * Control characters as RFC 4514's \XX: a value holding one would make a header rule that sends
 * it skip (Deno cannot send it), and leave a client's own header of that name in place.
 */
// deno-lint-ignore no-control-regex
const CONTROLS = /[\x00-\x1f\x7f]/g;

/** A value escaped as RFC 4514 §2.4 asks, control characters as \XX too. */
function escapeValue(v: string): string {
  return v.replace(/([,+"\\<>;=])/g, "\\$1").replace(/^([ #])/, "\\$1").replace(/ $/, "\\ ")
    .replace(CONTROLS, (c) => "\\" + c.charCodeAt(0).toString(16).padStart(2, "0").toUpperCase());
}

/**
 * A Name (DER) as RFC 4514 writes it: its RDNs most specific first, an RDN's attributes joined by
 * "+", a type without a short name as its OID with the value's DER in hex (§2.3, §2.4).
 */
export function distinguishedName(der: Uint8Array, name: Der): string {
  return children(der, name).reverse().map((rdn) =>
    children(der, rdn).map((atv) => {
      const [type, value] = children(der, atv);
      if (type?.tag !== OBJECT_IDENTIFIER || !value) throw new Error("a malformed name");
      const oid = oidOf(der.subarray(type.start, type.end));
      const text = SHORT_NAMES[oid] === undefined ? null : stringOf(der, value);
      if (text === null) {
        const hex = Array.from(der.subarray(value.from, value.end), (x) =>
          x.toString(16).padStart(2, "0")).join("");
        return `${SHORT_NAMES[oid] ?? oid}=#${hex}`;
      }
      return `${SHORT_NAMES[oid]}=${escapeValue(text)}`;
    }).join("+")
  ).join(",");
}
