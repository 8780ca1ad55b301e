// The interfaces the core needs from the outside world. `proxy/` and `domain/` depend only on
// these; `adapters/` implement them with Deno APIs. Keep each port small and consumer-owned.

import type { RateLimitDecision, RateLimitPolicy } from "./domain/rate_limit.ts";
import type { HeaderMap } from "./domain/header_list.ts";
import type { ContentCoding } from "./domain/compress.ts";
import type { ErrorKind, RequestTag, ShedReason } from "./domain/errors.ts";
import type { DirEntry } from "./domain/dir_listing.ts";

/** The protocol a request arrived on. */
export type Protocol = "http/1.1" | "h2" | "h2c" | "h3";

/** What the listener knows about the peer and the connection, passed beside the Web `Request`. */
export interface ClientInfo {
  /** TCP/UDP peer address (before `trusted_proxies` resolution). */
  remoteAddr: { hostname: string; port: number };
  /** The local listener port the request arrived on (for Alt-Svc, X-Forwarded-Port). */
  localPort: number;
  protocol: Protocol;
  /**
   * The request line said HTTP/1.0 (it counts as `http/1.1` above). Known on Prox's own HTTP/1.1
   * engine, and for a connection it relayed by its first request; Deno.serve does not tell.
   */
  http10?: boolean;
  tls: boolean;
  /**
   * Resolves once the response, body included, has been delivered to the client; rejects when
   * it could not be (the client went away). Absent where the listener cannot tell.
   */
  completed?: Promise<void>;
  /**
   * The request's authority, where the listener knows it better than the request URL: Deno.serve
   * makes up `localhost:<its port>` for a request without one, and a relayed request's listener
   * (h1/server.ts) is not the port the client connected to. Prox's own HTTP/1.1 engine gives the
   * Host field it put in the URL. identify() checks it as it would the URL's.
   */
  authority?: string;
  /**
   * Set by a listener that writes answers to the socket itself (Prox's own HTTP/1.1 engine):
   * an upstream's answer may then be a lean stand-in for a Response (wire_response.ts).
   */
  writesItself?: boolean;
  /**
   * Set when the listener refused the request itself (HTTP/3: a head Fetch cannot carry, such as
   * TRACE, CONNECT or oversized fields; the Request is then a stand-in): the handler answers with
   * this error, logged and counted as over TCP. `method` is the client's ("-" when unknown).
   */
  refused?: { kind: ErrorKind; message: string; method: string };
  /**
   * The request target was `*` (asterisk-form, RFC 9112 §3.2.4; `:path` `*` over HTTP/2 and
   * HTTP/3): a request about the server as a whole, which Prox answers itself (the URL says `/`).
   * Known on Prox's own engines; Deno.serve hands it over as `/*`.
   */
  asterisk?: boolean;
  /**
   * The certificate the client presented and Prox verified (`tls.client_auth`); absent without
   * client authentication or when the client presented none (`verify_if_given`).
   */
  clientCert?: ClientCert;
  /**
   * Sends a 103 Early Hints with `fields` to the client ahead of the answer (RFC 8297). Present
   * on Prox's own HTTP/1.1, HTTP/2 and HTTP/3 engines only (Deno.serve cannot send a 1xx);
   * does nothing for an HTTP/1.0 client (RFC 9110 §15.2) or once the answer is on its way.
   */
  earlyHints?(fields: [string, string][]): void;
}

/** Where an upstream's 103 Early Hints go: the client's listener (ClientInfo.earlyHints). */
export interface EarlyHintsSink {
  earlyHints(fields: [string, string][]): void;
}

/** A client's verified TLS certificate, as the `{tls_client_*}` placeholders give it. */
export interface ClientCert {
  /** Distinguished name, RFC 4514 order ("CN=alice,O=Example"). */
  subject: string;
  issuer: string;
  /** Serial number, upper-case hex. */
  serial: string;
  /** SHA-256 of the DER certificate, lower-case hex. */
  fingerprint: string;
  /** subjectAltName as OpenSSL prints it ("DNS:a.example, URI:spiffe://…"); "" without one. */
  san: string;
  /** notAfter, ISO 8601. */
  notAfter: string;
  /** The certificate, PEM. */
  pem: string;
}

/**
 * An upstream client may put a live counter on a streamed Response under this key (for the
 * access log; a Content-Length covers the other bodies).
 */
export const BODY_BYTES: unique symbol = Symbol("prox.bodyBytes");
/** Body bytes passed on so far, and whether the body was read to its end (not cancelled). */
export interface BodyCounter {
  bytes: number;
  ended: boolean;
  /** Set by the pipeline: the request this body answers, put on the error if the body fails. */
  request?: RequestTag;
  /**
   * The upstream's trailer fields, set before the body ends (an HTTP/2 upstream's; gRPC puts its
   * status there). Prox's HTTP/2 and HTTP/3 engines send them after the body, its HTTP/1.1 engine
   * in the last chunk to clients that sent `TE: trailers` (all without the fields `trailerPasses`
   * refuses); Deno.serve (`http1_engine: deno`) drops them.
   */
  trailers?: [string, string][];
  /**
   * Set by an upstream client that watched `UpstreamRequest.signal` through the answer's body
   * (`watchBody`): the body fails with the signal's reason when it aborts, and `onOver` is called
   * once the upstream's stream is over (`over` then true), whether whole, failed or cancelled.
   */
  watched?: boolean;
  over?: boolean;
  onOver?: () => void;
}
/**
 * Applies a content coding, chunk by chunk. `write` compresses a chunk and flushes (a sync flush),
 * so a stream of events is not held back waiting for more input; `end` finishes the coding. Both
 * pass the output to `emit` and free the engine when they throw; `close` frees it early.
 */
export interface CompressionEngine {
  write(chunk: Uint8Array, emit: (out: Uint8Array) => void): void;
  end(emit: (out: Uint8Array) => void): void;
  close(): void;
}
/** Makes a compression engine for one response body. */
export type Compressor = (coding: ContentCoding) => CompressionEngine;

/**
 * The upstream client puts a buffered answer's body bytes, as received, on its Response under this
 * key: a listener that writes answers itself (Prox's HTTP/1.1 engine) sends them as they are
 * instead of reading the body back through a stream, while the Response's body is untouched.
 * That engine's requests offer a small body they read whole the same way (adapters/h1/).
 */
export const RAW_BODY: unique symbol = Symbol("prox.rawBody");
/** A Response that may carry its body's bytes under `RAW_BODY`. */
export type RawBodied = Response & { [RAW_BODY]?: Uint8Array };
/**
 * How many bytes in front of a `RAW_BODY`'s bytes (in their ArrayBuffer) are free for the
 * answer's head, so that head and body go out in one write without copying the body. Calling it
 * claims the room: it answers once, then 0, and 0 once the body was asked for as a stream.
 */
export const HEADROOM: unique symbol = Symbol("prox.headroom");
/**
 * The room a body read whole for such a listener is given in front (most answer heads are a few
 * hundred bytes; a longer one is copied with the body instead).
 */
export const HEAD_ROOM = 1024;
/** A Response whose `RAW_BODY` may have room for its head in front (`HEADROOM`). */
export type Roomy = RawBodied & { [HEADROOM]?: () => number };
/**
 * Called by a listener once it wrote a `RAW_BODY`'s bytes to the socket and holds them no more:
 * a buffer the upstream client lent (adapters/buffer_pool.ts) goes back for the next answer. A
 * body asked for as a stream (a rule, the cache) was handed on and is not given back.
 */
export const RELEASE: unique symbol = Symbol("prox.release");
/** A Response whose `RAW_BODY` may go back to the pool it came from (`RELEASE`). */
export type Releasable = RawBodied & { [RELEASE]?: () => void };
/**
 * On a body stream whose chunks may be views of pooled buffers (the upstream client's reads of a
 * large answer, the HTTP/1.1 engine's of a large request body): whoever reads the stream itself
 * and writes each chunk to a socket calls it once, before its first read, and gets the function
 * it must call with each chunk once written and held no more (true: its buffer went back). Only
 * then are the chunks pooled; a stream that a rule, the cache or a tee reads is another object,
 * whose chunks are never reused, and a wrapper that passes chunks on untouched may pass this on.
 */
export const LEND_CHUNKS: unique symbol = Symbol("prox.lendChunks");
/** A body stream that may lend its chunks (`LEND_CHUNKS`). */
export type ChunkLending = ReadableStream<Uint8Array> & {
  [LEND_CHUNKS]?: () => (chunk: Uint8Array) => boolean;
};

/**
 * On an error of `UpstreamClient.send` that says `sentNothing`: the request's streamed body,
 * whole, when the client took none of it yet (an HTTP/2 stream the upstream refused), so the
 * request may go again with it. Whoever gets it owns it: sends it again or cancels it.
 */
export const UNREAD_BODY: unique symbol = Symbol("prox.unreadBody");
/** An error that may carry an `UNREAD_BODY`. */
export type UnreadBody = { [UNREAD_BODY]?: ReadableStream<Uint8Array> };

/**
 * The reason a response rule cancels the upstream's body with when it replaces it: nobody reads
 * it, but a cache filling an entry from it reads on and stores it (cache_response.ts teeBody).
 */
export const BODY_REPLACED: unique symbol = Symbol("prox.bodyReplaced");

/** A Response that may carry a `BODY_BYTES` counter. */
export type CountedResponse = Response & { [BODY_BYTES]?: BodyCounter };

/** One handler for every protocol: HTTP/1.1, HTTP/2 and HTTP/3 all call it. */
export type Handler = (req: Request, info: ClientInfo) => Promise<Response>;

/** Per-request upstream timeouts in milliseconds; 0 disables one. */
export interface UpstreamTimeouts {
  connect: number;
  /** Time from sending the request until the response head arrives. */
  responseHeader: number;
  /** Longest pause between two body chunks, either direction. */
  idle: number;
}

/** TLS options for an upstream connection. */
export interface UpstreamTls {
  /** Extra PEM CA certificates to trust. */
  caCerts?: string[];
  insecureSkipVerify?: boolean;
  /** SNI / verification name, when it must differ from the URL host. */
  serverName?: string;
  /** PEM certificate chain and private key presented when the upstream asks (mutual TLS). */
  client?: { cert: string; key: string };
}

/**
 * A request on its way to an upstream. `headers` is final: the client sends them as they are
 * (including `host`), never adds, decodes or follows anything.
 */
export interface UpstreamRequest {
  /** Scheme, host and port of the upstream (its path is not used). Shared: never change it. */
  origin: URL;
  /** The request target on the wire: path and query, exactly as they must be sent. */
  target: string;
  method: string;
  headers: HeaderMap;
  /**
   * A stream is sent as it comes (with the `content-length` in `headers`, else chunked); bytes go
   * out with the head in one write when small, with a `content-length` added if `headers` has none.
   */
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null;
  timeouts: UpstreamTimeouts;
  tls?: UpstreamTls;
  /** Aborted when the client goes away; the client must then release the connection. */
  signal?: AbortSignal;
  /**
   * Used when `signal` is absent: the client's signal, looked up only when needed, namely when
   * the request waits for a pooled connection or its exchange is still running after a tick of
   * the upstream client's 25 ms timer (a client that leaves is then noticed within about 50 ms).
   * Reading `Request.signal` costs Deno.serve an op and a listener per request, about 1.5 µs,
   * and most exchanges are over before a tick.
   */
  clientSignal?: () => AbortSignal;
  /**
   * Called when a request that had to wait in Prox's own pool (`upstream_pool`: every connection
   * busy, or an HTTP/2 origin's streams) is let go on, before a new connection is opened; not
   * called for one that had its connection at once. The wait is Prox's, not the target's.
   */
  onConnection?: () => void;
  /**
   * A PROXY protocol header (`proxy_protocol`) to send first on a new connection, before TLS;
   * such a connection carries this one request only (its address is this client's).
   */
  proxyHeader?: Uint8Array;
  /**
   * The route's `upstream_protocol`. `h2c`: HTTP/2 with prior knowledge over plain TCP, and `h2`:
   * HTTP/2 over TLS (ALPN must choose h2), both through Prox's own HTTP/2 client, which hands on
   * trailers; `http1`: HTTP/1.1 even to an https origin that offers h2. Unset: HTTP/1.1, and h2
   * by ALPN (through fetch) for https origins.
   */
  protocol?: "http1" | "h2c" | "h2";
  /**
   * The answer goes to a listener that writes it itself and nothing on the way needs a Fetch
   * `Response` (no cache, compression, body rule or error page): the answer, buffered or
   * streamed, may come as a WireResponse (proxy/wire_response.ts).
   */
  lean?: boolean;
  /**
   * Given the upstream's 103 Early Hints (without hop-by-hop fields), as they come before the
   * answer; unset, interim answers are dropped. Never called once the answer's head came.
   */
  hints?: EarlyHintsSink;
  /**
   * `signal` is a deadline's (timeouts.total, a gRPC call's grpc-timeout), aborted with a
   * ProxyError when it passes: a client that can keeps watching it until the upstream's stream
   * is over, fails the answer's body with that error, and marks its BodyCounter `watched`, so the
   * answer need not be wrapped in a stream that watches it. Prox's HTTP/2 client does.
   */
  watchBody?: boolean;
  /**
   * The route's error pages replace the upstream's error answers (`intercept_upstream`): an
   * answer of 400 and over streams rather than being read whole first, so that a body that stalls
   * does not hold the page back (it is cancelled unread).
   */
  streamErrors?: boolean;
}

/**
 * Sends one request upstream and resolves with the response head; the body streams. The
 * response carries no hop-by-hop fields (RFC 9110 §7.6.1): they end at the client.
 * Rejects with a `ProxyError` (kinds: connect, timeout, upstream_reset, protocol).
 * `sentNothing` on the error tells the retry logic whether the request can be replayed safely.
 */
export interface UpstreamClient {
  send(req: UpstreamRequest): Promise<Response>;
  /**
   * Takes one of the origin's `upstream_pool` connection places for a connection opened outside
   * the client (a proxied WebSocket's, which holds it for its whole life): at once, after
   * waiting in the origin's queue, or rejected as a shed request is (`overloaded`). Resolves with
   * the function that gives the place back (once; more calls do nothing). Absent: no limits.
   */
  hold?(
    req: Pick<UpstreamRequest, "origin" | "tls" | "proxyHeader">,
    signal?: AbortSignal,
  ): (() => void) | Promise<() => void>;
  /** Closes pooled connections. */
  close(): Promise<void>;
}

/** File metadata for static serving. */
export interface FileStat {
  isFile: boolean;
  isDirectory: boolean;
  size: number;
  /** Milliseconds since the epoch, or null when unknown. */
  mtime: number | null;
  /**
   * Where the store found a regular file (opaque): given back to `open`, it spares resolving and
   * checking the path again. The store checked it against the root when it made it.
   */
  handle?: string;
}

/**
 * A file that shrank below the length already announced for it (overwritten in place while being
 * sent): the response fails rather than go out short. Expected during deploys, not a Prox bug;
 * thrown by `FileStore.open` (before any byte is out: the caller may stat again) or by its stream.
 */
export class FileChangedError extends Error {
  constructor(path: string) {
    super(`Static file "${path}" shrank while being sent`);
    this.name = "FileChangedError";
  }
}

/**
 * Read-only access to a directory tree for the static route. Paths are relative to the root,
 * already normalized; the adapter still refuses anything that resolves outside the root
 * (symlinks included) by returning null.
 */
export interface FileStore {
  stat(root: string, relPath: string): Promise<FileStat | null>;
  /**
   * Bytes [start, end] (inclusive) of a file: a stream, or the bytes themselves when small. The
   * range must lie within the file: one that shrank below it since `stat` is an error, not a
   * shorter body (the caller has announced the range's length): a FileChangedError. Without a range, the whole file.
   * Bytes read whole start `room` bytes into a buffer of their own, the room left free
   * (`HEADROOM`).
   */
  open(
    root: string,
    relPath: string,
    range?: { start: number; end: number },
    handle?: string,
    room?: number,
  ): Promise<ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null>;
  /**
   * A directory's entries (a static route's `browse`), each as `stat` sees it: entries that
   * resolve outside the root (a symlink out of it) or cannot be read are left out. At most
   * `max`; `truncated` says there were more. Names `skip` refuses (dotfiles a route hides) are
   * neither resolved nor counted among the `max`. Null when the directory is not there.
   * Optional: a store without it lists nothing.
   */
  list?(
    root: string,
    relPath: string,
    max: number,
    skip?: (name: string) => boolean,
  ): Promise<{ entries: DirEntry[]; truncated: boolean } | null>;
}

/** Milliseconds since the epoch, and a monotonic clock for durations. */
export interface Clock {
  now(): number;
  monotonic(): number;
}

/**
 * Calls `fn` once after `ms`; returns a function that stops it. The server's does not keep the
 * process alive (a paced body's wait must not hold a shutdown).
 */
export type Timer = (fn: () => void, ms: number) => () => void;

/** Log levels in increasing severity. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured logger; fields are flat JSON values. */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /**
   * Whether a line of `level` would be written now: lets a caller skip building the fields of a
   * line that would be dropped (a debug line per request). Absent: assume it would.
   */
  enabled?(level: LogLevel): boolean;
}

/** One access-log record, written once per request. */
export interface AccessRecord {
  time: number;
  requestId: string;
  clientIp: string;
  method: string;
  host: string;
  path: string;
  /** The client's query string as it was forwarded, without the `?`; "" when there is none. */
  query: string;
  status: number;
  /** Request body bytes (its Content-Length; 0 for a chunked upload). */
  bytesIn: number;
  /** Response body bytes delivered (counted for streamed bodies). */
  bytesOut: number;
  /** From the request's arrival until the response was delivered (or failed). */
  durationMs: number;
  /** Set when the client went away before the whole response was delivered. */
  incomplete?: true;
  route: string | null;
  upstream: string | null;
  upstreamStatus: number | null;
  upstreamMs: number | null;
  /** As the request came: ClientInfo's protocol, or `http/1.0`. */
  protocol: Protocol | "http/1.0";
  tls: boolean;
  retries: number;
  /** Why Prox answered itself, as its `Proxy-Status` error type (RFC 9209); null otherwise. */
  error: string | null;
  /** On a route with `cache`: what the cache did (hit, updating, miss, stale, revalidated, bypass). */
  cache?: "hit" | "updating" | "miss" | "stale" | "revalidated" | "bypass";
  userAgent: string | null;
  referer: string | null;
  /** The user `basic_auth` let in; absent on routes without it. */
  authUser?: string;
  /** The subject of the client's verified certificate (`tls.client_auth`); absent without one. */
  tlsClient?: string;
  /**
   * A gRPC answer's `grpc-status` (from its trailers, or the head of a trailers-only answer): a
   * failed call is an HTTP 200. Absent on other answers.
   */
  grpcStatus?: string;
}

/**
 * What became of one mirror copy: answered by the shadow (any status), failed (no answer: connect
 * error, reset, timeout), or not sent: the route's copies in flight were at `max_in_flight`, the
 * body went past `max_body`, or the client's body did not arrive whole.
 */
export type MirrorResult =
  | "mirrored"
  | "failed"
  | "dropped_in_flight"
  | "dropped_body_too_large"
  | "dropped_body_incomplete";

/**
 * What the pipeline reports. Labels are bounded: route prefixes and upstream ids, never raw paths.
 * The no-op implementation is the default so the core runs without a metrics backend.
 */
export interface Metrics {
  request(route: string, method: string, status: number, seconds: number): void;
  backendRequest(backend: string, route: string, status: number, seconds: number): void;
  /** A target's health changed (or was first known); `reason` explains it for the status page. */
  backendHealth(backend: string, healthy: boolean, reason?: string): void;
  rateLimit(route: string, action: "allowed" | "limited" | "shadow_limited" | "error"): void;
  /** One request on a route with `cache`, by what the cache did (proxy/cache.ts). */
  cache(
    route: string,
    result: "hit" | "updating" | "miss" | "stale" | "revalidated" | "bypass",
  ): void;
  /**
   * A background refresh of a stale entry (stale-while-revalidate): `refreshed` by a 304,
   * `replaced` by a new answer, `failed` (the stale entry stays until its window ends).
   */
  cacheRefresh(route: string, result: "refreshed" | "replaced" | "failed"): void;
  /** Entries an admin purge dropped from a route's cache (cache_purge.ts), by what it named. */
  cachePurge(route: string, kind: "url" | "prefix" | "route" | "tag", entries: number): void;
  /** A request access control refused (ip_access, basic_auth), by why. */
  accessDenied(route: string, reason: AccessDenial): void;
  retry(route: string, reason: string): void;
  /** One forward-auth check: let through (2xx), refused by the auth service, or it failed. */
  forwardAuth(route: string, outcome: "allowed" | "denied" | "error"): void;
  ejection(backend: string): void;
  /** A request Prox's own upstream pool shed for `backend` (503, never sent), by why. */
  upstreamShed(backend: string, reason: ShedReason): void;
  connectionOpened(protocol: Protocol | "websocket"): void;
  connectionClosed(protocol: Protocol | "websocket"): void;
  /** A client connection closed as it was accepted: `limits.max_connections(_per_ip)` reached. */
  connectionRefused(limit: "max_connections" | "max_connections_per_ip"): void;
  /** A client refused by `tls.client_auth` (its certificate, or its absence), by why. */
  tlsClientRefused(reason: string): void;
  websocketMessageTooBig(route: string): void;
  /**
   * An answer whose body failed after its head went out (the client got it cut short), by the
   * error's kind: `timeout` (an upstream that stalled past timeouts.idle or total),
   * `upstream_reset`, `protocol`, `client_gone` (a client that stopped reading), ….
   */
  responseBodyFailed(route: string, kind: string): void;
  /** One mirror copy's outcome (a route's `mirror`; one per copy, a copy per mirror target). */
  mirror(route: string, result: MirrorResult): void;
  /** The route ids of the current config: series of removed routes are dropped. */
  routesConfigured(routes: readonly string[]): Promise<void>;
  /** The upstream targets of the current config: health series exist from start-up (1 = up). */
  backendsConfigured(backends: readonly string[]): void;
  /** One config load or reload attempt and its outcome. */
  configReload(result: { ok: boolean; version: number; at: number }): void;
  /** `workers: N`, in worker 0: a reload another worker refused was undone in every worker. */
  configRollback(): void;
  /**
   * The certificate served now and its notAfter (ms since the epoch); it replaces the one reported
   * before (a reload may rename or remove it). null: no certificate, or its expiry is unreadable.
   * `more`: the `tls.sni` certificates served beside it, by file name.
   */
  certificateExpiry(
    name: string,
    notAfterMs: number | null,
    more?: { name: string; notAfterMs: number | null }[],
  ): void;
  /** `tls.acme.on_demand`: one answer about a name, from `ask` or its cache. */
  onDemandAsk(result: OnDemandAskResult): void;
  /** `tls.acme.on_demand`: one order for an on-demand name (renewals too), by outcome. */
  onDemandOrder(result: "issued" | "failed" | "rate_limited"): void;
  /** `tls.acme.on_demand`: the certificates held now (replaces the list reported before). */
  onDemandCertificates(certs: { name: string; notAfterMs: number }[]): void;
}

/** What `ask` said about an on-demand name: asked now, or remembered from a recent answer. */
export type OnDemandAskResult =
  | "allowed"
  | "refused"
  | "error"
  | "cached_allowed"
  | "cached_refused";

/**
 * Why access control refused a request: `ip` (ip_access), `credentials_missing` and
 * `credentials_wrong` (basic_auth), `throttled` (too many password checks from one client),
 * `cors_origin` (a CORS preflight from an origin the route's `cors` does not list).
 */
export type AccessDenial =
  | "ip"
  | "credentials_missing"
  | "credentials_wrong"
  | "throttled"
  | "cors_origin"
  | "client_cert";

/** A Metrics that records nothing. */
export const noopMetrics: Metrics = {
  request() {},
  backendRequest() {},
  backendHealth() {},
  rateLimit() {},
  cache() {},
  cachePurge() {},
  cacheRefresh() {},
  accessDenied() {},
  retry() {},
  forwardAuth() {},
  ejection() {},
  upstreamShed() {},
  connectionOpened() {},
  connectionRefused() {},
  tlsClientRefused() {},
  connectionClosed() {},
  websocketMessageTooBig() {},
  responseBodyFailed() {},
  mirror() {},
  routesConfigured: () => Promise.resolve(),
  backendsConfigured() {},
  configReload() {},
  configRollback() {},
  certificateExpiry() {},
  onDemandAsk() {},
  onDemandOrder() {},
  onDemandCertificates() {},
};

/**
 * Checks a password against a stored hash (bcrypt). A check costs milliseconds of CPU: callers
 * bound how many run (proxy/filters/basic_auth.ts).
 */
export interface PasswordCheck {
  verify(password: string, hash: string): Promise<boolean>;
}

/** A JWK Set as its server answered it (jwt_auth's `jwks_url`). */
export interface JwksAnswer {
  status: number;
  body: string;
  cacheControl: string | null;
}

/**
 * Fetches a JWK Set (proxy/jwks.ts caches it). Rejects when the server cannot be reached in
 * `timeoutMs` or sends more than `maxBytes`.
 */
export interface JwksFetcher {
  fetch(url: string, opts: { timeoutMs: number; maxBytes: number }): Promise<JwksAnswer>;
}

/** What a rate-limit store is asked for one request. */
export interface RateLimitQuery {
  /** Stable limiter id (route + hash of its limit); state is shared by equal ids. */
  limiter: string;
  policy: RateLimitPolicy;
  /** Milliseconds since the epoch (stores with their own clock, e.g. Redis, may ignore it). */
  now: number;
  /** Most client keys this limiter may hold (memory bound). */
  maxKeys: number;
}

/**
 * Per-client rate-limit state behind one call: decide and record atomically. In-memory and
 * Redis adapters implement it; it rejects when the backing store cannot answer.
 */
export interface RateLimitStore {
  consume(key: string, query: RateLimitQuery): Promise<RateLimitDecision>;
}

/** Limits and keep-alive for one proxied WebSocket (sizes in bytes, times in ms; 0 = off). */
export interface WebSocketLimits {
  /** Largest message relayed either way; bigger closes both sides with 1009. */
  maxMessageSize: number;
  /** Largest frame Prox writes; Deno relays whole messages, so this caps messages too. */
  maxFrameSize: number;
  /** Close both sides (1001) after this long without a message in either direction. */
  idleTimeout: number;
  /** Ping the client after this long without traffic; no pong within as long again closes. */
  pingInterval: number;
}

/** One WebSocket to proxy: where to, with what, under which limits. */
export interface WebSocketProxyRequest {
  /** ws:// or wss:// URL of the upstream endpoint. */
  url: URL;
  /** Handshake headers for the upstream (cookies, auth, forwarding); hop-by-hop already gone. */
  headers: Headers;
  /** Subprotocols the client offered, in its order (`Sec-WebSocket-Protocol`). */
  protocols: string[];
  /** Route id: metrics label and the key reloads use to keep or close connections. */
  route: string;
  connectTimeout: number;
  /** Ends the upstream handshake as its timeout would (`retries.per_try_timeout`). */
  signal?: AbortSignal;
  tls?: UpstreamTls;
  /** A PROXY protocol header to send first on the upstream connection (`proxy_protocol`). */
  proxyHeader?: Uint8Array;
  /** The handshake's Host when not the URL's (a `discover` route's service name). */
  host?: string;
  /**
   * A `unix:` target's origin: the connection goes to its socket (through the relay, Deno's
   * client having no Unix transport of its own), `url` giving the path and Host.
   */
  unix?: URL;
  limits: WebSocketLimits;
  /** For the log line written when the connection ends. */
  requestId?: string;
  /** Port of the listener the client came in on (a replaced listener closes its WebSockets). */
  localPort?: number;
  /** Called once when a connection that was upgraded ends (or its client never opened). */
  onEnd?: () => void;
  /**
   * The `upstream_pool` place taken for the connection (UpstreamClient.hold), or the wait for it,
   * which rejects when shed. The proxy waits for it as a connection being set up (a reload that
   * changes the route closes the connection once open), and gives it back once when the
   * upstream connection is over: closed after the session, refused, never made, or given up.
   */
  slot?: (() => void) | Promise<() => void>;
}

/**
 * Proxies WebSocket upgrades (RFC 6455): connects upstream first, then upgrades the client with
 * the subprotocol the upstream chose and relays messages both ways. Live connections are kept
 * in a registry so shutdown and reloads can close them.
 */
export interface WebSocketProxy {
  /**
   * Resolves with the 101 response to return to the client, or with an HTTP error response
   * when the upstream refused the upgrade. Rejects with a ProxyError (`connect`, `timeout`,
   * `sentNothing`) when the upstream cannot be reached, so the caller may try another target.
   */
  proxy(req: Request, target: WebSocketProxyRequest): Promise<Response>;
  /** Upgrades the client and closes it at once (e.g. 1014 when every upstream is unreachable). */
  reject(req: Request, code: number, reason: string): Response;
  /** Keeps live connections whose route `keep` accepts, closes the others; returns how many. */
  retain(keep: (route: string) => boolean, code: number, reason: string): number;
  /** Closes the live connections that came in on a listener port (one a reload replaces). */
  closeOnPort(port: number, close: { code: number; reason: string }): void;
  /** Closes every live connection (shutdown: 1001). */
  closeAll(code: number, reason: string): void;
  /** Number of live proxied connections. */
  size(): number;
}

/** A Logger that drops everything (unit tests). */
export const silentLogger: Logger = {
  log() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
  enabled: () => false,
};
