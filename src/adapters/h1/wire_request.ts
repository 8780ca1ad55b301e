// What the pipeline gets for a request that Prox's own HTTP/1.1 engine (server.ts) parsed: the
// part of the Fetch `Request` it uses, without Fetch's objects. Building a `Request` and its
// `Headers` (each field validated byte by byte again, iterated through Web IDL) cost more per
// request than routing it. A request comes here without a body, or with a `Content-Length` body
// of at most 64 KiB that arrived with its head; any other goes to Deno.serve through the
// engine's relay.

import { HeaderList } from "../../domain/header_list.ts";
import { RAW_BODY } from "../../ports.ts";

/**
 * A request with its body, if any, in memory. `watch` is called the first time the signal is asked
 * for: the engine then reads the socket in the background so that a client that leaves aborts it
 * (as Deno.serve does).
 */
export class WireRequest {
  readonly cache = "default";
  readonly credentials = "same-origin";
  readonly destination = "";
  readonly integrity = "";
  readonly keepalive = false;
  readonly mode = "cors";
  readonly redirect = "follow";
  readonly referrer = "about:client";
  readonly referrerPolicy = "";
  #signal: AbortSignal | undefined;
  #bytes: Uint8Array<ArrayBuffer> | null;
  /** The body as a stream, once asked for (undefined: not yet). */
  #stream: ReadableStream<Uint8Array> | null | undefined;

  constructor(
    readonly method: string,
    readonly url: string,
    readonly headers: HeaderList,
    private readonly watch: () => AbortSignal,
    bytes: Uint8Array<ArrayBuffer> | null = null,
  ) {
    this.#bytes = bytes;
  }

  get signal(): AbortSignal {
    return this.#signal ??= this.watch();
  }

  /** The body's bytes, while nobody has asked for it as a stream (the proxy action sends them). */
  get [RAW_BODY](): Uint8Array<ArrayBuffer> | undefined {
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
  blob(): Promise<Blob> {
    return this.#read().blob();
  }
  json(): Promise<unknown> {
    return this.#read().json();
  }
  formData(): Promise<FormData> {
    return this.#read().formData();
  }
  clone(): WireRequest {
    const h = new HeaderList();
    this.headers.forEach((v, k) => h.appendChecked(k, v));
    let bytes = this.#bytes;
    if (this.#stream) {
      const [a, b] = this.#stream.tee();
      this.#stream = a;
      const copy = new WireRequest(this.method, this.url, h, () => this.signal);
      copy.#stream = b;
      return copy;
    }
    if (bytes !== null) bytes = bytes.slice();
    return new WireRequest(this.method, this.url, h, () => this.signal, bytes);
  }
}
