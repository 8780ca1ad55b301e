// The response cache serving stale entries: stale-while-revalidate (RFC 5861 §3) with its
// background refresh, on the fixture's fake clock and upstream.
import assert from "node:assert/strict";
import { waitFor } from "../../tests/_harness.ts";
import { setup } from "./_cache_fixture.ts";
import { REFRESH_MAX } from "./cache.ts";
import { backOff, mayRefresh, REFRESH_BACKOFF_MAX, REFRESH_BACKOFF_MS } from "./cache_stale.ts";

const SWR = "max-age=10, stale-while-revalidate=30";

/** Waits until no background refresh is under way on the fixture's route. */
function refreshed(c: ReturnType<typeof setup>) {
  const policy = c.snapshot.router.entries[0].value.cache!;
  return waitFor(() => policy.refreshing.size === 0 && policy.filling.size === 0, {
    what: "the background refresh to end",
  });
}

Deno.test("cache: stale-while-revalidate serves the stale entry at once and refreshes it", async () => {
  const c = setup((_r, n) =>
    n === 1
      ? new Response("v1", { headers: { "cache-control": SWR, etag: '"1"' } })
      : new Response(null, { status: 304, headers: { "cache-control": SWR } })
  );
  await c.get("/s");
  c.clock.t += 15_000;
  const stale = await c.get("/s");
  assert.equal(stale.text, "v1");
  assert.equal(
    stale.res.headers.get("cache-status"),
    "prox; hit; ttl=-5; fwd=stale; detail=stale-while-revalidate",
  );
  assert.equal(stale.res.headers.get("age"), "15");
  await refreshed(c);
  assert.equal(c.sent.length, 2);
  assert.equal(c.sent[1].headers.get("if-none-match"), '"1"');
  // The 304 made it fresh again.
  const fresh = await c.get("/s");
  assert.equal(fresh.res.headers.get("cache-status"), "prox; hit; ttl=10");
  assert.equal(fresh.text, "v1");
  assert.deepEqual(c.results, ["miss", "updating", "hit"]);
  assert.deepEqual(c.refreshes, ["refreshed"]);
});

Deno.test("cache: one background refresh per key; requests meanwhile get the stale entry", async () => {
  const gate = Promise.withResolvers<void>();
  const c = setup(async (_r, n) => {
    if (n === 2) await gate.promise;
    return new Response(`v${n}`, { headers: { "cache-control": SWR } });
  });
  await c.get("/one");
  c.clock.t += 12_000;
  for (let i = 0; i < 5; i++) {
    const r = await c.get("/one");
    assert.equal(r.text, "v1");
    assert.match(r.res.headers.get("cache-status")!, /detail=stale-while-revalidate/);
  }
  assert.equal(c.sent.length, 2);
  gate.resolve();
  await refreshed(c);
  // A new full answer replaced the entry.
  const next = await c.get("/one");
  assert.equal(next.text, "v2");
  assert.match(next.res.headers.get("cache-status")!, /^prox; hit; ttl=10/);
  assert.equal(c.sent.length, 2);
  assert.deepEqual(c.refreshes, ["replaced"]);
});

Deno.test("cache: a failed refresh keeps the stale entry until its window ends", async () => {
  let down = false;
  const c = setup((_r, n) =>
    down
      ? new Response("down", { status: 503 })
      : new Response(`v${n}`, { headers: { "cache-control": SWR } })
  );
  await c.get("/f");
  down = true;
  c.clock.t += 20_000;
  assert.equal((await c.get("/f")).text, "v1");
  await refreshed(c);
  assert.equal(c.warnings.length, 1);
  assert.match(c.warnings[0], /Background refresh/);
  // Still in the window: served stale again (and another refresh tried).
  c.clock.t += 19_000;
  assert.equal((await c.get("/f")).text, "v1");
  await refreshed(c);
  assert.equal(c.sent.length, 3);
  // Past it, the request waits for the upstream as without stale-while-revalidate.
  c.clock.t += 2_000;
  const late = await c.get("/f");
  assert.equal(late.res.status, 503);
  assert.match(late.res.headers.get("cache-status")!, /^prox; fwd=stale; fwd-status=503/);
  assert.deepEqual(c.refreshes, ["failed", "failed"]);
});

Deno.test("cache: after a failed refresh no new one starts for that entry for a while", async () => {
  let down = false;
  const c = setup((_r, n) =>
    down
      ? new Response("down", { status: 503 })
      : new Response(`v${n}`, { headers: { "cache-control": SWR } })
  );
  await c.get("/fast");
  await c.get("/other");
  down = true;
  c.clock.t += 15_000;
  assert.equal((await c.get("/fast")).text, "v1");
  await refreshed(c);
  assert.equal(c.sent.length, 3);
  // The upstream failed at once: the requests that follow get the stale entry, none asks again.
  for (let i = 0; i < 5; i++) {
    c.clock.t += 300;
    const r = await c.get("/fast");
    assert.match(r.res.headers.get("cache-status")!, /detail=stale-while-revalidate/);
    await refreshed(c);
  }
  assert.equal(c.sent.length, 3);
  // Another entry is not held back by it.
  assert.equal((await c.get("/other")).text, "v2");
  await refreshed(c);
  assert.equal(c.sent.length, 4);
  // Once the back-off has passed, the next request tries again.
  c.clock.t += REFRESH_BACKOFF_MS;
  assert.equal((await c.get("/fast")).text, "v1");
  await refreshed(c);
  assert.equal(c.sent.length, 5);
  assert.deepEqual(c.refreshes, ["failed", "failed", "failed"]);
});

Deno.test("cache: a refresh whose body fails midway keeps the stale entry", async () => {
  const c = setup((_r, n) =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(ctl) {
          ctl.enqueue(new TextEncoder().encode(`v${n}`));
          if (n === 1) ctl.close();
          else ctl.error(new Error("upstream reset"));
        },
      }),
      { headers: { "cache-control": SWR } },
    )
  );
  await c.get("/b");
  c.clock.t += 15_000;
  assert.equal((await c.get("/b")).text, "v1");
  await refreshed(c);
  assert.deepEqual(c.refreshes, ["failed"]);
  const again = await c.get("/b");
  assert.equal(again.text, "v1");
  assert.match(again.res.headers.get("cache-status")!, /detail=stale-while-revalidate/);
});

Deno.test("cache: stale_while_revalidate on the route covers answers that state none", async () => {
  const c = setup(
    (r) =>
      new Response("x", {
        headers: {
          "cache-control": r.target.endsWith("/must")
            ? "max-age=10, must-revalidate"
            : "max-age=10",
        },
      }),
    { cache: "{ stale_while_revalidate: 20s }" },
  );
  await c.get("/d");
  await c.get("/must");
  c.clock.t += 25_000;
  assert.match(
    (await c.get("/d")).res.headers.get("cache-status")!,
    /^prox; hit; ttl=-15; fwd=stale/,
  );
  // must-revalidate forbids it; a client's no-cache asks for the upstream's answer.
  assert.match((await c.get("/must")).res.headers.get("cache-status")!, /^prox; fwd=stale;/);
  await refreshed(c);
  c.clock.t += 12_000;
  const forced = await c.get("/d", { headers: { "cache-control": "no-cache" } });
  assert.match(forced.res.headers.get("cache-status")!, /^prox; fwd=stale;/);
});

Deno.test("cache: background refreshes are bounded per route", async () => {
  const gate = Promise.withResolvers<void>();
  const c = setup(async (_r, n) => {
    if (n > REFRESH_MAX + 5) await gate.promise;
    return new Response("x", { headers: { "cache-control": SWR } });
  });
  const keys = REFRESH_MAX + 5;
  for (let i = 0; i < keys; i++) await c.get(`/k?${i}`);
  c.clock.t += 15_000;
  for (let i = 0; i < keys; i++) {
    assert.match(
      (await c.get(`/k?${i}`)).res.headers.get("cache-status")!,
      /stale-while-revalidate/,
    );
  }
  assert.equal(c.sent.length, keys + REFRESH_MAX);
  gate.resolve();
  await refreshed(c);
});

Deno.test("backOff: remembers at most REFRESH_BACKOFF_MAX entries, the oldest forgotten first", () => {
  const policy = setup(() => new Response("x")).snapshot.router.entries[0].value.cache!;
  for (let i = 0; i <= REFRESH_BACKOFF_MAX; i++) backOff(policy, `k${i}`, 0);
  assert.equal(policy.refreshBackoff.size, REFRESH_BACKOFF_MAX);
  assert.equal(mayRefresh(policy, "k0", 1), true);
  assert.equal(mayRefresh(policy, `k${REFRESH_BACKOFF_MAX}`, 1), false);
  // An expired one is dropped when next asked about.
  assert.equal(mayRefresh(policy, "k1", REFRESH_BACKOFF_MS), true);
  assert.equal(policy.refreshBackoff.size, REFRESH_BACKOFF_MAX - 1);
  // A few bytes each, whatever the key's length (a URL may be 64 KiB).
  backOff(policy, "x".repeat(32 * 1024), 0);
  for (const k of policy.refreshBackoff.keys()) assert.ok(String(k).length < 64);
});
