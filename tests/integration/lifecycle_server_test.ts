// Lifecycle of a Prox started in-process from a config file: listener changes on reload,
// live certificate rotation from watched files, failed binds, the shutdown deadline, hooks,
// readiness and reload coalescing. Real sockets and files; conditions awaited, never slept on.

import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import type { ReloadResult } from "../../src/server.ts";
import type { Logger } from "../../src/ports.ts";
import { freePort } from "./_cli_process.ts";
import { createRateLimitStores } from "../../src/adapters/rate_limit_stores.ts";
import type { RateLimitStores } from "../../src/adapters/rate_limit_stores.ts";

/** A logger that keeps lines in memory for assertions. */
function captureLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = (level: string, msg: string, fields?: Record<string, unknown>) =>
    void lines.push(JSON.stringify({ level, msg, ...fields }));
  return {
    lines,
    log,
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}

const config = (listen: string, extra = "") =>
  `listen_addr: "${listen}"
shutdown_timeout: 5s
health_check:
  enabled: false
${extra}routes:
  "/":
    type: redirect
    target: "https://example.com"
`;

async function refused(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return false;
  } catch (err) {
    return err instanceof Deno.errors.ConnectionRefused;
  }
}

async function answers(url: string, client?: Deno.HttpClient): Promise<number> {
  const res = await fetch(url, { redirect: "manual", client });
  await res.body?.cancel();
  return res.status;
}

Deno.test("reload moves the listener to a new listen_addr: bind first, drain the old one", async () => {
  const gate = Promise.withResolvers<void>();
  let arrived = 0;
  await using up = await startUpstream(async () => {
    arrived++;
    await gate.promise;
    return new Response("done");
  });
  const dir = await Deno.makeTempDir({ prefix: "prox-listen-" });
  const file = `${dir}/config.yaml`;
  const slowRoute = `  "/slow":\n    type: proxy\n    target: "${up.url}"\n`;
  await Deno.writeTextFile(file, config("127.0.0.1:0") + slowRoute);
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  const client = Deno.createHttpClient({});
  try {
    const oldPort = server.port;
    const inflight = fetch(`http://127.0.0.1:${oldPort}/slow`, { client }).then((r) => r.text());
    await waitFor(() => arrived === 1, { what: "slow request at the upstream" });
    const newPort = freePort();
    await Deno.writeTextFile(file, config(`127.0.0.1:${newPort}`) + slowRoute);
    const result = await server.reload();
    assert.equal(result.ok, true, JSON.stringify(result.issues));
    assert.equal(server.port, newPort);
    assert.equal(await answers(`http://127.0.0.1:${newPort}/`), 307);
    // The old listener stopped accepting but finishes what it had.
    await waitFor(() => refused(oldPort), { what: "old port closed" });
    gate.resolve();
    assert.equal(await inflight, "done");
  } finally {
    gate.resolve();
    client.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload that cannot bind is rejected and the current listener keeps serving", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-bind-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  const results: ReloadResult[] = [];
  const server = await startServer({ path: file }, {
    logger: captureLogger(),
    watch: false,
    onReload: (r) => void results.push(r),
  });
  // Held without SO_REUSEPORT, so nobody else can bind it.
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = server.port;
    const taken = (blocker.addr as Deno.NetAddr).port;
    await Deno.writeTextFile(file, "# port moved\n" + config(`127.0.0.1:${taken}`));
    const result = await server.reload({ trigger: "test" });
    assert.equal(result.ok, false);
    assert.match(result.issues[0].message, /Cannot listen on 127\.0\.0\.1:\d+/);
    // Located at the address that could not be bound, not at the file's first line.
    const { path, line, col } = result.issues[0];
    assert.deepEqual({ path, line, col }, { path: "listen_addr", line: 2, col: 1 });
    assert.equal(server.port, port);
    assert.equal(server.snapshot().version, 1);
    assert.equal(await answers(`http://127.0.0.1:${port}/`), 307);
    assert.deepEqual(results.map((r) => [r.ok, r.trigger]), [[false, "test"]]);
    assert.equal(server.reloadStats().failure, 1);
    assert.equal(server.reloadStats().success, 0);
  } finally {
    blocker.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload whose admin address cannot be bound is rejected; admin stays where it was", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-admin-bind-" });
  const file = `${dir}/config.yaml`;
  const adminAt = (addr: string) => config("127.0.0.1:0", `admin: { listen_addr: "${addr}" }\n`);
  await Deno.writeTextFile(file, adminAt("127.0.0.1:0"));
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const before = server.admin!.port;
    const taken = (blocker.addr as Deno.NetAddr).port;
    await Deno.writeTextFile(file, adminAt(`127.0.0.1:${taken}`));
    const result = await server.reload({ trigger: "test" });
    // It was counted a success while the admin API kept its old port and /config showed the new.
    assert.equal(result.ok, false);
    assert.match(result.issues[0].message, /Cannot listen on 127\.0\.0\.1:\d+ \(admin\)/);
    const { path, line, col } = result.issues[0];
    assert.deepEqual({ path, line, col }, { path: "admin.listen_addr", line: 5, col: 10 });
    assert.equal(server.snapshot().version, 1);
    assert.equal(server.reloadStats().failure, 1);
    assert.equal(server.admin!.port, before);
    const res = await fetch(`http://127.0.0.1:${before}/config`);
    assert.equal((await res.json()).admin.listen_addr, "127.0.0.1:0");
  } finally {
    blocker.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config warnings at start-up are logged located, as on reload", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-warn-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(
    file,
    config("127.0.0.1:0", "protocols: { http2_max_frame_size: 32768, http1_engine: deno }\n"),
  );
  const logger = captureLogger();
  const server = await startServer({ path: file }, { logger, watch: false });
  try {
    await server.reload({ trigger: "test" });
    const warnings = logger.lines.map((l) => JSON.parse(l)).filter((l) =>
      l.msg === "Config warning"
    );
    assert.equal(warnings.length, 2);
    // The start-up line had the message and key path only: no file, line, column (or fix).
    for (const w of warnings) {
      assert.match(
        w.issue,
        /config\.yaml:5:14: warning: protocols\.http2_max_frame_size: .*no effect/,
      );
    }
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload of a deleted config says so plainly and keeps serving", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-gone-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  try {
    await Deno.remove(file);
    const result = await server.reload({ trigger: "test" });
    assert.equal(result.ok, false);
    // It was "Cannot reload: No such file or directory (os error 2): readfile '…'".
    assert.equal(
      result.issues[0].message,
      `Cannot reload: Cannot read config "${file}": file not found`,
    );
    assert.equal(await answers(`http://127.0.0.1:${server.port}/`), 307);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload of a symlinked config repointed at nothing says why and the fix, and keeps serving", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-dangling-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(`${dir}/v1.yaml`, config("127.0.0.1:0"));
  await Deno.symlink(`${dir}/v1.yaml`, file);
  const logger = captureLogger();
  const server = await startServer({ path: file }, { logger, watch: false });
  try {
    // A release script repoints the link before the new version's file is in place.
    await Deno.remove(file);
    await Deno.symlink(`${dir}/v2.yaml`, file);
    const result = await server.reload({ trigger: "test" });
    assert.equal(result.ok, false);
    assert.equal(
      result.issues[0].message,
      `Cannot reload: Cannot read config "${file}": it is a symbolic link to "${dir}/v2.yaml", which does not exist`,
    );
    // The fix `prox serve` prints for the same file at start, in the issue and in the log line.
    const fix = "create that file, or point the link (or --config) at the config file";
    assert.equal(result.issues[0].hint, fix);
    const line = logger.lines.find((l) => l.includes("Reload failed"));
    assert.ok(line?.includes(fix), line ?? "no Reload failed line");
    assert.equal(await answers(`http://127.0.0.1:${server.port}/`), 307);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload of a config grown over 4 MiB is refused, said plainly, and the old one keeps serving", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-big-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  try {
    const grown = new TextEncoder().encode(config("127.0.0.1:0") + "#".repeat(4 * 1024 * 1024));
    await Deno.writeFile(file, grown);
    const result = await server.reload({ trigger: "test" });
    assert.equal(result.ok, false);
    assert.match(
      result.issues[0].message,
      new RegExp(`^Cannot reload: Cannot read config "${file}": .*4 MiB`),
    );
    assert.equal(await answers(`http://127.0.0.1:${server.port}/`), 307);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a worker's reload lines name the worker (N workers log N rejections)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-worker-log-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  const logger = captureLogger();
  const server = await startServer({ path: file }, {
    logger,
    watch: false,
    worker: { index: 1, exclusive: false },
  });
  try {
    await Deno.writeTextFile(file, config("127.0.0.1:0") + "bogus: 1\n");
    assert.equal((await server.reload({ trigger: "SIGHUP" })).ok, false);
    const rejected = logger.lines.map((l) => JSON.parse(l)).filter((l) =>
      l.msg.startsWith("Reload rejected")
    );
    assert.deepEqual(rejected.map((l) => l.worker), [1]);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("workers: a worker that refuses the text worker 0 applied keeps serving its previous config and reports why", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-follower-refuses-" });
  const file = `${dir}/config.yaml`;
  const copy = `${dir}/config.applied.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  await Deno.writeTextFile(copy, config("127.0.0.1:0"));
  const outcomes: ReloadResult[] = [];
  const server = await startServer({ path: file }, {
    logger: captureLogger(),
    watch: false,
    worker: { index: 1, exclusive: false, configCopy: copy },
    onReload: (r) => void outcomes.push(r),
  });
  try {
    const before = await fetch(`http://127.0.0.1:${server.port}/`, { redirect: "manual" });
    await before.body?.cancel();
    // What worker 0 applied names a certificate this worker cannot read.
    await Deno.writeTextFile(
      copy,
      config("127.0.0.1:0").replace("https://example.com", "https://example.org") +
        `tls:\n  cert_path: ${dir}/gone.pem\n  key_path: ${dir}/gone.key\n`,
    );
    const r = await server.reload({ trigger: "SIGHUP" });
    assert.equal(r.ok, false);
    assert.deepEqual(outcomes.map((o) => o.ok), [false], "told to the supervisor (mod.ts)");
    assert.match(JSON.stringify(r.issues), /gone\.pem/);
    assert.equal(server.snapshot().version, 1);
    const after = await fetch(`http://127.0.0.1:${server.port}/`, { redirect: "manual" });
    await after.body?.cancel();
    assert.equal(after.headers.get("location"), before.headers.get("location"));
    assert.equal(after.headers.get("location"), "https://example.com/");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("workers: another worker's refused reload shows in worker 0's /status and /config/history", async () => {
  const server = await startServer({
    text: config("127.0.0.1:0", `admin: { listen_addr: "127.0.0.1:0" }\n`),
    name: "config.yaml",
  }, { logger: captureLogger(), watch: false, worker: { index: 0, exclusive: true } });
  try {
    const admin = `http://127.0.0.1:${server.admin!.port}`;
    server.workerReloadFailed(1, { trigger: "SIGHUP", error: "config.yaml:1:1: error: boom" });
    const status = await (await fetch(`${admin}/status`)).json();
    assert.equal(status.config.lastReload.ok, false);
    assert.match(status.config.lastReload.errors[0], /Worker 1 refused the reload.*boom/);
    const history = await (await fetch(`${admin}/config/history`)).json();
    assert.equal(history[0].worker, 1);
    assert.equal(history[0].ok, false);
  } finally {
    await server.shutdown();
  }
});

Deno.test("a config rejected for a missing certificate is applied once the certificate appears", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-late-cert-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  const results: ReloadResult[] = [];
  const server = await startServer({ path: file }, {
    logger: captureLogger(),
    watchDebounceMs: 20,
    onReload: (r) => void results.push(r),
  });
  try {
    // Config management wrote the config before the certificate it names.
    const tls = `tls:\n  cert_path: ${dir}/cert.pem\n  key_path: ${dir}/key.pem\n`;
    await Deno.writeTextFile(file, config("127.0.0.1:0", tls));
    await waitFor(() => results.length === 1);
    assert.equal(results[0].ok, false);
    assert.match(results[0].issues[0].message, /Certificate file not found/);
    const fixtures = `${ROOT}/tests/fixtures/tls`;
    await Deno.copyFile(`${fixtures}/key.pem`, `${dir}/key.pem`);
    await Deno.copyFile(`${fixtures}/cert.pem`, `${dir}/cert.pem`);
    // Nothing watched those files: the old config stayed until someone touched the config.
    await waitFor(() => results.some((r) => r.ok), { timeoutMs: 5000 });
    assert.equal(server.listeners[0].tls, true);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("concurrent reload() calls coalesce: one runs, the rest share the next run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-coalesce-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  try {
    const all = await Promise.all(Array.from({ length: 10 }, () => server.reload()));
    assert.ok(all.every((r) => r.ok));
    assert.equal(server.reloadStats().success, 2);
    assert.equal(server.snapshot().version, 3);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shutdown: readiness false at once, hooks run, in-flight cut with 503 at shutdown_timeout", async () => {
  const gate = Promise.withResolvers<void>();
  let arrived = 0;
  await using up = await startUpstream(async () => {
    arrived++;
    await gate.promise;
    return new Response("too late");
  });
  const dir = await Deno.makeTempDir({ prefix: "prox-deadline-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(
    file,
    config("127.0.0.1:0").replace("shutdown_timeout: 5s", "shutdown_timeout: 300ms") +
      `  "/hang":\n    type: proxy\n    target: "${up.url}"\n`,
  );
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  const hookCalls: string[] = [];
  server.onShutdown(({ reason }) => void hookCalls.push(reason));
  const client = Deno.createHttpClient({});
  try {
    assert.equal(server.ready(), true);
    const hung = fetch(`http://127.0.0.1:${server.port}/hang`, { client }).then(
      async (r) => `${r.status} ${await r.text()}`,
      (e) => `failed: ${e}`,
    );
    await waitFor(() => arrived === 1, { what: "request at the upstream" });
    const t0 = performance.now();
    const done = server.shutdown({ reason: "test" });
    assert.equal(server.ready(), false);
    assert.equal(server.draining(), true);
    await done;
    const ms = performance.now() - t0;
    assert.ok(ms >= 250 && ms < 3000, `shutdown took ${ms} ms`);
    assert.deepEqual(hookCalls, ["test"]);
    assert.equal((await server.reload()).ok, false);
    // At the deadline the upstream client closes: the request still waiting on its upstream is
    // answered 503 (a process then exits and cuts whatever remains: see cli_test.ts).
    assert.match(await hung, /^503 /);
  } finally {
    gate.resolve();
    client.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Makes a second CA and a localhost leaf signed by it (like tests/fixtures/tls/make.sh). */
async function secondCertificate(dir: string): Promise<void> {
  const sh = `set -e; cd "${dir}"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout ca2.key -out ca2.pem -subj "/CN=Prox Test CA 2" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout key2.pem -out leaf2.csr -subj "/CN=localhost"
printf 'basicConstraints=critical,CA:FALSE\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' > leaf2.ext
openssl x509 -req -in leaf2.csr -CA ca2.pem -CAkey ca2.key -CAcreateserial -days 2 \
  -extfile leaf2.ext -out cert2.pem`;
  const r = await run("bash", ["-c", sh]);
  if (r.code !== 0) throw new Error(`Cannot make a test certificate: ${r.stderr}`);
}

interopTest(
  "TLS certificate files are watched and swapped live on the same port",
  ["openssl"],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "prox-certs-" });
    const fixtures = `${ROOT}/tests/fixtures/tls`;
    await Deno.copyFile(`${fixtures}/cert.pem`, `${dir}/cert.pem`);
    await Deno.copyFile(`${fixtures}/key.pem`, `${dir}/key.pem`);
    await secondCertificate(dir);
    const file = `${dir}/config.yaml`;
    await Deno.writeTextFile(
      file,
      config("127.0.0.1:0", `tls:\n  cert_path: ${dir}/cert.pem\n  key_path: ${dir}/key.pem\n`),
    );
    const logger = captureLogger();
    const server = await startServer({ path: file }, { logger, watchDebounceMs: 20 });
    const trusting = async (ca: string) => {
      const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(ca)] });
      try {
        return await answers(`https://localhost:${server.port}/`, client);
      } catch {
        return 0;
      } finally {
        client.close();
      }
    };
    try {
      const port = server.port;
      assert.equal(await trusting(`${fixtures}/ca.pem`), 307);
      assert.equal(await trusting(`${dir}/ca2.pem`), 0);
      // Rotate the way cert tools do: new files renamed over the old ones, key and cert.
      await Deno.rename(`${dir}/key2.pem`, `${dir}/key.pem`);
      await Deno.rename(`${dir}/cert2.pem`, `${dir}/cert.pem`);
      await waitFor(async () => (await trusting(`${dir}/ca2.pem`)) === 307, {
        what: `the new certificate served\n${logger.lines.join("\n")}`,
      });
      assert.equal(await trusting(`${fixtures}/ca.pem`), 0);
      assert.equal(server.port, port);
      assert.ok(logger.lines.some((l) => l.includes("Config reloaded")));
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("a reload that finds the key file emptied keeps serving TLS, never plain HTTP", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-empty-key-" });
  const fixtures = `${ROOT}/tests/fixtures/tls`;
  await Deno.copyFile(`${fixtures}/cert.pem`, `${dir}/cert.pem`);
  await Deno.copyFile(`${fixtures}/key.pem`, `${dir}/key.pem`);
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(
    file,
    config("127.0.0.1:0", `tls:\n  cert_path: ${dir}/cert.pem\n  key_path: ${dir}/key.pem\n`),
  );
  const server = await startServer({ path: file }, { logger: captureLogger() });
  const client = Deno.createHttpClient({
    caCerts: [await Deno.readTextFile(`${fixtures}/ca.pem`)],
  });
  try {
    // A rotation that truncates the file before writing it: the listener used to restart
    // without TLS, answering plain HTTP on the HTTPS port.
    await Deno.writeTextFile(`${dir}/key.pem`, "");
    const r = await server.reload();
    assert.equal(r.ok, false);
    assert.equal(await answers(`https://localhost:${server.port}/`, client), 307);
    assert.equal(await answers(`http://127.0.0.1:${server.port}/`).catch(() => 0), 0);
  } finally {
    client.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest(
  "an upstream CA file named by a route is watched: replacing it reloads",
  ["openssl"],
  async () => {
    const fixtures = `${ROOT}/tests/fixtures/tls`;
    await using up = await startUpstream(() => new Response("secure upstream"), {
      cert: await Deno.readTextFile(`${fixtures}/cert.pem`),
      key: await Deno.readTextFile(`${fixtures}/key.pem`),
    });
    const dir = await Deno.makeTempDir({ prefix: "prox-ca-" });
    await Deno.copyFile(`${fixtures}/ca.pem`, `${dir}/upstream-ca.pem`);
    await secondCertificate(dir);
    const file = `${dir}/config.yaml`;
    await Deno.writeTextFile(
      file,
      config("127.0.0.1:0") +
        `  "/up":\n    type: proxy\n    target: "${up.url}"\n    tls:\n      ca_cert: ${dir}/upstream-ca.pem\n`,
    );
    const server = await startServer({ path: file }, {
      logger: captureLogger(),
      watchDebounceMs: 20,
    });
    try {
      assert.equal(await answers(`http://127.0.0.1:${server.port}/up`), 200);
      // Trust only the other CA now: the upstream's certificate no longer verifies.
      await Deno.copyFile(`${dir}/ca2.pem`, `${dir}/upstream-ca.pem.new`);
      await Deno.rename(`${dir}/upstream-ca.pem.new`, `${dir}/upstream-ca.pem`);
      await waitFor(async () => (await answers(`http://127.0.0.1:${server.port}/up`)) === 502, {
        what: "the new CA applied",
      });
      assert.equal(server.snapshot().version, 2);
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("a request in flight during a reload finishes on the config it started with", async () => {
  const gate = Promise.withResolvers<void>();
  let arrived = 0;
  await using up = await startUpstream(async () => {
    arrived++;
    await gate.promise;
    return new Response("slow");
  });
  const dir = await Deno.makeTempDir({ prefix: "prox-pinned-" });
  const file = `${dir}/config.yaml`;
  const route = (v: string) =>
    `  "/slow":\n    type: proxy\n    target: "${up.url}"\n` +
    `    response_headers:\n      set: { "X-Config": "${v}" }\n`;
  await Deno.writeTextFile(file, config("127.0.0.1:0") + route("old"));
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  const client = Deno.createHttpClient({});
  try {
    const url = `http://127.0.0.1:${server.port}/slow`;
    const inflight = fetch(url, { client });
    await waitFor(() => arrived === 1, { what: "request at the upstream" });
    await Deno.writeTextFile(file, config("127.0.0.1:0") + route("new"));
    assert.equal((await server.reload()).ok, true);
    gate.resolve();
    const res = await inflight;
    await res.body?.cancel();
    assert.equal(res.headers.get("x-config"), "old");
    const after = await fetch(url, { client });
    await after.body?.cancel();
    assert.equal(after.headers.get("x-config"), "new");
  } finally {
    gate.resolve();
    client.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HTTP/3 follows a reload: same listener, new http3_config deferred to restart with a warning", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  const dir = await Deno.makeTempDir({ prefix: "prox-h3-reload-" });
  const file = `${dir}/config.yaml`;
  const text = (idle: number) =>
    config(
      "127.0.0.1:0",
      `tls:\n  cert_path: ${tls}/cert.pem\n  key_path: ${tls}/key.pem\n` +
        `protocols:\n  http3_enabled: true\n  http3_config: { max_idle_timeout: ${idle} }\n`,
    );
  await Deno.writeTextFile(file, text(10000));
  const logger = captureLogger();
  const server = await startServer({ path: file }, { logger, watch: false });
  try {
    const h3 = server.h3;
    assert.ok(h3, "HTTP/3 is up");
    assert.equal(server.snapshot().altSvc, `h3=":${server.port}"; ma=86400`);
    await Deno.writeTextFile(file, text(20000));
    assert.equal((await server.reload()).ok, true);
    assert.equal(server.h3, h3);
    assert.equal(server.snapshot().altSvc, `h3=":${server.port}"; ma=86400`);
    assert.ok(
      logger.lines.some((l) => l.includes("http3_config changed")),
      logger.lines.join("\n"),
    );
    // Turned off by a reload: the listener goes and Alt-Svc is withdrawn.
    await Deno.writeTextFile(
      file,
      text(20000).replace("http3_enabled: true", "http3_enabled: false"),
    );
    assert.equal((await server.reload()).ok, true);
    assert.equal(server.h3, null);
    assert.equal(server.snapshot().altSvc, null);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a reload that changes workers or upstream_pool says they apply at restart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-restart-only-" });
  const file = `${dir}/config.yaml`;
  const listen = `127.0.0.1:${freePort()}`;
  await Deno.writeTextFile(file, config(listen));
  const logger = captureLogger();
  const server = await startServer({ path: file }, { logger, watch: false });
  try {
    await Deno.writeTextFile(
      file,
      config(listen, "workers: 2\nupstream_pool:\n  queue_limit: 5\n"),
    );
    assert.equal((await server.reload()).ok, true);
    const warned = (key: string) =>
      logger.lines.some((l) =>
        l.includes('"warn"') && l.includes(`${key} changed; it applies when Prox restarts`)
      );
    assert.ok(warned("workers") && warned("upstream_pool"), logger.lines.join("\n"));
    // The served config (GET /config) shows the values that apply, not the file's new ones.
    assert.equal(server.snapshot().config.upstream_pool.queue_limit, 1024);
    assert.equal(server.snapshot().config.workers, 1);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shutdown while a slow client uploads: the upload completes before the listener closes", async () => {
  let received = 0;
  await using up = await startUpstream(async (req) => {
    for await (const chunk of req.body!) received += chunk.length;
    return new Response(`got ${received}`);
  });
  const dir = await Deno.makeTempDir({ prefix: "prox-upload-drain-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(
    file,
    `listen_addr: "127.0.0.1:0"\nshutdown_timeout: 10s\nhealth_check:\n  enabled: false\n` +
      `routes:\n  "/":\n    type: proxy\n    target: "${up.url}"\n`,
  );
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  let stopping: Promise<void> | null = null;
  try {
    // A client that sends 96 KiB (past what the proxy holds for a retry), then 8 KiB every
    // 50 ms (a slow upload); shutdown begins once the upstream has the first bytes.
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (sent === 12) {
          await waitFor(() => received > 0, { what: "the first bytes upstream" });
          stopping = server.shutdown();
        } else if (sent > 12) await new Promise((r) => setTimeout(r, 50));
        if (sent++ === 20) c.close();
        else c.enqueue(new Uint8Array(8192));
      },
    });
    const res = await fetch(`http://127.0.0.1:${server.port}/`, { method: "POST", body });
    assert.deepEqual([res.status, await res.text()], [200, `got ${20 * 8192}`]);
  } finally {
    await (stopping ?? server.shutdown());
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a config saved while Prox starts is loaded once the watch runs (not lost)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-save-at-start-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  // Start-up is paused after the config was read (here: inside the rate-limit store set-up)
  // while a deploy tool saves the next version of the file.
  const stores = createRateLimitStores();
  let saved = false;
  const rateLimits: RateLimitStores = Object.assign(Object.create(stores), {
    async configure(...args: Parameters<RateLimitStores["configure"]>) {
      if (!saved) {
        saved = true;
        await Deno.writeTextFile(file, config("127.0.0.1:0").replace("example.com", "example.org"));
      }
      return await stores.configure(...args);
    },
  });
  const server = await startServer({ path: file }, {
    logger: captureLogger(),
    rateLimits,
    watch: true,
    watchDebounceMs: 10,
  });
  try {
    await waitFor(async () => {
      const res = await fetch(`http://127.0.0.1:${server.port}/a`, { redirect: "manual" });
      await res.body?.cancel();
      return res.headers.get("location") === "https://example.org/a";
    }, { what: "the config saved during start-up", timeoutMs: 3000 });
  } finally {
    await server.shutdown();
    await stores.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a reload asked for during shutdown is skipped, not counted as a failed config reload", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-reload-drain-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0"));
  const logger = captureLogger();
  const server = await startServer({ path: file }, { logger, watch: false });
  try {
    const stopping = server.shutdown();
    const r = await server.reload({ trigger: "SIGHUP" });
    assert.equal(r.ok, false);
    assert.match(r.issues[0].message, /shutting down/);
    assert.equal(server.reloadStats().failure, 0);
    assert.ok(!logger.lines.some((l) => l.includes("current config keeps serving")));
    await stopping;
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shutdown is not held past shutdown_timeout by a reload stuck reading the config", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-stuck-reload-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, config("127.0.0.1:0").replace("5s", "500ms"));
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  // A read that never ends, as on a hung network file system: a FIFO with no writer.
  await Deno.remove(file);
  const mk = await new Deno.Command("mkfifo", { args: [file] }).output();
  assert.ok(mk.success);
  const reloading = server.reload({ trigger: "SIGHUP" });
  try {
    const port = server.port;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stopped = await Promise.race([
      server.shutdown().then(() => true),
      new Promise<false>((r) => timer = setTimeout(() => r(false), 3000)),
    ]);
    clearTimeout(timer);
    assert.ok(stopped, "shutdown ended within its 500 ms grace (plus slack)");
    assert.ok(await refused(port));
  } finally {
    // Gives the stuck read its end of file, so the reload ends (and fails).
    (await Deno.open(file, { write: true })).close();
    assert.equal((await reloading).ok, false);
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("start-up: an admin port already held fails the start and leaves nothing bound or probing", async () => {
  let probes = 0;
  await using up = await startUpstream(() => {
    probes++;
    return new Response("ok");
  });
  using held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "prox-admin-held-" });
  const logger = captureLogger();
  const text = (admin: string) =>
    `listen_addr: "127.0.0.1:${port}"
health_check: { interval_secs: 60 }
${admin}routes:
  "/": { type: proxy, target: "${up.url}" }
`;
  try {
    await Deno.writeTextFile(
      `${dir}/held.yaml`,
      text(`admin: { listen_addr: "127.0.0.1:${held.addr.port}" }\n`),
    );
    await assert.rejects(
      startServer({ path: `${dir}/held.yaml` }, { logger, watch: false }),
      /Address already in use/,
    );
    assert.ok(await refused(port), "the main listener was left bound");
    assert.ok(!logger.lines.some((l) => l.includes("Prox listening")), logger.lines.join("\n"));
    // A server that does start probes once; a prober left behind by the failed one would have
    // probed too (it started earlier).
    await Deno.writeTextFile(`${dir}/ok.yaml`, text(""));
    const server = await startServer({ path: `${dir}/ok.yaml` }, {
      logger: captureLogger(),
      watch: false,
    });
    try {
      await waitFor(() => server.upstreams.list()[0]?.status === "up", { what: "probed up" });
      assert.equal(probes, 1);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a reload rejected after its snapshot was built leaves the shared cache bound as it was", async () => {
  await using up = await startUpstream(() =>
    new Response("x".repeat(4096), { headers: { "cache-control": "max-age=600" } })
  );
  const dir = await Deno.makeTempDir({ prefix: "prox-cache-bind-" });
  const file = `${dir}/config.yaml`;
  const yaml = (listen: string, maxSize: string) =>
    `listen_addr: "${listen}"\nhealth_check: { enabled: false }\ncache: { max_size: ${maxSize} }\n` +
    `routes:\n  /: { type: proxy, target: "${up.url}", cache: { max_object_size: 5000 } }\n`;
  await Deno.writeTextFile(file, yaml("127.0.0.1:0", "1MiB"));
  const server = await startServer({ path: file }, { logger: captureLogger(), watch: false });
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const status = async (path: string) => {
      const res = await fetch(`http://127.0.0.1:${server.port}${path}`, {
        headers: { "accept-encoding": "identity" },
      });
      await res.body?.cancel();
      return res.headers.get("cache-status") ?? "";
    };
    assert.match(await status("/a"), /stored$/);
    assert.match(await status("/b"), /stored$/);
    assert.match(await status("/a"), /^prox; hit/);
    // A bound for one entry, on an address that cannot be bound: the reload fails after the build.
    const taken = (blocker.addr as Deno.NetAddr).port;
    await Deno.writeTextFile(file, yaml(`127.0.0.1:${taken}`, "6000"));
    const result = await server.reload({ trigger: "test" });
    assert.equal(result.ok, false);
    assert.equal(server.snapshot().version, 1);
    // The config that serves says 1MiB: both entries stay (the 6000-byte bound evicted /b).
    assert.match(await status("/b"), /^prox; hit/);
    assert.match(await status("/a"), /^prox; hit/);
  } finally {
    blocker.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a forward_auth tls.ca_cert file replaced on disk reloads it, as an upstream's does", async () => {
  const TLS = `${ROOT}/tests/fixtures/tls`;
  await using auth = await startUpstream(() => new Response("ok"), {
    cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
    key: Deno.readTextFileSync(`${TLS}/key.pem`),
  });
  await using up = await startUpstream(() => new Response("app"));
  const dir = await Deno.makeTempDir({ prefix: "prox-fa-ca-" });
  // A certificate that is not the auth service's issuer: its answers are not trusted yet.
  await Deno.copyFile(`${TLS}/cert.pem`, `${dir}/ca.pem`);
  await Deno.writeTextFile(
    `${dir}/config.yaml`,
    `listen_addr: "127.0.0.1:0"\nhealth_check: { enabled: false }\nforward_auth:\n` +
      `  url: "https://localhost:${auth.port}/check"\n  tls: { ca_cert: "${dir}/ca.pem" }\n` +
      `routes:\n  "/": { type: proxy, target: "${up.url}" }\n`,
  );
  const reloads: ReloadResult[] = [];
  const server = await startServer({ path: `${dir}/config.yaml` }, {
    logger: captureLogger(),
    watchDebounceMs: 20,
    onReload: (r) => void reloads.push(r),
  });
  try {
    const url = `http://127.0.0.1:${server.port}/`;
    assert.equal(await answers(url), 503);
    await Deno.copyFile(`${TLS}/ca.pem`, `${dir}/ca.pem`);
    await waitFor(() => reloads.length > 0, { what: "a reload after the CA file changed" });
    assert.deepEqual(reloads.map((r) => [r.ok, r.trigger]), [[true, "file"]]);
    assert.equal(await answers(url), 200);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
