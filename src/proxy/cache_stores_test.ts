import assert from "node:assert/strict";
import { CacheStores } from "./cache_stores.ts";
import type { StoredResponse } from "../domain/response_cache.ts";
import type { Config } from "../config/schema.ts";

function stored(bytes: number): StoredResponse {
  return {
    status: 200,
    statusText: "",
    headers: [],
    body: new Uint8Array(bytes),
    requestTime: 0,
    responseTime: 0,
    initialAge: 0,
    lifetime: 1000,
    noCache: false,
    staleIfError: 0,
    staleWhileRevalidate: 0,
    mustRevalidate: false,
    etag: null,
    lastModified: null,
  };
}

const cache = { max_size: 1 << 20, max_entries: 100, max_object_size: 1 << 16 };

Deno.test("CacheStores: routes share the top-level bound, least recently used of any first", () => {
  const caches = new CacheStores();
  caches.share(5000);
  const a = caches.policyFor("/a", { cache })!.store;
  const b = caches.policyFor("/b", { cache })!.store;
  a.set("a1", { names: [], vary: "", value: stored(2000) });
  a.set("a2", { names: [], vary: "", value: stored(2000) });
  b.set("b1", { names: [], vary: "", value: stored(2000) });
  // Over 5000 bytes together: a1, the least recently used of both, went.
  assert.equal(a.size, 1);
  assert.equal(a.get("a1", ""), undefined);
  assert.equal(b.size, 1);
  // A smaller bound evicts once the snapshot built with it serves; the same bound keeps the stores.
  caches.share(2500);
  assert.equal(a.size + b.size, 2, "the serving snapshot's bound holds until then");
  caches.retain(
    {
      cache: { max_size: 2500 },
      routes: { "/a": { cache }, "/b": { cache } },
    } as unknown as Config,
  );
  assert.equal(a.size + b.size, 1);
  assert.equal(caches.policyFor("/b", { cache })!.store, b);
  // Without the top-level bound, the routes start over with stores of their own.
  caches.share(undefined);
  const b2 = caches.policyFor("/b", { cache })!.store;
  assert.notEqual(b2, b);
  assert.equal(b2.capacity, 1 << 20);
});

Deno.test("CacheStores: without a top-level bound each store keeps its own", () => {
  const caches = new CacheStores();
  caches.share(undefined);
  const a = caches.policyFor("/a", { cache: { ...cache, max_size: 3000 } })!.store;
  const b = caches.policyFor("/b", { cache: { ...cache, max_size: 3000 } })!.store;
  a.set("a1", { names: [], vary: "", value: stored(2000) });
  b.set("b1", { names: [], vary: "", value: stored(2000) });
  assert.equal(a.size + b.size, 2);
});

Deno.test("CacheStores: a changed route's old store keeps serving, its entries first out of the pool", () => {
  const caches = new CacheStores();
  caches.share(5000);
  const old = caches.policyFor("/a", { cache })!.store;
  old.set("a1", { names: [], vary: "", value: stored(2000) });
  // A reload that changes the route (and may yet fail): the snapshot still serving keeps its entry.
  const next = caches.policyFor("/a", { cache: { ...cache, max_entries: 50 } })!.store;
  assert.notEqual(next, old);
  assert.ok(old.get("a1", ""));
  next.set("n1", { names: [], vary: "", value: stored(2000) });
  next.set("n2", { names: [], vary: "", value: stored(2000) });
  // The pool made room by dropping the old store's entry, the least recently used.
  assert.equal(old.size, 0);
  assert.equal(next.size, 2);
});

Deno.test("CacheStores: once a reload serves, a changed route's old entries leave the pool", () => {
  const caches = new CacheStores();
  caches.share(5000);
  const b = caches.policyFor("/b", { cache })!.store;
  const old = caches.policyFor("/a", { cache })!.store;
  b.set("b1", { names: [], vary: "", value: stored(2000) });
  old.set("a1", { names: [], vary: "", value: stored(2000) }); // used after b1
  // A reload that changes /a fails, and another one (the same change) succeeds.
  const changed = { cache: { ...cache, max_entries: 50 } };
  caches.policyFor("/a", changed);
  caches.policyFor("/b", { cache });
  assert.ok(old.get("a1", ""), "still served while the reload may fail");
  const next = caches.policyFor("/a", changed)!.store;
  caches.policyFor("/b", { cache });
  caches.retain({ routes: { "/a": changed, "/b": { cache } } } as unknown as Config);
  assert.equal(old.size, 0);
  // Room for the new store's entry without dropping /b's live one.
  next.set("n1", { names: [], vary: "", value: stored(2000) });
  assert.ok(b.get("b1", ""));
  assert.equal(next.size, 1);
});
