import assert from "node:assert/strict";
import { formatListenAddr, parseListenAddr } from "./listen.ts";

Deno.test("parseListenAddr: IPv4, bracketed IPv6 and port 0", () => {
  assert.deepEqual(parseListenAddr("0.0.0.0:8080"), { hostname: "0.0.0.0", port: 8080 });
  assert.deepEqual(parseListenAddr("[::]:443"), { hostname: "::", port: 443 });
  assert.deepEqual(parseListenAddr("[::1]:0"), { hostname: "::1", port: 0 });
  assert.equal(formatListenAddr({ hostname: "::1", port: 80 }), "[::1]:80");
});

Deno.test("parseListenAddr: an IPv4 part with a leading zero is refused (the resolver reads octal)", () => {
  // Deno.serve({hostname: "127.0.0.010"}) bound 127.0.0.8.
  assert.equal(
    parseListenAddr("127.0.0.010:8080"),
    'Invalid listen address "127.0.0.010:8080": a leading zero makes the system read the number ' +
      "as octal; write 127.0.0.10:8080",
  );
  assert.match(parseListenAddr("010.000.0.1:80") as string, /write 10\.0\.0\.1:80$/);
  assert.deepEqual(parseListenAddr("10.0.0.0:80"), { hostname: "10.0.0.0", port: 80 });
});

Deno.test("parseListenAddr: names, a missing host and IPv6 without brackets say what to write", () => {
  assert.match(parseListenAddr("localhost:8080") as string, /use IP:PORT/);
  assert.match(parseListenAddr(":8080") as string, /use IP:PORT/);
  assert.match(parseListenAddr("::1:8080") as string, /put IPv6 addresses in brackets/);
  assert.match(parseListenAddr("127.0.0.1:65536") as string, /Invalid port/);
});
