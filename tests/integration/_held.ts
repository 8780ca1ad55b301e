// An upstream that holds its requests, and Prox with one upstream connection and a queue for it:
// requests that wait in upstream_pool's queue, and what their clients do meanwhile.
import { startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";

/** Prox with one connection per upstream and a long queue, an admin listener, and `pool()`. */
export async function queuedProxy(up: string) {
  const prox = await startProxy(`
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 8, queue_timeout: 60s }
routes: { "/": { type: proxy, target: "${up}", timeouts: { response_header: 60s } } }
`);
  const pool = async () => {
    const res = await fetch(`http://127.0.0.1:${prox.server.admin!.port}/status`);
    const status = await res.json() as { upstreams: { pool: { busy: number; waiting: number } }[] };
    return status.upstreams[0].pool;
  };
  return Object.assign(prox, { pool });
}

/**
 * An upstream that reads each request's body, then holds it until `release()`; `arrived`: the
 * paths it got, `bodies`: their bodies (empty when one failed).
 */
export async function heldUpstream() {
  const gates: (() => void)[] = [];
  const arrived: string[] = [];
  const bodies: Uint8Array[] = [];
  const server = await startUpstream(async (req) => {
    arrived.push(new URL(req.url).pathname);
    bodies.push(new Uint8Array(await req.arrayBuffer().catch(() => new ArrayBuffer(0))));
    await new Promise<void>((r) => gates.push(r));
    return new Response("late");
  });
  const release = () => gates.splice(0).forEach((open) => open());
  return {
    url: server.url,
    arrived,
    bodies,
    release,
    async [Symbol.asyncDispose]() {
      release();
      await server[Symbol.asyncDispose]();
    },
  };
}
