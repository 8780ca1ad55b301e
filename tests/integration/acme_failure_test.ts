// ACME without a CA that issues: an unreachable or hanging CA (back-off, lock release on
// shutdown), a corrupt account key, and reloads around ACME (back-off kept, rejected reloads,
// a switch from certificate files). Pebble-backed scenarios are in acme_test.ts.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { ROOT, startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { freePort } from "./_pebble.ts";
import { acmeYaml, DOMAINS, memoryLogger, start, withTempDir } from "./_acme.ts";

Deno.test("ACME: an unreachable CA is retried with exponential back-off while plain HTTP keeps serving", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const httpPort = freePort();
    const yaml = acmeYaml({
      ca: `https://127.0.0.1:${freePort()}/dir`,
      storage: `${dir}/acme`,
      httpPort,
      upstream: up.url,
    });
    const logger = memoryLogger();
    const server = await start(yaml, {
      retryBaseMs: 40,
      random: () => 0,
      clientRetries: 0,
      // Shorter than the back-off: the periodic check must not retry early.
      checkIntervalMs: 5,
    }, logger);
    try {
      await waitFor(() => server.acme!.status().failures >= 3, { what: "three failed orders" });
      const status = server.acme!.status();
      assert.equal(status.state, "failing");
      assert.match(status.lastError!, /ACME server/);
      assert.equal(server.ready(), false);
      assert.equal(server.port, 0);
      // random 0 → exactly half of base × 2^(n-1): 20, 40, 80 ms.
      const delays = logger.lines.filter((l) => l.startsWith("error Cannot obtain ACME"))
        .map((l) => JSON.parse(l.slice(l.indexOf("{"))).retryInMs);
      assert.deepEqual(delays.slice(0, 3), [20, 40, 80]);
      const at = logger.lines.flatMap((l, i) =>
        l.startsWith("error Cannot obtain ACME") ? [logger.times[i]] : []
      );
      for (let i = 1; i < 3; i++) {
        assert.ok(at[i] - at[i - 1] >= delays[i - 1] - 1, `retry ${i} came early: ${at}`);
      }
      const res = await fetch(`http://127.0.0.1:${httpPort}/`, { redirect: "manual" });
      await res.body?.cancel();
      assert.equal(res.status, 308);
      const missing = await fetch(`http://127.0.0.1:${httpPort}/.well-known/acme-challenge/nope`);
      assert.equal(missing.status, 404);
      await missing.body?.cancel();
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("ACME: a reload from certificate files to ACME keeps serving the old certificate until the first one arrives", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("still https"));
    const tls = `${ROOT}/tests/fixtures/tls`;
    const file = `${dir}/prox.yaml`;
    const acme = acmeYaml({
      ca: `https://127.0.0.1:${freePort()}/dir`, // unreachable: no certificate for a while
      storage: `${dir}/acme`,
      httpPort: freePort(),
      upstream: up.url,
    });
    await Deno.writeTextFile(
      file,
      acme.replace(
        /tls:[\s\S]*?routes:/,
        `tls: { cert_path: "${tls}/cert.pem", key_path: "${tls}/key.pem" }\nroutes:`,
      ),
    );
    const server = await startServer({ path: file }, {
      logger: memoryLogger(),
      watch: false,
      acme: { retryBaseMs: 600_000, clientRetries: 0 },
    });
    const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${tls}/ca.pem`)] });
    try {
      await Deno.writeTextFile(file, acme);
      assert.ok((await server.reload()).ok);
      await waitFor(() => server.acme!.status().failures === 1, { what: "the failed order" });
      const res = await fetch(`https://localhost:${server.port}/`, { client });
      assert.equal(await res.text(), "still https");
      assert.ok(server.ready());
    } finally {
      client.close();
      await server.shutdown();
    }
  });
});

Deno.test("ACME: a reload rejected after ACME followed it (listener cannot bind) puts ACME back to the serving config", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const tls = `${ROOT}/tests/fixtures/tls`;
    const file = `${dir}/prox.yaml`;
    const base = {
      ca: `https://127.0.0.1:${freePort()}/dir`,
      storage: `${dir}/acme`,
      httpPort: freePort(),
      upstream: up.url,
    };
    const onBusyPort = { ...base, httpPort: (busy.addr as Deno.NetAddr).port };
    const files = (yaml: string) =>
      yaml.replace(
        /tls:[\s\S]*?routes:/,
        `tls: { cert_path: "${tls}/cert.pem", key_path: "${tls}/key.pem" }\nroutes:`,
      );
    await Deno.writeTextFile(file, acmeYaml(base));
    const server = await startServer({ path: file }, {
      logger: memoryLogger(),
      watch: false,
      acme: { retryBaseMs: 600_000, clientRetries: 0 },
    });
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the failed order" });
      // Drops a domain, but the new challenge listener's address is taken: the reload fails.
      await Deno.writeTextFile(file, acmeYaml({ ...onBusyPort, domains: ["prox.test"] }));
      assert.equal((await server.reload()).ok, false);
      assert.deepEqual(server.acme!.status().domains, DOMAINS);
      // Certificate files now serving; a rejected switch back to ACME leaves ACME off.
      await Deno.writeTextFile(file, files(acmeYaml(base)));
      assert.ok((await server.reload()).ok);
      assert.equal(server.acme, null);
      await Deno.writeTextFile(file, acmeYaml(onBusyPort));
      assert.equal((await server.reload()).ok, false);
      assert.equal(server.acme, null);
    } finally {
      busy.close();
      await server.shutdown();
    }
  });
});

Deno.test("ACME: a shutdown during an order releases the order lock (a restart is not held off for 10 min)", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    // A CA that accepts connections and never answers.
    const ca = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const conns: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const c of ca) conns.push(c);
    })();
    const storage = `${dir}/acme`;
    const server = await start(
      acmeYaml({
        ca: `https://127.0.0.1:${(ca.addr as Deno.NetAddr).port}/dir`,
        storage,
        httpPort: freePort(),
        upstream: up.url,
      }),
      { retryBaseMs: 600_000, clientRetries: 0 },
    );
    try {
      await waitFor(() => server.acme!.status().state === "ordering" && conns.length > 0, {
        what: "an order in flight",
      });
      assert.ok(await Deno.stat(`${storage}/order.lock`));
    } finally {
      await server.shutdown();
    }
    await assert.rejects(Deno.stat(`${storage}/order.lock`), Deno.errors.NotFound);
    // Let the abandoned order fail, so that nothing outlives the test.
    ca.close();
    for (const c of conns) c.close();
    await accepting;
    await waitFor(() => server.acme!.status().failures === 1, { what: "the abandoned order" });
  });
});

Deno.test("ACME: a shutdown during an order stops accepting at once (not after the order's 2 s)", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    // A CA that accepts connections and never answers.
    const ca = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const conns: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const c of ca) conns.push(c);
    })();
    const httpPort = freePort();
    const server = await start(
      acmeYaml({
        ca: `https://127.0.0.1:${(ca.addr as Deno.NetAddr).port}/dir`,
        storage: `${dir}/acme`,
        httpPort,
        upstream: up.url,
      }),
      { retryBaseMs: 600_000, clientRetries: 0 },
    );
    try {
      await waitFor(() => server.acme!.status().state === "ordering" && conns.length > 0, {
        what: "an order in flight",
      });
      const stopping = server.shutdown();
      // The plain-HTTP listener closes as the drain begins, not once the order gave up waiting.
      await waitFor(async () => {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port: httpPort })).close();
          return false;
        } catch (err) {
          return err instanceof Deno.errors.ConnectionRefused;
        }
      }, { what: "the listener to refuse connections", timeoutMs: 1_500, intervalMs: 10 });
      await stopping;
    } finally {
      await server.shutdown();
    }
    ca.close();
    for (const c of conns) c.close();
    await accepting;
    await waitFor(() => server.acme!.status().failures === 1, { what: "the abandoned order" });
  });
});

Deno.test("ACME: a corrupt account key fails the order with a message naming the file", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const storage = `${dir}/acme`;
    await Deno.mkdir(storage);
    await Deno.writeTextFile(`${storage}/account.key`, "-----BEGIN PRIVATE KEY-----\ntruncat");
    const yaml = acmeYaml({
      ca: `https://127.0.0.1:${freePort()}/dir`,
      storage,
      httpPort: freePort(),
      upstream: up.url,
    });
    const server = await start(yaml, { retryBaseMs: 60_000, clientRetries: 0 });
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the failed order" });
      assert.equal(
        server.acme!.status().lastError,
        `Cannot use the ACME account key ${storage}/account.key: it is not a PEM private key (remove it to register a new account)`,
      );
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("ACME: an account key of a type the ACME client cannot sign with (Ed25519) fails the order with a message naming the file", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const storage = `${dir}/acme`;
    await Deno.mkdir(storage);
    const key = await new Deno.Command("openssl", { args: ["genpkey", "-algorithm", "ed25519"] })
      .output();
    assert.ok(key.success);
    await Deno.writeFile(`${storage}/account.key`, key.stdout);
    const yaml = acmeYaml({
      ca: `https://127.0.0.1:${freePort()}/dir`,
      storage,
      httpPort: freePort(),
      upstream: up.url,
    });
    const server = await start(yaml, { retryBaseMs: 60_000, clientRetries: 0 });
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the failed order" });
      assert.equal(
        server.acme!.status().lastError,
        `Cannot use the ACME account key ${storage}/account.key: it is an ed25519 key, and Prox signs ACME requests with ECDSA or RSA keys only (remove it to register a new account)`,
      );
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("ACME: a reload of other keys keeps the back-off after a failed order; a changed tls.acme retries at once", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const file = `${dir}/prox.yaml`;
    const base = {
      ca: `https://127.0.0.1:${freePort()}/dir`,
      storage: `${dir}/acme`,
      httpPort: freePort(),
      upstream: up.url,
    };
    await Deno.writeTextFile(file, acmeYaml(base));
    const server = await startServer({ path: file }, {
      logger: memoryLogger(),
      watch: false,
      acme: { retryBaseMs: 600_000, random: () => 0, clientRetries: 0 },
    });
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the first failed order" });
      for (const s of ["5s", "6s", "7s"]) {
        await Deno.writeTextFile(file, acmeYaml({ ...base, extra: `shutdown_timeout: ${s}` }));
        assert.ok((await server.reload()).ok);
        const status = server.acme!.status();
        assert.ok(status.retryInMs! > 250_000, `back-off dropped: ${JSON.stringify(status)}`);
        assert.equal(status.failures, 1);
      }
      await Deno.writeTextFile(file, acmeYaml({ ...base, domains: ["api.prox.test"] }));
      assert.ok((await server.reload()).ok);
      await waitFor(() => server.acme!.status().failures === 2, {
        what: "an order for the new domains",
      });
      assert.equal(server.acme!.status().orders, 2);
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("ACME: a reload that changes tls.acme while an order is in flight is ordered once that order fails, not held off by its back-off", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    // A CA that accepts connections and never answers, until the test lets the order fail.
    const ca = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const conns: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const c of ca) conns.push(c);
    })();
    const file = `${dir}/prox.yaml`;
    const base = {
      ca: `https://127.0.0.1:${(ca.addr as Deno.NetAddr).port}/dir`,
      storage: `${dir}/acme`,
      httpPort: freePort(),
      upstream: up.url,
    };
    await Deno.writeTextFile(file, acmeYaml(base));
    const server = await startServer({ path: file }, {
      logger: memoryLogger(),
      watch: false,
      acme: { retryBaseMs: 600_000, random: () => 0, clientRetries: 0 },
    });
    try {
      await waitFor(() => server.acme!.status().state === "ordering" && conns.length > 0, {
        what: "an order in flight",
      });
      // The operator fixes the domains while the first order still waits on the CA.
      await Deno.writeTextFile(file, acmeYaml({ ...base, domains: ["api.prox.test"] }));
      assert.ok((await server.reload()).ok);
      assert.equal(server.acme!.status().orders, 1);
      ca.close();
      for (const c of conns) c.close();
      await accepting;
      // The first order fails; the changed config is ordered at once, not after 5 min.
      await waitFor(() => server.acme!.status().orders === 2, {
        what: "an order for the reloaded domains",
      });
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("ACME: a rate-limited CA (429 with Retry-After) fails the order at once and is not asked again before then", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const tls = `${ROOT}/tests/fixtures/tls`;
    let posts = 0;
    // Enough of a CA to reach newAccount, which is rate limited for two hours.
    await using ca = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: Deno.readTextFileSync(`${tls}/cert.pem`),
      key: Deno.readTextFileSync(`${tls}/key.pem`),
      onListen: () => {},
    }, async (req) => {
      const base = new URL(req.url).origin;
      const path = new URL(req.url).pathname;
      await req.body?.cancel();
      if (path === "/dir") {
        return Response.json({
          newNonce: `${base}/nonce`,
          newAccount: `${base}/account`,
          newOrder: `${base}/order`,
        });
      }
      if (path === "/nonce") {
        return new Response(null, { headers: { "replay-nonce": crypto.randomUUID() } });
      }
      posts++;
      return Response.json({
        type: "urn:ietf:params:acme:error:rateLimited",
        detail: "too many new accounts, retry after two hours",
      }, {
        status: 429,
        headers: { "retry-after": "7200", "replay-nonce": crypto.randomUUID() },
      });
    });
    const server = await start(
      acmeYaml({
        ca: `https://127.0.0.1:${ca.addr.port}/dir`,
        storage: `${dir}/acme`,
        httpPort: freePort(),
        upstream: up.url,
      }),
      { retryBaseMs: 60_000, random: () => 0 },
    );
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the rate-limited order" });
      const status = server.acme!.status();
      assert.match(status.lastError!, /too many new accounts/);
      assert.ok(status.retryInMs! > 7_100_000, JSON.stringify(status));
      assert.equal(posts, 1);
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("ACME: an expired stored certificate is served while the order fails, with a warning", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("expired but served"));
    const tls = `${ROOT}/tests/fixtures/tls`;
    const storage = `${dir}/acme`;
    await Deno.mkdir(storage);
    await Deno.copyFile(`${tls}/expired.pem`, `${storage}/localhost.crt`);
    await Deno.copyFile(`${tls}/expired.key`, `${storage}/localhost.key`);
    const logger = memoryLogger();
    const server = await start(
      acmeYaml({
        ca: `https://127.0.0.1:${freePort()}/dir`,
        storage,
        httpPort: freePort(),
        upstream: up.url,
        domains: ["localhost"],
      }),
      { retryBaseMs: 600_000, clientRetries: 0 },
      logger,
    );
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the failed order" });
      assert.ok(server.ready());
      assert.ok(
        logger.lines.some((l) => l.startsWith("warn ACME certificate loaded has expired")),
        logger.lines.join("\n"),
      );
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("ACME: the shared back-off record names the failed order by a digest, not by its settings (which hold an EAB key)", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const secret = "c2VjcmV0LW1hYy1rZXktbm90LWZvci1kaXNr";
    const yaml = acmeYaml({
      ca: `https://127.0.0.1:${freePort()}/dir`,
      storage: `${dir}/acme`,
      httpPort: freePort(),
      upstream: up.url,
      acmeExtra: `    eab: { kid: kid-1, hmac_key: ${secret} }`,
    });
    const server = await start(yaml, { retryBaseMs: 60_000, clientRetries: 0 });
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the failed order" });
      const record = await waitFor(
        () => Deno.readTextFile(`${dir}/acme/order.backoff.json`).catch(() => null),
        { what: "the back-off record" },
      );
      assert.equal(JSON.parse(record).failures, 1);
      assert.ok(!record.includes(secret), record);
      assert.ok(!record.includes("kid-1"), record);
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("ACME: an HTTP-01 challenge that reaches the HTTPS listener (a CA following a redirect to https) is answered and access-logged; an unknown token goes to the routes", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream((req) =>
      new Response(`upstream ${new URL(req.url).pathname}`)
    );
    const tls = `${ROOT}/tests/fixtures/tls`;
    // A certificate in hand (not for the domains: an order is due, and fails), and a challenge
    // another instance published in the shared store.
    await Deno.mkdir(`${dir}/acme/challenges`, { recursive: true });
    await Deno.copyFile(`${tls}/cert.pem`, `${dir}/acme/${DOMAINS[0]}.crt`);
    await Deno.copyFile(`${tls}/key.pem`, `${dir}/acme/${DOMAINS[0]}.key`);
    await Deno.writeTextFile(`${dir}/acme/challenges/tok_1`, "tok_1.thumbprint");
    const logger = memoryLogger();
    const httpPort = freePort();
    const server = await start(
      acmeYaml({
        ca: `https://127.0.0.1:${freePort()}/dir`,
        storage: `${dir}/acme`,
        httpPort,
        upstream: up.url,
      }),
      { retryBaseMs: 600_000, clientRetries: 0 },
      logger,
    );
    /** The access records so far, as objects. */
    const access = () =>
      logger.lines.filter((l) => l.startsWith("info access ")).map((l) =>
        JSON.parse(l.slice("info access ".length)) as Record<string, unknown>
      );
    const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${tls}/ca.pem`)] });
    try {
      await waitFor(() => server.ready(), { what: "HTTPS listener" });
      const known = await fetch(
        `https://localhost:${server.port}/.well-known/acme-challenge/tok_1`,
        { client },
      );
      assert.equal(known.status, 200);
      assert.equal(await known.text(), "tok_1.thumbprint");
      const other = await fetch(
        `https://localhost:${server.port}/.well-known/acme-challenge/certbot-token`,
        { client },
      );
      assert.equal(await other.text(), "upstream /.well-known/acme-challenge/certbot-token");
      // The same challenge on the plain-HTTP listener, which always logged it.
      const plain = await fetch(`http://localhost:${httpPort}/.well-known/acme-challenge/tok_1`);
      assert.equal(await plain.text(), "tok_1.thumbprint");
      // Each request logged once: the answered challenges as the plain listener's are
      // (no route), the unknown token by its route.
      const lines = await waitFor(() => access().length >= 3 ? access() : null, {
        what: "three access records",
      });
      const seen = lines.map((l) => [l.path, l.status, l.route, l.tls]);
      assert.deepEqual(seen.map(String).sort(), [
        "/.well-known/acme-challenge/certbot-token,200,/,true",
        "/.well-known/acme-challenge/tok_1,200,,false",
        "/.well-known/acme-challenge/tok_1,200,,true",
      ]);
      // The answer's bytes, as for any other answer ("tok_1.thumbprint").
      const answered = lines.filter((l) => l.route === null).map((l) => l.bytesOut);
      assert.deepEqual(answered, [16, 16]);
    } finally {
      client.close();
      await server.shutdown();
    }
  });
});

Deno.test("ACME: once another instance's certificate from the store makes an order unneeded, /status no longer shows this instance's failed order and its countdown", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const tls = `${ROOT}/tests/fixtures/tls`;
    const ca = `https://127.0.0.1:${freePort()}/dir`;
    const storage = `${dir}/acme`;
    const server = await start(
      acmeYaml({ ca, storage, httpPort: freePort(), upstream: up.url, domains: ["localhost"] }),
      { retryBaseMs: 600_000, clientRetries: 0, checkIntervalMs: 20 },
    );
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the failed order" });
      assert.ok(server.acme!.status().retryInMs! > 0);
      // Another instance sharing the storage got the certificate.
      await Deno.writeTextFile(
        `${storage}/localhost.meta.json`,
        JSON.stringify({ directoryUrl: ca }),
      );
      await Deno.copyFile(`${tls}/key.pem`, `${storage}/localhost.key`);
      await Deno.copyFile(`${tls}/cert.pem`, `${storage}/localhost.crt`);
      await waitFor(() => server.ready() && server.acme!.status().state === "ok", {
        what: "the stored certificate",
      });
      const status = server.acme!.status();
      assert.equal(status.failures, 0);
      assert.equal(status.lastError, null);
      assert.equal(status.retryInMs, null);
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("ACME: a failed renewal of a certificate about to expire is retried before it expires, however long the back-off has grown", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const tls = `${ROOT}/tests/fixtures/tls`;
    const ca = `https://127.0.0.1:${freePort()}/dir`;
    const storage = `${dir}/acme`;
    await Deno.mkdir(`${storage}/challenges`, { recursive: true });
    await Deno.writeTextFile(
      `${storage}/localhost.meta.json`,
      JSON.stringify({ directoryUrl: ca }),
    );
    await Deno.copyFile(`${tls}/key.pem`, `${storage}/localhost.key`);
    await Deno.copyFile(`${tls}/cert.pem`, `${storage}/localhost.crt`);
    const notAfter = Date.parse(
      new X509Certificate(Deno.readTextFileSync(`${tls}/cert.pem`)).validTo,
    );
    const hour = 3_600_000;
    const server = await start(
      acmeYaml({ ca, storage, httpPort: freePort(), upstream: up.url, domains: ["localhost"] }),
      // An hour left; a back-off that has grown to 3 h (halved by random 0: 1.5 h).
      { now: () => notAfter - hour, random: () => 0, retryBaseMs: 3 * hour, clientRetries: 0 },
    );
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the failed renewal" });
      const { retryInMs } = server.acme!.status();
      assert.ok(
        retryInMs !== null && retryInMs < hour,
        `next try in ${retryInMs} ms, expiry in 1 h`,
      );
    } finally {
      await server.shutdown();
    }
  });
});
