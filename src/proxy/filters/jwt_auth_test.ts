import assert from "node:assert/strict";
import {
  checkJwtAuth,
  compileJwtAuth,
  MAX_VERIFIED,
  TokenCaches,
  withoutCookie,
  withoutParam,
} from "./jwt_auth.ts";
import { VerifyKey } from "../jwks.ts";
import { JwtAuth } from "../../config/schema.ts";
import { noopMetrics, silentLogger } from "../../ports.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";

const SECRET = "a-unit-test-secret-of-32-bytes-at-least";
const enc = new TextEncoder();
const b64 = (b: Uint8Array) =>
  btoa(String.fromCharCode(...b)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");

async function hs256(payload: Record<string, unknown>): Promise<string> {
  const input = `${b64(enc.encode('{"alg":"HS256"}'))}.${b64(enc.encode(JSON.stringify(payload)))}`;
  const key = await crypto.subtle.importKey(
    "raw",
    enc.encode(SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return `${input}.${
    b64(new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(input))))
  }`;
}

let wall = 1_700_000_000_000;
const deps = {
  clock: { now: () => wall, monotonic: () => 0 },
  logger: silentLogger,
  metrics: noopMetrics,
} as unknown as PipelineDeps;
const ctxWith = (token: string) =>
  ({
    req: new Request("http://x/", { headers: { authorization: `Bearer ${token}` } }),
    query: "",
    requestId: "r",
    route: { id: "r" },
  }) as unknown as RequestContext;

Deno.test("checkJwtAuth: one signature check for concurrent requests and then the cache", async () => {
  const auth = compileJwtAuth(JwtAuth.parse({ secret_env: "S" }), { env: () => SECRET });
  const verify = VerifyKey.prototype.verify;
  let checks = 0;
  VerifyKey.prototype.verify = function (...args) {
    checks++;
    return verify.apply(this, args);
  };
  try {
    const token = await hs256({ sub: "a", exp: wall / 1000 + 60 });
    const results = await Promise.all(
      Array.from({ length: 20 }, () => checkJwtAuth(ctxWith(token), deps, auth)),
    );
    assert.deepEqual(results, Array(20).fill(undefined));
    assert.equal(await checkJwtAuth(ctxWith(token), deps, auth), undefined);
    assert.equal(checks, 1);
    assert.equal(auth.pending.size, 0);
    // Past exp the cached entry ends: checked again, and refused.
    wall += 91_000; // exp plus the default 30 s leeway
    const late = await checkJwtAuth(ctxWith(token), deps, auth);
    assert.equal(late?.status, 401);
    assert.match(late!.headers.get("www-authenticate")!, /The token expired/);
    assert.equal(checks, 2);
  } finally {
    VerifyKey.prototype.verify = verify;
  }
});

Deno.test("withoutParam and withoutCookie: only the named one goes, the rest byte for byte", () => {
  assert.equal(withoutParam("?a=1&access_token=x&b=%2F", "access_token"), "?a=1&b=%2F");
  assert.equal(withoutParam("?access%5Ftoken=x", "access_token"), "");
  assert.equal(withoutParam("?a&&b", "t"), "?a&&b");
  assert.equal(withoutCookie("a=1; s=tok; b=2", "s"), "a=1; b=2");
  assert.equal(withoutCookie("s=tok", "s"), null);
});

Deno.test("TokenCaches: verified tokens outlive a reload that changes nothing that decides them", () => {
  const tokens = new TokenCaches();
  const cfg = JwtAuth.parse({ secret_env: "S" });
  const build = (secret: string, c = cfg) =>
    compileJwtAuth(c, { env: () => secret, id: "/api", tokens }).verified;
  const first = build(SECRET);
  assert.equal(build(SECRET), first);
  assert.notEqual(build(`${SECRET}2`), first, "another secret");
  const other = build(SECRET, JwtAuth.parse({ secret_env: "S", issuer: "x" }));
  assert.notEqual(other, first, "other settings");
  assert.equal(build(SECRET, JwtAuth.parse({ secret_env: "S", issuer: "x" })), other);
  tokens.retain({ "/api": {} });
  assert.notEqual(build(SECRET, JwtAuth.parse({ secret_env: "S", issuer: "x" })), other);
});

Deno.test("checkJwtAuth: a required claim named beyond ASCII is refused with 401, its name escaped", async () => {
  const auth = compileJwtAuth(
    JwtAuth.parse({ secret_env: "S", required_claims: { "ロール": "admin", 'a"b\\c': 1 } }),
    { env: () => SECRET },
  );
  const token = await hs256({ sub: "a", exp: wall / 1000 + 60, "ロール": "guest" });
  // It threw (a Headers value beyond Latin-1): every such token got 500, not 401.
  const res = await checkJwtAuth(ctxWith(token), deps, auth);
  assert.equal(res?.status, 401);
  const challenge = res!.headers.get("www-authenticate")!;
  assert.match(challenge, /error_description="The %E3%83%AD%E3%83%BC%E3%83%AB claim is missing/);
  // RFC 6750 §3: error_description holds printable ASCII but `"` and `\`.
  const other = await hs256({ sub: "a", exp: wall / 1000 + 60, "ロール": "admin" });
  const res2 = await checkJwtAuth(ctxWith(other), deps, auth);
  assert.equal(res2?.status, 401);
  assert.match(
    res2!.headers.get("www-authenticate")!,
    /error_description="The a%22b%5Cc claim is missing or not accepted"$/,
  );
});

Deno.test("checkJwtAuth: a small-order Ed25519 key in key_file does not let a forged token in", async () => {
  // The identity point: WebCrypto accepts R = identity, S = 0 as its signature of any message.
  const x = new Uint8Array(32);
  x[0] = 1;
  const files = new Map([["k.jwk", JSON.stringify({ kty: "OKP", crv: "Ed25519", x: b64(x) })]]);
  const auth = compileJwtAuth(JwtAuth.parse({ key_file: "k.jwk" }), { files });
  const header = b64(enc.encode('{"alg":"EdDSA"}'));
  const payload = b64(enc.encode(JSON.stringify({ sub: "admin", exp: wall / 1000 + 60 })));
  const forged = `${header}.${payload}.${b64(new Uint8Array([1, ...new Uint8Array(63)]))}`;
  const res = await checkJwtAuth(ctxWith(forged), deps, auth);
  assert.equal(res?.status, 401);
});

Deno.test("checkJwtAuth: a public JWK Set given as secret_file does not verify HS256 tokens", async () => {
  // The IdP's public set saved where the HMAC secret goes: anyone who fetches the same bytes
  // could sign HS256 tokens with them (the algorithm confusion, by configuration).
  const pair = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  const jwk = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const text = JSON.stringify({ keys: [{ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }] });
  const files = new Map([["jwks.json", text]]);
  const auth = compileJwtAuth(JwtAuth.parse({ secret_file: "jwks.json" }), { files });
  const input = `${b64(enc.encode('{"alg":"HS256"}'))}.${
    b64(enc.encode(JSON.stringify({ sub: "admin", exp: wall / 1000 + 60 })))
  }`;
  const key = await crypto.subtle.importKey(
    "raw",
    enc.encode(text),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(input)));
  const res = await checkJwtAuth(ctxWith(`${input}.${b64(sig)}`), deps, auth);
  assert.equal(res?.status, 401);
});

Deno.test("checkJwtAuth: distinct tokens past MAX_VERIFIED keep the cache at its bound, refused ones are not kept", async () => {
  const auth = compileJwtAuth(JwtAuth.parse({ secret_env: "S" }), { env: () => SECRET });
  const key = await crypto.subtle.importKey(
    "raw",
    enc.encode(SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const header = b64(enc.encode('{"alg":"HS256"}'));
  const sign = async (sub: string) => {
    const input = `${header}.${b64(enc.encode(JSON.stringify({ sub, exp: wall / 1000 + 600 })))}`;
    const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(input)));
    return `${input}.${b64(sig)}`;
  };
  // Every client holds its own token: the cache of verified ones grows with them, to its bound.
  for (let i = 0; i < MAX_VERIFIED + 100; i++) {
    assert.equal(await checkJwtAuth(ctxWith(await sign(`u${i}`)), deps, auth), undefined);
  }
  assert.equal(auth.verified.size, MAX_VERIFIED);
  // A token signed by anyone else, or not a token at all: refused, nothing kept.
  const verified = new Set(auth.verified.keys());
  for (let i = 0; i < 500; i++) {
    const forged = (await sign(`f${i}`)).slice(0, -4) + "AAAA";
    assert.equal((await checkJwtAuth(ctxWith(forged), deps, auth))?.status, 401);
    assert.equal((await checkJwtAuth(ctxWith(`junk${i}`), deps, auth))?.status, 401);
  }
  assert.deepEqual(new Set(auth.verified.keys()), verified);
  assert.equal(auth.pending.size, 0);
});
