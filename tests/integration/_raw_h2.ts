// A raw HTTP/2 client for the tests of Prox's HTTP/2 engine: frames written as given (FrameWriter,
// HPACK), and every frame the server sends read into `frames`, for what no well-behaved client
// sends. Subclasses open the connection (TLS with ALPN h2, or h2c) and write their requests.

import { FRAME_HEADER, FrameType, FrameWriter } from "../../src/adapters/h2/frames.ts";
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
