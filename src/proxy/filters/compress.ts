// Response compression (a route's `compress`): after the header and body rules, so rules see
// and write the identity body, and before the access log, which counts the bytes sent.

import {
  decideCompression,
  etagForEncoded,
  varyWithAcceptEncoding,
} from "../../domain/compress.ts";
import type { CompressPolicy } from "../../domain/compress.ts";
import { BODY_BYTES } from "../../ports.ts";
import type { BodyCounter, Compressor, CountedResponse } from "../../ports.ts";
import type { RequestContext } from "../context.ts";
import { mutableHeaders } from "./rules.ts";

/** Encodes `res` when the policy and the request's Accept-Encoding allow it. */
export function applyCompression(
  ctx: RequestContext,
  res: Response,
  o: { policy: CompressPolicy; compressor: Compressor },
): Response {
  const h = res.headers;
  const decision = decideCompression({
    method: ctx.req.method,
    acceptEncoding: ctx.req.headers.get("accept-encoding"),
    status: res.status,
    contentType: h.get("content-type"),
    contentEncoding: h.get("content-encoding"),
    contentLength: h.get("content-length"),
    cacheControl: h.get("cache-control"),
    hasBody: res.body !== null,
  }, o.policy);
  if (decision.kind === "skip") return res;
  const vary = varyWithAcceptEncoding(h.get("vary"));
  if (decision.kind === "vary") {
    if (vary === h.get("vary")) return res;
    if (mutableHeaders(res)) {
      h.set("vary", vary);
      return res;
    }
    const copy = new Headers(h);
    copy.set("vary", vary);
    return new Response(res.body, {
      status: res.status,
      statusText: res.statusText,
      headers: copy,
    });
  }
  const headers = new Headers(h);
  headers.set("content-encoding", decision.coding);
  headers.set("vary", vary);
  headers.delete("content-length");
  // Byte ranges would have to be of the encoded bytes, which are not stable: none are offered.
  headers.delete("accept-ranges");
  const etag = headers.get("etag");
  if (etag !== null) headers.set("etag", etagForEncoded(etag));
  const init = { status: res.status, statusText: res.statusText, headers };
  if (res.body === null) {
    // HEAD: the fields a GET would get. An empty stream, not null, or Deno.serve would claim
    // `content-length: 0`.
    return new Response(new ReadableStream({ start: (c) => c.close() }), init);
  }
  const counter: BodyCounter = { bytes: 0, ended: false };
  const count = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, ctl) {
      counter.bytes += chunk.byteLength;
      ctl.enqueue(chunk);
    },
    flush() {
      counter.ended = true;
    },
  });
  const out: CountedResponse = new Response(
    res.body.pipeThrough(o.compressor(decision.coding)).pipeThrough(count),
    init,
  );
  out[BODY_BYTES] = counter;
  return out;
}
