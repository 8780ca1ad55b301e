import assert from "node:assert/strict";
import { normalizePath, rawQuery, upstreamUrl } from "./rewrite.ts";

Deno.test("normalizePath resolves dot segments and merges slashes", () => {
  assert.deepEqual(normalizePath("/a//b/./c/../d"), { ok: true, path: "/a/b/d" });
  assert.deepEqual(normalizePath("/../../etc"), { ok: true, path: "/etc" });
  assert.deepEqual(normalizePath("/api/%2e%2e/admin"), { ok: true, path: "/admin" });
  assert.deepEqual(normalizePath("/a/b/"), { ok: true, path: "/a/b/" });
});

Deno.test("normalizePath's fast path returns clean paths unchanged", () => {
  for (const p of ["/", "/a", "/a/b/", "/api/v1/users.json", "/a.b/c..d/.e"]) {
    assert.deepEqual(normalizePath(p), { ok: true, path: p });
  }
  assert.deepEqual(normalizePath("/a/..."), { ok: true, path: "/a/..." });
  assert.deepEqual(normalizePath("/a/.."), { ok: true, path: "/" });
  assert.deepEqual(normalizePath("/a\\..\\b"), {
    ok: false,
    reason: "Encoded path separator around a dot segment",
  });
});

Deno.test("normalizePath refuses what cannot be normalized", () => {
  assert.equal(normalizePath("/a/%zz").ok, false);
  assert.equal(normalizePath("/a/%00").ok, false);
  assert.equal(normalizePath("/api/..%2fadmin").ok, false);
  assert.equal(normalizePath("/api/..%5cadmin").ok, false);
});

Deno.test("rawQuery keeps the query byte for byte", () => {
  assert.equal(rawQuery("http://h/p?a=1&b=%20&c"), "?a=1&b=%20&c");
  assert.equal(rawQuery("http://h/p"), "");
  assert.equal(rawQuery("http://h/p?x#frag"), "?x");
});

Deno.test("upstreamUrl follows the seed's path_rewrite semantics without its bugs", () => {
  const u = (path: string, prefix: string, rewrite?: string, query = "", target = "https://h") =>
    upstreamUrl(target, { path, prefix, rewrite, query });
  assert.equal(u("/proxy/get", "/proxy", "/anything"), "https://h/anything/get");
  assert.equal(u("/proxy", "/proxy", "/anything"), "https://h/anything");
  assert.equal(u("/proxy/get", "/proxy", "/anything", "?a=1"), "https://h/anything/get?a=1");
  assert.equal(u("/api/v1/users", "/api/v1", "/"), "https://h/users");
  assert.equal(u("/api/v1", "/api/v1", "/"), "https://h/");
  assert.equal(
    u("/health/x", "/health", undefined, "", "http://b:8080/health"),
    "http://b:8080/health/x",
  );
  assert.equal(
    u("/api/users", "/api", undefined, "", "http://localhost:8080/"),
    "http://localhost:8080/users",
  );
  assert.equal(u("/x/", "/x", "/y/"), "https://h/y/");
});
