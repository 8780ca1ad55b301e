// Select an upstream → send → on failure, loop back to selection (Pingora's shape):
//   1. pick a target with the route's policy among available ones (health + ejection), never one
//      this request already tried while another is left;
//   2. send through the UpstreamClient port, with an optional per-try timeout;
//   3. on failure decide: a connect failure with nothing sent is retried for any method; a reset
//      or timeout before the response head only for idempotent methods (RFC 9110 §9.2.2), or
//      POST with Idempotency-Key when opted in; always within `attempts` and the retry budget,
//      and only when the request body could be kept for replay (body_replay.ts) or the upstream
//      client gave a streamed one back unread (UNREAD_BODY); a reset or timeout only on a target
//      not tried yet;
//   4. a response whose status is in `retries.on_status` goes the same way for idempotent
//      requests while an untried target is left (else it is returned as it is).
// Every outcome feeds passive health and the latency EWMA in the registry (state.ts).

import { ProxyError, toProxyError } from "../domain/errors.ts";
import { originName } from "../domain/upstream_origin.ts";
import type { PickInput } from "../domain/balancer.ts";
import { LEND_CHUNKS, UNREAD_BODY } from "../ports.ts";
import type { ChunkLending, UnreadBody, UpstreamRequest } from "../ports.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";
import { createUpstreamRegistry } from "./state.ts";
import type { UpstreamRegistry } from "./state.ts";
import { poolOf } from "./pool.ts";
import { recent } from "./recent.ts";
import { bodySource, NO_BODY, onBodyEnd } from "./body_replay.ts";
import type { BodyDeadline, BodySource } from "./body_replay.ts";
import type { RetryPolicy, RoutePool, StickyPolicy } from "./pool.ts";
import { timerDelay } from "../config/duration.ts";
import { DISCOVER_RETRY_MS } from "../config/discovered.ts";

/** Safe to repeat (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/** Per-try timeouts (`retries.per_try_timeout`), which may be retried on the same target. */
const PER_TRY = new WeakSet<ProxyError>();
const perTryTimeout = (e: ProxyError) => (PER_TRY.add(e), e);

/** A route with passive health off sees no ejection (see UpstreamRegistry.available). */
const NO_PASSIVE = Object.freeze({ passive: false });

/** Error kinds that count against a target's passive health. */
const TARGET_FAULTS = new Set(["connect", "timeout", "upstream_reset", "protocol"]);

const fallbackRegistries = new WeakMap<PipelineDeps, UpstreamRegistry>();

/** The registry of `deps`, or one private to these deps when the server did not supply one. */
export function registryOf(deps: PipelineDeps): UpstreamRegistry {
  if (deps.upstreams) return deps.upstreams;
  let r = fallbackRegistries.get(deps);
  if (!r) {
    r = createUpstreamRegistry(deps);
    fallbackRegistries.set(deps, r);
  }
  return r;
}

/** Sends the request to one of the route's targets (retrying per policy) and returns the response. */
export async function forward(
  ctx: RequestContext,
  deps: PipelineDeps,
  opts: {
    build: (target: string) => UpstreamRequest;
    /**
     * The request body is a stream (no declared length, or one over the replay cap): its first
     * REPLAY_CAP bytes are read before a target is chosen, as a declared length's are (proxy.ts),
     * so a slow upload does not go to a target chosen when it began (drained, down or ejected
     * since), nor stays uncounted by least_connections while it trickles in.
     */
    streamedBody?: boolean;
    /** The exchange's deadline (proxy.ts), which a body read before a target is chosen obeys. */
    deadline?: BodyDeadline;
  },
): Promise<Response> {
  const route = ctx.route!;
  const reg = registryOf(deps);
  const pool = poolOf(route, ctx.snapshot.config, { registry: reg });
  reg.countRequest(route.id, ctx.start);
  const tried = new Set<number>();
  const key = hashKey(ctx, pool);
  // The target the client's sticky cookie names (-1: none, or not one of this route's).
  const sticky = pool.sticky ? stickyIndex(ctx, pool.sticky) : -1;
  const random = deps.random ?? Math.random;
  let body: BodySource | undefined;
  /** A streamed body the last attempt's upstream client gave back unread, for the next one. */
  let unread: ReadableStream<Uint8Array> | undefined;
  let lastErr: ProxyError | undefined;
  /** The target a status retry already chose before giving up the response it retries. */
  let chosen: { i: number; why: string } | undefined;
  /** The last attempt's deadline signal (timeouts.total), which a backoff pause also ends at. */
  let lastSignal: AbortSignal | undefined;
  /** A request built before a target was chosen (to read its body), for the first target. */
  let early: UpstreamRequest | undefined;
  const prepare = (req: UpstreamRequest) =>
    req.body === null ? NO_BODY : bodySource(req.body, ctx.req.headers, {
      // An upstream on Prox's own HTTP/2 client (gRPC) may answer while the body still streams,
      // and a client may wait for that answer before sending more (bidirectional streams): such
      // a body goes on as it comes, never held back to be kept for a retry (it can still go
      // again until its first byte is read: after a failed connect, or given back unread by the
      // client when the upstream refused its stream). Any other is read first, retries or not (as
      // a declared length's, in proxy.ts): a slow upload holds no target while it comes.
      wanted: req.protocol !== "h2c" && req.protocol !== "h2",
      idleMs: req.timeouts.idle,
      // timeouts.total or a gRPC call's deadline (req.signal carries it) bounds the read too:
      // 408 once it passes.
      deadline: opts.deadline,
    });
  if (opts.streamedBody && pool.ids.length > 0) {
    early = opts.build(pool.ids[0]);
    body = await prepare(early);
  }

  for (let attempt = 0;; attempt++) {
    if (attempt > 0 && pool.retries.backoffMs) {
      const signal = lastSignal ?? ctx.req.signal;
      try {
        await backoff(pool.retries.backoffMs, attempt, { random, signal });
      } catch (err) {
        unread?.cancel(err).catch(() => {}); // a body given back goes nowhere now
        throw err;
      }
    }
    const now = attempt === 0 ? ctx.start : deps.clock.monotonic();
    const pick = chosen ?? choose(pool, reg, { tried, key, random, now, prefer: sticky });
    chosen = undefined;
    if (pick === undefined) {
      // A retry with nowhere left to go reports what went wrong, not "no healthy upstream".
      unread?.cancel(lastErr).catch(() => {});
      if (lastErr) throw lastErr;
      const why = `No available target for route "${route.id}"`;
      const e = new ProxyError("no_healthy_upstream", why, { source: route.id });
      const cfg = route.config;
      // No target at all (`discover` found none yet): its next lookup, at most 2 s away while it
      // has none, may bring one.
      e.retryAfter = retryAfter(pool, reg, now) ??
        (cfg.type === "load_balance" && cfg.discover
          ? Math.ceil(Math.min(cfg.discover.refresh, DISCOVER_RETRY_MS) / 1000)
          : undefined);
      throw e;
    }
    const i = pick.i;
    tried.add(i);
    const id = pool.ids[i];
    const req = early && i === 0 ? early : opts.build(id);
    lastSignal = req.signal;
    early = undefined;
    body ??= await prepare(req);
    req.body = unread ?? body.next();
    unread = undefined;
    ctx.upstream = id;
    if (deps.logger.enabled?.("debug") ?? true) {
      deps.logger.debug("Upstream selected", {
        requestId: ctx.requestId,
        route: route.id,
        upstream: id,
        policy: pool.policy,
        reason: pick.why,
        attempt,
      });
    }
    try {
      const res = await sendOnce(ctx, deps, { pool, reg, id, req });
      const wanted = pool.retries.onStatus?.(res.status) && tried.size < pool.ids.length &&
        replayable(ctx.req, pool.retries) && attempt < pool.retries.attempts && body.replayable;
      if (!wanted) return pool.sticky ? answered(ctx, pool.sticky, { res, i, sticky }) : res;
      // Only to a target not tried yet: with none left (or only this one, perhaps ejected by
      // this very answer), the client gets this answer rather than a repeat or a 503 of ours.
      const next = choose(pool, reg, { tried, key, random, now: deps.clock.monotonic() });
      if (!next || tried.has(next.i) || !reg.tryRetry(route.id, pool.retries.budgetPercent)) {
        return pool.sticky ? answered(ctx, pool.sticky, { res, i, sticky }) : res;
      }
      chosen = next;
      await res.body?.cancel();
      ctx.retries++;
      deps.metrics.retry(route.id, "status");
      deps.logger.info("Retrying upstream request", {
        requestId: ctx.requestId,
        route: route.id,
        upstream: id,
        reason: `status ${res.status}`,
        attempt: attempt + 1,
      });
    } catch (err) {
      const e = toProxyError(err, id);
      const reason = retryReason(e, ctx.req, pool.retries);
      const rest = (e as UnreadBody)[UNREAD_BODY];
      let more = attempt < pool.retries.attempts && (body.replayable || rest !== undefined);
      // Any timeout, a connect timeout ("unsent") included: a blackholed target hangs every
      // connect as a hung one hangs every request.
      const untriedOnly = reason === "reset"
        ? !e.staleConnection
        : reason === "overloaded" || e.kind === "timeout" && !PER_TRY.has(e);
      if (reason && more && untriedOnly) {
        // Only to a target not tried yet: a hung target (a proxy route's only one) would make the
        // client wait a timeout per attempt, three times the configured one by default, and a
        // request that makes its target close the connection (a crash) would be sent to it again
        // and again (nginx never retries a server within a request), and a target whose pool
        // shed it would shed it again at once. A reused connection the upstream closed before
        // answering (its idle timeout) says nothing against the target, and a per-try timeout is
        // what the route asked to retry on: the same target included.
        const next = choose(pool, reg, { tried, key, random, now: deps.clock.monotonic() });
        if (next && !tried.has(next.i)) chosen = next;
        else more = false;
      }
      if (!reason || !more || !reg.tryRetry(route.id, pool.retries.budgetPercent)) {
        // A body given back that goes nowhere: the client is not left uploading.
        rest?.cancel(e).catch(() => {});
        const refused = reason && more ? reg.retryRefused(route.id) : null;
        if (refused !== null) {
          deps.logger.warn("Retry budget exhausted", {
            requestId: ctx.requestId,
            route: route.id,
            // Logged once per budget window: the retries refused since the last line, this one included.
            refused,
          });
        }
        throw e;
      }
      lastErr = e;
      unread = rest;
      ctx.retries++;
      deps.metrics.retry(route.id, reason);
      deps.logger.info("Retrying upstream request", {
        requestId: ctx.requestId,
        route: route.id,
        upstream: id,
        reason,
        error: e.message,
        attempt: attempt + 1,
      });
    }
  }
}

/** Longest pause before a retry (`retries.backoff` doubles up to it). */
const MAX_BACKOFF_MS = 10_000;

/**
 * The pause before retry `n` (1, 2, …): `baseMs` doubled n - 1 times, capped, and of that a share
 * between half and all, by `r` in [0, 1].
 */
export function backoffDelay(baseMs: number, n: number, r: number): number {
  const full = Math.min(MAX_BACKOFF_MS, baseMs * 2 ** Math.min(n - 1, 20));
  return full / 2 + r * full / 2;
}

/**
 * Waits backoffDelay; ends early with the client's departure or the deadline (its reason thrown).
 */
function backoff(
  baseMs: number,
  n: number,
  o: { random: () => number; signal: AbortSignal },
): Promise<void> {
  const ms = backoffDelay(baseMs, n, o.random());
  const gone = () =>
    o.signal.reason instanceof ProxyError
      ? o.signal.reason
      : new ProxyError("client_gone", "The client went away during a retry's pause");
  if (o.signal.aborted) return Promise.reject(gone());
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(gone());
    };
    const timer = setTimeout(() => {
      o.signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    o.signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** One attempt: in-flight accounting, per-try timeout, latency and passive-health outcome. */
async function sendOnce(
  ctx: RequestContext,
  deps: PipelineDeps,
  a: { pool: RoutePool; reg: UpstreamRegistry; id: string; req: UpstreamRequest },
): Promise<Response> {
  const { pool, reg, id, req } = a;
  const state = reg.get(id);
  const perTry = pool.retries.perTryMs;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  /** The attempt has its response head or failed: a per-try timer must not start any more. */
  let settled = false;
  let unlink = () => {};
  let arm = () => {};
  if (perTry) {
    const ac = new AbortController();
    // May carry timeouts.total; a per-try timeout links the client's signal at once.
    const client = req.signal ?? req.clientSignal?.() ?? ctx.req.signal;
    const onAbort = () => ac.abort(client.reason);
    client.addEventListener("abort", onAbort, { once: true });
    unlink = () => client.removeEventListener("abort", onAbort);
    arm = () => {
      if (settled) return;
      timer = setTimeout(() => {
        timedOut = true;
        ac.abort(new ProxyError("timeout", "Per-try timeout"));
      }, timerDelay(perTry));
    };
    req.signal = ac.signal;
  }
  // A streamed request body (over the replay cap): until all of it has gone, a timeout may be the
  // client's slow upload rather than the target's fault. The per-try timeout starts once it has
  // (as Envoy's): a slow client's upload took it for the target's and got 504 every time.
  let uploading = false;
  /** When the streamed body had all gone: `max_latency` times the target from there. */
  let uploaded = -Infinity;
  if (req.body instanceof ReadableStream) {
    uploading = true;
    req.body = watchEnd(req.body, () => {
      uploading = false;
      uploaded = deps.clock.monotonic();
      arm();
    });
  } else arm();
  // A wait for a connection in Prox's own pool is not the target's time either (max_latency).
  let connected = -Infinity;
  // Only where max_latency reads it: no closure per request otherwise.
  if (pool.failLatencyMs !== Infinity) {
    req.onConnection = () => void (connected = deps.clock.monotonic());
  }
  state.inFlight++;
  recent.upstreamRequest = req;
  const t0 = deps.clock.monotonic();
  let res: Response;
  try {
    res = await deps.upstream.send(req);
  } catch (err) {
    state.inFlight--;
    unlink();
    const end = deps.clock.monotonic();
    const ms = end - t0;
    ctx.upstreamMs = ms;
    // No status from this attempt (a status retry's earlier answer is not the one that failed).
    ctx.upstreamStatus = null;
    // Still waiting for a connection in Prox's own pool (upstream_pool) when it failed (shed, or
    // its timeout ran out there): the target never saw the request and is not charged for it.
    const queued = err instanceof ProxyError && err.kind === "overloaded";
    const e = timedOut
      ? perTryTimeout(
        new ProxyError(
          "timeout",
          queued
            ? `No connection to upstream "${originName(req.origin)}" within ${perTry} ms`
            : `Upstream "${originName(req.origin)}" sent no response within ${perTry} ms`,
          { source: id, cause: err, sentNothing: queued },
        ),
      )
      : toProxyError(err, id);
    // A client that left first is 499 (as for the request itself): 599 says the target gave no
    // answer.
    const status = e.kind === "client_gone" ? 499 : 599;
    if (!queued) deps.metrics.backendRequest(id, ctx.route!.id, status, ms / 1000);
    else deps.metrics.upstreamShed(id, (err as ProxyError).shed ?? "queue_full");
    // timeouts.total ran out while this target owed the response head: the client sees a 504,
    // and the target is charged as for any timeout (the client reports only the abort).
    const reason = req.signal?.aborted ? req.signal.reason : undefined;
    const overdue = reason instanceof ProxyError && reason.kind === "timeout";
    const slowClient = uploading && (overdue || e.kind === "timeout");
    // Prox's own descriptors or ports ran out: no sign against the target (every target would be
    // ejected while the host is short, and stay so after).
    const spared = queued || slowClient || e.local;
    // A timeout counts as the target's slowest answer (/status shows it, power_of_two avoids
    // it); a fast failure (a refused connection) is no sign of a fast target.
    if ((e.kind === "timeout" || overdue) && !spared) reg.observe(id, ms, end);
    if ((TARGET_FAULTS.has(e.kind) || overdue) && !spared && pool.passive.enabled) {
      const why = overdue ? reason.message : e.message;
      reg.outcome(id, false, {
        pool: pool.ids,
        backups: pool.backups,
        checks: pool.checks,
        policy: pool.passive,
        reason: why,
        at: end,
      });
    }
    throw e;
  } finally {
    settled = true;
    clearTimeout(timer);
  }
  const end = deps.clock.monotonic();
  const ms = end - t0;
  ctx.upstreamStatus = res.status;
  ctx.upstreamMs = ms;
  reg.observe(id, ms, end);
  deps.metrics.backendRequest(id, ctx.route!.id, res.status, ms / 1000);
  const badStatus = pool.passive.enabled && (pool.failStatus?.(res.status) ?? false);
  // Timed from the end of a streamed upload (a slow client's upload is not the target's time)
  // or of a wait in Prox's own pool; an answer that came before the upload ended is not slow.
  const waited = uploading ? 0 : end - Math.max(t0, uploaded, connected);
  const slow = pool.passive.enabled && waited > pool.failLatencyMs;
  const bad = badStatus || slow;
  // A good answer with no failure streak to end changes nothing: no outcome to record.
  if (pool.passive.enabled && (bad || state.passive.failures > 0)) {
    const reason = badStatus || !slow
      ? `status ${res.status}`
      : `answer after ${
        Math.round(waited)
      } ms (passive_health.max_latency ${pool.failLatencyMs} ms)`;
    reg.outcome(id, !bad, {
      pool: pool.ids,
      backups: pool.backups,
      checks: pool.checks,
      policy: pool.passive,
      reason,
      at: end,
    });
  }
  if (!pool.trackBody || !res.body) {
    state.inFlight--;
    unlink();
    return res;
  }
  return onBodyEnd(res, () => {
    state.inFlight--;
    unlink();
  });
}

/**
 * `body` as it is, calling `ended` once it has all been read. Lazy (locks `body` only when read),
 * so a body no target touched can still go to the next one.
 */
function watchEnd(
  body: ReadableStream<Uint8Array>,
  ended: () => void,
): ReadableStream<Uint8Array> {
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let cancelled = false;
  const watched: ChunkLending = new ReadableStream<Uint8Array>({
    async pull(c) {
      reader ??= body.getReader();
      const r = await reader.read();
      if (!r.done) return c.enqueue(r.value);
      // A read cut short by cancel (the upstream client stops the upload when its exchange
      // fails) ends with `done` too: that is no end of the client's body.
      if (!cancelled) ended();
      c.close();
    },
    cancel: (reason) => {
      cancelled = true;
      return (reader ?? body).cancel(reason);
    },
  }, { highWaterMark: 0 });
  // Chunks pass untouched: the upstream client may take over the lending of the body's own.
  watched[LEND_CHUNKS] = (body as ChunkLending)[LEND_CHUNKS];
  return watched;
}

/** Picks an untried available target; else a tried one; else (try_when_down) any; with why. */
export function choose(
  pool: RoutePool,
  reg: UpstreamRegistry,
  r: {
    tried: Set<number>;
    key?: string;
    random: () => number;
    now: number;
    /** A target to take when it is available and untried (a sticky cookie's), else -1. */
    prefer?: number;
  },
): { i: number; why: string } | undefined {
  const at = r.now;
  // Passive health off on this route: other routes' ejections do not gate it.
  const passive = pool.passive.enabled ? undefined : NO_PASSIVE;
  const load = (i: number) => {
    const s = reg.get(pool.ids[i]);
    return {
      available: reg.available(s.id, at, pool.checks[i], passive),
      inFlight: s.inFlight,
      latencyMs: reg.latency(s.id, at),
    };
  };
  const p = r.prefer ?? -1;
  if (p >= 0 && !r.tried.has(p) && load(p).available) {
    // A backup only while no primary is available, as the selector would have it.
    const primaryUp = pool.targets.some((t, j) => !t.backup && load(j).available);
    if (!pool.targets[p].backup || !primaryUp) return { i: p, why: "sticky cookie" };
  }
  const input: PickInput = { load, exclude: r.tried, key: r.key, random: r.random };
  const window = pool.slowStartMs;
  if (window > 0) input.ramp = (i) => reg.ramp(pool.ids[i], window, at);
  let i = pool.selector.pick(input);
  if (i !== undefined) return { i, why: r.tried.size > 0 ? "untried target" : "policy" };
  if (r.tried.size > 0) {
    // Still a retry: it takes no other request's turn.
    i = pool.selector.pick({ ...input, exclude: undefined, retry: true });
    if (i !== undefined) return { i, why: "only tried targets available" };
  }
  if (!pool.tryWhenDown) return undefined;
  i = pool.selector.pick({
    ...input,
    // Except a drained one: it is out on purpose.
    load: (j) => ({ ...load(j), available: !reg.drained(pool.ids[j]) }),
    exclude: r.tried.size < pool.ids.length ? r.tried : undefined,
    retry: r.tried.size > 0,
  });
  return i === undefined ? undefined : { i, why: "try_when_down: no target available" };
}

/**
 * Seconds until some target of a pool with none available may be back (`Retry-After` of the
 * 503): the soonest end of an ejection or, for a target health checks hold down, the soonest its
 * next probes can bring it back. At least 1; undefined when no target may come back by itself
 * (none at all, or all drained).
 */
export function retryAfter(
  pool: RoutePool,
  reg: UpstreamRegistry,
  now: number,
): number | undefined {
  let soonest = Infinity;
  for (let i = 0; i < pool.ids.length; i++) {
    const ms = reg.backIn(pool.ids[i], {
      at: now,
      check: pool.checks[i],
      passive: pool.passive.enabled,
      ...pool.probes,
    });
    if (ms < soonest) soonest = ms;
  }
  return Number.isFinite(soonest) ? Math.max(1, Math.ceil(soonest / 1000)) : undefined;
}

/** Why this failure may be retried, or null. */
function retryReason(e: ProxyError, req: Request, policy: RetryPolicy): string | null {
  // Shed by Prox's own pool (its queue full): the target never saw it, another may have room.
  if (e.kind === "overloaded" && e.sentNothing) return "overloaded";
  if (e.kind !== "connect" && e.kind !== "upstream_reset" && e.kind !== "timeout") return null;
  // Nothing reached the upstream (refused, connect timeout): safe for every method.
  if (e.sentNothing && e.retryable) return e.kind === "connect" ? "connect" : "unsent";
  if (!replayable(req, policy)) return null;
  return e.kind === "timeout" ? "timeout" : "reset";
}

/** Safe to send again: idempotent, or POST with Idempotency-Key when the route opts in. */
function replayable(req: Request, policy: RetryPolicy): boolean {
  return IDEMPOTENT.has(req.method) ||
    (policy.idempotencyKey && req.method === "POST" && req.headers.has("idempotency-key"));
}

/** The answer, with a sticky cookie when its target is not the one the client's cookie names. */
function answered(
  ctx: RequestContext,
  s: StickyPolicy,
  a: { res: Response; i: number; sticky: number },
): Response {
  if (a.i !== a.sticky) ctx.extraResponseHeaders.push(["set-cookie", stickyCookie(ctx, s, a.i)]);
  return a.res;
}

/** The index of the target the request's sticky cookie names, or -1. */
export function stickyIndex(ctx: RequestContext, s: StickyPolicy): number {
  const v = cookie(ctx.req.headers.get("cookie"), s.cookie);
  return v === undefined ? -1 : s.values.indexOf(v);
}

/** The Set-Cookie value that keeps the client on target `i`. */
function stickyCookie(ctx: RequestContext, s: StickyPolicy, i: number): string {
  const secure = s.secure ?? ctx.scheme === "https";
  return `${s.cookie}=${s.values[i]}${s.attributes}${secure ? "; Secure" : ""}`;
}

/** The consistent_hash key for this request: client IP, a header or a cookie. */
export function hashKey(ctx: RequestContext, pool: RoutePool): string | undefined {
  const on = pool.hashOn;
  if (!on) return undefined;
  switch (on.type) {
    case "ip":
      return ctx.clientIp;
    // An empty value is no key (spread at random, as nginx does), or every client without one
    // would share a target.
    case "header":
      return ctx.req.headers.get(on.name ?? "") || undefined;
    case "cookie":
      return cookie(ctx.req.headers.get("cookie"), on.name ?? "") || undefined;
  }
}

function cookie(header: string | null, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
