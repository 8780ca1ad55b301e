// An upstream that holds its requests, and Prox with one upstream connection and a queue for it:
// requests that wait in upstream_pool's queue, and what their clients do meanwhile.
import { startUpstream, waitFor } from "../_harness.ts";
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

/**
 * Takes the upstream's one connection with a GET of /first (held until `up.release()`), so that
 * the next request waits in the queue; resolves once it is at the upstream. `first`: its answer.
 */
export async function holdFirst(up: { arrived: string[] }, prox: { url: string }) {
  const first = fetch(`${prox.url}/first`);
  await waitFor(() => up.arrived.length === 1, { what: "the first request at the upstream" });
  return { first };
}

/** The head of the upload that queues behind /first: `POST /queued` with `length` bytes. */
export function queuedUploadHead(length: number, fields = ""): Uint8Array {
  return new TextEncoder().encode(
    `POST /queued HTTP/1.1\r\nHost: a\r\n${fields}Content-Length: ${length}\r\n\r\n`,
  );
}

/** A body of `n` bytes that says where each byte is (a replay out of order shows). */
export function pattern(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + (i >> 8)) & 0xff;
  return out;
}
