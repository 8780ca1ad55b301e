import assert from "node:assert/strict";
import { freePort, interopTest, waitFor } from "../../tests/_harness.ts";
import { startRedis, startRelay } from "../../tests/_redis.ts";
import { Redis } from "ioredis";
import { openRedisAcmeStore } from "./acme_store_redis.ts";

const TLS = new URL("../../tests/fixtures/tls/", import.meta.url).pathname;
const cert = Deno.readTextFileSync(`${TLS}cert.pem`);
const key = Deno.readTextFileSync(`${TLS}key.pem`);
const ca = Deno.readTextFileSync(`${TLS}ca.pem`);
const caKey = Deno.readTextFileSync(`${TLS}ca.key`);

interopTest(
  "openRedisAcmeStore keeps the pair, account, challenges and back-off where a second instance reads them",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const config = { url: redis.url, prefix: "t:acme:", timeout: 2_000 };
    const a = openRedisAcmeStore(config, { name: "example.com" });
    const b = openRedisAcmeStore(config, { name: "example.com" });
    const other = openRedisAcmeStore({ ...config, prefix: "u:" }, { name: "example.com" });
    try {
      assert.equal(await b.readCertificate(), null);
      assert.equal(await b.certificateStamp(), null);
      await a.writeCertificate({ cert: cert + ca, key, directoryUrl: "https://ca/dir" });
      assert.deepEqual(await b.readCertificate(), {
        cert: cert + ca,
        key,
        directoryUrl: "https://ca/dir",
      });
      const stamp = await b.certificateStamp();
      assert.notEqual(stamp, null);
      assert.equal(await other.readCertificate(), null, "another prefix is another store");
      // Rewritten with the same bytes, the stamp still changes: instances load it again.
      await a.writeCertificate({ cert: cert + ca, key, directoryUrl: "https://ca/dir" });
      assert.notEqual(await b.certificateStamp(), stamp);
      // A key of another certificate, or a chain cut short, is never loaded.
      await a.writeCertificate({ cert, key: caKey });
      assert.equal(await b.readCertificate(), null);
      await a.writeCertificate({ cert: cert + ca.slice(0, 200), key });
      assert.equal(await b.readCertificate(), null);

      assert.equal(await a.readAccountKey(), null);
      assert.equal(await a.createAccountKey("first"), "first");
      assert.equal(await b.createAccountKey("second"), "first");
      await a.writeAccount({
        directoryUrl: "https://ca/dir",
        accountUrl: "https://ca/a/1",
        email: "e@x.io",
      });
      assert.equal((await b.readAccount())?.accountUrl, "https://ca/a/1");

      await a.writeChallenge("tok_en-1", "tok_en-1.thumb");
      assert.equal(await b.readChallenge("tok_en-1"), "tok_en-1.thumb");
      assert.equal(await b.readChallenge("../lock"), null);
      await assert.rejects(a.writeChallenge("a:b", "x"), /Invalid ACME challenge token/);
      await b.removeChallenge("tok_en-1");
      assert.equal(await a.readChallenge("tok_en-1"), null);

      const backoff = { key: "k", failures: 2, retryAt: 1_800_000_000_000, error: "CA down" };
      await a.writeBackoff(backoff);
      assert.deepEqual(await b.readBackoff(), backoff);
      await b.writeBackoff(null);
      assert.equal(await a.readBackoff(), null);
      assert.equal(a.where("account.key"), `Redis key t:acme:account.key at ${redis.url}`);
    } finally {
      await Promise.all([a.close(), b.close(), other.close()]);
    }
  },
);

interopTest(
  "openRedisAcmeStore lock: one holder at a time, a holder that stops refreshing loses it, a lost lock's release frees nobody's",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const config = { url: redis.url, prefix: "t:", timeout: 2_000 };
    const a = openRedisAcmeStore(config, { name: "x" });
    const b = openRedisAcmeStore(config, { name: "x" });
    try {
      const now = Date.now();
      const held = await a.tryLock({ staleMs: 60_000, now });
      assert.ok(held);
      assert.equal(await b.tryLock({ staleMs: 60_000, now }), null);
      await held.release();
      // Short-lived: refreshed, it outlives its first expiry; left alone, it expires.
      const brief = await a.tryLock({ staleMs: 300, now });
      assert.ok(brief);
      const t0 = performance.now();
      while (performance.now() - t0 < 600) {
        await brief.refresh();
        assert.equal(await b.tryLock({ staleMs: 300, now }), null);
        await new Promise((r) => setTimeout(r, 50));
      }
      const taken = await waitFor(() => b.tryLock({ staleMs: 60_000, now }), {
        what: "the unrefreshed lock to expire",
      });
      await brief.release();
      await brief.refresh();
      assert.equal(await a.tryLock({ staleMs: 60_000, now }), null, "b still holds it");
      await taken.release();
      const again = await a.tryLock({ staleMs: 60_000, now });
      assert.ok(again);
      await again.release();
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  },
);

interopTest(
  "openRedisAcmeStore: a Redis that is down fails the step with a message naming it, without its password",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const url = `redis://:hunter2@127.0.0.1:${redis.port}`;
    const store = openRedisAcmeStore({ url, prefix: "t:", timeout: 300 }, { name: "x" });
    try {
      redis.pause(true);
      const err = await store.readAccountKey().then(() => null, (e: Error) => e);
      redis.pause(false);
      assert.ok(err);
      assert.match(
        err.message,
        /^Cannot read the ACME account key in Redis at redis:\/\/:\*\*\*@127/,
      );
      assert.ok(!err.message.includes("hunter2"));
    } finally {
      await store.close();
    }
  },
);

interopTest(
  "openRedisAcmeStore lock: a lock key without expiry (set by hand, restored without its TTL) goes stale as a lock file does",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const raw = new Redis(redis.url, { lazyConnect: true });
    const store = openRedisAcmeStore({ url: redis.url, prefix: "t:", timeout: 2_000 }, {
      name: "x",
    });
    try {
      await raw.set("t:lock", "left-by-hand");
      const now = Date.now();
      assert.equal(await store.tryLock({ staleMs: 200, now }), null);
      const taken = await waitFor(() => store.tryLock({ staleMs: 200, now }), {
        what: "the lock without expiry to go stale",
      });
      await taken.release();
      assert.equal(await raw.exists("t:lock"), 0);
    } finally {
      await store.close();
      raw.disconnect();
    }
  },
);

interopTest(
  "openRedisAcmeStore lock: a take that timed out but reached Redis later leaves no lock behind (others are not held off until it is stale)",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const config = { url: redis.url, prefix: "t:", timeout: 300 };
    const a = openRedisAcmeStore(config, { name: "x" });
    const b = openRedisAcmeStore({ ...config, timeout: 2_000 }, { name: "x" });
    let paused = false;
    try {
      // Connected: the take is sent, and runs once Redis resumes.
      await waitFor(() => a.readAccountKey().then(() => true, () => false), {
        what: "a connection",
      });
      redis.pause(paused = true);
      const now = Date.now();
      await assert.rejects(a.tryLock({ staleMs: 60_000, now }), /take the ACME order lock/);
      redis.pause(paused = false);
      const taken = await waitFor(() => b.tryLock({ staleMs: 60_000, now }), {
        what: "the lock the timed-out take left",
      });
      await taken.release();
    } finally {
      if (paused) redis.pause(false);
      await Promise.all([a.close(), b.close()]);
    }
  },
);

interopTest(
  "openRedisAcmeStore: a key holding another type of value (another application's) fails the step with a message naming the key",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    const raw = new Redis(redis.url, { lazyConnect: true });
    const store = openRedisAcmeStore({ url: redis.url, prefix: "app:", timeout: 2_000 }, {
      name: "example.com",
    });
    try {
      await raw.hset("app:cert:example.com", "field", "value");
      const err = await store.certificateStamp().then(() => null, (e: Error) => e);
      assert.ok(err);
      assert.match(
        err.message,
        /^Cannot read the ACME certificate in Redis at redis:\/\/127\.0\.0\.1:\d+ \(key app:cert:example\.com\): WRONGTYPE/,
      );
      assert.match(err.message, /tls\.acme\.redis\.prefix/);
    } finally {
      await store.close();
      raw.disconnect();
    }
  },
);

interopTest(
  "openRedisAcmeStore replaces a connection that stops answering without closing (black hole: a failover, a dropped NAT entry)",
  ["redis-server"],
  async () => {
    await using redis = await startRedis();
    await using relay = startRelay(redis.port);
    const store = openRedisAcmeStore({ url: relay.url, prefix: "t:", timeout: 100 }, {
      name: "x",
    });
    try {
      // Connected (a first command may time out while a busy machine connects).
      await waitFor(() => store.createAccountKey("pem").catch(() => null), {
        what: "a connection",
      });
      relay.blackhole();
      await assert.rejects(store.readAccountKey(), /timed out/);
      // Without a socket timeout every step failed until TCP gave up on it (~15 min).
      await waitFor(() => store.readAccountKey().catch(() => null), {
        what: "an answer over a new connection",
        timeoutMs: 6_000,
        intervalMs: 50,
      });
    } finally {
      await store.close();
    }
  },
);

interopTest(
  "openRedisAcmeStore: after a failover behind one address (the old primary now a replica, READONLY), writes reach the new primary",
  ["redis-server"],
  async () => {
    await using old = await startRedis();
    await using primary = await startRedis();
    await using relay = startRelay(old.port);
    const raw = new Redis(old.url, { lazyConnect: true });
    const store = openRedisAcmeStore({ url: relay.url, prefix: "t:", timeout: 2_000 }, {
      name: "x",
    });
    const backoff = { key: "k", failures: 1, retryAt: 1_800_000_000_000, error: "CA down" };
    try {
      await store.writeBackoff(backoff);
      await raw.call("REPLICAOF", "127.0.0.1", String(primary.port));
      relay.retarget(primary.port);
      await assert.rejects(store.writeBackoff(backoff), /READONLY/);
      // The connection to the replica stayed open: every write failed until it dropped.
      await waitFor(() => store.writeBackoff(backoff).then(() => true, () => false), {
        what: "a write on the new primary",
      });
    } finally {
      await store.close();
      // A primary waits for its replica on SIGTERM.
      await raw.call("REPLICAOF", "NO", "ONE");
      raw.disconnect();
    }
  },
);

interopTest(
  "openRedisAcmeStore: a Redis it cannot connect to fails the step saying why (refused), not 'max retries per request'",
  ["redis-server"],
  async () => {
    const port = freePort(); // nothing listens there
    const store = openRedisAcmeStore({
      url: `redis://127.0.0.1:${port}`,
      prefix: "t:",
      timeout: 1_000,
    }, {
      name: "x",
    });
    try {
      const err = await store.readAccountKey().then(() => null, (e: Error) => e);
      assert.ok(err);
      assert.match(
        err.message,
        /^Cannot read the ACME account key in Redis at .*: not connected \(.*ECONNREFUSED/,
      );
      assert.doesNotMatch(err.message, /max retries/);
    } finally {
      await store.close();
    }
  },
);

interopTest(
  "openRedisAcmeStore password_env: the password comes from the environment",
  ["redis-server"],
  async () => {
    await using redis = await startRedis({ args: ["--requirepass", "acme-pw"] });
    const name = `PROX_TEST_ACME_REDIS_PW_${crypto.randomUUID().slice(0, 8)}`;
    Deno.env.set(name, "acme-pw");
    const config = { url: redis.url, prefix: "pw:", timeout: 2_000 };
    const withPw = openRedisAcmeStore({ ...config, password_env: name }, { name: "a.example" });
    const without = openRedisAcmeStore(config, { name: "a.example" });
    try {
      assert.equal(await withPw.createAccountKey("k1"), "k1");
      assert.equal(await withPw.readAccountKey(), "k1");
      await assert.rejects(() => without.readAccountKey(), /NOAUTH/);
    } finally {
      Deno.env.delete(name);
      await withPw.close();
      await without.close();
    }
  },
);

interopTest(
  "openRedisAcmeStore password_env with an ACL user in the url: the user's password is the variable's",
  ["redis-server"],
  async () => {
    await using redis = await startRedis({
      args: ["--requirepass", "default-pw", "--user", "prox", "on", ">acme-pw", "~*", "+@all"],
    });
    const name = `PROX_TEST_ACME_REDIS_PW_${crypto.randomUUID().slice(0, 8)}`;
    Deno.env.set(name, "acme-pw");
    const store = openRedisAcmeStore({
      url: `redis://prox@127.0.0.1:${redis.port}`,
      password_env: name,
      prefix: "pw:",
      timeout: 2_000,
    }, { name: "a.example" });
    try {
      assert.equal(await store.createAccountKey("k1"), "k1");
      assert.equal(await store.readAccountKey(), "k1");
    } finally {
      Deno.env.delete(name);
      await store.close();
    }
  },
);
