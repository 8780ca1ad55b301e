// `prox replay`: a real Prox serves real requests and writes its access log; the log is replayed
// from the CLI against a changed config (and against the config that wrote it).
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { freePort, ROOT, run, startUpstream, waitFor } from "../_harness.ts";

const prox = (args: string[], cwd: string, stdin?: string) =>
  run(Deno.execPath(), ["run", "-A", "--config", `${ROOT}/deno.json`, `${ROOT}/mod.ts`, ...args], {
    cwd,
    stdin,
  });

/**
 * Serves `config.yaml` in `dir`, runs `traffic`, stops Prox and returns its stdout: the access
 * log, with Prox's info lines (start-up, shutdown) among the access lines, as written.
 */
async function accessLog(dir: string, traffic: () => Promise<void>): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", `${ROOT}/deno.json`, `${ROOT}/mod.ts`, "serve", "--no-watch"],
    cwd: dir,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stdout = "";
  let stderr = "";
  const dec = new TextDecoder();
  const pumps = Promise.all([
    (async () => {
      for await (const c of child.stdout) stdout += dec.decode(c, { stream: true });
    })(),
    (async () => {
      for await (const c of child.stderr) stderr += dec.decode(c, { stream: true });
    })(),
  ]);
  try {
    await waitFor(() => (stdout + stderr).includes("Prox listening"), { what: "Prox listening" });
    await traffic();
  } finally {
    child.kill("SIGTERM");
    await pumps;
    await child.status;
  }
  return stdout;
}

Deno.test("prox replay: a real access log against a changed config, from a file, .gz and stdin", async () => {
  await using up1 = await startUpstream(() => new Response("one"));
  await using up2 = await startUpstream(() => new Response("two"));
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "prox-replay-" });
  try {
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      `listen_addr: "127.0.0.1:${port}"
health_check: { enabled: false }
log: { access_log: json }
routes:
  "/api": { type: proxy, target: "${up1.url}" }
  "/legacy": { type: proxy, target: "${up1.url}" }
  "/old": { type: redirect, target: /new, status_code: 308 }
`,
    );
    // The candidate: /api/v2 moves to the second upstream, /old redirects with 301, /legacy is
    // gone, and /api/admin gets basic_auth (its decision depends on credentials the log lacks).
    await Deno.writeTextFile(
      `${dir}/candidate.yaml`,
      `listen_addr: "127.0.0.1:${port}"
health_check: { enabled: false }
routes:
  "/api": { type: proxy, target: "${up1.url}" }
  "/api/v2": { type: proxy, target: "${up2.url}" }
  "/api/admin":
    type: proxy
    target: "${up1.url}"
    basic_auth: { users: { ann: "$2b$10$abcdefghijklmnopqrstuu1234567890123456789012345678901" } }
  "/old": { type: redirect, target: /new, status_code: 301 }
`,
    );
    const paths = [
      "/api/a",
      "/api/b?q=1",
      "/api/v2/users",
      "/api/v2/items",
      "/api/admin/x",
      "/legacy/page",
      "/old/x",
      "/nothing",
    ];
    const log = await accessLog(dir, async () => {
      for (const p of paths) {
        const res = await fetch(`http://127.0.0.1:${port}${p}`, { redirect: "manual" });
        await res.body?.cancel();
      }
    });
    const lines = log.trim().split("\n");
    const infoLines = lines.filter((l) => !l.includes('"msg":"access"')).length;
    assert.equal(lines.length - infoLines, paths.length, log);
    assert.ok(infoLines > 0, log);
    await Deno.writeTextFile(`${dir}/access.log`, log);
    await Deno.writeFile(`${dir}/access.log.1.gz`, gzipSync(new TextEncoder().encode(log)));

    const text = await prox(["replay", "-c", "candidate.yaml", "access.log"], dir);
    assert.equal(text.code, 0, text.stderr);
    const out = text.stdout;
    assert.match(out, /^Replayed 8 requests from access\.log against candidate\.yaml/m);
    assert.match(out, /^ {2}3 unchanged$/m); // /api/a, /api/b, /nothing (404 both times)
    assert.match(out, /^ {2}5 changed$/m);
    assert.match(out, /^ {2}1 now gets 404: no route matches$/m);
    const v2 = new RegExp(
      `^ {2}/api: upstream ${up1.url} {2}-> {2}/api/v2: upstream ${up2.url} {2}\\(2 requests\\)$`,
      "m",
    );
    assert.match(out, v2);
    assert.match(
      out,
      new RegExp(`^ {6}GET http://127\\.0\\.0\\.1:${port}/api/v2/users → ${up2.url}/users$`, "m"),
    );
    assert.match(out, /^ {2}\/old: 308 from Prox {2}-> {2}\/old: redirect 301 {2}\(1 request\)$/m);
    assert.match(out, /^ {2}\/legacy: upstream .* {2}-> {2}\(no route\): 404 Not found/m);
    assert.match(out, /^ {2}\/api: upstream .* {2}-> {2}\/api\/admin: 401 Unauthorized/m);
    assert.match(out, /^ {2}\/api\/admin \(1 request\): basic_auth: credentials are not logged/m);
    // Prox's own info lines (stdout holds both) are skipped and counted.
    assert.match(
      out,
      new RegExp(
        `^Skipped ${infoLines} lines that are not requests \\(${infoLines} of them Prox's own log lines\\)$`,
        "m",
      ),
    );

    // --json and --fail-on-change (CI): exit 1 when anything changed; gzip; several files.
    const json = await prox(
      ["replay", "-c", "candidate.yaml", "--json", "--fail-on-change", "access.log.1.gz", "-"],
      dir,
      log,
    );
    assert.equal(json.code, 1, json.stderr);
    const report = JSON.parse(json.stdout);
    assert.equal(report.requests, 16);
    assert.equal(report.changed, 10);
    assert.equal(report.notFound, 2);
    assert.equal(report.skipped.lines, 2 * infoLines);

    // Against the config that wrote the log: nothing changed, exit 0 even with --fail-on-change.
    const same = await prox(
      ["replay", "-c", "config.yaml", "--against", "config.yaml", "--fail-on-change", "access.log"],
      dir,
    );
    assert.equal(same.code, 0, same.stdout + same.stderr);
    assert.match(same.stdout, /^ {2}8 unchanged$/m);
    const self = await prox(["replay", "-c", "config.yaml", "--fail-on-change", "access.log"], dir);
    assert.equal(self.code, 0, self.stdout);
    assert.match(self.stdout, /^ {2}0 changed$/m);

    // A log of NCSA lines holds no access record: an error, not "nothing changed".
    await Deno.writeTextFile(
      `${dir}/common.log`,
      '127.0.0.1 - - [27/Nov/2026:00:00:00 +0000] "GET /api/a HTTP/1.1" 200 3\n',
    );
    const ncsa = await prox(
      ["replay", "-c", "candidate.yaml", "--fail-on-change", "common.log"],
      dir,
    );
    assert.equal(ncsa.code, 1);
    assert.match(
      ncsa.stderr,
      /No JSON access records in common\.log\n {2}fix: .*log\.access_log: json/,
    );
    // Access records, but none that can be replayed (a host that makes no URL): said as such.
    await Deno.writeTextFile(
      `${dir}/badhost.log`,
      JSON.stringify({
        msg: "access",
        method: "GET",
        host: "bad host",
        path: "/old",
        status: 308,
        route: "/old",
        upstream: null,
      }) + "\n",
    );
    const bad = await prox(["replay", "-c", "candidate.yaml", "badhost.log"], dir);
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /None of the 1 access record in badhost\.log could be replayed \(badhost\.log:1: cannot replay: Invalid URL/,
    );
    assert.doesNotMatch(bad.stderr, /No JSON access records/);
    assert.match(
      bad.stdout,
      /^Skipped 1 line \(1 of them access records that cannot be replayed\)$/m,
    );
    // A log that cannot be read; no log named (usage).
    const missing = await prox(["replay", "-c", "candidate.yaml", "nope.log"], dir);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /Cannot read access log "nope\.log": file not found/);
    const usage = await prox(["replay", "-c", "candidate.yaml"], dir);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /replay needs an access log/);
    const samples = await prox(["replay", "--samples", "x", "access.log"], dir);
    assert.equal(samples.code, 2);
    assert.match(samples.stderr, /--samples must be a number from 0 to 100, not "x"/);
    const help = await prox(["help", "replay"], dir);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: prox replay/);
    assert.match(help.stdout, /--fail-on-change/);
    const top = await prox(["--help"], dir);
    assert.match(top.stdout, /^ {2}prox replay \[-c FILE\] \[--against CURRENT\]/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
