// The Compressor port on node:zlib (gzip, Brotli, zstd). Web CompressionStream has no zstd and
// no flush: a chunk it holds back would hold back a server-sent event.

import zlib from "node:zlib";
import type { ContentCoding } from "../domain/compress.ts";
import type { Compressor } from "../ports.ts";

const C = zlib.constants;

/**
 * Levels chosen for speed, as proxies do for on-the-fly compression (Caddy's gzip 5, zstd's
 * default 3; Brotli 4 is about gzip 5's cost with a better ratio, 11 would take ~100× as long).
 */
/** A zlib stream: a Transform with zlib's flush(kind, callback). */
type ZStream = import("node:stream").Transform & zlib.Zlib;

function create(coding: ContentCoding): { z: ZStream; flush: number } {
  switch (coding) {
    case "gzip":
      return { z: zlib.createGzip({ level: 5 }) as ZStream, flush: C.Z_SYNC_FLUSH };
    case "br":
      return {
        z: zlib.createBrotliCompress({ params: { [C.BROTLI_PARAM_QUALITY]: 4 } }) as ZStream,
        flush: C.BROTLI_OPERATION_FLUSH,
      };
    case "zstd":
      return {
        z: zlib.createZstdCompress({ params: { [C.ZSTD_c_compressionLevel]: 3 } }) as ZStream,
        flush: C.ZSTD_e_flush,
      };
  }
}

/** A TransformStream per response; the compressor is freed when either side gives up. */
export const zlibCompressor: Compressor = (coding) => {
  const { z, flush } = create(coding);
  let out: Uint8Array[] = [];
  let failed: Error | null = null;
  z.on("data", (d: Uint8Array) => out.push(d));
  z.on("error", (e: Error) => failed = e);
  const drain = (ctl: TransformStreamDefaultController<Uint8Array>) => {
    if (failed) throw failed;
    for (const d of out) ctl.enqueue(d);
    out = [];
  };
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, ctl) {
      if (chunk.byteLength === 0) return;
      return new Promise<void>((resolve, reject) => {
        z.write(chunk);
        z.flush(flush, () => {
          try {
            drain(ctl);
            resolve();
          } catch (e) {
            reject(e);
          }
        });
      });
    },
    flush(ctl) {
      return new Promise<void>((resolve, reject) => {
        z.once("end", () => {
          try {
            drain(ctl);
            resolve();
          } catch (e) {
            reject(e);
          }
        });
        z.once("error", reject);
        z.end();
      });
    },
    cancel() {
      z.destroy();
    },
  });
};
