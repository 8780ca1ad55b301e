// The config's JSON Schema, generated from the zod schema (input side: what users write), with
// hover descriptions for editors using the YAML language server.

import { z } from "zod";
import { Config } from "./schema.ts";

/** Hover text per key name, applied wherever a property of that name appears. */
const DESCRIPTIONS: Record<string, string> = {
  listen_addr: "Listener address as IP:PORT, e.g. 127.0.0.1:3000, 0.0.0.0:443 or [::]:443",
  routes:
    "Route key → route. Keys are path prefixes matched on segment boundaries (longest wins), optionally preceded by a host: example.com/api; a conditional route (with match) adds a name: /api#canary",
  match:
    "Conditional route (key /prefix#name): takes its prefix's requests only when this condition holds (method_is, has_header, query_has, path_matches, client_ip), or a list that must all hold; else the prefix's route without match, or a shorter prefix",
  type: "Route type: proxy, load_balance, static, redirect or websocket",
  target: "Upstream URL (proxy, websocket) or redirect destination",
  targets: "Upstream URLs, or objects {url, weight, backup}",
  strategy:
    "Balancing policy: round_robin, random, weighted_round_robin, least_connections, power_of_two, consistent_hash, first",
  path_rewrite:
    "Replaces the route prefix in the upstream path: /api + path_rewrite /v2 sends /api/x as /v2/x (query kept)",
  rate_limit: "Per-route rate limit: by ip|header|route|cookie|query, requests per period",
  rate_limits: "More rate limits for the route, all enforced in order",
  requests: "Requests allowed per period",
  period: "Rate limit period: 30s, 1m, 1h",
  algorithm: "token_bucket (default), fixed_window, sliding_window or gcra",
  on_missing_key:
    "What to do when the header/cookie/query key is absent: allow (not limited) or deny",
  request_headers: "Header rules for the upstream request: add/set, append, remove, condition",
  response_headers: "Header rules for the response: add/set, append, remove, condition",
  request_body: "Replace the upstream request body: set_text or set_json, with a condition",
  response_body:
    "Replace the response body (set_text or set_json) or strings in it as it streams (replace), with a condition",
  condition: "All given conditions must hold (AND)",
  path_matches: "Regular expression tested against the normalized request path",
  method_is: "HTTP method or list of methods",
  has_header: "Header present (and value matching value_matches); on response rules: the response",
  status_is: 'Response status: 404, "5xx", "500-504" or a list (response rules only)',
  response_lacks_header:
    "Holds when the response has none of these fields (a name or a list; response rules only)",
  tls: "HTTPS: cert_path + key_path, or acme",
  cert_path: "PEM certificate chain file",
  key_path: "PEM private key file",
  acme: "Automatic certificates from an ACME CA (Let's Encrypt) with HTTP-01",
  key_type: "The ACME certificate's key: p256 (default), p384, rsa2048, rsa3072 or rsa4096",
  redis:
    "ACME state (account, certificate, challenges, order lock, back-off) in Redis instead of storage_path: {url, password_env, prefix, timeout}, for instances that share no file system",
  password_env: "Environment variable holding the Redis password (instead of putting it in url)",
  eab:
    "External account binding for CAs that require it (ZeroSSL, Google Trust Services): kid and hmac_key (or hmac_key_env) from the CA's account page",
  on_demand:
    "On-demand TLS: a certificate ordered during the handshake for a name no certificate holds, when ask allows it: {ask (required), ask_timeout, max_certificates, rate: {orders, per}, timeout}; Prox's engine only",
  ask: "On-demand TLS: URL asked GET ?domain=<name> before ordering; 200 allows the name",
  max_certificates:
    "On-demand certificates held (served, renewed) at once; past it the least recently used is dropped (it stays in storage). Default 1000",
  health_check: "Active health checks of upstream targets",
  slow_start:
    "Duration over which a target back from down or ejected, or added by a reload, ramps from 10 % of its weight to all of it",
  interval_secs: "Seconds between health probes",
  timeout_secs: "Health probe timeout in seconds",
  unhealthy_threshold: "Consecutive failed probes that mark a target down",
  healthy_threshold: "Consecutive successful probes that mark a target up",
  backend_health_paths: "Target URL → health check path for that target",
  protocols: "Protocol switches (HTTP/3 via http3_enabled)",
  http3_enabled: "Serve HTTP/3 on UDP at the same port (needs tls)",
  trusted_proxies: "CIDRs whose X-Forwarded-For / -Proto / -Host are believed",
  accept_proxy_protocol:
    "Load balancers (from: addresses or CIDRs) whose connections to the main listener begin with a PROXY protocol header (v1 or v2) naming the client; timeout for it (default 5s)",
  timeouts: "Upstream timeouts: connect, response_header, idle, total (e.g. 5s)",
  shutdown_timeout: "How long a graceful shutdown waits for in-flight requests",
  admin: "Admin listener (metrics, status, reload), off the public port",
  preserve_host: "Send the client's Host header upstream instead of the target's",
  bandwidth:
    "How fast each answer's body goes to the client: rate (bytes per second, e.g. 1MiB), after (bytes each answer sends at full speed first, e.g. 10MiB), per (response, the default; client or route: their answers in progress share rate); nginx limit_rate and limit_rate_after",
  concurrency_limit:
    "Requests in progress at once per client (by: ip, header, cookie, query, jwt_claim) or per route: max; past it status_code (429)",
  access_log_filter:
    "Only HTTP requests that meet one of these get an access line: status (selectors), min_duration, retried: true, failed: true (cut short, or a failed gRPC call)",
  rewrite_location:
    "Give the client an upstream's Location or Refresh that points at the target itself as the route's path (default true; nginx proxy_redirect default)",
  early_hints:
    "Pass an upstream's 103 Early Hints on to HTTP/1.1, HTTP/2 and HTTP/3 clients (default true; not on http1_engine: deno or to HTTP/1.0 clients)",
  mirror:
    "Copies of the requests to a shadow upstream (answers dropped): target, percent, body, max_body, max_in_flight, timeout",
  hosts: "Host names this route answers for (exact or *.example.com)",
  error_pages:
    'Pages for Prox\'s own error answers by status (404, "5xx", "502, 504"): a file, {file|body, content_type} or a list chosen by Accept',
  intercept_upstream:
    "Give the upstream's own error answers the error_pages page of their status (body dropped)",
  proxy_protocol:
    "Send a PROXY protocol header (v1 text or v2 binary) with the client's address first on each upstream connection (not reused across requests)",
  root: "Directory served by a static route",
  client_auth:
    "Mutual TLS: clients present a certificate from ca_cert (mode require or verify_if_given; crl_file: revocation lists, one per CA of the chain; crl_expired: refuse or allow a certificate whose issuer's list is out of date; ocsp: ask each certificate's OCSP responder)",
  client_cert:
    "Only clients whose verified TLS certificate matches (subject_matches, san_matches, fingerprints) may use the route; others get 403",
  status_code: "Status code of a redirect or a rate-limited response",
  cache:
    "In-memory response cache (RFC 9111) for proxy and load_balance routes: true, or max_size, max_entries, max_object_size, default_ttl, stale_while_revalidate; at the top level, max_size: the bytes all route caches share",
  max_object_size: "Responses larger than this stream through and are not stored",
  default_ttl:
    "Freshness for cacheable answers without Cache-Control max-age or Expires (unset: not stored)",
  stale_while_revalidate:
    "How long past its freshness an answer without its own stale-while-revalidate is served while refreshed in the background",
  ip_access:
    "Client IP allow/deny lists (addresses, CIDR blocks, all); the most specific entry wins; refused: 403",
  allow: "ip_access: addresses and CIDR blocks let in; with any, clients not named are refused",
  deny: "ip_access: addresses and CIDR blocks refused (deny wins over the same block in allow)",
  allow_file:
    "ip_access: a file (or list of files) of more allow entries, one per line, # or ; comments; re-read when it changes",
  deny_file:
    "ip_access: a file (or list of files) of more deny entries, one per line, # or ; comments; re-read when it changes",
  basic_auth:
    "HTTP Basic authentication: realm, users (user → bcrypt hash), users_file, forward_authorization",
  realm: "Shown by the browser's login prompt (WWW-Authenticate realm)",
  users:
    "User name → bcrypt hash of cost 14 at most ($2y$…, from `prox hash-password` or `htpasswd -nbB`)",
  users_file: "An htpasswd file of user:$2y$… lines (bcrypt only); a change reloads",
  forward_authorization:
    "Also send the client's Authorization upstream (default: removed; the user is {auth_user})",
  jwt_auth:
    "Bearer JWT authentication: secret_env, secret_file, key_file or jwks_url; issuer, audience, leeway, required_claims, claims_to_headers",
  secret_env: "jwt_auth: environment variable holding the HMAC secret (HS256/384/512)",
  secret_file: "jwt_auth: file holding the HMAC secret (one trailing newline ignored)",
  key_file: "jwt_auth: public key as PEM (BEGIN PUBLIC KEY), a JWK or a JWK Set",
  jwks_url: "jwt_auth: JWK Set URL, kept by its Cache-Control max-age within the refresh bounds",
  claims_to_headers:
    "jwt_auth: claim → header field set on the upstream request (client copies removed)",
  required_claims: "jwt_auth: claim → accepted value or values",
  claim:
    "rate limit by: jwt_claim: the claim of the route's jwt_auth token that keys it (e.g. sub)",
};

function describe(node: unknown): void {
  if (Array.isArray(node)) {
    node.forEach(describe);
    return;
  }
  if (!node || typeof node !== "object") return;
  const obj = node as Record<string, unknown>;
  const props = obj.properties as Record<string, Record<string, unknown>> | undefined;
  if (props) {
    for (const [name, schema] of Object.entries(props)) {
      if (DESCRIPTIONS[name] && schema && typeof schema === "object" && !schema.description) {
        schema.description = DESCRIPTIONS[name];
      }
    }
  }
  for (const v of Object.values(obj)) describe(v);
}

/** JSON Schema (draft 2020-12) for config.yaml, for editors with the YAML language server. */
export function jsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(Config, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  describe(schema);
  // Top-level `x-…` keys hold anchors for aliases; Prox ignores them (parse.ts).
  return { ...schema, patternProperties: { "^x-": {} }, title: "Prox configuration" };
}
