// The `prox` entry point as users run it: exit codes, help, validate output, config selection,
// the embedded default, SIGHUP reload and the forced second signal. Real processes only.

import assert from "node:assert/strict";
import { ROOT, run, startHeldUpstream, waitFor } from "../_harness.ts";
import { VERSION } from "../../mod.ts";
import { freePort, PROX_RUN, spawnProx } from "./_cli_process.ts";

/** Runs `prox ARGS` from the repository until it exits; `env` adds to NO_COLOR=1. */
const prox = (args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}) =>
  run(Deno.execPath(), [...PROX_RUN, ...args], {
    cwd: ROOT,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: opts.stdin,
    timeoutMs: 30_000,
  });

/** A temp dir holding `files` (name → text); `await using` removes it. */
async function tempDir(files: Record<string, string> = {}) {
  const path = await Deno.makeTempDir({ prefix: "prox-cli-" });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${path}/${name}`, text);
  }
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

const VALID = (port: number) =>
  `listen_addr: "127.0.0.1:${port}"
health_check:
  enabled: false
routes:
  "/":
    type: redirect
    target: "https://example.com"
`;

/** One more proxy route for VALID's routes (indented to follow them). */
const proxyRoute = (path: string, target: string) =>
  `  "${path}":\n    type: proxy\n    target: "${target}"\n`;

/** The status of GET /a on `port` (VALID redirects it: 307), the body dropped. */
async function statusOfA(port: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/a`, { redirect: "manual" });
  await res.body?.cancel();
  return res.status;
}

/**
 * The set-up of the drain tests: an upstream that holds its requests, proxied at `path` by the
 * config `head` + VALID in a temp dir (without the route when `routed` is false: `withRoute` is
 * that config with it), and a client. `hold()` sends a GET there and resolves once it is held,
 * with its `outcome` to come: "<status> <body>" or "failed: <error>". Dispose closes the client,
 * removes the dir and stops the upstream.
 */
async function heldBehindProx(
  head: string,
  opts: { path?: string; body?: string; routed?: boolean } = {},
) {
  const path = opts.path ?? "/slow";
  const up = await startHeldUpstream(opts.body);
  const port = freePort();
  const withRoute = head + VALID(port) + proxyRoute(path, up.url);
  const dir = await tempDir({
    "config.yaml": opts.routed === false ? head + VALID(port) : withRoute,
  });
  const client = Deno.createHttpClient({});
  return {
    up,
    dir: dir.path,
    withRoute,
    async hold(): Promise<{ outcome: Promise<string> }> {
      const outcome = fetch(`http://127.0.0.1:${port}${path}`, { client }).then(
        async (r) => `${r.status} ${await r.text()}`,
        (e) => `failed: ${e}`,
      );
      await waitFor(() => up.arrived === 1, { what: "request at the upstream" });
      return { outcome };
    },
    async [Symbol.asyncDispose]() {
      client.close();
      await dir[Symbol.asyncDispose]();
      await up[Symbol.asyncDispose]();
    },
  };
}

/** Stops `child` for good (SIGKILL, if it still runs) and waits for its exit. */
async function killed(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch { /* exited */ }
  await child.status;
}

Deno.test("prox validate reads error pages: a missing one is located, found ones are summed up", async () => {
  await using tmp = await tempDir({ "5xx.html": "<p>{status}</p>" });
  const dir = tmp.path;
  const yaml = (page: string) =>
    VALID(8080) + `error_pages:\n  5xx: ${dir}/5xx.html\n  "404, 410": ${dir}/${page}\n`;
  await Deno.writeTextFile(`${dir}/ok.yaml`, yaml("5xx.html"));
  await Deno.writeTextFile(`${dir}/bad.yaml`, yaml("gone.html"));
  const ok = await prox(["validate", "-c", `${dir}/ok.yaml`]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.ok(ok.stdout.includes('\n  error pages:   5xx, "404, 410"\n'), ok.stdout);
  const bad = await prox(["validate", "-c", `${dir}/bad.yaml`]);
  assert.equal(bad.code, 1);
  assert.equal(
    bad.stderr.split("\n").slice(0, 2).join("\n"),
    `${dir}/bad.yaml:10:3: error: error_pages.404, 410: Page file not found: ${dir}/gone.html\n` +
      "  fix: Create the file or fix the path (relative to the working directory)",
  );
});

Deno.test("prox validate sums up tls.client_auth: its mode and how revocation is checked", async () => {
  await using tmp = await tempDir({});
  const dir = tmp.path;
  const tls = `${ROOT}/tests/fixtures/tls`;
  const yaml = (auth: string) =>
    VALID(8443) +
    `tls:\n  cert_path: ${tls}/cert.pem\n  key_path: ${tls}/key.pem\n  client_auth: ${auth}\n`;
  const line = async (auth: string) => {
    await Deno.writeTextFile(`${dir}/c.yaml`, yaml(auth));
    const out = await prox(["validate", "-c", `${dir}/c.yaml`]);
    assert.equal(out.code, 0, out.stderr);
    return out.stdout.split("\n").find((l) => l.startsWith("  client certs:"));
  };
  assert.equal(
    await line(`{ ca_cert: ${tls}/ca.pem }`),
    `  client certs:  require (${tls}/ca.pem); revocation: not checked`,
  );
  assert.equal(
    await line(
      `{ ca_cert: ${tls}/ca.pem, mode: verify_if_given, crl_file: ${tls}/alice-revoked.crl, ocsp: { check: chain } }`,
    ),
    `  client certs:  verify_if_given (${tls}/ca.pem); revocation: CRLs (${tls}/alice-revoked.crl; out of date: refuse), OCSP (chain, each certificate's responder; on error: refuse)`,
  );
});

Deno.test("prox validate warns of a regex V8's linear-time engine cannot run (with the shipped V8 flags)", async () => {
  // The flag that lets Prox tell: shipped with the others (Makefile, deno.json's serve task).
  const shipped =
    /^V8_FLAGS := --v8-flags=(\S+)$/m.exec(await Deno.readTextFile(`${ROOT}/Makefile`))![1];
  assert.ok(shipped.split(",").includes("--enable-experimental-regexp-engine"), shipped);
  assert.ok((await Deno.readTextFile(`${ROOT}/deno.json`)).includes(`--v8-flags=${shipped} `));
  await using tmp = await tempDir({
    "c.yaml": String.raw`listen_addr: "127.0.0.1:8080"
health_check: { enabled: false }
routes:
  /:
    type: proxy
    target: "http://127.0.0.1:9"
    path_regex: { match: "^/(a+)+(?=x)$", replace: /b }
    request_headers: { condition: { path_matches: '^/(\w+)/\1$' }, set: { X-Twice: "1" } }
    response_headers: { condition: { path_matches: '^/(a+)+$' }, set: { X-Linear: "1" } }
`,
  });
  const dir = tmp.path;
  const out = await run(Deno.execPath(), [
    ...["run", "-A", `--v8-flags=${shipped}`, "--config", `${ROOT}/deno.json`],
    ...[`${ROOT}/mod.ts`, "validate", "-c", `${dir}/c.yaml`],
  ], { env: { NO_COLOR: "1" }, timeoutMs: 30_000 });
  assert.equal(out.code, 0, out.stderr);
  const warnings = out.stderr.split("\n").filter((l) => l.includes("linear-time engine"));
  assert.equal(warnings.length, 2, out.stderr);
  assert.match(
    warnings[0],
    /c\.yaml:\d+:\d+: warning: routes\.\/\.path_regex\.match: Regular expression \/\^\/\(a\+\)\+\(\?=x\)\$\//,
  );
  assert.match(
    warnings[1],
    /request_headers\.condition\.path_matches: Regular expression \/\^\/\(\\w\+\)\/\\1\$\//,
  );
  assert.match(out.stderr, /fix: Rewrite it without those constructs/);
});

Deno.test("prox --version prints the version and exits 0", async () => {
  const r = await prox(["--version"]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), `prox ${VERSION}`);
});

Deno.test("prox --help and per-command help exit 0 and describe the command", async () => {
  // Without a command, --help and -h give the overview of every command (not serve's help).
  for (const flag of ["--help", "-h"]) {
    const top = await prox([flag]);
    assert.equal(top.code, 0);
    assert.match(top.stdout, /Usage:/);
    assert.match(top.stdout, /--takeover/);
    assert.match(top.stdout, /prox validate/);
    assert.match(top.stdout, /--log-level/);
    assert.match(top.stdout, /Exit codes/);
  }
  for (const args of [["serve", "--help"], ["help", "serve"]]) {
    const r = await prox(args);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: prox serve/);
    assert.match(r.stdout, /SIGHUP/);
    assert.match(r.stdout, /SIGUSR2/);
  }
  const v = await prox(["validate", "-h"]);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^Usage: prox validate/);
});

Deno.test("prox: an invalid PROX_LOG_LEVEL is a usage error (exit 2), as --log-level is", async () => {
  const r = await prox(["validate"], { env: { PROX_LOG_LEVEL: "verbose" } });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /PROX_LOG_LEVEL must be debug, info, warn or error, not "verbose"/);
});

Deno.test("prox usage errors exit 2: unknown option, unknown command, --takeover alone", async () => {
  const unknown = await prox(["serve", "--bogus"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /bogus/);
  // node:util's text told to place "--formt" after "--" as a positional argument.
  const typo = await prox(["validate", "--formt", "json"]);
  assert.equal(typo.code, 2);
  assert.equal(
    typo.stderr,
    'prox: unknown option "--formt"\nDid you mean --format?\nRun `prox --help` for usage.\n',
  );
  const cmd = await prox(["frobnicate"]);
  assert.equal(cmd.code, 2);
  assert.match(cmd.stderr, /unknown command "frobnicate"/);
  const help = await prox(["help", "frobnicate"]);
  assert.equal(help.code, 2);
  assert.match(help.stderr, /unknown command "frobnicate"/);
  const takeover = await prox(["serve", "--takeover"]);
  assert.equal(takeover.code, 2);
  assert.match(takeover.stderr, /--takeover needs --pid-file/);
  const format = await prox(["validate", "--format", "xml"]);
  assert.equal(format.code, 2);
  // A config file named without -c: say how to name it.
  const file = await prox(["validate", "site.yaml"]);
  assert.equal(file.code, 2);
  assert.match(file.stderr, /To use it as the config: prox validate -c site\.yaml/);
  const bare = await prox(["site.yaml"]);
  assert.match(bare.stderr, /To use it as the config: prox serve -c site\.yaml/);
});

Deno.test("prox serve --workers 2 with port 0: exit 1, the issue located at listen_addr", async () => {
  await using tmp = await tempDir({ "config.yaml": VALID(0) });
  const dir = tmp.path;
  const r = await prox(["serve", "--workers", "2", "-c", `${dir}/config.yaml`]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /config\.yaml:1:1: error: listen_addr: workers: 2 needs a fixed port/);
});

Deno.test("prox serve on a port another program holds: exit 1, located at the key, with the fix", async () => {
  using held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using tmp = await tempDir({ "held.yaml": `# held\n${VALID(held.addr.port)}` });
  const dir = tmp.path;
  const r = await prox(["serve", "-c", `${dir}/held.yaml`]);
  assert.equal(r.code, 1);
  // It said "Cannot start: Cannot listen on …: Address already in use (os error 98)" only.
  assert.match(
    r.stderr,
    /held\.yaml:2:1: listen_addr: Cannot listen on 127\.0\.0\.1:\d+: Address already in use.*another program listens there: stop it or choose another port/,
  );
});

Deno.test("prox validate names the routes forward_auth checks and those it does not", async () => {
  await using tmp = await tempDir({
    "auth.yaml": `listen_addr: "127.0.0.1:8080"
health_check: { enabled: false }
forward_auth: { url: "http://127.0.0.1:4180/oauth2/auth" }
routes:
  "/": { type: redirect, target: "https://example.com" }
  "/app": { type: proxy, target: "http://127.0.0.1:8081" }
  "/oauth2": { type: proxy, target: "http://127.0.0.1:4180", forward_auth: false }
`,
  });
  const dir = tmp.path;
  const r = await prox(["validate", "-c", `${dir}/auth.yaml`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^ {2}forward auth: {2}2 of 3 routes \(not \/oauth2\)$/m);
  const plain = await prox(["validate", "-c", `${ROOT}/config.yaml`]);
  assert.doesNotMatch(plain.stdout, /forward auth/);
});

Deno.test("prox validate says who answers HTTP/1.1 without TLS: Prox's own engine unless deno", async () => {
  await using tmp = await tempDir({
    "default.yaml": VALID(8080),
    "deno.yaml": VALID(8080) + "protocols: { http1_engine: deno }\n",
  });
  const dir = tmp.path;
  const line = async (file: string) =>
    (await prox(["validate", "-c", `${dir}/${file}`])).stdout.match(/^ {2}http\/1\.1: +(.*)$/m)
      ?.[1];
  assert.equal(await line("default.yaml"), "Prox's own engine (http1_engine: prox)");
  assert.equal(await line("deno.yaml"), "Deno.serve (http1_engine: deno)");
});

Deno.test("prox validate: 0 when valid, 1 with file:line:col when not, 1 when missing", async () => {
  await using tmp = await tempDir({
    "ok.yaml": VALID(8080),
    "bad.yaml": VALID(8080) + "helth_check: {}\n",
  });
  const dir = tmp.path;
  const ok = await prox(["validate", "-c", `${dir}/ok.yaml`]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /ok\.yaml is valid/);
  const bad = await prox(["validate", "-c", `${dir}/bad.yaml`]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, new RegExp(`${dir}/bad\\.yaml:8:1: error: .*helth_check`));
  assert.match(bad.stderr, /health_check/, "did-you-mean suggestion");
  const missing = await prox(["validate", "-c", `${dir}/nope.yaml`]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /Cannot read config ".*nope\.yaml": file not found/);
  // A directory: a located message, not an uncaught error with a stack trace.
  const directory = await prox(["validate", "-c", dir, "--format", "json"]);
  assert.equal(directory.code, 1);
  assert.equal(
    JSON.parse(directory.stdout).issues[0].message,
    `Cannot read config "${dir}": it is a directory`,
  );
  // serve says the same, not the raw "Is a directory (os error 21): readfile …".
  const serveDir = await prox(["serve", "-c", dir]);
  assert.equal(serveDir.code, 1);
  assert.match(serveDir.stderr, /Cannot read config ".*": it is a directory/);
});

Deno.test("prox validate and serve refuse a config over 4 MiB, and /dev/zero, which never ends", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path;
  const big = `${dir}/big.yaml`;
  await Deno.writeFile(big, new Uint8Array(4 * 1024 * 1024 + 1).fill(0x23));
  for (const file of [big, "/dev/zero"]) {
    // It read /dev/zero until memory ran out (the 30 s timeout kills it: code 137).
    for (const cmd of ["validate", "serve"]) {
      const r = await prox([cmd, "-c", file]);
      assert.equal(r.code, 1, `${cmd} ${file}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`Cannot read config "${file}": .*4 MiB`), r.stderr);
      assert.match(r.stderr, /fix: .*4 MiB/, r.stderr);
    }
  }
});

Deno.test("prox validate and serve say what went wrong reading the config, each with its fix", async () => {
  await using tmp = await tempDir({ "ok.yaml": VALID(8080) });
  const dir = tmp.path;
  await Deno.symlink(`${dir}/loop-b`, `${dir}/loop-a`);
  await Deno.symlink(`${dir}/loop-a`, `${dir}/loop-b`);
  await Deno.symlink(`${dir}/gone.yaml`, `${dir}/dangling.yaml`);
  // Every read failure was "Cannot read config …: <reason>" with "fix: pass the right path";
  // a path through a file, a symlink loop and a dangling symlink all said "file not found".
  const cases: [string, RegExp, RegExp][] = [
    [`${dir}/nope.yaml`, /file not found/, /pass the right path with --config FILE/],
    [`${dir}/ok.yaml/x.yaml`, /ok\.yaml" is not a directory/, /pass the right path/],
    [`${dir}/loop-a`, /its symbolic links form a loop/, /point the symbolic link/],
    [`${dir}/dangling.yaml`, /a symbolic link to ".*gone\.yaml", which does not exist/, /create/],
    [dir, /it is a directory/, new RegExp(`--config ${dir}/config\\.yaml`)],
    // Root reads mode 000 files; procfs refuses even root this write-only one.
    ["/proc/sys/vm/drop_caches", /permission denied/, /read access/],
    ["/proc/self/mem", /Input\/output error/, /the operating system/],
  ];
  for (const [file, why, fix] of cases) {
    for (const cmd of ["validate", "serve"]) {
      const r = await prox([cmd, "-c", file]);
      assert.equal(r.code, 1, `${cmd} ${file}: ${r.stderr}`);
      const [said, hint] = r.stderr.split("\n");
      assert.ok(said.startsWith(`error: Cannot read config "${file}": `), `${cmd}: ${said}`);
      assert.match(said, why, `${cmd}: ${said}`);
      assert.ok(hint.startsWith("  fix: "), `${cmd} ${file}: ${r.stderr}`);
      assert.match(hint, fix, `${cmd}: ${hint}`);
      if (!/pass the right path/.test(fix.source)) assert.doesNotMatch(hint, /right path/);
    }
  }
});

Deno.test("prox -c x.yaml serve uses x.yaml (not ./config.yaml); SIGUSR1 drains and exits 0", async () => {
  const port = freePort();
  await using tmp = await tempDir({ "x.yaml": VALID(port), "config.yaml": "not: [valid" });
  const dir = tmp.path;
  await using p = spawnProx(["-c", "x.yaml", "serve"], { cwd: dir });
  await p.waitForOutput("Prox listening");
  const res = await fetch(`http://127.0.0.1:${port}/a`, { redirect: "manual" });
  await res.body?.cancel();
  assert.equal(res.headers.get("location"), "https://example.com/a");
  // The Rust Prox's "restart" signal: a graceful stop here, never the default kill.
  p.signal("SIGUSR1");
  assert.equal((await p.status).code, 0);
  assert.match(p.output(), /"reason":"SIGUSR1"/);
});

Deno.test("--pid-file: a stale file naming another program is replaced quietly; a running Prox with that file is warned about", async () => {
  await using tmp = await tempDir({ "a.yaml": VALID(freePort()), "b.yaml": VALID(freePort()) });
  const dir = tmp.path;
  const pidFile = `${dir}/prox.pid`;
  // A pid that is alive but no Prox (this test runner): what a stale file shows after a reboot.
  await Deno.writeTextFile(pidFile, `${Deno.pid}\n`);
  await using a = spawnProx(["serve", "-c", "a.yaml", "--pid-file", pidFile], { cwd: dir });
  await waitFor(async () => Number(await Deno.readTextFile(pidFile)) === a.pid, {
    what: "a's pid in the pid file",
  });
  assert.doesNotMatch(a.output(), /both now serve/);
  await using b = spawnProx(["serve", "-c", "b.yaml", "--pid-file", pidFile], { cwd: dir });
  await b.waitForOutput("both now serve this port");
  for (const p of [a, b]) {
    p.signal("SIGTERM");
    assert.equal((await p.status).code, 0, p.output());
  }
});

Deno.test("prox without read permission (deno run without -A) says so, not 'file not found' or the welcome page", async () => {
  await using tmp = await tempDir({ "config.yaml": VALID(freePort()) });
  const dir = tmp.path;
  for (const args of [["validate"], ["serve"], ["serve", "-c", "config.yaml"]]) {
    const noRead = ["run", "--allow-env", ...PROX_RUN.slice(2)];
    const r = await run(Deno.execPath(), [...noRead, ...args], {
      cwd: dir,
      env: { NO_COLOR: "1" },
      timeoutMs: 30_000,
    });
    assert.equal(r.code, 1, args.join(" "));
    assert.match(r.stderr, /Requires read access to "config\.yaml"/, args.join(" "));
    assert.match(r.stderr, /Prox needs every permission: deno run -A/);
    assert.doesNotMatch(r.stderr, /file not found|embedded default/);
  }
});

Deno.test("prox serve -c /dev/stdin reads a piped config once and serves it; with workers it is refused", async () => {
  const port = freePort();
  const out = await serveFromStdin(["serve", "-c", "/dev/stdin"], VALID(port), {
    port,
    what: "Prox serving the piped config",
  });
  assert.equal(out.code, 0, out.stderr);

  const workers = await prox(["serve", "--workers", "2", "-c", "/dev/stdin"], {
    stdin: VALID(port),
  });
  assert.equal(workers.code, 1);
  assert.match(workers.stderr, /workers > 1 needs a config file the workers can read too/);
});

/** Starts prox with `bytes` on its stdin, then closed (raw bytes: `run` takes text). */
async function spawnWithStdin(args: string[], bytes: Uint8Array) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...PROX_RUN, ...args],
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output().then((out) => {
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  });
  const w = child.stdin.getWriter();
  await w.write(bytes);
  await w.close();
  return { child, output };
}

/** Runs prox with `bytes` on its stdin until it exits. */
async function proxWithStdin(args: string[], bytes: Uint8Array) {
  return await (await spawnWithStdin(args, bytes)).output;
}

/**
 * Runs `prox serve` with `config` on its stdin until it redirects GET / on `port` (307), then
 * stops it with SIGTERM; answers its exit code and output.
 */
async function serveFromStdin(
  args: string[],
  config: string,
  opts: { port: number; what: string; timeoutMs?: number },
) {
  const { child, output } = await spawnWithStdin(args, new TextEncoder().encode(config));
  try {
    const res = await waitFor(
      () => fetch(`http://127.0.0.1:${opts.port}/`, { redirect: "manual" }).catch(() => null),
      { what: opts.what, timeoutMs: opts.timeoutMs },
    );
    await res.body?.cancel();
    assert.equal(res.status, 307);
    child.kill("SIGTERM");
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch { /* it exited */ }
    throw new Error(`${err}\n${(await output).stderr}`);
  }
  return await output;
}

Deno.test("prox validate -c - reads the config from stdin and names it <stdin> in issues", async () => {
  const enc = new TextEncoder();
  // It looked for a file named "-": 'Cannot read config "-": file not found'.
  const ok = await proxWithStdin(["validate", "-c", "-"], enc.encode(VALID(8080)));
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^<stdin> is valid\n/);
  const bad = await proxWithStdin(
    ["validate", "-c", "-"],
    enc.encode(VALID(8080) + "helth_check: {}\n"),
  );
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^<stdin>:8:1: error: .*helth_check/);
  assert.match(bad.stderr, /<stdin> is invalid: 1 error/);
  const latin1 = new Uint8Array([...enc.encode(VALID(8080) + "# caf"), 0xe9, 0x0a]);
  const notUtf8 = await proxWithStdin(["validate", "-c", "-", "--format", "json"], latin1);
  assert.equal(notUtf8.code, 1);
  const json = JSON.parse(notUtf8.stdout);
  assert.equal(json.file, "<stdin>");
  assert.deepEqual(
    json.issues.map((i: { file: string; line: number; col: number; message: string }) =>
      `${i.file}:${i.line}:${i.col}: ${i.message}`
    ),
    ["<stdin>:8:6: The config is not UTF-8 text"],
  );
});

Deno.test("prox replay refuses stdin for both the config and the log (-c - with -)", async () => {
  // The config took all of stdin and the log read as empty: "0 requests", exit 0.
  for (const args of [["-c", "-", "-"], ["-c", "x.yaml", "--against", "-", "-"]]) {
    const r = await proxWithStdin(["replay", ...args], new TextEncoder().encode(VALID(8080)));
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /^prox: stdin \(-\) can feed only one of -c, --against and the logs/);
  }
});

Deno.test("prox serve -c - serves the config read once from stdin and says nothing watches it", async () => {
  const port = freePort();
  const out = await serveFromStdin(["serve", "-c", "-"], VALID(port), {
    port,
    what: "Prox serving the config from stdin",
    timeoutMs: 15_000,
  });
  const text = out.stdout + out.stderr;
  assert.equal(out.code, 0, text);
  assert.match(text, /"msg":"The config was read once from stdin: .*nothing watches it/);
});

Deno.test("prox serve --workers 2 -c /dev/stdin < file refuses at once (workers hung on their stdin)", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path;
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, VALID(freePort()));
  // A regular file on stdin, not a pipe: each worker opening /dev/stdin got the supervisor's
  // command pipe instead, waited on it forever, and the supervisor ignored SIGTERM meanwhile.
  const script = `exec "$0" run -A --config "$1" "$2" serve --workers 2 -c /dev/stdin < "$3"`;
  const res = await run("sh", [
    "-c",
    script,
    Deno.execPath(),
    `${ROOT}/deno.json`,
    `${ROOT}/mod.ts`,
    file,
  ], { env: { NO_COLOR: "1" }, timeoutMs: 30_000 });
  assert.equal(res.code, 1, res.stderr);
  assert.match(res.stderr, /workers > 1 needs a config file the workers can read too, not stdin/);
});

Deno.test("prox serve without config.yaml runs the embedded default and says so", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path;
  await using p = spawnProx([], { cwd: dir });
  await p.waitForOutput("embedded default config");
  // Port 3000 is fixed by the embedded config; another program may hold it on this machine.
  await p.waitForOutput((o) => o.includes("Prox listening") || o.includes("Cannot start"));
  if (p.output().includes("Prox listening")) {
    p.signal("SIGTERM");
    assert.equal((await p.status).code, 0);
  } else {
    assert.match(p.output(), /Address already in use|AddrInUse/i);
  }
});

Deno.test("prox serve --workers 2 without config.yaml says so once, not once per process", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path;
  await using p = spawnProx(["serve", "--workers", "2"], { cwd: dir });
  // Port 3000 is fixed by the embedded config; another program may hold it on this machine.
  await p.waitForOutput((o) =>
    o.includes("Prox listening with workers") || o.includes("Cannot start worker")
  );
  if (p.output().includes("Prox listening with workers")) {
    p.signal("SIGTERM");
    assert.equal((await p.status).code, 0, p.output());
  } else await p.status;
  assert.equal(p.output().split("No config.yaml found").length - 1, 1, p.output());
});

Deno.test("SIGTERM: a request still waiting on its upstream at shutdown_timeout gets 503 before exit", async () => {
  await using held = await heldBehindProx(`shutdown_timeout: 300ms\n`);
  await using p = spawnProx(["serve", "--no-watch"], { cwd: held.dir });
  await p.waitForOutput("Prox listening");
  const { outcome } = await held.hold();
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0);
  // The process exited only once the 503 was on its way (it used to exit first: no answer).
  assert.match(await outcome, /^503 Service unavailable: shutting down/);
});

Deno.test("SIGHUP reloads the config (file watch off); a second SIGTERM forces exit 1", async () => {
  await using held = await heldBehindProx(`shutdown_timeout: 60s\n`, { routed: false });
  await using p = spawnProx(["serve", "--no-watch"], { cwd: held.dir });
  await p.waitForOutput("Prox listening");
  await Deno.writeTextFile(`${held.dir}/config.yaml`, held.withRoute);
  p.signal("SIGHUP");
  await p.waitForOutput(`"trigger":"SIGHUP"`);
  // A request held by the upstream keeps the drain going...
  const { outcome } = await held.hold();
  p.signal("SIGTERM");
  await p.waitForOutput("Draining");
  // ...until the second signal ends it at once.
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 1);
  assert.match(p.output(), /Second signal/);
  held.up.release();
  assert.match(await outcome, /^failed/);
});

for (const workers of [1, 2]) {
  Deno.test(`--pid-file: removed on exit, a forced one (second signal, exit 1) included (workers: ${workers})`, async () => {
    await using held = await heldBehindProx(`shutdown_timeout: 60s\nworkers: ${workers}\n`);
    const pidFile = `${held.dir}/prox.pid`;
    const written = (pid: number) =>
      waitFor(() => Deno.readTextFile(pidFile).then((t) => t === `${pid}\n`, () => false), {
        what: "the pid file written",
      });
    const serve = () =>
      spawnProx(["serve", "--no-watch", "--pid-file", pidFile], { cwd: held.dir });
    // A drain that ends by itself removes the file...
    {
      await using p = serve();
      await written(p.pid);
      p.signal("SIGTERM");
      assert.equal((await p.status).code, 0, p.output());
      await assert.rejects(Deno.stat(pidFile), Deno.errors.NotFound);
    }
    // ...and so does one a second signal cuts short.
    await using p = serve();
    await written(p.pid);
    const { outcome } = await held.hold();
    p.signal("SIGTERM");
    await p.waitForOutput("Draining");
    p.signal("SIGTERM");
    assert.equal((await p.status).code, 1, p.output());
    assert.match(p.output(), /Second signal/);
    await assert.rejects(Deno.stat(pidFile), Deno.errors.NotFound, "the pid file is left");
    held.up.release();
    assert.match(await outcome, /^failed/);
  });
}

Deno.test("SIGUSR2 (a takeover) reaching a Prox already draining after SIGTERM does not cut its drain", async () => {
  await using held = await heldBehindProx(`shutdown_timeout: 60s\n`);
  await using p = spawnProx(["serve", "--no-watch"], { cwd: held.dir });
  await p.waitForOutput("Prox listening");
  const { outcome } = await held.hold();
  p.signal("SIGTERM");
  await p.waitForOutput("Draining");
  // A successor started with --takeover while this one drains (its pid is still in the pid
  // file) tells it to drain: it already does, and the request in flight must still finish.
  p.signal("SIGUSR2");
  await p.waitForOutput("already draining");
  held.up.release();
  assert.equal(await outcome, "200 late");
  assert.equal((await p.status).code, 0, p.output());
  assert.doesNotMatch(p.output(), /Second signal/);
});

Deno.test("shutdown_timeout bounds the drain: a hung request is cut and the process exits 0", async () => {
  await using held = await heldBehindProx(`shutdown_timeout: 300ms\n`, {
    path: "/hang",
    body: "too late",
  });
  await using p = spawnProx(["serve"], { cwd: held.dir });
  await p.waitForOutput("Prox listening");
  const { outcome } = await held.hold();
  const t0 = performance.now();
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0);
  const ms = performance.now() - t0;
  assert.ok(ms >= 250 && ms < 5000, `exit after ${ms} ms`);
  assert.match(p.output(), /Drain timeout reached/);
  // Cut: a 503 from the closing upstream client if it makes it out before the exit, else
  // the connection simply ends. Never the upstream's late answer.
  assert.match(await outcome, /^(failed|503 )/);
});

Deno.test("signals during startup are not lost: SIGHUP and SIGTERM before listening → clean exit 0", async () => {
  const port = freePort();
  await using tmp = await tempDir();
  const dir = tmp.path;
  // Startup reads the route's CA file; a FIFO holds it there until the test writes the file.
  const fifo = `${dir}/ca.pem`;
  const mk = await run("mkfifo", [fifo]);
  assert.equal(mk.code, 0, mk.stderr);
  await Deno.writeTextFile(
    `${dir}/config.yaml`,
    VALID(port) +
      `  "/up":\n    type: proxy\n    target: "https://127.0.0.1:1"\n    tls:\n      ca_cert: ${fifo}\n`,
  );
  await using p = spawnProx(["serve"], { cwd: dir });
  // Opening the FIFO for writing returns once Prox opened it for reading: it is mid-startup.
  const writer = await Deno.open(fifo, { write: true });
  p.signal("SIGHUP");
  p.signal("SIGTERM");
  await p.waitForOutput("Stop signal during startup");
  await writer.write(await Deno.readFile(`${ROOT}/tests/fixtures/tls/ca.pem`));
  writer.close();
  const status = await p.status;
  assert.equal(status.signal, null, p.output());
  assert.equal(status.code, 0, p.output());
  assert.match(p.output(), /"reason":"SIGTERM"/);
});

Deno.test("prox serve keeps serving when the reader of its stdout goes away (EPIPE on log writes)", async () => {
  const port = freePort();
  await using tmp = await tempDir({ "c.yaml": VALID(port) });
  const dir = tmp.path;
  const child = new Deno.Command(Deno.execPath(), {
    args: [...PROX_RUN, "serve", "-c", "c.yaml"],
    cwd: dir,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    // The log reader (a pipe to journald, a shipper) dies: every later write gets EPIPE.
    await child.stdout.cancel();
    const get = () => statusOfA(port);
    await waitFor(async () => await get() === 307, { what: "prox answering", timeoutMs: 15_000 });
    // Each request writes an access-log line into the closed pipe.
    for (let i = 0; i < 5; i++) assert.equal(await get(), 307);
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  } finally {
    await killed(child);
  }
});

Deno.test("prox serve survives running out of file descriptors and accepts again once they free up", async () => {
  const port = freePort();
  await using tmp = await tempDir({ "c.yaml": VALID(port) });
  const dir = tmp.path;
  const deno = [Deno.execPath(), ...PROX_RUN];
  const child = new Deno.Command("sh", {
    // A low descriptor limit stands in for a flood of idle connections against the usual 1024.
    args: ["-c", `ulimit -n 80 && exec "$@" serve -c c.yaml`, "sh", ...deno],
    cwd: dir,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const conns: Deno.Conn[] = [];
  const get = () => statusOfA(port);
  try {
    await waitFor(async () => await get() === 307, { what: "prox answering", timeoutMs: 15_000 });
    // Idle connections until Prox cannot accept any more (its accept fails with EMFILE).
    while (conns.length < 200) {
      try {
        conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      } catch {
        break;
      }
    }
    for (const c of conns.splice(0)) c.close();
    await waitFor(async () => await get() === 307, { what: "prox accepting again" });
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  } finally {
    for (const c of conns) c.close();
    await killed(child);
  }
});

Deno.test("prox validate refuses a tls.ca_cert that is a directory or holds no PEM certificate", async () => {
  // Both were "valid": the directory failed start-up unlocated ("Cannot start: Is a directory"),
  // the other file failed every request to the upstream (502, UnknownIssuer).
  await using tmp = await tempDir({ "notes.txt": "not a certificate\n" });
  const dir = tmp.path;
  await Deno.mkdir(`${dir}/certs`);
  const yaml = (ca: string) =>
    VALID(8080) + `  "/api":\n    type: proxy\n    target: "https://127.0.0.1:8443"\n` +
    `    tls: { ca_cert: "${ca}" }\n`;
  await Deno.writeTextFile(`${dir}/dir.yaml`, yaml(`${dir}/certs`));
  await Deno.writeTextFile(`${dir}/text.yaml`, yaml(`${dir}/notes.txt`));
  await Deno.writeTextFile(`${dir}/ok.yaml`, yaml(`${ROOT}/tests/fixtures/tls/ca.pem`));
  const ok = await prox(["validate", "-c", `${dir}/ok.yaml`]);
  assert.equal(ok.code, 0, ok.stderr);
  const first = async (file: string) => {
    const r = await prox(["validate", "-c", `${dir}/${file}`]);
    assert.equal(r.code, 1, r.stdout);
    return r.stderr.split("\n")[0];
  };
  assert.equal(
    await first("dir.yaml"),
    `${dir}/dir.yaml:11:12: error: routes./api.tls.ca_cert: CA certificate ${dir}/certs is ` +
      "a directory, not a PEM file",
  );
  assert.equal(
    await first("text.yaml"),
    `${dir}/text.yaml:11:12: error: routes./api.tls.ca_cert: ${dir}/notes.txt holds no PEM ` +
      "certificate (-----BEGIN CERTIFICATE-----): the upstream's certificate would be rejected",
  );
});

Deno.test("prox validate locates an {env.} placeholder without a name (it crashed)", async () => {
  // Deno.env.get("") throws: validate said 'Cannot read config "…": Key is an empty string.'
  await using tmp = await tempDir();
  const dir = tmp.path;
  await Deno.writeTextFile(
    `${dir}/c.yaml`,
    VALID(8080) + `  "/api":\n    type: proxy\n    target: "http://127.0.0.1:8081"\n` +
      `    request_headers: { set: { X-A: "{env.}", X-B: "{env.A=B}" } }\n`,
  );
  const r = await prox(["validate", "-c", `${dir}/c.yaml`]);
  assert.equal(r.code, 1, r.stdout);
  assert.deepEqual(r.stderr.split("\n").filter((l) => l.includes(": error: ")), [
    `${dir}/c.yaml:11:31: error: routes./api.request_headers.set.X-A: Environment variable  ` +
    "is not set (placeholder {env.})",
  ]);
  assert.match(r.stderr, /set\.X-B: \{env\.A=B\} is no placeholder: sent as it is/);
});

Deno.test("prox validate says a users_file that is a directory is one (not to grant read access)", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path;
  await Deno.mkdir(`${dir}/htpasswd`);
  await Deno.writeTextFile(
    `${dir}/c.yaml`,
    VALID(8080) + `    basic_auth: { users_file: "${dir}/htpasswd" }\n`,
  );
  const r = await prox(["validate", "-c", `${dir}/c.yaml`]);
  assert.equal(r.code, 1, r.stdout);
  const at = r.stderr.split("\n").findIndex((l) => l.includes("users_file: "));
  assert.deepEqual(r.stderr.split("\n").slice(at, at + 2), [
    `${dir}/c.yaml:8:19: error: routes./.basic_auth.users_file: ${dir}/htpasswd is a ` +
    "directory, not a file",
    "  fix: Name the file itself",
  ]);
});

Deno.test("prox validate says where an ACME certificate comes from, with which key, and where its state is", async () => {
  const acme = (extra: string) =>
    `listen_addr: "127.0.0.1:8443"\nhealth_check: { enabled: false }\ntls:\n  acme:\n` +
    `    enabled: true\n    domains: [a.example]\n    http_listen_addr: "127.0.0.1:8080"\n${extra}` +
    `routes: { "/": { type: proxy, target: "http://127.0.0.1:9000" } }\n`;
  await using tmp = await tempDir({
    "le.yaml": acme("    storage_path: /var/lib/prox/acme\n"),
    "zerossl.yaml": acme(
      "    ca_url: https://acme.zerossl.com/v2/DV90\n    eab: { kid: k, hmac_key: abc_-1 }\n" +
        '    key_type: rsa2048\n    redis: { url: "redis://127.0.0.1:6379" }\n',
    ),
  });
  const dir = tmp.path;
  const line = async (file: string) => {
    const r = await prox(["validate", "-c", `${dir}/${file}`]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.match(/^ {2}tls: +(.*)$/m)?.[1];
  };
  assert.equal(
    await line("le.yaml"),
    "ACME (a.example) from Let's Encrypt, http-01, p256 key, state in /var/lib/prox/acme",
  );
  assert.equal(
    await line("zerossl.yaml"),
    "ACME (a.example) from acme.zerossl.com (EAB), http-01, rsa2048 key, state in Redis",
  );
});
