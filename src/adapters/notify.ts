// `notify`: what an operator wants to hear about without watching dashboards (a target going
// down or coming back, a reload refused, a certificate swapped) POSTed as JSON to a webhook: a
// chat's incoming webhook (Slack and Mattermost show `text`), an alert router, a script. Events are
// taken from the Metrics calls that already report them (a wrapper, as the status recorder is),
// queued (bounded), sent one at a time with a timeout and one retry; a failed delivery is logged,
// never in the way of traffic.

import type { Config } from "../config/schema.ts";
import type { NOTIFY_EVENTS } from "../config/schema.ts";
import type { Logger, Metrics } from "../ports.ts";
import { timerDelay } from "../config/duration.ts";

/** An event a webhook can be told about (`notify.events`; all by default). */
export type NotifyEvent = typeof NOTIFY_EVENTS[number];

/** Events waiting to be sent at most; more are dropped (and counted in the next one sent). */
export const QUEUE_MAX = 100;
/** The pause before the one retry of a failed delivery. */
const RETRY_MS = 1_000;

/** A message for the webhook. */
interface Note {
  event: NotifyEvent;
  text: string;
  fields: Record<string, unknown>;
  time: number;
}

/** Sends events to the current config's webhook; `settled` resolves once the queue is empty. */
export interface Notifier {
  send(event: NotifyEvent, text: string, fields: Record<string, unknown>): void;
  settled(): Promise<void>;
  close(): void;
}

/** A notifier following `config()` (reloads may add, change or remove `notify`). */
export function createNotifier(o: {
  config: () => Config["notify"];
  logger: Logger;
  now?: () => number;
  /** The instance's name in each message (the host name; tests pass their own). */
  instance?: string;
}): Notifier {
  const now = o.now ?? Date.now;
  const instance = o.instance ?? hostname();
  const queue: Note[] = [];
  let dropped = 0;
  let running: Promise<void> | null = null;
  let closed = false;
  const failures = { until: 0, suppressed: 0 };
  /** Aborted by close(): a delivery under way (or its retry's pause) ends with the process. */
  const stop = new AbortController();

  const deliver = async (n: Note, extraDropped: number) => {
    const c = o.config();
    if (!c) return;
    const body = JSON.stringify({
      event: n.event,
      text: `prox ${instance}: ${n.text}`,
      time: new Date(n.time).toISOString(),
      instance,
      ...n.fields,
      ...(extraDropped > 0 ? { droppedBefore: extraDropped } : {}),
    });
    for (let attempt = 0;; attempt++) {
      try {
        const res = await fetch(c.webhook, {
          method: "POST",
          headers: { "content-type": "application/json", ...c.headers },
          body,
          redirect: "manual",
          signal: AbortSignal.any([stop.signal, AbortSignal.timeout(timerDelay(c.timeout))]),
        });
        await res.body?.cancel();
        if (res.status >= 200 && res.status < 300) return;
        throw new Error(`the webhook answered ${res.status}`);
      } catch (err) {
        if (closed) return;
        if (attempt === 0) {
          await new Promise<void>((r) => {
            const timer = setTimeout(done, RETRY_MS);
            stop.signal.addEventListener("abort", done, { once: true });
            function done() {
              clearTimeout(timer);
              stop.signal.removeEventListener("abort", done);
              r();
            }
          });
          if (closed) return;
          continue;
        }
        // A webhook that is down fails every event: one line per minute, with the count.
        const t = now();
        if (t < failures.until) failures.suppressed++;
        else {
          o.logger.warn("Notification not delivered", {
            event: n.event,
            error: failureText(err),
            ...(failures.suppressed ? { suppressedSinceLast: failures.suppressed } : {}),
          });
          failures.until = t + 60_000;
          failures.suppressed = 0;
        }
        return;
      }
    }
  };

  const drain = async () => {
    while (queue.length > 0 && !closed) {
      const n = queue.shift()!;
      const lost = dropped;
      dropped = 0;
      await deliver(n, lost);
    }
    running = null;
  };

  return {
    send(event, text, fields) {
      const c = o.config();
      if (closed || !c || (c.events && !c.events.includes(event))) return;
      if (queue.length >= QUEUE_MAX) {
        dropped++;
        return;
      }
      queue.push({ event, text, fields, time: now() });
      running ??= drain();
    },
    settled: () => running ?? Promise.resolve(),
    close() {
      closed = true;
      queue.length = 0;
      stop.abort();
    },
  };
}

/**
 * Why a delivery failed. fetch says only "fetch failed", with the reason in its cause, which
 * starts "error sending request for url (…)": the webhook's URL, whose path is its credential,
 * is left out.
 */
function failureText(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : "";
  const text = cause || (err instanceof Error ? err.message : String(err));
  return text.replace(/^error sending request for url \(.*?\): /, "");
}

/** Targets whose health a notifier follows at most (a config's targets are far fewer). */
const MAX_FOLLOWED = 10_000;

const SAME = Symbol("same");

/**
 * Keeps `healthy` as `backend`'s last reported health (at most MAX_FOLLOWED targets): what it was
 * before (undefined: its first report), or SAME when it did not change or there is no room.
 */
function recordHealth(
  health: Map<string, boolean>,
  backend: string,
  healthy: boolean,
): boolean | undefined | typeof SAME {
  const before = health.get(backend);
  if (before === healthy) return SAME;
  if (before === undefined && health.size >= MAX_FOLLOWED) return SAME;
  health.set(backend, healthy);
  return before;
}

/** Metrics that notify, and take the other workers' views of targets (`workers: N`). */
export interface NotifyingMetrics extends Metrics {
  /**
   * Worker `worker`'s (not this process's) view of `backend` changed: its own passive ejections
   * and health checks. A target is down while any worker holds it down.
   */
  workerHealth(worker: number, backend: string, healthy: boolean, reason?: string): void;
  /** Worker `worker` exited: the targets it held down are no longer held down by it. */
  workerGone(worker: number): void;
}

/**
 * `inner` with the events the notifier sends taken from its calls: a target's health changing
 * (the first report of each is its starting state, not news), a reload's outcome, a certificate
 * that replaced another. With workers, a target is down while this process or any other worker
 * (`workerHealth`) holds it down, and up again once none does: one notification per change.
 */
export function notifyingMetrics(inner: Metrics, n: Notifier): NotifyingMetrics {
  /** Each target's last health as this process reported it (bounded: MAX_FOLLOWED). */
  const health = new Map<string, boolean>();
  /** The other workers holding each target down (bounded by the same targets). */
  const heldBy = new Map<string, Set<number>>();
  /** What was last told of each target: true up, false down (absent: up, and no news). */
  const told = new Map<string, boolean>();
  let certificates: Map<string, number | null> | null = null;
  /** The first report is the start-up's config: no reload. */
  let started = false;
  /** Tells of `backend`'s health when what all views add up to changed. */
  const settle = (backend: string, reason: string | undefined, worker?: number) => {
    const down = health.get(backend) === false || (heldBy.get(backend)?.size ?? 0) > 0;
    const before = told.get(backend) ?? true;
    if (before === !down) return;
    if (!told.has(backend) && told.size >= MAX_FOLLOWED) return;
    told.set(backend, !down);
    const by = worker === undefined ? "" : ` (worker ${worker})`;
    n.send(
      down ? "backend_down" : "backend_up",
      `upstream ${backend} is ${down ? "down" : "up again"}${reason ? ` (${reason})` : ""}${by}`,
      worker === undefined
        ? { backend, reason: reason ?? null }
        : { backend, reason: reason ?? null, worker },
    );
  };
  return {
    ...inner,
    backendHealth(backend, healthy, reason) {
      inner.backendHealth(backend, healthy, reason);
      if (recordHealth(health, backend, healthy) === SAME) return;
      settle(backend, reason); // a first report of up is the starting state: no news
    },
    workerHealth(worker, backend, healthy, reason) {
      let held = heldBy.get(backend);
      if (!healthy) {
        if (!held) {
          if (heldBy.size >= MAX_FOLLOWED) return;
          heldBy.set(backend, held = new Set());
        }
        held.add(worker);
      } else if (held) {
        held.delete(worker);
        if (held.size === 0) heldBy.delete(backend);
      }
      settle(backend, reason, worker);
    },
    workerGone(worker) {
      for (const [backend, held] of heldBy) {
        if (!held.delete(worker)) continue;
        if (held.size === 0) heldBy.delete(backend);
        settle(backend, `worker ${worker} exited`);
      }
    },
    backendsConfigured(backends) {
      inner.backendsConfigured(backends);
      const keep = new Set(backends);
      for (const b of health.keys()) if (!keep.has(b)) health.delete(b);
      for (const b of heldBy.keys()) if (!keep.has(b)) heldBy.delete(b);
      for (const b of told.keys()) if (!keep.has(b)) told.delete(b);
    },
    configReload(result) {
      inner.configReload(result);
      if (!started) return void (started = true);
      n.send(
        result.ok ? "reload" : "reload_failed",
        result.ok
          ? `config version ${result.version} applied`
          : "config reload refused; the previous config keeps serving (see the log for why)",
        { ok: result.ok, version: result.version },
      );
    },
    certificateExpiry(name, notAfterMs, more) {
      inner.certificateExpiry(name, notAfterMs, more);
      // The main certificate and each tls.sni one, by name: one replaced (renewed, or its file
      // swapped) or newly served is news; one no longer served (null) is not.
      const now = new Map([
        [name, notAfterMs],
        ...(more ?? []).map((c) => [c.name, c.notAfterMs] as const),
      ]);
      for (const [cert, until] of certificates === null ? [] : now) {
        if (until === null || certificates!.get(cert) === until) continue;
        n.send(
          "certificate_changed",
          `certificate ${cert} now served, valid until ${new Date(until).toISOString()}`,
          { name: cert, notAfter: new Date(until).toISOString() },
        );
      }
      certificates = now;
    },
  };
}

/**
 * `inner` that also tells `report` when a target's health changes (a worker other than 0 telling
 * worker 0, which notifies). Bounded as notifyingMetrics is.
 */
export function reportingHealth(
  inner: Metrics,
  report: (backend: string, healthy: boolean, reason?: string) => void,
): Metrics {
  const health = new Map<string, boolean>();
  return {
    ...inner,
    backendHealth(backend, healthy, reason) {
      inner.backendHealth(backend, healthy, reason);
      const before = recordHealth(health, backend, healthy);
      if (before === SAME || (before === undefined && healthy)) return; // up at start: no news
      report(backend, healthy, reason);
    },
    backendsConfigured(backends) {
      inner.backendsConfigured(backends);
      const keep = new Set(backends);
      for (const [b, healthy] of health) {
        if (keep.has(b)) continue;
        health.delete(b);
        // Worker 0 may have heard this worker hold it down after its own reload dropped it.
        if (!healthy) report(b, true, "no longer configured");
      }
    },
  };
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "prox";
  }
}
