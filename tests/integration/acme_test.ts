// Automatic TLS end to end against Debian's pebble: HTTP-01 answered by Prox's own HTTP
// listener, restart from storage without an order, instances sharing one storage directory
// (one order, one shared back-off), a switch of directory, short-lived certificates, a reload
// that adds a domain, and workers. Live renewal under a request loop is in acme_renewal_test.ts;
// failures without a working CA and reloads around ACME in acme_failure_test.ts.
import assert from "node:assert/strict";
import { interopTest, startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import type { AcmeTuning } from "../../src/adapters/acme.ts";
import { noopMetrics } from "../../src/ports.ts";
import { freePort, startPebble } from "./_pebble.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { DEBUG_HEADER_ENV } from "../../src/adapters/worker_link.ts";
import { spawnProx } from "./_cli_process.ts";
import type { ProxProcess } from "./_cli_process.ts";
import { acmeYaml, DOMAINS, memoryLogger, start, tlsGet, TOOLS, withTempDir } from "./_acme.ts";

interopTest(
  "ACME issues one SAN certificate via HTTP-01 from pebble; a restart reuses certificate and account",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("hello over acme"));
      const storage = `${dir}/acme`;
      const yaml = acmeYaml({
        ca: pebble.directoryUrl,
        storage,
        httpPort,
        upstream: up.url,
        extra: "protocols: { http3_enabled: true }",
      });

      const logger = memoryLogger();
      const first = await start(yaml, undefined, logger);
      let serial: string;
      try {
        // Plain HTTP serves at once (redirects), before any certificate exists.
        const res = await fetch(`http://127.0.0.1:${httpPort}/x`, { redirect: "manual" });
        await res.body?.cancel();
        assert.equal(res.status, 308);
        await waitFor(() => first.acme!.current(), { timeoutMs: 30_000, what: "issuance" });
        await waitFor(() => first.ready(), { what: "HTTPS listener" });
        const got = await tlsGet(first.port, pebble.root);
        assert.equal(got.status, 200);
        assert.match(got.body, /hello over acme$/);
        assert.equal(got.names, "DNS:prox.test, DNS:www.prox.test");
        serial = got.serial;
        // HTTP/3 starts with the issued certificate too.
        await using h3 = await connectH3({
          hostname: "127.0.0.1",
          port: first.port,
          caCerts: [pebble.root],
          serverName: DOMAINS[1],
        });
        const over3 = await h3.request("/");
        assert.equal(over3.status, 200);
        assert.equal(new TextDecoder().decode(over3.body), "hello over acme");
        assert.equal(pebble.orders(), 1);
        assert.equal(first.acme!.status().orders, 1);
        assert.ok(logger.lines.some((l) => l.startsWith("info ACME certificate issued")));
        // The first certificate replaced no listener: no warning about replaced listeners.
        assert.ok(
          !logger.lines.some((l) => l.includes("replaced listener")),
          logger.lines.join("\n"),
        );
      } finally {
        await first.shutdown();
      }
      // Stable names; private keys are 0600; no challenge left behind.
      for (const f of ["prox.test.key", "account.key"]) {
        assert.equal((await Deno.stat(`${storage}/${f}`)).mode! & 0o777, 0o600, f);
      }
      assert.ok((await Deno.stat(`${storage}/prox.test.crt`)).isFile);
      assert.deepEqual([...Deno.readDirSync(`${storage}/challenges`)], []);
      const account = await Deno.readTextFile(`${storage}/account.json`);

      // Restart: HTTPS is there immediately, with the same certificate and no CA contact.
      const second = await start(yaml);
      try {
        assert.ok(second.ready());
        assert.notEqual(second.port, 0);
        const again = await tlsGet(second.port, pebble.root);
        assert.equal(again.serial, serial);
        assert.equal(again.status, 200);
        assert.equal(second.acme!.status().orders, 0);
        assert.equal(second.acme!.status().state, "ok");
        assert.equal(pebble.orders(), 1);
        assert.equal(await Deno.readTextFile(`${storage}/account.json`), account);
      } finally {
        await second.shutdown();
      }
    }),
);

interopTest(
  "ACME: two instances sharing storage_path place one order (lock file) and both serve its certificate",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("shared"));
      const storage = `${dir}/acme`;
      // Both bind the challenge port (SO_REUSEPORT): the CA's validation requests reach either
      // one, so the instance that did not order answers from the shared store.
      const yaml = acmeYaml({ ca: pebble.directoryUrl, storage, httpPort, upstream: up.url });
      const tuning: AcmeTuning = { lockPollMs: 50, checkIntervalMs: 1_000 };
      const [a, b] = await Promise.all([start(yaml, tuning), start(yaml, tuning)]);
      try {
        await waitFor(() => a.ready() && b.ready(), { timeoutMs: 30_000, what: "both HTTPS" });
        const [ra, rb] = [await tlsGet(a.port, pebble.root), await tlsGet(b.port, pebble.root)];
        assert.equal(ra.status, 200);
        assert.equal(rb.status, 200);
        assert.equal(ra.serial, rb.serial);
        assert.equal(a.acme!.status().orders + b.acme!.status().orders, 1);
        assert.equal(pebble.orders(), 1);
        await assert.rejects(Deno.stat(`${storage}/order.lock`), Deno.errors.NotFound);
      } finally {
        await Promise.all([a.shutdown(), b.shutdown()]);
      }
    }),
);

interopTest(
  "ACME: instances sharing storage_path keep the back-off of a failed order: one failed order, not one each",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      // Pebble validates on a port where nothing listens: every order fails.
      await using pebble = await startPebble({ httpPort: freePort(), dir });
      await using up = await startUpstream(() => new Response("never"));
      const logger = memoryLogger();
      const instance = () =>
        start(
          acmeYaml({
            ca: pebble.directoryUrl,
            storage: `${dir}/acme`,
            httpPort: freePort(),
            upstream: up.url,
          }),
          { retryBaseMs: 600_000, clientRetries: 0, lockPollMs: 20 },
          logger,
        );
      const servers = [await instance(), await instance(), await instance()];
      try {
        await waitFor(() => servers.every((s) => s.acme!.status().state === "failing"), {
          timeoutMs: 30_000,
          what: "every instance failing",
        });
        assert.equal(pebble.orders(), 1);
        // The two that did not order say why they wait (once each).
        const held = logger.lines.filter((l) => l.startsWith("warn ACME order held off"));
        assert.equal(held.length, 2, logger.lines.join("\n"));
        for (const s of servers) {
          assert.match(s.acme!.status().lastError!, /connection refused/);
          assert.ok(s.acme!.status().retryInMs! > 250_000);
        }
      } finally {
        for (const s of servers) await s.shutdown();
      }
    }),
);

interopTest(
  "ACME: a certificate from another directory (staging to production, a new ca_url) is replaced, also after a restart",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await Deno.mkdir(`${dir}/a`);
      await Deno.mkdir(`${dir}/b`);
      await using staging = await startPebble({ httpPort, dir: `${dir}/a` });
      await using production = await startPebble({ httpPort, dir: `${dir}/b` });
      await using up = await startUpstream(() => new Response("switched"));
      const file = `${dir}/prox.yaml`;
      const base = { storage: `${dir}/acme`, httpPort, upstream: up.url };
      await Deno.writeTextFile(file, acmeYaml({ ...base, ca: staging.directoryUrl }));
      let server = await startServer({ path: file }, { logger: memoryLogger(), watch: false });
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "the staging certificate" });
        await tlsGet(server.port, staging.root);
        await Deno.writeTextFile(file, acmeYaml({ ...base, ca: production.directoryUrl }));
        assert.ok((await server.reload()).ok);
        await waitFor(() => tlsGet(server.port, production.root).then(() => true, () => false), {
          timeoutMs: 30_000,
          what: "the production certificate",
        });
        assert.equal(production.orders(), 1);
      } finally {
        await server.shutdown();
      }
      // Restarted on the staging directory again: its stored certificate is from production.
      await Deno.writeTextFile(file, acmeYaml({ ...base, ca: staging.directoryUrl }));
      server = await startServer({ path: file }, { logger: memoryLogger(), watch: false });
      try {
        await waitFor(() => tlsGet(server.port, staging.root).then(() => true, () => false), {
          timeoutMs: 30_000,
          what: "a staging certificate again",
        });
        assert.equal(staging.orders(), 2);
      } finally {
        await server.shutdown();
      }
    }),
);

interopTest(
  "ACME: instances sharing storage_path on two directories (a ca_url change rolled out one by one) keep their own certificates, not ordering each other's away",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await Deno.mkdir(`${dir}/a`);
      await Deno.mkdir(`${dir}/b`);
      await using staging = await startPebble({ httpPort, dir: `${dir}/a` });
      await using production = await startPebble({ httpPort, dir: `${dir}/b` });
      await using up = await startUpstream(() => new Response("rolling"));
      const base = { storage: `${dir}/acme`, httpPort, upstream: up.url };
      const tuning: AcmeTuning = { lockPollMs: 50, checkIntervalMs: 50 };
      const logA = memoryLogger();
      const a = await start(acmeYaml({ ...base, ca: staging.directoryUrl }), tuning, logA);
      let b: Awaited<ReturnType<typeof start>> | null = null;
      try {
        await waitFor(() => a.ready(), { timeoutMs: 30_000, what: "the staging certificate" });
        // The instance already moved to production replaces the stored staging certificate.
        b = await start(acmeYaml({ ...base, ca: production.directoryUrl }), tuning);
        await waitFor(() => tlsGet(b!.port, production.root).then(() => true, () => false), {
          timeoutMs: 30_000,
          what: "the production certificate",
        });
        // The one still on staging sees it in the store, and keeps its own.
        await waitFor(
          () => logA.lines.some((l) => l.includes("from another ACME directory")),
          { timeoutMs: 10_000, what: "instance A passing over the production certificate" },
        );
        assert.equal((await tlsGet(a.port, staging.root)).status, 200);
        assert.equal(staging.orders(), 1);
        assert.equal(production.orders(), 1);
      } finally {
        await Promise.all([a.shutdown(), b?.shutdown()]);
      }
    }),
);

interopTest(
  "ACME: a reload that changes ca_url while an order is in flight: the certificate it brings is from the old directory, and is replaced",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      // Pebble validates through a gate held shut until the reload is done: the order is in flight.
      const proxHttp = freePort();
      let open!: () => void;
      const opened = new Promise<void>((r) => open = r);
      let validations = 0;
      await using gate = await startUpstream(async (req) => {
        validations++;
        await opened;
        const u = new URL(req.url);
        const res = await fetch(`http://127.0.0.1:${proxHttp}${u.pathname}`);
        return new Response(await res.text(), { status: res.status });
      });
      const httpPort = Number(new URL(gate.url).port);
      await Deno.mkdir(`${dir}/a`);
      await Deno.mkdir(`${dir}/b`);
      await using staging = await startPebble({ httpPort, dir: `${dir}/a` });
      await using production = await startPebble({ httpPort, dir: `${dir}/b` });
      await using up = await startUpstream(() => new Response("switched"));
      const file = `${dir}/prox.yaml`;
      const base = { storage: `${dir}/acme`, httpPort: proxHttp, upstream: up.url };
      await Deno.writeTextFile(file, acmeYaml({ ...base, ca: staging.directoryUrl }));
      const server = await startServer({ path: file }, {
        logger: memoryLogger(),
        watch: false,
        acme: { pollMinMs: 50 },
      });
      try {
        await waitFor(() => validations > 0, { timeoutMs: 30_000, what: "a staging validation" });
        await Deno.writeTextFile(file, acmeYaml({ ...base, ca: production.directoryUrl }));
        assert.ok((await server.reload()).ok);
        open();
        await waitFor(() => tlsGet(server.port, production.root).then(() => true, () => false), {
          timeoutMs: 30_000,
          what: "the production certificate",
        });
        assert.equal(staging.orders(), 1);
        assert.equal(production.orders(), 1);
        const meta = JSON.parse(await Deno.readTextFile(`${dir}/acme/${DOMAINS[0]}.meta.json`));
        assert.equal(meta.directoryUrl, production.directoryUrl);
      } finally {
        open();
        await server.shutdown();
      }
    }),
);

interopTest(
  "ACME: a 24-hour certificate is renewed with a third of its life left, not ordered again at once",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir, validitySeconds: 86_400 });
      await using up = await startUpstream(() => new Response("short-lived"));
      const yaml = acmeYaml({
        ca: pebble.directoryUrl,
        storage: `${dir}/acme`,
        httpPort,
        upstream: up.url,
      });
      // renewal_days_before_expiry: 30 (the default) exceeds the certificate's whole lifetime.
      const server = await start(yaml);
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "the certificate" });
        const status = server.acme!.status();
        assert.equal(status.state, "ok");
        const left = status.notAfter! - status.renewAt!;
        assert.ok(left >= 8 * 3_600_000 && left < 9 * 3_600_000, JSON.stringify(status));
        assert.equal(status.orders, 1);
      } finally {
        await server.shutdown();
      }
    }),
);

interopTest(
  "ACME: a certificate that needs renewal the moment it is issued is served, and the next order backs off",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      // Pebble makes notAfter = notBefore: expired on arrival.
      await using pebble = await startPebble({ httpPort, dir, validitySeconds: 1 });
      await using up = await startUpstream(() => new Response("expired"));
      const yaml = acmeYaml({
        ca: pebble.directoryUrl,
        storage: `${dir}/acme`,
        httpPort,
        upstream: up.url,
      });
      const server = await start(yaml, { retryBaseMs: 600_000 });
      try {
        await waitFor(() => server.acme!.status().failures === 1, {
          timeoutMs: 30_000,
          what: "the order",
        });
        const status = server.acme!.status();
        assert.match(status.lastError!, /^The CA issued a certificate that needs renewal at once/);
        assert.ok(status.retryInMs! > 250_000);
        assert.ok(server.ready());
        assert.equal(pebble.orders(), 1);
      } finally {
        await server.shutdown();
      }
    }),
);

interopTest(
  "ACME: a reload that adds a domain orders a certificate covering it and swaps it in; expiry reaches Metrics",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("reloaded"));
      const file = `${dir}/prox.yaml`;
      const base = { ca: pebble.directoryUrl, storage: `${dir}/acme`, httpPort, upstream: up.url };
      await Deno.writeTextFile(file, acmeYaml(base));
      const expiries: [string, number][] = [];
      const server = await startServer({ path: file }, {
        logger: memoryLogger(),
        watch: false,
        metrics: {
          ...noopMetrics,
          certificateExpiry: (n, t) => void (t !== null && expiries.push([n, t])),
        },
        acme: { checkIntervalMs: 1_000 },
      });
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "first certificate" });
        const before = await tlsGet(server.port, pebble.root);
        assert.equal(before.names, "DNS:prox.test, DNS:www.prox.test");
        const [name, notAfter] = expiries.at(-1)!;
        assert.equal(name, "acme:prox.test");
        assert.equal(notAfter, server.acme!.status().notAfter);
        assert.ok(notAfter > Date.now() + 365 * 86_400_000);

        await Deno.writeTextFile(
          file,
          acmeYaml({ ...base, domains: [...DOMAINS, "api.prox.test"] }),
        );
        const result = await server.reload();
        assert.ok(result.ok, JSON.stringify(result.issues));
        const after = await waitFor(async () => {
          const got = await tlsGet(server.port, pebble.root);
          return got.names.includes("api.prox.test") ? got : null;
        }, { timeoutMs: 30_000, what: "the certificate with the added domain" });
        assert.deepEqual(after.names.split(", ").sort(), [
          "DNS:api.prox.test",
          "DNS:prox.test",
          "DNS:www.prox.test",
        ]);
        assert.equal(after.status, 200);
        assert.equal(pebble.orders(), 2);
      } finally {
        await server.shutdown();
      }
    }),
);

interopTest(
  "ACME: a reload that makes another domain first never serves an older stored certificate lacking a configured name",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("ok"));
      const file = `${dir}/prox.yaml`;
      const base = { ca: pebble.directoryUrl, storage: `${dir}/acme`, httpPort, upstream: up.url };
      const logger = memoryLogger();
      // www.prox.test first, alone: www.prox.test.crt covers only it.
      await Deno.writeTextFile(file, acmeYaml({ ...base, domains: ["www.prox.test"] }));
      const server = await startServer({ path: file }, { logger, watch: false });
      const issued = () => logger.lines.filter((l) => l.startsWith("info ACME certificate issued"));
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "the first certificate" });
        await Deno.writeTextFile(file, acmeYaml({ ...base, domains: DOMAINS }));
        assert.ok((await server.reload()).ok);
        await waitFor(() => issued().length === 2, {
          timeoutMs: 30_000,
          what: "the SAN certificate",
        });
        // www.prox.test first again: its old file lacks prox.test. The certificate served
        // (which covers both) stays, and is stored under the new first name.
        await Deno.writeTextFile(
          file,
          acmeYaml({ ...base, domains: ["www.prox.test", "prox.test"] }),
        );
        assert.ok((await server.reload()).ok);
        const stored = (name: string) => Deno.readTextFileSync(`${dir}/acme/${name}.crt`);
        await waitFor(() => stored("www.prox.test") === stored("prox.test"), {
          what: "the served certificate stored under www.prox.test",
        });
        const fromStorage = logger.lines.filter((l) => l.includes('"from":"storage"'));
        assert.deepEqual(fromStorage, [], fromStorage.join("\n"));
        const got = await tlsGet(server.port, pebble.root);
        assert.equal(got.names, "DNS:prox.test, DNS:www.prox.test");
        assert.equal(issued().length, 2);
      } finally {
        await server.shutdown();
      }
    }),
);

interopTest(
  "ACME with workers: 2 (real prox serve processes): one order, every worker serves its certificate",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("from a worker"));
      const port = freePort();
      const yaml = acmeYaml({
        ca: pebble.directoryUrl,
        storage: `${dir}/acme`,
        httpPort,
        upstream: up.url,
        extra: "workers: 2\nshutdown_timeout: 5s",
      }).replace(`listen_addr: "127.0.0.1:0"`, `listen_addr: "127.0.0.1:${port}"`);
      await Deno.writeTextFile(`${dir}/prox.yaml`, yaml);
      Deno.env.set(DEBUG_HEADER_ENV, "1");
      let prox: ProxProcess;
      try {
        prox = spawnProx(["serve", "-c", `${dir}/prox.yaml`, "--no-watch"]);
      } finally {
        Deno.env.delete(DEBUG_HEADER_ENV);
      }
      await using _prox = prox;
      const serials = new Map<string, string>();
      await waitFor(async () => {
        const r = await tlsGet(port, pebble.root).catch(() => null);
        const worker = r?.body.match(/x-prox-worker: (\d+)/i)?.[1];
        if (r?.status === 200 && worker) serials.set(worker, r.serial);
        return serials.size === 2;
      }, { timeoutMs: 30_000, what: "both workers on HTTPS" }).catch((err) => {
        throw new Error(`${err.message}\n${prox.output()}`);
      });
      assert.equal(new Set(serials.values()).size, 1, JSON.stringify([...serials]));
      assert.equal(pebble.orders(), 1);
      // The workers share the supervisor's output pipe: stop them all before disposing.
      prox.signal("SIGTERM");
      assert.equal((await prox.status).code, 0);
    }),
);

interopTest(
  "ACME: an account key removed (as the corrupt-key error advises) registers a new account; the stored account URL of the old key is not used",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("new account"));
      const storage = `${dir}/acme`;
      const yaml = acmeYaml({ ca: pebble.directoryUrl, storage, httpPort, upstream: up.url });
      const first = await start(yaml);
      try {
        await waitFor(() => first.acme!.current(), { timeoutMs: 30_000, what: "issuance" });
      } finally {
        await first.shutdown();
      }
      const oldAccount = JSON.parse(await Deno.readTextFile(`${storage}/account.json`));
      // The operator removes the account key; account.json (the old key's account) stays, and a
      // new order is due (no stored certificate).
      for (const f of ["account.key", "prox.test.crt", "prox.test.key"]) {
        await Deno.remove(`${storage}/${f}`);
      }
      const logger = memoryLogger();
      const second = await start(yaml, { retryBaseMs: 600_000 }, logger);
      try {
        await waitFor(() => second.acme!.current() ?? second.acme!.status().failures, {
          timeoutMs: 30_000,
          what: "the second order",
        });
        assert.equal(second.acme!.status().lastError, null, logger.lines.join("\n"));
        assert.ok(second.acme!.current());
        const account = JSON.parse(await Deno.readTextFile(`${storage}/account.json`));
        assert.notEqual(account.accountUrl, oldAccount.accountUrl);
      } finally {
        await second.shutdown();
      }
    }),
);

interopTest(
  "ACME: an account.json of an older Prox (no key hash) with the account key replaced registers the new key's account",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("replaced key"));
      const storage = `${dir}/acme`;
      const yaml = acmeYaml({ ca: pebble.directoryUrl, storage, httpPort, upstream: up.url });
      const first = await start(yaml);
      try {
        await waitFor(() => first.acme!.current(), { timeoutMs: 30_000, what: "issuance" });
      } finally {
        await first.shutdown();
      }
      // As an older Prox wrote it, and another (valid) key put in place of the account key.
      const old = JSON.parse(await Deno.readTextFile(`${storage}/account.json`));
      delete old.keyId;
      await Deno.writeTextFile(`${storage}/account.json`, JSON.stringify(old));
      const other = await new Deno.Command("openssl", {
        args: ["genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
      }).output();
      assert.ok(other.success);
      await Deno.writeFile(`${storage}/account.key`, other.stdout);
      for (const f of ["prox.test.crt", "prox.test.key"]) await Deno.remove(`${storage}/${f}`);
      const logger = memoryLogger();
      const second = await start(yaml, { retryBaseMs: 600_000 }, logger);
      try {
        await waitFor(() => second.acme!.current() ?? second.acme!.status().failures, {
          timeoutMs: 30_000,
          what: "the second order",
        });
        assert.equal(second.acme!.status().lastError, null, logger.lines.join("\n"));
        const account = JSON.parse(await Deno.readTextFile(`${storage}/account.json`));
        assert.notEqual(account.accountUrl, old.accountUrl);
        assert.ok(account.keyId);
      } finally {
        await second.shutdown();
      }
    }),
);

interopTest(
  "ACME without an email registers an account without a contact and issues",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("no email"));
      const storage = `${dir}/acme`;
      const yaml = acmeYaml({
        ca: pebble.directoryUrl,
        storage,
        httpPort,
        upstream: up.url,
        email: null,
      });
      assert.ok(!yaml.includes("email"));
      const server = await start(yaml);
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "the certificate" });
        assert.equal((await tlsGet(server.port, pebble.root)).status, 200);
        const account = JSON.parse(await Deno.readTextFile(`${storage}/account.json`));
        assert.equal(account.email, undefined);
        assert.match(account.accountUrl, /^https:\/\/127\.0\.0\.1:\d+\//);
      } finally {
        await server.shutdown();
      }
    }),
);
