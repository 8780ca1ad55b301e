// "Did you mean …?" for unknown keys and enum values: the allowed keys at a path, read from the
// zod schema itself, and the closest one by edit distance.

import { Config } from "./schema.ts";
export { distance, suggest } from "../domain/suggest.ts";

// deno-lint-ignore no-explicit-any
type AnySchema = any;

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
  const def = schemaAt(raw, path)?._zod?.def;
  return def?.type === "object" ? Object.keys(def.shape) : [];
}

/** Whether the schema at `path` maps names of the user's choosing (header fields, statuses). */
export function isRecordAt(raw: unknown, path: (string | number)[]): boolean {
  return schemaAt(raw, path)?._zod?.def?.type === "record";
}

/** The schema of the value at `path` in the raw config (a union resolved by the value). */
function schemaAt(raw: unknown, path: (string | number)[]): AnySchema {
  let s: AnySchema = Config;
  let value: unknown = raw;
  for (const key of path) {
    s = pickObject(s, value);
    const def = s?._zod?.def;
    if (!def) return undefined;
    if (def.type === "object") s = Object.hasOwn(def.shape, key) ? def.shape[key] : undefined;
    else if (def.type === "record") s = def.valueType;
    else if (def.type === "array") s = def.element;
    else return undefined;
    value = value && typeof value === "object"
      ? (value as Record<string | number, unknown>)[key]
      : undefined;
  }
  return pickObject(s, value);
}

/**
 * The route types (other than the route's own) that have `key`: `cache` on a static route said
 * "did you mean cache_control?", when it is a key of proxy and load_balance routes.
 */
export function routeTypesWithKey(key: string): string[] {
  const routes = unwrap(Config._zod.def.shape.routes)._zod.def.valueType;
  const options: AnySchema[] = unwrap(routes)._zod.def.options.map(unwrap);
  const types: string[] = [];
  for (const o of options) {
    const shape = o._zod?.def?.shape;
    const tag = shape?.type?._zod?.def;
    // Own keys only: `constructor` and `toString` are in every object.
    if (shape && Object.hasOwn(shape, key) && tag?.type === "literal") {
      types.push(String(tag.values[0]));
    }
  }
  return types;
}
