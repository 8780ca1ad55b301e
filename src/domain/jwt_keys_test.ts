import assert from "node:assert/strict";
import { readJwks, readKeyFile } from "./jwt_keys.ts";

const rsa = async (bits: number) => {
  const pair = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: bits,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  const jwk = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const der = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const pem = `-----BEGIN PUBLIC KEY-----\n${
    btoa(String.fromCharCode(...der)).replace(/.{64}/g, "$&\n")
  }\n-----END PUBLIC KEY-----\n`;
  return { jwk: { kty: jwk.kty, n: jwk.n, e: jwk.e }, pem };
};

Deno.test("readJwks and readKeyFile: RSA keys under 2048 bits, e below 3 and short oct keys are refused", async () => {
  const small = await rsa(1024);
  const big = await rsa(2048);
  // RFC 7518 §3.3: a key of 2048 bits or larger MUST be used (a 512-bit one is factored in hours).
  const one = readJwks(JSON.stringify(small.jwk));
  assert.ok("error" in one);
  assert.match(one.error, /1024 bits/);
  const pem = readKeyFile(small.pem);
  assert.ok("error" in pem);
  assert.match(pem.error, /1024 bits/);
  assert.ok("keys" in readKeyFile(big.pem));
  // In a set the weak key is skipped, the others kept.
  const set = readJwks(
    JSON.stringify({ keys: [{ ...small.jwk, kid: "s" }, { ...big.jwk, kid: "b" }] }),
  );
  assert.ok("keys" in set);
  assert.deepEqual(set.keys.map((k) => k.kid), ["b"]);
  // RFC 8017 §3.1: e is odd and at least 3; with e = 1 every "signature" is its own message.
  for (const e of ["AQ", "Ag", "AAAB"]) {
    const r = readJwks(JSON.stringify({ ...big.jwk, e }));
    assert.ok("error" in r, e);
    assert.match(r.error, /exponent/, e);
  }
  // RFC 7518 §3.2: an HMAC key at least as long as the hash output, as secret_file asks.
  const short = readJwks(JSON.stringify({ kty: "oct", k: "YQ" }));
  assert.ok("error" in short);
  assert.match(short.error, /1 byte/);
  const k32 = btoa("k".repeat(32)).replaceAll("=", "");
  assert.ok("keys" in readJwks(JSON.stringify({ kty: "oct", k: k32 })));
});
