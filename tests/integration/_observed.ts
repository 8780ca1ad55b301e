// A real Prox with an admin listener, a TLS main listener and a mix of routes, plus a traffic
// generator that exercises them (2xx, 3xx, 404, 429, 5xx, 502): the exposition that promtool,
// Prometheus, the dashboard and the status page tests look at.

import { ROOT, startUpstream } from "../_harness.ts";
import type { TestServer } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import type { ProxServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

/** A running observed Prox; dispose to stop Prox, its upstream and the HTTPS client. */
export interface Observed extends AsyncDisposable {
  server: ProxServer;
  upstream: TestServer;
  /** https://localhost:PORT of the main listener. */
  url: string;
  adminUrl: string;
  token: string;
  /** Authorization header for the admin listener. */
  auth: Record<string, string>;
  /** Sends `rounds` rounds of mixed requests through Prox. */
  traffic(rounds?: number): Promise<void>;
  /** GET on the admin listener with the token. */
  admin(path: string): Promise<Response>;
}

const TLS = `${ROOT}/tests/fixtures/tls`;

/** Starts the observed Prox (TLS on 127.0.0.1:0, admin on 127.0.0.1:0 with a token). */
export async function startObserved(opts: { token?: string } = {}): Promise<Observed> {
  const upstream = await startUpstream(async (req) => {
    const path = new URL(req.url).pathname;
    if (path.endsWith("/slow")) await new Promise((r) => setTimeout(r, 15));
    if (path.endsWith("/fail")) return new Response("upstream failed", { status: 500 });
    return new Response("ok");
  });
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = (dead.addr as Deno.NetAddr).port;
  dead.close();
  const token = opts.token ?? "observed-admin-token";
  const yaml = `listen_addr: "127.0.0.1:0"
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
admin:
  listen_addr: "127.0.0.1:0"
  token: "${token}"
health_check: { enabled: false }
log: { access_log: false }
routes:
  "/api":
    type: proxy
    target: "${upstream.url}"
  "/lb":
    type: load_balance
    targets: ["${upstream.url}", "http://127.0.0.1:${deadPort}"]
  "/limited":
    type: proxy
    target: "${upstream.url}"
    rate_limit: { by: ip, requests: 2, period: 1m }
  "/down":
    type: proxy
    target: "http://127.0.0.1:${deadPort}"
  "/old":
    type: redirect
    target: "/api"
`;
  const server = await startServer({ text: yaml, name: "observed.yaml" }, {
    logger: silentLogger,
    version: "test",
  });
  const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${TLS}/ca.pem`)] });
  const url = `https://localhost:${server.port}`;
  const adminUrl = `http://127.0.0.1:${server.admin!.port}`;
  const auth = { authorization: `Bearer ${token}` };
  const paths = [
    "/api/a",
    "/api/slow",
    "/api/fail",
    "/lb/x",
    "/limited/x",
    "/down/x",
    "/old",
    "/nope",
  ];
  return {
    server,
    upstream,
    url,
    adminUrl,
    token,
    auth,
    async traffic(rounds = 1) {
      for (let i = 0; i < rounds; i++) {
        await Promise.all(paths.map(async (p) => {
          const res = await fetch(`${url}${p}`, { client, redirect: "manual" });
          await res.body?.cancel();
        }));
      }
    },
    admin: (path) => fetch(`${adminUrl}${path}`, { headers: auth }),
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      client.close();
      await upstream[Symbol.asyncDispose]();
    },
  };
}

/** Metric family names in an exposition: every `# TYPE` line. */
export function families(exposition: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1], m[2]);
  return out;
}

/** True when `name` is a family or one of a histogram's/summary's series in the exposition. */
export function exported(name: string, fams: Map<string, string>): boolean {
  if (fams.has(name)) return true;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (!m) return false;
  const t = fams.get(m[1]);
  return t === "histogram" || (t === "summary" && m[2] !== "bucket");
}
