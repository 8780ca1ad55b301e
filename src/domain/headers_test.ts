import assert from "node:assert/strict";
import {
  dropUnderscoredNames,
  requestLength,
  resolveClientIp,
  setForwardingHeaders,
  stripHopByHop,
  untrustedUpstreamFields,
  withoutHopByHop,
} from "./headers.ts";
import { HeaderList } from "./header_list.ts";
import { ipGroupKey, parseCidr } from "./ip.ts";

Deno.test("stripHopByHop removes RFC 9110 hop-by-hop headers and those named in Connection", () => {
  const h = new Headers({
    connection: "keep-alive, x-secret",
    "keep-alive": "timeout=5",
    "x-secret": "1",
    "transfer-encoding": "chunked",
    te: "trailers",
    upgrade: "h2c",
    "x-keep": "yes",
  });
  stripHopByHop(h);
  assert.deepEqual([...h.keys()], ["x-keep"]);
});

Deno.test("withoutHopByHop copies everything but hop-by-hop headers", () => {
  const src = new Headers({
    connection: "close, x-secret",
    "x-secret": "1",
    te: "trailers",
    "set-cookie": "a=1",
    accept: "*/*",
  });
  src.append("set-cookie", "b=2");
  const out = withoutHopByHop(src);
  assert.deepEqual([...out], [["accept", "*/*"], ["set-cookie", "a=1"], ["set-cookie", "b=2"]]);
  assert.equal(src.get("x-secret"), "1");
});

Deno.test("resolveClientIp trusts X-Forwarded-For only from trusted proxies", () => {
  const trusted = [parseCidr("10.0.0.0/8")!];
  assert.equal(resolveClientIp("1.2.3.4", "9.9.9.9", trusted), "1.2.3.4");
  assert.equal(resolveClientIp("10.0.0.1", "9.9.9.9, 10.0.0.7", trusted), "9.9.9.9");
  assert.equal(resolveClientIp("10.0.0.1", "garbage", trusted), "10.0.0.1");
});

Deno.test("resolveClientIp trusts no X-Forwarded-For entry that is not an address as proxies write one", () => {
  const trusted = [parseCidr("10.0.0.0/8")!];
  // Each went for an address: 010.0.0.1 (which inet_aton reads as octal, 8.0.0.1) as 10.0.0.1,
  // a port of letters or beyond 65535, a zone (no client's), text after the brackets, an IPv4
  // address in brackets (RFC 3986 §3.2.2 brackets IPv6 only).
  for (
    const hop of [
      "010.0.0.1",
      "1.2.3.04",
      "1.2.3.4:abc",
      "1.2.3.4:",
      "1.2.3.4:123456",
      "fd00::1%eth0",
      "[fd00::1%25eth0]",
      "[2001:db8::1]x",
      "[2001:db8::1]:",
      "[1.2.3.4]",
      "[2001:db8::1",
    ]
  ) {
    assert.equal(resolveClientIp("10.0.0.1", `203.0.113.5, ${hop}`, trusted), "10.0.0.1", hop);
    assert.equal(resolveClientIp("10.0.0.1", hop, trusted), "10.0.0.1", hop);
  }
  // What proxies do write.
  assert.equal(resolveClientIp("10.0.0.1", "203.0.113.5:65535", trusted), "203.0.113.5");
  assert.equal(resolveClientIp("10.0.0.1", "0.0.0.0", trusted), "0.0.0.0");
  assert.equal(resolveClientIp("10.0.0.1", "[2001:db8::1]:443", trusted), "2001:db8::1");
  assert.equal(resolveClientIp("10.0.0.1", "2001:db8::1", trusted), "2001:db8::1");
});

Deno.test("resolveClientIp names a client from X-Forwarded-For as Prox names its own peers", () => {
  const trusted = [parseCidr("10.0.0.0/8")!];
  // A dual-stack proxy in front wrote IPv4 clients mapped; Prox's own peers are plain IPv4.
  assert.equal(resolveClientIp("10.0.0.1", "::FFFF:203.0.113.5", trusted), "203.0.113.5");
  assert.equal(resolveClientIp("10.0.0.1", "[2001:DB8::1]:4711", trusted), "2001:db8::1");
  assert.equal(resolveClientIp("10.0.0.1", "::ffff:10.0.0.9", trusted), "10.0.0.9");
  // The same address written another way is named the same (logs, {client_ip}).
  assert.equal(resolveClientIp("10.0.0.1", "::ffff:cb00:7105", trusted), "203.0.113.5");
  assert.equal(resolveClientIp("10.0.0.1", "2001:0DB8:0:0:0:0:0:0001", trusted), "2001:db8::1");
});

Deno.test("setForwardingHeaders replaces client-sent values from untrusted peers", () => {
  const h = new Headers({
    "x-forwarded-for": "6.6.6.6",
    "x-forwarded-host": "evil",
    "x-forwarded-port": "443",
    "x-forwarded-prefix": "/evil",
    "X-Forwarded-Ssl": "on",
    "x-real-ip": "6.6.6.6",
    "x-original-url": "/admin",
    "x-rewrite-url": "/admin",
    "x-forwarded": "kept",
    forwarded: "for=x",
  });
  setForwardingHeaders(h, {
    peer: "1.2.3.4",
    trustedPeer: false,
    scheme: "https",
    hopScheme: "https",
    host: "site",
    version: "1.1",
    rfc7239: false,
  });
  assert.equal(h.get("x-forwarded-for"), "1.2.3.4");
  assert.equal(h.get("x-forwarded-host"), "site");
  assert.equal(h.get("x-forwarded-proto"), "https");
  assert.equal(h.get("via"), "1.1 prox");
  assert.equal(h.get("forwarded"), null);
  for (
    const name of [
      "x-forwarded-port",
      "x-forwarded-prefix",
      "x-forwarded-ssl",
      "x-real-ip",
      // Read as the request path by some frameworks (Symfony before CVE-2018-14773, IIS URL
      // Rewrite): a cached answer to /x built from /admin would be served to every client.
      "x-original-url",
      "x-rewrite-url",
    ]
  ) {
    assert.equal(h.get(name), null, name);
  }
  assert.equal(h.get("x-forwarded"), "kept");
});

Deno.test("setForwardingHeaders appends for trusted peers and writes RFC 7239 Forwarded", () => {
  const h = new Headers({ "x-forwarded-for": "9.9.9.9", "x-forwarded-port": "8443" });
  setForwardingHeaders(h, {
    peer: "::1",
    trustedPeer: true,
    scheme: "https",
    hopScheme: "http",
    host: "site",
    version: "2",
    rfc7239: true,
  });
  assert.equal(h.get("x-forwarded-for"), "9.9.9.9, ::1");
  // The client's scheme (told by the trusted peer) for X-Forwarded-Proto; this hop's in Forwarded.
  assert.equal(h.get("x-forwarded-proto"), "https");
  assert.equal(h.get("forwarded"), 'for="[::1]";proto=http;host="site"');
  assert.equal(h.get("x-forwarded-port"), "8443");
});

Deno.test("ipGroupKey groups IPv6 by prefix and keeps IPv4", () => {
  assert.equal(ipGroupKey("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  assert.equal(ipGroupKey("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
  assert.equal(ipGroupKey("192.0.2.1"), "192.0.2.1");
  assert.equal(ipGroupKey("::ffff:192.0.2.1"), "192.0.2.1");
});

Deno.test("dropUnderscoredNames removes every field whose name holds an underscore", () => {
  const h = new Headers({ "x_forwarded_for": "1", "x-forwarded-for": "2", "a_b": "3", "c": "4" });
  dropUnderscoredNames(h);
  assert.deepEqual([...h.keys()], ["c", "x-forwarded-for"]);
});

Deno.test("untrustedUpstreamFields gives in one pass the fields the steps give one by one", () => {
  const cases: [string, string][][] = [
    [["host", "a"], ["user-agent", "wrk"], ["accept", "*/*"]],
    [["host", "a"], ["connection", "keep-alive"], ["keep-alive", "5"], ["x-a", "1"]],
    [["host", "a"], ["connection", "close, X-Secret , via"], ["x-secret", "s"], ["via", "1.0 p"]],
    [["host", "a"], ["via", "1.0 p"], ["x-b", "2"], ["via", "1.1 q"], ["expect", "100-continue"]],
    [
      ["x-forwarded-for", "6.6.6.6"],
      ["x-forwarded-port", "1"],
      ["x-forwarded", "kept"],
      ["x-real-ip", "6"],
      ["x-original-url", "/a"],
      ["x-rewrite-url", "/b"],
      ["forwarded", "for=x"],
      ["x-request-id", "theirs"],
      ["x_forwarded_for", "u"],
      ["a_b", "u"],
      ["te", "trailers"],
      ["transfer-encoding", "chunked"],
      ["upgrade", "h2c"],
      ["proxy-authorization", "p"],
      ["set-cookie", "a=1"],
      ["set-cookie", "b=2"],
    ],
    [["connection", "x-forwarded-for, host, x-request-id"], ["host", "b"], ["x-c", "3"]],
  ];
  // Fields in name order, same-name fields in their order (the order that carries meaning).
  const canonical = (h: HeaderList) =>
    [...h].map(([k, v], i) => [k, v, i] as const)
      .sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[2] - b[2])
      .map(([k, v]) => `${k}: ${v}`);
  for (const fields of cases) {
    for (const rfc7239 of [false, true]) {
      for (const underscores of [false, true]) {
        for (const host of ["site:8080", ""]) {
          const src = new HeaderList();
          for (const [k, v] of fields) src.append(k, v);
          const f = {
            peer: "::1",
            trustedPeer: false,
            scheme: "https",
            hopScheme: "http",
            host,
            version: "1.1",
            rfc7239,
          } as const;
          const steps = withoutHopByHop(src);
          if (!underscores) dropUnderscoredNames(steps);
          steps.delete("expect");
          steps.setChecked("host", "up:81");
          setForwardingHeaders(steps, f);
          steps.setChecked("x-request-id", "id-1");
          const one = untrustedUpstreamFields(src, f, {
            host: "up:81",
            requestId: "id-1",
            underscores,
          });
          const what = JSON.stringify({ fields, rfc7239, underscores, host });
          assert.deepEqual(canonical(one), canonical(steps), what);
          assert.deepEqual([...one][0], ["host", "up:81"], what);
        }
      }
    }
  }
});

Deno.test("requestLength takes plain digits and a list of one length repeated, nothing else", () => {
  assert.equal(requestLength("5"), 5);
  assert.equal(requestLength("0"), 0);
  assert.equal(requestLength("5, 5"), 5);
  assert.equal(requestLength("5,5 , 5"), 5);
  for (
    const v of [
      "5, 6",
      "5,",
      ",5",
      "",
      " ",
      "+5",
      "-5",
      "0x5",
      "5 5",
      "1e1",
      "5, +5",
      "99999999999999999999, 99999999999999999999",
    ]
  ) {
    assert.equal(requestLength(v), -1, JSON.stringify(v));
  }
});
