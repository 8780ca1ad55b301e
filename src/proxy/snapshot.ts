// Config → frozen Snapshot: routes compiled once, everything a request needs precomputed. A
// reload builds a whole new Snapshot and swaps it in one assignment; in-flight requests keep the
// one they pinned.

import { compileRegex } from "../domain/conditions.ts";
import { statusMatcher } from "../domain/health.ts";
import { compileClientCert } from "../domain/client_cert.ts";
import type { CertCheck } from "../domain/client_cert.ts";
import type { PathRegex } from "../domain/rewrite.ts";
import { compileRouter, parseRouteKey } from "../domain/router.ts";
import type { RouteEntry, Router } from "../domain/router.ts";
import { compileMatch, compileRouteRules } from "../domain/rules.ts";
import { requestInput } from "./filters/rules.ts";
import type { RequestContext } from "./context.ts";
import { parseCidr } from "../domain/ip.ts";
import type { Cidr } from "../domain/ip.ts";
import type { Config, IpAccessConfig, RouteConfig, TimeoutsConfig } from "../config/schema.ts";
import type { UpstreamTimeouts, UpstreamTls } from "../ports.ts";
import { upstreamTlsOf } from "./upstream_tls.ts";
import { discoveredHost, discoverUrl } from "../config/discovered.ts";
import type { RouteRulesSpec } from "../domain/rules.ts";
import type { RouteRules } from "./filters/rules.ts";
import { compileRateLimits } from "./filters/rate_limit.ts";
import { compileConcurrency } from "./filters/concurrency.ts";
import type { CompiledConcurrency } from "./filters/concurrency.ts";
import type { CompiledRateLimit } from "./filters/rate_limit.ts";
import { compressPolicy } from "../domain/compress.ts";
import { compileForwardAuth } from "./filters/forward_auth.ts";
import type { CompiledForwardAuth } from "./filters/forward_auth.ts";
import { compileIpAccess, withListFiles } from "../domain/ip_access.ts";
import type { IpAccess } from "../domain/ip_access.ts";
import { compileBasicAuth } from "./filters/basic_auth.ts";
import type { CompiledBasicAuth } from "./filters/basic_auth.ts";
import { compileJwtAuth } from "./filters/jwt_auth.ts";
import type { CompiledJwtAuth, TokenCaches } from "./filters/jwt_auth.ts";
import type { CompressPolicy } from "../domain/compress.ts";
import type { BandwidthPolicy } from "../domain/bandwidth.ts";
import { mirrorPolicy } from "./mirror.ts";
import { compilePages } from "../domain/error_pages.ts";
import type { PageTable } from "../domain/error_pages.ts";
import type { MirrorPolicy } from "./mirror.ts";
import type { CachePolicy } from "./cache.ts";
import { CacheStores } from "./cache_stores.ts";
import { compileCors } from "../domain/cors.ts";
import type { CorsPolicy } from "../domain/cors.ts";

/** A route ready to serve: its config plus what was derived from it at load time. */
export interface CompiledRoute {
  /** Stable id: the route key as written. Used for metrics labels and runtime state. */
  id: string;
  prefix: string;
  config: RouteConfig;
  timeouts: UpstreamTimeouts;
  /** `timeouts.total` (route, else top level): the whole exchange, response body included. */
  totalMs?: number;
  /** Upstream target URLs (proxy: one; load_balance: all; others: none). */
  targets: string[];
  /** `discover`: the name and port requests carry as Host (targets are its addresses). */
  upstreamHost?: string;
  /**
   * The route's `tls` with its CA and client certificate files, which the server read before
   * building; undefined without `tls`.
   */
  upstreamTls?: UpstreamTls;
  /** `path_regex`, compiled (rules whose regex does not compile are left out: validate says so). */
  pathRegex?: PathRegex[];
  /** Compiled header and body rules. */
  rules: RouteRules;
  /** `sticky.secret_env`'s value, which keys the sticky cookie's value (pool.ts). */
  stickySecret?: string;
  /** The route's rate limits, in order; empty when it has none (filters/rate_limit.ts). */
  rateLimits: CompiledRateLimit[];
  /** The limits run before authentication: all but `by: jwt_claim` ones, in order. */
  firstLimits: CompiledRateLimit[];
  /** `by: jwt_claim` limits, run after jwt_auth (they need its claims); usually empty. */
  claimLimits: CompiledRateLimit[];
  /** `concurrency_limit`, null without one (filters/concurrency.ts). */
  concurrency: CompiledConcurrency | null;
  /** Response compression (`compress`), null when the route does not compress. */
  compress: CompressPolicy | null;
  /** `bandwidth`: how fast each answer's body goes out (filters/bandwidth.ts); null: unpaced. */
  bandwidth: BandwidthPolicy | null;
  /** Traffic mirroring (`mirror` on proxy and load_balance routes), null without it. */
  mirror: MirrorPolicy | null;
  /** The response cache (`cache`), null when the route has none (proxy/cache.ts). */
  cache: CachePolicy | null;
  /** The route's own `error_pages` (looked up before the top level's); empty without. */
  errorPages: PageTable;
  /** `intercept_upstream`: the upstream's error answers get the pages too. */
  intercept: boolean;
  /** The auth service asked before the action (`forward_auth`), null when none. */
  forwardAuth: CompiledForwardAuth | null;
  /** The route's `ip_access`, else the top level's; null when neither restricts anything. */
  ipAccess: IpAccess | null;
  /** The route's `basic_auth`, null without one. */
  basicAuth: CompiledBasicAuth | null;
  /** The route's `cors` (filters/cors.ts), null without one. */
  cors: CorsPolicy | null;
  /** The route's `jwt_auth`, null without one. */
  jwtAuth: CompiledJwtAuth | null;
  /** The route's `client_cert`: whose TLS client certificates may use it; null without one. */
  clientCert: CertCheck | null;
}

/** Everything the pipeline reads for one request. Never mutated after build. */
export interface Snapshot {
  version: number;
  config: Config;
  router: Router<CompiledRoute, RequestContext>;
  trusted: readonly Cidr[];
  /** The top-level `ip_access` (also for requests no route matches), null without one. */
  ipAccess: IpAccess | null;
  /** `Alt-Svc` value to add to TCP responses while HTTP/3 is up, else null. */
  altSvc: string | null;
  /** The top level's `error_pages`; empty without. */
  errorPages: PageTable;
  /** True when any page is configured: only then does an error answer look for one. */
  hasErrorPages: boolean;
  /** `log.access_log_filter`: whether a request gets its access line; absent: every one does. */
  accessFilter?: AccessFilter;
}

/**
 * Whether a request with this status, duration (ms) and retries gets an access line; `failed`:
 * its answer was cut short, or a gRPC call's status was not OK.
 */
export type AccessFilter = (
  status: number,
  ms: number,
  retries: number,
  failed: boolean,
) => boolean;

/** `log.access_log_filter` compiled: any criterion it names lets a line through. */
export function accessFilterOf(spec: Config["log"]["access_log_filter"]): AccessFilter | undefined {
  if (!spec) return undefined;
  const status = spec.status ? statusMatcher(spec.status) : () => false;
  const min = spec.min_duration ?? Infinity;
  const { retried, failed } = spec;
  return (s, ms, retries, f) => status(s) || ms >= min || (retried && retries > 0) || (failed && f);
}

/** Default upstream timeouts (ms) when neither the route nor the top level sets one. */
export const DEFAULT_TIMEOUTS: UpstreamTimeouts = {
  connect: 5_000,
  responseHeader: 60_000,
  idle: 60_000,
};

function mergeTimeouts(global: TimeoutsConfig, route?: TimeoutsConfig): UpstreamTimeouts {
  return {
    connect: route?.connect ?? global.connect ?? DEFAULT_TIMEOUTS.connect,
    responseHeader: route?.response_header ?? global.response_header ??
      DEFAULT_TIMEOUTS.responseHeader,
    idle: route?.idle ?? global.idle ?? DEFAULT_TIMEOUTS.idle,
  };
}

function targetsOf(route: RouteConfig): string[] {
  switch (route.type) {
    case "proxy":
      return [route.target];
    case "load_balance":
      return route.targets.map((t) => typeof t === "string" ? t : t.url);
    case "websocket":
      return [route.target];
    case "static":
    case "redirect":
    case "respond":
      return [];
  }
}

/** A route's own `compress`, else the top level's for the route types that compress. */
function compressOf(route: RouteConfig, config: Config) {
  switch (route.type) {
    case "proxy":
    case "load_balance":
    case "static":
    case "respond":
      return route.compress ?? config.compress;
    case "redirect":
    case "websocket":
      return undefined;
  }
}

/**
 * Compiled lists with their files' entries (read by the server), or null when they restrict
 * nothing (all empty).
 */
function accessOf(
  lists: IpAccessConfig | undefined,
  files: ReadonlyMap<string, string> | undefined,
): IpAccess | null {
  if (!lists) return null;
  // The same lists (a feed named by many routes, or a route's equal to the top level's) are
  // compiled once per snapshot: a 500,000-line file costs seconds and tens of MB each time.
  const key = JSON.stringify(lists);
  const cache = files ? compiledFor.get(files) : undefined;
  if (cache?.has(key)) return cache.get(key)!;
  const compiled = compileAccess(lists, files);
  if (files) {
    if (!cache) compiledFor.set(files, new Map([[key, compiled]]));
    else cache.set(key, compiled);
  }
  return compiled;
}

/** Compiled lists by their config, per files map (one build's: its files do not change). */
const compiledFor = new WeakMap<ReadonlyMap<string, string>, Map<string, IpAccess | null>>();

function compileAccess(
  lists: IpAccessConfig,
  files: ReadonlyMap<string, string> | undefined,
): IpAccess | null {
  const all = withListFiles(lists, (f) => files?.get(f));
  if (all.allow.length === 0 && all.deny.length === 0 && !all.allowListed) return null;
  return compileIpAccess(all);
}

/** What buildSnapshot takes besides the config. */
export interface SnapshotOptions {
  version: number;
  /** Files the config names, read by the server: CA certificates, error pages. */
  files?: ReadonlyMap<string, string>;
  altSvc?: string | null;
  /** Environment lookup for `{env.NAME}` placeholders. */
  env?: (name: string) => string | undefined;
  /** Response cache stores kept across reloads; without it, caching routes start empty. */
  caches?: CacheStores;
  /** jwt_auth's verified tokens kept across reloads; without it, each snapshot starts empty. */
  tokens?: TokenCaches;
}

/** Builds a snapshot; throws only on programming errors (validation has already run). */
export function buildSnapshot(config: Config, opts: SnapshotOptions): Snapshot {
  const steps = snapshotSteps(config, opts);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/**
 * buildSnapshot one route at a time: it yields after each route, so a caller may let other work
 * run between them (a reload of thousands of routes keeps answering requests meanwhile).
 */
export function* snapshotSteps(config: Config, opts: SnapshotOptions): Generator<void, Snapshot> {
  const caches = opts.caches ?? new CacheStores();
  caches.share(config.cache?.max_size);
  const pages = (spec: Config["error_pages"]): PageTable =>
    spec
      ? compilePages(spec, {
        read: (file) => opts.files?.get(file),
        env: opts.env ?? (() => undefined),
        problems: [],
      })
      : [];
  const errorPages = pages(config.error_pages);
  let hasErrorPages = errorPages.length > 0;
  const ipAccess = accessOf(config.ip_access, opts.files);
  const entries: RouteEntry<CompiledRoute, RequestContext>[] = [];
  for (const [key, route] of Object.entries(config.routes)) {
    const { host, prefix } = parseRouteKey(key);
    const hosts = [...(host ? [host] : []), ...(route.hosts ?? []).map((h) => h.toLowerCase())];
    const timeouts = "timeouts" in route
      ? mergeTimeouts(config.timeouts, route.timeouts)
      : mergeTimeouts(config.timeouts);
    const rateLimits = compileRateLimits(key, route);
    const compiled: CompiledRoute = {
      id: key,
      prefix,
      config: route,
      timeouts,
      totalMs: ("timeouts" in route ? route.timeouts?.total : undefined) ?? config.timeouts.total,
      targets: targetsOf(route),
      rateLimits,
      firstLimits: rateLimits.filter((l) => l.config.by !== "jwt_claim"),
      claimLimits: rateLimits.filter((l) => l.config.by === "jwt_claim"),
      concurrency: "concurrency_limit" in route && route.concurrency_limit
        ? compileConcurrency(key, route.concurrency_limit)
        : null,
      compress: compressPolicy(compressOf(route, config)),
      bandwidth: "bandwidth" in route && route.bandwidth
        ? { rate: route.bandwidth.rate, after: route.bandwidth.after, per: route.bandwidth.per }
        : null,
      mirror: route.type === "proxy" || route.type === "load_balance"
        ? mirrorPolicy(route.mirror)
        : null,
      cache: route.type === "proxy" || route.type === "load_balance"
        ? caches.policyFor(key, route)
        : null,
      forwardAuth: compileForwardAuth(route, { top: config.forward_auth, files: opts.files }),
      ipAccess: route.ip_access ? accessOf(route.ip_access, opts.files) : ipAccess,
      basicAuth: route.basic_auth
        ? compileBasicAuth(
          route.basic_auth,
          route.basic_auth.users_file === undefined
            ? undefined
            : opts.files?.get(route.basic_auth.users_file),
        )
        : null,
      clientCert: route.client_cert ? compileClientCert(route.client_cert) : null,
      stickySecret: route.type === "load_balance" && typeof route.sticky === "object" &&
          route.sticky.secret_env !== undefined
        ? opts.env?.(route.sticky.secret_env)
        : undefined,
      jwtAuth: route.jwt_auth
        ? compileJwtAuth(route.jwt_auth, {
          files: opts.files,
          env: opts.env,
          id: key,
          tokens: opts.tokens,
        })
        : null,
      rules: compileRouteRules(route as RouteRulesSpec, {
        env: opts.env ?? (() => undefined),
        problems: [],
      }),
      errorPages: pages(route.error_pages),
      cors: "cors" in route && route.cors ? compileCors(route.cors) : null,
      intercept: (route.type === "proxy" || route.type === "load_balance") &&
        route.intercept_upstream,
    };
    if (compiled.errorPages.length > 0) hasErrorPages = true;
    if ("tls" in route) compiled.upstreamTls = upstreamTlsOf(route.tls, opts.files);
    const named = discoveredHost(route);
    if (named !== undefined) {
      // Discovered targets are addresses: requests name the service (Host, TLS server name).
      compiled.upstreamHost = named;
      if (
        named && route.type === "load_balance" && route.discover &&
        /^https:/i.test(discoverUrl(route.discover))
      ) {
        const tls = compiled.upstreamTls;
        compiled.upstreamTls = Object.freeze({
          insecureSkipVerify: tls?.insecureSkipVerify ?? false,
          caCerts: tls?.caCerts,
          client: tls?.client,
          serverName: tls?.serverName ??
            new URL(`https://${named}`).hostname.replace(/^\[|\]$/g, ""),
        });
      }
    }
    if ("path_regex" in route && route.path_regex) {
      compiled.pathRegex = [route.path_regex].flat().flatMap((r) => {
        const re = compileRegex(r.match);
        return typeof re === "string" ? [] : [{ re, replace: r.replace }];
      });
    }
    const entry: RouteEntry<CompiledRoute, RequestContext> = {
      key,
      prefix,
      hosts,
      value: compiled,
    };
    if (route.match) {
      const holds = compileMatch(route.match, []);
      entry.when = (ctx) => holds(requestInput(ctx, ctx.req.headers));
    }
    entries.push(entry);
    yield;
  }
  const trusted = config.trusted_proxies.map(parseCidr).filter((c): c is Cidr => c !== null);
  return Object.freeze({
    version: opts.version,
    config,
    router: compileRouter(entries),
    trusted,
    ipAccess,
    altSvc: opts.altSvc ?? null,
    errorPages,
    hasErrorPages,
    accessFilter: accessFilterOf(config.log.access_log_filter),
  });
}
