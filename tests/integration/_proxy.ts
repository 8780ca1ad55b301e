// Starts a real Prox from YAML text on 127.0.0.1:0 for integration tests.

import { startServer } from "../../src/server.ts";
import type { ProxServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger, Metrics } from "../../src/ports.ts";

/** A running Prox; dispose to shut it down. */
export interface TestProxy extends AsyncDisposable {
  server: ProxServer;
  port: number;
  url: string;
}

/**
 * Starts Prox with `yaml` (its listen_addr is forced to 127.0.0.1:0 unless `keepListen`).
 * `listen_addr` may be omitted from the YAML.
 */
export async function startProxy(
  yaml: string,
  opts: { logger?: Logger; keepListen?: boolean; tls?: boolean; metrics?: Metrics } = {},
): Promise<TestProxy> {
  const text = opts.keepListen ? yaml : `listen_addr: "127.0.0.1:0"\n${yaml}`;
  let server = await startServer({ text, name: "test.yaml" }, {
    logger: opts.logger ?? silentLogger,
    metrics: opts.metrics,
  });
  // HTTP/3 binds UDP on the port number the kernel gave TCP, and a QUIC endpoint of an earlier
  // test in this process may still hold that UDP port (Deno frees it only when the endpoint is
  // garbage-collected): HTTP/3 then retries the bind in vain while that closed endpoint swallows
  // the test's packets, and its QUIC handshake times out. Another port then.
  for (
    let i = 0;
    i < 5 && !server.h3 && /http3_enabled: true/.test(text) && "QuicEndpoint" in Deno;
    i++
  ) {
    await server.shutdown();
    server = await startServer({ text, name: "test.yaml" }, {
      logger: opts.logger ?? silentLogger,
      metrics: opts.metrics,
    });
  }
  const scheme = opts.tls ? "https" : "http";
  return {
    server,
    port: server.port,
    url: `${scheme}://127.0.0.1:${server.port}`,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/**
 * The config most tests start from: health checks off and one proxy route "/" to `target`. The
 * route's own keys may follow, indented by four spaces: `${proxyRoute(up.url)}\n    timeouts: …`.
 */
export function proxyRoute(target: string): string {
  return `
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${target}"`;
}

/**
 * For a test file of Prox's own engines: PROX_H1_ENGINE=deno, with which the suite runs on
 * Deno.serve (.ci/run), would put its listeners on Deno.serve. It is lifted for that file only.
 */
export function onProxEngines(): void {
  let forced: string | undefined;
  Deno.test.beforeAll(() => {
    forced = Deno.env.get("PROX_H1_ENGINE");
    Deno.env.delete("PROX_H1_ENGINE");
  });
  Deno.test.afterAll(() => {
    if (forced !== undefined) Deno.env.set("PROX_H1_ENGINE", forced);
  });
}
