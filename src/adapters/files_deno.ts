// FileStore on the local file system (Deno.realPath/stat/open). Containment is decided on the
// real path: whatever the request path says, a file is served only when its fully resolved path
// (symlinks followed) lies inside the resolved root, and `open` checks again what it opened (a
// name swapped for a symlink between the two must not lead out: openInside). Nothing is opened
// to answer `stat`, so HEAD, 304 and 416 never hold a file descriptor; `open` closes the file
// when its stream ends, errors or is cancelled.
// Metadata calls (realpath, stat, open) are synchronous: on local disks they take microseconds,
// while each async op costs a thread-pool round trip (measured here: 18-37 µs async vs 2-6 µs
// sync per call). A GET of a small file makes six: realpath of the file, stat, then open, the
// readlink of its descriptor, read and close. The root's own real path is kept for a second (see `rootOf`), and `open` trusts the
// size `stat` saw. Files up to 64 KiB are read whole the same way (one read from the page cache);
// larger ones stream asynchronously. A root on a slow network file system would stall the event
// loop during those calls.

import fs from "node:fs";
import { streamedBytes } from "./gc_hint.ts";
import { FileChangedError, type FileStat, type FileStore } from "../ports.ts";
import type { DirEntry } from "../domain/dir_listing.ts";

/** Bytes read per chunk when streaming a file. */
const CHUNK = 64 * 1024;
/** Files (or ranges) up to this size are read whole, synchronously, instead of streamed. */
const SMALL = 64 * 1024;

/** Errors that mean "nothing servable here" rather than a fault of Prox (→ null, i.e. 404). */
function isAbsent(err: unknown): boolean {
  if (err instanceof Deno.errors.NotFound) return true;
  if (err instanceof Deno.errors.NotADirectory) return true;
  if (err instanceof Deno.errors.PermissionDenied) return true;
  if (err instanceof Deno.errors.FilesystemLoop) return true;
  const code = (err as { code?: string } | null)?.code;
  return code === "ENOENT" || code === "ENAMETOOLONG" || code === "ELOOP" || code === "ENOTDIR" ||
    code === "EACCES";
}

/** How long a root's resolved real path is trusted before it is resolved again (ms). */
const ROOT_TTL_MS = 1_000;

/**
 * Real paths of roots, each resolved at most once per ROOT_TTL_MS: realpath walks every component
 * of the root (about 4 µs), and roots rarely change. A path that does not resolve inside the
 * remembered real path resolves the root again at once, so a root symlink pointed at a new release
 * is followed by the next request. Keyed by the roots of the config, so it stays small; cleared
 * past 256 entries all the same.
 */
const roots = new Map<string, { real: string; at: number }>();

function rootOf(root: string, now: number, fresh: boolean): string {
  const known = roots.get(root);
  if (known && !fresh && now - known.at < ROOT_TTL_MS) return known.real;
  const real = Deno.realPathSync(root);
  if (roots.size >= 256) roots.clear();
  roots.set(root, { real, at: now });
  return real;
}

function inside(real: string, realRoot: string): boolean {
  if (real === realRoot) return true;
  return real.startsWith(realRoot) &&
    (realRoot.endsWith("/") || real.charCodeAt(realRoot.length) === 47 /* "/" */);
}

/** `root` + `relPath` resolved with symlinks, or null when missing or outside the root. */
function resolveInside(root: string, relPath: string): string | null {
  if (relPath.includes("\0")) return null;
  const parts = relPath.split("/").filter((p) => p !== "");
  if (parts.some((p) => p === "." || p === "..")) return null;
  try {
    const now = performance.now();
    if (parts.length === 0) return rootOf(root, now, true);
    // Resolved through the root as it is now; checked against the root's remembered real path,
    // and against a fresh one when that fails.
    const real = Deno.realPathSync(`${root}/${parts.join("/")}`);
    return inside(real, rootOf(root, now, false)) || inside(real, rootOf(root, now, true))
      ? real
      : null;
  } catch (err) {
    if (isAbsent(err)) return null;
    throw new Error(`Cannot resolve static path "${relPath}": ${(err as Error).message}`, {
      cause: err,
    });
  }
}

function toFileStat(st: Deno.FileInfo, real: string): FileStat {
  return {
    isFile: st.isFile,
    isDirectory: st.isDirectory,
    size: st.size,
    mtime: st.mtime ? st.mtime.getTime() : null,
    // Only for regular files: `open` then knows what it will find there.
    handle: st.isFile ? real : undefined,
  };
}

/**
 * Reads `len` bytes from `start` of a descriptor at once (pread: no seek). A bytes body takes
 * Deno.serve's fast path; a resource-backed stream costs more than the read itself for small files.
 */
function readSmall(
  fd: number,
  path: string,
  start: number,
  len: number,
  room = 0,
): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(room + len);
  let got = 0;
  while (got < len) {
    let n: number;
    try {
      n = fs.readSync(fd, out, room + got, len - got, start + got);
    } catch (err) {
      // A FIFO put in the file's place (opened without blocking): not the file stat saw.
      if ((err as { code?: string }).code === "EAGAIN") throw new FileChangedError(path);
      throw err;
    }
    if (n === 0) throw new FileChangedError(path);
    got += n;
  }
  return room === 0 ? out : out.subarray(room);
}

/** Whether /proc/self/fd tells what a descriptor opened (false once it did not). */
let procFd = true;

/** Flags for opening a file to serve: no symlink as the last component, never blocking (a FIFO). */
const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

/**
 * Opens `real` (a resolved path) and checks what was opened, by the path the kernel gives its
 * descriptor, against the root: between the realpath that resolved it and this open, a name on
 * the way may have become a symlink out of the root (a user who may write in the root renaming
 * in a loop). A descriptor, or null when what opened lies outside. Where /proc does not show it
 * (not Linux), O_NOFOLLOW still refuses a last component swapped for a symlink.
 */
function openInside(root: string, real: string): number | null {
  const fd = fs.openSync(real, OPEN_FLAGS);
  if (!procFd) return fd;
  let opened: string;
  try {
    opened = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } catch {
    // No /proc here (macOS, a chroot without it): not asked again, a throw costs microseconds.
    procFd = false;
    return fd;
  }
  if (opened === real) return fd;
  const now = performance.now();
  // Renamed within the root since, or deleted (" (deleted)" after the path) after the open.
  if (inside(opened, rootOf(root, now, false)) || inside(opened, rootOf(root, now, true))) {
    return fd;
  }
  fs.closeSync(fd);
  return null;
}

/** A stream of bytes [start, end] of an open file; the file is closed on end, error or cancel. */
function rangeStream(
  file: Deno.FsFile,
  path: string,
  start: number,
  end: number,
): ReadableStream<Uint8Array> {
  let remaining = end - start + 1;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      file.close();
    } catch {
      // already closed
    }
  };
  return new ReadableStream<Uint8Array>({
    async start() {
      try {
        if (start > 0) await file.seek(start, Deno.SeekMode.Start);
      } catch (err) {
        close();
        throw err;
      }
    },
    async pull(controller) {
      if (remaining <= 0) {
        close();
        controller.close();
        return;
      }
      const buf = new Uint8Array(Math.min(CHUNK, remaining));
      let n: number | null;
      try {
        n = await file.read(buf);
      } catch (err) {
        close();
        controller.error(err);
        return;
      }
      if (n === null) {
        // The file shrank since it was stat'ed: fail the body rather than send a short one.
        close();
        controller.error(new FileChangedError(path));
        return;
      }
      remaining -= n;
      streamedBytes(n);
      controller.enqueue(n === buf.length ? buf : buf.subarray(0, n));
      if (remaining <= 0) {
        close();
        controller.close();
      }
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 0 });
}

/**
 * A stream of bytes [start, end] of a large file, on a Deno file (whose `readable` Deno.serve
 * sends from Rust), opened again by path: only when it is the very file `checked` describes
 * (opened and checked by openInside), else null. Opened asynchronously: a FIFO put there since
 * blocks a pool thread, never the event loop.
 */
async function openLarge(
  real: string,
  checked: { dev: number; ino: number },
  start: number,
  end: number,
  range: { start: number; end: number } | undefined,
): Promise<ReadableStream<Uint8Array> | null> {
  const file = await Deno.open(real, { read: true });
  try {
    const st = file.statSync();
    // (A platform that gives no inode numbers has no /proc either: nothing to compare.)
    if (st.ino !== null && (st.dev !== checked.dev || st.ino !== checked.ino)) {
      file.close();
      return null;
    }
    // Only when the caller's range still ends at EOF: if the file grew since the caller's
    // stat (and Content-Length), the bounded stream below sends exactly what was announced.
    if (end === st.size - 1 && (!range || range.end === end)) {
      // To the end of the file: Deno.serve streams a resource-backed body from Rust without
      // JS chunks (measured: half the CPU and flat RSS for 1 GiB). It closes the file at EOF
      // or when the client goes away.
      if (start > 0) await file.seek(start, Deno.SeekMode.Start);
      return file.readable;
    }
    return rangeStream(file, real, start, end);
  } catch (err) {
    file.close();
    throw err;
  }
}

/** The Deno file-system FileStore used by `prox serve`. */
export function createDenoFileStore(): FileStore {
  return {
    stat(root, relPath) {
      try {
        const real = resolveInside(root, relPath);
        return Promise.resolve(real === null ? null : toFileStat(Deno.statSync(real), real));
      } catch (err) {
        return isAbsent(err) ? Promise.resolve(null) : Promise.reject(err);
      }
    },

    async list(root, relPath, max, skip) {
      const real = resolveInside(root, relPath);
      if (real === null) return null;
      const entries: DirEntry[] = [];
      let truncated = false;
      try {
        // Entries left out count too: each costs a realpath and a stat on the event loop.
        let looked = 0;
        for await (const e of Deno.readDir(real)) {
          if (entries.length >= max || ++looked > 4 * max) {
            truncated = true;
            break;
          }
          // Hidden by the route: not a place in the listing, nor a realpath and a stat.
          if (skip?.(e.name)) continue;
          // As stat sees it: a symlink is followed, and one out of the root is left out.
          const child = resolveInside(root, relPath === "" ? e.name : `${relPath}/${e.name}`);
          if (child === null) continue;
          try {
            const st = Deno.statSync(child);
            if (!st.isFile && !st.isDirectory) continue; // sockets, FIFOs, devices
            entries.push({
              name: e.name,
              isDirectory: st.isDirectory,
              size: st.isFile ? st.size : 0,
              mtime: st.mtime ? st.mtime.getTime() : null,
            });
          } catch (err) {
            if (!isAbsent(err)) throw err;
          }
        }
      } catch (err) {
        if (isAbsent(err)) return null;
        throw err;
      }
      return { entries, truncated };
    },

    async open(root, relPath, range, handle, room = 0) {
      // The handle is the real path of a regular file that `stat` resolved and checked against
      // this root for the same request: resolving and checking again cost a realpath call and a
      // stat (about 7 µs) per file served. What is opened is checked all the same (openInside).
      const real = handle ?? resolveInside(root, relPath);
      if (real === null) return null;
      let fd: number | null;
      try {
        fd = openInside(root, real);
      } catch (err) {
        if (isAbsent(err)) return null;
        throw err;
      }
      if (fd === null) return null;
      try {
        // With a handle the range lies within the size `stat` saw; a small one is read as it is,
        // without asking for the size again: a file that shrank since then fails in readSmall.
        if (handle !== undefined && range && range.end - range.start < SMALL) {
          return readSmall(fd, real, range.start, range.end - range.start + 1, room);
        }
        const st = fs.fstatSync(fd);
        // Never anything but a regular file (a FIFO, a device).
        if (!st.isFile()) return null;
        const start = range?.start ?? 0;
        // The caller announced this range (Content-Length, ETag): a file that shrank below it
        // since must fail, not go out short under those headers (a bytes body would even get
        // its Content-Length corrected by Deno.serve, and look complete).
        if (range && range.end > st.size - 1) throw new FileChangedError(real);
        const end = range ? range.end : st.size - 1;
        if (end - start < SMALL) return readSmall(fd, real, start, end - start + 1, room);
        return await openLarge(real, { dev: st.dev, ino: st.ino }, start, end, range);
      } finally {
        fs.closeSync(fd);
      }
    },
  };
}
