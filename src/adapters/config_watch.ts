// Watches the config file and the files it names (TLS certificate and key) for changes.
//
// Directories are watched, not files: editors that save by writing a temporary file and
// renaming it over the original (vim, most IDEs), and Kubernetes ConfigMap volumes that swap a
// `..data` symlink, replace the inode, which a watch on the file itself would lose. Events are
// debounced; after the quiet period the files are read and compared with what was last seen, so
// a change that arrives during the debounce or while `onChange` runs is never dropped: it
// either is in the content read, or it schedules another round.

import type { Config, UpstreamTlsConfig } from "../config/schema.ts";
import { pageFiles } from "../config/validate_pages.ts";
import { jwtFiles } from "../config/validate_jwt.ts";
import { ipAccessFiles } from "../config/validate_access.ts";
import type { Logger } from "../ports.ts";
import { tlsPaths } from "./listener_set.ts";

/** A running watch; `setFiles` follows a reload that changed which files matter. */
export interface FileWatch {
  /** Resolves once the starting content of every file has been recorded. */
  readonly ready: Promise<void>;
  setFiles(paths: string[]): void;
  close(): void;
}

/** Options for `watchFiles`. */
export interface WatchOptions {
  /** Called with the paths whose content changed; the next round waits until it settles. */
  onChange: (changed: string[]) => Promise<void> | void;
  logger: Logger;
  /** Quiet period after the last event before the files are read (default 100 ms). */
  debounceMs?: number;
  /** Longest delay under a continuous stream of events (default 1 s). */
  maxDelayMs?: number;
  /** Gap between the two reads that must agree before a change counts (default 50 ms). */
  settleMs?: number;
  /** Longest wait for an in-place writer to close the file (default 5 s; Linux only). */
  writeWaitMs?: number;
  /**
   * Prints (`filePrint`) taken before the files were loaded: compared once at the start, so a
   * save made while Prox was starting, before the watch existed, is not lost.
   */
  baseline?: ReadonlyMap<string, string>;
}

/** How often a removed directory is looked for again. */
const REWATCH_MS = 500;

/** Linux (inotify) reports a writer closing a file, as an "access" event: saves can be awaited. */
const CLOSE_EVENTS = Deno.build.os === "linux";

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

function baseOf(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function absolute(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
}

/** Files bigger than this are told apart by size and modification time, not read whole. */
const HASHED_BYTES = 64 * 1024 * 1024;

/** The print `filePrint` gives a file holding `text` (UTF-8). */
export function textPrint(text: string): Promise<string> {
  return bytesPrint(new TextEncoder().encode(text));
}

async function bytesPrint(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A file's content fingerprint (SHA-256), or why it has none (missing, unreadable). */
export async function filePrint(path: string): Promise<string> {
  try {
    const st = await Deno.stat(path);
    if (st.isFile && st.size > HASHED_BYTES) {
      // A config replaced by a log or an image: the reload refuses it (4 MiB at most) anyway.
      return `(large: ${st.size} bytes, modified ${st.mtime?.getTime()}, inode ${st.ino})`;
    }
    return await bytesPrint(await Deno.readFile(path));
  } catch (err) {
    return err instanceof Deno.errors.NotFound ? "(missing)" : `(unreadable: ${err})`;
  }
}

/**
 * Symlinked directories on the way to a file (`/etc/ssl/current` → `2026-11`, repointed by
 * `ln -sfn` on a release): repointing one changes the file, seen only in the link's directory.
 */
function linkedDirs(path: string): string[] {
  const links: string[] = [];
  let at = "";
  for (const part of dirOf(absolute(path)).split("/").filter((p) => p !== "")) {
    at += `/${part}`;
    try {
      if (Deno.lstatSync(at).isSymlink) links.push(at);
    } catch {
      break; // missing for now
    }
  }
  return links;
}

/**
 * Directories to watch for one file: its own, its symlink target's when that differs, and those
 * holding a symlinked directory on its way.
 */
function dirsFor(path: string): string[] {
  const dirs = [dirOf(absolute(path))];
  try {
    const real = Deno.realPathSync(path);
    if (dirOf(real) !== dirs[0]) dirs.push(dirOf(real));
  } catch {
    // missing for now; the directory watch sees it appear
  }
  return [...dirs, ...linkedDirs(path).map(dirOf)];
}

/**
 * Names whose events matter for one file: its own, its symlink target's when that differs, and
 * the symlinked directories on its way.
 */
function namesFor(path: string): string[] {
  const names = [baseOf(path)];
  try {
    const real = baseOf(Deno.realPathSync(path));
    if (real !== names[0]) names.push(real);
  } catch {
    // missing for now
  }
  return [...names, ...linkedDirs(path).map(baseOf)];
}

/**
 * What a config depends on: its own file, TLS certificate and key, upstream and forward_auth CA
 * files and client certificates and keys, error pages, htpasswd files, jwt_auth secret and key
 * files, ip_access list files. */
export function configFiles(configPath: string | null, c: Config): string[] {
  const upstreamTls = (tls: UpstreamTlsConfig | undefined) =>
    [tls?.ca_cert, tls?.client_cert, tls?.client_key].filter((f): f is string => !!f);
  return [
    ...(configPath ? [configPath] : []),
    ...tlsPaths(c),
    ...Object.values(c.routes).flatMap((r) => "tls" in r ? upstreamTls(r.tls) : []),
    ...[c.forward_auth, ...Object.values(c.routes).map((r) => r.forward_auth)]
      .flatMap((a) => a ? upstreamTls(a.tls) : []),
    ...pageFiles(c),
    ...Object.values(c.routes).flatMap((r) => r.basic_auth?.users_file ?? []),
    ...Object.values(c.routes).flatMap(jwtFiles),
    ...ipAccessFiles(c),
  ];
}

/** Starts watching `paths`; `onChange` runs after their content changes. */
export function watchFiles(paths: string[], opts: WatchOptions): FileWatch {
  const debounceMs = opts.debounceMs ?? 100;
  const maxDelayMs = opts.maxDelayMs ?? 1000;
  const settleMs = opts.settleMs ?? Math.min(50, debounceMs);
  let files = [...new Set(paths)];
  const seen = new Map<string, string>();
  const watchers = new Map<string, Deno.FsWatcher>();
  let names = new Set<string>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let firstEventAt = 0;
  let running = false;
  let again = false;
  let closed = false;
  const writeWaitMs = opts.writeWaitMs ?? 5000;
  // Files being written in place (modified, not closed yet), by name: when they were first
  // modified. A generator that pauses between pieces must not have its half file loaded.
  const writing = new Map<string, number>();
  const track = (event: Deno.FsEvent) => {
    for (const p of event.paths) {
      const name = baseOf(p);
      if (!names.has(name)) continue;
      if (event.kind !== "modify") writing.delete(name);
      else if (!writing.has(name)) writing.set(name, performance.now());
    }
  };
  const stillWriting = (): boolean => {
    const now = performance.now();
    for (const [name, since] of writing) {
      if (now - since < writeWaitMs) return true;
      writing.delete(name); // never closed (or a metadata change): the settle check decides
    }
    return false;
  };

  const relevant = (event: Deno.FsEvent): boolean =>
    event.paths.some((p) => {
      const name = baseOf(p);
      // `..data` and `..2026_…` are the Kubernetes atomic-writer's swap entries.
      return names.has(name) || name.startsWith("..");
    });

  async function round(): Promise<void> {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        const prints = new Map<string, string>();
        for (const f of files) prints.set(f, await filePrint(f));
        const changed = files.filter((f) => seen.get(f) !== prints.get(f));
        // A writer still at work (an in-place save, a slow copy) changes the content between
        // two reads a moment apart: wait for it to settle rather than load half a file.
        if (changed.length > 0 && settleMs > 0) {
          await new Promise((r) => setTimeout(r, settleMs));
          let moving = false;
          for (const f of changed) moving ||= await filePrint(f) !== prints.get(f);
          if (moving) {
            again = true;
            continue;
          }
        }
        for (const [f, print] of prints) seen.set(f, print);
        if (changed.length > 0 && !closed) {
          try {
            await opts.onChange(changed);
          } catch (err) {
            opts.logger.error("Config watch handler failed", { error: String(err) });
          }
        }
      } while (again && !closed);
    } finally {
      running = false;
    }
    // A symlink may point elsewhere now: follow its new target's directory and name.
    if (!closed) sync();
  }

  function schedule(): void {
    if (closed) return;
    const now = performance.now();
    if (timer === undefined) firstEventAt = now;
    clearTimeout(timer);
    const wait = Math.max(0, Math.min(debounceMs, firstEventAt + maxDelayMs - now));
    timer = setTimeout(fire, wait);
  }

  function fire(): void {
    timer = undefined;
    if (closed) return;
    // Polled while a writer holds a file open; its close event schedules the round at once.
    if (stillWriting()) timer = setTimeout(fire, debounceMs);
    else void round();
  }

  async function pump(dir: string, watcher: Deno.FsWatcher): Promise<void> {
    try {
      for await (const event of watcher) {
        // The directory itself removed or moved away: this watch sees nothing of its successor.
        if (event.paths.includes(dir)) break;
        if (!relevant(event)) continue;
        if (CLOSE_EVENTS) track(event);
        schedule();
      }
    } catch (err) {
      if (!closed) opts.logger.warn("Config watch stopped", { dir, error: String(err) });
    }
    // The directory itself was removed (a deploy's `rm -rf certs && mkdir certs`): a watch on
    // the new directory starts once it exists.
    if (closed || watchers.get(dir) !== watcher) return;
    watchers.delete(dir);
    watcher.close();
    gone.add(dir);
    schedule();
    rewatchLater();
  }

  // Removed or missing directories, watched once they exist (polled: one timer).
  const gone = new Set<string>();
  let rewatch: ReturnType<typeof setTimeout> | undefined;
  function rewatchLater(): void {
    if (closed || rewatch !== undefined) return;
    rewatch = setTimeout(() => {
      rewatch = undefined;
      if (closed) return;
      sync();
      if (gone.size > 0) rewatchLater();
    }, REWATCH_MS);
  }

  function sync(): void {
    // An edit of a symlink's target shows up under the target's name, in the target's directory.
    names = new Set(files.flatMap(namesFor));
    const wanted = new Set(files.flatMap(dirsFor));
    for (const [dir, w] of watchers) {
      if (!wanted.has(dir)) {
        w.close();
        watchers.delete(dir);
      }
    }
    for (const dir of gone) if (!wanted.has(dir)) gone.delete(dir);
    for (const dir of wanted) {
      if (watchers.has(dir)) continue;
      try {
        const w = Deno.watchFs(dir, { recursive: false });
        watchers.set(dir, w);
        void pump(dir, w);
        // Back after a removal: what it holds now may differ from what was loaded.
        if (gone.delete(dir)) schedule();
      } catch (err) {
        if (gone.has(dir)) continue; // still missing: polled again
        // A directory not created yet (certificates deployed after the config naming them) is
        // watched once it exists.
        const missing = err instanceof Deno.errors.NotFound;
        opts.logger[missing ? "info" : "warn"]("Cannot watch directory for config changes", {
          dir,
          error: String(err),
          ...(missing ? { retry: "once it exists" } : {}),
        });
        if (missing) {
          gone.add(dir);
          rewatchLater();
        }
      }
    }
  }

  // Record what the files hold now, so the first event compares against the loaded state.
  const ready = Promise.all(files.map(async (f) => {
    const print = opts.baseline?.get(f) ?? await filePrint(f);
    if (!seen.has(f)) seen.set(f, print);
  })).then(() => {
    if (opts.baseline) schedule();
  });
  sync();

  return {
    ready,
    setFiles(next) {
      const unique = [...new Set(next)];
      for (const f of unique) {
        if (!seen.has(f)) void filePrint(f).then((p) => seen.has(f) || seen.set(f, p));
      }
      for (const f of seen.keys()) if (!unique.includes(f)) seen.delete(f);
      files = unique;
      if (!closed) sync();
    },
    close() {
      closed = true;
      clearTimeout(timer);
      clearTimeout(rewatch);
      for (const w of watchers.values()) w.close();
      watchers.clear();
    },
  };
}
