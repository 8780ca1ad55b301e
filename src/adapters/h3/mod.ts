// HTTP/3 listener on Deno.QuicEndpoint: accepts QUIC connections with ALPN "h3" and serves
// each request through the shared Handler. Certificates rotate live, shutdown sends GOAWAY and
// drains. Public entry point of src/adapters/h3/.

import type { Handler, Logger, Metrics } from "../../ports.ts";
import { H3Connection } from "./connection.ts";
import { H3Error } from "./frames.ts";
import { timerDelay } from "../../config/duration.ts";
import { formatListenAddr } from "../../config/listen.ts";
import { unmapped } from "../http_serve.ts";
import { ipGroupKey } from "../../domain/ip.ts";

/**
 * The seed's `protocols.http3_config` keys. Deno 2.9.6 offers only some QUIC knobs:
 * `max_streams_bidi` → maxConcurrentBidirectionalStreams, `max_idle_timeout` (ms) →
 * maxIdleTimeout, `congestion_control` cubic → Cubic, bbr → BBR, reno → Cubic (no Reno in
 * Deno). Accepted and ignored: `max_data`, `max_stream_data` (quinn's flow-control windows are
 * fixed), `max_packet_size` (quinn does path MTU discovery). `enable_0rtt`: Deno's QUIC stack
 * always accepts 0-RTT, but `accept()` resolves only once the handshake has completed, so no
 * request reaches the handler before the client proved it holds the keys (RFC 8470 §3, "delay
 * processing until the handshake completes"): a replayed flight never completes and is never
 * served, whatever the setting.
 */
export interface H3Options {
  max_data?: number;
  max_stream_data?: number;
  max_streams_bidi?: number;
  max_idle_timeout?: number;
  congestion_control?: "cubic" | "reno" | "bbr";
  enable_0rtt?: boolean;
  max_packet_size?: number;
  /** Largest request header section, advertised as SETTINGS_MAX_FIELD_SECTION_SIZE. */
  max_field_section_size?: number;
  /** Most concurrent connections; further handshakes are refused (default 10,000). */
  max_connections?: number;
  /** Milliseconds a request stream may take to send its HEADERS (default 30,000). */
  request_header_timeout?: number;
}

/** A running HTTP/3 listener. */
export interface H3Listener {
  readonly port: number;
  /** Serves new connections with another certificate; existing ones keep theirs. */
  setCertificate(cert: string, key: string): void;
  /**
   * Stops serving as shutdown does but keeps the UDP port bound, new connections refused, so that
   * `resume()` needs no rebind (Deno frees a port only when the endpoint is garbage-collected).
   */
  pause(graceMs: number): Promise<void>;
  /** Accepts connections again after `pause`. */
  resume(): void;
  /** GOAWAY on every connection, waits up to `graceMs` for requests, then closes. */
  shutdown(graceMs: number): Promise<void>;
}

/** `Alt-Svc` value advertising HTTP/3 on `port` (RFC 7838 §3, RFC 9114 §3.1.1). */
export function altSvcValue(port: number, maxAge: number): string {
  return `h3=":${port}"; ma=${maxAge}`;
}

/** Maps http3_config keys to Deno's QUIC transport options; returns what it had to ignore. */
export function quicTransportOptions(
  o: H3Options,
): { transport: Deno.QuicTransportOptions; ignored: string[] } {
  const transport: Deno.QuicTransportOptions = {
    maxIdleTimeout: o.max_idle_timeout ?? 30_000,
    maxConcurrentBidirectionalStreams: o.max_streams_bidi ?? 100,
    maxConcurrentUnidirectionalStreams: 16,
    congestionControl: o.congestion_control === "bbr" ? "low-latency" : "throughput",
  };
  const ignored: string[] = [];
  // The seed's defaults (10 MB, 1 MB) are not worth a log line; other values are.
  if (o.max_data !== undefined && o.max_data !== 10_000_000) ignored.push("max_data");
  if (o.max_stream_data !== undefined && o.max_stream_data !== 1_000_000) {
    ignored.push("max_stream_data");
  }
  if (o.max_packet_size !== undefined) ignored.push("max_packet_size");
  if (o.congestion_control === "reno") ignored.push("congestion_control=reno (using cubic)");
  // Deno's QUIC stack accepts 0-RTT whatever is asked; Prox runs no request before the
  // handshake completes, which is what refusing early data protects against.
  if (o.enable_0rtt === false) ignored.push("enable_0rtt=false (0-RTT is always accepted)");
  return { transport, ignored };
}

/** Shortest interval between two "connections refused" log lines. */
const REFUSED_LOG_MS = 10_000;

/** Wait after the drain before closing an idle connection (a request may cross the GOAWAY). */
const LINGER_MS = 1000;
/** Wait after a connection's last response for the client to take it all and close. */
const UNACKED_MS = 10_000;

/** GOAWAY on `all`, waits up to `graceMs` for their requests, then closes them. */
async function drain(all: H3Connection[], graceMs: number, reason: string): Promise<void> {
  await Promise.all(all.map((c) => c.goaway()));
  const deadline = Date.now() + Math.max(0, graceMs);
  await within(Promise.all(all.map((c) => c.drained())), graceMs);
  // A QUIC close drops data not yet acknowledged, and Deno cannot tell when it is: a response
  // written in full may still be on its way to a slow client (up to its flow-control window).
  // So let the clients close first (they do once idle after GOAWAY), giving a connection that
  // answered recently UNACKED_MS from its last response, an idle one LINGER_MS.
  await Promise.all(all.map(async (c) => {
    const linger = Math.max(LINGER_MS, c.lastActive + UNACKED_MS - Date.now());
    await within(c.closed, Math.min(linger, deadline - Date.now()));
    c.close(H3Error.NO_ERROR, reason);
  }));
}

/** Waits for `p` at most `ms` milliseconds. */
async function within(p: Promise<unknown>, ms: number): Promise<void> {
  if (ms <= 0) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([p, new Promise<void>((r) => timer = setTimeout(r, timerDelay(ms)))]);
  clearTimeout(timer);
}

/** Starts an HTTP/3 listener on UDP `hostname:port` (port 0 picks one). */
export function startH3Listener(opts: H3ListenerOptions): Promise<H3Listener> {
  return Promise.resolve().then(() => listen(opts));
}

/** Options of startH3Listener. */
export interface H3ListenerOptions {
  hostname: string;
  port: number;
  cert: string;
  key: string;
  handler: Handler;
  logger: Logger;
  /** Counts connections as protocol "h3" (optional). */
  metrics?: Metrics;
  options?: H3Options;
  /**
   * `limits.max_connections` and `max_connections_per_ip`, read at each connection (a reload
   * changes them live); counted apart from the TCP listener's (a browser keeps one of each).
   */
  connectionLimits?: () => { total?: number; perIp?: number; ipv6Prefix?: number };
}

function listen(opts: H3ListenerOptions): H3Listener {
  const { logger } = opts;
  const { transport, ignored } = quicTransportOptions(opts.options ?? {});
  if (ignored.length > 0) {
    logger.info("HTTP/3 settings not supported by Deno QUIC are ignored", {
      keys: ignored.join(", "),
    });
  }
  const endpoint = new Deno.QuicEndpoint({ hostname: opts.hostname, port: opts.port });
  const listenWith = (cert: string, key: string) =>
    endpoint.listen({ cert, key, alpnProtocols: ["h3"], ...transport });
  // Every listener stays referenced: a collected one disables the endpoint (Deno 2.9.6).
  const listeners: Deno.QuicListener[] = [listenWith(opts.cert, opts.key)];
  const port = endpoint.addr.port;
  const connections = new Set<H3Connection>();
  const limits = {
    maxFieldSectionSize: opts.options?.max_field_section_size ?? 64 * 1024,
    maxControlFrame: 16 * 1024,
    headerTimeoutMs: opts.options?.request_header_timeout ?? 30_000,
    // A third of the idle timeout, and often enough for a client whose own timeout is shorter.
    keepAliveMs: Math.min(Math.floor(transport.maxIdleTimeout! / 3), 10_000),
  };
  let stopping = false;
  let paused = false;
  const maxConnections = opts.options?.max_connections ?? 10_000;
  // Refusals are logged at most every REFUSED_LOG_MS with a count: a flood of Initial packets
  // (from spoofable UDP sources) must not become a flood of log lines.
  let refused = 0;
  let refusedLoggedAt = -Infinity;
  let handshaking = 0;
  /** Open connections by client address; an address leaves at 0 (bounded by the connections). */
  const perIp = new Map<string, number>();
  const countIp = (ip: string, d: number) => {
    const n = (perIp.get(ip) ?? 0) + d;
    if (n > 0) perIp.set(ip, n);
    else perIp.delete(ip);
  };
  /** Refusals logged at most every REFUSED_LOG_MS, with a count (a flood is not a log flood). */
  const refusedLog = (what: Record<string, unknown>) => {
    refused++;
    if (performance.now() - refusedLoggedAt < REFUSED_LOG_MS) return;
    logger.warn("HTTP/3 connections refused: limit reached", { ...what, refused });
    refusedLoggedAt = performance.now();
    refused = 0;
  };

  const acceptLoop = (async () => {
    for (;;) {
      let incoming: Deno.QuicIncoming;
      try {
        incoming = await listeners[0].incoming();
      } catch {
        return; // endpoint closed
      }
      // Handshakes count too: each holds ~15 KB until it completes or times out, and Initials
      // that never finish (spoofed sources) would otherwise pile up without bound.
      const asked = opts.connectionLimits?.();
      const total = Math.min(maxConnections, asked?.total ?? Infinity);
      if (stopping || paused || connections.size + handshaking >= total) {
        incoming.refuse();
        if (!stopping && !paused) {
          // limits.max_connections's refusal, as on TCP; http3_config's own is only logged.
          if (asked?.total !== undefined && total === asked.total) {
            opts.metrics?.connectionRefused("max_connections");
          }
          refusedLog({ maxConnections: total });
        }
        continue;
      }
      // Never touch incoming.remoteAddr & co: the getters consume the connection (Deno 2.9.6).
      handshaking++;
      const accepted = (incoming.accept<false>() as Promise<Deno.QuicConn>)
        .finally(() => handshaking--);
      accepted.then((conn) => {
        // The client's address is known once the handshake is done (a QUIC source address
        // before it may be spoofed): past max_connections_per_ip the connection is closed with
        // H3_EXCESSIVE_LOAD (RFC 9114 §8.1), as TCP ones are refused.
        const ip = unmapped((conn.remoteAddr as Deno.NetAddr).hostname);
        const asked = opts.connectionLimits?.();
        const perIpMax = asked?.perIp;
        // An IPv6 client by its /64 (limits.ipv6_prefix), as on TCP; kept for the release.
        const key = ipGroupKey(ip, asked?.ipv6Prefix ?? 64);
        if (perIpMax !== undefined && (perIp.get(key) ?? 0) >= perIpMax) {
          conn.close({ closeCode: H3Error.EXCESSIVE_LOAD, reason: "Too many connections" });
          opts.metrics?.connectionRefused("max_connections_per_ip");
          refusedLog({ maxConnectionsPerIp: perIpMax, peer: ip });
          return;
        }
        countIp(key, 1);
        const c = new H3Connection(conn, {
          handler: opts.handler,
          logger,
          localPort: port,
          limits,
        });
        connections.add(c);
        opts.metrics?.connectionOpened("h3");
        c.closed.finally(() => {
          connections.delete(c);
          countIp(key, -1);
          opts.metrics?.connectionClosed("h3");
        });
        c.serve().catch((err) => logger.debug("HTTP/3 connection ended", { error: String(err) }));
        if (stopping || paused) c.goaway();
      }, (err) => logger.debug("HTTP/3 handshake failed", { error: String(err) }));
    }
  })();

  // IPv6 in brackets ("[::]:443"), as the TCP listeners are logged: ":::443" hides the port.
  const address = formatListenAddr({ hostname: opts.hostname, port });
  logger.info("HTTP/3 listening", { address, transport: "udp" });
  return {
    port,
    setCertificate(cert, key) {
      listeners.push(listenWith(cert, key));
      logger.info("HTTP/3 certificate replaced");
    },
    async pause(graceMs) {
      if (stopping || paused) return;
      paused = true;
      logger.info("HTTP/3 paused", { address });
      await drain([...connections], graceMs, "HTTP/3 turned off");
    },
    resume() {
      if (stopping || !paused) return;
      paused = false;
      logger.info("HTTP/3 listening", { address, transport: "udp" });
    },
    async shutdown(graceMs) {
      if (stopping) return;
      stopping = true;
      const all = [...connections];
      await drain(all, graceMs, "shutdown");
      for (const c of connections) c.close(H3Error.NO_ERROR, "shutdown");
      for (const l of listeners) l.stop();
      endpoint.close({ closeCode: H3Error.NO_ERROR, reason: "shutdown" });
      await acceptLoop;
      await Promise.allSettled(all.map((c) => c.closed));
    },
  };
}

/** How long browsers may remember the HTTP/3 alternative (`ma`), in seconds. */
export const ALT_SVC_MAX_AGE = 86400;

/**
 * Starts HTTP/3 beside a TLS listener: same host, same port number (UDP), same certificate.
 * Returns null (logged) when the UDP port cannot be bound, so TCP keeps serving without h3.
 */
export async function startH3Beside(
  tcp: { hostname: string; port: number },
  opts: Omit<H3ListenerOptions, "hostname" | "port">,
): Promise<H3Listener | null> {
  try {
    return await startH3Listener({ ...opts, hostname: tcp.hostname, port: tcp.port });
  } catch (err) {
    opts.logger.error(`Cannot start HTTP/3 on UDP port ${tcp.port}: ${err}`, {});
    return null;
  }
}
