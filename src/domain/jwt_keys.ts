// Key material for JWT verification, read from text: a PEM public key, a JWK, a JWK Set (RFC 7517
// §5), an HMAC secret. Pure: what the config checker and the filter both use; importing into
// crypto.subtle happens in proxy/filters/jwt_keys.ts.

import { jwkKind, jwkPublicPart, pemBlock, spkiKind } from "./jwt.ts";
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
  for (const jwk of list.slice(0, MAX_JWKS_KEYS)) {
    if (!isObject(jwk)) continue;
    const kind = jwkKind(jwk);
    if (kind === null) continue;
    keys.push({
      kind,
      format: "jwk",
      jwk: jwkPublicPart(jwk),
      ...(typeof jwk.kid === "string" ? { kid: jwk.kid } : {}),
      ...(typeof jwk.alg === "string" ? { alg: jwk.alg } : {}),
    });
  }
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
 * unfit: too short for HS256, or a PEM key (an asymmetric key belongs in key_file).
 */
export function readSecret(text: string): { key: KeySpec } | { error: string; hint: string } {
  const secret = text.replace(/\r?\n$/, "");
  if (secret.startsWith("-----BEGIN")) {
    return {
      error: "holds a PEM key, not an HMAC secret",
      hint: "Put a public key in key_file; secret_env and secret_file are for HS256/384/512",
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

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}
