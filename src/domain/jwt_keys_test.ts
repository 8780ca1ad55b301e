import assert from "node:assert/strict";
import { readJwks, readKeyFile, readSecret } from "./jwt_keys.ts";

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

/** The eight small-order Ed25519 points as libsodium lists them (y; the top bit is x's sign). */
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000", // order 4
  "0100000000000000000000000000000000000000000000000000000000000000", // the identity
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2 (y = p - 1)
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p: 0, order 4
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p + 1: the identity
];
const hexBytes = (h: string) => Uint8Array.from(h.match(/../g)!, (x) => parseInt(x, 16));
const b64url = (b: Uint8Array) =>
  btoa(String.fromCharCode(...b)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");
/** Ed25519 SubjectPublicKeyInfo: the algorithm identifier, then the 32-byte key. */
const ed25519Pem = (key: Uint8Array) => {
  const der = new Uint8Array([...hexBytes("302a300506032b6570032100"), ...key]);
  return `-----BEGIN PUBLIC KEY-----\n${
    btoa(String.fromCharCode(...der))
  }\n-----END PUBLIC KEY-----\n`;
};

Deno.test("readJwks and readKeyFile: small-order Ed25519 keys, which verify forged signatures, are refused", async () => {
  for (const hex of SMALL_ORDER) {
    for (const sign of [0, 0x80]) {
      const key = hexBytes(hex);
      key[31] |= sign;
      const jwk = readJwks(JSON.stringify({ kty: "OKP", crv: "Ed25519", x: b64url(key) }));
      assert.ok("error" in jwk, `${hex} ${sign}`);
      assert.match(jwk.error, /Ed25519 key of small order/);
      const pem = readKeyFile(ed25519Pem(key));
      assert.ok("error" in pem, `${hex} ${sign}`);
      assert.match(pem.error, /Ed25519 key of small order/);
    }
  }
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const good = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  assert.ok("keys" in readJwks(JSON.stringify({ kty: "OKP", crv: "Ed25519", x: b64url(good) })));
  assert.ok("keys" in readKeyFile(ed25519Pem(good)));
  // A short or long x is no Ed25519 key either.
  const short = readJwks(JSON.stringify({ kty: "OKP", crv: "Ed25519", x: b64url(good.slice(1)) }));
  assert.ok("error" in short);
});

Deno.test("readSecret: a public key in any form is no HMAC secret (anyone could sign with it)", async () => {
  const { jwk, pem } = await rsa(2048);
  const jwks = JSON.stringify({ keys: [{ ...jwk, kid: "k1", use: "sig" }] }, null, 2);
  for (
    const [text, why] of [
      [pem, /PEM key/],
      // A PEM block after other text: openssl's "subject=…" or "Bag Attributes" lines, a newline.
      [`subject=CN = idp\n${pem}`, /PEM key/],
      [`\n${pem}`, /PEM key/],
      [JSON.stringify(jwk), /JWK/],
      [jwks, /JWK/],
      [`${jwks}\n`, /JWK/],
      [
        `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq4kq1d3zv0m1c8f0xXl0x2Pj3n0QbQ7d2b4tG1h3yz user@host`,
        /SSH/,
      ],
    ] as const
  ) {
    const s = readSecret(text);
    assert.ok("error" in s, text.slice(0, 40));
    assert.match(s.error, why);
  }
  // Random secrets pass, also one that starts with a brace.
  assert.ok("key" in readSecret("k".repeat(32)));
  assert.ok("key" in readSecret(`{${"k".repeat(40)}`));
  assert.ok("key" in readSecret(JSON.stringify({ secret: "k".repeat(40) })));
});
