import assert from "node:assert/strict";
import { ProxyError } from "../domain/errors.ts";
import { createRequestSlots, releasedWithBody } from "./upstream_slots.ts";
import type { Release } from "./upstream_slots.ts";

const limits = { maxIdlePerUpstream: 0, idleTimeout: 0, queueTimeout: 0 };

Deno.test("createRequestSlots: in flight up to the limit, then FIFO waiters up to queueLimit, then 503", async () => {
  const slots = createRequestSlots({ ...limits, maxConnectionsPerUpstream: 1, queueLimit: 2 });
  const first = slots.acquire("o") as Release;
  assert.equal(typeof first, "function");
  const order: number[] = [];
  const a = (slots.acquire("o") as Promise<Release>).then((r) => (order.push(1), r));
  const b = (slots.acquire("o") as Promise<Release>).then((r) => (order.push(2), r));
  await assert.rejects(
    Promise.resolve(slots.acquire("o")),
    (e) => e instanceof ProxyError && e.kind === "overloaded" && e.sentNothing,
  );
  assert.deepEqual(slots.stats("o"), { active: 1, queued: 2 });
  first();
  first(); // a second call frees nothing more
  (await a)();
  (await b)();
  assert.deepEqual(order, [1, 2]);
  assert.deepEqual(slots.stats("o"), { active: 0, queued: 0 });
});

Deno.test("createRequestSlots: a waiter leaves on queueTimeout (503) or when its client goes (499)", async () => {
  const slots = createRequestSlots({
    ...limits,
    maxConnectionsPerUpstream: 1,
    queueLimit: 5,
    queueTimeout: 20,
  });
  const held = slots.acquire("o") as Release;
  await assert.rejects(
    Promise.resolve(slots.acquire("o")),
    (e) => e instanceof ProxyError && e.kind === "overloaded" && /within 20 ms/.test(e.message),
  );
  const ac = new AbortController();
  const gone = slots.acquire("o", ac.signal);
  ac.abort();
  await assert.rejects(
    Promise.resolve(gone),
    (e) => e instanceof ProxyError && e.kind === "client_gone",
  );
  assert.deepEqual(slots.stats("o"), { active: 1, queued: 0 });
  held();
  assert.deepEqual(slots.stats("o"), { active: 0, queued: 0 });
});

Deno.test("releasedWithBody releases once the body ends or is cancelled, at once without one", async () => {
  let released = 0;
  const release = () => void released++;
  await releasedWithBody(new Response("done"), release).text();
  assert.equal(released, 1);
  const endless = new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new Uint8Array(1)) });
  const r = releasedWithBody(new Response(endless), release).body!.getReader();
  await r.read();
  assert.equal(released, 1);
  await r.cancel();
  assert.equal(released, 2);
  releasedWithBody(new Response(null, { status: 204 }), release);
  assert.equal(released, 3);
});
