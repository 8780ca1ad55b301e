import assert from "node:assert/strict";
import { interopTest, startUpstream, waitFor } from "../_harness.ts";
import { startRedis } from "../_redis.ts";
import { startProxy } from "./_proxy.ts";
import { startServer } from "../../src/server.ts";
import { noopMetrics, silentLogger } from "../../src/ports.ts";
import type { Logger, Metrics } from "../../src/ports.ts";

const ROUTES = ["token_bucket", "fixed_window", "sliding_window", "gcra"];

function config(upstream: string, redisUrl: string): string {
  const routes = ROUTES.map((a) => `
  "/${a}":
    type: proxy
    target: "${upstream}"
    rate_limit: { by: ip, requests: 5, period: 1d, algorithm: ${a} }`).join("");
  return `
rate_limit_store: { type: redis, url: "${redisUrl}", timeout: 2s }
routes:${routes}
`;
}

interopTest(
  "rate limit with a Redis store is global: two Prox instances allow exactly `requests` in total",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    await using up = await startUpstream(() => new Response("ok"));
    await using a = await startProxy(config(up.url, redis.url));
    await using b = await startProxy(config(up.url, redis.url));
    for (const route of ROUTES) {
      // 24 concurrent requests, alternating between the instances: the Lua script is atomic.
      const results = await Promise.all(
        Array.from({ length: 24 }, async (_, i) => {
          const res = await fetch(`${(i % 2 ? a : b).url}/${route}`);
          await res.body?.cancel();
          return res.status;
        }),
      );
      assert.equal(results.filter((s) => s === 200).length, 5, `${route}: ${results}`);
      assert.equal(results.filter((s) => s === 429).length, 19, route);
      // Both instances keep refusing afterwards, and agree on the headers.
      for (const p of [a, b]) {
        const res = await fetch(`${p.url}/${route}`);
        await res.body?.cancel();
        assert.equal(res.status, 429);
        assert.ok(Number(res.headers.get("retry-after")) >= 1);
        assert.match(res.headers.get("ratelimit") ?? "", /^"default";r=0;t=\d+$/);
      }
    }
  },
);

interopTest(
  "rate limit with an unreachable Redis fails open or closed as configured and counts errors",
  ["redis-server"],
  async () => {
    let url: string;
    {
      await using redis = await startRedis();
      url = redis.url;
    } // stopped: nothing listens there any more
    await using up = await startUpstream(() => new Response("ok"));
    const errors: string[] = [];
    const metrics: Metrics = {
      ...noopMetrics,
      rateLimit: (route, action) => void errors.push(`${route}:${action}`),
    };
    const warnings: string[] = [];
    const logger: Logger = { ...silentLogger, warn: (m) => void warnings.push(m) };
    for (const onError of ["allow", "deny"] as const) {
      errors.length = 0;
      warnings.length = 0;
      const server = await startServer({
        name: "redis-down.yaml",
        text: `listen_addr: "127.0.0.1:0"
rate_limit_store: { type: redis, url: "${url}", timeout: 100ms, on_error: ${onError} }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 100, period: 1m, status_code: 503, message: "limiter down" }
`,
      }, { logger, metrics });
      try {
        for (let i = 0; i < 3; i++) {
          const res = await fetch(`http://127.0.0.1:${server.port}/`);
          const body = await res.text();
          if (onError === "allow") assert.equal(res.status, 200);
          else {
            assert.equal(res.status, 503);
            assert.match(body, /^limiter down/);
            assert.equal(res.headers.get("retry-after"), "2");
          }
        }
        assert.deepEqual(errors, ["/:error", "/:error", "/:error"]);
        const logged = warnings.filter((w) => w.startsWith("Rate limit store failed"));
        assert.equal(logged.length, 1, warnings.join("; "));
      } finally {
        await server.shutdown();
      }
    }
  },
);

interopTest(
  "rate limit with Redis recovers after an outage: fail open while down, shared limit after",
  ["redis-server"],
  async () => {
    await using up = await startUpstream(() => new Response("ok"));
    let redis = await startRedis();
    const port = redis.port;
    const yaml = `
rate_limit_store: { type: redis, url: "${redis.url}", timeout: 200ms, on_error: allow }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: route, requests: 2, period: 1d, algorithm: fixed_window }
`;
    await using prox = await startProxy(yaml);
    const status = async () => {
      const res = await fetch(`${prox.url}/`);
      await res.body?.cancel();
      return res.status;
    };
    try {
      assert.deepEqual([await status(), await status(), await status()], [200, 200, 429]);
      await redis[Symbol.asyncDispose]();
      // Down: allowed (on_error: allow), even though the limit was reached.
      assert.deepEqual([await status(), await status()], [200, 200]);
      redis = await startRedis({ port }); // empty again: no persistence
      await waitFor(async () => (await status()) === 429 || null, {
        what: "limiting to resume after Redis restarts",
        intervalMs: 100,
      });
    } finally {
      await redis[Symbol.asyncDispose]();
    }
  },
);

interopTest(
  "rate limit with Redis holds the sustained rate across two instances (5 per second for 1.5 s)",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    await using up = await startUpstream(() => new Response("ok"));
    const yaml = `
rate_limit_store: { type: redis, url: "${redis.url}", timeout: 2s }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 5, period: 1s }
`;
    await using a = await startProxy(yaml);
    await using b = await startProxy(yaml);
    let allowed = 0;
    let firstSend = 0, firstRecv = 0, lastSend = 0, lastRecv = 0;
    for (let i = 0; lastRecv - firstSend < 1_500; i++) {
      const sent = Date.now();
      const res = await fetch(`${(i % 2 ? a : b).url}/`);
      await res.body?.cancel();
      const recv = Date.now();
      if (i === 0) [firstSend, firstRecv] = [sent, recv];
      [lastSend, lastRecv] = [sent, recv];
      if (res.status === 200) allowed++;
      else assert.equal(res.status, 429);
    }
    // A burst of 5, then one every 200 ms, whichever instance is asked.
    const most = 5 + Math.floor((5 * (lastRecv - firstSend)) / 1000);
    const least = 5 + Math.floor((5 * (lastSend - firstRecv)) / 1000) - 1;
    assert.ok(
      allowed <= most && allowed >= least,
      `${allowed} allowed, expected ${least}..${most}`,
    );
  },
);

interopTest(
  "rate_limit_store password_env: the password comes from the environment, not the url",
  ["redis-server"],
  async () => {
    const password = "s3cret p@ss:/word";
    await using redis = await startRedis({ args: ["--requirepass", password] });
    await using up = await startUpstream(() => new Response("ok"));
    const name = `PROX_TEST_REDIS_PW_${crypto.randomUUID().slice(0, 8)}`;
    Deno.env.set(name, password);
    try {
      const yaml = (extra: string) => `
rate_limit_store: { type: redis, url: "${redis.url}", timeout: 2s, on_error: deny${extra} }
routes:
  "/": { type: proxy, target: "${up.url}", rate_limit: { by: ip, requests: 2, period: 1d } }
`;
      const statuses = async (url: string) => {
        const out: number[] = [];
        for (let i = 0; i < 3; i++) {
          const res = await fetch(url);
          await res.body?.cancel();
          out.push(res.status);
        }
        return out;
      };
      {
        // Redis counts (on_error: deny would refuse the first request had AUTH failed).
        await using prox = await startProxy(yaml(`, password_env: ${name}`));
        assert.deepEqual(await statuses(prox.url), [200, 200, 429]);
      }
      {
        // Without it Redis refuses every command (NOAUTH) and on_error decides.
        await using prox = await startProxy(yaml(", prefix: other"));
        const got = await statuses(prox.url);
        assert.ok(got.every((s) => s !== 200), `${got}`);
      }
    } finally {
      Deno.env.delete(name);
    }
  },
);
