// Text → parsed → validated, in one call: what `prox validate`, `serve` and reload all use.

import { parseConfig, sortIssues } from "./parse.ts";
import type { ConfigIssue } from "./parse.ts";
import { validateConfig } from "./validate.ts";
import type { ValidateEnv } from "./validate.ts";
import type { Config } from "./schema.ts";

/** A config ready to serve (when there are no errors) and every issue found. */
export interface LoadResult {
  config?: Config;
  issues: ConfigIssue[];
  /** Where a key path sits in the text (for problems found later, e.g. a reload's bind error). */
  locate?: (path: (string | number)[]) => { line: number; col: number };
  /** The text it was loaded from (set by loadSource). */
  text?: string;
  /** The config as parsed when only the rules relating keys failed (the files it names). */
  candidate?: Config;
}

/** Parses and validates config text; `config` is set only when no issue is an error. */
export function loadConfigText(text: string, opts: { file: string; env: ValidateEnv }): LoadResult {
  const parsed = parseConfig(text, opts.file);
  if (!parsed.config) return { issues: parsed.issues, locate: parsed.locate };
  const issues = [...parsed.issues, ...validateConfig(parsed.config, parsed, opts)];
  if (parsed.issues.length > 0) sortIssues(issues);
  const ok = !issues.some((i) => i.severity === "error");
  return {
    config: ok ? parsed.config : undefined,
    candidate: parsed.config,
    issues,
    locate: parsed.locate,
  };
}

/** One issue as text: `file:line:col: error: path: message` plus hint and excerpt lines. */
export function formatIssue(i: ConfigIssue): string {
  const where = `${i.file}:${i.line}:${i.col}`;
  let s = `${where}: ${i.severity}: ${i.path ? `${i.path}: ` : ""}${i.message}`;
  if (i.excerpt) s += `\n${i.excerpt}`;
  if (i.hint) s += `\n  fix: ${i.hint}`;
  return s;
}
