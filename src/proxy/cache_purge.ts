// Purging the routes' response caches (the admin API's `POST /cache/purge`): one URL with all its
// Vary variants, every entry under a URL prefix, or a route's whole store. A URL is routed as a
// request for it would be (host, normalized path, the route's path_rewrite), so the key it drops
// is the one its requests are stored under, for http and https alike; with conditional routes,
// from each route of its prefix a request for it may take.

import type { ClientInfo, Metrics } from "../ports.ts";
import type { Snapshot } from "./snapshot.ts";
import type { PipelineDeps } from "./context.ts";
import { admit, identify } from "./pipeline.ts";
import { primaryKey } from "./cache_request.ts";
import { rawQuery, wireQuery } from "../domain/rewrite.ts";
import type { UpstreamRoute } from "./cache_request.ts";

/**
 * What to purge: a URL (every variant), a URL prefix, a route's whole cache by its id, or every
 * entry of any route tagged with one of a comma-separated list of tags.
 */
export type PurgeInput = { url: string } | { prefix: string } | { route: string } | {
  tag: string;
};

/** What a purge did, or why it could not (`status` 400 or 404 and a message). */
export type PurgeResult =
  | { ok: true; route: string | null; purged: number }
  | { ok: false; status: 400 | 404; error: string };

/** Drops what `input` names from the caches of `snapshot`'s routes, and counts it. */
export function purgeCache(
  input: PurgeInput,
  deps: { snapshot: Snapshot; metrics: Metrics },
): PurgeResult {
  const { snapshot, metrics } = deps;
  if ("tag" in input) {
    const tags = input.tag.split(",").map((t) => t.trim()).filter((t) => t !== "");
    if (tags.length === 0) return { ok: false, status: 400, error: "Cannot purge: no tag given" };
    // Across routes: each route's store once (a route may be routed to by several hosts).
    let purged = 0;
    const seen = new Set<unknown>();
    for (const { value: route } of snapshot.router.entries) {
      if (!route.cache || seen.has(route.cache.store)) continue;
      seen.add(route.cache.store);
      const n = route.cache.store.invalidateTags(tags);
      metrics.cachePurge(route.id, "tag", n);
      purged += n;
    }
    return { ok: true, route: null, purged };
  }
  if ("route" in input) {
    const route = snapshot.router.entries.find((e) => e.value.id === input.route)?.value;
    if (!route) return { ok: false, status: 404, error: `Cannot purge: no route "${input.route}"` };
    if (!route.cache) {
      return { ok: false, status: 404, error: `Cannot purge: route "${input.route}" has no cache` };
    }
    const purged = route.cache.store.size;
    route.cache.store.clear();
    metrics.cachePurge(route.id, "route", purged);
    return { ok: true, route: route.id, purged };
  }
  const prefix = "prefix" in input;
  const text = prefix ? input.prefix : input.url;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { ok: false, status: 400, error: `Cannot purge: "${text.slice(0, 200)}" is no URL` };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { ok: false, status: 400, error: `Cannot purge: "${url.protocol}" is no http(s) URL` };
  }
  const req = new Request(url, { headers: { host: url.host } });
  const info: ClientInfo = {
    remoteAddr: { hostname: "127.0.0.1", port: 0 },
    localPort: 0,
    protocol: "http/1.1",
    tls: url.protocol === "https:",
  };
  const ctx = identify(
    req,
    info,
    { snapshot: () => snapshot, clock: CLOCK } as PipelineDeps,
    () => "",
  );
  if (admit(ctx)) return { ok: false, status: 400, error: `Cannot purge: invalid URL "${text}"` };
  // The query as written, as a request's is keyed: the URL parser would write ' and " as %27 and
  // %22, which is another entry (a client that sends them raw, as curl does, is keyed raw).
  ctx.query = wireQuery(rawQuery(text));
  // Every route a request for the URL may take (conditional routes look at fields a URL lacks),
  // each store once: the unconditional route first, which names the purge.
  const routes = [...new Set(snapshot.router.candidates(ctx.host, ctx.path).map((c) => c.value))]
    .filter((r) => r.cache);
  if (routes.length === 0) {
    return {
      ok: false,
      status: 404,
      error: `Cannot purge: no route with a cache answers ${url.host}${ctx.path}`,
    };
  }
  // A prefix no path_regex rule maps may still be stored under rewritten paths (the rules map
  // longer paths): what to drop cannot be told, so nothing is.
  const unmapped = prefix &&
    routes.find((r) => r.pathRegex?.length && !r.pathRegex.some((x) => x.re.test(ctx.path)));
  if (unmapped) {
    return {
      ok: false,
      status: 400,
      error:
        `Cannot purge by prefix: route "${unmapped.id}" rewrites paths with path_regex and none of its rules maps ${ctx.path}; purge by ?url=, ?route= or ?tag=`,
    };
  }
  const query = ctx.query;
  let total = 0;
  for (const route of routes) {
    ctx.route = route;
    ctx.query = query;
    const store = route.cache!.store;
    // Its requests may come over http or https (or say which in X-Forwarded-Proto): both go.
    let purged = 0;
    for (const scheme of ["http", "https"] as const) {
      ctx.scheme = scheme;
      const key = primaryKey(ctx, route.config as UpstreamRoute);
      purged += prefix ? store.invalidatePrefix(key) : store.invalidate(key);
    }
    metrics.cachePurge(route.id, prefix ? "prefix" : "url", purged);
    total += purged;
  }
  return { ok: true, route: routes[0].id, purged: total };
}

/** identify() reads the clock for the request's start time, which a purge never uses. */
const CLOCK = { now: () => 0, monotonic: () => 0 };
