// Reference point: Deno.serve + Prox's upstream client and nothing else (no routing, rules or
// metrics), to separate the client's cost from the pipeline's. With TLS_PORT, CERT and KEY it also
// serves over TLS (h2 by ALPN), the HTTP/2 floor.
// Usage: deno run -A bench/client_proxy.ts PORT BACKEND_PORT [TLS_PORT CERT KEY]
import { createUpstreamClient } from "../src/adapters/upstream_client.ts";

const [port, backend, tlsPort] = Deno.args.map(Number);
const client = createUpstreamClient();
const timeouts = { connect: 5_000, responseHeader: 60_000, idle: 60_000 };
const withSignal = Deno.env.get("CLIENT_PROXY_SIGNAL") === "1";
const withCompleted = Deno.env.get("CLIENT_PROXY_COMPLETED") === "1";
// HTTP/2 carries the authority as `:authority`, which Deno does not turn into a Host field; an
// HTTP/1.1 upstream needs one.
const withHost = (h: Headers, host: string) => {
  const out = new Headers(h);
  out.set("host", host);
  return out;
};
const origin = new URL(`http://127.0.0.1:${backend}`);
const forward = (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => {
  if (withCompleted) info.completed.then(() => {}, () => {});
  const u = new URL(req.url);
  return client.send({
    origin,
    target: u.pathname + u.search,
    method: req.method,
    headers: req.headers.has("host") ? req.headers : withHost(req.headers, u.host),
    body: req.body,
    timeouts,
    signal: withSignal ? req.signal : undefined,
  });
};
Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, forward);
if (tlsPort) {
  const [cert, key] = [Deno.readTextFileSync(Deno.args[3]), Deno.readTextFileSync(Deno.args[4])];
  Deno.serve({ hostname: "127.0.0.1", port: tlsPort, cert, key, onListen() {} }, forward);
}
// bench/profile.ts stops this process with SIGINT: exit normally so that --cpu-prof writes its file.
Deno.addSignalListener("SIGINT", () => Deno.exit(0));
