import assert from "node:assert/strict";
import { cidrContains, parseCidr, parseIp } from "./ip.ts";
import { resolveClientIp } from "./headers.ts";

const contains = (cidr: string, ip: string) => cidrContains(parseCidr(cidr)!, parseIp(ip)!);

Deno.test("cidrContains: an IPv6 block shorter than /96 holds no IPv4 client, as in ip_access", () => {
  // `::/0` is every IPv6 client (nginx, ip_access); IPv4 peers are only stored as ::ffff:a.b.c.d.
  assert.equal(contains("::/0", "2001:db8::1"), true);
  assert.equal(contains("::/0", "203.0.113.9"), false);
  assert.equal(contains("::/0", "::ffff:203.0.113.9"), false);
  // Meant as 10/8, it is the IPv6 block ::/8: it must not turn into "every IPv4 address".
  assert.equal(contains("::ffff:10.0.0.0/8", "203.0.113.9"), false);
  // A mapped block of /96 or more is the IPv4 block.
  assert.equal(contains("::ffff:10.0.0.0/104", "10.1.2.3"), true);
  assert.equal(contains("::ffff:10.0.0.0/104", "11.1.2.3"), false);
  assert.equal(contains("0.0.0.0/0", "203.0.113.9"), true);
  assert.equal(contains("0.0.0.0/0", "2001:db8::1"), false);
  assert.equal(contains("10.0.0.1/8", "10.200.0.1"), true);
  assert.equal(contains("::1/128", "::1"), true);
  // An IPv4 client behind `trusted_proxies: ["::/0"]` does not get its X-Forwarded-For believed.
  assert.equal(resolveClientIp("203.0.113.9", "10.0.0.1", [parseCidr("::/0")!]), "203.0.113.9");
});

Deno.test("parseCidr: one address and one prefix length, nothing after them", () => {
  assert.equal(parseCidr("10.0.0.0/8/16"), null);
  assert.equal(parseCidr("10.0.0.0/"), null);
  assert.equal(parseCidr("10.0.0.0/33"), null);
  assert.equal(parseCidr("::/129"), null);
  assert.deepEqual(parseCidr("10.0.0.0/8")?.bits, 104);
});
