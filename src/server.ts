// Composition root: reads the config, builds the snapshot and the adapters, starts listeners,
// owns the current snapshot, and implements reload() and shutdown().

import { loadConfigText } from "./config/load.ts";
import type { ConfigIssue } from "./config/parse.ts";
import type { Config } from "./config/schema.ts";
import { parseListenAddr } from "./config/listen.ts";
import { buildSnapshot } from "./proxy/snapshot.ts";
import type { Snapshot } from "./proxy/snapshot.ts";
import { createHandler } from "./proxy/pipeline.ts";
import { createWebSocketProxy } from "./adapters/websocket_deno.ts";
import { listen } from "./adapters/http_serve.ts";
import type { Listener } from "./adapters/http_serve.ts";
import { createFetchClient } from "./adapters/fetch_client.ts";
import { createAccessLog, createJsonLogger } from "./adapters/log_json.ts";
import { createPromMetrics } from "./adapters/metrics_prom.ts";
import { startAdmin } from "./adapters/admin.ts";
import type { AdminListener } from "./adapters/admin.ts";
import { buildStatus, certificateNotAfter, createStatusRecorder } from "./adapters/admin_status.ts";
import { createDenoFileStore } from "./adapters/files_deno.ts";
import { createRateLimitStores, limiterIds } from "./adapters/rate_limit_stores.ts";
import type { RateLimitStores } from "./adapters/rate_limit_stores.ts";
import type {
  AccessRecord,
  Clock,
  FileStore,
  Handler,
  Logger,
  Metrics,
  UpstreamClient,
} from "./ports.ts";
import { createUpstreamRegistry } from "./proxy/state.ts";
import type { UpstreamRegistry } from "./proxy/state.ts";
import { configuredTargets } from "./proxy/pool.ts";
import { startHealthChecks } from "./adapters/health_check.ts";
import { ALT_SVC_MAX_AGE, altSvcValue, startH3Beside } from "./adapters/h3/mod.ts";
import type { H3Listener } from "./adapters/h3/mod.ts";

/** Where the config comes from: a file, or embedded text when no file exists. */
export type ConfigSource = { path: string } | { text: string; name: string };

/** The outcome of a reload attempt. */
export interface ReloadResult {
  ok: boolean;
  version: number;
  issues: ConfigIssue[];
  at: number;
}

/** A running Prox. */
export interface ProxServer {
  /** Main listener's actual port (useful with port 0). */
  readonly port: number;
  readonly listeners: readonly Listener[];
  snapshot(): Snapshot;
  /** Re-reads the config; on any error the current config keeps serving. */
  reload(): Promise<ReloadResult>;
  lastReload(): ReloadResult | null;
  /** Graceful: stop accepting, let in-flight requests finish up to shutdown_timeout. */
  shutdown(): Promise<void>;
  readonly handler: Handler;
  /** The admin listener, when `admin` is configured. */
  readonly admin: AdminListener | null;
  /** Upstream health, ejections, in-flight counts and latency (kept across reloads). */
  readonly upstreams: UpstreamRegistry;
  /** The HTTP/3 listener (UDP, same port as the TLS listener), when it is up. */
  readonly h3: H3Listener | null;
}

/** Thrown when the initial config cannot be loaded; carries the located issues. */
export class ConfigError extends Error {
  constructor(readonly issues: ConfigIssue[]) {
    super("Configuration is invalid");
    this.name = "ConfigError";
  }
}

const realClock: Clock = { now: () => Date.now(), monotonic: () => performance.now() };

const denoEnv = {
  env: (name: string) => Deno.env.get(name),
  exists(path: string): boolean {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  },
};

/** Reads and validates the config source. */
export async function loadSource(
  source: ConfigSource,
): Promise<{ config?: Config; issues: ConfigIssue[] }> {
  if ("text" in source) return loadConfigText(source.text, { file: source.name, env: denoEnv });
  const text = await Deno.readTextFile(source.path);
  return loadConfigText(text, { file: source.path, env: denoEnv });
}

/** Reads files a config refers to that the pure snapshot builder needs (CA certificates). */
async function readReferencedFiles(config: Config): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const route of Object.values(config.routes)) {
    if ("tls" in route && route.tls?.ca_cert && !files.has(route.tls.ca_cert)) {
      files.set(route.tls.ca_cert, await Deno.readTextFile(route.tls.ca_cert));
    }
  }
  return files;
}

/** Starts Prox from a config source. Throws ConfigError when the config is invalid. */
export async function startServer(
  source: ConfigSource,
  opts: {
    logger?: Logger;
    metrics?: Metrics;
    upstream?: UpstreamClient;
    files?: FileStore;
    /** Rate-limit counters to reuse (e.g. across restarts in tests); created when absent. */
    rateLimits?: RateLimitStores;
    /** Shown in /status and prox_build_info. */
    version?: string;
  } = {},
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
  const accessLogFor = (c: Config) =>
    c.log.access_log === false
      ? undefined
      : opts.logger
      ? (rec: AccessRecord) => logger.info("access", { ...rec })
      : createAccessLog(c.log.access_log === true ? "json" : c.log.access_log);
  let accessLog = accessLogFor(config);
  const upstream = opts.upstream ?? createFetchClient();
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

  const websockets = createWebSocketProxy({ logger, metrics });
  const handler = createHandler({
    snapshot: () => current,
    upstream,
    files,
    clock: realClock,
    logger,
    metrics,
    rateLimits,
    draining: () => draining,
    access: (rec: AccessRecord) => accessLog?.(rec),
    upstreams,
    websocket: websockets,
  });
  const targetsOf = (
    snap: Snapshot,
  ) => [...new Set(snap.router.entries.flatMap((e) => e.value.targets))];
  metrics.backendsConfigured(targetsOf(current));
  metrics.configReload({ ok: true, version, at: startedAt });
  const metricsText = () => prom ? prom.text() : Promise.resolve("");
  // `/metrics` on the traffic port only when configured (the seed always exposed it there).
  const serveHandler: Handler = (req, info) => {
    const m = config.metrics;
    if (m.on_main_listener && req.method === "GET" && new URL(req.url).pathname === m.path) {
      return metricsText().then((t) =>
        new Response(t, { headers: { "content-type": prom?.contentType ?? "text/plain" } })
      );
    }
    return handler(req, info);
  };

  const main = parseListenAddr(config.listen_addr);
  if (typeof main === "string") throw new Error(main);
  const tls = config.tls?.cert_path && config.tls.key_path
    ? {
      cert: await Deno.readTextFile(config.tls.cert_path),
      key: await Deno.readTextFile(config.tls.key_path),
    }
    : undefined;
  const listeners: Listener[] = [listen(main, { handler: serveHandler, logger, ...tls })];
  const notAfter = tls ? certificateNotAfter(tls.cert) : null;
  if (notAfter !== null) metrics.certificateExpiry(config.tls?.cert_path ?? "main", notAfter);
  if (config.http_redirect) {
    const addr = parseListenAddr(config.http_redirect.listen_addr);
    if (typeof addr === "string") throw new Error(addr);
    const status = config.http_redirect.status_code;
    const httpsPort = listeners[0].port;
    listeners.push(listen(addr, {
      logger,
      handler: (req) => Promise.resolve(httpsRedirect(req, { status, httpsPort })),
    }));
  }
  // HTTP/3 beside the TLS listener; Alt-Svc is advertised only while it is actually up.
  let h3: H3Listener | null = null;
  if (config.protocols.http3_enabled && tls) {
    const { http3_config } = config.protocols;
    h3 = await startH3Beside(listeners[0], {
      ...tls,
      handler: serveHandler,
      logger,
      options: http3_config,
    });
    if (h3) current = Object.freeze({ ...current, altSvc: altSvcValue(h3.port, ALT_SVC_MAX_AGE) });
  } else if (config.protocols.http3_enabled) {
    logger.warn("protocols.http3_enabled needs tls.cert_path and tls.key_path; HTTP/3 is off");
  }
  const health = startHealthChecks(config, { registry: upstreams, logger });
  logger.info("Prox listening", {
    addr: `${listeners[0].hostname}:${listeners[0].port}`,
    tls: Boolean(tls),
    routes: Object.keys(config.routes).length,
  });
  let admin: AdminListener | null = null;
  if (config.admin) {
    const addr = parseListenAddr(config.admin.listen_addr);
    if (typeof addr === "string") throw new Error(addr);
    admin = startAdmin(addr, {
      logger,
      token: () => config.admin?.token,
      callbacks: {
        ready: () => !draining,
        reload: () => server.reload(),
        effectiveConfig: () => config,
        metricsText,
        metricsContentType: prom?.contentType,
        status: () =>
          buildStatus(current, {
            recorder,
            now: Date.now(),
            startedAt,
            version: opts.version ?? "dev",
            ready: !draining,
            draining,
            lastReload: last,
            listeners: [
              ...listeners.map((l, i) => ({
                name: i === 0 ? "main" : "http_redirect",
                addr: `${l.hostname}:${l.port}`,
                tls: l.tls,
              })),
              { name: "admin", addr: `${admin!.hostname}:${admin!.port}`, tls: false },
            ],
            limiterKeys: Object.fromEntries(
              current.router.entries.filter((e) => e.value.rateLimit).map((e) => [
                e.value.id,
                rateLimits.memory.keyCount(e.value.rateLimit!.id),
              ]),
            ),
          }),
      },
    });
  }

  const server: ProxServer = {
    port: listeners[0].port,
    listeners,
    handler,
    admin,
    upstreams,
    h3,
    snapshot: () => current,
    lastReload: () => last,
    async reload(): Promise<ReloadResult> {
      const at = Date.now();
      try {
        const next = await loadSource(source);
        if (!next.config) {
          last = { ok: false, version, issues: next.issues, at };
          metrics.configReload(last);
          logger.error("Reload rejected; the current config keeps serving", {
            issues: next.issues.filter((i) => i.severity === "error").map((i) =>
              `${i.file}:${i.line}:${i.col}: ${i.path}: ${i.message}`
            ),
          });
          return last;
        }
        const snap = buildSnapshot(next.config, {
          version: version + 1,
          files: await readReferencedFiles(next.config),
          altSvc: current.altSvc,
          env: denoEnv.env,
        });
        version++;
        const prev = config;
        config = next.config;
        current = snap;
        // WebSockets on routes the reload left unchanged stay connected; the others get 1001.
        websockets.retain(
          (id) => JSON.stringify(prev.routes[id]) === JSON.stringify(config.routes[id]),
          1001,
          "Route changed by a config reload",
        );
        upstreams.retain(configuredTargets(config), Object.keys(config.routes));
        health.update(config);
        await rateLimits.configure(
          config.rate_limit_store,
          limiterIds(snap.router.entries.map((e) => e.value)),
        );
        last = { ok: true, version, issues: next.issues, at };
        accessLog = accessLogFor(config);
        metrics.backendsConfigured(targetsOf(snap));
        metrics.configReload(last);
        logger.info("Config reloaded", { version });
        return last;
      } catch (err) {
        last = {
          ok: false,
          version,
          issues: [{
            severity: "error",
            file: "path" in source ? source.path : source.name,
            line: 1,
            col: 1,
            path: "",
            message: `Cannot reload: ${err instanceof Error ? err.message : String(err)}`,
          }],
          at,
        };
        metrics.configReload(last);
        logger.error("Reload failed; the current config keeps serving", {
          error: last.issues[0].message,
        });
        return last;
      }
    },
    async shutdown(): Promise<void> {
      draining = true;
      websockets.closeAll(1001, "Server shutting down");
      if (current.altSvc) current = Object.freeze({ ...current, altSvc: null });
      await health.close();
      const grace = config.shutdown_timeout;
      const h3Down = h3?.shutdown(grace); // GOAWAY + drain, bounded by the same grace
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), grace));
      const done = Promise.all(listeners.map((l) => l.shutdown())).then(() => "done" as const);
      const outcome = await Promise.race([done, timeout]);
      clearTimeout(timer);
      if (outcome === "timeout") {
        logger.warn("Shutdown timeout reached; closing remaining connections", { graceMs: grace });
        await Promise.all(listeners.map((l) => l.close()));
      }
      await h3Down;
      await upstream.close();
      if (!opts.rateLimits) await rateLimits.close();
      await admin?.shutdown();
    },
  };
  return server;
}

/** The plain-HTTP listener's answer: 308 to https, except ACME HTTP-01 challenges. */
export function httpsRedirect(req: Request, opts: { status: number; httpsPort: number }): Response {
  const url = new URL(req.url);
  if (url.pathname.startsWith("/.well-known/acme-challenge/")) {
    return new Response("Not found\n", { status: 404 });
  }
  const host = (req.headers.get("host") ?? url.hostname).replace(/:\d+$/, "");
  const port = opts.httpsPort === 443 ? "" : `:${opts.httpsPort}`;
  return new Response(null, {
    status: opts.status,
    headers: { location: `https://${host}${port}${url.pathname}${url.search}` },
  });
}
