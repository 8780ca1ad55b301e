// JSON Web Tokens (RFC 7519) signed with JWS compact serialization (RFC 7515): reading a token,
// checking its claims, telling which algorithms a key may verify, and the RFC 6750 challenge.
// Pure: time is a parameter; the signature check itself is crypto.subtle's (proxy/filters/jwt_auth.ts).

/** The JWS algorithms Prox verifies (RFC 7518 §3.1, RFC 8037 §3.1). `none` is never one. */
export const JWT_ALGS = [
  "HS256",
  "HS384",
  "HS512",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "EdDSA",
] as const;
export type JwtAlg = typeof JWT_ALGS[number];

/** Longest token read (characters); a longer one is refused before any decoding. */
export const MAX_TOKEN_CHARS = 8192;

/** A token split and decoded, its signature not yet checked. */
export interface ParsedJwt {
  alg: string;
  kid: string | undefined;
  payload: Record<string, unknown>;
  /** `header.payload` as sent: what the signature covers. */
  signingInput: string;
  signature: Uint8Array<ArrayBuffer>;
}

/** A parsed token, or why it cannot be one (said to the client as `error_description`). */
export type JwtParse = { ok: true; jwt: ParsedJwt } | { ok: false; reason: string };

const B64URL = /^[A-Za-z0-9_-]*$/;

/** Decodes unpadded base64url (RFC 7515 §2), or null when it is not that. */
export function base64UrlDecode(s: string): Uint8Array<ArrayBuffer> | null {
  if (!B64URL.test(s) || s.length % 4 === 1) return null;
  try {
    const bin = atob(s.replaceAll("-", "+").replaceAll("_", "/"));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A base64url JSON object segment, or null. */
function jsonObject(segment: string): Record<string, unknown> | null {
  const bytes = base64UrlDecode(segment);
  if (bytes === null) return null;
  try {
    const v: unknown = JSON.parse(utf8.decode(bytes));
    return v !== null && typeof v === "object" && !Array.isArray(v)
      ? v as Record<string, unknown>
      : null;
  } catch {
    return null;
  }
}

/**
 * Splits a JWS compact token into its decoded header, payload and signature (RFC 7515 §7.1).
 * Refuses tokens over MAX_TOKEN_CHARS, JWE (five parts), `crit` headers it cannot honour
 * (§4.1.11) and unsigned ones (`alg: none`) before any further work.
 */
export function parseJwt(token: string): JwtParse {
  if (token.length > MAX_TOKEN_CHARS) return { ok: false, reason: "The token is too long" };
  const first = token.indexOf(".");
  const second = first < 0 ? -1 : token.indexOf(".", first + 1);
  if (second < 0 || token.indexOf(".", second + 1) >= 0) {
    return { ok: false, reason: "The token is not a signed JWT (three dot-separated parts)" };
  }
  const header = jsonObject(token.slice(0, first));
  if (header === null) return { ok: false, reason: "The token header is not base64url JSON" };
  const alg = header.alg;
  if (typeof alg !== "string") return { ok: false, reason: "The token header has no alg" };
  if (alg.toLowerCase() === "none") return { ok: false, reason: "Unsigned tokens are refused" };
  if (header.crit !== undefined) {
    return { ok: false, reason: "The token has critical header parameters" };
  }
  const payload = jsonObject(token.slice(first + 1, second));
  if (payload === null) return { ok: false, reason: "The token payload is not base64url JSON" };
  const signature = base64UrlDecode(token.slice(second + 1));
  if (signature === null || signature.length === 0) {
    return { ok: false, reason: "The token signature is not base64url" };
  }
  const kid = typeof header.kid === "string" ? header.kid : undefined;
  // Without a prototype, a claim the token lacks is absent: `constructor` or `toString` named in
  // claims_to_headers or required_claims must not find Object.prototype's.
  const claims: Record<string, unknown> = Object.assign(Object.create(null), payload);
  return {
    ok: true,
    jwt: { alg, kid, payload: claims, signingInput: token.slice(0, second), signature },
  };
}

/** A claim value a rule accepts: scalars compare by ===. */
export type ClaimValue = string | number | boolean;

/** What a route asks of a token's claims (RFC 7519 §4.1). */
export interface ClaimRules {
  /** Accepted `iss` values; empty: any. */
  issuers: readonly string[];
  /** Accepted `aud` values (one of them must be in the token's); empty: any. */
  audiences: readonly string[];
  /** Clock skew allowed on `exp`, `nbf` and `iat`, in seconds. */
  leewaySec: number;
  /** A token without `exp` is refused. */
  requireExp: boolean;
  /** Claim → accepted values: the claim (or one element of it, or one word of `scope`) matches one. */
  required: ReadonlyMap<string, readonly ClaimValue[]>;
}

/** Why a token's claims are refused, or null when they pass. `nowSec`: seconds since the epoch. */
export function claimProblem(
  payload: Record<string, unknown>,
  o: { rules: ClaimRules; nowSec: number },
): string | null {
  const { rules, nowSec } = o;
  const { exp, nbf, iss, aud } = payload;
  if (exp !== undefined && typeof exp !== "number") return "The exp claim is not a number";
  if (exp === undefined && rules.requireExp) return "The token has no exp claim";
  if (typeof exp === "number" && nowSec >= exp + rules.leewaySec) return "The token expired";
  if (nbf !== undefined && typeof nbf !== "number") return "The nbf claim is not a number";
  if (typeof nbf === "number" && nowSec + rules.leewaySec < nbf) {
    return "The token is not valid yet";
  }
  // RFC 7519 §4.1.6: iat is a NumericDate. One past now (and the leeway) is no token a signer
  // with a sane clock made: refused, as PyJWT does (a token minted ahead of time for later use).
  const iat = payload.iat;
  if (iat !== undefined && typeof iat !== "number") return "The iat claim is not a number";
  if (typeof iat === "number" && iat > nowSec + rules.leewaySec) {
    return "The token was issued in the future";
  }
  if (rules.issuers.length > 0 && (typeof iss !== "string" || !rules.issuers.includes(iss))) {
    return "The token issuer is not accepted";
  }
  if (rules.audiences.length > 0) {
    const auds = typeof aud === "string" ? [aud] : Array.isArray(aud) ? aud : [];
    if (!auds.some((a) => typeof a === "string" && rules.audiences.includes(a))) {
      return "The token audience is not accepted";
    }
  }
  for (const [name, accepted] of rules.required) {
    if (!claimMatches(name, payload[name], accepted)) {
      return `The ${name} claim is missing or not accepted`;
    }
  }
  return null;
}

function claimMatches(name: string, v: unknown, accepted: readonly ClaimValue[]): boolean {
  if (v === undefined || v === null) return false;
  // OAuth scopes are one space-separated string (RFC 8693 §4.2).
  const values = Array.isArray(v)
    ? v
    : (name === "scope" || name === "scp") && typeof v === "string"
    ? v.split(" ")
    : [v];
  return values.some((x) => accepted.includes(x as ClaimValue));
}

/**
 * A claim as a header field value: strings as they are, numbers and booleans as text, anything
 * else as JSON; everything outside printable ASCII (and `%`) percent-encoded as UTF-8. Null when
 * the claim is absent.
 */
export function claimHeaderValue(v: unknown): string | null {
  if (v === undefined || v === null) return null;
  const s = typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : String(v);
  // A lone surrogate (JSON's "\ud83d") becomes U+FFFD: encodeURIComponent would throw on it.
  return s.toWellFormed().replace(/[^\x20-\x24\x26-\x7e]/gu, encodeURIComponent);
}

/** A quoted-string (RFC 9110 §5.6.4) with `"` and `\` escaped. */
function quoted(s: string): string {
  return `"${s.replace(/["\\]/g, "\\$&")}"`;
}

/**
 * The `WWW-Authenticate` value of a refusal (RFC 6750 §3): a request without a token gets no
 * error attribute (§3.1), a bad token `invalid_token` with the reason.
 */
export function bearerChallenge(realm: string, reason?: string): string {
  const base = `Bearer realm=${quoted(realm)}`;
  // RFC 6750 §3: printable ASCII but `"` and `\`. The reason may name a required claim, which
  // can be any JSON text: beyond Latin-1 a Headers value cannot even hold it (500, not 401).
  const description = reason?.toWellFormed().replace(
    /[^\x20\x21\x23-\x5b\x5d-\x7e]/gu,
    encodeURIComponent,
  );
  return description === undefined
    ? base
    : `${base}, error="invalid_token", error_description="${description}"`;
}

/**
 * The credentials of `Authorization: Bearer <token>` (RFC 6750 §2.1), as sent (parseJwt judges
 * them: a malformed one is an invalid token, not a missing one); null for another scheme.
 */
export function bearerToken(field: string | null): string | null {
  if (field === null) return null;
  // No regex: /^\s*bearer(?:[ \t]+(.*?))?\s*$/i backtracked quadratically over a field of spaces
  // (seconds of the event loop for one 60 KB header).
  const s = field.trim();
  if (s.slice(0, 6).toLowerCase() !== "bearer") return null;
  const rest = s.slice(6);
  if (rest !== "" && rest[0] !== " " && rest[0] !== "\t") return null;
  let i = 0;
  while (rest[i] === " " || rest[i] === "\t") i++;
  return rest.slice(i);
}

/** The kind of key material, which decides the algorithms it may verify. */
export type KeyKind = "hmac" | "rsa" | "rsa-pss" | "ec-P-256" | "ec-P-384" | "ed25519";

const FAMILY: Record<KeyKind, readonly JwtAlg[]> = {
  "hmac": ["HS256", "HS384", "HS512"],
  "rsa": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
  "rsa-pss": ["PS256", "PS384", "PS512"],
  "ec-P-256": ["ES256"],
  "ec-P-384": ["ES384"],
  "ed25519": ["EdDSA"],
};

/**
 * The algorithms a key verifies: its family's (an RSA key never verifies HS256, which defeats the
 * public-key-as-HMAC-secret confusion), narrowed to the key's own `alg` when it names one and to
 * the route's `algorithms` when set.
 */
export function keyAlgorithms(
  kind: KeyKind,
  o: { keyAlg?: string; allowed?: readonly string[] } = {},
): JwtAlg[] {
  return FAMILY[kind].filter((a) =>
    (o.keyAlg === undefined || o.keyAlg === a) &&
    (o.allowed === undefined || o.allowed.length === 0 || o.allowed.includes(a))
  );
}

/**
 * A JWK's kind (RFC 7517 §4.1, RFC 8037 §2), or null for one Prox cannot verify with: another
 * kty or curve, or a key for something else (`use` other than `sig`, `key_ops` without `verify`).
 */
export function jwkKind(jwk: Record<string, unknown>): KeyKind | null {
  if (jwk.use !== undefined && jwk.use !== "sig") return null;
  // RFC 7517 §4.3: an array of operations; anything else is no key to trust either.
  const ops = jwk.key_ops;
  if (ops !== undefined && !(Array.isArray(ops) && ops.includes("verify"))) return null;
  switch (jwk.kty) {
    case "RSA":
      return typeof jwk.n === "string" && typeof jwk.e === "string" ? "rsa" : null;
    case "EC":
      if (typeof jwk.x !== "string" || typeof jwk.y !== "string") return null;
      return jwk.crv === "P-256" ? "ec-P-256" : jwk.crv === "P-384" ? "ec-P-384" : null;
    case "OKP":
      return jwk.crv === "Ed25519" && typeof jwk.x === "string" ? "ed25519" : null;
    case "oct":
      return typeof jwk.k === "string" ? "hmac" : null;
    default:
      return null;
  }
}

/** The public parts of a JWK that importing needs (no `alg`, `use` or `key_ops` to trip on). */
export function jwkPublicPart(jwk: Record<string, unknown>): Record<string, unknown> {
  const pick = (names: string[]) =>
    Object.fromEntries(names.filter((n) => jwk[n] !== undefined).map((n) => [n, jwk[n]]));
  switch (jwk.kty) {
    case "RSA":
      return pick(["kty", "n", "e"]);
    case "EC":
    case "OKP":
      return pick(["kty", "crv", "x", "y"]);
    default:
      return pick(["kty", "k"]);
  }
}

/** WebCrypto parameters to import a key for `alg` and to verify with it. */
export function webCryptoParams(alg: JwtAlg): {
  importAlg: { name: string; hash?: string; namedCurve?: string };
  verifyAlg: { name: string; hash?: string; saltLength?: number };
} {
  const bits = alg.slice(2);
  const hash = `SHA-${bits}`;
  switch (alg.slice(0, 2)) {
    case "HS":
      return { importAlg: { name: "HMAC", hash }, verifyAlg: { name: "HMAC" } };
    case "RS":
      return {
        importAlg: { name: "RSASSA-PKCS1-v1_5", hash },
        verifyAlg: { name: "RSASSA-PKCS1-v1_5" },
      };
    case "PS":
      return {
        importAlg: { name: "RSA-PSS", hash },
        verifyAlg: { name: "RSA-PSS", saltLength: Number(bits) / 8 },
      };
    case "ES":
      return {
        importAlg: { name: "ECDSA", namedCurve: bits === "256" ? "P-256" : "P-384" },
        verifyAlg: { name: "ECDSA", hash },
      };
    default:
      return { importAlg: { name: "Ed25519" }, verifyAlg: { name: "Ed25519" } };
  }
}

/** A PEM block's label and DER bytes, or null when the text is not one. */
export function pemBlock(text: string): { label: string; der: Uint8Array<ArrayBuffer> } | null {
  const m = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/.exec(text);
  if (!m) return null;
  try {
    const bin = atob(m[2].replace(/\s+/g, ""));
    const der = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) der[i] = bin.charCodeAt(i);
    return { label: m[1], der };
  } catch {
    return null;
  }
}

// Object identifiers as DER content bytes (X.690 §8.19).
const OIDS: [KeyKind, number[]][] = [
  ["rsa-pss", [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]], // 1.2.840.113549.1.1.10
  ["rsa", [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]], // 1.2.840.113549.1.1.1
  ["ec-P-256", [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]], // prime256v1
  ["ec-P-384", [0x2b, 0x81, 0x04, 0x00, 0x22]], // secp384r1
  ["ed25519", [0x2b, 0x65, 0x70]], // 1.3.101.112
];

/**
 * The kind of a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) from the algorithm identifier at its
 * start, or null when it is none Prox verifies with (another curve, a DSA key…).
 */
export function spkiKind(der: Uint8Array): KeyKind | null {
  const head = der.subarray(0, 40);
  for (const [kind, oid] of OIDS) {
    const bytes = [0x06, oid.length, ...oid];
    for (let i = 0; i + bytes.length <= head.length; i++) {
      if (bytes.every((b, j) => head[i + j] === b)) return kind;
    }
  }
  return null;
}
