// Active health checks: one probe per configured target and check at start-up, then each on its
// own timer, every interval after its last probe started, each with its own timeout: a slow or
// hung backend delays only its own next probe, never another's.
// Results go to the upstream registry, which applies the thresholds and logs transitions.

import { ProxyError } from "../domain/errors.ts";
import { isUnixTarget, originHost, originName, unixOrigin } from "../domain/upstream_origin.ts";
import type { Snapshot } from "../proxy/snapshot.ts";
import { statusMatcher } from "../domain/health.ts";
import type { ActiveThresholds } from "../domain/health.ts";
import type { UpstreamRegistry } from "../proxy/state.ts";
import type { Logger, UpstreamClient, UpstreamTls } from "../ports.ts";
import { timerDelay } from "../config/duration.ts";
import { createUpstreamClient } from "./upstream_client.ts";
import { healthCheckKey, probeFields } from "../proxy/pool.ts";
import { proxyHeader } from "../domain/proxy_protocol.ts";
import { GRPC_HEALTH_PATH, grpcHealthRequest, grpcHealthVerdict } from "../domain/grpc_health.ts";
import { BODY_BYTES } from "../ports.ts";
import type { CountedResponse } from "../ports.ts";

/** One target to probe and how. */
export interface ProbeJob {
  /** Registry id: the target URL as configured. */
  id: string;
  /** Which of the target's checks this is (healthCheckKey): routes with the same one share it. */
  check: string;
  /** The target's origin (`unix:` for a socket) and the probe's request target (path, query). */
  origin: URL;
  target: string;
  method: "GET" | "HEAD";
  expect: (status: number) => boolean;
  bodyMatch?: RegExp;
  timeoutMs: number;
  thresholds: ActiveThresholds;
  /** The route's `tls` (ca_cert, insecure_skip_verify, server_name), as requests use it. */
  tls?: UpstreamTls;
  /** The request's Host and User-Agent, then `health_check.headers`. */
  headers: [string, string][];
  /** The route's `proxy_protocol`: a probe is Prox's own connection (v1 UNKNOWN, v2 LOCAL). */
  proxyHeader?: Uint8Array;
  /** The route's `upstream_protocol`: probes speak to the target as requests do. */
  protocol?: "http1" | "h2c" | "h2";
  /** `health_check.grpc_service`: a gRPC health check of this service instead of an HTTP one. */
  grpcService?: string;
}

/** Most probes in flight at once (each has its own timeout); more wait for a turn in order. */
export const PROBE_CONCURRENCY = 64;

/** Most response-body bytes read for `body_match`. */
const BODY_MATCH_CAP = 64 * 1024;

/**
 * The probe jobs of a snapshot: every proxy and load_balance target whose route has health checks
 * enabled, once per target and distinct check (routes checking a target alike share one probe).
 * Path precedence: `backend_health_paths[target]`, then the route's `health_check.path`, then the
 * global path.
 */
export function healthJobs(snapshot: Snapshot): ProbeJob[] {
  const config = snapshot.config;
  const g = config.health_check;
  const jobs = new Map<string, ProbeJob>();
  const compiled = new Map(snapshot.router.entries.map((e) => [e.value.id, e.value]));
  for (const [key, route] of Object.entries(config.routes)) {
    if (route.type !== "proxy" && route.type !== "load_balance") continue;
    const r = route.health_check;
    const ids = route.type === "proxy"
      ? [route.target]
      : route.targets.map((t) => typeof t === "string" ? t : t.url);
    const body = r?.body_match ?? g.body_match;
    for (const id of ids) {
      const check = healthCheckKey(config, { route, target: id });
      if (check === null || jobs.has(jobKey(id, check))) continue;
      const path = config.backend_health_paths[id] ?? r?.path ?? g.path;
      const { origin, target } = probeTarget(id, path);
      const [host, extra] = probeFields(config, route);
      jobs.set(jobKey(id, check), {
        id,
        check,
        origin,
        target,
        headers: [
          ["host", host ?? compiled.get(key)?.upstreamHost ?? originHost(origin)],
          ["user-agent", "prox-health-check"],
          ...extra,
        ],
        method: r?.method ?? g.method,
        expect: statusMatcher(r?.expected_status ?? g.expected_status),
        bodyMatch: body === undefined ? undefined : toRegExp(body),
        timeoutMs: g.timeout_secs * 1000,
        // 0 counts as 1, as the Rust Prox's `>=` comparison made it
        thresholds: {
          healthy: Math.max(1, g.healthy_threshold),
          unhealthy: Math.max(1, g.unhealthy_threshold),
        },
        tls: compiled.get(key)?.upstreamTls,
        proxyHeader: route.proxy_protocol ? proxyHeader(route.proxy_protocol, null) : undefined,
        protocol: route.upstream_protocol,
        grpcService: r?.grpc_service,
      });
    }
  }
  return [...jobs.values()];
}

/** A probe job's key: its target and check. */
export function jobKey(id: string, check: string): string {
  return `${id} ${check}`;
}

/** The target's origin and path (as requests use them: no query or fragment) + the health path. */
function probeTarget(id: string, path: string): { origin: URL; target: string } {
  const slash = path.startsWith("/") ? path : `/${path}`;
  if (isUnixTarget(id)) {
    const u = new URL(`http://h${slash}`);
    return { origin: unixOrigin(id), target: u.pathname + u.search };
  }
  const t = new URL(id);
  const base = t.pathname.replace(/\/+$/, "");
  const u = new URL(`${t.protocol}//${t.host}${base}${slash}`);
  return { origin: new URL(u.origin), target: u.pathname + u.search };
}

function toRegExp(s: string): RegExp {
  try {
    return new RegExp(s);
  } catch {
    return new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  }
}

/** A running prober. */
export interface HealthChecker {
  /** Settles when the start-up probe of every check has finished. */
  readonly firstRound: Promise<void>;
  /** Applies a reloaded snapshot: new targets are probed at once, removed ones stop. */
  update(snapshot: Snapshot): void;
  /** Stops probing and waits for probes in flight. */
  close(): Promise<void>;
}

/** The probe interval in ms: `interval_secs: 0` (the Rust Prox probed without pause) is 1 s. */
function intervalOf(snapshot: Snapshot): number {
  return Math.max(1, snapshot.config.health_check.interval_secs) * 1000;
}

/** Starts probing the targets of `snapshot` now and every `health_check.interval_secs`. */
export function startHealthChecks(
  snapshot: Snapshot,
  deps: { registry: UpstreamRegistry; logger: Logger; client?: UpstreamClient },
): HealthChecker {
  // The proxy's own HTTP client, so probes connect exactly as requests do (tls.ca_cert,
  // insecure_skip_verify, server_name), with a small pool of its own: probes never wait behind
  // traffic for a connection, and traffic never waits behind probes.
  const client = deps.client ??
    createUpstreamClient({ maxConnectionsPerUpstream: 4, maxIdlePerUpstream: 1 });
  /** Probes in flight and the job (jobKey) each one is for. */
  const inflight = new Map<AbortController, string>();
  /** Jobs with a probe in flight: a check of a target never has two at once. */
  const probing = new Set<string>();
  /** The current jobs by jobKey; a check looks its job up here at probe time. */
  const byKey = (s: Snapshot) => new Map(healthJobs(s).map((j) => [jobKey(j.id, j.check), j]));
  let jobs = byKey(snapshot);
  let intervalMs = intervalOf(snapshot);
  /**
   * Per job, its schedule: when its last probe started and the timer of its next, unset while a
   * probe runs or waits for a turn. One per job (bounded by the config): a reload drops those of
   * jobs it removes, and a job removed and added back gets a new one, the old one's end ignored.
   */
  const slots = new Map<string, Slot>();
  /** Checks running or waiting for a turn (close() waits for them). */
  const running = new Set<Promise<void>>();
  let closed = false;
  /** Probes holding a turn; those past PROBE_CONCURRENCY wait in `waiting`, first come first. */
  let active = 0;
  const waiting: (() => void)[] = [];
  const acquire = (): Promise<void> => {
    if (active < PROBE_CONCURRENCY) {
      active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => waiting.push(resolve));
  };
  const release = () => {
    const next = waiting.shift();
    if (next) next(); // the turn passes on
    else active--;
  };

  const probe = async (key: string): Promise<void> => {
    const job = jobs.get(key);
    // Removed (or no longer checked) by a reload while it waited for a turn; or still being
    // probed (removed and added back by reloads while its last probe ran).
    if (!job || probing.has(key)) return;
    const { id } = job;
    const ac = new AbortController();
    inflight.set(ac, key);
    probing.add(key);
    let timedOut = false;
    const t = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, timerDelay(job.timeoutMs));
    let ok = false;
    let reason: string;
    /** The probe failed on this host (descriptors or ports ran out), not at the target. */
    let local = false;
    /** The expected status that came before the body failed, if one did. */
    let head: number | undefined;
    try {
      if (job.grpcService !== undefined) {
        ({ ok, reason } = await grpcProbe(client, job, ac.signal));
      } else {
        const res = await client.send({
          origin: job.origin,
          target: job.target,
          method: job.method,
          headers: probeHeaders(job.headers),
          body: null,
          timeouts: { connect: job.timeoutMs, responseHeader: job.timeoutMs, idle: job.timeoutMs },
          tls: job.tls,
          signal: ac.signal,
          proxyHeader: job.proxyHeader,
          protocol: job.protocol,
        });
        ok = job.expect(res.status);
        reason = `status ${res.status}`;
        if (ok) head = res.status;
        if (ok && job.bodyMatch) {
          ok = job.bodyMatch.test(await readCapped(res.body, BODY_MATCH_CAP, ac.signal));
          if (!ok) reason = `body does not match ${job.bodyMatch}`;
        } else if (ok) {
          // The body too, to its end or its first 64 KiB, within the timeout (as Envoy's checks
          // wait for the whole answer): a target that sent its head and then hung (a deadlocked
          // handler) or died mid-body was up, taking requests that hung as its probe did.
          await readBytesCapped(res.body, BODY_MATCH_CAP, ac.signal);
        } else await res.body?.cancel();
      }
    } catch (err) {
      // A failure after a good status (the body_match read timed out, or the body was cut) fails
      // the probe too: a target that hangs or dies mid-answer is not healthy.
      ok = false;
      local = err instanceof ProxyError && err.local;
      // The client's errors say what failed (connect, reset, a malformed answer…).
      const why = timedOut
        ? `no answer within ${job.timeoutMs} ms`
        : err instanceof Error
        ? err.message
        : String(err);
      reason = head === undefined ? why : `status ${head}, then its body failed: ${why}`;
    } finally {
      clearTimeout(t);
      inflight.delete(ac);
      probing.delete(key);
    }
    // Cancelled by close() or by a reload that stopped checking this target: a late result must
    // not mark down a target nobody probes any more (nothing would ever bring it back).
    if (closed || (ac.signal.aborted && !timedOut) || jobs.get(key) === undefined) return;
    // A probe Prox's own host could not make (descriptors or ports ran out) says nothing of the
    // target: no verdict, only a debug line.
    if (local) {
      deps.logger.debug("Health probe not made: the host ran short", { upstream: id, reason });
      return;
    }
    deps.registry.probe(id, ok, {
      check: job.check,
      path: job.grpcService !== undefined ? GRPC_HEALTH_PATH : job.target.replace(/\?.*/s, ""),
      thresholds: job.thresholds,
      reason,
    });
    deps.logger.debug("Health probe", {
      upstream: id,
      url: originName(job.origin) + job.target,
      ok,
      reason,
    });
  };

  /** Probes `key` now (once a turn is free), then schedules its next probe. */
  const check = (key: string, slot: Slot): Promise<void> => {
    const done = (async () => {
      await acquire();
      try {
        if (closed || slots.get(key) !== slot) return;
        slot.started = performance.now();
        await probe(key);
      } catch (err) {
        // Not the target's failure (probe() turns those into results): the check goes on.
        deps.logger.error("Health probe failed", { key, reason: String(err) });
      } finally {
        release();
      }
      schedule(key, slot);
    })();
    running.add(done);
    return done.finally(() => running.delete(done));
  };
  // Each job on its own timer, an interval (up to 10% early, never late) after its last probe
  // started: a slow or hung target delays no other's checks, and many Prox instances do not
  // probe a backend in lock-step. A probe that outlasted the interval is followed at once.
  const schedule = (key: string, slot: Slot) => {
    if (closed || slots.get(key) !== slot || slot.timer !== undefined) return;
    const due = intervalMs * (0.9 + 0.1 * Math.random()) - (performance.now() - slot.started);
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      void check(key, slot);
    }, timerDelay(Math.max(0, due)));
  };
  /** Starts the checks of `keys` with a probe now. */
  const begin = (keys: Iterable<string>): Promise<void>[] => {
    const started: Promise<void>[] = [];
    for (const key of keys) {
      const slot: Slot = { started: performance.now(), timer: undefined };
      slots.set(key, slot);
      started.push(check(key, slot));
    }
    return started;
  };
  const stop = (key: string) => {
    const slot = slots.get(key);
    if (slot) clearTimeout(slot.timer);
    slots.delete(key);
  };

  const firstRound = Promise.all(begin(jobs.keys())).then(() => {});
  if (jobs.size > 0) {
    const targets = new Set([...jobs.values()].map((j) => j.id)).size;
    deps.logger.info("Health checks started", {
      targets,
      ...(jobs.size > targets ? { checks: jobs.size } : {}),
      intervalMs,
    });
  }

  return {
    firstRound,
    update(next) {
      const known = jobs;
      jobs = byKey(next);
      // Checks no longer made stop now: their timers, and probes in flight (their results would
      // be dropped anyway).
      for (const key of known.keys()) if (!jobs.has(key)) stop(key);
      for (const [ac, key] of inflight) if (!jobs.has(key)) ac.abort();
      const interval = intervalOf(next);
      if (interval !== intervalMs) {
        intervalMs = interval;
        // Waiting checks count the new interval from their last probe; running ones at their end.
        for (const [key, slot] of slots) {
          if (slot.timer === undefined) continue;
          clearTimeout(slot.timer);
          slot.timer = undefined;
          schedule(key, slot);
        }
      }
      const fresh = [...jobs.keys()].filter((key) => !known.has(key));
      // A new check of a target already checked (a route's path, host or headers changed)
      // starts from the status of the check it replaces, or the target's, until its first
      // result; then the checks no longer made are forgotten.
      const gone = new Map<string, string[]>();
      for (const [key, job] of known) {
        if (!jobs.has(key)) gone.set(job.id, [...(gone.get(job.id) ?? []), job.check]);
      }
      for (const key of fresh) {
        const job = jobs.get(key)!;
        deps.registry.carryCheck(job.id, job.check, gone.get(job.id) ?? []);
      }
      for (const [id, checks] of gone) for (const c of checks) deps.registry.unprobed(id, c);
      begin(fresh);
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const key of [...slots.keys()]) stop(key);
      for (const ac of inflight.keys()) ac.abort();
      // Checks waiting for a turn get one, see `closed` and end.
      for (const next of waiting.splice(0)) {
        active++;
        next();
      }
      await Promise.all(running);
      if (!deps.client) await client.close();
    },
  };
}

/** A job's schedule: when its last probe started, and the timer of its next (unset meanwhile). */
interface Slot {
  started: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** The probe's fields; a later one replaces an earlier one of the same name (User-Agent). */
function probeHeaders(fields: readonly [string, string][]): Headers {
  const h = new Headers();
  for (const [name, value] of fields) h.set(name, value);
  return h;
}

/** A gRPC health check (grpc.health.v1.Health/Check) of `job`'s target. */
async function grpcProbe(
  client: UpstreamClient,
  job: ProbeJob,
  signal: AbortSignal,
): Promise<{ ok: boolean; reason: string }> {
  const headers = probeHeaders(job.headers);
  headers.set("content-type", "application/grpc");
  const body = grpcHealthRequest(job.grpcService!);
  headers.set("content-length", String(body.byteLength));
  const res = await client.send({
    origin: job.origin,
    target: GRPC_HEALTH_PATH,
    method: "POST",
    headers,
    body,
    timeouts: { connect: job.timeoutMs, responseHeader: job.timeoutMs, idle: job.timeoutMs },
    tls: job.tls,
    signal,
    protocol: job.protocol,
  });
  // The whole answer, trailers included (a HealthCheckResponse is a few bytes).
  const bytes = await readBytesCapped(res.body, BODY_MATCH_CAP, signal);
  const trailers = (res as CountedResponse)[BODY_BYTES]?.trailers;
  const field = (name: string) => trailers?.find(([k]) => k === name)?.[1] ?? res.headers.get(name);
  return grpcHealthVerdict({
    status: res.status,
    grpcStatus: field("grpc-status"),
    grpcMessage: field("grpc-message"),
    body: bytes,
  });
}

async function readCapped(
  body: ReadableStream<Uint8Array> | null,
  cap: number,
  signal: AbortSignal,
): Promise<string> {
  return new TextDecoder().decode(await readBytesCapped(body, cap, signal));
}

/**
 * Up to `cap` bytes of `body` (the rest is cancelled). The probe's timeout (`signal`) ends the
 * read too: the client's idle timeout alone let a body trickling a byte now and then hold the
 * probe, and with it every later probe of the target and the checker's close, for hours.
 */
async function readBytesCapped(
  body: ReadableStream<Uint8Array> | null,
  cap: number,
  signal: AbortSignal,
): Promise<Uint8Array> {
  if (!body) return new Uint8Array();
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const stop = () => reader.cancel(signal.reason).catch(() => {});
  if (signal.aborted) stop();
  else signal.addEventListener("abort", stop, { once: true });
  try {
    while (size < cap) {
      const r = await reader.read();
      if (r.done) break;
      chunks.push(r.value);
      size += r.value.byteLength;
    }
  } finally {
    signal.removeEventListener("abort", stop);
    await reader.cancel().catch(() => {});
  }
  // Cut short by the timeout: the caller says so rather than judge a partial body.
  if (signal.aborted) throw new Error("Probe aborted");
  const all = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.byteLength;
  }
  return all.subarray(0, cap);
}
