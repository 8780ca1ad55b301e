// The `cors` route option in the pipeline (policy and field values: src/domain/cors.ts).
// - Preflights are answered here, after ip_access and before rate limits and authentication (a
//   preflight carries no credentials), and never reach the upstream: 204 with the fields for an
//   admitted origin, 403 without any for another.
// - Every other answer of the route (the upstream's, a cached one, Prox's own 401/429/502 and error
//   pages) gets the fields for an admitted origin (with `*`, whether it sent one or not), set per
//   request after the cache, and `Vary: Origin` unless they are the same for everyone; the
//   upstream's own Access-Control-* fields are removed (Prox's answer wins).

import {
  CORS_RESPONSE_FIELDS,
  isPreflight,
  mergeVary,
  originAllowed,
  preflightFields,
  preflightVary,
  responseFields,
  variesByOrigin,
} from "../../domain/cors.ts";
import type { CorsPolicy } from "../../domain/cors.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { errorResponse } from "../respond.ts";

/** The answer to a CORS preflight (`isPreflight`): 204 for an admitted origin, else 403. */
export function answerPreflight(
  ctx: RequestContext,
  deps: Pick<PipelineDeps, "metrics">,
  policy: CorsPolicy,
): Response {
  const h = ctx.req.headers;
  const origin = h.get("origin")!;
  if (!originAllowed(policy, origin)) {
    ctx.corsPreflight = true;
    deps.metrics.accessDenied(ctx.route?.id ?? "(none)", "cors_origin");
    ctx.error = "http_request_denied";
    const res = errorResponse("forbidden", ctx.requestId, {
      message: "Origin not allowed",
      proxyStatus: { message: "" },
    });
    res.headers.set("vary", preflightVary(policy));
    return res;
  }
  ctx.corsPreflight = true;
  const res = new Response(null, { status: 204 });
  const out = res.headers;
  const fields = preflightFields(policy, {
    origin,
    method: h.get("access-control-request-method")!,
    headers: h.get("access-control-request-headers"),
  });
  for (const [k, v] of fields) out.set(k, v);
  out.set("vary", preflightVary(policy));
  out.set("x-request-id", ctx.requestId);
  return res;
}

/**
 * The route's answer with Prox's CORS fields: the upstream's removed, ours added for an admitted
 * `Origin`, `Origin` merged into `Vary` when the answer depends on it. A preflight's own answer,
 * a 101 and `ip_access`'s 403 (a refused client learns nothing of the allowed origins) pass as
 * they are.
 */
export function withCors(ctx: RequestContext, res: Response, policy: CorsPolicy): Response {
  if (res.status === 101 || ctx.corsPreflight || ctx.ipRefused) return res;
  const origin = ctx.req.headers.get("origin");
  const vary = variesByOrigin(policy);
  // `*` without credentials is the same for everyone, a request without Origin too: a cache (the
  // browser's, a CDN) may hand the answer to a later cross-origin fetch (Fetch standard, "CORS
  // protocol and HTTP caches").
  const add = !vary || origin !== null && originAllowed(policy, origin)
    ? responseFields(policy, origin ?? "*")
    : undefined;
  const h = res.headers;
  let stray = false;
  for (const name of CORS_RESPONSE_FIELDS) if (h.has(name)) stray = true;
  if (!add && !vary && !stray) return res;
  try {
    apply(h, { add, vary, stray });
    return res;
  } catch {
    // Immutable headers (a Response from fetch): copy once.
    const copy = new Headers(h);
    apply(copy, { add, vary, stray });
    return new Response(res.body, {
      status: res.status,
      statusText: res.statusText,
      headers: copy,
    });
  }
}

function apply(
  h: Headers,
  o: { add: [string, string][] | undefined; vary: boolean; stray: boolean },
): void {
  if (o.stray) { for (const name of CORS_RESPONSE_FIELDS) h.delete(name); }
  if (o.add) { for (const [k, v] of o.add) h.set(k, v); }
  if (o.vary) h.set("vary", mergeVary(h.get("vary"), "Origin"));
}

/** What the route's `cors` does with this request, in words (`prox explain`). */
export function corsNote(ctx: RequestContext, policy: CorsPolicy): string {
  const h = ctx.req.headers;
  const origin = h.get("origin");
  if (origin === null) {
    return variesByOrigin(policy)
      ? "cors: no Origin (not a cross-origin request), so no Access-Control-* fields; Vary: " +
        "Origin is added"
      : "cors: no Origin, but every origin is allowed: the answer gets " +
        responseFields(policy, "*").map(([k, v]) => `${k}: ${v}`).join("; ");
  }
  const allowed = originAllowed(policy, origin);
  if (isPreflight(ctx.req.method, h)) {
    if (!allowed) return `cors: preflight from ${origin}, an origin not listed: 403, not proxied`;
    const fields = preflightFields(policy, {
      origin,
      method: h.get("access-control-request-method")!,
      headers: h.get("access-control-request-headers"),
    });
    return `cors: preflight from ${origin} answered by Prox with 204, not proxied (before ` +
      `rate limits and auth): ${fields.map(([k, v]) => `${k}: ${v}`).join("; ")}`;
  }
  if (!allowed) {
    return `cors: ${origin} is not listed: the answer gets no Access-Control-* fields (the ` +
      "browser keeps it from the page; the request is still served)";
  }
  return `cors: ${origin} is allowed: the answer (the upstream's, or Prox's own error) gets ` +
    responseFields(policy, origin).map(([k, v]) => `${k}: ${v}`).join("; ");
}
