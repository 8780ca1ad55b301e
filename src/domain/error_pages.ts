// Custom pages for Prox's own error answers (`error_pages`): which statuses a key selects, the
// media type of a page file, the templates compiled once at load, the choice among pages by the
// client's Accept, and the values escaped for the page's language. Pure; the files are read by the
// caller (validation through its environment, the server before building a snapshot).

import { compileTemplate, REQUEST_PLACEHOLDERS } from "./placeholders.ts";
import type { PlaceholderValues, Template } from "./placeholders.ts";
import { parseStatusSelector } from "./conditions.ts";
import { suggest } from "./suggest.ts";
import { fieldValueProblem } from "./rules.ts";
import { escapeFor, escapeValue } from "./escape.ts";
import type { PageEscape } from "./escape.ts";

/** Placeholders a page may use: the request's, the status and its short reason (no upstream). */
export const PAGE_PLACEHOLDERS = [...REQUEST_PLACEHOLDERS, "status", "reason"] as const;

/** A page file larger than this is a config error: pages are kept in memory, per config. */
export const MAX_PAGE_BYTES = 256 * 1024;

/** Media types by file extension; another extension needs `content_type`. */
const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  htm: "text/html; charset=utf-8",
  json: "application/json",
  txt: "text/plain; charset=utf-8",
  xml: "application/xml; charset=utf-8",
};

/** The default media type of an inline `body`. */
export const BODY_TYPE = "text/plain; charset=utf-8";

/** A page file's media type by its extension, or undefined when Prox does not know it. */
export function pageTypeFor(file: string): string | undefined {
  const dot = file.lastIndexOf(".");
  return dot < 0 ? undefined : TYPES[file.slice(dot + 1).toLowerCase()];
}

/**
 * The status ranges an `error_pages` key selects: "404", "5xx", "500-504", or several of them
 * separated by commas ("502, 504"). Only error statuses (400-599) can have a page.
 */
export function pageSelector(key: string): [number, number][] | string {
  const ranges: [number, number][] = [];
  for (const part of key.split(",")) {
    const r = parseStatusSelector(part.trim());
    if (typeof r === "string") return r;
    if (r[0] < 400 || r[1] > 599) {
      return `Status ${part.trim()} is no error status: pages are for 400-599`;
    }
    ranges.push(r);
  }
  return ranges;
}

export { escapeFor, escapeValue } from "./escape.ts";
export type { PageEscape } from "./escape.ts";

/** One page, ready to render. */
export interface PageVariant {
  /** Content-Type sent with it. */
  type: string;
  /** The media type without parameters, lowercase, for Accept matching. */
  media: string;
  template: Template;
  escape: PageEscape;
  /** The file it came from, or "inline" (for `prox explain`). */
  source: string;
}

/** The pages of one `error_pages` key. */
export interface PageEntry {
  key: string;
  ranges: [number, number][];
  /** Width of the narrowest range: a narrower key wins over a wider one. */
  width: number;
  variants: PageVariant[];
}

/** The pages of one `error_pages` map, narrowest key first. */
export type PageTable = readonly PageEntry[];

/** One page of the config as written: a path, or `{file | body, content_type}`. */
export type PageSpec = string | { file?: string; body?: string; content_type?: string };

/** A problem found compiling pages, at a path below the `error_pages` map. */
export interface PageProblem {
  path: (string | number)[];
  message: string;
  hint?: string;
  warning?: boolean;
}

/**
 * Compiles an `error_pages` map (files read through `read`). Problems are pushed to `problems`
 * with paths below the map; an entry with a problem is left out.
 */
export function compilePages(
  spec: Record<string, PageSpec | PageSpec[]>,
  opts: {
    /** The file's text; undefined when it cannot be read (the caller reports why, at `path`). */
    read: (file: string, path: (string | number)[]) => string | undefined;
    env: (name: string) => string | undefined;
    problems: PageProblem[];
  },
): PageTable {
  const table: PageEntry[] = [];
  for (const [key, value] of Object.entries(spec)) {
    const ranges = pageSelector(key);
    if (typeof ranges === "string") {
      opts.problems.push({
        path: [key],
        message: ranges,
        hint:
          'Key pages by a status (404), a class ("5xx"), a range ("500-504") or a list ("502, 504")',
      });
      continue;
    }
    const list = Array.isArray(value) ? value : [value];
    const variants: PageVariant[] = [];
    list.forEach((page, i) => {
      const at = Array.isArray(value) ? [key, i] : [key];
      const v = variant(page, at, opts);
      if (v) variants.push(v);
    });
    if (variants.length < list.length) continue;
    const width = Math.min(...ranges.map(([lo, hi]) => hi - lo));
    table.push({ key, ranges, width, variants });
  }
  // Stable: among keys as narrow the first in key order wins. JS puts an integer key (404) before
  // "404, 410" whatever the file says, so validate warns about such pairs.
  return table.sort((a, b) => a.width - b.width);
}

function variant(
  page: PageSpec,
  at: (string | number)[],
  opts: Parameters<typeof compilePages>[1],
): PageVariant | undefined {
  const spec = typeof page === "string" ? { file: page } : page;
  if ((spec.file === undefined) === (spec.body === undefined)) {
    opts.problems.push({
      path: at,
      message: "A page needs either file or body",
      hint:
        'E.g. { file: pages/502.html } or { body: "Down for maintenance", content_type: text/plain }',
    });
    return undefined;
  }
  const why = spec.content_type === undefined ? undefined : fieldValueProblem(spec.content_type);
  if (why) {
    opts.problems.push({ path: [...at, "content_type"], message: `content_type ${why}` });
    return undefined;
  }
  const where = spec.body !== undefined
    ? [...at, "body"]
    : typeof page === "string"
    ? at
    : [...at, "file"];
  const text = spec.body ?? opts.read(spec.file!, where);
  if (text === undefined) return undefined;
  const type = spec.content_type !== undefined
    ? withCharset(spec.content_type, text, [...at, "content_type"], opts.problems)
    : (spec.file !== undefined ? pageTypeFor(spec.file) : BODY_TYPE);
  if (type === undefined) {
    opts.problems.push({
      path: where,
      message: `Cannot tell the media type of ${spec.file} from its extension`,
      hint:
        "Use .html, .json, .txt or .xml, or set content_type (e.g. { file: …, content_type: text/html })",
    });
    return undefined;
  }
  const r = compileTemplate(text, { allowed: PAGE_PLACEHOLDERS, env: opts.env });
  if (!r.ok) {
    for (const name of r.unknown) {
      opts.problems.push({
        path: where,
        message: `Environment variable ${name.slice(4)} is not set (placeholder {${name}})`,
        hint: `Set ${name.slice(4)} in Prox's environment, or remove the placeholder`,
      });
    }
    return undefined;
  }
  for (const name of r.literal) {
    const near = suggest(name, PAGE_PLACEHOLDERS);
    opts.problems.push({
      path: where,
      warning: true,
      message: `{${name}} is no placeholder: sent as it is`,
      hint: near
        ? `Did you mean {${near}}?`
        : `Placeholders: ${PAGE_PLACEHOLDERS.map((a) => `{${a}}`).join(", ")}, {env.NAME}`,
    });
  }
  return {
    type,
    media: type.split(";")[0].trim().toLowerCase(),
    template: r.template,
    escape: escapeFor(type),
    source: spec.file ?? "inline",
  };
}

/** A text type (`text/*`, XML) without a charset: one a browser would guess as windows-1252. */
const TEXT_TYPE = /^(?:text\/[^;\s]+|application\/(?:[^;\s]+\+)?xml)\s*(?:;|$)/i;
const CHARSET = /;\s*charset\s*=\s*"?([^;"\s]+)/i;

/**
 * `type` as the page goes out: every page is sent as UTF-8, so a text type that names no charset
 * gets `; charset=utf-8` (a page's non-ASCII text would be mojibake otherwise). One naming
 * another charset is kept as written, with a warning when the page is beyond ASCII.
 */
function withCharset(
  type: string,
  text: string,
  at: (string | number)[],
  problems: PageProblem[],
): string {
  if (!TEXT_TYPE.test(type)) return type;
  const charset = CHARSET.exec(type)?.[1];
  if (charset === undefined) return `${type.replace(/[\s;]+$/, "")}; charset=utf-8`;
  if (!/^utf-?8$/i.test(charset) && /[^ -~\t\r\n]/.test(text)) {
    problems.push({
      path: at,
      warning: true,
      message: `The page is sent as UTF-8, not ${charset}: its text beyond ASCII will show wrong`,
      hint: "Drop the charset parameter (Prox adds charset=utf-8) or write charset=utf-8",
    });
  }
  return type;
}

/** The entry whose key selects `status`, the narrowest first; undefined when none does. */
export function lookupPage(table: PageTable, status: number): PageEntry | undefined {
  for (const e of table) {
    for (const [lo, hi] of e.ranges) if (status >= lo && status <= hi) return e;
  }
  return undefined;
}

/**
 * The variant the client prefers by its Accept field (RFC 9110 §12.5.1: the most specific range
 * that matches gives the quality); the first on a tie, without Accept, or when it accepts none
 * (an error page is still better than a 406).
 */
export function negotiatePage(
  variants: readonly PageVariant[],
  accept: string | null,
): PageVariant {
  if (variants.length === 1 || !accept) return variants[0];
  const ranges = accept.split(",").map((r) => {
    const [range, ...params] = r.split(";");
    const q = params.map((p) => p.trim()).find((p) => /^q=/i.test(p));
    const qv = q ? Number(q.slice(2)) : 1;
    return { range: range.trim().toLowerCase(), q: Number.isFinite(qv) ? qv : 0 };
  });
  let best = variants[0];
  let bestQ = -1;
  for (const v of variants) {
    const major = v.media.split("/")[0];
    let q = 0;
    let specificity = -1;
    for (const r of ranges) {
      const s = r.range === v.media ? 2 : r.range === `${major}/*` ? 1 : r.range === "*/*" ? 0 : -1;
      if (s > specificity) [specificity, q] = [s, r.q];
    }
    if (q > bestQ) [best, bestQ] = [v, q];
  }
  return best;
}

/** The page's text with its placeholders filled in, each value escaped for the page. */
export function renderPage(v: PageVariant, values: PlaceholderValues): string {
  if (v.template.constant) return v.template.parts.join("");
  let out = "";
  for (const p of v.template.parts) {
    out += typeof p === "string" ? p : escapeValue(values(p.name), v.escape);
  }
  return out;
}
