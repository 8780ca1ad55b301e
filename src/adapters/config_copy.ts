// The config text a worker of `workers: N` last applied, kept in the supervisor's directory. A
// worker that crashed and is restarted starts from it, so an invalid file on disk (the running
// workers rejected it) does not make the restarted one fail and restart in a loop.

import type { Logger } from "../ports.ts";

/** The kept text, or null when no worker has kept one yet. */
export function readConfigCopy(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

/** Keeps `text` at `path` (a whole file or none: written beside it, then renamed over it). */
export function keepConfigCopy(path: string, text: string, logger: Logger): void {
  const tmp = `${path}.${Deno.pid}.tmp`;
  try {
    Deno.writeTextFileSync(tmp, text, { mode: 0o600 });
    Deno.renameSync(tmp, path);
  } catch (err) {
    try {
      Deno.removeSync(tmp);
    } catch { /* never written */ }
    logger.warn("Cannot keep the applied config for restarted workers", {
      path,
      error: String(err),
    });
  }
}
