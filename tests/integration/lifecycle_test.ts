// Lifecycle through real processes and real signals: hot reload under load, SIGTERM drain,
// and a zero-downtime takeover by a second process on the same port.

import assert from "node:assert/strict";
import { interopTest, ROOT, startUpstream, waitFor } from "../_harness.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { freePort, loadLoop, spawnProx } from "./_cli_process.ts";
import { migratesAcceptQueue } from "../../src/adapters/pid_file.ts";

/** A config with a /ping route, one route per `extra` path, and a marker response header. */
function configText(
  port: number,
  upstream: string,
  o: { extra?: string[]; who?: string; admin?: number } = {},
) {
  const lines = [
    ...(o.admin ? [`admin:`, `  listen_addr: "127.0.0.1:${o.admin}"`] : []),
    `listen_addr: "127.0.0.1:${port}"`,
    `shutdown_timeout: 10s`,
    `health_check:`,
    `  enabled: false`,
    `routes:`,
    `  "/ping":`,
    `    type: proxy`,
    `    target: "${upstream}"`,
    `    response_headers:`,
    `      set: { "X-Who": "${o.who ?? "a"}" }`,
  ];
  for (const p of o.extra ?? []) {
    lines.push(`  "${p}":`, `    type: proxy`, `    target: "${upstream}"`);
  }
  return lines.join("\n") + "\n";
}

async function status(url: string): Promise<number> {
  const res = await fetch(url);
  await res.body?.cancel();
  return res.status;
}

async function refused(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return false;
  } catch (err) {
    return err instanceof Deno.errors.ConnectionRefused;
  }
}

Deno.test("reload under load: 20 rewrites, valid ones visible, invalid ones rejected with location, no failed request", async () => {
  await using up = await startUpstream(() => new Response("pong"));
  const dir = await Deno.makeTempDir({ prefix: "prox-reload-" });
  const file = `${dir}/config.yaml`;
  const port = freePort();
  const admin = freePort();
  await Deno.writeTextFile(file, configText(port, up.url, { admin }));
  await using prox = spawnProx(["serve", "-c", file]);
  await prox.waitForOutput("Prox listening");
  const base = `http://127.0.0.1:${port}`;
  const load = loadLoop(`${base}/ping`);
  const valid: string[] = [];
  try {
    for (let i = 1; i <= 20; i++) {
      const write = async (text: string) => {
        // Half the writes replace the file by rename (how most editors save), half in place.
        if (i % 4 < 2) {
          await Deno.writeTextFile(`${file}.tmp`, text);
          await Deno.rename(`${file}.tmp`, file);
        } else await Deno.writeTextFile(file, text);
      };
      if (i % 2 === 1) {
        valid.push(`/v${i}`);
        await write(configText(port, up.url, { extra: valid, admin }));
        await waitFor(async () => (await status(`${base}/v${i}`)) === 200, {
          what: `route /v${i} after reload ${i}`,
        });
      } else {
        const text = configText(port, up.url, { extra: valid, admin }) + `bogus_${i}: true\n`;
        const line = text.split("\n").length - 1;
        await write(text);
        // The located issue: file:line:col, the unknown key, in the rejection log line.
        await prox.waitForOutput((out) =>
          out.split("\n").some((l) =>
            l.includes("Reload rejected") && l.includes(`${file}:${line}:1`) &&
            l.includes(`bogus_${i}`)
          )
        );
        // Still serving the previous valid config.
        assert.equal(await status(`${base}${valid.at(-1)}`), 200);
      }
    }
  } finally {
    await load.stop();
  }
  assert.deepEqual(load.failures, []);
  // A reload keeps the listener: no keep-alive connection is closed under the clients.
  assert.equal(load.retried, 0);
  assert.ok(load.ok > 50, `only ${load.ok} requests went through`);
  assert.equal(await status(`${base}/v20`), 404);
  // The outcomes are counted for Prometheus (the initial load counts as a success; an in-place
  // write read half-way may add a rejected attempt, so these are lower bounds).
  const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  const count = (result: string) =>
    Number(
      new RegExp(`prox_config_reload_total\\{result="${result}"\\} (\\d+)`).exec(metrics)?.[1],
    );
  assert.ok(count("success") >= 11, metrics);
  assert.ok(count("failure") >= 10, metrics);
  prox.signal("SIGTERM");
  assert.equal((await prox.status).code, 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("SIGTERM during 50 slow requests: all complete, new connections refused, exit 0", async () => {
  let arrived = 0;
  const gate = Promise.withResolvers<void>();
  await using up = await startUpstream(async () => {
    arrived++;
    await gate.promise;
    return new Response("slow".repeat(1000));
  });
  const dir = await Deno.makeTempDir({ prefix: "prox-drain-" });
  const port = freePort();
  const adminPort = freePort();
  await Deno.writeTextFile(
    `${dir}/config.yaml`,
    `admin:\n  listen_addr: "127.0.0.1:${adminPort}"\n` + configText(port, up.url),
  );
  await using prox = spawnProx(["serve", "-c", `${dir}/config.yaml`]);
  await prox.waitForOutput("Prox listening");
  const readyz = `http://127.0.0.1:${adminPort}/readyz`;
  await waitFor(async () => (await status(readyz)) === 200, { what: "/readyz 200" });
  const client = Deno.createHttpClient({});
  const requests = Array.from({ length: 50 }, async () => {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/ping`, { client });
      return { status: res.status, body: await res.text() };
    } catch (err) {
      return { status: 0, body: String(err) };
    }
  });
  try {
    await waitFor(() => arrived === 50, { what: "50 requests at the upstream" });
    prox.signal("SIGTERM");
    await prox.waitForOutput("Draining");
    // Readiness is false from the first signal, while the admin listener still answers.
    assert.equal(await status(readyz), 503);
    await waitFor(() => refused(port), { what: "new connections refused" });
    gate.resolve();
    const results = await Promise.all(requests);
    assert.equal(results.length, 50);
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.body.length, 4000);
    }
    assert.equal((await prox.status).code, 0);
  } finally {
    gate.resolve();
    await Promise.allSettled(requests);
    client.close();
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("takeover: a second process on the same port replaces the first under load with no failed request", async () => {
  await using up = await startUpstream(() => new Response("pong"));
  const dir = await Deno.makeTempDir({ prefix: "prox-takeover-" });
  const port = freePort();
  const pidFile = `${dir}/prox.pid`;
  await Deno.writeTextFile(`${dir}/a.yaml`, configText(port, up.url, { who: "a" }));
  await Deno.writeTextFile(`${dir}/b.yaml`, configText(port, up.url, { who: "b" }));
  await using a = spawnProx(["serve", "-c", `${dir}/a.yaml`, "--pid-file", pidFile]);
  await a.waitForOutput("Prox listening");
  await waitFor(async () => Number(await Deno.readTextFile(pidFile)) === a.pid, {
    what: "a's pid file",
  });
  const load = loadLoop(`http://127.0.0.1:${port}/ping`);
  await using b = spawnProx([
    "serve",
    "-c",
    `${dir}/b.yaml`,
    "--pid-file",
    pidFile,
    "--takeover",
  ]);
  try {
    await b.waitForOutput("Took over");
    assert.equal((await a.status).code, 0);
    assert.match(a.output(), /"reason":"takeover"/);
    // Everything is now served by b.
    const res = await fetch(`http://127.0.0.1:${port}/ping`);
    await res.body?.cancel();
    assert.equal(res.headers.get("x-who"), "b");
    const before = load.ok;
    await waitFor(() => load.ok > before + 50, { what: "load continuing on b" });
  } finally {
    await load.stop();
  }
  // A loop's new connection (after the old process closed its idle one) can land in the old
  // listener's accept queue just before it closes; Linux resets it unless tcp_migrate_req hands
  // it over (.ci/run turns it on), and Prox says so when it takes over.
  const migrates = migratesAcceptQueue();
  assert.equal(b.output().includes("net.ipv4.tcp_migrate_req=1"), migrates === false);
  if (migrates === false) {
    const resets = load.failures.filter((f) => /reset|ECONNRESET/i.test(f));
    assert.ok(resets.length <= 1, `${resets.length} connections reset in the accept queue`);
    assert.deepEqual(load.failures.filter((f) => !resets.includes(f)), []);
  } else assert.deepEqual(load.failures, []);
  // The old process closes its idle keep-alive connections: at most one race per client loop.
  assert.ok(load.retried <= 4, `${load.retried} requests met a closing connection`);
  assert.equal(Number(await Deno.readTextFile(pidFile)), b.pid);
  b.signal("SIGTERM");
  assert.equal((await b.status).code, 0);
  await assert.rejects(Deno.stat(pidFile), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("takeover with HTTP/3: the new process binds UDP once the old one has left", async () => {
  await using up = await startUpstream(() => new Response("pong"));
  const dir = await Deno.makeTempDir({ prefix: "prox-takeover-h3-" });
  const port = freePort();
  const pidFile = `${dir}/prox.pid`;
  const tls = `${ROOT}/tests/fixtures/tls`;
  const h3 = (who: string) =>
    configText(port, up.url, { who }).replace(
      "routes:",
      `tls:\n  cert_path: ${tls}/cert.pem\n  key_path: ${tls}/key.pem\n` +
        `protocols:\n  http3_enabled: true\nroutes:`,
    );
  await Deno.writeTextFile(`${dir}/a.yaml`, h3("a"));
  await Deno.writeTextFile(`${dir}/b.yaml`, h3("b"));
  await using a = spawnProx(["serve", "-c", `${dir}/a.yaml`, "--pid-file", pidFile]);
  await a.waitForOutput("HTTP/3 listening");
  await using b = spawnProx(["serve", "-c", `${dir}/b.yaml`, "--pid-file", pidFile, "--takeover"]);
  await b.waitForOutput("Took over");
  assert.equal((await a.status).code, 0);
  await b.waitForOutput("HTTP/3 listening");
  // Its first attempt met the old process on the UDP port; the retry got it.
  assert.match(b.output(), /Cannot start HTTP\/3 on UDP port/);
  const ca = await Deno.readTextFile(`${tls}/ca.pem`);
  await using conn = await connectH3({ hostname: "127.0.0.1", port, caCerts: [ca] });
  const res = await conn.request("/ping");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-who"), "b");
  b.signal("SIGTERM");
  assert.equal((await b.status).code, 0);
  await Deno.remove(dir, { recursive: true });
});

interopTest(
  "SIGTERM sends HTTP/2 GOAWAY and the in-flight h2 stream still completes",
  ["nghttp"],
  async () => {
    const gate = Promise.withResolvers<void>();
    let arrived = 0;
    await using up = await startUpstream(async () => {
      arrived++;
      await gate.promise;
      return new Response("finished after GOAWAY\n");
    });
    const dir = await Deno.makeTempDir({ prefix: "prox-goaway-" });
    const port = freePort();
    await Deno.writeTextFile(`${dir}/config.yaml`, configText(port, up.url));
    await using prox = spawnProx(["serve", "-c", `${dir}/config.yaml`]);
    await prox.waitForOutput("Prox listening");
    // nghttp speaks h2c with prior knowledge to an http:// URL and prints every frame with -v.
    const client = new Deno.Command("nghttp", {
      args: ["-v", `http://127.0.0.1:${port}/ping`],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      await waitFor(() => arrived === 1, { what: "h2 request at the upstream" });
      prox.signal("SIGTERM");
      await prox.waitForOutput("Draining");
      gate.resolve();
      const out = new TextDecoder().decode((await client.output()).stdout);
      assert.match(out, /recv GOAWAY frame/);
      assert.match(out, /recv \(stream_id=\d+\) :status: 200/);
      assert.match(out, /finished after GOAWAY/);
      assert.equal((await prox.status).code, 0);
    } finally {
      gate.resolve();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("takeover with the admin listener: the new process binds the admin port too and answers there", async () => {
  await using up = await startUpstream(() => new Response("pong"));
  const dir = await Deno.makeTempDir({ prefix: "prox-takeover-admin-" });
  const port = freePort();
  const admin = freePort();
  const pidFile = `${dir}/prox.pid`;
  await Deno.writeTextFile(`${dir}/a.yaml`, configText(port, up.url, { who: "a", admin }));
  await using a = spawnProx(["serve", "-c", `${dir}/a.yaml`, "--pid-file", pidFile]);
  await a.waitForOutput("Admin listening");
  await waitFor(async () => Number(await Deno.readTextFile(pidFile)) === a.pid, {
    what: "a's pid file",
  });
  await using b = spawnProx(["serve", "-c", `${dir}/a.yaml`, "--pid-file", pidFile, "--takeover"]);
  await b.waitForOutput((o) => /Took over|Cannot start/.test(o));
  assert.match(b.output(), /Took over/);
  assert.equal((await a.status).code, 0, a.output());
  const res = await fetch(`http://127.0.0.1:${admin}/status`);
  assert.equal((await res.json()).prox.pid, b.pid);
  b.signal("SIGTERM");
  assert.equal((await b.status).code, 0, b.output());
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a second Prox on the same admin port without --takeover fails to start (not a silent share)", async () => {
  await using up = await startUpstream(() => new Response("pong"));
  const dir = await Deno.makeTempDir({ prefix: "prox-admin-clash-" });
  const admin = freePort();
  await Deno.writeTextFile(`${dir}/a.yaml`, configText(freePort(), up.url, { admin }));
  await Deno.writeTextFile(`${dir}/b.yaml`, configText(freePort(), up.url, { admin }));
  await using a = spawnProx(["serve", "-c", `${dir}/a.yaml`]);
  await a.waitForOutput("Admin listening");
  // Another site's Prox with the default admin address, say: its scrapes must not land on a.
  await using b = spawnProx(["serve", "-c", `${dir}/b.yaml`]);
  await b.waitForOutput((o) => /Admin listening|Cannot start/.test(o));
  assert.doesNotMatch(b.output(), /Admin listening/);
  assert.equal((await b.status).code, 1, b.output());
  assert.match(b.output(), /Cannot listen on 127\.0\.0\.1:\d+ \(admin\): .*in use/i);
  a.signal("SIGTERM");
  assert.equal((await a.status).code, 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("takeover with an invalid config: the new process exits 1, the old one keeps serving", async () => {
  await using up = await startUpstream(() => new Response("pong"));
  const dir = await Deno.makeTempDir({ prefix: "prox-takeover-bad-" });
  const port = freePort();
  const pidFile = `${dir}/prox.pid`;
  await Deno.writeTextFile(`${dir}/a.yaml`, configText(port, up.url, { who: "a" }));
  await Deno.writeTextFile(`${dir}/b.yaml`, configText(port, up.url) + "helth_check: {}\n");
  await using a = spawnProx(["serve", "-c", `${dir}/a.yaml`, "--pid-file", pidFile]);
  await a.waitForOutput("Prox listening");
  await waitFor(async () => Number(await Deno.readTextFile(pidFile)) === a.pid, {
    what: "a's pid file",
  });
  await using b = spawnProx(["serve", "-c", `${dir}/b.yaml`, "--pid-file", pidFile, "--takeover"]);
  assert.equal((await b.status).code, 1);
  assert.match(b.output(), /b\.yaml:\d+:1: error: .*helth_check/);
  assert.equal(Number(await Deno.readTextFile(pidFile)), a.pid);
  const res = await fetch(`http://127.0.0.1:${port}/ping`);
  await res.body?.cancel();
  assert.equal(res.headers.get("x-who"), "a");
  a.signal("SIGTERM");
  assert.equal((await a.status).code, 0);
  await Deno.remove(dir, { recursive: true });
});
