import assert from "node:assert/strict";
import { proxyHeader } from "./proxy_protocol.ts";
import { readProxyHeader, V1_MAX, V2_MAX } from "./proxy_protocol_parse.ts";

const enc = new TextEncoder();
const read = (b: Uint8Array) => readProxyHeader(b, b.length);

Deno.test("readProxyHeader reads what proxyHeader writes, both versions and families", () => {
  const cases = [
    { source: { ip: "203.0.113.7", port: 51234 }, destination: { ip: "10.0.0.1", port: 443 } },
    { source: { ip: "2001:db8::7", port: 1 }, destination: { ip: "2001:db8::1", port: 65535 } },
  ];
  for (const v of ["v1", "v2"] as const) {
    for (const addrs of cases) {
      const h = proxyHeader(v, addrs);
      // The request behind it is not part of the header.
      const b = new Uint8Array([...h, ...enc.encode("GET / HTTP/1.1\r\n")]);
      assert.deepEqual(read(b), {
        kind: "header",
        size: h.length,
        source: { hostname: addrs.source.ip, port: addrs.source.port },
      }, `${v} ${addrs.source.ip}`);
      // Every shorter prefix of the header is only incomplete.
      for (let n = 0; n < h.length; n++) {
        assert.deepEqual(readProxyHeader(b, n), { kind: "incomplete" }, `${v} at ${n}`);
      }
    }
    // A health check's LOCAL / UNKNOWN: the connection's own address stands.
    const local = proxyHeader(v, null);
    assert.deepEqual(read(local), { kind: "header", size: local.length, source: null });
  }
});

Deno.test("readProxyHeader refuses what is no PROXY header or breaks its grammar", () => {
  const bad = (s: string | Uint8Array, why: RegExp) => {
    const r = read(typeof s === "string" ? enc.encode(s) : s);
    assert.equal(r.kind, "bad", String(s));
    assert.match((r as { reason: string }).reason, why, String(s));
  };
  bad("GET / HTTP/1.1\r\n", /no PROXY/);
  bad("PROXX TCP4", /no PROXY/);
  bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", /CRLF/);
  bad("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", /malformed/); // no leading zeros
  bad("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /malformed/);
  // §2.1: no leading zeros in an IPv4 address either (010.0.0.1: octal 8.0.0.1 or 10.0.0.1?).
  bad("PROXY TCP4 010.0.0.1 5.6.7.8 1 2\r\n", /malformed/);
  bad("PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n", /malformed/);
  bad("PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n", /malformed/);
  bad("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", /malformed/);
  bad("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", /malformed/);
  bad("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", /neither/);
  bad("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", /neither/);
  bad("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", /neither/);
  bad("PROXY " + "1".repeat(V1_MAX), /longer than 107/);
  assert.deepEqual(read(enc.encode("PROXY UNKNOWN ffff::1 ::1 1 2\r\n")), {
    kind: "header",
    size: 31,
    source: null,
  });
  const v2 = (verCmd: number, fam: number, len: number, extra = 0) => {
    const b = new Uint8Array(16 + Math.min(len, 64) + extra);
    b.set(proxyHeader("v2", null).subarray(0, 12));
    b[12] = verCmd;
    b[13] = fam;
    b[14] = len >> 8;
    b[15] = len & 0xff;
    return b;
  };
  bad(v2(0x11, 0x11, 12), /another version/);
  bad(v2(0x22, 0x11, 12), /unknown command/);
  bad(v2(0x21, 0x41, 12), /unknown address family/);
  bad(v2(0x21, 0x13, 12), /unknown address family or transport/);
  // Values of the family-and-transport byte the spec does not list must be rejected (§2.2): an
  // IP family without its transport, a transport without its family.
  for (const fam of [0x10, 0x20, 0x30, 0x01, 0x02]) {
    bad(v2(0x21, fam, 36), /unknown address family or transport/);
  }
  // UDP names the client of no TCP connection: the connection's own address stands (as HAProxy).
  for (const fam of [0x12, 0x22]) {
    assert.deepEqual(read(v2(0x21, fam, 36)), { kind: "header", size: 52, source: null });
  }
  bad(v2(0x21, 0x11, 8), /too short/);
  bad(v2(0x21, 0x21, 12), /too short/);
  bad(v2(0x21, 0x11, V2_MAX), /longer than 4096/);
  // TLVs after the addresses are part of the header; AF_UNIX names no IP client.
  const tlv = v2(0x21, 0x11, 12 + 7);
  tlv.set([198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb], 16);
  assert.deepEqual(read(tlv), {
    kind: "header",
    size: 35,
    source: { hostname: "198.51.100.9", port: 8080 },
  });
  assert.deepEqual(read(v2(0x21, 0x31, 216)).kind, "incomplete"); // 64 of its 216 bytes here
  assert.deepEqual(read(v2(0x21, 0x31, 216, 216 - 64)), {
    kind: "header",
    size: 232,
    source: null,
  });
});
