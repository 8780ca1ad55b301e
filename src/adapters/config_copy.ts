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

/** A copy written beside its place; `commit` renames it over the kept one, `abort` removes it. */
export interface StagedCopy {
  commit(): void;
  abort(): void;
}

/**
 * Writes `text` beside `path` ahead of a reload's swap. Throws when it cannot (TMPDIR full or
 * unwritable): the other workers would reload the text kept before and serve another config than
 * worker 0, so the reload must fail instead.
 */
export function stageConfigCopy(path: string, text: string, logger: Logger): StagedCopy {
  const tmp = `${path}.${Deno.pid}.tmp`;
  const remove = () => {
    try {
      Deno.removeSync(tmp);
    } catch { /* never written */ }
  };
  try {
    Deno.writeTextFileSync(tmp, text, { mode: 0o600 });
  } catch (err) {
    remove();
    const why = (err as Error).message;
    throw new Error(`Cannot keep the applied config for the other workers in "${tmp}": ${why}`);
  }
  return {
    commit() {
      try {
        Deno.renameSync(tmp, path);
      } catch (err) {
        remove();
        logger.warn("Cannot keep the applied config for restarted workers", {
          path,
          error: String(err),
        });
      }
    },
    abort: remove,
  };
}
