import assert from "node:assert/strict";
import { compileSni, matchSni, parseHostPort, sniKeyProblem } from "./tcp_route.ts";

Deno.test("parseHostPort reads IPv4, bracketed IPv6 and names", () => {
  assert.deepEqual(parseHostPort("10.0.0.5:5432"), { host: "10.0.0.5", port: 5432 });
  assert.deepEqual(parseHostPort("[2001:db8::5]:443"), { host: "2001:db8::5", port: 443 });
  assert.deepEqual(parseHostPort("redis.internal:6379"), { host: "redis.internal", port: 6379 });
});

Deno.test("parseHostPort says what is wrong", () => {
  assert.match(parseHostPort("10.0.0.5") as string, /name the port too, e\.g\. 10\.0\.0\.5:5432/);
  assert.match(parseHostPort("tcp://10.0.0.5:1") as string, /without a scheme/);
  assert.match(parseHostPort("::1:5432") as string, /brackets/);
  assert.match(parseHostPort("10.0.0.5:0") as string, /from 1 to 65535/);
  assert.match(parseHostPort("10.0.0.5:70000") as string, /from 1 to 65535/);
  assert.match(parseHostPort("bad host:1") as string, /use host:port/);
  assert.match(parseHostPort("[zz]:1") as string, /use host:port/);
});

Deno.test("sniKeyProblem accepts names and one-label wildcards", () => {
  assert.equal(sniKeyProblem("db.example.com"), null);
  assert.equal(sniKeyProblem("*.internal.example.com"), null);
  assert.equal(sniKeyProblem("localhost"), null);
  assert.match(sniKeyProblem("db.*.example.com")!, /whole first label/);
  assert.match(sniKeyProblem("*db.example.com")!, /whole first label/);
  assert.match(sniKeyProblem("10.0.0.1")!, /not a DNS name/);
  assert.match(sniKeyProblem("db example")!, /not a DNS name/);
  // An IDN as written: clients send its ASCII (A-label) form, which the message gives.
  assert.match(sniKeyProblem("bücher.example.com")!, /"xn--bcher-kva\.example\.com"/);
  assert.match(sniKeyProblem("*.bücher.example.com")!, /"\*\.xn--bcher-kva\.example\.com"/);
  assert.doesNotMatch(sniKeyProblem("bücher.example.com")!, /IP address/);
});

Deno.test("matchSni prefers the exact name, then the wildcard of one label, then the default", () => {
  const t = compileSni({
    "DB.example.com.": "exact",
    "*.example.com": "wild",
    "*.internal.example.com": "internal",
  }, "default");
  assert.equal(matchSni(t, "db.example.com"), "exact");
  assert.equal(matchSni(t, "www.example.com"), "wild");
  assert.equal(matchSni(t, "a.internal.example.com"), "internal");
  // One label only, as in certificates: deeper names are not covered.
  assert.equal(matchSni(t, "a.b.c.example.com"), "default");
  assert.equal(matchSni(t, "example.com"), "default");
  assert.equal(matchSni(t, null), "default");
  assert.equal(matchSni(compileSni({ "a.example": 1 }), "b.example"), null);
});
