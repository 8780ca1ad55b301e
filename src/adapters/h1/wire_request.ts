// What the pipeline gets for a request that Prox's own HTTP/1.1 engine (server.ts) parsed: the
// part of the Fetch `Request` it uses, without Fetch's objects. Building a `Request` and its
// `Headers` (each field validated byte by byte again, iterated through Web IDL) cost more per
// request than routing it. Only bodiless requests come here: one with a body, an upgrade or an
// `Expect` goes to Deno.serve through the engine's relay.

import { HeaderList } from "../../domain/header_list.ts";

const EMPTY = new Uint8Array(0);

/**
 * A bodiless request. `watch` is called the first time the signal is asked for: the engine then
 * reads the socket in the background so that a client that leaves aborts it (as Deno.serve does).
 */
export class WireRequest {
  readonly body = null;
  readonly bodyUsed = false;
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

  constructor(
    readonly method: string,
    readonly url: string,
    readonly headers: HeaderList,
    private readonly watch: () => AbortSignal,
  ) {}

  get signal(): AbortSignal {
    return this.#signal ??= this.watch();
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    return Promise.resolve(new ArrayBuffer(0));
  }
  bytes(): Promise<Uint8Array> {
    return Promise.resolve(EMPTY);
  }
  text(): Promise<string> {
    return Promise.resolve("");
  }
  blob(): Promise<Blob> {
    return Promise.resolve(new Blob([]));
  }
  json(): Promise<unknown> {
    return Promise.reject(new SyntaxError("Unexpected end of JSON input"));
  }
  formData(): Promise<FormData> {
    return Promise.reject(new TypeError("Body is not form data"));
  }
  clone(): WireRequest {
    const h = new HeaderList();
    this.headers.forEach((v, k) => h.appendChecked(k, v));
    return new WireRequest(this.method, this.url, h, () => this.signal);
  }
}
