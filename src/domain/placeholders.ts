// `{name}` placeholders in header values and bodies, anywhere in the string. Templates are
// compiled once at load; `{env.NAME}` is resolved then too. An unset variable is a config error;
// an unknown name stays literal text (the seed sent `/users/{id}` as it is), with a warning.

/** Placeholders available on both sides, and the response-only ones. */
export const REQUEST_PLACEHOLDERS = [
  "client_ip",
  "timestamp",
  "timestamp_iso",
  "uri_path",
  "query",
  "host",
  "method",
  "scheme",
  "request_id",
  "route",
  "auth_user",
  // The client's verified certificate (tls.client_auth); "" without one.
  "tls_client_subject",
  "tls_client_issuer",
  "tls_client_serial",
  "tls_client_fingerprint",
  "tls_client_san",
  "tls_client_not_after",
  "tls_client_cert",
] as const;
export const RESPONSE_PLACEHOLDERS = [...REQUEST_PLACEHOLDERS, "upstream", "status"] as const;

/**
 * Looks up a placeholder's value at request time ("" when unknown). A function, so values that
 * cost something (timestamps) are computed only when a template uses them.
 */
export type PlaceholderValues = (name: string) => string;

/** A compiled template: literal parts and placeholder names, alternating. */
export interface Template {
  /** True when the template contains no runtime placeholder. */
  readonly constant: boolean;
  readonly parts: readonly (string | { name: string })[];
}

/**
 * The result of compiling: a template (with the unknown names it kept as text), or the
 * `env.NAME` placeholders whose variable is not set.
 */
export type CompileResult =
  | { ok: true; template: Template; literal: string[] }
  | { ok: false; unknown: string[] };

const TOKEN = /\{([A-Za-z_][A-Za-z0-9_.]*)\}/g;

/**
 * Compiles `text`. `allowed` lists the runtime names; `env` resolves `{env.NAME}` now (a missing
 * variable is an error too, reported as `env.NAME`).
 */
export function compileTemplate(
  text: string,
  opts: { allowed: readonly string[]; env: (name: string) => string | undefined },
): CompileResult {
  const parts: (string | { name: string })[] = [];
  const unknown: string[] = [];
  const kept: string[] = [];
  let last = 0;
  let literal = "";
  for (const m of text.matchAll(TOKEN)) {
    literal += text.slice(last, m.index);
    last = m.index! + m[0].length;
    const name = m[1];
    if (name.startsWith("env.")) {
      const v = opts.env(name.slice(4));
      if (v === undefined) unknown.push(name);
      else literal += v;
    } else if (opts.allowed.includes(name)) {
      if (literal) parts.push(literal);
      literal = "";
      parts.push({ name });
    } else {
      kept.push(name);
      literal += m[0];
    }
  }
  literal += text.slice(last);
  if (literal) parts.push(literal);
  // `{env.NAME:-default}` (shell syntax): no placeholder, kept as text, and said so.
  for (const m of text.matchAll(/\{(env\.[^{}]*)\}/g)) {
    if (!/^env\.[A-Za-z_][A-Za-z0-9_.]*$/.test(m[1])) kept.push(m[1]);
  }
  // `${NAME:-default}`, `${NAME?}`: shell syntax, no placeholder either (`${NAME}` is one above).
  for (const m of text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*[^A-Za-z0-9_.{}][^{}]*)\}/g)) {
    kept.push(m[1]);
  }
  if (unknown.length) return { ok: false, unknown };
  return {
    ok: true,
    template: { constant: parts.every((p) => typeof p === "string"), parts },
    literal: kept,
  };
}

/** Expands a compiled template with the request's values. */
export function expand(t: Template, values: PlaceholderValues): string {
  if (t.parts.length === 1 && typeof t.parts[0] === "string") return t.parts[0];
  let out = "";
  for (const p of t.parts) {
    out += typeof p === "string" ? p : values(p.name);
  }
  return out;
}

/** Lists every `{name}` in a string (for validation messages). */
export function placeholderNames(text: string): string[] {
  return [...text.matchAll(TOKEN)].map((m) => m[1]);
}
