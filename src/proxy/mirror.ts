// Traffic mirroring (a route's `mirror`): a sampled request is copied to each mirror target as
// it goes to its upstream, fire and forget. The copy carries the upstream request's method, path
// (after rewrite), query and headers, with the mirror's Host; its answer is read and dropped.
//
//   1. sample (domain/mirror.ts, the injected random source) and take a slot per target, or count
//      the copy as dropped (in flight);
//   2. the body: none, bytes already read (sent at once), or a stream copied as it passes to the
//      upstream (domain BodyCapture, at most `max_body`): the copies go when it has all passed,
//      and not at all when it goes past the cap or does not arrive whole;
//   3. send through the same UpstreamClient under the mirror's own deadline, never the client's;
//      read the answer (up to 1 MiB) and drop it; count, log at debug, give the slot back.
// Routes without `mirror` never reach this file.

import { BodyCapture, MirrorSlots, sampled } from "../domain/mirror.ts";
import { ProxyError } from "../domain/errors.ts";
import type { MirrorConfig } from "../config/schema.ts";
import type { MirrorResult, UpstreamRequest } from "../ports.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import { timerDelay } from "../config/duration.ts";

/** A route's `mirror` after defaults. */
export interface MirrorPolicy {
  targets: readonly string[];
  percent: number;
  body: boolean;
  maxBody: number;
  maxInFlight: number;
  timeoutMs: number;
  preserveHost: boolean;
}

/** Resolves a route's `mirror` (null without one). */
export function mirrorPolicy(cfg: MirrorConfig | undefined): MirrorPolicy | null {
  if (!cfg) return null;
  return Object.freeze({
    targets: Object.freeze(typeof cfg.target === "string" ? [cfg.target] : [...cfg.target]),
    percent: cfg.percent,
    body: cfg.body,
    maxBody: cfg.max_body,
    maxInFlight: cfg.max_in_flight,
    timeoutMs: cfg.timeout,
    preserveHost: cfg.preserve_host,
  });
}

/** Most bytes of a mirror's answer read (so its connection can be kept); the rest is cut. */
const DRAIN_CAP = 1024 * 1024;

/**
 * The copies under way, across reloads: slots per route id and an abort per copy (bounded by the
 * slots), which shutdown uses so no copy outlives the server.
 */
export class MirrorTraffic {
  readonly slots = new MirrorSlots();
  readonly #live = new Set<AbortController>();

  /** Abandons every copy under way (shutdown). */
  closeAll(): void {
    for (const ac of this.#live) ac.abort(new ProxyError("shutting_down", "Shutting down"));
  }

  /** Registers a copy being sent; the function returned forgets it. */
  track(ac: AbortController): () => void {
    this.#live.add(ac);
    return () => this.#live.delete(ac);
  }
}

const fallback = new WeakMap<PipelineDeps, MirrorTraffic>();

/** The mirror state of `deps`, or one private to these deps when the server supplied none. */
export function mirrorsOf(deps: PipelineDeps): MirrorTraffic {
  if (deps.mirrors) return deps.mirrors;
  let m = fallback.get(deps);
  if (!m) fallback.set(deps, m = new MirrorTraffic());
  return m;
}

type Body = ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null;

/** A request being mirrored: the body its upstream is to get, and what to do if it never does. */
export interface MirrorJob {
  /** The request body for the upstream: as given, or a stream that copies what passes. */
  body: Body;
  /** The upstream exchange failed: copies still waiting for the body are dropped. */
  abandon(): void;
  /** Copies are still waiting for the body to pass. */
  readonly waiting: boolean;
}

/**
 * Mirrors one request when the route's draw picks it and a slot is free; undefined otherwise
 * (nothing to do). `build` makes the upstream request for a target URL (as for the upstream);
 * `length` is the declared body length (-1: unknown).
 */
export function startMirror(
  ctx: RequestContext,
  deps: PipelineDeps,
  a: {
    policy: MirrorPolicy;
    body: Body;
    length: number;
    build: (target: string) => UpstreamRequest;
  },
): MirrorJob | undefined {
  const { policy } = a;
  if (!sampled(policy.percent, (deps.random ?? Math.random)())) return undefined;
  const route = ctx.route!.id;
  const traffic = mirrorsOf(deps);
  const targets: string[] = [];
  for (const t of policy.targets) {
    if (traffic.slots.take(route, policy.maxInFlight)) targets.push(t);
    else outcome(ctx, deps, { target: t, result: "dropped_in_flight" });
  }
  if (targets.length === 0) return undefined;
  let pending = true;
  /** Sends every copy with `bytes` as its body, or drops them all (`why`); once. */
  const settle = (bytes: Uint8Array<ArrayBuffer> | null, why?: MirrorResult) => {
    if (!pending) return;
    pending = false;
    for (const t of targets) {
      let req: UpstreamRequest | undefined;
      try {
        if (!why) req = copyOf(ctx, a, t, bytes);
      } catch (err) {
        // Never into the request it copies (this may run inside its body stream).
        why = "failed";
        deps.logger.debug("Cannot build the mirror request", { error: String(err) });
      }
      if (req) void send(ctx, deps, { policy, traffic, target: t, req });
      else {
        traffic.slots.release(route);
        outcome(ctx, deps, { target: t, result: why! });
      }
    }
  };
  const body = a.body;
  if (!policy.body || !(body instanceof ReadableStream)) {
    const bytes = policy.body ? body as Uint8Array<ArrayBuffer> | null : null;
    if (bytes && bytes.byteLength > policy.maxBody) settle(null, "dropped_body_too_large");
    else settle(bytes);
    return { body, abandon() {}, waiting: false };
  }
  if (a.length > policy.maxBody) {
    settle(null, "dropped_body_too_large");
    return { body, abandon() {}, waiting: false };
  }
  return {
    body: tap(
      body,
      { capture: new BodyCapture(policy.maxBody, a.length), length: a.length },
      settle,
    ),
    abandon: () => settle(null, "dropped_body_incomplete"),
    get waiting() {
      return pending;
    },
  };
}

/** The upstream request for a mirror target, with the mirror's Host and body. */
function copyOf(
  ctx: RequestContext,
  a: { policy: MirrorPolicy; build: (target: string) => UpstreamRequest },
  target: string,
  bytes: Uint8Array<ArrayBuffer> | null,
): UpstreamRequest {
  const req = a.build(target);
  req.headers.set("host", a.policy.preserveHost && ctx.host ? ctx.host : req.origin.host);
  // A request that had a body or a length is copied with a length, 0 when its body is not copied
  // (`body: false`): a PUT or POST without one is refused by some servers (nginx: 411; RFC 9110
  // §8.6).
  if (bytes || req.body !== null || req.headers.has("content-length")) {
    req.headers.set("content-length", String(bytes?.byteLength ?? 0));
  } else req.headers.delete("content-length");
  req.body = bytes;
  // The route's CA and skip-verify apply; its server_name names the upstream, not the mirror.
  if (req.tls) req.tls = { ...req.tls, serverName: undefined };
  // The route's proxy_protocol is its upstream's listener setting, not the mirror's.
  req.proxyHeader = undefined;
  // Its upstream_protocol goes along where the mirror's scheme can take it: a gRPC shadow listens
  // as the route's targets do (h2c for http://, h2 for https://), and HTTP/1.1 reached none. Else
  // the mirror speaks HTTP/1.1 (or h2 by ALPN).
  const p = req.protocol;
  const https = req.origin.protocol === "https:";
  if ((p === "h2c" && https) || (p === "h2" && !https)) req.protocol = undefined;
  return req;
}

/**
 * `body` as it is, copying each chunk into `capture` while it fits: at its end the copies get
 * the bytes; past the cap, or when it fails, is cancelled or ends short of its declared `length`,
 * they are dropped. Lazy (reads only when read) so the upstream's own pace and retry logic are
 * untouched.
 */
function tap(
  body: ReadableStream<Uint8Array>,
  o: { capture: BodyCapture; length: number },
  settle: (bytes: Uint8Array<ArrayBuffer> | null, why?: MirrorResult) => void,
): ReadableStream<Uint8Array> {
  const { capture, length } = o;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      reader ??= body.getReader();
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (err) {
        settle(null, "dropped_body_incomplete");
        throw err;
      }
      if (r.done) {
        // An HTTP/2 upload the client reset ends here as if complete (the upstream client then
        // fails the request on its Content-Length): a copy must not go out as a whole request.
        const bytes = capture.bytes();
        if (bytes && length >= 0 && bytes.byteLength !== length) {
          settle(null, "dropped_body_incomplete");
        } else settle(bytes);
        return c.close();
      }
      if (!capture.push(r.value)) settle(null, "dropped_body_too_large");
      c.enqueue(r.value);
    },
    cancel(reason) {
      settle(null, "dropped_body_incomplete");
      return (reader ?? body).cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** Sends one copy under its own deadline, reads and drops the answer, counts and frees the slot. */
async function send(
  ctx: RequestContext,
  deps: PipelineDeps,
  a: { policy: MirrorPolicy; traffic: MirrorTraffic; target: string; req: UpstreamRequest },
): Promise<void> {
  const { req, policy } = a;
  const ms = policy.timeoutMs;
  const ac = new AbortController();
  const untrack = a.traffic.track(ac);
  const timer = setTimeout(
    () => ac.abort(new ProxyError("timeout", `No complete mirror answer within ${ms} ms`)),
    timerDelay(ms),
  );
  req.signal = ac.signal;
  req.clientSignal = undefined;
  req.hints = undefined; // the shadow's 103s are not the client's
  req.timeouts = {
    connect: Math.min(req.timeouts.connect || ms, ms),
    responseHeader: ms,
    idle: ms,
  };
  let status = 0;
  try {
    const res = await deps.upstream.send(req);
    status = res.status;
    await drain(res.body, ac.signal);
    outcome(ctx, deps, { target: a.target, result: "mirrored", status });
  } catch (err) {
    const reason = ac.signal.aborted ? ac.signal.reason : err;
    outcome(ctx, deps, {
      target: a.target,
      result: "failed",
      status,
      error: reason instanceof Error ? reason.message : String(reason),
    });
  } finally {
    clearTimeout(timer);
    untrack();
    a.traffic.slots.release(ctx.route!.id);
  }
}

/** Reads a mirror's answer to its end (at most DRAIN_CAP bytes, then cuts it), dropping it. */
async function drain(body: ReadableStream<Uint8Array> | null, signal: AbortSignal): Promise<void> {
  if (!body) return;
  const reader = body.getReader();
  const stop = () => void reader.cancel(signal.reason).catch(() => {});
  signal.addEventListener("abort", stop, { once: true });
  try {
    let seen = 0;
    for (;;) {
      if (signal.aborted) throw signal.reason;
      const r = await reader.read();
      // A read the abort cut short (`stop` cancels the reader) ends with `done` too: that is the
      // copy's timeout or a shutdown, no complete answer.
      if (signal.aborted) throw signal.reason;
      if (r.done) return;
      seen += r.value.byteLength;
      if (seen > DRAIN_CAP) {
        await reader.cancel();
        return;
      }
    }
  } finally {
    signal.removeEventListener("abort", stop);
  }
}

const MESSAGES: Record<MirrorResult, string> = {
  mirrored: "Mirror answered",
  failed: "Mirror request failed",
  dropped_in_flight: "Mirror request dropped",
  dropped_body_too_large: "Mirror request dropped",
  dropped_body_incomplete: "Mirror request dropped",
};

/** Counts one copy's outcome and logs it at debug (never above: the shadow is not the service). */
function outcome(
  ctx: RequestContext,
  deps: PipelineDeps,
  o: { target: string; result: MirrorResult; status?: number; error?: string },
): void {
  deps.metrics.mirror(ctx.route!.id, o.result);
  deps.logger.debug(MESSAGES[o.result], {
    requestId: ctx.requestId,
    route: ctx.route!.id,
    mirror: o.target,
    result: o.result,
    ...(o.status ? { status: o.status } : {}),
    ...(o.error ? { error: o.error } : {}),
  });
}
