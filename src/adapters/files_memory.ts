// FileStore over a fixed set of in-memory files: the embedded welcome page of `prox serve` run
// without a config where no static/ directory ships beside the program (the bundle). Nothing is
// written to disk, so it works on a read-only file system and without a temporary directory.

import type { FileStat, FileStore } from "../ports.ts";

/** A FileStore answering only `files` (relative path → content) under any root; the root is a directory. */
export function createMemoryFileStore(
  files: Record<string, string>,
  opts: { mtime?: number | null } = {},
): FileStore {
  const encoder = new TextEncoder();
  const bytes = new Map(Object.entries(files).map(([p, text]) => [p, encoder.encode(text)]));
  const mtime = opts.mtime ?? null;
  return {
    stat(_root: string, rel: string): Promise<FileStat | null> {
      if (rel === "") {
        return Promise.resolve({ isFile: false, isDirectory: true, size: 0, mtime });
      }
      const b = bytes.get(rel);
      return Promise.resolve(
        b ? { isFile: true, isDirectory: false, size: b.byteLength, mtime } : null,
      );
    },
    open(_root: string, rel: string, range?: { start: number; end: number }) {
      const b = bytes.get(rel);
      if (!b) return Promise.resolve(null);
      return Promise.resolve(range ? b.slice(range.start, range.end + 1) : b.slice());
    },
  };
}
