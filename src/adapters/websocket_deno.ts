// WebSocket proxying on Deno (RFC 6455). The upstream is connected first (offering the client's
// subprotocols), then the client is upgraded with `Deno.upgradeWebSocket` and the one the
// upstream chose, and messages are relayed in order both ways. Live connections sit in a
// registry so shutdown (1001) and reloads (changed routes only) can close them.
//
// Backpressure: upstream → client pauses reading the upstream while the client has more than
// `highWater` bytes queued (TCP flow control then slows the upstream). Client → upstream cannot
// pause: the socket from `Deno.upgradeWebSocket` delivers messages as events. That direction,
// and both directions of the custom-CA upstream (which cannot pause either), are capped at
// `maxBuffered` bytes queued; beyond it the connection is closed with 1013 (Try Again Later).
//
// A WebSocket that came by HTTP/2's extended CONNECT (RFC 8441) carries its own upgrade
// (h2/websocket.ts): a socket on the HTTP/2 stream, relayed the same way, except that client →
// upstream pauses too (the stream is not read while the upstream is behind).

import { ProxyError } from "../domain/errors.ts";
import type { Logger, Metrics, WebSocketProxy, WebSocketProxyRequest } from "../ports.ts";
import {
  clip,
  CLOSE_WAIT_MS,
  connectUpstream,
  dropConnection,
  exceeds,
  upstreamClose,
} from "./websocket_upstream.ts";
import { trafficSeen } from "./gc_hint.ts";
import { carryTraceContext } from "./otel.ts";
import type { UpstreamSocket, WsData } from "./websocket_upstream.ts";
import { MAX_TIMER_MS, timerDelay } from "../config/duration.ts";
import { closeWaitMs, WS_UPGRADE } from "./h2/websocket.ts";
import type { ClientSocket, H2WebSocket, Upgradable } from "./h2/websocket.ts";

/** Tuning for the relay; the defaults suit most deployments. */
export interface WebSocketProxyOptions {
  logger: Logger;
  metrics: Metrics;
  /** Stop reading the upstream while the client has more than this many bytes queued. */
  highWater?: number;
  /** Resume reading once the client's queue is down to this. */
  lowWater?: number;
  /** A direction that cannot pause is closed (1013) past this many bytes queued. */
  maxBuffered?: number;
  /** Monotonic milliseconds (idle timeout). */
  now?: () => number;
  /** With tracing on: the current span's trace context for the upstream handshake (otel.ts). */
  traceContext?: () => [string, string][];
}

interface Live {
  route: string;
  port?: number;
  close(code: number, reason: string): void;
}

const OPEN = 1;
/** How long an upgraded client has to open before its upstream is let go. */
const HANDSHAKE_MS = 10_000;
const CONNECTING = 0;
/** Bytes per second below which a client that reads nothing of a paused queue is given up on. */
const MIN_RATE = 64 << 10;
/** The longest ping interval Deno's timers can wait (whole seconds, so no rounding goes past). */
const PING_MAX_MS = Math.floor(MAX_TIMER_MS / 1000) * 1000;
/** The reason Deno gives when it closes a socket whose peer did not answer its ping in time. */
const DENO_PING_TIMEOUT = "No response from ping frame.";

/** Creates the WebSocket proxy with its registry of live connections. */
export function createWebSocketProxy(opts: WebSocketProxyOptions): WebSocketProxy {
  const live = new Set<Live>();
  /** Connections whose upstream is being connected (one per upgrade request in flight). */
  const settingUp = new Set<{ route: string; close: { code: number; reason: string } | null }>();
  const env = {
    logger: opts.logger,
    metrics: opts.metrics,
    highWater: opts.highWater ?? 1 << 20,
    lowWater: opts.lowWater ?? 256 << 10,
    maxBuffered: opts.maxBuffered ?? 16 << 20,
    now: opts.now ?? (() => performance.now()),
    /** Set by closeAll: connections still being set up are closed as soon as they open. */
    closing: null as { code: number; reason: string } | null,
  };
  return {
    async proxy(req, target) {
      // A reload that changes the route while its upstream is being connected closes the
      // connection once set up: it was left on the old target until a later reload.
      const pending = {
        route: target.route,
        close: null as { code: number; reason: string } | null,
      };
      settingUp.add(pending);
      // The handshake is an HTTP/1.1 request: Prox's span as its parent, as for the others.
      carryTraceContext(target.headers, opts.traceContext);
      let up: Awaited<ReturnType<typeof connectUpstream>>;
      let release: (() => void) | undefined;
      try {
        // The upstream_pool place first (it may wait in the queue, or be shed).
        release = target.slot instanceof Promise ? await target.slot : target.slot;
        up = await connectUpstream(target);
      } catch (err) {
        release?.();
        throw err;
      } finally {
        settingUp.delete(pending);
      }
      if ("refused" in up) {
        release?.();
        return refusal(up.refused, WS_UPGRADE in req);
      }
      // The upstream_pool place goes back with the connection, however the session ends.
      if (release) up.ended.then(release);
      // Deno's client accepts a subprotocol it did not offer (RFC 6455 §4.1 says fail): the
      // client got a 101 naming it, which it must refuse, and the upstream a dangling socket.
      if (up.protocol && !target.protocols.includes(up.protocol)) {
        discard(up, "Subprotocol not offered");
        return badGateway(
          `Upstream chose a WebSocket subprotocol the client did not offer ("${up.protocol}")\n`,
        );
      }
      // Nor does it refuse an extension it did not offer (it offers none; §4.1 says fail): the
      // upstream's compressed frames (RSV1) then failed the connection mid-session.
      if (up.extensions) {
        discard(up, "Extension not offered");
        return badGateway(
          `Upstream chose a WebSocket extension Prox did not offer ("${up.extensions}")\n`,
        );
      }
      if (req.signal.aborted) {
        discard(up, "Client went away");
        throw clientGone();
      }
      let upgrade: { socket: ClientSocket; response: Response };
      try {
        // Deno pings after idleTimeout / 2 s of silence and closes after as long again without a
        // pong, on timers that fire at once past 2^31 - 1 ms: a ping_interval of 25 days or more
        // closed every WebSocket right after it opened.
        const ping = Math.min(target.limits.pingInterval, PING_MAX_MS);
        const idleTimeout = ping > 0 ? (2 * ping) / 1000 : 0;
        const own = (req as Upgradable)[WS_UPGRADE];
        upgrade = own
          ? own({
            idleTimeout,
            maxMessage: target.limits.maxMessageSize,
            maxFrame: target.limits.maxFrameSize,
          })
          : Deno.upgradeWebSocket(req, { idleTimeout });
        // Set here rather than with the `protocol` option: Deno only finds the protocol in a
        // request list separated by ", " exactly, and `ws` (among others) sends "a,b".
        if (up.protocol) upgrade.response.headers.set("sec-websocket-protocol", up.protocol);
      } catch (err) {
        discard(up, "Client handshake failed");
        throw new ProxyError("bad_request", `Cannot upgrade to WebSocket: ${errText(err)}`, {
          cause: err,
        });
      }
      const entry = relay(upgrade.socket, up, target, env, live);
      if (pending.close) entry.close(pending.close.code, pending.close.reason);
      return upgrade.response;
    },
    reject(req, code, reason) {
      if (req.signal.aborted) throw clientGone();
      const own = (req as Upgradable)[WS_UPGRADE];
      const { socket, response } = own
        ? own({ idleTimeout: 0, maxMessage: 1 << 20, maxFrame: 0 })
        : Deno.upgradeWebSocket(req, { idleTimeout: 0 });
      // A client that never answers the close is dropped, as relayed ones are (closeClient):
      // Deno waited for the answer for good, holding the connection until the process ended.
      let wait: ReturnType<typeof setTimeout> | undefined;
      socket.onopen = () => {
        socket.close(code, clip(reason));
        if (!own) wait = setTimeout(() => dropConnection(socket), CLOSE_WAIT_MS);
      };
      socket.onclose = () => clearTimeout(wait);
      return response;
    },
    retain(keep, code, reason) {
      for (const p of settingUp) if (!keep(p.route)) p.close ??= { code, reason };
      let n = 0;
      for (const c of [...live]) {
        if (keep(c.route)) continue;
        c.close(code, reason);
        n++;
      }
      return n;
    },
    closeOnPort(port, { code, reason }) {
      for (const c of [...live]) if (c.port === port) c.close(code, reason);
    },
    closeAll(code, reason) {
      env.closing = { code, reason };
      for (const c of [...live]) c.close(code, reason);
    },
    size: () => live.size,
  };
}

/** Closes an upstream socket never relayed, reading it so its answer to the close ends it. */
function discard(up: UpstreamSocket, reason: string): void {
  up.start({ message() {}, closed() {} });
  up.close(1000, reason);
}

/**
 * A client that left before its upgrade was answered: Deno 2.9.6 never opens nor closes a socket
 * upgraded for it, and holds its TCP connection (CLOSE-WAIT) until the process ends.
 */
function clientGone(): ProxyError {
  return new ProxyError("client_gone", "Client went away during the WebSocket handshake");
}

/** A 502 for an upstream whose 101 the client would have had to refuse. */
function badGateway(text: string): Response {
  return new Response(text, {
    status: 502,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
  });
}

/** The client's answer when the upstream refused the upgrade with an HTTP status. */
function refusal(status: number, h2: boolean): Response {
  // Over HTTP/2 a 2xx is the WebSocket's success (RFC 8441 §5): an upstream's 200 is a 502 there.
  const s = status >= 200 && status <= 599 && status !== 101 && !(h2 && status < 300)
    ? status
    : 502;
  return new Response(`Upstream refused the WebSocket upgrade (status ${status})\n`, {
    status: s,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
  });
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

type Env = Required<Omit<WebSocketProxyOptions, "logger" | "metrics" | "traceContext">> & {
  logger: Logger;
  metrics: Metrics;
  closing: { code: number; reason: string } | null;
};

/** Wires one client socket to one upstream socket until either side closes. */
function relay(
  client: ClientSocket,
  up: UpstreamSocket,
  t: WebSocketProxyRequest,
  env: Env,
  live: Set<Live>,
): Live {
  const lim = t.limits;
  // Deno hands over whole messages and writes each as one frame: frame sizes can be neither
  // seen nor chosen, so only max_message_size bounds what is relayed (max_frame_size has no
  // effect; a Rust Prox config's 64 KiB frames beside 1 MiB messages must keep 1 MiB messages).
  const maxMsg = lim.maxMessageSize;
  const cap = Math.max(env.maxBuffered, 2 * maxMsg);
  let last = env.now();
  let opened = false;
  let done = false;
  let upstreamDone = false;
  let pendingClose: { code: number; reason: string } | null = null;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  const started = env.now();
  const count = { fromClient: 0, fromUpstream: 0 };
  let closedBy: "client" | "upstream" | "prox" | null = null;

  /** The close Prox sent the client (logged: the client's answer may differ, or be cut off). */
  let sent: { code: number; reason: string } | null = null;
  let closeWait: ReturnType<typeof setTimeout> | undefined;
  /** The client took nothing of its queue for too long (see `drained`). */
  let stalled = false;
  /** 1005: a close frame without a code, as the upstream sent it (RFC 6455 §7.1.5). */
  const closeClient = (code: number, reason: string) => {
    if (client.readyState === CONNECTING) pendingClose ??= { code, reason };
    else if (client.readyState === OPEN) {
      sent ??= { code, reason: clip(reason) };
      // Read first: Deno's socket says 0 once closing, with its queue still to be written.
      const queued = client.bufferedAmount;
      if (code === 1005) client.close();
      else client.close(code, sent.reason);
      // A client that never answers (gone without a FIN, or not reading) is dropped: Deno
      // waited for good, the connection counted as open and in flight on its target. One
      // still reading what was queued before the close gets the time that takes at 64 KiB/s
      // (it was cut off with its last messages), unless it is given up on for not reading.
      closeWait = setTimeout(() => {
        if (dropConnection(client)) return;
        (client as Partial<H2WebSocket>).drop?.();
        finish(1006, "Client did not answer the close");
      }, stalled ? CLOSE_WAIT_MS : closeWaitMs(queued));
    }
  };
  const closeUpstream = (code: number, reason: string) => {
    if (upstreamDone) return;
    upstreamDone = true;
    const u = upstreamClose(code, reason);
    up.close(u.code, u.reason);
  };
  /** Prox ends the connection: both sides get the code. */
  const shut = (code: number, reason: string) => {
    env.logger.debug("WebSocket closed by Prox", { route: t.route, code, reason });
    closedBy ??= "prox";
    closeClient(code, reason);
    closeUpstream(code, reason);
  };
  const entry: Live = { route: t.route, port: t.localPort, close: shut };
  live.add(entry);
  // A client that vanishes before the 101 is written never opens nor closes: let go of it.
  const handshake = setTimeout(() => {
    if (opened || done) return;
    done = true;
    live.delete(entry);
    t.onEnd?.();
    closeUpstream(1001, "Client handshake did not complete");
  }, HANDSHAKE_MS);

  const tooBig = (from: string, data: WsData, size?: number) => {
    env.metrics.websocketMessageTooBig(t.route);
    env.logger.info("WebSocket message too big", {
      route: t.route,
      from,
      limit: maxMsg,
      size: size ?? (typeof data === "string" ? data.length : data.byteLength),
    });
    shut(1009, "Message too big");
  };

  const armIdle = () => {
    if (lim.idleTimeout <= 0 || done) return;
    idleTimer = setTimeout(() => {
      if (done) return;
      if (env.now() - last >= lim.idleTimeout) shut(1001, "Idle timeout");
      else armIdle();
    }, timerDelay(Math.max(1, last + lim.idleTimeout - env.now())));
  };

  // Deno has no drain event: poll, backing off from 2 ms to 100 ms so that many paused
  // connections cost little CPU. Nothing is added to the queue meanwhile, so any shrinking is
  // the client reading. A client that takes nothing for `stallMs` is given up on: Deno queues
  // its pings (and any close) behind the unread data, so the keep-alive never noticed, and the
  // upstream stayed paused for as long as the client kept its TCP connection open. The queue
  // only shrinks by whole frames, so a slow client gets time for one message at MIN_RATE.
  const stallMs = lim.pingInterval > 0 ? 2 * lim.pingInterval + (maxMsg / MIN_RATE) * 1000 : 0;
  const drained = async () => {
    let wait = 2;
    let level = client.bufferedAmount;
    let since = env.now();
    while (!done && client.readyState === OPEN && client.bufferedAmount > env.lowWater) {
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 100);
      const now = env.now();
      // The client taking messages off its queue is traffic for idle_timeout: a slow client
      // still reading a burst was closed as idle while the upstream waited for it.
      if (client.bufferedAmount < level) [level, since, last] = [client.bufferedAmount, now, now];
      else if (stallMs > 0 && now - since >= stallMs && !done) {
        stalled = true;
        shut(1001, "Client stopped reading");
        // Deno reports no close until the client reads again (its connection is dropped
        // CLOSE_WAIT_MS after the close, see closeClient): the proxied connection ends here.
        return finish(1001, "Client stopped reading");
      }
    }
  };

  /** Waits for the upstream's queue to go down to lowWater (polled as `drained` does). */
  const upstreamDrained = async () => {
    let wait = 2;
    while (!done && up.buffered() > env.lowWater) {
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 100);
    }
  };

  client.binaryType = "arraybuffer";
  client.onopen = () => {
    opened = true;
    clearTimeout(handshake);
    env.metrics.connectionOpened("websocket");
    if (env.closing) return shut(env.closing.code, env.closing.reason);
    if (pendingClose) return closeClient(pendingClose.code, pendingClose.reason);
    up.start({
      async message(data) {
        if (done || client.readyState !== OPEN) return;
        last = env.now();
        count.fromUpstream++;
        trafficSeen();
        if (exceeds(data, maxMsg)) return tooBig("upstream", data);
        client.send(data);
        if (client.bufferedAmount <= env.highWater) return;
        if (up.pausable) await drained();
        else if (client.bufferedAmount > cap) {
          // Its close waits behind all that: given up on after 5 s, as a client not reading.
          stalled = true;
          shut(1013, "Client is not reading fast enough");
        }
      },
      closed(code, reason) {
        upstreamDone = true;
        closedBy ??= "upstream";
        if (code === 1006 || code === 1015 || code < 1000) {
          closeClient(1011, "Upstream connection lost");
        } else {
          closeClient(code, reason);
        }
      },
    });
    armIdle();
  };
  client.onmessage = (e: MessageEvent) => {
    if (done) return;
    last = env.now();
    count.fromClient++;
    trafficSeen();
    const data: WsData = typeof e.data === "string" ? e.data : new Uint8Array(e.data);
    if (exceeds(data, maxMsg)) return tooBig("client", data);
    up.send(data);
    if (up.buffered() > cap) shut(1013, "Upstream is not reading fast enough");
  };
  client.onerror = () => {};
  // A socket on an HTTP/2 stream sees a message too big from its frames' lengths, before it
  // has taken the message in.
  if ("ontoobig" in client) {
    const h2 = client as H2WebSocket;
    h2.ontoobig = (size) => {
      if (!done) tooBig("client", new Uint8Array(0), size);
    };
    // And it can pause: while the upstream has more than highWater queued, the client's stream
    // is not read, so HTTP/2 flow control holds the client back (no 1013 that way).
    h2.hold = () => up.buffered() > env.highWater ? upstreamDrained() : undefined;
  }
  let closeSeen = false;
  client.onclose = (e: CloseEvent) => {
    clearTimeout(closeWait);
    // 0: the connection ended without a close frame, which RFC 6455 §7.1.5 calls 1006.
    if (closedBy === null && e.reason === DENO_PING_TIMEOUT) closedBy = "prox";
    finish(e.code === 0 ? 1006 : e.code, e.reason);
  };
  /** The end of the proxied connection: bookkeeping, the log line, the upstream's close. */
  function finish(code: number, reason: string) {
    // Deno reports a close it made itself after an unanswered ping twice (1001, then 1005).
    if (closeSeen) return;
    closeSeen = true;
    done = true;
    clearTimeout(handshake);
    clearTimeout(idleTimer);
    live.delete(entry);
    t.onEnd?.();
    if (opened) env.metrics.connectionClosed("websocket");
    // Closed by Prox or the upstream: the code the client was sent. At shutdown Deno reported
    // 1005 and no reason for the 1001 "Server shutting down" it had just sent.
    const logged = closedBy !== null && sent ? sent : { code, reason };
    env.logger.info("WebSocket closed", {
      requestId: t.requestId ?? null,
      route: t.route,
      code: logged.code,
      reason: logged.reason,
      closedBy: closedBy ?? "client",
      durationMs: Math.round(env.now() - started),
      messagesFromClient: count.fromClient,
      messagesFromUpstream: count.fromUpstream,
    });
    if (!upstreamDone) {
      upstreamDone = true;
      // The client's last messages go before its close.
      const u = upstreamClose(code, reason);
      up.close(u.code, u.reason, { flush: true });
    }
  }
  return entry;
}
