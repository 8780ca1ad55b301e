// deno-lint-ignore-file no-console
// Loaded with `--preload` by alloc_sites.ts: counts the ArrayBuffers that JavaScript makes (`new
// Uint8Array(n)`, `new ArrayBuffer(n)`, `Uint8Array.prototype.slice`), with the call site of one
// in 64 (at random), and prints the sites on SIGWINCH. Each costs 0.2–0.7 µs in Deno (see
// docs/performance.md), so a data path should make none per request. Views on an existing buffer
// are free and not counted; buffers made inside Deno's ops are not seen.
const counts = new Map<string, number>();
let made = 0;
const U8 = Uint8Array;
const AB = ArrayBuffer;

function hit(kind: string): void {
  made++;
  // At random, not every 64th: a request that makes 2 or 4 would be sampled at the same one of
  // them each time.
  if (Math.random() >= 1 / 64) return;
  const o: { stack?: string } = {};
  Error.captureStackTrace(o);
  const site = o.stack!.split("\n").slice(3, 6)
    .map((l) => l.trim().replace(/^at /, "").replace(/\(?file:\/\/\/\S*\/src\//, ""))
    .join(" < ");
  const key = `${kind} @ ${site}`;
  counts.set(key, (counts.get(key) ?? 0) + 64);
}

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
g.Uint8Array = new Proxy(U8, {
  construct(target, args, newTarget) {
    if (!(args[0] instanceof AB)) hit("new Uint8Array");
    return Reflect.construct(target, args, newTarget);
  },
});
g.ArrayBuffer = new Proxy(AB, {
  construct(target, args, newTarget) {
    hit("new ArrayBuffer");
    return Reflect.construct(target, args, newTarget);
  },
});
const slice = U8.prototype.slice;
U8.prototype.slice = function (this: Uint8Array, start?: number, end?: number) {
  hit("slice");
  return slice.call(this, start, end);
} as typeof slice;

Deno.addSignalListener("SIGWINCH", () => {
  const rows = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 20);
  console.error(`ALLOCATIONS ${made}`);
  for (const [k, n] of rows) console.error(`${String(n).padStart(9)}  ${k}`);
  console.error("END");
});
