// The `redirect` action: the remaining path and the query carried over to the target, with the
// joining slash handled (the seed sent `/foo` to `/staticfoo` and dropped queries).

import { joinPath, stripPrefix, wireQuery } from "../../domain/rewrite.ts";
import type { RedirectRouteConfig } from "../../config/schema.ts";
import type { RequestContext } from "../context.ts";

/** The Location for a redirect route. */
export function redirectLocation(
  route: RedirectRouteConfig,
  opts: { path: string; prefix: string; query: string },
): string {
  if (route.exact) return wireQuery(route.target);
  const rest = stripPrefix(opts.path, opts.prefix);
  const query = route.keep_query ? opts.query : "";
  // A fragment in the target stays last: path and query go in front of it (RFC 3986 §3).
  const hash = route.target.indexOf("#");
  const fragment = hash >= 0 ? route.target.slice(hash) : "";
  const bare = hash >= 0 ? route.target.slice(0, hash) : route.target;
  const q = bare.indexOf("?");
  const target = q >= 0 ? bare.slice(0, q) : bare;
  const targetQuery = q >= 0 ? bare.slice(q) : "";
  const abs = /^[a-z][a-z0-9+.-]*:\/\//i.exec(target);
  let location: string;
  if (abs) {
    const u = new URL(target);
    const base = u.pathname === "/" && !target.endsWith("/") ? "" : u.pathname;
    location = `${u.protocol}//${u.host}${rest ? joinPath(base, rest) : base || "/"}`;
  } else {
    location = rest ? joinPath(target, rest) : target;
  }
  // An empty query of the client's ("/r/x?") adds nothing to the target's, nor a target's bare
  // "?" to the client's: no dangling "&".
  const mergedQuery = targetQuery.length > 1 && query.length > 1
    ? `${targetQuery}&${query.slice(1)}`
    : query.length > 1
    ? query
    : targetQuery || query;
  // What a header cannot carry as it is (a space, "é" or "€" in a relative target or a query; "€"
  // made every answer a 500) goes percent-encoded as UTF-8, as a browser would send it.
  return wireQuery(location + mergedQuery + fragment);
}

/** Answers with the configured redirect status and an empty body. */
export function redirectAction(ctx: RequestContext, route: RedirectRouteConfig): Response {
  const location = redirectLocation(route, {
    path: ctx.path,
    prefix: ctx.route!.prefix,
    query: ctx.query,
  });
  return new Response(null, { status: route.status_code, headers: { location } });
}
