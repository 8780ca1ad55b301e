// One HTTP/3 connection on a Deno QuicConn (RFC 9114 §6): our control stream with SETTINGS and
// the two QPACK streams (held for the connection's life: Deno FINs a send stream when it is
// garbage-collected), the peer's critical streams read and checked, request streams dispatched,
// GOAWAY both ways and connection errors with their RFC codes.

import type { ClientInfo, Handler, Logger } from "../../ports.ts";
import {
  encodeGoaway,
  encodeSettings,
  frameHeader,
  FrameType,
  H3ConnectionError,
  H3Error,
  HTTP2_ONLY_FRAMES,
  parseSettings,
  parseSingleVarint,
  Setting,
  StreamType,
} from "./frames.ts";
import { type RequestContext, serveRequest } from "./request.ts";
import { StreamReader } from "./stream_reader.ts";
import { parseUrgency } from "./message.ts";
import { bytesToString } from "./qpack.ts";
import { decodeVarint } from "./varint.ts";

/** An empty frame of a reserved (GREASE) type, 0x1f * 3 + 0x21: every peer ignores it. */
const KEEP_ALIVE_FRAME = frameHeader(0x1f * 3 + 0x21, 0);

/** Read size on the peer's unidirectional streams (SETTINGS, GOAWAY, QPACK: a few bytes each). */
const UNI_CHUNK = 512;

/**
 * Sets a stream's QUIC send order. Deno throws once the stream is closed, and a stream stays in
 * `#active` a moment after its response is sent: an update arriving then (RFC 9218 §7.1 allows
 * one at any time) changes nothing, and must not become a connection error.
 */
function setSendOrder(stream: Deno.QuicSendStream, order: number): void {
  try {
    stream.sendOrder = order;
  } catch { /* closed: nothing left to order */ }
}

/** Limits applied per connection. */
export interface ConnectionLimits {
  /** SETTINGS_MAX_FIELD_SECTION_SIZE we advertise and enforce (RFC 9114 §4.2.2). */
  maxFieldSectionSize: number;
  /** Largest control-stream frame we buffer (SETTINGS, GOAWAY, …). */
  maxControlFrame: number;
  /** Time allowed for a request stream's HEADERS to arrive. */
  headerTimeoutMs: number;
  /**
   * While a request is in flight, a reserved frame goes out on the control stream this often (ms;
   * 0 never), so a slow upstream does not let the QUIC idle timeout close the connection; and
   * one on each request stream still waiting for its answer, to find cancelled ones.
   */
  keepAliveMs: number;
}

/** What a connection needs from its listener. */
export interface ConnectionOptions {
  handler: Handler;
  logger: Logger;
  localPort: number;
  limits: ConnectionLimits;
}

/** A served HTTP/3 connection. */
export class H3Connection {
  readonly #conn: Deno.QuicConn;
  readonly #opts: ConnectionOptions;
  readonly #abort = new AbortController();
  readonly #requests = new Set<Promise<void>>();
  /** Strong references to our critical send streams (see the file comment). */
  readonly #critical: WritableStreamDefaultWriter<Uint8Array>[] = [];
  #control: WritableStreamDefaultWriter<Uint8Array> | null = null;
  #peerStreams = new Set<number>();
  #nextStreamId = 0;
  #goawayId: number | null = null;
  #closed = false;
  /** Request streams being served, for PRIORITY_UPDATE (bounded by max_streams_bidi). */
  readonly #active = new Map<number, Deno.QuicSendStream>();
  /** Urgencies from PRIORITY_UPDATE for streams not yet open, oldest first (bounded). */
  readonly #pendingUrgency = new Map<number, number>();
  /** Shared by the connection's requests (one remoteAddr lookup per connection). */
  #ctx: RequestContext | null = null;
  /** Runs only while requests are in flight (see ConnectionLimits.keepAliveMs). */
  #keepAlive: ReturnType<typeof setInterval> | undefined;
  #lastResponseAt = -Infinity;
  /** Settled when the connection is closed, for any reason. */
  readonly closed: Promise<void>;

  constructor(conn: Deno.QuicConn, opts: ConnectionOptions) {
    this.#conn = conn;
    this.#opts = opts;
    this.closed = conn.closed.then(() => {}, () => {}).finally(() => {
      this.#closed = true;
      clearInterval(this.#keepAlive);
      this.#abort.abort(new Error("HTTP/3 connection closed"));
    });
  }

  /** Requests being served right now. */
  get inFlight(): number {
    return this.#requests.size;
  }

  /** Urgencies held for request streams not open yet (bounded: the newest 128), for tests. */
  get pendingUrgencies(): number {
    return this.#pendingUrgency.size;
  }

  /** When the last response was written (Date.now()); now while one is in flight. */
  get lastActive(): number {
    return this.#requests.size > 0 ? Date.now() : this.#lastResponseAt;
  }

  /** Opens our streams and serves the peer's until the connection ends. */
  async serve(): Promise<void> {
    try {
      await this.#openOwnStreams();
    } catch (err) {
      this.#opts.logger.debug("HTTP/3 connection setup failed", { error: String(err) });
      this.close(H3Error.INTERNAL_ERROR, "setup failed");
      return;
    }
    const uni = this.#acceptUni();
    await this.#acceptBidi();
    await uni;
  }

  async #openOwnStreams(): Promise<void> {
    const settings = encodeSettings([
      [Setting.QPACK_MAX_TABLE_CAPACITY, 0],
      [Setting.QPACK_BLOCKED_STREAMS, 0],
      [Setting.MAX_FIELD_SECTION_SIZE, this.#opts.limits.maxFieldSectionSize],
      [0x1f * 7 + 0x21, 0], // a GREASE setting keeps peers honest (RFC 9114 §7.2.4.1)
    ]);
    for (
      const [type, first] of [[StreamType.CONTROL, settings], [StreamType.QPACK_ENCODER, null], [
        StreamType.QPACK_DECODER,
        null,
      ]] as const
    ) {
      const s = await this.#conn.createUnidirectionalStream();
      const w = s.getWriter();
      this.#critical.push(w);
      const buf = new Uint8Array(1 + (first?.length ?? 0));
      buf[0] = type;
      if (first) buf.set(first, 1);
      await w.write(buf);
      if (type === StreamType.CONTROL) this.#control = w;
    }
  }

  async #acceptBidi(): Promise<void> {
    const reader = this.#conn.incomingBidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value: stream, done } = await reader.read();
        if (done) return;
        const id = Number(stream.writable.id);
        if (this.#goawayId !== null && id >= this.#goawayId) {
          // After GOAWAY: refuse (the client retries elsewhere; no H3_REQUEST_REJECTED on Deno).
          stream.readable.cancel().catch(() => {});
          stream.writable.close().catch(() => {});
          continue;
        }
        this.#nextStreamId = Math.max(this.#nextStreamId, id + 4);
        this.#ctx ??= this.#requestContext();
        this.#active.set(id, stream.writable);
        const urgency = this.#pendingUrgency.get(id);
        if (urgency !== undefined) {
          this.#pendingUrgency.delete(id);
          setSendOrder(stream.writable, 7 - urgency); // PRIORITY_UPDATE wins over the header
        }
        const p: Promise<void> = serveRequest(stream, this.#ctx, urgency !== undefined)
          .finally(() => {
            this.#requests.delete(p);
            this.#active.delete(id);
            this.#lastResponseAt = Date.now();
            if (this.#requests.size === 0) {
              clearInterval(this.#keepAlive);
              this.#keepAlive = undefined;
            }
          });
        this.#requests.add(p);
        this.#keepAliveWhileBusy();
      }
    } catch {
      // Deno throws here on idle timeout or a lost connection instead of ending the stream.
    } finally {
      reader.releaseLock();
    }
  }

  /**
   * QUIC's idle timeout counts packets, not open streams: a response slower than it would lose
   * the connection when the client sends nothing meanwhile (ngtcp2's client does not). A frame
   * of a reserved type on the control stream is ignored by the peer (RFC 9114 §7.2.8), but its
   * packet and the ACK it elicits restart both sides' idle timers (RFC 9000 §10.1).
   */
  #keepAliveWhileBusy(): void {
    const ms = this.#opts.limits.keepAliveMs;
    if (this.#keepAlive !== undefined || ms <= 0 || !this.#control) return;
    const control = this.#control;
    this.#keepAlive = setInterval(() => {
      if (this.#closed) return;
      control.write(KEEP_ALIVE_FRAME).catch(() => {});
      // Requests still waiting for their answer: is their client still there?
      if (this.#ctx) { for (const w of this.#ctx.waiting) w.probe(); }
    }, ms);
  }

  #requestContext(): RequestContext {
    const remote = this.#conn.remoteAddr;
    const info: ClientInfo = {
      remoteAddr: { hostname: remote.hostname, port: remote.port },
      localPort: this.#opts.localPort,
      protocol: "h3",
      tls: true,
    };
    return {
      handler: this.#opts.handler,
      logger: this.#opts.logger,
      info,
      maxFieldSectionSize: this.#opts.limits.maxFieldSectionSize,
      signal: this.#abort.signal,
      headerTimeoutMs: this.#opts.limits.headerTimeoutMs,
      closeConnection: (code, reason) => this.close(code, reason),
      waiting: new Set(),
    };
  }

  async #acceptUni(): Promise<void> {
    const reader = this.#conn.incomingUnidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value: stream, done } = await reader.read();
        if (done) return;
        this.#serveUni(stream).catch((err) => this.#fail(err));
      }
    } catch {
      // connection gone
    } finally {
      reader.releaseLock();
    }
  }

  #fail(err: unknown): void {
    if (err instanceof H3ConnectionError) {
      this.#opts.logger.debug("HTTP/3 connection error", { code: err.code, error: err.message });
      this.close(err.code, err.message);
    } else if (!this.#closed) {
      this.close(H3Error.CLOSED_CRITICAL_STREAM, String(err));
    }
  }

  /** Dispatches a peer unidirectional stream by type (RFC 9114 §6.2, RFC 9204 §4.2). */
  async #serveUni(stream: Deno.QuicReceiveStream): Promise<void> {
    // Small reads: these streams stay open, nearly idle, for the connection's life.
    const r = new StreamReader(stream, { chunk: UNI_CHUNK });
    // A stream closed or reset before its type is read is ignored (RFC 9114 §6.2).
    const type = await r.varint("stream type").catch(() => null);
    if (type === null) return await r.cancel();
    const critical = type === StreamType.CONTROL || type === StreamType.QPACK_ENCODER ||
      type === StreamType.QPACK_DECODER;
    if (!critical) {
      if (type === StreamType.PUSH) {
        throw new H3ConnectionError(H3Error.STREAM_CREATION_ERROR, "Client opened a push stream");
      }
      await r.cancel(); // unknown and reserved stream types are ignored (§6.2.3)
      return;
    }
    if (this.#peerStreams.has(type)) {
      throw new H3ConnectionError(
        H3Error.STREAM_CREATION_ERROR,
        `Second peer stream of type ${type}`,
      );
    }
    this.#peerStreams.add(type);
    if (type === StreamType.CONTROL) await this.#readControl(r);
    else if (type === StreamType.QPACK_ENCODER) await this.#readEncoder(r);
    else await this.#readDecoder(r);
    if (!this.#closed) {
      throw new H3ConnectionError(
        H3Error.CLOSED_CRITICAL_STREAM,
        `Peer closed critical stream ${type}`,
      );
    }
  }

  /** The peer's control stream: SETTINGS first, then GOAWAY / MAX_PUSH_ID / extensions. */
  async #readControl(r: StreamReader): Promise<void> {
    let first = true;
    let goaway = Infinity;
    let maxPushId = -1;
    for (;;) {
      const type = await r.varint("frame type");
      if (type === null) return;
      const len = await r.varint("frame length");
      if (len === null) throw new H3ConnectionError(H3Error.FRAME_ERROR, "Truncated control frame");
      if (first && type !== FrameType.SETTINGS) {
        throw new H3ConnectionError(
          H3Error.MISSING_SETTINGS,
          "Control stream must start with SETTINGS",
        );
      }
      const known = type === FrameType.SETTINGS || type === FrameType.GOAWAY ||
        type === FrameType.MAX_PUSH_ID || type === FrameType.CANCEL_PUSH;
      if (!known) {
        if (
          type === FrameType.DATA || type === FrameType.HEADERS ||
          type === FrameType.PUSH_PROMISE ||
          HTTP2_ONLY_FRAMES.has(type)
        ) {
          throw new H3ConnectionError(
            H3Error.FRAME_UNEXPECTED,
            `Frame 0x${type.toString(16)} on control stream`,
          );
        }
        if (type === FrameType.PRIORITY_UPDATE + 1) {
          // The push variant: we promise no push, so it names none (RFC 9218 §7.2).
          throw new H3ConnectionError(
            H3Error.ID_ERROR,
            "PRIORITY_UPDATE for a push never promised",
          );
        }
        if (type === FrameType.PRIORITY_UPDATE && len <= 1024) {
          this.#priorityUpdate(await r.exact(len, "PRIORITY_UPDATE"));
        } else await r.skip(len); // GREASE and other extensions: ignored
        continue;
      }
      if (len > this.#opts.limits.maxControlFrame) {
        throw new H3ConnectionError(H3Error.EXCESSIVE_LOAD, `Control frame of ${len} bytes`);
      }
      const payload = await r.exact(len, "control frame");
      if (type === FrameType.SETTINGS) {
        if (!first) throw new H3ConnectionError(H3Error.FRAME_UNEXPECTED, "Second SETTINGS frame");
        parseSettings(payload);
      } else if (type === FrameType.GOAWAY) {
        // The client will open no more requests; ours finish normally. Its push id may only
        // shrink from one GOAWAY to the next (RFC 9114 §5.2).
        const id = parseSingleVarint(payload, "GOAWAY");
        if (id > goaway) throw new H3ConnectionError(H3Error.ID_ERROR, "GOAWAY id grew");
        goaway = id;
      } else if (type === FrameType.MAX_PUSH_ID) {
        const id = parseSingleVarint(payload, "MAX_PUSH_ID");
        if (id < maxPushId) throw new H3ConnectionError(H3Error.ID_ERROR, "MAX_PUSH_ID shrank");
        maxPushId = id; // §7.2.7
      } else {
        // We never send PUSH_PROMISE: no push id can be cancelled (§7.2.3).
        parseSingleVarint(payload, "CANCEL_PUSH");
        throw new H3ConnectionError(H3Error.ID_ERROR, "CANCEL_PUSH for a push never promised");
      }
      first = false;
    }
  }

  /**
   * PRIORITY_UPDATE for a request stream (RFC 9218 §7.1): maps urgency onto the QUIC send order
   * of that stream (more urgent first), now or when the stream opens.
   */
  #priorityUpdate(payload: Uint8Array): void {
    const id = decodeVarint(payload, 0);
    if (!id) throw new H3ConnectionError(H3Error.FRAME_ERROR, "Malformed PRIORITY_UPDATE frame");
    if (id.value % 4 !== 0) { // not a client-initiated bidirectional stream (RFC 9000 §2.1)
      throw new H3ConnectionError(H3Error.ID_ERROR, "PRIORITY_UPDATE for no request stream");
    }
    const urgency = parseUrgency(bytesToString(payload.subarray(id.next)));
    if (urgency === null) return;
    const open = this.#active.get(id.value);
    if (open) {
      setSendOrder(open, 7 - urgency);
      return;
    }
    this.#pendingUrgency.set(id.value, urgency);
    if (this.#pendingUrgency.size > 128) {
      this.#pendingUrgency.delete(this.#pendingUrgency.keys().next().value!);
    }
  }

  /**
   * The peer's QPACK encoder stream. With a zero-capacity table the only valid instruction is
   * Set Dynamic Table Capacity 0 (0x20); anything else is QPACK_ENCODER_STREAM_ERROR (§4.3).
   */
  async #readEncoder(r: StreamReader): Promise<void> {
    for (;;) {
      if (await r.atEnd()) return;
      const chunk = await r.upTo(4096);
      if (chunk.some((b) => b !== 0x20)) {
        throw new H3ConnectionError(
          H3Error.QPACK_ENCODER_STREAM_ERROR,
          "Dynamic table use was not allowed",
        );
      }
    }
  }

  /**
   * The peer's QPACK decoder stream. Our field sections never reference the dynamic table, so
   * there is nothing to acknowledge: a Section Acknowledgment or an Insert Count Increment is
   * QPACK_DECODER_STREAM_ERROR (RFC 9204 §4.4.1, §4.4.3). Stream Cancellations are ignored.
   */
  async #readDecoder(r: StreamReader): Promise<void> {
    let more = -1; // continuation bytes read of a Stream Cancellation's stream id; -1: none
    for (;;) {
      if (await r.atEnd()) return;
      for (const b of await r.upTo(4096)) {
        if (more >= 0) {
          // A stream id fits in 9 continuation bytes; an endless integer is malformed.
          more = b & 0x80 ? more + 1 : -1;
          if (more > 9) {
            throw new H3ConnectionError(H3Error.QPACK_DECODER_STREAM_ERROR, "Integer too large");
          }
        } else if ((b & 0xc0) === 0x40) {
          more = (b & 0x3f) === 0x3f ? 0 : -1; // Stream Cancellation (§4.4.2)
        } else {
          throw new H3ConnectionError(
            H3Error.QPACK_DECODER_STREAM_ERROR,
            b & 0x80 ? "Section Acknowledgment with none due" : "Insert Count Increment",
          );
        }
      }
    }
  }

  /**
   * Sends GOAWAY with the first stream id we will not serve (RFC 9114 §5.2); later request
   * streams are refused. Idempotent. The write is queued, not awaited: a peer that grants the
   * control stream no more flow credit would otherwise hold a shutdown for ever.
   */
  goaway(): Promise<void> {
    if (this.#goawayId !== null || this.#closed || !this.#control) return Promise.resolve();
    this.#goawayId = this.#nextStreamId;
    this.#control.write(encodeGoaway(this.#goawayId)).catch(() => {});
    return Promise.resolve();
  }

  /** Resolves when no request is in flight. */
  async drained(): Promise<void> {
    while (this.#requests.size > 0) await Promise.allSettled([...this.#requests]);
  }

  /** Closes the connection with an HTTP/3 error code (H3_NO_ERROR for a clean close). */
  close(code: number = H3Error.NO_ERROR, reason = ""): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#keepAlive);
    try {
      this.#conn.close({ closeCode: code, reason: reason.slice(0, 100) });
    } catch { /* already closed */ }
    this.#abort.abort(new Error("HTTP/3 connection closed"));
  }
}
