// The fixture of the response cache's pipeline tests (cache_test.ts, cache_flow_test.ts): one
// caching route in front of a fake upstream that records what reached it, on a clock the test
// moves.

import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { buildSnapshot } from "./snapshot.ts";
import { createHandler } from "./pipeline.ts";
import { noopMetrics, silentLogger } from "../ports.ts";
import type { AccessRecord, ClientInfo, Compressor, Metrics, UpstreamRequest } from "../ports.ts";

export const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

export const T0 = Date.UTC(2026, 10, 27, 0, 0, 0);

/**
 * A handler for one caching route in front of `answer`, on a clock the test moves. Records
 * what reached the upstream and the cache metric.
 */
export function setup(
  answer: (r: UpstreamRequest, n: number) => Response | Promise<Response>,
  opts: {
    cache?: string;
    extra?: string;
    top?: string;
    routes?: string;
    /** For routes with `compress`. */
    compressor?: Compressor;
  } = {},
) {
  const yaml = `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
${opts.top ?? ""}
routes:
  "/":
    type: proxy
    target: "http://10.1.1.1/base"
    cache: ${opts.cache ?? "true"}
    ${opts.extra ?? ""}
${opts.routes ?? ""}`;
  const { config, issues } = loadConfigText(yaml, { file: "t.yaml", env: { exists: () => true } });
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const clock = { t: T0 };
  const sent: UpstreamRequest[] = [];
  const results: string[] = [];
  const access: AccessRecord[] = [];
  const warnings: string[] = [];
  const refreshes: string[] = [];
  const metrics: Metrics = {
    ...noopMetrics,
    cache: (_r, result) => void results.push(result),
    cacheRefresh: (_r, result) => void refreshes.push(result),
  };
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: {
      send(r) {
        sent.push(r);
        return Promise.resolve(answer(r, sent.length));
      },
      close: () => Promise.resolve(),
    },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => clock.t, monotonic: () => clock.t },
    logger: { ...silentLogger, warn: (m) => void warnings.push(m) },
    metrics,
    access: (rec) => access.push(rec),
    random: () => 0.5,
    compressor: opts.compressor,
  });
  const get = async (path: string, init: RequestInit = {}) => {
    const res = await handler(new Request(`http://example.com${path}`, init), info);
    return { res, text: await res.text() };
  };
  return { handler, get, clock, sent, results, refreshes, access, warnings, snapshot };
}

export const date = (ms: number) => new Date(ms).toUTCString();
