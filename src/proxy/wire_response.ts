// A lean stand-in for a Fetch `Response`, for an upstream's answer to a request that Prox's own
// HTTP/1.1 engine (adapters/h1/) serves: that engine writes answers to the socket itself, so the
// answer need not become a Fetch object whose `Headers` validate every field again and whose
// bytes body is copied, made a stream, and read back. Its fields are a HeaderList. A buffered
// body becomes a stream only if something asks for one (a rule, a retry that cancels it), and
// until then the engine sends its bytes as they came (`RAW_BODY`, wire_body.ts); a streamed one
// (a large, chunked or close-delimited answer) is the upstream client's stream as it is. Never
// given to Deno.serve.

import type { HeaderList } from "../domain/header_list.ts";
import { WireBody } from "./wire_body.ts";

export class WireResponse extends WireBody {
  readonly type = "default";
  readonly redirected = false;
  readonly url = "";

  constructor(
    bytes: Uint8Array<ArrayBuffer> | null,
    readonly status: number,
    readonly statusText: string,
    headers: HeaderList,
    stream?: ReadableStream<Uint8Array>,
    room = 0,
    release?: (buf: ArrayBuffer) => void,
  ) {
    super(bytes, headers, room, release);
    this.adopt(stream);
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  clone(): WireResponse {
    const { bytes, stream } = this.split();
    return new WireResponse(bytes, this.status, this.statusText, this.fieldsCopy()).adopt(stream);
  }
}
