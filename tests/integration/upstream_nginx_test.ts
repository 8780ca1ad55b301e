// Debian's nginx as a real upstream no one here wrote: Prox's HTTP/1.1 client against it,
// including gzip passthrough, chunked bodies, keep-alive reuse and nginx closing idle connections.
import assert from "node:assert/strict";
import { interopTest } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { startNginx } from "./_nginx.ts";
import { createUpstreamClient } from "../../src/adapters/upstream_client.ts";

interopTest(
  "nginx as upstream: query, host, gzip bytes, chunked, HEAD and large bodies",
  ["nginx"],
  async () => {
    await using ngx = await startNginx(`
    keepalive_timeout 30s;
    default_type text/plain; gzip on; gzip_proxied any; gzip_types text/plain; gzip_min_length 10;
    location /echo { default_type text/plain; return 200 "$request_method $request_uri $http_host\\n"; }
    location /chunked { default_type text/plain; gzip on; chunked_transfer_encoding on;
      return 200 "$args"; }
  `);
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${ngx.url}", preserve_host: true }
`);
    // The test's own client must not decode gzip either: use Prox's HTTP/1.1 client.
    const client = createUpstreamClient();
    const get = (path: string, headers: Record<string, string> = {}, method = "GET") =>
      client.send({
        origin: new URL(prox.url),
        target: path,
        method,
        headers: new Headers({ host: "site.test", ...headers }),
        body: null,
        timeouts: { connect: 2000, responseHeader: 5000, idle: 5000 },
      });
    try {
      const echo = await get("/echo/a%20b?x=1&y=%2F");
      assert.equal(await echo.text(), "GET /echo/a%20b?x=1&y=%2F site.test\n");

      const big = await get("/big.txt", { "accept-encoding": "identity" });
      assert.equal((await big.text()).length, 300_000);

      // gzip from nginx passes through undecoded: decode it here and compare.
      const gz = await get("/big.txt", { "accept-encoding": "gzip" });
      assert.equal(gz.headers.get("content-encoding"), "gzip");
      const raw = await gz.arrayBuffer();
      assert.ok(raw.byteLength < 10_000, `compressed size ${raw.byteLength}`);
      const plain = await new Response(
        new Blob([raw]).stream().pipeThrough(new DecompressionStream("gzip")),
      ).text();
      assert.equal(plain, "x".repeat(300_000));

      const chunked = await get("/chunked?abcdefghijklmnopqrstuvwxyz", {
        "accept-encoding": "gzip",
      });
      assert.equal(chunked.headers.get("content-encoding"), "gzip");
      const unzipped = await new Response(
        chunked.body!.pipeThrough(new DecompressionStream("gzip")),
      ).text();
      assert.equal(unzipped, "abcdefghijklmnopqrstuvwxyz");

      for (let i = 0; i < 20; i++) {
        assert.equal(await (await get(`/echo/${i}`)).text(), `GET /echo/${i} site.test\n`);
      }
      const head = await get("/big.txt", {}, "HEAD");
      assert.equal(head.headers.get("content-length"), "300000");
      assert.equal(head.body, null);
    } finally {
      await client.close();
    }
  },
);

interopTest("nginx as upstream: connections nginx closes while idle are not used again", [
  "nginx",
], async () => {
  await using ngx = await startNginx(`
    keepalive_timeout 100ms;
    location / { default_type text/plain; return 200 "ok $connection\\n"; }
  `);
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${ngx.url}" }
`);
  const conns = new Set<string>();
  for (let i = 0; i < 5; i++) {
    const r = await fetch(`${prox.url}/`);
    assert.equal(r.status, 200);
    conns.add(await r.text());
    // Let nginx's keepalive_timeout pass: the next request must not fail on a dead connection.
    await new Promise((r) => setTimeout(r, 150));
  }
  assert.equal(conns.size, 5, "a new upstream connection each time");
});
