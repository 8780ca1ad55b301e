// Runs Prox as a real child process (`deno run mod.ts serve`) for tests that measure it or
// signal it.
import { collectOutput, freePort, ROOT, untilAccepting } from "../_harness.ts";

export { freePort };

/** A Prox child process; dispose to stop it (SIGTERM, then SIGKILL). */
export interface ProxProcess extends AsyncDisposable {
  child: Deno.ChildProcess;
  pid: number;
  port: number;
  /** Everything the process wrote so far (stdout + stderr). */
  output(): string;
  /** Peak and current resident memory in bytes (VmHWM, VmRSS from /proc). */
  memory(): { peak: number; rss: number };
}

/** The V8 flags Prox ships with (`make run`, `make compile`), read from the Makefile. */
export const V8_FLAGS = /^V8_FLAGS := (.+)$/m.exec(Deno.readTextFileSync(`${ROOT}/Makefile`))![1];

/** `deno` arguments that run `prox serve -c <config>` as `make run` does (the Makefile's V8_FLAGS). */
export function serveArgs(config: string, more: string[] = []): string[] {
  return [
    "run",
    "-A",
    V8_FLAGS,
    `--config=${ROOT}/deno.json`,
    `${ROOT}/mod.ts`,
    "serve",
    "-c",
    config,
    ...more,
  ];
}

/** Writes `yaml` (with `{PORT}` replaced) to a temp file and starts `prox serve` on it. */
export async function spawnProx(
  yaml: string,
  opts: { port?: number; env?: Record<string, string>; args?: string[] } = {},
): Promise<ProxProcess> {
  const port = opts.port ?? freePort();
  const dir = await Deno.makeTempDir({ prefix: "prox-test-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, yaml.replaceAll("{PORT}", String(port)));
  const child = new Deno.Command(Deno.execPath(), {
    args: serveArgs(file, opts.args),
    cwd: dir,
    env: { PROX_LOG_LEVEL: "info", ...opts.env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = collectOutput(child);
  const status = (field: string) => {
    const text = Deno.readTextFileSync(`/proc/${child.pid}/status`);
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  };
  await untilAccepting(port, {
    timeoutMs: 20_000,
    what: `prox to listen on ${port}\n${out.text()}`,
  });
  return {
    child,
    pid: child.pid,
    port,
    output: out.text,
    memory: () => ({ peak: status("VmHWM"), rss: status("VmRSS") }),
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 10_000);
      await child.status;
      clearTimeout(timer);
      await out.done;
      await Deno.remove(dir, { recursive: true });
    },
  };
}
