// The pid file behind `prox serve --pid-file F [--takeover]`: written atomically once Prox
// listens, removed on exit only if it still names us, and read by a successor that signals the
// previous process. Before signalling, the successor checks (on Linux) that the pid really is a
// Prox serving with the same pid file: a stale file whose pid was reused by an unrelated
// process must not get SIGUSR2, whose default action terminates it.

import type { Logger } from "../ports.ts";

/** The live process id recorded in `file`, or null (missing, garbage, or no such process). */
export function readPid(file: string): number | null {
  let pid: number;
  try {
    pid = Number(Deno.readTextFileSync(file).trim());
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 0) return null;
  if (Deno.build.os !== "linux") return pid;
  try {
    Deno.statSync(`/proc/${pid}`);
    return pid;
  } catch {
    return null;
  }
}

/**
 * Writes our pid atomically (temp file + rename), so a reader never sees half a number. The temp
 * file is created new: in a directory others can write (/tmp), a symlink planted at its
 * predictable name would otherwise have Prox (often root) overwrite the file it points to.
 */
export async function writePid(file: string): Promise<void> {
  const tmp = `${file}.${Deno.pid}.tmp`;
  await Deno.remove(tmp).catch(() => {}); // ours, left by a crash with the same pid (or planted)
  await Deno.writeTextFile(tmp, `${Deno.pid}\n`, { createNew: true, mode: 0o644 });
  try {
    await Deno.rename(tmp, file);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}

/** Removes `file` if it still holds our pid (a successor may have written its own). */
export function removePidIfOurs(file: string): void {
  if (readPid(file) !== Deno.pid) return;
  try {
    Deno.removeSync(file);
  } catch { /* already gone */ }
}

function resolve(path: string, cwd: string): string {
  return path.startsWith("/") ? path : `${cwd}/${path}`;
}

function real(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    return path;
  }
}

/**
 * True when process `pid` was started with `--pid-file` naming `file` (Linux: read from
 * /proc/PID/cmdline, relative paths resolved against /proc/PID/cwd). Elsewhere: true.
 */
export function runsWithPidFile(pid: number, file: string): boolean {
  if (Deno.build.os !== "linux") return true;
  let args: string[];
  let cwd: string;
  try {
    args = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
    cwd = Deno.readLinkSync(`/proc/${pid}/cwd`);
  } catch {
    return false;
  }
  const mine = real(resolve(file, Deno.cwd()));
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = a === "--pid-file"
      ? args[i + 1]
      : a.startsWith("--pid-file=")
      ? a.slice(11)
      : null;
    if (value && real(resolve(value, cwd)) === mine) return true;
  }
  return false;
}

/**
 * Whether Linux hands the connections queued on a closing `SO_REUSEPORT` listener to another
 * listener of its group (`net.ipv4.tcp_migrate_req`, Linux 5.14); null when it cannot be read.
 */
export function migratesAcceptQueue(): boolean | null {
  try {
    return Deno.readTextFileSync("/proc/sys/net/ipv4/tcp_migrate_req").trim() !== "0";
  } catch {
    return null;
  }
}

/** Tells the previous Prox (pid from the pid file) to drain and exit: we are listening now. */
export function takeOver(previous: number | null, pidFile: string, logger: Logger): void {
  if (previous === null || previous === Deno.pid) {
    logger.info("Nothing to take over: no running process in the pid file", { pidFile });
    return;
  }
  if (!runsWithPidFile(previous, pidFile)) {
    logger.warn("Not taking over: the pid file names a process that is not this Prox", {
      pid: previous,
      pidFile,
    });
    return;
  }
  try {
    Deno.kill(previous, "SIGUSR2");
    logger.info("Took over: the previous process drains and exits", { pid: previous });
    if (migratesAcceptQueue() === false) {
      logger.warn(
        "Connections still waiting in the previous process's accept queue when it closes its " +
          "listeners are reset: set sysctl net.ipv4.tcp_migrate_req=1 (Linux 5.14 or later) to " +
          "hand them to this process",
        { pid: previous },
      );
    }
  } catch (err) {
    logger.warn("Cannot signal the previous process", {
      pid: previous,
      error: err instanceof Error ? err.message : String(err),
    });
  }
}
