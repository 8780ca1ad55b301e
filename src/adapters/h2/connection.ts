// One HTTP/2 connection of Prox's own HTTP/2 engine (RFC 9113): reads frames, decodes requests
// (HPACK, hpack.ts) and hands each to the pipeline as a lean stand-in for Fetch's Request
// (h1/wire_request.ts), then writes the answers as frames. Answers that are ready together go out
// in one write (frames.ts FrameWriter): while a write is in flight, the frames of every stream
// that answers meanwhile gather behind it.
//
// What it takes care of: the connection preface and SETTINGS; flow control both ways (request
// bodies are credited back as the pipeline reads them, so a connection buffers at most its window;
// answers wait for the client's windows); CONTINUATION; stream limits (REFUSED_STREAM past
// MAX_CONCURRENT_STREAMS, ENHANCE_YOUR_CALM for a client that resets streams faster than they
// finish); PING; GOAWAY both ways, for a drain and for an idle connection; WebSockets by
// extended CONNECT (RFC 8441, with `protocols.websocket_enabled`): the request goes to the
// pipeline as the HTTP/1.1 handshake it stands for, and its stream carries the WebSocket
// (websocket.ts). No server push, no other CONNECT, no priorities (PRIORITY frames are read and
// ignored, as RFC 9113 allows).

import { setImmediate } from "node:timers";
import { ProxyError } from "../../domain/errors.ts";
import { HeaderList } from "../../domain/header_list.ts";
import { trailerPasses } from "../../domain/headers.ts";
import { BODY_BYTES as COUNTER, LEND_CHUNKS, RAW_BODY, RELEASE } from "../../ports.ts";
import type {
  ChunkLending,
  CountedResponse,
  Handler,
  Logger,
  Metrics,
  RawBodied,
  Releasable,
} from "../../ports.ts";
import { WireRequest } from "../h1/wire_request.ts";
import { readGate } from "../h1/read_gate.ts";
import type { Reader } from "../h1/read_gate.ts";
import { bodyFailed, deadlineTrailers, EngineInfo, httpDate, unhandled } from "../engine_shared.ts";
import {
  ConnectionError,
  ErrorCode,
  Flag,
  FRAME_HEADER,
  FrameType,
  FrameWriter,
  MAX_WINDOW,
  passWindow,
  PREFACE,
  queueCopy,
  Setting,
  settingsOf,
} from "./frames.ts";
import { HpackDecoder, HpackEncoder, HpackError } from "./hpack.ts";
import { H2WebSocket, WS_UPGRADE } from "./websocket.ts";
import type { Upgradable } from "./websocket.ts";

/** Streams a client may have open at once (nginx: 128; Deno.serve: 200). */
export const MAX_STREAMS = 128;
/** The receive window each stream starts with (what a request body may send ahead). */
const STREAM_WINDOW = 256 * 1024;
/** The connection's receive window: the most request body a connection buffers. */
const CONNECTION_WINDOW = 1024 * 1024;
/**
 * The read buffer a connection waits with (a request's HEADERS take a few hundred bytes, or tens
 * once the client's HPACK table holds its fields); a frame that does not fit grows it until it is
 * read.
 */
const READ_SIZE = 2 * 1024;
/** The largest frame this side accepts unless configured (the protocol's default). */
const MAX_FRAME_IN = 16 * 1024;
/** The most a request's fields may take (name + value + 32 each); past it, a 431. */
export const MAX_HEADER_LIST = 64 * 1024;
/** The most a field block (HEADERS and its CONTINUATIONs) may take on the wire. */
const MAX_BLOCK = MAX_HEADER_LIST + 16 * 1024;
/** Streams closed early whose way of closing a connection remembers (H2Connection.#ended). */
const ENDED_KEPT = 256;
/** Ranges of stream ids passed over that a connection remembers. */
const SKIPPED_KEPT = 16;
/** Frames waiting for a write past this hold up the streams that write them. */
const WRITE_HIGH = 256 * 1024;
/**
 * Frames that ask work of this side without a request (PING, SETTINGS, PRIORITY, empty DATA,
 * CONTINUATION, unknown types) allowed within CONTROL_PERIOD_MS, plus 10 per request (up to ten
 * times as many): past them the client floods, and the connection ends with ENHANCE_YOUR_CALM. A
 * client that pings now and then for years never comes near.
 */
const CONTROL_BUDGET = 1000;
const CONTROL_PERIOD_MS = 10_000;
/**
 * WINDOW_UPDATEs allowed beyond 10 for each DATA frame sent (as Envoy's
 * max_inbound_window_update_frames_per_data_frame_sent) and 10 for each request: a client asks
 * for more as it reads what came, or widens a stream's window as it opens it. A flood of them
 * that lets no DATA go out (their streams' own windows shut) costs work for nothing.
 */
const UPDATE_BUDGET = 1000;
/**
 * The most values a SETTINGS frame may carry (nghttp2's, CVE-2020-11080): a 16 KiB frame holds
 * 2,730, and each SETTINGS_INITIAL_WINDOW_SIZE moves every open stream's window. Seven are defined.
 */
const MAX_SETTINGS = 32;

const NO_BYTES = new Uint8Array(0);
/** Fields that do not exist in HTTP/2 (RFC 9113 §8.2.2): a request with one is malformed. */
const CONNECTION_SPECIFIC = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);
/** A method is a token (RFC 9110 §9.1). */
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** The most request body handed on as bytes when it came whole with its head (h1: BODY_LIMIT). */
const BODY_BYTES = 64 * 1024;
/** Lowercase field names (RFC 9113 §8.2.1: upper case makes a request malformed). */
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
/**
 * A value with a byte HTTP/2 forbids (NUL, CR, LF) or another control character (which the
 * HTTP/1.1 engine refuses too, and HeaderList.appendChecked must not be given), or with
 * whitespace around it.
 */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]|^[ \t]|[ \t]$/;
/** A URI scheme (RFC 3986 §3.1). */
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/;
/** The schemes Prox serves (any case, RFC 3986 §3.1). */
const HTTP_SCHEME = /^https?$/i;
/** Each request pseudo-field's bit, to find one given twice (even empty the first time). */
const PSEUDO = new Map([
  [":method", 1],
  [":scheme", 2],
  [":path", 4],
  [":authority", 8],
  [":protocol", 16],
]);

/** What a connection needs from its listener. */
export interface H2Env {
  handler: Handler;
  logger: Logger;
  metrics?: Metrics;
  localPort: number;
  tls: boolean;
  /** True once the listener drains: new streams are refused with a GOAWAY. */
  draining(): boolean;
  /** Counts a request served. */
  served?(): void;
  /** SETTINGS_MAX_CONCURRENT_STREAMS (MAX_STREAMS when not given). */
  maxStreams?: number;
  /** SETTINGS_MAX_FRAME_SIZE: the largest frame the client may send (16 KiB when not given). */
  maxFrame?: number;
  /**
   * SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3): WebSockets by extended CONNECT
   * (`protocols.websocket_enabled`).
   */
  websocket?: boolean;
  /**
   * `max_connections` and `max_connections_per_ip` for WebSockets: each counts as a connection,
   * of its client's address too (as over HTTP/1.1, where each is one). Takes a place (its
   * release), or names the limit it is past.
   */
  wsSlot?: (ip: string) => (() => void) | "max_connections" | "max_connections_per_ip";
}

/** The socket a connection runs on. */
export interface H2Socket {
  read(p: Uint8Array): Promise<number>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

class Stream implements Reader {
  /** Its exchange's turn at the read gate (h1/read_gate.ts). */
  turnEnds = -1;
  slot = -1;
  /** What the answer may still send before the client's next WINDOW_UPDATE. */
  sendWindow: number;
  /** What the client may still send of its body. */
  recvWindow = STREAM_WINDOW;
  /** Body bytes read by the pipeline and not yet credited back. */
  unacked = 0;
  /** The client sent END_STREAM (or the stream was reset). */
  remoteEnded = false;
  /** This side sent END_STREAM or RST_STREAM. */
  localEnded = false;
  reset = false;
  /** Its `:path` was `*` (ClientInfo.asterisk). */
  asterisk = false;
  /** The request body's chunks not read yet. */
  queue: Uint8Array<ArrayBuffer>[] = [];
  queued = 0;
  /** The queue's last chunk when small payloads are being joined into its buffer (queueCopy). */
  joined: Uint8Array<ArrayBuffer> | null = null;
  /** Wakes a body read waiting for data. */
  wake: (() => void) | null = null;
  /** The body's error, once it failed (a reset, a bad length). */
  failure: Error | null = null;
  bodyCancelled = false;
  /**
   * A WebSocket's stream (extended CONNECT): its DATA is credited to the connection's window as
   * it arrives, so that WebSockets held back for days by their upstreams hold only their own
   * windows, not the connection's that every other stream needs.
   */
  tunnel = false;
  /** Gives back the WebSocket's place under max_connections_per_ip (wsSlot). */
  release: (() => void) | null = null;
  /** The Content-Length the request declared (-1: none), and the body bytes so far. */
  declared = -1;
  received = 0;
  /** Wakes an answer waiting for window. */
  windowWake: (() => void) | null = null;
  /** When the answer began waiting for window (0: not waiting). */
  waitingSince = 0;
  /** What the answer waiting for window has left to send of its chunk. */
  want = 0;
  /** Connection window set aside for it when it was woken, until it runs (#passWindow). */
  reserved = 0;
  #abort: AbortController | null = null;

  constructor(readonly id: number, sendWindow: number) {
    this.sendWindow = sendWindow;
  }

  /**
   * Made when first asked for (most exchanges never ask): asked for after the stream was reset,
   * it is aborted already, or an upstream request that looks it up late was never aborted.
   */
  get signal(): AbortSignal {
    if (this.#abort === null) {
      this.#abort = new AbortController();
      if (this.reset && !this.#spared) this.#abort.abort(this.failure);
    }
    return this.#abort.signal;
  }

  /** Reset by this side for the client's fault: its upstream request runs on (see `abort`). */
  #spared = false;

  /**
   * The client reset the stream, or the connection went: the exchange is over. `spare`: this
   * side reset it for the client's fault (MadeYouReset, CVE-2025-8671): the upstream request is
   * not aborted, so the stream counts against MAX_CONCURRENT_STREAMS until its work ends (an
   * upstream keeps working on a request whose connection went). A later abort without `spare`
   * (the client resets it too, or goes) aborts the upstream request then.
   */
  abort(spare = false): void {
    if (this.reset) {
      if (!spare && this.#spared) {
        this.#spared = false;
        this.#abort?.abort(this.failure);
      }
      return;
    }
    this.reset = true;
    this.remoteEnded = true;
    this.localEnded = true;
    const err = new ProxyError("client_gone", "Client reset the stream");
    this.failure ??= err;
    this.#spared = spare;
    if (!spare) this.#abort?.abort(err);
    this.wake?.();
    this.windowWake?.();
  }
}

/** One HTTP/2 connection; `run()` serves it to its end. */
export class H2Connection {
  readonly #io: H2Socket;
  readonly #env: H2Env;
  readonly peer: { hostname: string; port: number };
  readonly #out = new FrameWriter();
  readonly #decoder = new HpackDecoder();
  readonly #encoder = new HpackEncoder();
  readonly #streams = new Map<number, Stream>();
  /** Streams whose handler or answer has not finished (reset ones included). */
  #inWork = 0;
  #lastStream = 0;
  /** The client's settings that matter to the answers. */
  #peerWindow = 65535;
  #peerMaxFrame = 16384;
  /** What answers may still send on the connection before the client's next WINDOW_UPDATE. */
  #sendWindow = 65535;
  #recvWindow = CONNECTION_WINDOW;
  #unacked = 0;
  #writing = false;
  #flushQueued = false;
  /** Streams whose RST_STREAM NO_ERROR goes out once the frames queued before it are written. */
  #lateResets: number[] = [];
  /** Answers waiting for the writes to drain below WRITE_HIGH. */
  #drainWaiters: Array<() => void> = [];
  /**
   * Answers waiting for connection-level window (their stream's own is open), in turn: one that
   * sent goes to the back when it waits again. Those waiting for their stream's window are not
   * here until a WINDOW_UPDATE or SETTINGS opens it.
   */
  #windowWaiters = new Set<Stream>();
  /** Connection window set aside for answers woken and not yet run (Stream.reserved). */
  #reserved = 0;
  #goawaySent = false;
  #closed = false;
  /** The client sent GOAWAY: no new streams, and the connection ends when the last one does. */
  #peerGone = false;
  /**
   * How the streams that did not simply end on both sides closed, the last ENDED_KEPT of them:
   * true where this side ended or reset it first (what the client sent before it knew is ignored),
   * false where the client reset it (any more of its frames on it are STREAM_CLOSED, RFC 9113
   * §5.1). A closed stream not here answers STREAM_CLOSED too.
   */
  readonly #ended = new Map<number, boolean>();
  /** Stream ids the client passed over (never opened), as [from, to] pairs, the last few. */
  #skipped: number[] = [];
  /** WINDOW_UPDATEs left before the client counts as flooding (refilled by DATA sent). */
  #updateBudget = UPDATE_BUDGET;
  /** Control frames left before the client counts as flooding (refilled by requests). */
  #controlBudget = CONTROL_BUDGET;
  /** When the current budget period began (performance.now(): a wall clock stepped back would
   * stretch a period, and pings would count against one budget for as long as the step). */
  #controlSince = performance.now();
  /** When the connection last had no stream in work (performance.now() time; 0: busy). */
  idleSince = performance.now();
  /** Resolves when run() has ended. */
  done: Promise<void> = Promise.resolve();
  #onIdle: (() => void) | null = null;
  readonly #maxStreams: number;
  /**
   * Streams whose work has not ended (answers being made, including those of streams the client
   * reset) past this: the client resets streams faster than they finish (CVE-2023-44487), and
   * the connection ends with ENHANCE_YOUR_CALM.
   */
  readonly #maxInWork: number;
  /** The largest frame the client may send. */
  readonly #maxFrameIn: number;

  constructor(io: H2Socket, env: H2Env, peer: { hostname: string; port: number }) {
    this.#io = io;
    this.#env = env;
    this.peer = peer;
    this.#maxStreams = env.maxStreams || MAX_STREAMS;
    this.#maxInWork = this.#maxStreams * 2;
    this.#maxFrameIn = Math.min(Math.max(env.maxFrame || MAX_FRAME_IN, MAX_FRAME_IN), 16777215);
  }

  /** The read buffer (run() keeps it in a local; this is for bufferBytes). */
  #readBuf: Uint8Array = NO_BYTES;

  /** The bytes of its read and write buffers now (for /status). */
  get bufferBytes(): number {
    return this.#readBuf.length + this.#out.held;
  }

  /** Streams open now (for /status and tests). */
  get streams(): number {
    return this.#streams.size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Request body chunks held, not read yet, over all streams (for tests). */
  get queuedChunks(): number {
    let n = 0;
    for (const s of this.#streams.values()) n += s.queue.length;
    return n;
  }

  /** Answers waiting for window now (for tests). */
  get waitingForWindow(): number {
    let n = 0;
    for (const s of this.#streams.values()) if (s.windowWake !== null) n++;
    return n;
  }

  /** Answers woken by WINDOW_UPDATEs to send (for tests). */
  windowWakes = 0;

  /** Closed streams remembered (at most ENDED_KEPT) and skipped id ranges (SKIPPED_KEPT), for tests. */
  get remembered(): { ended: number; skipped: number } {
    return { ended: this.#ended.size, skipped: this.#skipped.length / 2 };
  }

  /**
   * Serves the connection: `first` is what was read of it already (by whoever chose HTTP/2 for
   * it), which must begin with the client preface, or be a prefix of it.
   */
  async run(first: Uint8Array = NO_BYTES): Promise<void> {
    this.#out.settings([
      [Setting.MAX_CONCURRENT_STREAMS, this.#maxStreams],
      [Setting.INITIAL_WINDOW_SIZE, STREAM_WINDOW],
      [Setting.MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST],
      [Setting.ENABLE_PUSH, 0],
      ...(this.#env.websocket ? [[Setting.ENABLE_CONNECT_PROTOCOL, 1] as [number, number]] : []),
      ...(this.#maxFrameIn !== MAX_FRAME_IN
        ? [[Setting.MAX_FRAME_SIZE, this.#maxFrameIn] as [number, number]]
        : []),
    ]);
    this.#out.u32(FrameType.WINDOW_UPDATE, 0, CONNECTION_WINDOW - 65535);
    this.#flush();
    let buf = this.#readBuf = new Uint8Array(Math.max(READ_SIZE, first.length * 2));
    buf.set(first);
    let start = 0;
    let end = first.length;
    let preface = false;
    /** The client's SETTINGS came after its preface. */
    let settled = false;
    try {
      for (;;) {
        if (!preface) {
          const have = Math.min(end - start, PREFACE.length);
          for (let i = 0; i < have; i++) {
            if (buf[start + i] !== PREFACE[i]) {
              throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "Not an HTTP/2 preface");
            }
          }
          if (have === PREFACE.length) {
            preface = true;
            start += PREFACE.length;
          }
        }
        if (preface) {
          while (end - start >= FRAME_HEADER) {
            const length = (buf[start] << 16) | (buf[start + 1] << 8) | buf[start + 2];
            if (length > this.#maxFrameIn) {
              throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "Frame larger than allowed");
            }
            if (end - start < FRAME_HEADER + length) break;
            const type = buf[start + 3];
            const flags = buf[start + 4];
            const id = ((buf[start + 5] & 0x7f) << 24) | (buf[start + 6] << 16) |
              (buf[start + 7] << 8) | buf[start + 8];
            const payload = buf.subarray(start + FRAME_HEADER, start + FRAME_HEADER + length);
            start += FRAME_HEADER + length;
            if (this.#block !== null && type !== FrameType.CONTINUATION) {
              throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "Expected CONTINUATION");
            }
            if (!settled) {
              // The client's preface ends with its SETTINGS (RFC 9113 §3.4).
              if (type !== FrameType.SETTINGS || flags & Flag.ACK) {
                throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "Preface without SETTINGS");
              }
              settled = true;
            }
            this.#frame(type, flags, id, payload);
          }
          this.#startPending();
          if (this.#closed || (this.#peerGone && this.#inWork === 0)) break;
        }
        if (start === end) {
          start = end = 0;
          // All read: a buffer a large frame grew goes back to the small one.
          if (buf.length > READ_SIZE) buf = this.#readBuf = new Uint8Array(READ_SIZE);
        } else {
          // What the frame begun needs (its header first), from the front of the buffer.
          const need = !preface
            ? PREFACE.length
            : end - start < FRAME_HEADER
            ? FRAME_HEADER
            : FRAME_HEADER + ((buf[start] << 16) | (buf[start + 1] << 8) | buf[start + 2]);
          if (start > 0 && (start + need > buf.length || end === buf.length)) {
            buf.copyWithin(0, start, end);
            end -= start;
            start = 0;
          }
          if (need > buf.length) {
            const bigger = new Uint8Array(Math.max(need, buf.length * 2));
            bigger.set(buf.subarray(0, end));
            buf = this.#readBuf = bigger;
          }
        }
        // A turn among the connections that read at once (h1/read_gate.ts), as the HTTP/1.1
        // engine's connections take: under hundreds of busy ones, each reads in its turn rather
        // than in Deno's poll order, which starved some for seconds. Held from the read to the
        // end of handling what it brought.
        readGate.leave(this.#turn);
        // A client that does not read what it is sent is not read either: what it asks for
        // (RST_STREAMs, acks, answers) would pile up behind a write that does not complete.
        while (this.#out.length > WRITE_HIGH && !this.#closed) {
          await new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
        }
        const turn = readGate.enter(this.#turn);
        if (turn !== undefined) await turn;
        const n = await this.#io.read(buf.subarray(end));
        if (n === 0) break;
        end += n;
      }
      // The client ended its side: it is gone, as nginx and the HTTP/1.1 engine take it (an
      // HTTP/2 client has no use for a half-closed connection). A request body still coming never
      // will, and an exchange that waits for its upstream is aborted (the upstream request with
      // it) rather than holding the upstream connection until its answer or a timeout.
      for (const s of this.#streams.values()) {
        this.#failBody(s, new ProxyError("client_gone", "Client closed the connection"));
      }
      if (this.#inWork > 0 && !this.#closed) {
        await new Promise<void>((resolve) => this.#onIdle = resolve);
      }
    } catch (err) {
      if (err instanceof ConnectionError) this.#fail(err.code, err.message);
      else if (err instanceof HpackError) this.#fail(ErrorCode.COMPRESSION_ERROR, err.message);
      // else: the socket failed (the client reset it)
    } finally {
      readGate.leave(this.#turn);
      await this.#settle();
      this.close();
    }
  }

  /** Its turn at the read gate. */
  readonly #turn: Reader = { turnEnds: -1, slot: -1 };

  /** Waits for the last write, briefly (a GOAWAY on its way out). */
  async #settle(): Promise<void> {
    if (!this.#writing && this.#out.length === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.#drainWaiters.push(resolve)),
      new Promise<void>((resolve) => timer = setTimeout(resolve, 1000)),
    ]);
    clearTimeout(timer);
  }

  /** Exchanges with a body to begin once the frames read with their HEADERS are handled. */
  #pending: Array<() => void> = [];

  /** A field block being gathered from HEADERS and CONTINUATION frames (`buf` up to `size`). */
  #block: {
    stream: number;
    end: boolean;
    buf: Uint8Array;
    size: number;
    selfDependent: boolean;
  } | null = null;

  #spend(): void {
    if (--this.#controlBudget >= 0) return;
    const now = performance.now();
    if (now - this.#controlSince >= CONTROL_PERIOD_MS) {
      this.#controlSince = now;
      this.#controlBudget = CONTROL_BUDGET - 1;
    } else {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "Too many control frames");
    }
  }

  #frame(type: number, flags: number, id: number, p: Uint8Array): void {
    switch (type) {
      case FrameType.DATA:
        return this.#data(flags, id, p);
      case FrameType.HEADERS:
        return this.#headers(flags, id, p);
      case FrameType.CONTINUATION:
        return this.#continuation(flags, id, p);
      case FrameType.PRIORITY:
        if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
        this.#spend();
        if (p.length !== 5) return this.#streamError(id, ErrorCode.FRAME_SIZE_ERROR);
        // A stream cannot depend on itself (RFC 9113 §5.3.1).
        if (dependency(p, 0) === id) return this.#streamError(id, ErrorCode.PROTOCOL_ERROR);
        return;
      case FrameType.RST_STREAM:
        return this.#rstStream(id, p);
      case FrameType.SETTINGS:
        return this.#settings(flags, id, p);
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      case FrameType.PING:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
        if (p.length !== 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING size");
        if (flags & Flag.ACK) return;
        this.#spend();
        this.#out.frame(FrameType.PING, Flag.ACK, 0, p);
        this.#flush();
        return;
      case FrameType.GOAWAY:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
        if (p.length < 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY size");
        this.#peerGone = true;
        return;
      case FrameType.WINDOW_UPDATE:
        return this.#windowUpdate(id, p);
      default:
        // Unknown frame types are ignored (RFC 9113 §4.1), but count against the flood budget.
        this.#spend();
        return;
    }
  }

  /** The payload without its padding (PADDED flag), or a connection error. */
  #unpad(flags: number, p: Uint8Array, skip = 0): Uint8Array {
    const fixed = (flags & Flag.PADDED ? 1 : 0) + skip;
    if (p.length < fixed) {
      // Too short for its padding length or its priority fields (RFC 9113 §4.2).
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "Frame shorter than its fields");
    }
    if (!(flags & Flag.PADDED)) return skip ? p.subarray(skip) : p;
    const pad = p[0];
    if (1 + skip + pad > p.length) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "Padding longer than the frame");
    }
    return p.subarray(1 + skip, p.length - pad);
  }

  #headers(flags: number, id: number, p: Uint8Array): void {
    if (id === 0 || (id & 1) === 0) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on an even stream");
    }
    const fragment = this.#unpad(flags, p, flags & Flag.PRIORITY ? 5 : 0);
    // One frame (http2_max_frame_size may pass it) is held to the bound CONTINUATIONs are.
    if (fragment.length > MAX_BLOCK) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "Field block too large");
    }
    const end = (flags & Flag.END_STREAM) !== 0;
    // A stream cannot depend on itself (RFC 9113 §5.3.1): its block is still decoded.
    const selfDependent = (flags & Flag.PRIORITY) !== 0 &&
      dependency(p, flags & Flag.PADDED ? 1 : 0) === id;
    // A whole block is decoded where it was read (a copy would cost a new ArrayBuffer, 0.2–0.7
    // µs in Deno); one that CONTINUATIONs complete is copied and kept until then.
    if (flags & Flag.END_HEADERS) return this.#blockDone(id, end, fragment, selfDependent);
    this.#block = {
      stream: id,
      end,
      buf: fragment.slice(),
      size: fragment.length,
      selfDependent,
    };
  }

  #continuation(flags: number, id: number, p: Uint8Array): void {
    const b = this.#block;
    if (b === null || b.stream !== id) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION out of place");
    }
    // Each costs a frame's work whatever it carries (an endless block of empty or one-byte
    // CONTINUATIONs: CVE-2024-27316); a request's few are paid for by the request.
    this.#spend();
    const size = b.size + p.length;
    if (size > MAX_BLOCK) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "Field block too large");
    }
    if (size > b.buf.length) {
      const bigger = new Uint8Array(Math.min(Math.max(size, b.buf.length * 2), MAX_BLOCK));
      bigger.set(b.buf.subarray(0, b.size));
      b.buf = bigger;
    }
    b.buf.set(p, b.size);
    b.size = size;
    if (!(flags & Flag.END_HEADERS)) return;
    this.#block = null;
    this.#blockDone(id, b.end, b.buf.subarray(0, size), b.selfDependent);
  }

  /** A field block is complete: `end` when its HEADERS frame ended the stream. */
  #blockDone(id: number, end: boolean, block: Uint8Array, selfDependent = false): void {
    const existing = this.#streams.get(id);
    if (existing || id <= this.#lastStream) {
      // Trailers (or HEADERS on a stream already closed, which may have crossed our RST_STREAM):
      // decoded for the table's sake, checked, dropped.
      let bad = selfDependent;
      this.#decoder.decode(block, (n) => {
        // No pseudo-fields, and names as in a request (RFC 9113 §8.1, §8.2.1).
        if (!FIELD_NAME.test(n)) bad = true;
      }, MAX_HEADER_LIST);
      if (!existing) {
        if (this.#skippedOver(id)) {
          // Not a stream that was ever opened: a new one must have a larger id (§5.1.1).
          throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "Stream id below the last");
        }
        return this.#onClosed(id, false);
      }
      // A stream this side reset: what the client sent before it knew is ignored.
      if (existing.reset) return;
      // The client ended its side already (half-closed, §5.1).
      if (existing.remoteEnded) return this.#streamError(id, ErrorCode.STREAM_CLOSED);
      if (!end || bad) return this.#streamError(id, ErrorCode.PROTOCOL_ERROR);
      this.#bodyEnded(existing);
      return;
    }
    if (id > this.#lastStream + 2) {
      // The ids passed over are closed now, never to be opened (§5.1.1).
      if (this.#skipped.length >= 2 * SKIPPED_KEPT) this.#skipped.splice(0, 2);
      this.#skipped.push(this.#lastStream + 1, id - 2);
    }
    // After our GOAWAY, streams past its last id are not served (the client retries them); a
    // drain's GOAWAY sent now names the streams before this one (RFC 9113 §6.8).
    const refused = this.#goawaySent || this.#env.draining();
    if (refused && !this.#goawaySent) this.goaway();
    this.#lastStream = id;
    const names: string[] = [];
    const values: string[] = [];
    const within = this.#decoder.decode(block, (n, v) => {
      names.push(n);
      values.push(v);
    }, MAX_HEADER_LIST);
    if (refused) return this.#refuse(id, ErrorCode.REFUSED_STREAM);
    if (this.#streams.size >= this.#maxStreams) return this.#refuse(id, ErrorCode.REFUSED_STREAM);
    if (selfDependent) return this.#refuse(id, ErrorCode.PROTOCOL_ERROR);
    if (this.#inWork >= this.#maxInWork) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "Streams reset faster than served");
    }
    // Each request earns the client some control frames (a browser pings and updates its windows
    // as it goes).
    this.#controlBudget = Math.min(this.#controlBudget + 10, 10 * CONTROL_BUDGET);
    // And WINDOW_UPDATEs (one that widens each stream as it opens, answered without DATA or not).
    if (this.#updateBudget < 10 * UPDATE_BUDGET) this.#updateBudget += 10;
    const s = new Stream(id, this.#peerWindow);
    this.#streams.set(id, s);
    s.remoteEnded = end;
    this.#startWork();
    if (!within) {
      this.#answerRefusal(s, 431, "Request header fields too large\n");
      return;
    }
    this.#request(s, names, values);
  }

  #startWork(): void {
    this.#inWork++;
    this.idleSince = 0;
  }

  #endWork(): void {
    if (--this.#inWork > 0) return;
    this.idleSince = performance.now();
    if (!this.#writing && this.#out.length === 0) this.#out.release();
    if (this.#onIdle) {
      const f = this.#onIdle;
      this.#onIdle = null;
      f();
    }
    // The last answers' frames go out before the connection closes.
    if (this.#goawaySent || this.#peerGone) void this.#settle().then(() => this.close());
  }

  /** Checks a request's fields and starts its exchange (or resets a malformed one). */
  #request(s: Stream, names: string[], values: string[]): void {
    let method = "", scheme = "", path = "", authority = "", protocol = "";
    const fields = new HeaderList();
    let cookie: string | null = null;
    let regular = false;
    let expectContinue = false;
    let pseudo = 0;
    for (let i = 0; i < names.length; i++) {
      const n = names[i], v = values[i];
      if (n.charCodeAt(0) === 58 /* : */) {
        // Pseudo-fields come first, once each (RFC 9113 §8.3).
        const bit = PSEUDO.get(n) ?? 0;
        if (regular || bit === 0 || pseudo & bit) return this.#malformed(s);
        // :protocol only where SETTINGS_ENABLE_CONNECT_PROTOCOL was sent (RFC 8441 §4).
        if (bit === 16 && !this.#env.websocket) return this.#malformed(s);
        pseudo |= bit;
        if (bit === 1) method = v;
        else if (bit === 2) scheme = v;
        else if (bit === 4) path = v;
        else if (bit === 8) authority = v;
        else protocol = v;
        continue;
      }
      regular = true;
      if (!FIELD_NAME.test(n) || BAD_VALUE.test(v) || CONNECTION_SPECIFIC.has(n)) {
        return this.#malformed(s);
      }
      if (n === "te") {
        // A coding name, case-insensitive (RFC 9110 §10.1.4): nghttp2 takes "Trailers" too.
        if (v.toLowerCase() !== "trailers") return this.#malformed(s);
        continue;
      }
      if (n === "cookie") {
        // Split cookie fields are one field again for HTTP/1.1 (RFC 9113 §8.2.3).
        cookie = cookie === null ? v : cookie + "; " + v;
        continue;
      }
      if (n === "host") {
        if (!authority) authority = v;
        continue;
      }
      if (n === "expect") {
        // 100-continue is answered here (below); any other expectation cannot be met.
        if (v.toLowerCase() !== "100-continue") {
          return this.#answerRefusal(s, 417, "Expectation failed\n");
        }
        expectContinue = true;
        continue;
      }
      if (n === "content-length") {
        if (!/^[0-9]{1,15}$/.test(v) || (s.declared >= 0 && s.declared !== Number(v))) {
          return this.#malformed(s);
        }
        // The same length again is one length (RFC 9110 §8.6), not the list "5, 5" upstream.
        if (s.declared >= 0) continue;
        s.declared = Number(v);
      }
      fields.appendChecked(n, v);
    }
    if (pseudo & 16) {
      // An extended CONNECT (RFC 8441 §4); :protocol on another method is malformed.
      if (method !== "CONNECT") return this.#malformed(s);
      method = "GET";
    } else if (method === "CONNECT") {
      // No tunnels: refused as Deno.serve's HTTP/2 does.
      return this.#answerRefusal(s, 405, "CONNECT is not supported\n");
    }
    if (
      !method || !scheme || !path || (path[0] !== "/" && path !== "*") || !authority ||
      !METHOD.test(method)
    ) {
      // An HTTP/2 request without an authority has no URL Prox can route (nor HTTP/1.1's Host).
      return this.#malformed(s);
    }
    if (
      BAD_VALUE.test(path) || /[\s]/.test(path) || BAD_VALUE.test(authority) ||
      /[\s/?#@]/.test(authority) || !SCHEME.test(scheme)
    ) {
      return this.#malformed(s);
    }
    if (!HTTP_SCHEME.test(scheme)) {
      // Well formed, but no URI Prox serves: a gateway to ftp may take one (RFC 9113 §8.3.1), and
      // the URL below is the listener's scheme, so an ftp request was served as https.
      return this.#answerRefusal(s, 400, "The request's :scheme is not http or https\n");
    }
    if (cookie !== null) fields.appendChecked("cookie", cookie);
    const url = (this.#env.tls ? "https://" : "http://") + authority + (path === "*" ? "/" : path);
    if (pseudo & 16) {
      if (path === "*") return this.#malformed(s);
      return this.#extendedConnect(s, protocol, url, authority, fields);
    }
    if (s.remoteEnded && s.declared > 0) return this.#malformed(s);
    if (expectContinue && !s.remoteEnded) {
      // The client may hold its body back until a 100: sent at once, as Deno.serve does.
      this.#out.headers(s.id, this.#encoder.begin().status(100).block, false, this.#peerMaxFrame);
      this.#flush();
    }
    if (path === "*") s.asterisk = true;
    if (s.remoteEnded) return this.#begin(s, method, url, authority, fields, null, null);
    // With a body: the exchange begins once the frames read with its HEADERS are handled, so that
    // a small body that came whole with them is handed on as bytes, as the HTTP/1.1 engine does.
    this.#pending.push(() => {
      if (s.remoteEnded && s.failure === null && s.queued <= BODY_BYTES) {
        // One DATA frame's copy is the body as it is (no second buffer: 0.2–0.7 µs each).
        let bytes = s.queue.length === 1 ? s.queue[0] : null;
        if (bytes === null) {
          bytes = new Uint8Array(s.queued);
          let at = 0;
          for (const chunk of s.queue) {
            bytes.set(chunk, at);
            at += chunk.length;
          }
        }
        this.#creditConnection(s.queued);
        s.queue = [];
        s.queued = 0;
        return this.#begin(s, method, url, authority, fields, bytes, null);
      }
      this.#begin(s, method, url, authority, fields, null, this.#bodyStream(s));
    });
  }

  /**
   * A WebSocket by extended CONNECT (RFC 8441 §4–5): handed to the pipeline as the HTTP/1.1
   * handshake it stands for (GET with Upgrade), so routing, access control, limits and the
   * WebSocket proxy apply as they do there; the proxy upgrades it with the request's own upgrade
   * (WS_UPGRADE), whose socket runs on the stream (#tunnel).
   */
  #extendedConnect(
    s: Stream,
    protocol: string,
    url: string,
    authority: string,
    fields: HeaderList,
  ): void {
    if (s.declared >= 0) return this.#malformed(s);
    if (protocol.toLowerCase() !== "websocket") {
      return this.#answerRefusal(s, 501, "The only :protocol served is websocket\n");
    }
    // A tunnel whose client has already ended its side carries nothing.
    if (s.remoteEnded) return this.#answerRefusal(s, 400, "The CONNECT stream is closed\n");
    if (fields.get("sec-websocket-version")?.trim() !== "13") {
      // RFC 6455 §4.4: the versions this side speaks (no 426 in HTTP/2, which has no Upgrade).
      return this.#answerRefusal(s, 400, "Unsupported Sec-WebSocket-Version\n", {
        "sec-websocket-version": "13",
      });
    }
    // Past max_connections_per_ip (each WebSocket counts as a connection): refused as a request
    // over the limit would be, the connection and its other streams untouched.
    const release = this.#env.wsSlot?.(this.peer.hostname);
    if (release === "max_connections_per_ip") {
      return this.#answerRefusal(s, 429, "Too many connections from your address\n", {
        "retry-after": "10",
      });
    }
    // The listener's total: no fault of this client's (503, as an overloaded upstream pool).
    if (release === "max_connections") {
      return this.#answerRefusal(s, 503, "Too many connections\n", { "retry-after": "10" });
    }
    s.release = release ?? null;
    // No extension is negotiated over HTTP/2 (websocket.ts): the offer is dropped.
    fields.delete("sec-websocket-extensions");
    fields.appendChecked("connection", "Upgrade");
    fields.appendChecked("upgrade", "websocket");
    // HTTP/2 has no key and no Accept (RFC 8441 §5); the pipeline checks an HTTP/1.1 handshake's.
    fields.set("sec-websocket-key", wsKey());
    const slot: { socket: H2WebSocket | null } = { socket: null };
    s.tunnel = true;
    this.#begin(s, "GET", url, authority, fields, null, null, slot);
  }

  /**
   * Serves a WebSocket's stream: the 200 (no END_STREAM) with the answer's fields, then the
   * socket runs until both sides are done (or the stream is reset). True when it ended cleanly.
   */
  async #tunnel(s: Stream, res: Response, socket: H2WebSocket): Promise<boolean> {
    if (s.reset || this.#closed) {
      socket.abandon();
      return false;
    }
    const enc = this.#encoder.begin().status(200);
    let date = false;
    res.headers.forEach((v, k) => {
      if (CONNECTION_SPECIFIC.has(k) || k === "content-length" || k === "sec-websocket-accept") {
        return;
      }
      if (k === "date") date = true;
      enc.field(k, v);
    });
    if (!date) enc.field("date", httpDate());
    this.#out.headers(s.id, enc.block, false, this.#peerMaxFrame);
    this.#flush();
    socket.open();
    await socket.done;
    return !s.reset;
  }

  /** Starts the exchanges whose HEADERS came in the frames just handled. */
  #startPending(): void {
    const pending = this.#pending;
    if (pending.length === 0) return;
    this.#pending = [];
    for (const start of pending) start();
  }

  /** Hands a request to the pipeline and writes its answer. */
  #begin(
    s: Stream,
    method: string,
    url: string,
    authority: string,
    fields: HeaderList,
    bytes: Uint8Array<ArrayBuffer> | null,
    body: ReadableStream<Uint8Array> | null,
    ws?: { socket: H2WebSocket | null },
  ): void {
    const req = new WireRequest(method, url, fields, () => s.signal, bytes, body);
    if (ws) {
      (req as Upgradable)[WS_UPGRADE] = (opts) => {
        if (ws.socket) throw new Error("Cannot upgrade a stream twice");
        const socket = ws.socket = new H2WebSocket({
          readable: this.#bodyStream(s),
          write: (bytes, end) => this.#send(s, bytes, end),
          cancel: () => {
            this.#resetStream(s.id, ErrorCode.CANCEL);
            this.#dropBody(s);
            s.abort();
          },
        }, opts);
        return { socket, response: socket.response };
      };
    }
    const info = new EngineInfo(
      this.peer,
      this.#env.localPort,
      this.#env.tls ? "h2" : "h2c",
      this.#env.tls,
      authority,
      false,
    );
    if (s.asterisk) info.asterisk = true;
    if (!ws) info.hintsTo(this, s);
    const env = this.#env;
    env.served?.();
    env.metrics?.connectionOpened(info.protocol);
    let ok = false;
    // Each exchange takes a turn, as an HTTP/1.1 connection does for its request: under a
    // thousand streams at once, the upstream reads of all of them polled at once left some
    // waiting seconds (Deno's poll order); in turns they go first come first served.
    const turn = readGate.enter(s);
    (async () => {
      if (turn !== undefined) await turn;
      readGate.busy(s);
      let res: Response;
      try {
        res = await env.handler(req as unknown as Request, info);
      } catch (err) {
        res = unhandled(env.logger, err);
      }
      info.hintsDone();
      const socket = ws?.socket;
      if (socket && res === socket.response) {
        // A WebSocket's turn ends with its handshake: it may last for days.
        readGate.leave(s);
        ok = await this.#tunnel(s, res, socket);
        return;
      }
      socket?.abandon();
      if (ws && res.status >= 200 && res.status < 300) {
        // An extended CONNECT answered 2xx without an upgrade (a static or redirect route serves
        // it as a GET): a 2xx would tell the client its WebSocket is open (RFC 8441 §5).
        await res.body?.cancel().catch(() => {});
        res = new Response("This route does not serve WebSockets\n", {
          status: 400,
          headers: { "content-type": "text/plain" },
        });
      }
      ok = await this.#respond(s, res, method === "HEAD");
    })().catch(() => {}).finally(() => {
      readGate.leave(s);
      s.release?.();
      s.release = null;
      info.settle(ok);
      env.metrics?.connectionClosed(info.protocol);
      this.#finish(s);
    });
  }

  /**
   * A 103 Early Hints on stream `key` before its answer (EngineInfo.earlyHints, RFC 8297): a
   * field block without END_STREAM, as the 100 is. Names go lower case (RFC 9113 §8.2.1).
   */
  writeEarlyHints(key: unknown, fields: [string, string][]): void {
    const s = key as Stream;
    if (s.reset || s.localEnded || this.#closed) return;
    const enc = this.#encoder.begin().status(103);
    for (let i = 0; i < fields.length; i++) {
      const name = fields[i][0].toLowerCase();
      if (!CONNECTION_SPECIFIC.has(name)) enc.field(name, fields[i][1]);
    }
    this.#out.headers(s.id, enc.block, false, this.#peerMaxFrame);
    this.#flush();
  }

  /** A malformed request: the stream is reset with PROTOCOL_ERROR (RFC 9113 §8.1.1). */
  #malformed(s: Stream): void {
    this.#resetStream(s.id, ErrorCode.PROTOCOL_ERROR);
    s.abort();
    this.#finish(s);
  }

  /** An answer the engine gives itself, without the pipeline. */
  #answerRefusal(
    s: Stream,
    status: number,
    text: string,
    headers: Record<string, string> = {},
  ): void {
    const res = new Response(text, {
      status,
      headers: { "content-type": "text/plain", ...headers },
    });
    this.#respond(s, res, false).catch(() => {}).finally(() => this.#finish(s));
  }

  /** The stream's work is over: it leaves the map once both sides ended. */
  #finish(s: Stream): void {
    // Ended or reset by this side before the client ended it: frames in flight are ignored.
    if ((s.reset || !s.remoteEnded) && !this.#ended.has(s.id)) this.#remember(s.id, true);
    if (!s.remoteEnded) {
      // The answer is complete while the client still sends: it may stop (RFC 9113 §8.1). The
      // RST_STREAM goes in a write after the answer's: in the same one, curl (7.88) took it for
      // the stream failing before it had handed the answer on (error 92).
      if (!s.reset) {
        s.localEnded = true;
        this.#lateResets.push(s.id);
        this.#flush();
      }
      this.#dropBody(s);
      s.remoteEnded = true;
    }
    if (!s.localEnded) {
      this.#resetStream(s.id, ErrorCode.INTERNAL_ERROR);
      s.localEnded = true;
    }
    if (s.queued > 0) {
      // A body that came whole but was not read (an answer the engine gave itself, a body that
      // failed) goes back to the connection's window too; a late reader sees it cut, not ended.
      s.failure ??= new ProxyError("client_gone", "Request body dropped after the answer");
      this.#dropBody(s);
      s.wake?.();
    }
    this.#windowWaiters.delete(s);
    this.#streams.delete(s.id);
    this.#endWork();
  }

  #bodyStream(s: Stream): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      pull: async (ctl) => {
        while (s.queue.length === 0 && !s.remoteEnded && s.failure === null) {
          await new Promise<void>((resolve) => s.wake = resolve);
          s.wake = null;
        }
        if (s.queue.length > 0) {
          const chunk = s.queue.shift()!;
          s.queued -= chunk.length;
          this.#credit(s, chunk.length);
          ctl.enqueue(chunk);
          if (s.queue.length > 0 || !s.remoteEnded || s.failure !== null) return;
        }
        if (s.failure !== null) ctl.error(s.failure);
        else ctl.close();
      },
      cancel: () => {
        s.bodyCancelled = true;
        this.#dropBody(s);
      },
    }, { highWaterMark: 0 });
  }

  /** Body bytes nobody will read: the connection's window gets them back at once. */
  #dropBody(s: Stream): void {
    if (s.queued > 0) {
      if (!s.tunnel) this.#creditConnection(s.queued);
      s.queue = [];
      s.queued = 0;
    }
  }

  #credit(s: Stream, n: number): void {
    if (!s.tunnel) this.#creditConnection(n);
    if (s.remoteEnded || s.reset) return;
    s.unacked += n;
    if (s.unacked >= STREAM_WINDOW / 2) {
      this.#out.u32(FrameType.WINDOW_UPDATE, s.id, s.unacked);
      s.recvWindow += s.unacked;
      s.unacked = 0;
      this.#flush();
    }
  }

  #creditConnection(n: number): void {
    this.#unacked += n;
    if (this.#unacked >= CONNECTION_WINDOW / 2 && !this.#closed) {
      this.#out.u32(FrameType.WINDOW_UPDATE, 0, this.#unacked);
      this.#recvWindow += this.#unacked;
      this.#unacked = 0;
      this.#flush();
    }
  }

  #data(flags: number, id: number, p: Uint8Array): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
    // Flow control counts the whole payload, padding included (RFC 9113 §6.9.1).
    this.#recvWindow -= p.length;
    if (this.#recvWindow < 0) {
      throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "Connection window exceeded");
    }
    const data = this.#unpad(flags, p);
    const s = this.#streams.get(id);
    if (s === undefined || s.remoteEnded) {
      // Idle: past the last opened, or even (this side opens none, having no push): §5.1.
      if (id > this.#lastStream || (id & 1) === 0) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
      }
      this.#creditConnection(p.length);
      // A stream closed: its data is dropped.
      if (s === undefined) return this.#onClosed(id, p.length === 0);
      return this.#streamError(id, ErrorCode.STREAM_CLOSED);
    }
    s.recvWindow -= p.length;
    if (s.recvWindow < 0) {
      this.#creditConnection(p.length);
      this.#resetStream(id, ErrorCode.FLOW_CONTROL_ERROR);
      return this.#failBody(s, new ProxyError("bad_request", "Stream window exceeded"));
    }
    // Padding is credited back at once; the data as the pipeline reads it.
    if (p.length > data.length) this.#creditConnection(p.length - data.length);
    if (data.length === 0 && !(flags & Flag.END_STREAM)) this.#spend();
    s.received += data.length;
    if (s.declared >= 0 && s.received > s.declared) {
      this.#creditConnection(data.length);
      this.#resetStream(id, ErrorCode.PROTOCOL_ERROR);
      return this.#failBody(s, new ProxyError("bad_request", "Body longer than its length"));
    }
    if (data.length > 0) {
      if (s.bodyCancelled) this.#creditConnection(data.length);
      else {
        s.joined = queueCopy(s.queue, s.joined, { bytes: data, start: 0, end: data.length });
        s.queued += data.length;
        if (s.tunnel) this.#creditConnection(data.length);
      }
    }
    if (flags & Flag.END_STREAM) this.#bodyEnded(s);
    else s.wake?.();
  }

  #bodyEnded(s: Stream): void {
    s.remoteEnded = true;
    if (s.declared >= 0 && s.received !== s.declared) {
      this.#resetStream(s.id, ErrorCode.PROTOCOL_ERROR);
      this.#failBody(s, new ProxyError("bad_request", "Body shorter than its length"));
      return;
    }
    s.wake?.();
  }

  #failBody(s: Stream, err: Error): void {
    s.failure ??= err;
    s.abort();
  }

  #rstStream(id: number, p: Uint8Array): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
    if (p.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM size");
    if (id > this.#lastStream || (id & 1) === 0) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream");
    }
    const s = this.#streams.get(id);
    if (!s) return;
    if (!s.reset) this.#remember(id, false);
    this.#dropBody(s);
    s.abort();
    // Closed: it no longer counts against MAX_CONCURRENT_STREAMS, though its work may go on a
    // little (which #maxInWork bounds).
    this.#windowWaiters.delete(s);
    this.#streams.delete(id);
  }

  #settings(flags: number, id: number, p: Uint8Array): void {
    if (p.length > 6 * MAX_SETTINGS && !(flags & Flag.ACK)) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "Too many values in a SETTINGS");
    }
    const values = settingsOf(flags, id, p);
    if (values === null) return;
    this.#spend();
    for (const [key, value] of values) {
      if (key === Setting.INITIAL_WINDOW_SIZE) {
        const delta = value - this.#peerWindow;
        for (const s of this.#streams.values()) {
          s.sendWindow += delta;
          if (s.sendWindow > MAX_WINDOW) {
            throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "Stream window overflow");
          }
          // An answer whose stream's window opened waits for the connection's now.
          if (delta > 0 && s.windowWake !== null && s.sendWindow > 0) this.#windowWaiters.add(s);
        }
        this.#peerWindow = value;
        if (delta > 0) this.#passWindow();
      } else if (key === Setting.MAX_FRAME_SIZE) this.#peerMaxFrame = value;
      // HEADER_TABLE_SIZE: this side's encoder keeps no dynamic table, so any size will do.
    }
    this.#out.frame(FrameType.SETTINGS, Flag.ACK, 0);
    this.#flush();
  }

  #windowUpdate(id: number, p: Uint8Array): void {
    if (p.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE size");
    const inc = ((p[0] & 0x7f) << 24 | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
    if (--this.#updateBudget < 0) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "Too many WINDOW_UPDATEs");
    }
    if (id === 0) {
      if (inc === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "Zero window update");
      this.#sendWindow += inc;
      if (this.#sendWindow > MAX_WINDOW) {
        throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "Connection window overflow");
      }
      this.#passWindow();
      return;
    }
    const s = this.#streams.get(id);
    if (!s) {
      if (id > this.#lastStream || (id & 1) === 0) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
      }
      return;
    }
    if (inc === 0) return this.#streamError(id, ErrorCode.PROTOCOL_ERROR);
    s.sendWindow += inc;
    if (s.sendWindow > MAX_WINDOW) {
      this.#resetStream(id, ErrorCode.FLOW_CONTROL_ERROR);
      s.abort(true);
      return;
    }
    // Its answer, if it waits, waits for the connection's window now (woken if there is some).
    if (s.windowWake !== null && s.sendWindow > 0 && !this.#windowWaiters.has(s)) {
      this.#windowWaiters.add(s);
      this.#passWindow();
    }
  }

  /** Passes the connection's free window to the senders waiting for it, in turn (passWindow). */
  #passWindow(): void {
    this.#reserved += passWindow(this.#windowWaiters, this.#sendWindow - this.#reserved, this);
  }

  /**
   * A stream error (RFC 9113 §5.4.2): RST_STREAM, and the stream is closed, so its exchange ends
   * (nothing more is sent on it, its upstream is let go) and its unread body is credited back.
   */
  #streamError(id: number, code: number): void {
    this.#resetStream(id, code);
    const s = this.#streams.get(id);
    if (s === undefined) return;
    this.#dropBody(s);
    // The client's fault: its stream counts until its work ends (MadeYouReset).
    s.abort(true);
  }

  /**
   * A new stream not served: reset with `code`, and what comes on it after ignored. Each costs
   * work and a frame with no request served to earn it: it counts against the flood budget (a
   * client that opens streams past the limit again and again, CVE-2019-9514).
   */
  #refuse(id: number, code: number): void {
    this.#spend();
    this.#remember(id, true);
    this.#resetStream(id, code);
  }

  #remember(id: number, ours: boolean): void {
    if (this.#ended.size >= ENDED_KEPT) {
      this.#ended.delete(this.#ended.keys().next().value!);
    }
    this.#ended.set(id, ours);
  }

  #skippedOver(id: number): boolean {
    const r = this.#skipped;
    for (let i = 0; i < r.length; i += 2) if (id >= r[i] && id <= r[i + 1]) return true;
    return false;
  }

  /**
   * DATA or HEADERS on a closed stream: ignored where this side reset it (they crossed its
   * RST_STREAM), else a stream error STREAM_CLOSED (RFC 9113 §5.1); either counts against the
   * flood budget where it costs work without data.
   */
  #onClosed(id: number, empty: boolean): void {
    if (this.#ended.get(id) === true) {
      if (empty) this.#spend();
      return;
    }
    this.#spend();
    this.#resetStream(id, ErrorCode.STREAM_CLOSED);
  }

  #resetStream(id: number, code: number): void {
    if (this.#closed) return;
    const s = this.#streams.get(id);
    if (s) {
      if (s.localEnded && s.remoteEnded && code !== ErrorCode.NO_ERROR) return;
      s.localEnded = true;
    }
    this.#out.u32(FrameType.RST_STREAM, id, code);
    this.#flush();
  }

  /**
   * Writes an answer: its fields as one field block, then its body as DATA frames within the
   * client's windows. True when all of it went out.
   */
  async #respond(s: Stream, res: Response, head: boolean): Promise<boolean> {
    if (s.reset || this.#closed) {
      await res.body?.cancel().catch(() => {});
      return false;
    }
    const status = res.status;
    const enc = this.#encoder.begin().status(status);
    let length: string | null = null;
    let date = false;
    res.headers.forEach((v, k) => {
      if (CONNECTION_SPECIFIC.has(k)) return;
      if (k === "content-length") {
        length = v;
        return;
      }
      if (k === "date") date = true;
      enc.field(k, v);
    });
    if (!date) enc.field("date", httpDate());
    const noContent = status === 204 || status === 304 || status < 200;
    const raw = (res as RawBodied)[RAW_BODY];
    const max = this.#peerMaxFrame;
    if (raw !== undefined && !head && !noContent && !res.bodyUsed) {
      enc.field("content-length", String(raw.byteLength));
      this.#out.headers(s.id, enc.block, raw.byteLength === 0, max);
      if (raw.byteLength === 0) {
        s.localEnded = true;
        this.#flush();
        (res as Releasable)[RELEASE]?.();
        return true;
      }
      const sent = await this.#send(s, raw, true);
      // Framed (copied) or abandoned: a buffer the upstream client lent goes back (ports.ts RELEASE).
      (res as Releasable)[RELEASE]?.();
      return sent;
    }
    const body = res.body;
    if (head || noContent || body === null) {
      if (length !== null && !(status === 204 || status < 200)) enc.field("content-length", length);
      else if (body === null && !noContent) enc.field("content-length", "0");
      body?.cancel().catch(() => {});
      this.#out.headers(s.id, enc.block, true, max);
      s.localEnded = true;
      this.#flush();
      return true;
    }
    const declared = length !== null && /^[0-9]{1,15}$/.test(length) ? Number(length) : -1;
    if (declared >= 0) enc.field("content-length", String(declared));
    this.#out.headers(s.id, enc.block, false, max);
    this.#flush();
    // The upstream client's chunks go back once framed (copied): ports.ts LEND_CHUNKS.
    const framed = (body as ChunkLending)[LEND_CHUNKS]?.();
    const reader = body.getReader();
    const cancel = () => reader.cancel(s.signal.reason).catch(() => {});
    s.signal.addEventListener("abort", cancel, { once: true });
    let sent = 0;
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          // A gRPC call that timed out ends with grpc-status 4 in its trailers (sent below).
          if (declared < 0 && !s.reset && deadlineTrailers(res, err)) break;
          // The body failed after the head went out: the stream is reset, as the client must
          // not take a short answer for a whole one.
          if (!s.reset) bodyFailed(this.#env.logger, err, this.#env.metrics);
          return false;
        }
        if (chunk.done) break;
        const bytes = chunk.value;
        if (bytes.byteLength === 0) continue;
        if (declared >= 0 && sent + bytes.byteLength > declared) {
          reader.cancel().catch(() => {});
          return false;
        }
        const ok = await this.#send(s, bytes, false);
        framed?.(bytes);
        if (!ok) {
          reader.cancel().catch(() => {});
          return false;
        }
        sent += bytes.byteLength;
      }
    } finally {
      s.signal.removeEventListener("abort", cancel);
    }
    if (declared >= 0 && sent !== declared) return false;
    // The upstream's trailers (an h2c upstream's: gRPC's status) end the stream (RFC 9113 §8.1).
    const trailers = (res as CountedResponse)[COUNTER]?.trailers;
    if (trailers !== undefined && trailers.length > 0 && !s.reset && !this.#closed) {
      const block = this.#encoder.begin();
      for (const [k, v] of trailers) {
        // As the other engines: not the fields a trailer must not hold (RFC 9110 §6.5.1).
        if (trailerPasses(k)) block.field(k, v);
      }
      this.#out.headers(s.id, block.block, true, max);
      s.localEnded = true;
      this.#flush();
      return true;
    }
    return await this.#send(s, NO_BYTES, true);
  }

  /** Sends `bytes` as DATA frames as the windows allow; END_STREAM on the last when `end`. */
  async #send(s: Stream, bytes: Uint8Array, end: boolean): Promise<boolean> {
    let off = 0;
    for (;;) {
      if (s.reset || this.#closed) return false;
      const left = bytes.length - off;
      // (An empty END_STREAM frame needs no window, which a SETTINGS change may have made negative.)
      // (Window set aside for answers woken to send is theirs: #passWindow.)
      const n = left === 0
        ? 0
        : Math.min(left, s.sendWindow, this.#sendWindow - this.#reserved, this.#peerMaxFrame);
      if (n <= 0 && left > 0) {
        // Waits for a WINDOW_UPDATE (or the client's going): in turn for the connection's window
        // where its stream's is open, else for its stream's.
        s.want = left;
        if (s.sendWindow > 0) this.#windowWaiters.add(s);
        if (s.waitingSince === 0) s.waitingSince = performance.now();
        // The connection's window its own shut it out of goes to the next in turn.
        if (this.#windowWaiters.size > 0) this.#passWindow();
        await new Promise<void>((resolve) => s.windowWake = resolve);
        s.windowWake = null;
        this.#reserved -= s.reserved;
        s.reserved = 0;
        if ((s.reset || this.#closed) && this.#windowWaiters.size > 0) {
          // What was set aside for it goes to the next in turn.
          this.#windowWaiters.delete(s);
          this.#passWindow();
        }
        continue;
      }
      if (s.waitingSince !== 0) {
        // Its turn came: it leaves the queue (and goes to its back if it waits again).
        s.waitingSince = 0;
        this.#windowWaiters.delete(s);
      }
      const last = off + n === bytes.length;
      this.#out.frame(
        FrameType.DATA,
        last && end ? Flag.END_STREAM : 0,
        s.id,
        bytes.subarray(off, off + n),
      );
      s.sendWindow -= n;
      this.#sendWindow -= n;
      if (this.#updateBudget < 10 * UPDATE_BUDGET) this.#updateBudget += 10;
      off += n;
      if (last && end) s.localEnded = true;
      this.#flush();
      if (this.#out.length > WRITE_HIGH) {
        await new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
        // Reset meanwhile: the window it was woken for and did not use goes to the next in turn
        // (no WINDOW_UPDATE may come for it).
        if (s.reset && this.#windowWaiters.size > 0) this.#passWindow();
      }
      if (last) {
        // Window left over (its stream's closed early, a smaller SETTINGS): the next in turn.
        if (this.#windowWaiters.size > 0) this.#passWindow();
        return true;
      }
    }
  }

  /** When the write in flight began (0: none). */
  #writeSince = 0;

  /**
   * The listener's check, every second: a connection idle for `limitMs` gets a GOAWAY; one whose
   * write has not gone out in as long (a client that stopped reading) is closed; a stream that has
   * waited as long for the client's window is reset (CANCEL), letting its upstream go.
   */
  sweep(now: number, limitMs: number): void {
    if (this.idleSince > 0 && now - this.idleSince > limitMs) return this.goaway();
    if (this.#writeSince > 0 && now - this.#writeSince > limitMs) return this.close();
    for (const s of this.#streams.values()) {
      if (s.waitingSince > 0 && now - s.waitingSince > limitMs) {
        this.#resetStream(s.id, ErrorCode.CANCEL);
        s.abort();
      }
    }
  }

  /**
   * Starts a write of the frames waiting, unless one is in flight (it takes them after), once the
   * event loop has run its I/O callbacks: the frames of an answer whose parts are there together
   * (HEADERS, DATA, the END_STREAM) go out in one write. Written as they were queued (a microtask
   * later), a small streamed answer took 44 ms on TLS, where Deno gives no way to set TCP_NODELAY:
   * the second write waited for the client's delayed ACK of the first (Nagle).
   */
  #flush(): void {
    if (this.#flushQueued || this.#writing || this.#closed) return;
    this.#flushQueued = true;
    setImmediate(() => {
      this.#flushQueued = false;
      void this.#write();
    });
  }

  async #write(): Promise<void> {
    if (this.#writing || this.#closed) return;
    this.#writing = true;
    try {
      while (this.#out.length > 0 || this.#lateResets.length > 0) {
        if (this.#out.length === 0) {
          for (const id of this.#lateResets) {
            this.#out.u32(FrameType.RST_STREAM, id, ErrorCode.NO_ERROR);
          }
          this.#lateResets = [];
        }
        const out = this.#out.take();
        this.#writeSince = performance.now();
        for (let off = 0; off < out.length;) {
          off += await this.#io.write(off === 0 ? out : out.subarray(off));
        }
        this.#writeSince = 0;
        this.#out.giveBack(out);
        if (this.#out.length <= WRITE_HIGH) this.#wakeDrained();
      }
    } catch {
      this.close();
    } finally {
      this.#writing = false;
      this.#wakeDrained();
      if (this.#inWork === 0 && this.#out.length === 0) this.#out.release();
    }
  }

  #wakeDrained(): void {
    const waiters = this.#drainWaiters;
    if (waiters.length === 0) return;
    this.#drainWaiters = [];
    for (const w of waiters) w();
  }

  #fail(code: number, reason: string): void {
    if (this.#closed) return;
    this.#env.logger.debug("HTTP/2 connection error", { code, reason });
    if (!this.#goawaySent) {
      this.#goawaySent = true;
      this.#out.goaway(this.#lastStream, code);
      this.#flush();
    }
    for (const s of this.#streams.values()) s.abort();
  }

  /**
   * Tells the client that no new stream will be served (GOAWAY with the last one taken): the
   * connection closes once the streams in work have answered.
   */
  goaway(): void {
    if (this.#goawaySent || this.#closed) return;
    this.#goawaySent = true;
    this.#out.goaway(this.#lastStream, ErrorCode.NO_ERROR);
    this.#flush();
    if (this.#inWork === 0) {
      // Nothing in work: the connection ends once the GOAWAY is out.
      void this.#settle().then(() => this.close());
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#streams.values()) s.abort();
    this.#wakeDrained();
    try {
      this.#io.close();
    } catch { /* already closed */ }
    if (this.#onIdle) this.#onIdle();
  }
}

/** The stream a priority block at `at` of `p` depends on (RFC 9113 §6.3). */
function dependency(p: Uint8Array, at: number): number {
  return ((p[at] & 0x7f) << 24) | (p[at + 1] << 16) | (p[at + 2] << 8) | p[at + 3];
}

/** A Sec-WebSocket-Key for the pipeline's handshake check; it goes nowhere (RFC 6455 §4.1). */
function wsKey(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
}
