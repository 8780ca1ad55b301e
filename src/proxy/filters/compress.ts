// Response compression (a route's `compress`): after the header and body rules, so rules see
// and write the identity body, and before the access log, which counts the bytes sent.

import {
  decideCompression,
  decideNotModified,
  etagForEncoded,
  varyWithAcceptEncoding,
} from "../../domain/compress.ts";
import type { CompressPolicy } from "../../domain/compress.ts";
import { tagRequest } from "../../domain/errors.ts";
import { BODY_BYTES } from "../../ports.ts";
import type { BodyCounter, CompressionEngine, Compressor, CountedResponse } from "../../ports.ts";
import type { RequestContext } from "../context.ts";
import { mutableHeaders } from "./rules.ts";

/**
 * What a 304 stands for when its maker knows (a static file: its type, coding and length), so
 * that it gets the Vary and ETag of that 200. A proxied 304 goes by its own fields.
 */
export const REPRESENTATION: unique symbol = Symbol("prox.representation");
export interface Representation {
  /** Null: the 200 names no type, and so is never compressed. */
  contentType: string | null;
  contentEncoding: string | null;
  length: number;
}
/** A Response that may carry a `REPRESENTATION`. */
export type RepresentingResponse = Response & { [REPRESENTATION]?: Representation };

/** Fields holding a digest of the body as the upstream coded it (none, when Prox codes it). */
const DIGESTS = ["content-digest", "repr-digest", "digest", "content-md5"];

/** Encodes `res` when the policy and the request's Accept-Encoding allow it. */
export function applyCompression(
  ctx: RequestContext,
  res: Response,
  o: { policy: CompressPolicy; compressor: Compressor },
): Response {
  if (res.status === 304) return notModified(ctx, res, o.policy);
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
  if (decision.kind === "vary") return withFields(res, vary, h.get("etag"));
  const headers = new Headers(h);
  headers.set("content-encoding", decision.coding);
  headers.set("vary", vary);
  headers.delete("content-length");
  // Byte ranges would have to be of the encoded bytes, which are not stable: none are offered.
  headers.delete("accept-ranges");
  // Digests of the identity bytes, which a client checking them would take for corruption:
  // Content-Digest is of the content sent, Repr-Digest of the coded representation (RFC 9530
  // §2, §3), Digest and Content-MD5 of the coded instance (RFC 3230 §4.3.2, RFC 1864).
  for (const name of DIGESTS) headers.delete(name);
  const etag = headers.get("etag");
  if (etag !== null) headers.set("etag", etagForEncoded(etag));
  const init = { status: res.status, statusText: res.statusText, headers };
  if (res.body === null || ctx.req.method === "HEAD") {
    // HEAD: the fields a GET would get. An empty stream, not null, or Deno.serve would claim
    // `content-length: 0`; never the engine's, whose end bytes (a gzip trailer) would make a
    // body of an answer to HEAD that comes as an empty stream (one from the cache).
    res.body?.cancel().catch(() => {});
    return new Response(new ReadableStream({ start: (c) => c.close() }), init);
  }
  const counter: BodyCounter = { bytes: 0, ended: false };
  // The upstream's trailers (an HTTP/2 upstream's) go on after the compressed body.
  const inner = (res as CountedResponse)[BODY_BYTES];
  if (inner) Object.defineProperty(counter, "trailers", { get: () => inner.trailers });
  const out: CountedResponse = new Response(
    compressedBody(res.body, o.compressor(decision.coding), counter),
    init,
  );
  out[BODY_BYTES] = counter;
  return out;
}

/**
 * A 304 with the Vary and ETag of the 200 it stands for (RFC 9110 §15.4.5): a cache that kept
 * the compressed 200 refreshes it by that tag, and a 304 without Vary made the stored 200 look
 * like one for every Accept-Encoding.
 */
function notModified(ctx: RequestContext, res: Response, policy: CompressPolicy): Response {
  const h = res.headers;
  const rep = (res as RepresentingResponse)[REPRESENTATION];
  if (rep && rep.contentType === null) return res;
  const decision = decideNotModified({
    method: ctx.req.method,
    acceptEncoding: ctx.req.headers.get("accept-encoding"),
    status: 200,
    contentType: rep ? rep.contentType : h.get("content-type"),
    contentEncoding: rep ? rep.contentEncoding : h.get("content-encoding"),
    // A proxied 304's Content-Length is not taken for the 200's size: some servers send `0`.
    contentLength: rep ? String(rep.length) : null,
    cacheControl: h.get("cache-control"),
    hasBody: true,
  }, policy);
  if (decision.kind === "skip") return res;
  const etag = h.get("etag");
  return withFields(
    res,
    varyWithAcceptEncoding(h.get("vary")),
    decision.kind === "encode" && etag !== null ? etagForEncoded(etag) : etag,
  );
}

/** `res` with these Vary and ETag values (edited in place when its headers allow). */
function withFields(res: Response, vary: string, etag: string | null): Response {
  const h = res.headers;
  if (vary === h.get("vary") && etag === h.get("etag")) return res;
  const headers = mutableHeaders(res) ? h : new Headers(h);
  headers.set("vary", vary);
  if (etag !== null) headers.set("etag", etag);
  if (headers === h) return res;
  const out: CountedResponse = new Response(res.body, {
    status: res.status,
    statusText: res.statusText,
    headers,
  });
  const counter = (res as CountedResponse)[BODY_BYTES];
  if (counter) out[BODY_BYTES] = counter;
  return out;
}

/**
 * The most of a chunk given to the engine in one pull (a static file's chunk): a larger one (a
 * cache hit's or a `respond` body, one chunk whatever its size) goes in such pieces, one per read
 * of the client, so that one 8 MiB body does not hold the event loop for 130-240 ms in one call
 * and queue all its output at once.
 */
const COMPRESS_SLICE = 64 * 1024;

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
  /** What is left of a chunk larger than COMPRESS_SLICE, from `at`. */
  let rest: Uint8Array | null = null;
  let at = 0;
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const emit = (b: Uint8Array) => {
        counter.bytes += b.byteLength;
        ctl.enqueue(b);
      };
      try {
        // Until something comes out: a chunk may only fill the engine's window.
        for (;;) {
          let chunk: Uint8Array;
          if (rest !== null) {
            chunk = rest.subarray(at, at + COMPRESS_SLICE);
            at += chunk.byteLength;
            if (at >= rest.byteLength) rest = null;
          } else {
            const r = await reader.read();
            if (r.done) {
              engine.end(emit);
              counter.ended = true;
              ctl.close();
              return;
            }
            chunk = r.value;
            if (chunk.byteLength > COMPRESS_SLICE) {
              rest = chunk;
              at = COMPRESS_SLICE;
              chunk = chunk.subarray(0, COMPRESS_SLICE);
            }
          }
          const before = counter.bytes;
          if (chunk.byteLength > 0) engine.write(chunk, emit);
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
      rest = null;
      engine.close();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
