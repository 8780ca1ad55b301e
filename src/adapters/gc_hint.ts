// Prompt reclamation of streamed body buffers. Every chunk of a streamed body is a fresh
// ArrayBuffer whose memory lives outside the V8 heap and is freed only when a garbage
// collection finds the chunk dead; with V8's default young generation that happens rarely
// while a body streams, so a 1 GiB transfer would hold tens of MiB of dead chunks. When the
// process runs with `--v8-flags=--expose-gc` (`make run`, the compiled binary), a minor GC is
// requested after every `STEP` bytes streamed: one scavenge per 16 MiB costs well under a
// millisecond, where shrinking the young generation for everything (--max-semi-space-size)
// doubled the CPU of small requests. Without the flag this is a no-op.

const STEP = 16 * 1024 * 1024;

type GcFn = (o?: { type?: "minor" | "major"; execution?: "sync" | "async" }) => unknown;
const gc = (globalThis as { gc?: GcFn }).gc;
let streamed = 0;

/** Counts `bytes` of body data that passed through; may request a minor GC. */
export function streamedBytes(bytes: number): void {
  if (gc === undefined) return;
  streamed += bytes;
  if (streamed < STEP) return;
  streamed = 0;
  gc({ type: "minor", execution: "async" });
}
