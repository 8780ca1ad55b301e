// ACME state in Redis (tls.acme.redis) with Debian's pebble and redis-server: two instances with
// no storage directory in common place one order and serve its certificate, an instance started
// later serves it from Redis without an order, and a challenge another instance stored in Redis
// is answered on the HTTP-01 listener.
import assert from "node:assert/strict";
import { interopTest, waitFor } from "../_harness.ts";
import { Redis } from "ioredis";
import { startRedis } from "../_redis.ts";
import { startUpstream } from "../_harness.ts";
import type { AcmeTuning } from "../../src/adapters/acme.ts";
import { openRedisAcmeStore } from "../../src/adapters/acme_store_redis.ts";
import { freePort, startPebble } from "./_pebble.ts";
import { acmeYaml, DOMAINS, memoryLogger, start, tlsGet, TOOLS, withTempDir } from "./_acme.ts";
import { startServer } from "../../src/server.ts";

interopTest(
  "ACME with tls.acme.redis: instances sharing only Redis place one order, a later one loads it, challenges are shared",
  [...TOOLS, "redis-server"],
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using redis = await startRedis();
      await using up = await startUpstream(() => new Response("via redis"));
      const redisLine = `    redis: { url: "${redis.url}", prefix: "prox:acme:" }`;
      // Each instance its own storage_path, which must stay unused.
      const yaml = (name: string) =>
        acmeYaml({
          ca: pebble.directoryUrl,
          storage: `${dir}/${name}`,
          httpPort,
          upstream: up.url,
          acmeExtra: redisLine,
        });
      const tuning: AcmeTuning = { lockPollMs: 50, checkIntervalMs: 1_000 };
      // Both bind the challenge port (SO_REUSEPORT): the CA's validation requests reach either.
      const [a, b] = await Promise.all([start(yaml("a"), tuning), start(yaml("b"), tuning)]);
      let serial: string;
      try {
        await waitFor(() => a.ready() && b.ready(), { timeoutMs: 30_000, what: "both HTTPS" });
        const [ra, rb] = [await tlsGet(a.port, pebble.root), await tlsGet(b.port, pebble.root)];
        assert.equal(ra.status, 200);
        assert.equal(rb.status, 200);
        assert.equal(ra.serial, rb.serial);
        serial = ra.serial;
        assert.equal(a.acme!.status().orders + b.acme!.status().orders, 1);
        assert.equal(pebble.orders(), 1);

        // A key authorization another instance stored is answered here (and nothing else is).
        const store = openRedisAcmeStore({ url: redis.url, prefix: "prox:acme:", timeout: 2_000 }, {
          name: DOMAINS[0],
        });
        try {
          await store.writeChallenge("shared-token_1", "shared-token_1.thumbprint");
          const res = await fetch(
            `http://127.0.0.1:${httpPort}/.well-known/acme-challenge/shared-token_1`,
          );
          assert.equal(res.status, 200);
          assert.equal(await res.text(), "shared-token_1.thumbprint");
          const none = await fetch(`http://127.0.0.1:${httpPort}/.well-known/acme-challenge/other`);
          assert.equal(none.status, 404);
          await none.body?.cancel();
          assert.equal(await store.readBackoff(), null);
        } finally {
          await store.close();
        }
      } finally {
        await Promise.all([a.shutdown(), b.shutdown()]);
      }
      for (const name of ["a", "b"]) {
        const files = [...Deno.readDirSync(dir)].map((e) => e.name);
        assert.ok(!files.includes(name), `storage_path ${name} was created: ${files}`);
      }

      // A new instance serves the stored certificate at once, without contacting the CA.
      const c = await start(yaml("c"), tuning);
      try {
        assert.ok(c.ready());
        const got = await tlsGet(c.port, pebble.root);
        assert.equal(got.serial, serial);
        assert.equal(c.acme!.status().orders, 0);
        assert.equal(pebble.orders(), 1);
      } finally {
        await c.shutdown();
      }
    }),
);

interopTest(
  "ACME with tls.acme.redis: a Redis that does not answer at start-up is tried again soon, and the order goes out once it does",
  [...TOOLS, "redis-server"],
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using redis = await startRedis();
      await using up = await startUpstream(() => new Response("after the outage"));
      const yaml = acmeYaml({
        ca: pebble.directoryUrl,
        storage: `${dir}/unused`,
        httpPort,
        upstream: up.url,
        acmeExtra: `    redis: { url: "${redis.url}", timeout: 200ms }`,
      });
      redis.pause(true);
      let paused = true;
      // The periodic check is 10 min away: only the retry after a failed check can order in time.
      const server = await start(yaml, { retryBaseMs: 200, checkIntervalMs: 600_000 });
      try {
        await waitFor(() => server.acme!.status().lastError, { what: "a failed check" });
        assert.equal(server.acme!.status().state, "failing");
        assert.match(server.acme!.status().lastError!, /in Redis at redis:\/\/127\.0\.0\.1:/);
        redis.pause(false);
        paused = false;
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "HTTPS after the outage" });
        assert.equal((await tlsGet(server.port, pebble.root)).status, 200);
        assert.equal(server.acme!.status().lastError, null);
        assert.equal(pebble.orders(), 1);
      } finally {
        if (paused) redis.pause(false);
        await server.shutdown();
      }
    }),
);

/** A self-signed certificate for DOMAINS valid for `days`, and its key (PEM). */
async function selfSigned(dir: string, days: number) {
  const [cert, key] = [`${dir}/${days}.crt`, `${dir}/${days}.key`];
  const out = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
      ...["-keyout", key, "-out", cert, "-days", String(days), "-subj", `/CN=${DOMAINS[0]}`],
      ...["-addext", `subjectAltName=${DOMAINS.map((d) => `DNS:${d}`).join(",")}`],
    ],
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return { cert: await Deno.readTextFile(cert), key: await Deno.readTextFile(key) };
}

/**
 * A store move's set-up: two self-signed certificates of one CA, both far from due, `onDisk` in
 * storage_path (the store Prox starts on); a Redis store under the default prefix, and a config
 * file with ACME on the directory (`yaml(acmeExtra)` moves it).
 */
async function storeMove(
  dir: string,
  o: { redis: string; upstream: string; onDisk: "older" | "newer" },
) {
  const ca = `https://127.0.0.1:${freePort()}/dir`; // never asked: both are far from due
  const older = { ...await selfSigned(dir, 80), directoryUrl: ca };
  const newer = { ...await selfSigned(dir, 89), directoryUrl: ca };
  const storage = `${dir}/acme`;
  await Deno.mkdir(storage);
  const disk = o.onDisk === "older" ? older : newer;
  await Deno.writeTextFile(`${storage}/${DOMAINS[0]}.crt`, disk.cert);
  await Deno.writeTextFile(`${storage}/${DOMAINS[0]}.key`, disk.key);
  await Deno.writeTextFile(
    `${storage}/${DOMAINS[0]}.meta.json`,
    JSON.stringify({ directoryUrl: ca }),
  );
  const config = { url: o.redis, prefix: "prox:acme:", timeout: 2_000 };
  const store = openRedisAcmeStore(config, { name: DOMAINS[0] });
  const file = `${dir}/prox.yaml`;
  const yaml = (acmeExtra?: string) =>
    acmeYaml({ ca, storage, httpPort: freePort(), upstream: o.upstream, acmeExtra });
  return { older, newer, store, file, yaml };
}

interopTest(
  "ACME: a reload onto Redis that holds a later certificate (another instance renewed) serves it, and does not put the older one in hand back",
  ["redis-server", "openssl"],
  () =>
    withTempDir(async (dir) => {
      await using redis = await startRedis();
      await using up = await startUpstream(() => new Response("moved"));
      const { older, newer, store, file, yaml } = await storeMove(
        dir,
        { redis: redis.url, upstream: up.url, onDisk: "older" },
      );
      try {
        await store.writeCertificate(newer);
        await Deno.writeTextFile(file, yaml());
        const server = await startServer({ path: file }, {
          logger: memoryLogger(),
          watch: false,
          acme: { retryBaseMs: 600_000, clientRetries: 0 },
        });
        try {
          assert.equal(server.acme!.current()?.cert, older.cert);
          await Deno.writeTextFile(file, yaml(`    redis: { url: "${redis.url}" }`));
          assert.ok((await server.reload()).ok);
          await waitFor(() => server.acme!.current()?.cert === newer.cert, {
            what: "the later certificate from Redis",
          });
          assert.equal((await store.readCertificate())?.cert, newer.cert);
          assert.equal(server.acme!.status().orders, 0);
        } finally {
          await server.shutdown();
        }
      } finally {
        await store.close();
      }
    }),
);

interopTest(
  "ACME with tls.acme.redis: a certificate issued while Redis refuses to store it is served, not thrown away, and stored once Redis takes it",
  [...TOOLS, "redis-server"],
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using redis = await startRedis();
      await using up = await startUpstream(() => new Response("issued"));
      const raw = new Redis(redis.url, { lazyConnect: true });
      const store = openRedisAcmeStore({ url: redis.url, prefix: "prox:acme:", timeout: 2_000 }, {
        name: DOMAINS[0],
      });
      // Everything but the certificate can be written (as when Redis fails at that moment).
      const acl = (keys: string[]) => raw.call("ACL", "SETUSER", "default", "resetkeys", ...keys);
      await acl(["~prox:acme:lock", "~prox:acme:backoff", "~prox:acme:account.*"].concat(
        "~prox:acme:challenge:*",
        "%R~prox:acme:cert:*",
      ));
      const server = await start(
        acmeYaml({
          ca: pebble.directoryUrl,
          storage: `${dir}/unused`,
          httpPort,
          upstream: up.url,
          acmeExtra: `    redis: { url: "${redis.url}" }`,
        }),
        { retryBaseMs: 200, lockPollMs: 50, clientRetries: 0 },
      );
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "HTTPS with the issued" });
        const served = server.acme!.current()!.cert;
        assert.equal((await tlsGet(server.port, pebble.root)).status, 200);
        assert.equal(await store.readCertificate(), null);
        assert.match(server.acme!.status().lastError ?? "", /store the ACME certificate.*NOPERM/);
        await acl(["allkeys"]);
        await waitFor(async () => (await store.readCertificate())?.cert === served, {
          what: "the served certificate stored",
        });
        await waitFor(() => server.acme!.status().lastError === null, { what: "no error" });
        assert.equal(pebble.orders(), 1);
      } finally {
        await server.shutdown();
        await store.close();
        raw.disconnect();
      }
    }),
);

interopTest(
  "ACME: a reload onto a Redis that does not answer at that moment stores the certificate served there once it does, rather than loading the older one it holds",
  ["redis-server", "openssl"],
  () =>
    withTempDir(async (dir) => {
      await using redis = await startRedis();
      await using up = await startUpstream(() => new Response("moved"));
      const { older, newer, store, file, yaml } = await storeMove(
        dir,
        { redis: redis.url, upstream: up.url, onDisk: "newer" },
      );
      let paused = false;
      try {
        await store.writeCertificate(older); // left by an instance that has not renewed yet
        await Deno.writeTextFile(file, yaml());
        const server = await startServer({ path: file }, {
          logger: memoryLogger(),
          watch: false,
          acme: { retryBaseMs: 200, clientRetries: 0 },
        });
        try {
          assert.equal(server.acme!.current()?.cert, newer.cert);
          await Deno.writeTextFile(
            file,
            yaml(`    redis: { url: "${redis.url}", timeout: 200ms }`),
          );
          redis.pause(paused = true);
          assert.ok((await server.reload()).ok);
          redis.pause(paused = false);
          await waitFor(async () => (await store.readCertificate())?.cert === newer.cert, {
            what: "the served certificate stored in Redis",
          });
          assert.equal(server.acme!.current()?.cert, newer.cert);
        } finally {
          await server.shutdown();
        }
      } finally {
        if (paused) redis.pause(false);
        await store.close();
      }
    }),
);

interopTest(
  "ACME with tls.acme.redis: an order abandoned at shutdown still stores its outcome (its back-off) in Redis, as in storage_path, and then lets go of Redis",
  ["redis-server"],
  () =>
    withTempDir(async (dir) => {
      await using redis = await startRedis();
      await using up = await startUpstream(() => new Response("never"));
      // A CA that accepts connections and never answers.
      const ca = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const conns: Deno.Conn[] = [];
      const accepting = (async () => {
        for await (const c of ca) conns.push(c);
      })();
      const server = await start(
        acmeYaml({
          ca: `https://127.0.0.1:${(ca.addr as Deno.NetAddr).port}/dir`,
          storage: `${dir}/unused`,
          httpPort: freePort(),
          upstream: up.url,
          acmeExtra: `    redis: { url: "${redis.url}" }`,
        }),
        { retryBaseMs: 600_000, clientRetries: 0 },
      );
      try {
        await waitFor(() => server.acme!.status().state === "ordering" && conns.length > 0, {
          what: "an order in flight",
        });
      } finally {
        await server.shutdown();
      }
      // The abandoned order fails now.
      ca.close();
      for (const c of conns) c.close();
      await accepting;
      await waitFor(() => server.acme!.status().failures === 1, { what: "the abandoned order" });
      const raw = new Redis(redis.url, { lazyConnect: true });
      try {
        const record = await waitFor(() => raw.get("prox:acme:backoff"), {
          what: "the abandoned order's back-off in Redis",
        });
        assert.equal(JSON.parse(record).failures, 1);
        const clients = async () => String(await raw.call("CLIENT", "LIST")).trim().split("\n");
        await waitFor(async () => (await clients()).length === 1, {
          what: "the server's connection closed",
        });
      } finally {
        raw.disconnect();
      }
    }),
);

interopTest(
  "ACME with tls.acme.redis: a Redis that evicts any key when full (maxmemory-policy allkeys-*, a cache's) is named in a warning",
  ["redis-server"],
  () =>
    withTempDir(async (dir) => {
      await using redis = await startRedis({ args: ["--maxmemory-policy", "allkeys-lru"] });
      await using up = await startUpstream(() => new Response("never"));
      const logger = memoryLogger();
      const server = await start(
        acmeYaml({
          ca: `https://127.0.0.1:${freePort()}/dir`,
          storage: `${dir}/unused`,
          httpPort: freePort(),
          upstream: up.url,
          acmeExtra: `    redis: { url: "${redis.url}" }`,
        }),
        { retryBaseMs: 600_000, clientRetries: 0 },
        logger,
      );
      try {
        const line = await waitFor(
          () => logger.lines.find((l) => l.startsWith("warn") && l.includes("allkeys-lru")),
          { what: "the warning" },
        );
        assert.match(line, /evict/);
        assert.ok(line.includes(redis.url), line);
      } finally {
        await server.shutdown();
      }
    }),
);
