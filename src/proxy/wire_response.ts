// A lean stand-in for a Fetch `Response`, for an upstream's buffered answer to a request that
// Prox's own HTTP/1.1 engine (adapters/h1/) serves: that engine writes answers to the socket
// itself, so the answer need not become a Fetch object whose `Headers` validate every field again
// and whose bytes body is copied, made a stream, and read back. Its fields are a HeaderList; its
// body becomes a stream only if something asks for one (a rule, a retry that cancels it), and
// until then the engine sends its bytes as they came (`RAW_BODY`). Never given to Deno.serve.

import { HeaderList } from "../domain/header_list.ts";
import { RAW_BODY } from "../ports.ts";

export class WireResponse {
  readonly headers: HeaderList;
  readonly type = "default";
  readonly redirected = false;
  readonly url = "";
  #bytes: Uint8Array<ArrayBuffer> | null;
  /** The body as a stream, once asked for (undefined: not yet). */
  #stream: ReadableStream<Uint8Array> | null | undefined;

  constructor(
    bytes: Uint8Array<ArrayBuffer> | null,
    readonly status: number,
    readonly statusText: string,
    headers: HeaderList,
  ) {
    this.#bytes = bytes;
    this.headers = headers;
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  /** The bytes as they came, while nobody has asked for the body as a stream. */
  get [RAW_BODY](): Uint8Array | undefined {
    return this.#stream === undefined ? this.#bytes ?? undefined : undefined;
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this.#stream !== undefined) return this.#stream;
    const bytes = this.#bytes;
    this.#bytes = null;
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

  #read(): Response {
    return new Response(this.body);
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
  clone(): WireResponse {
    const h = new HeaderList();
    this.headers.forEach((v, k) => h.appendChecked(k, v));
    if (this.#stream === undefined) {
      return new WireResponse(this.#bytes, this.status, this.statusText, h);
    }
    const [a, b] = this.#stream === null ? [null, null] : this.#stream.tee();
    this.#stream = a;
    const copy = new WireResponse(null, this.status, this.statusText, h);
    copy.#stream = b;
    return copy;
  }
}
