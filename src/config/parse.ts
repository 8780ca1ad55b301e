// Config text → resolved Config, or every problem at once with file:line:col. Pure: takes the
// text and a file name for messages, never reads files.

import { isMap, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
import type { Document, Node, Pair } from "yaml";
import type { z } from "zod";
import { Config } from "./schema.ts";
import type { Config as ConfigType } from "./schema.ts";
import { knownKeysAt, suggest } from "./suggest.ts";
import { dropIgnoredSeedKeys } from "./seed_keys.ts";

/** One located problem in a config file. */
export interface ConfigIssue {
  severity: "error" | "warning";
  file: string;
  line: number;
  col: number;
  /** Dotted key path, e.g. `routes./api.target`. */
  path: string;
  message: string;
  /** How to fix it, when we know. */
  hint?: string;
  /** The offending source line and a caret, for YAML syntax errors. */
  excerpt?: string;
}

/** The outcome of parsing: a config when there are no errors, and all issues in file order. */
export interface ParseResult {
  config?: ConfigType;
  issues: ConfigIssue[];
  /** Locates a key path in the source (used by validate.ts for cross-field issues). */
  locate: (path: (string | number)[]) => { line: number; col: number };
}

/** Parses YAML text into a validated Config. */
export function parseConfig(text: string, file = "config.yaml"): ParseResult {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const pos = (offset: number) => {
    const p = lc.linePos(offset);
    return { line: p.line, col: p.col };
  };
  const locate = (path: (string | number)[]) => pos(offsetOf(doc, path));
  const issues: ConfigIssue[] = [];

  for (const err of doc.errors) {
    const p = pos(err.pos[0]);
    issues.push({
      severity: "error",
      file,
      ...p,
      path: "",
      message: `YAML syntax error: ${firstLine(err.message)}`,
      hint: err.code === "DUPLICATE_KEY"
        ? "Each key may appear once in a mapping (of two equal route keys the Rust Prox silently " +
          "used the last); merge or rename the duplicate"
        : "Check the indentation and quoting on this line",
      excerpt: excerpt(text, p.line, p.col),
    });
  }
  if (issues.length > 0) return { issues, locate };

  let raw: unknown;
  try {
    // The limit guards against alias bombs; one anchor reused by a few hundred routes is fine.
    raw = doc.toJS({ maxAliasCount: 10_000 }) ?? {};
  } catch (err) {
    const why = firstLine(String((err as Error).message ?? err));
    const hint = "Use fewer aliases (*name) or smaller anchored values";
    issues.push(wholeFile(file, `YAML aliases expand too far: ${why}`, hint));
    return { issues, locate };
  }
  if (typeof raw !== "object" || Array.isArray(raw)) {
    const message = "The config must be a mapping of keys such as listen_addr and routes";
    issues.push(wholeFile(file, message));
    return { issues, locate };
  }
  const input = withoutNulls(raw) as Record<string, unknown>;
  for (const d of dropIgnoredSeedKeys(input.routes)) {
    issues.push({
      severity: "warning",
      file,
      ...locate(["routes", d.route, d.key]),
      path: dotted(["routes", d.route, d.key]),
      message: `${d.key} has no effect on a ${d.type} route (the Rust Prox ignored it too)`,
      hint: "Remove it",
    });
  }
  const result = Config.safeParse(input, { reportInput: true });
  if (result.success) return { config: result.data, issues, locate };

  for (const issue of result.error.issues) {
    issues.push(...toIssues(issue, raw, file, doc, pos));
  }
  sortIssues(issues);
  return { issues, locate };
}

/** An issue about the whole file (reported at its start). */
function wholeFile(file: string, message: string, hint?: string): ConfigIssue {
  return { severity: "error", file, line: 1, col: 1, path: "", message, hint };
}

/**
 * The document without mapping entries whose value is null (`tls:` with its children commented
 * out, `status_code: ~`): an empty key means absent, as in the seed, whose optional fields
 * deserialized null as None. Lists are kept as they are.
 */
function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    // A JSON body is data, not config: its nulls are values to send.
    if (v !== null) out[k] = k === "set_json" ? v : withoutNulls(v);
  }
  return out;
}

/** Sorts issues by position, then path, so output is deterministic and in file order. */
export function sortIssues(issues: ConfigIssue[]): void {
  issues.sort((a, b) => a.line - b.line || a.col - b.col || a.path.localeCompare(b.path));
}

function toIssues(
  issue: z.core.$ZodIssue,
  raw: unknown,
  file: string,
  doc: Document,
  pos: (offset: number) => { line: number; col: number },
): ConfigIssue[] {
  const path = issue.path as (string | number)[];
  const base = { severity: "error" as const, file };
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) => {
      const keyPath = [...path, key];
      const known = knownKeysAt(raw, path);
      const guess = suggest(key, known);
      return {
        ...base,
        ...pos(keyOffsetOf(doc, keyPath)),
        path: dotted(keyPath),
        message: `Unknown key "${key}"`,
        hint: guess
          ? `Did you mean "${guess}"?`
          : known.length
          ? `Allowed keys here: ${known.join(", ")}`
          : undefined,
      };
    });
  }
  const missing = issue.code === "invalid_type" && issue.input === undefined;
  const at = missing ? pos(offsetOf(doc, path.slice(0, -1))) : pos(keyOffsetOf(doc, path));
  return [{
    ...base,
    ...at,
    path: dotted(path),
    message: missing ? `Missing required key "${String(path.at(-1))}"` : describe(issue),
    hint: hintFor(issue, path, raw),
  }];
}

function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_value":
      return `Invalid value: expected one of ${
        issue.values.map((v) => JSON.stringify(v)).join(", ")
      }`;
    case "invalid_union": {
      if ((issue as { note?: string }).note === "No matching discriminator") {
        return `Unknown route type: expected one of "proxy", "load_balance", "static", "redirect", "websocket"`;
      }
      // Report the most specific branch error when every branch failed.
      const branches = (issue as { errors?: z.core.$ZodIssue[][] }).errors ?? [];
      const best = branches.map((b) => b[0]).find((b) => b && b.code !== "invalid_type");
      return best ? describe(best) : "Invalid value";
    }
    case "invalid_type":
      return `Expected ${issue.expected}, got ${kindOf(issue.input)}`;
    case "too_small":
      if (!/^Too small/.test(issue.message)) return issue.message;
      return issue.origin === "array"
        ? `Needs at least ${issue.minimum} item(s)`
        : issue.origin === "string"
        ? "Cannot be empty"
        : issue.inclusive === false
        ? `Must be greater than ${issue.minimum}, got ${JSON.stringify(issue.input)}`
        : `Must be at least ${issue.minimum}, got ${JSON.stringify(issue.input)}`;
    case "too_big":
      return `Must be at most ${issue.maximum}, got ${JSON.stringify(issue.input)}`;
    default:
      return issue.message;
  }
}

function hintFor(
  issue: z.core.$ZodIssue,
  path: (string | number)[],
  raw: unknown,
): string | undefined {
  if (issue.code === "invalid_value" && typeof valueAt(raw, path) === "string") {
    const guess = suggest(String(valueAt(raw, path)), issue.values.map(String));
    if (guess) return `Did you mean "${guess}"?`;
  }
  if (issue.code === "invalid_union" && path.at(-1) === "type") {
    const guess = suggest(String(valueAt(raw, path)), [
      "proxy",
      "load_balance",
      "static",
      "redirect",
      "websocket",
    ]);
    if (guess) return `Did you mean "${guess}"?`;
  }
  return undefined;
}

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** `routes./api.target` style path. */
export function dotted(path: (string | number)[]): string {
  return path.map(String).join(".");
}

function valueAt(raw: unknown, path: (string | number)[]): unknown {
  let cur = raw;
  for (const k of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return cur;
}

function findPair(node: unknown, key: string | number): Pair | undefined {
  if (!isMap(node)) return undefined;
  return node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(key));
}

/** Offset of the key at `path` (or of the value, for list items), falling back to the parent. */
function keyOffsetOf(doc: Document, path: (string | number)[]): number {
  if (path.length === 0) return 0;
  const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
  const last = path.at(-1)!;
  const pair = findPair(parent, last);
  if (pair && isScalar(pair.key) && pair.key.range) return pair.key.range[0];
  if (isSeq(parent) && typeof last === "number") {
    const item = parent.items[last] as Node | undefined;
    if (item?.range) return item.range[0];
  }
  return offsetOf(doc, path.slice(0, -1));
}

/** Offset of the node at `path` (the key when it is a mapping entry). */
function offsetOf(doc: Document, path: (string | number)[]): number {
  for (let n = path.length; n > 0; n--) {
    const sub = path.slice(0, n);
    const parent = n === 1 ? doc.contents : doc.getIn(sub.slice(0, -1), true);
    const pair = findPair(parent, sub.at(-1)!);
    if (pair && isScalar(pair.key) && pair.key.range) return pair.key.range[0];
    const node = doc.getIn(sub, true) as Node | undefined;
    if (node && typeof node === "object" && "range" in node && node.range) return node.range[0];
  }
  return 0;
}

function firstLine(s: string): string {
  return s.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
}

function excerpt(text: string, line: number, col: number): string {
  const src = text.split("\n")[line - 1] ?? "";
  return `${String(line).padStart(4)} | ${src}\n     | ${" ".repeat(Math.max(0, col - 1))}^`;
}
