// `log.access_log_file`: access lines appended to a file instead of stdout (nginx's `access_log
// /var/log/…`), which logrotate may rotate either way: `copytruncate` (the file is opened with
// O_APPEND, so writes go on at its new end) or by moving it away (`create`): the path is checked
// every second, and a file that is no longer the one open (another inode, or none) is reopened, so
// no signal is needed. Writes are queued as for stdout (log_json.ts createQueuedWriter): a slow or
// full disk drops lines past the queue's bound rather than holding requests up.

import { createQueuedWriter } from "./log_json.ts";
import type { QueuedWriter } from "./log_json.ts";
import type { Logger } from "../ports.ts";

/** How often the path is checked for a rotation. */
const CHECK_MS = 1_000;
/** How often a reopen that keeps failing is logged again. */
const REWARN_MS = 600_000;

/** An open access-log file that follows its path across rotations. */
export interface AccessLogFile {
  readonly path: string;
  write(chunk: string): void;
  /** Waits (up to `timeoutMs`) for what is queued, then closes the file. */
  close(timeoutMs: number): Promise<void>;
  /** Writes what is queued synchronously (at exit). */
  flushSync(): void;
}

/** Every file open, for flushing at exit (a reload closes the one it replaces). */
const open = new Set<AccessLogFile>();

/** Drains (up to `timeoutMs`) every access-log file's queue: call it before the process exits. */
export async function drainLogFiles(timeoutMs: number): Promise<void> {
  await Promise.all([...open].map((f) => f.close(timeoutMs)));
}

globalThis.addEventListener("unload", () => {
  for (const f of open) f.flushSync();
});

/** Opens `path` for appending (created 0640 when absent); throws as Deno.openSync does. */
export function openAccessLogFile(
  path: string,
  o: { logger: Logger; /** Tests: the rotation check's period. */ checkMs?: number },
): AccessLogFile {
  const openFile = () => Deno.openSync(path, { append: true, create: true, mode: 0o640 });
  let file = openFile();
  let ino = file.statSync().ino;
  const writerFor = (f: Deno.FsFile) =>
    createQueuedWriter(f, {
      onDropped: (lines) =>
        o.logger.warn("Access log lines dropped: the file was not written fast enough", {
          path,
          lines,
        }),
    });
  let writer: QueuedWriter = writerFor(file);
  /** close() was called; lines still join the queue it drains, in order. */
  let closing = false;
  /** The file is closed: a line is appended on its own (a response that ended at shutdown). */
  let closed = false;
  /** Lines lost after close because the path could not be appended to. */
  let lost = 0;
  const appendLate = (chunk: string) => {
    try {
      Deno.writeTextFileSync(path, chunk, { append: true, create: true, mode: 0o640 });
    } catch (err) {
      lost += chunk.split("\n").length - 1 || 1;
      o.logger.warn("Access log line dropped: written after the file closed, and cannot append", {
        path,
        dropped: lost,
        error: String(err),
      });
    }
  };
  // Without inodes (Windows) a move cannot be told from here: copytruncate rotation only.
  const follows = ino !== null;
  /** Files rotated away, closed once what was queued for them is written. */
  const retire = (f: Deno.FsFile, w: QueuedWriter) =>
    void w.drain(5_000).then(() => {
      try {
        f.close();
      } catch { /* closed */ }
    });
  /** When "Cannot reopen" was last logged (performance.now()). */
  let warnedAt = -Infinity;
  const check = setInterval(() => {
    if (!follows) return;
    let now: number | null;
    try {
      now = Deno.statSync(path).ino;
    } catch {
      now = null; // moved away, not created again yet
    }
    if (now !== null && now === ino) return;
    try {
      const next = openFile();
      retire(file, writer);
      file = next;
      ino = next.statSync().ino;
      writer = writerFor(next);
      o.logger.info("Access log file reopened", { path });
    } catch (err) {
      // The directory is gone or not writable: lines go on to the file still open. Said once,
      // then every 10 minutes while it lasts (the check runs every CHECK_MS).
      const t = performance.now();
      if (t - warnedAt >= REWARN_MS) {
        warnedAt = t;
        o.logger.warn("Cannot reopen the access log file", { path, error: String(err) });
      }
      return;
    }
    warnedAt = -Infinity;
  }, o.checkMs ?? CHECK_MS);
  Deno.unrefTimer(check);

  const self: AccessLogFile = {
    path,
    write: (chunk) => {
      if (closed) appendLate(chunk);
      else writer.write(chunk);
    },
    async close(timeoutMs) {
      if (closing) return;
      closing = true;
      clearInterval(check);
      open.delete(self);
      await writer.drain(timeoutMs);
      // Set at once with the close: a line from now on is appended by itself, none is lost.
      closed = true;
      try {
        file.close();
      } catch { /* closed */ }
    },
    flushSync: () => writer.flushSync(),
  };
  open.add(self);
  return self;
}
