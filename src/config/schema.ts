// The documented shape of config.yaml. Every key of the Rust Prox config loads unchanged; new keys
// are optional with defaults. Parsing yields the resolved `Config` (defaults applied, durations
// in milliseconds, sizes in bytes). Objects are strict: unknown keys are errors.
// The top level lives here; value types and routes are in schema_route.ts, re-exported.

import { z } from "zod";
import {
  Compress,
  Duration,
  ErrorPages,
  ForwardAuth,
  HealthCheck,
  IpAccess,
  PassiveHealth,
  Route,
  Size,
  StatusSelector,
  Timeouts,
} from "./schema_route.ts";
import { TcpEntries } from "./schema_tcp.ts";

export * from "./schema_route.ts";
export * from "./schema_tcp.ts";

// ---------------------------------------------------------------------------------------------
// Top level

export const Acme = z.object({
  enabled: z.boolean(),
  domains: z.array(z.string()),
  // Optional: the account's contact (the Rust Prox required it).
  email: z.string().optional(),
  staging: z.boolean().default(false),
  ca_url: z.string().optional(),
  ca_cert: z.string().optional(),
  // Empty, its files went to the file system root ("" + "/account.key").
  storage_path: z.string().min(1).default("./acme_storage"),
  renewal_days_before_expiry: z.int().default(30),
  // The certificate's key: ECDSA P-256 (what browsers prefer), P-384, or RSA for old clients.
  key_type: z.enum(["p256", "p384", "rsa2048", "rsa3072", "rsa4096"]).default("p256"),
  // The ACME state in Redis instead of storage_path: instances that share no file system share
  // the account, the certificate, pending challenges, the order lock and the back-off there.
  redis: z.object({
    url: z.string().min(1),
    // The password read from this environment variable instead of the url (kept out of the file).
    password_env: z.string().min(1).optional(),
    prefix: z.string().default("prox:acme:"),
    timeout: Duration.prefault("5s"),
  }).strict().optional(),
  http_listen_addr: z.string().optional(),
  challenge: z.enum(["http-01", "dns-01", "tls-alpn-01"]).default("http-01"),
  // External account binding (RFC 8555 §7.3.4), which ZeroSSL and Google Trust Services require:
  // the key id and base64url MAC key from the CA's account page, the key given or read from the
  // environment when an account is registered.
  eab: z.object({
    kid: z.string().min(1),
    hmac_key: z.string().optional(),
    hmac_key_env: z.string().min(1).optional(),
  }).strict().optional(),
  dns: z.object({
    // POST <webhook>/present and <webhook>/cleanup with {"fqdn", "value"} (lego's httpreq).
    webhook: z.string().optional(),
    headers: z.record(z.string(), z.string()).optional(),
    // A private CA to trust for an https webhook, besides the system roots.
    ca_cert: z.string().optional(),
    // Sent as `Authorization: Bearer <value of the variable>`, read when an order starts.
    token_env: z.string().min(1).optional(),
    // Runs `<command…> present|cleanup <fqdn> <value>` (lego's exec).
    command: z.array(z.string()).min(1).optional(),
    // host:port of DNS servers to see the record on before the CA is asked to look; unset: the
    // zone's authoritative servers, found through the system resolver.
    resolvers: z.array(z.string()).optional(),
    propagation_timeout: Duration.prefault("120s"),
  }).strict().optional(),
  /**
   * On-demand TLS (Caddy's on_demand_tls): a ClientHello for a name no certificate holds orders
   * one for exactly that name during the handshake, when `ask` (GET ?domain=<name>) answers 200.
   */
  on_demand: z.object({
    // Required (validate.ts says so): without it anyone could make Prox order any name.
    ask: z.string().optional(),
    // How long the handshake waits for `ask`'s answer.
    ask_timeout: Duration.prefault("5s"),
    // On-demand certificates held (served, renewed) at once; the least recently used is dropped.
    max_certificates: z.int().min(1).max(100_000).default(1000),
    // At most `orders` new on-demand orders within `per`.
    rate: z.object({ orders: z.int().min(1), per: Duration }).strict().optional(),
    // How long a handshake waits for its certificate once `ask` allowed the name: the store
    // opening (a Redis that does not answer) and the order together.
    timeout: Duration.prefault("30s"),
  }).strict().optional(),
}).strict();

export const Hsts = z.object({
  max_age: Duration.prefault("365d"),
  include_subdomains: z.boolean().default(false),
  preload: z.boolean().default(false),
}).strict();

export const Tls = z.object({
  cert_path: z.string().min(1).optional(),
  key_path: z.string().min(1).optional(),
  acme: Acme.optional(),
  hsts: Hsts.optional(),
  /**
   * More certificates, each served to clients that ask (by SNI) for a name its subjectAltName
   * holds; the certificate above (or ACME's) serves every other name and clients without SNI.
   */
  sni: z.array(z.object({ cert_path: z.string().min(1), key_path: z.string().min(1) }).strict())
    .min(1).max(32).optional(),
  /**
   * Mutual TLS: clients present a certificate issued by one of `ca_cert`'s CAs (`require`), or may
   * present none (`verify_if_given`: one they present must verify).
   */
  client_auth: z.object({
    ca_cert: z.string().min(1),
    /**
     * PEM certificate revocation lists: a certificate on its issuer's list is refused, and so is
     * one of the chain whose issuer has no list here (as nginx: give the root's and each
     * intermediate's).
     */
    crl_file: z.string().min(1).optional(),
    /**
     * A client certificate whose issuer's list is past its next update: `refuse` (as nginx and
     * HAProxy do: a revocation since is not in it) or `allow`.
     */
    crl_expired: z.enum(["refuse", "allow"]).default("refuse"),
    /**
     * OCSP (RFC 6960): each client certificate's status asked of its responder (authorityInfoAccess,
     * or `responder`) at the handshake; answers kept until their nextUpdate (an hour at most).
     */
    ocsp: z.object({
      /** `leaf`: the client's certificate; `chain`: its intermediates too. */
      check: z.enum(["leaf", "chain"]).default("leaf"),
      responder: z.string().min(1).optional(),
      timeout: Duration.prefault("3s"),
      /** A status that cannot be learned (no responder, no answer, a bad one). */
      on_error: z.enum(["refuse", "allow"]).default("refuse"),
      cache_size: z.int().min(0).max(1_000_000).default(10_000),
    }).strict().optional(),
    mode: z.enum(["require", "verify_if_given"]).default("require"),
  }).strict().optional(),
}).strict();

export const Http3Config = z.object({
  // These three have no effect on Deno (README "Accepted but without effect"); any value the Rust
  // Prox accepted loads, 0 included (as for the http2_* sizes, where 0 means the default).
  max_data: z.int().min(0).default(10_000_000),
  max_stream_data: z.int().min(0).default(1_000_000),
  max_streams_bidi: z.int().positive().default(100),
  max_idle_timeout: z.int().positive().default(30_000),
  congestion_control: z.enum(["cubic", "reno", "bbr"]).default("cubic"),
  enable_0rtt: z.boolean().default(true),
  max_packet_size: z.int().min(0).optional(),
}).strict();

export const Protocols = z.object({
  http2_enabled: z.boolean().default(true),
  websocket_enabled: z.boolean().default(true),
  http3_enabled: z.boolean().default(false),
  // Who serves the main listener: `prox` (Prox's own engines: HTTP/1.1 for the plainest requests,
  // relaying every other connection to Deno.serve, and HTTP/2 by ALPN with TLS or as h2c with
  // prior knowledge) or `deno` (Deno.serve alone).
  http1_engine: z.enum(["deno", "prox"]).default("prox"),
  // On the engine: how long a connection may idle between requests, or take to send a head, before
  // it is closed (0s: never, as on Deno.serve). Longer than load balancers keep idle connections
  // to a backend (Google Cloud's: 600 s), or one would send a request just as Prox closes.
  http1_idle_timeout: Duration.prefault("620s"),
  // On the engine: how long a request head may take to come whole once its first byte came (nginx's
  // client_header_timeout), whatever the idle limit: a slowloris client trickling a head a byte at
  // a time held its connection for the whole http1_idle_timeout (0s: that limit alone applies).
  http1_header_timeout: Duration.prefault("60s"),
  http2_max_frame_size: z.int().min(0).optional(),
  // A 32-bit SETTINGS value (RFC 9113 §6.5.1): 2^32 went out as 0, which refuses every stream.
  http2_max_concurrent_streams: z.int().min(0).max(4294967295).optional(),
  http3_config: Http3Config.default(Http3Config.parse({})),
}).strict();

export const Admin = z.object({
  listen_addr: z.string().default("127.0.0.1:9090"),
  token: z.string().optional(),
}).strict();

export const MetricsConfig = z.object({
  /** Also serve `/metrics` on the main listener (the seed did; off by default). */
  on_main_listener: z.boolean().default(false),
  path: z.string().default("/metrics"),
}).strict();

export const LogConfig = z.object({
  level: z.enum(["debug", "info", "warn", "error"]).default("info"),
  access_log: z.union([z.boolean(), z.enum(["json", "common", "combined"])]).default("json"),
  /** Access lines (HTTP and tcp) appended to this file instead of stdout; rotations followed. */
  access_log_file: z.string().min(1).optional(),
  /**
   * Only HTTP requests that meet one of these get an access line (Traefik's access-log filters,
   * nginx's `access_log … if=`): a status listed, a duration of at least `min_duration`, a retry,
   * an answer that failed whatever its status (`failed`).
   */
  access_log_filter: z.object({
    status: z.union([StatusSelector, z.array(StatusSelector).min(1)]).optional(),
    min_duration: Duration.optional(),
    retried: z.boolean().default(false),
    /** An answer cut short (`incomplete`), or a gRPC call whose grpc-status is not 0. */
    failed: z.boolean().default(false),
  }).strict().optional(),
}).strict();

/** Where rate-limit counters live: in memory, or in Redis 5.0 or later (shared by instances). */
export const RateLimitStore = z.object({
  type: z.enum(["memory", "redis"]).default("memory"),
  url: z.string().optional(),
  /** The password read from this environment variable instead of the url. */
  password_env: z.string().min(1).optional(),
  prefix: z.string().default("prox:rl:"),
  on_error: z.enum(["allow", "deny"]).default("allow"),
  timeout: Duration.prefault("100ms"),
  /** Redis connections used round-robin (each pipelines automatically). */
  pool_size: z.int().min(1).max(32).default(2),
}).strict();

export const UpstreamPool = z.object({
  /** Open connections per origin, WebSockets included: each holds one until it closes. */
  max_connections_per_upstream: z.int().positive().default(256),
  max_idle_per_upstream: z.int().min(0).default(256),
  idle_timeout: Duration.prefault("60s"),
  queue_limit: z.int().min(0).default(1024),
  queue_timeout: Duration.prefault("5s"),
}).strict();

export const MemoryConfig = z.object({
  /** Idle time after a burst before one memory-reducing GC; "0s" turns it off. */
  reduce_after_idle: Duration.prefault("1s"),
  /** ...but only when RSS is above this; below it the memory is kept for the next burst. */
  reduce_above: Size.prefault("192MiB"),
}).strict();

/**
 * `http_redirect`: plain HTTP to HTTPS, path and query as sent, for the hosts a route takes (others
 * get 404).
 */
export const HttpRedirect = z.object({
  listen_addr: z.string(),
  status_code: z.literal([301, 302, 307, 308]).default(308),
}).strict();

export const Limits = z.object({
  max_request_body: Size.optional(),
  /** Request header fields larger than this (names + values) get 431; unset: the listener's own limits. */
  max_header_bytes: Size.optional(),
  /** Client connections the main listener keeps open at once (per worker); more are closed. */
  max_connections: z.int().min(1).optional(),
  /** Client connections from one address the main listener keeps open at once (per worker). */
  max_connections_per_ip: z.int().min(1).optional(),
  /**
   * How max_connections_per_ip counts IPv6 clients: by their first this many bits (unset: 64, one
   * subscriber, as rate limits' ipv6_prefix; 128: per address, as nginx's limit_conn).
   */
  ipv6_prefix: z.int().min(1).max(128).optional(),
}).strict();

/** The top-level `cache`: a byte bound all routes' response caches share. */
export const CacheShared = z.object({
  /** Bytes all route caches hold together; the least recently used entry of any goes first. */
  max_size: Size,
}).strict();

/**
 * Load balancers in front of Prox that send a PROXY protocol header (v1 or v2) first on each
 * connection to the main listener; the header's source address is then the client's.
 */
export const AcceptProxyProtocol = z.object({
  /** Their addresses or CIDR blocks; connections from anyone else carry no header. */
  from: z.array(z.string()).min(1),
  /** How long such a connection may take to send its header before it is closed. */
  timeout: Duration.prefault("5s"),
}).strict();

/** The events `notify` can send (all by default). */
export const NOTIFY_EVENTS = [
  "backend_down",
  "backend_up",
  "reload",
  "reload_failed",
  "certificate_changed",
] as const;

/** `notify`: events POSTed as JSON to a webhook (src/adapters/notify.ts). */
export const Notify = z.object({
  webhook: z.string().trim().refine((s) => /^https?:\/\/[^/?#\s]+/i.test(s) && URL.canParse(s), {
    // Not echoed: a chat's webhook URL carries its credential (the position says which line).
    error: () =>
      "Invalid webhook URL: an http:// or https:// URL, e.g. https://hooks.slack.com/services/…",
  }),
  events: z.array(z.enum(NOTIFY_EVENTS)).min(1).optional(),
  headers: z.record(z.string(), z.string()).optional(),
  timeout: Duration.prefault("5s"),
}).strict();

export const Config = z.object({
  listen_addr: z.string(),
  routes: z.record(z.string(), Route),
  tls: Tls.optional(),
  health_check: HealthCheck.default(HealthCheck.parse({})),
  backend_health_paths: z.record(z.string(), z.string()).default({}),
  protocols: Protocols.default(Protocols.parse({})),
  admin: Admin.optional(),
  metrics: MetricsConfig.default(MetricsConfig.parse({})),
  log: LogConfig.default(LogConfig.parse({})),
  trusted_proxies: z.array(z.string()).default([]),
  accept_proxy_protocol: AcceptProxyProtocol.optional(),
  /**
   * Whether request fields whose names hold an underscore go upstream (nginx's directive of the
   * name, off by default there too): CGI-style upstreams read `X_Forwarded_For` as
   * `X-Forwarded-For`.
   */
  underscores_in_headers: z.boolean().default(false),
  timeouts: Timeouts.default({}),
  limits: Limits.default(Limits.parse({})),
  shutdown_timeout: Duration.prefault("30s"),
  rate_limit_store: RateLimitStore.default(RateLimitStore.parse({})),
  upstream_pool: UpstreamPool.default(UpstreamPool.parse({})),
  memory: MemoryConfig.default(MemoryConfig.parse({})),
  /** Routes without their own (and every `websocket` route, which has no key for it) use this. */
  passive_health: PassiveHealth.default(PassiveHealth.parse({})),
  http_redirect: HttpRedirect.optional(),
  workers: z.int().min(1).max(64).default(1),
  /** Events (a target down or up, a reload, a certificate swapped) POSTed to a webhook. */
  notify: Notify.optional(),
  /** Response compression for every proxy, load_balance and static route without its own. */
  compress: Compress.optional(),
  /** A byte bound the routes' response caches (`cache` on a route) share. */
  cache: CacheShared.optional(),
  /** Pages for Prox's own error answers, per status; a route's own entries come first. */
  error_pages: ErrorPages.optional(),
  /** Forward auth for every route without its own (`forward_auth: false` on a route skips it). */
  forward_auth: ForwardAuth.optional(),
  /** Client IP allow/deny lists for every route without its own `ip_access`. */
  ip_access: IpAccess.optional(),
  /** Layer-4 listeners relaying raw TCP (or TLS by SNI, unterminated) to targets: schema_tcp.ts. */
  tcp: TcpEntries.optional(),
}).strict();

/** The resolved configuration: defaults applied, durations in ms, sizes in bytes. */
export type Config = z.output<typeof Config>;
