// Spawns the real CLI (`deno run -A mod.ts …`) as a child process for lifecycle and CLI tests:
// collects its output, waits for log lines, sends signals, and kills it on dispose.

import { collectOutput, freePort, ROOT, waitFor } from "../_harness.ts";

export { freePort };

/** A running `prox` process; dispose to kill it (if still alive) and collect its exit. */
export interface ProxProcess extends AsyncDisposable {
  readonly pid: number;
  /** Everything it printed so far (stdout and stderr interleaved by arrival). */
  output(): string;
  /** Waits until the output contains `needle` (or `needle` returns true for it). */
  waitForOutput(
    needle: string | ((out: string) => boolean),
    opts?: { timeoutMs?: number },
  ): Promise<void>;
  signal(sig: Deno.Signal): void;
  /** Resolves with the exit status (after both output streams ended). */
  readonly status: Promise<Deno.CommandStatus>;
}

/** The `deno` arguments that run the CLI (`prox`) with the repository's deno.json: add its own. */
export const PROX_RUN = ["run", "-A", "--config", `${ROOT}/deno.json`, `${ROOT}/mod.ts`];

/** Runs `deno run -A mod.ts ARGS` with the repository's deno.json, from `cwd`. */
export function spawnProx(
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; deno?: string } = {},
): ProxProcess {
  const child = new Deno.Command(opts.deno ?? Deno.execPath(), {
    args: [...PROX_RUN, ...args],
    cwd: opts.cwd ?? ROOT,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = collectOutput(child);
  const status = out.done.then(() => child.status);
  let exited = false;
  void status.then(() => exited = true);
  return {
    pid: child.pid,
    output: out.text,
    async waitForOutput(needle, o = {}) {
      const test = typeof needle === "string" ? (s: string) => s.includes(needle) : needle;
      try {
        await waitFor(() => test(out.text()) || exited && test(out.text()), {
          timeoutMs: o.timeoutMs ?? 15_000,
          what: `output ${typeof needle === "string" ? JSON.stringify(needle) : "condition"}`,
        });
      } catch (err) {
        throw new Error(`${(err as Error).message}\n--- process output ---\n${out.text()}`);
      }
    },
    signal(sig) {
      child.kill(sig);
    },
    status,
    async [Symbol.asyncDispose]() {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }
      await status;
    },
  };
}

/** The keep-alive race: the server closed an idle connection as the next request went out. */
const CLOSED_IDLE = /connection closed before message completed/;

/**
 * Keeps `concurrency` GET loops running against `url` until stopped; counts outcomes. Like a
 * browser (RFC 9112 §9.3.1), a GET whose reused connection the server closed before answering is
 * sent once more, on a new connection: a draining server must close its idle keep-alive
 * connections, and one may be closed just as a request goes out on it. Those are counted in
 * `retried`; a second failure, any other error or a non-200 status is a failure. (Requests in
 * flight during a drain are checked without any retry by the drain test.)
 */
export function loadLoop(url: string, concurrency = 4) {
  let stopped = false;
  const failures: string[] = [];
  let ok = 0;
  let retried = 0;
  const client = Deno.createHttpClient({});
  const once = async (c: Deno.HttpClient): Promise<void> => {
    const res = await fetch(url, { client: c });
    const body = await res.text();
    if (res.status === 200) ok++;
    else failures.push(`${res.status} ${body.slice(0, 200)}`);
  };
  const loop = async () => {
    while (!stopped) {
      try {
        try {
          await once(client);
        } catch (err) {
          // Deno's fetch says "fetch failed" and puts the reason in `cause`.
          if (!CLOSED_IDLE.test(`${err} ${(err as Error).cause ?? ""}`)) throw err;
          retried++;
          // On a new connection (the pool may hold more connections the server is closing).
          using fresh = Deno.createHttpClient({});
          await once(fresh);
        }
      } catch (err) {
        failures.push(`${err}: ${(err as Error).cause ?? ""}`);
      }
    }
  };
  const loops = Array.from({ length: concurrency }, loop);
  return {
    get ok() {
      return ok;
    },
    get retried() {
      return retried;
    },
    failures,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      client.close();
    },
  };
}
