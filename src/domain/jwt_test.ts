import assert from "node:assert/strict";
import {
  base64UrlDecode,
  bearerChallenge,
  bearerToken,
  claimHeaderValue,
  claimProblem,
  jwkKind,
  keyAlgorithms,
  MAX_TOKEN_CHARS,
  parseJwt,
  pemBlock,
  spkiKind,
} from "./jwt.ts";
import type { ClaimRules } from "./jwt.ts";

const b64 = (o: unknown) =>
  btoa(JSON.stringify(o)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");
const token = (header: unknown, payload: unknown, sig = "c2ln") =>
  `${b64(header)}.${b64(payload)}.${sig}`;

Deno.test("parseJwt: splits a token and keeps the signing input as sent", () => {
  const t = token({ alg: "RS256", kid: "k1" }, { sub: "alice" });
  const r = parseJwt(t);
  assert.ok(r.ok);
  assert.equal(r.jwt.alg, "RS256");
  assert.equal(r.jwt.kid, "k1");
  assert.deepEqual({ ...r.jwt.payload }, { sub: "alice" });
  assert.equal(r.jwt.signingInput, t.slice(0, t.lastIndexOf(".")));
  assert.deepEqual([...r.jwt.signature], [...new TextEncoder().encode("sig")]);
});

Deno.test("parseJwt: refuses garbage, alg none, crit, JWE and huge tokens without throwing", () => {
  const cases: [string, RegExp][] = [
    ["", /three/],
    ["a.b", /three/],
    ["a.b.c.d.e", /three/],
    ["!!!.e30.c2ln", /header/],
    [`${b64([1])}.e30.c2ln`, /header/],
    [`${b64({ typ: "JWT" })}.e30.c2ln`, /no alg/],
    [token({ alg: "none" }, {}), /Unsigned/],
    [token({ alg: "NONE" }, {}), /Unsigned/],
    [token({ alg: "HS256", crit: ["exp"] }, {}), /critical/],
    [`${b64({ alg: "HS256" })}.${b64("str")}.c2ln`, /payload/],
    [`${b64({ alg: "HS256" })}.e30.`, /signature/],
    [`${b64({ alg: "HS256" })}.e30.a`, /signature/],
    [`${b64({ alg: "HS256" })}.${btoa("\xff\xfe")}.c2ln`, /payload/],
    ["x".repeat(MAX_TOKEN_CHARS + 1), /too long/],
  ];
  for (const [t, why] of cases) {
    const r = parseJwt(t);
    assert.ok(!r.ok, t.slice(0, 40));
    assert.match(r.reason, why, t.slice(0, 40));
  }
  // Deeply nested JSON within the length cap parses (or fails) without a crash.
  const deep = `${b64({ alg: "HS256" })}.${
    b64(JSON.parse("[".repeat(2000) + "]".repeat(2000)))
  }.c2ln`;
  assert.equal(parseJwt(deep).ok, false);
  const nested = `${b64({ alg: "HS256" })}.${
    btoa(`{"a":${"[".repeat(3000)}${"]".repeat(3000)}}`).replaceAll("=", "")
  }.c2ln`;
  assert.equal(parseJwt(nested).ok, true);
});

Deno.test("parseJwt: a claim the token lacks is absent, whatever Object.prototype has", () => {
  const r = parseJwt(token({ alg: "HS256" }, { sub: "a", ["__proto__"]: { admin: true } }));
  assert.ok(r.ok);
  assert.equal(r.jwt.payload.constructor, undefined);
  assert.equal(r.jwt.payload.toString, undefined);
  assert.equal((r.jwt.payload as { admin?: unknown }).admin, undefined);
  assert.equal(claimHeaderValue(r.jwt.payload.constructor), null);
  const rules: ClaimRules = {
    issuers: [],
    audiences: [],
    leewaySec: 0,
    requireExp: false,
    required: new Map([["constructor", ["x"]]]),
  };
  assert.match(claimProblem(r.jwt.payload, { rules, nowSec: 0 })!, /constructor claim/);
});

Deno.test("base64UrlDecode: only unpadded base64url", () => {
  assert.deepEqual([...base64UrlDecode("-_8")!], [0xfb, 0xff]);
  assert.equal(base64UrlDecode("ab+c"), null);
  assert.equal(base64UrlDecode("abc="), null);
  assert.equal(base64UrlDecode("abcde"), null);
});

const rules = (o: Partial<ClaimRules> = {}): ClaimRules => ({
  issuers: [],
  audiences: [],
  leewaySec: 0,
  requireExp: true,
  required: new Map(),
  ...o,
});

Deno.test("claimProblem: exp and nbf with leeway", () => {
  const now = 1_000_000;
  assert.equal(claimProblem({ exp: now + 1 }, { rules: rules(), nowSec: now }), null);
  assert.equal(claimProblem({ exp: now }, { rules: rules(), nowSec: now }), "The token expired");
  assert.equal(
    claimProblem({ exp: now - 5 }, { rules: rules({ leewaySec: 10 }), nowSec: now }),
    null,
  );
  assert.equal(claimProblem({}, { rules: rules(), nowSec: now }), "The token has no exp claim");
  assert.equal(claimProblem({}, { rules: rules({ requireExp: false }), nowSec: now }), null);
  assert.equal(
    claimProblem({ exp: "later" }, { rules: rules(), nowSec: now }),
    "The exp claim is not a number",
  );
  assert.equal(
    claimProblem({ exp: now + 60, nbf: now + 30 }, { rules: rules(), nowSec: now }),
    "The token is not valid yet",
  );
  assert.equal(
    claimProblem({ exp: now + 60, nbf: now + 30 }, {
      rules: rules({ leewaySec: 30 }),
      nowSec: now,
    }),
    null,
  );
});

Deno.test("claimProblem: an iat in the future (past the leeway) or not a number is refused", () => {
  const now = 1_000_000;
  const exp = now + 3600;
  assert.equal(claimProblem({ exp, iat: now - 10 }, { rules: rules(), nowSec: now }), null);
  assert.equal(
    claimProblem({ exp, iat: now + 20 }, { rules: rules({ leewaySec: 30 }), nowSec: now }),
    null,
  );
  // A token minted for next year by a stolen or misconfigured signer (its exp further still).
  assert.equal(
    claimProblem({ exp: now + 400 * 86400, iat: now + 365 * 86400 }, {
      rules: rules({ leewaySec: 30 }),
      nowSec: now,
    }),
    "The token was issued in the future",
  );
  assert.equal(
    claimProblem({ exp, iat: "yesterday" }, { rules: rules(), nowSec: now }),
    "The iat claim is not a number",
  );
});

Deno.test("claimProblem: iss, aud as string or array, required claims and scopes", () => {
  const now = 10;
  const r = rules({
    issuers: ["https://idp"],
    audiences: ["api", "web"],
    requireExp: false,
    required: new Map([["role", ["admin"]], ["scope", ["write"]], ["verified", [true]]]),
  });
  const ok = {
    iss: "https://idp",
    aud: ["other", "web"],
    role: ["user", "admin"],
    scope: "read write",
    verified: true,
  };
  assert.equal(claimProblem(ok, { rules: r, nowSec: now }), null);
  assert.equal(claimProblem({ ...ok, aud: "api" }, { rules: r, nowSec: now }), null);
  assert.match(claimProblem({ ...ok, iss: "https://evil" }, { rules: r, nowSec: now })!, /issuer/);
  assert.match(claimProblem({ ...ok, aud: ["x"] }, { rules: r, nowSec: now })!, /audience/);
  assert.match(claimProblem({ ...ok, aud: undefined }, { rules: r, nowSec: now })!, /audience/);
  assert.match(claimProblem({ ...ok, role: "user" }, { rules: r, nowSec: now })!, /role/);
  assert.match(claimProblem({ ...ok, scope: "read" }, { rules: r, nowSec: now })!, /scope/);
  assert.match(claimProblem({ ...ok, verified: "true" }, { rules: r, nowSec: now })!, /verified/);
});

Deno.test("bearerChallenge: no error attribute without a token, quotes escaped", () => {
  assert.equal(bearerChallenge("api"), 'Bearer realm="api"');
  assert.equal(
    bearerChallenge('a"b', "The token expired"),
    'Bearer realm="a\\"b", error="invalid_token", error_description="The token expired"',
  );
});

Deno.test("bearerToken: the credentials of a Bearer field, malformed ones too", () => {
  assert.equal(bearerToken("Bearer abc.def.ghi"), "abc.def.ghi");
  assert.equal(bearerToken("bearer  abc "), "abc");
  assert.equal(bearerToken("Bearer a b"), "a b");
  assert.equal(bearerToken("Bearer"), "");
  assert.equal(bearerToken("Bearerx abc"), null);
  assert.equal(bearerToken("Basic abc"), null);
  assert.equal(bearerToken(null), null);
  assert.equal(bearerToken(" \tBEARER\t a\u00a0b \t"), "a\u00a0b");
  assert.equal(bearerToken("Bearer \t "), "");
});

Deno.test("bearerToken: a field of spaces between two words takes linear time", () => {
  // A lazy (.*?) before \s*$ backtracked over every space: 60 KB (a request head's limit)
  // took seconds of the event loop per request.
  const field = `Bearer x${" ".repeat(60_000)}y`;
  const start = performance.now();
  assert.equal(bearerToken(field), `x${" ".repeat(60_000)}y`);
  const ms = performance.now() - start;
  assert.ok(ms < 200, `${ms.toFixed(0)} ms`);
});

Deno.test("claimHeaderValue: text as is, the rest JSON, non-ASCII percent-encoded", () => {
  assert.equal(claimHeaderValue("alice"), "alice");
  assert.equal(claimHeaderValue(42), "42");
  assert.equal(claimHeaderValue(["a", "b"]), '["a","b"]');
  assert.equal(claimHeaderValue("jürgen\r\nX: y"), "j%C3%BCrgen%0D%0AX: y");
  // Half an emoji (a name cut short, then JSON-escaped by the IdP): U+FFFD, not a URIError.
  assert.equal(claimHeaderValue("Ann \ud83d"), "Ann %EF%BF%BD");
  assert.equal(claimHeaderValue("\ude00x"), "%EF%BF%BDx");
  assert.equal(claimHeaderValue(undefined), null);
});

Deno.test("keyAlgorithms: the family decides, never HS for an RSA key", () => {
  assert.deepEqual(keyAlgorithms("rsa", { allowed: ["HS256", "RS256"] }), ["RS256"]);
  assert.deepEqual(keyAlgorithms("rsa", { keyAlg: "PS256" }), ["PS256"]);
  assert.deepEqual(keyAlgorithms("rsa", { keyAlg: "HS256" }), []);
  assert.deepEqual(keyAlgorithms("ec-P-256"), ["ES256"]);
  assert.deepEqual(keyAlgorithms("hmac"), ["HS256", "HS384", "HS512"]);
});

Deno.test("jwkKind: signing keys Prox can verify with", () => {
  assert.equal(jwkKind({ kty: "RSA", n: "x", e: "AQAB" }), "rsa");
  assert.equal(jwkKind({ kty: "RSA", n: "x", e: "AQAB", use: "enc" }), null);
  assert.equal(jwkKind({ kty: "EC", crv: "P-384", x: "a", y: "b" }), "ec-P-384");
  assert.equal(jwkKind({ kty: "EC", crv: "P-521", x: "a", y: "b" }), null);
  assert.equal(jwkKind({ kty: "OKP", crv: "Ed25519", x: "a" }), "ed25519");
  assert.equal(jwkKind({ kty: "oct", k: "a" }), "hmac");
});

Deno.test("jwkKind: a key whose key_ops leave out verify is no signing key", () => {
  // RFC 7517 §4.3: an encryption key published without `use` but with its operations.
  const rsa = { kty: "RSA", n: "x", e: "AQAB" };
  assert.equal(jwkKind({ ...rsa, key_ops: ["encrypt", "wrapKey"] }), null);
  assert.equal(jwkKind({ ...rsa, key_ops: "verify" }), null);
  assert.equal(jwkKind({ ...rsa, key_ops: ["verify"] }), "rsa");
  assert.equal(jwkKind({ ...rsa, use: "sig", key_ops: ["sign", "verify"] }), "rsa");
});

Deno.test("pemBlock and spkiKind: a public key's kind from its PEM", async () => {
  const pem = async (key: CryptoKey) => {
    const der = new Uint8Array(await crypto.subtle.exportKey("spki", key));
    return `-----BEGIN PUBLIC KEY-----\n${
      btoa(String.fromCharCode(...der))
    }\n-----END PUBLIC KEY-----\n`;
  };
  const gen = (alg: RsaHashedKeyGenParams | EcKeyGenParams | { name: string }) =>
    crypto.subtle.generateKey(alg, true, ["sign", "verify"]) as Promise<CryptoKeyPair>;
  const rsa = await gen({
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256",
  });
  const p256 = await gen({ name: "ECDSA", namedCurve: "P-256" });
  const p384 = await gen({ name: "ECDSA", namedCurve: "P-384" });
  const ed = await gen({ name: "Ed25519" });
  for (
    const [key, kind] of [[rsa, "rsa"], [p256, "ec-P-256"], [p384, "ec-P-384"], [
      ed,
      "ed25519",
    ]] as const
  ) {
    const block = pemBlock(await pem(key.publicKey));
    assert.equal(block?.label, "PUBLIC KEY");
    assert.equal(spkiKind(block!.der), kind);
  }
  assert.equal(pemBlock("just a secret"), null);
});
