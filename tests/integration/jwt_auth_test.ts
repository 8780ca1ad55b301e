// `jwt_auth` through a real Prox: tokens signed in the test with WebCrypto (HS256, RS256, PS256,
// ES256, ES384, EdDSA), a key file, an HMAC secret from the environment, a real JWK Set server on
// port 0 (max-age, key rotation by kid, the IdP down at start and later), the classic forgeries
// (`alg: none`, an RSA public key as HS256 secret), cookie and query tokens, claims to headers.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { connect, wsUpstream } from "./_ws.ts";
import { startProxy } from "./_proxy.ts";
import { recordingLogger } from "./_backend.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

const enc = new TextEncoder();
const b64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes)).replaceAll("=", "").replaceAll("+", "-").replaceAll(
    "/",
    "_",
  );
const part = (o: unknown) => b64url(enc.encode(JSON.stringify(o)));
const now = () => Math.floor(Date.now() / 1000);

type Signer = { alg: string; sign(data: Uint8Array<ArrayBuffer>): Promise<ArrayBuffer> };

/** A compact JWS over `payload`; `header` extras (kid) merge into `{alg, typ}`. */
async function jwt(
  signer: Signer,
  payload: Record<string, unknown>,
  header: Record<string, unknown> = {},
): Promise<string> {
  const input = `${part({ alg: signer.alg, typ: "JWT", ...header })}.${part(payload)}`;
  return `${input}.${b64url(new Uint8Array(await signer.sign(enc.encode(input))))}`;
}

type Gen = RsaHashedKeyGenParams | EcKeyGenParams | { name: string };
/** A key pair, its signer, its public JWK and its public SPKI PEM. */
async function keyPair(
  alg: string,
  gen: Gen,
  signAlg: AlgorithmIdentifier | EcdsaParams | RsaPssParams,
) {
  const pair = await crypto.subtle.generateKey(gen, true, ["sign", "verify"]) as CryptoKeyPair;
  const jwk = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const der = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const pem = `-----BEGIN PUBLIC KEY-----\n${
    btoa(String.fromCharCode(...der)).replace(/.{64}/g, "$&\n")
  }\n-----END PUBLIC KEY-----\n`;
  const signer: Signer = { alg, sign: (d) => crypto.subtle.sign(signAlg, pair.privateKey, d) };
  return { signer, jwk, pem };
}

const rsaGen = (name: string): RsaHashedKeyGenParams => ({
  name,
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: "SHA-256",
});

function hmacSigner(secret: string, alg = "HS256"): Signer {
  const hash = `SHA-${alg.slice(2)}`;
  const key = crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash }, false, [
    "sign",
  ]);
  return { alg, sign: async (d) => crypto.subtle.sign("HMAC", await key, d) };
}

/** An upstream that echoes what identifies the caller. */
const echo = () =>
  startUpstream((req) => {
    const u = new URL(req.url);
    return Response.json({
      authorization: req.headers.get("authorization"),
      user: req.headers.get("x-user-id"),
      email: req.headers.get("x-email"),
      roles: req.headers.get("x-roles"),
      cookie: req.headers.get("cookie"),
      query: u.search,
    });
  });

const SECRET = "a-test-secret-that-is-at-least-32-bytes-long";

Deno.test("jwt_auth HS256 from an env var: challenges, claims to headers, forged copies removed", async () => {
  await using up = await echo();
  Deno.env.set("PROX_TEST_JWT_SECRET", SECRET);
  const logger = recordingLogger();
  const rsa = await keyPair("RS256", rsaGen("RSASSA-PKCS1-v1_5"), "RSASSA-PKCS1-v1_5");
  const es384 = await keyPair("ES384", { name: "ECDSA", namedCurve: "P-384" }, {
    name: "ECDSA",
    hash: "SHA-384",
  });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/rsa.pem`, rsa.pem);
    await Deno.writeTextFile(
      `${dir}/set.json`,
      JSON.stringify({ keys: [{ ...es384.jwk, kid: "e" }, { ...rsa.jwk, kid: "r" }] }),
    );
    await using prox = await startProxy(
      `health_check: { enabled: false }
routes:
  "/api":
    type: proxy
    target: "${up.url}"
    jwt_auth:
      realm: api
      secret_env: PROX_TEST_JWT_SECRET
      issuer: https://idp.test
      audience: [api, other]
      required_claims: { role: admin }
      claims_to_headers: { sub: X-User-Id, email: X-Email, role: X-Roles }
  "/rsa":
    type: proxy
    target: "${up.url}"
    jwt_auth: { key_file: "${dir}/rsa.pem", forward_authorization: true }
  "/jwk":
    type: proxy
    target: "${up.url}"
    jwt_auth: { key_file: "${dir}/set.json", algorithms: [ES384, PS256] }
`,
      { logger },
    );
    const hs = hmacSigner(SECRET);
    const good = {
      sub: "alice",
      email: "ä@x.test",
      role: ["user", "admin"],
      iss: "https://idp.test",
      aud: "api",
      exp: now() + 60,
    };
    const call = (path: string, token?: string, headers: Record<string, string> = {}) =>
      fetch(`${prox.url}${path}`, {
        headers: token === undefined ? headers : { ...headers, authorization: `Bearer ${token}` },
      });

    // No token: a challenge without an error attribute (RFC 6750 §3.1).
    const none = await call("/api/x");
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="api"');
    await none.body?.cancel();

    // A good token: the claims go upstream, the client's own X-User-Id does not, nor the token.
    const ok = await call("/api/x", await jwt(hs, good), { "x-user-id": "root", "X-Roles": "god" });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), {
      authorization: null,
      user: "alice",
      email: "%C3%A4@x.test",
      roles: '["user","admin"]',
      cookie: null,
      query: "",
    });

    const refusals: [string, string, RegExp][] = [
      ["expired", await jwt(hs, { ...good, exp: now() - 60 }), /The token expired/],
      ["wrong issuer", await jwt(hs, { ...good, iss: "https://evil" }), /issuer/],
      ["wrong audience", await jwt(hs, { ...good, aud: ["web"] }), /audience/],
      ["missing role", await jwt(hs, { ...good, role: "user" }), /role claim/],
      ["wrong secret", await jwt(hmacSigner("x".repeat(40)), good), /signature is invalid/],
      ["alg none", `${part({ alg: "none" })}.${part(good)}.`, /three|Unsigned/],
      ["alg none with sig", `${part({ alg: "none" })}.${part(good)}.c2ln`, /Unsigned/],
      ["RS256 on an HMAC route", await jwt(rsa.signer, good), /No key verifies/],
      ["garbage", "a.b.c", /header/],
      ["bad base64", "@@@.###.$$$", /header is not base64url JSON/],
      ["empty", "", /three/],
      ["huge", "a".repeat(9000), /too long/],
    ];
    for (const [what, token, why] of refusals) {
      const res = await call("/api/x", token);
      assert.equal(res.status, 401, what);
      const challenge = res.headers.get("www-authenticate") ?? "";
      assert.match(
        challenge,
        /^Bearer realm="api", error="invalid_token", error_description="/,
        what,
      );
      assert.match(challenge, why, what);
      await res.body?.cancel();
    }

    // The RSA public key (PEM text) used as an HMAC secret: the classic algorithm confusion.
    const confused = await jwt(hmacSigner(rsa.pem), { sub: "mallory", exp: now() + 60 });
    const c = await call("/rsa/x", confused);
    assert.equal(c.status, 401);
    assert.match(c.headers.get("www-authenticate")!, /No key verifies/);
    await c.body?.cancel();
    const rsaOk = await jwt(rsa.signer, { sub: "bob", exp: now() + 60 });
    const r = await call("/rsa/x", rsaOk);
    assert.equal(r.status, 200);
    assert.equal((await r.json()).authorization, `Bearer ${rsaOk}`); // forward_authorization
    // HS512 with the same secret: the secret's family.
    const hs512 = await call("/api/x", await jwt(hmacSigner(SECRET, "HS512"), good));
    assert.equal(hs512.status, 200);
    await hs512.body?.cancel();
    // A JWK Set file, narrowed by algorithms: ES384 passes, RS256 from the set's RSA key does not.
    const jwkOk = await call("/jwk/x", await jwt(es384.signer, { exp: now() + 60 }, { kid: "e" }));
    assert.equal(jwkOk.status, 200);
    await jwkOk.body?.cancel();
    const notListed = await call(
      "/jwk/x",
      await jwt(rsa.signer, { exp: now() + 60 }, { kid: "r" }),
    );
    assert.equal(notListed.status, 401);
    await notListed.body?.cancel();
    // Why tokens were refused is logged at debug level, never the token.
    assert.ok(logger.lines.some((l) => l.level === "debug" && l.msg === "JWT refused"));
  } finally {
    Deno.env.delete("PROX_TEST_JWT_SECRET");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("jwt_auth from a cookie or a query parameter: stripped from the upstream request", async () => {
  await using up = await echo();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/secret`, `${SECRET}\n`);
    const access: Record<string, unknown>[] = [];
    const logger = {
      ...silentLogger,
      info: (m: string, f?: Record<string, unknown>) => void (m === "access" && access.push(f!)),
    };
    await using prox = await startProxy(
      `health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    jwt_auth: { secret_file: "${dir}/secret", cookie: session, query_param: access_token, claims_to_headers: { sub: X-User-Id } }
`,
      { logger },
    );
    const token = await jwt(hmacSigner(SECRET), { sub: "carol", exp: now() + 60 });
    // A token from a cookie leaves the app's own Authorization (another scheme) alone.
    const byCookie = await fetch(`${prox.url}/a`, {
      headers: { cookie: `theme=dark; session=${token}; lang=en`, authorization: "Basic YTpi" },
    });
    const got = await byCookie.json();
    assert.deepEqual(
      [byCookie.status, got.cookie, got.authorization],
      [200, "theme=dark; lang=en", "Basic YTpi"],
    );
    const byQuery = await fetch(`${prox.url}/a?x=1&access_token=${token}&y=2`);
    const q = await byQuery.json();
    assert.deepEqual([byQuery.status, q.query, q.user], [200, "?x=1&y=2", "carol"]);
    // A header token wins; a second token in the query or a cookie is still kept from upstream.
    const both = await fetch(`${prox.url}/a?access_token=other&z=1`, {
      headers: { authorization: `Bearer ${token}`, cookie: "session=other" },
    });
    const b = await both.json();
    assert.deepEqual([both.status, b.query, b.cookie], [200, "?z=1", null]);
    const bad = await fetch(`${prox.url}/a?access_token=nope.nope.nope&k=v`);
    assert.equal(bad.status, 401);
    await bad.body?.cancel();
    // The access log records the query as forwarded: never the token, refused or not.
    await waitFor(() => access.length === 4);
    assert.deepEqual(access.map((l) => [l.status, l.query]), [
      [200, ""],
      [200, "x=1&y=2"],
      [200, "z=1"],
      [401, "k=v"],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("jwt_auth with a JWKS URL: every key type, max-age, rotation by kid, the IdP down", async () => {
  const keys = {
    rs: await keyPair("RS256", rsaGen("RSASSA-PKCS1-v1_5"), "RSASSA-PKCS1-v1_5"),
    ps: await keyPair("PS256", rsaGen("RSA-PSS"), { name: "RSA-PSS", saltLength: 32 }),
    es256: await keyPair("ES256", { name: "ECDSA", namedCurve: "P-256" }, {
      name: "ECDSA",
      hash: "SHA-256",
    }),
    es384: await keyPair("ES384", { name: "ECDSA", namedCurve: "P-384" }, {
      name: "ECDSA",
      hash: "SHA-384",
    }),
    ed: await keyPair("EdDSA", { name: "Ed25519" }, { name: "Ed25519" }),
    rotated: await keyPair("ES256", { name: "ECDSA", namedCurve: "P-256" }, {
      name: "ECDSA",
      hash: "SHA-256",
    }),
  };
  let published = ["rs", "ps", "es256", "es384", "ed"] as (keyof typeof keys)[];
  let down = true;
  let fetches = 0;
  await using idp = await startUpstream(() => {
    fetches++;
    if (down) return new Response("down", { status: 503 });
    return Response.json(
      { keys: published.map((k) => ({ ...keys[k].jwk, kid: k, use: "sig" })) },
      { headers: { "cache-control": "public, max-age=3600" } },
    );
  });
  await using up = await echo();
  const logger = recordingLogger();
  await using prox = await startProxy(
    `health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    jwt_auth: { jwks_url: "${idp.url}/jwks", jwks_min_refresh: 1s, claims_to_headers: { sub: X-User-Id } }
`,
    { logger },
  );
  const call = async (token: string) => {
    const res = await fetch(`${prox.url}/`, { headers: { authorization: `Bearer ${token}` } });
    const body = res.ok ? (await res.json()).user : await res.text();
    return [res.status, res.ok ? body : res.headers.get("www-authenticate")];
  };
  const claims = (sub: string) => ({ sub, exp: now() + 60 });

  // Started while the IdP is down: no crash, 503 (a client must not drop a good token).
  const first = await jwt(keys.rs.signer, claims("rs"), { kid: "rs" });
  assert.deepEqual((await call(first))[0], 503);
  down = false;
  await waitFor(async () => (await call(first))[1] === "rs", { what: "JWK Set fetched" });

  const seen = fetches;
  for (const k of ["rs", "ps", "es256", "es384", "ed"] as const) {
    assert.deepEqual(await call(await jwt(keys[k].signer, claims(k), { kid: k })), [200, k], k);
  }
  assert.equal(fetches, seen, "max-age=3600: the set is not fetched again");
  // A token with a kid the set lacks: refused, and a refetch once per jwks_min_refresh at most.
  const stranger = await jwt(keys.rotated.signer, claims("new"), { kid: "rotated" });
  await waitFor(async () => {
    const denied = await call(stranger);
    assert.equal(denied[0], 401);
    assert.match(String(denied[1]), /No key verifies/);
    return fetches === seen + 1;
  }, { what: "refetch for an unknown kid" });
  assert.equal((await call(stranger))[0], 401);
  assert.equal(fetches, seen + 1, "an unknown kid refetches at most once per jwks_min_refresh");

  // The IdP rotates in the new key: once jwks_min_refresh has passed, the unknown kid fetches.
  published = ["rotated"];
  await waitFor(async () => (await call(stranger))[1] === "new", { what: "rotated key used" });

  // The IdP fails now: the last good keys keep serving.
  down = true;
  const again = await jwt(keys.rotated.signer, claims("still"), { kid: "rotated" });
  assert.deepEqual(await call(again), [200, "still"]);
  // An ES256 token signed by the P-256 key of another kid does not verify under this kid.
  const wrongKid = await jwt(keys.es256.signer, claims("x"), { kid: "rotated" });
  assert.equal((await call(wrongKid))[0], 401);
  assert.ok(logger.lines.some((l) => l.msg.startsWith("Cannot fetch JWK Set")));
});

Deno.test("rate_limit by jwt_claim: one quota per verified subject, after jwt_auth", async () => {
  await using up = await echo();
  Deno.env.set("PROX_TEST_JWT_RL", SECRET);
  try {
    await using prox = await startProxy(`health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 100, period: 1m }
    rate_limits: [{ name: per-user, by: jwt_claim, claim: sub, requests: 2, period: 1h }]
    jwt_auth: { secret_env: PROX_TEST_JWT_RL }
`);
    const hs = hmacSigner(SECRET);
    const as = async (sub: string | null) => {
      const headers: Record<string, string> = sub === null
        ? {}
        : { authorization: `Bearer ${await jwt(hs, { sub, exp: now() + 60 })}` };
      const res = await fetch(`${prox.url}/`, { headers });
      await res.body?.cancel();
      return [res.status, res.headers.get("ratelimit")];
    };
    // Without a token: 401 before the per-user limit counts anything.
    assert.deepEqual((await as(null))[0], 401);
    // The 401 counted against the address's limit (before authentication), not alice's.
    const first = await as("alice");
    assert.equal(first[0], 200);
    assert.match(String(first[1]), /^"limit1";r=98;t=\d+, "per-user";r=1;t=\d+$/);
    assert.equal((await as("alice"))[0], 200);
    const limited = await as("alice");
    assert.equal(limited[0], 429);
    assert.match(String(limited[1]), /"per-user";r=0/);
    // Another subject from the same address has its own quota.
    assert.equal((await as("bob"))[0], 200);
  } finally {
    Deno.env.delete("PROX_TEST_JWT_RL");
  }
});

Deno.test("jwt_auth guards websocket and static routes: a browser's query token, stripped", async () => {
  await using ws = await wsUpstream((sock, req) =>
    sock.send(`${req.url} ${req.headers["x-user-id"]}`)
  );
  const dir = await Deno.makeTempDir();
  Deno.env.set("PROX_TEST_JWT_WS", SECRET);
  try {
    await Deno.writeTextFile(`${dir}/index.html`, "secret page");
    const auth =
      "jwt_auth: { secret_env: PROX_TEST_JWT_WS, query_param: token, claims_to_headers: { sub: X-User-Id } }";
    await using prox = await startProxy(`
routes:
  "/s": { type: static, root: "${dir}", ${auth} }
  "/ws": { type: websocket, target: "${ws.url}", ${auth} }
`);
    const token = await jwt(hmacSigner(SECRET), { sub: "dave", exp: now() + 60 });
    const s = await fetch(`${prox.url}/s/`);
    assert.equal(s.status, 401);
    assert.ok(!(await s.text()).includes("secret"));
    assert.equal(await (await fetch(`${prox.url}/s/?token=${token}`)).text(), "secret page");
    await assert.rejects(connect(`ws://127.0.0.1:${prox.port}/ws?token=nope`), { status: 401 });
    const sock = await connect(`ws://127.0.0.1:${prox.port}/ws/chat?room=1&token=${token}`);
    const first = await new Promise<string>((ok) => sock.once("message", (d) => ok(String(d))));
    assert.equal(first, "/chat?room=1 dave");
    sock.close();
  } finally {
    Deno.env.delete("PROX_TEST_JWT_WS");
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest("jwt_auth over HTTP/2 (curl) with an ES256 key file", ["curl"], async () => {
  await using up = await echo();
  const es = await keyPair("ES256", { name: "ECDSA", namedCurve: "P-256" }, {
    name: "ECDSA",
    hash: "SHA-256",
  });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/es.pem`, es.pem);
    const TLS = `${ROOT}/tests/fixtures/tls`;
    await using prox = await startProxy(
      `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    jwt_auth: { key_file: "${dir}/es.pem", claims_to_headers: { sub: X-User-Id } }
`,
      { tls: true },
    );
    const token = await jwt(es.signer, { sub: "erin", exp: now() + 60 });
    const curl = (...extra: string[]) =>
      run("curl", [
        "-sS",
        "--http2",
        "--cacert",
        `${TLS}/ca.pem`,
        "-w",
        "\n%{http_version} %{http_code}",
        "--resolve",
        `localhost:${prox.port}:127.0.0.1`,
        ...extra,
        `https://localhost:${prox.port}/`,
      ]);
    const ok = await curl("-H", `Authorization: Bearer ${token}`);
    assert.match(ok.stdout, /"user":"erin"/);
    assert.match(ok.stdout, /\n2 200$/);
    const no = await curl("-D", "-");
    assert.match(no.stdout, /www-authenticate: Bearer realm="Restricted"\r\n/);
    assert.match(no.stdout, /\n2 401$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("jwt_auth: replacing the key_file reloads the key", async () => {
  await using up = await echo();
  const a = await keyPair("EdDSA", { name: "Ed25519" }, { name: "Ed25519" });
  const b = await keyPair("EdDSA", { name: "Ed25519" }, { name: "Ed25519" });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/key.pem`, a.pem);
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}", jwt_auth: { key_file: "${dir}/key.pem" } }
`,
    );
    let reloads = 0;
    const server = await startServer({ path: `${dir}/config.yaml` }, {
      logger: silentLogger,
      watchDebounceMs: 20,
      onReload: (r) => void (r.ok && reloads++),
    });
    try {
      const status = async (signer: Signer) => {
        const token = await jwt(signer, { sub: "x", exp: now() + 60 });
        const res = await fetch(`http://127.0.0.1:${server.port}/`, {
          headers: { authorization: `Bearer ${token}` },
        });
        await res.body?.cancel();
        return res.status;
      };
      assert.deepEqual([await status(a.signer), await status(b.signer)], [200, 401]);
      await Deno.writeTextFile(`${dir}/key.pem`, b.pem);
      await waitFor(() => reloads === 1, { what: "the reload" });
      assert.deepEqual([await status(a.signer), await status(b.signer)], [401, 200]);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("jwt_auth with cache: one user's answer is not served to another (cookie tokens)", async () => {
  // The app answers per user but says only max-age (no private): shared caching would leak it.
  await using up = await startUpstream((req) =>
    new Response(`for ${req.headers.get("x-user-id")}`, {
      headers: { "cache-control": "max-age=60" },
    })
  );
  Deno.env.set("PROX_TEST_JWT_CACHE", SECRET);
  try {
    await using prox = await startProxy(`health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    cache: true
    jwt_auth: { secret_env: PROX_TEST_JWT_CACHE, cookie: session, claims_to_headers: { sub: X-User-Id } }
`);
    const as = async (sub: string) => {
      const token = await jwt(hmacSigner(SECRET), { sub, exp: now() + 60 });
      return await (await fetch(`${prox.url}/me`, { headers: { cookie: `session=${token}` } }))
        .text();
    };
    assert.equal(await as("alice"), "for alice");
    assert.equal(await as("bob"), "for bob");
  } finally {
    Deno.env.delete("PROX_TEST_JWT_CACHE");
  }
});

Deno.test("jwt_auth with cache: Vary on a claim's header keys on the claim, not the client's copy", async () => {
  // The app shares per-user answers keyed by the header Prox sets from the token (public + Vary):
  // the cache must key on the value the app got, not on a field the client sent or left out.
  let hits = 0;
  await using up = await startUpstream((req) => {
    hits++;
    return new Response(`for ${req.headers.get("x-user-id")}`, {
      headers: { "cache-control": "public, max-age=60", vary: "X-User-Id" },
    });
  });
  Deno.env.set("PROX_TEST_JWT_VARY", SECRET);
  try {
    await using prox = await startProxy(`health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    cache: true
    jwt_auth: { secret_env: PROX_TEST_JWT_VARY, claims_to_headers: { sub: X-User-Id } }
`);
    const as = async (sub: string, claimed?: string) => {
      const token = await jwt(hmacSigner(SECRET), { sub, exp: now() + 60 });
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (claimed !== undefined) headers["x-user-id"] = claimed;
      return await (await fetch(`${prox.url}/me`, { headers })).text();
    };
    assert.equal(await as("alice"), "for alice");
    assert.equal(await as("bob"), "for bob");
    // bob naming alice gets his own answer (stored under bob), alice still hers.
    assert.equal(await as("bob", "alice"), "for bob");
    assert.equal(await as("alice"), "for alice");
    assert.equal(hits, 2);
  } finally {
    Deno.env.delete("PROX_TEST_JWT_VARY");
  }
});

Deno.test("jwt_auth: a query token stays out of the access log when Prox answers before jwt_auth", async () => {
  await using up = await echo();
  Deno.env.set("PROX_TEST_JWT_EARLY", SECRET);
  try {
    const access: Record<string, unknown>[] = [];
    const logger = {
      ...silentLogger,
      info: (m: string, f?: Record<string, unknown>) => void (m === "access" && access.push(f!)),
    };
    await using prox = await startProxy(
      `health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 1, period: 1m, burst: 1 }
    cors: { allow_origins: ["https://app.example.com"] }
    jwt_auth: { secret_env: PROX_TEST_JWT_EARLY, query_param: access_token }
`,
      { logger },
    );
    const token = await jwt(hmacSigner(SECRET), { sub: "dave", exp: now() + 60 });
    const url = `${prox.url}/a?access_token=${token}&k=v`;
    // The preflight and the 429 are answered before jwt_auth runs.
    const pre = await fetch(url, {
      method: "OPTIONS",
      headers: { origin: "https://app.example.com", "access-control-request-method": "PUT" },
    });
    assert.equal(pre.status, 204);
    await pre.body?.cancel();
    for (const status of [200, 429]) {
      const res = await fetch(url);
      assert.equal(res.status, status);
      await res.body?.cancel();
    }
    await waitFor(() => access.length === 3);
    assert.deepEqual(access.map((l) => [l.status, l.query]), [[204, "k=v"], [200, "k=v"], [
      429,
      "k=v",
    ]]);
  } finally {
    Deno.env.delete("PROX_TEST_JWT_EARLY");
  }
});

Deno.test("jwt_auth: a query token stays out of the access log of a request refused before routing", async () => {
  await using up = await echo();
  Deno.env.set("PROX_TEST_JWT_ADMIT", SECRET);
  try {
    const access: Record<string, unknown>[] = [];
    const logger = {
      ...silentLogger,
      info: (m: string, f?: Record<string, unknown>) => void (m === "access" && access.push(f!)),
    };
    await using prox = await startProxy(
      `health_check: { enabled: false }
limits: { max_header_bytes: 2000 }
routes:
  "/a":
    type: proxy
    target: "${up.url}"
    jwt_auth: { secret_env: PROX_TEST_JWT_ADMIT, query_param: access_token }
  "/a/admin":
    type: proxy
    target: "${up.url}"
    jwt_auth: { secret_env: PROX_TEST_JWT_ADMIT, query_param: access_token }
`,
      { logger },
    );
    /** The status line of a raw HTTP/1.1 exchange (fetch sends no TRACE). */
    const exchange = async (head: string) => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
      try {
        await c.write(enc.encode(head));
        const buf = new Uint8Array(4096);
        const n = await c.read(buf);
        return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
      } finally {
        c.close();
      }
    };
    const q = "?access_token=eyJ.secret.sig&k=v";
    // TRACE, a header section over the limit, a path parameter: answered before any route is.
    assert.match(await exchange(`TRACE /a/x${q} HTTP/1.1\r\nHost: a\r\n\r\n`), / 405 /);
    const big = `X-Big: ${"b".repeat(3000)}\r\n`;
    assert.match(await exchange(`GET /a/x${q} HTTP/1.1\r\nHost: a\r\n${big}\r\n`), / 431 /);
    assert.match(await exchange(`GET /a/admin;x${q} HTTP/1.1\r\nHost: a\r\n\r\n`), / 400 /);
    await waitFor(() => access.length === 3);
    assert.deepEqual(access.map((l) => [l.status, l.query]), [[405, "k=v"], [431, "k=v"], [
      400,
      "k=v",
    ]]);
  } finally {
    Deno.env.delete("PROX_TEST_JWT_ADMIT");
  }
});
