// The body half of Prox's lean stand-ins for Fetch objects (WireResponse here, the HTTP/1.1
// engine's WireRequest): bytes held in memory that become a stream only when something asks for
// `body`, and that a listener writing to the socket itself can take as they are (`RAW_BODY`)
// until then.

import { HeaderList } from "../domain/header_list.ts";
import { HEADROOM, RAW_BODY, RELEASE } from "../ports.ts";

export class WireBody {
  #bytes: Uint8Array<ArrayBuffer> | null;
  /** The body as a stream, once asked for (undefined: not yet). */
  #stream: ReadableStream<Uint8Array> | null | undefined;

  /** Free bytes in front of #bytes in their buffer (`HEADROOM`), until claimed. */
  #room: number;

  /** Takes #bytes's buffer back for reuse (`RELEASE`), while nobody else was given the bytes. */
  #release: ((buf: ArrayBuffer) => void) | undefined;

  constructor(
    bytes: Uint8Array<ArrayBuffer> | null,
    readonly headers: HeaderList,
    room = 0,
    release?: (buf: ArrayBuffer) => void,
  ) {
    this.#bytes = bytes;
    this.#room = room;
    this.#release = release;
  }

  /**
   * The listener wrote the bytes as they came (`RAW_BODY`) and holds them no more: their buffer
   * goes back to whoever lent it, and this body is empty from now on.
   */
  [RELEASE](): void {
    const release = this.#release;
    const bytes = this.#bytes;
    this.#release = undefined;
    if (release === undefined || bytes === null || this.#stream !== undefined) return;
    this.#bytes = null;
    release(bytes.buffer);
  }

  /** Claims the room in front of the bytes as they came (ports.ts `HEADROOM`). */
  [HEADROOM](): number {
    const room = this.#stream === undefined ? this.#room : 0;
    this.#room = 0;
    return room;
  }

  /** The bytes as they came, while nobody has asked for the body as a stream. */
  get [RAW_BODY](): Uint8Array<ArrayBuffer> | undefined {
    return this.#stream === undefined ? this.#bytes ?? undefined : undefined;
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this.#stream !== undefined) return this.#stream;
    const bytes = this.#bytes;
    this.#bytes = null;
    this.#release = undefined; // the stream's reader gets the bytes: never reused
    return this.#stream = bytes === null ? null : new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes);
        c.close();
      },
    });
  }

  get bodyUsed(): boolean {
    return this.#stream !== undefined && this.#stream !== null && this.#stream.locked;
  }

  /** The body read through Fetch (with the content type, which `formData` needs). */
  #read(): Response {
    const type = this.headers.get("content-type");
    return new Response(
      this.body,
      type === null ? undefined : { headers: { "content-type": type } },
    );
  }
  arrayBuffer(): Promise<ArrayBuffer> {
    return this.#read().arrayBuffer();
  }
  bytes(): Promise<Uint8Array<ArrayBuffer>> {
    return this.#read().bytes();
  }
  text(): Promise<string> {
    return this.#read().text();
  }
  json(): Promise<unknown> {
    return this.#read().json();
  }
  blob(): Promise<Blob> {
    return this.#read().blob();
  }
  formData(): Promise<FormData> {
    return this.#read().formData();
  }

  /**
   * For `clone()`: the bytes (copied) for a copy, or, once the body is a stream, a tee's second
   * branch (this one keeps the first).
   */
  protected split(): {
    bytes: Uint8Array<ArrayBuffer> | null;
    stream?: ReadableStream<Uint8Array>;
  } {
    if (this.#stream === undefined) return { bytes: this.#bytes?.slice() ?? null };
    if (this.#stream === null) return { bytes: null };
    const [a, b] = this.#stream.tee();
    this.#stream = a;
    return { bytes: null, stream: b };
  }

  /** For `clone()`: gives a fresh copy the stream `split` returned. */
  protected adopt(stream: ReadableStream<Uint8Array> | undefined): this {
    if (stream) this.#stream = stream;
    return this;
  }

  /** A copy of the fields, for `clone()`. */
  protected fieldsCopy(): HeaderList {
    const h = new HeaderList();
    this.headers.forEach((v, k) => h.appendChecked(k, v));
    return h;
  }
}
