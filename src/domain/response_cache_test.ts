import assert from "node:assert/strict";
import {
  CachePool,
  entrySize,
  INVALIDATED_MAX,
  MAX_TAG_BYTES,
  MAX_TAGS,
  MAX_VARIANTS,
  parseTags,
  ResponseCache,
  varyKey,
} from "./response_cache.ts";
import type { StoredResponse } from "./response_cache.ts";

function stored(bytes: number, headers: [string, string][] = []): StoredResponse {
  return {
    status: 200,
    statusText: "",
    headers,
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

Deno.test("ResponseCache evicts the least recently used to stay under its byte bound", () => {
  const one = entrySize("a\n", stored(1000));
  const cache = new ResponseCache({ maxBytes: one * 3, maxEntries: 100 });
  for (const k of ["a", "b", "c"]) cache.set(k, { names: [], vary: "", value: stored(1000) });
  cache.get("a", ""); // a is now the most recently used
  cache.set("d", { names: [], vary: "", value: stored(1000) });
  assert.equal(cache.get("b", ""), undefined);
  assert.ok(cache.get("a", ""));
  assert.equal(cache.size, 3);
  assert.equal(cache.bytes, one * 3);
  // Too large for the whole store: refused, nothing evicted.
  assert.equal(cache.set("e", { names: [], vary: "", value: stored(one * 3) }), false);
  assert.equal(cache.size, 3);
});

Deno.test("ResponseCache keeps at most maxEntries", () => {
  const cache = new ResponseCache({ maxBytes: 1e9, maxEntries: 2 });
  for (const k of ["a", "b", "c"]) cache.set(k, { names: [], vary: "", value: stored(1) });
  assert.equal(cache.size, 2);
  assert.equal(cache.get("a", ""), undefined);
});

Deno.test("ResponseCache holds variants per Vary and invalidates them together", () => {
  const cache = new ResponseCache({ maxBytes: 1e9, maxEntries: 100 });
  const names = ["accept-language"];
  const en = varyKey(names, () => "en");
  const de = varyKey(names, () => "de");
  assert.notEqual(varyKey(names, () => null), varyKey(names, () => ""));
  cache.set("u", { names, vary: en, value: stored(1) });
  cache.set("u", { names, vary: de, value: stored(2) });
  assert.deepEqual(cache.varyOf("u"), names);
  assert.equal(cache.get("u", de)?.body.byteLength, 2);
  assert.equal(cache.invalidate("u"), 2);
  assert.equal(cache.size, 0);
  assert.equal(cache.bytes, 0);
  assert.equal(cache.varyOf("u"), undefined);
});

Deno.test("ResponseCache keeps at most MAX_VARIANTS variants of one URL, the least recently used going", () => {
  // An answer with Vary: User-Agent (or Cookie) has one variant per client kind: without a bound
  // per URL one page could take the whole store and push every other page out.
  const cache = new ResponseCache({ maxBytes: 1e9, maxEntries: 100_000 });
  const names = ["user-agent"];
  cache.set("other", { names: [], vary: "", value: stored(1) });
  const key = (i: number) => varyKey(names, () => `ua ${i}`);
  for (let i = 0; i < MAX_VARIANTS; i++) cache.set("u", { names, vary: key(i), value: stored(1) });
  assert.ok(cache.get("u", key(0))); // the first is now the most recently used of them
  for (let i = MAX_VARIANTS; i < MAX_VARIANTS + 50; i++) {
    cache.set("u", { names, vary: key(i), value: stored(1) });
  }
  assert.equal(cache.size, MAX_VARIANTS + 1);
  assert.ok(cache.get("u", key(0)));
  assert.equal(cache.get("u", key(1)), undefined);
  assert.ok(cache.get("u", key(MAX_VARIANTS + 49)));
  assert.ok(cache.get("other", ""));
  assert.equal(cache.invalidate("u"), MAX_VARIANTS);
  assert.equal(cache.size, 1);
});

Deno.test("ResponseCache.update replaces an entry in place and recounts its bytes", () => {
  const cache = new ResponseCache({ maxBytes: 1e9, maxEntries: 100 });
  cache.set("u", { names: [], vary: "", value: stored(10) });
  const before = cache.bytes;
  cache.update("u", "", stored(10, [["x", "1234"]]));
  assert.equal(cache.bytes, before + 1 + 4 + 4);
});

Deno.test("ResponseCache.update evicts others when the refreshed entry outgrows the bound", () => {
  const one = entrySize("a\n", stored(100));
  const cache = new ResponseCache({ maxBytes: one * 2 + 10, maxEntries: 100 });
  cache.set("a", { names: [], vary: "", value: stored(100) });
  cache.set("b", { names: [], vary: "", value: stored(100) });
  cache.update("b", "", stored(100, [["x-grown", "0123456789"]]));
  assert.equal(cache.get("a", ""), undefined);
  assert.ok(cache.get("b", ""));
  assert.ok(cache.bytes <= cache.maxBytes);
});

Deno.test("ResponseCache.update drops an entry that alone outgrows the bound", () => {
  // A 304's fields may add kilobytes: the refreshed entry must not hold the store past max_size
  // (as set refuses such an entry), alone or in a shared pool.
  const one = entrySize("a\n", stored(100));
  const cache = new ResponseCache({ maxBytes: one + 50, maxEntries: 100 });
  cache.set("a", { names: [], vary: "", value: stored(100) });
  cache.update("a", "", stored(100, [["x-grown", "y".repeat(200)]]));
  assert.equal(cache.get("a", ""), undefined);
  assert.equal(cache.bytes, 0);
  const pool = new CachePool(one + 50);
  const shared = new ResponseCache({ maxBytes: 1e9, maxEntries: 100, pool });
  shared.set("a", { names: [], vary: "", value: stored(100) });
  shared.update("a", "", stored(100, [["x-grown", "y".repeat(200)]]));
  assert.equal(shared.size, 0);
  assert.equal(pool.bytes, 0);
});

Deno.test("ResponseCache.invalidatePrefix drops every variant of the keys under a prefix", () => {
  const cache = new ResponseCache({ maxBytes: 1e9, maxEntries: 100 });
  for (const k of ["http h /s/a", "http h /s/b", "http h /t"]) {
    cache.set(k, { names: ["x"], vary: "1", value: stored(1) });
    cache.set(k, { names: ["x"], vary: "2", value: stored(1) });
  }
  assert.equal(cache.invalidatePrefix("http h /s/"), 4);
  assert.equal(cache.size, 2);
  assert.ok(cache.get("http h /t", "1"));
  assert.equal(cache.invalidatePrefix("http h /nothing"), 0);
});

Deno.test("ResponseCache stores sharing a CachePool evict the least recently used of any", () => {
  const one = entrySize("a\n", stored(1000));
  const pool = new CachePool(one * 3);
  const a = new ResponseCache({ maxBytes: one * 10, maxEntries: 100, pool });
  const b = new ResponseCache({ maxBytes: one * 10, maxEntries: 100, pool });
  a.set("a", { names: [], vary: "", value: stored(1000) });
  b.set("b", { names: [], vary: "", value: stored(1000) });
  a.set("c", { names: [], vary: "", value: stored(1000) });
  assert.equal(pool.bytes, one * 3);
  a.get("a", ""); // now b's entry is the least recently used of the pool
  b.set("d", { names: [], vary: "", value: stored(1000) });
  assert.equal(b.get("b", ""), undefined);
  assert.ok(a.get("a", "") && a.get("c", "") && b.get("d", ""));
  assert.equal(pool.bytes, one * 3);
  assert.equal(a.bytes + b.bytes, pool.bytes);
  // Each store's own bound still holds; dropping or emptying one frees the pool.
  a.invalidate("c");
  assert.equal(pool.bytes, one * 2);
  b.clear();
  assert.equal(pool.bytes, one);
  assert.equal(pool.head, pool.tail);
  // An entry larger than the pool is refused; a smaller pool bound is enforced at once.
  assert.equal(a.capacity, one * 3);
  assert.equal(a.set("big", { names: [], vary: "", value: stored(one * 3) }), false);
  b.set("e", { names: [], vary: "", value: stored(1000) });
  pool.maxBytes = one;
  ResponseCache.trim(pool);
  assert.equal(a.size + b.size, 1);
  assert.ok(b.get("e", ""));
});

Deno.test("ResponseCache.update counts a refreshed entry's new size in its pool", () => {
  const pool = new CachePool(1e9);
  const a = new ResponseCache({ maxBytes: 1e9, maxEntries: 100, pool });
  a.set("a", { names: [], vary: "", value: stored(10) });
  const before = pool.bytes;
  a.update("a", "", stored(10, [["x-more", "y".repeat(100)]]));
  assert.equal(pool.bytes, a.bytes);
  assert.ok(pool.bytes > before);
});

Deno.test("ResponseCache with a CachePool keeps its accounting under random operations", () => {
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const one = entrySize("k0\n", stored(100));
  const pool = new CachePool(one * 12);
  const stores = [0, 1, 2].map(() => new ResponseCache({ maxBytes: one * 6, maxEntries: 5, pool }));
  for (let i = 0; i < 5_000; i++) {
    const s = stores[rand(3)];
    const key = `k${rand(8)}`;
    switch (rand(7)) {
      case 0:
      case 1:
        s.set(key, {
          names: [],
          vary: String(rand(2)),
          value: { ...stored(rand(3) * 100), tags: [`t${rand(4)}`] },
        });
        break;
      case 2:
        s.get(key, String(rand(2)));
        break;
      case 3:
        s.update(key, String(rand(2)), stored(rand(3) * 100));
        break;
      case 4:
        s.invalidate(key);
        break;
      case 5:
        if (rand(20) === 0) s.clear();
        else s.delete(key, String(rand(2)));
        break;
      case 6:
        if (rand(2) === 0) s.invalidatePrefix(`k${rand(3)}`);
        else s.invalidateTags([`t${rand(4)}`]);
        break;
    }
    // The tag index holds no more tags than the entries carry (none once they are gone).
    for (const x of stores) assert.ok(x.tagCount <= Math.min(x.size, 4), `after operation ${i}`);
    const total = stores.reduce((n, x) => n + x.bytes, 0);
    assert.equal(pool.bytes, total, `after operation ${i}`);
    assert.ok(pool.bytes <= pool.maxBytes, `pool over its bound after operation ${i}`);
    for (const x of stores) assert.ok(x.bytes <= x.maxBytes && x.size <= x.maxEntries);
    // The pool's order holds exactly the stores' entries, linked both ways.
    // deno-lint-ignore no-explicit-any
    let node: any = pool.head;
    let count = 0;
    let prev = null;
    while (node) {
      assert.equal(node.poolPrev, prev);
      prev = node;
      node = node.poolNext;
      count++;
    }
    assert.equal(pool.tail, prev);
    assert.equal(count, stores.reduce((n, x) => n + x.size, 0), `after operation ${i}`);
  }
});

const tagged = (bytes: number, tags: string[]) => ({ ...stored(bytes), tags });

Deno.test("parseTags reads Surrogate-Key by spaces and Cache-Tag by commas, bounded", () => {
  assert.deepEqual(parseTags("a  b\tc, d", " e , a,,f g "), ["a", "b", "c", "d", "e", "f g"]);
  assert.deepEqual(parseTags(null, null), []);
  const many = Array.from({ length: MAX_TAGS + 5 }, (_, i) => `t${i}`);
  assert.deepEqual(parseTags(many.join(" "), null), many.slice(0, MAX_TAGS));
  // A tag over MAX_TAG_BYTES (UTF-8) is ignored, the others kept.
  assert.deepEqual(parseTags(`${"x".repeat(MAX_TAG_BYTES + 1)} ok`, "é".repeat(65)), ["ok"]);
  assert.deepEqual(parseTags("x".repeat(MAX_TAG_BYTES), null), ["x".repeat(MAX_TAG_BYTES)]);
});

Deno.test("ResponseCache.invalidateTags drops every entry with any of the tags", () => {
  const cache = new ResponseCache({ maxBytes: 1e9, maxEntries: 100 });
  cache.set("p1", { names: ["accept"], vary: "a", value: tagged(1, ["product-42", "list"]) });
  cache.set("p1", { names: ["accept"], vary: "b", value: tagged(1, ["product-42"]) });
  cache.set("p2", { names: [], vary: "", value: tagged(1, ["product-7", "list"]) });
  cache.set("p3", { names: [], vary: "", value: tagged(1, []) });
  assert.equal(cache.invalidateTags(["product-42"]), 2);
  assert.equal(cache.peek("p1", "a"), undefined);
  assert.ok(cache.peek("p2", ""));
  assert.equal(cache.invalidateTags(["product-42", "none"]), 0);
  assert.equal(cache.invalidateTags(["list", "product-7"]), 1);
  assert.equal(cache.size, 1);
  assert.equal(cache.tagCount, 0);
});

Deno.test("ResponseCache's tag index follows replacement, update and eviction", () => {
  const one = entrySize("a\n", tagged(1000, ["t"]));
  assert.equal(one, entrySize("a\n", stored(1000)) + "t".length + 32); // tags are charged
  const pool = new CachePool(one * 2);
  const cache = new ResponseCache({ maxBytes: 1e9, maxEntries: 100, pool });
  cache.set("a", { names: [], vary: "", value: tagged(1000, ["t"]) });
  // Replaced by an answer with another tag: the old tag no longer reaches it.
  cache.set("a", { names: [], vary: "", value: tagged(1000, ["u"]) });
  assert.equal(cache.invalidateTags(["t"]), 0);
  assert.equal(cache.tagCount, 1);
  // Updated in place (a 304): indexed under the new value's tags.
  cache.update("a", "", tagged(1000, ["v"]));
  assert.equal(cache.invalidateTags(["u"]), 0);
  assert.equal(cache.tagCount, 1);
  // Evicted by the shared pool's bound: it leaves the index.
  cache.set("b", { names: [], vary: "", value: tagged(1000, ["w"]) });
  cache.set("c", { names: [], vary: "", value: tagged(1000, ["w"]) });
  assert.equal(cache.size, 2);
  assert.equal(cache.peek("a", ""), undefined);
  assert.equal(cache.tagCount, 1);
  assert.equal(cache.invalidateTags(["v"]), 0);
  assert.equal(cache.invalidateTags(["w"]), 2);
  assert.equal(cache.tagCount, 0);
  assert.equal(pool.bytes, 0);
  cache.set("d", { names: [], vary: "", value: tagged(10, ["x"]) });
  cache.clear();
  assert.equal(cache.tagCount, 0);
});

Deno.test("ResponseCache.set refuses an answer whose URI was invalidated after it was fetched", () => {
  const c = new ResponseCache({ maxBytes: 1 << 20, maxEntries: 100 });
  const put = (primary: string, since: number) =>
    c.set(primary, { names: [], vary: "", value: stored(1), since });
  const before = c.epoch;
  c.invalidate("a");
  assert.equal(put("a", before), false);
  assert.equal(put("b", before), true); // another URI is not concerned
  assert.equal(put("a", c.epoch), true); // fetched after the invalidation
  // A purge by prefix, by tag or of everything: every answer fetched before it stays out.
  for (
    const purge of [() => c.invalidatePrefix("x"), () => c.invalidateTags(["t"]), () => c.clear()]
  ) {
    const at = c.epoch;
    purge();
    assert.equal(put("z", at), false);
    assert.equal(put("z", c.epoch), true);
  }
  // Bounded: the oldest invalidations are forgotten, and answers fetched before them refused.
  const old = c.epoch;
  c.invalidate("q");
  for (let i = 0; i < INVALIDATED_MAX; i++) c.invalidate(`k${i}`);
  assert.equal(put("q", old), false);
  assert.equal(put("other", old), false);
});
