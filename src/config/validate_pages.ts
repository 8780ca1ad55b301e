// Cross-field rules of `error_pages` (top level and per route) and `intercept_upstream`: keys that
// select error statuses, page files that exist, can be read, are UTF-8 and small, media types,
// placeholders. The pages are compiled here exactly as the snapshot builder compiles them.

import { compilePages, MAX_PAGE_BYTES } from "../domain/error_pages.ts";
import type { PageTable } from "../domain/error_pages.ts";
import type { Config, ErrorPagesConfig } from "./schema.ts";
import type { ValidateEnv } from "./validate.ts";
import type { Report } from "./validate_route.ts";

/** Checks every `error_pages` map and each `intercept_upstream`. */
export function validatePages(
  config: Config,
  opts: { err: Report; warn: Report; env: ValidateEnv },
): void {
  const top = config.error_pages ? checkPages(config.error_pages, ["error_pages"], opts) : [];
  for (const [key, route] of Object.entries(config.routes)) {
    const at = ["routes", key];
    const own = route.error_pages
      ? checkPages(route.error_pages, [...at, "error_pages"], opts)
      : [];
    if ((route.type === "proxy" || route.type === "load_balance") && route.intercept_upstream) {
      if (own.length === 0 && top.length === 0) {
        opts.warn(
          [...at, "intercept_upstream"],
          "intercept_upstream has no effect: no error_pages apply to this route",
          "Add error_pages (here or at the top level), e.g. error_pages: { 5xx: pages/5xx.html }",
        );
      }
    }
  }
}

/** Compiles one map (reading its files through `env`), reporting what is wrong. */
function checkPages(
  pages: ErrorPagesConfig,
  base: (string | number)[],
  opts: { err: Report; warn: Report; env: ValidateEnv },
): PageTable {
  const problems: Parameters<typeof compilePages>[1]["problems"] = [];
  const table = compilePages(pages, {
    env: opts.env.env ?? (() => undefined),
    problems,
    read: (file, at) => {
      const r = readPage(file, opts.env);
      if ("text" in r) return r.text;
      opts.err([...base, ...at], r.error, r.hint);
      return undefined;
    },
  });
  for (const p of problems) {
    (p.warning ? opts.warn : opts.err)([...base, ...p.path], p.message, p.hint);
  }
  // Equally narrow keys for one status: which wins would hang on the order of the keys.
  for (let j = 1; j < table.length; j++) {
    for (let i = 0; i < j; i++) {
      const [a, b] = [table[i], table[j]];
      const shared = a.width === b.width ? overlap(a.ranges, b.ranges) : undefined;
      if (!shared) continue;
      const [lo, hi] = shared;
      opts.warn(
        [...base, b.key],
        `"${a.key}" and "${b.key}" both give ${lo === hi ? lo : `${lo}-${hi}`} a page: one of ` +
          "them is never used there",
        "Give each status one page (a narrower key wins over a wider one: 502 over 5xx)",
      );
      break;
    }
  }
  return table;
}

/** The first statuses two keys both select, or undefined. */
function overlap(a: [number, number][], b: [number, number][]): [number, number] | undefined {
  for (const [lo, hi] of a) {
    for (const [l, h] of b) if (lo <= h && l <= hi) return [Math.max(lo, l), Math.min(hi, h)];
  }
  return undefined;
}

const MISSING = "Create the file or fix the path (relative to the working directory)";

/** The page file's text (empty when `env` cannot read files), or what keeps Prox from serving it. */
function readPage(
  file: string,
  env: ValidateEnv,
): { text: string } | { error: string; hint: string } {
  const st = env.stat?.(file);
  if (st === null || (st === undefined && !env.exists(file))) {
    return { error: `Page file not found: ${file}`, hint: MISSING };
  }
  if (st && !st.isFile) return { error: `Page file is not a file: ${file}`, hint: MISSING };
  if (st && st.size > MAX_PAGE_BYTES) {
    return {
      error: `Page file ${file} is ${st.size} bytes, over the ${MAX_PAGE_BYTES / 1024} KiB limit`,
      hint: "Keep pages small: serve images, fonts and styles from a static route and link them",
    };
  }
  return env.readText?.(file) ?? { text: "" };
}

/** Every page file a config names (top level and routes), once each. */
export function pageFiles(config: Config): string[] {
  const files = new Set<string>();
  const maps = [config.error_pages, ...Object.values(config.routes).map((r) => r.error_pages)];
  for (const map of maps) {
    for (const value of Object.values(map ?? {})) {
      for (const page of Array.isArray(value) ? value : [value]) {
        const file = typeof page === "string" ? page : page.file;
        if (file !== undefined) files.add(file);
      }
    }
  }
  return [...files];
}
