import assert from "node:assert/strict";
import { startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";

Deno.test("proxy keeps the query string byte for byte and rewrites the path", async () => {
  await using up = await startUpstream((req) => {
    const u = new URL(req.url);
    return Response.json({ path: u.pathname, search: u.search, host: req.headers.get("host") });
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/proxy":
    type: proxy
    target: "${up.url}"
    path_rewrite: "/anything"
`);
  const res = await fetch(`${prox.url}/proxy/get?a=1&b=%20x&c`);
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.path, "/anything/get");
  assert.equal(body.search, "?a=1&b=%20x&c");
  assert.equal(body.host, `127.0.0.1:${up.port}`);
});

Deno.test("routes match on segment boundaries, longest prefix first", async () => {
  await using up = await startUpstream((req) => new Response(new URL(req.url).pathname));
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/api":
    type: proxy
    target: "${up.url}/a"
  "/api/v1":
    type: proxy
    target: "${up.url}/b"
`);
  assert.equal(await (await fetch(`${prox.url}/api/x`)).text(), "/a/x");
  assert.equal(await (await fetch(`${prox.url}/api/v1/x`)).text(), "/b/x");
  assert.equal(await (await fetch(`${prox.url}/api`)).text(), "/a");
  const miss = await fetch(`${prox.url}/apix`);
  assert.equal(miss.status, 404);
  assert.match(await miss.text(), /request id: /);
});

Deno.test("an unreachable upstream gives 502 without leaking its address", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://127.0.0.1:${port}"
`);
  const res = await fetch(`${prox.url}/x`);
  assert.equal(res.status, 502);
  const text = await res.text();
  assert.ok(!text.includes(String(port)), text);
  assert.ok(res.headers.get("x-request-id"));
});

Deno.test("redirect carries the remaining path and the query", async () => {
  await using prox = await startProxy(`
routes:
  "/old":
    type: redirect
    target: "https://example.com/new"
    status_code: 301
  "/":
    type: redirect
    target: "/static"
    status_code: 302
`);
  const a = await fetch(`${prox.url}/old/a?x=1`, { redirect: "manual" });
  assert.equal(a.status, 301);
  assert.equal(a.headers.get("location"), "https://example.com/new/a?x=1");
  await a.body?.cancel();
  const b = await fetch(`${prox.url}/foo`, { redirect: "manual" });
  assert.equal(b.headers.get("location"), "/static/foo");
  await b.body?.cancel();
});
