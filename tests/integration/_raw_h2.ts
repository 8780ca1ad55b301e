// A raw HTTP/2 client for the tests of Prox's HTTP/2 engine: frames written as given (FrameWriter,
// HPACK), and every frame the server sends read into `frames`, for what no well-behaved client
// sends. Subclasses open the connection (TLS with ALPN h2, or h2c) and write their requests.

import {
  Flag,
  FRAME_HEADER,
  FrameType,
  FrameWriter,
  PREFACE,
} from "../../src/adapters/h2/frames.ts";
import { waitFor } from "../_harness.ts";
import { HpackDecoder, HpackEncoder } from "../../src/adapters/h2/hpack.ts";

export interface Frame {
  type: number;
  flags: number;
  id: number;
  payload: Uint8Array;
}

export class RawH2Client {
  readonly out = new FrameWriter();
  readonly enc = new HpackEncoder();
  readonly dec = new HpackDecoder();
  frames: Frame[] = [];
  /** True once the server closed (or reset) the connection. */
  closed = false;
  #buf = new Uint8Array(0);
  #reading: Promise<void>;

  protected constructor(readonly conn: Deno.Conn) {
    this.#reading = this.#read();
  }

  async #read(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await this.conn.read(chunk);
        if (n === null) break;
        const next = new Uint8Array(this.#buf.length + n);
        next.set(this.#buf);
        next.set(chunk.subarray(0, n), this.#buf.length);
        this.#buf = next;
        while (this.#buf.length >= FRAME_HEADER) {
          const b = this.#buf;
          const len = (b[0] << 16) | (b[1] << 8) | b[2];
          if (b.length < FRAME_HEADER + len) break;
          const id = ((b[5] & 0x7f) << 24) | (b[6] << 16) | (b[7] << 8) | b[8];
          this.frames.push({
            type: b[3],
            flags: b[4],
            id,
            payload: b.slice(FRAME_HEADER, FRAME_HEADER + len),
          });
          this.#buf = b.slice(FRAME_HEADER + len);
        }
      }
    } catch {
      // reset by the server
    }
    this.closed = true;
  }

  /** Writes the frames written to `out` so far. */
  async flush(): Promise<void> {
    const bytes = this.out.take();
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
    this.out.giveBack(bytes);
  }

  /** The frames of `type` on stream `id` seen so far. */
  on(id: number, type: number): Frame[] {
    return this.frames.filter((f) => f.id === id && f.type === type);
  }

  /** The status of stream `id`'s answer, once its HEADERS came. */
  status(id: number): string | undefined {
    const h = this.on(id, FrameType.HEADERS)[0];
    if (!h) return undefined;
    let status: string | undefined;
    this.dec.decode(h.payload, (n, v) => n === ":status" && (status = v));
    return status;
  }

  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch { /* closed */ }
    await this.#reading;
  }
}

/** A raw client with prior knowledge (h2c), for what no well-behaved client sends. */
export class RawH2c extends RawH2Client {
  static async open(port: number): Promise<RawH2c> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const c = new RawH2c(conn);
    await conn.write(PREFACE);
    c.out.settings([]);
    await c.flush();
    return c;
  }

  /** HEADERS for `method` `path` on stream `id` (END_STREAM when `end`). */
  request(id: number, path: string, end = true, method = "GET", flags = 0, prefix?: Uint8Array) {
    this.enc.begin().field(":method", method).field(":scheme", "http").field(":path", path);
    this.enc.field(":authority", "localhost");
    const block = this.enc.block;
    if (prefix === undefined && flags === 0) return this.out.headers(id, block, end, 16384);
    const p = new Uint8Array((prefix?.length ?? 0) + block.length);
    if (prefix) p.set(prefix);
    p.set(block, prefix?.length ?? 0);
    this.out.frame(
      FrameType.HEADERS,
      flags | Flag.END_HEADERS | (end ? Flag.END_STREAM : 0),
      id,
      p,
    );
  }

  /** A field block of `fields` as one HEADERS frame on `id`. */
  fields(id: number, fields: [string, string][], end: boolean): void {
    this.enc.begin();
    for (const [n, v] of fields) this.enc.field(n, v);
    this.out.headers(id, this.enc.block, end, 16384);
  }

  /** The error code of the RST_STREAM on `id`, or of the GOAWAY, whichever came. */
  error(id: number): number | undefined {
    const f = this.on(id, FrameType.RST_STREAM)[0] ?? this.on(0, FrameType.GOAWAY)[0];
    if (!f) return undefined;
    return u32(f.type === FrameType.GOAWAY ? f.payload.subarray(4) : f.payload);
  }

  /** The body bytes stream `id` has got. */
  data(id: number): number {
    return this.on(id, FrameType.DATA).reduce((n, f) => n + f.payload.length, 0);
  }

  goaway(): number | undefined {
    const g = this.on(0, FrameType.GOAWAY)[0];
    return g && u32(g.payload.subarray(4));
  }

  /** Waits until the server has handled everything sent so far (its ack of a PING). */
  async settled(): Promise<void> {
    const before = this.frames.filter((f) => f.type === FrameType.PING).length;
    this.out.frame(FrameType.PING, 0, 0, new Uint8Array(8));
    await this.flush();
    await waitFor(
      () => this.closed || this.frames.filter((f) => f.type === FrameType.PING).length > before,
      { what: "the PING ack" },
    );
  }
}

const u32 = (p: Uint8Array) => ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
