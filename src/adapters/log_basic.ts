// A small JSON-lines Logger on stdout/stderr (errors and warnings to stderr).

import type { Logger, LogLevel } from "../ports.ts";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Creates a logger that drops messages below `level`. */
export function createLogger(opts: { level?: LogLevel } = {}): Logger {
  const env = Deno.env.get("PROX_LOG_LEVEL") as LogLevel | undefined;
  const min = ORDER[env && env in ORDER ? env : opts.level ?? "info"];
  const enc = new TextEncoder();
  const log = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < min) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + "\n";
    (ORDER[level] >= ORDER.warn ? Deno.stderr : Deno.stdout).writeSync(enc.encode(line));
  };
  return {
    log,
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}
