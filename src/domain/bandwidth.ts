// Response bandwidth (a route's `bandwidth`, nginx's limit_rate / limit_rate_after, HAProxy's
// bwlim-out): how long to hold each piece of a response body so that it goes out at no more than
// `rate` bytes per second once the first `after` bytes went at full speed. Pure: the caller passes
// the time (ms, monotonic) and waits; proxy/filters/bandwidth.ts paces the stream with it.

/** Whose answers share one `rate`: each response its own, a client's, or the whole route's. */
export type BandwidthScope = "response" | "client" | "route";

/** A route's resolved `bandwidth`. */
export interface BandwidthPolicy {
  /** Bytes per second, at least 1. */
  rate: number;
  /** Bytes each response sends at full speed first (0: paced from the first byte). */
  after: number;
  per: BandwidthScope;
}

/**
 * Lateness forgiven, in ms: a pacer that fell behind (its timer fired late, or the client read
 * slowly) may catch up this much, no more, so a stalled download does not burst afterwards.
 */
export const CATCH_UP_MS = 50;

/**
 * The time at which the bytes paced so far have been sent at `rate` (NaN before the first): one
 * response's own, or shared by the responses of a client or route (`per`), whose pieces then
 * take turns, each reserving its time after the others' (GCRA's theoretical arrival time).
 */
export interface Bucket {
  due: number;
}

/** The pacing state of one response: `free` bytes still allowed at full speed, and its bucket. */
export interface Pace {
  free: number;
  bucket: Bucket;
}

/** A fresh pace for one response under `policy`, in `bucket` when it shares one. */
export function startPace(policy: BandwidthPolicy, bucket: Bucket = { due: NaN }): Pace {
  return { free: policy.after, bucket };
}

/**
 * How many of `n` bytes to send next: the rest of the full-speed allowance alone when it ends
 * inside them (so those go out without waiting for the paced ones), else at most `slice` bytes.
 */
export function nextPiece(pace: Pace, n: number, slice: number): number {
  if (pace.free > 0) return Math.min(n, pace.free);
  return Math.min(n, slice);
}

/**
 * Takes `n` bytes about to be sent at `now` and returns how many ms to wait before sending them
 * (0: at once). Bytes sent by time t never exceed `after + rate × (t - t0)` (t0: the first paced
 * byte's time) plus `rate × CATCH_UP_MS`: a token bucket that refills at `rate`, holds at most
 * CATCH_UP_MS worth, and must cover each piece before it goes.
 */
export function takeBytes(
  pace: Pace,
  policy: BandwidthPolicy,
  o: { n: number; now: number },
): number {
  let n = o.n;
  if (pace.free > 0) {
    const free = Math.min(n, pace.free);
    pace.free -= free;
    n -= free;
    if (n === 0) return 0;
  }
  const now = o.now;
  const bucket = pace.bucket;
  // The first paced bytes start the clock: no credit for the time the free bytes took.
  let due = bucket.due !== bucket.due ? now : Math.max(bucket.due, now - CATCH_UP_MS);
  due += n * 1000 / policy.rate;
  bucket.due = due;
  return due > now ? due - now : 0;
}

/**
 * The largest piece a chunk is cut into: about an eighth of a second's worth, so that a slow rate
 * sends small pieces often rather than a whole 64 KiB chunk after a long wait; at least 256 bytes.
 */
export function sliceFor(policy: BandwidthPolicy): number {
  return Math.max(256, Math.floor(policy.rate / 8));
}

/** "1 MiB/s after the first 10 MiB": a policy as people read it (explain). */
export function bandwidthText(policy: BandwidthPolicy): string {
  const rate = `${sizeWords(policy.rate)}/s`;
  return policy.after > 0 ? `${rate} after the first ${sizeWords(policy.after)}` : rate;
}

function sizeWords(n: number): string {
  for (const [unit, size] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]] as const) {
    if (n >= size) return `${Number((n / size).toFixed(2))} ${unit}`;
  }
  return `${n} B`;
}
