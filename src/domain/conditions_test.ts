import assert from "node:assert/strict";
import { compileCondition, compileRegex, parseStatusSelector } from "./conditions.ts";
import type { ConditionInput } from "./conditions.ts";

const input = (over: Partial<ConditionInput> = {}): ConditionInput => ({
  method: "POST",
  path: "/api/special/1",
  query: "debug=1&x=a%20b",
  headers: new Headers({ "content-type": "application/json" }),
  ...over,
});

Deno.test("compileCondition ANDs every given key", () => {
  const c = compileCondition({
    path_matches: "/special",
    method_is: ["get", "POST"],
    has_header: { name: "Content-Type", value_matches: "json$" },
    query_has: { name: "x", value_matches: "^a b$" },
  });
  assert.equal(c(input()), true);
  assert.equal(c(input({ method: "PUT" })), false);
  assert.equal(c(input({ path: "/api/plain" })), false);
  assert.equal(c(input({ headers: new Headers({ "content-type": "text/html" }) })), false);
  assert.equal(c(input({ query: "x=b" })), false);
});

Deno.test("query_has matches any value of a repeated key, with keys and values form-decoded", () => {
  const c = compileCondition({ query_has: { name: "a[b]", value_matches: "^2$" } });
  assert.equal(c(input({ query: "a[b]=1&a[b]=2" })), true);
  assert.equal(c(input({ query: "a%5Bb%5D=1&a%5bb%5d=%32" })), true);
  assert.equal(c(input({ query: "a[b]=1&a[b]=3" })), false);
  assert.equal(c(input({ query: "a[b]=12" })), false);
  const plain = compileCondition({ query_has: "k" });
  assert.equal(plain(input({ query: "k" })), true);
  assert.equal(plain(input({ query: "x=1&k=" })), true);
  assert.equal(plain(input({ query: "K=1&kk=1" })), false);
  assert.equal(plain(input({ query: "" })), false);
  const space = compileCondition({ query_has: { name: "q x", value_matches: "^a b$" } });
  assert.equal(space(input({ query: "q+x=a+b" })), true);
  assert.equal(space(input({ query: "q%20x=a%20b" })), true);
  const empty = compileCondition({ query_has: { name: "e", value_matches: "^$" } });
  assert.equal(empty(input({ query: "e=1&e" })), true);
  assert.equal(empty(input({ query: "e=1" })), false);
});

Deno.test("compileCondition without keys always holds", () => {
  assert.equal(compileCondition(undefined)(input()), true);
  assert.equal(compileCondition({})(input()), true);
});

Deno.test("status_is and response_has_header look at the response", () => {
  const c = compileCondition({ status_is: ["5xx", 404], response_has_header: { name: "x-err" } });
  const res = (status: number, h: Record<string, string>) =>
    input({ status, responseHeaders: new Headers(h) });
  assert.equal(c(res(503, { "x-err": "1" })), true);
  assert.equal(c(res(404, { "x-err": "1" })), true);
  assert.equal(c(res(403, { "x-err": "1" })), false);
  assert.equal(c(res(500, {})), false);
  assert.equal(c(input()), false); // no response yet
});

Deno.test("response_lacks_header holds when the response has none of the fields named", () => {
  const one = compileCondition({ response_lacks_header: "Cache-Control" });
  const res = (h: Record<string, string>) =>
    input({ status: 200, responseHeaders: new Headers(h) });
  assert.equal(one(res({})), true);
  assert.equal(one(res({ "cache-control": "no-store" })), false);
  // An empty field is still a field the upstream sent.
  assert.equal(one(res({ "cache-control": "" })), false);
  const both = compileCondition({ response_lacks_header: ["Expires", "cache-control"] });
  assert.equal(both(res({ expires: "0" })), false);
  assert.equal(both(res({ etag: '"v"' })), true);
  assert.equal(one(input()), false); // no response yet
});

Deno.test("value_matches sees each Set-Cookie alone and other repeated fields joined with a comma", () => {
  const cookie = compileCondition({
    response_has_header: { name: "Set-Cookie", value_matches: "^session=" },
  });
  const h = new Headers();
  h.append("set-cookie", "theme=dark; Path=/");
  h.append("set-cookie", "session=1; HttpOnly");
  assert.equal(cookie(input({ responseHeaders: h })), true);
  assert.equal(cookie(input({ responseHeaders: new Headers({ "set-cookie": "theme=1" }) })), false);
  const list = compileCondition({ has_header: { name: "X-T", value_matches: "^a, b$" } });
  const t = new Headers();
  t.append("x-t", "a");
  t.append("x-t", "b");
  assert.equal(list(input({ headers: t })), true);
});

Deno.test("parseStatusSelector accepts codes, classes and ranges", () => {
  assert.deepEqual(parseStatusSelector(404), [404, 404]);
  assert.deepEqual(parseStatusSelector("5xx"), [500, 599]);
  assert.deepEqual(parseStatusSelector("500-504"), [500, 504]);
  assert.equal(typeof parseStatusSelector("6xx"), "string");
  assert.equal(typeof parseStatusSelector("504-500"), "string");
});

Deno.test("compileRegex reads the Rust Prox's regex syntax: inline flags, (?P<name>, \\A and \\z", () => {
  const re = (s: string) => {
    const r = compileRegex(s);
    assert.ok(r instanceof RegExp, String(r));
    return r;
  };
  assert.ok(re("(?i)^application/json").test("Application/JSON; charset=utf-8"));
  assert.ok(re("(?is)a.b").test("A\nB"));
  assert.ok(re("\\A/api\\z").test("/api"));
  assert.ok(!re("\\A/api\\z").test("/api/x"));
  assert.ok(!re("\\A/api\\z").test("A/apiz/x"));
  assert.equal(re("(?P<id>\\d+)").exec("/u/42")?.groups?.id, "42");
  assert.ok(re("[\\A]").test("A"), "inside a class \\A stays as it was");
  assert.ok(re("\\\\A").test("\\A"), "an escaped backslash is not \\A");
  assert.equal(typeof compileRegex("(?R)a+"), "string");
});

Deno.test("has_header on Host sees the request's authority, not a Host field that differs from it", () => {
  // An absolute-form target (`GET http://public.example/x`) names the authority; the Host field
  // beside it is ignored (RFC 9112 §3.2.2), as routing ignores it.
  const c = compileCondition({ has_header: { name: "host", value_matches: "^internal\\." } });
  const headers = new Headers({ host: "internal.example" });
  assert.equal(c(input({ headers, authority: "public.example" })), false);
  assert.equal(c(input({ headers, authority: "internal.example" })), true);
  assert.equal(c(input({ headers: new Headers(), authority: "internal.example" })), true);
  // Without an authority (a response's fields), the field is what is there.
  assert.equal(c(input({ headers })), true);
});

Deno.test("has_header on Host holds for the host as routing reads it too (case, port, final dot)", () => {
  // A conditional route fenced by `^internal\.example\.com$` was skipped for "INTERNAL.example.com",
  // "internal.example.com." or "internal.example.com:80", which every upstream takes for that
  // host: the request went to the route for everyone else (nginx's server_name and Traefik's
  // HostRegexp read the host lower-cased, without port or final dot).
  const c = compileCondition({
    has_header: { name: "Host", value_matches: "^internal\\.example\\.com$" },
  });
  for (
    const authority of [
      "internal.example.com",
      "INTERNAL.example.com",
      "internal.example.com.",
      "internal.example.com:80",
      "Internal.Example.Com.:8443",
    ]
  ) {
    assert.equal(c(input({ authority })), true, authority);
  }
  assert.equal(c(input({ authority: "internal.example.com.evil" })), false);
  // Nor does a pattern that keeps a host out let its other spellings past.
  const notInternal = compileCondition({
    has_header: { name: "Host", value_matches: "^(?!internal\\.)" },
  });
  for (const authority of ["INTERNAL.example.com", "internal.example.com.:80", "Internal.x"]) {
    assert.equal(notInternal(input({ authority })), false, authority);
  }
  assert.equal(notInternal(input({ authority: "www.example.com" })), true);
  // A pattern of the authority as sent (its port) holds as before.
  const port = compileCondition({ has_header: { name: "Host", value_matches: ":8443$" } });
  assert.equal(port(input({ authority: "a.test:8443" })), true);
  assert.equal(port(input({ authority: "a.test" })), false);
});

Deno.test("client_ip: addresses and blocks, IPv4 and IPv6, a missing address never holds", () => {
  const p = compileCondition({ client_ip: ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"] });
  const at = (clientIp?: string) =>
    p({ method: "GET", path: "/", query: "", headers: new Headers(), clientIp });
  assert.equal(at("10.1.2.3"), true);
  assert.equal(at("192.0.2.7"), true);
  assert.equal(at("192.0.2.8"), false);
  assert.equal(at("2001:db8::1"), true);
  assert.equal(at("2001:db9::1"), false);
  assert.equal(at("::ffff:10.0.0.1"), true); // IPv4-mapped is IPv4
  assert.equal(at(undefined), false);
  assert.equal(compileCondition({ client_ip: "::1" })(input({ clientIp: "::1" })), true);
});
