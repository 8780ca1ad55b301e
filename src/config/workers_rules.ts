// What `workers: N` (N > 1) asks of the rest of the config. Each worker is a separate process
// with its own memory, sharing the TCP ports through SO_REUSEPORT; whatever a worker keeps in
// memory (rate-limit buckets, metrics) is per worker. Pure: used by validate.ts and by the
// supervisor for a `--workers N` override.

import { parseListenAddr } from "./listen.ts";
import type { Config } from "./schema.ts";

/** One finding about a multi-worker config (located by the caller). */
export interface WorkersIssue {
  severity: "error" | "warning";
  path: (string | number)[];
  message: string;
  hint?: string;
}

/** Checks `config` for `config.workers` processes; empty when workers is 1. */
export function workersIssues(config: Config): WorkersIssue[] {
  const n = config.workers;
  if (n <= 1) return [];
  const issues: WorkersIssue[] = [];
  const fixedPort = (path: string[], text: string, example = "0.0.0.0:8080") => {
    const addr = parseListenAddr(text);
    if (typeof addr !== "string" && addr.port === 0) {
      issues.push({
        severity: "error",
        path,
        message: `workers: ${n} needs a fixed port in "${text}": with port 0 each worker would ` +
          "listen on a different port",
        hint: `Give the port explicitly, e.g. ${example}`,
      });
    }
  };
  fixedPort(["listen_addr"], config.listen_addr);
  if (config.http_redirect) {
    fixedPort(["http_redirect", "listen_addr"], config.http_redirect.listen_addr);
  }
  // And every tcp (layer 4) listener (checked here, not only in validate, for a --workers
  // override of a config validated with workers: 1).
  for (const [name, e] of Object.entries(config.tcp ?? {})) {
    fixedPort(["tcp", name, "listen_addr"], e.listen_addr, "0.0.0.0:5433");
  }
  // Every worker binds the ACME challenge listener too.
  const acme = config.tls?.acme;
  if (acme?.enabled && acme.http_listen_addr !== undefined) {
    fixedPort(["tls", "acme", "http_listen_addr"], acme.http_listen_addr);
  }
  // tls.acme is fine: the workers share storage_path, one orders under its lock file, the others
  // load the result, and any worker answers HTTP-01 from the shared challenge files.
  if (config.rate_limit_store.type === "memory") {
    for (const [key, route] of Object.entries(config.routes)) {
      if (!route.rate_limit && !route.rate_limits) continue;
      issues.push({
        severity: "warning",
        path: ["routes", key, route.rate_limit ? "rate_limit" : "rate_limits"],
        message: `With workers: ${n} and the in-memory rate_limit_store, each worker enforces ` +
          `its own buckets: a client may get up to ${n}x the limit`,
        hint:
          'For exact limits across workers use rate_limit_store: { type: redis, url: "redis://…" }',
      });
    }
  }
  // Requests in progress are counted in memory, whatever the store: a cap meant for a fragile
  // upstream (`by: route`) lets N times as many through.
  for (const [key, route] of Object.entries(config.routes)) {
    if (!route.concurrency_limit) continue;
    issues.push({
      severity: "warning",
      path: ["routes", key, "concurrency_limit"],
      message: `With workers: ${n} each worker counts its own requests in progress: up to ${n}x ` +
        "max at once",
      hint: `Divide max by ${n} for the same total, or use upstream limits the target enforces`,
    });
  }
  return issues;
}
