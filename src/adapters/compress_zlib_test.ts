import assert from "node:assert/strict";
import zlib from "node:zlib";
import { zlibCompressor } from "./compress_zlib.ts";
import { COMPRESS_CODINGS } from "../domain/compress.ts";
import type { ContentCoding } from "../domain/compress.ts";

const C = zlib.constants;
/** Decodes a possibly unfinished stream: what the flushed bytes so far hold. */
function decodePartial(coding: ContentCoding, bytes: Uint8Array): string {
  const out = coding === "gzip"
    ? zlib.gunzipSync(bytes, { finishFlush: C.Z_SYNC_FLUSH })
    : coding === "br"
    ? zlib.brotliDecompressSync(bytes, { finishFlush: C.BROTLI_OPERATION_FLUSH })
    : zlib.zstdDecompressSync(bytes, { finishFlush: C.ZSTD_e_flush });
  return new TextDecoder().decode(out);
}
function decode(coding: ContentCoding, bytes: Uint8Array): Uint8Array {
  const out = coding === "gzip"
    ? zlib.gunzipSync(bytes)
    : coding === "br"
    ? zlib.brotliDecompressSync(bytes)
    : zlib.zstdDecompressSync(bytes);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}
const concat = (parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), at += p.byteLength);
  return out;
};

Deno.test("zlibCompressor: each coding round-trips a large body", async () => {
  const body = new TextEncoder().encode(JSON.stringify(
    Array.from({ length: 4000 }, (_, i) => ({ id: i, name: `item ${i}`, ok: i % 3 === 0 })),
  ));
  for (const coding of COMPRESS_CODINGS) {
    const chunks = [body.subarray(0, 1000), body.subarray(1000, 70_000), body.subarray(70_000)];
    const src = ReadableStream.from(chunks);
    const parts = await Array.fromAsync(src.pipeThrough(zlibCompressor(coding)));
    const encoded = concat(parts);
    assert.ok(encoded.byteLength < body.byteLength / 4, `${coding}: ${encoded.byteLength}`);
    assert.deepEqual(decode(coding, encoded), body, coding);
  }
});

Deno.test("zlibCompressor: each chunk comes out flushed before the next is written", async () => {
  for (const coding of COMPRESS_CODINGS) {
    const ts = zlibCompressor(coding);
    const w = ts.writable.getWriter();
    const r = ts.readable.getReader();
    const got: Uint8Array[] = [];
    void w.write(new TextEncoder().encode("data: one\n\n"));
    // Read until the first event decodes; with no flush this would wait for the end forever.
    while (!decodePartial(coding, concat(got)).includes("data: one")) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const { value, done } = await Promise.race([
        r.read(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${coding}: event held back`)), 5000);
        }),
      ]).finally(() => clearTimeout(timer));
      assert.ok(!done && value, `${coding}: stream ended early`);
      got.push(value);
    }
    void w.write(new TextEncoder().encode("data: two\n\n"));
    void w.close();
    for (;;) {
      const { value, done } = await r.read();
      if (done) break;
      got.push(value);
    }
    assert.equal(
      new TextDecoder().decode(decode(coding, concat(got))),
      "data: one\n\ndata: two\n\n",
    );
  }
});

Deno.test("zlibCompressor: a reader that goes away cancels the source", async () => {
  let cancelled = false;
  const src = new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(new Uint8Array(1024).fill(97));
    },
    cancel() {
      cancelled = true;
    },
  });
  const r = src.pipeThrough(zlibCompressor("gzip")).getReader();
  await r.read();
  await r.cancel();
  assert.ok(cancelled);
});
