// Cross-field rules of `jwt_auth`: a key source that exists and holds what it should (an HMAC
// secret long enough, a public key rather than a certificate or a private key), algorithms the
// keys can verify, header names that do not clash, and no basic_auth on the same route.

import { keyAlgorithms } from "../domain/jwt.ts";
import type { KeyKind } from "../domain/jwt.ts";
import { readKeyFile, readSecret } from "../domain/jwt_keys.ts";
import type { JwtAuthConfig, RouteConfig } from "./schema.ts";
import type { ValidateEnv } from "./validate.ts";
import type { Report } from "./validate_route.ts";
import { isLoopback } from "./listen.ts";

/** The secret and key files of a route's `jwt_auth` (read at load, watched for changes). */
export function jwtFiles(route: RouteConfig): string[] {
  const j = route.jwt_auth;
  return j ? [j.secret_file, j.key_file].filter((f) => f !== undefined) : [];
}

const FILE_HINT = "Fix the path (a relative one starts from the working directory of prox)";
/**
 * Fields a claim may not be copied into: framing, routing, the credentials themselves, or Expect
 * (an upstream told to expect the body may answer at once and read it as its next request).
 */
const RESERVED = new Set([
  "expect",
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "upgrade",
  "te",
  "trailer",
  "authorization",
  "cookie",
]);
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

/** Checks one route's `jwt_auth` at `path`. */
export function checkJwtAuth(
  route: RouteConfig,
  path: (string | number)[],
  opts: { err: Report; warn: Report; env: ValidateEnv },
): void {
  const auth = route.jwt_auth!;
  const { err } = opts;
  if (CONTROL.test(auth.realm)) {
    err([...path, "realm"], "realm contains a control character", "Use printable text");
  } else if (/[\u0100-\uffff]/.test(auth.realm)) {
    // A Headers value cannot hold them: every challenge, so every request without credentials,
    // would fail with 500.
    err(
      [...path, "realm"],
      "realm has characters a header field cannot carry (beyond Latin-1)",
      "Use ASCII text: the realm goes in the WWW-Authenticate field",
    );
  }
  if (route.basic_auth) {
    err(
      path,
      "basic_auth and jwt_auth both read Authorization: a request cannot satisfy both",
      "Keep one of them on this route",
    );
  }
  const sources = [auth.secret_env, auth.secret_file, auth.key_file, auth.jwks_url]
    .filter((s) => s !== undefined);
  if (sources.length === 0) {
    err(
      path,
      "jwt_auth has no key: every token would be refused",
      "Add jwks_url (the IdP's JWK Set), key_file (a PEM public key or JWK), or secret_env / " +
        "secret_file (an HMAC secret)",
    );
    return;
  }
  if (auth.secret_env !== undefined && auth.secret_file !== undefined) {
    err([...path, "secret_file"], "Use secret_env or secret_file, not both");
  }
  const kinds: KeyKind[] = [];
  if (auth.secret_env !== undefined) {
    const value = opts.env.env?.(auth.secret_env);
    if (value === undefined || value === "") {
      err(
        [...path, "secret_env"],
        `Environment variable ${auth.secret_env} is not set`,
        `Export ${auth.secret_env} to Prox (e.g. in its systemd unit: Environment=…)`,
      );
    } else {
      checkSecret(value, [...path, "secret_env"], {
        err,
        kinds,
        label: `Environment variable ${auth.secret_env}`,
      });
    }
  }
  if (auth.secret_file !== undefined) {
    const text = readFile(auth.secret_file, [...path, "secret_file"], opts);
    if (text !== undefined) {
      checkSecret(text, [...path, "secret_file"], { err, kinds, label: auth.secret_file });
    }
  }
  if (auth.key_file !== undefined) {
    const text = readFile(auth.key_file, [...path, "key_file"], opts);
    if (text !== undefined) {
      const read = readKeyFile(text);
      if ("error" in read) {
        err([...path, "key_file"], `${auth.key_file} is ${read.error}`, read.hint);
      } else kinds.push(...read.keys.map((k) => k.kind));
    }
  }
  checkAlgorithms(auth, path, { err, kinds });
  const jwks = auth.jwks_url === undefined ? null : new URL(auth.jwks_url);
  if (jwks?.protocol === "http:" && !isLoopback(jwks.hostname)) {
    opts.warn(
      [...path, "jwks_url"],
      "The JWK Set comes over plain HTTP: anyone on the way can swap in keys and sign tokens",
      "Use the IdP's https URL",
    );
  }
  const audiences = auth.audience === undefined ? [] : [auth.audience].flat();
  if (jwks !== null && audiences.length === 0) {
    // An IdP signs tokens for every application it serves (with Google's or Microsoft's keys,
    // anyone can get one for an app of their own): without an aud check all of them pass.
    opts.warn(
      [...path, "jwks_url"],
      "Without audience, every token this IdP signs passes, whichever application it was " +
        "issued for (with a shared IdP such as Google or Entra ID, anyone can get one)",
      "Set audience to the value your IdP puts in aud for this API (and issuer to its iss)",
    );
  }
  if (auth.jwks_url !== undefined && auth.jwks_min_refresh < 1_000) {
    // Each token with a made-up kid (or an IdP answering no-cache) then fetches the set again.
    opts.warn(
      [...path, "jwks_min_refresh"],
      "jwks_min_refresh under 1s lets tokens with made-up key ids have the JWK Set fetched back to back",
      "Keep the default 30s, or a few seconds at least",
    );
  }
  if (auth.jwks_min_refresh > auth.jwks_max_refresh) {
    err(
      [...path, "jwks_min_refresh"],
      "jwks_min_refresh is longer than jwks_max_refresh",
      "Make jwks_min_refresh the shorter one (e.g. 30s and 1h)",
    );
  }
  const seen = new Map<string, string>();
  for (const [claim, header] of Object.entries(auth.claims_to_headers)) {
    const at = [...path, "claims_to_headers", claim];
    const lower = header.toLowerCase();
    if (RESERVED.has(lower)) {
      err(at, `Claims cannot be sent as ${header}`, "Use a field of its own, e.g. X-User-Id");
    }
    const other = seen.get(lower);
    if (other !== undefined) {
      err(at, `Claims ${other} and ${claim} both go to ${header}`, "Give each its own field");
    }
    seen.set(lower, claim);
  }
  if (auth.query_param !== undefined && !auth.strip_token) {
    opts.warn(
      [...path, "strip_token"],
      "The token stays in the URL the upstream sees, and in the access log's query",
      "Leave strip_token at true unless the upstream reads the token itself",
    );
  }
}

/** A secret's fitness for HMAC. */
function checkSecret(
  text: string,
  at: (string | number)[],
  o: { err: Report; kinds: KeyKind[]; label: string },
): void {
  const s = readSecret(text);
  if ("error" in s) o.err(at, `${o.label} ${s.error}`, s.hint);
  else o.kinds.push("hmac");
}

/** `algorithms` that no configured key can verify (a JWK Set is unknown until fetched). */
function checkAlgorithms(
  auth: JwtAuthConfig,
  path: (string | number)[],
  o: { err: Report; kinds: KeyKind[] },
): void {
  if (!auth.algorithms) return;
  const hmacOnly = auth.algorithms.every((a) => a.startsWith("HS"));
  if (auth.jwks_url !== undefined && hmacOnly && o.kinds.length === 0) {
    // A JWK Set's oct keys are never used (proxy/jwks.ts): it is public.
    o.err(
      [...path, "algorithms"],
      `A JWK Set gives no key for ${auth.algorithms.join(", ")}: its HMAC keys are public, ` +
        "so Prox never uses them",
      "HS algorithms need secret_env or secret_file; a jwks_url gives RS, PS, ES and EdDSA keys",
    );
    return;
  }
  if (auth.jwks_url !== undefined || o.kinds.length === 0) return;
  const usable = o.kinds.some((k) => keyAlgorithms(k, { allowed: auth.algorithms }).length > 0);
  if (!usable) {
    o.err(
      [...path, "algorithms"],
      `No key here verifies ${auth.algorithms.join(", ")} (the keys are ${
        [...new Set(o.kinds)].join(", ")
      })`,
      "HS algorithms need secret_env or secret_file; RS, PS, ES and EdDSA need key_file or jwks_url",
    );
  }
}

/** A file's text, or undefined after reporting why it cannot be read. */
function readFile(
  file: string,
  at: (string | number)[],
  opts: { err: Report; env: ValidateEnv },
): string | undefined {
  if (!opts.env.exists(file)) {
    opts.err(at, `File not found: ${file}`, FILE_HINT);
    return undefined;
  }
  const read = opts.env.readText?.(file);
  if (read === undefined) return undefined;
  if ("error" in read) {
    opts.err(at, read.error, read.hint.replace("the page", "the file"));
    return undefined;
  }
  return read.text;
}
