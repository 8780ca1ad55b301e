// Deno.serve listeners: HTTP/1.1 and HTTP/2 (h2 by ALPN with TLS, h2c with prior knowledge
// without), turned into the one Handler.

import { crowd } from "./gc_hint.ts";
import { formatListenAddr } from "../config/listen.ts";
import type { ListenAddr } from "../config/listen.ts";
import { ProxyError } from "../domain/errors.ts";
import { bodyFailed } from "./engine_shared.ts";
import type { ClientCert, ClientInfo, Handler, Logger, Metrics, Protocol } from "../ports.ts";
import { recent } from "../proxy/recent.ts";

/**
 * Prox's own HTTP/1.1 engine's figures: requests it served itself, connections it relayed, and
 * its turns (read_gate.ts, shared by the process's engine listeners): held, and connections
 * waiting for one.
 */
export interface EngineCounts {
  readonly served: number;
  readonly relayed: number;
  readonly turnsHeld: number;
  readonly turnsWaiting: number;
  /** Its client connections open now. */
  readonly connections: number;
  /** The bytes of their read buffers (each waits for its next request with 2 to 8 KiB). */
  readonly readBufferBytes: number;
  /** Prox's own HTTP/2 engine (h2/connection.ts): requests served, connections, streams open. */
  readonly http2Served: number;
  readonly http2Connections: number;
  readonly http2Streams: number;
  /** The bytes of their read and write buffers (an idle one holds a 2 KiB read buffer). */
  readonly http2BufferBytes: number;
}

/** A running listener. */
export interface Listener {
  readonly hostname: string;
  readonly port: number;
  readonly tls: boolean;
  /** Who serves it: Deno.serve, or Prox's own engines (h1/server.ts, h2/connection.ts). */
  readonly engine: "deno" | "prox";
  /** Prox's own engine: requests it served itself and connections it relayed since start; turns. */
  readonly counts?: EngineCounts;
  /** False while the listener is bound again after its accept loop failed (keepAccepting). */
  readonly accepting?: boolean;
  /**
   * Stops accepting and lets in-flight requests finish. Requests whose body is still coming
   * in are waited for first, for up to `bodyWaitMs` (see `listen`).
   */
  shutdown(opts?: { bodyWaitMs?: number }): Promise<void>;
  /** Closes at once. */
  close(): Promise<void>;
  /**
   * `tls.client_auth` (Prox's engine): closes the open connections whose client certificate the
   * revocation lists now in place list as revoked; returns how many.
   */
  recheckClients?(): number;
}

/**
 * The protocol of a request on a Deno.serve listener, which does not say which version it
 * speaks. HTTP/1.1 requires a Host field (RFC 9112 §3.2) and HTTP/2 carries the authority in its
 * `:authority` pseudo-field instead (RFC 9113 §8.3.1), which Deno does not turn into a Host
 * header: so a request without Host is HTTP/2 (h2 with TLS, h2c without). An HTTP/1.0 request
 * without Host would be counted as HTTP/2 too.
 */
export function protocolOf(req: Request, tls: boolean): Protocol {
  if (req.headers.has("host")) return "http/1.1";
  return tls ? "h2" : "h2c";
}

/**
 * An IPv4 client of a dual-stack listener (`[::]:443`) as itself: "::ffff:10.0.0.1" → "10.0.0.1",
 * so X-Forwarded-For, Forwarded, logs, rate-limit keys and `{client_ip}` name it as IPv4 does.
 */
export function unmapped(hostname: string): string {
  return hostname.startsWith("::ffff:") && hostname.includes(".") ? hostname.slice(7) : hostname;
}

/** Starts a Deno.serve listener that calls `handler` for every request. */
export function listen(
  addr: ListenAddr,
  opts: {
    handler: Handler;
    logger: Logger;
    cert?: string;
    key?: string;
    reusePort?: boolean;
    /** Counts requests in progress as `prox_active_connections` (no connection events here). */
    metrics?: Metrics;
    /** The port requests report as theirs, when another listener relays to this one. */
    localPort?: number;
    /**
     * For a listener that another one relays connections to (h1/server.ts): the client a relayed
     * connection carries, by the relay's own address; a connection it does not know gets a 403.
     */
    peerOf?: (
      relay: Deno.NetAddr,
    ) =>
      | {
        hostname: string;
        port: number;
        protocol?: Protocol;
        http10?: boolean;
        tls?: boolean;
        clientCert?: ClientCert;
      }
      | undefined;
    /** Bind again on a new ephemeral port, not the same one, after the accept loop failed. */
    anyPort?: boolean;
  },
): Listener {
  const tls = opts.cert !== undefined || opts.key !== undefined;
  const abort = new AbortController();
  // Deno 2.9's graceful shutdown makes request bodies still being received unreadable at once
  // (denoland/deno#36809; the client would get 400): a drain waits for them before it begins.
  let uploads = 0;
  let inFlight = 0;
  let uploadsDone: (() => void) | null = null;
  let localPort = addr.port;
  const start = (port: number) =>
    Deno.serve({
      hostname: addr.hostname,
      port,
      reusePort: opts.reusePort,
      signal: abort.signal,
      ...(tls ? { cert: opts.cert!, key: opts.key! } : {}),
      onListen() {},
      onError(err) {
        // Also called when a response body fails after its head went out (an upstream that stalls
        // or resets mid-body): an expected ProxyError, not a bug; the access record says incomplete,
        // and prox_response_body_failures_total counts it.
        bodyFailed(opts.logger, err, opts.metrics);
        return new Response("Internal server error\n", { status: 500 });
      },
    }, (req, info) => {
      recent.serverInfo = info;
      let remote = info.remoteAddr as Deno.NetAddr | { hostname: string; port: number };
      let protocol: Protocol | undefined;
      let http10 = false;
      let secure = tls;
      if (opts.peerOf) {
        const client = opts.peerOf(remote as Deno.NetAddr);
        if (!client) return new Response("Not a relayed connection\n", { status: 403 });
        remote = client;
        // The relay saw how the connection began, which a request here does not say.
        protocol = client.protocol;
        http10 = client.http10 === true;
        // A relayed TLS connection (the engine's TLS listener decrypted it).
        secure = client.tls ?? tls;
      }
      const ci: ClientInfo = {
        remoteAddr: { hostname: unmapped(remote.hostname), port: remote.port },
        localPort: opts.localPort ?? localPort,
        protocol: protocol ?? protocolOf(req, secure),
        http10,
        tls: secure,
        completed: info.completed,
      };
      // RFC 9112 §3.2: an HTTP/1.1 request without Host gets 400. The engine refuses one it
      // parses itself; one it relayed here (an odd head, or any request on a connection relayed
      // earlier) would get Deno's made-up `localhost:<port>` and be routed and proxied. (Not on
      // Deno.serve's own listener, where such a request counts as HTTP/2: protocolOf.)
      if (protocol === "http/1.1" && !http10 && !req.headers.has("host")) {
        ci.refused = { kind: "bad_request", message: "Missing Host header", method: req.method };
      }
      // A client certificate the engine's TLS listener verified (tls.client_auth).
      const cert = opts.peerOf ? (remote as { clientCert?: ClientCert }).clientCert : undefined;
      if (cert) ci.clientCert = cert;
      // A request without an authority (no Host) gets `localhost:<this listener's port>` from
      // Deno: a relayed one names the port its client connected to, as on the default engine.
      if (opts.localPort !== undefined && !req.headers.has("host")) {
        const made = `http://localhost:${localPort}/`;
        if (req.url.startsWith(made)) ci.authority = `localhost:${opts.localPort}`;
      }
      // Requests in flight: for the metrics, and for the memory reducer (gc_hint.ts `crowd`).
      const m = opts.metrics;
      m?.connectionOpened(ci.protocol);
      crowd(++inFlight);
      const done = () => {
        inFlight--;
        m?.connectionClosed(ci.protocol);
      };
      info.completed.then(done, done);
      // A body (RFC 9112 §6.3: Content-Length or Transfer-Encoding): counted until the handler
      // has its response, which for a proxied upload comes once the upstream read it.
      const cl = req.headers.get("content-length");
      // HTTP/2 has no Transfer-Encoding: a body of unknown length is only a stream.
      const streamed = cl === null && req.body !== null && ci.protocol !== "http/1.1";
      if (streamed) req = confirmedEnd(req);
      else if ((cl === null || cl === "0") && !req.headers.has("transfer-encoding")) {
        // A WebSocket upgrade's signal is made now, so that it aborts if the client leaves while
        // the upstream is connected: made later it never does, and an upgrade answered to a
        // client that has left holds its connection for good (Deno 2.9.6; websocket_deno.ts).
        // So is an HTTP/2 request's: one made after its client reset the stream (or closed the
        // connection) never aborts, and a request that waits for a silent upstream kept that
        // upstream request until its timeout (the upstream client looks the signal up late).
        if (ci.protocol !== "http/1.1" || req.headers.has("upgrade")) req.signal;
        return closingIfDraining(opts.handler(req, ci), ci);
      } else if (ci.protocol !== "http/1.1") {
        // Deno makes a request's signal when first asked for, and one made after the client
        // reset its stream never aborts: asked now, so that a reset upload (whose body ends
        // short of its Content-Length, as if complete) shows as the client leaving (resetOr).
        req.signal;
      }
      uploads++;
      const res = opts.handler(req, ci);
      res.finally(() => --uploads === 0 && uploadsDone?.()).catch(() => {});
      return closingIfDraining(res, ci);
    });
  // While the listener drains, an HTTP/1.1 answer says `connection: close` (RFC 9112 §9.6), as
  // Prox's own engine does: Deno's drain closes the connection after it but does not say so, and
  // a keep-alive client would send its next request on a connection about to close. (Deno 2.9.6
  // sends the field but does not close on it by itself: a compliant client closes on reading it.)
  const closingIfDraining = async (answer: Promise<Response>, ci: ClientInfo) => {
    const res = await answer;
    if (!closed || ci.protocol !== "http/1.1" || res.status === 101) return res;
    return withConnectionClose(res);
  };
  const serving = keepAccepting(start, addr.port, {
    logger: opts.logger,
    onServer: (s) => localPort = s.addr.port,
    anyPort: opts.anyPort,
  });
  let closed = false;
  let draining = false;
  return {
    hostname: serving.current.addr.hostname,
    get port() {
      return serving.current.addr.port;
    },
    get accepting() {
      return serving.accepting;
    },
    tls,
    engine: "deno",
    async shutdown(o) {
      if (closed) return;
      closed = true;
      serving.stop();
      if (uploads > 0 && (o?.bodyWaitMs ?? 0) > 0) {
        const done = new Promise<void>((r) => uploadsDone = r);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<void>((r) => timer = setTimeout(r, o!.bodyWaitMs));
        await Promise.race([done, late]);
        clearTimeout(timer);
        if (abort.signal.aborted) return; // closed meanwhile
      }
      draining = true;
      await serving.current.shutdown();
    },
    async close() {
      closed = true;
      serving.stop();
      // Deno 2.9.6 cannot hard-close a server whose graceful shutdown began: aborting the
      // signal then throws an uncatchable BadResource. What remains is cut at process exit.
      if (draining) return;
      abort.abort();
      await serving.current.finished.catch(() => {});
    },
  };
}

/**
 * `res` with `connection: close` (a Response whose headers are immutable, such as fetch's, is
 * copied with its status and body).
 */
export function withConnectionClose(res: Response): Response {
  try {
    res.headers.set("connection", "close");
    return res;
  } catch {
    const headers = new Headers(res.headers);
    headers.set("connection", "close");
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
  }
}

/**
 * hyper ends an HTTP/2 request body that the client reset with CANCEL (what curl and browsers
 * send when they abort an upload) as if END_STREAM had come; only the request's signal, aborted
 * an event-loop turn or two later, tells. Without a Content-Length nothing else shows the body
 * short, and the upstream took the part for the whole upload (the last chunk, or a small body
 * sent whole). So the end of such a body is passed on only once a few turns went by without
 * that abort; after an abort the body fails as the client's (499), never ending cleanly.
 */
export function confirmedEnd(req: Request): Request {
  const signal = req.signal;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let got = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      reader ??= req.body!.getReader();
      const r = await reader.read();
      if (!r.done) {
        got ||= r.value.byteLength > 0;
        return ctl.enqueue(r.value);
      }
      // An empty one ends at once: a request that ended with its head has no body (upstream).
      if (got && await abortedSoon(signal, END_TURNS)) {
        ctl.error(new ProxyError("client_gone", "Client reset its request stream"));
      } else ctl.close();
    },
    cancel: (reason) => (reader ?? req.body!).cancel(reason),
  }, { highWaterMark: 0 });
  // @ts-ignore: duplex is required for streaming bodies but missing from the lib types
  return new Request(req, { body, duplex: "half" });
}

/** Turns of the event loop waited for a reset's abort (it came within two, checked under load). */
const END_TURNS = 4;

/** True once `signal` aborts within `turns` turns of the event loop (timer phases). */
async function abortedSoon(signal: AbortSignal, turns: number): Promise<boolean> {
  for (let i = 0; i < turns && !signal.aborted; i++) {
    await new Promise((r) => setTimeout(r, 0));
  }
  return signal.aborted;
}

/**
 * Deno.serve ends its accept loop at the first accept error (EMFILE: file descriptors ran out,
 * e.g. under a flood of idle connections) and rejects `finished`, which would crash the process
 * and otherwise leave the port closed. This logs it and listens again on the same port (a new
 * ephemeral one with `anyPort`), with back-off (100 ms, doubling while it keeps failing, up to
 * 5 s), until `stop()`; `accepting` is false meanwhile. Connections already accepted go on.
 */
export function keepAccepting(
  start: (port: number) => Deno.HttpServer<Deno.NetAddr>,
  port: number,
  o: {
    logger: Logger;
    onServer?: (s: Deno.HttpServer<Deno.NetAddr>) => void;
    anyPort?: boolean;
  },
): { readonly current: Deno.HttpServer<Deno.NetAddr>; readonly accepting: boolean; stop(): void } {
  let stopped = false;
  let down = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let current: Deno.HttpServer<Deno.NetAddr>;
  let delay = 100;
  const follow = (s: Deno.HttpServer<Deno.NetAddr>) => {
    current = s;
    down = false;
    o.onServer?.(s);
    const began = performance.now();
    s.finished.catch((err) => {
      if (stopped || s !== current) return;
      down = true;
      // A listener that fails again soon after (descriptors still short) backs off further.
      delay = performance.now() - began < 5000 ? Math.min(delay * 2, 5000) : 100;
      const addr = formatListenAddr(s.addr);
      o.logger.error("Listener stopped accepting; listening again", {
        addr,
        error: String(err),
        retryInMs: delay,
      });
      retry(addr);
    });
  };
  const retry = (addr: string) => {
    timer = setTimeout(() => {
      if (stopped) return;
      try {
        follow(start(o.anyPort ? 0 : current.addr.port));
        o.logger.info("Listener accepting again", { addr });
      } catch {
        delay = Math.min(delay * 2, 5000);
        retry(addr);
      }
    }, delay);
  };
  follow(start(port));
  return {
    get current() {
      return current;
    },
    get accepting() {
      return !down;
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
