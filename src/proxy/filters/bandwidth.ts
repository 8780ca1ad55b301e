// A route's `bandwidth` (nginx's limit_rate / limit_rate_after): each answer's body goes to the
// client at no more than `rate` bytes per second after its first `after` bytes. Applied last,
// after compression and error pages (pipeline.ts), so the bytes paced are the bytes sent; the
// arithmetic is domain/bandwidth.ts. The body is pulled one chunk at a time (nothing is read
// ahead of the client, whose backpressure holds the upstream), and a client that leaves cancels
// both the wait and the upstream's body.

import { nextPiece, sliceFor, startPace, takeBytes } from "../../domain/bandwidth.ts";
import type { BandwidthPolicy, Bucket } from "../../domain/bandwidth.ts";
import { ipGroupKey } from "../../domain/ip.ts";
import { tagRequest } from "../../domain/errors.ts";
import { BODY_BYTES } from "../../ports.ts";
import type { BodyCounter, Clock, CountedResponse, Timer } from "../../ports.ts";
import { WireResponse } from "../wire_response.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";

/** setTimeout, for callers without the server's (whose timers do not hold the process). */
const plainTimer: Timer = (fn, ms) => {
  const id = setTimeout(fn, ms);
  return () => clearTimeout(id);
};

/** A bucket shared by the answers of one client or of the route, and how to give it back. */
export interface Share {
  bucket: Bucket;
  release: () => void;
}

/** Shared buckets per pipeline: route id → key → bucket and the answers using it. */
const shares = new WeakMap<PipelineDeps, Map<string, Map<string, Bucket & { users: number }>>>();

/**
 * A route's `bandwidth` on its answer (pipeline.ts, last of the response filters). With `per:
 * client` or `route` the answer paces in a bucket it shares; a bucket is kept while an answer
 * uses it, so the map holds only keys with downloads in progress.
 */
export function pacedAnswer(
  ctx: RequestContext,
  deps: PipelineDeps,
  res: Response,
  policy: BandwidthPolicy,
): Response {
  return pacedResponse(res, policy, {
    method: ctx.req.method,
    clock: deps.clock,
    timer: deps.timer,
    share: policy.per === "response" ? undefined : () => shareOf(ctx, deps, policy),
  });
}

/** How many clients (or routes) have shared buckets in use: the map's size, for tests. */
export function sharesInUse(deps: PipelineDeps): number {
  let n = 0;
  for (const keys of shares.get(deps)?.values() ?? []) n += keys.size;
  return n;
}

function shareOf(ctx: RequestContext, deps: PipelineDeps, policy: BandwidthPolicy): Share {
  const id = ctx.route!.id;
  // A client as rate limits key one by default: its address, an IPv6 one by its /64.
  const key = policy.per === "route" ? "" : ipGroupKey(ctx.clientIp, 64);
  let routes = shares.get(deps);
  if (!routes) shares.set(deps, routes = new Map());
  let keys = routes.get(id);
  if (!keys) routes.set(id, keys = new Map());
  let bucket = keys.get(key);
  if (!bucket) keys.set(key, bucket = { due: NaN, users: 0 });
  bucket.users++;
  const b = bucket;
  const map = keys;
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    if (--b.users > 0 || map.get(key) !== b) return;
    map.delete(key);
    if (map.size === 0 && routes.get(id) === map) routes.delete(id);
  };
  // Given back when the body ends or is cancelled, else when the listener is done with it.
  ctx.info.completed?.then(release, release);
  return { bucket: b, release };
}

/**
 * `res` with its body paced under `policy`; `res` itself when there is nothing to pace (no body,
 * HEAD, or a declared length within `after`: such an answer keeps the listener's fast paths).
 * `share` is asked for only when the body is paced.
 */
export function pacedResponse(
  res: Response,
  policy: BandwidthPolicy,
  o: { method: string; clock: Clock; timer?: Timer; share?: () => Share },
): Response {
  const status = res.status;
  if (o.method === "HEAD" || status < 200 || status === 204 || status === 304) return res;
  const length = res.headers.get("content-length");
  if (length !== null && Number(length) <= policy.after) return res;
  const body = res.body;
  if (body === null) return res;
  const counter: BodyCounter = { bytes: 0, ended: false };
  const inner = (res as CountedResponse)[BODY_BYTES];
  // The upstream's trailers (an HTTP/2 upstream's) still go on after the body, and trailers an
  // engine sets (a gRPC call past its deadline, engine_shared.ts deadlineTrailers) are kept.
  if (inner) {
    Object.defineProperty(counter, "trailers", {
      get: () => inner.trailers,
      set: (v: [string, string][] | undefined) => inner.trailers = v,
    });
  }
  const share = o.share?.();
  const paced = pacedBody(body, policy, {
    clock: o.clock,
    timer: o.timer ?? plainTimer,
    counter,
    bucket: share?.bucket,
    done: share?.release,
  });
  // The HTTP/1.1 engine's stand-in keeps its field list (no Headers made and checked again).
  const out: CountedResponse = res instanceof WireResponse
    ? new WireResponse(null, status, res.statusText, res.headers, paced) as unknown as Response
    : new Response(paced, { status, statusText: res.statusText, headers: res.headers });
  out[BODY_BYTES] = counter;
  return out;
}

/**
 * `body` re-streamed at the policy's pace: each chunk read only when the client asks for more,
 * cut into pieces (domain/bandwidth.ts nextPiece), each held until its bytes are due. Counts the
 * bytes handed on for the access log.
 */
export function pacedBody(
  body: ReadableStream<Uint8Array>,
  policy: BandwidthPolicy,
  o: {
    clock: Clock;
    timer: Timer;
    counter: BodyCounter;
    /** A bucket shared with other answers (`per`); its own without. */
    bucket?: Bucket;
    /** Called once when the body ends, fails or is cancelled. */
    done?: () => void;
  },
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const pace = startPace(policy, o.bucket);
  const done = o.done ?? (() => {});
  const slice = sliceFor(policy);
  const counter = o.counter;
  /** What is left of the chunk read last. */
  let held: Uint8Array | null = null;
  /** Stops the wait under way and ends it (set while waiting). */
  let stopWait: (() => void) | null = null;
  let cancelled = false;
  const wait = (ms: number) =>
    new Promise<void>((resolve) => {
      const clear = o.timer(() => {
        stopWait = null;
        resolve();
      }, ms);
      stopWait = () => {
        stopWait = null;
        clear();
        resolve();
      };
    });
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        // Until a piece goes out (a pull that enqueues nothing is not called again).
        for (;;) {
          let chunk = held;
          if (chunk === null) {
            const r = await reader.read();
            // Cancelled while the upstream was slow: the read ended with it, no body did.
            if (cancelled) return;
            if (r.done) {
              counter.ended = true;
              done();
              ctl.close();
              return;
            }
            chunk = r.value;
          }
          if (chunk.byteLength === 0) {
            held = null;
            continue;
          }
          const n = nextPiece(pace, chunk.byteLength, slice);
          const piece = n === chunk.byteLength ? chunk : chunk.subarray(0, n);
          held = n === chunk.byteLength ? null : chunk.subarray(n);
          const ms = takeBytes(pace, policy, { n, now: o.clock.monotonic() });
          // Below a millisecond a timer would only add its own lateness.
          if (ms >= 1) await wait(ms);
          if (cancelled) return;
          counter.bytes += n;
          ctl.enqueue(piece);
          return;
        }
      } catch (err) {
        // The upstream body failed: the response ends with it (and the wait, if any, is over).
        done();
        reader.cancel(err).catch(() => {});
        throw tagRequest(err, counter.request);
      }
    },
    cancel(reason) {
      // The client left (or the listener gave up on it): no more waiting, no more upstream.
      cancelled = true;
      held = null;
      done();
      (stopWait as (() => void) | null)?.();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
