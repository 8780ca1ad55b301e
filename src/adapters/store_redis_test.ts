import assert from "node:assert/strict";
import { interopTest, waitFor } from "../../tests/_harness.ts";
import { startRedis, startRelay } from "../../tests/_redis.ts";
import { createRedisStore, redactUrl, redisTooOld } from "./store_redis.ts";
import { ALGORITHMS, decide, policyOf } from "../domain/rate_limit.ts";
import type { RateLimitState } from "../domain/rate_limit.ts";

interopTest(
  "createRedisStore: Lua scripts decide exactly like the domain functions",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const store = createRedisStore({
      url: redis.url,
      prefix: "t:",
      timeoutMs: 2_000,
      clock: "caller",
    });
    try {
      let seed = 7;
      const rand = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
      const base = 1_795_000_000_000;
      for (const algorithm of ALGORITHMS) {
        for (
          const opts of [{ requests: 5, periodMs: 1_000 }, { requests: 3, periodMs: 700, burst: 4 }]
        ) {
          const policy = policyOf(algorithm, opts);
          let state: RateLimitState | undefined;
          let t = base;
          for (let i = 0; i < 150; i++) {
            // Now and then the clock steps back (Redis's TIME is its host's wall clock).
            t += i % 37 === 36 ? -Math.floor(rand() * 5_000) : Math.floor(rand() * 250);
            const want = decide(policy, state, t);
            state = want.expiresAt > t ? want.state : undefined;
            const got = await store.consume("k", {
              limiter: `${algorithm}-${opts.requests}`,
              policy,
              now: t,
              maxKeys: 10,
            });
            assert.deepEqual(got, {
              allowed: want.allowed,
              remaining: want.remaining,
              resetMs: want.resetMs,
              retryAfterMs: want.retryAfterMs,
            }, `${algorithm} ${JSON.stringify(opts)} request ${i} at +${t - base}`);
          }
        }
      }
    } finally {
      await store.close();
    }
  },
);

interopTest(
  "createRedisStore: a clock stepped back an hour keeps a drained client refused for a period only",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const store = createRedisStore({
      url: redis.url,
      prefix: "s:",
      timeoutMs: 2_000,
      clock: "caller",
    });
    try {
      const P = 60_000;
      const t = 1_800_000_012_345;
      for (const algorithm of ALGORITHMS) {
        const policy = policyOf(algorithm, { requests: 2, periodMs: P });
        const q = (now: number) => ({ limiter: algorithm, policy, now, maxKeys: 10 });
        for (let i = 0; i < 3; i++) await store.consume("k", q(t));
        const back = t - 3_600_000;
        const atStep = await store.consume("k", q(back));
        assert.equal(atStep.allowed, false, `${algorithm}: the step gives no quota back`);
        assert.ok(atStep.retryAfterMs <= 2 * P, `${algorithm}: retry in ${atStep.retryAfterMs}`);
        const later = await store.consume("k", q(back + 2 * P));
        assert.equal(later.allowed, true, `${algorithm}: allowed two periods after the step`);
      }
    } finally {
      await store.close();
    }
  },
);

interopTest("createRedisStore expires idle keys with PEXPIRE", ["redis-server"], async () => {
  await using redis = await startRedis();
  const store = createRedisStore({ url: redis.url, prefix: "x:", timeoutMs: 2_000 });
  try {
    const policy = policyOf("fixed_window", { requests: 1, periodMs: 60_000 });
    const q = { limiter: "L", policy, now: 0, maxKeys: 10 };
    assert.equal((await store.consume("a", q)).allowed, true);
    const d = await store.consume("a", q);
    assert.equal(d.allowed, false);
    assert.ok(d.retryAfterMs > 0 && d.retryAfterMs <= 60_000);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: redis.port });
    try {
      await conn.write(new TextEncoder().encode("PTTL x:L:a\r\n"));
      const buf = new Uint8Array(32);
      const n = await conn.read(buf);
      const ttl = Number(new TextDecoder().decode(buf.subarray(1, n ?? 0)).trim());
      assert.ok(ttl > 0 && ttl <= 60_000, `ttl ${ttl}`);
    } finally {
      conn.close();
    }
  } finally {
    await store.close();
  }
});

interopTest(
  "createRedisStore rejects quickly when Redis is unreachable",
  ["redis-server"],
  async () => {
    let url: string;
    {
      await using redis = await startRedis();
      url = redis.url;
    }
    const store = createRedisStore({ url, prefix: "x:", timeoutMs: 200 });
    try {
      const policy = policyOf("gcra", { requests: 1, periodMs: 1_000 });
      const t0 = performance.now();
      await assert.rejects(
        store.consume("a", { limiter: "L", policy, now: 0, maxKeys: 1 }),
        /Cannot reach Redis at "redis:\/\/127\.0\.0\.1:\d+"/,
      );
      assert.ok(performance.now() - t0 < 1_000);
    } finally {
      await store.close();
    }
  },
);

Deno.test("redisTooOld names a Redis before 5.0 and lets later or unnamed ones be tried", () => {
  const info = (v: string) => `# Server\r\nredis_version:${v}\r\nredis_mode:standalone\r\n`;
  for (const v of ["5.0.0", "6.2.14", "7.4.1", "10.0.0"]) {
    assert.equal(redisTooOld(info(v)), null, v);
  }
  assert.match(redisTooOld(info("4.0.14"))!, /^Redis 4\.0\.14 is too old: .* 5\.0 or later/);
  assert.match(redisTooOld(info("3.2.12"))!, /^Redis 3\.2\.12 /);
  assert.equal(redisTooOld("# Server\r\nvalkey_version:8.0.1\r\n"), null);
});

Deno.test("redactUrl hides the password", () => {
  assert.equal(redactUrl("redis://u:secret@h:6379/0"), "redis://u:***@h:6379/0");
  assert.equal(redactUrl("::"), "(invalid url)");
  assert.equal(
    redactUrl("redis://h:6379/0?password=secret&db=1"),
    "redis://h:6379/0?password=***&db=1",
  );
});

interopTest(
  "createRedisStore: a Redis that stops answering holds at most maxWaiting commands per connection",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const store = createRedisStore({
      url: redis.url,
      prefix: "w:",
      timeoutMs: 200,
      maxWaiting: 20,
    });
    const policy = policyOf("gcra", { requests: 100, periodMs: 1_000 });
    const q = { limiter: "L", policy, now: 0, maxKeys: 100 };
    try {
      assert.equal((await store.consume("a", q)).allowed, true);
      redis.pause(true);
      // Each timed-out command stays queued until Redis answers: without a bound, one per request.
      const results = await Promise.allSettled(
        Array.from({ length: 30 }, (_, i) => store.consume(`k${i}`, q)),
      );
      const reasons = results.map((r) => r.status === "rejected" ? String(r.reason) : "fulfilled");
      assert.equal(reasons.filter((r) => /timed out/.test(r)).length, 20, reasons.join("\n"));
      assert.equal(
        reasons.filter((r) => /not answering \(20 commands waiting\)/.test(r)).length,
        10,
      );
      redis.pause(false);
      // Once Redis answers again the queue drains and decisions come from Redis again.
      await waitFor(() => store.consume("b", q).then((d) => d.allowed, () => false), {
        what: "a decision from the resumed Redis",
      });
    } finally {
      redis.pause(false);
      await store.close();
    }
  },
);

/** Sends one RESP command line to Redis and returns the first reply line. */
async function redisCommand(port: number, line: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(`${line}\r\n`));
    const buf = new Uint8Array(256);
    const n = await conn.read(buf);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0)).trim();
  } finally {
    conn.close();
  }
}

interopTest(
  "createRedisStore errors say why Redis is not connected (missing or wrong password)",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    assert.equal(await redisCommand(redis.port, "CONFIG SET requirepass s3cret"), "+OK");
    const policy = policyOf("gcra", { requests: 1, periodMs: 1_000 });
    const q = { limiter: "L", policy, now: 0, maxKeys: 1 };
    for (
      const [url, why] of [
        [redis.url, /not connected \(\w+: NOAUTH Authentication required/],
        [`redis://:wrong@127.0.0.1:${redis.port}`, /not connected \(\w+: WRONGPASS/],
      ] as const
    ) {
      const store = createRedisStore({ url, prefix: "x:", timeoutMs: 500 });
      try {
        await assert.rejects(store.consume("a", q), why);
      } finally {
        await store.close();
      }
    }
    const ok = createRedisStore({
      url: `redis://:s3cret@127.0.0.1:${redis.port}`,
      prefix: "x:",
      timeoutMs: 2_000,
    });
    try {
      assert.equal((await ok.consume("a", q)).allowed, true);
    } finally {
      await ok.close();
    }
  },
);

interopTest(
  "createRedisStore replaces a connection that stops answering without closing (black hole)",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    await using relay = startRelay(redis.port);
    const store = createRedisStore({ url: relay.url, prefix: "b:", timeoutMs: 100, poolSize: 2 });
    const policy = policyOf("gcra", { requests: 1_000, periodMs: 1_000 });
    const q = { limiter: "L", policy, now: 0, maxKeys: 10 };
    try {
      assert.equal((await store.consume("a", q)).allowed, true);
      assert.equal((await store.consume("a", q)).allowed, true);
      relay.blackhole();
      await assert.rejects(store.consume("a", q), /timed out/);
      // Without a socket timeout the dead connections stayed "ready" until TCP gave up.
      await waitFor(() => store.consume("a", q).then((d) => d.allowed, () => false), {
        what: "a decision over a new connection",
        timeoutMs: 6_000,
        intervalMs: 50,
      });
    } finally {
      await store.close();
    }
  },
);

interopTest(
  "createRedisStore: a decision whose connection drops fails as 'connection lost'",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    await using relay = startRelay(redis.port);
    const store = createRedisStore({ url: relay.url, prefix: "c:", timeoutMs: 5_000, poolSize: 1 });
    const policy = policyOf("gcra", { requests: 1_000, periodMs: 1_000 });
    const q = { limiter: "L", policy, now: 0, maxKeys: 10 };
    try {
      assert.equal((await store.consume("a", q)).allowed, true);
      relay.blackhole();
      const pending = store.consume("a", q);
      relay.cut();
      // ioredis says "Reached the max retries per request limit (which is 0)…".
      await assert.rejects(pending, /^Error: Cannot reach Redis at "[^"]+": connection lost$/);
    } finally {
      await store.close();
    }
  },
);

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A TCP server that speaks enough RESP for ioredis to connect (INFO says "loading:0"; other
 * commands get +OK) and answers the rate-limit scripts (EVALSHA, EVAL) with `script`'s reply
 * (never when null). `infoDelayMs` delays the answer to INFO, which ioredis waits for to be ready.
 */
function startFakeRedis(
  script: string | null,
  opts: { infoDelayMs?: number; version?: string } = {},
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const enc = new TextEncoder();
  const serve = async (conn: Deno.Conn) => {
    let buf = "";
    const chunk = new Uint8Array(16_384);
    try {
      for (let n; (n = await conn.read(chunk)) !== null;) {
        buf += new TextDecoder().decode(chunk.subarray(0, n));
        // Each complete command: *N, then N × ($len, bytes).
        for (;;) {
          const lines = buf.split("\r\n");
          const count = Number(lines[0].slice(1));
          if (!lines[0].startsWith("*") || lines.length < 1 + 2 * count + 1) break;
          const args = Array.from({ length: count }, (_, i) => lines[2 + 2 * i]);
          buf = lines.slice(1 + 2 * count).join("\r\n");
          const cmd = args[0].toUpperCase();
          const info = `# Server\r\nredis_version:${opts.version ?? "7.0.0"}\r\nloading:0\r\n`;
          if (cmd === "INFO" && opts.infoDelayMs) await delay(opts.infoDelayMs);
          const reply = cmd === "INFO"
            ? `$${info.length}\r\n${info}\r\n`
            : cmd === "EVALSHA" || cmd === "EVAL"
            ? script
            : "+OK\r\n";
          if (reply !== null) await conn.write(enc.encode(reply));
        }
      }
    } catch { /* closed */ }
  };
  const tasks: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      tasks.push(serve(conn));
    }
  })();
  return {
    url: `redis://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.all(tasks);
    },
  };
}

Deno.test("createRedisStore: an answer that is not a decision fails (no NaN in the headers)", async () => {
  const policy = policyOf("token_bucket", { requests: 5, periodMs: 1_000 });
  const q = { limiter: "L", policy, now: 0, maxKeys: 10 };
  for (
    const reply of [
      "+OK\r\n", // a status, as a proxy or another server in front of Redis may send
      "*2\r\n:1\r\n:4\r\n", // too short
      "*4\r\n:1\r\n$3\r\nabc\r\n:5\r\n:0\r\n", // not numbers
      "*4\r\n:7\r\n:4\r\n:200\r\n:0\r\n", // allowed neither 0 nor 1
      "*4\r\n:0\r\n:0\r\n:200\r\n:-5\r\n", // a negative wait
    ]
  ) {
    await using fake = startFakeRedis(reply);
    const store = createRedisStore({ url: fake.url, prefix: "g:", timeoutMs: 2_000 });
    try {
      await assert.rejects(
        store.consume("a", q),
        /Cannot reach Redis at "[^"]+": unexpected answer/,
        JSON.stringify(reply),
      );
    } finally {
      await store.close();
    }
  }
  // The fake answers well-formed decisions as they are.
  await using fake = startFakeRedis("*4\r\n:0\r\n:0\r\n:1500\r\n:1500\r\n");
  const store = createRedisStore({ url: fake.url, prefix: "g:", timeoutMs: 2_000 });
  try {
    assert.deepEqual(await store.consume("a", q), {
      allowed: false,
      remaining: 0,
      resetMs: 1_500,
      retryAfterMs: 1_500,
    });
  } finally {
    await store.close();
  }
});

Deno.test("createRedisStore: a Redis older than 5.0 is refused by name, with the version needed", async () => {
  // Redis 4 runs the scripts' TIME-then-write only with effects replication, the default from 5.0:
  // it refused every decision with "Write commands not allowed after non deterministic commands".
  const policy = policyOf("token_bucket", { requests: 5, periodMs: 1_000 });
  const q = { limiter: "L", policy, now: 0, maxKeys: 10 };
  const decision = "*4\r\n:1\r\n:4\r\n:200\r\n:0\r\n";
  {
    await using fake = startFakeRedis(decision, { version: "4.0.14" });
    const store = createRedisStore({ url: fake.url, prefix: "g:", timeoutMs: 2_000 });
    try {
      let why = "";
      await waitFor(async () => {
        why = await store.consume("a", q).then(() => "", (err: Error) => err.message);
        return why !== "";
      }, { what: "the version refused" });
      assert.match(why, /^Cannot use Redis at "[^"]+": Redis 4\.0\.14 is too old: .*5\.0 or later/);
    } finally {
      await store.close();
    }
  }
  await using fake = startFakeRedis(decision, { version: "5.0.0" });
  const store = createRedisStore({ url: fake.url, prefix: "g:", timeoutMs: 2_000 });
  try {
    assert.equal((await store.consume("a", q)).allowed, true);
  } finally {
    await store.close();
  }
});

Deno.test("createRedisStore: a decision on a connection still opening waits `timeout` in all", async () => {
  // Ready only after 70% of the timeout, then silent: the wait for the connection and the
  // command's own timeout added up to 1.7 × timeout.
  const timeoutMs = 1_000;
  await using fake = startFakeRedis(null, { infoDelayMs: 700 });
  const store = createRedisStore({ url: fake.url, prefix: "w:", timeoutMs });
  const policy = policyOf("token_bucket", { requests: 5, periodMs: 1_000 });
  try {
    const t0 = performance.now();
    await assert.rejects(
      store.consume("a", { limiter: "L", policy, now: 0, maxKeys: 10 }),
      /Cannot reach Redis at "[^"]+": .*timed out/,
    );
    const waited = performance.now() - t0;
    assert.ok(waited < 1.4 * timeoutMs, `waited ${Math.round(waited)} ms`);
  } finally {
    await store.close();
  }
});

interopTest(
  "createRedisStore: a timeout past a timer's range (30d) waits as long as a timer can",
  ["redis-server"],
  async () => {
    // Timers fire such a delay after 1 ms: every decision failed ("timed out"), on_error decided.
    await using redis = await startRedis();
    const store = createRedisStore({ url: redis.url, prefix: "t:", timeoutMs: 30 * 86_400_000 });
    const policy = policyOf("token_bucket", { requests: 5, periodMs: 1_000 });
    try {
      for (let i = 0; i < 3; i++) {
        const got = await store.consume("k", { limiter: "L", policy, now: 0, maxKeys: 10 });
        assert.equal(got.allowed, true);
      }
    } finally {
      await store.close();
    }
  },
);

interopTest(
  "createRedisStore: after a failover behind one address (the old primary now a replica, READONLY), decisions reach the new primary",
  ["redis-server"],
  async () => {
    await using old = await startRedis();
    await using primary = await startRedis();
    await using relay = startRelay(old.port);
    const store = createRedisStore({ url: relay.url, prefix: "f:", timeoutMs: 2_000 });
    const policy = policyOf("gcra", { requests: 1_000, periodMs: 1_000 });
    const q = { limiter: "L", policy, now: 0, maxKeys: 10 };
    const admin = await Deno.connect({ hostname: "127.0.0.1", port: old.port });
    const command = async (text: string) => {
      await admin.write(new TextEncoder().encode(text));
      const buf = new Uint8Array(256);
      return new TextDecoder().decode(buf.subarray(0, (await admin.read(buf)) ?? 0));
    };
    try {
      assert.equal((await store.consume("a", q)).allowed, true);
      assert.match(await command(`REPLICAOF 127.0.0.1 ${primary.port}\r\n`), /^\+OK/);
      relay.retarget(primary.port);
      await assert.rejects(store.consume("a", q), /READONLY/);
      // The connection to the replica stayed open: every decision failed until it dropped.
      await waitFor(() => store.consume("a", q).then((d) => d.allowed, () => false), {
        what: "a decision on the new primary",
      });
    } finally {
      await store.close();
      // A primary waits for its replica on SIGTERM.
      await command("REPLICAOF NO ONE\r\n");
      admin.close();
    }
  },
);

interopTest(
  "createRedisStore password with an ACL user in the url: sent as that user's",
  ["redis-server"],
  async () => {
    await using redis = await startRedis({
      args: ["--requirepass", "default-pw", "--user", "prox", "on", ">rl-pw", "~*", "+@all"],
    });
    const store = createRedisStore({
      url: `redis://prox@127.0.0.1:${redis.port}`,
      password: "rl-pw",
      prefix: "u:",
      timeoutMs: 2_000,
    });
    try {
      const policy = policyOf("fixed_window", { requests: 1, periodMs: 60_000 });
      const q = { limiter: "L", policy, now: 0, maxKeys: 10 };
      assert.equal((await store.consume("a", q)).allowed, true);
      assert.equal((await store.consume("a", q)).allowed, false);
    } finally {
      await store.close();
    }
  },
);
