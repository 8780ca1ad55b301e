// Prox command-line entry point: `prox serve`, `prox validate`, `prox explain`, `prox schema`,
// help and version.
// deno-lint-ignore-file no-console

import { parseArgs } from "node:util";
import { suggest } from "./src/domain/suggest.ts";
import { formatIssue, loadConfigText } from "./src/config/load.ts";
import type { ConfigIssue } from "./src/config/parse.ts";
import type { Config } from "./src/config/schema.ts";
import { ConfigError, loadSource, startServer } from "./src/server.ts";
import {
  ConfigReadError,
  configReadError,
  decodeConfig,
  denoEnv,
  readCapped,
  readConfigBytes,
  STDIN_NAME,
} from "./src/adapters/config_source.ts";
import {
  readPid,
  removePidIfOurs,
  runsWithPidFile,
  takeOver,
  writePid,
} from "./src/adapters/pid_file.ts";
import { trapSignals } from "./src/adapters/signals.ts";
import type { SignalTrap, Stoppable } from "./src/adapters/signals.ts";
import { REUSE_PORT } from "./src/adapters/listener_set.ts";
import { createJsonLogger, flushStdio } from "./src/adapters/log_json.ts";
import { createMemoryFileStore } from "./src/adapters/files_memory.ts";
import type { FileStore } from "./src/ports.ts";
import type { ConfigSource } from "./src/server.ts";
import { startSupervisor } from "./src/adapters/workers.ts";
import type { Supervisor } from "./src/adapters/workers.ts";
import {
  appliedConfigPath,
  connectSupervisor,
  followSupervisor,
  leaveDirectory,
  MAX_HEALTH_TARGET,
  MAX_RELOAD_ERROR,
  startHeartbeat,
  workerRole,
} from "./src/adapters/worker_link.ts";
import type { ControlMessage, WorkerRole } from "./src/adapters/worker_link.ts";
import { createWorkerMetrics, metricsSocket } from "./src/adapters/worker_metrics.ts";
import { workersIssues } from "./src/config/workers_rules.ts";
import { explainCommand, requestFromArgs } from "./src/adapters/explain_cli.ts";
import { routeTestsCommand } from "./src/adapters/route_tests.ts";
import { replayCommand } from "./src/adapters/replay_cli.ts";
import { COMMAND_HELP, HELP, VERSION, WELCOME_CONFIG, WELCOME_HTML } from "./src/cli_text.ts";
import { quickConfig } from "./src/cli_quick.ts";

export { VERSION } from "./src/cli_text.ts";
export { startServer } from "./src/server.ts";
export type { ProxServer } from "./src/server.ts";
export { parseConfig } from "./src/config/parse.ts";
export { createHandler } from "./src/proxy/pipeline.ts";

const COMMANDS = [
  "serve",
  "validate",
  "explain",
  "test",
  "replay",
  "schema",
  "hash-password",
  "top",
  "proxy",
  "static",
  "help",
];

/** Runs the CLI with the given arguments; returns the exit code (serve returns on shutdown). */
export async function main(args: string[]): Promise<number> {
  const options = {
    config: { type: "string", short: "c" },
    format: { type: "string" },
    "log-level": { type: "string" },
    "pid-file": { type: "string" },
    takeover: { type: "boolean" },
    "no-watch": { type: "boolean" },
    workers: { type: "string" },
    header: { type: "string", short: "H", multiple: true },
    "client-ip": { type: "string" },
    against: { type: "string" },
    json: { type: "boolean" },
    "fail-on-change": { type: "boolean" },
    samples: { type: "string" },
    admin: { type: "string" },
    token: { type: "string" },
    interval: { type: "string" },
    once: { type: "boolean" },
    from: { type: "string" },
    to: { type: "string", multiple: true },
    spa: { type: "boolean" },
    browse: { type: "boolean" },
    "preserve-host": { type: "boolean" },
    "print-config": { type: "boolean" },
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "V" },
  } as const;
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, strict: true, options });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    // node:util's own text tells to pass "--formt" after "--" as a positional argument.
    const option = /^Unknown option '(-[^']*)'/.exec(message)?.[1];
    if (option !== undefined) {
      console.error(`prox: unknown option "${option}"`);
      const guess = option.startsWith("--")
        ? suggest(option.slice(2), Object.keys(options))
        : undefined;
      if (guess) console.error(`Did you mean --${guess}?`);
      console.error("Run `prox --help` for usage.");
      return 2;
    }
    console.error(`prox: ${message}`);
    console.error("Run `prox --help` for usage.");
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    console.log(`prox ${VERSION}`);
    return 0;
  }
  const command = positionals[0] ?? "serve";
  // `prox validate x.yaml`, `prox x.yaml`: the config file named without -c.
  const asConfig = (arg: string, cmd: string) =>
    /\.(ya?ml|json)$/i.test(arg) ? `\nTo use it as the config: prox ${cmd} -c ${arg}` : "";
  if (!COMMANDS.includes(command)) {
    console.error(`prox: unknown command "${command}"${asConfig(command, "serve")}`);
    console.error("Run `prox --help` for usage.");
    return 2;
  }
  if (
    command !== "replay" && positionals.length >
      (command === "help" || command === "test" || command === "static"
        ? 2
        : command === "explain"
        ? 3
        : 1)
  ) {
    const arg = String(positionals.at(-1));
    console.error(`prox: unexpected argument "${arg}"${asConfig(arg, command)}`);
    return 2;
  }
  if (command === "help" || values.help) {
    // `prox --help` alone is the overview; `prox serve --help` and `prox help serve` the command.
    const topic = command === "help" ? positionals[1] : positionals[0];
    if (topic && !COMMANDS.includes(topic)) {
      console.error(`prox: unknown command "${topic}"`);
      console.error("Run `prox --help` for usage.");
      return 2;
    }
    console.log((topic && COMMAND_HELP[topic]) ?? HELP);
    return 0;
  }
  const format = values.format ?? (values.json ? "json" : "text");
  if (format !== "text" && format !== "json") {
    console.error(`prox: --format must be text or json, not "${format}"`);
    return 2;
  }
  if (values["log-level"]) {
    const lvl = values["log-level"];
    if (!["debug", "info", "warn", "error"].includes(lvl)) {
      console.error(`prox: --log-level must be debug, info, warn or error, not "${lvl}"`);
      return 2;
    }
    Deno.env.set("PROX_LOG_LEVEL", lvl);
  }
  const envLevel = Deno.env.get("PROX_LOG_LEVEL");
  if (envLevel && !["debug", "info", "warn", "error"].includes(envLevel)) {
    // It was ignored: a typo left debug logging off (or info on) without a word.
    console.error(`prox: PROX_LOG_LEVEL must be debug, info, warn or error, not "${envLevel}"`);
    return 2;
  }
  switch (command) {
    case "validate":
      return await validateCommand(values.config ?? "config.yaml", format);
    case "explain": {
      const request = requestFromArgs(positionals.slice(1), {
        headers: values.header,
        clientIp: values["client-ip"],
      });
      if (typeof request === "string") {
        console.error(`prox: ${request}`);
        console.error("Run `prox help explain` for usage.");
        return 2;
      }
      return await explainCommand(values.config ?? "config.yaml", {
        request,
        format,
        out: (s) => console.log(s),
        err: (s) => console.error(s),
      });
    }
    case "test": {
      const file = positionals[1];
      if (!file) {
        console.error("prox: test needs a file of cases, e.g. prox test routes.test.yaml");
        console.error("Run `prox help test` for usage.");
        return 2;
      }
      return await routeTestsCommand(file, {
        config: values.config ?? "config.yaml",
        out: (s) => console.log(s),
        err: (s) => console.error(s),
      });
    }
    case "replay": {
      const files = positionals.slice(1);
      const samples = values.samples === undefined ? 3 : Number(values.samples);
      // One stream: the first reader would take all of it, and the other would read nothing.
      const stdinUses = [values.config, values.against, ...files].filter((f) => f === "-");
      if (stdinUses.length > 1) {
        console.error("prox: stdin (-) can feed only one of -c, --against and the logs");
        console.error("Run `prox help replay` for usage.");
        return 2;
      }
      if (files.length === 0 || !Number.isInteger(samples) || samples < 0 || samples > 100) {
        console.error(
          files.length === 0
            ? "prox: replay needs an access log, e.g. prox replay -c new.yaml access.log (- for stdin)"
            : `prox: --samples must be a number from 0 to 100, not "${values.samples}"`,
        );
        console.error("Run `prox help replay` for usage.");
        return 2;
      }
      return await replayCommand(files, {
        config: values.config ?? "config.yaml",
        against: values.against,
        format,
        failOnChange: values["fail-on-change"] ?? false,
        samples,
        out: (s) => console.log(s),
        err: (s) => console.error(s),
      });
    }
    case "hash-password":
      return await hashPasswordCommand();
    case "top": {
      const { topCommand } = await import("./src/adapters/top_cli.ts");
      return await topCommand({
        config: values.config,
        admin: values.admin,
        token: values.token,
        interval: values.interval,
        once: values.once ?? false,
        format,
        out: (s) => {
          const bytes = new TextEncoder().encode(s);
          for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
        },
        err: (s) => console.error(s),
      });
    }
    case "proxy":
    case "static": {
      if (values.config !== undefined) {
        console.error(`prox ${command} makes its own config: -c is for prox serve`);
        return 2;
      }
      const quick = quickConfig({
        command,
        rest: positionals.slice(1),
        from: values.from,
        to: values.to,
        spa: values.spa,
        browse: values.browse,
        preserveHost: values["preserve-host"],
      });
      if ("error" in quick) {
        console.error(quick.error);
        console.error(`Run \`prox help ${command}\` for usage.`);
        return 2;
      }
      if (values["print-config"]) {
        console.log(quick.text);
        return 0;
      }
      return await serveCommand(undefined, {
        takeover: false,
        watch: false,
        preset: { text: quick.text, name: `(prox ${command})` },
      });
    }
    case "schema": {
      const { jsonSchema } = await import("./src/config/json_schema.ts");
      console.log(JSON.stringify(jsonSchema(), null, 2));
      return 0;
    }
    default:
      if (values.takeover && !values["pid-file"]) {
        console.error(
          "prox: --takeover needs --pid-file FILE (where the old process wrote its id)",
        );
        return 2;
      }
      if (values.workers !== undefined && !/^([1-9]|[1-5][0-9]|6[0-4])$/.test(values.workers)) {
        console.error(`prox: --workers must be a number from 1 to 64, not "${values.workers}"`);
        return 2;
      }
      return await serveCommand(values.config, {
        workers: values.workers === undefined ? undefined : Number(values.workers),
        pidFile: values["pid-file"],
        takeover: values.takeover ?? false,
        watch: !values["no-watch"],
      });
  }
}

/**
 * `prox hash-password`: reads a password (one line from stdin; typed without echo on a terminal)
 * and prints its bcrypt hash for `basic_auth.users`.
 */
async function hashPasswordCommand(): Promise<number> {
  const { hashPassword } = await import("./src/adapters/password_bcrypt.ts");
  const tty = Deno.stdin.isTerminal();
  if (tty) {
    Deno.stderr.writeSync(new TextEncoder().encode("Password: "));
    Deno.stdin.setRaw(true);
  }
  const bytes: number[] = [];
  const buf = new Uint8Array(1024);
  try {
    read: for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null) break;
      for (const b of buf.subarray(0, n)) {
        if (b === 0x0a || b === 0x0d) break read;
        if (tty && b === 0x03) return 130; // Ctrl-C in raw mode
        bytes.push(b);
      }
    }
  } finally {
    if (tty) {
      Deno.stdin.setRaw(false);
      Deno.stderr.writeSync(new TextEncoder().encode("\n"));
    }
  }
  const password = new TextDecoder().decode(new Uint8Array(bytes));
  if (password === "") {
    console.error("prox: hash-password needs a password (one line on standard input)");
    return 2;
  }
  if (bytes.length > 72) {
    console.error("prox: bcrypt uses only the first 72 bytes of a password; use a shorter one");
    return 2;
  }
  console.log(await hashPassword(password, 10));
  return 0;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (err) {
    // `deno run` without -A: not "file not found" (nor the welcome page instead of config.yaml).
    if (err instanceof Deno.errors.NotCapable) throw err;
    return false;
  }
}

/** Where an ACME certificate comes from and how: the CA, its key, where the state is kept. */
function acmeDetails(a: NonNullable<NonNullable<Config["tls"]>["acme"]>): string {
  let ca = a.staging ? "Let's Encrypt staging" : "Let's Encrypt";
  if (a.ca_url) {
    try {
      ca = new URL(a.ca_url).host;
    } catch {
      ca = a.ca_url;
    }
  }
  const store = a.redis ? "state in Redis" : `state in ${a.storage_path}`;
  return `from ${ca}${a.eab ? " (EAB)" : ""}, ${a.challenge}, ${a.key_type} key, ${store}`;
}

function summary(c: Config): string[] {
  const byType = new Map<string, number>();
  for (const r of Object.values(c.routes)) byType.set(r.type, (byType.get(r.type) ?? 0) + 1);
  const types = [...byType].map(([t, n]) => `${n} ${t}`).join(", ");
  const tls = c.tls?.acme
    ? `ACME (${c.tls.acme.domains.join(", ")}) ${acmeDetails(c.tls.acme)}`
    : c.tls
    ? "certificate files"
    : "off";
  // Which routes ask an auth service first, so a top-level forward_auth that also covers the
  // auth service's own route (or misses one) shows at a glance.
  const keys = Object.keys(c.routes);
  const checked = keys.filter((k) => {
    const own = c.routes[k].forward_auth;
    return own !== false && (own ?? c.forward_auth) !== undefined;
  });
  const unchecked = keys.filter((k) => !checked.includes(k));
  const auth = checked.length === 0 ? [] : [
    `  forward auth:  ${checked.length} of ${keys.length} routes${
      unchecked.length > 0 ? ` (not ${unchecked.join(", ")})` : ""
    }`,
  ];
  return [
    `  listen:        ${c.listen_addr}${
      c.http_redirect ? ` (+ ${c.http_redirect.listen_addr} → https)` : ""
    }`,
    `  routes:        ${Object.keys(c.routes).length} (${types})`,
    `  tls:           ${tls}`,
    ...clientAuthSummary(c),
    `  health checks: ${
      c.health_check.enabled ? `every ${Math.max(1, c.health_check.interval_secs)}s` : "off"
    }`,
    // Who answers HTTP/1.1 on the plain-HTTP listener (with TLS, Deno.serve always does).
    ...(c.tls ? [] : [
      `  http/1.1:      ${
        c.protocols.http1_engine === "prox" ? "Prox's own engine" : "Deno.serve"
      } (http1_engine: ${c.protocols.http1_engine})`,
    ]),
    `  http/3:        ${c.protocols.http3_enabled ? "on" : "off"}`,
    `  admin:         ${c.admin ? c.admin.listen_addr : "off"}`,
    // Layer-4 listeners: `name addr → targets` (or the number of sni names).
    ...Object.entries(c.tcp ?? {}).map(([name, e]) =>
      `  tcp:           ${name} ${e.listen_addr} → ${
        e.targets
          ? e.targets.join(", ")
          : `sni (${plural(Object.keys(e.sni ?? {}).length, "name")}${
            e.default ? " + default" : ""
          })`
      }`
    ),
    ...pagesSummary(c),
    ...auth,
  ];
}

/** The `client certs` line: the mode and how revocation is checked (lists, OCSP). */
function clientAuthSummary(c: Config): string[] {
  const a = c.tls?.client_auth;
  if (!a) return [];
  const checks = [
    a.crl_file ? `CRLs (${a.crl_file}; out of date: ${a.crl_expired})` : "",
    a.ocsp
      ? `OCSP (${a.ocsp.check}, ${
        a.ocsp.responder ?? "each certificate's responder"
      }; on error: ${a.ocsp.on_error})`
      : "",
  ].filter((x) => x !== "");
  return [
    `  client certs:  ${a.mode} (${a.ca_cert}); revocation: ${
      checks.length > 0 ? checks.join(", ") : "not checked"
    }`,
  ];
}

/** The `error_pages` line: the top level's keys and how many routes have their own. */
function pagesSummary(c: Config): string[] {
  const own = Object.values(c.routes).filter((r) => r.error_pages).length;
  if (!c.error_pages && own === 0) return [];
  const keys = Object.keys(c.error_pages ?? {}).map((k) => k.includes(",") ? `"${k}"` : k);
  const top = keys.length > 0 ? keys.join(", ") : "none at the top level";
  const routes = own === 0 ? "" : `; ${own} route${own === 1 ? "" : "s"} with their own`;
  return [`  error pages:   ${top}${routes}`];
}

async function validateCommand(arg: string, format: "text" | "json"): Promise<number> {
  const file = arg === "-" ? STDIN_NAME : arg;
  let result: Awaited<ReturnType<typeof loadSource>> | undefined;
  let failed: unknown;
  try {
    result = await loadSource({ path: arg });
  } catch (err) {
    failed = err;
  }
  if (result === undefined) {
    const said = configReadError(file, failed);
    if (!(said instanceof ConfigReadError)) throw said; // NotCapable: main says to run with -A
    const { message: msg, hint } = said;
    if (format === "json") {
      const issue = { severity: "error", file, line: 0, col: 0, path: "", message: msg, hint };
      console.log(JSON.stringify({ file, valid: false, issues: [issue] }, null, 2));
    } else console.error(`error: ${msg}\n  fix: ${hint}`);
    return 1;
  }
  const errors = result.issues.filter((i) => i.severity === "error");
  const warnings = result.issues.filter((i) => i.severity === "warning");
  if (format === "json") {
    console.log(
      JSON.stringify({ file, valid: errors.length === 0, issues: result.issues }, null, 2),
    );
    return errors.length === 0 ? 0 : 1;
  }
  printIssues(result.issues);
  if (errors.length > 0) {
    console.error(
      `\n${file} is invalid: ${plural(errors.length, "error")}, ${
        plural(warnings.length, "warning")
      }`,
    );
    return 1;
  }
  console.log(
    `${file} is valid${warnings.length ? ` (${plural(warnings.length, "warning")})` : ""}`,
  );
  for (const line of summary(result.config!)) console.log(line);
  return 0;
}

function printIssues(issues: ConfigIssue[]): void {
  for (const i of issues) console.error(formatIssue(i));
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** The welcome config, and the store of its page when no static/ ships beside the program. */
function embeddedSource(): { source: ConfigSource; files?: FileStore } {
  const name = "(embedded default config)";
  const root = new URL("./static", import.meta.url).pathname;
  if (exists(`${root}/index.html`)) return { source: { text: WELCOME_CONFIG(root), name } };
  // The bundle: the page is served from memory, so nothing is written (a read-only file system,
  // no /tmp) and the only file served is the page (the root "/" merely has to exist).
  return {
    source: { text: WELCOME_CONFIG("/"), name },
    files: createMemoryFileStore({ "index.html": WELCOME_HTML }, { mtime: Date.now() }),
  };
}

interface ServeOptions {
  /** `--workers N`: overrides the config's `workers`. */
  workers?: number;
  /** The config itself (`prox proxy`, `prox static`): nothing to read or watch. */
  preset?: ConfigSource;
  pidFile?: string;
  takeover: boolean;
  watch: boolean;
}

/** Paths naming a descriptor of the process that opens them: another process gets its own. */
const OWN_DESCRIPTOR = /^\/(dev\/(stdin|fd\/\d+)|proc\/self\/fd\/\d+)$/;

async function serveCommand(configArg: string | undefined, opts: ServeOptions): Promise<number> {
  let source: ConfigSource;
  let files: FileStore | undefined;
  let piped = false;
  if (opts.preset) source = opts.preset;
  else if (configArg === undefined && !exists("config.yaml")) {
    ({ source, files } = embeddedSource());
    // Once, by the process the user started (workers run the same command line).
    if (!workerRole()) {
      console.error("No config.yaml found: serving the embedded default config on 127.0.0.1:3000");
    }
  } else if (configArg === "-") {
    // Read once: nothing can watch stdin, and a reload applies the same text again.
    const read = await readOnce(STDIN_NAME, () => readCapped(Deno.stdin));
    if (typeof read === "number") return read;
    source = read;
    piped = true;
  } else {
    const path = configArg ?? "config.yaml";
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(path);
      if (st.isDirectory) throw new Deno.errors.IsADirectory(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotCapable) throw err;
      return printReadError(configReadError(path, err));
    }
    // A pipe (`-c /dev/stdin`, `-c <(…)`) gives its text once, and start-up reads the config
    // more than once (the second read found it empty: "Missing required key"): read it here.
    if (!st.isFile && !workerRole()) {
      const read = await readOnce(path, () => readConfigBytes(path)); // `-c /dev/zero` never ends
      if (typeof read === "number") return read;
      source = read;
      piped = true;
    } else source = { path };
  }
  // Trapped before startup: an early SIGTERM/SIGHUP/SIGUSR2 must not kill a half-started Prox.
  const signals = trapSignals({ logger: createJsonLogger() });
  const role = workerRole();
  if (role) {
    return await workerServe(source, role, {
      watch: opts.watch,
      takeover: opts.takeover,
      signals,
      files,
    });
  }
  let server: ProxServerLike;
  try {
    const { workers, shutdownMs, text } = await workerCount(source, opts.workers);
    // `-c /dev/stdin < config.yaml` is a regular file, yet each worker opening that path gets its
    // own stdin, the supervisor's command pipe: they waited on it forever, and so did SIGTERM.
    if (workers > 1 && (piped || OWN_DESCRIPTOR.test(configArg ?? ""))) {
      throw new Error(
        `workers > 1 needs a config file the workers can read too, not stdin or a pipe like "${configArg}"`,
      );
    }
    if (workers > 1) {
      const sup = startSupervisor(workers, {
        logger: createJsonLogger(),
        config: text,
        // Workers drain within shutdown_timeout (the one they run: a reload may have changed
        // it) and then exit; one that has not after 10 s more is stuck.
        drainDeadlineMs: (applied) => shutdownTimeoutOf(applied, source) ?? shutdownMs + 10_000,
      });
      server = sup;
      try {
        await sup.ready;
      } catch {
        await sup.shutdown({ reason: "startup failure" });
        signals.release();
        return 1;
      }
      sup.logger.info("Prox listening with workers", { workers, pids: sup.pids() });
    } else {
      server = await startServer(source, {
        version: VERSION,
        watch: opts.watch,
        takeover: opts.takeover,
        files,
      });
      if (piped) {
        server.logger.info(
          `The config was read once from ${
            configArg === "-" ? "stdin" : "a pipe"
          }: nothing watches it for changes, and a reload (SIGHUP) applies the same text again`,
          { config: configArg },
        );
      }
    }
  } catch (err) {
    signals.release();
    if (err instanceof ConfigReadError) return printReadError(err);
    if (err instanceof ConfigError) {
      printIssues(err.issues);
      console.error(
        `\nCannot start: the config has ${
          plural(err.issues.filter((i) => i.severity === "error").length, "error")
        }`,
      );
    } else {
      console.error(`Cannot start: ${err instanceof Error ? err.message : String(err)}`);
    }
    return 1;
  }
  const exitCode = (code: number) => code || ("exitCode" in server ? server.exitCode : 0);
  const pidFile = opts.pidFile;
  if (!pidFile) return exitCode(await signals.serve(server));
  const previous = readPid(pidFile);
  // A stale file whose pid now belongs to another program (after a crash or reboot) is no Prox.
  if (
    previous !== null && previous !== Deno.pid && !opts.takeover &&
    runsWithPidFile(previous, pidFile)
  ) {
    server.logger.warn("The pid file names a running process; both now serve this port", {
      pidFile,
      pid: previous,
      hint: "use --takeover to replace it",
    });
  }
  try {
    await writePid(pidFile);
  } catch (err) {
    server.logger.error(`Cannot write pid file "${pidFile}": ${(err as Error).message}`);
    await server.shutdown({ reason: "startup failure" });
    signals.release();
    return 1;
  }
  // Removed however the process ends: a second signal exits at once (Deno.exit dispatches
  // `unload`), and a forced exit left the file naming a dead pid.
  const removePid = () => removePidIfOurs(pidFile);
  globalThis.addEventListener("unload", removePid);
  if (opts.takeover) takeOver(previous, pidFile, server.logger);
  const code = exitCode(await signals.serve(server));
  globalThis.removeEventListener("unload", removePid);
  removePidIfOurs(pidFile);
  return code;
}

/** The config text of a pipe or stdin, read once (at most 4 MiB); or the exit code when it cannot be. */
async function readOnce(
  name: string,
  read: () => Promise<Uint8Array>,
): Promise<{ text: string; name: string } | number> {
  let bytes: Uint8Array;
  try {
    bytes = await read();
  } catch (err) {
    return printReadError(configReadError(name, err));
  }
  const decoded = decodeConfig(bytes, name);
  if ("issue" in decoded) {
    printIssues([decoded.issue]);
    console.error("\nCannot start: the config has 1 error");
    return 1;
  }
  return { text: decoded.text, name };
}

/** Says why the config could not be read, and the fix; returns exit code 1. */
function printReadError(err: Error): number {
  const msg = err.message.startsWith("Cannot read config")
    ? err.message
    : `Cannot start: ${err.message}`;
  console.error(`error: ${msg}${err instanceof ConfigReadError ? `\n  fix: ${err.hint}` : ""}`);
  return 1;
}

/** What `serve` runs: one Prox, or a supervisor of worker processes. */
type ProxServerLike = Supervisor | Stoppable;

/** The worker count (`--workers` or the config's `workers`) and shutdown_timeout; throws ConfigError for an invalid config. */
async function workerCount(
  source: ConfigSource,
  flag: number | undefined,
): Promise<{ workers: number; shutdownMs: number; text?: string }> {
  if (flag === 1) return { workers: 1, shutdownMs: 0 };
  const loaded = await loadSource(source);
  if (!loaded.config) throw new ConfigError(loaded.issues);
  const config = { ...loaded.config, workers: flag ?? loaded.config.workers };
  const shutdownMs = config.shutdown_timeout;
  if (config.workers <= 1) return { workers: 1, shutdownMs };
  const problems = workersIssues(config).filter((i) => i.severity === "error");
  if (problems.length > 0) {
    throw new ConfigError(problems.map((p) => ({
      ...p,
      file: "path" in source ? source.path : source.name,
      ...(loaded.locate?.(p.path) ?? { line: 0, col: 0 }),
      path: p.path.join("."),
    })));
  }
  if (!REUSE_PORT) {
    throw new Error(
      "workers > 1 needs SO_REUSEPORT: Linux and Deno's unstable net API (--unstable-net)",
    );
  }
  return { workers: config.workers, shutdownMs, text: loaded.text };
}

/** The drain deadline for the config text the workers applied: its shutdown_timeout + 10 s. */
function shutdownTimeoutOf(applied: string | null, source: ConfigSource): number | null {
  if (applied === null) return null;
  const file = "path" in source ? source.path : source.name;
  const config = loadConfigText(applied, { file, env: denoEnv }).config;
  return config ? config.shutdown_timeout + 10_000 : null;
}

/** Serves as worker `role.index` of a supervisor: no pid file, reports readiness. */
async function workerServe(
  source: ConfigSource,
  role: WorkerRole,
  opts: { watch: boolean; takeover: boolean; signals: SignalTrap; files?: FileStore },
): Promise<number> {
  let link: Awaited<ReturnType<typeof connectSupervisor>> | null = null;
  const early: ControlMessage[] = [];
  let server;
  const metrics = createWorkerMetrics({ ...role, logger: createJsonLogger() });
  try {
    server = await startServer(source, {
      version: VERSION,
      // Worker 0 alone watches the files: the others follow its reloads.
      watch: opts.watch && role.exclusive,
      takeover: opts.takeover,
      files: opts.files,
      worker: {
        index: role.index,
        exclusive: role.exclusive,
        debugHeader: role.debugHeader,
        metrics,
        configCopy: appliedConfigPath(role),
        followers: role.exclusive && role.count > 1,
      },
      // Worker 0's reloads (SIGHUP, file, admin API) reach the others through the supervisor
      // once it applied them.
      // (The others answer the supervisor's `reload` lines: see followSupervisor below.)
      onReload: (r) => {
        if (!role.exclusive) return;
        const trigger = r.trigger ?? "api";
        // A rollback failed as a reload, yet worker 0 applied it: the others apply it too.
        const applied = r.ok || r.rollback === true;
        const msg = {
          type: "reload",
          worker: role.index,
          pid: Deno.pid,
          trigger,
          ok: applied,
          // Names the round in which the others apply it (and answer).
          ...(applied ? { version: r.version } : {}),
        } as const;
        // One made before the link is up (a restarted worker 0 reloading a file saved while it
        // was down) waits for it, as health changes do.
        if (link) void link.send(msg).catch(() => {});
        else early.push(msg);
      },
      // Worker 0 alone binds HTTP/3's UDP port: the others advertise it only while it is up.
      onAltSvc: (altSvc) => {
        if (!role.exclusive) return;
        const msg = { type: "h3", worker: role.index, pid: Deno.pid, altSvc } as const;
        if (link) void link.send(msg).catch(() => {});
        else early.push(msg);
      },
      // So does a cache purge: each worker has its own caches.
      onPurge: (input) =>
        void link?.send({ type: "purge", worker: role.index, pid: Deno.pid, input }),
      // And a drained target (worker 0's admin API; the others follow it): each worker balances
      // on its own.
      onDrain: (target, drained) => {
        if (!role.exclusive) return;
        void link?.send({ type: "target", worker: role.index, pid: Deno.pid, target, drained });
      },
      // The other workers' views of targets reach worker 0, which notifies (`notify`): a change
      // seen before the link is up waits for it.
      onHealth: role.exclusive ? undefined : (backend, healthy, reason) => {
        if (backend.length > MAX_HEALTH_TARGET) return;
        const msg = {
          type: "health",
          worker: role.index,
          pid: Deno.pid,
          backend,
          healthy,
          reason: reason ?? null,
        } as const;
        if (link) void link.send(msg).catch(() => {});
        else if (early.length < 100) early.push(msg);
      },
    });
    try {
      link = await connectSupervisor(role);
    } catch (err) {
      // The supervisor died while this worker started (its socket refuses, or is gone): nobody
      // else will remove its directory, where this worker may be the last one.
      const gone = err instanceof Deno.errors.ConnectionRefused ||
        err instanceof Deno.errors.NotFound;
      if (gone) leaveDirectory(role, [metricsSocket(role.dir, role.index)]);
      throw err;
    }
    await link.send({ type: "ready", worker: role.index, pid: Deno.pid });
    for (const msg of early.splice(0)) void link.send(msg).catch(() => {});
  } catch (err) {
    opts.signals.release();
    if (err instanceof ConfigError) printIssues(err.issues);
    console.error(
      `Cannot start worker ${role.index}: ${err instanceof Error ? err.message : String(err)}`,
    );
    return 1;
  }
  const s = server;
  // A stuck event loop stops the beats: the supervisor then replaces this worker.
  const stopHeartbeat = startHeartbeat(link, role);
  let orphaned = false;
  const toSupervisor = link;
  // Through the signal trap, so the drain and the exit code are the same as for a SIGTERM.
  followSupervisor((cmd) => {
    if (cmd.type === "purge") {
      const r = s.purgeCache(cmd.input);
      if (r.ok) {
        s.logger.info("Cache purged as worker 0's admin API asked", {
          ...cmd.input,
          purged: r.purged,
        });
      }
    } else if (cmd.type === "target") {
      // A target a reload since removed is no longer anyone's; one this worker's own DNS lookup
      // (discover) has not found yet is drained once found.
      if (s.drainTarget(cmd.target, cmd.drained, { ahead: true })) {
        s.logger.info(
          cmd.drained
            ? "Target drained as worker 0's admin API asked"
            : "Target undrained as worker 0's admin API asked",
          { target: cmd.target },
        );
      }
    } else if (cmd.type === "health") {
      s.workerHealth(cmd.worker, cmd.backend, cmd.healthy, cmd.reason ?? undefined);
    } else if (cmd.type === "reload-failed") {
      s.workerReloadFailed(cmd.worker, cmd);
    } else if (cmd.type === "h3") {
      s.workerAltSvc(cmd.altSvc);
    } else if (cmd.type === "reloaded") {
      s.workersReloaded(cmd.round);
    } else if (cmd.type === "reload") {
      // What worker 0 applied: the outcome goes back (a refusal is logged by the supervisor and
      // shown by worker 0's admin API; one skipped while draining is no refusal).
      void s.reload({ trigger: cmd.trigger }).then((r) => {
        const ok = r.ok || r.skipped === true;
        const errors = r.issues.filter((i) => i.severity === "error").map((i) => formatIssue(i));
        return toSupervisor.send({
          type: "reload",
          worker: role.index,
          pid: Deno.pid,
          trigger: cmd.trigger,
          ok,
          round: cmd.round,
          ...(ok ? {} : { error: errors.join("; ").slice(0, MAX_RELOAD_ERROR) }),
        });
      }).catch(() => {});
    } else if (cmd.type === "force") {
      opts.signals.exitNow("The supervisor got a second signal: exiting now");
    } else opts.signals.drain(cmd.signal);
  }, () => {
    s.logger.warn("The supervisor is gone: draining", { worker: role.index });
    orphaned = true;
    opts.signals.drain("SIGTERM");
  });
  const code = await opts.signals.serve(server);
  stopHeartbeat();
  metrics.close();
  link.close();
  // Nobody else will remove the supervisor's directory in TMPDIR.
  if (orphaned) leaveDirectory(role, [metricsSocket(role.dir, role.index)]);
  return code;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotCapable)) throw err;
    console.error(`prox: ${err.message}`);
    console.error("Prox needs every permission: deno run -A … (a compiled prox has them)");
    code = 1;
  }
  await flushStdio(); // Deno.exit would cut the log lines still being written
  Deno.exit(code);
}
