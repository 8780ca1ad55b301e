// A WebSocket over one HTTP/2 stream (RFC 8441): what Prox's HTTP/2 engine (connection.ts) hands
// the WebSocket proxy (websocket_deno.ts) in place of Deno.upgradeWebSocket's socket, with the
// part of the WebSocket API the proxy uses. The stream's DATA frames carry RFC 6455 frames both
// ways (domain/ws_frame.ts): the client's masked, Prox's not. HTTP/2 flow control does the pushing
// back: the client's bytes are credited to its window as they are read (not while `hold` says the
// upstream is behind), and what Prox sends waits for the client's window (bufferedAmount counts it
// meanwhile, which the proxy watches to pause its upstream). END_STREAM follows the close handshake; RST_STREAM(CANCEL) is the abort.
// No extension is offered (permessage-deflate is not taken over HTTP/2).

import { closePayload, encodeFrame, encodeMessage, Op, WsParser } from "../../domain/ws_frame.ts";
import type { WsEvent } from "../../domain/ws_frame.ts";

/** Where the engine puts an extended CONNECT's upgrade on the request it hands the pipeline. */
export const WS_UPGRADE: unique symbol = Symbol("prox.wsUpgrade");

/** The part of a WebSocket the proxy uses: Deno's WebSocket has it, and so does H2WebSocket. */
export interface ClientSocket {
  readonly readyState: number;
  readonly bufferedAmount: number;
  binaryType: BinaryType;
  onopen: ((e: Event) => void) | null;
  onmessage: ((e: MessageEvent) => void) | null;
  onclose: ((e: CloseEvent) => void) | null;
  onerror: ((e: Event) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** The limits the proxy gives an upgrade (Deno.upgradeWebSocket takes only idleTimeout). */
export interface UpgradeOptions {
  /** Seconds: a ping after half of it without a frame from the client, a close after the rest. */
  idleTimeout: number;
  /** The largest message taken from the client (bigger: `ontoobig`, or 1009). */
  maxMessage: number;
  /** The largest frame Prox writes (0: a message is one frame). */
  maxFrame: number;
}

/** An upgrade of the request it was found on: the socket, and the answer to return for it. */
export type Upgrade = (opts: UpgradeOptions) => { socket: H2WebSocket; response: Response };

/** A request that may carry its own upgrade (one that came as an extended CONNECT). */
export type Upgradable = { [WS_UPGRADE]?: Upgrade };

/** The HTTP/2 stream under a socket (connection.ts). */
export interface WsStream {
  /** The client's DATA, credited back to its window as it is read. */
  readable: ReadableStream<Uint8Array>;
  /** Sends bytes as DATA, END_STREAM with the last when `end`, as the windows allow. */
  write(bytes: Uint8Array, end: boolean): Promise<boolean>;
  /** RST_STREAM(CANCEL). */
  cancel(): void;
}

const CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;
/** How long a close waits for the client's close (websocket_upstream.ts: CLOSE_WAIT_MS). */
const CLOSE_WAIT_MS = 5_000;
/** Bytes per second a slow client is given to take what was queued before a close. */
const MIN_RATE = 64 << 10;

/**
 * How long a close frame queued behind `queued` bytes waits for the client's answer: the client
 * must read those first (RFC 6455 §5.5.1), so a slow one got cut off with its last messages.
 */
export function closeWaitMs(queued: number): number {
  return CLOSE_WAIT_MS + Math.ceil((queued / MIN_RATE) * 1000);
}
/** The reason Deno gives for a client that did not answer a ping (websocket_deno.ts reads it). */
const PING_TIMEOUT = "No response from ping frame.";
const NO_BYTES = new Uint8Array(0);
/** How long the client's END_STREAM is waited for once this side ended. */
const GRACE_MS = 1_000;

/** One WebSocket on one HTTP/2 stream; `done` resolves once the stream is over on this side. */
export class H2WebSocket implements ClientSocket {
  readyState = CONNECTING;
  bufferedAmount = 0;
  binaryType: BinaryType = "blob";
  protocol = "";
  onopen: ((e: Event) => void) | null = null;
  onmessage: ((e: MessageEvent) => void) | null = null;
  onclose: ((e: CloseEvent) => void) | null = null;
  onerror: ((e: Event) => void) | null = null;
  /** A client message past maxMessage (the proxy counts it and closes with 1009). */
  ontoobig: ((size: number) => void) | null = null;
  /**
   * Asked after the client's messages are delivered: a promise holds the reading (and so the
   * client's window) until it settles, while the other side cannot take more.
   */
  hold: (() => Promise<void> | undefined) | null = null;
  readonly done: Promise<void>;
  /** The 200 the engine writes for it (its status reads 101, as Deno's upgrade answer's). */
  readonly response: Response;

  readonly #io: WsStream;
  readonly #opts: UpgradeOptions;
  readonly #parser: WsParser;
  /** Frames to write; `counted`: a data frame, in bufferedAmount until written. */
  #queue: { bytes: Uint8Array; counted: boolean }[] = [];
  /**
   * The pong queued and not written yet: a later ping replaces its payload (RFC 6455 §5.5.3), so
   * that a client flooding pings while it grants no window queues one pong, not one per ping.
   */
  #pong: { bytes: Uint8Array; counted: boolean } | null = null;
  #pumping = false;
  /** END_STREAM goes out after the queue. */
  #endQueued = false;
  #localEnded = false;
  #closeSent = false;
  #closeSeen = false;
  #fired = false;
  #pendingClose: { code?: number; reason: string } | null = null;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #lastHeard = 0;
  /**
   * When the ping went out, 0: none waits for its pong. Queued behind data the client has not had
   * the window for, it cannot be answered before it is written (Deno's sockets count the wait
   * from then too): until then, from when that data would be taken at 64 KiB/s.
   */
  #pingSince = 0;
  /** The ping queued and not written yet. */
  #pingQueued: { bytes: Uint8Array; counted: boolean } | null = null;
  /**
   * Reading is held (the upstream is behind): the client's window is shut, so it cannot answer a
   * ping, and its silence is Prox's doing. The keep-alive waits until the hold ends.
   */
  #holding = false;
  #readDone = false;
  #resolveDone!: () => void;
  #reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(io: WsStream, opts: UpgradeOptions) {
    this.#io = io;
    this.#opts = opts;
    this.#parser = new WsParser({ maxMessage: opts.maxMessage, masked: true });
    this.done = new Promise((resolve) => this.#resolveDone = resolve);
    this.response = new Response(null, { status: 200 });
    // The pipeline, the access log and the metrics see what they see for HTTP/1.1's handshake.
    Object.defineProperty(this.response, "status", { value: 101 });
  }

  /** The engine wrote the 200: messages may flow. */
  open(): void {
    if (this.readyState !== CONNECTING) return;
    this.readyState = OPEN;
    this.#lastHeard = performance.now();
    void this.#read();
    this.onopen?.(new Event("open"));
    if (this.#pendingClose) {
      const { code, reason } = this.#pendingClose;
      this.close(code, reason);
    }
    const half = this.#opts.idleTimeout * 500;
    if (half > 0 && this.readyState === OPEN) {
      this.#pingTimer = setInterval(() => this.#keepAlive(half), Math.max(half / 4, 50));
    }
  }

  /** The answer was not this socket's (the proxy failed after upgrading): it never opens. */
  abandon(): void {
    if (this.readyState === CLOSED) return;
    this.#fire(1006, "");
    this.#finishDone();
  }

  send(data: string | Uint8Array): void {
    if (this.readyState !== OPEN) return;
    for (const f of encodeMessage(data, this.#opts.maxFrame)) this.#enqueue(f, true);
  }

  close(code?: number, reason = ""): void {
    if (this.readyState === CONNECTING) {
      this.#pendingClose ??= { code, reason };
      return;
    }
    if (this.readyState !== OPEN) return;
    this.readyState = CLOSING;
    this.#sendClose(code, reason);
    if (this.#closeSeen) return this.#endLocal();
    // A client that does not answer the close is cut off.
    this.#closeTimer = setTimeout(() => this.#abort(1006, ""), closeWaitMs(this.bufferedAmount));
  }

  /** Gives up on the client at once (RST_STREAM(CANCEL)): it stopped reading. */
  drop(): void {
    if (this.readyState !== CLOSED) this.#abort(1006, "");
  }

  #keepAlive(half: number): void {
    if (this.readyState !== OPEN || this.#holding) return;
    const now = performance.now();
    if (this.#pingSince > 0) {
      if (now - this.#pingSince >= half) {
        // As Deno's socket does: the close goes out, and the connection is given up on.
        this.#sendClose(1001, PING_TIMEOUT);
        this.#abort(1001, PING_TIMEOUT);
      }
    } else if (this.#pingQueued === null && now - this.#lastHeard >= half) {
      this.#pingSince = now + (this.bufferedAmount / MIN_RATE) * 1000;
      this.#pingQueued = this.#enqueue(encodeFrame(Op.PING, NO_BYTES), false);
    }
  }

  #sendClose(code: number | undefined, reason: string): void {
    if (this.#closeSent) return;
    this.#closeSent = true;
    this.#enqueue(encodeFrame(Op.CLOSE, closePayload(code, reason)), false);
  }

  /** Queues a frame; `data` frames count in bufferedAmount. */
  #enqueue(frame: Uint8Array, data: boolean): { bytes: Uint8Array; counted: boolean } | null {
    if (this.#localEnded || this.#endQueued) return null;
    if (data) this.bufferedAmount += frame.length;
    const entry = { bytes: frame, counted: data };
    this.#queue.push(entry);
    void this.#pump();
    return entry;
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#queue.length > 0 || (this.#endQueued && !this.#localEnded)) {
        const frame = this.#queue.shift();
        if (frame === this.#pong) this.#pong = null;
        const end = this.#endQueued && this.#queue.length === 0;
        const ok = await this.#io.write(frame?.bytes ?? NO_BYTES, end);
        if (frame?.counted) this.bufferedAmount -= frame.bytes.length;
        if (!ok) return this.#abort(1006, "");
        if (frame !== undefined && frame === this.#pingQueued) {
          this.#pingQueued = null;
          if (this.#pingSince > 0) this.#pingSince = performance.now();
        }
        if (end) {
          this.#localEnded = true;
          this.#queue = [];
          this.#finishDone();
        }
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** This side is over: END_STREAM after what is queued. */
  #endLocal(): void {
    clearTimeout(this.#closeTimer);
    clearInterval(this.#pingTimer);
    if (this.#endQueued) return;
    this.#endQueued = true;
    void this.#pump();
  }

  /** The stream failed or is given up on: RST_STREAM(CANCEL), and the close is reported. */
  #abort(code: number, reason: string): void {
    clearTimeout(this.#closeTimer);
    clearInterval(this.#pingTimer);
    if (!this.#localEnded) {
      this.#localEnded = true;
      this.#queue = [];
      this.bufferedAmount = 0;
      this.#io.cancel();
    }
    this.#fire(code, reason);
    this.#reader?.cancel().catch(() => {});
    this.#readDone = true;
    this.#finishDone();
  }

  #fire(code: number, reason: string): void {
    this.readyState = CLOSED;
    if (this.#fired) return;
    this.#fired = true;
    clearTimeout(this.#closeTimer);
    clearInterval(this.#pingTimer);
    this.onclose?.(new CloseEvent("close", { code, reason, wasClean: code !== 1006 }));
  }

  /**
   * Resolves `done` once this side ended and the client's did too: its END_STREAM is waited for
   * briefly, so that the stream closes without a reset.
   */
  #finishDone(): void {
    if (!this.#localEnded) return;
    if (this.#readDone) {
      clearTimeout(this.#graceTimer);
      this.#resolveDone();
      return;
    }
    this.#graceTimer ??= setTimeout(() => {
      this.#reader?.cancel().catch(() => {});
      this.#resolveDone();
    }, GRACE_MS);
  }

  async #read(): Promise<void> {
    const reader = this.#reader = this.#io.readable.getReader();
    try {
      for (;;) {
        const r = await reader.read();
        if (r.done) break;
        // Any bytes answer a ping, as on Deno's sockets: a pong cannot overtake the frame the
        // ping arrived in the middle of (a big message on a slow link outlasted the wait).
        this.#lastHeard = performance.now();
        this.#pingSince = 0;
        if (this.#closeSeen) continue; // after a close, nothing is read (RFC 6455 §5.5.1)
        for (const ev of this.#parser.push(r.value)) this.#event(ev);
        const held = this.hold?.();
        if (held) {
          this.#holding = true;
          try {
            await held;
          } finally {
            this.#holding = false;
          }
          // A ping sent before the hold is answered behind what the client sent then, or it is
          // asked again: the silence starts now.
          this.#lastHeard = performance.now();
          this.#pingSince = 0;
        }
      }
      // END_STREAM: the client is done sending (RFC 8441 §5: as TCP's FIN).
      if (!this.#closeSeen) {
        this.#fire(1006, "");
        this.#endLocal();
      }
    } catch {
      // The client reset the stream, or the connection went (RFC 8441 §5: as TCP's RST).
      if (!this.#localEnded) this.#localEnded = true;
      this.#queue = [];
      this.bufferedAmount = 0;
      this.#fire(1006, "");
    } finally {
      this.#readDone = true;
      this.#finishDone();
    }
  }

  #event(ev: WsEvent): void {
    switch (ev.type) {
      case "text":
        if (this.readyState === OPEN) {
          this.onmessage?.(new MessageEvent("message", { data: ev.data }));
        }
        return;
      case "binary": {
        if (this.readyState !== OPEN) return;
        const d = ev.data;
        const data = this.binaryType === "arraybuffer"
          ? (d.byteOffset === 0 && d.byteLength === d.buffer.byteLength
            ? d.buffer
            : d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength))
          : new Blob([d]);
        this.onmessage?.(new MessageEvent("message", { data }));
        return;
      }
      case "ping":
        if (this.#closeSent) return;
        if (this.#pong) this.#pong.bytes = encodeFrame(Op.PONG, ev.data);
        else {
          const pong = this.#enqueue(encodeFrame(Op.PONG, ev.data), false);
          // Not taken for writing at once (the pump was idle): later pings may replace it.
          if (pong && this.#queue.at(-1) === pong) this.#pong = pong;
        }
        return;
      case "pong":
        this.#pingSince = 0;
        return;
      case "close":
        this.#closeSeen = true;
        // Answered with its code, as Deno does (RFC 6455 §5.5.1), then the stream ends.
        this.#sendClose(ev.code, ev.reason);
        this.#fire(ev.code, ev.reason);
        this.#endLocal();
        return;
      case "too_big":
        if (this.ontoobig) return this.ontoobig(ev.size);
        return this.#fail(1009, "Message too big");
      case "error":
        return this.#fail(ev.code, ev.reason);
    }
  }

  /** Fails the connection (RFC 6455 §7.1.7): a close with `code`, then END_STREAM at once. */
  #fail(code: number, reason: string): void {
    this.#closeSeen = true;
    this.#sendClose(code, reason);
    this.#fire(code, reason);
    this.#endLocal();
  }
}
