import assert from "node:assert/strict";
import { reverseLocation, reverseRefresh } from "./location_rewrite.ts";

const at = (target: string, prefix = "/", rewrite?: string) => ({ target, prefix, rewrite });

Deno.test("reverseLocation turns the upstream's own URL into the client's path", () => {
  const map = at("http://127.0.0.1:3000", "/app");
  assert.equal(
    reverseLocation("http://127.0.0.1:3000/login?next=%2Fx#top", map),
    "/app/login?next=%2Fx#top",
  );
  assert.equal(reverseLocation("http://127.0.0.1:3000", map), "/app/");
  assert.equal(reverseLocation("http://127.0.0.1:3000/", at("http://127.0.0.1:3000")), "/");
  // Scheme and host in any case, the default port written or not.
  assert.equal(reverseLocation("HTTP://LOCALHOST:80/a", at("http://localhost")), "/a");
  assert.equal(reverseLocation("https://b.internal/a", at("https://b.internal:443/")), "/a");
  assert.equal(reverseLocation("http://[::1]:80/a", at("http://[::1]")), "/a");
  assert.equal(reverseLocation("  http://h:8/a  ", at("http://h:8")), "/a");
});

Deno.test("reverseLocation maps the target's path and path_rewrite back onto the route prefix", () => {
  const map = at("http://h:8/base/", "/api", "/v2");
  assert.equal(reverseLocation("http://h:8/base/v2/users/1", map), "/api/users/1");
  assert.equal(reverseLocation("http://h:8/base/v2", map), "/api");
  // Outside what the route maps: left as it is.
  assert.equal(reverseLocation("http://h:8/base/v2x/users", map), undefined);
  assert.equal(reverseLocation("http://h:8/other", map), undefined);
  assert.equal(reverseLocation("http://h:8/base/v1", map), undefined);
});

Deno.test("reverseLocation leaves other hosts, schemes, ports and relative references alone", () => {
  const map = at("http://h:8", "/app");
  for (
    const v of [
      "https://h:8/x", // another scheme
      "http://h:9/x",
      "http://h/x",
      "http://example.com/x",
      "http://h:8@evil.test/x", // userinfo: the host is evil.test
      "http://user@h:8/x",
      "/x",
      "x",
      "//h:8/x",
      "ftp://h:8/x",
      "http://h:8\\@evil.test/x",
    ]
  ) assert.equal(reverseLocation(v, map), undefined, v);
  assert.equal(reverseLocation("http://h/x", at("unix:/tmp/a.sock")), undefined);
});

Deno.test("reverseLocation never makes a path into another host", () => {
  const map = at("http://h:8");
  assert.equal(reverseLocation("http://h:8//evil.test/x", map), "/evil.test/x");
  assert.equal(reverseLocation("http://h:8/\\evil.test/x", map), "/evil.test/x");
  assert.equal(
    reverseLocation("http://h:8//evil.test/x", at("http://h:8", "/app")),
    "/app//evil.test/x",
  );
});

Deno.test("reverseLocation: a tab or line break between slashes does not make another host", () => {
  // URL parsers drop tabs and line breaks anywhere (WHATWG URL), so `/\t/evil.test` is
  // `//evil.test` to a browser: another host, where the absolute URL stayed on the upstream's.
  const map = at("http://h:8");
  for (
    const v of [
      "http://h:8/\t/evil.test/x",
      "http://h:8/\n/evil.test/x",
      "http://h:8/\t\\evil.test",
    ]
  ) {
    const out = reverseLocation(v, map);
    assert.ok(out !== undefined, v);
    assert.equal(new URL(out, "https://prox.example/").host, "prox.example", `${v} -> ${out}`);
  }
  assert.equal(reverseLocation("http://h:8/\t/evil.test/x", map), "/evil.test/x");
  assert.equal(reverseLocation("http://h:8/base/\t/x", at("http://h:8/base")), "/x");
  const refresh = reverseRefresh("0; url=http://h:8/\t/evil.test", map);
  assert.equal(refresh, "0; url=/evil.test");
});

Deno.test("reverseLocation takes the Host the route sends upstream as the upstream's too", () => {
  const map = { ...at("http://10.0.0.7:8080", "/svc"), host: "api.internal:8080" };
  assert.equal(reverseLocation("http://API.internal:8080/x", map), "/svc/x");
  assert.equal(reverseLocation("http://10.0.0.7:8080/x", map), "/svc/x");
  assert.equal(reverseLocation("http://api.internal/x", map), undefined);
});

Deno.test("reverseRefresh rewrites the URL in a Refresh field", () => {
  const map = at("http://h:8", "/app");
  assert.equal(reverseRefresh("5; url=http://h:8/next", map), "5; url=/app/next");
  assert.equal(reverseRefresh("0;URL='http://h:8/n?a=1'", map), "0;URL='/app/n?a=1'");
  assert.equal(reverseRefresh("5", map), undefined);
  assert.equal(reverseRefresh("5; url=http://other/next", map), undefined);
});

Deno.test("reverseLocation resolves dot segments before it decides a path is under the target's", () => {
  // `http://h:8/base/../admin` is `/admin` upstream, outside the target's path: rewritten to
  // `/app/../admin` it sent the client to Prox's `/admin`, another route.
  const map = at("http://h:8/base", "/app");
  for (
    const v of ["/base/../admin", "/base/%2e%2e/admin", "/base/.%2E/admin", "/base\\..\\admin"]
  ) {
    assert.equal(reverseLocation(`http://h:8${v}`, map), undefined, v);
  }
  assert.equal(reverseLocation("http://h:8/base/x/../y", map), "/app/y");
  assert.equal(reverseLocation("http://h:8/base/./y?a=1", map), "/app/y?a=1");
  // Under a root target, a dot segment above the root stays at it (as URL parsers resolve it).
  assert.equal(reverseLocation("http://h:8/../x", at("http://h:8", "/app")), "/app/x");
});
