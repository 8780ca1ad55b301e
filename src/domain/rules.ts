// Header and body rules compiled once per config: templates, conditions and header names checked,
// every problem returned with its key path so `prox validate` can locate it.

import {
  BACKTRACK_HINT,
  backtrackRisk,
  compileCondition,
  compileRegex,
  encodedPathProblem,
  parseStatusSelector,
} from "./conditions.ts";
import type { ConditionSpec, Predicate } from "./conditions.ts";
import { compileTemplate, REQUEST_PLACEHOLDERS, RESPONSE_PLACEHOLDERS } from "./placeholders.ts";
import type { Template } from "./placeholders.ts";
import { suggest } from "./suggest.ts";
import { parseCidr } from "./ip.ts";
import { CLIENT_ADDRESS_FIELDS } from "./headers.ts";
import { escapeFor } from "./escape.ts";
import { typeMatcher } from "./compress.ts";
import type { PageEscape } from "./escape.ts";

/** The longest `find` of a `replace` rule (bytes of UTF-8). */
const MAX_FIND_BYTES = 1024;

/** RFC 9110 §5.1 field-name token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Fields that frame a message (RFC 9112 §6): Prox writes them for each hop. Set by a rule they
 * would contradict the bytes sent (an upstream reading a Content-Length body as chunked takes the
 * next request as part of this one) or break HTTP/2, which forbids them.
 */
const FRAMING_FIELDS = new Set(["content-length", "transfer-encoding"]);

/**
 * Fields that manage one hop's connection (RFC 9110 §7.6.1), which Prox also writes itself. A
 * rule setting one is ignored with a warning rather than refused: the Rust Prox sent them as given
 * (`Connection: keep-alive` upstream did nothing harmful), so its configs keep loading.
 */
const CONNECTION_FIELDS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
]);

/** Header rules as configured (mirrors config/schema.ts). */
export interface HeaderRulesSpec {
  add?: Record<string, string>;
  set?: Record<string, string>;
  append?: Record<string, string>;
  remove?: string[];
  condition?: ConditionSpec;
}

/** Body rules as configured. */
export interface BodyRulesSpec {
  set_text?: string;
  set_json?: unknown;
  content_type?: string;
  replace?: { find: string; replace: string }[];
  once?: boolean;
  types?: string[];
  condition?: ConditionSpec;
}

/** Media types a `replace` rule applies to without `types`: HTML, as nginx's sub_filter_types. */
export const DEFAULT_REPLACE_TYPES: readonly string[] = ["text/html"];

/** One compiled `replace` pair: `bytes` is the replacement when it holds no placeholder. */
export interface ReplaceSpec {
  find: Uint8Array;
  replace: Template;
  bytes: Uint8Array | null;
}

/** Compiled header rules: remove first, then set (add/set), then append. */
export interface HeaderRules {
  when: Predicate;
  /** No condition: `when` holds for every message (the caller may skip building its input). */
  always: boolean;
  remove: string[];
  set: [string, Template][];
  append: [string, Template][];
  /**
   * Every `set` and `append` value is fixed text (no placeholder), checked at load: these pairs
   * apply as they are, with nothing to expand or check per message. Null when a value is not.
   */
  fixed: { set: [string, string][]; append: [string, string][] } | null;
}

/** A JSON value whose strings (keys and values) are templates. */
export type JsonTemplate =
  | { t: "str"; v: Template }
  | { t: "lit"; v: unknown }
  | { t: "arr"; v: JsonTemplate[] }
  | { t: "obj"; v: [Template, JsonTemplate][] };

/** Compiled body rule. */
export interface BodyRule {
  when: Predicate;
  /** `keep`: only the content type changes. */
  body:
    /**
     * `escape`: how a placeholder's value is escaped for `contentType` (a client's `{query}` in
     * an HTML or JSON body must not add markup or members), as error pages escape theirs.
     */
    | { kind: "text"; v: Template; escape: PageEscape }
    | { kind: "json"; v: JsonTemplate }
    | { kind: "keep" }
    /**
     * Strings replaced as the body streams (response side): when the answer's media type is one
     * of `types`, it is not content-coded and not a 206.
     */
    | {
      kind: "replace";
      pairs: ReplaceSpec[];
      once: boolean;
      types: (mediaType: string) => boolean;
    };
  /** "" for a `replace` rule without `content_type`: the answer keeps its own. */
  contentType: string;
}

/** A problem found while compiling, located by key path relative to the rule. */
export interface RuleProblem {
  path: (string | number)[];
  message: string;
  hint?: string;
  /** A warning: the config loads. */
  warning?: boolean;
}

interface Ctx {
  side: "request" | "response";
  env: (name: string) => string | undefined;
  problems: RuleProblem[];
}

function template(text: string, path: (string | number)[], c: Ctx): Template {
  const allowed = c.side === "request" ? REQUEST_PLACEHOLDERS : RESPONSE_PLACEHOLDERS;
  const r = compileTemplate(text, { allowed, env: c.env });
  if (r.ok) {
    for (const name of r.literal) {
      const envName = /^env\.([A-Za-z_][A-Za-z0-9_]*)/.exec(name)?.[1];
      // `${NAME:-default}` as a shell writes it.
      const shell = text.includes(`\${${name}}`)
        ? /^([A-Za-z_][A-Za-z0-9_]*)[^A-Za-z0-9_]/.exec(name)?.[1]
        : undefined;
      c.problems.push({
        path,
        warning: true,
        message: `{${name}} is no placeholder: sent as it is`,
        hint: envName
          ? `{env.NAME} takes no default or other syntax: write {env.${envName}} and set ${envName}`
          : shell
          ? `For an environment variable write {env.${shell}} (it takes no default) and set ${shell}`
          : text.includes(`\${${name}}`)
          ? `For an environment variable write {env.${name}}`
          : suggest(name, allowed)
          ? `Did you mean {${suggest(name, allowed)}}?`
          : `Placeholders: ${listPlaceholders(allowed)}, {env.NAME}`,
      });
    }
    return r.template;
  }
  for (const name of r.unknown) {
    c.problems.push({
      path,
      message: `Environment variable ${name.slice(4)} is not set (placeholder {${name}})`,
      hint: `Set ${name.slice(4)} in Prox's environment, or remove the placeholder`,
    });
  }
  return { constant: true, parts: [text] };
}

/** Why a condition Prox refuses never worked in the Rust Prox either, and the way out. */
const NEVER_HELD = "Fix it or remove the condition (the Rust Prox loaded it, but the condition " +
  "never held, so the rule never applied)";

function condition(
  spec: ConditionSpec | undefined,
  c: Ctx,
  /** Where the condition is (`match` on a route), and whether the Rust Prox had it there. */
  at: { base: (string | number)[]; seed: boolean } = { base: ["condition"], seed: true },
): Predicate {
  if (!spec) return () => true;
  const base = at.base;
  // The third item: the key existed in the Rust Prox (whose configs may hold a broken regex).
  const regexes: [string | undefined, (string | number)[], boolean][] = [
    [spec.path_matches, [...base, "path_matches"], true],
    [spec.has_header?.value_matches, [...base, "has_header", "value_matches"], true],
    [
      spec.response_has_header?.value_matches,
      [...base, "response_has_header", "value_matches"],
      false,
    ],
    [
      typeof spec.query_has === "object" ? spec.query_has.value_matches : undefined,
      [...base, "query_has", "value_matches"],
      false,
    ],
  ];
  if (spec.path_matches !== undefined) {
    const encoded = encodedPathProblem(spec.path_matches, "path_matches");
    if (encoded) c.problems.push({ path: [...base, "path_matches"], warning: true, ...encoded });
  }
  for (const [src, path, seedKey] of regexes) {
    if (src === undefined) continue;
    const re = compileRegex(src);
    if (typeof re === "string") {
      // A Rust flag Prox cannot express worked in the Rust Prox; anything else never compiled.
      const hint = re.includes("Rust flag")
        ? undefined
        : seedKey && at.seed
        ? NEVER_HELD
        : "Fix the regular expression or remove the condition";
      c.problems.push({ path, message: re, hint });
    } else {
      const risk = backtrackRisk(re);
      if (risk) {
        c.problems.push({
          path,
          message: `Regular expression /${src}/: ${risk}`,
          hint: BACKTRACK_HINT,
          warning: true,
        });
      }
    }
  }
  const lacks = spec.response_lacks_header;
  for (const name of lacks === undefined ? [] : Array.isArray(lacks) ? lacks : [lacks]) {
    if (TOKEN.test(name)) continue;
    c.problems.push({
      path: [...base, "response_lacks_header"],
      message: `Invalid header name "${name}"`,
      hint: "Use a header name, such as Cache-Control",
    });
  }
  for (const h of [spec.has_header, spec.response_has_header]) {
    if (h && !TOKEN.test(h.name)) {
      const hint = h === spec.has_header && at.seed
        ? NEVER_HELD
        : "Use a header name, such as X-Error-Type";
      c.problems.push({ path: base, message: `Invalid header name "${h.name}"`, hint });
    }
  }
  // The field as the client wrote it (Prox replaces it only on the way upstream): "10.1.1.1" in
  // X-Forwarded-For passed a condition meant for the office network.
  const asked = spec.has_header?.name;
  if (
    c.side === "request" && asked !== undefined && CLIENT_ADDRESS_FIELDS.has(asked.toLowerCase())
  ) {
    c.problems.push({
      path: [...base, "has_header"],
      warning: true,
      message: `has_header reads ${asked} as the client sent it: any client can write an address ` +
        "there",
      hint: "Use client_ip, the address Prox resolved (from the connection, or behind " +
        "trusted_proxies from the entries they added)",
    });
  }
  const methods = spec.method_is === undefined
    ? []
    : Array.isArray(spec.method_is)
    ? spec.method_is
    : [spec.method_is];
  for (const m of methods) {
    // "GET, POST" would be compared as one method and never match.
    if (!TOKEN.test(m)) {
      c.problems.push({
        path: [...base, "method_is"],
        warning: true,
        message: `"${m}" is no method: the condition never holds`,
        hint: "Give several methods as a list: [GET, POST]",
      });
    }
  }
  if (spec.client_ip !== undefined) {
    const list = Array.isArray(spec.client_ip) ? spec.client_ip : [spec.client_ip];
    list.forEach((text, i) => {
      if (parseCidr(text) !== null) return;
      c.problems.push({
        path: Array.isArray(spec.client_ip) ? [...base, "client_ip", i] : [...base, "client_ip"],
        message: `Invalid address or CIDR block "${text}"`,
        hint: 'Write an address or a block, e.g. "10.0.0.0/8" or "2001:db8::/32"',
      });
    });
  }
  if (spec.status_is !== undefined) {
    const sels = Array.isArray(spec.status_is) ? spec.status_is : [spec.status_is];
    for (const s of sels) {
      const r = parseStatusSelector(s);
      if (typeof r === "string") c.problems.push({ path: [...base, "status_is"], message: r });
    }
  }
  if (c.side === "request") {
    for (const k of ["status_is", "response_has_header", "response_lacks_header"] as const) {
      if (spec[k] !== undefined) {
        c.problems.push({
          path: [...base, k],
          message: at.seed
            ? `${k} can only be used on response rules`
            : `${k} cannot choose a route: there is no response yet`,
          hint: at.seed
            ? "Move this rule to response_headers or response_body"
            : "Match on the request: method_is, has_header, query_has, path_matches, client_ip",
        });
      }
    }
  } else if (spec.has_header !== undefined && spec.response_has_header === undefined) {
    // The same config meant the request's header to the Rust Prox: say which one is read now.
    c.problems.push({
      path: [...base, "has_header"],
      warning: true,
      message: "On a response rule has_header reads the upstream's response headers (the Rust " +
        "Prox read the request's)",
      hint: "Write response_has_header to say so; this warning then goes away",
    });
  }
  return compileCondition(spec);
}

/**
 * A field name a rule cannot use: a warning, and the entry is skipped, as the Rust Prox skipped
 * it (silently) while the rest of the rule worked.
 */
function invalidName(name: string): Omit<RuleProblem, "path"> {
  return {
    warning: true,
    message: `Invalid header name "${name}": the entry is ignored`,
    hint: "Header names are letters, digits and !#$%&'*+-.^_`|~ (no spaces or colons)",
  };
}

/** A header rule's value, or undefined when the field is one Prox ignores in rules. */
function headerValue(
  name: string,
  value: string,
  path: (string | number)[],
  c: Ctx,
): Template | undefined {
  if (!TOKEN.test(name)) {
    c.problems.push({ path, ...invalidName(name) });
    return undefined;
  } else if (FRAMING_FIELDS.has(name.toLowerCase())) {
    c.problems.push({
      path,
      message: `Header "${name}" cannot be set by a rule: Prox frames each message itself`,
      hint: "Remove it from the rule",
    });
  } else if (CONNECTION_FIELDS.has(name.toLowerCase())) {
    c.problems.push({
      path,
      warning: true,
      message: `Header "${name}" is ignored: Prox manages each connection itself`,
      hint: "Remove it from the rule",
    });
    return undefined;
  } else if (c.side === "request" && name.toLowerCase() === "expect") {
    // Prox answers the client's 100-continue and sends the body right after the head: an
    // upstream told to expect it may answer at once and read the body as its next request.
    c.problems.push({
      path,
      warning: true,
      message: `Header "${name}" is ignored on the upstream request: Prox sends the body at once`,
      hint: "Remove it from the rule (Prox answers a client's Expect: 100-continue itself)",
    });
    return undefined;
  }
  const t = asUtf8Bytes(template(value, path, c));
  if (t.changed) {
    c.problems.push({
      path,
      warning: true,
      message: `Header value for "${name}" has characters beyond Latin-1: they are sent as their ` +
        "UTF-8 bytes, as the Rust Prox sent them",
      hint: "Use ASCII if the receiver reads header bytes as Latin-1 (most do)",
    });
  }
  // Checked once {env.NAME} is resolved: a variable's value goes into the field too.
  checkFieldValue(name, t.parts.filter((p) => typeof p === "string").join(""), path, c);
  return { constant: t.constant, parts: t.parts };
}

/**
 * A template whose text beyond Latin-1 (which a Headers value cannot hold) is replaced by its
 * UTF-8 bytes, one character per byte: the bytes the Rust Prox sent for the same config.
 */
function asUtf8Bytes(t: Template): Template & { changed: boolean } {
  let changed = false;
  const parts = t.parts.map((p) => {
    if (typeof p !== "string" || !/[\u0100-\uffff]/.test(p)) return p;
    changed = true;
    return String.fromCharCode(...new TextEncoder().encode(p));
  });
  return { constant: t.constant, parts, changed };
}

/**
 * Why a configured field value cannot be sent, or undefined: a control character would end the
 * field early (CR, LF) or crash the HTTP/1.1 server's writer, and Headers refuses anything
 * beyond Latin-1 (every request would fail).
 */
export function fieldValueProblem(value: string): string | undefined {
  if (/[^\t\x20-\x7e\x80-\uffff]/.test(value)) {
    return "contains a control character (CR, LF, NUL, …)";
  }
  if (/[\u0100-\uffff]/.test(value)) return "has characters a header cannot carry (beyond Latin-1)";
  return undefined;
}

/** Reports a field value that could not be sent. */
function checkFieldValue(name: string, value: string, path: (string | number)[], c: Ctx): void {
  const why = fieldValueProblem(value);
  if (why) c.problems.push({ path, message: `Header value for "${name}" ${why}` });
}

/** Compiles header rules for one side; problems are appended to `problems`. */
export function compileHeaderRules(
  spec: HeaderRulesSpec,
  opts: {
    side: "request" | "response";
    env: (n: string) => string | undefined;
    problems: RuleProblem[];
  },
): HeaderRules {
  const c: Ctx = opts;
  const set: [string, Template][] = [];
  const append: [string, Template][] = [];
  // add and set both set a field; names ignore case, so `X-Key` and `x-key` are one field.
  const setBy = new Map<string, string>();
  for (const key of ["add", "set", "append"] as const) {
    for (const [name, value] of Object.entries(spec[key] ?? {})) {
      const lower = name.toLowerCase();
      if (key === "append" && c.side === "request" && lower === "host") {
        // It would go out as a second Host beside Prox's: the upstream must answer 400 (RFC 9112
        // §3.2), and servers in a chain may each take another one of the two.
        c.problems.push({
          path: [key, name],
          warning: true,
          message: "Host has one value: appending one to the upstream request is ignored",
          hint: "Use set to send another Host",
        });
        continue;
      }
      const earlier = key === "append" ? undefined : setBy.get(lower);
      if (earlier !== undefined) {
        c.problems.push({
          path: [key, name],
          warning: true,
          message: `Header "${name}" is set twice (also as ${earlier}; names ignore case): ` +
            "this value wins",
          hint: "Keep one of them",
        });
      } else if (key !== "append") setBy.set(lower, `${key}.${name}`);
      const t = headerValue(name, value, [key, name], c);
      if (t) (key === "append" ? append : set).push([name.toLowerCase(), t]);
    }
  }
  const remove: string[] = [];
  for (const [i, name] of (spec.remove ?? []).entries()) {
    if (!TOKEN.test(name)) {
      c.problems.push({ path: ["remove", i], ...invalidName(name) });
    } else if (c.side === "request" && name.toLowerCase() === "host") {
      // RFC 9112 §3.2: every HTTP/1.1 request carries Host. The Rust Prox wrote the target's
      // Host after the rules, so removing it did nothing there either: a warning, not an error.
      c.problems.push({
        path: ["remove", i],
        warning: true,
        message: "Host cannot be removed from the upstream request: the entry is ignored",
        hint: "Use set to send another Host, or preserve_host: true to keep the client's",
      });
    } else remove.push(name.toLowerCase());
  }
  // Trimmed as a header set would trim it (checked by fieldValueProblem below).
  const text = (pairs: [string, Template][]) =>
    pairs.map((
      [name, t],
    ): [string, string] => [name, t.parts.join("").replace(/^[ \t]+|[ \t]+$/g, "")]);
  return {
    when: condition(spec.condition, c),
    always: spec.condition === undefined,
    remove,
    set,
    append,
    fixed:
      [...set, ...append].every(([, t]) =>
          t.constant && fieldValueProblem(t.parts.join("")) === undefined
        )
        ? { set: text(set), append: text(append) }
        : null,
  };
}

function jsonTemplate(v: unknown, path: (string | number)[], c: Ctx): JsonTemplate {
  if (typeof v === "string") return { t: "str", v: template(v, path, c) };
  // An integer beyond 2^53 as written in the config (see config/parse.ts), sent exactly.
  if ((JSON as unknown as { isRawJSON(v: unknown): boolean }).isRawJSON(v)) return { t: "lit", v };
  if (Array.isArray(v)) return { t: "arr", v: v.map((x, i) => jsonTemplate(x, [...path, i], c)) };
  if (v && typeof v === "object") {
    return {
      t: "obj",
      v: Object.entries(v).map((
        [k, x],
      ) => [template(k, [...path, k], c), jsonTemplate(x, [...path, k], c)]),
    };
  }
  return { t: "lit", v };
}

/** Compiles a body rule; returns undefined (with a problem) when it sets no body. */
export function compileBodyRule(
  spec: BodyRulesSpec,
  opts: {
    side: "request" | "response";
    env: (n: string) => string | undefined;
    problems: RuleProblem[];
  },
): BodyRule | undefined {
  const c: Ctx = opts;
  if (spec.set_text !== undefined && spec.set_json !== undefined) {
    // The Rust Prox loaded this and used set_text: its configs keep loading.
    c.problems.push({
      path: ["set_json"],
      warning: true,
      message: "set_text and set_json are both set: set_text is used, set_json ignored",
      hint: "Keep one of them",
    });
  }
  const when = condition(spec.condition, c);
  const replace = replaceRule(spec, c);
  if (replace) return { when, body: replace, contentType: spec.content_type ?? "" };
  if (spec.content_type !== undefined) {
    checkFieldValue("Content-Type", spec.content_type, ["content_type"], c);
    const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(spec.content_type)?.[1];
    const text = spec.set_text ??
      (spec.set_json === undefined ? "" : JSON.stringify(spec.set_json));
    if (charset && !/^utf-?8$/i.test(charset) && /[\u0080-\uffff]/.test(text)) {
      c.problems.push({
        path: ["content_type"],
        warning: true,
        message: `The body is sent as UTF-8, so charset=${charset} mislabels its characters ` +
          "beyond ASCII",
        hint: "Use charset=utf-8, or write those characters in ASCII",
      });
    }
  }
  if (spec.set_text !== undefined) {
    const contentType = spec.content_type ?? "text/plain; charset=utf-8";
    const v = template(spec.set_text, ["set_text"], c);
    return { when, body: { kind: "text", v, escape: escapeFor(contentType) }, contentType };
  }
  if (spec.set_json !== undefined) {
    return {
      when,
      body: { kind: "json", v: jsonTemplate(spec.set_json, ["set_json"], c) },
      contentType: spec.content_type ?? "application/json",
    };
  }
  if (spec.content_type !== undefined) {
    return { when, body: { kind: "keep" }, contentType: spec.content_type };
  }
  c.problems.push({
    path: [],
    warning: true,
    message: "Body rule sets nothing: it has no effect",
    hint: "Add set_text, set_json or content_type",
  });
  return undefined;
}

/** A `replace` rule's pairs compiled, or undefined (with problems) when it has none. */
function replaceRule(spec: BodyRulesSpec, c: Ctx): BodyRule["body"] | undefined {
  if (spec.replace === undefined) {
    for (const k of ["once", "types"] as const) {
      if (spec[k] === undefined) continue;
      c.problems.push({
        path: [k],
        message: `${k} applies only with replace`,
        hint: "Add replace: [{find: ..., replace: ...}], or remove it",
      });
    }
    return undefined;
  }
  if (c.side === "request") {
    c.problems.push({
      path: ["replace"],
      message: "replace works on response bodies only",
      hint: "Move it to response_body",
    });
    return undefined;
  }
  for (const k of ["set_text", "set_json"] as const) {
    if (spec[k] === undefined) continue;
    c.problems.push({
      path: [k],
      message: `${k} and replace cannot be combined: one replaces the whole body, the other ` +
        "strings in it",
      hint: "Keep one of them",
    });
  }
  if (spec.content_type !== undefined) {
    checkFieldValue("Content-Type", spec.content_type, ["content_type"], c);
  }
  const utf8 = new TextEncoder();
  const pairs: ReplaceSpec[] = [];
  spec.replace.forEach((pair, i) => {
    if (pair.find === "") {
      c.problems.push({
        path: ["replace", i, "find"],
        message: "find is empty: there is nothing to look for",
        hint: "Give the text to replace",
      });
      return;
    }
    // The scan compares up to the longest find at each byte that may begin one: a long find that
    // repeats itself (`aaa…b`) against a body of `a`s costs body × find.
    if (utf8.encode(pair.find).byteLength > MAX_FIND_BYTES) {
      c.problems.push({
        path: ["replace", i, "find"],
        message: `find is over ${MAX_FIND_BYTES} bytes`,
        hint: "Look for a shorter, distinctive part of the text",
      });
      return;
    }
    const t = template(pair.replace, ["replace", i, "replace"], c);
    pairs.push({
      find: utf8.encode(pair.find),
      replace: t,
      bytes: t.constant ? utf8.encode(t.parts.join("")) : null,
    });
  });
  return {
    kind: "replace",
    pairs,
    once: spec.once === true,
    types: typeMatcher(spec.types ?? DEFAULT_REPLACE_TYPES),
  };
}

/** The four rule slots of a route as configured. */
export interface RouteRulesSpec {
  request_headers?: HeaderRulesSpec;
  response_headers?: HeaderRulesSpec;
  request_body?: BodyRulesSpec;
  response_body?: BodyRulesSpec;
  /** A `respond` route's own body and its type: its answer's body, before `response_body`. */
  body?: string;
  content_type?: string;
}

/** Compiled rules of a route; problems carry paths relative to the route. */
export function compileRouteRules(
  route: RouteRulesSpec,
  opts: { env: (n: string) => string | undefined; problems: RuleProblem[] },
): {
  requestHeaders?: HeaderRules;
  responseHeaders?: HeaderRules;
  requestBody?: BodyRule;
  responseBody?: BodyRule;
  /** A `respond` route's `body` (with its `content_type`). */
  ownBody?: BodyRule;
} {
  const sub = (slot: string, side: "request" | "response") => {
    const problems: RuleProblem[] = [];
    return {
      side,
      env: opts.env,
      problems,
      flush: () => {
        for (const p of problems) opts.problems.push({ ...p, path: [slot, ...p.path] });
      },
    };
  };
  const out: ReturnType<typeof compileRouteRules> = {};
  const slots = [
    ["request_headers", "request"],
    ["response_headers", "response"],
    ["request_body", "request"],
    ["response_body", "response"],
  ] as const;
  for (const [slot, side] of slots) {
    const spec = route[slot];
    if (!spec) continue;
    const c = sub(slot, side);
    if (slot === "request_headers") out.requestHeaders = compileHeaderRules(spec, c);
    if (slot === "response_headers") out.responseHeaders = compileHeaderRules(spec, c);
    if (slot === "request_body") out.requestBody = compileBodyRule(spec, c);
    if (slot === "response_body") out.responseBody = compileBodyRule(spec, c);
    c.flush();
  }
  if (route.body !== undefined || route.content_type !== undefined) {
    const problems: RuleProblem[] = [];
    const spec = { set_text: route.body ?? "", content_type: route.content_type };
    out.ownBody = compileBodyRule(spec, { side: "response", env: opts.env, problems });
    // Said where they are written: `body`, not the set_text it stands for.
    for (const p of problems) {
      opts.problems.push({
        ...p,
        path: p.path[0] === "set_text" ? ["body", ...p.path.slice(1)] : p.path,
      });
    }
  }
  return out;
}

/**
 * A route's `match`: one condition, or a list that must all hold; its problems are reported at
 * `match` (`match.1.has_header` in a list).
 */
export function compileMatch(
  spec: ConditionSpec | ConditionSpec[],
  problems: RuleProblem[],
): Predicate {
  const c: Ctx = { side: "request", env: () => undefined, problems };
  if (!Array.isArray(spec)) return condition(spec, c, { base: ["match"], seed: false });
  const all = spec.map((one, i) => condition(one, c, { base: ["match", i], seed: false }));
  return (input) => all.every((p) => p(input));
}

/** The names for a hint, the client certificate's seven as one `{tls_client_*}`. */
function listPlaceholders(allowed: readonly string[]): string {
  const shown = allowed.filter((a) => !a.startsWith("tls_client_"));
  if (shown.length < allowed.length) shown.push("tls_client_*");
  return shown.map((a) => `{${a}}`).join(", ");
}
