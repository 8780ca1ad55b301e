import assert from "node:assert/strict";
import { proxyHeader } from "./proxy_protocol.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
const SIG = "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a";

Deno.test("proxyHeader v1: TCP4, TCP6 (mixed families IPv4-mapped, as HAProxy), UNKNOWN for a probe", () => {
  const v4 = { source: { ip: "192.0.2.7", port: 4000 }, destination: { ip: "0.0.0.0", port: 443 } };
  assert.equal(text(proxyHeader("v1", v4)), "PROXY TCP4 192.0.2.7 0.0.0.0 4000 443\r\n");
  const v6 = {
    source: { ip: "2001:DB8:0:0::1", port: 1 },
    destination: { ip: "::", port: 8443 },
  };
  assert.equal(text(proxyHeader("v1", v6)), "PROXY TCP6 2001:db8::1 :: 1 8443\r\n");
  assert.equal(text(proxyHeader("v1", null)), "PROXY UNKNOWN\r\n");
  // An IPv6 client through a balancer to Prox's IPv4 address (or the reverse) keeps its address.
  const mixed = { source: { ip: "192.0.2.7", port: 1 }, destination: { ip: "::", port: 2 } };
  assert.equal(text(proxyHeader("v1", mixed)), "PROXY TCP6 ::ffff:192.0.2.7 :: 1 2\r\n");
  const mixed6 = {
    source: { ip: "2001:db8::7", port: 1 },
    destination: { ip: "10.0.0.1", port: 2 },
  };
  assert.equal(text(proxyHeader("v1", mixed6)), "PROXY TCP6 2001:db8::7 ::ffff:10.0.0.1 1 2\r\n");
  const junk = { source: { ip: "unknown", port: 1 }, destination: { ip: "0.0.0.0", port: 2 } };
  assert.equal(text(proxyHeader("v1", junk)), "PROXY UNKNOWN\r\n");
});

Deno.test("proxyHeader v2: PROXY command with INET or INET6 (mixed: IPv4-mapped) addresses, LOCAL for a probe", () => {
  const v4 = {
    source: { ip: "192.0.2.7", port: 0x1234 },
    destination: { ip: "10.0.0.1", port: 443 },
  };
  assert.equal(
    hex(proxyHeader("v2", v4)),
    `${SIG} 21 11 00 0c c0 00 02 07 0a 00 00 01 12 34 01 bb`,
  );
  const v6 = { source: { ip: "2001:db8::1", port: 80 }, destination: { ip: "::1", port: 81 } };
  assert.equal(
    hex(proxyHeader("v2", v6)),
    `${SIG} 21 21 00 24 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 ` +
      "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 50 00 51",
  );
  assert.equal(hex(proxyHeader("v2", null)), `${SIG} 20 00 00 00`);
  const mixed = { source: { ip: "192.0.2.7", port: 1 }, destination: { ip: "::", port: 2 } };
  assert.equal(
    hex(proxyHeader("v2", mixed)),
    `${SIG} 21 21 00 24 00 00 00 00 00 00 00 00 00 00 ff ff c0 00 02 07 ` +
      "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 02",
  );
});
