// The pool figures the admin API shows (busy, idle, waiting, opened, reused per origin), against a
// real upstream.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../../tests/_harness.ts";
import { createUpstreamClient, originOfKey } from "./upstream_client.ts";
import { rawServer, readRequest, request, write } from "../../tests/_upstream_peers.ts";

Deno.test("upstream client pools() counts connections opened, reused, busy, idle and waiting", async () => {
  const gates: (() => void)[] = [];
  await using up = await startUpstream(async (req) => {
    if (new URL(req.url).pathname === "/hold") await new Promise<void>((r) => gates.push(r));
    return new Response("ok");
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 2, queueLimit: 8 });
  const origin = new URL(up.url).origin;
  try {
    assert.deepEqual(client.pools(), []);
    for (let i = 0; i < 3; i++) await (await client.send(request(`${up.url}/`))).text();
    assert.deepEqual(client.pools(), [{
      origin,
      busy: 0,
      idle: 1,
      waiting: 0,
      opened: 1,
      reused: 2,
      h2Streams: null,
    }]);
    // Three held requests over two connections: one of them waits.
    const held = [0, 1, 2].map(() => client.send(request(`${up.url}/hold`)));
    await waitFor(() => gates.length === 2 && client.pools()[0]?.waiting === 1, {
      what: "two requests upstream, one waiting",
    });
    assert.deepEqual(client.pools()[0], {
      origin,
      busy: 2,
      idle: 0,
      waiting: 1,
      opened: 2,
      reused: 3,
      h2Streams: null,
    });
    for (let i = 0; i < 3; i++) {
      await waitFor(() => gates.length > 0);
      gates.shift()!();
    }
    for (const p of held) await (await p).text();
    await waitFor(() => client.pools()[0].busy === 0, { what: "both connections parked" });
    assert.deepEqual(client.pools()[0], {
      origin,
      busy: 0,
      idle: 2,
      waiting: 0,
      opened: 2,
      reused: 4,
      h2Streams: null,
    });
  } finally {
    await client.close();
  }
});

Deno.test("upstream client pools() keeps a closed pool's totals, and counts PROXY-protocol connections", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  // No idle connection kept: each request opens one, and the pool is gone in between.
  const client = createUpstreamClient({ maxIdlePerUpstream: 0 });
  const origin = new URL(up.url).origin;
  try {
    for (let i = 0; i < 2; i++) await (await client.send(request(`${up.url}/`))).text();
    assert.deepEqual(client.stats(), [], "no live pool");
    assert.deepEqual(client.pools(), [{
      origin,
      busy: 0,
      idle: 0,
      waiting: 0,
      opened: 2,
      reused: 0,
      h2Streams: null,
    }]);
  } finally {
    await client.close();
  }
  // A PROXY header: one connection per request, under the same origin (its own pool key).
  let conns = 0;
  await using pp = rawServer(async (c) => {
    conns++;
    while (await readRequest(c)) await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
  });
  const c2 = createUpstreamClient();
  try {
    const header = new TextEncoder().encode("PROXY UNKNOWN\r\n");
    for (let i = 0; i < 3; i++) {
      await (await c2.send(request(`${pp.url}/`, { proxyHeader: header }))).text();
    }
    assert.equal(conns, 3);
    const rows = c2.pools();
    assert.equal(rows.length, 1);
    assert.equal(rows[0].origin, new URL(pp.url).origin);
    assert.equal(rows[0].opened, 3);
    assert.equal(rows[0].reused, 0);
  } finally {
    await c2.close();
  }
});

Deno.test("originOfKey names the upstream origin of every kind of pool key", () => {
  assert.equal(originOfKey("127.0.0.1:8080"), "http://127.0.0.1:8080");
  assert.equal(originOfKey("127.0.0.1:8080|proxy"), "http://127.0.0.1:8080");
  assert.equal(originOfKey("[::1]:81"), "http://[::1]:81");
  assert.equal(originOfKey("example.com"), "http://example.com");
  assert.equal(originOfKey("https://a.test:8443|0|b.test|3"), "https://a.test:8443");
  assert.equal(originOfKey("https://a.test|proxy"), "https://a.test");
});
