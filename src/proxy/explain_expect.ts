// `prox test`: a request's explanation (explain.ts) checked against what a routes test file says
// it should be. Pure: the CLI (adapters/route_tests.ts) reads the files and prints the verdicts.

import type { Explanation } from "./explain.ts";

/** What one test case expects; every key is optional and only the keys given are checked. */
export interface Expectation {
  /** The route that takes the request; null: none does. */
  route?: string | null;
  action?: string;
  /** Prox's own answer's status (redirect, static, error). */
  status?: number;
  location?: string;
  file?: string;
  /** The `error_pages` page(s) Prox's own answer carries (their files, or "inline"). */
  page?: string;
  /** The upstream URL the request line would go to (target + rewritten path + query). */
  upstream?: string;
  /** The target a first attempt would pick. */
  target?: string;
  /** Request fields the upstream would get; null: the field must be absent. */
  headers?: Record<string, string | null>;
}

/** The request fields the upstream would get, lower-case names: the client's plus the diff. */
export function upstreamFields(
  client: readonly [string, string][],
  e: Explanation,
): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of client) out.set(k.toLowerCase(), v);
  const d = e.requestHeaders;
  if (!d) return out;
  for (const name of d.removed) out.delete(name.toLowerCase());
  for (const [name, , now] of d.changed) out.set(name.toLowerCase(), now);
  for (const [name, value] of d.added) out.set(name.toLowerCase(), value);
  return out;
}

const show = (v: unknown) => v === undefined ? "nothing" : JSON.stringify(v);

/**
 * What differs from the expectation, one line per key (empty: the case passes). `key` names the
 * expectation's key so the CLI can point at its line.
 */
export function mismatches(
  want: Expectation,
  e: Explanation,
  client: readonly [string, string][],
): { key: string; message: string }[] {
  const out: { key: string; message: string }[] = [];
  const check = (key: string, expected: unknown, actual: unknown) => {
    if (expected !== undefined && expected !== actual) {
      out.push({ key, message: `${key}: expected ${show(expected)}, got ${show(actual)}` });
    }
  };
  check("route", want.route, e.route);
  check("action", want.action, e.action);
  check("status", want.status, e.answer?.status);
  check("location", want.location, e.answer?.location);
  check("file", want.file, e.answer?.file);
  check("page", want.page, e.answer?.page);
  check("upstream", want.upstream, e.upstream?.url);
  check("target", want.target, e.upstream?.pick ?? undefined);
  if (want.headers) {
    const got = upstreamFields(client, e);
    for (const [name, value] of Object.entries(want.headers)) {
      const actual = got.get(name.toLowerCase());
      if (value === null ? actual !== undefined : actual !== value) {
        out.push({
          key: `headers.${name}`,
          message: `header ${name}: expected ${value === null ? "none" : show(value)}, got ${
            actual === undefined ? "none" : show(actual)
          }`,
        });
      }
    }
  }
  return out;
}
