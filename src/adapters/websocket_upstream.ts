// The upstream side of a proxied WebSocket, on Deno's own client. Two shapes behind one small
// interface:
// - `WebSocketStream` (default): reading is pulled, so not reading pauses the upstream through
//   TCP flow control. This is how a slow client slows the upstream down instead of making Prox
//   buffer.
// - `WebSocket` with a `Deno.HttpClient`: the only Deno client that takes per-connection CA
//   certificates (route `tls.ca_cert`). It cannot pause, so its relay caps buffering instead.
// Deno's client API only sends close codes 1000 and 3000–4999 (WHATWG rule); see `upstreamClose`.

import { ProxyError } from "../domain/errors.ts";
import { originName } from "../domain/upstream_origin.ts";
import type { WebSocketProxyRequest } from "../ports.ts";
import { timerDelay } from "../config/duration.ts";
import { startRelay } from "./websocket_relay.ts";
import { tlsFailure } from "./upstream_client.ts";
import type { WebSocketRelay } from "./websocket_relay.ts";

/** One message as relayed: text stays a string, binary is bytes. */
export type WsData = string | Uint8Array;

/** Events from the upstream socket. `message` may return a promise to pause reading. */
export interface UpstreamHandlers {
  message(data: WsData): void | Promise<void>;
  closed(code: number, reason: string): void;
}

/** The upstream end of one proxied WebSocket. */
export interface UpstreamSocket {
  /** Subprotocol the upstream selected, or "". */
  readonly protocol: string;
  /** Extensions the upstream's 101 named (none were offered), or "". */
  readonly extensions: string;
  /** True when awaiting `message` pauses reading from the upstream. */
  readonly pausable: boolean;
  /** Settles once the upstream connection is closed (a close Prox sent drops it by CLOSE_WAIT_MS). */
  readonly ended: Promise<void>;
  /** Starts delivering events (messages that arrived earlier are delivered first). */
  start(h: UpstreamHandlers): void;
  send(data: WsData): void;
  /** Bytes given to send() and not yet written to the socket (each message MESSAGE_COST more). */
  buffered(): number;
  /**
   * Sends the close frame; with `flush`, only once the messages given to send() are written
   * (waiting at most FLUSH_MS), so that a client's last messages before its close arrive.
   */
  close(code: number, reason: string, opts?: { flush?: boolean }): void;
}

/** How long a flushing close waits for earlier messages to be written upstream. */
export const FLUSH_MS = 5_000;

/**
 * How long a close frame Prox sent waits for the peer's (RFC 6455 §5.5.1) before the connection
 * is dropped (§7.1.1 allows it "after a reasonable amount of time"; Deno's own WebSocketStream
 * meant 5 s). Deno waits for good: a hung peer, or one a network partition cut off, held its
 * connection until the process ended.
 */
export const CLOSE_WAIT_MS = 5_000;

const core = (Deno as unknown as Record<symbol, { core?: { tryClose?: unknown } } | undefined>)[
  (Deno as unknown as { internal: symbol }).internal
]?.core;
const tryClose = typeof core?.tryClose === "function"
  ? core.tryClose as (rid: number) => void
  : undefined;

/**
 * Drops the connection of a Deno WebSocket or WebSocketStream at once (its resource, through
 * Deno.internal as socket_read.ts reads); Deno then reports it closed (1005). False where this
 * Deno exposes no way to.
 */
export function dropConnection(socket: object): boolean {
  const key = Object.getOwnPropertySymbols(socket).find((s) => s.description === "[[rid]]");
  const rid = key === undefined ? undefined : (socket as Record<symbol, unknown>)[key];
  if (tryClose === undefined || typeof rid !== "number") return false;
  try {
    tryClose(rid);
  } catch {
    return false;
  }
  return true;
}

/** The upstream refused the handshake with this HTTP status (not 101). */
export interface Refusal {
  refused: number;
}

/**
 * What a message waiting to be written counts for in `buffered()`, over its bytes: its frame and
 * the queue's bookkeeping. Empty or one-byte messages otherwise counted (next to) nothing, and a
 * client flooding an upstream that does not read queued them without bound under the 1013 cap.
 */
export const MESSAGE_COST = 128;

/** Byte length of a message (UTF-8 for text). */
export function byteLength(data: WsData): number {
  return typeof data === "string" ? new TextEncoder().encode(data).byteLength : data.byteLength;
}

/** True when a message is longer than `limit` bytes; text is only encoded when it is close. */
export function exceeds(data: WsData, limit: number): boolean {
  if (typeof data !== "string") return data.byteLength > limit;
  // UTF-8 takes 1 to 3 bytes per UTF-16 code unit.
  if (data.length > limit) return true;
  if (data.length * 3 <= limit) return false;
  return byteLength(data) > limit;
}

/**
 * The close code and reason to send upstream. Deno's client may only send 1000 or 3000–4999,
 * so other codes go as 1000 with the original code in the reason, e.g. "Going away (1001)".
 * Reasons are cut to the 123 bytes a close frame allows (RFC 6455 §5.5.1). 1005 stays: the
 * sockets' close() sends it as a close frame without a code.
 */
export function upstreamClose(code: number, reason: string): { code: number; reason: string } {
  // A close frame without a code (reported as 1005, never sent) goes on as one (RFC 6455 §7.1.5).
  if (code === 1005) return { code, reason: "" };
  if (code === 1000 || (code >= 3000 && code <= 4999)) return { code, reason: clip(reason) };
  const name = reason || CLOSE_NAMES[code] || "Closed";
  return { code: 1000, reason: clip(`${name} (${code})`) };
}

const CLOSE_NAMES: Record<number, string> = {
  1001: "Going away",
  1002: "Protocol error",
  1003: "Unsupported data",
  1006: "Client connection lost",
  1007: "Invalid payload",
  1008: "Policy violation",
  1009: "Message too big",
  1010: "Extension required",
  1011: "Internal error",
  1013: "Try again later",
};

/** Cuts a reason to at most 123 UTF-8 bytes without splitting a character. */
export function clip(reason: string): string {
  const enc = new TextEncoder();
  if (enc.encode(reason).byteLength <= 123) return reason;
  let out = "";
  for (const ch of reason) {
    if (enc.encode(out + ch).byteLength > 123) break;
    out += ch;
  }
  return out;
}

/** Translates a failed handshake into a refusal (known status) or a ProxyError. */
function handshakeError(err: unknown, url: URL, timedOut: boolean): Refusal | ProxyError {
  const msg = err instanceof Error ? err.message : String(err);
  const status = /Invalid status code:? (\d{3})/i.exec(msg);
  if (status) return { refused: Number(status[1]) };
  const where = `"${url.protocol}//${url.host}"`;
  if (timedOut) {
    return new ProxyError("timeout", `Cannot connect to upstream ${where}: timed out`, {
      source: url.href,
      sentNothing: true,
      cause: err,
    });
  }
  // Deno says no more than "dns error" or "tcp connect error": worded as HTTP upstreams' are.
  const detail = msg.replace(/^.*failed to connect to WebSocket: /, "");
  const reason = /^dns error/i.test(detail)
    ? `cannot resolve host (${detail})`
    : /^tcp connect error/i.test(detail)
    ? `connection failed (${detail})`
    : tlsFailure(detail) ?? detail;
  return new ProxyError("connect", `Cannot connect to upstream ${where}: ${reason}`, {
    source: url.href,
    sentNothing: true,
    cause: err,
  });
}

/**
 * Opens the upstream WebSocket. Resolves with the socket, or a Refusal when the upstream answered
 * the handshake with another status; rejects with a ProxyError when it cannot be reached.
 */
export function connectUpstream(target: WebSocketProxyRequest): Promise<UpstreamSocket | Refusal> {
  // What Deno's WebSocket client cannot do itself (a PROXY header first, TLS without
  // verification or to another name, a Host of its own), Prox's connection through the relay does.
  // So does a client certificate with a CA file: Deno's client adds tls.ca_cert to the default
  // roots, where node:tls trusts it alone (README: then it is the whole trust, as over HTTP/1.1).
  const tls = target.tls;
  if (
    target.proxyHeader || tls?.insecureSkipVerify || tls?.serverName || target.host ||
    target.unix || (tls?.client && tls.caCerts?.length)
  ) {
    return openRelayed(target);
  }
  return target.tls?.caCerts?.length || target.tls?.client || !HAS_STREAM
    ? openWithClient(target)
    : openStream(target);
}

/**
 * Through a relay that connects as Prox's own upstream client does (websocket_relay.ts): the
 * PROXY header first (`proxy_protocol`), then TLS as the route's `tls` says.
 */
async function openRelayed(t: WebSocketProxyRequest): Promise<UpstreamSocket | Refusal> {
  const relay = await startRelay(t.url, {
    unix: t.unix,
    proxyHeader: t.proxyHeader,
    tls: t.tls,
    connectTimeout: t.connectTimeout,
    host: t.host,
  });
  try {
    return await openWithClient(t, relay);
  } catch (err) {
    relay.close();
    // The relay's own error says why (refused, a certificate, a timeout), of the ws(s) URL.
    const f = relay.failure();
    if (!f || !(err instanceof ProxyError)) throw err;
    const where = `"${t.unix ? originName(t.unix) : `${t.url.protocol}//${t.url.host}`}"`;
    throw new ProxyError(
      f.kind,
      f.message.replace(
        /^Cannot connect to upstream "[^"]*"/,
        `Cannot connect to upstream ${where}`,
      ),
      {
        source: t.url.href,
        sentNothing: true,
        cause: f,
      },
    );
  }
}

/**
 * `WebSocketStream` exists only with Deno's unstable net API (deno.json and `make compile` turn
 * it on); a bare `deno run dist/prox.js` has none, and every WebSocket failed with a 500.
 */
const HAS_STREAM = typeof (globalThis as { WebSocketStream?: unknown }).WebSocketStream ===
  "function";

/** Deno's runtime uses the standard's `closeCode`; its bundled types still say `code`. */
type CloseInfo = { closeCode?: number; code?: number; reason?: string };

async function openStream(t: WebSocketProxyRequest): Promise<UpstreamSocket | Refusal> {
  const abort = new AbortController();
  const timer = t.connectTimeout > 0
    ? setTimeout(() => abort.abort(), timerDelay(t.connectTimeout))
    : undefined;
  const stop = () => abort.abort();
  if (t.signal?.aborted) stop();
  t.signal?.addEventListener("abort", stop, { once: true });
  const wss = new WebSocketStream(t.url.href, {
    protocols: t.protocols,
    headers: t.headers,
    signal: abort.signal,
  });
  const closed = wss.closed.then(
    (i: CloseInfo) => ({ code: i.closeCode ?? i.code ?? 1005, reason: i.reason ?? "" }),
    (e) => ({ code: (e as { closeCode?: number }).closeCode || 1006, reason: "" }),
  );
  let conn: WebSocketConnection;
  try {
    conn = await wss.opened;
  } catch (err) {
    const e = handshakeError(err, t.url, abort.signal.aborted);
    if (e instanceof ProxyError) throw e;
    return e;
  } finally {
    clearTimeout(timer);
    t.signal?.removeEventListener("abort", stop);
  }
  const writer = conn.writable.getWriter();
  let pending = 0;
  /** Settles once every write so far has (WritableStream writes run one at a time). */
  let written: Promise<unknown> = Promise.resolve();
  let closing = false;
  let closeWait: ReturnType<typeof setTimeout> | undefined;
  let over = false;
  closed.then(() => {
    over = true;
    clearTimeout(closeWait);
  });
  return {
    protocol: conn.protocol,
    extensions: conn.extensions,
    pausable: true,
    ended: closed.then(() => {}),
    start(h) {
      const reader = conn.readable.getReader();
      (async () => {
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            await h.message(value);
          }
        } catch {
          // the stream errored: `closed` says how
        }
        const c = await closed;
        h.closed(c.code, c.reason);
      })();
    },
    send(data) {
      const n = byteLength(data) + MESSAGE_COST;
      pending += n;
      written = writer.write(data).then(() => pending -= n, () => pending -= n);
    },
    buffered: () => pending,
    close(code, reason, opts) {
      if (closing) return;
      closing = true;
      const now = () => {
        try {
          wss.close(code === 1005 ? {} : { closeCode: code, reason } as WebSocketCloseInfo);
        } catch {
          // already closing
        }
        if (!over) closeWait = setTimeout(() => dropConnection(wss), CLOSE_WAIT_MS);
      };
      // The close frame goes out at once, past the writes still queued in the stream, which
      // then fail: a client's burst followed by its close lost its tail.
      if (!opts?.flush || pending === 0) return now();
      const timer = setTimeout(now, FLUSH_MS);
      written.then(() => {
        clearTimeout(timer);
        now();
      });
    },
  };
}

async function openWithClient(
  t: WebSocketProxyRequest,
  relay?: WebSocketRelay,
): Promise<UpstreamSocket | Refusal> {
  const client = relay?.client ??
    Deno.createHttpClient({ caCerts: t.tls?.caCerts, ...t.tls?.client });
  const ws = new WebSocket(t.url.href, { protocols: t.protocols, headers: t.headers, client });
  ws.binaryType = "arraybuffer";
  let handlers: UpstreamHandlers | null = null;
  const early: WsData[] = [];
  const earlyCap = Math.max(1 << 20, 2 * t.limits.maxMessageSize);
  let earlyBytes = 0;
  let ended: { code: number; reason: string } | null = null;
  let closeWait: ReturnType<typeof setTimeout> | undefined;
  let over = () => {};
  const gone = new Promise<void>((r) => over = r);
  const opened = new Promise<unknown>((resolve) => {
    let error: unknown = null;
    ws.onopen = () => resolve(null);
    ws.onerror = (e) => error = new Error((e as ErrorEvent).message);
    ws.onclose = (e) => {
      clearTimeout(closeWait);
      client.close();
      relay?.close();
      ended = { code: e.code === 0 ? 1006 : e.code, reason: e.reason };
      over();
      resolve(error ?? new Error("closed during handshake"));
      handlers?.closed(ended.code, ended.reason);
    };
  });
  let timedOut = false;
  const stop = () => {
    timedOut = true;
    ws.close();
  };
  const timer = t.connectTimeout > 0 ? setTimeout(stop, timerDelay(t.connectTimeout)) : undefined;
  if (t.signal?.aborted) stop();
  t.signal?.addEventListener("abort", stop, { once: true });
  ws.onmessage = (e) => {
    const data = typeof e.data === "string" ? e.data : new Uint8Array(e.data as ArrayBuffer);
    if (handlers) return void handlers.message(data);
    early.push(data); // only until start(), which follows the client's upgrade at once
    earlyBytes += byteLength(data) + MESSAGE_COST;
    if (earlyBytes > earlyCap) ws.close(1000, "Too much data before the client opened");
  };
  const err = await opened;
  clearTimeout(timer);
  t.signal?.removeEventListener("abort", stop);
  if (err) {
    const e = handshakeError(err, t.url, timedOut);
    if (e instanceof ProxyError) throw e;
    return e;
  }
  return {
    protocol: ws.protocol,
    extensions: ws.extensions,
    pausable: false,
    ended: gone,
    start(h) {
      handlers = h;
      for (const d of early.splice(0)) h.message(d);
      if (ended) h.closed(ended.code, ended.reason);
    },
    send(data) {
      ws.send(data);
    },
    buffered: () => ws.bufferedAmount,
    close(code, reason) {
      if (ended || closeWait !== undefined) return;
      try {
        if (code === 1005) ws.close();
        else ws.close(code, reason);
      } catch {
        // already closing
      }
      closeWait = setTimeout(() => {
        if (!dropConnection(ws)) relay?.close();
      }, CLOSE_WAIT_MS);
    },
  };
}
