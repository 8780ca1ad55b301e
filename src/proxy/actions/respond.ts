// The `respond` action: a fixed answer from Prox itself (Caddy's `respond`, nginx's `return`),
// its body's placeholders expanded per request. Header and body rules, compression and error
// pages then apply as to any answer.

import type { RespondRouteConfig } from "../../config/schema.ts";
import type { RequestContext } from "../context.ts";
import { placeholderValues, ruleBody } from "../filters/rules.ts";
import type { BodyRule } from "../../domain/rules.ts";

/** The route's status with its `body` (compiled as `own`), none for a HEAD or a 204/205/304. */
export function respondAction(
  ctx: RequestContext,
  route: RespondRouteConfig,
  own: BodyRule | undefined,
): Response {
  const status = route.status;
  // No content on these (RFC 9110 §15.3.5, §15.3.6, §15.4.5): validate refuses a body there.
  if (own === undefined || status === 204 || status === 205 || status === 304) {
    return new Response(null, { status });
  }
  const bytes = ruleBody(own, placeholderValues(ctx, status)) ?? new Uint8Array(0);
  return new Response(ctx.req.method === "HEAD" ? null : bytes, {
    status,
    headers: { "content-type": own.contentType, "content-length": String(bytes.byteLength) },
  });
}
