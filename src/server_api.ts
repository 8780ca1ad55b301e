// The public face of a running Prox (what `startServer` returns and reports), kept apart from
// the composition root that builds it (server.ts).

import type { PurgeInput, PurgeResult } from "./proxy/cache_purge.ts";
import type { ConfigIssue } from "./config/parse.ts";
import type { Snapshot } from "./proxy/snapshot.ts";
import type { UpstreamRegistry } from "./proxy/state.ts";
import type { FileStore, Handler, Logger, Metrics, UpstreamClient } from "./ports.ts";
import type { Listener } from "./adapters/http_serve.ts";
import type { AdminListener } from "./adapters/admin.ts";
import type { H3Listener } from "./adapters/h3/mod.ts";
import type { AcmeController, AcmeTuning } from "./adapters/acme.ts";
import type { OnDemandCertificates } from "./adapters/acme_on_demand.ts";
import type { RateLimitStores } from "./adapters/rate_limit_stores.ts";
import type { WorkerMetrics } from "./adapters/worker_metrics.ts";

/** The outcome of a reload attempt. */
export interface ReloadResult {
  ok: boolean;
  version: number;
  issues: ConfigIssue[];
  at: number;
  /** What asked for it: "file", "SIGHUP", "admin", "api". */
  trigger?: string;
  /** What a successful reload changed, one line each (config/diff.ts); empty: nothing. */
  changes?: string[];
  /** Not tried: the server is shutting down (no config fault; the admin API answers 503). */
  skipped?: true;
  /** `workers: N`, in worker 0's record: the other worker whose outcome this is. */
  worker?: number;
  /**
   * `workers: N`, in worker 0: this reload put back the config served before one another worker
   * refused (`ok` is false: the reload it undid failed; the others apply this one too).
   */
  rollback?: true;
}

/** Reload counters (`prox_config_reload_total{result}`, last-success timestamp). */
export interface ReloadStats {
  success: number;
  failure: number;
  /** Wall-clock ms of the last successful load (the initial one counts). */
  lastSuccessAt: number;
  lastFailureAt: number | null;
}

/** Called at the start of a graceful shutdown; resolve when long-lived streams are closed. */
export type ShutdownHook = (info: { deadline: number; reason: string }) => Promise<void> | void;

/** A running Prox. */
export interface ProxServer {
  /** Main listener's actual port (useful with port 0); follows listen_addr changes. */
  readonly port: number;
  /** The listeners serving now (replaced ones still draining are not included). */
  readonly listeners: readonly Listener[];
  snapshot(): Snapshot;
  /**
   * Re-reads the config as one transaction (read, parse, validate, build, bind changed
   * listeners, swap); on any error the current config keeps serving. Calls are serialized.
   */
  reload(opts?: { trigger?: string }): Promise<ReloadResult>;
  lastReload(): ReloadResult | null;
  /** The latest reload attempts, newest first (at most RELOAD_HISTORY): `GET /config/history`. */
  reloadHistory(): ReloadResult[];
  reloadStats(): ReloadStats;
  /** True while serving HTTPS/HTTP (not before an ACME certificate) and not draining: `/readyz`. */
  ready(): boolean;
  /** True from the first shutdown signal on. */
  draining(): boolean;
  /** Registers a hook run when draining starts (e.g. close WebSockets with 1001). */
  onShutdown(hook: ShutdownHook): void;
  /** Drops response cache entries (the admin `POST /cache/purge`; a worker at its sibling's word). */
  purgeCache(input: PurgeInput): PurgeResult;
  /**
   * Drains a target or puts it back (the admin `POST /upstreams/drain`, `/upstreams/undrain`; a
   * worker at its sibling's word); false when no route has it (with `ahead`, its drain then
   * waits for a route to have it: see UpstreamRegistry.drain).
   */
  drainTarget(target: string, on: boolean, o?: { ahead?: boolean }): boolean;
  /**
   * With `workers: N`, in worker 0 (which notifies): another worker's view of a target changed
   * (`backend` null: that worker exited, and holds nothing down any more). Elsewhere a no-op.
   */
  workerHealth(worker: number, backend: string | null, healthy: boolean, reason?: string): void;
  /**
   * With `workers: N`, in worker 0: worker `worker` refused a reload worker 0 applied and serves
   * its previous config; kept as the last reload outcome (`/status`, `/config/history`).
   */
  workerReloadFailed(worker: number, o: { trigger: string; error: string; round?: number }): void;
  /**
   * With `workers: N`, in worker 0: every other worker answered the reload that made its config
   * version `round` (the admin API's `POST /config/reload` waits for it).
   */
  workersReloaded(round: number): void;
  /**
   * With `workers: N`, in the workers other than 0: the Alt-Svc worker 0 advertises (null: its
   * HTTP/3 is down), which alone binds the UDP port. They advertise it, never one of their own.
   */
  workerAltSvc(altSvc: string | null): void;
  /**
   * Graceful and idempotent: readiness false, stop accepting (HTTP/2 GOAWAY), let in-flight
   * requests finish up to shutdown_timeout, then close what remains.
   */
  shutdown(opts?: { reason?: string }): Promise<void>;
  readonly handler: Handler;
  readonly logger: Logger;
  /** The admin listener, when `admin` is configured. */
  readonly admin: AdminListener | null;
  /** Upstream health, ejections, in-flight counts and latency (kept across reloads). */
  readonly upstreams: UpstreamRegistry;
  /** The HTTP/3 listener (UDP, same port as the TLS listener), when it is up. */
  readonly h3: H3Listener | null;
  /** The bound address of a `tcp` entry's listener (its real port when configured with 0). */
  tcpAddr(name: string): { hostname: string; port: number } | undefined;
  /** The ACME certificate keeper, when `tls.acme` is enabled. */
  readonly acme: AcmeController | null;
  /** The on-demand certificates, when `tls.acme.on_demand` is set. */
  readonly onDemand: OnDemandCertificates | null;
}

/** Thrown when the initial config cannot be loaded; carries the located issues. */
export class ConfigError extends Error {
  constructor(readonly issues: ConfigIssue[]) {
    super("Configuration is invalid");
    this.name = "ConfigError";
  }
}

/** What `startServer` can be given besides the config (tests and embedders inject ports). */
export interface StartOptions {
  logger?: Logger;
  metrics?: Metrics;
  upstream?: UpstreamClient;
  files?: FileStore;
  /** Rate-limit counters to reuse (e.g. across restarts in tests); created when absent. */
  rateLimits?: RateLimitStores;
  /** Shown in /status and prox_build_info. */
  version?: string;
  /** Watch the config file and TLS files and reload on change (default: true for files). */
  watch?: boolean;
  /** Started with `--takeover`: the admin port may be shared with the Prox being replaced. */
  takeover?: boolean;
  /** Debounce for the file watch in ms (default 100). */
  watchDebounceMs?: number;
  /** Called after every reload attempt. */
  onReload?: (result: ReloadResult) => void;
  /** Called after a purge through the admin API (workers pass it on to their siblings). */
  onPurge?: (input: PurgeInput) => void;
  /**
   * Called after the admin API drained or undrained a target, and with `on` false when a drained
   * target left the config (with workers: tell the others).
   */
  onDrain?: (target: string, on: boolean) => void;
  /**
   * With `workers: N`, in the workers other than 0: called when this worker's view of a target's
   * health changes (its own passive ejections and health checks), for worker 0 to notify.
   */
  onHealth?: (backend: string, healthy: boolean, reason?: string) => void;
  /**
   * With `workers: N`, in worker 0: called when its HTTP/3 comes up or goes down, with the
   * Alt-Svc it advertises then (null: none), for the other workers to advertise the same.
   */
  onAltSvc?: (altSvc: string | null) => void;
  /** ACME timing (tests: a shifted clock, short check intervals). */
  acme?: AcmeTuning;
  /**
   * One of `workers: N` processes (src/adapters/workers.ts): only the `exclusive` one runs
   * the admin listener and HTTP/3; `debugHeader` adds `x-prox-worker: INDEX` to responses.
   */
  worker?: {
    index: number;
    exclusive: boolean;
    debugHeader?: boolean;
    /** Shares this worker's metrics; worker 0's `/metrics` shows every worker's. */
    metrics?: WorkerMetrics;
    /**
     * Where the workers keep the config text they applied (start and reloads); a worker
     * restarted after a crash starts from it rather than from the file.
     */
    configCopy?: string;
    /**
     * Worker 0 of N ≥ 2: the other workers apply its reloads, and `POST /config/reload` answers
     * once they did (a refusal of theirs fails it).
     */
    followers?: boolean;
  };
}
