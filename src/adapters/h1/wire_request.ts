// What the pipeline gets for a request that Prox's own HTTP/1.1 engine (server.ts) parsed: the
// part of the Fetch `Request` it uses, without Fetch's objects. Building a `Request` and its
// `Headers` (each field validated byte by byte again, iterated through Web IDL) cost more per
// request than routing it. A request comes here without a body, or with a `Content-Length` one:
// bytes when it came whole with its head and is at most 64 KiB, offered to the proxy action as
// they came (`RAW_BODY`, proxy/wire_body.ts) and made a stream only if something asks for one;
// otherwise a stream that reads the socket as the body comes, as for a chunked body. Any other
// request (another transfer coding, another `Expect`) goes to Deno.serve through the relay.

import type { HeaderList } from "../../domain/header_list.ts";
import { WireBody } from "../../proxy/wire_body.ts";

/**
 * A request with its body, if any, in memory. `watch` is called the first time the signal is asked
 * for: the engine then reads the socket in the background so that a client that leaves aborts it
 * (as Deno.serve does).
 */
export class WireRequest extends WireBody {
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
    headers: HeaderList,
    private readonly watch: () => AbortSignal,
    bytes: Uint8Array<ArrayBuffer> | null = null,
    stream: ReadableStream<Uint8Array> | null = null,
  ) {
    super(bytes, headers);
    // A body still coming from the socket: a stream from the start.
    if (stream) this.adopt(stream);
  }

  get signal(): AbortSignal {
    return this.#signal ??= this.watch();
  }

  clone(): WireRequest {
    const { bytes, stream } = this.split();
    return new WireRequest(this.method, this.url, this.fieldsCopy(), () => this.signal, bytes)
      .adopt(stream);
  }
}
