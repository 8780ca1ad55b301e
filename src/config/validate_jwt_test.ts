import assert from "node:assert/strict";
import { formatIssue, loadConfigText } from "./load.ts";

const SECRET = "s".repeat(32);
const PUBLIC_PEM = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----
`;
const CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

function issues(
  jwt: string,
  o: { files?: Record<string, string>; env?: Record<string, string>; extra?: string } = {},
): string[] {
  const files = o.files ?? {};
  const text = `listen_addr: "127.0.0.1:0"
routes:
  /api:
    type: proxy
    target: http://127.0.0.1:1
    jwt_auth: ${jwt}
${o.extra ?? ""}`;
  const r = loadConfigText(text, {
    file: "c.yaml",
    env: {
      exists: (p) => p in files,
      readText: (p) => ({ text: files[p] }),
      env: (n) => o.env?.[n],
    },
  });
  return r.issues.map(formatIssue);
}

Deno.test("validate jwt_auth: a good secret, PEM or JWKS URL passes", () => {
  assert.deepEqual(issues("{ secret_env: JWT }", { env: { JWT: SECRET } }), []);
  assert.deepEqual(issues("{ key_file: k.pem }", { files: { "k.pem": PUBLIC_PEM } }), []);
  assert.deepEqual(issues("{ jwks_url: https://idp.example/jwks.json, audience: api }"), []);
  assert.deepEqual(issues("{ jwks_url: http://127.0.0.1:8080/jwks.json, audience: [a, b] }"), []);
  assert.deepEqual(issues("{ jwks_url: http://idp.example/jwks.json, audience: api }"), [
    "c.yaml:6:17: warning: routes./api.jwt_auth.jwks_url: The JWK Set comes over plain HTTP: " +
    "anyone on the way can swap in keys and sign tokens\n  fix: Use the IdP's https URL",
  ]);
});

Deno.test("validate jwt_auth: a JWKS URL without audience accepts the IdP's tokens for any app", () => {
  assert.deepEqual(issues("{ jwks_url: https://idp.example/jwks.json }"), [
    "c.yaml:6:17: warning: routes./api.jwt_auth.jwks_url: Without audience, every token this IdP " +
    "signs passes, whichever application it was issued for (with a shared IdP such as Google or " +
    "Entra ID, anyone can get one)\n  fix: Set audience to the value your IdP puts in aud for " +
    "this API (and issuer to its iss)",
  ]);
  // Own keys (a secret or key file) sign only what the operator's own issuer mints: no warning.
  assert.deepEqual(issues("{ key_file: k.pem }", { files: { "k.pem": PUBLIC_PEM } }), []);
});

Deno.test("validate jwt_auth: no key source, an unset env var, a short secret", () => {
  assert.deepEqual(issues("{ issuer: x }"), [
    "c.yaml:6:5: error: routes./api.jwt_auth: jwt_auth has no key: every token would be refused\n" +
    "  fix: Add jwks_url (the IdP's JWK Set), key_file (a PEM public key or JWK), or secret_env / " +
    "secret_file (an HMAC secret)",
  ]);
  assert.match(issues("{ secret_env: JWT }")[0], /6:17: error: .*JWT is not set/);
  assert.match(
    issues("{ secret_env: JWT }", { env: { JWT: "short" } })[0],
    /Environment variable JWT is 5 bytes long: HS256 needs a secret of at least 32\n {2}fix: .*openssl rand/,
  );
});

Deno.test("validate jwt_auth: a PEM as HMAC secret, a certificate as key, a missing file", () => {
  assert.match(
    issues("{ secret_file: s.pem }", { files: { "s.pem": PUBLIC_PEM } })[0],
    /c.yaml:6:17: error: routes.\/api.jwt_auth.secret_file: s.pem holds a PEM key, not an HMAC secret\n {2}fix: Put a public key in key_file/,
  );
  assert.match(
    issues("{ key_file: c.pem }", { files: { "c.pem": CERT_PEM } })[0],
    /key_file: c.pem is a PEM CERTIFICATE, not a PUBLIC KEY\n {2}fix: .*openssl x509 -in cert.pem -pubkey -noout/,
  );
  assert.match(issues("{ key_file: gone.pem }")[0], /6:17: error: .*File not found: gone.pem/);
});

Deno.test("validate jwt_auth: algorithms no key verifies, clashing headers, basic_auth beside it", () => {
  assert.match(
    issues("{ secret_env: JWT, algorithms: [RS256] }", { env: { JWT: SECRET } })[0],
    /jwt_auth.algorithms: No key here verifies RS256 \(the keys are hmac\)/,
  );
  assert.match(
    issues("{ jwks_url: https://idp.example/jwks.json, audience: a, algorithms: [HS256] }")[0],
    /jwt_auth.algorithms: A JWK Set gives no key for HS256: its HMAC keys are public/,
  );
  assert.deepEqual(
    issues("{ jwks_url: https://idp.example/jwks.json, audience: a, algorithms: [HS256, RS256] }"),
    [],
  );
  const clash = issues(
    "{ secret_env: JWT, claims_to_headers: { sub: X-User, email: x-user, role: Authorization } }",
    { env: { JWT: SECRET } },
  );
  assert.equal(clash.length, 2);
  assert.match(clash[0], /claims_to_headers.email: Claims sub and email both go to x-user/);
  assert.match(clash[1], /claims_to_headers.role: Claims cannot be sent as Authorization/);
  // Expect would have the upstream wait for a body, or read it as the next request.
  assert.match(
    issues("{ secret_env: JWT, claims_to_headers: { nick: Expect } }", { env: { JWT: SECRET } })
      .join(),
    /claims_to_headers.nick: Claims cannot be sent as Expect/,
  );
  assert.match(
    issues("{ secret_env: JWT }", {
      env: { JWT: SECRET },
      extra:
        '    basic_auth: { users: { a: "$2y$05$AYw6TXrwl9Rc4rj86MFm9eehdwDZG3Q6N1P71NCqe/9kbg8p0mn3a" } }\n',
    })[0],
    /basic_auth and jwt_auth both read Authorization/,
  );
});

Deno.test("validate rate_limit by jwt_claim: needs a claim and jwt_auth on the route", () => {
  const text = (jwt: string, claim: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:0"
routes:
  /api:
    type: proxy
    target: http://127.0.0.1:1
    ${jwt}
    rate_limit: { by: jwt_claim, ${claim} requests: 5, period: 1m }
`,
      { file: "c.yaml", env: { exists: () => true, env: () => SECRET } },
    ).issues.map(formatIssue);
  assert.deepEqual(text("jwt_auth: { secret_env: JWT }", "claim: sub,"), []);
  assert.match(
    text("jwt_auth: { secret_env: JWT }", "")[0],
    /rate_limit: claim is required when rate limiting by jwt_claim/,
  );
  assert.match(
    text("", "claim: sub,")[0],
    /c.yaml:7:19: error: routes.\/api.rate_limit.by: by: jwt_claim needs jwt_auth on the route/,
  );
});

Deno.test("validate: a realm beyond Latin-1 is refused (the challenge field could not be sent: 500)", () => {
  const hint = "Use ASCII text: the realm goes in the WWW-Authenticate field";
  assert.deepEqual(issues('{ secret_env: JWT, realm: "Zone 🚀" }', { env: { JWT: SECRET } }), [
    "c.yaml:6:34: error: routes./api.jwt_auth.realm: realm has characters a header field cannot " +
    `carry (beyond Latin-1)\n  fix: ${hint}`,
  ]);
  // Latin-1 goes as its bytes, as the Rust Prox sent it.
  assert.deepEqual(issues('{ secret_env: JWT, realm: "Zoné" }', { env: { JWT: SECRET } }), []);
  const hash = "$2y$05$AYw6TXrwl9Rc4rj86MFm9eehdwDZG3Q6N1P71NCqe/9kbg8p0mn3a";
  const r = loadConfigText(
    `listen_addr: "127.0.0.1:0"
routes:
  /:
    type: respond
    status: 200
    basic_auth: { realm: "Zone 🚀", users: { alice: "${hash}" } }
`,
    { file: "c.yaml", env: { exists: () => true } },
  );
  assert.deepEqual(r.issues.map(formatIssue), [
    "c.yaml:6:19: error: routes./.basic_auth.realm: realm has characters a header field cannot " +
    `carry (beyond Latin-1)\n  fix: ${hint}`,
  ]);
});

Deno.test("validate jwt_auth: a jwks_min_refresh under a second is warned about (refetch floods)", () => {
  const base = "jwks_url: https://idp.example/jwks.json, audience: api";
  assert.deepEqual(issues(`{ ${base}, jwks_min_refresh: 5s }`), []);
  assert.deepEqual(
    issues(`{ ${base}, jwks_min_refresh: 0s }`).map((l) => l.replace(/:\d+:\d+:/, ":")),
    [
      "c.yaml: warning: routes./api.jwt_auth.jwks_min_refresh: jwks_min_refresh under 1s lets tokens " +
      "with made-up key ids have the JWK Set fetched back to back\n  fix: Keep the default 30s, or a " +
      "few seconds at least",
    ],
  );
});
