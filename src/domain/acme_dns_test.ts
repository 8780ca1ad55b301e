import assert from "node:assert/strict";
import { challengeRecord, parseResolver, txtHolds, zoneCandidates } from "./acme_dns.ts";

Deno.test("challengeRecord: the absolute _acme-challenge name of an identifier, a wildcard's base", () => {
  assert.equal(challengeRecord("Example.COM"), "_acme-challenge.example.com.");
  assert.equal(challengeRecord("*.example.com"), "_acme-challenge.example.com.");
  assert.equal(challengeRecord("a.example.com."), "_acme-challenge.a.example.com.");
});

Deno.test("parseResolver: IPv4 and IPv6 with an optional port (53 by default); names refused", () => {
  assert.deepEqual(parseResolver("10.0.0.53"), { ipAddr: "10.0.0.53", port: 53 });
  assert.deepEqual(parseResolver("127.0.0.1:5353"), { ipAddr: "127.0.0.1", port: 5353 });
  assert.deepEqual(parseResolver("2001:db8::53"), { ipAddr: "2001:db8::53", port: 53 });
  assert.deepEqual(parseResolver("[2001:db8::53]:54"), { ipAddr: "2001:db8::53", port: 54 });
  assert.equal(typeof parseResolver("ns1.example.com"), "string");
  assert.equal(typeof parseResolver("10.0.0.53:0"), "string");
  assert.equal(typeof parseResolver("[::1]:65536"), "string");
  assert.equal(typeof parseResolver("10.0.0.300"), "string");
});

Deno.test("zoneCandidates: the record's parents, longest first, without the challenge label", () => {
  assert.deepEqual(zoneCandidates("_acme-challenge.a.example.com."), [
    "a.example.com",
    "example.com",
    "com",
  ]);
  assert.deepEqual(zoneCandidates("example.com"), ["example.com", "com"]);
});

Deno.test("txtHolds: a record split into strings counts joined (RFC 7208 §3.3)", () => {
  assert.ok(txtHolds([["other"], ["abc", "def"]], "abcdef"));
  assert.ok(!txtHolds([["abc"], ["def"]], "abcdef"));
  assert.ok(!txtHolds([], "x"));
});
