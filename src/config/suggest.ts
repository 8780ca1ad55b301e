// "Did you mean …?" for unknown keys and enum values: the allowed keys at a path, read from the
// zod schema itself, and the closest one by edit distance.

import { Config } from "./schema.ts";

// deno-lint-ignore no-explicit-any
type AnySchema = any;

/** Edit distance between two short strings (Levenshtein). */
export function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}

/** The closest candidate within a typo's reach, or undefined. */
export function suggest(input: string, candidates: readonly string[]): string | undefined {
  const lower = input.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(lower, c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  const reach = Math.max(2, Math.floor(input.length / 3));
  return bestD <= reach ? best : undefined;
}

function unwrap(s: AnySchema): AnySchema {
  for (let i = 0; i < 20 && s; i++) {
    const def = s._zod?.def;
    if (!def) return s;
    if (["optional", "default", "nullable", "prefault", "readonly", "catch"].includes(def.type)) {
      s = def.innerType;
    } else if (def.type === "pipe") {
      s = def.in;
    } else {
      return s;
    }
  }
  return s;
}

function pickObject(s: AnySchema, value: unknown): AnySchema {
  s = unwrap(s);
  const def = s?._zod?.def;
  if (def?.type !== "union") return s;
  const options: AnySchema[] = def.options.map(unwrap);
  const tag = value && typeof value === "object"
    ? (value as Record<string, unknown>).type
    : undefined;
  const byTag = options.find((o) => {
    const t = o._zod?.def?.shape?.type?._zod?.def;
    return t?.type === "literal" && t.values.includes(tag);
  });
  return byTag ?? options.find((o) => o._zod?.def?.type === "object") ?? s;
}

/** The keys the schema allows for the object found at `path` in the raw config. */
export function knownKeysAt(raw: unknown, path: (string | number)[]): string[] {
  let s: AnySchema = Config;
  let value: unknown = raw;
  for (const key of path) {
    s = pickObject(s, value);
    const def = s?._zod?.def;
    if (!def) return [];
    if (def.type === "object") s = def.shape[key];
    else if (def.type === "record") s = def.valueType;
    else if (def.type === "array") s = def.element;
    else return [];
    value = value && typeof value === "object"
      ? (value as Record<string | number, unknown>)[key]
      : undefined;
  }
  const obj = pickObject(s, value);
  const def = obj?._zod?.def;
  return def?.type === "object" ? Object.keys(def.shape) : [];
}
