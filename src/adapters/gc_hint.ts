// Memory hints to V8, active only when the process runs with `--v8-flags=--expose-gc`
// (`make run`, the compiled binary); without the flag every function here does nothing.
//
// 1. Streamed bodies. Every chunk of a streamed body is a fresh ArrayBuffer whose memory lives
//    outside the V8 heap and is freed only when a collection finds the chunk dead; with V8's
//    default young generation that happens rarely while a body streams, so a 1 GiB transfer would
//    hold tens of MiB of dead chunks. A minor GC is requested after every 4 MiB of body data:
//    one scavenge costs well under a millisecond, where shrinking the young generation for
//    everything (--max-semi-space-size) doubled the CPU of small requests. 4 MiB rather than 16:
//    1 GiB each way then peaks near 115 MiB RSS instead of 145-152, and the 64 KiB benchmark
//    took less CPU, not more (bench/decompose.ts --path /64k: 52.6 against 56.6 µs per request;
//    2 MiB saved no more memory).
// 2. After a burst. Under many concurrent requests, objects outlive scavenges, are promoted and
//    die in the old generation, and nothing collects them once traffic stops: RSS stayed at its
//    peak (about 290 MiB after 1,000 connections) for as long as the process idled. Once requests
//    (and WebSocket messages) stop for `memory.reduce_after_idle` (default 1 s) after at least
//    BURST of them, and RSS is above `memory.reduce_above` (default 192 MiB), one memory-reducing
//    full GC runs (V8's "last resort" collection, which also returns free pages to the OS): about
//    100-115 MiB after. It costs a 60-75 ms pause, and the next burst's first second runs on a
//    shrunk heap, so below the threshold (steady traffic at 50 connections: 140-165 MiB) the
//    memory is kept, unless the burst was a crowd: CROWD connections (or requests in flight on
//    Deno.serve) at once, whose objects outlived scavenges whatever the RSS came to (less promoted
//    garbage took the peak at 1,000 connections below the threshold, and it then stayed there).
//    Any full GC also makes V8 discard optimized code whose hidden classes died with the
//    requests; src/proxy/recent.ts keeps the last request's objects alive so that none is
//    discarded (README, "Benchmark").

const STEP = 4 * 1024 * 1024;
/** Requests (and WebSocket messages) since the last reduction before idling triggers one. */
const BURST = 2_000;
/** How often the idle check runs (ms). */
const TICK = 1_000;
/** Connections (or requests in flight) at once that make a burst a crowd (see 2 above). */
export const CROWD = 256;

export type GcFn = (o?: {
  type?: "minor" | "major";
  execution?: "sync" | "async";
  flavor?: "regular" | "last-resort";
}) => unknown;
const gc = (globalThis as { gc?: GcFn }).gc;
let streamed = 0;
let requests = 0;
/** The most connections (or requests in flight) a listener reported at once since last read. */
let crowdPeak = 0;

/** Counts `bytes` of body data that passed through; may request a minor GC. */
export function streamedBytes(bytes: number): void {
  if (gc === undefined) return;
  streamed += bytes;
  if (streamed < STEP) return;
  streamed = 0;
  gc({ type: "minor", execution: "async" });
}

/**
 * Counts one request or relayed WebSocket message (for the idle check): both allocate, and a
 * process that only relays WebSockets must still return the memory of a burst of messages.
 */
export function trafficSeen(): void {
  requests++;
}

/**
 * A listener has `n` connections (Prox's own HTTP/1.1 engine) or requests in flight (Deno.serve)
 * at once: a burst with CROWD of them is reduced after whatever its RSS.
 */
export function crowd(n: number): void {
  if (n > crowdPeak) crowdPeak = n;
}

/** The peak `crowd` saw since the last call. */
function takeCrowdPeak(): number {
  const peak = crowdPeak;
  crowdPeak = 0;
  return peak;
}

/** Options of the memory reducer; `gc`, `every` and `crowdPeak` are seams for tests. */
export interface ReducerOptions {
  /** Requests since the last reduction before idling may trigger one (default BURST). */
  burst?: number;
  /**
   * Idle time (ms) after a burst before the reduction, read at every tick so that a reload applies;
   * rounded up to whole ticks. 0 turns the reducer off. Default: one tick.
   */
  idleMs?: () => number;
  /**
   * Resident memory (bytes) the process must exceed for the reduction to run, read when it is
   * due (default 0: always). Below it the burst is forgotten and the memory kept, unless it was a
   * crowd.
   */
  aboveBytes?: () => number;
  /** Connections or requests at once that make a burst a crowd (default CROWD). */
  crowdAt?: number;
  /** The most at once since the last call (default: what `crowd` was told). */
  crowdPeak?: () => number;
  /** The process's resident memory in bytes (default Deno.memoryUsage().rss). */
  rss?: () => number;
  onSkip?: (rssBytes: number) => void;
  tickMs?: number;
  onReduce?: (ms: number) => void;
  gc?: GcFn;
  /** Calls `fn` every `ms` (an unref'd interval by default); returns a stop function. */
  every?: (fn: () => void, ms: number) => () => void;
}

const unrefInterval = (fn: () => void, ms: number) => {
  const timer = setInterval(fn, ms);
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
};

/**
 * Starts the idle check: once requests stop for `idleMs` after at least `burst` of them, one
 * memory-reducing GC if RSS is above `aboveBytes`. Returns a stop function (a no-op without
 * --expose-gc).
 */
export function startMemoryReducer(o: ReducerOptions = {}): () => void {
  const collect = o.gc ?? gc;
  if (collect === undefined) return () => {};
  const burst = o.burst ?? BURST;
  const tickMs = o.tickMs ?? TICK;
  const idleMs = o.idleMs ?? (() => tickMs);
  const aboveBytes = o.aboveBytes ?? (() => 0);
  const rss = o.rss ?? (() => Deno.memoryUsage().rss);
  const crowdAt = o.crowdAt ?? CROWD;
  const peak = o.crowdPeak ?? takeCrowdPeak;
  let seenAtTick = requests;
  let sinceReduce = 0;
  let idleTicks = 0;
  return (o.every ?? unrefInterval)(() => {
    const now = requests;
    const delta = now - seenAtTick;
    seenAtTick = now;
    sinceReduce += delta;
    idleTicks = delta > 0 ? 0 : idleTicks + 1;
    const idle = idleMs();
    if (idle <= 0 || sinceReduce < burst || idleTicks * tickMs < idle) return;
    sinceReduce = 0;
    idleTicks = 0;
    const above = aboveBytes();
    if (above > 0 && peak() < crowdAt) {
      const now = rss();
      if (now <= above) return o.onSkip?.(now);
    }
    const t0 = performance.now();
    collect({ type: "major", execution: "sync", flavor: "last-resort" });
    o.onReduce?.(performance.now() - t0);
  }, tickMs);
}
