import assert from "node:assert/strict";
import { normalizePath, plainPath, rawQuery, upstreamTarget, wireQuery } from "./rewrite.ts";

Deno.test("normalizePath resolves dot segments and merges slashes", () => {
  assert.deepEqual(normalizePath("/a//b/./c/../d"), { ok: true, path: "/a/b/d" });
  assert.deepEqual(normalizePath("/../../etc"), { ok: true, path: "/etc" });
  assert.deepEqual(normalizePath("/api/%2e%2e/admin"), { ok: true, path: "/admin" });
  assert.deepEqual(normalizePath("/a/b/"), { ok: true, path: "/a/b/" });
});

Deno.test("normalizePath decodes escaped unreserved characters and upper-cases other escapes", () => {
  assert.deepEqual(normalizePath("/%61dmin/caf%c3%a9/%7Euser/a%2fb/%20"), {
    ok: true,
    path: "/admin/caf%C3%A9/~user/a%2Fb/%20",
  });
  assert.deepEqual(normalizePath("/a/.%2E/b"), { ok: true, path: "/b" });
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

Deno.test("normalizePath refuses a dot segment with a path parameter (Tomcat climbs on ..;)", () => {
  for (const p of ["/api/..;/admin", "/api/.;x/y", "/api/%2e%2e;jsessionid=1/a", "/a/x%2F..;"]) {
    assert.equal(normalizePath(p).ok, false, p);
  }
  assert.deepEqual(normalizePath("/api/a;b/..c;d"), { ok: true, path: "/api/a;b/..c;d" });
});

Deno.test("rawQuery keeps the query byte for byte", () => {
  assert.equal(rawQuery("http://h/p?a=1&b=%20&c"), "?a=1&b=%20&c");
  assert.equal(rawQuery("http://h/p"), "");
  assert.equal(rawQuery("http://h/p?x#frag"), "?x");
});

Deno.test("upstreamTarget follows the seed's path_rewrite semantics without its bugs", () => {
  const u = (path: string, prefix: string, rewrite?: string, query = "", target = "https://h") => {
    const t = upstreamTarget(target, { path, prefix, rewrite, query });
    return t.origin.origin + t.path;
  };
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

Deno.test("upstreamTarget passes the query on byte for byte", () => {
  const t = (query: string, rewrite?: string) =>
    upstreamTarget("http://b:8080/base", { path: "/api/x", prefix: "/api", rewrite, query }).path;
  // URL parsing would send %27, %22, %3C and %3E: a signed URL's signature then no longer matches.
  assert.equal(t("?q='a'&s=\"<b>\"&t=%27"), "/base/x?q='a'&s=\"<b>\"&t=%27");
  assert.equal(t("?"), "/base/x?");
  // Bytes no request line may hold are encoded, as URL parsing does.
  assert.equal(t("?q=\u00e9 x"), "/base/x?q=%C3%A9%20x");
  // A configured rewrite with characters to encode or dot segments goes through URL parsing,
  // the query still as it came (a signed URL's signature must still match).
  assert.equal(t("?a='1'", "/v 2"), "/base/v%202/x?a='1'");
  assert.equal(t("?a='1'&b=\u00e9", "/v 2"), "/base/v%202/x?a='1'&b=%C3%A9");
  // A `?` the rewrite itself writes begins the query; the client's follows.
  assert.equal(t("?a='1'", "/v 2?x=1&"), "/base/v%202?x=1&/x?a='1'");
  assert.equal(t("", "/v1/../v2"), "/base/v2/x");
  const shared = upstreamTarget("http://b:8080/base", { path: "/", prefix: "/", query: "" });
  assert.equal(shared.origin.href, "http://b:8080/");
  assert.equal(
    upstreamTarget("http://b:8080/other", { path: "/", prefix: "/", query: "" }).origin,
    upstreamTarget("http://b:8080/other", { path: "/y", prefix: "/", query: "" }).origin,
    "one origin URL per target",
  );
});

Deno.test("plainPath returns what URL parsing would, or null", () => {
  const urls = [
    "http://h/",
    "http://h:8080/api/v1/users?x=1",
    "http://h/static/app.js",
    "http://h/a//b",
    "http://h/~u/a-b_c.d!$&'()*+,;=:@x",
    "https://[::1]:8443/x?y#z",
    "http://h/a/.hidden",
    "http://h/a/./b",
    "http://h/a/../b",
    "http://h/a/..",
    "http://h/a%2e%2e/b",
    "http://h/a b",
    "http://h/a\\b",
    "http://h/a|b^c`d{e}",
    "http://h/\u00e9",
    "http://h?x=/y",
    "http://h#/y",
    "http://h\\x/y",
    "http://h/x#f/g",
    "http:///x/y",
  ];
  for (const url of urls) {
    const fast = plainPath(url);
    if (fast !== null) assert.equal(fast, new URL(url).pathname, url);
  }
  assert.equal(plainPath("http://h:8080/api/v1/users?x=1"), "/api/v1/users");
  assert.equal(plainPath("http://h/static/app.js"), "/static/app.js");
  for (
    const slow of [
      "http:///x/y",
      "http://h/a/./b",
      "http://h/a%2e%2e/b",
      "http://h?x=/y",
      "http://h\\x/y",
    ]
  ) {
    assert.equal(plainPath(slow), null, slow);
  }
});

Deno.test("wireQuery encodes only what a request line cannot hold", () => {
  assert.equal(wireQuery("?a='1'&b=%20|^"), "?a='1'&b=%20|^");
  assert.equal(wireQuery("?\u65e5=1&q=\u20ac"), "?%E6%97%A5=1&q=%E2%82%AC");
  assert.equal(wireQuery("?a b\tc"), "?a%20b%09c");
  assert.equal(wireQuery(""), "");
});

Deno.test("upstreamTarget: path_regex replaces what it matches, first rule wins, query kept", () => {
  const regex = [
    { re: /^\/api\/v1\/users\/(\d+)$/, replace: "/users/$1" },
    { re: /^\/api\/v1\/(?<rest>.*)$/, replace: "/v1/$<rest>" },
    { re: /\.php$/, replace: "" },
  ];
  const at = (path: string, target = "http://b:8080") =>
    upstreamTarget(target, { path, prefix: "/api", query: "?q=1", rewrite: "/x", regex }).path;
  assert.equal(at("/api/v1/users/42"), "/users/42?q=1");
  assert.equal(at("/api/v1/orders/7"), "/v1/orders/7?q=1");
  assert.equal(at("/api/index.php"), "/api/index?q=1"); // the matched part only
  assert.equal(at("/api/v1/users/42", "http://b:8080/base"), "/base/users/42?q=1");
  // No rule matches: prefix stripped and path_rewrite as ever.
  assert.equal(at("/api/other"), "/x/other?q=1");
  // A replacement with a dot segment is resolved, as a path_rewrite's is.
  assert.equal(
    upstreamTarget("http://b", {
      path: "/a/b",
      prefix: "/",
      query: "",
      regex: [{ re: /^\/a\/(.*)$/, replace: "/x/../$1" }],
    }).path,
    "/b",
  );
});

Deno.test("upstreamTarget: a capture that starts mid-segment brings no dot segment, with a parameter or behind an encoded slash", () => {
  const at = (raw: string) => {
    const n = normalizePath(raw);
    assert.ok(n.ok, raw); // each passes normalization: `item-..;` is no dot segment
    return upstreamTarget("http://b", {
      path: n.path,
      prefix: "/api",
      query: "?q=1",
      regex: [{ re: /^\/api\/item-(.*)$/, replace: "/items/$1" }],
    }).path;
  };
  // Tomcat, Jetty and Spring read `..;x` as `..`: /items/..;/admin is their /admin.
  assert.equal(at("/api/item-..;/admin"), "/items/admin?q=1");
  assert.equal(at("/api/item-..;x=1/admin"), "/items/admin?q=1");
  assert.equal(at("/api/item-.%3B/admin"), "/items/admin?q=1");
  // Decoded by Go, Spring and others into `../admin`.
  assert.equal(at("/api/item-..%2Fadmin"), "/items/?q=1");
  assert.equal(at("/api/item-..%5Cadmin"), "/items/?q=1");
  // What only looks like one goes on as it came.
  assert.equal(at("/api/item-...;x/a..b"), "/items/...;x/a..b?q=1");
  assert.equal(at("/api/item-a;b/..x"), "/items/a;b/..x?q=1");
});
