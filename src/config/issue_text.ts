// Zod issues told in YAML words for config.yaml's authors: what is wrong with a value ("Expected
// a mapping, got a list") and, when the value suggests it, how to fix it (quotes, a typo).

import type { z } from "zod";
import { parseDuration } from "./duration.ts";
import { suggest } from "./suggest.ts";

/** The route types, in the order messages list them. */
export const ROUTE_TYPES = [
  "proxy",
  "load_balance",
  "static",
  "redirect",
  "websocket",
  "respond",
];

/** Keys every route type has or most do: one of them in `routes` or at the top level is mis-indented. */
export const ROUTE_KEYS = new Set([
  "type",
  "target",
  "targets",
  "root",
  "strategy",
  "path_rewrite",
]);

/** The fix for a route's key written where a route or a top-level key belongs. */
export const MISINDENTED = "This is a key of a route: indent it under its route, below routes";

/** A route without `type` (zod reports it as no matching discriminator). */
export function isMissingType(
  issue: z.core.$ZodIssue,
  path: (string | number)[],
  raw: unknown,
): boolean {
  return issue.code === "invalid_union" && path.at(-1) === "type" &&
    (issue as { note?: string }).note === "No matching discriminator" &&
    valueAt(raw, path) === undefined;
}

/** What is wrong with a value, in YAML words (a mapping, a list), from a zod issue. */
export function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_value":
      return `Invalid value: expected one of ${
        issue.values.map((v) => JSON.stringify(v)).join(", ")
      }`;
    case "invalid_union": {
      if ((issue as { note?: string }).note === "No matching discriminator") {
        return `Unknown route type: expected one of ${ROUTE_TYPES.map((t) => `"${t}"`).join(", ")}`;
      }
      // Report the most specific branch error when every branch failed.
      const branches = (issue as { errors?: z.core.$ZodIssue[][] }).errors ?? [];
      const best = branches.map((b) => b[0]).find((b) => b && b.code !== "invalid_type");
      if (best) return describe(best);
      // Every branch wanted another type: name them all (a null list item said "Invalid value").
      const types = [
        ...new Set(
          branches.map((b) => b[0]).filter((b) => b?.code === "invalid_type").map((b) =>
            TYPE_NAMES[(b as { expected: string }).expected] ?? (b as { expected: string }).expected
          ),
        ),
      ];
      return types.length
        ? `Expected ${types.join(" or ")}, got ${kindOf((issue as { input?: unknown }).input)}`
        : "Invalid value";
    }
    case "invalid_type":
      if (issue.message && !issue.message.startsWith("Invalid input")) return issue.message;
      return `Expected ${TYPE_NAMES[issue.expected] ?? issue.expected}, got ${kindOf(issue.input)}`;
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

/** YAML words for zod's type names. */
const TYPE_NAMES: Record<string, string> = {
  object: "a mapping",
  record: "a mapping",
  array: "a list",
  string: "a string",
  number: "a number",
  int: "a whole number",
  boolean: "true or false",
};

/** How to fix a zod issue, when the value itself suggests it (quotes, yes/no, a typo). */
export function hintFor(
  issue: z.core.$ZodIssue,
  path: (string | number)[],
  raw: unknown,
): string | undefined {
  const value = valueAt(raw, path);
  // Pasted from a word processor or a web page: “http://a” is no quoted string to YAML.
  if (typeof value === "string" && /[\u2018\u2019\u201c\u201d]/.test(value)) {
    return "Replace the typographic quotes (“ ” ‘ ’) with straight ones (\" or ')";
  }
  if (path.length === 2 && path[0] === "routes" && ROUTE_KEYS.has(String(path[1]))) {
    return MISINDENTED;
  }
  if (issue.code === "invalid_value" && typeof value === "string") {
    if (issue.values.some((v) => String(v) === value)) return `Remove the quotes: ${value}`;
    const guess = suggest(value, issue.values.map(String));
    // `status_code: 301s`: the number itself, unquoted ("301" is refused as a string).
    const number = issue.values.some((v) => typeof v === "number" && String(v) === guess);
    if (guess) return number ? `Did you mean ${guess}?` : `Did you mean "${guess}"?`;
  }
  // `listen_addr: 3000` as nginx's `listen 3000;`: Prox binds the address it is given.
  if (
    issue.code === "invalid_type" && issue.expected === "string" &&
    /listen_addr$/.test(String(path.at(-1))) && Number.isInteger(value) &&
    (value as number) >= 0 && (value as number) <= 65535
  ) {
    return `Name the address too, in quotes: "0.0.0.0:${value}" (every IPv4 address), ` +
      `"[::]:${value}" (every address) or "127.0.0.1:${value}" (this machine only)`;
  }
  // `timeout_secs: 2s`: the key's name already says the unit.
  if (
    issue.code === "invalid_type" && (issue.expected === "number" || issue.expected === "int") &&
    typeof value === "string" && String(path.at(-1)).endsWith("_secs")
  ) {
    const ms = parseDuration(value);
    if (typeof ms === "number") {
      return ms % 1000 === 0
        ? `Write the number of seconds alone: ${ms / 1000}`
        : "Write a whole number of seconds, e.g. 1";
    }
  }
  // `routes:` as a list of `- path: /api` items (as Traefik and Kubernetes Ingress write them).
  if (
    issue.code === "invalid_type" && Array.isArray(value) && path.length === 1 &&
    path[0] === "routes"
  ) {
    const first = value[0] as Record<string, unknown> | null | undefined;
    const key = typeof first?.path === "string" ? first.path : "/api";
    const type = typeof first?.type === "string" ? first.type : "proxy";
    return `Key each route by its path instead of a list item: "${key}": { type: ${type}, ` +
      `target: … } (README "Routes")`;
  }
  if (issue.code === "invalid_type" && typeof value === "string") {
    const numeric = (issue.expected === "number" || issue.expected === "int") &&
      value.trim() !== "" && Number.isFinite(Number(value));
    if (numeric || (issue.expected === "boolean" && /^(true|false)$/i.test(value))) {
      return `Remove the quotes: ${value.trim().toLowerCase()}`;
    }
    if (issue.expected === "array") return `Write a list: [${value}]`;
    if (issue.expected === "boolean" && /^(yes|no|on|off|y|n)$/i.test(value)) {
      return "Write true or false (YAML 1.2 reads yes/no/on/off as strings)";
    }
    // `workers: two`: a number in words.
    const word = NUMBER_WORDS.indexOf(value.trim().toLowerCase());
    if ((issue.expected === "number" || issue.expected === "int") && word >= 0) {
      return `Write it in digits: ${word}`;
    }
  }
  // `hosts: { a: b }` where a list belongs: the mapping's keys and values as its items.
  if (
    issue.code === "invalid_type" && issue.expected === "array" && value !== null &&
    typeof value === "object" && !Array.isArray(value)
  ) {
    // `hosts: { a.example, b.example }` is a mapping of keys without values: they were the items.
    const entries = Object.entries(value as Record<string, unknown>);
    const keysOnly = entries.length > 0 && entries.every(([, v]) => v === null);
    return keysOnly
      ? `Write a list, in square brackets: [${entries.slice(0, 3).map(([k]) => k).join(", ")}]`
      : `Write a list: ${String(path.at(-1))}: [first, second], or one item per line starting ` +
        `with "- "`;
  }
  // `compress: yes` where true, false or a mapping is taken (a union of them).
  if (
    issue.code === "invalid_union" && typeof value === "string" &&
    /^(yes|no|on|off|y|n)$/i.test(value) && unionExpects(issue, "boolean")
  ) {
    return "Write true or false (YAML 1.2 reads yes/no/on/off as strings)";
  }
  // `- X-A: a` items where a mapping belongs (request_headers, error_pages…).
  if (
    issue.code === "invalid_type" && (issue.expected === "record" || issue.expected === "object") &&
    Array.isArray(value) && value.length > 0 &&
    value.every((v) =>
      v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 1
    )
  ) {
    const [k, v] = Object.entries(value[0] as Record<string, unknown>)[0] ?? [];
    if (k !== undefined && (v === null || typeof v !== "object")) {
      return `Remove the "- " before each entry: a mapping is written ${k}: ${
        v ?? ""
      }, one per line`;
    }
  }
  if (value === null && typeof path.at(-1) === "number") {
    return "An empty list item: remove its - line or give it a value";
  }
  // HAProxy and Traefik read weight 0 as "no new traffic" (draining).
  if (
    issue.code === "too_small" && value === 0 && path.at(-1) === "weight" &&
    path.at(-3) === "targets"
  ) {
    return "To take a target out of rotation, remove it (a reload lets its requests in flight " +
      "finish) or mark it backup: true to keep it as a standby";
  }
  if (issue.code === "invalid_union" && path.at(-1) === "type") {
    const guess = suggest(String(value), ROUTE_TYPES);
    if (guess) return `Did you mean "${guess}"?`;
  }
  return undefined;
}

/** Numbers people write in words where a count belongs (`workers: two`). */
const NUMBER_WORDS = [
  "zero",
  "one",
  "two",
  "three",
  "four",
  "five",
  "six",
  "seven",
  "eight",
  "nine",
  "ten",
  "eleven",
  "twelve",
];

/** Whether one branch of a union wanted a value of zod type `type` (boolean, string…). */
function unionExpects(issue: z.core.$ZodIssue, type: string): boolean {
  const branches = (issue as { errors?: z.core.$ZodIssue[][] }).errors ?? [];
  return branches.some((b) =>
    b[0]?.code === "invalid_type" && (b[0] as { expected: string }).expected === type
  );
}

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  if (typeof v === "number") {
    // As YAML writes them (.nan, .inf): "got number NaN" for an expected number puzzled.
    if (Number.isNaN(v)) return ".nan";
    return Number.isFinite(v) ? `number ${v}` : v > 0 ? ".inf" : "-.inf";
  }
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** The raw value at a key path. */
export function valueAt(raw: unknown, path: (string | number)[]): unknown {
  let cur = raw;
  for (const k of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return cur;
}

/** Rules whose values are templates: `${X}` there is reported by the rule compiler. */
const TEMPLATED = new Set(["request_headers", "response_headers", "request_body", "response_body"]);

/**
 * Strings holding `${NAME}` (as Compose files and shells expand): Prox does not, so
 * `target: ${BACKEND}` would be used as written. Rule values are left to the rule compiler.
 */
export function shellVariables(
  value: unknown,
  path: (string | number)[] = [],
): { path: (string | number)[]; name: string; env?: boolean }[] {
  if (typeof value === "string") {
    const m = /\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}/.exec(value);
    if (m) return [{ path, name: m[1] }];
    // Prox's own `{env.NAME}` outside the rules and pages that take it (`target`) is text too.
    const e = /\{env\.([A-Za-z_][A-Za-z0-9_]*)\}/.exec(value);
    return e ? [{ path, name: e[1], env: true }] : [];
  }
  if (value === null || typeof value !== "object") return [];
  return Object.entries(value).flatMap(([k, v]) =>
    TEMPLATED.has(k) ? [] : shellVariables(v, [...path, Array.isArray(value) ? Number(k) : k])
  );
}
