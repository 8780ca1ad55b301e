// The parts of config.yaml's shape below the top level: the value types (durations, sizes,
// URLs) and the routes with everything they hold (conditions, header and body rules, rate limits,
// upstream options). schema.ts assembles the top level and re-exports all of this.

import { z } from "zod";
import { parseDuration, parseSize } from "./duration.ts";
import { COMPRESS_CODINGS, TYPE_PATTERN } from "../domain/compress.ts";
import { normalizeOrigin, originRegex, strangerAdmitted } from "../domain/cors.ts";
import { JWT_ALGS } from "../domain/jwt.ts";
import { HOP_BY_HOP } from "../domain/headers.ts";

/** A duration string ("500ms", "30s", "1h30m", "1d") resolved to milliseconds. */
export const Duration = z.string({
  // `timeout: 30` is the usual slip: say which unit to add, not "expected string".
  error: (iss) =>
    typeof iss.input === "number" ? parseDuration(String(iss.input)) as string : undefined,
}).transform((s, ctx) => {
  const v = parseDuration(s);
  if (typeof v === "string") {
    ctx.addIssue({ code: "custom", message: v });
    return z.NEVER;
  }
  return v;
});

/** A byte size (number or "10MiB") resolved to bytes. */
export const Size = z.union([z.number(), z.string()]).transform((s, ctx) => {
  const v = parseSize(s);
  if (typeof v === "string") {
    ctx.addIssue({ code: "custom", message: v });
    return z.NEVER;
  }
  return v;
});

const HTTP_URL = /^https?:\/\/[^/?#\s]+/i;
const WS_URL = /^(wss?|https?):\/\/[^/?#\s]+/i;

/**
 * What is wrong with the authority of a URL whose scheme is right but which does not parse: an
 * IPv6 address without brackets or with a zone id, a bad port. Undefined when it is none of these.
 */
export function authorityProblem(url: string): string | undefined {
  const scheme = url.slice(0, url.indexOf("://"));
  const authority = url.slice(scheme.length + 3).split(/[/?#]/)[0];
  const host = authority.slice(authority.lastIndexOf("@") + 1);
  const example = `${scheme.toLowerCase()}://[::1]:8080`;
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    if (end < 0) return `the IPv6 address has no closing bracket, e.g. ${example}`;
    if (host.slice(0, end).includes("%")) {
      return "an IPv6 zone id (%eth0) cannot be written in a URL; use an address without one";
    }
  } else if (host.split(":").length > 2) {
    return `put the IPv6 address in brackets, e.g. ${example}`;
  }
  const name = host.replace(/:\d*$/, "");
  const octal = /^[0-9.]+$/.test(name) ? name.split(".").find((p) => /^0\d/.test(p)) : undefined;
  if (octal) {
    return `"${octal}" has a leading 0, which makes it an octal number in a URL: write the ` +
      "address without leading zeros";
  }
  const close = host.lastIndexOf("]");
  const colon = host.lastIndexOf(":");
  if (colon > close) {
    const port = host.slice(colon + 1);
    if (port !== "" && (!/^\d+$/.test(port) || Number(port) > 65535)) {
      return `the port "${port}" is not a number from 1 to 65535`;
    }
  }
  return undefined;
}

/**
 * The address a numeric host with a leading zero or `0x` stands for, when that differs from how
 * it reads: URL parsing (WHATWG, as browsers and curl) takes `010` as octal, so
 * `http://10.0.0.010` connects to 10.0.0.8, where nginx would read 10.0.0.10.
 */
export function numericHostSurprise(url: string): { written: string; address: string } | undefined {
  const authority = url.slice(url.indexOf("://") + 3).split(/[/?#]/)[0];
  const written = authority.slice(authority.lastIndexOf("@") + 1).replace(/:\d*$/, "");
  if (!/^[0-9a-fx.]+$/i.test(written) || !written.split(".").some((p) => /^0[0-9x]/i.test(p))) {
    return undefined;
  }
  try {
    const address = new URL(url).hostname;
    return address !== written.toLowerCase() ? { written, address } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * An absolute http(s) URL with a host. Surrounding white space (the newline a `|` block keeps) is
 * dropped, as URL parsing drops it, so metric labels, logs and /status name the target cleanly.
 */
export const HttpUrl = z.string().trim().refine((s) => HTTP_URL.test(s) && URL.canParse(s), {
  error: (iss) => {
    const s = String(iss.input);
    const why = HTTP_URL.test(s) ? authorityProblem(s) : undefined;
    return `Invalid URL ${JSON.stringify(s)}: ${
      why ?? "use an absolute URL starting with http:// or https://, e.g. http://127.0.0.1:8080"
    }`;
  },
});

/**
 * `unix:/path/app.sock` (or a relative path): an upstream listening on a Unix domain socket. Not
 * `unix://…`, which would read as a host named by the path. A space may be in the path, a control
 * character not.
 */
const UNIX_URL = /^unix:(?!\/\/)[^\0\t\n\v\f\r]+$/;

/** Why a target that is no URL Prox takes was probably meant as a Unix socket, and its form. */
function unixHint(s: string): string | undefined {
  // nginx: http://unix:/run/app.sock:/path; Caddy: unix//run/app.sock; URIs: unix:///run/app.sock
  const m = /^https?:\/\/unix:(\/[^:]+)(:.*)?$/i.exec(s) ?? /^unix(?::\/)?\/(\/.+)$/i.exec(s);
  if (!m) return undefined;
  const path = m[2] && m[2] !== ":" && m[2] !== ":/" ? m[2].slice(1) : undefined;
  return `a Unix socket is written unix:${m[1]}` +
    (path ? ` (a path for the upstream goes in path_rewrite: ${path})` : "");
}

/** A proxy or load_balance target: an http(s) URL, or `unix:` and a socket path. */
export const UpstreamUrl = z.string().trim().refine(
  (s) => UNIX_URL.test(s) || (HTTP_URL.test(s) && URL.canParse(s) && !unixHint(s)),
  {
    error: (iss) => {
      const s = String(iss.input);
      const why = unixHint(s) ?? (HTTP_URL.test(s) ? authorityProblem(s) : undefined);
      return `Invalid URL ${JSON.stringify(s)}: ${
        why ?? (/^unix/i.test(s)
          ? "write unix: and the socket's path, e.g. unix:/run/app.sock"
          : "use an absolute URL starting with http:// or https://, e.g. http://127.0.0.1:8080")
      }`;
    },
  },
);

// ---------------------------------------------------------------------------------------------
// Conditions and header/body rules (seed: path_matches, method_is, has_header)

const HeaderMatch = z.object({
  name: z.string().min(1),
  value_matches: z.string().optional(),
}).strict();

/** Status selector: 404, "5xx", "500-599". */
export const StatusSelector = z.union([z.int().min(100).max(599), z.string()]);

/** Conditions, ANDed. Response-only keys are rejected on request rules (domain/rules.ts). */
export const Condition = z.object({
  path_matches: z.string().optional(),
  method_is: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
  has_header: HeaderMatch.optional(),
  query_has: z.union([
    z.string(),
    z.object({ name: z.string().min(1), value_matches: z.string().optional() }).strict(),
  ]).optional(),
  /** The client's address (as trusted_proxies resolve it) is one of these addresses or blocks. */
  client_ip: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
  status_is: z.union([StatusSelector, z.array(StatusSelector).min(1)]).optional(),
  response_has_header: HeaderMatch.optional(),
  /** Response rules: none of these fields is in the upstream's answer (Caddy's `not header`). */
  response_lacks_header: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)])
    .optional(),
}).strict();

/** Header rules: `add` overwrites (seed), `set` is its alias, `append` adds a value, `remove` drops. */
export const HeaderRules = z.object({
  add: z.record(z.string(), z.string()).optional(),
  set: z.record(z.string(), z.string()).optional(),
  append: z.record(z.string(), z.string()).optional(),
  remove: z.array(z.string()).optional(),
  condition: Condition.optional(),
}).strict();

/** One `replace` pair of a response body rule: plain text, no pattern. */
const ReplacePair = z.object({
  find: z.string().describe(
    "Text to find in the body (plain, case-sensitive; not empty, at most 1024 bytes)",
  ),
  replace: z.string().describe(
    "What each match becomes; placeholders such as {host} expanded and escaped for the body's type",
  ),
}).strict();

/**
 * Body rules: replace the body with text or JSON, or (response side) replace strings in it as it
 * streams (`replace`, as nginx's sub_filter), optionally only when `condition` holds.
 */
export const BodyRules = z.object({
  set_text: z.string().optional(),
  set_json: z.unknown().optional(),
  content_type: z.string().optional(),
  replace: z.array(ReplacePair).min(1).max(64).optional().describe(
    "Response bodies: {find, replace} pairs applied as the body streams (nginx sub_filter)",
  ),
  once: z.boolean().optional().describe(
    "With replace: each pair replaces its first match only (default: every match)",
  ),
  types: z.array(z.string().min(1)).min(1).optional().describe(
    "With replace: the media types it applies to, * patterns allowed (default [text/html])",
  ),
  condition: Condition.optional(),
}).strict();

// ---------------------------------------------------------------------------------------------
// Rate limiting (seed: by, header_name, requests, period, status_code, message, algorithm,
// on_missing_key)

export const RateLimit = z.object({
  /** Policy name in the RateLimit headers ("default" when alone). */
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,32}$/, "Use 1-32 letters, digits, _ . or -")
    .optional(),
  by: z.enum(["ip", "header", "route", "cookie", "query", "jwt_claim"]),
  header_name: z.string().optional(),
  /** by: jwt_claim: the claim of the route's jwt_auth token (e.g. sub); limited after jwt_auth. */
  claim: z.string().min(1).optional(),
  cookie_name: z.string().optional(),
  query_param: z.string().optional(),
  requests: z.int().positive(),
  period: Duration,
  burst: z.int().positive().optional(),
  // Not 499: nginx's "client closed request", which no client is ever sent (Prox sends 400).
  status_code: z.int().min(400).max(599).refine((n) => n !== 499, {
    error: "499 is no status a client can be sent (nginx logs it for a client that left); use 429",
  }).default(429),
  message: z.string().default("Too Many Requests"),
  algorithm: z.enum(["token_bucket", "fixed_window", "sliding_window", "gcra"]).default(
    "token_bucket",
  ),
  on_missing_key: z.enum(["allow", "deny"]).default("allow"),
  /** Send the IETF RateLimit / RateLimit-Policy headers (Retry-After is always sent on 429). */
  headers: z.boolean().default(true),
  /** Count and log but never block. */
  shadow: z.boolean().default(false),
  /** IPv6 clients are grouped by this prefix length. */
  ipv6_prefix: z.int().min(1).max(128).default(64),
  /** Most keys this limit keeps (LRU); the memory bound. */
  max_keys: z.int().positive().default(100_000),
  /** Client IPs or CIDR blocks never limited (e.g. internal monitoring). */
  exempt_ips: z.array(z.string()).default([]),
}).strict();

/**
 * Requests of one client (or of the route, `by: route`) in progress at once (Traefik's
 * `inFlightReq`, nginx's `limit_conn`, which counts HTTP/2 requests): past `max`, the request is
 * answered `status_code` at once. A slot is held until the answer is delivered. Per process: each
 * of `workers: N` counts its own (proxy/filters/concurrency.ts).
 */
export const ConcurrencyLimit = z.object({
  max: z.int().positive().max(1_000_000),
  by: z.enum(["ip", "header", "route", "cookie", "query", "jwt_claim"]).default("ip"),
  header_name: z.string().optional(),
  claim: z.string().min(1).optional(),
  cookie_name: z.string().optional(),
  query_param: z.string().optional(),
  status_code: z.int().min(400).max(599).refine((n) => n !== 499, {
    error: "499 is no status a client can be sent (nginx logs it for a client that left); use 429",
  }).default(429),
  message: z.string().default("Too Many Requests"),
  on_missing_key: z.enum(["allow", "deny"]).default("allow"),
  /** Count and log but never refuse. */
  shadow: z.boolean().default(false),
  ipv6_prefix: z.int().min(1).max(128).default(64),
  exempt_ips: z.array(z.string()).default([]),
}).strict();

/** A rate in bytes per second: a size ("1MiB", 1048576), optionally written with "/s". */
const BytesPerSecond = z.union([z.number(), z.string()]).transform((s, ctx) => {
  const v = parseSize(typeof s === "string" ? s.replace(/\s*\/\s*s(ec)?\s*$/i, "") : s);
  if (typeof v === "string") {
    ctx.addIssue({
      code: "custom",
      message: /too large/.test(v)
        ? v
        : `Invalid rate ${JSON.stringify(s)}: use bytes per second, e.g. 1MiB, 500KiB or 1MiB/s`,
    });
    return z.NEVER;
  }
  if (v === 0) {
    ctx.addIssue({
      code: "custom",
      message: "A rate of 0 would send nothing: remove bandwidth for no limit",
    });
    return z.NEVER;
  }
  return v;
});

/**
 * Response bandwidth (nginx's `limit_rate` and `limit_rate_after`, HAProxy's `bwlim-out`): the
 * body goes to the client at no more than `rate` bytes per second once the first `after` bytes
 * went at full speed (proxy/filters/bandwidth.ts).
 */
export const Bandwidth = z.object({
  rate: BytesPerSecond,
  /** Bytes each answer sends at full speed first. */
  after: Size.prefault(0),
  /**
   * Whose answers share `rate`: each its own (`response`, as nginx), a client's together
   * (`client`: its address, an IPv6 one by its /64), or all of the route's (`route`).
   */
  per: z.enum(["response", "client", "route"]).default("response"),
}).strict();

// ---------------------------------------------------------------------------------------------
// Access control (every route type; proxy/filters/ip_access.ts, README "Access control")

/**
 * Client IP allow and deny lists: addresses, CIDR blocks or `all`. The most specific entry wins
 * (domain/ip_access.ts); with an `allow` list, clients it does not name are refused.
 */
export const IpAccess = z.object({
  allow: z.array(z.string()).default([]),
  deny: z.array(z.string()).default([]),
  /**
   * Files of more entries, one per line (`#` or `;` comments; read at load and reload, and watched): a
   * blocklist, a country's blocks. A path or a list of paths.
   */
  allow_file: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
  deny_file: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
}).strict();

/**
 * HTTP Basic authentication (proxy/filters/basic_auth.ts): users and their bcrypt hashes, in the
 * config and/or an htpasswd file.
 */
export const BasicAuth = z.object({
  realm: z.string().default("Restricted"),
  /** user → bcrypt hash of cost 14 at most (`prox hash-password`, `htpasswd -nbB`, Caddy). */
  users: z.record(z.string(), z.string()).default({}),
  /** An htpasswd file of `user:$2y$…` lines, read at load and on reload. */
  users_file: z.string().optional(),
  /** Send the client's `Authorization` upstream (default: removed; the user is {auth_user}). */
  forward_authorization: z.boolean().default(false),
}).strict();

/** An HTTP method or field name (a token, RFC 9110 §5.6.2), or `*`. */
const CorsToken = z.string().regex(
  /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/,
  "Use a method or header field name (letters, digits, - and the like), or *",
);

/**
 * Cross-origin resource sharing (src/domain/cors.ts): Prox answers preflights and sets the
 * `Access-Control-*` fields of the route's answers for the origins it lists.
 */
export const Cors = z.object({
  /** Exact origins, `https://*.example.com` (subdomains), or `*` (any, without credentials). */
  allow_origins: z.array(
    z.string().transform((s, ctx) => {
      const n = normalizeOrigin(s);
      if ("origin" in n) return n.origin;
      ctx.addIssue({ code: "custom", message: n.problem });
      return z.NEVER;
    }),
  ).default([]),
  /** Regular expressions an origin must match whole, e.g. `http://localhost:\d+`. */
  allow_origin_regex: z.array(
    z.string().superRefine((s, ctx) => {
      const re = originRegex(s);
      if (typeof re === "string") ctx.addIssue({ code: "custom", message: re });
    }),
  ).optional(),
  /** Preflight `Access-Control-Allow-Methods` (`*`: the requested one). */
  allow_methods: z.array(CorsToken).min(1).default([
    "GET",
    "HEAD",
    "PUT",
    "PATCH",
    "POST",
    "DELETE",
  ]),
  /** Preflight `Access-Control-Allow-Headers` (`*`: the requested ones). */
  allow_headers: z.array(CorsToken).default([]),
  /** Response fields the page's script may read beyond the safelisted ones. */
  expose_headers: z.array(CorsToken).default([]),
  /** Cookies and `Authorization` may be sent and the answer read (never with `*` origins). */
  allow_credentials: z.boolean().default(false),
  /** How long a browser may reuse a preflight's answer (`Access-Control-Max-Age`). */
  max_age: Duration.optional(),
}).strict().superRefine((c, ctx) => {
  if (c.allow_origins.length === 0 && !c.allow_origin_regex?.length) {
    ctx.addIssue({
      code: "custom",
      path: ["allow_origins"],
      message: "List at least one origin, e.g. allow_origins: [https://app.example.com]",
    });
  }
  if (!c.allow_credentials) return;
  const star = c.allow_origins.indexOf("*");
  if (star >= 0) {
    ctx.addIssue({
      code: "custom",
      path: ["allow_origins", star],
      message: 'allow_origins "*" cannot go with allow_credentials: true (browsers refuse ' +
        "credentials for any origin); list the origins, e.g. https://app.example.com, or set " +
        "allow_credentials: false",
    });
  }
  // A regex that admits any origin echoes it with credentials: what "*" is refused for above.
  c.allow_origin_regex?.forEach((src, i) => {
    const re = originRegex(src);
    const stranger = typeof re === "string" ? undefined : strangerAdmitted(re);
    if (stranger === undefined) return;
    ctx.addIssue({
      code: "custom",
      path: ["allow_origin_regex", i],
      message: `allow_origin_regex /${src}/ admits any origin (it matches ${stranger}), which ` +
        "cannot go with allow_credentials: true (any site could read a signed-in user's data); " +
        String.raw`match only your origins, e.g. https://[a-z0-9-]+\.example\.com`,
    });
  });
  const expose = c.expose_headers.indexOf("*");
  if (expose >= 0) {
    ctx.addIssue({
      code: "custom",
      path: ["expose_headers", expose],
      message: 'expose_headers "*" means a field named * with allow_credentials: true (Fetch ' +
        "standard); list the fields, e.g. [X-Request-Id, Content-Disposition]",
    });
  }
});

/** A claim value `required_claims` accepts: one scalar or a list of them. */
const ClaimValues = z.union([
  z.string(),
  z.number(),
  z.boolean(),
  z.array(z.union([z.string(), z.number(), z.boolean()])).min(1),
]);

/**
 * Bearer JWT authentication (proxy/filters/jwt_auth.ts): keys from a secret (env var or file), a
 * PEM or JWK file, or a JWKS URL; claims checked; chosen claims passed on as header fields.
 */
export const JwtAuth = z.object({
  realm: z.string().default("Restricted"),
  /** An environment variable holding the HMAC secret (HS256/384/512), read at load. */
  secret_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "Use an environment variable name")
    .optional(),
  /** A file holding the HMAC secret (one trailing newline ignored). */
  secret_file: z.string().optional(),
  /** A public key: PEM (`BEGIN PUBLIC KEY`), a JWK or a JWK Set (JSON). */
  key_file: z.string().optional(),
  /** A JWK Set URL, fetched at the first request and kept by its Cache-Control max-age. */
  jwks_url: HttpUrl.optional(),
  /** The algorithms accepted (default: every one the keys can verify). */
  algorithms: z.array(z.enum(JWT_ALGS)).min(1).optional(),
  /** Accepted `iss` values. */
  issuer: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
  /** Accepted `aud` values (one of them must be in the token's). */
  audience: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
  /** Clock skew allowed on `exp` and `nbf` (and on `iat`, which may not be in the future). */
  leeway: Duration.prefault("30s"),
  /** Refuse tokens without `exp`. */
  require_exp: z.boolean().default(true),
  /** Claim → accepted value(s): `role: [admin, ops]`, `email_verified: true`. */
  required_claims: z.record(z.string(), ClaimValues).default({}),
  /** Also take the token from this cookie (after `Authorization: Bearer`). */
  cookie: z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, "Use a cookie name").optional(),
  /** Also take the token from this query parameter (after the header and the cookie). */
  query_param: z.string().min(1).optional(),
  /** Remove the token cookie and query parameter from the upstream request (whichever was used). */
  strip_token: z.boolean().default(true),
  /** Send the client's `Authorization` upstream (default: removed, as basic_auth does). */
  forward_authorization: z.boolean().default(false),
  /** Claim → header field set on the upstream request (the client's own copies removed first). */
  claims_to_headers: z.record(
    z.string(),
    z.string().regex(
      /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/,
      "Use a header field name (letters, digits, - _ and the like), e.g. X-User-Id",
    ),
  ).default({}),
  /** The claim that names the user in the access log and `{auth_user}`. */
  user_claim: z.string().default("sub"),
  /** Shortest time a JWK Set is kept, whatever its max-age; also the wait between failed fetches. */
  jwks_min_refresh: Duration.prefault("30s"),
  /** Longest time a JWK Set is kept before it is fetched again (also without a max-age). */
  jwks_max_refresh: Duration.prefault("1h"),
}).strict();

/**
 * Who may use the route by their TLS client certificate (`tls.client_auth`): a request without a
 * verified one, or whose certificate fails a given test, gets 403. `{}`: any verified certificate.
 */
export const ClientCertRule = z.object({
  /** Regular expression on the subject DN, as `{tls_client_subject}` writes it (CN=…,O=…). */
  subject_matches: z.string().optional(),
  /** Regular expression on the subjectAltName list, as `{tls_client_san}` writes it. */
  san_matches: z.string().optional(),
  /** SHA-256 fingerprints (hex, colons allowed) of the certificates let in. */
  fingerprints: z.array(z.string()).min(1).optional(),
}).strict();

/** The access-control keys every route type takes (and `access_log`). */
const accessKeys = {
  /**
   * A conditional route (key `/api#name`): it takes a request of its prefix only when this holds
   * (a condition, or a list that must all hold); otherwise the route it shares the prefix with, or
   * a shorter prefix, does.
   */
  match: z.union([Condition, z.array(Condition).min(1).max(16)]).optional(),
  /** Replaces the top-level `ip_access` for this route (`{}`: no restriction). */
  ip_access: IpAccess.optional(),
  basic_auth: BasicAuth.optional(),
  jwt_auth: JwtAuth.optional(),
  client_cert: ClientCertRule.optional(),
  /** `false`: no access line for this route's requests (nginx `access_log off` in a location). */
  access_log: z.boolean().optional(),
};

/** `cors`, on the route types whose answers a page's script reads (not websocket). */
const corsKey = { cors: Cors.optional() };

// ---------------------------------------------------------------------------------------------
// Upstream options shared by proxy, load_balance and websocket routes

export const Timeouts = z.object({
  connect: Duration.optional(),
  response_header: Duration.optional(),
  idle: Duration.optional(),
  /**
   * The whole upstream exchange, retries and response body included (504 before the head). A
   * gRPC call's `grpc-timeout` may shorten it, never lengthen it.
   */
  total: Duration.optional(),
}).strict();

/** A TLS server name (SNI and the name verified): a DNS name or an IP address, as written bare. */
const SERVER_NAME = /^([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.?$/i;

export const UpstreamTlsConfig = z.object({
  ca_cert: z.string().optional(),
  insecure_skip_verify: z.boolean().default(false),
  /** PEM certificate (chain) Prox presents to upstreams that ask for one (mutual TLS). */
  client_cert: z.string().optional(),
  /** PEM private key of `client_cert`. */
  client_key: z.string().optional(),
  // Checked here: a malformed one failed every request with "Invalid hostname".
  server_name: z.string().refine(
    (s) => SERVER_NAME.test(s) || (s.includes(":") && URL.canParse(`http://[${s}]`)),
    {
      error: (iss) => {
        const s = String(iss.input);
        const ascii = /[\u0080-\uffff]/.test(s) && URL.canParse(`http://${s}`)
          ? new URL(`http://${s}`).hostname
          : undefined;
        return ascii
          ? `Invalid server_name "${s}": write it as clients send it, "${ascii}"`
          : `Invalid server_name "${s}": a host name or IP address, without scheme, brackets ` +
            "or port (e.g. api.example.com)";
      },
    },
  ).optional(),
}).strict();

export const Retries = z.object({
  attempts: z.int().min(0).max(10).default(2),
  per_try_timeout: Duration.optional(),
  /** Retries may add at most this percentage of load. */
  budget_percent: z.number().min(0).max(100).default(20),
  /** Retry POST requests that carry an Idempotency-Key header. */
  idempotency_key: z.boolean().default(false),
  /** Upstream statuses retried on another target (idempotent requests only), e.g. [502, 503]. */
  on_status: z.array(StatusSelector).default([]),
  /**
   * A pause before each retry: `backoff`, doubling per retry up to 10 s, each drawn between half
   * and all of it (jitter); unset: none. Rides out an app restarting behind a lone target.
   */
  backoff: Duration.optional(),
}).strict();

/** An HTTP field name (RFC 9110 §5.1: a token). */
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The Host a probe sends: a name or IP address, with an optional port, as in a URL's authority
 * (`app.example.com`, `app.example.com:8443`, `[::1]`). Name-based virtual hosts (nginx
 * `server_name`, an ingress) answer a probe for an unknown host with 404 or their default site.
 */
export const ProbeHost = z.string().refine(
  (s) => {
    const m = /^(.*?)(?::(\d{1,5}))?$/.exec(s)!;
    if (m[2] !== undefined && +m[2] > 65535) return false;
    return SERVER_NAME.test(m[1]) ||
      (/^\[[0-9a-f:.]+\]$/i.test(m[1]) && URL.canParse(`http://${m[1]}`));
  },
  {
    error: (iss) =>
      `Invalid health check host ${
        JSON.stringify(iss.input)
      }: a host name or IP address with an optional port, without scheme or path (e.g. app.example.com or app.example.com:8080)`,
  },
);

/** Fields that describe the connection or the message framing, which the client decides. */
const HOP_OR_FRAMING = new Set([
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "te",
  "upgrade",
  "trailer",
  "proxy-connection",
]);

/** Extra probe request headers (a small map); `Host` has its own key. */
export const ProbeHeaders = z.record(z.string(), z.string()).superRefine((h, ctx) => {
  const names = Object.keys(h);
  if (names.length > 32) ctx.addIssue({ code: "custom", message: "At most 32 probe headers" });
  for (const name of names) {
    const lower = name.toLowerCase();
    const bad = (message: string) => ctx.addIssue({ code: "custom", path: [name], message });
    if (!FIELD_NAME.test(name)) {
      bad(`Invalid header name "${name}": use letters, digits and - (e.g. X-Probe)`);
    } else if (lower === "host") bad("Set the probe's Host with health_check.host, not in headers");
    else if (HOP_OR_FRAMING.has(lower)) {
      bad(`${name} cannot be set on probes: Prox frames the probe request itself`);
    } else if (/[\0\r\n]/.test(h[name])) bad("Header values cannot contain line breaks");
  }
});

export const HealthCheck = z.object({
  enabled: z.boolean().default(true),
  // 0 loads, as in the Rust Prox: validate explains what it means (health_check.ts, validate.ts)
  interval_secs: z.int().min(0).default(10),
  timeout_secs: z.int().min(0).default(2),
  path: z.string().default("/health"),
  unhealthy_threshold: z.int().min(0).default(3),
  healthy_threshold: z.int().min(0).default(2),
  method: z.enum(["GET", "HEAD"]).default("GET"),
  expected_status: z.union([StatusSelector, z.array(StatusSelector).min(1)]).default("2xx"),
  body_match: z.string().optional(),
  /** The Host header of probes; unset: the target's host and port, as today. */
  host: ProbeHost.optional(),
  headers: ProbeHeaders.optional(),
}).strict();

export const RouteHealthCheck = z.object({
  enabled: z.boolean().optional(),
  path: z.string().optional(),
  method: z.enum(["GET", "HEAD"]).optional(),
  expected_status: z.union([StatusSelector, z.array(StatusSelector).min(1)]).optional(),
  body_match: z.string().optional(),
  host: ProbeHost.optional(),
  /** Merged over the top-level `headers`, name by name. */
  headers: ProbeHeaders.optional(),
  /**
   * Probe with the gRPC health protocol (grpc.health.v1.Health/Check) for this service ("" for
   * the server as a whole) instead of an HTTP GET: healthy when it answers SERVING. Needs
   * `upstream_protocol: h2c` or `h2`.
   */
  grpc_service: z.string().max(1024).optional(),
}).strict();

export const PassiveHealth = z.object({
  enabled: z.boolean().default(true),
  /** Consecutive failures (connect errors or `statuses`) within `window` that eject a target. */
  // At most 1,000: each failure keeps the streak's times (a million made every failed request
  // copy up to that many under a high error rate).
  failures: z.int().positive().max(1_000).default(5),
  window: Duration.prefault("10s"),
  statuses: z.array(StatusSelector).default([]),
  /**
   * An answer whose head takes longer than this counts as a failure too (Caddy's
   * `unhealthy_latency`): a target that has become slow is ejected as one that errors. Timed
   * from the end of a streamed upload; 0s: no limit.
   */
  max_latency: Duration.optional(),
  base_ejection: Duration.prefault("30s"),
  max_ejection: Duration.prefault("5m"),
  /** Never eject when fewer than this percentage of targets would remain available. */
  panic_threshold_percent: z.number().min(0).max(100).default(50),
}).strict();

/**
 * Response compression: `true` for the defaults, or which codings (in order of preference), the
 * smallest Content-Length worth it, and which media types.
 */
export const Compress = z.union([
  z.boolean(),
  z.object({
    algorithms: z.array(z.enum(COMPRESS_CODINGS)).min(1).refine(
      (a) => new Set(a).size === a.length,
      "List each algorithm once",
    ).optional(),
    min_length: Size.optional(),
    types: z.array(
      z.string().refine((t) => TYPE_PATTERN.test(t), {
        error: (iss) =>
          `Invalid media type ${
            JSON.stringify(iss.input)
          }: write type/subtype, with * for any run of characters, e.g. text/* or application/*+json`,
      }),
    ).min(1).optional(),
  }).strict(),
]);

/**
 * Shadow traffic (nginx `mirror`, Envoy `request_mirror_policies`, Traefik's mirroring service): a
 * sampled copy of each request goes to `target` (one URL or several, each gets a copy), and its
 * answer is read and dropped. The copy never delays or fails the request it copies.
 */
export const Mirror = z.object({
  // The descriptions are the editors' hover text (json_schema.ts), where the same key names mean
  // something else elsewhere.
  target: z.union([HttpUrl, z.array(HttpUrl).min(1).max(8)])
    .describe("Shadow upstream URL, or a list: each gets a copy of the mirrored requests"),
  percent: z.number().min(0).max(100).default(100)
    .describe("Share of requests copied, 0-100 (decimals allowed), drawn per request"),
  body: z.boolean().default(true)
    .describe("Copy request bodies (up to max_body); false sends the copies without one"),
  max_body: Size.prefault("64KiB")
    .describe("A larger request body is not copied (the request is not mirrored; counted)"),
  max_in_flight: z.int().min(1).max(10_000).default(100)
    .describe("Copies under way per route (their bodies being read included); more are dropped"),
  timeout: Duration.prefault("5s")
    .describe("The whole copy, from connecting to the end of its answer; then it is abandoned"),
  preserve_host: z.boolean().default(false)
    .describe("Send the client's Host to the mirror instead of the mirror target's"),
}).strict();

/**
 * A route's response cache: `true` for the defaults, or its bounds and the freshness given to
 * cacheable responses that state none (off unless set: no heuristic freshness by default).
 */
export const Cache = z.union([
  z.boolean(),
  z.object({
    /** Total bytes held (bodies, header fields, keys); least recently used entries go first. */
    max_size: Size.prefault("64MiB"),
    max_entries: z.int().positive().default(10_000),
    /** A larger response is passed through and not stored. */
    max_object_size: Size.prefault("1MiB"),
    default_ttl: Duration.optional(),
    /**
     * How long past its freshness an answer that states no `stale-while-revalidate` may be served
     * while it is refreshed in the background (nginx `proxy_cache_use_stale updating`).
     */
    stale_while_revalidate: Duration.optional(),
  }).strict(),
]);

/**
 * One page for Prox's own error answers (nginx `error_page`, Caddy `handle_errors`, HAProxy
 * `errorfile`): a file read at load (`file`), or the text itself (`body`). A list offers one page
 * per media type; the client's Accept picks (src/proxy/error_pages.ts).
 */
export const ErrorPage = z.object({
  file: z.string().min(1).optional()
    .describe("Page file, read at load (relative to the working directory)"),
  body: z.string().optional().describe("The page itself, instead of a file"),
  content_type: z.string().min(1).optional()
    .describe("Media type; default from the file's extension, text/plain for a body"),
}).strict();

/** Status selector ("404", "5xx", "500-504", "502, 504") → page (a path), or pages by media type. */
export const ErrorPages = z.record(
  z.string(),
  z.union([
    z.string().min(1),
    ErrorPage,
    z.array(z.union([z.string().min(1), ErrorPage])).min(1).max(4),
  ]),
);

// ---------------------------------------------------------------------------------------------
// Forward auth (Traefik ForwardAuth, Caddy forward_auth, nginx auth_request)

/** A header field name (RFC 9110 §5.1), or `*` for every field the client sent. */
const FieldName = z.string().regex(
  /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+)$/,
  "Use a header field name (letters, digits, - _ and the like), e.g. X-Auth-User",
);

/** The client fields sent to the auth service unless `copy_request_headers` says otherwise. */
export const FORWARD_AUTH_REQUEST_HEADERS = [
  "Authorization",
  "Proxy-Authorization",
  "Cookie",
  "Accept",
  "User-Agent",
  "X-Requested-With",
] as const;

/**
 * Fields that describe a message's framing or hop, or Expect (an upstream told to expect the body
 * may answer at once and read it as its next request): never copied from the auth service's 2xx.
 */
const NOT_COPYABLE = new Set([
  "expect",
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "upgrade",
  "te",
  "trailer",
]);

/**
 * Hop-by-hop fields (RFC 9110 §7.6.1), never named in `copy_request_headers` (Proxy-Authorization
 * is meant for the auth service, which stands in for a proxy), and what `*` leaves out too: the
 * client's Content-Length (the subrequest has no body, or its own length) and Expect (told to
 * expect a body, the auth service may answer at once and read that body as its next request).
 */
const NOT_SENT = new Set([
  ...HOP_BY_HOP.filter((h) => h !== "proxy-authorization"),
  "content-length",
  "expect",
]);

/** Asks an auth service before the route's action: 2xx lets the request through. */
export const ForwardAuth = z.object({
  /** The auth service; its path and query are requested as written. */
  url: HttpUrl,
  /** The whole check (a `send_body` body read, the answer); past it 503 (408 for the body). */
  timeout: Duration.prefault("5s"),
  /** Client fields sent along (`*`: every one but hop-by-hop fields). */
  copy_request_headers: z.array(
    // Named ones are sent as named: Transfer-Encoding would frame a subrequest without a body,
    // Connection let the client name fields for a proxy before the auth service to drop.
    FieldName.refine((n) => !NOT_SENT.has(n.toLowerCase()), {
      error: (iss) =>
        `"${iss.input}" cannot be copied onto the auth request: it describes the client's ` +
        "connection to Prox or how its body is framed, not the request",
    }),
  ).default([...FORWARD_AUTH_REQUEST_HEADERS]),
  /** Fields of the auth service's 2xx set on the upstream request (client copies removed). */
  copy_response_headers: z.array(
    FieldName.refine((n) => n !== "*" && !NOT_COPYABLE.has(n.toLowerCase()), {
      error: (iss) =>
        `"${iss.input}" cannot be copied onto the upstream request: name the ` +
        "fields the auth service sets for the app, e.g. X-Auth-User or Remote-User",
    }),
  ).default([]),
  /** Set-Cookie fields of the auth service's 2xx are added to the client's response. */
  copy_response_cookies: z.boolean().default(false),
  /** Send the client's method instead of GET. */
  preserve_method: z.boolean().default(false),
  /** Send the request body too (read whole first, up to `max_body`; larger gets 413). */
  send_body: z.boolean().default(false),
  max_body: Size.prefault("1MiB"),
  /** For an https `url`: extra CA, or skipping verification, or another verification name. */
  tls: UpstreamTlsConfig.optional(),
}).strict();

/** A route's `forward_auth`: its own check, or `false` to skip the top-level one. */
export const RouteForwardAuth = z.union([z.literal(false), ForwardAuth]);

/**
 * `path_regex`: the first rule whose `match` finds something in the request path replaces that
 * with `replace` (`$1`, `$<name>`); anchor it (`^…$`) to replace the whole path. No match: the
 * prefix is stripped and `path_rewrite` applies as ever.
 */
const PathRegexRule = z.object({ match: z.string().min(1), replace: z.string() }).strict();
const PathRegexRules = z.union([PathRegexRule, z.array(PathRegexRule).min(1).max(32)]);

const upstreamCommon = {
  path_rewrite: z.string().optional(),
  path_regex: PathRegexRules.optional(),
  rate_limit: RateLimit.optional(),
  /** More limits, all enforced in order (e.g. 10 per second and 1000 per day). */
  rate_limits: z.array(RateLimit).min(1).max(8).optional(),
  /** Requests in progress at once, per client or route (ConcurrencyLimit). */
  concurrency_limit: ConcurrencyLimit.optional(),
  /** Each answer's body at no more than `rate` per second after `after` bytes (Bandwidth). */
  bandwidth: Bandwidth.optional(),
  request_headers: HeaderRules.optional(),
  response_headers: HeaderRules.optional(),
  request_body: BodyRules.optional(),
  response_body: BodyRules.optional(),
  hosts: z.array(z.string().min(1)).optional(),
  preserve_host: z.boolean().default(false),
  /**
   * An upstream's `Location` or `Refresh` that points at the target itself (its scheme, host and
   * port, a path under its path and `path_rewrite`) goes to the client as the route's path
   * (nginx's `proxy_redirect default`); `false` passes them on as they came.
   */
  rewrite_location: z.boolean().default(true),
  /**
   * An upstream's 103 Early Hints (RFC 8297) go on to HTTP/1.1, HTTP/2 and HTTP/3 clients of Prox's own
   * engines, as Caddy does (unset: true); `false` drops them, as nginx does without `early_hints`.
   */
  early_hints: z.boolean().optional(),
  /** The seed's browser-like default headers (User-Agent, Accept…), now opt-in. */
  browser_headers: z.boolean().default(false),
  /** Add an RFC 7239 Forwarded header. */
  forwarded: z.boolean().default(false),
  timeouts: Timeouts.optional(),
  max_request_body: Size.optional(),
  tls: UpstreamTlsConfig.optional(),
  retries: Retries.optional(),
  health_check: RouteHealthCheck.optional(),
  passive_health: PassiveHealth.optional(),
  /** Forward to a target that active health checks report down instead of answering 503. */
  try_when_down: z.boolean().default(false),
  compress: Compress.optional(),
  /** Copies of the requests to a shadow upstream (Mirror). */
  mirror: Mirror.optional(),
  cache: Cache.optional(),
  error_pages: ErrorPages.optional(),
  /** The upstream's own answers with a status `error_pages` lists get the page (nginx intercept). */
  intercept_upstream: z.boolean().default(false),
  /**
   * A PROXY protocol header (HAProxy's send-proxy / send-proxy-v2) first on every upstream
   * connection, carrying the client's address.
   */
  proxy_protocol: z.enum(["v1", "v2"]).optional(),
  /**
   * How to speak to the targets: `h2c` is HTTP/2 with prior knowledge over plain TCP and `h2`
   * HTTP/2 over TLS (https targets), both through Prox's own client, which passes trailers on to
   * HTTP/2 clients (gRPC); `http1` HTTP/1.1 even where an https target offers h2. Unset:
   * HTTP/1.1, or h2 where an https target chooses it by ALPN (through fetch, no trailers; Prox's
   * own client with `tls.server_name` or `tls.insecure_skip_verify`). `tls` applies to all.
   */
  upstream_protocol: z.enum(["http1", "h2c", "h2"]).optional(),
  /**
   * gRPC-Web clients (browsers): `application/grpc-web` and `-text` requests go to the gRPC
   * targets as gRPC, and the trailers come back as the body's last frame. Needs
   * `upstream_protocol: h2c` or `h2`.
   */
  grpc_web: z.boolean().default(false),
  ...accessKeys,
  ...corsKey,
  forward_auth: RouteForwardAuth.optional(),
};

export const Target = z.union([
  UpstreamUrl,
  z.object({
    url: UpstreamUrl,
    weight: z.int().min(1).max(1000).default(1),
    backup: z.boolean().default(false),
  }).strict(),
]);

export const STRATEGIES = [
  "round_robin",
  "random",
  "weighted_round_robin",
  "least_connections",
  "power_of_two",
  "consistent_hash",
  "first",
] as const;

const ProxyRoute = z.object({
  type: z.literal("proxy"),
  target: UpstreamUrl,
  ...upstreamCommon,
  /**
   * On by default for a single target, as in nginx (a lone server is never considered
   * unavailable) and the Rust Prox (health only gated load_balance routes): a backend without a
   * health endpoint must not turn a migrated config into 503s.
   */
  try_when_down: z.boolean().default(true),
}).strict();

/**
 * Session affinity by a cookie Prox sets (Traefik's `sticky.cookie`, HAProxy's `cookie … insert`):
 * a client keeps its target while that target is available.
 */
export const Sticky = z.union([
  z.boolean(),
  z.object({
    cookie: z.string().regex(
      /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/,
      "Use a cookie name (letters, digits, - _ .)",
    )
      .default("prox_sticky"),
    /** Unset: a session cookie, gone when the browser closes. */
    max_age: Duration.optional(),
    path: z.string().startsWith("/").default("/"),
    same_site: z.enum(["lax", "strict", "none"]).default("lax"),
    /** Unset: Secure when the request came over HTTPS (or X-Forwarded-Proto: https, trusted). */
    secure: z.boolean().optional(),
    http_only: z.boolean().default(true),
    /**
     * An environment variable holding a secret that keys the cookie's value (HMAC-SHA256): without
     * it the value is a plain hash of route and target, which one who knows the route can match
     * against guessed target addresses. Every instance and worker needs the same secret.
     */
    secret_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "Use an environment variable name")
      .optional(),
  }).strict(),
]);

/**
 * Targets found in DNS (Caddy's `dynamic a`, nginx's `resolve`, Envoy's STRICT_DNS): every A and
 * AAAA address of the URL's host name is a target with its scheme, port and path, looked up again
 * every `refresh`; requests carry the name as Host (and TLS server name).
 */
export const Discover = z.object({
  /** Exactly one of `dns` and `srv` (validate_route.ts). */
  dns: UpstreamUrl.refine((s) => /^https?:\/\//i.test(s), {
    error: "discover.dns is an http:// or https:// URL with a host name, e.g. http://app:8080",
  }).optional(),
  /**
   * An SRV name (RFC 2782, `_service._proto.domain`, as Consul and Kubernetes publish): each
   * record's target host's addresses at the record's port, its weight the target's weight, the
   * records of higher priority numbers backups.
   */
  srv: z.string().regex(/^_[^.]+\._(tcp|udp)\.[^.]/i, {
    error: "discover.srv is an SRV name: _service._tcp.domain, e.g. _http._tcp.api.service.consul",
  }).optional(),
  /** With `srv`: how the targets are spoken to. */
  scheme: z.enum(["http", "https"]).default("http"),
  refresh: Duration.prefault("30s"),
  /**
   * How long an address stays a target after the answers stopped holding it (0: not at all): for
   * a DNS that answers a different subset of a larger set at each lookup (Route 53 multivalue
   * answers), whose addresses would otherwise come and go at every refresh.
   */
  hold: Duration.prefault("0s"),
  /** The most addresses taken (the first in sorted order); the rest are left out, with a warning. */
  max_targets: z.int().min(1).max(1024).default(64),
  /** The DNS server asked (`ip` or `ip:port`, e.g. Consul's `127.0.0.1:8600`), not the system's. */
  resolver: z.string().optional(),
}).strict();

const LoadBalanceRoute = z.object({
  type: z.literal("load_balance"),
  sticky: Sticky.optional(),
  /** At least one, unless `discover` finds them (validate_route.ts). */
  targets: z.array(Target).default([]),
  discover: Discover.optional(),
  strategy: z.enum(STRATEGIES).default("round_robin"),
  /**
   * Slow start: a target back from being down or ejected, or added by a reload, takes a share of
   * its weight rising from 10 % to all of it over this long (unset or 0s: at once).
   */
  slow_start: Duration.optional(),
  hash_on: z.object({
    type: z.enum(["ip", "header", "cookie"]),
    name: z.string().optional(),
  }).strict().optional(),
  ...upstreamCommon,
}).strict().superRefine((r, ctx) => {
  // Here rather than in validate: reported with the other errors of the route.
  if (Array.isArray(r.targets) && r.targets.length === 0 && !r.discover) {
    ctx.addIssue({
      code: "custom",
      path: ["targets"],
      message: "Load balance routes must have at least one target",
    });
  }
}, { when: (p) => typeof p.value === "object" && p.value !== null });

const StaticRoute = z.object({
  type: z.literal("static"),
  root: z.string().min(1),
  rate_limit: RateLimit.optional(),
  /** More limits, all enforced in order (e.g. 10 per second and 1000 per day). */
  rate_limits: z.array(RateLimit).min(1).max(8).optional(),
  /** Requests in progress at once, per client or route (ConcurrencyLimit). */
  concurrency_limit: ConcurrencyLimit.optional(),
  hosts: z.array(z.string().min(1)).optional(),
  forward_auth: RouteForwardAuth.optional(),
  index: z.string().default("index.html"),
  spa_fallback: z.string().optional(),
  not_found_page: z.string().optional(),
  cache_control: z.string().optional(),
  precompressed: z.boolean().default(false),
  show_dotfiles: z.boolean().default(false),
  /** A directory without its index file gets a listing of its entries (HTML, or JSON). */
  browse: z.boolean().optional(),
  compress: Compress.optional(),
  /** Each answer's body at no more than `rate` per second after `after` bytes (Bandwidth). */
  bandwidth: Bandwidth.optional(),
  response_headers: HeaderRules.optional(),
  response_body: BodyRules.optional(),
  error_pages: ErrorPages.optional(),
  ...accessKeys,
  ...corsKey,
}).strict();

const RedirectRoute = z.object({
  type: z.literal("redirect"),
  target: z.string().min(1),
  status_code: z.literal([301, 302, 303, 307, 308]).default(307),
  rate_limit: RateLimit.optional(),
  /** More limits, all enforced in order (e.g. 10 per second and 1000 per day). */
  rate_limits: z.array(RateLimit).min(1).max(8).optional(),
  /** Requests in progress at once, per client or route (ConcurrencyLimit). */
  concurrency_limit: ConcurrencyLimit.optional(),
  hosts: z.array(z.string().min(1)).optional(),
  forward_auth: RouteForwardAuth.optional(),
  /** Redirect to `target` exactly, without appending the remaining path and query. */
  exact: z.boolean().default(false),
  keep_query: z.boolean().default(true),
  error_pages: ErrorPages.optional(),
  ...accessKeys,
  ...corsKey,
}).strict();

const WebSocketRoute = z.object({
  type: z.literal("websocket"),
  target: z.string().trim().refine((s) => WS_URL.test(s) && URL.canParse(s), {
    error: (iss) => {
      const s = String(iss.input);
      const why = WS_URL.test(s) ? authorityProblem(s) : undefined;
      return `Invalid WebSocket URL ${JSON.stringify(s)}: ${
        why ?? "use ws://, wss://, http:// or https:// with a host"
      }`;
    },
  }),
  path_rewrite: z.string().optional(),
  path_regex: PathRegexRules.optional(),
  rate_limit: RateLimit.optional(),
  /** More limits, all enforced in order (e.g. 10 per second and 1000 per day). */
  rate_limits: z.array(RateLimit).min(1).max(8).optional(),
  /** Requests in progress at once, per client or route (ConcurrencyLimit). */
  concurrency_limit: ConcurrencyLimit.optional(),
  hosts: z.array(z.string().min(1)).optional(),
  forward_auth: RouteForwardAuth.optional(),
  max_frame_size: z.int().positive().optional(),
  max_message_size: z.int().positive().optional(),
  idle_timeout: Duration.optional(),
  ping_interval: Duration.optional(),
  tls: UpstreamTlsConfig.optional(),
  error_pages: ErrorPages.optional(),
  ...accessKeys,
}).strict();

/**
 * A fixed answer from Prox itself (Caddy's `respond`, nginx's `return`): a health endpoint, a
 * maintenance page, a path closed off.
 */
const RespondRoute = z.object({
  type: z.literal("respond"),
  status: z.int().min(200).max(599).default(200),
  body: z.string().optional().describe(
    "The answer's body ({request_id}, {host} and the other placeholders expanded); none by default",
  ),
  content_type: z.string().optional().describe(
    "Content-Type of the body (default text/plain; charset=utf-8)",
  ),
  rate_limit: RateLimit.optional(),
  rate_limits: z.array(RateLimit).min(1).max(8).optional(),
  /** Requests in progress at once, per client or route (ConcurrencyLimit). */
  concurrency_limit: ConcurrencyLimit.optional(),
  hosts: z.array(z.string().min(1)).optional(),
  forward_auth: RouteForwardAuth.optional(),
  response_headers: HeaderRules.optional(),
  response_body: BodyRules.optional(),
  compress: Compress.optional(),
  error_pages: ErrorPages.optional(),
  ...accessKeys,
  ...corsKey,
}).strict();

/** One route, tagged by `type`. */
export const Route = z.discriminatedUnion("type", [
  ProxyRoute,
  LoadBalanceRoute,
  StaticRoute,
  RedirectRoute,
  WebSocketRoute,
  RespondRoute,
]);

/** One resolved route. */
export type RouteConfig = z.output<typeof Route>;
export type ProxyRouteConfig = z.output<typeof ProxyRoute>;
export type LoadBalanceRouteConfig = z.output<typeof LoadBalanceRoute>;
export type StaticRouteConfig = z.output<typeof StaticRoute>;
export type RedirectRouteConfig = z.output<typeof RedirectRoute>;
export type WebSocketRouteConfig = z.output<typeof WebSocketRoute>;
export type RespondRouteConfig = z.output<typeof RespondRoute>;
export type RateLimitConfig = z.output<typeof RateLimit>;
export type ConcurrencyLimitConfig = z.output<typeof ConcurrencyLimit>;
export type BandwidthConfig = z.output<typeof Bandwidth>;
export type HeaderRulesConfig = z.output<typeof HeaderRules>;
export type BodyRulesConfig = z.output<typeof BodyRules>;
export type ConditionConfig = z.output<typeof Condition>;
export type HealthCheckConfig = z.output<typeof HealthCheck>;
export type TimeoutsConfig = z.output<typeof Timeouts>;
export type UpstreamTlsConfig = z.output<typeof UpstreamTlsConfig>;
export type TargetConfig = z.output<typeof Target>;
export type CompressConfig = z.output<typeof Compress>;
export type CacheConfig = z.output<typeof Cache>;
export type StickyConfig = z.output<typeof Sticky>;
export type MirrorConfig = z.output<typeof Mirror>;
export type ErrorPagesConfig = z.output<typeof ErrorPages>;
export type ErrorPageConfig = z.output<typeof ErrorPage>;
export type ForwardAuthConfig = z.output<typeof ForwardAuth>;
export type IpAccessConfig = z.output<typeof IpAccess>;
export type BasicAuthConfig = z.output<typeof BasicAuth>;
export type ClientCertConfig = z.output<typeof ClientCertRule>;
export type CorsConfig = z.output<typeof Cors>;
export type JwtAuthConfig = z.output<typeof JwtAuth>;
