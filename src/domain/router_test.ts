import assert from "node:assert/strict";
import {
  compileRouter,
  explainMatch,
  hostOnly,
  hostTaken,
  parseRouteKey,
  withoutParams,
} from "./router.ts";
import type { RouteEntry } from "./router.ts";

function router(keys: [string, string[]?][]) {
  const entries: RouteEntry<string>[] = keys.map(([key, hosts]) => {
    const { host, prefix } = parseRouteKey(key);
    return { key, prefix, hosts: [...(host ? [host] : []), ...(hosts ?? [])], value: key };
  });
  return compileRouter(entries);
}

Deno.test("router matches the longest prefix on a segment boundary", () => {
  const r = router([["/"], ["/api"], ["/api/v1/"]]);
  assert.equal(r.match("h", "/api")?.value, "/api");
  assert.equal(r.match("h", "/api/")?.value, "/api");
  assert.equal(r.match("h", "/api/x")?.value, "/api");
  assert.equal(r.match("h", "/apix")?.value, "/");
  assert.equal(r.match("h", "/api/v1")?.value, "/api/v1/");
  assert.equal(r.match("h", "/api/v1/users")?.value, "/api/v1/");
  assert.equal(r.match("h", "/")?.value, "/");
});

Deno.test("router returns undefined without a catch-all", () => {
  const r = router([["/api"]]);
  assert.equal(r.match("h", "/other"), undefined);
  assert.equal(r.match("h", "/"), undefined);
});

Deno.test("router prefers exact hosts, then wildcards, then any host", () => {
  const r = router([["/"], ["a.example.com/"], ["/", ["*.example.com"]], ["b.example.com/api"]]);
  assert.equal(r.match("a.example.com", "/x")?.key, "a.example.com/");
  assert.equal(r.match("c.example.com:8443", "/x")?.key, "/");
  assert.equal(r.match("other.org", "/x")?.key, "/");
  assert.equal(r.match("b.example.com", "/api/x")?.key, "b.example.com/api");
  assert.equal(r.match("B.Example.COM.", "/api")?.key, "b.example.com/api");
});

Deno.test("router wildcards stand for DNS names only, not a list or other reg-name syntax", () => {
  const r = router([["/", ["*.example.com"]]]);
  assert.equal(r.match("a-1.b_2.example.com", "/x")?.key, "/");
  // "*.example.com" itself is no name under example.com (it matched as if an exact host).
  for (
    const host of [
      "evil.com,x.example.com",
      "evil.com;x.example.com",
      "e%2cx.example.com",
      "*.example.com",
    ]
  ) {
    assert.equal(r.match(host, "/x"), undefined, host);
  }
});

Deno.test("hostOnly strips ports and keeps IPv6 brackets", () => {
  assert.equal(hostOnly("Example.com:80"), "example.com");
  assert.equal(hostOnly("[::1]:8080"), "[::1]");
});

Deno.test("parseRouteKey encodes a prefix the way request paths arrive", () => {
  // URL parsing percent-encodes these in a request path: a raw key could never match.
  assert.equal(parseRouteKey("/café").prefix, "/caf%C3%A9");
  assert.equal(parseRouteKey("example.com/sp ace/").prefix, "/sp%20ace");
  assert.equal(parseRouteKey("/pct%20x").prefix, "/pct%20x");
  assert.equal(parseRouteKey("/api/v1/").prefix, "/api/v1");
  // As normalizePath writes request paths: escaped unreserved decoded, other escapes upper-cased.
  assert.equal(parseRouteKey("/%61pi/caf%c3%a9").prefix, "/api/caf%C3%A9");
});

Deno.test("router: a host written with a trailing dot matches requests for that host", () => {
  // hostOnly drops the dot from requests; "example.com./a" and hosts: ["Example.com."] never matched.
  const r = router([["example.com./a"], ["/b", ["*.Example.org."]]]);
  for (const host of ["example.com", "example.com.", "EXAMPLE.com.:8080"]) {
    assert.equal(r.match(host, "/a/x")?.value, "example.com./a", host);
  }
  assert.equal(r.match("www.example.org.", "/b")?.value, "/b");
  assert.equal(r.match("other.test", "/a"), undefined);
});

Deno.test("withoutParams drops each segment's ; parameters, as Java servers read a path", () => {
  assert.equal(withoutParams("/api/admin;x=1/y;z"), "/api/admin/y");
  assert.equal(withoutParams("/api;/admin"), "/api/admin");
  assert.equal(withoutParams("/plain/path"), "/plain/path");
});

Deno.test("router tries only prefixes as long as its routes': a path of 30,000 segments is cheap", () => {
  const r = router([["/"], ["/api"], ["/api/admin"], ["a.example.com/api/v1"]]);
  const long = "/x".repeat(30_000); // 60 KB, about what an HTTP/1.1 request head may hold
  const start = performance.now();
  assert.equal(r.match("h", `/api/admin${long}`)?.key, "/api/admin");
  assert.equal(r.match("a.example.com", `/api/v1${long}`)?.key, "a.example.com/api/v1");
  assert.equal(r.match("h", `/nomatch${long}`)?.key, "/");
  assert.equal(r.match("h", `/api${"x".repeat(60_000)}/y`)?.key, "/");
  // Each took about 2 s of the one event loop (every `/` tried, each a 30 KB slice and hash).
  assert.ok(performance.now() - start < 500, `${performance.now() - start} ms`);
});

Deno.test("router takes IPv6 literal hosts, in the key or in hosts, as the Host field brings them", () => {
  const r = router([["[::1]/v6"], ["/y", ["[2001:db8::7]"]], ["/"]]);
  assert.equal(r.match("[::1]:3000", "/v6/a")?.value, "[::1]/v6");
  assert.equal(r.match("[::1]", "/v6")?.value, "[::1]/v6");
  assert.equal(r.match("127.0.0.1:3000", "/v6/a")?.value, "/");
  assert.equal(r.match("[2001:db8::7]:443", "/y/z")?.value, "/y");
  assert.equal(r.match("[2001:db8::8]:443", "/y/z")?.value, "/");
  // The same address written longer (curl sends it as typed; nothing made it "/"'s).
  assert.equal(r.match("[0:0::1]:3000", "/v6/a")?.value, "[::1]/v6");
  assert.equal(r.match("[2001:DB8:0:0:0:0:0:7]", "/y/z")?.value, "/y");
  assert.equal(hostOnly("[0000::0001]:80"), "[::1]");
  assert.equal(hostOnly("[::ffff:127.0.0.1]"), "[::ffff:7f00:1]");
  assert.equal(hostOnly("[zz::1]"), "[zz::1]"); // not an address: compared as it came
});

Deno.test("router: conditional routes of a prefix come before the unconditional one, in order", () => {
  type Req = { canary: boolean; post: boolean };
  const e = (key: string, when?: (r: Req) => boolean, hosts: string[] = []) => ({
    key,
    ...parseRouteKey(key),
    hosts: [...hosts, ...(parseRouteKey(key).host ? [parseRouteKey(key).host!] : [])],
    when,
    value: key,
  });
  const r = compileRouter<string, Req>([
    e("/"),
    e("/api"),
    e("/api#canary", (q) => q.canary),
    e("/api#post", (q) => q.post),
    e("example.com/api"),
    e("/only#c", (q) => q.canary),
  ]);
  const at = (host: string, path: string, req?: Req) => r.match(host, path, req)?.value;
  const none = { canary: false, post: false };
  assert.equal(at("a.test", "/api/x", none), "/api");
  assert.equal(at("a.test", "/api/x", { canary: true, post: false }), "/api#canary");
  assert.equal(at("a.test", "/api/x", { canary: false, post: true }), "/api#post");
  assert.equal(at("a.test", "/api/x", { canary: true, post: true }), "/api#canary");
  // A host rank above wins over a conditional route of any host.
  assert.equal(at("example.com", "/api/x", { canary: true, post: false }), "example.com/api");
  // No request to look at: conditional routes take nothing; none holds: a shorter prefix.
  assert.equal(at("a.test", "/api/x"), "/api");
  assert.equal(at("a.test", "/only/x", none), "/");
  assert.equal(at("a.test", "/only/x", { canary: true, post: false }), "/only#c");
  assert.deepEqual(parseRouteKey("example.com/api#v2"), { host: "example.com", prefix: "/api" });
  // Every route a request may reach, whatever it carries (a cache purge by URL goes to each).
  const may = (host: string, path: string) => r.candidates(host, path).map((c) => c.value);
  assert.deepEqual(may("a.test", "/api/x"), ["/api", "/api#canary", "/api#post"]);
  assert.deepEqual(may("example.com", "/api/x"), ["example.com/api"]);
  assert.deepEqual(may("a.test", "/only/x"), ["/only#c", "/"]);
  assert.deepEqual(may("a.test", "/"), ["/"]);
  const conditionalOnly = compileRouter<string, Req>([
    e("/#c", (q) => q.canary),
    e("/#p", (q) => q.post),
  ]);
  assert.deepEqual(conditionalOnly.candidates("a.test", "/").map((c) => c.value), ["/#c", "/#p"]);
  assert.deepEqual(conditionalOnly.candidates("a.test", "/x/y").map((c) => c.value), [
    "/#c",
    "/#p",
  ]);
});

Deno.test("explainMatch: why a route lost to a conditional route (its match, or the host rank)", () => {
  type Req = { canary: boolean };
  const e = (key: string, when?: (r: Req) => boolean) => ({
    key,
    ...parseRouteKey(key),
    hosts: parseRouteKey(key).host ? [parseRouteKey(key).host!] : [],
    when,
    value: key,
  });
  const entries = [
    e("/api"),
    e("/api#a", (q) => q.canary),
    e("example.com/api#b", (q) => q.canary),
    e("/api#c", (q) => q.canary),
  ];
  const r = compileRouter<string, Req>(entries);
  const why = (host: string) => {
    const request = { canary: true };
    const winner = r.match(host, "/api/x", request);
    return Object.fromEntries(
      explainMatch(entries, { host, path: "/api/x", winner, request }).map((
        v,
      ) => [v.key, v.reason]),
    );
  };
  const any = why("a.test");
  assert.equal(any["/api"], "/api#a's match holds: a route with match comes before one without");
  assert.equal(any["/api#c"], "/api#a comes first and its match holds too");
  const exact = why("example.com");
  assert.equal(exact["/api#a"], "the exact host of example.com/api#b beats any host");
  assert.equal(exact["/api"], "the exact host of example.com/api#b beats any host");
});

Deno.test("hostTaken: a route without hosts takes all; else a Host the routes' patterns hold", () => {
  assert.equal(hostTaken([["a.test"], []])("evil.test"), true);
  const taken = hostTaken([["a.test"], ["*.b.test", "[::1]"]]);
  assert.equal(taken("A.Test.:80"), true);
  assert.equal(taken("x.b.test"), true);
  assert.equal(taken("[::1]:80"), true);
  assert.equal(taken("b.test"), false);
  assert.equal(taken("evil.test"), false);
  assert.equal(taken("evil.test,x.b.test"), false);
});
