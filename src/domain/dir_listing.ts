// A static route's directory listing (`browse`), as nginx's autoindex and Caddy's `browse` give:
// HTML for browsers, JSON for scripts. Pure: entries in, a body out. Names are the file system's,
// so every one is escaped for HTML and percent-encoded in its link.

import { escapeValue } from "./error_pages.ts";

/** One entry of a directory, as the file store saw it. */
export interface DirEntry {
  name: string;
  isDirectory: boolean;
  size: number;
  /** Milliseconds since the epoch, or null when unknown. */
  mtime: number | null;
}

/** Entries listed at most; a directory with more says the listing is cut. */
export const LISTING_MAX = 1_000;

const html = (s: string) => escapeValue(s, "html");

/**
 * `a` before `b` by code point (the order of their UTF-8 bytes). `<` compares UTF-16 units, which
 * puts a character past U+FFFF (a surrogate pair, 0xD800-0xDFFF) before U+E000-U+FFFF.
 */
function codePointLess(a: string, b: string): boolean {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i), y = b.charCodeAt(i);
    if (x === y) continue;
    // Only where both are at or past the surrogates does the unit order differ from code points.
    if (x >= 0xd800 && y >= 0xd800) {
      const xs = x < 0xe000, ys = y < 0xe000;
      if (xs !== ys) return !xs;
    }
    return x < y;
  }
  return a.length < b.length;
}

/** Directories first, then files, each by name (code point order: the same on every machine). */
export function sortEntries(entries: DirEntry[]): DirEntry[] {
  return [...entries].sort((a, b) =>
    a.isDirectory !== b.isDirectory
      ? (a.isDirectory ? -1 : 1)
      : a.name === b.name
      ? 0
      : codePointLess(a.name, b.name)
      ? -1
      : 1
  );
}

function size(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/**
 * The listing of `path` (the request's path, decoded, ending with "/"): HTML, or JSON when
 * `json`. `parent`: a link up is shown (not at the route's own root).
 */
export function renderListing(
  o: { path: string; entries: DirEntry[]; truncated: boolean; parent: boolean; json: boolean },
): { body: string; contentType: string } {
  const entries = sortEntries(o.entries);
  if (o.json) {
    return {
      contentType: "application/json",
      body: JSON.stringify({
        path: o.path,
        truncated: o.truncated,
        entries: entries.map((e) => ({
          name: e.name,
          type: e.isDirectory ? "directory" : "file",
          size: e.isDirectory ? null : e.size,
          modified: e.mtime === null ? null : new Date(e.mtime).toISOString(),
        })),
      }),
    };
  }
  const rows = entries.map((e) => {
    const name = e.name + (e.isDirectory ? "/" : "");
    const href = encodeURIComponent(e.name) + (e.isDirectory ? "/" : "");
    const when = e.mtime === null ? "" : new Date(e.mtime).toISOString().replace("T", " ")
      .slice(0, 19);
    return `<tr><td><a href="${href}">${html(name)}</a></td><td>${
      e.isDirectory ? "" : size(e.size)
    }</td><td>${when}</td></tr>`;
  });
  if (o.parent) rows.unshift('<tr><td><a href="../">../</a></td><td></td><td></td></tr>');
  const title = `Index of ${html(o.path)}`;
  return {
    contentType: "text/html; charset=utf-8",
    body: `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title>` +
      "<style>body{font-family:system-ui,sans-serif;margin:2em}td{padding:.2em 1.5em .2em 0}" +
      "td:nth-child(2){text-align:right}</style></head><body>" +
      `<h1>${title}</h1><table><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>` +
      rows.join("") + "</table>" +
      (o.truncated ? `<p>Only the first ${LISTING_MAX} entries are listed.</p>` : "") +
      "</body></html>\n",
  };
}
