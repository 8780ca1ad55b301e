// The request side of an HTTP/1.1 exchange: the bytes of the first write (the head, with a body
// given as bytes when it is small) and the streaming of a body of unknown or large size.

import { ProxyError } from "../domain/errors.ts";
import { LEND_CHUNKS } from "../ports.ts";
import type { ChunkLending } from "../ports.ts";
import type { H1Connection } from "./upstream_h1_conn.ts";
import { streamedBytes } from "./gc_hint.ts";
import { headBytes, headInto } from "./upstream_h1_wire.ts";
import { readClientChunk, SHORT_BODY } from "../proxy/body_replay.ts";

const CRLF = new Uint8Array([13, 10]);
const LAST_CHUNK = new Uint8Array([48, 13, 10, 13, 10]);
const encoder = new TextEncoder();
/** Request bodies up to this size are written together with the head. */
const ONE_WRITE = 64 * 1024;

/**
 * What to write for a head (`requestHead`'s text) and a body given as bytes: `head` first, then
 * `rest` if not null. A small body goes in the head's write: one syscall, and one packet for the
 * upstream to wake up to, instead of two. Both are copied into the connection's write buffer when
 * they fit (no allocation per request: buffers of 1 KiB or more make malloc consolidate its free
 * lists, measured at 7 µs per 1 KiB POST).
 */
export function requestBytes(
  conn: H1Connection,
  text: string,
  bytes: Uint8Array | null,
): { head: Uint8Array; rest: Uint8Array | null } {
  const bodyLen = bytes ? bytes.byteLength : 0;
  const wbuf = conn.writeBuffer();
  const n = headInto(text, wbuf, wbuf.byteLength - bodyLen);
  if (n >= 0) {
    if (bytes) wbuf.set(bytes, n);
    return { head: wbuf.subarray(0, n + bodyLen), rest: null };
  }
  const head = headBytes(text);
  if (!bytes || bytes.byteLength > ONE_WRITE) return { head, rest: bytes };
  const all = new Uint8Array(head.byteLength + bytes.byteLength);
  all.set(head);
  all.set(bytes, head.byteLength);
  return { head: all, rest: null };
}

/** Writes the request body: as is under Content-Length, else as chunks (RFC 9112 §7.1). */
export async function pumpBody(
  conn: H1Connection,
  body: ReadableStream<Uint8Array>,
  o: { chunked: boolean; declared: number },
): Promise<void> {
  // The engine's chunks of a large body go back once written (ports.ts LEND_CHUNKS).
  const written = (body as ChunkLending)[LEND_CHUNKS]?.();
  const reader = body.getReader();
  let sent = 0;
  conn.stopUpload = () => reader.cancel().catch(() => {});
  try {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      conn.waitingOnClient = true;
      try {
        r = await readClientChunk(reader);
      } finally {
        conn.waitingOnClient = false;
      }
      if (conn.dead) {
        throw conn.failure ??
          new ProxyError("upstream_reset", `Upstream "${conn.source}" connection closed`);
      }
      if (r.done) break;
      const chunk = r.value;
      if (chunk.byteLength === 0) continue;
      sent += chunk.byteLength;
      if (o.chunked) {
        // One write per chunk: size line, data and CRLF together (no small-packet ping-pong).
        const size = encoder.encode(chunk.byteLength.toString(16) + "\r\n");
        const framed = new Uint8Array(size.byteLength + chunk.byteLength + 2);
        framed.set(size);
        framed.set(chunk, size.byteLength);
        framed.set(CRLF, size.byteLength + chunk.byteLength);
        if (!written?.(chunk)) streamedBytes(chunk.byteLength);
        await conn.write(framed);
      } else {
        if (sent > o.declared) {
          throw new ProxyError("bad_request", "Request body longer than its Content-Length");
        }
        await conn.write(chunk);
        // Garbage now unless its buffer went back: the collector is asked to keep up (gc_hint.ts).
        if (!written?.(chunk)) streamedBytes(chunk.byteLength);
      }
    }
    if (o.chunked) await conn.write(LAST_CHUNK);
    else if (sent !== o.declared) {
      throw new ProxyError("bad_request", SHORT_BODY);
    }
  } catch (err) {
    reader.cancel(err).catch(() => {});
    throw err;
  } finally {
    // The reader keeps its lock: the body is read to its end or cancelled by now, and
    // releaseLock() builds a TypeError (its stack included), ~5 µs a request.
    conn.stopUpload = null;
  }
}
