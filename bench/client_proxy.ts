// Reference point: Deno.serve + Prox's upstream client and nothing else (no routing, rules or
// metrics), to separate the client's cost from the pipeline's.
// Usage: deno run -A bench/client_proxy.ts PORT BACKEND_PORT
import { createUpstreamClient } from "../src/adapters/upstream_client.ts";

const [port, backend] = Deno.args.map(Number);
const client = createUpstreamClient();
const timeouts = { connect: 5_000, responseHeader: 60_000, idle: 60_000 };
const withSignal = Deno.env.get("CLIENT_PROXY_SIGNAL") === "1";
const withCompleted = Deno.env.get("CLIENT_PROXY_COMPLETED") === "1";
Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, (req, info) => {
  if (withCompleted) info.completed.then(() => {}, () => {});
  const u = new URL(req.url);
  return client.send({
    url: new URL(`http://127.0.0.1:${backend}${u.pathname}${u.search}`),
    method: req.method,
    headers: req.headers,
    body: req.body,
    timeouts,
    signal: withSignal ? req.signal : undefined,
  });
});
