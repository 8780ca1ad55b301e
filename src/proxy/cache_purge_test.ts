import assert from "node:assert/strict";
import { info, setup } from "./_cache_fixture.ts";
import { purgeCache } from "./cache_purge.ts";
import { keyHost } from "./cache_request.ts";
import { noopMetrics } from "../ports.ts";
import type { Metrics } from "../ports.ts";

function fixture() {
  const c = setup((r, n) =>
    new Response(`${r.target} #${n}`, {
      headers: { "cache-control": "max-age=60", vary: "accept-language" },
    })
  );
  const purges: [string, string, number][] = [];
  const metrics: Metrics = { ...noopMetrics, cachePurge: (...a) => void purges.push(a) };
  const purge = (input: Parameters<typeof purgeCache>[0]) =>
    purgeCache(input, { snapshot: c.snapshot, metrics });
  const store = c.snapshot.router.entries[0].value.cache!.store;
  return { c, purges, purge, store };
}

Deno.test("purgeCache drops one URL with all its Vary variants, and counts it", async () => {
  const { c, purges, purge, store } = fixture();
  for (const lang of ["en", "fr"]) {
    await c.get("/page?id=1", { headers: { "accept-language": lang } });
  }
  await c.get("/page?id=2");
  await c.get("/other");
  assert.equal(store.size, 4);
  // Routed as a request is: the key is the upstream path (/base/page?id=1), the query counts.
  assert.deepEqual(purge({ url: "http://example.com/page?id=1" }), {
    ok: true,
    route: "/",
    purged: 2,
  });
  assert.equal(store.size, 2);
  assert.deepEqual(purges, [["/", "url", 2]]);
  // Stored over http, purged by its https URL too; dot segments are normalized as for requests.
  assert.deepEqual(purge({ url: "https://example.com/x/../page?id=2" }), {
    ok: true,
    route: "/",
    purged: 1,
  });
  const again = await c.get("/page?id=1", { headers: { "accept-language": "en" } });
  assert.match(again.res.headers.get("cache-status")!, /fwd=uri-miss/);
  assert.match((await c.get("/other")).res.headers.get("cache-status")!, /^prox; hit/);
});

Deno.test("purgeCache drops a URL prefix or a route's whole store", async () => {
  const { c, purges, purge, store } = fixture();
  for (const p of ["/static/a.css", "/static/b.js?v=2", "/staticky", "/api/x"]) await c.get(p);
  assert.deepEqual(purge({ prefix: "http://example.com/static/" }), {
    ok: true,
    route: "/",
    purged: 2,
  });
  assert.equal(store.size, 2);
  assert.deepEqual(purge({ route: "/" }), { ok: true, route: "/", purged: 2 });
  assert.equal(store.size, 0);
  assert.deepEqual(purges, [["/", "prefix", 2], ["/", "route", 2]]);
});

Deno.test("purgeCache says why it cannot purge", () => {
  const { purge } = fixture();
  assert.deepEqual(purge({ route: "/nope" }), {
    ok: false,
    status: 404,
    error: 'Cannot purge: no route "/nope"',
  });
  const bad = purge({ url: "not a url" });
  assert.equal(bad.ok === false && bad.status, 400);
  const ftp = purge({ url: "ftp://example.com/x" });
  assert.equal(ftp.ok === false && ftp.status, 400);
});

Deno.test("purgeCache reaches entries whose host was spelled with the default port, a dot or capitals", async () => {
  const { c, purge, store } = fixture();
  const tls = { ...info, tls: true };
  const get = async (url: string) => {
    const res = await c.handler(new Request(url), tls);
    await res.body?.cancel();
    return res.headers.get("cache-status")!;
  };
  // One origin, four spellings: one entry (the later ones are hits), not four.
  assert.match(await get("https://example.com:443/page"), /fwd=uri-miss/);
  assert.match(await get("http://Example.COM./page"), /^prox; hit/);
  assert.match(await get("http://example.com.:443/page"), /^prox; hit/);
  assert.match(await get("https://example.com/page"), /^prox; hit/);
  assert.equal(store.size, 1);
  // Another port is another origin.
  assert.match(await get("http://example.com:8443/page"), /fwd=uri-miss/);
  assert.equal(store.size, 2);
  assert.deepEqual(purge({ url: "https://example.com/page" }), { ok: true, route: "/", purged: 1 });
  assert.deepEqual(purge({ url: "http://example.com:8443/page" }), {
    ok: true,
    route: "/",
    purged: 1,
  });
  assert.equal(store.size, 0);
});

Deno.test("keyHost: lower case, no trailing dot, no default port; IPv6 literals keep their brackets", () => {
  assert.equal(keyHost("Example.COM.:443", "https"), "example.com");
  assert.equal(keyHost("example.com:80", "http"), "example.com");
  assert.equal(keyHost("example.com:443", "http"), "example.com:443");
  assert.equal(keyHost("example.com:", "http"), "example.com");
  assert.equal(keyHost("[::1]:443", "https"), "[::1]");
  assert.equal(keyHost("[::1]", "https"), "[::1]");
  assert.equal(keyHost("[::1]:8443", "https"), "[::1]:8443");
});

Deno.test("purgeCache by tag: the answer's tags are stored without their fields, a 304 may replace them", async () => {
  const c = setup((_r, n) =>
    new Response(n === 1 ? "body" : null, {
      status: n === 1 ? 200 : 304,
      headers: {
        "cache-control": "max-age=60",
        etag: '"e"',
        ...(n === 1 ? { "surrogate-key": "a b" } : n === 3 ? { "cache-tag": "c" } : {}),
      },
    })
  );
  const purges: [string, string, number][] = [];
  const metrics: Metrics = { ...noopMetrics, cachePurge: (...a) => void purges.push(a) };
  const store = c.snapshot.router.entries[0].value.cache!.store;
  const fetched = async () => {
    const { res, text } = await c.get("/t");
    assert.equal(text, "body");
    assert.equal(res.headers.get("surrogate-key"), null);
    assert.equal(res.headers.get("cache-tag"), null);
    return res.headers.get("cache-status")!;
  };
  assert.match(await fetched(), /uri-miss/);
  assert.match(await fetched(), /^prox; hit/);
  assert.equal(store.tagCount, 2);
  // Revalidated by a 304 naming no tags: the entry keeps its own.
  c.clock.t += 61_000;
  assert.match(await fetched(), /fwd-status=304/);
  assert.equal(store.tagCount, 2);
  // By one that names some: they replace them.
  c.clock.t += 61_000;
  assert.match(await fetched(), /fwd-status=304/);
  assert.equal(store.tagCount, 1);
  const purge = (tag: string) => purgeCache({ tag }, { snapshot: c.snapshot, metrics });
  assert.deepEqual(purge("a, b"), { ok: true, route: null, purged: 0 });
  assert.deepEqual(purge(" , "), { ok: false, status: 400, error: "Cannot purge: no tag given" });
  assert.deepEqual(purge("x,c"), { ok: true, route: null, purged: 1 });
  assert.equal(store.size, 0);
  assert.deepEqual(purges, [["/", "tag", 0], ["/", "tag", 1]]);
});

Deno.test("purgeCache: an answer fetched before a purge is not stored after it", async () => {
  // The purge says the origin changed: an answer whose request left before it may be the old
  // one, and storing it when it arrives would undo the purge until it expires.
  const held = Promise.withResolvers<Response>();
  const sent = Promise.withResolvers<void>();
  const c = setup((_r, n) => {
    if (n > 1) return new Response("new", { headers: { "cache-control": "max-age=60" } });
    sent.resolve();
    return held.promise;
  });
  const metrics = noopMetrics;
  const pending = c.handler(new Request("http://example.com/page"), info);
  await sent.promise;
  for (const input of [{ url: "http://example.com/page" }, { prefix: "http://example.com/" }]) {
    assert.equal(purgeCache(input, { snapshot: c.snapshot, metrics }).ok, true);
  }
  held.resolve(new Response("old", { headers: { "cache-control": "max-age=60" } }));
  assert.equal(await (await pending).text(), "old");
  const next = await c.get("/page");
  assert.equal(next.text, "new");
  assert.equal(c.sent.length, 2);
});

Deno.test("purgeCache by URL or prefix reaches the conditional routes of its prefix too", async () => {
  const c = setup(
    (r, n) => new Response(`${r.target} #${n}`, { headers: { "cache-control": "max-age=60" } }),
    {
      routes: `  "/#canary":
    type: proxy
    target: "http://10.1.1.2"
    cache: true
    match: { has_header: { name: X-Canary, value_matches: "^1$" } }
  "/api":
    type: proxy
    target: "http://10.1.1.3"
    cache: true
  "/api#beta":
    type: proxy
    target: "http://10.1.1.4"
    cache: true
    match: { has_header: { name: Cookie, value_matches: "beta=1" } }
  "/api#nocache":
    type: proxy
    target: "http://10.1.1.5"
    match: { query_has: { name: nocache } }
`,
    },
  );
  const store = (id: string) =>
    c.snapshot.router.entries.find((e) => e.value.id === id)!.value.cache!.store;
  const purges: [string, string, number][] = [];
  const metrics: Metrics = { ...noopMetrics, cachePurge: (...a) => void purges.push(a) };
  const purge = (input: Parameters<typeof purgeCache>[0]) =>
    purgeCache(input, { snapshot: c.snapshot, metrics });
  await c.get("/page");
  await c.get("/page", { headers: { "x-canary": "1" } });
  await c.get("/api/x");
  await c.get("/api/x", { headers: { cookie: "beta=1" } });
  assert.deepEqual([
    store("/").size,
    store("/#canary").size,
    store("/api").size,
    store("/api#beta").size,
  ], [1, 1, 1, 1]);
  // Which of the routes a request takes depends on its fields: the URL goes from each that may.
  assert.deepEqual(purge({ url: "http://example.com/page" }), { ok: true, route: "/", purged: 2 });
  assert.deepEqual([store("/").size, store("/#canary").size], [0, 0]);
  assert.deepEqual(purges, [["/", "url", 1], ["/#canary", "url", 1]]);
  // /api answers unconditionally below its own prefix: "/" and "/#canary" never see /api/x.
  assert.deepEqual(purge({ prefix: "http://example.com/api/" }), {
    ok: true,
    route: "/api",
    purged: 2,
  });
  assert.deepEqual([store("/api").size, store("/api#beta").size], [0, 0]);
  assert.deepEqual(purges.slice(2), [["/api", "prefix", 1], ["/api#beta", "prefix", 1]]);
});

Deno.test("purgeCache by prefix on a path_regex route: mapped when a rule maps it, else 400", async () => {
  const c = setup(
    (r, n) => new Response(`${r.target} #${n}`, { headers: { "cache-control": "max-age=60" } }),
    {
      extra:
        `path_regex: [{ match: '^/u/(.*)$', replace: "/users/$1" }, { match: '^/p/(\\d+)$', replace: "/posts/$1" }]`,
    },
  );
  const store = c.snapshot.router.entries[0].value.cache!.store;
  const purge = (input: Parameters<typeof purgeCache>[0]) =>
    purgeCache(input, { snapshot: c.snapshot, metrics: noopMetrics });
  for (const p of ["/u/1/a", "/u/2", "/p/7"]) await c.get(p);
  assert.equal(c.sent.map((r) => r.target).join(" ").includes("/base/users/1/a"), true);
  assert.deepEqual(purge({ prefix: "http://example.com/u/" }), { ok: true, route: "/", purged: 2 });
  // /p/ itself is no path the rules map: what its requests are stored under cannot be told.
  const p = purge({ prefix: "http://example.com/p/" });
  assert.equal(p.ok === false && p.status, 400);
  assert.match(p.ok === false ? p.error : "", /path_regex.*\?url=/);
  assert.equal(store.size, 1);
  assert.deepEqual(purge({ url: "http://example.com/p/7" }), { ok: true, route: "/", purged: 1 });
});
