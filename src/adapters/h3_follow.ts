// Keeps the HTTP/3 listener in step with the TCP TLS listener across reloads and upgrades:
// started beside it, moved with its port, re-certified in place, stopped when turned off.
// UDP has no SO_REUSEPORT in Deno's QUIC API, so during a takeover the old process holds the
// port until it exits: a failed bind is retried with backoff (one timer) until it succeeds.
// For the same reason HTTP/3 turned off by a reload is only paused (port kept) until turned on.

import type { Config } from "../config/schema.ts";
import type { Handler, Logger, Metrics } from "../ports.ts";
import { ALT_SVC_MAX_AGE, altSvcValue, startH3Beside } from "./h3/mod.ts";
import type { H3Listener } from "./h3/mod.ts";

/** Deno's QUIC API exists only with its unstable net API (`--unstable-net`). */
const QUIC = "QuicEndpoint" in Deno;
/** The missing API is reported once per process. */
let warnedNoQuic = false;

/** The HTTP/3 side of the server. */
export interface H3Follower {
  readonly listener: H3Listener | null;
  /** The Alt-Svc value to advertise: only while HTTP/3 is actually up. */
  altSvc(): string | null;
  /** Matches HTTP/3 to `config` beside `main` (the TCP TLS listener, if any) with `tls`. */
  sync(
    main: { hostname: string; port: number } | undefined,
    config: Config,
    tls: { cert?: string; key?: string },
  ): Promise<void>;
  /** GOAWAY and drain for up to `graceMs`; no more retries. */
  shutdown(graceMs: number): Promise<void>;
}

/** Creates the follower; `onChange` runs whenever HTTP/3 comes up or goes down. */
export function followH3(opts: {
  handler: Handler;
  logger: Logger;
  metrics?: Metrics;
  onChange: () => void;
  /** False once the config `c` is superseded or the server drains (stops retries). */
  current: (c: Config) => boolean;
}): H3Follower {
  const { logger } = opts;
  let h3: H3Listener | null = null;
  /** HTTP/3 turned off at `at`: paused, still bound (freeing the port would need a GC). */
  let parked: H3Listener | null = null;
  let at = "";
  let material = "";
  let options = "";
  let retry: ReturnType<typeof setTimeout> | undefined;
  let retryMs = 250;
  let stopped = false;
  /** The config's connection limits, which the listener reads per connection (live). */
  let limits: { total?: number; perIp?: number; ipv6Prefix?: number } = {};

  async function sync(
    main: { hostname: string; port: number } | undefined,
    c: Config,
    tls: { cert?: string; key?: string },
  ): Promise<void> {
    limits = {
      total: c.limits.max_connections,
      perIp: c.limits.max_connections_per_ip,
      ipv6Prefix: c.limits.ipv6_prefix,
    };
    // No TCP TLS listener yet (ACME before its first certificate): nothing to stand beside.
    if (stopped || !main) return;
    const was = h3;
    const want = c.protocols.http3_enabled && tls.cert !== undefined && tls.key !== undefined;
    if (c.protocols.http3_enabled && !want) {
      logger.warn("protocols.http3_enabled needs tls.cert_path and tls.key_path; HTTP/3 is off");
    }
    const where = `${main.hostname}|${main.port}`;
    if (h3 && (!want || where !== at)) {
      const old = h3;
      h3 = null;
      if (where === at) {
        parked = old;
        void old.pause(c.shutdown_timeout);
      } else void old.shutdown(c.shutdown_timeout);
    }
    if (parked && where !== at) {
      void parked.shutdown(0);
      parked = null;
    }
    if (want && !h3 && parked) {
      h3 = parked;
      parked = null;
      h3.resume();
    }
    if (want && !h3 && !QUIC) {
      // A bare `deno run dist/prox.js`: retrying could never succeed (an error every 5 s).
      if (!warnedNoQuic) {
        logger.warn(
          "protocols.http3_enabled needs Deno's unstable net API (--unstable-net, which deno.json and make compile turn on); HTTP/3 is off",
        );
      }
      warnedNoQuic = true;
    } else if (want && !h3) {
      h3 = await startH3Beside(main, {
        cert: tls.cert!,
        key: tls.key!,
        handler: opts.handler,
        logger,
        metrics: opts.metrics,
        options: c.protocols.http3_config,
        connectionLimits: () => limits,
      });
      at = where;
      material = tls.cert! + tls.key!;
      options = JSON.stringify(c.protocols.http3_config);
      clearTimeout(retry);
      if (h3) retryMs = 250;
      else {
        retry = setTimeout(() => {
          if (opts.current(c)) void sync(main, c, tls);
        }, retryMs);
        retryMs = Math.min(retryMs * 2, 5000);
      }
    } else if (want && h3 && material !== tls.cert! + tls.key!) {
      h3.setCertificate(tls.cert!, tls.key!);
      material = tls.cert! + tls.key!;
    }
    // Transport options are fixed per QUIC endpoint, and a UDP port cannot be rebound in the
    // same process (Deno frees it only on garbage collection): they apply at the next start.
    if (want && h3 && options !== JSON.stringify(c.protocols.http3_config)) {
      options = JSON.stringify(c.protocols.http3_config);
      logger.warn("protocols.http3_config changed; it applies when Prox restarts (--takeover)");
    }
    if (h3 !== was) opts.onChange();
  }

  return {
    get listener() {
      return h3;
    },
    altSvc: () => h3 ? altSvcValue(h3.port, ALT_SVC_MAX_AGE) : null,
    sync,
    async shutdown(graceMs) {
      stopped = true;
      clearTimeout(retry);
      await Promise.all([h3?.shutdown(graceMs), parked?.shutdown(0)]);
    },
  };
}
