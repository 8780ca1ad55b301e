// The response cache and reloads (request `no-cache` or `max-age=0`, RFC 9111 §5.2.1.4): they wait
// for a fetch of their entry that left at or after they arrived, never for an older one.
import assert from "node:assert/strict";
import { waitFor } from "../../tests/_harness.ts";
import { info, setup } from "./_cache_fixture.ts";

/** An upstream whose answers after the first wait until the test lets them go, one by one. */
function gated() {
  const gates = new Map<number, PromiseWithResolvers<void>>();
  const gate = (n: number) => {
    if (!gates.has(n)) gates.set(n, Promise.withResolvers<void>());
    return gates.get(n)!;
  };
  const c = setup(async (_r, n) => {
    if (n > 1) await gate(n).promise;
    return new Response(`v${n}`, { headers: { "cache-control": "max-age=60", etag: `"${n}"` } });
  });
  const policy = c.snapshot.router.entries[0].value.cache!;
  const waiters = () => [...policy.filling.values()].reduce((n, f) => n + f.waiters, 0);
  const reload = (cc = "no-cache") =>
    c.handler(new Request("http://example.com/r", { headers: { "cache-control": cc } }), info);
  return { c, gate, waiters, reload, policy };
}

Deno.test("cache: reloads that arrive as a fetch of their entry leaves wait for it", async () => {
  const { c, gate, waiters, reload } = gated();
  await c.get("/r");
  c.clock.t += 1_000;
  const leader = reload();
  await waitFor(() => c.sent.length === 2, { what: "the leader's revalidation" });
  const followers = [...Array.from({ length: 4 }, () => reload()), reload("max-age=0")];
  await waitFor(() => waiters() === 5, { what: "the reloads to wait" });
  gate(2).resolve();
  assert.equal(await (await leader).text(), "v2");
  for (const f of await Promise.all(followers)) {
    assert.equal(f.headers.get("cache-status"), "prox; hit; ttl=60; collapsed");
    assert.equal(await f.text(), "v2");
  }
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: reloads that arrive after a fetch left wait for the next one, which one of them sends", async () => {
  const { c, gate, waiters, reload, policy } = gated();
  await c.get("/r");
  c.clock.t += 1_000;
  const first = reload();
  await waitFor(() => c.sent.length === 2, { what: "the first revalidation" });
  // Later: the answer in flight may predate them, so it is not theirs.
  c.clock.t += 1_000;
  const later = Array.from({ length: 4 }, () => reload());
  await waitFor(() => waiters() === 4, { what: "the later reloads to wait" });
  gate(2).resolve();
  assert.equal(await (await first).text(), "v2");
  // One of them asks again, the others wait for that.
  await waitFor(() => c.sent.length === 3 && waiters() === 3, { what: "the next fetch" });
  assert.equal(c.sent[2].headers.get("if-none-match"), '"2"');
  gate(3).resolve();
  const got = await Promise.all(later);
  const statuses = [];
  for (const r of got) {
    assert.equal(await r.text(), "v3");
    statuses.push(r.headers.get("cache-status"));
  }
  assert.equal(statuses.filter((s) => s === "prox; hit; ttl=60; collapsed").length, 3);
  assert.equal(c.sent.length, 3);
  assert.equal(policy.filling.size, 0);
});
