// Reload bookkeeping for the composition root (server.ts): reloads run one at a time, requests
// made during one share a single next run, and every outcome is counted once (stats, metric,
// callback). What a reload does is server.ts's `doReload`.

import type { Config } from "./config/schema.ts";
import type { Metrics } from "./ports.ts";
import type { ReloadResult, ReloadStats } from "./server_api.ts";

/** Serialized reloads and their record. */
export interface Reloads {
  /** Asks for a reload: starts one, or joins the one queued behind the running one. */
  request(trigger: string): Promise<ReloadResult>;
  /** Settles once the running reload (if any) has ended, whatever its outcome. */
  idle(): Promise<void>;
  /** Records an outcome (called by the reload itself, once). */
  settle(result: ReloadResult): ReloadResult;
  /**
   * Records another worker's outcome (`workers: N`, in worker 0: one that refused what it
   * applied) in the last result, history and counts; not in the metric, which that worker keeps.
   */
  note(result: ReloadResult): ReloadResult;
  last(): ReloadResult | null;
  /** The latest outcomes, newest first, at most RELOAD_HISTORY. */
  history(): ReloadResult[];
  stats(): ReloadStats;
}

/** How many reload outcomes `history()` keeps. */
export const RELOAD_HISTORY = 20;

/** Reloads that run `run`; `startedAt` counts as the first successful load. */
export function createReloads(o: {
  run: (trigger: string) => Promise<ReloadResult>;
  startedAt: number;
  metrics: Pick<Metrics, "configReload">;
  onReload?: (result: ReloadResult) => void;
}): Reloads {
  let last: ReloadResult | null = null;
  const history: ReloadResult[] = [];
  const stats: ReloadStats = {
    success: 0,
    failure: 0,
    lastSuccessAt: o.startedAt,
    lastFailureAt: null,
  };
  const record = (result: ReloadResult) => {
    last = result;
    history.unshift(result);
    if (history.length > RELOAD_HISTORY) history.pop();
    if (result.ok) {
      stats.success++;
      stats.lastSuccessAt = result.at;
    } else {
      stats.failure++;
      stats.lastFailureAt = result.at;
    }
    return result;
  };
  let running: Promise<ReloadResult> | null = null;
  let queued: Promise<ReloadResult> | null = null;
  const start = (trigger: string) => {
    running = o.run(trigger).finally(() => running = null);
    return running;
  };
  return {
    request(trigger) {
      if (queued) return queued;
      if (!running) return start(trigger);
      const next = () => {
        queued = null;
        return start(trigger);
      };
      queued = running.then(next, next);
      return queued;
    },
    async idle() {
      await running?.catch(() => {});
    },
    settle(result) {
      record(result);
      o.metrics.configReload(result);
      o.onReload?.(result);
      return result;
    },
    note: (result) => record(result),
    last: () => last,
    history: () => [...history],
    stats: () => ({ ...stats }),
  };
}

/** Top-level keys that a reload cannot apply: read once at start-up (README "Multi-core", pools). */
const RESTART_ONLY = ["workers", "upstream_pool"] as const;

/** The restart-only keys whose value differs between `prev` and `next` (to be logged). */
export function restartOnlyChanges(prev: Config, next: Config): string[] {
  return RESTART_ONLY.filter((k) => JSON.stringify(prev[k]) !== JSON.stringify(next[k]));
}

/** `next` as a reload applies it: the restart-only keys keep the values `running` started with. */
export function appliedConfig(running: Config, next: Config): Config {
  return { ...next, workers: running.workers, upstream_pool: running.upstream_pool };
}

/** A worker that refused what worker 0 applied, and why. */
export interface Refusal {
  worker: number;
  error: string;
}

/**
 * With `workers: N`, in worker 0: the other workers' answers to its reloads, by round (the config
 * version the reload made), so `POST /config/reload` can say whether every worker applied it.
 */
export interface FollowerRounds {
  refused(round: number, refusal: Refusal): void;
  /** Every other worker answered `round`: the refusals among the answers. */
  answered(round: number): Refusal[];
  /** The refusals of `round` once every other worker answered it; null if not within `ms`. */
  wait(round: number, ms: number): Promise<Refusal[] | null>;
}

/** How many rounds `createFollowerRounds` keeps (older ones are forgotten). */
const ROUNDS_KEPT = 20;

export function createFollowerRounds(): FollowerRounds {
  const rounds = new Map<number, { refusals: Refusal[]; done: PromiseWithResolvers<void> }>();
  const get = (round: number) => {
    let r = rounds.get(round);
    if (!r) {
      rounds.set(round, r = { refusals: [], done: Promise.withResolvers() });
      for (const old of rounds.keys()) if (rounds.size > ROUNDS_KEPT) rounds.delete(old);
    }
    return r;
  };
  return {
    refused: (round, refusal) => void get(round).refusals.push(refusal),
    answered(round) {
      const r = get(round);
      r.done.resolve();
      return [...r.refusals];
    },
    async wait(round, ms) {
      const r = get(round);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms));
      const out = await Promise.race([r.done.promise.then(() => [...r.refusals]), late]);
      clearTimeout(timer);
      return out;
    },
  };
}

/**
 * Runs `steps` to the end, letting the event loop answer requests (timers, I/O) after every
 * `sliceMs` of work: a snapshot build of thousands of routes is a few hundred ms on its own.
 */
export async function runInSlices<T>(steps: Generator<void, T>, sliceMs = 10): Promise<T> {
  let until = performance.now() + sliceMs;
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    if (performance.now() >= until) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      until = performance.now() + sliceMs;
    }
  }
}
