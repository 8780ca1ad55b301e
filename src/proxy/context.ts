// The per-request context every phase reads and fills in, and the dependencies the pipeline is
// built with. Only Web APIs and ports: no Deno.

import type { CompiledRoute, Snapshot } from "./snapshot.ts";
import type { UpstreamRegistry } from "./state.ts";
import type { MirrorTraffic } from "./mirror.ts";
import type { JwksCache } from "./jwks.ts";
import type {
  AccessRecord,
  ClientInfo,
  Clock,
  Compressor,
  FileStore,
  Logger,
  Metrics,
  PasswordCheck,
  RateLimitStore,
  Timer,
  UpstreamClient,
  WebSocketProxy,
} from "../ports.ts";

/** What the pipeline knows about one request as it moves through the phases. */
export interface RequestContext {
  req: Request;
  info: ClientInfo;
  snapshot: Snapshot;
  /**
   * The request path: as the URL parser gives it until the pipeline has normalized it, then the
   * normalized path (what routes match on).
   */
  path: string;
  /** Raw query string including `?`, or "" (forwarded byte for byte). */
  query: string;
  host: string;
  scheme: "http" | "https";
  /** Client IP after `trusted_proxies` resolution. */
  clientIp: string;
  trustedPeer: boolean;
  requestId: string;
  route: CompiledRoute | null;
  /** Monotonic start time (ms). */
  start: number;
  /** Wall-clock start (ms since epoch), for placeholders and logs. */
  startWall: number;
  upstream: string | null;
  upstreamStatus: number | null;
  upstreamMs: number | null;
  retries: number;
  /** Why Prox answered itself (RFC 9209 error type), for the access log; null otherwise. */
  error: string | null;
  /** Status for logs and metrics when it differs from the response's (499: client gone). */
  loggedStatus?: number;
  /** What the route's response cache did, on a route with `cache` (cache.ts). */
  cache?: "hit" | "updating" | "miss" | "stale" | "revalidated" | "bypass";
  /** Response headers that filters want added (e.g. RateLimit), applied before responding. */
  extraResponseHeaders: [string, string][];
  /** Gives back the request's `concurrency_limit` slot (set once one was taken). */
  release?: () => void;
  /** An upgraded WebSocket holds that slot until it ends (websocket.ts gives it back then). */
  slotHeldBySession?: boolean;
  /** Why the request cannot be served (a malformed Host or URL: 400 before routing), or null. */
  invalid: string | null;
  /** Fields forward auth took from the auth service's 2xx for the upstream request. */
  authHeaders?: [string, string][];
  /** The request body, when a filter had to read it whole (forward auth's `send_body`). */
  body?: Uint8Array<ArrayBuffer>;
  /** The user `basic_auth` let in (`{auth_user}`, the access log); unset without one. */
  authUser?: string;
  /** Set when `basic_auth` or `jwt_auth` keeps the client's `Authorization` from the upstream. */
  dropAuthorization?: boolean;
  /** Set when the route's `cors` answered this request as a preflight (filters/cors.ts). */
  corsPreflight?: boolean;
  /** What the limits before jwt_auth saw, for the `by: jwt_claim` ones after it (rate_limit.ts). */
  rateLimitCarry?: { counted: boolean; failed: boolean };
  /** The claims of the token `jwt_auth` verified (rate limits `by: jwt_claim`). */
  jwtClaims?: Record<string, unknown>;
  /** A cookie `jwt_auth` took its token from, removed from the upstream request. */
  dropCookie?: string;
  /** The query as sent, when `jwt_auth` took its token parameter out of `query` (jwt_auth.ts). */
  jwtQuery?: string;
  /** Set when `ip_access` refused the client: its 403 tells nothing more (no CORS fields). */
  ipRefused?: boolean;
}

/** Dependencies of the pipeline: ports plus the current snapshot. */
export interface PipelineDeps {
  snapshot(): Snapshot;
  upstream: UpstreamClient;
  files: FileStore;
  clock: Clock;
  logger: Logger;
  metrics: Metrics;
  /** Rate-limit counters; routes with `rate_limit` are not limited without one. */
  rateLimits?: RateLimitStore;
  /** JWK Sets of `jwt_auth.jwks_url`s; without it such routes answer 503 (fails closed). */
  jwks?: JwksCache;
  /** Checks basic_auth passwords; without one every password is refused (fails closed). */
  passwords?: PasswordCheck;
  /** Receives one record per request (access log). */
  access?: (rec: AccessRecord) => void;
  /** False while access logging is off (no record is built then); default true. */
  accessEnabled?: () => boolean;
  /**
   * Access records waiting for their response to be delivered; calling one writes it as
   * incomplete (shutdown: connections the drain timeout cuts never settle). Bounded by the
   * requests in progress.
   */
  accessPending?: Set<() => void>;
  /** True once shutdown has begun. */
  draining?: () => boolean;
  /** Proxies WebSocket upgrades; without it upgrades are answered 501. */
  websocket?: WebSocketProxy;
  /** Random source in [0, 1) (request ids, random balancing). */
  random?: () => number;
  /** Upstream runtime state (health, in-flight, latency) that survives reloads (state.ts). */
  upstreams?: UpstreamRegistry;
  /** Mirror copies under way (slots per route), shared across reloads; see mirror.ts. */
  mirrors?: MirrorTraffic;
  /** Applies content codings for routes with `compress`; without it nothing is compressed. */
  compressor?: Compressor;
  /** Waits of a route's `bandwidth` (filters/bandwidth.ts); setTimeout without it. */
  timer?: Timer;
  /** With tracing on: names the request's server span after the route that took it (otel.ts). */
  routed?: (route: string, method: string) => void;
}
