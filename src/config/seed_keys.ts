// Route keys that the Rust Prox knew for some route type and silently ignored on the others
// (serde skipped unknown fields): `path_rewrite` on a static route, `request_headers` on a
// redirect, `strategy` on a proxy route. Its configs loaded with them, so Prox loads them too:
// such a key is dropped before the strict schema sees it, with a warning. Any other unknown key
// stays an error (a typo the seed never read either).

import { Route } from "./schema_route.ts";

/** Every key of a Rust Prox route, whatever its type (inventory §2.4). */
const SEED_ROUTE_KEYS = new Set([
  "target",
  "targets",
  "strategy",
  "root",
  "status_code",
  "path_rewrite",
  "rate_limit",
  "request_headers",
  "response_headers",
  "request_body",
  "response_body",
  "max_frame_size",
  "max_message_size",
]);

/** The keys each Prox route type takes, from the schema. */
const ALLOWED = new Map(
  Route.options.map((o) => [o.shape.type.value as string, new Set(Object.keys(o.shape))]),
);

/** One dropped key. */
export interface IgnoredSeedKey {
  route: string;
  key: string;
  type: string;
}

/**
 * Removes, in place, the seed route keys a route's type does not take, and returns them. `routes`
 * is the raw (parsed YAML) value of `routes`; anything not shaped like routes is left to the schema.
 */
export function dropIgnoredSeedKeys(routes: unknown): IgnoredSeedKey[] {
  const dropped: IgnoredSeedKey[] = [];
  if (routes === null || typeof routes !== "object" || Array.isArray(routes)) return dropped;
  for (const [route, value] of Object.entries(routes)) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) continue;
    const r = value as Record<string, unknown>;
    const allowed = typeof r.type === "string" ? ALLOWED.get(r.type) : undefined;
    if (!allowed) continue;
    for (const key of Object.keys(r)) {
      if (SEED_ROUTE_KEYS.has(key) && !allowed.has(key)) {
        delete r[key];
        dropped.push({ route, key, type: r.type as string });
      }
    }
  }
  return dropped;
}
