// Logs of a real `prox serve` process: JSON lines at info by default (start-up, reloads, access),
// the level from config, env and flag, and the NCSA combined access-log format.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { freePort, serveArgs, spawnProx } from "./_process.ts";

/**
 * Starts `prox serve` on `yaml` (`{PORT}` replaced) with `unread` a pipe nobody reads for now (a
 * log shipper that hangs) and the other stream discarded; resolves once it listens.
 */
async function spawnUnread(unread: "stdout" | "stderr", yaml: string) {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "prox-test-" });
  await Deno.writeTextFile(`${dir}/config.yaml`, yaml.replaceAll("{PORT}", String(port)));
  const child = new Deno.Command(Deno.execPath(), {
    args: serveArgs("config.yaml"),
    cwd: dir,
    env: { PROX_LOG_LEVEL: "info" },
    stdout: unread === "stdout" ? "piped" : "null",
    stderr: unread === "stderr" ? "piped" : "null",
  }).spawn();
  try {
    await waitFor(async () => {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        return true;
      } catch {
        return false;
      }
    }, { timeoutMs: 20_000, what: "prox to listen" });
  } catch (err) {
    child.kill("SIGKILL");
    await (unread === "stdout" ? child.stdout : child.stderr).cancel().catch(() => {});
    await child.status;
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  return { child, dir, port };
}

function jsonLines(out: string): Record<string, unknown>[] {
  return out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

Deno.test("prox serve logs start-up, access and reload as JSON lines at the default level", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using p = await spawnProx(
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
routes: { "/api": { type: proxy, target: "${up.url}" } }
`,
    { env: { PROX_LOG_LEVEL: "" } },
  );
  const res = await fetch(`http://127.0.0.1:${p.port}/api/x?y=1`, {
    headers: { "user-agent": "logs-test" },
  });
  await res.body?.cancel();
  const access = await waitFor(
    () => jsonLines(p.output()).find((l) => l.msg === "access" && l.userAgent === "logs-test"),
    { what: "an access line" },
  );
  assert.equal(access.level, "info");
  assert.equal(access.path, "/api/x");
  assert.equal(access.route, "/api");
  assert.equal(access.status, 200);
  assert.equal(access.upstream, up.url);
  assert.equal(typeof access.requestId, "string");
  assert.match(String(access.time), /^\d{4}-\d\d-\d\dT/);
  assert.ok(jsonLines(p.output()).some((l) => l.msg === "Prox listening" && l.level === "info"));
  p.child.kill("SIGHUP");
  await waitFor(() => jsonLines(p.output()).some((l) => l.msg === "Config reloaded"), {
    what: "the reload line",
  });
  // Nothing but JSON lines on stdout and stderr.
  for (const line of p.output().split("\n").filter((l) => l.trim())) {
    assert.doesNotThrow(() => JSON.parse(line), line);
  }
});

Deno.test("log.level warn hides start-up; access_log combined writes NCSA lines", async () => {
  await using up = await startUpstream(() => new Response("hello"));
  await using p = await spawnProx(
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
log: { level: warn, access_log: combined }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
    { env: { PROX_LOG_LEVEL: "" } },
  );
  const res = await fetch(`http://127.0.0.1:${p.port}/a%20b?q=1`, {
    headers: { "user-agent": "ua/1", referer: "http://ref.example/" },
  });
  await res.body?.cancel();
  const line = await waitFor(
    () => p.output().split("\n").find((l) => l.includes('"ua/1"')),
    { what: "a combined access line" },
  );
  assert.match(
    line,
    /^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/a%20b\?q=1 HTTP\/1\.1" 200 5 "http:\/\/ref\.example\/" "ua\/1"$/,
  );
  assert.ok(!p.output().includes("Prox listening"), p.output());
});

Deno.test("--log-level beats PROX_LOG_LEVEL and the config", async () => {
  await using p = await spawnProx(
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
log: { level: debug, access_log: false }
routes: { "/": { type: redirect, target: "/x" } }
`,
    { env: { PROX_LOG_LEVEL: "debug" }, args: ["--log-level", "error"] },
  );
  const res = await fetch(`http://127.0.0.1:${p.port}/`, { redirect: "manual" });
  await res.body?.cancel();
  assert.equal(res.status, 307);
  // A rejected reload logs an error: once it is there, every earlier line would be too.
  const dir = Deno.readLinkSync(`/proc/${p.pid}/cwd`);
  await Deno.writeTextFile(`${dir}/config.yaml`, "listen_addr: 5\n");
  p.child.kill("SIGHUP");
  await waitFor(
    () =>
      jsonLines(p.output()).some((l) =>
        l.msg === "Reload rejected; the current config keeps serving"
      ),
    {
      what: "the reload error",
    },
  );
  assert.equal(jsonLines(p.output()).filter((l) => l.level !== "error").length, 0, p.output());
});

/** Sends one request of raw bytes (each char of `head` is one byte) and reads the answer. */
async function rawRequest(port: number, head: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(Uint8Array.from(head, (c) => c.charCodeAt(0)));
  const out = await new Response(conn.readable).text();
  return out;
}

// A User-Agent of raw bytes: "é" in UTF-8 (C3 A9), then CSI (9B), which terminals that honour C1
// controls read as ESC [ (here: switch to red).
const UA_BYTES = "A\xc3\xa9\x9b31mred";

Deno.test("access_log combined writes header bytes past ASCII as \\xHH, as nginx does", async () => {
  await using up = await startUpstream(() => new Response("hello"));
  await using p = await spawnProx(
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
log: { level: warn, access_log: combined }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
    { env: { PROX_LOG_LEVEL: "" } },
  );
  const answer = await rawRequest(
    p.port,
    `GET /c HTTP/1.1\r\nHost: a\r\nUser-Agent: ${UA_BYTES}\r\nReferer: http://r/\xff\r\n` +
      "Connection: close\r\n\r\n",
  );
  assert.match(answer, /^HTTP\/1\.1 200 /);
  const line = await waitFor(() => p.output().split("\n").find((l) => l.includes("GET /c ")), {
    what: "the access line",
  });
  // The bytes as sent, readable and inert on a terminal (no C1 control, no re-encoded Latin-1).
  assert.ok(line.endsWith(` "http://r/\\xff" "A\\xc3\\xa9\\x9b31mred"`), line);
});

Deno.test("JSON log lines carry C1 control characters escaped", async () => {
  await using up = await startUpstream(() => new Response("hello"));
  await using p = await spawnProx(
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
    { env: { PROX_LOG_LEVEL: "" } },
  );
  const answer = await rawRequest(
    p.port,
    `GET /j HTTP/1.1\r\nHost: a\r\nUser-Agent: ${UA_BYTES}\r\nConnection: close\r\n\r\n`,
  );
  assert.match(answer, /^HTTP\/1\.1 200 /);
  const line = await waitFor(
    () => p.output().split("\n").find((l) => l.includes('"path":"/j"')),
    { what: "the access line" },
  );
  // The same string once parsed; on a terminal, no CSI.
  assert.equal(JSON.parse(line).userAgent, "A\xc3\xa9\x9b31mred");
  assert.ok(!/[\x7f-\x9f]/.test(line), JSON.stringify(line));
  assert.ok(line.includes("\\u009b31mred"), line);
});

Deno.test("a stdout nobody reads does not stop Prox serving; its lines arrive once it is read", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  // stdout is a pipe whose reader stalls (a log shipper that hangs): nothing reads it for now.
  const { child, dir, port } = await spawnUnread(
    "stdout",
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
  );
  try {
    // 100 access lines of 3 KB each: several times a pipe's 64 KiB.
    const ua = "u".repeat(3000);
    for (let i = 0; i < 100; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/n${i}`, {
        headers: { "user-agent": ua },
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(await res.text(), "ok");
    }
    // Once read, every line is there.
    let out = "";
    const dec = new TextDecoder();
    const reader = child.stdout.getReader();
    await waitFor(async () => {
      const r = await reader.read();
      out += dec.decode(r.value ?? new Uint8Array(), { stream: true });
      return out.includes('"path":"/n99"');
    }, { what: "the last access line" });
    reader.releaseLock();
    for (let i = 0; i < 100; i++) assert.ok(out.includes(`"path":"/n${i}"`), `line ${i}`);
  } finally {
    child.kill("SIGTERM");
    await child.stdout.cancel().catch(() => {});
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a stderr nobody reads does not stop Prox serving either", async () => {
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadUrl = `http://127.0.0.1:${(dead.addr as Deno.NetAddr).port}`;
  dead.close();
  // A 3 KB route key: each "Request failed" warning (one per request here) names it.
  const route = `/${"r".repeat(3000)}`;
  // stderr (warnings) is a pipe whose reader stalls, as journald under load.
  const { child, dir, port } = await spawnUnread(
    "stderr",
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
passive_health: { enabled: false }
log: { access_log: false }
routes: { "${route}": { type: proxy, target: "${deadUrl}", retries: { attempts: 0 } } }
`,
  );
  try {
    for (let i = 0; i < 100; i++) {
      const res = await fetch(`http://127.0.0.1:${port}${route}/n${i}`, {
        signal: AbortSignal.timeout(5000),
      });
      await res.body?.cancel();
      assert.equal(res.status, 502);
    }
    let out = "";
    const dec = new TextDecoder();
    const reader = child.stderr.getReader();
    await waitFor(async () => {
      const r = await reader.read();
      out += dec.decode(r.value ?? new Uint8Array(), { stream: true });
      return out.split('"msg":"Request failed"').length - 1 === 100;
    }, { what: "100 warnings" });
    reader.releaseLock();
  } finally {
    child.kill("SIGTERM");
    await child.stderr.cancel().catch(() => {});
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGTERM ends Prox even while its stdout is not read", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  const { child, dir, port } = await spawnUnread(
    "stdout",
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
shutdown_timeout: 1s
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
  );
  try {
    // Several pipes' worth of access lines that nobody reads.
    const ua = "u".repeat(3000);
    for (let i = 0; i < 100; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/n${i}`, { headers: { "user-agent": ua } });
      await res.body?.cancel();
    }
    child.kill("SIGTERM");
    const ended = await exitCode(child);
    assert.equal(ended, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.stdout.cancel().catch(() => {});
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a second SIGTERM ends a draining Prox even while its stdout is not read", async () => {
  // A request the upstream never answers keeps the drain going: the second signal must end it.
  const held = Promise.withResolvers<void>();
  let arrived = false;
  await using up = await startUpstream(async (req) => {
    if (new URL(req.url).pathname !== "/hang") return new Response("ok");
    arrived = true;
    await held.promise;
    return new Response("late");
  });
  const { child, dir, port } = await spawnUnread(
    "stdout",
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
shutdown_timeout: 60s
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
  );
  const hung = fetch(`http://127.0.0.1:${port}/hang`).then((r) => r.body?.cancel(), () => {});
  try {
    // Several pipes' worth of access lines that nobody reads.
    const ua = "u".repeat(3000);
    for (let i = 0; i < 100; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/n${i}`, { headers: { "user-agent": ua } });
      await res.body?.cancel();
    }
    await waitFor(() => arrived, { what: "the request that holds the drain" });
    child.kill("SIGTERM");
    // Draining: the listener no longer takes connections.
    await waitFor(async () => {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        return false;
      } catch {
        return true;
      }
    }, { what: "the drain to begin" });
    child.kill("SIGTERM");
    const ended = await exitCode(child);
    assert.equal(ended, 1);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    held.resolve();
    await hung;
    await child.stdout.cancel().catch(() => {});
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

/** The exit code of `child`, or "still running" when it has not exited within 10 s. */
async function exitCode(child: Deno.ChildProcess): Promise<number | string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ended = await Promise.race([
    child.status.then((s) => s.code),
    new Promise<string>((r) => timer = setTimeout(() => r("still running"), 10_000)),
  ]);
  clearTimeout(timer);
  return ended;
}
