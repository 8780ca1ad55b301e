// Prox's own HTTP/1.1 engine with an upload queued for an upstream connection (upstream_pool):
// the engine reads ahead up to 64 KiB of its body, so that a client that goes away meanwhile is
// seen and leaves the queue, and what it read is the body's start when the upload goes on.
import assert from "node:assert/strict";
import { waitFor } from "../_harness.ts";
import { onProxEngines } from "./_proxy.ts";
import { heldUpstream, holdFirst, pattern, queuedProxy, queuedUploadHead } from "./_held.ts";
import { readFrom } from "./_raw_client.ts";

const enc = new TextEncoder();

// Deno.serve does not read a body nobody asked for: these are the engine's.
onProxEngines();

// (A body within the replay cap, 64 KiB, or a chunked one, is read before an upstream is chosen:
// its own reads see the client leave.)
Deno.test("an upload over 64 KiB waiting for an upstream connection leaves the queue when its client goes", async () => {
  await using up = await heldUpstream();
  await using prox = await queuedProxy(up.url);
  const { first } = await holdFirst(up, prox);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    const head = "POST /queued HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n";
    await c.write(enc.encode(head + "x".repeat(1000)));
    await waitFor(async () => (await prox.pool()).waiting === 1, { what: "the upload queued" });
  } finally {
    c.close();
  }
  await waitFor(async () => (await prox.pool()).waiting === 0, { what: "the queue to empty" });
  up.release();
  assert.equal(await (await first).text(), "late");
  assert.deepEqual(up.arrived, ["/first"]);
});

Deno.test("an upload that waited for an upstream connection reaches it whole, the bytes read ahead first", async () => {
  await using up = await heldUpstream();
  await using prox = await queuedProxy(up.url);
  const { first } = await holdFirst(up, prox);
  const body = pattern(300_000);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(queuedUploadHead(body.length));
    // Some of it before the wait, the rest (more than is read ahead) while it waits.
    await c.write(body.subarray(0, 5000));
    await waitFor(async () => (await prox.pool()).waiting === 1, { what: "the upload queued" });
    const rest = (async () => {
      for (let off = 5000; off < body.length;) off += await c.write(body.subarray(off));
    })();
    up.release();
    assert.equal(await (await first).text(), "late");
    await waitFor(() => up.arrived.length === 2, { what: "the upload at the upstream" });
    await rest;
    await waitFor(() => up.bodies.length === 2, { what: "the upload's body read upstream" });
    up.release();
    assert.match(await readFrom(c, /\r\n\r\nlate/), /^HTTP\/1\.1 200 /);
    assert.equal(up.bodies[1].length, body.length);
    assert.deepEqual(up.bodies[1], body);
  } finally {
    c.close();
  }
});

Deno.test("a queued upload that waits for its 100 Continue is not read ahead: it gets the 100 once it goes on", async () => {
  await using up = await heldUpstream();
  await using prox = await queuedProxy(up.url);
  const { first } = await holdFirst(up, prox);
  const body = pattern(100_000);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(queuedUploadHead(body.length, "Expect: 100-continue\r\n"));
    await waitFor(async () => (await prox.pool()).waiting === 1, { what: "the upload queued" });
    up.release();
    assert.equal(await (await first).text(), "late");
    assert.match(await readFrom(c, /\r\n\r\n/), /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    for (let off = 0; off < body.length;) off += await c.write(body.subarray(off));
    await waitFor(() => up.bodies.length === 2, { what: "the upload's body read upstream" });
    up.release();
    assert.match(await readFrom(c, /\r\n\r\nlate/), /^HTTP\/1\.1 200 /);
    assert.deepEqual(up.bodies[1], body);
  } finally {
    c.close();
  }
});
