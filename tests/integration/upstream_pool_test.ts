// upstream_pool through the real proxy: a bounded pool per upstream, and load shedding as 503
// with Retry-After once no connection and no queue slot is left (FIFO order: unit tests).
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { rawServer, readRequest, write } from "../_upstream_peers.ts";

Deno.test("upstream_pool: past queue_limit requests are shed with 503 and Retry-After", async () => {
  const gates: (() => void)[] = [];
  await using up = await startUpstream(async () => {
    await new Promise<void>((r) => gates.push(r));
    return new Response("slow");
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 0 }
routes: { "/": { type: proxy, target: "${up.url}", retries: { attempts: 0 } } }
`);
  const first = fetch(`${prox.url}/1`);
  await waitFor(() => gates.length === 1, { what: "first request at the upstream" });
  const shed = await fetch(`${prox.url}/2`);
  assert.equal(shed.status, 503);
  assert.equal(shed.headers.get("retry-after"), "1");
  assert.match(await shed.text(), /overloaded/);
  gates.shift()!();
  assert.equal(await (await first).text(), "slow");
  // The connection is free again: the next request goes through.
  const next = fetch(`${prox.url}/3`);
  await waitFor(() => gates.length === 1, { what: "next request at the upstream" });
  gates.shift()!();
  assert.equal(await (await next).text(), "slow");
});

Deno.test("upstream_pool: a connection is not reused once it idled near the upstream's Keep-Alive timeout", async () => {
  // Each upstream reports the client port of every request: a new port, a new connection.
  const portsOf = (keepAlive: string | null) => {
    const ports: number[] = [];
    const serve = startUpstream((_req, info) => {
      ports.push(info.remoteAddr.port);
      return new Response("ok", { headers: keepAlive ? { "keep-alive": keepAlive } : {} });
    });
    return { ports, serve };
  };
  const short = portsOf("timeout=1"); // reused for 500 ms at most
  const plain = portsOf(null);
  await using a = await short.serve;
  await using b = await plain.serve;
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/short": { type: proxy, target: "${a.url}" }
  "/plain": { type: proxy, target: "${b.url}" }
`);
  const get = async (path: string) => await (await fetch(`${prox.url}${path}`)).text();
  for (const path of ["/short", "/plain"]) assert.equal(await get(path), "ok");
  // Right away, both are reused.
  for (const path of ["/short", "/plain"]) assert.equal(await get(path), "ok");
  assert.equal(short.ports[1], short.ports[0]);
  assert.equal(plain.ports[1], plain.ports[0]);
  // The time itself is what is tested: past half of the upstream's one-second timeout.
  await new Promise((r) => setTimeout(r, 700));
  for (const path of ["/short", "/plain"]) assert.equal(await get(path), "ok");
  assert.notEqual(short.ports[2], short.ports[1], "a fresh connection");
  assert.equal(plain.ports[2], plain.ports[1], "no Keep-Alive timeout: reused");
});

Deno.test("retries: a lone target that drops the connection gets the request once; a keep-alive race is retried", async () => {
  // Each connection: the first request is answered, the next one read and dropped without a word
  // (the upstream's idle timeout racing it); "/crash" is dropped at once (a request that kills it).
  const seen: string[] = [];
  await using srv = rawServer(async (c) => {
    for (let n = 0;; n++) {
      const req = await readRequest(c);
      if (!req) return;
      const line = req.slice(0, req.indexOf(" HTTP/"));
      seen.push(line);
      if (line.endsWith("/crash") || n > 0) return;
      await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    }
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${srv.url}"
`);
  const crash = await fetch(`${prox.url}/crash`);
  assert.equal(crash.status, 502);
  await crash.body?.cancel();
  assert.deepEqual(seen, ["GET /crash"], "not sent to the target it brought down again");
  seen.length = 0;
  for (const method of ["GET", "PUT"]) {
    const res = await fetch(`${prox.url}/x`, {
      method,
      body: method === "PUT" ? "b" : null,
    });
    assert.equal(await res.text(), "ok", method);
  }
  // The PUT met the GET's connection closed and went again on a new one.
  assert.deepEqual(seen, ["GET /x", "PUT /x", "PUT /x"]);
});

Deno.test("upstream_pool: a per-try timeout spent waiting in Prox's own queue does not count against the target", async () => {
  const gate = Promise.withResolvers<void>();
  let aHits = 0;
  await using a = await startUpstream(async () => {
    if (++aHits === 1) await gate.promise;
    return new Response("a");
  });
  await using b = await startUpstream(() => new Response("b"));
  await using prox = await startProxy(`
health_check: { enabled: false }
passive_health: { failures: 1 }
upstream_pool: { max_connections_per_upstream: 1 }
routes:
  "/hold": { type: proxy, target: "${a.url}", retries: { attempts: 0 } }
  "/":
    type: load_balance
    strategy: first
    targets: ["${a.url}", "${b.url}"]
    retries: { attempts: 1, per_try_timeout: 300ms }
`);
  // The only connection to A is busy: the next request for A waits in Prox's queue for it.
  const hold = fetch(`${prox.url}/hold`);
  try {
    await waitFor(() => aHits === 1, { what: "the first request at A" });
    const res = await fetch(`${prox.url}/x`);
    // Its per-try timeout passed in the queue: it went on to B, and A, which never saw it, is
    // not taken for a failing target (it was ejected for it: every later request went to B).
    assert.deepEqual([res.status, await res.text()], [200, "b"]);
    const [viewA] = prox.server.upstreams.list().filter((u) => u.id === a.url);
    assert.equal(viewA.ejections, 0);
  } finally {
    gate.resolve();
    await (await hold).body?.cancel();
  }
  assert.equal(await (await fetch(`${prox.url}/y`)).text(), "a");
});
