// gRPC-Web (the protocol of gRPC-Web and Connect clients in browsers, PROTOCOL-WEB.md of gRPC):
// on a route with `grpc_web: true`, a request of `application/grpc-web` (binary) or
// `application/grpc-web-text` (base64) goes to the gRPC upstream as plain gRPC, and its answer
// comes back with the trailers (`grpc-status`…) as a last frame in the body, flagged 0x80, since
// neither a browser's fetch nor HTTP/1.1 hands trailers to a page. As Envoy's grpc_web filter
// and Traefik's grpcWeb middleware do.

import { ProxyError, reasonFor } from "../../domain/errors.ts";
import { DEADLINE_EXCEEDED, grpcStatusFields } from "../../domain/grpc.ts";
import { BODY_BYTES } from "../../ports.ts";
import { readClientChunk } from "../body_replay.ts";
import type { BodyCounter, CountedResponse } from "../../ports.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { proxyAction } from "./proxy.ts";
import type { UpstreamRoute } from "./proxy.ts";

/** Which gRPC-Web a request speaks: base64 or not, and its message format suffix (`+proto`). */
export interface GrpcWebKind {
  text: boolean;
  suffix: string;
}

const GRPC_WEB = /^application\/grpc-web(-text)?(\+[a-z0-9._-]+)?[ \t]*(?:;.*)?$/i;
const GRPC = /^application\/grpc(\+[a-z0-9._-]+)?[ \t]*(?:;.*)?$/i;

/** The gRPC-Web kind of a request's Content-Type, or null when it is not gRPC-Web. */
export function grpcWebKind(contentType: string | null): GrpcWebKind | null {
  const m = contentType === null ? null : GRPC_WEB.exec(contentType.trim());
  return m ? { text: m[1] !== undefined, suffix: (m[2] ?? "").toLowerCase() } : null;
}

/** Request bodies read whole (gRPC-Web has no client streaming): at most this, unless smaller. */
const MAX_BODY = 4 * 1024 * 1024;

/** Proxies a gRPC-Web request as gRPC and turns the answer back into gRPC-Web. */
export async function grpcWebAction(
  ctx: RequestContext,
  deps: PipelineDeps,
  route: UpstreamRoute,
  kind: GrpcWebKind,
): Promise<Response> {
  const grpcType = `application/grpc${kind.suffix}`;
  if (kind.text) {
    // The body is base64: read whole (bounded), decoded, and sent with its own length. A body
    // forward_auth's send_body read already is taken from there (the stream is spent).
    const limit = Math.min(
      route.max_request_body ?? ctx.snapshot.config.limits.max_request_body ?? MAX_BODY,
      MAX_BODY,
    );
    const text = ctx.body ?? await readWebText(ctx.req.body, limit, ctx.route?.timeouts.idle ?? 0);
    if (text.byteLength > limit) {
      throw new ProxyError("body_too_large", `gRPC-Web request body over ${limit} bytes`);
    }
    const bytes = decodeBase64Segments(text);
    const headers = new Headers(ctx.req.headers);
    headers.set("content-type", grpcType);
    headers.set("content-length", String(bytes.byteLength));
    headers.delete("transfer-encoding");
    ctx.req = new Request(ctx.req.url, {
      method: ctx.req.method,
      headers,
      body: bytes,
      signal: ctx.req.signal,
    });
    ctx.body = undefined;
  }
  const res = await proxyAction(ctx, deps, route, {
    headers: (h) => h.set("content-type", grpcType),
  });
  return grpcWebResponse(res, kind);
}

/** The `grpc-status` of trailers a gRPC-Web answer moved into its body, for the access log. */
export const WEB_STATUS: unique symbol = Symbol("prox.grpcWebStatus");

/** A body counter that may carry WEB_STATUS. */
export type WebCounter = BodyCounter & { [WEB_STATUS]?: string };

/** A gRPC answer as gRPC-Web: its trailers a last frame of the body; others as they are. */
export function grpcWebResponse(res: Response, kind: GrpcWebKind): Response {
  const type = res.headers.get("content-type");
  const m = type === null ? null : GRPC.exec(type.trim());
  if (m === null) return res; // Prox's own error answers, or not a gRPC service: as they are
  const headers = new Headers(res.headers);
  headers.set("content-type", `application/grpc-web${kind.text ? "-text" : ""}${m[1] ?? ""}`);
  headers.delete("content-length");
  const counter = (res as CountedResponse)[BODY_BYTES];
  const init = { status: res.status, statusText: res.statusText, headers };
  let out: CountedResponse;
  if (res.body === null) {
    // A trailers-only answer: grpc-status is in the head, which gRPC-Web clients read.
    out = new Response(null, init);
  } else {
    const reader = res.body.getReader();
    const encoder = kind.text ? new Base64Stream() : null;
    /** A read already started (or done) that the next pull takes. */
    let next: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
    /** The trailers of a call a timeout cut short. */
    let late: [string, string][] | undefined;
    out = new Response(
      new ReadableStream<Uint8Array>({
        async pull(c) {
          let r: ReadableStreamReadResult<Uint8Array>;
          try {
            r = await (next ?? reader.read());
          } catch (err) {
            // A call cut by a timeout (its grpc-timeout, the route's total or idle) after its
            // head went out ends with DEADLINE_EXCEEDED in the trailer frame, as over HTTP/2.
            if (!(err instanceof ProxyError) || err.kind !== "timeout") throw err;
            r = { done: true, value: undefined };
            late = grpcStatusFields(DEADLINE_EXCEEDED, reasonFor("timeout"));
          }
          next = undefined;
          if (!r.done) {
            let bytes = encoder ? encoder.push(r.value) : r.value;
            if (encoder?.held) {
              // A message ended off a base64 group: what comes at once (the trailers of a unary
              // answer) joins it, else the rest goes now, padded.
              const read = reader.read();
              // (A read that fails is taken by the next pull.)
              const soon = await settledNow(read).catch(() => undefined);
              if (soon === undefined) {
                bytes = concat(bytes, encoder.flush());
                next = read;
              } else next = Promise.resolve(soon);
            }
            if (bytes.byteLength > 0) c.enqueue(bytes);
            return;
          }
          // The client's trailers arrived before its body ended (upstream_h2c.ts). They go in
          // the body only, as Envoy's filter clears them: the listeners would send them again
          // as HTTP trailers (HTTP/2, or a TE: trailers HTTP/1.1 client). The access log keeps
          // the status.
          const trailers = late ?? counter?.trailers ?? [];
          if (counter) {
            (counter as WebCounter)[WEB_STATUS] = trailers.find(([k]) => k === "grpc-status")?.[1];
            counter.trailers = [];
          }
          const frame = trailerFrame(trailers);
          const last = encoder ? encoder.end(frame) : frame;
          if (last.byteLength > 0) c.enqueue(last);
          c.close();
        },
        cancel: (reason) => reader.cancel(reason),
      }, { highWaterMark: 0 }),
      init,
    );
  }
  if (counter) out[BODY_BYTES] = counter;
  return out;
}

/** The trailers as gRPC-Web's last frame: flag 0x80, length, `name:value\r\n` lines. */
export function trailerFrame(trailers: [string, string][]): Uint8Array {
  if (trailers.length === 0) return new Uint8Array(0);
  let text = "";
  for (const [k, v] of trailers) if (k.charCodeAt(0) !== 58) text += `${k}:${v}\r\n`;
  const bytes = latin1(text);
  const out = new Uint8Array(5 + bytes.length);
  out[0] = 0x80;
  new DataView(out.buffer).setUint32(1, bytes.length);
  out.set(bytes, 5);
  return out;
}

function latin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

/**
 * The request body's bytes, refused past `limit` (413) or after a pause of more than `idleMs`
 * between chunks (408; 0: no limit), as a streamed body is on other requests. Kept as bytes: a
 * string built a character at a time took about 70 MB of heap and 200 ms per MiB.
 */
export async function readWebText(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
  idleMs: number,
): Promise<Uint8Array<ArrayBuffer>> {
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let paused = false;
  try {
    for (;;) {
      if (idleMs > 0) {
        timer = setTimeout(() => {
          paused = true;
          reader.cancel().catch(() => {});
        }, idleMs);
      }
      const r = await readClientChunk(reader);
      clearTimeout(timer);
      if (paused) {
        throw new ProxyError(
          "request_timeout",
          `The request body paused for more than ${idleMs} ms (timeouts.idle)`,
        );
      }
      if (r.done) break;
      size += r.value.byteLength;
      if (size > limit) {
        reader.cancel().catch(() => {});
        throw new ProxyError("body_too_large", `gRPC-Web request body over ${limit} bytes`);
      }
      chunks.push(r.value);
    }
  } finally {
    clearTimeout(timer);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Base64 symbol values by byte; WS for white space, PAD for `=`, -1 for anything else. */
const WS = -2;
const PAD = -3;
const SYMBOLS = (() => {
  const t = new Int8Array(256).fill(-1);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (let i = 0; i < 64; i++) t[alphabet.charCodeAt(i)] = i;
  for (const c of "\t\n\r ") t[c.charCodeAt(0)] = WS;
  t[61] = PAD;
  return t;
})();

/**
 * Base64 that may be several padded pieces one after another (a client may encode each message
 * apart): each piece decoded on its own. White space is dropped; anything else is a 400.
 */
export function decodeBase64Segments(text: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(Math.ceil(text.length / 4) * 3);
  let o = 0;
  let acc = 0;
  let n = 0; // symbols of the current group of four
  let pad = 0; // `=` after them
  const bad = () => new ProxyError("bad_request", "gRPC-Web text body is not base64");
  // The bytes of a group cut short by padding (or by the end): 2 symbols 1 byte, 3 symbols 2.
  const tail = () => {
    if (n === 2) out[o++] = acc >> 4;
    else {
      out[o++] = acc >> 10;
      out[o++] = (acc >> 2) & 0xff;
    }
    acc = n = pad = 0;
  };
  for (let i = 0; i < text.length; i++) {
    const v = SYMBOLS[text[i]];
    if (v >= 0) {
      if (pad > 0) throw bad();
      acc = (acc << 6) | v;
      if (++n === 4) {
        out[o++] = acc >> 16;
        out[o++] = (acc >> 8) & 0xff;
        out[o++] = acc & 0xff;
        acc = n = 0;
      }
    } else if (v === PAD) {
      if (n < 2) throw bad();
      if (n + ++pad === 4) tail();
    } else if (v !== WS) throw bad();
  }
  if (pad > 0 || n === 1) throw bad();
  if (n > 1) tail();
  return out.subarray(0, o);
}

/**
 * Base64 for a stream: whole groups of three bytes as they come; the rest of a group at the end,
 * or by `flush` (padded) where a gRPC message ends, so that a message is decodable as soon as it
 * is here (PROTOCOL-WEB.md: the server base64-encodes and flushes messages atomically; clients
 * take padding between them). Held until the next chunk, the last bytes of a streamed message
 * waited for the next message, which may be minutes.
 */
class Base64Stream {
  #rest = new Uint8Array(0);
  /** Bytes of the current message's 5-byte prefix seen, and of its payload still to come. */
  #prefix = new Uint8Array(5);
  #prefixSeen = 0;
  #payloadLeft = 0;

  /** Bytes are held back although the last message is complete: `flush` sends them. */
  get held(): boolean {
    return this.#rest.length > 0 && this.#prefixSeen === 0 && this.#payloadLeft === 0;
  }

  push(chunk: Uint8Array): Uint8Array {
    this.#follow(chunk);
    const all = this.#rest.length === 0 ? chunk : concat(this.#rest, chunk);
    const whole = all.length - (all.length % 3);
    this.#rest = all.slice(whole);
    return latin1(toBase64(all.subarray(0, whole)));
  }

  flush(): Uint8Array {
    return this.end(new Uint8Array(0));
  }

  end(last: Uint8Array): Uint8Array {
    const all = concat(this.#rest, last);
    this.#rest = new Uint8Array(0);
    return latin1(toBase64(all));
  }

  /** Follows the message framing (flag, 4-byte length, payload) through `chunk`. */
  #follow(chunk: Uint8Array): void {
    for (let i = 0; i < chunk.length;) {
      if (this.#payloadLeft > 0) {
        const n = Math.min(this.#payloadLeft, chunk.length - i);
        this.#payloadLeft -= n;
        i += n;
        continue;
      }
      this.#prefix[this.#prefixSeen++] = chunk[i++];
      if (this.#prefixSeen === 5) {
        this.#prefixSeen = 0;
        this.#payloadLeft = new DataView(this.#prefix.buffer).getUint32(1);
      }
    }
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function toBase64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** `p`'s value if it settles within this turn of the event loop, else undefined. */
function settledNow<T>(p: Promise<T>): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const turn = new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), 0));
  return Promise.race([p, turn]).finally(() => clearTimeout(timer));
}
