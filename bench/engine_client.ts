// Reference point: Prox's own HTTP/1.1 engine (src/adapters/h1/) + Prox's upstream client and
// nothing else (no routing, rules or metrics): what the engine and the client cost without the
// pipeline. The engine's counterpart of client_proxy.ts.
// Usage: deno run -A bench/engine_client.ts PORT BACKEND_PORT
import { createUpstreamClient } from "../src/adapters/upstream_client.ts";
import { listenH1 } from "../src/adapters/h1/server.ts";
import { silentLogger } from "../src/ports.ts";
import type { HeaderList } from "../src/domain/header_list.ts";

const [port, backend] = Deno.args.map(Number);
const client = createUpstreamClient();
const timeouts = { connect: 5_000, responseHeader: 60_000, idle: 60_000 };
const origin = new URL(`http://127.0.0.1:${backend}`);
listenH1({ hostname: "127.0.0.1", port }, {
  logger: silentLogger,
  handler: (req) => {
    // The engine's requests are WireRequests: a HeaderList, and a URL made of Host and target.
    const url = req.url;
    return client.send({
      origin,
      target: url.slice(url.indexOf("/", 7)),
      method: req.method,
      headers: req.headers as unknown as HeaderList,
      body: null,
      timeouts,
      lean: true,
    });
  },
});
// bench/decompose.ts stops this process with SIGINT: exit normally so that --cpu-prof writes.
Deno.addSignalListener("SIGINT", () => Deno.exit(0));
