// Key material for JWT verification, read from text: a PEM public key, a JWK, a JWK Set (RFC 7517
// §5), an HMAC secret. Pure: what the config checker and the filter both use; importing into
// crypto.subtle happens in proxy/filters/jwt_keys.ts.

import { base64UrlDecode, jwkKind, jwkPublicPart, pemBlock, spkiKind } from "./jwt.ts";
import type { KeyKind } from "./jwt.ts";

/** One verification key as read, not yet imported. */
export type KeySpec =
  & { kind: KeyKind; kid?: string; alg?: string }
  & (
    | { format: "spki"; der: Uint8Array<ArrayBuffer> }
    | { format: "jwk"; jwk: Record<string, unknown> }
    | { format: "raw"; bytes: Uint8Array<ArrayBuffer> }
  );

/** Keys read from a file or a JWKS answer, or why none could be (with the fix). */
export type KeyRead = { keys: KeySpec[] } | { error: string; hint: string };

/** Most keys taken from one JWK Set (a bigger set is cut; IdPs publish a handful). */
export const MAX_JWKS_KEYS = 64;

/** RFC 7518 §3.2: an HMAC key at least as long as the hash output (HS256: 32 bytes). */
export const MIN_SECRET_BYTES = 32;

/** RFC 7518 §3.3, §3.5: RS and PS keys MUST be 2048 bits or larger. */
export const MIN_RSA_BITS = 2048;

const PEM_FIXES: Record<string, string> = {
  "CERTIFICATE": "Extract its public key: openssl x509 -in cert.pem -pubkey -noout > key.pem",
  "RSA PUBLIC KEY":
    "Convert it to SPKI: openssl rsa -RSAPublicKey_in -in key.pem -pubout > key.spki.pem",
  "PRIVATE KEY": "Give Prox the public key only: openssl pkey -in key.pem -pubout > public.pem",
  "RSA PRIVATE KEY": "Give Prox the public key only: openssl rsa -in key.pem -pubout > public.pem",
  "EC PRIVATE KEY": "Give Prox the public key only: openssl ec -in key.pem -pubout > public.pem",
};

/**
 * Reads a key file: a PEM `PUBLIC KEY` (RSA, RSA-PSS, P-256, P-384, Ed25519), a JWK or a JWK Set.
 * Keys of other kinds in a set are skipped; a file with none usable is an error.
 */
export function readKeyFile(text: string): KeyRead {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) return readJwks(trimmed);
  const block = pemBlock(text);
  if (!block) {
    return {
      error: "not a PEM public key, a JWK or a JWK Set",
      hint: "Give a file that starts with -----BEGIN PUBLIC KEY----- or a JSON JWK",
    };
  }
  if (block.label !== "PUBLIC KEY") {
    return {
      error: `a PEM ${block.label}, not a PUBLIC KEY`,
      hint: PEM_FIXES[block.label] ?? "Give the public key in SPKI PEM (BEGIN PUBLIC KEY)",
    };
  }
  const kind = spkiKind(block.der);
  if (kind === null) {
    return {
      error: "a public key of a kind JWT cannot use here",
      hint: "Use an RSA (2048 bits or more), P-256, P-384 or Ed25519 key",
    };
  }
  if (kind === "rsa" || kind === "rsa-pss") {
    const rsa = spkiRsa(block.der);
    const weak = rsa === null ? "an RSA key that cannot be read" : rsaWeakness(rsa.n, rsa.e);
    if (weak !== null) return { error: weak, hint: WEAK_HINT };
  }
  if (kind === "ed25519") {
    // RFC 8410 §4: the SPKI's BIT STRING holds the 32-byte key last.
    const weak = ed25519Weakness(block.der.length === 44 ? block.der.subarray(12) : null);
    if (weak !== null) return { error: weak, hint: WEAK_HINT };
  }
  return { keys: [{ kind, format: "spki", der: block.der }] };
}

/** Reads a JWK or a JWK Set (JSON text), keeping the keys Prox can verify signatures with. */
export function readJwks(text: string): KeyRead {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return { error: "not valid JSON", hint: 'Give a JWK ({"kty": …}) or a JWK Set' };
  }
  const list = isObject(doc) && Array.isArray(doc.keys) ? doc.keys : [doc];
  const keys: KeySpec[] = [];
  let weak: string | null = null;
  for (const jwk of list.slice(0, MAX_JWKS_KEYS)) {
    if (!isObject(jwk)) continue;
    const kind = jwkKind(jwk);
    if (kind === null) continue;
    const why = jwkWeakness(jwk);
    if (why !== null) {
      weak ??= why;
      continue;
    }
    keys.push({
      kind,
      format: "jwk",
      jwk: jwkPublicPart(jwk),
      ...(typeof jwk.kid === "string" ? { kid: jwk.kid } : {}),
      ...(typeof jwk.alg === "string" ? { alg: jwk.alg } : {}),
    });
  }
  if (keys.length === 0 && weak !== null) return { error: `holds only ${weak}`, hint: WEAK_HINT };
  if (keys.length === 0) {
    return {
      error: "holds no signing key Prox can use (RSA, EC P-256/P-384, Ed25519 or oct)",
      hint: 'Give keys with "use": "sig" (or no use) and a supported kty and crv',
    };
  }
  return { keys };
}

/**
 * An HMAC secret from text (an env var or a file; one trailing newline dropped), or why it is
 * unfit: too short for HS256, or a key of another kind (a PEM block anywhere in it, a JWK or JWK
 * Set, an OpenSSH public key). A public key used as an HMAC secret lets anyone who reads it sign
 * HS256 tokens; it belongs in key_file.
 */
export function readSecret(text: string): { key: KeySpec } | { error: string; hint: string } {
  const secret = text.replace(/\r?\n$/, "");
  const hint = "Put a public key in key_file (PEM, JWK or JWK Set); secret_env and secret_file " +
    "are for HS256/384/512";
  // Anywhere: openssl writes "subject=…" or "Bag Attributes" lines before the block.
  if (/-----BEGIN [A-Z0-9 ]+-----/.test(secret)) {
    return { error: "holds a PEM key, not an HMAC secret", hint };
  }
  if (isJwkText(secret)) return { error: "holds a JWK or JWK Set, not an HMAC secret", hint };
  if (
    /^\s*(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-[a-z0-9-]+@openssh\.com) AAAA/.test(secret)
  ) {
    return {
      error: "holds an SSH public key, not an HMAC secret",
      hint: "JWT keys are PEM or JWK: ssh-keygen -e -m PKCS8 -f key.pub > key.pem, in key_file",
    };
  }
  const bytes = new TextEncoder().encode(secret);
  if (bytes.length < MIN_SECRET_BYTES) {
    return {
      error: `is ${bytes.length} bytes long: HS256 needs a secret of at least ${MIN_SECRET_BYTES}`,
      hint: "Use a longer random secret, e.g. `openssl rand -base64 48`",
    };
  }
  return { key: { kind: "hmac", format: "raw", bytes } };
}

const WEAK_HINT = "Use an RSA key of 2048 bits or more (e = 65537), an HMAC key of 32 bytes or " +
  "more, or a P-256, P-384 or Ed25519 key";

/**
 * Why a JWK's key is too weak to trust, or null. A small RSA modulus can be factored (512 bits in
 * hours) and e = 1 makes every message its own signature: either lets anyone sign tokens.
 */
function jwkWeakness(jwk: Record<string, unknown>): string | null {
  if (jwk.kty === "RSA") {
    const n = base64UrlDecode(jwk.n as string);
    const e = base64UrlDecode(jwk.e as string);
    return n === null || e === null ? "an RSA key that cannot be read" : rsaWeakness(n, e);
  }
  if (jwk.kty === "OKP") return ed25519Weakness(base64UrlDecode(jwk.x as string));
  if (jwk.kty === "oct") {
    const k = base64UrlDecode(jwk.k as string);
    if (k === null) return "an HMAC key that cannot be read";
    // RFC 7518 §3.2, as readSecret asks of secret_env and secret_file.
    if (k.length < MIN_SECRET_BYTES) {
      return `an HMAC key of ${k.length} byte${k.length === 1 ? "" : "s"} ` +
        `(RFC 7518 §3.2: at least ${MIN_SECRET_BYTES})`;
    }
  }
  return null;
}

/** Why an RSA public key (big-endian n and e) is too weak, or null. */
function rsaWeakness(n: Uint8Array, e: Uint8Array): string | null {
  const bits = bitLength(n);
  if (bits < MIN_RSA_BITS) {
    return `an RSA key of ${bits} bits (RFC 7518 §3.3: ${MIN_RSA_BITS} or more)`;
  }
  // RFC 8017 §3.1: 3 <= e, and e odd (it is coprime to the even lambda(n)).
  const eBits = bitLength(e);
  if (eBits < 2 || (e[e.length - 1] & 1) === 0) {
    return "an RSA key whose public exponent is not an odd number of 3 or more (RFC 8017 §3.1)";
  }
  return null;
}

/**
 * The Ed25519 points of small order (RFC 8032 §5.1.3 encodings: y little-endian, the top bit x's
 * sign, which is ignored here), libsodium's list: the identity, the points of order 2, 4 and 8,
 * and y = p, p + 1, which decode to two of them.
 */
const SMALL_ORDER_ED25519 = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

/**
 * Why an Ed25519 public key is unfit, or null. A point of small order makes `R` = that point (the
 * identity: 01 00…) and `S` = 0 a valid signature of every message under WebCrypto's check, so
 * anyone could sign tokens, as with RSA's e = 1.
 */
function ed25519Weakness(x: Uint8Array | null): string | null {
  if (x === null || x.length !== 32) return "an Ed25519 key that cannot be read";
  const hex = Array.from(x, (b, i) => (i === 31 ? b & 0x7f : b).toString(16).padStart(2, "0"))
    .join("");
  return SMALL_ORDER_ED25519.includes(hex)
    ? "an Ed25519 key of small order (it verifies forged signatures)"
    : null;
}

/** The bit length of an unsigned big-endian integer. */
function bitLength(b: Uint8Array): number {
  let i = 0;
  while (i < b.length && b[i] === 0) i++;
  return i === b.length ? 0 : (b.length - i - 1) * 8 + (32 - Math.clz32(b[i]));
}

/** One DER element (X.690 §8.1): tag, and where its contents start and end. */
function derAt(b: Uint8Array, at: number): { tag: number; start: number; end: number } | null {
  if (at + 2 > b.length) return null;
  let len = b[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const size = len & 0x7f;
    if (size === 0 || size > 3 || start + size > b.length) return null;
    len = 0;
    for (let i = 0; i < size; i++) len = len * 256 + b[start + i];
    start += size;
  }
  return start + len > b.length ? null : { tag: b[at], start, end: start + len };
}

/**
 * The modulus and exponent of an RSA SubjectPublicKeyInfo (RFC 5280 §4.1.2.7 around RFC 8017
 * A.1.1's RSAPublicKey), or null when it is not shaped so.
 */
function spkiRsa(der: Uint8Array): { n: Uint8Array; e: Uint8Array } | null {
  const spki = derAt(der, 0);
  const alg = spki?.tag === 0x30 ? derAt(der, spki.start) : null;
  const bits = alg?.tag === 0x30 ? derAt(der, alg.end) : null;
  // A BIT STRING whose first content byte counts the unused bits: 0 here.
  if (bits?.tag !== 0x03 || der[bits.start] !== 0) return null;
  const seq = derAt(der, bits.start + 1);
  const n = seq?.tag === 0x30 ? derAt(der, seq.start) : null;
  const e = n?.tag === 0x02 ? derAt(der, n.end) : null;
  if (e?.tag !== 0x02) return null;
  return { n: der.subarray(n!.start, n!.end), e: der.subarray(e.start, e.end) };
}

/** True for the text of a JSON JWK (an object with `kty`) or JWK Set (with a `keys` list). */
function isJwkText(text: string): boolean {
  if (!text.trimStart().startsWith("{")) return false;
  try {
    const doc: unknown = JSON.parse(text);
    return isObject(doc) && (typeof doc.kty === "string" || Array.isArray(doc.keys));
  } catch {
    return false;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}
