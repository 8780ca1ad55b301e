// Config text → resolved Config, or every problem at once with file:line:col. Pure: takes the
// text and a file name for messages, never reads files.

import { maskSecretsInLine } from "./secret_names.ts";
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit } from "yaml";
import type { Document, Pair } from "yaml";
import type { z } from "zod";
import { Config } from "./schema.ts";
import type { Config as ConfigType } from "./schema.ts";
import { isRecordAt, knownKeysAt, routeTypesWithKey, suggest } from "./suggest.ts";
import {
  describe,
  hintFor,
  isMissingType,
  MISINDENTED,
  ROUTE_KEYS,
  ROUTE_TYPES,
  shellVariables,
  valueAt,
} from "./issue_text.ts";
import { dropIgnoredSeedKeys } from "./seed_keys.ts";
import { hasPath, nodeAt, offsetOf, pairAt, resolveAliasesOnce } from "./yaml_locate.ts";
import { syntaxProblems } from "./yaml_syntax.ts";

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
  /** Whether the source holds the key path (else its value is a default). */
  written?: (path: (string | number)[]) => boolean;
}

/** Parses YAML text into a validated Config. */
export function parseConfig(text: string, file = "config.yaml"): ParseResult {
  try {
    return parseConfigText(text, file);
  } catch (err) {
    // `- - - …` thousands deep: the parser (or a walk of what it read) ran out of stack.
    if (!(err instanceof RangeError) || !/call stack/.test(err.message)) throw err;
    const at = deepestLine(text.replace(/\r(?!\n)/g, "\n"));
    return {
      issues: [{
        severity: "error",
        file,
        ...at,
        path: "",
        message: "YAML syntax error: The value nests too deeply (lists or mappings inside each " +
          "other thousands of times)",
        hint: "Write it with a few levels of nesting",
      }],
      locate: () => ({ line: 1, col: 1 }),
    };
  }
}

/** What YAML does not allow in a file (1.2 §5.1, c-printable; libyaml refused them too). */
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]/g;

/**
 * The raw control characters in the text, one issue per line: a BEL in a route key made a route
 * no request can reach, a NUL went out in a body, and UTF-16 without a byte-order mark (a NUL
 * after each character) read as a config that is no mapping.
 */
function controlCharacters(
  text: string,
  file: string,
  pos: (offset: number) => Pos,
): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const utf16 = (text.match(/\0/g)?.length ?? 0) * 4 >= text.length;
  let line = 0;
  for (const m of text.matchAll(CONTROL)) {
    const at = pos(m.index);
    if (at.line === line) continue;
    line = at.line;
    const code = m[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0");
    out.push({
      severity: "error",
      file,
      ...at,
      path: "",
      message: `The config holds a control character (U+${code}), which YAML does not allow in ` +
        "a file",
      hint: utf16
        ? "The file looks like UTF-16 (Notepad's \"Unicode\", PowerShell's > and Out-File): " +
          "save it as UTF-8"
        : 'Remove it; inside a double-quoted value write it as an escape ("\\0", "\\x07")',
    });
    if (utf16 || out.length >= 20) break;
  }
  return out;
}

/** The line that opens the most lists or mappings (`- - - …`), and where its first one starts. */
function deepestLine(text: string): { line: number; col: number } {
  let best = { line: 1, col: 1, depth: -1 };
  text.split(/\r?\n/).forEach((l, i) => {
    const lead = /^[ \t]*/.exec(l)![0].length;
    const depth = /^(?:[-?:][ \t]+|[[{][ \t]*)*/.exec(l.slice(lead))![0].length;
    if (depth > best.depth) best = { line: i + 1, col: lead + 1, depth };
  });
  return { line: best.line, col: best.col };
}

function parseConfigText(text: string, file: string): ParseResult {
  // A CR alone ends a line (YAML 1.2 §5.4, and libyaml, which the Rust Prox used); the parser
  // reads only LF and CRLF. Same length, so offsets stay those of the file.
  text = text.replace(/\r(?!\n)/g, "\n");
  const lc = new LineCounter();
  // Merge keys (`<<: *defaults`) as most YAML tools read them, though YAML 1.2 dropped them.
  const doc = parseDocument(text, {
    lineCounter: lc,
    prettyErrors: false,
    // Duplicate keys are found by syntaxProblems, with a Set: the library's own check compares
    // each key with every earlier one, which took 14 s for a mapping of 40,000 keys.
    uniqueKeys: false,
    merge: true,
    // Its notes go to the console otherwise; what matters is reported as issues.
    logLevel: "error",
  });
  resolveAliasesOnce(doc);
  const pos = (offset: number) => {
    const p = lc.linePos(offset);
    return { line: p.line, col: p.col };
  };
  const locate = (path: (string | number)[]) => pos(offsetOf(doc, path));
  const issues: ConfigIssue[] = [];

  // Copied from a web page or a word processor: a non-breaking space in the indentation is no
  // space to YAML, so the line became a key of its own (`Unknown key "  "/""`) or a syntax error.
  for (const m of text.matchAll(/^[ \t]*\u00a0/gm)) {
    const at = pos(m.index + m[0].length - 1);
    issues.push({
      severity: "error",
      file,
      ...at,
      path: "",
      message: "The line is indented with a non-breaking space (U+00A0), which YAML does not " +
        "read as a space",
      hint: "Replace the non-breaking spaces with ordinary ones (they come with text copied " +
        "from a web page or a word processor)",
      excerpt: excerpt(text, at.line, at.col),
    });
  }
  issues.push(...controlCharacters(text, file, pos));
  if (issues.length > 0) return { issues, locate };
  for (const p of syntaxProblems(doc, text, lc)) {
    const at = pos(p.offset);
    issues.push({
      severity: "error",
      file,
      ...at,
      path: "",
      message: p.message,
      hint: p.hint,
      excerpt: excerpt(text, at.line, at.col),
    });
  }
  if (issues.length > 0) return { issues, locate };

  keepExactJsonIntegers(doc, text);
  scalarsAsWritten(doc, text);
  let raw: unknown;
  try {
    // A few aliases of one large value (a list of 100,000 items) pass the alias count below,
    // and the copies made of them afterwards ran out of memory: what aliases add is bounded.
    const added = aliasedValues(doc);
    if (added > MAX_ALIASED_VALUES) {
      throw new Error(
        `they repeat ${added} values, over the ${MAX_ALIASED_VALUES} an alias may add`,
      );
    }
    // The limit guards against alias bombs; one anchor reused by a few hundred routes is fine.
    raw = doc.toJS({ maxAliasCount: 10_000 });
  } catch (err) {
    if (err instanceof RangeError && /call stack/.test(err.message)) throw err;
    const why = firstLine(String((err as Error).message ?? err));
    const hint = "Use fewer aliases (*name) or smaller anchored values";
    issues.push(wholeFile(file, `YAML aliases expand too far: ${why}`, hint));
    return { issues, locate };
  }
  if (raw === null || raw === undefined) {
    const hint = 'It needs at least listen_addr and routes, e.g. listen_addr: "127.0.0.1:3000"';
    issues.push(wholeFile(file, "The config is empty", hint));
    return { issues, locate };
  }
  if (typeof raw !== "object" || Array.isArray(raw)) {
    const message = "The config must be a mapping of keys such as listen_addr and routes";
    const first = Array.isArray(raw) ? raw[0] : undefined;
    const key = first && typeof first === "object" && !Array.isArray(first)
      ? Object.keys(first)[0]
      : undefined;
    const hint = key !== undefined
      ? `Remove the "- " before ${key}: the top-level keys are written at the start of their ` +
        "lines, without a list dash"
      : 'Check that --config names the config file; it starts with keys, e.g. listen_addr: "127.0.0.1:3000"';
    issues.push(wholeFile(file, message, hint));
    return { issues, locate };
  }
  // A route key with nothing under it is a mistake (the Rust Prox refused it too), not "absent".
  const rawRoutes = (raw as Record<string, unknown>).routes;
  if (rawRoutes && typeof rawRoutes === "object" && !Array.isArray(rawRoutes)) {
    for (const [key, value] of Object.entries(rawRoutes)) {
      if (value !== null) continue;
      issues.push({
        severity: "error",
        file,
        ...locate(["routes", key]),
        path: dotted(["routes", key]),
        message: `Route "${key}" is empty`,
        hint: "Give it a type and its keys (e.g. type: proxy, target: http://127.0.0.1:8080), " +
          "or remove it; check the indentation of the lines below it",
      });
    }
  }
  const emptied: (string | number)[][] = [];
  const input = withoutNulls(raw, [], emptied) as Record<string, unknown>;
  // Top-level `x-…` keys hold shared settings for aliases (as in Compose files); Prox ignores them.
  for (const key of Object.keys(input)) if (key.startsWith("x-")) delete input[key];
  issues.push(...emptyEntries(emptied, { raw, file, doc, pos }));
  for (const { path, name, env } of shellVariables(input)) {
    const generate = "Put the value in the file, or generate it (prox serve -c <(envsubst < " +
      "config.tpl.yaml))";
    issues.push({
      severity: "warning",
      file,
      ...locate(path),
      path: dotted(path),
      message: env
        ? `{env.${name}} is not expanded here: only header rule values, bodies and error pages ` +
          "take {env.NAME}"
        : `\${${name}} is not expanded: Prox reads the config as written`,
      hint: env ? generate : `${generate}; header values and bodies take {env.NAME}`,
    });
  }
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
  // jitless: zod's fast path compiles a parser per object schema (new Function) on first use,
  // which cost about 15 ms of every start-up for a config parsed once or twice.
  let result = Config.safeParse(input, { reportInput: true, jitless: true });
  if (!result.success && plainScalarsAsText(result.error.issues, input, doc, text)) {
    result = Config.safeParse(input, { reportInput: true, jitless: true });
  }
  if (result.success && !issues.some((i) => i.severity === "error")) {
    // Only a key of the schema can be absent and defaulted (not a route key or a header name).
    const written = (path: (string | number)[]) =>
      hasPath(doc, path) || !knownKeysAt(raw, path.slice(0, -1)).includes(String(path.at(-1)));
    return { config: result.data, issues, locate, written };
  }
  const zodIssues = result.error?.issues ?? [];
  // A misspelt required key is one mistake: "Unknown key, did you mean" says it all.
  const typos = new Set<string>();
  for (const issue of zodIssues) {
    if (issue.code !== "unrecognized_keys") continue;
    const path = issue.path as (string | number)[];
    const known = knownKeysAt(raw, path);
    for (const key of issue.keys) typos.add(dotted([...path, suggest(key, known) ?? ""]));
  }
  for (const issue of zodIssues) {
    const path = issue.path as (string | number)[];
    const missing = issue.code === "invalid_type" && issue.input === undefined;
    if (missing && typos.has(dotted(path))) continue;
    issues.push(...toIssues(issue, raw, file, doc, pos));
  }
  sortIssues(issues);
  return { issues, locate };
}

/** The most values (scalars, lists, mappings) aliases may repeat in a config, all together. */
const MAX_ALIASED_VALUES = 1_000_000;

/**
 * How many values the aliases (`*name`, merge keys too) repeat: the values of the document once
 * every alias is replaced by what it names, less those written. Linear in the text: the size of
 * each anchored value is counted once.
 */
function aliasedValues(doc: Document): number {
  const sizes = new Map<unknown, number>();
  let written = 0;
  const size = (node: unknown): number => {
    if (isAlias(node)) {
      written++;
      const target = node.resolve(doc);
      return target === undefined ? 1 : size(target);
    }
    const known = sizes.get(node);
    if (known !== undefined) return known;
    let n = 1;
    written++;
    if (isMap(node)) { for (const p of node.items) n += size(p.key) + size(p.value); }
    else if (isSeq(node)) { for (const item of node.items) n += size(item); }
    sizes.set(node, n);
    return n;
  };
  return size(doc.contents) - written;
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
function withoutNulls(
  value: unknown,
  path: (string | number)[],
  emptied: (string | number)[][],
): unknown {
  if (Array.isArray(value)) return value.map((v, i) => withoutNulls(v, [...path, i], emptied));
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    // A JSON body is data, not config: its nulls are values to send.
    if (v === null) emptied.push([...path, k]);
    else out[k] = k === "set_json" ? v : withoutNulls(v, [...path, k], emptied);
  }
  return out;
}

/**
 * The mapping entries left empty that are no absent setting: a misspelt key (`helth_check:` with
 * its lines commented out loaded without a word) is unknown as it is with a value, and a name in
 * a mapping of names (`X-Debug:` under `set`) is ignored, which is said.
 */
function emptyEntries(
  emptied: (string | number)[][],
  o: { raw: unknown; file: string; doc: Document; pos: (offset: number) => Pos },
): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const path of emptied) {
    const key = String(path.at(-1));
    const parent = path.slice(0, -1);
    // Shared settings (x-…) and empty routes (said above) are not these.
    if (parent.length === 0 && key.startsWith("x-")) continue;
    if (parent.length === 1 && parent[0] === "routes") continue;
    if (isRecordAt(o.raw, parent)) {
      out.push({
        severity: "warning",
        file: o.file,
        ...o.pos(offsetOf(o.doc, path)),
        path: dotted(path),
        message: `${key} has no value, so the entry is ignored`,
        hint: path.some((k) => k === "request_headers" || k === "response_headers")
          ? `Give it a value (${key}: "" for an empty one) or remove it`
          : "Give it a value or remove it",
      });
      continue;
    }
    const known = knownKeysAt(o.raw, parent);
    if (known.length === 0 || known.includes(key)) continue;
    // A key of another route type, left empty, stays absent (as such keys of the seed are).
    const onRoute = parent.length === 2 && parent[0] === "routes";
    if (onRoute && routeTypesWithKey(key).length > 0) continue;
    const issue = { code: "unrecognized_keys", keys: [key], path: parent, message: "" };
    out.push(...toIssues(issue as z.core.$ZodIssue, o.raw, o.file, o.doc, o.pos));
  }
  return out;
}

type Pos = { line: number; col: number };

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
  const branch = unionBranchIssue(issue);
  if (branch) {
    // Said where it is: `compress: { algorithms: [lzma] }` at the item, not at `compress`.
    return toIssues({ ...branch, path: [...path, ...branch.path] }, raw, file, doc, pos);
  }
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) => {
      const keyPath = [...path, key];
      const known = knownKeysAt(raw, path);
      // `headers:` for request_headers and response_headers: both named, neither chosen.
      const suffixed = known.filter((k) => k.endsWith(`_${key.toLowerCase()}`));
      const guess = suggest(key, known);
      const elsewhere = path.length === 2 && path[0] === "routes" ? routeTypesWithKey(key) : [];
      // `rate_limit:` at the top level, as Caddy and Traefik have global ones: Prox's is per route.
      const routeOnly = path.length === 0 && !ROUTE_KEYS.has(key) &&
        routeTypesWithKey(key).length > 0;
      return {
        ...base,
        ...pos(offsetOf(doc, keyPath)),
        path: dotted(keyPath),
        message: elsewhere.length
          ? `Unknown key "${key}" on a ${routeType(raw, path)} route: it is a key of ` +
            `${listed(elsewhere)} routes`
          : `Unknown key "${key}"`,
        hint: elsewhere.length
          ? (guess ? `Did you mean "${guess}"? Else remove it` : "Remove it")
          : routeOnly
          ? `${key} is a key of a route, not of the top level: put it under each route that needs it`
          : path.length === 2 && path[0] === "routes" && ROUTE_TYPES.includes(key)
          ? `A route's kind goes in type: write type: ${key}, with its keys beside type (not ` +
            `under ${key}:)`
          : guess
          ? `Did you mean "${guess}"?`
          : suffixed.length > 1 && suffixed.length <= 3
          ? `Did you mean ${suffixed.map((k) => `"${k}"`).join(" or ")}?`
          : path.length === 0 && anchored(pairAt(doc, keyPath))
          ? "Shared settings for aliases go under a top-level key starting with x- " +
            `(e.g. x-${key}), which Prox ignores`
          : path.length === 0 && ROUTE_KEYS.has(key)
          ? MISINDENTED
          : known.length
          ? `Allowed keys here: ${known.join(", ")}`
          : undefined,
      };
    });
  }
  // A missing enum key (`rate_limit` without `by`) is as missing as any other.
  if (
    (issue.code === "invalid_type" || issue.code === "invalid_value") && issue.input === undefined
  ) {
    const key = String(path.at(-1));
    // Written but empty (`routes:` with nothing under it) is absent, yet said where it is.
    const empty = pairAt(doc, path) !== undefined;
    return [{
      ...base,
      ...pos(offsetOf(doc, empty ? path : path.slice(0, -1))),
      path: dotted(path),
      message: empty ? `Key "${key}" is empty` : `Missing required key "${key}"`,
      hint: empty
        ? "Give it a value (an empty key counts as absent)"
        : issue.code === "invalid_value"
        ? `Add ${key}: one of ${issue.values.map(String).join(", ")}`
        : missingHint(path, raw),
    }];
  }
  if (isMissingType(issue, path, raw)) {
    // `tpye: proxy`: no type, and the other keys are not checked until there is one.
    const route = valueAt(raw, path.slice(0, -1));
    const typo = route && typeof route === "object"
      ? Object.keys(route).find((k) => suggest(k, ["type"]) === "type")
      : undefined;
    if (typo !== undefined) {
      const at = [...path.slice(0, -1), typo];
      return [{
        ...base,
        ...pos(offsetOf(doc, at)),
        path: dotted(at),
        message: `Unknown key "${typo}"`,
        hint: 'Did you mean "type"?',
      }];
    }
    return [{
      ...base,
      ...pos(offsetOf(doc, path.slice(0, -1))),
      path: dotted(path),
      message: 'Missing required key "type"',
      hint: `Add type: ${ROUTE_TYPES.join(", ")}`,
    }];
  }
  return [{
    ...base,
    ...pos(offsetOf(doc, path)),
    path: dotted(path),
    message: describe(issue),
    hint: hintFor(issue, path, raw),
  }];
}

/** What to write for a required key a new config most often lacks. */
function missingHint(path: (string | number)[], raw: unknown): string | undefined {
  const key = path.join(".");
  if (key === "listen_addr") {
    return 'Add listen_addr: "127.0.0.1:3000" (IP:PORT; "0.0.0.0:3000" listens on every IPv4 address)';
  }
  if (key === "routes") {
    return 'Add routes: with one route per path, e.g. "/": { type: proxy, target: "http://127.0.0.1:8080" }';
  }
  if (path.length !== 3 || path[0] !== "routes") return undefined;
  const type = (valueAt(raw, path.slice(0, -1)) as { type?: unknown } | undefined)?.type;
  if (path[2] === "root" && type === "static") {
    return "Add root: the directory to serve, e.g. ./public";
  }
  if (path[2] !== "target") return undefined;
  if (type === "redirect") {
    return "Add target: where to send the client, e.g. https://example.com/new or /new";
  }
  if (type === "proxy") return "Add target: the upstream's URL, e.g. http://127.0.0.1:8080";
  if (type === "websocket") return "Add target: the upstream's URL, e.g. ws://127.0.0.1:8080";
  return undefined;
}

/**
 * The issue of the union branch the value was meant for (the one that failed for another reason
 * than its type), when that issue lies deeper than the union itself; otherwise undefined.
 */
function unionBranchIssue(issue: z.core.$ZodIssue): z.core.$ZodIssue | undefined {
  if (issue.code !== "invalid_union") return undefined;
  const branches = (issue as { errors?: z.core.$ZodIssue[][] }).errors ?? [];
  const best = branches.map((b) => b[0]).find((b) => b && b.code !== "invalid_type");
  return best && best.path.length > 0 ? best : undefined;
}

/** Whether a mapping entry's value carries an anchor (`defaults: &d …`). */
function anchored(pair: Pair | undefined): boolean {
  const v = pair?.value as { anchor?: string } | null | undefined;
  return typeof v?.anchor === "string";
}

/** `routes./api.target` style path. */
export function dotted(path: (string | number)[]): string {
  return path.map(String).join(".");
}

function firstLine(s: string): string {
  return s.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
}

/** Shown around the caret of a long line (a one-line JSON config) instead of all of it. */
const EXCERPT_WIDTH = 100;

function excerpt(text: string, line: number, col: number): string {
  // Tabs as one space each, so the caret stays under its column; no CR of a CRLF file.
  // Secrets on the line are masked: the issue goes to logs and to the admin API's reload answer.
  let src = maskSecretsInLine((text.split(/\r?\n/)[line - 1] ?? "").replaceAll("\t", " "));
  let at = Math.max(0, col - 1);
  if (src.length > EXCERPT_WIDTH) {
    const start = Math.max(0, Math.min(at - 40, src.length - EXCERPT_WIDTH));
    const end = start + EXCERPT_WIDTH;
    src = `${start > 0 ? "…" : ""}${src.slice(start, end)}${end < src.length ? "…" : ""}`;
    at = at - start + (start > 0 ? 1 : 0);
  }
  const gutter = String(line).padStart(4);
  return `${gutter} | ${src}\n${" ".repeat(gutter.length)} | ${" ".repeat(at)}^`;
}

// An integer under set_json beyond 2^53 (an id such as 12345678901234567890) is sent exactly as
// written, as the Rust Prox did: a JavaScript number would round it to 12345678901234567000.
// JSON.rawJSON (V8, ES2025 source text access), not yet in TypeScript's lib.
interface RawJson {
  rawJSON(text: string): unknown;
}

function keepExactJsonIntegers(doc: Document, text: string): void {
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== "number" || !node.range) return;
      const src = text.slice(node.range[0], node.range[1]);
      // `zip: 01234`: digits after a leading zero are text in YAML 1.2, as serde_yaml read them.
      const zeroLed = node.type === "PLAIN" && /^[-+]?0[0-9]+$/.test(src);
      if (!zeroLed && (Number.isSafeInteger(node.value) || !/^[-+]?[0-9]+$/.test(src))) return;
      const under = path.some((p) => isPair(p) && isScalar(p.key) && p.key.value === "set_json");
      if (!under) return;
      node.value = zeroLed ? src : (JSON as unknown as RawJson).rawJSON(BigInt(src).toString());
    },
  });
}

const HEADER_RULES = new Set(["request_headers", "response_headers"]);
const HEADER_LISTS = new Set(["add", "set", "append"]);
const BODY_RULES = new Set(["request_body", "response_body"]);

// A header rule's value or a body rule's text written as a number or boolean (X-Api-Version: 2,
// set_text: 1.50) is that text, as the Rust Prox's serde_yaml read it into a string: it was a
// validation error ("Expected a string, got number").
function scalarsAsWritten(doc: Document, text: string): void {
  visit(doc, {
    Scalar(key, node, path) {
      const v = node.value;
      if (key !== "value" || (typeof v !== "number" && typeof v !== "boolean") || !node.range) {
        return;
      }
      const keys = path.filter(isPair).map((p) => isScalar(p.key) ? p.key.value : undefined);
      const [a, b, c] = [keys.at(-1), keys.at(-2), keys.at(-3)];
      const header = HEADER_LISTS.has(b as string) && HEADER_RULES.has(c as string);
      const body = (a === "set_text" || a === "content_type") && BODY_RULES.has(b as string);
      if (header || body) node.value = text.slice(node.range[0], node.range[1]);
    },
  });
}

/**
 * A plain number or boolean where the schema takes text (`message: 429`, `value_matches: true`,
 * `storage_path: 2024`) is that text, as the Rust Prox's serde_yaml read any plain scalar into a
 * string field: such configs loaded there and must load here. Sets each in `input` to its text as
 * written; true when any was. (`listen_addr: 3000` is left to its own, better message.)
 */
function plainScalarsAsText(
  issues: z.core.$ZodIssue[],
  input: Record<string, unknown>,
  doc: Document,
  text: string,
): boolean {
  let changed = false;
  for (const issue of issues) {
    const value = issue.input;
    if (issue.code !== "invalid_type" || issue.expected !== "string") continue;
    if (typeof value !== "number" && typeof value !== "boolean") continue;
    const path = issue.path as (string | number)[];
    if (path.length === 0 || /listen_addr$/.test(String(path.at(-1)))) continue;
    const node = nodeAt(doc, path);
    if (!isScalar(node) || node.type !== "PLAIN" || !node.range) continue;
    let parent: unknown = input;
    for (const key of path.slice(0, -1)) parent = (parent as Record<string, unknown>)?.[key];
    if (!parent || typeof parent !== "object") continue;
    (parent as Record<string | number, unknown>)[path.at(-1)!] = text.slice(
      node.range[0],
      node.range[1],
    );
    changed = true;
  }
  return changed;
}

/** The `type` of the route at `path` in the raw config, for messages. */
function routeType(raw: unknown, path: (string | number)[]): string {
  let v: unknown = raw;
  for (const k of path) {
    v = v && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined;
  }
  const t = v && typeof v === "object" ? (v as Record<string, unknown>).type : undefined;
  return typeof t === "string" ? t : "this";
}

/** "a", "a and b", "a, b and c". */
function listed(items: string[]): string {
  return items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}
