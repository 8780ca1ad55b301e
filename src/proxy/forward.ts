// Select an upstream target, send, and (later) retry or fail over. This first version rotates
// over the route's targets and retries a connect failure on the next target once.

import { ProxyError } from "../domain/errors.ts";
import type { UpstreamRequest } from "../ports.ts";
import type { PipelineDeps, RequestContext } from "./context.ts";

const cursors = new WeakMap<object, number>();

/** Sends the request to one of the route's targets and returns the upstream response. */
export async function forward(
  ctx: RequestContext,
  deps: PipelineDeps,
  opts: { build: (target: string) => UpstreamRequest },
): Promise<Response> {
  const route = ctx.route!;
  const targets = route.targets;
  if (targets.length === 0) throw new ProxyError("no_healthy_upstream", "Route has no targets");
  const n = cursors.get(route) ?? 0;
  cursors.set(route, n + 1);
  let lastErr: unknown;
  for (let attempt = 0; attempt < Math.min(2, targets.length); attempt++) {
    const target = targets[(n + attempt) % targets.length];
    const req = opts.build(target);
    ctx.upstream = target;
    const t0 = deps.clock.monotonic();
    try {
      const res = await deps.upstream.send(req);
      ctx.upstreamStatus = res.status;
      ctx.upstreamMs = deps.clock.monotonic() - t0;
      deps.metrics.backendRequest(target, route.id, res.status, ctx.upstreamMs / 1000);
      return res;
    } catch (err) {
      ctx.upstreamMs = deps.clock.monotonic() - t0;
      deps.metrics.backendRequest(target, route.id, 599, ctx.upstreamMs / 1000);
      lastErr = err;
      if (!(err instanceof ProxyError) || !err.sentNothing || err.kind !== "connect") throw err;
      ctx.retries++;
    }
  }
  throw lastErr;
}
