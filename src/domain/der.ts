// DER (X.690) reading for the X.509 structures Prox decodes itself (CRLs, OCSP, certificate
// names): elements with definite lengths, OBJECT IDENTIFIERs, and the RSASSA-PSS parameters of
// a signature algorithm. Pure: the callers hand in bytes.

const SEQUENCE = 0x30;
const INTEGER = 0x02;
const OBJECT_IDENTIFIER = 0x06;
/** One DER element: its tag, and where its contents lie in the buffer. */
export interface Der {
  tag: number;
  start: number;
  end: number;
  /** Where the whole element (tag and length included) began. */
  from: number;
}

/** Reads the element at `pos` of `buf` (throws on a truncated or indefinite-length one). */
export function readDer(buf: Uint8Array, pos: number): Der {
  const from = pos;
  if (pos + 2 > buf.length) throw new Error("truncated DER element");
  const tag = buf[pos++];
  let len = buf[pos++];
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || pos + n > buf.length) throw new Error("unsupported DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos++];
  }
  if (pos + len > buf.length) throw new Error("truncated DER element");
  return { tag, start: pos, end: pos + len, from };
}

/** The elements inside a constructed one. */
export function children(buf: Uint8Array, el: Der): Der[] {
  const out: Der[] = [];
  for (let pos = el.start; pos < el.end;) {
    const c = readDer(buf, pos);
    out.push(c);
    pos = c.end;
  }
  return out;
}

/**
 * A dotted OID from an OBJECT IDENTIFIER's contents (X.690 §8.19). Throws on one DER does not
 * allow (a subidentifier padded with 0x80, or cut short): such bytes could read as another OID
 * (55 80 04 03 as CN's 2.5.4.3) where other parsers see none.
 */
export function oidOf(bytes: Uint8Array): string {
  if (bytes.length === 0) throw new Error("an empty OBJECT IDENTIFIER");
  const parts: number[] = [];
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (n === 0 && bytes[i] === 0x80) throw new Error("a non-minimal OBJECT IDENTIFIER");
    n = n * 128 + (bytes[i] & 0x7f);
    if (bytes[i] & 0x80) continue;
    if (parts.length === 0) {
      // The first subidentifier holds the first two arcs (X * 40 + Y; X is 2 from 80 on).
      const x = n < 40 ? 0 : n < 80 ? 1 : 2;
      parts.push(x, n - 40 * x);
    } else parts.push(n);
    n = 0;
  }
  if (bytes[bytes.length - 1] & 0x80) throw new Error("a truncated OBJECT IDENTIFIER");
  return parts.join(".");
}

/** RSASSA-PSS (RFC 4055 §3.1): its AlgorithmIdentifier carries the parameters below. */
export const RSASSA_PSS = "1.2.840.113549.1.1.10";
const MGF1 = "1.2.840.113549.1.1.8";
const SHA1 = "1.3.14.3.2.26";

/** RSASSA-PSS-params (RFC 4055 §3.1), defaults filled in: OIDs dotted. */
export interface PssParams {
  /** The message digest. */
  hash: string;
  /** The mask generation function's (MGF1's) digest. */
  mgfHash: string;
  saltLength: number;
  /** trailerField: 1 (0xBC) is the only one defined. */
  trailer: number;
}

/**
 * The RSASSA-PSS parameters of a signature AlgorithmIdentifier `alg` (RFC 4055 §3.1: absent
 * fields are SHA-1, MGF1 with SHA-1, a 20-byte salt, trailer 1); throws on malformed ones.
 */
export function pssParams(der: Uint8Array, alg: Der): PssParams {
  const out: PssParams = { hash: SHA1, mgfHash: SHA1, saltLength: 20, trailer: 1 };
  const params = children(der, alg)[1];
  if (params === undefined) throw new Error("RSASSA-PSS without parameters");
  if (params.tag !== SEQUENCE) throw new Error("malformed RSASSA-PSS parameters");
  const algOid = (el: Der | undefined): string => {
    const oid = el?.tag === SEQUENCE ? children(der, el)[0] : undefined;
    if (oid?.tag !== OBJECT_IDENTIFIER) throw new Error("malformed RSASSA-PSS parameters");
    return oidOf(der.subarray(oid.start, oid.end));
  };
  const int = (el: Der | undefined): number => {
    if (el?.tag !== INTEGER || el.end - el.start < 1 || el.end - el.start > 3) {
      throw new Error("malformed RSASSA-PSS parameters");
    }
    let n = 0;
    for (let i = el.start; i < el.end; i++) n = n * 256 + der[i];
    if (der[el.start] & 0x80) throw new Error("malformed RSASSA-PSS parameters"); // negative
    return n;
  };
  for (const field of children(der, params)) {
    const inner = children(der, field)[0];
    switch (field.tag) {
      case 0xa0:
        out.hash = algOid(inner);
        break;
      case 0xa1: {
        if (algOid(inner) !== MGF1) {
          throw new Error("RSASSA-PSS with a mask function other than MGF1");
        }
        out.mgfHash = algOid(children(der, inner!)[1]);
        break;
      }
      case 0xa2:
        out.saltLength = int(inner);
        break;
      case 0xa3:
        out.trailer = int(inner);
        break;
      default:
        throw new Error("malformed RSASSA-PSS parameters");
    }
  }
  return out;
}
