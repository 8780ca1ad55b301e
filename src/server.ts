// Composition root: reads the config, builds the snapshot and the adapters, starts listeners,
// owns the current snapshot, and implements reload() and shutdown(). The types it returns are in
// server_api.ts.

import type { ConfigIssue } from "./config/parse.ts";
import type { Config } from "./config/schema.ts";
import { buildSnapshot } from "./proxy/snapshot.ts";
import type { Snapshot } from "./proxy/snapshot.ts";
import { createHandler } from "./proxy/pipeline.ts";
import { createWebSocketProxy } from "./adapters/websocket_deno.ts";
import {
  createListenerSet,
  listenerPlans,
  readTlsFiles,
  tcpMigrateReq,
} from "./adapters/listener_set.ts";
import { requestSeen, startMemoryReducer } from "./adapters/gc_hint.ts";
import type { ListenerPlan } from "./adapters/listener_set.ts";
import { configFiles, watchFiles } from "./adapters/config_watch.ts";
import type { FileWatch } from "./adapters/config_watch.ts";
import { formatIssue } from "./config/load.ts";
import { createUpstreamClient } from "./adapters/upstream_client.ts";
import { accessLogOf, createBufferedSink, createJsonLogger } from "./adapters/log_json.ts";
import { createPromMetrics, withMetricsEndpoint } from "./adapters/metrics_prom.ts";
import type { AdminCallbacks } from "./adapters/admin.ts";
import { followAdmin } from "./adapters/admin_follow.ts";
import {
  buildStatus,
  certificateNotAfter,
  createStatusRecorder,
  listenerViews,
} from "./adapters/admin_status.ts";
import { createDenoFileStore } from "./adapters/files_deno.ts";
import { createRateLimitStores, keysPerRoute, limiterIds } from "./adapters/rate_limit_stores.ts";
import type { AccessRecord, Clock, FileStore } from "./ports.ts";
import { createUpstreamRegistry } from "./proxy/state.ts";
import { configuredTargets } from "./proxy/pool.ts";
import { startHealthChecks } from "./adapters/health_check.ts";
import { followH3 } from "./adapters/h3_follow.ts";
import { ALT_SVC_MAX_AGE, altSvcValue } from "./adapters/h3/mod.ts";
import { startAcme } from "./adapters/acme.ts";
import type { AcmeConfig, AcmeController } from "./adapters/acme.ts";
import { denoEnv, loadSource, readReferencedFiles } from "./adapters/config_source.ts";
import type { ConfigSource } from "./adapters/config_source.ts";
import { redirectHandler } from "./adapters/https_redirect.ts";
import { withWorkerHeader } from "./adapters/worker_link.ts";
import { ConfigError } from "./server_api.ts";
import type {
  ProxServer,
  ReloadResult,
  ReloadStats,
  ShutdownHook,
  StartOptions,
} from "./server_api.ts";

export { loadSource };
export type { ConfigSource };
export { ConfigError };
export type { ProxServer, ReloadResult, ReloadStats, ShutdownHook, StartOptions };

const realClock: Clock = { now: () => Date.now(), monotonic: () => performance.now() };

/** Starts Prox from a config source. Throws ConfigError when the config is invalid. */
export async function startServer(
  source: ConfigSource,
  opts: StartOptions = {},
): Promise<ProxServer> {
  const first = await loadSource(source);
  if (!first.config) throw new ConfigError(first.issues);
  let config = first.config;
  const logger = opts.logger ?? createJsonLogger({ level: config.log.level });
  for (const w of first.issues) logger.warn("Config warning", { issue: w.message, path: w.path });
  const startedAt = Date.now();
  const prom = opts.metrics ? null : createPromMetrics({ version: opts.version });
  const recorder = createStatusRecorder(opts.metrics ?? prom!, { now: Date.now });
  const metrics = recorder.metrics;
  // An injected logger (tests, embedding) also receives the access records, as "access" lines.
  const accessSink = createBufferedSink();
  const accessLogFor = (c: Config) =>
    accessLogOf(c.log.access_log, { logger: opts.logger, sink: accessSink.sink });
  let accessLog = accessLogFor(config);
  // Pool limits are read once at start-up (a reload keeps the running pools).
  const pool = config.upstream_pool;
  const upstream = opts.upstream ?? createUpstreamClient({
    maxConnectionsPerUpstream: pool.max_connections_per_upstream,
    maxIdlePerUpstream: pool.max_idle_per_upstream,
    idleTimeout: pool.idle_timeout,
    queueLimit: pool.queue_limit,
    queueTimeout: pool.queue_timeout,
  });
  const files: FileStore = opts.files ?? createDenoFileStore();

  let version = 1;
  let current = buildSnapshot(config, {
    version,
    files: await readReferencedFiles(config),
    env: denoEnv.env,
  });
  // Owned across reloads: limits whose id (route + shape) did not change keep their counters.
  const rateLimits = opts.rateLimits ?? createRateLimitStores();
  await rateLimits.configure(
    config.rate_limit_store,
    limiterIds(current.router.entries.map((e) => e.value)),
  );
  let draining = false;
  let last: ReloadResult | null = null;
  const upstreams = createUpstreamRegistry({ clock: realClock, logger, metrics });
  const stats: ReloadStats = {
    success: 0,
    failure: 0,
    lastSuccessAt: startedAt,
    lastFailureAt: null,
  };
  const shutdownHooks: ShutdownHook[] = [];

  const websockets = createWebSocketProxy({ logger, metrics });
  const handler = createHandler({
    snapshot: () => current,
    upstream,
    files,
    clock: realClock,
    logger,
    metrics,
    rateLimits,
    // No 503 while draining: Deno.serve's graceful shutdown stops accepting and closes idle
    // keep-alive connections, so a request that still arrives is served normally.
    access: (rec: AccessRecord) => accessLog?.(rec),
    accessEnabled: () => accessLog !== undefined,
    upstreams,
    websocket: websockets,
  });
  const targetsOf = (
    snap: Snapshot,
  ) => [...new Set(snap.router.entries.flatMap((e) => e.value.targets))];
  metrics.backendsConfigured(targetsOf(current));
  metrics.configReload({ ok: true, version, at: startedAt });
  if (prom) opts.worker?.metrics?.attach(prom.registry);
  const sharedMetrics = opts.worker?.metrics;
  const metricsText = () =>
    prom ? (sharedMetrics ? sharedMetrics.text() : prom.text()) : Promise.resolve("");
  // `/metrics` on the traffic port only when configured (the seed always exposed it there).
  const baseHandler = withMetricsEndpoint(handler, {
    config: () => config.metrics,
    text: metricsText,
    contentType: prom?.contentType,
    onRequest: requestSeen,
  });
  const serveHandler = opts.worker?.debugHeader
    ? withWorkerHeader(baseHandler, opts.worker.index)
    : baseHandler;
  // Only one process can own the UDP port and the admin port: with workers, worker 0 does.
  const exclusive = opts.worker?.exclusive ?? true;

  let stopReducer = () => {};
  let redirectStatus = config.http_redirect?.status_code ?? 308;
  const set = createListenerSet({ logger, drainMs: () => config.shutdown_timeout });
  // ACME: a stored certificate is there at once; without one HTTPS starts when it is issued.
  let acme: AcmeController | null = null;
  let started = false;
  const acmeOf = (c: Config): AcmeConfig | null => c.tls?.acme?.enabled ? c.tls.acme : null;
  // New certificates are applied one after another, outside the ACME loop and after any reload.
  let applying: Promise<void> = Promise.resolve();
  const startAcmeFor = (a: AcmeConfig, c: Config) => {
    if (!a.http_listen_addr && !c.http_redirect) {
      logger.warn(
        "ACME HTTP-01 needs a plain-HTTP listener: set tls.acme.http_listen_addr or http_redirect",
      );
    }
    return startAcme(a, {
      ...opts.acme,
      logger,
      onCertificate: () => {
        applying = applying.then(applyCertificate).catch((err) =>
          logger.error("Cannot serve the new ACME certificate", { error: String(err) })
        );
      },
    });
  };
  if (acmeOf(config)) acme = await startAcmeFor(acmeOf(config)!, config);
  const redirect = redirectHandler({
    acme: () => acme,
    status: () => redirectStatus,
    httpsPort: () => set.get("main")?.port ?? 443,
  });
  /** The listeners a config asks for, with their TLS material read from disk. */
  const plansFor = async (c: Config): Promise<ListenerPlan[]> =>
    listenerPlans(c, {
      tls: acmeOf(c) ? acme?.current() ?? null : await readTlsFiles(c),
      serve: serveHandler,
      redirect,
      metrics,
    });
  const mainPlan = (plans: ListenerPlan[]): { cert?: string; key?: string } =>
    plans.find((p) => p.id === "main") ?? {};
  const recordCertificate = (plans: ListenerPlan[], c: Config) => {
    const cert = mainPlan(plans).cert;
    const notAfter = cert ? certificateNotAfter(cert) : null;
    const name = c.tls?.cert_path ?? (acmeOf(c) ? `acme:${acmeOf(c)!.domains[0]}` : "main");
    if (notAfter !== null) metrics.certificateExpiry(name, notAfter);
  };
  /** Serves a new ACME certificate: a new listener on the same port, the old one drains. */
  async function applyCertificate(): Promise<void> {
    if (!started || draining) return;
    await running?.catch(() => {});
    const plans = await plansFor(config);
    const staged = await set.stage(plans);
    staged.commit();
    recordCertificate(plans, config);
    await syncH3(config, mainPlan(plans));
    if (staged.bound) logger.info("TLS certificate applied", { listenersChanged: staged.bound });
    if (staged.bound && !migrateHinted && tcpMigrateReq() === "0") {
      migrateHinted = true;
      logger.warn(
        "Connections queued on a replaced listener are reset by Linux; set sysctl net.ipv4.tcp_migrate_req=1 to hand them to the new one",
      );
    }
  }
  let migrateHinted = false;
  const health = startHealthChecks(current, { registry: upstreams, logger });
  // HTTP/3 beside the TLS listener; Alt-Svc is advertised only while it is actually up.
  const h3 = followH3({
    handler: serveHandler,
    logger,
    metrics,
    current: (c) => !draining && config === c,
    onChange: () => {
      const altSvc = h3.altSvc();
      if (current.altSvc !== altSvc) current = Object.freeze({ ...current, altSvc });
    },
  });
  const syncH3 = async (c: Config, tls: { cert?: string; key?: string }) => {
    if (exclusive) return await h3.sync(set.get("main"), c, tls);
    // Other workers advertise the HTTP/3 that worker 0 serves on the same port.
    const port = set.get("main")?.port;
    const altSvc = c.protocols.http3_enabled && tls.cert && port && !draining
      ? altSvcValue(port, ALT_SVC_MAX_AGE)
      : null;
    if (current.altSvc !== altSvc) current = Object.freeze({ ...current, altSvc });
  };
  const firstPlans = await plansFor(config);
  (await set.stage(firstPlans)).commit();
  recordCertificate(firstPlans, config);
  await syncH3(config, mainPlan(firstPlans));
  started = true;
  stopReducer = startMemoryReducer({
    idleMs: () => config.memory.reduce_after_idle,
    aboveBytes: () => config.memory.reduce_above,
    onReduce: (ms) => logger.debug("Memory-reducing GC after a burst", { ms: Math.round(ms) }),
    onSkip: (rss) =>
      logger.debug("Memory kept after a burst: RSS below memory.reduce_above", {
        rssMiB: Math.round(rss / 1048576),
      }),
  });
  logger.info("Prox listening", {
    addr: `${set.listeners[0].hostname}:${set.listeners[0].port}`,
    tls: set.listeners[0].tls,
    routes: Object.keys(config.routes).length,
    worker: opts.worker?.index,
  });
  const limiterKeys = () => keysPerRoute(rateLimits, current.router.entries.map((e) => e.value));
  // The admin listener follows reloads (only the exclusive worker runs one).
  const admin = followAdmin({
    logger,
    token: () => config.admin?.token,
    callbacks: () => adminApi,
  });
  const adminApi: AdminCallbacks = {
    ready: () => !draining && set.get("main") !== undefined,
    reload: () => server.reload({ trigger: "admin" }),
    effectiveConfig: () => config,
    metricsText,
    metricsContentType: prom?.contentType,
    status: () =>
      buildStatus(current, {
        recorder,
        now: Date.now(),
        startedAt,
        version: opts.version ?? "dev",
        ready: !draining && set.get("main") !== undefined,
        draining,
        lastReload: last,
        listeners: listenerViews(set.named(), { h3: h3.listener, admin: admin.listener }),
        upstreamViews: upstreams.list(),
        limiterKeys: limiterKeys(),
      }),
  };
  admin.sync(exclusive ? config.admin?.listen_addr ?? null : null);
  prom?.observe({ upstreams: () => upstreams.list(), limiterKeys });

  let watch: FileWatch | undefined;
  const watchedFiles = (c: Config) => configFiles("path" in source ? source.path : null, c);
  if (opts.watch ?? "path" in source) {
    watch = watchFiles(watchedFiles(config), {
      logger,
      debounceMs: opts.watchDebounceMs,
      onChange: async (changed) => {
        logger.info("Config files changed", { files: changed });
        await reload("file");
      },
    });
  }

  const settle = (result: ReloadResult): ReloadResult => {
    last = result;
    if (result.ok) {
      stats.success++;
      stats.lastSuccessAt = result.at;
    } else {
      stats.failure++;
      stats.lastFailureAt = result.at;
    }
    metrics.configReload(result);
    opts.onReload?.(result);
    return result;
  };

  async function doReload(trigger: string): Promise<ReloadResult> {
    const at = Date.now();
    const file = "path" in source ? source.path : source.name;
    const failed = (message: string): ReloadResult => {
      logger.error("Reload failed; the current config keeps serving", { trigger, error: message });
      const issues: ConfigIssue[] = [{
        severity: "error",
        file,
        line: 1,
        col: 1,
        path: "",
        message,
      }];
      return settle({ ok: false, version, issues, at, trigger });
    };
    if (draining) return failed("Cannot reload: shutting down");
    try {
      const next = await loadSource(source);
      if (!next.config) {
        logger.error("Reload rejected; the current config keeps serving", {
          trigger,
          issues: next.issues.filter((i) => i.severity === "error").map((i) => formatIssue(i)),
        });
        return settle({ ok: false, version, issues: next.issues, at, trigger });
      }
      const snap = buildSnapshot(next.config, {
        version: version + 1,
        files: await readReferencedFiles(next.config),
        altSvc: current.altSvc,
        env: denoEnv.env,
      });
      // Bind what changed before anything is swapped: a bind failure leaves all as it was.
      const nextAcme = acmeOf(next.config);
      if (acme && nextAcme) await acme.configure(nextAcme);
      else if (nextAcme) acme = await startAcmeFor(nextAcme, next.config);
      const plans = await plansFor(next.config);
      const staged = await set.stage(plans);
      // The swap: from here on nothing may fail the reload (the new config is serving).
      version++;
      const prev = config;
      config = next.config;
      current = snap;
      staged.commit();
      // WebSockets on routes the reload left unchanged stay connected; the others get 1001.
      websockets.retain(
        (id) => JSON.stringify(prev.routes[id]) === JSON.stringify(config.routes[id]),
        1001,
        "Route changed by a config reload",
      );
      upstreams.retain(configuredTargets(config), Object.keys(config.routes));
      health.update(current);
      redirectStatus = config.http_redirect?.status_code ?? 308;
      recordCertificate(plans, config);
      if (acme && !nextAcme) {
        void acme.close();
        acme = null;
      }
      accessLog = accessLogFor(config);
      try {
        admin.sync(exclusive ? config.admin?.listen_addr ?? null : null);
      } catch (err) {
        logger.error("Admin listener did not follow the reload", { error: String(err) });
      }
      // Side systems that may fail (UDP bind, Redis) log their own errors; the reload stands.
      await syncH3(config, mainPlan(plans)).catch((err) =>
        logger.error("HTTP/3 did not follow the reload", { error: String(err) })
      );
      await rateLimits.configure(
        config.rate_limit_store,
        limiterIds(snap.router.entries.map((e) => e.value)),
      ).catch((err) =>
        logger.error("Rate limit store did not follow the reload", { error: String(err) })
      );
      metrics.backendsConfigured(targetsOf(snap));
      await metrics.routesConfigured(Object.keys(config.routes)).catch((err) =>
        logger.warn("Cannot drop metrics of removed routes", { error: String(err) })
      );
      watch?.setFiles(watchedFiles(config));
      for (const w of next.issues) logger.warn("Config warning", { issue: formatIssue(w) });
      logger.info("Config reloaded", { version, trigger, listenersChanged: staged.bound });
      return settle({ ok: true, version, issues: next.issues, at, trigger });
    } catch (err) {
      return failed(`Cannot reload: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  // Reloads run one at a time; requests arriving during one coalesce into a single next run.
  let running: Promise<ReloadResult> | null = null;
  let queued: Promise<ReloadResult> | null = null;
  function reload(trigger: string): Promise<ReloadResult> {
    if (queued) return queued;
    if (!running) {
      running = doReload(trigger).finally(() => running = null);
      return running;
    }
    queued = running.then(() => {
      queued = null;
      running = doReload(trigger).finally(() => running = null);
      return running;
    });
    return queued;
  }

  let stopping: Promise<void> | null = null;
  async function stop(reason: string): Promise<void> {
    draining = true;
    websockets.closeAll(1001, "Server shutting down");
    if (current.altSvc) current = Object.freeze({ ...current, altSvc: null });
    watch?.close();
    await health.close();
    await acme?.close();
    await applying;
    const grace = config.shutdown_timeout;
    const deadline = Date.now() + grace;
    logger.info("Draining", { reason, graceMs: grace });
    await running?.catch(() => {});
    // Long-lived streams (WebSockets) are told to go away while requests drain.
    const hooks = Promise.allSettled(shutdownHooks.map((h) => h({ deadline, reason })));
    // HTTP/3 sends GOAWAY and drains under the same grace.
    await Promise.all([set.shutdown(grace), h3.shutdown(grace), hooks]);
    await upstream.close();
    if (!opts.rateLimits) await rateLimits.close();
    await admin.shutdown();
    stopReducer();
    accessSink.flush();
    logger.info("Stopped", { reason });
  }

  const server: ProxServer = {
    get port() {
      return set.get("main")?.port ?? 0;
    },
    get listeners() {
      return set.listeners;
    },
    handler,
    get admin() {
      return admin.listener;
    },
    upstreams,
    get h3() {
      return h3.listener;
    },
    get acme() {
      return acme;
    },
    logger,
    snapshot: () => current,
    lastReload: () => last,
    reloadStats: () => ({ ...stats }),
    ready: () => !draining && set.get("main") !== undefined,
    draining: () => draining,
    onShutdown: (hook) => void shutdownHooks.push(hook),
    reload: (o) => reload(o?.trigger ?? "api"),
    shutdown(o) {
      stopping ??= stop(o?.reason ?? "shutdown");
      return stopping;
    },
  };
  return server;
}
