// Response compression (a route's `compress`): after the header and body rules, so rules see
// and write the identity body, and before the access log, which counts the bytes sent.

import {
  decideCompression,
  etagForEncoded,
  varyWithAcceptEncoding,
} from "../../domain/compress.ts";
import type { CompressPolicy } from "../../domain/compress.ts";
import { tagRequest } from "../../domain/errors.ts";
import { BODY_BYTES } from "../../ports.ts";
import type { BodyCounter, CompressionEngine, Compressor, CountedResponse } from "../../ports.ts";
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
  const out: CountedResponse = new Response(
    compressedBody(res.body, o.compressor(decision.coding), counter),
    init,
  );
  out[BODY_BYTES] = counter;
  return out;
}

/**
 * The body through `engine`, pulled chunk by chunk (no pipe: a pipeThrough per response cost more
 * than compressing an 80 KB body with zstd). Counts the bytes handed on for the access log.
 */
function compressedBody(
  body: ReadableStream<Uint8Array>,
  engine: CompressionEngine,
  counter: BodyCounter,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const emit = (b: Uint8Array) => {
        counter.bytes += b.byteLength;
        ctl.enqueue(b);
      };
      try {
        // Until something comes out: a chunk may only fill the engine's window.
        for (;;) {
          const r = await reader.read();
          if (r.done) {
            engine.end(emit);
            counter.ended = true;
            ctl.close();
            return;
          }
          const before = counter.bytes;
          if (r.value.byteLength > 0) engine.write(r.value, emit);
          if (counter.bytes > before) return;
        }
      } catch (err) {
        // The upstream body failed, or the engine did: free both, and end the response with it.
        engine.close();
        reader.cancel(err).catch(() => {});
        // The upstream's own counter, which would have tagged it, is not on this response.
        throw tagRequest(err, counter.request);
      }
    },
    cancel(reason) {
      engine.close();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
