// Cost of jwt_auth per request, with and without the verified-token cache, per algorithm:
// `deno bench -A bench/jwt_verify_bench.ts`. Runs the filter itself (checkJwtAuth) on a minimal
// request context; the cache is emptied before each call for the "verify" cases.
import { checkJwtAuth, compileJwtAuth } from "../src/proxy/filters/jwt_auth.ts";
import type { PipelineDeps, RequestContext } from "../src/proxy/context.ts";
import { noopMetrics, silentLogger } from "../src/ports.ts";
import { JwtAuth } from "../src/config/schema.ts";

const enc = new TextEncoder();
const b64 = (b: Uint8Array) =>
  btoa(String.fromCharCode(...b)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");
const part = (o: unknown) => b64(enc.encode(JSON.stringify(o)));
const payload = { sub: "alice", exp: Math.floor(Date.now() / 1000) + 3600, iss: "https://idp" };

async function sign(alg: string, key: CryptoKey, params: AlgorithmIdentifier | EcdsaParams) {
  const input = `${part({ alg, typ: "JWT" })}.${part(payload)}`;
  return `${input}.${
    b64(new Uint8Array(await crypto.subtle.sign(params, key, enc.encode(input))))
  }`;
}

async function spkiPem(key: CryptoKey): Promise<string> {
  const der = new Uint8Array(await crypto.subtle.exportKey("spki", key));
  return `-----BEGIN PUBLIC KEY-----\n${
    btoa(String.fromCharCode(...der))
  }\n-----END PUBLIC KEY-----\n`;
}

const secret = "a-bench-secret-that-is-at-least-32-bytes";
const hmac = await crypto.subtle.importKey(
  "raw",
  enc.encode(secret),
  { name: "HMAC", hash: "SHA-256" },
  false,
  ["sign"],
);
const rsa = await crypto.subtle.generateKey(
  {
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256",
  },
  true,
  ["sign", "verify"],
) as CryptoKeyPair;
const ec = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
  "sign",
  "verify",
]) as CryptoKeyPair;
const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
  "sign",
  "verify",
]) as CryptoKeyPair;

const cases = [
  { name: "HS256", token: await sign("HS256", hmac, "HMAC"), cfg: { secret_env: "S" } },
  {
    name: "RS256",
    token: await sign("RS256", rsa.privateKey, "RSASSA-PKCS1-v1_5"),
    cfg: { key_file: "rsa" },
  },
  {
    name: "ES256",
    token: await sign("ES256", ec.privateKey, { name: "ECDSA", hash: "SHA-256" }),
    cfg: { key_file: "ec" },
  },
  { name: "EdDSA", token: await sign("EdDSA", ed.privateKey, "Ed25519"), cfg: { key_file: "ed" } },
];
const files = new Map([
  ["rsa", await spkiPem(rsa.publicKey)],
  ["ec", await spkiPem(ec.publicKey)],
  ["ed", await spkiPem(ed.publicKey)],
]);
const deps = {
  clock: { now: () => Date.now(), monotonic: () => performance.now() },
  logger: silentLogger,
  metrics: noopMetrics,
} as unknown as PipelineDeps;

for (const c of cases) {
  const auth = compileJwtAuth(JwtAuth.parse(c.cfg), { files, env: () => secret });
  const ctx = () =>
    ({
      req: new Request("http://x/", { headers: { authorization: `Bearer ${c.token}` } }),
      query: "",
      requestId: "r",
      route: { id: "r" },
    }) as unknown as RequestContext;
  if (await checkJwtAuth(ctx(), deps, auth)) throw new Error(`${c.name} refused`);
  Deno.bench(`${c.name} verify (no cache)`, { group: c.name, baseline: true }, async () => {
    auth.verified.clear();
    await checkJwtAuth(ctx(), deps, auth);
  });
  Deno.bench(`${c.name} cached`, { group: c.name }, async () => {
    await checkJwtAuth(ctx(), deps, auth);
  });
}
