// The `ip_access` request filter (phase 5, first): the route's allow/deny lists, else the top
// level's, checked on the client IP Prox resolved behind `trusted_proxies` (never on a raw
// X-Forwarded-For). A refused client gets 403 with the usual error body and Proxy-Status.

import { ipVerdict } from "../../domain/ip_access.ts";
import type { IpAccess, IpVerdict } from "../../domain/ip_access.ts";
import { resolveClientIp } from "../../domain/headers.ts";
import type { ClientInfo } from "../../ports.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import type { Snapshot } from "../snapshot.ts";
import { errorResponse } from "../respond.ts";

/** The refusal for a client `ip_access` does not let in, or undefined when it may pass. */
export function checkIpAccess(
  ctx: RequestContext,
  deps: PipelineDeps,
  access: IpAccess,
): Response | undefined {
  if (ipVerdict(access, ctx.clientIp).allowed) return undefined;
  deps.metrics.accessDenied(ctx.route?.id ?? "(none)", "ip");
  return forbidden(ctx);
}

/** The 403 answer (also what `prox explain` shows). */
export function forbidden(ctx: RequestContext): Response {
  ctx.error = "http_request_denied";
  ctx.ipRefused = true;
  return errorResponse("forbidden", ctx.requestId, { proxyStatus: { message: "" } });
}

/**
 * The top-level `ip_access`'s 403 for a request answered before the routes (`/metrics` on the
 * traffic port), or undefined when the client may have its answer.
 */
export function refuseBeforeRoutes(
  snapshot: Snapshot,
  req: Request,
  o: { info: ClientInfo; requestId: () => string },
): Response | undefined {
  if (!snapshot.ipAccess) return undefined;
  const peer = o.info.remoteAddr.hostname;
  const ip = resolveClientIp(peer, req.headers.get("x-forwarded-for"), snapshot.trusted);
  if (ipVerdict(snapshot.ipAccess, ip).allowed) return undefined;
  return errorResponse("forbidden", o.requestId(), { proxyStatus: { message: "" } });
}

/** Why a verdict is what it is, in words (`prox explain`). */
export function verdictText(v: IpVerdict, ip: string): string {
  const by = v.rule === null
    ? v.allowed ? "no entry names it (no allow list)" : "no allow entry names it"
    : `${v.rule}${v.file === undefined ? "" : ` (${v.file}:${v.line})`} ${
      v.allowed ? "allows" : "denies"
    } it`;
  return `ip_access ${v.allowed ? "admits" : "refuses"} client ${ip}: ${by}`;
}
