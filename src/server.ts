// Composition root: reads the config, builds the snapshot and the adapters, starts listeners,
// owns the current snapshot, and implements reload() and shutdown(). The types it returns are in
// server_api.ts.

import type { ConfigIssue } from "./config/parse.ts";
import type { Config } from "./config/schema.ts";
import { buildSnapshot, snapshotSteps } from "./proxy/snapshot.ts";
import type { Snapshot } from "./proxy/snapshot.ts";
import { createHandler, observedHandler, requestIdSource } from "./proxy/pipeline.ts";
import type { PipelineDeps } from "./proxy/context.ts";
import { createWebSocketProxy } from "./adapters/websocket_deno.ts";
import { zlibCompressor } from "./adapters/compress_zlib.ts";
import {
  checkCollector,
  otelEnabled,
  otlpTracesEndpoint,
  routeSpans,
  serverSpans,
  traceContextSource,
} from "./adapters/otel.ts";
import {
  createListenerSet,
  ListenError,
  listenKey,
  tcpMigrateReq,
} from "./adapters/listener_set.ts";
import { formatListenAddr, parseListenAddr } from "./config/listen.ts";
import { timerDelay } from "./config/duration.ts";
import { startMemoryReducer, trafficSeen } from "./adapters/gc_hint.ts";
import { configFiles, filePrint, textPrint, watchFiles } from "./adapters/config_watch.ts";
import type { FileWatch } from "./adapters/config_watch.ts";
import { formatIssue } from "./config/load.ts";
import { configChangeSteps } from "./config/diff.ts";
import type { LoadResult } from "./config/load.ts";
import { createUpstreamClient } from "./adapters/upstream_client.ts";
import {
  accessLogOf,
  createBufferedSink,
  createJsonLogger,
  stdioSink,
} from "./adapters/log_json.ts";
import { openAccessLogFile } from "./adapters/log_file.ts";
import type { AccessLogFile } from "./adapters/log_file.ts";
import {
  createPromMetrics,
  PLAIN_HTTP_ROUTE,
  withMetricsEndpoint,
} from "./adapters/metrics_prom.ts";
import type { AdminCallbacks } from "./adapters/admin.ts";
import { followAdmin } from "./adapters/admin_follow.ts";
import {
  buildStatus,
  createStatusRecorder,
  listenerViews,
  targetPools,
} from "./adapters/admin_status.ts";
import { createDenoFileStore } from "./adapters/files_deno.ts";
import { createTcpListeners } from "./adapters/tcp_listeners.ts";
import type { StagedTcp } from "./adapters/tcp_listeners.ts";
import { createTcpMetrics, tcpAccessLogOf } from "./adapters/tcp_observe.ts";
import { explainRequest } from "./proxy/explain.ts";
import { createRateLimitStores, keysPerRoute, limiterIds } from "./adapters/rate_limit_stores.ts";
import type { AccessRecord, Clock, FileStore, Logger, LogLevel, Timer } from "./ports.ts";
import { createUpstreamRegistry } from "./proxy/state.ts";
import { MirrorTraffic } from "./proxy/mirror.ts";
import { JwksCache } from "./proxy/jwks.ts";
import { TokenCaches } from "./proxy/filters/jwt_auth.ts";
import { CacheStores } from "./proxy/cache_stores.ts";
import { purgeCache } from "./proxy/cache_purge.ts";
import { configuredTargets, unwatchedTargets, websocketTargets } from "./proxy/pool.ts";
import { createNotifier, notifyingMetrics, reportingHealth } from "./adapters/notify.ts";
import { startHealthChecks } from "./adapters/health_check.ts";
import { followH3 } from "./adapters/h3_follow.ts";
import {
  ConfigReadError,
  configReadError,
  denoEnv,
  loadSource,
  readReferencedFiles,
} from "./adapters/config_source.ts";
import type { ConfigSource } from "./adapters/config_source.ts";
import { withWorkerHeader } from "./adapters/worker_link.ts";
import { bcryptPasswords } from "./adapters/password_bcrypt.ts";
import { createJwksFetcher } from "./adapters/jwks_fetch.ts";
import { refuseBeforeRoutes } from "./proxy/filters/ip_access.ts";
import { keepConfigCopy, readConfigCopy, stageConfigCopy } from "./adapters/config_copy.ts";
import type { StagedCopy } from "./adapters/config_copy.ts";
import { createCertificates, mainTls } from "./server_tls.ts";
import {
  appliedConfig,
  createFollowerRounds,
  createReloads,
  restartOnlyChanges,
  runInSlices,
} from "./server_reload.ts";
import type { Refusal } from "./server_reload.ts";
import { loadConfigOffThread } from "./adapters/config_offthread.ts";
import { ConfigError } from "./server_api.ts";
import { createDiscovery } from "./adapters/discovery.ts";
import { withDiscovered } from "./config/discovered.ts";
import type { Discovered } from "./config/discovered.ts";
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
/** A route `bandwidth`'s waits: they must not keep a process that is exiting alive. */
const unrefTimer: Timer = (fn, ms) => {
  const id = setTimeout(fn, ms);
  Deno.unrefTimer(id);
  return () => clearTimeout(id);
};
/** With workers: how long `POST /config/reload` waits for the other workers' answers. */
const FOLLOW_WAIT_MS = 10_000;
/** How a reload another worker refused ends (log line, POST /config/reload, history). */
const ROLLED_BACK = "Rolled back: every worker went back to the previous config";
/** Rollback outcomes kept for POST /config/reload (one per refused reload). */
const MAX_ROLLBACKS = 20;
/** After the drain deadline: how long the 503s of requests cut from their upstream may take. */
const SETTLE_MS = 500;

/** Starts Prox from a config source. Throws ConfigError when the config is invalid. */
export async function startServer(
  source: ConfigSource,
  opts: StartOptions = {},
): Promise<ProxServer> {
  // Taken before the read: a save made while starting is seen once the watch runs.
  const watching = opts.watch ?? "path" in source;
  const configPath = "path" in source ? source.path : null;
  let before = watching && configPath ? await filePrint(configPath) : null;
  // A restarted worker starts from the config its siblings run, whatever the file holds now.
  const copyPath = opts.worker?.configCopy;
  // Workers other than 0 follow it: they reload the text it kept, and never write it.
  const follower = opts.worker !== undefined && !opts.worker.exclusive;
  const copied = copyPath ? readConfigCopy(copyPath) : null;
  // Worker 0 (which alone watches) loaded the copy, not the file: a file saved while it was down
  // differs from the copy and is reloaded once the watch runs (the file's print taken as loaded
  // lost that save, a fix saved during a crash loop included).
  if (before !== null && copied !== null) before = await textPrint(copied);
  const first = await loadSource(
    copied !== null ? { text: copied, name: configPath ?? "config" } : source,
  );
  if (!first.config) throw new ConfigError(first.issues);
  let config = first.config;
  const ownLogger = opts.logger ? null : createJsonLogger({ level: config.log.level });
  // With workers every worker logs its own reloads: the index tells N lines from N attempts.
  const logger = withWorkerField(opts.logger ?? ownLogger!, opts.worker?.index);
  for (const w of first.issues) logger.warn("Config warning", { issue: formatIssue(w) });
  const startedAt = Date.now();
  const prom = opts.metrics ? null : createPromMetrics({ version: opts.version });
  const recorder = createStatusRecorder(opts.metrics ?? prom!, { now: Date.now });
  // Webhook notifications: from one process (with workers, worker 0, which runs the admin side).
  const notifier = (opts.worker?.index ?? 0) === 0
    ? createNotifier({ config: () => config.notify, logger })
    : null;
  const notifying = notifier ? notifyingMetrics(recorder.metrics, notifier) : null;
  // The other workers tell worker 0 (through the supervisor) what their own views of targets are.
  const metrics = notifying ??
    (opts.onHealth ? reportingHealth(recorder.metrics, opts.onHealth) : recorder.metrics);
  // `log.access_log_file`: the file access lines go to instead of stdout (reloads may change it).
  let accessFile: AccessLogFile | null = null;
  const followAccessFile = (c: Config) => {
    const path = c.log.access_log_file ?? null;
    if ((accessFile?.path ?? null) === path) return;
    const old = accessFile;
    try {
      accessFile = path === null ? null : openAccessLogFile(path, { logger });
    } catch (err) {
      // Validation checked its directory; one that went since keeps the lines where they went.
      logger.error("Cannot open the access log file", { path, error: String(err) });
      return;
    }
    void old?.close(5_000);
  };
  followAccessFile(config);
  const closeAccessFile = (ms: number) => accessFile?.close(ms);
  // An injected logger (tests, embedding) also receives the access records, as "access" lines,
  // unless they go to a file.
  const accessSink = createBufferedSink({
    sink: (line, stream) => accessFile ? accessFile.write(line) : stdioSink(line, stream),
  });
  /** Access records of responses still being delivered (written as incomplete at exit). */
  const accessPending = new Set<() => void>();
  const accessLogFor = (c: Config) =>
    accessLogOf(c.log.access_log, {
      logger: c.log.access_log_file ? undefined : opts.logger,
      sink: accessSink.sink,
    });
  let accessLog = accessLogFor(config);
  // Pool limits are read once at start-up (a reload keeps the running pools).
  const pool = config.upstream_pool;
  const traced = otelEnabled(denoEnv.env);
  const traceContext = traced ? await traceContextSource() : undefined;
  // Server spans for the requests Prox's engines serve without Deno.serve, which makes them.
  const spans = traced ? await serverSpans() : undefined;
  const routed = traced ? await routeSpans() : undefined;
  const ownClient = opts.upstream ? null : createUpstreamClient({
    maxConnectionsPerUpstream: pool.max_connections_per_upstream,
    maxIdlePerUpstream: pool.max_idle_per_upstream,
    idleTimeout: pool.idle_timeout,
    queueLimit: pool.queue_limit,
    queueTimeout: pool.queue_timeout,
    traceContext,
  });
  const upstream = opts.upstream ?? ownClient!;
  const files: FileStore = opts.files ?? createDenoFileStore();

  // `discover` routes: the config as loaded (rawConfig) has none of their targets; `config` and
  // the snapshot have the addresses DNS gave (applyDiscovered swaps them in as they change).
  let rawConfig = config;
  let discoverReady = false;
  const discovery = createDiscovery({ logger, onChange: () => applyDiscovered() });
  await discovery.prepare(rawConfig);
  config = withDiscovered(rawConfig, discovery.foundFor(rawConfig));
  /** What the serving snapshot's discovered targets came from. */
  let builtFound = foundText(discovery.foundFor(rawConfig));
  let version = 1;
  // With workers, in worker 0: the text it serves, and the one it served before its latest
  // reload, put back in every worker when another worker refuses that reload (all or nothing).
  let servedText = copied ?? first.text ?? null;
  let undo: { version: number; text: string } | null = null;
  let rollbackTo: { round: number; text: string; refusals: Refusal[] } | null = null;
  /** By the round it undoes: each rollback's outcome (POST /config/reload waits for it). */
  const rollbacks = new Map<number, Promise<ReloadResult>>();
  // Owned across reloads: the response caches of routes a reload leaves unchanged keep entries.
  const caches = new CacheStores();
  // ... and so do the verified tokens of jwt_auth routes whose keys and settings did not change.
  const tokens = new TokenCaches();
  /** The files the serving snapshot was built with (a change of discovered targets reuses them). */
  let builtFiles = await readReferencedFiles(config);
  let current = buildSnapshot(config, {
    caches,
    tokens,
    version,
    files: builtFiles,
    env: denoEnv.env,
  });
  // Owned across reloads: limits whose id (route + shape) did not change keep their counters.
  const rateLimits = opts.rateLimits ?? createRateLimitStores();
  await rateLimits.configure(
    config.rate_limit_store,
    limiterIds(current.router.entries.map((e) => e.value)),
  );
  let draining = false;
  const upstreams = createUpstreamRegistry({ clock: realClock, logger, metrics });
  // The configured targets: a reload's new ones are told apart (slow start).
  upstreams.retain(configuredTargets(config), Object.keys(config.routes));
  const shutdownHooks: ShutdownHook[] = [];
  // Reloads run one at a time (doReload below); requests during one share a single next run.
  const reloads = createReloads({
    run: doReload,
    startedAt,
    metrics,
    onReload: opts.onReload,
  });

  const websockets = createWebSocketProxy({ logger, metrics, traceContext });
  const mirrors = new MirrorTraffic();
  const pipelineDeps: PipelineDeps = {
    snapshot: () => current,
    upstream,
    files,
    clock: realClock,
    logger,
    metrics,
    rateLimits,
    passwords: bcryptPasswords,
    jwks: new JwksCache({ fetcher: createJwksFetcher(), clock: realClock, logger }),
    // No 503 while draining: Deno.serve's graceful shutdown stops accepting and closes idle
    // keep-alive connections, so a request that still arrives is served normally.
    access: (rec: AccessRecord) => accessLog?.(rec),
    accessEnabled: () => accessLog !== undefined,
    accessPending,
    upstreams,
    websocket: websockets,
    mirrors,
    compressor: zlibCompressor,
    timer: unrefTimer,
    routed,
  };
  const handler = createHandler(pipelineDeps);
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
  const metricsIds = requestIdSource(Math.random);
  const baseHandler = withMetricsEndpoint(handler, {
    config: () => config.metrics,
    text: metricsText,
    contentType: prom?.contentType,
    onRequest: trafficSeen,
    // The top-level ip_access keeps its clients out of these metrics too.
    refuse: (req, info) => refuseBeforeRoutes(current, req, { info, requestId: metricsIds }),
  });
  const serveHandler = opts.worker?.debugHeader
    ? withWorkerHeader(baseHandler, opts.worker.index)
    : baseHandler;
  // Only one process can own the UDP port and the admin port: with workers, worker 0 does.
  const exclusive = opts.worker?.exclusive ?? true;

  // Layer-4 listeners (`tcp`): their own access lines and metrics, on the same log and registry.
  const tcpAccessFor = (c: Config) =>
    tcpAccessLogOf(c.log.access_log, {
      logger: c.log.access_log_file ? undefined : opts.logger,
      sink: accessSink.sink,
    });
  let tcpAccess = tcpAccessFor(config);
  const tcpMetrics = prom
    ? createTcpMetrics(prom.registry, () => tcp.active(), () => tcp.health())
    : null;
  const tcp = createTcpListeners({
    logger,
    metrics: tcpMetrics,
    access: () => tcpAccess,
    random: Math.random,
    drainMs: () => config.shutdown_timeout,
    // As the routes' targets: backend_down and backend_up (from worker 0, which notifies).
    onTargetHealth: notifier
      ? (c) =>
        notifier.send(
          c.up ? "backend_up" : "backend_down",
          `tcp target ${c.target} of ${c.name} is ${c.up ? "up again" : "down"} (${c.reason})`,
          { backend: `tcp://${c.target}`, tcp: c.name, reason: c.reason },
        )
      : undefined,
  });
  tcpMetrics?.retain(Object.keys(config.tcp ?? {}));

  let stopReducer = () => {};
  let stopSettle = () => {};
  const set = createListenerSet({
    logger,
    spans,
    drainMs: () => config.shutdown_timeout,
    // Deno.serve's drain closes them too (1001 "Server shutting down", whichever frame goes
    // first), unseen by the relay: logged as the client's close with 1005, the upstream told of
    // a normal close.
    onReplace: (l) =>
      websockets.closeOnPort(l.port, { code: 1001, reason: "Server shutting down" }),
  });
  let started = false;
  // New certificates are applied one after another, outside the ACME loop and after any reload.
  let applying: Promise<void> = Promise.resolve();
  const certs = createCertificates(config, {
    logger,
    metrics,
    acme: opts.acme,
    serve: serveHandler,
    observe: (h) => observedHandler(h, { deps: pipelineDeps, label: PLAIN_HTTP_ROUTE }),
    // Before the first certificate there is no HTTPS listener yet: the configured port, not 443.
    httpsPort: () => set.get("main")?.port ?? configuredPort(config.listen_addr),
    onCertificate: () => {
      applying = applying.then(applyCertificate).catch((err) =>
        logger.error("Cannot serve the new ACME certificate", { error: String(err) })
      );
    },
  });
  await certs.follow(config);
  /** Serves a new ACME certificate: a new listener on the same port, the old one drains. */
  async function applyCertificate(): Promise<void> {
    if (!started || draining) return;
    await reloads.idle();
    const plans = await certs.plansFor(config);
    const replacing = set.get("main") !== undefined; // not on the first certificate
    const staged = await set.stage(plans);
    staged.commit();
    certs.applied(config, plans);
    await syncH3(config, mainTls(plans));
    if (staged.bound) logger.info("TLS certificate applied", { listenersChanged: staged.bound });
    if (staged.bound && replacing && !migrateHinted && tcpMigrateReq() === "0") {
      migrateHinted = true;
      logger.warn(
        "Connections queued on a replaced listener are reset by Linux; set sysctl net.ipv4.tcp_migrate_req=1 to hand them to the new one",
      );
    }
  }
  let migrateHinted = false;
  // HTTP/3 beside the TLS listener; Alt-Svc is advertised only while it is actually up.
  const h3 = followH3({
    handler: spans ? spans(serveHandler, "3") : serveHandler,
    logger,
    metrics,
    current: (c) => !draining && config === c,
    onChange: () => {
      const altSvc = h3.altSvc();
      if (current.altSvc !== altSvc) current = Object.freeze({ ...current, altSvc });
      opts.onAltSvc?.(altSvc);
    },
  });
  // Other workers advertise the HTTP/3 that worker 0 serves on the same port, only while it is
  // up there (it told so through the supervisor) and their own config has it on.
  let zeroAltSvc: string | null = null;
  let h3Wanted = false;
  const followZeroH3 = () => {
    const altSvc = h3Wanted && !draining ? zeroAltSvc : null;
    if (current.altSvc !== altSvc) current = Object.freeze({ ...current, altSvc });
  };
  const syncH3 = async (c: Config, tls: { cert?: string; key?: string }) => {
    if (exclusive) return await h3.sync(set.get("main"), c, tls);
    h3Wanted = c.protocols.http3_enabled && tls.cert !== undefined && set.get("main") !== undefined;
    followZeroH3();
  };
  const firstPlans = await certs.plansFor(config);
  /** A bind failure named at its key, as a reload names it (`config.yaml:1:1: listen_addr: …`). */
  const located = (err: unknown, planId?: string) => {
    const id = err instanceof ListenError ? err.planId : planId;
    if (!id || !configPath || !first.locate || !(err instanceof Error)) return err;
    const key = listenKey(id);
    const { line, col } = first.locate(key);
    const at = `${configPath}:${line}:${col}`;
    return new ListenError(`${at}: ${key.join(".")}: ${err.message}`, id);
  };
  try {
    (await set.stage(firstPlans)).commit();
  } catch (err) {
    discovery.close();
    await Promise.all([certs.close(), closeAccessFile(0)]);
    throw located(err);
  }
  try {
    tcp.stage(config, builtFiles).commit();
  } catch (err) {
    discovery.close();
    await Promise.all([set.shutdown(1_000), certs.close(), closeAccessFile(0)]);
    throw located(err);
  }
  certs.applied(config, firstPlans);
  await syncH3(config, mainTls(firstPlans));
  const limiterKeys = () => keysPerRoute(rateLimits, current.router.entries.map((e) => e.value));
  // The admin listener follows reloads (only the exclusive worker runs one).
  const admin = followAdmin({
    takeover: opts.takeover,
    logger,
    token: () => config.admin?.token,
    callbacks: () => adminApi,
  });
  const adminApi: AdminCallbacks = {
    ready: () => !draining && set.get("main") !== undefined,
    reload: () => adminReload(),
    reloadHistory: () => reloads.history(),
    effectiveConfig: () => config,
    // The live snapshot and health; a fresh selector, so a rotation does not move.
    explain: (req) =>
      explainRequest(req, {
        snapshot: current,
        files,
        clock: realClock,
        logger,
        registry: upstreams,
      }),
    purgeCache: (input) => {
      const r = purgeCache(input, { snapshot: current, metrics });
      if (r.ok) {
        logger.info("Cache purged through the admin API", { ...input, purged: r.purged });
        opts.onPurge?.(input);
      }
      return r;
    },
    drainTarget: (asked, on) => {
      // As written in the config, or with the trailing slash the config has (or has not):
      // `http://10.0.0.5:8080/` is the same target as `http://10.0.0.5:8080`.
      const target = [asked, asked.endsWith("/") ? asked.slice(0, -1) : `${asked}/`]
        .find((t) => drainTarget(t, on));
      if (target === undefined) return null;
      logger.info(
        on ? "Target drained through the admin API" : "Target undrained through the admin API",
        {
          target,
        },
      );
      opts.onDrain?.(target, on);
      return { target, drained: on, inFlight: upstreams.get(target).inFlight };
    },
    renewCertificate: () => {
      const acme = certs.acme;
      if (!acme) return null;
      if (acme.status().state === "ordering") return { started: false, acme: acme.status() };
      logger.info("ACME renewal forced through the admin API", { domains: acme.status().domains });
      void acme.renewNow();
      return { started: true, acme: acme.status() };
    },
    metricsText,
    metricsContentType: prom?.contentType,
    status: () =>
      Object.assign(
        buildStatus(current, {
          recorder,
          now: Date.now(),
          startedAt,
          version: opts.version ?? "dev",
          ready: !draining && set.get("main") !== undefined,
          draining,
          lastReload: reloads.last(),
          listeners: listenerViews(set.named(), { h3: h3.listener, admin: admin.listener }),
          upstreamViews: upstreams.list(),
          pools: ownClient?.pools(),
          limiterKeys: limiterKeys(),
          caches: caches.sizes(),
          acme: certs.acme?.status() ?? null,
          onDemand: certs.onDemand?.report() ?? null,
        }),
        config.tcp ? { tcp: tcp.views() } : {},
      ),
  };
  try {
    await admin.sync(exclusive ? config.admin?.listen_addr ?? null : null);
  } catch (err) {
    // A held admin port fails the start: nothing may stay bound or running behind it.
    discovery.close();
    await Promise.all([
      set.shutdown(1_000),
      h3.shutdown(1_000),
      certs.close(),
      tcp.shutdown(0),
      closeAccessFile(0),
    ]);
    throw located(err, "admin");
  }
  started = true;
  // Only once listening: a start-up that fails leaves no prober behind.
  const health = startHealthChecks(current, { registry: upstreams, logger });
  // Addresses that changed while starting are swapped in now.
  discoverReady = true;
  applyDiscovered();
  // Ejections that ran out are announced within a second, with traffic or without.
  const settleTimer = setInterval(() => upstreams.settleAll(), 1000);
  Deno.unrefTimer(settleTimer);
  stopSettle = () => clearInterval(settleTimer);
  stopReducer = startMemoryReducer({
    idleMs: () => config.memory.reduce_after_idle,
    aboveBytes: () => config.memory.reduce_above,
    onReduce: (ms) => logger.debug("Memory-reducing GC after a burst", { ms: Math.round(ms) }),
    onSkip: (rss) =>
      logger.debug("Memory kept after a burst: RSS below memory.reduce_above", {
        rssMiB: Math.round(rss / 1048576),
      }),
  });
  if (copyPath && !follower && first.text !== undefined) {
    keepConfigCopy(copyPath, first.text, logger);
  }
  // Without its ACME certificate yet, only the plain-HTTP listener (redirects, challenges) serves.
  // With DNS-01 and no plain-HTTP listener, nothing listens until then.
  const main = set.get("main");
  const shown = main ?? set.listeners[0];
  logger.info(main ? "Prox listening" : "Prox started; HTTPS waits for its ACME certificate", {
    addr: shown ? formatListenAddr(shown) : config.listen_addr,
    tls: shown?.tls ?? true,
    routes: Object.keys(config.routes).length,
    worker: opts.worker?.index,
  });
  // Once, from one process: whether the span collector answers (otel.ts).
  const collectorChecked = traced && !opts.worker?.index
    ? checkCollector(otlpTracesEndpoint(denoEnv.env), { logger })
    : Promise.resolve();
  prom?.observe({
    upstreams: () => upstreams.list(),
    pools: ownClient
      ? () =>
        targetPools(
          // `websocket` routes' targets too (their connections count in the pools), listed
          // even before their first WebSocket puts them in the registry.
          [...upstreams.list().map((u) => u.id), ...websocketTargets(config)],
          ownClient.pools(),
        )
      : undefined,
    limiterKeys,
    cacheSizes: () => caches.sizes(),
    ready: adminApi.ready,
    engineTurns: () => {
      const c = set.listeners.find((l) => l.counts)?.counts;
      return c ? { held: c.turnsHeld, waiting: c.turnsWaiting } : null;
    },
  });

  let watch: FileWatch | undefined;
  const watchedFiles = (c: Config) => configFiles("path" in source ? source.path : null, c);
  if (watching) {
    watch = watchFiles(watchedFiles(config), {
      baseline: configPath && before ? new Map([[configPath, before]]) : undefined,
      logger,
      debounceMs: opts.watchDebounceMs,
      onChange: async (changed) => {
        logger.info("Config files changed", { files: changed });
        await reloads.request("file");
      },
    });
  }

  // A reload parses and validates a large config in a worker: requests are served meanwhile.
  const reloadLoader = (text: string, file: string) =>
    loadConfigOffThread(text, {
      file,
      onFallback: (why) =>
        logger.warn("Cannot load the config in a worker; loaded on the main thread", {
          error: why,
        }),
    });

  async function doReload(trigger: string): Promise<ReloadResult> {
    const at = Date.now();
    const file = "path" in source ? source.path : source.name;
    let locate: LoadResult["locate"];
    const failed = (message: string, key?: string[], hint?: string): ReloadResult => {
      const issue: ConfigIssue = key && locate
        ? { ...issueAt(file), ...locate(key), path: key.join("."), message }
        : { ...issueAt(file), message, ...(hint ? { hint } : {}) };
      logger.error("Reload failed; the current config keeps serving", {
        trigger,
        error: key && locate ? formatIssue(issue) : message,
        // A file that cannot be read: the fix `prox serve` prints for it at start.
        ...(hint ? { fix: hint } : {}),
      });
      return reloads.settle({ ok: false, version, issues: [issue], at, trigger });
    };
    // Not a config failure (no metric, no failed-reload status): nothing keeps serving.
    const skipped = (): ReloadResult => {
      const message = "Cannot reload: shutting down";
      logger.info("Reload skipped: shutting down", { trigger });
      return {
        ok: false,
        version,
        issues: [{ ...issueAt(file), message }],
        at,
        trigger,
        skipped: true,
      };
    };
    if (draining) return skipped();
    // Worker 0 undoing a reload another worker refused (`workersReloaded`): unless a later
    // reload replaced that config meanwhile, it reloads the text served before it.
    const rollback = trigger === "rollback" && !follower ? rollbackTo : null;
    if (trigger === "rollback" && !follower) {
      rollbackTo = null;
      if (rollback?.round !== version) {
        const message = "Rollback skipped: a later reload replaced the config it was to undo";
        logger.warn(message, { version });
        return { ok: false, version, issues: [{ ...issueAt(file), message }], at, trigger };
      }
    }
    try {
      // A follower applies what worker 0 applied, not the file (which may have changed since).
      const kept = follower && copyPath ? readConfigCopy(copyPath) : null;
      const from = rollback
        ? { text: rollback.text, name: configPath ?? "config" }
        : kept !== null
        ? { text: kept, name: configPath ?? "config" }
        : source;
      const next = await loadSource(from, { load: reloadLoader }).catch((err) => {
        throw configReadError(file, err);
      });
      locate = next.locate;
      if (!next.config) {
        logger.error("Reload rejected; the current config keeps serving", {
          trigger,
          issues: next.issues.filter((i) => i.severity === "error").map((i) => formatIssue(i)),
        });
        // Files it names that are missing now (a certificate deployed after the config) retry
        // the reload once they appear.
        if (next.candidate) {
          watch?.setFiles([...watchedFiles(config), ...watchedFiles(next.candidate)]);
        }
        return reloads.settle({ ok: false, version, issues: next.issues, at, trigger });
      }
      // Keys read once at start-up keep their running values (so /config shows what applies).
      const loaded = appliedConfig(config, next.config);
      // New or changed `discover` settings are looked up before the swap (the loops of the
      // serving config go on: a reload that fails still needs them).
      await discovery.prepare(loaded);
      const foundNow = discovery.foundFor(loaded);
      const applied = withDiscovered(loaded, foundNow);
      const files = await readReferencedFiles(applied);
      // Built a slice at a time: requests are answered meanwhile.
      const snap = await runInSlices(snapshotSteps(applied, {
        caches,
        tokens,
        version: version + 1,
        files,
        altSvc: current.altSvc,
        env: denoEnv.env,
      }));
      // Bind what changed before anything is swapped: a bind failure leaves all as it was.
      await certs.follow(applied);
      const plans = await certs.plansFor(applied);
      const staged = await set.stage(plans);
      let stagedTcp: StagedTcp;
      try {
        stagedTcp = tcp.stage(applied, files);
      } catch (err) {
        await staged.abort();
        throw err;
      }
      // Worker 0 keeps the text for the other workers (they reload it, and restart from it): one
      // it cannot keep would have them serve the previous text, so it fails the reload.
      let copy: StagedCopy | null = null;
      try {
        if (copyPath && !follower && next.text !== undefined) {
          copy = stageConfigCopy(copyPath, next.text, logger);
        }
      } catch (err) {
        stagedTcp.abort();
        await staged.abort();
        throw err;
      }
      // The admin listener moves before the swap too: an address it cannot bind fails the reload.
      try {
        await admin.sync(exclusive ? applied.admin?.listen_addr ?? null : null);
      } catch (err) {
        copy?.abort();
        stagedTcp.abort();
        await staged.abort();
        throw new ListenError(err instanceof Error ? err.message : String(err), "admin");
      }
      // The swap: from here on nothing may fail the reload (the new config is serving).
      version++;
      const prev = rawConfig;
      rawConfig = loaded;
      config = applied;
      current = snap;
      builtFiles = files;
      builtFound = foundText(foundNow);
      if (copyPath && !follower) {
        undo = !rollback && servedText !== null ? { version, text: servedText } : null;
        servedText = next.text ?? null;
      }
      discovery.retain(rawConfig);
      staged.commit();
      stagedTcp.commit();
      tcpMetrics?.retain(Object.keys(config.tcp ?? {}));
      // WebSockets on routes the reload left unchanged stay connected; the others get 1001.
      websockets.retain(
        (id) => JSON.stringify(prev.routes[id]) === JSON.stringify(rawConfig.routes[id]),
        1001,
        "Route changed by a config reload",
      );
      forgetDrains(upstreams.retain(configuredTargets(config), Object.keys(config.routes)));
      caches.retain(config);
      tokens.retain(config.routes);
      upstreams.release(unwatchedTargets(config));
      health.update(current);
      const certificateChange = certs.applied(config, plans);
      followAccessFile(config);
      accessLog = accessLogFor(config);
      tcpAccess = tcpAccessFor(config);
      // Side systems that may fail (UDP bind, Redis) log their own errors; the reload stands.
      await syncH3(config, mainTls(plans)).catch((err) =>
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
      ownLogger?.setLevel(config.log.level);
      for (const w of next.issues) logger.warn("Config warning", { issue: formatIssue(w) });
      for (const key of exclusive ? restartOnlyChanges(prev, next.config) : []) {
        logger.warn(`${key} changed; it applies when Prox restarts (--takeover)`);
      }
      copy?.commit();
      // A certificate rotated on disk changes no key of the config, but it is what changed.
      const changes = [
        ...await runInSlices(configChangeSteps(prev, rawConfig)),
        ...certificateChange ? [certificateChange] : [],
      ];
      logger.info("Config reloaded", {
        version,
        trigger,
        listenersChanged: staged.bound + stagedTcp.bound,
        changes: changes.length ? changes : "none",
      });
      // Addresses that changed while the reload ran.
      applyDiscovered();
      if (rollback) {
        // Applied, and passed on to the others; as a reload of the fleet, the one undone failed.
        metrics.configRollback();
        const message = `${ROLLED_BACK} (version ${version})`;
        logger.error(message, {
          undone: rollback.round,
          version,
          refusedBy: rollback.refusals.map((r) => r.worker),
        });
        const issues = [
          ...rollback.refusals.map((r) => ({ ...issueAt(file), message: refusedMessage(r) })),
          { ...issueAt(file), message },
        ];
        return reloads.settle({ ok: false, version, issues, at, trigger, changes, rollback: true });
      }
      return reloads.settle({ ok: true, version, issues: next.issues, at, trigger, changes });
    } catch (err) {
      // Lookups the rejected config started are not needed.
      discovery.retain(rawConfig);
      // ACME may have followed the rejected config (domains it removed): back to the serving one.
      await certs.follow(config).catch(() => {});
      // Shutdown began while it ran (the listeners refuse a new bind): skipped, not failed.
      if (draining) return skipped();
      const message = `Cannot reload: ${err instanceof Error ? err.message : String(err)}`;
      return failed(
        message,
        err instanceof ListenError ? listenKey(err.planId) : undefined,
        err instanceof ConfigReadError ? err.hint : undefined,
      );
    }
  }

  /**
   * Swaps in a snapshot whose `discover` routes have the addresses found now, when they differ
   * from the serving one's (no await between build and swap: a reload cannot come in between).
   */
  function applyDiscovered(): void {
    if (!discoverReady || draining) return;
    const found = discovery.foundFor(rawConfig);
    const text = foundText(found);
    if (text === builtFound) return;
    const next = withDiscovered(rawConfig, found);
    const snap = buildSnapshot(next, {
      caches,
      tokens,
      version,
      files: builtFiles,
      altSvc: current.altSvc,
      env: denoEnv.env,
    });
    config = next;
    current = snap;
    builtFound = text;
    // A drained target DNS no longer answers stays drained should it come back (a flap, an
    // address handed out again): kept ahead (bounded), as for a worker that has not found it yet.
    for (const target of upstreams.retain(configuredTargets(config), Object.keys(config.routes))) {
      upstreams.drain(target, true, { ahead: true });
      logger.info("A drained target left the DNS answer: drained again if it comes back", {
        target,
      });
    }
    upstreams.release(unwatchedTargets(config));
    health.update(current);
    metrics.backendsConfigured(targetsOf(snap));
  }

  /**
   * Drained targets the config (or DNS) no longer has lose their drain: said, and passed on as
   * an undrain (with workers, the supervisor then stops replaying it to restarted workers, which
   * would drain it there alone once it is back).
   */
  function forgetDrains(targets: string[]): void {
    for (const target of targets) {
      logger.info("A drained target left the config: its drain ends", { target });
      opts.onDrain?.(target, false);
    }
  }

  /** Drains a configured target (or undrains it); false when no route has it. */
  function drainTarget(target: string, on: boolean, o?: { ahead?: boolean }): boolean {
    return upstreams.drain(target, on, o);
  }

  // With workers, in worker 0: the others' answers to its reloads (mod.ts passes them on).
  const followerRounds = createFollowerRounds();
  const configName = "path" in source ? source.path : source.name;
  const refusedMessage = (r: Refusal) =>
    `Worker ${r.worker} refused the reload and serves its previous config: ${r.error}`;

  /**
   * `POST /config/reload`: with workers, answered once the other workers applied it too (or
   * refused it, which fails it: they serve their previous config), for up to FOLLOW_WAIT_MS.
   */
  async function adminReload(): Promise<ReloadResult> {
    const r = await server.reload({ trigger: "admin" });
    if (!r.ok || !opts.worker?.followers) return r;
    const refusals = await followerRounds.wait(r.version, FOLLOW_WAIT_MS);
    if (refusals === null) {
      const message = `Not every worker said within ${
        FOLLOW_WAIT_MS / 1000
      } s whether it applied the reload: see GET /config/history`;
      const late: ConfigIssue = { ...issueAt(configName), severity: "warning", message };
      return { ...r, issues: [...r.issues, late] };
    }
    if (refusals.length === 0) return r;
    const issues = refusals.map((f) => ({ ...issueAt(configName), message: refusedMessage(f) }));
    // Undone in every worker (see workersReloaded), or why not: worker 0 first, then the others.
    const undone = await rollbacks.get(r.version);
    const back = undone?.rollback ? await followerRounds.wait(undone.version, FOLLOW_WAIT_MS) : [];
    const message = !undone?.rollback
      ? `The reload could not be undone (${
        undone?.issues.find((i) => i.severity !== "warning")?.message ??
          "a later reload replaced it"
      }): the workers may serve different configs`
      : back === null
      ? `Rolled back in worker 0 (version ${undone.version}); not every other worker said within ${
        FOLLOW_WAIT_MS / 1000
      } s whether it went back: see GET /config/history`
      : back.length > 0
      ? `Rolled back in worker 0 (version ${undone.version}), refused by worker ${
        back.map((b) => b.worker).join(", ")
      } too: the workers serve different configs`
      : `${ROLLED_BACK} (version ${undone.version})`;
    issues.push({ ...issueAt(configName), message });
    return { ...r, ok: false, issues: [...r.issues, ...issues] };
  }

  let stopping: Promise<void> | null = null;
  async function stop(reason: string): Promise<void> {
    draining = true;
    // A takeover successor already serves the admin port (SO_REUSEPORT): leave it to it.
    if (reason === "takeover") void admin.shutdown();
    websockets.closeAll(1001, "Server shutting down");
    if (current.altSvc) current = Object.freeze({ ...current, altSvc: null });
    watch?.close();
    discovery.close();
    await health.close();
    // An ACME order in flight gets up to 2 s to finish and store its certificate, while the
    // listeners drain rather than before: they stop accepting at once.
    const acmeClosed = certs.close();
    const grace = config.shutdown_timeout;
    const deadline = Date.now() + grace;
    logger.info("Draining", { reason, graceMs: grace });
    // The listeners stop accepting at once; one that a reload or certificate swap binds from
    // now on is closed at its commit.
    const listeners = set.shutdown(grace);
    // tcp connections get the same grace, then are cut.
    const tcpDrained = tcp.shutdown(grace);
    // A reload or certificate swap under way finishes first, but one that is stuck (a config on
    // a hung network file system) must not hold the drain past its deadline.
    await within(grace, Promise.all([applying, reloads.idle()]));
    const left = Math.max(0, deadline - Date.now());
    // Long-lived streams (WebSockets) are told to go away while requests drain.
    const hooks = Promise.allSettled(shutdownHooks.map((h) => h({ deadline, reason })));
    // HTTP/3 sends GOAWAY and drains under the same grace.
    await Promise.all([listeners, h3.shutdown(left), hooks, acmeClosed, tcpDrained]);
    // Mirror copies never hold the process: those still under way are abandoned.
    mirrors.closeAll();
    await upstream.close();
    // Closing the client answered the requests still waiting on an upstream (503): let those
    // answers reach their clients before the process exits and cuts what remains.
    await set.settled(SETTLE_MS);
    if (!opts.rateLimits) await rateLimits.close();
    // Deno.serve's graceful shutdown waits for good on a request body that never finishes (one
    // answered without reading it, from any client of the admin port): exit cuts it.
    await within(SETTLE_MS, admin.shutdown());
    stopReducer();
    stopSettle();
    // At most its 3 s, when the collector neither answers nor refuses.
    await collectorChecked;
    // A notification under way (the last reload's, a target's) gets what is left of the settle.
    if (notifier) await within(SETTLE_MS, notifier.settled());
    notifier?.close();
    // Responses the drain timeout cut never settle: their lines are written now, incomplete.
    for (const cut of [...accessPending]) cut();
    accessSink.flush();
    await closeAccessFile(2_000);
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
    tcpAddr: (name) => tcp.addr(name),
    get acme() {
      return certs.acme;
    },
    get onDemand() {
      return certs.onDemand;
    },
    logger,
    snapshot: () => current,
    lastReload: reloads.last,
    reloadHistory: reloads.history,
    reloadStats: reloads.stats,
    ready: () => !draining && set.get("main") !== undefined,
    draining: () => draining,
    onShutdown: (hook) => void shutdownHooks.push(hook),
    purgeCache: (input) => purgeCache(input, { snapshot: current, metrics }),
    drainTarget,
    workerHealth(worker, backend, healthy, reason) {
      if (backend === null) notifying?.workerGone(worker);
      else notifying?.workerHealth(worker, backend, healthy, reason);
    },
    workerReloadFailed(worker, o) {
      const message = refusedMessage({ worker, error: o.error });
      reloads.note({
        ok: false,
        version,
        issues: [{ ...issueAt(configName), message }],
        at: Date.now(),
        trigger: o.trigger,
        worker,
      });
      if (o.round !== undefined) followerRounds.refused(o.round, { worker, error: o.error });
    },
    workerAltSvc(altSvc) {
      if (exclusive) return;
      zeroAltSvc = altSvc;
      followZeroH3();
    },
    workersReloaded(round) {
      // All or nothing: a reload another worker refused is undone, here first, then (as any
      // reload of worker 0's) in the others; the copy kept for restarts goes back with it.
      const refusals = followerRounds.answered(round);
      if (refusals.length === 0 || undo?.version !== round || draining) return;
      rollbackTo = { round, text: undo.text, refusals };
      rollbacks.set(round, reloads.request("rollback"));
      for (const old of rollbacks.keys()) if (rollbacks.size > MAX_ROLLBACKS) rollbacks.delete(old);
    },
    reload: (o) => reloads.request(o?.trigger ?? "api"),
    shutdown(o) {
      stopping ??= stop(o?.reason ?? "shutdown");
      return stopping;
    },
  };
  return server;
}

/** `base` adding `worker: index` to every line, when this process is one of `workers: N`. */
function withWorkerField(base: Logger, index: number | undefined): Logger {
  if (index === undefined) return base;
  const log = (level: LogLevel, msg: string, fields?: Record<string, unknown>) =>
    base.log(level, msg, { ...fields, worker: index });
  return {
    log,
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
    enabled: base.enabled && ((level) => base.enabled!(level)),
  };
}

/** Waits for `p`, but at most `ms`. */
async function within(ms: number, p: Promise<unknown>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<void>((r) => timer = setTimeout(r, timerDelay(ms)));
  await Promise.race([p.then(() => {}, () => {}), late]);
  clearTimeout(timer);
}

/** An error issue about the config file as a whole (its first line). */
function issueAt(file: string): ConfigIssue {
  return { severity: "error", file, line: 1, col: 1, path: "", message: "" };
}

/** The port of a listen address as configured (443 when it cannot be read). */
function configuredPort(listenAddr: string): number {
  const a = parseListenAddr(listenAddr);
  return typeof a === "string" ? 443 : a.port;
}

/** What `discover` found, as text to compare (route order is the config's). */
function foundText(found: Discovered): string {
  return JSON.stringify([...found]);
}
