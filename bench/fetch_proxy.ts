// The naive baseline proxy of issue 12: Deno.serve forwarding with fetch() (original Host kept).
// Usage: deno run -A bench/fetch_proxy.ts PORT BACKEND_PORT
const [port, backend] = Deno.args.map(Number);
const client = Deno.createHttpClient({ allowHost: true });
Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, (req) => {
  const u = new URL(req.url);
  return fetch(`http://127.0.0.1:${backend}${u.pathname}${u.search}`, {
    method: req.method,
    headers: req.headers,
    body: req.body,
    redirect: "manual",
    client,
  });
});
