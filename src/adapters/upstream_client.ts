// The UpstreamClient Prox uses: a hand-written HTTP/1.1 client on Deno.connect/Deno.startTls with
// bounded keep-alive pools (upstream_pool.ts), and HTTP/2 through fetch for https origins that
// choose h2 by ALPN, but only for requests whose bytes fetch cannot alter (see upstream_h2.ts),
// or through Prox's own (upstream_h2c.ts) where fetch cannot apply the route's TLS options.
// Connection setup, the stale-connection retry and the per-origin protocol choice live here.

import { localConnectFailure, ProxyError } from "../domain/errors.ts";
import { UNREAD_BODY } from "../ports.ts";
import type { UnreadBody, UpstreamClient, UpstreamRequest, UpstreamTls } from "../ports.ts";
import { H1Connection } from "./upstream_h1_conn.ts";
import type { Transport } from "./upstream_h1_conn.ts";
import { exchange, STALE } from "./upstream_h1.ts";
import { createConnectionPool, DEFAULT_POOL_OPTIONS } from "./upstream_pool.ts";
import type { OriginStats, UpstreamPoolOptions } from "./upstream_pool.ts";
import { createH2Client, fetchSafe } from "./upstream_h2.ts";
import { createH2cClient } from "./upstream_h2c.ts";
import { carryTraceContext } from "./otel.ts";
import { createRequestSlots, releasedWithBody } from "./upstream_slots.ts";
import { timerDelay } from "../config/duration.ts";
import { originName, socketPath } from "../domain/upstream_origin.ts";

/** Options of the upstream client (pool limits from config `upstream_pool`). */
export interface UpstreamClientOptions extends Partial<UpstreamPoolOptions> {
  /** Largest upstream response head (status line + headers), default 64 KiB. */
  maxHeaderBytes?: number;
  /**
   * Content-Length bodies up to this size are read whole before responding (error answers, 400
   * and over, stream on routes whose error pages replace them: UpstreamRequest.streamErrors);
   * default 32 KiB.
   * Past about that size streaming costs less CPU: a whole body is zero-filled, read, then copied
   * again by the Response constructor (Fetch copies a bytes body). Per-thread CPU per request,
   * one core: 16 KiB whole 78 µs vs streamed 108; 48 KiB 105 vs 97; 64 KiB 132–155 vs 113–114.
   */
  bufferLimit?: number;
  /**
   * Larger Content-Length bodies stream, but one (or the rest of one) up to this size, default 64
   * KiB, is read whole into a single chunk first: one read into one buffer and one write by
   * Deno.serve instead of two or three of each, and no copy by the Response constructor. 64 KiB
   * proxied, per-thread CPU on one core: median 94 µs against 99 in chunks (eight alternating
   * runs, seven of them lower). At 128 and 256 KiB no gain showed, and the client would wait.
   */
  oneChunkLimit?: number;
  /** Offer h2 by ALPN to https upstreams (default true). */
  http2?: boolean;
  /**
   * With tracing on: the trace context of the current request's span (otel.ts). Requests over
   * Prox's own clients (HTTP/1.1, h2c/h2) carry it in place of the client's; over HTTP/2 through
   * fetch, fetch adds its own span's.
   */
  traceContext?: () => [string, string][];
}

/** The client plus pool counters for status pages and tests. */
export interface PooledUpstreamClient extends UpstreamClient {
  hold: NonNullable<UpstreamClient["hold"]>;
  /** The live HTTP/1.1 pools by pool key. */
  stats(): OriginStats[];
  /** Every pool by upstream origin, computed now (admin `/status`, metrics). */
  pools(): UpstreamPoolStats[];
}

/** One pool key's figures under its upstream origin (several keys can share one origin). */
export interface UpstreamPoolStats {
  /** `http://host:port` as URL.origin spells it. */
  origin: string;
  /** HTTP/1.1 connections carrying a request or being opened. */
  busy: number;
  idle: number;
  /** Requests waiting for a connection (HTTP/1.1) or a request slot (HTTP/2). */
  waiting: number;
  /** HTTP/1.1 connections opened since start. */
  opened: number;
  /** HTTP/1.1 requests sent on a kept-alive connection. */
  reused: number;
  /** HTTP/2 requests in flight, null when the origin did not choose h2. */
  h2Streams: number | null;
}

/** The upstream origin of a pool key made by keyOf (an http key is the bare host). */
export function originOfKey(key: string): string {
  if (key.startsWith("unix:")) return originName(new URL(key.split("|")[0]));
  if (!key.startsWith("https://")) return new URL(`http://${key.split("|")[0]}`).origin;
  return new URL(key.split("|")[0]).origin;
}

// CA lists and client certificates get small ids for pool keys: by identity (fast), else by
// content, since every reload builds new ones: keyed by identity alone, each reload started new
// pools beside the old ones.
const pemIds = new WeakMap<object, number>();
const pemIdsByText = new Map<string, number>();
let nextPemId = 1;

function pemIdOf(o: object, text: () => string): number {
  let id = pemIds.get(o);
  if (id === undefined) {
    const pem = text();
    id = pemIdsByText.get(pem);
    if (id === undefined) {
      if (pemIdsByText.size >= 1024) pemIdsByText.clear(); // bounded: files that kept changing
      pemIdsByText.set(pem, id = nextPemId++);
    }
    pemIds.set(o, id);
  }
  return id;
}

/** Pool key: origin plus whatever TLS setting changes who we trust or who we say we are. */
function keyOf(url: URL, tls: UpstreamTls | undefined): string {
  if (url.protocol === "http:") return url.host;
  if (url.protocol === "unix:") return url.href;
  let key = "https://" + url.host;
  if (tls) {
    const ca = tls.caCerts ? pemIdOf(tls.caCerts, () => tls.caCerts!.join("\n")) : 0;
    key += `|${tls.insecureSkipVerify ? 1 : 0}|${tls.serverName ?? ""}|${ca}`;
    const c = tls.client;
    if (c) key += `|c${pemIdOf(c, () => `${c.cert}\n${c.key}`)}`;
  }
  return key;
}

/**
 * True when an origin that chose h2 by ALPN must be spoken to by Prox's own HTTP/2 client (on the
 * connections connectUpstream opens, as HTTP/1.1's) rather than fetch's: fetch can neither skip
 * verification nor send or verify another name, and it adds `tls.ca_cert` to the system roots,
 * where with a client certificate the CA file is the whole trust (node:tls, as for HTTP/1.1).
 */
function ownH2(tls: UpstreamTls | undefined): boolean {
  return tls !== undefined && (tls.insecureSkipVerify === true || tls.serverName !== undefined ||
    (tls.client !== undefined && (tls.caCerts?.length ?? 0) > 0));
}

/**
 * Opens a TCP (and TLS) connection within `timeoutMs`; failures are `connect`/`timeout`, and
 * `client_gone` once `signal` (the request's: client gone, `timeouts.total`, per-try timeout, a
 * health probe cancelled) aborts, which stops the lookup, connect or handshake at once.
 */
export async function connectUpstream(
  url: URL,
  o: {
    tls?: UpstreamTls;
    timeoutMs: number;
    alpn?: string[];
    signal?: AbortSignal;
    /** Written first, before TLS (`proxy_protocol`). */
    proxyHeader?: Uint8Array;
  },
): Promise<{ transport: Transport; alpn: string | null }> {
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const https = url.protocol === "https:";
  const port = url.port ? Number(url.port) : https ? 443 : 80;
  const origin = originName(url);
  const gone = () =>
    new ProxyError("client_gone", "Client went away", { source: origin, sentNothing: true });
  if (o.signal?.aborted) throw gone();
  const ac = new AbortController();
  let timedOut = false;
  const timer = o.timeoutMs > 0
    ? setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, timerDelay(o.timeoutMs))
    : undefined;
  const cancel = () => ac.abort();
  o.signal?.addEventListener("abort", cancel, { once: true });
  let tcp: Deno.TcpConn | undefined;
  let tlsConn: Deno.TlsConn | undefined;
  try {
    if (https && (o.tls?.insecureSkipVerify || o.tls?.client)) {
      // node:tls costs ~10 MB of resident memory; only these two settings need it.
      const { connectNodeTls } = await import("./upstream_tls_node.ts");
      return await connectNodeTls({
        hostname,
        port,
        serverName: o.tls.serverName,
        alpn: o.alpn ?? ["http/1.1"],
        signal: ac.signal,
        verify: !o.tls.insecureSkipVerify,
        caCerts: o.tls.caCerts,
        client: o.tls.client,
        proxyHeader: o.proxyHeader,
      });
    }
    if (url.protocol === "unix:") {
      // HTTP over a Unix domain socket: no TCP, no TLS (nothing crosses a network).
      const unix = await raceConnect(
        Deno.connect({ transport: "unix", path: socketPath(url) }),
        ac.signal,
      );
      if (o.proxyHeader) {
        try {
          await writeAll(unix, o.proxyHeader);
        } catch (err) {
          unix.close(); // a socket closed at once (EPIPE) stayed open, one descriptor per try
          throw err;
        }
      }
      return { transport: unix, alpn: null };
    }
    tcp = await Deno.connect({ hostname, port, signal: ac.signal });
    tcp.setNoDelay(true);
    if (o.proxyHeader) await writeAll(tcp, o.proxyHeader);
    if (!https) return { transport: tcp, alpn: null };
    tlsConn = await Deno.startTls(tcp, {
      hostname: o.tls?.serverName ?? hostname,
      caCerts: o.tls?.caCerts,
      alpnProtocols: o.alpn ?? ["http/1.1"],
    });
    const conn = tlsConn;
    const hs = await raceAbort(conn.handshake(), ac.signal, () => conn.close());
    return { transport: conn, alpn: hs.alpnProtocol };
  } catch (err) {
    // startTls took the TCP connection over: a failed handshake leaves the TLS one to close (it
    // stayed open, one file descriptor per attempt: a health check every second on a target that
    // does not speak TLS ran Prox out of descriptors).
    try {
      (tlsConn ?? tcp)?.close();
    } catch { /* already closed (an abort closes it) */ }
    if (o.signal?.aborted && !timedOut) throw gone();
    if (timedOut) {
      throw new ProxyError(
        "timeout",
        `Cannot connect to upstream "${origin}": timed out after ${o.timeoutMs} ms`,
        {
          source: origin,
          sentNothing: true,
          cause: err,
        },
      );
    }
    const msg = err instanceof Error ? err.message : String(err);
    const e = new ProxyError("connect", `Cannot connect to upstream "${origin}": ${reason(msg)}`, {
      source: origin,
      sentNothing: true,
      cause: err,
    });
    e.local = localConnectFailure(msg);
    throw e;
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener("abort", cancel);
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let n = 0; n < bytes.byteLength;) n += await conn.write(bytes.subarray(n));
}

/**
 * A connect that takes no signal (Unix sockets): rejects when `signal` aborts, and closes the
 * connection if it comes after all.
 */
function raceConnect<C extends Deno.Conn>(p: Promise<C>, signal: AbortSignal): Promise<C> {
  if (signal.aborted) {
    p.then((c) => c.close(), () => {});
    return Promise.reject(new Error("aborted"));
  }
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      p.then((c) => c.close(), () => {});
      reject(new Error("aborted"));
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([p, aborted]).finally(() => signal.removeEventListener("abort", onAbort));
}

/** `p`, or a `client_gone` rejection as soon as `signal` aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal, source: string): Promise<T> {
  const gone = () =>
    new ProxyError("client_gone", "Client went away", { source, sentNothing: true });
  if (signal.aborted) return Promise.reject(gone());
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(gone());
    signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([p, aborted]).finally(() => signal.removeEventListener("abort", onAbort));
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal, onAbort: () => void): Promise<T> {
  if (signal.aborted) onAbort();
  signal.addEventListener("abort", onAbort, { once: true });
  return p.finally(() => signal.removeEventListener("abort", onAbort));
}

function reason(msg: string): string {
  if (/refused/i.test(msg)) return "connection refused";
  if (/reset/i.test(msg)) return "connection reset";
  const tls = tlsFailure(msg);
  if (tls) return tls;
  // Deno.connect says "failed to lookup address information"; node:tls (insecure_skip_verify)
  // "getaddrinfo ENOTFOUND host" or EAI_AGAIN.
  if (/lookup|resolve|dns|name or service|getaddrinfo/i.test(msg)) {
    return `cannot resolve host (${msg})`;
  }
  return msg;
}

/**
 * A TLS handshake failure said plainly (also for WebSocket upstreams), or null for another one.
 */
export function tlsFailure(msg: string): string | null {
  // An answer that is no TLS record (rustls: InvalidContentType; OpenSSL: wrong version number):
  // most often an https:// target whose port serves plain HTTP.
  if (/InvalidContentType|wrong version number/i.test(msg)) {
    return `no TLS there, the port may serve plain HTTP (an http:// target?) (${msg})`;
  }
  if (/certificate|invalid peer|UnknownIssuer|NotValidForName/i.test(msg)) {
    return `TLS certificate rejected (${msg})`;
  }
  return null;
}

/**
 * Creates the upstream client: HTTP/1.1 with pooling for http and https upstreams; h2 for https
 * upstreams that select it by ALPN (unless `http2: false`), through fetch or Prox's own client.
 */
export function createUpstreamClient(opts: UpstreamClientOptions = {}): PooledUpstreamClient {
  const poolOpts: UpstreamPoolOptions = { ...DEFAULT_POOL_OPTIONS };
  for (const k of Object.keys(DEFAULT_POOL_OPTIONS) as (keyof UpstreamPoolOptions)[]) {
    if (opts[k] !== undefined) poolOpts[k] = opts[k]!;
  }
  const pool = createConnectionPool(poolOpts);
  const limits = {
    maxHeaderBytes: opts.maxHeaderBytes ?? 64 * 1024,
    bufferLimit: opts.bufferLimit ?? 32 * 1024,
    oneChunkLimit: opts.oneChunkLimit ?? 64 * 1024,
  };
  const h2 = createH2Client();
  // fetch queues h2 requests without bound: the pool's limits are applied per request instead.
  const h2Slots = createRequestSlots(poolOpts);
  /** https origins: "h2" once ALPN chose it; "h1" otherwise; a probe promise while unknown. */
  const protocols = new Map<string, "h1" | "h2" | Promise<"h1" | "h2">>();
  const offerH2 = opts.http2 ?? true;
  // h2c upstreams: Prox's own HTTP/2 client, with the pool's admission per request as for h2.
  const h2c = createH2cClient({
    maxHeaderBytes: limits.maxHeaderBytes,
    idleTimeout: poolOpts.idleTimeout,
    // Shared by the requests that wait for it: no one request's signal stops it.
    connect: async (req) => {
      const tls = req.origin.protocol === "https:";
      const { transport, alpn } = await connectUpstream(req.origin, {
        tls: req.tls,
        timeoutMs: req.timeouts.connect,
        alpn: tls ? ["h2"] : undefined,
      });
      if (tls && alpn !== "h2") {
        transport.close();
        throw new ProxyError(
          "protocol",
          `Upstream "${originName(req.origin)}" did not choose h2 by ALPN (upstream_protocol: h2)`,
          { source: originName(req.origin), sentNothing: true, retryable: false },
        );
      }
      return transport;
    },
  });
  const h2cSlots = createRequestSlots(poolOpts);
  /** Pool keys h2c requests went to (for `pools`), bounded as `protocols` is. */
  const h2cKeys = new Set<string>();
  const sendH2c = async (key: string, req: UpstreamRequest): Promise<Response> => {
    if (h2cKeys.size > 1024) h2cKeys.clear();
    h2cKeys.add(key);
    // The client's signal is looked up only when the request must wait for a slot.
    const signal = req.signal ?? req.clientSignal;
    for (let attempt = 0;; attempt++) {
      const got = h2cSlots.acquire(key, signal);
      const release = got instanceof Promise ? await waited(got, req) : got;
      try {
        return await h2c.send(req, key, release);
      } catch (err) {
        // A stream the upstream did not process (refused, or past its GOAWAY) goes again once
        // on another stream, when its body can be sent again (as a stale HTTP/1.1 connection's):
        // bytes, or a stream the client gave back unread (else forward's retry may have it).
        const again = err instanceof ProxyError && err.sentNothing && err.kind === "upstream_reset";
        if (!again || attempt > 0) throw err;
        if (req.body instanceof ReadableStream) {
          const rest = (err as UnreadBody)[UNREAD_BODY];
          if (rest === undefined) throw err;
          req = { ...req, body: rest };
        }
      }
    }
  };

  const connectH1 = (req: UpstreamRequest) => async () => {
    const { transport } = await connectUpstream(req.origin, {
      tls: req.tls,
      timeoutMs: req.timeouts.connect,
      signal: req.signal,
      proxyHeader: req.proxyHeader,
    });
    return new H1Connection(transport, originName(req.origin));
  };

  const protocolOf = (key: string, req: UpstreamRequest): "h1" | "h2" | Promise<"h1" | "h2"> => {
    const known = protocols.get(key);
    if (known !== undefined) return known;
    const probe = connectUpstream(req.origin, {
      tls: req.tls,
      timeoutMs: req.timeouts.connect,
      alpn: ["h2", "http/1.1"],
    }).then(({ transport, alpn }) => {
      transport.close();
      const p = alpn === "h2" ? "h2" : "h1";
      if (protocols.size > 1024) protocols.clear();
      protocols.set(key, p);
      return p;
    }, (err) => {
      protocols.delete(key);
      throw err;
    });
    protocols.set(key, probe);
    return probe;
  };

  const trace = opts.traceContext;
  /** Prox's span as the parent in place of the client's (Prox's own HTTP/1.1 and h2c clients). */
  const traced = (req: UpstreamRequest) => carryTraceContext(req.headers, trace);
  const sendH1 = async (key: string, req: UpstreamRequest): Promise<Response> => {
    traced(req);
    const connect = connectH1(req);
    const signal = req.signal ? () => req.signal : req.clientSignal;
    // A connection that began with a PROXY header speaks for one client: never reused.
    const own = req.proxyHeader !== undefined;
    for (let attempt = 0;; attempt++) {
      const got = pool.acquire(key, connect, {
        fresh: own || attempt > 0,
        signal,
        granted: req.onConnection,
      });
      const conn = got instanceof Promise ? await got : got;
      try {
        return await exchange(
          conn,
          req,
          limits,
          (reusable) => pool.release(key, conn, reusable && !own),
        );
      } catch (err) {
        // A reused connection the upstream had closed before reading anything: once more on a
        // new connection, when there is no request body that would need replaying.
        const stale = (err as { [STALE]?: boolean })[STALE] === true;
        if (!stale || attempt > 0 || req.body !== null) throw err;
      }
    }
  };

  /** An https origin that may speak HTTP/2: asks (or remembers) what ALPN chose. */
  const sendEither = async (
    key: string,
    req: UpstreamRequest,
    again = false,
  ): Promise<Response> => {
    let p = protocolOf(key, req);
    // The probe is shared: a request whose signal aborts (timeouts.total, per-try timeout) stops
    // waiting for it, while it goes on for the others.
    if (typeof p !== "string") p = await (req.signal ? untilAborted(p, req.signal, key) : p);
    if (p === "h2" && ownH2(req.tls)) {
      traced(req);
      try {
        return await sendH2c(`h2://${key}`, req);
      } catch (err) {
        // As below: the origin may no longer choose h2 (then the client says "protocol"), or
        // be gone. ALPN is asked again, for this request too when nothing was sent.
        const e = err instanceof ProxyError ? err : null;
        if (e?.sentNothing && (e.kind === "connect" || e.kind === "protocol")) {
          if (protocols.get(key) === "h2") protocols.delete(key);
          const replayable = req.body === null || req.body instanceof Uint8Array;
          if (!again && replayable) return sendEither(key, req, true);
        }
        throw err;
      }
    }
    // fetch refuses a GET or HEAD with a body (a request_body rule can give one): HTTP/1.1 then.
    const bodiless = req.body === null || (req.method !== "GET" && req.method !== "HEAD");
    if (p === "h2" && bodiless && fetchSafe(req.headers, req.origin.host)) {
      // fetch takes its signal up front.
      if (!req.signal && req.clientSignal) req = { ...req, signal: req.clientSignal() };
      // fetch adds the traceparent of its own span; the client's would make a second one. The
      // client's tracestate stays when Prox's span continues its trace (otel.ts).
      if (trace) {
        traced(req);
        req.headers.delete("traceparent");
      }
      const got = h2Slots.acquire(key, req.signal);
      const release = got instanceof Promise ? await waited(got, req) : got;
      try {
        return releasedWithBody(await h2.send(req), release);
      } catch (err) {
        release();
        // No answer over h2: the origin may no longer speak it (a redeploy, an L4 balancer in
        // front of mixed backends), and fetch's client, which offers h2 alone, would fail there
        // for good. ALPN is asked again, for this request too when no connection opened.
        const kind = err instanceof ProxyError ? err.kind : null;
        if (kind === "connect" || kind === "upstream_reset" || kind === "protocol") {
          if (protocols.get(key) === "h2") protocols.delete(key);
          const replayable = req.body === null || req.body instanceof Uint8Array;
          if (kind === "connect" && !again && replayable) return sendEither(key, req, true);
        }
        throw err;
      }
    }
    return sendH1(key, req);
  };

  return {
    // Not async: an HTTP/1.1 request goes straight to sendH1's promise, one frame and one
    // promise fewer per request.
    send(req: UpstreamRequest): Promise<Response> {
      // The head's framing must match the bytes sent, or the upstream would read the next
      // request on the connection as part of this one.
      const declared = req.headers.get("content-length");
      if (
        declared !== null &&
        (req.body instanceof Uint8Array
          ? Number(declared) !== req.body.byteLength
          : req.body === null && Number(declared) !== 0)
      ) {
        const msg = "Request body length differs from its Content-Length";
        return Promise.reject(new ProxyError("bad_request", msg, { sentNothing: true }));
      }
      if (req.protocol === "h2c" || req.protocol === "h2") {
        traced(req);
        return sendH2c(`${req.protocol}://${keyOf(req.origin, req.tls)}`, req);
      }
      // Its own pool: the origin's limits apply apart from the connections without the header.
      const key = req.proxyHeader
        ? keyOf(req.origin, req.tls) + "|proxy"
        : keyOf(req.origin, req.tls);
      // A PROXY header speaks for one client, an HTTP/2 connection for many: HTTP/1.1.
      if (
        offerH2 && req.protocol !== "http1" && req.origin.protocol === "https:" &&
        !req.proxyHeader
      ) {
        return sendEither(key, req);
      }
      return sendH1(key, req);
    },
    hold(req, signal) {
      // A WebSocket's ws:/wss: URL: its connection is one to the http(s) origin.
      let url = req.origin;
      if (url.protocol === "ws:" || url.protocol === "wss:") {
        url = new URL(url.href);
        url.protocol = url.protocol === "ws:" ? "http:" : "https:";
      }
      // Keyed as an HTTP/1.1 request of the same target would be (the upgrade is one).
      const key = keyOf(url, req.tls) + (req.proxyHeader ? "|proxy" : "");
      return pool.hold(key, { signal: signal && (() => signal) });
    },
    stats: () => pool.stats(),
    pools() {
      const rows = new Map<string, UpstreamPoolStats>();
      for (const s of pool.stats(true)) {
        rows.set(s.origin, {
          origin: originOfKey(s.origin),
          busy: s.open - s.idle,
          idle: s.idle,
          waiting: s.queued,
          opened: s.opened,
          reused: s.reused,
          h2Streams: null,
        });
      }
      // fetch keeps its h2 connections to itself: what Prox sees is its requests.
      for (const [key, p] of protocols) {
        // Those Prox's own client carried have their row below.
        if (p !== "h2" || h2cKeys.has(`h2://${key}`)) continue;
        const slots = h2Slots.stats(key);
        const row = rows.get(key);
        if (row) {
          row.h2Streams = slots.active;
          row.waiting += slots.queued;
          continue;
        }
        rows.set(key, {
          origin: originOfKey(key),
          busy: 0,
          idle: 0,
          waiting: slots.queued,
          opened: 0,
          reused: 0,
          h2Streams: slots.active,
        });
      }
      for (const key of h2cKeys) {
        const slots = h2cSlots.stats(key);
        // Prox's own HTTP/2 connections: busy while they carry a stream.
        const conns = h2c.stats(key);
        rows.set(key, {
          origin: originOfKey(key.slice(key.indexOf("://") + 3)),
          busy: conns.sessions - conns.idle,
          idle: conns.idle,
          waiting: slots.queued,
          opened: 0,
          reused: 0,
          h2Streams: slots.active,
        });
      }
      return [...rows.values()];
    },
    async close(): Promise<void> {
      pool.close();
      await Promise.all([h2.close(), h2c.close()]);
    },
  };
}

/** A slot a request waited for: tells the request it has one (UpstreamRequest.onConnection). */
async function waited<T>(slot: Promise<T>, req: UpstreamRequest): Promise<T> {
  const got = await slot;
  req.onConnection?.();
  return got;
}
