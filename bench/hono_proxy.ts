// Issue 12's other baseline: Hono's proxy helper (`hono/proxy`, fetch() underneath) on
// Deno.serve, forwarding every request with its method, headers and body, as Hono's docs show.
// Usage: deno run -A --config=deno.json bench/hono_proxy.ts PORT BACKEND_PORT
import { Hono } from "hono";
import { proxy } from "hono/proxy";

const [port, backend] = Deno.args.map(Number);
const app = new Hono();
app.all("*", (c) => {
  const u = new URL(c.req.url);
  return proxy(`http://127.0.0.1:${backend}${u.pathname}${u.search}`, { ...c.req });
});
Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, app.fetch);
