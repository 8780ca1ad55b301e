import assert from "node:assert/strict";
import zlib from "node:zlib";
import { zlibCompressor } from "./compress_zlib.ts";
import { COMPRESS_CODINGS } from "../domain/compress.ts";
import type { ContentCoding } from "../domain/compress.ts";

const C = zlib.constants;
const asBytes = (b: Uint8Array) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
/** Decodes a whole stream, or with `partial` what the flushed bytes of an unfinished one hold. */
function decode(coding: ContentCoding, bytes: Uint8Array, partial = false): Uint8Array {
  return asBytes(
    coding === "gzip"
      ? zlib.gunzipSync(bytes, partial ? { finishFlush: C.Z_SYNC_FLUSH } : {})
      : coding === "br"
      ? zlib.brotliDecompressSync(bytes, partial ? { finishFlush: C.BROTLI_OPERATION_FLUSH } : {})
      : zlib.zstdDecompressSync(bytes, partial ? { finishFlush: C.ZSTD_e_flush } : {}),
  );
}
const concat = (parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), at += p.byteLength);
  return out;
};

Deno.test("zlibCompressor: each coding round-trips text and incompressible bytes of any size", () => {
  const text = new TextEncoder().encode(JSON.stringify(
    Array.from({ length: 4000 }, (_, i) => ({ id: i, name: `item ${i}`, ok: i % 3 === 0 })),
  ));
  const noise = new Uint8Array(300_000);
  for (let i = 0; i < noise.length; i += 65536) {
    crypto.getRandomValues(noise.subarray(i, i + 65536));
  }
  for (const coding of COMPRESS_CODINGS) {
    for (const body of [text, noise]) {
      const e = zlibCompressor(coding);
      const out: Uint8Array[] = [];
      const emit = (b: Uint8Array) => out.push(b);
      // Chunks smaller and larger than the engine's 64 KiB output space.
      e.write(body.subarray(0, 1000), emit);
      e.write(body.subarray(1000, 200_000), emit);
      e.write(body.subarray(200_000), emit);
      e.end(emit);
      const encoded = concat(out);
      if (body === text) assert.ok(encoded.byteLength < text.byteLength / 4, `${coding}`);
      assert.deepEqual(decode(coding, encoded), body, coding);
    }
  }
});

Deno.test("zlibCompressor: each chunk comes out whole, before the next is written", () => {
  const enc = new TextEncoder();
  for (const coding of COMPRESS_CODINGS) {
    const e = zlibCompressor(coding);
    const out: Uint8Array[] = [];
    const emit = (b: Uint8Array) => out.push(b);
    e.write(enc.encode("data: one\n\n"), emit);
    assert.equal(new TextDecoder().decode(decode(coding, concat(out), true)), "data: one\n\n");
    e.write(enc.encode("data: two\n\n"), emit);
    e.end(emit);
    assert.equal(
      new TextDecoder().decode(decode(coding, concat(out))),
      "data: one\n\ndata: two\n\n",
      coding,
    );
    // Ended: the engine is freed, and says so if used again.
    assert.throws(() => e.write(enc.encode("x"), emit), /compressor is closed/);
  }
});
