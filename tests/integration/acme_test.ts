// Automatic TLS end to end against Debian's pebble: HTTP-01 answered by Prox's own HTTP
// listener, restart from storage without an order, live renewal under a request loop, and two
// instances sharing one storage directory.
import assert from "node:assert/strict";
import tls from "node:tls";
import { X509Certificate } from "node:crypto";
import { interopTest, requireInterop, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import type { ProxServer } from "../../src/server.ts";
import type { AcmeTuning } from "../../src/adapters/acme.ts";
import { noopMetrics } from "../../src/ports.ts";
import type { Logger } from "../../src/ports.ts";
import { freePort, PEBBLE_TLS_CA, startPebble } from "./_pebble.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { DEBUG_HEADER_ENV } from "../../src/adapters/worker_link.ts";
import { spawnProx } from "./_cli_process.ts";
import type { ProxProcess } from "./_cli_process.ts";

const TOOLS = ["pebble", "pebble-challtestsrv"];
const DOMAINS = ["prox.test", "www.prox.test"];

function acmeYaml(
  o: {
    ca: string;
    storage: string;
    httpPort: number;
    upstream: string;
    extra?: string;
    domains?: string[];
  },
): string {
  return `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
${o.extra ?? ""}
tls:
  acme:
    enabled: true
    domains: ${JSON.stringify(o.domains ?? DOMAINS)}
    email: "ops@prox.test"
    ca_url: "${o.ca}"
    ca_cert: "${PEBBLE_TLS_CA}"
    storage_path: "${o.storage}"
    http_listen_addr: "127.0.0.1:${o.httpPort}"
routes:
  "/":
    type: proxy
    target: "${o.upstream}"
`;
}

/** Collects log lines (message + fields) so tests can assert on them. */
function memoryLogger(): Logger & { lines: string[]; times: number[] } {
  const lines: string[] = [];
  const times: number[] = [];
  const log = (level: string, msg: string, fields?: Record<string, unknown>) => {
    if (lines.length >= 10_000) return;
    lines.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
    times.push(performance.now());
  };
  return {
    lines,
    times,
    log,
    debug: () => {},
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}

async function start(yaml: string, acme?: AcmeTuning, logger?: Logger): Promise<ProxServer> {
  return await startServer({ text: yaml, name: "acme.yaml" }, {
    logger: logger ?? memoryLogger(),
    acme,
    watch: false,
  });
}

/** One HTTPS request over a fresh connection verified against `ca`: the served certificate and the answer. */
async function tlsGet(
  port: number,
  ca: string,
  path = "/",
): Promise<{ serial: string; names: string; status: number; body: string }> {
  const socket = tls.connect({ host: "127.0.0.1", port, servername: DOMAINS[0], ca });
  socket.setTimeout(10_000, () => socket.destroy(new Error("TLS request timed out")));
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", () => resolve());
      socket.once("error", reject);
    });
    const peer = socket.getPeerCertificate();
    const chunks: Uint8Array[] = [];
    socket.on("data", (c: Uint8Array) => chunks.push(c));
    const ended = new Promise<void>((resolve, reject) => {
      socket.once("end", () => resolve());
      socket.once("error", reject);
    });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${DOMAINS[0]}\r\nConnection: close\r\n\r\n`);
    await ended;
    const raw = new TextDecoder().decode(
      chunks.reduce((a, c) => new Uint8Array([...a, ...c]), new Uint8Array()),
    );
    const status = Number(raw.match(/^HTTP\/1\.1 (\d{3})/)?.[1] ?? 0);
    return { serial: peer.serialNumber, names: peer.subjectaltname ?? "", status, body: raw };
  } finally {
    socket.destroy();
  }
}

/** The serial number (hex, upper case) of the first certificate in a PEM chain. */
function currentSerial(pem: string): string {
  return new X509Certificate(pem).serialNumber.toUpperCase();
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "prox-acme-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

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

/**
 * Renewal under load. Runs in a private network namespace with net.ipv4.tcp_migrate_req=1:
 * without it Linux resets connections still queued on a listener that closes, even when
 * another SO_REUSEPORT listener on the port would take them (see README, "Automatic TLS").
 */
function renewalScenario(): Promise<void> {
  return withTempDir(async (dir) => {
    const httpPort = freePort();
    await using pebble = await startPebble({ httpPort, dir });
    let release: () => void = () => {};
    const slowGate = new Promise<void>((r) => release = r);
    await using up = await startUpstream(async (req) => {
      if (new URL(req.url).pathname === "/slow") await slowGate;
      return new Response("ok");
    });
    const yaml = acmeYaml({
      ca: pebble.directoryUrl,
      storage: `${dir}/acme`,
      httpPort,
      upstream: up.url,
      extra: "protocols: { http3_enabled: true }",
    });
    let offset = 0;
    const server = await start(yaml, {
      now: () => Date.now() + offset,
      random: () => 0,
      checkIntervalMs: 50,
    });
    try {
      await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "first certificate" });
      const port = server.port;
      const first = await tlsGet(port, pebble.root);
      assert.equal(first.status, 200);
      const renewAt = server.acme!.status().renewAt!;
      assert.equal(renewAt, server.acme!.status().notAfter! - 30 * 86_400_000);
      // HTTP/3 keeps its UDP endpoint and switches certificate in place: record the switch.
      const h3 = server.h3!;
      const h3Certs: string[] = [];
      const setCertificate = h3.setCertificate.bind(h3);
      h3.setCertificate = (cert, key) => {
        h3Certs.push(cert);
        setCertificate(cert, key);
      };

      // Clients hammer the proxy on fresh connections while the certificate changes.
      const seen = new Set<string>();
      let requests = 0;
      const errors: string[] = [];
      let stop = false;
      let retried = 0;
      const loop = async () => {
        while (!stop) {
          try {
            let r = await tlsGet(port, pebble.root);
            if (r.status === 0 && r.body === "") {
              // Deno.serve's graceful shutdown closes connections that have not sent a request
              // yet; like browsers, retry a GET whose connection closed before any response
              // byte (RFC 9112 §9.3.1).
              retried++;
              r = await tlsGet(port, pebble.root);
            }
            if (r.status !== 200) errors.push(`status ${r.status}`);
            seen.add(r.serial);
            requests++;
          } catch (err) {
            errors.push(String(err));
          }
        }
      };
      const loops = [loop(), loop()];
      const slow = tlsGet(port, pebble.root, "/slow");
      await waitFor(() => requests >= 5, { what: "requests before renewal" });

      offset = renewAt - Date.now() + 1000; // the certificate is now due
      const renewed = await waitFor(async () => {
        const r = await tlsGet(port, pebble.root);
        return r.serial !== first.serial ? r : null;
      }, { timeoutMs: 30_000, what: "the renewed certificate" });
      offset = 0;
      const after = requests;
      await waitFor(() => requests >= after + 5, { what: "requests after renewal" });
      stop = true;
      await Promise.all(loops);
      release();
      const slowResult = await slow;

      assert.equal(renewed.status, 200);
      assert.equal(renewed.names, first.names);
      assert.equal(server.port, port);
      assert.deepEqual(errors, []);
      assert.ok(retried <= 4 * server.acme!.status().orders, `${retried} retries`);
      assert.ok(seen.has(first.serial) && seen.has(renewed.serial), [...seen].join());
      // The request that was in flight on the replaced listener completed.
      assert.equal(slowResult.status, 200);
      assert.equal(slowResult.serial, first.serial);
      assert.ok(server.acme!.status().orders >= 2);
      assert.ok(pebble.orders() >= 2);
      // HTTP/3 got the renewed chain and serves new connections with it.
      assert.ok(h3Certs.length >= 1);
      assert.equal(server.h3, h3);
      await using h3c = await connectH3({
        hostname: "127.0.0.1",
        port,
        caCerts: [pebble.root],
        serverName: DOMAINS[0],
      });
      assert.equal((await h3c.request("/")).status, 200);
      // What HTTP/3 was given is what storage holds and what TCP serves.
      const stored = await Deno.readTextFile(`${dir}/acme/prox.test.crt`);
      assert.equal(h3Certs.at(-1), stored);
      assert.equal((await tlsGet(port, pebble.root)).serial, currentSerial(stored));
    } finally {
      release();
      await server.shutdown();
    }
  });
}

const RENEWAL =
  "ACME renewal when due swaps the served certificate live: a request loop and an in-flight request see no error";
if (Deno.env.get("PROX_ACME_NETNS") === "1") {
  Deno.test(RENEWAL, renewalScenario);
} else if (Deno.uid() === 0 || requireInterop) {
  interopTest(RENEWAL, [...TOOLS, "unshare", "ip"], async () => {
    if (Deno.uid() !== 0) throw new Error("Cannot run: unshare -n needs root");
    const script = [
      "ip link set lo up",
      "echo 1 > /proc/sys/net/ipv4/tcp_migrate_req",
      `exec "${Deno.execPath()}" test -A --no-check --trace-leaks --config "${ROOT}/deno.json" --filter "/^ACME renewal/" "${
        new URL(import.meta.url).pathname
      }"`,
    ].join(" && ");
    const out = await run("unshare", ["-n", "sh", "-c", script], {
      env: { PROX_ACME_NETNS: "1", NO_COLOR: "1" },
      cwd: "/",
      timeoutMs: 120_000,
    });
    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.match(out.stdout, /ok \| 1 passed \| 0 failed/);
  });
} else {
  Deno.test({
    name: `${RENEWAL} (needs root for a private network namespace)`,
    ignore: true,
    fn() {},
  });
}

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
        metrics: { ...noopMetrics, certificateExpiry: (n, t) => void expiries.push([n, t]) },
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
