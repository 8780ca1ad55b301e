// Helpers for the packaging tests: build the one-file bundle like `make bundle`, pick a free
// port, and run a Prox child process until a request has been served.

import { freePort, ROOT, waitFor } from "../_harness.ts";

export { freePort };

/** Runs `deno bundle` exactly as the Makefile's `bundle` target does, into `out`. */
export async function bundleTo(out: string): Promise<void> {
  const res = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform=deno", "-o", out, "mod.ts"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!res.success) {
    throw new Error(`Cannot bundle mod.ts: ${new TextDecoder().decode(res.stderr)}`);
  }
}

/** A spawned Prox; `stop()` sends SIGTERM and returns its exit code and output. */
export interface ProxChild extends AsyncDisposable {
  stop(): Promise<{ code: number; stdout: string; stderr: string }>;
}

/** Spawns a command that runs Prox; disposing kills it if still running. */
export function spawnProx(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; clearEnv?: boolean } = {},
): ProxChild {
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    clearEnv: opts.clearEnv,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  let stopped: Promise<{ code: number; stdout: string; stderr: string }> | null = null;
  const stop = () => {
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // already exited
      }
      const out = await output;
      const dec = new TextDecoder();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    })();
    return stopped;
  };
  return {
    stop,
    async [Symbol.asyncDispose]() {
      await stop();
    },
  };
}

/** Waits until GET `url` answers 200 and returns the body. */
export async function fetchWhenUp(url: string, timeoutMs = 20_000): Promise<string> {
  return await waitFor(async () => {
    const res = await fetch(url);
    const body = await res.text();
    return res.status === 200 ? body : null;
  }, { timeoutMs, intervalMs: 50, what: `${url} to answer 200` });
}
