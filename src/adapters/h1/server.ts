// Prox's own HTTP/1.1 engine (`protocols.http1_engine: prox`, the default): a listener on
// Deno.listen, or with TLS on Deno.listenTls, where ALPN hands HTTP/2 connections (and h2c with
// prior knowledge on a plain one) to Prox's own HTTP/2 engine (h2/connection.ts). It parses the
// plainest HTTP/1.1 requests itself (request_head.ts: HTTP/1.1 or HTTP/1.0 with Host; no body, or
// one framed by a Content-Length, streamed from the socket unless it came whole with its head and
// is at most 64 KiB, or a chunked one, decoded as it comes by chunked.ts), hands them to the
// pipeline as lean stand-ins for Fetch's Request (wire_request.ts), and writes the answer to the
// socket itself. Deno.serve builds a Request and its Headers for every request and reads every
// answer through Fetch's body machinery; on the benchmark's small GETs that was a fifth of Prox's
// CPU per request.
//
// Every other connection is relayed, byte for byte, to a Deno.serve listener on 127.0.0.1 that
// runs the same handler: from the first request the engine does not take (another transfer
// coding, another Expect, an upgrade, h2c by Upgrade, HTTP/1.0 without Host, anything odd) to the
// connection's end. Deno.serve then answers it exactly as with `http1_engine: deno`. The relayed
// connection's source port names the client it carries, so the pipeline still sees the client's
// address and the protocol the connection began in.

import { crowd } from "../gc_hint.ts";
import { BufferPool } from "../buffer_pool.ts";
import { formatListenAddr } from "../../config/listen.ts";
import type { ListenAddr } from "../../config/listen.ts";
import { ProxyError } from "../../domain/errors.ts";
import { BODY_BYTES, HEADROOM, LEND_CHUNKS, RAW_BODY, RELEASE } from "../../ports.ts";
import type {
  ChunkLending,
  ClientCert,
  CountedResponse,
  Handler,
  Logger,
  Metrics,
  Protocol,
  RawBodied,
  Releasable,
  Roomy,
} from "../../ports.ts";
import { latin1 } from "../upstream_h1_wire.ts";
import { listen, unmapped } from "../http_serve.ts";
import type { Listener } from "../http_serve.ts";
import { socketReader, socketWriter } from "../socket_read.ts";
import type { SocketRead, SocketWrite } from "../socket_read.ts";
import {
  BODY_LIMIT,
  headEnd,
  HeadScan,
  NO_HOST,
  parseRequestHeadAt,
  TOO_MANY_FIELDS,
} from "./request_head.ts";
import { ChunkedDecoder, ChunkedError } from "./chunked.ts";
import type { RequestHead } from "./request_head.ts";
import { WireRequest } from "./wire_request.ts";
import { readGate } from "./read_gate.ts";
import type { Reader } from "./read_gate.ts";
import { HeaderList } from "../../domain/header_list.ts";
import { ipGroupKey } from "../../domain/ip.ts";
import { trailerPasses } from "../../domain/headers.ts";
import { bodyFailed, deadlineTrailers, EngineInfo, httpDate, unhandled } from "../engine_shared.ts";
import type { HintsWriter } from "../engine_shared.ts";
import { setImmediate } from "node:timers";
import { H2Connection } from "../h2/connection.ts";
import { PREFACE } from "../h2/frames.ts";
import { helloScan, MAX_HELLO_BYTES, peekClientHello } from "../../domain/tls_client_hello.ts";
import { certificateCovers, chooseCertificate } from "../../config/cert_names.ts";
import type { CertificateNames } from "../../config/cert_names.ts";
import { certificateNames } from "../pem_chain.ts";
import { CLOSED_EMPTY, readProxied, sendsProxyHeader } from "./proxy_accept.ts";
import { listenClientAuth } from "./tls_client_auth.ts";
import type { ClientAuth, ClientAuthConn, ClientAuthListener } from "./tls_client_auth.ts";
import type { AcceptProxyProtocol, Proxied } from "./proxy_accept.ts";
import type { H2Env } from "../h2/connection.ts";
import { ACCEPT_BACKOFF_INITIAL, acceptFailed } from "../../domain/accept_backoff.ts";

/**
 * The read buffer a connection waits for its next request with, unless its requests needed more
 * (Conn.need): an idle keep-alive connection holds it the whole time. Small, like nginx's
 * client_header_buffer_size (1 KiB): about 9 KiB of RSS per idle connection, where 8 KiB gave 13.
 */
const READ_SIZE = 2 * 1024;
/**
 * A new connection's first read buffer, and the most a connection keeps between requests: a
 * request whose head and small body came in one read (a JSON POST of a few KiB) is read in one
 * read, and its body handed on as bytes rather than as a stream read back (a 2 KiB first read took
 * a 4 KiB POST from 78 to 96 µs).
 */
const KEEP_SIZE = 8 * 1024;
/** A head not complete within this many bytes is relayed (Deno.serve's limits then apply). */
const HEAD_LIMIT = 64 * 1024;
/**
 * A connection idle this long between requests, or this slow to send a head, is closed, unless the
 * listener is given its own limit (`protocols.http1_idle_timeout`).
 */
export const IDLE_MS = 620_000;

/**
 * Conn.waitingSince of a connection waiting for its next request since the idle sweep last ran:
 * the sweep stamps it with its own time, so no clock is read per request. The idle limit then
 * closes it at the first sweep past the limit from that stamp: up to two sweeps late, never early.
 */
const WAITING_UNSTAMPED = 1;
/** Conn.quietSince of a connection that is not relayed. */
const NOT_RELAYED = -0.5;
/** Conn.headSince with no head begun (a double, as the stamps that replace it). */
const NO_HEAD = -0.5;
/** The start of a 101 answer: the relayed connection is a tunnel from there on. */
const SWITCHED = /^HTTP\/1\.[01] 101 /;
/** How long a connection that waited for a turn while a drain began may take to show a request. */
const LAST_LOOK_MS = 50;
/**
 * How long after a drain began a head already begun may take to come whole; the connection is
 * closed then (Deno.serve's drain closes one at once), or a client that stalled mid-head would
 * hold the drain for its whole `shutdown_timeout`.
 */
export const HEAD_GRACE_MS = 1000;
/**
 * Relay buffer per direction: a read waiting for a paused stream (an idle keep-alive connection,
 * a WebSocket between messages) holds the small one; a read that fills it moves the next ones to
 * a large one, kept while reads fill it. A read that does not (the sender paused, or the stream
 * ended a burst) hands the large one back to a shared spare list, so a connection that goes quiet
 * holds only the small one whatever it last carried.
 */
const RELAY_MIN = 2 * 1024;
const RELAY_MAX = 32 * 1024;
/** Large relay buffers kept for the next burst of any relay (at most 16 × 32 KiB). */
const relaySpares: Uint8Array[] = [];
const RELAY_SPARES = 16;
let relayBytes = 0;
/** Bytes of relay buffers that relays hold now, spares not included (for tests). */
export function relayBufferBytes(): number {
  return relayBytes;
}
const NO_BYTES = new Uint8Array(0);
/** The most a streamed request body's read takes from the socket at once. */
const BODY_CHUNK = 64 * 1024;
/**
 * The most of a request body that nothing reads yet (its request waits in upstream_pool's queue)
 * the engine reads ahead into the connection's buffer to see its client leave (Conn.watch).
 */
const READ_AHEAD = 64 * 1024;
/** Buffers for reads of request bodies whose reader gives them back (ports.ts LEND_CHUNKS). */
const BODY_CHUNKS = new BufferPool(BODY_CHUNK, 32);
/** Gives a chunk's buffer back to BODY_CHUNKS if it is one of those `lent` (once). */
const lendFrom = (lent: Set<ArrayBuffer>) => (chunk: Uint8Array): boolean => {
  const buffer = chunk.buffer as ArrayBuffer;
  if (!lent.delete(buffer)) return false;
  BODY_CHUNKS.give(buffer);
  return true;
};
/**
 * A body the answer came before (a refusal, a 413, an upstream that answered early) is read and
 * dropped after it, so the next request starts where it should: up to SKIP_BYTES (a chunked body,
 * whose length nothing tells, on a connection kept: all of it) within SKIP_MS, else the connection
 * closes (its answer says so when more than SKIP_BYTES was known to be left as it went out). A
 * connection that closes with body left lingers as long, so that the client reads its answer
 * rather than a reset.
 */
const SKIP_BYTES = 1024 * 1024;
const SKIP_MS = 2000;

const ascii = new TextEncoder();

/** The ALPN names of HTTP/1.x the TLS listener offers (RFC 7301 §6), preferred first. */
const HTTP1_ALPN = ["http/1.1", "http/1.0"];

/** How long a TLS client may take over its handshake before its connection is closed. */
const HANDSHAKE_MS = 10_000;

/** A `tls.sni` certificate: served to clients that ask for a name its subjectAltName holds. */
export interface SniCertificate {
  cert: string;
  key: string;
  names: CertificateNames;
}

/**
 * `tls.acme.on_demand`: a certificate for a name no certificate of the listener holds, obtained
 * while the handshake waits (acme_on_demand.ts); null when refused or failed.
 */
export interface OnDemandHook {
  certificate(
    name: string,
  ): { cert: string; key: string } | Promise<{ cert: string; key: string } | null> | null;
  /** How many on-demand certificates the listener keeps loopback listeners for at once. */
  max(): number;
}

/** A relayed client on its way to a loopback TLS listener, by the relay's source port. */
type RelayedPeers = Map<
  number,
  { client: { hostname: string; port: number }; handshaken: () => void }
>;

/** A loopback TLS listener (one certificate) and the clients relayed to it. */
interface TlsInner {
  l: Deno.TlsListener | ClientAuthListener;
  peers: RelayedPeers;
}

/** An on-demand certificate's loopback listener: closed once dropped and its relays are done. */
interface DemandInner extends TlsInner {
  cert: string;
  /** Relays to it still before their handshake. */
  relays: number;
  retired: boolean;
}

/** `limits.max_connections` and `max_connections_per_ip`: what one listener keeps open at once. */
export interface ConnectionLimits {
  total?: number;
  perIp?: number;
  /** `limits.ipv6_prefix`: an IPv6 client is counted by its first this many bits (64 unset). */
  ipv6Prefix?: number;
  /**
   * The connections counted, shared by the listeners a reload replaces one with (the old one's
   * still count until they close); a listener of its own without it.
   */
  counts?: ConnectionCounts;
}

/** Connections open (each until its serving ends), and by client address (one entry per address with any). */
export interface ConnectionCounts {
  open: number;
  perIp: Map<string, number>;
}

/**
 * Starts the engine on `addr`; throws as Deno.listen does when the address cannot be bound. With
 * `cert` and `key` it listens with TLS and serves HTTP/2 (chosen by ALPN) with Prox's own HTTP/2
 * engine (h2/connection.ts) beside HTTP/1.1.
 */
export function listenH1(
  addr: ListenAddr,
  opts: {
    handler: Handler;
    logger: Logger;
    reusePort?: boolean;
    metrics?: Metrics;
    /** The idle limit in ms (0: none); IDLE_MS when not given. */
    idleMs?: number;
    /** How long a begun head may take to come whole, in ms (0 or not given: the idle limit). */
    headerMs?: number;
    cert?: string;
    key?: string;
    /** Offer HTTP/2 by ALPN on TLS (`protocols.http2_enabled`); true when not given. */
    http2?: boolean;
    /** SETTINGS_MAX_CONCURRENT_STREAMS for HTTP/2 (`protocols.http2_max_concurrent_streams`). */
    maxStreams?: number;
    /** SETTINGS_MAX_FRAME_SIZE for HTTP/2 (`protocols.http2_max_frame_size`). */
    maxFrame?: number;
    /** WebSockets over HTTP/2 by extended CONNECT (`protocols.websocket_enabled`). */
    websocket?: boolean;
    /** `accept_proxy_protocol`: peers whose connections begin with a PROXY header. */
    proxyProtocol?: AcceptProxyProtocol;
    /** Connections past these are closed as they are accepted. */
    connectionLimits?: ConnectionLimits;
    /** More certificates, chosen by the ClientHello's server name (with `cert` and `key`). */
    sni?: SniCertificate[];
    /** `tls.client_auth`: clients present certificates (with `cert` and `key`). */
    clientAuth?: ClientAuth;
    /** `tls.acme.on_demand`: certificates for names no other one holds (with `cert` and `key`). */
    onDemand?: OnDemandHook;
  },
): Listener {
  const tls = opts.cert !== undefined || opts.key !== undefined;
  const pp = opts.proxyProtocol;
  const sni = tls && opts.sni && opts.sni.length > 0 ? opts.sni : null;
  const sniNames = (sni ?? []).map((c) => c.names);
  const onDemand = tls ? opts.onDemand : undefined;
  // The main certificate's own names: an exact one there beats a tls.sni wildcard.
  const mainNames = sni || onDemand ? certificateNames(opts.cert!) : undefined;
  // With PROXY headers and TLS, the header comes before the TLS handshake, which Deno.listenTls
  // would take for its own: the port is plain TCP, and each connection is relayed, after its
  // header, to a TLS listener on 127.0.0.1 (Deno has no server-side TLS on an open connection).
  // With several certificates likewise (Deno.listenTls takes one): the ClientHello's server name
  // picks the loopback listener, one per certificate.
  // With client certificates too: Deno's TLS server cannot ask for them, node:tls's can.
  const clientAuth = tls ? opts.clientAuth : undefined;
  // With on-demand certificates likewise: the ClientHello's name may need one obtained first.
  const tlsOnLoopback = tls &&
    (pp !== undefined || sni !== null || clientAuth !== undefined || onDemand !== undefined);
  // In the server's order of preference (rustls and node:tls pick the first the client offers).
  // http/1.0 as nginx offers it: a client offering only that (curl --http1.0) was refused the
  // handshake (no_application_protocol), though the engine serves HTTP/1.0.
  const tlsOptions = (pair: { cert?: string; key?: string } = opts) => ({
    cert: pair.cert!,
    key: pair.key!,
    alpnProtocols: opts.http2 === false ? HTTP1_ALPN : ["h2", ...HTTP1_ALPN],
  });
  const server: Deno.Listener = tls && !tlsOnLoopback
    ? Deno.listenTls({
      hostname: addr.hostname,
      port: addr.port,
      ...tlsOptions(),
      ...(opts.reusePort ? { reusePort: true } : {}),
    })
    : Deno.listen({
      hostname: addr.hostname,
      port: addr.port,
      reusePort: opts.reusePort,
    });
  const local = server.addr as Deno.NetAddr;
  /** The loopback TLS listeners: the main certificate's, then one per `sni` certificate. */
  const tlsInners: (Deno.TlsListener | ClientAuthListener)[] = [];
  let ocspWarnedAt = -Infinity;
  /** A loopback TLS listener serving one certificate. */
  const listenInner = (pair: { cert?: string; key?: string }) =>
    clientAuth
      ? listenClientAuth({ cert: pair.cert!, key: pair.key! }, {
        auth: clientAuth,
        alpnProtocols: tlsOptions(pair).alpnProtocols,
        onRefused: (reason, kind) => {
          opts.metrics?.tlsClientRefused(kind);
          opts.logger.debug("TLS client certificate refused", { reason, kind });
        },
        onOcspError: (reason) => {
          // Once a minute at most: a responder that is down would say so per handshake.
          const t = performance.now();
          if (t - ocspWarnedAt < 60_000) return;
          ocspWarnedAt = t;
          opts.logger.warn("OCSP status not learned; client let in (ocsp.on_error: allow)", {
            reason,
          });
        },
      })
      : Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...tlsOptions(pair) });
  try {
    if (tlsOnLoopback) {
      for (const pair of [opts, ...(sni ?? [])]) tlsInners.push(listenInner(pair));
    }
  } catch (err) {
    for (const l of tlsInners) closeQuietly(l);
    clientAuth?.ocsp?.close();
    closeQuietly(server);
    throw err;
  }
  // The clients of the connections relayed to each, by the relay's source port (one entry per
  // relayed connection open: bounded by the connections). One map per listener: Linux gives
  // connect() the same local port for different destinations, so relays to two of them may
  // share one.
  // Each entry also stops the relay's handshake timer once the TLS listener has done the handshake.
  const inners: TlsInner[] = tlsInners.map((l) => ({ l, peers: new Map() }));
  /**
   * The on-demand certificates' loopback listeners by name, least recently used first (at most
   * `onDemand.max()`), and those dropped whose relays are not done yet.
   */
  const demand = new Map<string, DemandInner>();
  const retiring = new Set<DemandInner>();
  /** The client connections relayed to it (closed with the listener). */
  const tlsRelayed = new Set<Deno.Conn>();
  /** Settled as each relay to a loopback TLS listener ends (one per relayed connection open). */
  const relayEnds = new Set<Promise<void>>();
  // The relay's Deno.serve; its connections' source ports name the clients they carry (one
  // entry per relayed connection open: bounded by the connections).
  const peers = new Map<
    number,
    {
      hostname: string;
      port: number;
      protocol: Protocol;
      http10: boolean;
      tls: boolean;
      clientCert?: ClientCert;
    }
  >();
  const inner = listen({ hostname: "127.0.0.1", port: 0 }, {
    handler: opts.handler,
    logger: opts.logger,
    metrics: opts.metrics,
    localPort: local.port,
    // Only from the relay's own address: all of 127.0.0.0/8 reaches the inner listener, and a
    // local process that bound 127.0.0.2 and a relay's port would pass for the client relayed.
    peerOf: (remote) => remote.hostname === "127.0.0.1" ? peers.get(remote.port) : undefined,
    // Its port is free while it is down (descriptors ran out): another local process could take
    // it, and the relay must not connect to that. So it comes back on a new port, and no relay
    // connects while it is down.
    anyPort: true,
  });
  const conns = new Set<Conn>();
  /** Its HTTP/2 connections (TLS with ALPN h2, or h2c with prior knowledge). */
  const h2s = new Set<H2Connection>();
  const counts = {
    served: 0,
    relayed: 0,
    http2Served: 0,
    get http2Connections() {
      return h2s.size;
    },
    get http2Streams() {
      let n = 0;
      for (const c of h2s) n += c.streams;
      return n;
    },
    get http2BufferBytes() {
      let n = 0;
      for (const c of h2s) n += c.bufferBytes;
      return n;
    },
    get turnsHeld() {
      return readGate.held;
    },
    get turnsWaiting() {
      return readGate.waiting;
    },
    get connections() {
      return conns.size;
    },
    get readBufferBytes() {
      let n = 0;
      for (const c of conns) n += c.buf.length;
      return n;
    },
  };
  let draining = false;
  /** When the drain's grace for heads already begun ends (HEAD_GRACE_MS). */
  let graceEnd = 0;
  let graceTimer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  const idleMs = opts.idleMs === 0 ? Infinity : opts.idleMs ?? IDLE_MS;
  const headerMs = opts.headerMs ? opts.headerMs : Infinity;
  const sweeper = setInterval(() => {
    // The monotonic clock: a wall clock stepped back (NTP, a restored VM) kept connections stamped
    // before the step open for as long as the step; stepped forward, it closed every idle one.
    const now = performance.now();
    for (const c of conns) {
      if (c.waitingSince === WAITING_UNSTAMPED) c.waitingSince = now;
      else if (c.waitingSince > 0 && now - c.waitingSince > idleMs) c.close();
      // A head begun (bytes of it here) and not yet whole: stamped here as waitingSince is, so no
      // clock is read per request; one that waits for the engine's turn is not the client's fault.
      if (c.waitingSince <= 0 || c.start === c.end || c.queued) c.headSince = NO_HEAD;
      else if (c.headSince === NO_HEAD) c.headSince = now;
      else if (now - c.headSince > headerMs) c.close();
      if (c.quietSince === WAITING_UNSTAMPED) c.quietSince = now;
      else if (c.quietSince > 0 && now - c.quietSince > idleMs) c.close();
    }
    for (const c of h2s) c.sweep(now, idleMs);
  }, 1000);
  Deno.unrefTimer(sweeper);

  /** Relay failures: when the next may be logged, and how many were not. */
  const relayFailures = { until: 0, suppressed: 0 };
  const h2env: H2Env = {
    handler: opts.handler,
    logger: opts.logger,
    metrics: opts.metrics,
    localPort: local.port,
    tls,
    draining: () => draining,
    served: () => counts.http2Served++,
    maxStreams: opts.maxStreams,
    maxFrame: opts.maxFrame,
    websocket: opts.websocket,
    // Each WebSocket on an HTTP/2 connection counts against max_connections and
    // max_connections_per_ip as the connection it would be over HTTP/1.1 (one connection may
    // carry http2_max_concurrent_streams of them, each holding an upstream connection). Counted
    // without a limit too: a reload may add one, and they count against it then.
    wsSlot: opts.connectionLimits === undefined ? undefined : (ip) => {
      const { total, perIp: max } = opts.connectionLimits!;
      if (total !== undefined && held.open >= total) {
        opts.metrics?.connectionRefused("max_connections");
        return "max_connections";
      }
      if (max !== undefined && (perIp.get(group(ip)) ?? 0) >= max) {
        opts.metrics?.connectionRefused("max_connections_per_ip");
        return "max_connections_per_ip";
      }
      held.open++;
      countIp(ip, 1);
      let given = false;
      return () => {
        if (given) return;
        given = true;
        held.open--;
        countIp(ip, -1);
      };
    },
  };
  /** Serves an HTTP/2 connection to its end; `first`: what was read of it already. */
  const serveH2 = async (
    conn: Deno.Conn,
    peer: { hostname: string; port: number },
    first?: Uint8Array,
  ) => {
    const read = socketReader(conn);
    const h2 = new H2Connection(
      {
        read,
        write: socketWriter(conn),
        close: () => closeQuietly(conn),
      },
      h2env,
      peer,
    );
    h2s.add(h2);
    crowd(conns.size + h2s.size);
    try {
      await (h2.done = h2.run(first));
    } finally {
      h2s.delete(h2);
    }
  };
  const env: Env = {
    tls,
    handler: opts.handler,
    logger: opts.logger,
    metrics: opts.metrics,
    localPort: local.port,
    draining: () => draining,
    graceEnd: () => graceEnd,
    counts,
    relay: async (c, bytes) => {
      // The relayed connection is Deno.serve's from here on: its turn goes to the next.
      readGate.leave(c);
      if (bytes.length >= 5 && latin1(bytes, 0, 5) === "PRI *") {
        // h2c with prior knowledge (the "*" of its preface, "PRI * HTTP/2.0"): HTTP/2 is the
        // engine's own too, but only as the connection's first bytes (RFC 9113 §3.3). Any other
        // PRI * request is refused here: relayed, a preface after HTTP/1.1 requests would begin
        // Deno.serve's connection, which would take it for HTTP/2.
        if (c.begun || !startsPreface(bytes)) return await c.refuse("400 Bad Request");
        c.waitingSince = 0;
        c.buf = NO_BYTES;
        c.start = c.end = 0;
        return await serveH2(c.conn, c.peer, bytes);
      }
      // A request line of another major version (HTTP/2.0 outside the preface, HTTP/3.0): 505
      // (RFC 9110 §15.6.6), where Deno.serve answers 400 as to a malformed head.
      if (OTHER_MAJOR.test(latin1(bytes, 0, Math.min(bytes.length, 8192)))) {
        return await c.refuse("505 HTTP Version Not Supported");
      }
      counts.relayed++;
      let to: Deno.TcpConn;
      try {
        if (!inner.accepting) throw new Error("The fallback listener is being bound again");
        to = await Deno.connect({ hostname: "127.0.0.1", port: inner.port });
      } catch (err) {
        // While draining, the fallback listener has stopped accepting already: a request whose
        // head came in after the drain began is refused with a 503, which is no fault. Out of
        // descriptors, every relay fails: one line per 10 s, with the count held back.
        const now = performance.now();
        if (!draining && now < relayFailures.until) relayFailures.suppressed++;
        else if (!draining) {
          const more = relayFailures.suppressed
            ? { suppressedSinceLast: relayFailures.suppressed }
            : {};
          opts.logger.error("Cannot relay a connection to the HTTP/1.1 fallback listener", {
            error: String(err),
            ...more,
          });
          relayFailures.until = now + 10_000;
          relayFailures.suppressed = 0;
        }
        await writeAll(c.write, UNAVAILABLE).catch(() => {});
        return;
      }
      try {
        to.setNoDelay(true);
      } catch {
        closeQuietly(to);
        return;
      }
      // Deno.serve has the connection from here, and its read buffer (up to 64 KiB) is not
      // needed again while the relay holds on. Deno.serve has no client timeouts, so the idle
      // sweep counts http1_idle_timeout from the last bytes Deno.serve sent (from now, for the
      // first): a head trickled in (which a client can have relayed by its request line), a
      // keep-alive connection gone quiet and an answer that never starts close as on the
      // engine's own connections. A connection that switched protocols (a WebSocket) is left
      // to its own keep-alive.
      c.waitingSince = 0;
      c.quietSince = WAITING_UNSTAMPED;
      const answered = (buf: Uint8Array, n: number) => {
        if (c.quietSince === 0) return;
        c.quietSince = n >= 13 && SWITCHED.test(latin1(buf, 0, 13)) ? 0 : WAITING_UNSTAMPED;
      };
      c.buf = NO_BYTES;
      c.start = c.end = 0;
      const key = (to.localAddr as Deno.NetAddr).port;
      // The first request's version stands for the connection's (an HTTP/1.0 client without Host).
      const http10 = HTTP10_LINE.test(latin1(bytes, 0, Math.min(bytes.length, 8192)));
      peers.set(key, { ...c.peer, protocol: "http/1.1", http10, tls });
      try {
        await writeAll(socketWriter(to), bytes);
        // A client that ends its side (a half-close after its last request) gets whatever
        // Deno.serve still sends (which takes that end for the client leaving, as it does
        // unrelayed); once Deno.serve ends the connection, nothing more can come back, and both
        // sockets close (the client's in serve()).
        void pipe(c.conn, to, true);
        await pipe(to, c.conn, false, answered);
      } catch {
        // Either side went away: both are closed below.
      } finally {
        peers.delete(key);
        closeQuietly(to);
      }
    },
  };

  /** Connections still in their TLS handshake (closed with the listener). */
  const handshaking = new Set<Deno.Conn | ClientAuthConn>();
  /**
   * TLS handshakes in progress (the public listener's or a loopback one's), each with a promise
   * settled when it ends: a drain lets them finish within its grace, and waits for them.
   */
  const tlsHandshakes = new Map<Deno.Conn | ClientAuthConn, Promise<void>>();
  /** Relayed connections whose TLS handshake on a loopback listener is not done yet. */
  let relaysHandshaking = 0;
  const serveH1 = (
    conn: Deno.Conn,
    peer?: { hostname: string; port: number },
    first?: Uint8Array,
  ) => {
    const c = new Conn(conn, peer, first);
    conns.add(c);
    crowd(conns.size + h2s.size);
    return c.served = serve(c, env).finally(() => {
      conns.delete(c);
      c.close();
    });
  };
  /**
   * A TLS connection: its handshake, then HTTP/2 or HTTP/1.1 as ALPN chose. `relayed`: the client
   * of a connection relayed from the public port (known once the handshake is done, which needs
   * the bytes the relay sends only after it noted the client); undefined: not one of the relay's.
   */
  const serveTls = async (
    conn: Deno.TlsConn | ClientAuthConn,
    relayed?: () => { hostname: string; port: number } | undefined,
  ) => {
    let ended = () => {};
    tlsHandshakes.set(conn, new Promise<void>((r) => ended = r));
    const timer = setTimeout(() => closeQuietly(conn), HANDSHAKE_MS);
    // The handshake's reads take turns too (read_gate.ts): under a storm of new connections, a
    // thousand handshakes polled at once left some requests waiting 5–7 s for theirs.
    const turn: Reader = { turnEnds: -1, slot: -1 };
    let alpn: string | null;
    try {
      const wait = readGate.enter(turn);
      if (wait !== undefined) await wait;
      alpn = (await conn.handshake()).alpnProtocol;
    } catch {
      closeQuietly(conn);
      return;
    } finally {
      readGate.leave(turn);
      clearTimeout(timer);
      tlsHandshakes.delete(conn);
      ended();
    }
    // A drain serves a handshake done within its grace: the client of a new connection sends its
    // first request next, and cannot retry it elsewhere as one on a reused connection would.
    if (closed && Date.now() >= graceEnd) return closeQuietly(conn);
    let peer: { hostname: string; port: number; clientCert?: ClientCert } | undefined;
    if (relayed) {
      peer = relayed();
      if (!peer) return closeQuietly(conn);
    }
    // A verified client certificate rides on the client's address into every request's
    // ClientInfo (EngineInfo.clientCert), relayed ones included.
    const cert = "clientCert" in conn ? conn.clientCert : null;
    if (cert) {
      const r = conn.remoteAddr as Deno.NetAddr;
      peer = { ...(peer ?? { hostname: unmapped(r.hostname), port: r.port }), clientCert: cert };
    }
    // (A ClientAuthConn has the parts of Deno.Conn the engines use.)
    const c = conn as Deno.Conn;
    if (alpn === "h2") {
      const r = conn.remoteAddr as Deno.NetAddr;
      await serveH2(c, peer ?? { hostname: unmapped(r.hostname), port: r.port });
    } else await serveH1(c, peer);
  };
  /**
   * Relays a client connection to the TLS listener on 127.0.0.1, noting its client first. Deno
   * cannot close a TLS connection in its handshake (the listener's timer does not end it), so the
   * relay closes the client's socket when the handshake is not done by `deadline`.
   */
  const relayToTls = async (
    conn: Deno.Conn,
    client: { hostname: string; port: number } | null,
    first: Uint8Array,
    /** Which loopback listener (certificate). */
    target: TlsInner | DemandInner = inners[0],
    /** When the handshake must be done (Date.now() time). */
    deadline = Date.now() + HANDSHAKE_MS,
  ) => {
    tlsRelayed.add(conn);
    let ended = () => {};
    const end = new Promise<void>((r) => ended = r);
    relayEnds.add(end);
    let to: Deno.TcpConn | null = null;
    let key = -1;
    const timer = setTimeout(() => closeQuietly(conn), Math.max(0, deadline - Date.now()));
    relaysHandshaking++;
    let pending = true;
    const dropped = "retired" in target ? target : null;
    if (dropped) dropped.relays++;
    const handshaken = () => {
      clearTimeout(timer);
      if (pending) {
        relaysHandshaking--;
        if (dropped && --dropped.relays === 0 && dropped.retired) retire(dropped);
      }
      pending = false;
    };
    try {
      const inner = target.l;
      to = await Deno.connect({
        hostname: "127.0.0.1",
        // node:tls's listener (client_auth) is bound in the background.
        port: "addr" in inner ? (inner.addr as Deno.NetAddr).port : await inner.port,
      });
      to.setNoDelay(true);
      (conn as Partial<Deno.TcpConn>).setNoDelay?.(true);
      key = (to.localAddr as Deno.NetAddr).port;
      const r = conn.remoteAddr as Deno.NetAddr;
      target.peers.set(key, {
        client: client ?? { hostname: unmapped(r.hostname), port: r.port },
        handshaken,
      });
      if (first.length > 0) await writeAll(socketWriter(to), first);
      void pipe(conn, to, true);
      await pipe(to, conn, false);
    } catch {
      // Either side went away, or the TLS listener is gone (closing): both close below.
    } finally {
      handshaken();
      if (key >= 0) target.peers.delete(key);
      if (to) closeQuietly(to);
      closeQuietly(conn);
      tlsRelayed.delete(conn);
      relayEnds.delete(end);
      ended();
    }
  };

  /**
   * A TLS client on the public port while the TLS is done on loopback: with `sni`, its ClientHello
   * is read first (up to 16 KiB, within the handshake's time) and its server name picks the
   * certificate's listener: the `sni` certificate chooseCertificate picks (an exact name in the
   * main certificate beats an `sni` wildcard), else the main one.
   */
  const relayTlsClient = async (
    conn: Deno.Conn,
    client: { hostname: string; port: number } | null,
    first: Uint8Array,
  ) => {
    const deadline = Date.now() + HANDSHAKE_MS;
    if (!sni && !onDemand) return await relayToTls(conn, client, first, inners[0], deadline);
    handshaking.add(conn);
    let bytes = first;
    // Each record is read once however many reads bring it (one byte each, from a hostile client).
    const scan = helloScan();
    let peek = peekClientHello(bytes, MAX_HELLO_BYTES, scan);
    const timer = setTimeout(() => closeQuietly(conn), HANDSHAKE_MS);
    try {
      while (peek.kind === "more") {
        const chunk = new Uint8Array(4096);
        const n = await conn.read(chunk);
        if (n === null) return closeQuietly(conn);
        const more = new Uint8Array(bytes.length + n);
        more.set(bytes);
        more.set(chunk.subarray(0, n), bytes.length);
        bytes = more;
        peek = peekClientHello(bytes, MAX_HELLO_BYTES, scan);
      }
    } catch {
      return closeQuietly(conn); // reset, or closed by the timer
    } finally {
      clearTimeout(timer);
      handshaking.delete(conn);
    }
    const name = peek.kind === "hello" ? peek.serverName : null;
    // A drain lets a new connection on its way to its first request go on within its grace.
    if (closed && Date.now() >= graceEnd) return closeQuietly(conn);
    // Not TLS or no name: the main certificate's listener, which answers as before.
    const index = name === null ? 0 : 1 + chooseCertificate(sniNames, name, mainNames);
    if (index > 0 || name === null || !onDemand || certificateCovers(mainNames!, name)) {
      return await relayToTls(conn, client, bytes, inners[index], deadline);
    }
    // No certificate holds the name: on demand, the handshake waits for one (refused or failed:
    // the main certificate's listener answers, and the client refuses its name).
    const key = name.toLowerCase().replace(/\.$/, "");
    let got = onDemand.certificate(key);
    const waited = got instanceof Promise;
    if (got instanceof Promise) {
      handshaking.add(conn);
      try {
        got = await got;
      } finally {
        handshaking.delete(conn);
      }
      if (closed && Date.now() >= graceEnd) return closeQuietly(conn);
    }
    const target = got ? demandInner(key, got) : null;
    // The handshake's own time starts once the wait is over.
    await relayToTls(
      conn,
      client,
      bytes,
      target ?? inners[0],
      waited ? Date.now() + HANDSHAKE_MS : deadline,
    );
  };

  /** Closes a dropped on-demand listener once no relay to it is before its handshake. */
  const retire = (d: DemandInner) => {
    d.retired = true;
    if (d.relays > 0) return void retiring.add(d);
    retiring.delete(d);
    closeQuietly(d.l);
  };

  /**
   * The loopback listener of an on-demand certificate: the one there, a new one (renewed: the old
   * one retires), null when it cannot be bound. Past `max()`, the least recently used retires.
   */
  const demandInner = (name: string, pair: { cert: string; key: string }): DemandInner | null => {
    if (closed) return null;
    const had = demand.get(name);
    if (had) demand.delete(name);
    if (had && had.cert === pair.cert) {
      demand.set(name, had);
      return had;
    }
    let d: DemandInner;
    try {
      d = { l: listenInner(pair), peers: new Map(), cert: pair.cert, relays: 0, retired: false };
    } catch (err) {
      opts.logger.warn("Cannot serve on-demand certificate", { name, error: String(err) });
      if (had) demand.set(name, had);
      return had ?? null;
    }
    const loop = acceptTls(d);
    acceptingDemand.add(loop);
    void loop.then(() => acceptingDemand.delete(loop));
    demand.set(name, d);
    if (had) retire(had);
    while (demand.size > Math.max(1, onDemand!.max())) {
      const [oldest, old] = demand.entries().next().value!;
      demand.delete(oldest);
      retire(old);
    }
    return d;
  };

  /** PROXY header failures: when the next may be logged, and how many were not. */
  const ppFailures = { until: 0, suppressed: 0 };
  /** A connection from a load balancer: its PROXY header, then the client's bytes. */
  const serveProxied = async (conn: Deno.Conn) => {
    handshaking.add(conn);
    let got: Proxied | string;
    try {
      got = await readProxied(conn, pp!.timeoutMs);
    } finally {
      handshaking.delete(conn);
    }
    if (typeof got === "string") {
      closeQuietly(conn);
      // Closed by the listener's own shutdown or close (a reload replacing it, a certificate
      // rotation), or by the balancer before a byte (its TCP health check): no fault to warn of.
      if (closed || got === CLOSED_EMPTY) return;
      // A misconfigured balancer fails every connection: one line per 10 s, with the count.
      const now = performance.now();
      if (now < ppFailures.until) ppFailures.suppressed++;
      else {
        const r = conn.remoteAddr as Deno.NetAddr;
        opts.logger.warn("Connection closed: no valid PROXY protocol header", {
          peer: unmapped(r.hostname),
          reason: got,
          ...(ppFailures.suppressed ? { suppressedSinceLast: ppFailures.suppressed } : {}),
        });
        ppFailures.until = now + 10_000;
        ppFailures.suppressed = 0;
      }
      return;
    }
    if (closed && Date.now() >= graceEnd) return closeQuietly(conn);
    // The per-address limit counts the client the header names, not the balancer.
    const ip = limits !== undefined && got.client ? got.client.hostname : null;
    if (ip !== null && !takeIp(conn, ip)) return;
    try {
      if (tlsOnLoopback) await relayTlsClient(conn, got.client, got.rest);
      else await serveH1(conn, got.client ?? undefined, got.rest);
    } finally {
      if (ip !== null) countIp(ip, -1);
    }
  };

  // Connection limits: the connections open (each until its serving ends) and their addresses.
  const limits = opts.connectionLimits;
  const held: ConnectionCounts = limits?.counts ?? { open: 0, perIp: new Map() };
  /** Open connections by client address; an address leaves at 0 (bounded by the connections). */
  const perIp = held.perIp;
  /** The address an IPv6 client is counted by: its /64 unless ipv6_prefix says (a subscriber's). */
  const group = (ip: string) => ipGroupKey(ip, limits?.ipv6Prefix ?? 64);
  const countIp = (ip: string, d: number) => {
    const key = group(ip);
    const n = (perIp.get(key) ?? 0) + d;
    if (n > 0) perIp.set(key, n);
    else perIp.delete(key);
  };
  /** Refusals: when the next may be logged, and how many were not. */
  const refusals = { until: 0, suppressed: 0 };
  const refuse = (
    conn: Deno.Conn,
    limit: "max_connections" | "max_connections_per_ip",
    ip: string,
  ) => {
    closeQuietly(conn);
    opts.metrics?.connectionRefused(limit);
    // A flood refuses thousands a second: one line per 10 s, with the count.
    const now = performance.now();
    if (now < refusals.until) refusals.suppressed++;
    else {
      opts.logger.warn("Connection refused: limit reached", {
        limit: `limits.${limit}`,
        max: limit === "max_connections" ? limits?.total : limits?.perIp,
        peer: ip,
        ...(refusals.suppressed ? { suppressedSinceLast: refusals.suppressed } : {}),
      });
      refusals.until = now + 10_000;
      refusals.suppressed = 0;
    }
  };
  /** Counts one more connection from `ip`, or refuses it (false) past `max_connections_per_ip`. */
  const takeIp = (conn: Deno.Conn, ip: string): boolean => {
    if (limits!.perIp !== undefined && (perIp.get(group(ip)) ?? 0) >= limits!.perIp) {
      refuse(conn, "max_connections_per_ip", ip);
      return false;
    }
    countIp(ip, 1);
    return true;
  };
  /** Serves `conn` within the limits: counted until its serving ends, or refused at once. */
  const serveLimited = async (conn: Deno.Conn) => {
    const peer = unmapped((conn.remoteAddr as Deno.NetAddr).hostname);
    if (limits!.total !== undefined && held.open >= limits!.total) {
      return refuse(conn, "max_connections", peer);
    }
    const proxied = pp !== undefined && sendsProxyHeader(pp, conn);
    // Counted per address without a limit too (a reload may add one: they count against it).
    const ip = !proxied ? peer : null;
    if (ip !== null && !takeIp(conn, ip)) return;
    held.open++;
    try {
      if (proxied) await serveProxied(conn);
      else if (tlsOnLoopback) await relayTlsClient(conn, null, NO_BYTES);
      else if (tls) await serveTls(conn as Deno.TlsConn);
      else await serveH1(conn);
    } catch {
      // Each path ends its connection itself; nothing is left to do here.
    } finally {
      held.open--;
      if (ip !== null) countIp(ip, -1);
    }
  };

  const accepting = (async () => {
    let backoff = ACCEPT_BACKOFF_INITIAL;
    while (!closed) {
      let conn: Deno.Conn;
      try {
        conn = await server.accept();
      } catch (err) {
        if (closed) return;
        // EMFILE and the like: keep the port and try again, backing off. An accept that works
        // between failures (a descriptor came free) does not reset the back-off, or each freed
        // descriptor would cost an error line: only five seconds without a failure do; the line
        // is logged once a minute (accept_backoff.ts).
        const r = acceptFailed(backoff, Date.now());
        backoff = r.state;
        if (r.log) {
          opts.logger.error("Listener could not accept; trying again", {
            addr: formatListenAddr(local),
            error: String(err),
            retryInMs: r.delayMs,
            ...(r.suppressed ? { notLogged: r.suppressed } : {}),
          });
        }
        await new Promise((res) => setTimeout(res, r.delayMs));
        continue;
      }
      if (limits) void serveLimited(conn);
      else if (pp && sendsProxyHeader(pp, conn)) void serveProxied(conn);
      else if (tlsOnLoopback) void relayTlsClient(conn, null, NO_BYTES);
      else if (tls) void serveTls(conn as Deno.TlsConn);
      else serveH1(conn);
    }
  })();
  // The loopback TLS listener's own loop: only connections the relay made (from 127.0.0.1, on a
  // port it noted) are served; another local process connecting there is closed.
  // It accepts until the listener is closed (a drain's grace after the public one).
  const acceptTls = (inner: TlsInner) =>
    (async () => {
      for (;;) {
        let conn: Deno.TlsConn | ClientAuthConn;
        try {
          conn = await inner.l.accept();
        } catch {
          // A dropped on-demand listener is closed once its last relay's handshake is done.
          const d = "retired" in inner ? inner as DemandInner : null;
          if (closed || (d?.retired && d.relays === 0)) return;
          await new Promise((r) => setTimeout(r, 100)); // out of descriptors: as above, later
          continue;
        }
        const r = conn.remoteAddr as Deno.NetAddr;
        void serveTls(conn, () => {
          const relayed = r.hostname === "127.0.0.1" ? inner.peers.get(r.port) : undefined;
          relayed?.handshaken();
          return relayed?.client;
        });
      }
    })();
  const acceptingTls = inners.map(acceptTls);
  /** The on-demand listeners' loops (each ends as its listener closes). */
  const acceptingDemand = new Set<Promise<void>>();
  /** Every loopback listener open: the configured ones, the on-demand ones (kept or retiring). */
  const allInners = () => [...tlsInners, ...[...demand.values(), ...retiring].map((d) => d.l)];

  return {
    hostname: local.hostname,
    port: local.port,
    tls,
    engine: "prox",
    counts,
    recheckClients() {
      let cut = 0;
      for (const l of allInners()) if ("recheck" in l) cut += l.recheck();
      return cut;
    },
    async shutdown(o) {
      if (closed) return;
      closed = true;
      draining = true;
      graceEnd = Date.now() + HEAD_GRACE_MS;
      closeQuietly(server);
      // OCSP requests in flight end now (their connections are closed unserved), not at timeout.
      clientAuth?.ocsp?.close();
      // Idle connections go now; busy ones after their current answer (`connection: close`).
      // One waiting for a turn may have a request in the kernel: it takes a last look first.
      // One with half a head has HEAD_GRACE_MS for the rest (serve() reads no longer then), and
      // so has a new one that sent no request yet, or is in its TLS handshake: its client is
      // about to send its first request, which it cannot retry (a client retries one on a reused
      // keep-alive connection that closes, RFC 9110 §9.2.2), and (with tcp_migrate_req) a
      // certificate swap or upgrade lost none of a fresh connection per request's.
      for (const c of conns) {
        if (c.waitingSince > 0 && c.start === c.end && !c.queued && c.begun) c.close();
      }
      // HTTP/2: a GOAWAY; each connection ends once its streams in work have answered.
      for (const c of h2s) c.goaway();
      graceTimer = setTimeout(() => {
        for (const c of conns) if (c.waitingSince > 0 && !c.queued) c.close();
      }, HEAD_GRACE_MS);
      await inner.shutdown(o);
      await accepting;
      // New connections still on their way (a PROXY header or ClientHello being read, a TLS
      // handshake, a relay to a loopback TLS listener) go on until the grace ends, then close.
      while (
        Date.now() < graceEnd &&
        (handshaking.size > 0 || tlsHandshakes.size > 0 || relaysHandshaking > 0)
      ) await new Promise((r) => setTimeout(r, 10));
      for (const l of allInners()) closeQuietly(l);
      for (const c of handshaking) closeQuietly(c);
      for (const c of tlsHandshakes.keys()) closeQuietly(c);
      await Promise.all([...acceptingTls, ...acceptingDemand]);
      // A handshake that ended within the grace is served (its connection joins `conns` then).
      while (tlsHandshakes.size > 0) await Promise.race(tlsHandshakes.values());
      // Until each connection's serve() has ended, not merely its socket closed: one that waits
      // for a turn gets it only as other turns end (read_gate.ts), and a loop over promises
      // already settled would spin without ever letting them.
      while (conns.size > 0) await Promise.race([...conns].map((c) => c.served));
      while (h2s.size > 0) await Promise.race([...h2s].map((c) => c.done));
      // A relay still open carries no more than the end of its connection's last answer, which
      // may still be in the loopback socket: each ends once it has passed that on (closed at
      // once, the answer was lost: a fresh connection per request lost some at each
      // certificate swap). One whose client still sends is cut after HEAD_GRACE_MS.
      if (relayEnds.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const cut = new Promise((r) => timer = setTimeout(r, HEAD_GRACE_MS));
        await Promise.race([Promise.all(relayEnds), cut]);
        clearTimeout(timer);
      }
      for (const c of tlsRelayed) closeQuietly(c);
      clearInterval(sweeper);
      clearTimeout(graceTimer);
    },
    async close() {
      closed = true;
      draining = true;
      closeQuietly(server);
      for (const l of allInners()) closeQuietly(l);
      clientAuth?.ocsp?.close();
      clearInterval(sweeper);
      clearTimeout(graceTimer);
      for (const c of tlsRelayed) closeQuietly(c);
      for (const c of conns) c.close();
      for (const c of handshaking) closeQuietly(c);
      for (const c of tlsHandshakes.keys()) closeQuietly(c);
      for (const c of h2s) c.close();
      await inner.close();
    },
  };
}

interface Env {
  /** The listener's connections are TLS ones (the URL's scheme, ClientInfo.tls). */
  tls: boolean;
  handler: Handler;
  logger: Logger;
  metrics?: Metrics;
  localPort: number;
  draining(): boolean;
  /** While draining: when a head already begun must have come whole (Date.now() time). */
  graceEnd(): number;
  counts: { served: number; relayed: number };
  relay(c: Conn, bytes: Uint8Array): Promise<void>;
}

/**
 * One client connection: its read buffer (unconsumed bytes in `buf[start..end)`) and state.
 * Exported for tests.
 */
export class Conn implements Reader, HintsWriter {
  buf = new Uint8Array(KEEP_SIZE);
  /** The buffer this connection waits for its next request with (need()). */
  keep = KEEP_SIZE;
  /** The most any of its requests took of the buffer. */
  #needed = 0;
  /** The read gate's tick at which this connection's turn counts as idle; -1: no turn held. */
  turnEnds = -1;
  /** Its place among the read gate's turn holders (-1: none). */
  slot = -1;
  /** Waiting for a turn (read_gate.ts). */
  queued = false;
  start = 0;
  end = 0;
  /**
   * When the connection began waiting for a request head (performance.now() time; 0: busy with
   * one; WAITING_UNSTAMPED: waiting, until the idle sweep stamps it).
   */
  waitingSince = performance.now();
  /** When the idle sweep first saw bytes of a head not yet whole (NO_HEAD: none). */
  headSince = NO_HEAD;
  /**
   * Relayed: since when Deno.serve has sent the client nothing (performance.now() time, or
   * WAITING_UNSTAMPED until the idle sweep stamps it); 0 once it switched protocols. Before a
   * relay NOT_RELAYED, not 0, so that the field holds a double from the start (an integer field
   * that took its first clock reading later would give every Conn a new hidden class).
   */
  quietSince = NOT_RELAYED;
  readonly peer: { hostname: string; port: number };
  /** The background read that watches for the client leaving while a request is handled. */
  watching: Promise<void> | null = null;
  /** Aborted when the client leaves during the current exchange (made by `watch`). */
  #left: AbortController | null = null;
  /** True from a request's head to the end of its answer. */
  #busy = false;
  /** What came so far of a head still on its way (request_head.ts). */
  readonly scan = new HeadScan();
  /** Set when a read saw the end of the client's stream (or an error). */
  eof = false;
  /** Set once a request head was taken: the connection's next bytes are not its first. */
  begun = false;
  /** Bytes of the current request's streamed body not read yet (buffered ones included). */
  bodyLeft = 0;
  /** The current request's chunked body, while it is read (chunked.ts). */
  #chunked: ChunkedDecoder | null = null;
  /**
   * The request's body broke its framing (a malformed chunked body): where the next request would
   * begin is unknown, so the connection closes after the answer.
   */
  broken = false;
  /**
   * The request asked `Expect: 100-continue` and has had no 100 yet: the client may hold its body
   * back until the first read of it sends one.
   */
  awaitsContinue = false;
  /** Interim answers (100, 103) still being written: the answer's head waits for them. */
  interimWrites: Promise<void> | null = null;
  /** The body read in progress, if any: reads of the body never overlap. */
  #bodyRead: Promise<unknown> = Promise.resolve();
  /** The current request's body has been read, or read ahead (#readAhead): once per body. */
  #bodyTaken = false;
  #readingAhead = false;
  /** Settles when serve() has ended for this connection (and it left `conns`). */
  served: Promise<void> = Promise.resolve();
  #closed = false;

  /** Reads of `conn` (socket_read.ts: 0 at end of stream). */
  readonly #read: SocketRead;
  /** Writes to `conn`. */
  readonly write: SocketWrite;

  /**
   * `peer`: the client, when not the connection's own peer (a load balancer's PROXY header named
   * it); `first`: bytes of the client's already read (what came behind that header).
   */
  constructor(
    readonly conn: Deno.Conn,
    peer?: { hostname: string; port: number },
    first?: Uint8Array,
  ) {
    this.#read = socketReader(conn);
    this.write = socketWriter(conn);
    const r = conn.remoteAddr as Deno.NetAddr;
    this.peer = peer ?? { hostname: unmapped(r.hostname), port: r.port };
    if (first && first.length > 0) {
      if (first.length > this.buf.length) this.buf = new Uint8Array(first.length);
      this.buf.set(first);
      this.end = first.length;
    }
    try {
      // (A TLS connection has no such setting in Deno.)
      (conn as Partial<Deno.TcpConn>).setNoDelay?.(true);
    } catch { /* already reset */ }
  }

  /**
   * While the listener drains: one short read for a request the client sent before it could know
   * (the connection waited for a turn, with its bytes in the kernel), or the rest of a head. False,
   * and the connection closed, when nothing came within `ms`.
   */
  async lastLook(ms = LAST_LOOK_MS): Promise<boolean> {
    const timer = setTimeout(() => this.close(), ms);
    try {
      return await this.fill();
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A request took `bytes` of the buffer (its head and its body): from now on the connection waits
   * for its next request with a buffer that fits the most any of its requests took, a power of two
   * from READ_SIZE up to KEEP_SIZE, so that the next such request comes in one read.
   */
  need(bytes: number): void {
    if (bytes <= this.#needed) return;
    this.#needed = bytes;
    let keep = READ_SIZE;
    while (keep < bytes && keep < KEEP_SIZE) keep *= 2;
    this.keep = keep;
  }

  /** Reads more bytes after `end`, growing the buffer up to the head limit; false at EOF. */
  async fill(): Promise<boolean> {
    if (this.start === this.end) {
      this.start = this.end = 0;
      // Waiting for its next request (most of its life, for a keep-alive one), a connection holds
      // no more than its requests so far needed (a browser sends much the same cookies each time;
      // an API client POSTs bodies of much the same size).
      if (this.buf.length !== this.keep) this.buf = new Uint8Array(this.keep);
    }
    if (this.end === this.buf.length) {
      if (this.start > 0) {
        this.buf.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      } else {
        const bigger = new Uint8Array(Math.min(this.buf.length * 2, HEAD_LIMIT));
        bigger.set(this.buf);
        this.buf = bigger;
      }
    }
    // A buffer already at the head limit has no room: nothing is read, and serve() sees the limit.
    if (this.end === this.buf.length) return true;
    const n = await this.#read(this.buf.subarray(this.end));
    if (n === 0) return false;
    this.end += n;
    return true;
  }

  /**
   * A signal that aborts if the client leaves during the current exchange. The first call starts
   * one read of the socket in the background: Deno.serve notices a client that left, and so must
   * a request that waits, or an answer that streams. That read ends the watch either way: at the
   * end of the client's stream, or with the next request's first bytes (kept for serve()), after
   * which the client counts as staying, as on Deno.serve. With such bytes already here there is
   * no read at all: one that the client never answers (it sent all it had and waits for its
   * answers) would hold up serving what it sent.
   */
  watch(): AbortSignal {
    let left = this.#left;
    if (left === null) {
      left = this.#left = new AbortController();
      if (this.eof) left.abort(gone());
    }
    // Only while the exchange runs: asked for after it (a late look at a finished request's
    // signal), a read here would race serve()'s own for the next request, and whichever lost
    // would leave that request unread in the buffer until the client gave up.
    // Not while the request's body is still coming: its reads would race this one (a client that
    // leaves then ends the body's stream instead, which aborts the signal). A signal first asked
    // for then (a total timeout, forward_auth) gets its read once the body is in (#stream).
    // A body nothing reads yet (the request waits for an upstream connection) is read ahead.
    if (!left.signal.aborted && this.#busy && this.bodyPending) {
      if (!this.#bodyTaken && !this.#readingAhead && !this.awaitsContinue) this.#readAhead(left);
    } else if (
      !left.signal.aborted && this.#busy && !this.watching && this.start === this.end &&
      !this.bodyPending
    ) {
      this.watching = (async () => {
        try {
          if (!await this.fill()) this.eof = true;
        } catch {
          this.eof = true;
        }
        if (this.eof && this.#left === left) left.abort(gone());
      })();
    }
    return left.signal;
  }

  /**
   * Reads a body that nothing reads yet into the buffer, up to READ_AHEAD bytes buffered, where
   * the body's reads take them first: a client that leaves meanwhile (an upload queued for an
   * upstream connection) aborts the request, which leaves the queue. Ends at the first read of
   * the body; one that sent more than READ_AHEAD before it left is seen only then.
   */
  #readAhead(left: AbortController): void {
    this.#readingAhead = true;
    const ahead = async () => {
      const want = this.#chunked ? READ_AHEAD : Math.min(READ_AHEAD, this.bodyLeft);
      // A chunked body's end may be here already (a client that sent it all waits for its answer,
      // and a read for more would hold up the body's reads until it sent another request): what
      // came is scanned for it by a decoder of its own (the body's own has decoded nothing yet).
      const scan = this.#chunked ? new ChunkedDecoder() : null;
      let seen = 0; // bytes from `start` scanned
      while (this.#left === left && !this.#bodyTaken && this.end - this.start < want) {
        if (scan !== null) {
          try {
            while (this.start + seen < this.end && !scan.done) {
              seen += scan.decode(this.buf, this.start + seen, this.end);
            }
          } catch {
            return; // malformed: the body's own read says so (400)
          }
          if (scan.done) return;
        }
        if (this.start + want > this.buf.length) {
          const room = new Uint8Array(Math.max(want, this.buf.length));
          room.set(this.buf.subarray(this.start, this.end));
          this.end -= this.start;
          this.start = 0;
          this.buf = room;
        }
        let n = 0;
        try {
          n = await this.#read(this.buf.subarray(this.end, this.start + want));
        } catch {
          // reset: gone
        }
        if (n === 0) return void this.#clientGone();
        this.end += n;
      }
    };
    const next = this.#bodyRead.then(ahead);
    this.#bodyRead = next.catch(() => {});
  }

  /**
   * The current request's body of `len` bytes as a stream: what the buffer holds from `start`,
   * then reads of the socket, never past the body's end (a request pipelined behind it stays in
   * the kernel). A client that leaves before its end errors it (and aborts the request's signal).
   */
  bodyStream(len: number, expectContinue = false): ReadableStream<Uint8Array> {
    this.bodyLeft = len;
    return this.#stream(expectContinue);
  }

  /**
   * The current request's chunked body as a stream of its data, decoded as it comes (chunked.ts),
   * never read past its end in the stream's own reads of the socket; bytes after it that came in
   * one read with it stay for the next request. A body that breaks the grammar errors the stream
   * (400) and marks the connection `broken`.
   */
  chunkedStream(expectContinue = false): ReadableStream<Uint8Array> {
    this.#chunked = new ChunkedDecoder();
    return this.#stream(expectContinue);
  }

  /**
   * Bytes of the current request's body known to be still to come: a Content-Length body's rest,
   * or what a chunked one's current chunk has left (its later chunks are not known yet).
   */
  get bodyKnownLeft(): number {
    return this.bodyLeft + (this.#chunked?.dataLeft ?? 0);
  }

  /** Whether the current request's body has more to come (or failed before its end). */
  get bodyPending(): boolean {
    return this.bodyLeft > 0 || (this.#chunked !== null && !this.#chunked.done);
  }

  #stream(expectContinue: boolean): ReadableStream<Uint8Array> {
    this.#bodyTaken = this.#readingAhead = false;
    // Nothing of the body here yet: the client waits for a 100 (which the first read sends).
    this.awaitsContinue = expectContinue && this.start === this.end;
    /**
     * The buffers of BODY_CHUNKS lent out as chunks, once the stream's reader said it gives them
     * back (ports.ts LEND_CHUNKS); null before: fresh buffers.
     */
    let lent: Set<ArrayBuffer> | null = null;
    const stream: ChunkLending = new ReadableStream<Uint8Array>({
      pull: async (ctl) => {
        let chunk: Uint8Array | null;
        try {
          chunk = await this.#bodyChunk(lent);
        } catch (err) {
          ctl.error(err);
          return;
        }
        if (chunk === null) {
          ctl.error(new ProxyError("client_gone", "Client closed the connection mid-body"));
          return;
        }
        if (chunk.byteLength > 0) ctl.enqueue(chunk);
        if (!this.bodyPending) {
          ctl.close();
          // A signal asked for while the body came gets its background read now (watch).
          if (this.#left) this.watch();
        }
      },
      // Whatever is left is dropped after the answer (skipBody) or goes with the connection.
    }, { highWaterMark: 0 });
    stream[LEND_CHUNKS] = () => lendFrom(lent ??= new Set());
    return stream;
  }

  /**
   * The next piece of the body (null: the client left first), after any read in progress; a read
   * into its own buffer takes one of BODY_CHUNKS when `lent` (and adds it there).
   */
  #bodyChunk(lent: Set<ArrayBuffer> | null): Promise<Uint8Array | null> {
    this.#bodyTaken = true;
    const next = this.#bodyRead.then(() => this.#readBody(lent));
    this.#bodyRead = next.catch(() => {});
    return next;
  }

  async #readBody(lent: Set<ArrayBuffer> | null): Promise<Uint8Array | null> {
    if (!this.bodyPending) return NO_BYTES;
    if (this.awaitsContinue) {
      // Only now, as nginx does: an answer that comes before the body is read (a 413, a refusal)
      // goes out without the client having sent it. Deno.serve sends the 100 at once.
      this.awaitsContinue = false;
      try {
        await this.#writeInterim(CONTINUE);
      } catch {
        return this.#clientGone();
      }
    }
    if (this.#chunked) return await this.#readChunked(this.#chunked, lent);
    if (this.start < this.end) {
      const n = Math.min(this.bodyLeft, this.end - this.start);
      const out = this.buf.slice(this.start, this.start + n);
      this.start += n;
      this.bodyLeft -= n;
      return out;
    }
    const out = await this.#readDirect(this.bodyLeft, lent);
    if (out) this.bodyLeft -= out.byteLength;
    return out;
  }

  /**
   * One read of up to `want` (at most BODY_CHUNK) body bytes into a buffer of their own; null,
   * and the request's signal aborted, when the client left.
   */
  async #readDirect(want: number, lent: Set<ArrayBuffer> | null): Promise<Uint8Array | null> {
    if (want <= 0) return NO_BYTES; // (an empty buffer would read as the end of the stream)
    const size = Math.min(want, BODY_CHUNK);
    const chunk = lent ? new Uint8Array(BODY_CHUNKS.take(), 0, size) : new Uint8Array(size);
    let n: number;
    try {
      n = await this.#read(chunk);
    } catch {
      n = 0;
    }
    if (n === 0 || (n < 4096 && n < chunk.length)) {
      const out = n === 0 ? null : chunk.slice(0, n);
      if (lent) BODY_CHUNKS.give(chunk.buffer);
      return out ?? this.#clientGone();
    }
    lent?.add(chunk.buffer);
    return chunk.subarray(0, n);
  }

  /** The client's stream ended mid-body: the request's signal aborts. */
  #clientGone(): null {
    this.eof = true;
    this.#left?.abort(gone());
    return null;
  }

  /**
   * The next run of a chunked body's data: decoded from the buffer while it holds bytes, else a
   * chunk's data read straight from the socket (never past that chunk), else the buffer filled
   * again. NO_BYTES at the body's end, null when the client left first.
   */
  async #readChunked(
    d: ChunkedDecoder,
    lent: Set<ArrayBuffer> | null,
  ): Promise<Uint8Array | null> {
    for (;;) {
      if (d.done) return NO_BYTES;
      if (this.start < this.end) {
        const piece = this.#decodeBuffered(d);
        if (piece) return piece;
        continue;
      }
      if (d.dataLeft >= 4096) {
        // A large chunk's data: read into its own buffer, as a Content-Length body's is.
        const out = await this.#readDirect(d.dataLeft, lent);
        if (out) d.took(out.byteLength);
        return out;
      }
      let more: boolean;
      try {
        more = await this.fill();
      } catch {
        more = false;
      }
      if (!more) return this.#clientGone();
    }
  }

  /**
   * Decodes what the buffer holds of a chunked body: the data of all the chunks in it, as one
   * piece (null: none), so that many small chunks cost one piece, not one each (a client's 1-byte
   * chunks went upstream one chunk and one write each). Bytes after the body stay.
   */
  #decodeBuffered(d: ChunkedDecoder): Uint8Array | null {
    // The data runs found, as offsets into the buffer: [start, end, start, end, …].
    let runs: number[] | null = null;
    let first = -1, firstEnd = -1, total = 0;
    try {
      while (this.start < this.end && !d.done) {
        this.start += d.decode(this.buf, this.start, this.end);
        if (d.dataEnd === d.dataStart) continue;
        total += d.dataEnd - d.dataStart;
        if (first < 0) [first, firstEnd] = [d.dataStart, d.dataEnd];
        else (runs ??= [first, firstEnd]).push(d.dataStart, d.dataEnd);
      }
    } catch (err) {
      this.broken = true;
      if (err instanceof ChunkedError) throw new ProxyError("bad_request", err.message);
      throw err;
    }
    if (first < 0) return null;
    if (runs === null) return this.buf.slice(first, firstEnd);
    const out = new Uint8Array(total);
    for (let i = 0, o = 0; i < runs.length; i += 2) {
      out.set(this.buf.subarray(runs[i], runs[i + 1]), o);
      o += runs[i + 1] - runs[i];
    }
    return out;
  }

  /**
   * Reads and drops what is left of the body, up to SKIP_BYTES and SKIP_MS: true when all of it
   * came (the connection can carry another request). `keep`: the connection is to carry one.
   */
  async skipBody(keep: boolean): Promise<boolean> {
    // A chunked body that came fast (a client that wrote all of it, then read its answer and sends
    // the next request on the connection) is dropped whole: the answer could not say it was long.
    // On a connection that closes anyway, enough for the client to read its answer will do.
    let budget = this.#chunked && keep ? Infinity : SKIP_BYTES;
    const timer = setTimeout(() => this.close(), SKIP_MS);
    // Dropped as read: the buffers go straight back.
    const skipped = new Set<ArrayBuffer>();
    const drop = lendFrom(skipped);
    try {
      while (this.bodyPending && budget > 0) {
        const chunk = await this.#bodyChunk(skipped);
        if (chunk === null) return false;
        budget -= chunk.byteLength;
        drop(chunk);
      }
      return !this.bodyPending;
    } catch {
      return false; // a malformed chunked body
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Answers a head the engine refuses (`status`: code and reason) and closes the connection: its
   * sending side first, then what the client still sends is read and dropped, up to SKIP_BYTES
   * within SKIP_MS, so that it reads the answer rather than a reset.
   */
  async refuse(status: string): Promise<void> {
    // Its turn goes to the next connection: nothing here is worth one.
    readGate.leave(this);
    await writeAll(this.write, refusal(status));
    const timer = setTimeout(() => this.close(), SKIP_MS);
    try {
      await (this.conn as Partial<Deno.TcpConn>).closeWrite?.();
      const scratch = new Uint8Array(BODY_CHUNK);
      for (let left = SKIP_BYTES; left > 0;) {
        const n = await this.#read(scratch);
        if (n === 0) break;
        left -= n;
      }
    } catch {
      // Reset or closed by the timer: nothing more to read.
    } finally {
      clearTimeout(timer);
    }
  }

  /** Forgets the last request's body: the next one starts without. */
  endBody(): void {
    this.bodyLeft = 0;
    this.#chunked = null;
  }

  /** Whether the client left during the current exchange (as `watch` saw). */
  get left(): boolean {
    return this.#left?.signal.aborted === true;
  }

  /** Writes an interim answer after those before it; rejects when the write failed. */
  #writeInterim(bytes: Uint8Array): Promise<void> {
    const before = this.interimWrites;
    const w = before === null
      ? writeAll(this.write, bytes)
      : before.then(() => writeAll(this.write, bytes));
    this.interimWrites = w.catch(() => {});
    return w;
  }

  /**
   * A 103 Early Hints for the exchange in progress (EngineInfo.earlyHints, RFC 8297), which the
   * answer's head then waits for. A failed write is the answer's to find.
   */
  writeEarlyHints(_key: unknown, fields: [string, string][]): void {
    if (this.left || this.#closed) return;
    let text = "HTTP/1.1 103 Early Hints\r\n";
    for (let i = 0; i < fields.length; i++) text += fields[i][0] + ": " + fields[i][1] + "\r\n";
    this.#writeInterim(headBytes(text + "\r\n")).catch(() => {});
  }

  /** Marks the start (true) or end (false) of an exchange. */
  exchanging(busy: boolean): void {
    this.#busy = busy;
    this.#left = null;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.conn);
  }
}

/** Serves one connection until it closes, or hands it to the relay. */
async function serve(c: Conn, env: Env): Promise<void> {
  try {
    for (;;) {
      // Waiting for the next request from here on (the idle limit and a drain apply), though a
      // read the last request began may still be pending: it fills the buffer as ours would.
      c.waitingSince = WAITING_UNSTAMPED;
      // A turn among the connections served at once (read_gate.ts): under many busy ones the
      // rest wait here in order, not in Deno's poll of its sockets.
      const turn = readGate.enter(c);
      if (turn !== undefined) {
        c.queued = true;
        await turn;
        c.queued = false;
      }
      if (c.watching) {
        // The read that watched the last answer waits for the client's next request: after a
        // drain began during that answer, it gets a last look too, as a new read would.
        const timer = env.draining() ? setTimeout(() => c.close(), LAST_LOOK_MS) : undefined;
        await c.watching;
        clearTimeout(timer);
        c.watching = null;
      }
      if (c.eof) return;
      c.scan.reset();
      let end = headEnd(c.buf, c.start, c.end);
      while (end < 0) {
        const scanned = c.end - c.start;
        // A head that cannot become one the engine takes is Deno.serve's at once (which may
        // refuse it before its end); one of too many field lines or over the limit gets 431, or
        // 414 when its request line has not even ended (RFC 6585 §5, RFC 9112 §3).
        if (!c.scan.viable(c.buf, c.start, c.end)) {
          if (c.scan.tooMany) return await c.refuse(TOO_LARGE);
          return await env.relay(c, unread(c));
        }
        if (scanned >= HEAD_LIMIT) {
          return await c.refuse(c.scan.lineDone ? TOO_LARGE : URI_TOO_LONG);
        }
        // While draining, a read that brings nothing soon closes the connection: a new head has
        // LAST_LOOK_MS, one begun before the drain, or the first of a new connection (whose
        // client cannot retry it), what is left of HEAD_GRACE_MS.
        const more = !env.draining()
          ? await c.fill() // may move the unread bytes to the buffer's start
          : await c.lastLook(
            scanned === 0 && c.begun
              ? LAST_LOOK_MS
              : Math.max(LAST_LOOK_MS, env.graceEnd() - Date.now()),
          );
        if (!more) return;
        end = headEnd(c.buf, c.start + Math.max(0, scanned - 3), c.end);
      }
      c.waitingSince = 0;
      // The next head's time is its own: a stamp of this one's left would cut it early.
      c.headSince = NO_HEAD;
      const head = parseRequestHeadAt(c.buf, c.start, end);
      if (head === null) return await env.relay(c, unread(c));
      if (head === NO_HOST) return await c.refuse("400 Bad Request");
      if (head === TOO_MANY_FIELDS) return await c.refuse(TOO_LARGE);
      c.begun = true;
      c.need(end - c.start + head.contentLength);
      let body: Uint8Array<ArrayBuffer> | null = null;
      let stream: ReadableStream<Uint8Array> | null = null;
      const length = head.contentLength;
      c.start = end;
      if (length > 0 && length <= BODY_LIMIT && c.end - end >= length) {
        // A small body that came with its head: handed on as bytes.
        body = c.buf.slice(end, end + length);
        c.start = end + length;
      } else if (length > 0) {
        // Streamed as it comes; the pipeline times a pause in it (408 after the route's idle
        // timeout), as on Deno.serve.
        stream = c.bodyStream(length, head.expectContinue);
      } else if (head.chunked) stream = c.chunkedStream(head.expectContinue);
      readGate.busy(c);
      const again = await exchange(c, head, env, body, stream);
      readGate.leave(c);
      // Answered before its whole body came: the rest is dropped, or lingered on before closing.
      // A client still waiting for a 100 may never send it: the connection closes at once.
      const skipped = !c.bodyPending || (!c.awaitsContinue && await c.skipBody(again));
      if (!again || !skipped || c.broken) return;
      c.endBody();
    }
  } catch {
    // A read or write failed: the client reset the connection.
  } finally {
    readGate.leave(c);
  }
}

/** The unconsumed bytes, copied (the relay writes them while the buffer is let go). */
function unread(c: Conn): Uint8Array {
  return c.buf.slice(c.start, c.end);
}

/** One request and its answer; false when the connection must close after it. */
async function exchange(
  c: Conn,
  head: RequestHead,
  env: Env,
  body: Uint8Array<ArrayBuffer> | null,
  stream: ReadableStream<Uint8Array> | null,
): Promise<boolean> {
  // The parser's arrays, which nothing else holds on to: taken as they are.
  const fields = HeaderList.adopt(head.names, head.values);
  c.exchanging(true);
  // The signal is asked for only when the pipeline waits (a queued upstream connection, a slow
  // exchange): only then is the socket read in the background.
  const req = new WireRequest(
    head.method,
    (env.tls ? "https://" : "http://") + head.host + (head.target === "*" ? "/" : head.target),
    fields,
    () => c.watch(),
    body,
    stream,
  );
  // The Host field as it came (the engine takes only origin-form targets), which the URL above
  // begins with, is the authority: identify() need not find it there again.
  const info = new EngineInfo(c.peer, env.localPort, "http/1.1", env.tls, head.host, head.http10);
  if (head.target === "*") info.asterisk = true;
  // An HTTP/1.0 client cannot take a 1xx (RFC 9110 §15.2).
  if (!head.http10) info.hintsTo(c, null);
  env.counts.served++;
  const m = env.metrics;
  m?.connectionOpened("http/1.1");
  let res: Response;
  try {
    res = await env.handler(req as unknown as Request, info);
  } catch (err) {
    res = unhandled(env.logger, err);
  }
  info.hintsDone();
  if (c.interimWrites !== null) {
    await c.interimWrites;
    c.interimWrites = null;
  }
  // More body known to be left than is dropped after the answer, a body the client may hold back
  // until a 100 that never came (RFC 9110 §10.1.1), or one that stopped coming (a 408, which
  // closes the connection, RFC 9110 §15.5.9): the connection closes after the answer. So does
  // a `*` target with a method other than OPTIONS (`GET *`, `options *`: methods are
  // case-sensitive, RFC 9110 §9.1), as Deno.serve and nginx close after such a request line.
  const badAsterisk = info.asterisk && head.method !== "OPTIONS";
  const keep = !head.close && !badAsterisk && !env.draining() && !c.broken &&
    c.bodyKnownLeft <= SKIP_BYTES &&
    !(c.bodyPending && (c.awaitsContinue || res.status === 408));
  let ok = false;
  const w = {
    head: head.method === "HEAD",
    keep,
    http10: head.http10,
    logger: env.logger,
    metrics: env.metrics,
    // `TE: trailers`: the client takes trailer fields (RFC 9110 §10.1.4), looked at only when an
    // answer has some.
    trailers: () => TE_TRAILERS.test(req.headers.get("te") ?? ""),
  };
  try {
    // A client that left gets no answer (the pipeline's is a stand-in 400 for a 499): one that
    // only ended its sending side would read it as the answer to its request. Deno.serve too
    // writes nothing once the client's stream ended.
    if (c.left) await res.body?.cancel().catch(() => {});
    else {
      ok = await writeResponse(c, res, w);
    }
  } finally {
    c.exchanging(false);
    info.settle(ok);
    m?.connectionClosed("http/1.1");
  }
  return ok && w.keep;
}

function gone(): ProxyError {
  return new ProxyError("client_gone", "Client closed the connection");
}

/** Reason phrases for the statuses Prox answers with most; others go without one. */
const REASONS: Record<number, string> = {
  200: "OK",
  201: "Created",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  416: "Range Not Satisfiable",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/**
 * A request line of HTTP/1.0 at the start of what a relayed connection sent first, after any
 * empty lines (which a server ignores before a request line, RFC 9112 §2.2, and the engine relays).
 */
const HTTP10_LINE = /^(?:\r?\n)*[^\r\n]* HTTP\/1\.0\r?\n/;

/** Fields the engine writes itself from the framing it chose. */
const FRAMING = new Set(["connection", "keep-alive", "transfer-encoding", "content-length"]);

/** A TE field value that lists `trailers`. */
const TE_TRAILERS = /(?:^|,)[ \t]*trailers[ \t]*(?:[;,]|$)/i;

/**
 * The last chunk of a chunked answer: with the upstream's trailers (an HTTP/2 upstream's, see
 * upstream_h2c.ts) when the client said it takes them, else bare.
 */
function lastChunk(res: Response, takes?: () => boolean): Uint8Array {
  const trailers = (res as CountedResponse)[BODY_BYTES]?.trailers;
  if (!trailers || trailers.length === 0 || !takes?.()) return LAST_CHUNK;
  let text = "0\r\n";
  for (const [k, v] of trailers) {
    if (trailerPasses(k)) text += k + ": " + v + "\r\n";
  }
  return headBytes(text + "\r\n");
}

/**
 * Writes `res` to the client: its head, then its body framed by Content-Length when known, else
 * chunked, or to an HTTP/1.0 client by the connection's end. True when the whole answer went out
 * (the connection then carries another unless the client or a drain asked to close it, or the
 * answer's end is the connection's: `o.keep`, which is then set false).
 */
async function writeResponse(
  c: Conn,
  res: Response,
  o: {
    head: boolean;
    keep: boolean;
    http10: boolean;
    logger: Logger;
    metrics?: Metrics;
    trailers?: () => boolean;
  },
): Promise<boolean> {
  const status = res.status;
  const reason = res.statusText || REASONS[status] || "";
  // An HTTP/1.0 client gets an HTTP/1.0 answer (as from Deno.serve), which is what it can read:
  // no chunks, and a connection kept only when it asked and is told so.
  let text = `${o.http10 ? "HTTP/1.0" : "HTTP/1.1"} ${status} ${reason}\r\n`;
  let length: string | null = null;
  let date = false;
  res.headers.forEach((v, k) => {
    if (FRAMING.has(k)) {
      if (k === "content-length") length = v;
      return;
    }
    if (k === "date") date = true;
    text += k + ": " + v + "\r\n";
  });
  if (!date) text += "date: " + httpDate() + "\r\n";
  const keep = o.keep;
  // HTTP/1.0 closes unless told otherwise; HTTP/1.1 keeps the connection unless told otherwise.
  const persistence = o.http10
    ? (keep ? "connection: keep-alive\r\n" : "")
    : (keep ? "" : "connection: close\r\n");
  const noContent = status === 204 || status === 304 || status < 200;
  const raw = (res as RawBodied)[RAW_BODY];
  if (raw !== undefined && !o.head && !noContent && !res.bodyUsed) {
    // The upstream client's buffered answer, as it came: one write, and the body (which Fetch
    // would make a stream of, to be read back) is not touched.
    text += `content-length: ${raw.byteLength}\r\n`;
    text += persistence;
    text += "\r\n";
    // With room in front of the bytes (ports.ts HEADROOM) the head goes there; else both are
    // copied into one buffer.
    const room = (res as Roomy)[HEADROOM]?.() ?? 0;
    if (room >= text.length && raw.byteOffset >= text.length) {
      const out = new Uint8Array(
        raw.buffer,
        raw.byteOffset - text.length,
        text.length + raw.length,
      );
      headInto(text, out);
      await writeAll(c.write, out);
      // Written: a buffer the upstream client lent goes back (ports.ts RELEASE).
      (res as Releasable)[RELEASE]?.();
      return true;
    }
    const h = headBytes(text);
    const out = new Uint8Array(h.byteLength + raw.byteLength);
    out.set(h);
    out.set(raw, h.byteLength);
    (res as Releasable)[RELEASE]?.(); // copied
    await writeAll(c.write, out);
    return true;
  }
  const body = res.body;
  if (o.head || noContent) {
    // No content follows; a HEAD's or a 304's length describes the GET's (RFC 9110 §8.6), which
    // for an answer without a body (a redirect) is 0, as Deno.serve says too.
    if (length !== null && !(status === 204 || status < 200)) {
      text += `content-length: ${length}\r\n`;
    } else if (body === null && !noContent) text += "content-length: 0\r\n";
    text += persistence;
    body?.cancel().catch(() => {});
    await writeAll(c.write, headBytes(text + "\r\n"));
    return true;
  }
  if (body === null) {
    text += "content-length: 0\r\n";
    text += persistence;
    await writeAll(c.write, headBytes(text + "\r\n"));
    return true;
  }
  const declared = length !== null && /^[0-9]{1,15}$/.test(length) ? Number(length) : -1;
  // Without a length, an HTTP/1.0 client reads the body to the connection's end: no framing, and
  // the connection closes after it (`o.keep` is set false).
  const toEnd = declared < 0 && o.http10;
  if (declared >= 0) text += `content-length: ${declared}\r\n`;
  else if (!toEnd) text += "transfer-encoding: chunked\r\n";
  if (!toEnd) text += persistence;
  // Chunks of the upstream client's, pooled when given back once written (ports.ts LEND_CHUNKS).
  const written = (body as ChunkLending)[LEND_CHUNKS]?.();
  const reader = body.getReader();
  // Head and body go out together as far as they are there together (see Coalesced).
  const out = new Coalesced(c.write, written);
  out.add(headBytes(text + "\r\n"));
  const flush = async () => {
    try {
      await out.flush();
    } catch (err) {
      const cause = (err as WriteFailed).cause;
      reader.cancel(cause).catch(() => {});
      throw cause;
    }
  };
  let sent = 0;
  let left: AbortSignal | undefined;
  const cancel = () => reader.cancel(left!.reason).catch(() => {});
  for (let reads = 0;; reads++) {
    // A body that is not there in one read may take long (events, a stalled upstream): a client
    // that leaves meanwhile must cancel it, as Deno.serve does, or it streams (and holds its
    // upstream connection) for nobody.
    if (!left && (reads > 0 || declared < 0)) {
      left = c.watch();
      if (left.aborted) cancel();
      else left.addEventListener("abort", cancel, { once: true });
    }
    let chunk: ReadableStreamReadResult<Uint8Array>;
    let next: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
    try {
      next = reader.read();
      if (out.size > 0 && (await Promise.race([next, afterIo()])) === AFTER_IO) {
        // The next part is not there yet: what is held goes now.
        await out.flush();
      }
      chunk = await next;
    } catch (err) {
      if (err instanceof WriteFailed) {
        // The read still pending settles when the body is cancelled; nobody waits for it.
        next?.catch(() => {});
        reader.cancel(err.cause).catch(() => {});
        throw err.cause;
      }
      // A gRPC call that timed out, to a client that takes trailers: grpc-status 4 in the last
      // chunk's trailer section (below).
      if (declared < 0 && !toEnd && o.trailers?.() && deadlineTrailers(res, err)) {
        left?.removeEventListener("abort", cancel);
        break;
      }
      // The body failed after the head went out (an upstream that reset mid-body): the client
      // sees a short answer (no last chunk, or fewer bytes than declared) and the connection ends.
      bodyFailed(o.logger, err, o.metrics);
      await out.flush().catch(() => {});
      return false;
    }
    if (chunk.done) {
      left?.removeEventListener("abort", cancel);
      if (left?.aborted) return false;
      break;
    }
    const bytes = chunk.value;
    if (bytes.byteLength === 0) continue;
    if (declared >= 0) {
      if (sent + bytes.byteLength > declared) {
        // More than declared (a static file that grew while it was sent): what fits goes out,
        // the rest is dropped, and the answer is complete as its head framed it, so the
        // connection goes on to the next request (nginx sends a file's stat'ed length too).
        out.add(bytes.subarray(0, declared - sent));
        left?.removeEventListener("abort", cancel);
        reader.cancel().catch(() => {});
        await flush();
        return !left?.aborted;
      }
      out.add(bytes);
    } else if (toEnd) out.add(bytes);
    else {
      out.add(ascii.encode(bytes.byteLength.toString(16) + "\r\n"));
      out.add(bytes);
      out.add(CRLF);
    }
    sent += bytes.byteLength;
    if (out.size >= FLUSH_AT) await flush();
  }
  if (declared < 0 && !toEnd) out.add(lastChunk(res, o.trailers));
  await flush();
  if (declared >= 0) return sent === declared;
  // Complete, though the connection must end for the client to know it.
  if (toEnd) o.keep = false;
  return true;
}

/**
 * A streamed answer's bytes held until the next part is not there at once, then written in one
 * write: its head, chunks that came together, the last chunk. On TLS, where Deno gives no way to
 * set TCP_NODELAY, a second small write while the first is unacknowledged waits for the client's
 * delayed ACK (Nagle): a small streamed answer written as head, chunk and last chunk took 44 ms
 * on a keep-alive connection. Held bytes go out once they reach FLUSH_AT.
 */
class Coalesced {
  #parts: Uint8Array[] = [];
  size = 0;
  /** `written`: called with each part once written (or copied), when given. */
  constructor(
    readonly write: SocketWrite,
    readonly written?: (part: Uint8Array) => void,
  ) {}

  add(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) return;
    this.#parts.push(bytes);
    this.size += bytes.byteLength;
  }

  /** Writes what is held; a failed write rejects with WriteFailed. */
  async flush(): Promise<void> {
    if (this.size === 0) return;
    const parts = this.#parts;
    let bytes = parts[0];
    // Parts that came together are joined in a kept buffer, where one fits (a fresh one each
    // time was zero-filled, and garbage for the collector at every flush of a large answer).
    let join: ArrayBuffer | undefined;
    if (parts.length > 1) {
      join = this.size <= JOINS.size ? JOINS.take() : undefined;
      bytes = join ? new Uint8Array(join, 0, this.size) : new Uint8Array(this.size);
      let at = 0;
      for (const p of parts) {
        bytes.set(p, at);
        at += p.byteLength;
      }
    }
    this.#parts = [];
    this.size = 0;
    try {
      await writeAll(this.write, bytes);
    } catch (err) {
      throw new WriteFailed(err);
    } finally {
      if (join) JOINS.give(join);
    }
    if (this.written) { for (const p of parts) this.written(p); }
  }
}

/** A write to the client failed (as opposed to the body being read). */
class WriteFailed extends Error {
  constructor(cause: unknown) {
    super("write failed", { cause });
  }
}

/** Held bytes of a streamed answer past this go out without waiting for more. */
const FLUSH_AT = 16 * 1024;
/**
 * Buffers to join a flush's parts in: held bytes reach FLUSH_AT, and the last part added may be a
 * whole read of the upstream client's (64 KiB, or what its connection's buffer held).
 */
const JOINS = new BufferPool(FLUSH_AT + 80 * 1024, 16);
const CRLF = ascii.encode("\r\n");
const AFTER_IO = Symbol("after I/O");
/**
 * Settles after the event loop's next turn of I/O callbacks (node:timers' setImmediate, about
 * 1.4 µs; a 0 ms setTimeout waits a millisecond or more): a body part already on its way through
 * promises comes first.
 */
function afterIo(): Promise<typeof AFTER_IO> {
  return new Promise((r) => setImmediate(r, AFTER_IO));
}

const LAST_CHUNK = ascii.encode("0\r\n\r\n");
const CONTINUE = ascii.encode("HTTP/1.1 100 Continue\r\n\r\n");
/** The engine's answer to a head it refuses, worded as Deno.serve's 400 (the connection closes). */
const refusal = (status: string) =>
  ascii.encode(
    `HTTP/1.1 ${status}\r\ncontent-length: 0\r\ndate: ${httpDate()}\r\nconnection: close\r\n\r\n`,
  );
const TOO_LARGE = "431 Request Header Fields Too Large";
const URI_TOO_LONG = "414 URI Too Long";
/** A request line whose version is HTTP/x.y with a major version other than 1. */
const OTHER_MAJOR = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^ \r\n]+ HTTP\/[02-9]\.[0-9]\r?\n/;
const UNAVAILABLE = ascii.encode(
  "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
);

/** Whether `bytes` begin the HTTP/2 client preface (all of it, or as much as came). */
function startsPreface(bytes: Uint8Array): boolean {
  const n = Math.min(bytes.length, PREFACE.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== PREFACE[i]) return false;
  return true;
}

/** A head's bytes: field values are byte strings (Latin-1), not UTF-8. */
function headBytes(text: string): Uint8Array {
  // As UTF-8, which is what ASCII text encodes to: one byte per character unless a value held
  // obs-text (0x80–0xFF), which UTF-8 would spread over two bytes.
  const utf8 = ascii.encode(text);
  if (utf8.byteLength === text.length) return utf8;
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** Writes a head's bytes (Latin-1, one byte per character) at the start of `out`. */
function headInto(text: string, out: Uint8Array): void {
  // As UTF-8 while it is ASCII, bounded to the head's own length so that a value with obs-text
  // (two UTF-8 bytes) cannot spill into what follows; then byte by byte.
  if (ascii.encodeInto(text, out.subarray(0, text.length)).read === text.length) return;
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
}

async function writeAll(write: SocketWrite, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.byteLength;) {
    off += await write(off === 0 ? bytes : bytes.subarray(off));
  }
}

/**
 * Copies `from` to `to` until `from` ends, then ends `to`'s writing side when `halfClose`. Each
 * read and its write take a turn, as the engine's own requests do (read_gate.ts): the relay's
 * reads are JavaScript's too. With `halfClose` (the client's bytes towards the server), a write
 * that fails means the server closed while the client still sent (an answer before the body, a
 * 501, a 400): nothing is closed here, and the other direction passes that answer on to the
 * client and then ends both, where closing them at once lost the answer.
 */
async function pipe(
  from: Deno.Conn,
  to: Deno.Conn,
  halfClose: boolean,
  onBytes?: (buf: Uint8Array, n: number) => void,
): Promise<void> {
  const small = new Uint8Array(RELAY_MIN);
  let large: Uint8Array | null = null;
  relayBytes += RELAY_MIN;
  const read = socketReader(from); // (the buffer is never empty: 0 is the end of the stream)
  const write = socketWriter(to);
  const turn: Reader = { turnEnds: -1, slot: -1 };
  try {
    for (;;) {
      const wait = readGate.enter(turn);
      if (wait !== undefined) await wait;
      const buf: Uint8Array = large ?? small;
      const n = await read(buf);
      if (n === 0) break;
      onBytes?.(buf, n);
      try {
        await writeAll(write, buf.subarray(0, n));
      } catch (err) {
        if (halfClose) return;
        throw err;
      }
      readGate.leave(turn);
      if (n === buf.length) {
        if (large === null) {
          large = relaySpares.pop() ?? new Uint8Array(RELAY_MAX);
          relayBytes += RELAY_MAX;
        }
      } else if (large !== null) {
        giveBack(large);
        large = null;
      }
    }
    readGate.leave(turn);
    if (halfClose) await to.closeWrite();
  } catch {
    // One side failed: closing both ends the other direction too.
    closeQuietly(from);
    closeQuietly(to);
  } finally {
    readGate.leave(turn);
    relayBytes -= RELAY_MIN;
    if (large !== null) giveBack(large);
  }
}

function giveBack(large: Uint8Array): void {
  relayBytes -= RELAY_MAX;
  if (relaySpares.length < RELAY_SPARES) relaySpares.push(large);
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}
