// HTTP/2 with prior knowledge (h2c, RFC 9113 §3.3) to upstreams: Prox's own client, for routes
// with `upstream_protocol: h2c`, which is how gRPC services usually listen behind a proxy that
// ends TLS. fetch can neither speak h2c nor hand on response trailers, and gRPC puts its status
// in trailers (`grpc-status`): this client passes them on the response's body counter
// (`BodyCounter.trailers`), which Prox's HTTP/2 engine writes after the body.
//
// Per origin, requests share connections (sessions) as the upstream's SETTINGS_MAX_CONCURRENT_
// STREAMS allows, and a new session opens when every one is full or going away (GOAWAY). The
// pool's admission (at most `maxConnectionsPerUpstream` requests in flight per origin, then a
// bounded queue) is applied per request by the caller (upstream_slots.ts). Bodies stream both
// ways within HTTP/2 flow control: what the upstream sends on a stream is let in as its client
// reads it (at most STREAM_WINDOW held per stream); the connection's window is given back as
// frames arrive (as grpc-go does), so a client that does not read stalls only its own stream.

import { ProxyError } from "../domain/errors.ts";
import { originHost, originName } from "../domain/upstream_origin.ts";
import { BODY_BYTES, UNREAD_BODY } from "../ports.ts";
import type {
  BodyCounter,
  CountedResponse,
  EarlyHintsSink,
  UnreadBody,
  UpstreamRequest,
} from "../ports.ts";
import { MAX_INTERIM, passHints } from "./early_hints.ts";
import type { Transport } from "./upstream_h1_conn.ts";
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
} from "./h2/frames.ts";
import { HpackDecoder, HpackEncoder, HpackError } from "./h2/hpack.ts";
import { HeaderList } from "../domain/header_list.ts";
import { WireResponse } from "../proxy/wire_response.ts";

/** The stream window Prox gives the upstream for each response body (SETTINGS). */
const STREAM_WINDOW = 1024 * 1024;
/**
 * The connection window Prox gives the upstream, over all its streams; given back as DATA arrives
 * (what Prox holds is bounded per stream), so it only paces the connection.
 */
const CONNECTION_WINDOW = 8 * 1024 * 1024;
/** Frames Prox takes: the default SETTINGS_MAX_FRAME_SIZE, which it does not raise. */
const MAX_FRAME = 16 * 1024;
/** Bytes waiting to be written past which a sender waits for the socket. */
const WRITE_HIGH = 256 * 1024;
/** Streams a session opens at most, whatever the upstream allows (ids are not reused). */
const STREAMS_PER_SESSION = 1 << 30;
/**
 * Frames that ask work of Prox without a request (PING, SETTINGS, PRIORITY, empty DATA, unknown
 * types) allowed within CONTROL_PERIOD_MS, plus 10 per request (as Prox's HTTP/2 server allows its
 * clients): past them the upstream floods, and the connection ends with ENHANCE_YOUR_CALM.
 */
const CONTROL_BUDGET = 1000;
const CONTROL_PERIOD_MS = 10_000;
/**
 * WINDOW_UPDATEs allowed beyond 10 for each DATA frame Prox sent and 10 for each request (as the
 * HTTP/2 engine allows its clients, and Envoy's max_inbound_window_update_frames_per_data_frame_
 * sent): an upstream gives window back as it reads request bodies, or widens a new stream's.
 */
const UPDATE_BUDGET = 1000;
/**
 * The most values a SETTINGS frame may carry (nghttp2's, CVE-2020-11080): each
 * SETTINGS_INITIAL_WINDOW_SIZE of a 16 KiB frame's 2,730 would move every open stream's window.
 */
const MAX_SETTINGS = 32;
/** Assumed until the upstream's SETTINGS say otherwise (RFC 9113 §6.5.2 sets no default). */
const DEFAULT_MAX_STREAMS = 100;
/**
 * The client's timeouts are checked by one ticker over the streams in flight rather than a timer
 * per stream (a timer, its clearing and an abort listener per request were 3–4 % of a gRPC call's
 * CPU). A time field is UNSEEN after an event until the ticker's next look stamps its own time
 * on it: no clock read per frame, and a timeout fires up to two ticks after it passed, never
 * before. (UNSEEN is not an integer so the fields always hold doubles: see upstream_h1_conn.ts.)
 */
const TICK_MS = 25;
const UNSEEN = -0.5;

/** Fields that are this hop's, never sent in HTTP/2 (RFC 9113 §8.2.2). */
const CONNECTION_SPECIFIC = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "host",
  "http2-settings",
]);

/** Fields that make an HTTP/2 response malformed (RFC 9113 §8.2.2). */
const HOP_FIELDS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);

/** A field name: lowercase token characters (RFC 9110 §5.6.2, RFC 9113 §8.2.1). */
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
/** A field value that is malformed: NUL, CR, LF, or white space at either end. */
const BAD_VALUE = /[\0\r\n]|^[ \t]|[ \t]$/;

/** Statuses a Fetch Response must not have a body with. */
const NULL_BODY = new Set([204, 205, 304]);
/** The empty DATA frame that ends a request body. */
const NO_BYTES = new Uint8Array(0);
/** The most of a lean answer's body handed on as bytes when it came whole with its head. */
const ONE_READ = 64 * 1024;

export interface H2cClientOptions {
  /** Largest response field block (decoded, as SETTINGS_MAX_HEADER_LIST_SIZE counts). */
  maxHeaderBytes: number;
  /** A session with no streams for this long is closed (0: never). */
  idleTimeout: number;
  /** Connects to an upstream origin: TCP, or TLS that chose h2 by ALPN for https origins. */
  connect(req: UpstreamRequest): Promise<Transport>;
}

export interface H2cClient {
  /**
   * Sends one request on a session of `key` (the origin and its TLS settings); `release` runs once
   * the stream is over (answered, failed or reset).
   */
  send(req: UpstreamRequest, key: string, release: () => void): Promise<Response>;
  /** Sessions and streams per origin key (status pages, tests). */
  stats(key: string): { sessions: number; idle: number; streams: number; windowWakes: number };
  close(): Promise<void>;
}

/** A streamed request body on its way to the upstream. */
interface Upload {
  readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  /** The read in progress, if any. */
  reading: Promise<ReadableStreamReadResult<Uint8Array>> | null;
  /** Some of the body was read (it is not kept: the request cannot go again). */
  read: boolean;
}

interface Stream {
  readonly id: number;
  readonly source: string;
  /** The response head's outcome, once. */
  settle: ((res: Response | ProxyError) => void) | null;
  /** The response head came. */
  answered: boolean;
  /** A HEAD request, or an answer with a status that has no content. */
  noContent: boolean;
  /** Longest pause in the response body (timeouts.idle; 0: none). */
  readonly idleMs: number;
  /** Longest wait for the response head (timeouts.response_header; 0: none). */
  readonly headMs: number;
  /** When the request had all gone (UNSEEN until the ticker's first look then), for `headMs`. */
  opened: number;
  /** The client's signal, looked up once the exchange has lasted a tick (null: linked or none). */
  lookUp: (() => AbortSignal) | null;
  /** Ticker looks at the stream while `lookUp` waited. */
  looks: number;
  /** The linked signal and its listener, removed once the answer came or the stream ended. */
  signal: AbortSignal | null;
  onAbort: (() => void) | null;
  status: number;
  fields: [string, string][];
  /** Response body bytes not yet read by the client. */
  chunks: Uint8Array<ArrayBuffer>[];
  /** The last chunk when small payloads are being joined into its buffer (queueCopy). */
  joined: Uint8Array<ArrayBuffer> | null;
  /** Wakes a read waiting for a chunk, the end or an error. */
  wake: (() => void) | null;
  error: ProxyError | null;
  remoteEnded: boolean;
  localEnded: boolean;
  /** Reset by either side, or failed with the session. */
  closed: boolean;
  /** The upstream's window for this stream (what Prox may still send). */
  sendWindow: number;
  /**
   * When the upstream last sent a frame on this stream, or a wait for it began (UNSEEN until
   * the ticker stamps it), for `idleMs` while `wake` or `windowWake` waits.
   */
  active: number;
  /** Wakes a request body waiting for window (#passWindow for the connection's). */
  windowWake: (() => void) | null;
  /** What the body waiting for window has left to send of its chunk. */
  want: number;
  /** Connection window set aside for the body woken to send, until it runs (#passWindow). */
  reserved: number;
  /** The body waited for window and has not sent since (it is in the queue, or was woken). */
  waited: boolean;
  /** A request body waits for the connection's writes to drain (the upstream reads nothing). */
  writeWait: boolean;
  /** Bytes the client read that the upstream has not been given window for yet. */
  unacked: number;
  /** What the upstream may still send on this stream (the window Prox granted). */
  recvWindow: number;
  /** The answer's content-length (-1: none, or an answer without content). */
  expected: number;
  /** Content bytes the upstream sent. */
  received: number;
  counter: BodyCounter;
  release: () => void;
  /** The streamed request body while it goes (null: none, sent whole, or given back). */
  upload: Upload | null;
  /** Where a 103's fields go (UpstreamRequest.hints; null: dropped), and 103s passed so far. */
  hints: EarlyHintsSink | null;
  hinted: number;
  /** The answer may be a WireResponse (UpstreamRequest.lean). */
  lean: boolean;
  /** A lean answer's fields, held until the frames read with them are handled (#deliver). */
  head: HeaderList | null;
}

function protocolError(source: string, msg: string): ProxyError {
  return new ProxyError("protocol", `Upstream "${source}" ${msg}`, { source });
}

/** The bytes start like an HTTP/1.x status line ("HTTP/"). */
function isHttp1(buf: Uint8Array, at: number): boolean {
  return buf[at] === 0x48 && buf[at + 1] === 0x54 && buf[at + 2] === 0x54 &&
    buf[at + 3] === 0x50 && buf[at + 4] === 0x2f;
}

class Session {
  readonly #conn: Transport;
  readonly #out = new FrameWriter();
  readonly #enc = new HpackEncoder();
  readonly #dec: HpackDecoder;
  readonly #streams = new Map<number, Stream>();
  /** Lean answers whose head came in the frames being handled (#deliver hands them on). */
  #answers: Stream[] = [];
  readonly #opts: H2cClientOptions;
  readonly source: string;
  #nextId = 1;
  /** The upstream's SETTINGS. */
  maxStreams = DEFAULT_MAX_STREAMS;
  #initialWindow = 65535;
  #maxFrame = 16384;
  /** What Prox may still send on the connection. */
  #sendWindow = 65535;
  /**
   * Request bodies waiting for the connection's window (their stream's own is open), in turn: one
   * that sent goes to the back when it waits again. Those waiting for their stream's window are
   * not here until a WINDOW_UPDATE or SETTINGS opens it.
   */
  readonly #windowWaiters = new Set<Stream>();
  /** Connection window set aside for bodies woken and not yet run (Stream.reserved). */
  #reserved = 0;
  /** Bytes read by clients not yet given back to the upstream as connection window. */
  #unacked = 0;
  /** What the upstream may still send on the connection (the window Prox granted). */
  #recvWindow = CONNECTION_WINDOW;
  /** A GOAWAY came (or this side is closing): no new streams. */
  draining = false;
  /**
   * The upstream read none of what Prox wrote for a stream's `timeouts.idle`: nothing more can be
   * written (a GOAWAY would wait behind the rest), so the connection closes without one.
   */
  #stalled = false;
  closed = false;
  /** Streams above this id the upstream did not process (GOAWAY). */
  #lastProcessed = Infinity;
  #writing = false;
  /** Set once the session is to close after what is waiting is written (its error, or null). */
  #closeWith: ProxyError | null | undefined = undefined;
  #drainWaiters: (() => void)[] = [];
  /** The upstream's first SETTINGS came. */
  settled = false;
  /** Those SETTINGS were applied (#onSettings). */
  #heard = false;
  /** Control frames left before the upstream counts as flooding (refilled by requests). */
  #controlBudget = CONTROL_BUDGET;
  #controlSince = performance.now();
  /** WINDOW_UPDATEs left before the upstream counts as flooding (UPDATE_BUDGET). */
  #updateBudget = UPDATE_BUDGET;
  /** Header block of a HEADERS frame still waiting for its CONTINUATION frames. */
  #pending:
    | { stream: number; end: boolean; parts: Uint8Array[]; bytes: number; frames: number }
    | null = null;
  /** When the last stream ended (for the idle sweep); 0.5 while streams are open. */
  idleSince = 0.5;
  readonly done: Promise<void>;
  /** Request bodies woken by WINDOW_UPDATEs and SETTINGS to send (for tests). */
  windowWakes = 0;

  /** `maxStreams`: assumed until the upstream's SETTINGS come (what its other sessions said). */
  constructor(conn: Transport, source: string, opts: H2cClientOptions, maxStreams: number) {
    this.#conn = conn;
    this.source = source;
    this.maxStreams = maxStreams;
    this.#opts = opts;
    this.#dec = new HpackDecoder(4096);
    this.idleSince = performance.now();
    // Preface, SETTINGS and the connection window in one write (RFC 9113 §3.4).
    this.#out.settings([
      [Setting.ENABLE_PUSH, 0],
      [Setting.INITIAL_WINDOW_SIZE, STREAM_WINDOW],
      [Setting.MAX_HEADER_LIST_SIZE, opts.maxHeaderBytes],
    ]);
    this.#out.u32(FrameType.WINDOW_UPDATE, 0, CONNECTION_WINDOW - 65535);
    const first = this.#out.take();
    const hello = new Uint8Array(PREFACE.length + first.length);
    hello.set(PREFACE);
    hello.set(first, PREFACE.length);
    this.#writing = true;
    this.#writeAll(hello).then(() => {
      this.#writing = false;
      this.#flush();
    }, (err) => this.#fail(err));
    this.done = this.#readLoop();
  }

  get streams(): number {
    return this.#streams.size;
  }

  /** Room for one more stream. */
  get open(): boolean {
    return !this.draining && !this.closed && this.#streams.size < this.maxStreams &&
      this.#nextId < STREAMS_PER_SESSION;
  }

  // ------------------------------------------------------------------------------------------
  // Writing

  async #writeAll(buf: Uint8Array): Promise<void> {
    for (let off = 0; off < buf.length;) off += await this.#conn.write(buf.subarray(off));
  }

  #flush(): void {
    if (this.#writing || this.closed) return;
    if (this.#out.length === 0) {
      if (this.#closeWith !== undefined) this.#fail(this.#closeWith);
      return;
    }
    this.#writing = true;
    this.#writeLoop().catch((err) => this.#fail(err));
  }

  /**
   * Writes what waits until nothing does. `#writing` goes false in the same turn as the last
   * check for more: a frame added after that starts a new loop (one added between the check and
   * a later reset would wait for the next write).
   */
  async #writeLoop(): Promise<void> {
    try {
      while (this.#out.length > 0 && !this.closed) {
        const buf = this.#out.take();
        await this.#writeAll(buf);
        this.#out.giveBack(buf);
        if (this.#out.length <= WRITE_HIGH) {
          for (const wake of this.#drainWaiters.splice(0)) wake();
        }
      }
    } finally {
      this.#writing = false;
    }
    for (const wake of this.#drainWaiters.splice(0)) wake();
    if (this.#closeWith !== undefined) this.#fail(this.#closeWith);
  }

  /** Resolves once the frames waiting are few enough to add more. */
  #drained(): Promise<void> | undefined {
    if (this.#out.length <= WRITE_HIGH || this.closed) return undefined;
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /** One more control frame from the upstream: past the budget, a connection error. */
  #spend(): void {
    if (--this.#controlBudget >= 0) return;
    const now = performance.now();
    if (now - this.#controlSince < CONTROL_PERIOD_MS) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many control frames");
    }
    this.#controlSince = now;
    this.#controlBudget = CONTROL_BUDGET - 1;
  }

  // ------------------------------------------------------------------------------------------
  // Requests

  /** Opens a stream for `req` and sends its head; the body goes on beside the answer. */
  request(req: UpstreamRequest, release: () => void): Promise<Response> {
    const id = this.#nextId;
    this.#nextId += 2;
    const head = req.method === "HEAD";
    const counter: BodyCounter = { bytes: 0, ended: false };
    // A deadline's signal stays linked through the body (see UpstreamRequest.watchBody).
    if (req.watchBody && req.signal) counter.watched = true;
    let settle!: (res: Response | ProxyError) => void;
    const answer = new Promise<Response>((resolve, reject) => {
      settle = (r) => r instanceof ProxyError ? reject(r) : resolve(r);
    });
    const s: Stream = {
      id,
      source: this.source,
      settle,
      answered: false,
      noContent: head,
      idleMs: req.timeouts.idle,
      headMs: req.timeouts.responseHeader,
      opened: UNSEEN,
      lookUp: null,
      looks: 0,
      signal: null,
      onAbort: null,
      status: 0,
      fields: [],
      chunks: [],
      joined: null,
      wake: null,
      error: null,
      remoteEnded: false,
      localEnded: false,
      closed: false,
      sendWindow: this.#initialWindow,
      active: UNSEEN,
      windowWake: null,
      want: 0,
      reserved: 0,
      waited: false,
      writeWait: false,
      unacked: 0,
      recvWindow: STREAM_WINDOW,
      expected: -1,
      received: 0,
      counter,
      release,
      upload: null,
      hints: req.hints ?? null,
      lean: req.lean === true,
      head: null,
      hinted: 0,
    };
    this.#streams.set(id, s);
    this.idleSince = 0.5;
    this.#controlBudget = Math.min(this.#controlBudget + 10, 10 * CONTROL_BUDGET);
    if (this.#updateBudget < 10 * UPDATE_BUDGET) this.#updateBudget += 10;

    const enc = this.#enc.begin()
      .field(":method", req.method)
      .field(":scheme", req.origin.protocol === "https:" ? "https" : "http")
      .field(":authority", req.headers.get("host") ?? originHost(req.origin))
      .field(":path", req.target);
    req.headers.forEach((v, k) => {
      if (!CONNECTION_SPECIFIC.has(k)) enc.field(k, v);
    });
    // Prox takes trailers and hands them on (gRPC servers expect to be told, RFC 9110 §10.1.4).
    enc.field("te", "trailers");
    const body = req.body;
    const empty = body === null || (body instanceof Uint8Array && body.byteLength === 0);
    this.#out.headers(id, enc.block, empty, this.#maxFrame);
    if (empty) s.localEnded = true;
    this.#flush();

    // The signal of a deadline (timeouts.total, a per-try timeout) is linked at once; the
    // client's own only once the exchange has lasted a tick (UpstreamRequest.clientSignal).
    if (req.signal) this.#link(s, req.signal);
    else if (req.clientSignal) s.lookUp = req.clientSignal;

    if (!empty) {
      this.#sendBody(s, body!).catch((err) => {
        const e = err instanceof ProxyError
          ? err
          : new ProxyError("upstream_reset", `Upstream "${this.source}": ${err}`, {
            source: this.source,
          });
        this.#cancel(s, e);
      });
    }
    return answer;
  }

  /** Until the answer comes, a client that leaves (`signal`) ends the stream. */
  #link(s: Stream, signal: AbortSignal): void {
    s.lookUp = null;
    if (s.closed) return;
    const onAbort = () =>
      this.#cancel(
        s,
        // A watched deadline's own error (a timeout) when it passed; else the client left.
        s.counter.watched && signal.reason instanceof ProxyError
          ? signal.reason
          : new ProxyError("client_gone", "Client went away", { source: this.source }),
      );
    if (signal.aborted) return onAbort();
    s.signal = signal;
    s.onAbort = onAbort;
    signal.addEventListener("abort", onAbort, { once: true });
  }

  /** The answer came or the stream ended: while the body streams, a client that leaves cancels it. */
  #unlink(s: Stream): void {
    s.lookUp = null;
    if (s.onAbort === null) return;
    s.signal!.removeEventListener("abort", s.onAbort);
    s.signal = null;
    s.onAbort = null;
  }

  /** The ticker's look at the streams in flight (see TICK_MS); `now` is its clock reading. */
  check(now: number): void {
    for (const s of this.#streams.values()) {
      if (!s.answered) {
        if (s.lookUp !== null && ++s.looks >= 2) this.#link(s, s.lookUp());
        // The head is waited for from the request's end, as the HTTP/1.1 client does (and
        // nginx): a gRPC client stream whose server answers once it has all of it was cut at
        // response_header while it still uploaded. A stalled upload ends by timeouts.idle.
        if (s.headMs > 0 && s.localEnded) {
          if (s.opened === UNSEEN) s.opened = now;
          else if (now - s.opened >= s.headMs) {
            this.#cancel(
              s,
              new ProxyError(
                "timeout",
                `Upstream "${this.source}" sent no response head within ${s.headMs} ms`,
                { source: this.source },
              ),
            );
            continue;
          }
        }
      }
      // Waiting on the client's body counts too: with the answer's head still to come, nothing
      // else ends a client that stops sending (408, as the HTTP/1.1 client's idle timeout does).
      const uploading = s.upload !== null && s.upload.reading !== null;
      if (s.idleMs > 0 && (s.wake !== null || s.windowWake !== null || uploading || s.writeWait)) {
        if (s.active === UNSEEN) s.active = now;
        else if (now - s.active >= s.idleMs) {
          if (s.writeWait) {
            // The windows were open, but the socket took nothing: no new streams go here, and
            // the connection closes with its last stream.
            this.#stalled = true;
            this.draining = true;
          }
          if (s.remoteEnded) {
            // The answer came whole before the request's end (RFC 9113 §8.1): only the rest of
            // the upload is given up, and the answer is read as it came, trailers and all.
            this.#cancel(s, null);
            continue;
          }
          if (s.writeWait) {
            const msg =
              `Upstream "${this.source}" read none of the request body for ${s.idleMs} ms`;
            this.#cancel(s, new ProxyError("timeout", msg, { source: this.source }));
            continue;
          }
          if (s.windowWake === null && s.wake === null && !s.answered) {
            const msg = `The request body paused for more than ${s.idleMs} ms (timeouts.idle)`;
            this.#cancel(s, new ProxyError("request_timeout", msg));
            continue;
          }
          const msg = s.windowWake !== null
            ? `Upstream "${this.source}" opened no window for the request body in ${s.idleMs} ms`
            : `Upstream was idle for ${s.idleMs} ms`;
          this.#cancel(s, new ProxyError("timeout", msg, { source: this.source }));
        }
      }
    }
  }

  /** Sends a request body as DATA frames within the windows, END_STREAM on the last. */
  // A client body that fails (the client left, stalled past its timeout, sent too much) rejects
  // here: the stream is reset and the request fails with the body's own error.
  async #sendBody(s: Stream, body: ReadableStream<Uint8Array> | Uint8Array): Promise<void> {
    if (body instanceof Uint8Array) {
      await this.#data(s, body, true);
      return;
    }
    const up: Upload = { reader: body.getReader(), reading: null, read: false };
    if (s.closed) {
      up.reader.cancel().catch(() => {});
      return;
    }
    // From here on, the stream's end cancels the body (#end) unless it gives it back (#unsent).
    s.upload = up;
    for (;;) {
      s.active = UNSEEN; // a wait for the client begins (see check)
      up.reading = up.reader.read();
      const r = await up.reading;
      if (s.upload !== up) return;
      up.reading = null;
      s.active = UNSEEN;
      if (r.done) break;
      if (r.value.byteLength === 0) continue;
      up.read = true;
      if (!await this.#data(s, r.value, false)) return;
    }
    s.upload = null;
    await this.#data(s, NO_BYTES, true);
  }

  /**
   * The error of a stream the upstream did not process (REFUSED_STREAM, or past a GOAWAY's last
   * stream, RFC 9113 §8.7): the request may go again. A streamed body none of which was read yet
   * goes with it (UNREAD_BODY), whole, for the retry; one partly read is not kept and cannot.
   */
  #unsent(s: Stream, msg: string): ProxyError {
    const e: ProxyError & UnreadBody = new ProxyError("upstream_reset", msg, {
      source: this.source,
      sentNothing: true,
    });
    const up = s.upload;
    if (up !== null && !up.read) {
      s.upload = null;
      let first = up.reading;
      const reader = up.reader;
      e[UNREAD_BODY] = new ReadableStream<Uint8Array>({
        async pull(c) {
          // The read this stream's upload was waiting on (nothing of it was taken) comes first.
          const r = await (first ?? reader.read());
          first = null;
          if (r.done) c.close();
          else c.enqueue(r.value);
        },
        cancel: (why) => reader.cancel(why),
      }, { highWaterMark: 0 });
    }
    return e;
  }

  /** `bytes` as DATA frames as the windows allow; false once the stream is gone. */
  async #data(s: Stream, bytes: Uint8Array, end: boolean): Promise<boolean> {
    let off = 0;
    for (;;) {
      if (s.closed || this.closed) return false;
      const left = bytes.length - off;
      // (Window set aside for bodies woken to send is theirs: #passWindow.)
      const n = left === 0
        ? 0
        : Math.min(left, s.sendWindow, this.#sendWindow - this.#reserved, this.#maxFrame);
      if (n <= 0 && left > 0) {
        await this.#windowWait(s, left);
        continue;
      }
      if (s.waited) {
        // Its turn came: it leaves the queue (and goes to its back if it waits again).
        s.waited = false;
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
      off += n;
      // An upstream may ping for each DATA frame it gets (gRPC's BDP estimate): not a flood.
      // So may it give window back for each (two WINDOW_UPDATEs: the stream's, the connection's).
      if (n > 0) {
        this.#controlBudget = Math.min(this.#controlBudget + 1, 10 * CONTROL_BUDGET);
        if (this.#updateBudget < 10 * UPDATE_BUDGET) this.#updateBudget += 10;
      }
      if (last && end) {
        s.localEnded = true;
        this.#maybeDone(s);
      }
      this.#flush();
      const wait = this.#drained();
      if (wait) {
        // An upstream that reads nothing holds this wait: timeouts.idle ends it (see check).
        s.active = UNSEEN;
        s.writeWait = true;
        await wait;
        s.writeWait = false;
        // Ended meanwhile: the window it was woken for and did not use goes to the next in turn
        // (no WINDOW_UPDATE may come for it).
        if (s.closed && this.#windowWaiters.size > 0) this.#passWindow();
      }
      if (last) {
        // Window it leaves (its chunk sent, the next still to be read): the next in turn.
        if (this.#windowWaiters.size > 0) this.#passWindow();
        return true;
      }
    }
  }

  /**
   * Resolves when a window may have opened for the `want` bytes left: in turn for the
   * connection's where the stream's own is open, else for the stream's. An upstream that neither
   * opens one nor sends anything on the stream for `timeouts.idle` ends it: a request body would
   * otherwise wait for good (and hold its slot), also after a whole answer.
   */
  async #windowWait(s: Stream, want: number): Promise<void> {
    s.active = UNSEEN;
    s.want = want;
    s.waited = true;
    if (s.sendWindow > 0) this.#windowWaiters.add(s);
    // The connection's window its own stream's shut it out of goes to the next in turn.
    if (this.#windowWaiters.size > 0) this.#passWindow();
    await new Promise<void>((resolve) => s.windowWake = resolve);
    s.windowWake = null;
    this.#reserved -= s.reserved;
    s.reserved = 0;
    if (s.closed || this.closed) {
      // What was set aside for it goes to the next in turn.
      s.waited = false;
      this.#windowWaiters.delete(s);
      if (this.#windowWaiters.size > 0) this.#passWindow();
    }
  }

  /** Passes the connection's free window to the senders waiting for it, in turn (passWindow). */
  #passWindow(): void {
    this.#reserved += passWindow(this.#windowWaiters, this.#sendWindow - this.#reserved, this);
  }

  /** Ends a stream from this side: RST_STREAM CANCEL, and `err` for whoever waits on it. */
  #cancel(s: Stream, err: ProxyError | null): void {
    if (s.closed) return;
    if (!(s.localEnded && s.remoteEnded) && !this.closed) {
      this.#out.u32(FrameType.RST_STREAM, s.id, ErrorCode.CANCEL);
      this.#flush();
    }
    this.#end(s, err);
  }

  /** The stream is over: its waiters learn `err` (if any) and its slot is freed. */
  #end(s: Stream, err: ProxyError | null): void {
    if (s.closed) return;
    s.closed = true;
    this.#unlink(s);
    if (s.answered && s.counter.watched) {
      // The watched deadline is over with the upstream's stream (its unread chunks are the
      // client's to read): the proxy clears its timer.
      s.counter.over = true;
      s.counter.onOver?.();
    }
    if (s.upload !== null) {
      // The rest of a request body that goes nowhere now: the client is not left uploading.
      s.upload.reader.cancel().catch(() => {});
      s.upload = null;
    }
    this.#streams.delete(s.id);
    if (this.#streams.size === 0) {
      this.idleSince = performance.now();
      // Going away (a GOAWAY came): nothing more will use it, so it closes with its last stream
      // rather than wait for the idle sweep (or forever, without idle_timeout).
      if (this.draining && !this.closed) queueMicrotask(() => this.shut());
    }
    if (err !== null) {
      s.error = err;
      if (s.settle) {
        s.settle(err);
        s.settle = null;
      }
    }
    const windowWake = s.windowWake;
    if (windowWake !== null) {
      // (Taken so #passWindow, before its body runs, does not count it as waiting.)
      s.windowWake = null;
      windowWake();
    }
    s.wake?.();
    s.release();
  }

  /** Both sides ended: the stream leaves (its unread chunks stay with the body). */
  #maybeDone(s: Stream): void {
    if (s.localEnded && s.remoteEnded && !s.closed) this.#end(s, null);
  }

  /** The response body: what came, then more as the client reads (and gives window back). */
  #body(s: Stream): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      pull: async (c) => {
        for (;;) {
          const chunk = s.chunks.shift();
          if (chunk !== undefined) {
            s.counter.bytes += chunk.byteLength;
            this.#ack(s, chunk.byteLength);
            c.enqueue(chunk);
            return;
          }
          if (s.error !== null) throw s.error;
          if (s.remoteEnded) {
            s.counter.ended = true;
            c.close();
            return;
          }
          s.active = UNSEEN;
          await new Promise<void>((resolve) => s.wake = resolve);
          s.wake = null;
        }
      },
      cancel: () => {
        s.chunks.length = 0;
        this.#cancel(s, new ProxyError("client_gone", "Client went away", { source: this.source }));
      },
    }, { highWaterMark: 0 });
  }

  /** The client read `n` bytes: the stream's window goes back once half of it was read. */
  #ack(s: Stream, n: number): void {
    if (this.closed || s.remoteEnded || s.closed) return;
    s.unacked += n;
    if (s.unacked >= STREAM_WINDOW / 2) {
      this.#out.u32(FrameType.WINDOW_UPDATE, s.id, s.unacked);
      s.recvWindow += s.unacked;
      s.unacked = 0;
      this.#flush();
    }
  }

  /** `n` bytes of the connection's window are free again: given back once half of it is. */
  #ackConnection(n: number): void {
    if (this.closed || n === 0) return;
    this.#unacked += n;
    if (this.#unacked >= CONNECTION_WINDOW / 2) {
      this.#out.u32(FrameType.WINDOW_UPDATE, 0, this.#unacked);
      this.#recvWindow += this.#unacked;
      this.#unacked = 0;
      this.#flush();
    }
  }

  // ------------------------------------------------------------------------------------------
  // Reading

  async #readLoop(): Promise<void> {
    let buf = new Uint8Array(64 * 1024);
    let start = 0;
    let end = 0;
    try {
      for (;;) {
        if (!this.settled && end - start >= 5 && isHttp1(buf, start)) {
          throw new ConnectionError(
            ErrorCode.PROTOCOL_ERROR,
            "answered in HTTP/1.x: it does not take HTTP/2 with prior knowledge (h2c)",
          );
        }
        // Every whole frame in the buffer.
        while (end - start >= FRAME_HEADER) {
          const len = (buf[start] << 16) | (buf[start + 1] << 8) | buf[start + 2];
          if (len > MAX_FRAME) {
            throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `a frame of ${len} bytes`);
          }
          if (end - start < FRAME_HEADER + len) break;
          const type = buf[start + 3];
          const flags = buf[start + 4];
          const id = ((buf[start + 5] & 0x7f) << 24 | buf[start + 6] << 16 | buf[start + 7] << 8 |
            buf[start + 8]) >>> 0;
          const payload = buf.subarray(start + FRAME_HEADER, start + FRAME_HEADER + len);
          start += FRAME_HEADER + len;
          this.#frame(type, flags, id, payload);
        }
        if (this.#answers.length > 0) this.#deliver();
        if (start === end) start = end = 0;
        else if (buf.length - end < FRAME_HEADER + MAX_FRAME) {
          // Room for a whole frame after what is there (nothing kept points into the buffer).
          const have = end - start;
          if (have + FRAME_HEADER + MAX_FRAME > buf.length) {
            const next = new Uint8Array(buf.length * 2);
            next.set(buf.subarray(start, end));
            buf = next;
          } else buf.copyWithin(0, start, end);
          start = 0;
          end = have;
        }
        const n = await this.#conn.read(buf.subarray(end));
        if (n === null || n === 0) break;
        end += n;
      }
      this.#fail(null);
    } catch (err) {
      // Answers whose head came before the failure go on (their bodies fail with their streams).
      if (this.#answers.length > 0) this.#deliver();
      // A connection error: the streams fail at once, the GOAWAY goes out, then the connection
      // closes (RFC 9113 §5.4.1).
      if (err instanceof ConnectionError) {
        const e = protocolError(this.source, `broke HTTP/2: ${err.message}`);
        this.#failStreams(e);
        this.shut(err.code, e);
      } else if (err instanceof HpackError) {
        const e = protocolError(this.source, `sent a bad field block: ${err.message}`);
        this.#failStreams(e);
        this.shut(ErrorCode.COMPRESSION_ERROR, e);
      } else this.#fail(err);
    }
  }

  /** One frame from the upstream (RFC 9113 §6). */
  #frame(type: number, flags: number, id: number, p: Uint8Array): void {
    if (!this.settled) {
      // The server's preface is a SETTINGS frame (RFC 9113 §3.4).
      if (type !== FrameType.SETTINGS || (flags & Flag.ACK)) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "no SETTINGS first");
      }
      this.settled = true;
    }
    if (this.#pending !== null && type !== FrameType.CONTINUATION) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "a frame inside a field block");
    }
    switch (type) {
      case FrameType.DATA:
        return this.#onData(flags, id, p);
      case FrameType.HEADERS: {
        if (id === 0 || id % 2 === 0) {
          throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on a server stream");
        }
        let off = 0;
        let len = p.length;
        if (flags & Flag.PADDED) {
          if (len === 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS padding");
          const pad = p[0];
          off = 1;
          if (pad >= len) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding");
          len -= pad;
        }
        if (flags & Flag.PRIORITY) off += 5;
        if (off > len) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "short HEADERS");
        const end = (flags & Flag.END_STREAM) !== 0;
        // A whole block is decoded where it was read (a copy costs a new ArrayBuffer, 0.2–0.7 µs
        // in Deno); the first part of one that CONTINUATIONs complete is copied and kept.
        if (flags & Flag.END_HEADERS) return this.#onFields(id, end, p.subarray(off, len));
        const block = p.slice(off, len);
        this.#pending = { stream: id, end, parts: [block], bytes: block.length, frames: 0 };
        return;
      }
      case FrameType.CONTINUATION: {
        const pend = this.#pending;
        if (pend === null || pend.stream !== id) {
          throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION out of place");
        }
        pend.parts.push(p.slice());
        pend.bytes += p.length;
        // Each frame is charged 256 bytes more, so a flood of empty (or tiny) CONTINUATION
        // frames runs out as a large block does (CVE-2024-27316's kind).
        pend.frames++;
        if (pend.bytes + pend.frames * 256 > this.#opts.maxHeaderBytes * 2 + 4096) {
          throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "a field block without end");
        }
        if (!(flags & Flag.END_HEADERS)) return;
        this.#pending = null;
        const block = new Uint8Array(pend.bytes);
        let at = 0;
        for (const part of pend.parts) {
          block.set(part, at);
          at += part.length;
        }
        return this.#onFields(id, pend.end, block);
      }
      case FrameType.RST_STREAM: {
        if (p.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM");
        const s = this.#streams.get(id);
        if (!s) {
          if (this.#idle(id)) {
            throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM idle");
          }
          return;
        }
        const code = (p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]) >>> 0;
        if (code === ErrorCode.NO_ERROR && s.remoteEnded) {
          // The answer is whole and the upstream wants no more of the request (RFC 9113 §8.1).
          s.localEnded = true;
          return this.#maybeDone(s);
        }
        // REFUSED_STREAM: nothing was processed, so the request may go again (§8.7).
        const refused = code === ErrorCode.REFUSED_STREAM && !s.answered;
        s.remoteEnded = true;
        s.localEnded = true;
        const msg = `Upstream "${this.source}" reset the stream (HTTP/2 error ${code})`;
        return this.#end(
          s,
          refused
            ? this.#unsent(s, msg)
            : new ProxyError("upstream_reset", msg, { source: this.source }),
        );
      }
      case FrameType.SETTINGS:
        return this.#onSettings(flags, id, p);
      case FrameType.PING:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
        if (p.length !== 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING");
        if (!(flags & Flag.ACK)) {
          this.#spend();
          this.#out.frame(FrameType.PING, Flag.ACK, 0, p);
          this.#flush();
        }
        return;
      case FrameType.GOAWAY: {
        if (id !== 0 || p.length < 8) {
          throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY");
        }
        const last = ((p[0] & 0x7f) << 24 | p[1] << 16 | p[2] << 8 | p[3]) >>> 0;
        this.draining = true;
        this.#lastProcessed = Math.min(this.#lastProcessed, last);
        // Streams above `last` were not processed: they may go again on another connection.
        for (const s of [...this.#streams.values()]) {
          if (s.id > last) this.#end(s, this.#unsent(s, `Upstream "${this.source}" is going away`));
        }
        if (this.#streams.size === 0) this.shut();
        return;
      }
      case FrameType.WINDOW_UPDATE: {
        if (p.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE");
        const inc = ((p[0] & 0x7f) << 24 | p[1] << 16 | p[2] << 8 | p[3]) >>> 0;
        // A flood of them that lets no DATA go out costs work for nothing.
        if (--this.#updateBudget < 0) {
          throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many WINDOW_UPDATEs");
        }
        if (id === 0) {
          if (inc === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "window increment 0");
          this.#sendWindow += inc;
          if (this.#sendWindow > MAX_WINDOW) {
            throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "window past 2^31-1");
          }
          this.#passWindow();
          return;
        }
        const s = this.#streams.get(id);
        if (!s) {
          if (this.#idle(id)) {
            throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "window of an idle stream");
          }
          return;
        }
        if (inc === 0) {
          this.#out.u32(FrameType.RST_STREAM, id, ErrorCode.PROTOCOL_ERROR);
          this.#flush();
          return this.#end(s, protocolError(this.source, "sent a window increment of 0"));
        }
        s.sendWindow += inc;
        if (s.sendWindow > MAX_WINDOW) {
          this.#out.u32(FrameType.RST_STREAM, id, ErrorCode.FLOW_CONTROL_ERROR);
          this.#flush();
          return this.#end(s, protocolError(this.source, "overflowed a stream window"));
        }
        // Its body, if it waits, waits for the connection's window now (woken if there is some).
        if (s.windowWake !== null && s.sendWindow > 0) {
          this.#windowWaiters.add(s);
          this.#passWindow();
        }
        return;
      }
      case FrameType.PUSH_PROMISE:
        // Prox said SETTINGS_ENABLE_PUSH 0 (§8.4).
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE with push disabled");
      default:
        // PRIORITY and unknown types are ignored (§5.5), but count against the flood budget.
        this.#spend();
        return;
    }
  }

  /**
   * A stream never opened (RFC 9113 §5.1): stream 0, one Prox has not opened yet, or one of the
   * server's (push is off). Frames other than PRIORITY on it are a connection error.
   */
  #idle(id: number): boolean {
    return id === 0 || id >= this.#nextId || id % 2 === 0;
  }

  #onSettings(flags: number, id: number, p: Uint8Array): void {
    if (p.length > 6 * MAX_SETTINGS && !(flags & Flag.ACK)) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many values in a SETTINGS");
    }
    const values = settingsOf(flags, id, p);
    if (values === null) return;
    this.#spend();
    // The limit assumed from the origin's other sessions holds until the first SETTINGS: one
    // that names none sets none (RFC 9113 §6.5.2), so the default applies from then on.
    if (!this.#heard) {
      this.#heard = true;
      this.maxStreams = DEFAULT_MAX_STREAMS;
    }
    for (const [key, v] of values) {
      if (key === Setting.MAX_CONCURRENT_STREAMS) this.maxStreams = v;
      else if (key === Setting.INITIAL_WINDOW_SIZE) {
        const delta = v - this.#initialWindow;
        for (const s of this.#streams.values()) {
          s.sendWindow += delta;
          if (s.sendWindow > MAX_WINDOW) {
            throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "Stream window overflow");
          }
          // A body whose stream's window opened waits for the connection's now.
          if (delta > 0 && s.windowWake !== null && s.sendWindow > 0) this.#windowWaiters.add(s);
        }
        this.#initialWindow = v;
        if (delta > 0) this.#passWindow();
      } else if (key === Setting.MAX_FRAME_SIZE) this.#maxFrame = v;
      // HEADER_TABLE_SIZE: the encoder uses no dynamic table, whatever size is allowed.
    }
    this.#out.frame(FrameType.SETTINGS, Flag.ACK, 0);
    this.#flush();
  }

  #onData(flags: number, id: number, p: Uint8Array): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
    let off = 0;
    let len = p.length;
    if (flags & Flag.PADDED) {
      if (len === 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "DATA padding");
      const pad = p[0];
      off = 1;
      if (pad >= len) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA padding");
      len -= pad;
    }
    const s = this.#streams.get(id);
    // An empty frame that ends nothing (or comes on a stream over) is work for nothing.
    if (len === off && (s === undefined || !(flags & Flag.END_STREAM))) this.#spend();
    // The whole frame counts against the windows Prox granted, and may not go past them (RFC
    // 9113 §6.9.1): what an upstream sends beyond would wait in memory for the client.
    this.#recvWindow -= p.length;
    if (this.#recvWindow < 0) {
      throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window");
    }
    // The connection's window goes back as frames arrive, not as clients read: what a stream
    // holds for its client is bounded by its own window. Given back as read, ten clients that
    // did not read took all of it, and every other stream on the connection stalled.
    this.#ackConnection(p.length);
    if (s !== undefined) s.active = UNSEEN;
    if (s !== undefined && !s.remoteEnded) {
      s.recvWindow -= p.length;
      if (s.recvWindow < 0) {
        this.#out.u32(FrameType.RST_STREAM, id, ErrorCode.FLOW_CONTROL_ERROR);
        this.#flush();
        s.localEnded = s.remoteEnded = true;
        return this.#end(s, protocolError(this.source, "sent DATA beyond the stream window"));
      }
    }
    // Padding of a live stream is no client's to read: its window is given back with the rest.
    const padding = p.length - (len - off);
    if (s !== undefined && !s.remoteEnded && padding > 0) s.unacked += padding;
    if (s === undefined) {
      if (this.#idle(id)) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
      }
      return; // a stream Prox already reset or finished
    }
    if (!s.answered || s.remoteEnded) {
      this.#out.u32(FrameType.RST_STREAM, id, ErrorCode.PROTOCOL_ERROR);
      this.#flush();
      s.localEnded = s.remoteEnded = true;
      return this.#end(s, protocolError(this.source, "sent DATA out of place"));
    }
    if (len - off > 0) {
      if (s.noContent) {
        this.#out.u32(FrameType.RST_STREAM, id, ErrorCode.PROTOCOL_ERROR);
        this.#flush();
        s.localEnded = s.remoteEnded = true;
        return this.#end(s, protocolError(this.source, `sent content with a ${s.status} answer`));
      }
      s.received += len - off;
      if (s.expected >= 0 && s.received > s.expected) return this.#lengthMismatch(s);
      s.joined = queueCopy(s.chunks, s.joined, { bytes: p, start: off, end: len });
    }
    if (flags & Flag.END_STREAM) {
      if (s.expected >= 0 && s.received !== s.expected) return this.#lengthMismatch(s);
      s.remoteEnded = true;
      this.#maybeDone(s);
    }
    s.wake?.();
  }

  /**
   * The content did not match the answer's content-length: the response is malformed (RFC 9113
   * §8.1.1), and its body fails rather than end short (or long) as if whole.
   */
  #lengthMismatch(s: Stream): void {
    if (!s.localEnded) {
      this.#out.u32(FrameType.RST_STREAM, s.id, ErrorCode.PROTOCOL_ERROR);
      this.#flush();
    }
    s.localEnded = s.remoteEnded = true;
    this.#end(
      s,
      protocolError(
        this.source,
        `sent ${s.received < s.expected ? "only " : ""}${s.received}${
          s.received > s.expected ? " or more" : ""
        } bytes of content-length ${s.expected}`,
      ),
    );
    s.wake?.();
  }

  /** A field block: the response head, an interim answer, or the trailers. */
  #onFields(id: number, end: boolean, block: Uint8Array): void {
    const fields: [string, string][] = [];
    let status = -1;
    let bad: string | null = null;
    let regular = false;
    const within = this.#dec.decode(block, (name, value) => {
      if (bad !== null) return;
      if (name.charCodeAt(0) === 58) {
        if (name !== ":status" || regular || status !== -1) bad = `pseudo-field ${name}`;
        else status = /^[1-5][0-9][0-9]$/.test(value) ? Number(value) : -2;
        return;
      }
      regular = true;
      // A name of lowercase token characters, a value without NUL, CR, LF or white space at its
      // ends (RFC 9113 §8.2.1): anything else is malformed, and trailers in particular would
      // otherwise reach an HTTP/1.1 client as lines of their own.
      if (!FIELD_NAME.test(name) || HOP_FIELDS.has(name) || BAD_VALUE.test(value)) {
        bad = `field ${name.slice(0, 40)}`;
        return;
      }
      fields.push([name, value]);
    }, this.#opts.maxHeaderBytes);
    const s = this.#streams.get(id);
    if (s === undefined) {
      if (id >= this.#nextId) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on an idle stream");
      }
      return; // decoded for the table's sake only
    }
    s.active = UNSEEN;
    const fail = (msg: string) => {
      this.#out.u32(FrameType.RST_STREAM, id, ErrorCode.PROTOCOL_ERROR);
      this.#flush();
      s.localEnded = s.remoteEnded = true;
      this.#end(s, protocolError(this.source, msg));
    };
    if (!within) return fail(`sent fields over ${this.#opts.maxHeaderBytes} bytes`);
    if (bad !== null) return fail(`sent a malformed response (${bad})`);
    if (!s.answered) {
      if (status < 0) return fail("sent a response without a valid :status");
      if (status < 200) {
        // A 103's fields go to the client (early_hints.ts), up to MAX_INTERIM of them; other
        // interim answers (100) end here; 101 is not HTTP/2 (§8.6).
        if (status === 101 || end) return fail(`sent a ${status} answer`);
        this.#spend(); // as many as it likes would cost Prox work for nothing
        if (status === 103 && s.hints !== null && ++s.hinted <= MAX_INTERIM) {
          passHints(s.hints, fields);
        }
        return;
      }
      s.answered = true;
      s.status = status;
      if (NULL_BODY.has(status)) s.noContent = true;
      if (!s.noContent) {
        // Every content-length field must say the same number of bytes.
        for (const [k, v] of fields) {
          if (k !== "content-length") continue;
          const n = /^[0-9]{1,15}$/.test(v) ? Number(v) : -1;
          if (n < 0 || (s.expected >= 0 && n !== s.expected)) {
            return fail(`sent a bad content-length (${v.slice(0, 40)})`);
          }
          s.expected = n;
        }
        if (end && s.expected > 0) {
          return fail(`sent no content for content-length ${s.expected}`);
        }
      }
      if (end) s.remoteEnded = true;
      const nullBody = s.noContent || end;
      let res: CountedResponse;
      if (s.lean) {
        // For a listener that writes answers itself: its fields as checked above, no Fetch
        // Response (whose Headers would check each again), as the HTTP/1.1 client does.
        const names = new Array<string>(fields.length);
        const values = new Array<string>(fields.length);
        for (let i = 0; i < fields.length; i++) {
          names[i] = fields[i][0];
          values[i] = fields[i][1];
        }
        const head = HeaderList.adopt(names, values);
        if (!nullBody) {
          // Handed on once the frames read with it are handled: a small body that came whole
          // with its head goes as bytes, without a stream (#deliver).
          s.head = head;
          this.#answers.push(s);
          return;
        }
        res = new WireResponse(null, status, "", head) as unknown as CountedResponse;
      } else {
        try {
          res = new Response(nullBody ? null : this.#body(s), { status, headers: fields });
        } catch {
          return fail("sent fields that are not valid HTTP");
        }
      }
      if (nullBody) s.counter.ended = true;
      res[BODY_BYTES] = s.counter;
      const settle = s.settle!;
      s.settle = null;
      // A watched deadline's signal stays linked until the stream is over (#end).
      if (!s.counter.watched) this.#unlink(s);
      settle(res);
      if (end) this.#maybeDone(s);
      return;
    }
    // Trailers: end the stream, carry no pseudo-fields (§8.1).
    if (!end || status !== -1 || s.remoteEnded) return fail("sent fields after the body");
    if (s.expected >= 0 && s.received !== s.expected) return this.#lengthMismatch(s);
    s.counter.trailers = fields;
    s.remoteEnded = true;
    this.#maybeDone(s);
    s.wake?.();
  }

  /**
   * Hands on the lean answers whose heads came in the frames just handled: a body that came whole
   * with its head (no trailers, at most ONE_READ bytes) as bytes, which the listener writes as
   * they are; else a stream, as it comes. A stream that failed meanwhile failed its request.
   */
  #deliver(): void {
    const answers = this.#answers;
    this.#answers = [];
    for (const s of answers) {
      const settle = s.settle;
      const head = s.head!;
      s.head = null;
      if (settle === null) continue;
      s.settle = null;
      let res: CountedResponse;
      if (
        s.remoteEnded && s.error === null && s.counter.trailers === undefined &&
        s.received <= ONE_READ
      ) {
        const chunks = s.chunks;
        s.chunks = [];
        s.joined = null;
        let bytes: Uint8Array<ArrayBuffer>;
        if (chunks.length === 1) bytes = chunks[0] as Uint8Array<ArrayBuffer>;
        else {
          bytes = new Uint8Array(s.received);
          let at = 0;
          for (const c of chunks) {
            bytes.set(c, at);
            at += c.byteLength;
          }
        }
        s.counter.bytes = bytes.byteLength;
        s.counter.ended = true;
        res = new WireResponse(bytes, s.status, "", head) as unknown as CountedResponse;
      } else {
        res = new WireResponse(
          null,
          s.status,
          "",
          head,
          this.#body(s),
        ) as unknown as CountedResponse;
      }
      res[BODY_BYTES] = s.counter;
      // A watched deadline's signal stays linked until the stream is over (#end).
      if (!s.counter.watched) this.#unlink(s);
      settle(res);
    }
  }

  /** The connection failed or ended: every stream still open fails, and it closes. */
  #fail(err: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.draining = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#failStreams(err);
    for (const wake of this.#drainWaiters.splice(0)) wake();
  }

  #failStreams(err: unknown): void {
    const msg = err === null
      ? "closed the connection"
      : `failed: ${err instanceof Error ? err.message : String(err)}`;
    for (const s of [...this.#streams.values()]) {
      const e = err instanceof ProxyError
        ? err
        // Streams the upstream said it did not process may go again.
        : s.id > this.#lastProcessed
        ? this.#unsent(s, `Upstream "${this.source}" ${msg}`)
        : new ProxyError("upstream_reset", `Upstream "${this.source}" ${msg}`, {
          source: this.source,
        });
      this.#end(s, e);
    }
  }

  /** Closes the session: GOAWAY with `code`, then the connection once it is written. */
  shut(code: number = ErrorCode.NO_ERROR, err: ProxyError | null = null): void {
    if (this.#stalled) return this.#fail(err);
    if (this.closed || this.#closeWith !== undefined) return;
    this.draining = true;
    this.#closeWith = err;
    this.#out.goaway(0, code);
    this.#flush();
  }
}

/** Creates the h2c client. */
export function createH2cClient(opts: H2cClientOptions): H2cClient {
  const origins = new Map<string, Session[]>();
  let sweeper: ReturnType<typeof setInterval> | undefined;
  /** Checks the timeouts of the streams in flight; runs while there are any (TICK_MS). */
  let ticker: ReturnType<typeof setInterval> | undefined;

  const tick = () => {
    const now = performance.now();
    let streams = 0;
    for (const list of origins.values()) {
      for (const s of list) {
        if (s.streams === 0) continue;
        s.check(now);
        streams += s.streams;
      }
    }
    if (streams === 0) {
      clearInterval(ticker);
      ticker = undefined;
    }
  };

  const sweep = () => {
    const now = performance.now();
    for (const [key, list] of origins) {
      for (const s of list) {
        // One that takes no streams is tried anew within 5 s (send fails fast meanwhile).
        const idleMs = s.settled && s.maxStreams === 0
          ? Math.min(opts.idleTimeout || 5_000, 5_000)
          : opts.idleTimeout;
        if (
          !s.closed && s.streams === 0 && idleMs > 0 && s.idleSince > 1 &&
          now - s.idleSince >= idleMs
        ) s.shut();
      }
      const live = list.filter((s) => !s.closed);
      if (live.length === 0) origins.delete(key);
      else if (live.length !== list.length) origins.set(key, live);
    }
    if (origins.size === 0 && sweeper !== undefined) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  };

  /** Connects a session for `key`; one connect at a time per key, shared by its waiters. */
  const connecting = new Map<string, Promise<Session>>();
  const connect = (key: string, req: UpstreamRequest): Promise<Session> => {
    let p = connecting.get(key);
    if (!p) {
      p = opts.connect(req).then((conn) => {
        const l = origins.get(key) ?? [];
        // Until its SETTINGS come, a new session assumes the limit the others were given, so
        // a burst does not open streams the upstream would refuse.
        let assumed = DEFAULT_MAX_STREAMS;
        for (const o of l) if (o.settled) assumed = Math.min(assumed, o.maxStreams);
        const s = new Session(conn, originName(req.origin), opts, Math.max(1, assumed));
        l.push(s);
        origins.set(key, l);
        sweeper ??= setInterval(sweep, 1000);
        Deno.unrefTimer(sweeper as unknown as number);
        return s;
      }).finally(() => connecting.delete(key));
      connecting.set(key, p);
    }
    return p;
  };

  return {
    async send(req: UpstreamRequest, key: string, release: () => void): Promise<Response> {
      for (let tries = 0;; tries++) {
        // A session with room takes the stream in the same turn it is found in: a burst of
        // requests cannot all see the last free stream.
        const list = origins.get(key);
        const open = list?.find((s) => s.open);
        if (open) {
          ticker ??= setInterval(tick, TICK_MS);
          return open.request(req, release);
        }
        // An upstream that said it takes no streams now (SETTINGS_MAX_CONCURRENT_STREAMS 0) would
        // say so on every new connection too: the request fails as not sent (another target may
        // take it) until that session raises its limit or is closed idle.
        const none = list?.find((s) => s.settled && !s.draining && s.maxStreams === 0);
        if (none) {
          release();
          throw new ProxyError(
            "upstream_reset",
            `Upstream "${none.source}" takes no streams (SETTINGS_MAX_CONCURRENT_STREAMS 0)`,
            { source: none.source, sentNothing: true },
          );
        }
        let s: Session;
        try {
          s = await connect(key, req);
        } catch (err) {
          release();
          throw err;
        }
        // New connections that keep closing at once (or refusing every stream) end it.
        if (!s.open && s.closed && tries >= 3) {
          release();
          throw new ProxyError("upstream_reset", `Upstream "${s.source}" closed the connection`, {
            source: s.source,
            sentNothing: true,
          });
        }
      }
    },
    stats(key: string) {
      const list = origins.get(key) ?? [];
      let streams = 0;
      let sessions = 0;
      let idle = 0;
      let windowWakes = 0;
      for (const s of list) {
        streams += s.streams;
        windowWakes += s.windowWakes;
        if (s.closed) continue;
        sessions++;
        if (s.streams === 0) idle++;
      }
      return { sessions, idle, streams, windowWakes };
    },
    async close(): Promise<void> {
      if (sweeper !== undefined) clearInterval(sweeper);
      sweeper = undefined;
      clearInterval(ticker);
      ticker = undefined;
      const all = [...origins.values()].flat();
      origins.clear();
      for (const s of all) s.shut();
      await Promise.all(all.map((s) => s.done.catch(() => {})));
    },
  };
}
