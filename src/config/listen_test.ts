import assert from "node:assert/strict";
import { formatListenAddr, isLoopback, listenersOverlap, parseListenAddr } from "./listen.ts";
import type { ListenAddr } from "./listen.ts";
import { loadConfigText } from "./load.ts";

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
  assert.equal(
    parseListenAddr("localhost:8080"),
    'Invalid listen address "localhost:8080": use an IP address, not a name, e.g. 127.0.0.1:8080',
  );
  assert.match(
    parseListenAddr("api.example.com:443") as string,
    /not a name, e.g\. 0\.0\.0\.0:443$/,
  );
  // Go's and Caddy's form: which address was meant is the question.
  assert.equal(
    parseListenAddr(":8080"),
    'Invalid listen address ":8080": name the address too: 0.0.0.0:8080 (every IPv4 address), ' +
      "[::]:8080 (every address) or 127.0.0.1:8080 (this machine only)",
  );
  assert.match(parseListenAddr("*:80") as string, /name the address too: 0\.0\.0\.0:80 /);
  assert.match(parseListenAddr("1.2.3:80") as string, /use IP:PORT/);
  assert.match(parseListenAddr("::1:8080") as string, /put IPv6 addresses in brackets/);
  assert.match(parseListenAddr("127.0.0.1:65536") as string, /Invalid port/);
});

Deno.test("parseListenAddr: an IPv6 address has one spelling; isLoopback knows every loopback form", () => {
  assert.deepEqual(parseListenAddr("[0:0::1]:80"), { hostname: "::1", port: 80 });
  assert.deepEqual(parseListenAddr("[0::]:80"), { hostname: "::", port: 80 });
  assert.deepEqual(parseListenAddr("[FD00::0002]:80"), { hostname: "fd00::2", port: 80 });
  for (const h of ["::1", "127.0.0.2", "::ffff:127.0.0.1", "::ffff:7f00:1"]) {
    assert.equal(isLoopback(h), true, h);
  }
  assert.equal(isLoopback("::ffff:8000:1"), false);
});

Deno.test("listenersOverlap: same address, [::] over all, 0.0.0.0 over IPv4 only", () => {
  const at = (s: string) => parseListenAddr(s) as ListenAddr;
  const overlap = (a: string, b: string) => listenersOverlap(at(a), at(b));
  assert.equal(overlap("[::1]:80", "[0:0::1]:80"), true, "two spellings of ::1");
  assert.equal(overlap("[::]:80", "127.0.0.1:80"), true, "[::] is dual-stack");
  assert.equal(overlap("0.0.0.0:80", "[::]:80"), true);
  assert.equal(overlap("0.0.0.0:80", "10.0.0.1:80"), true);
  assert.equal(overlap("0.0.0.0:80", "[::1]:80"), false, "IPv4 any and IPv6 loopback");
  assert.equal(overlap("127.0.0.1:80", "127.0.0.2:80"), false);
  assert.equal(overlap("0.0.0.0:0", "0.0.0.0:0"), false, "port 0: each gets its own");
});

Deno.test("validateConfig: listeners are compared as addresses, not as text", () => {
  const env = { exists: () => true };
  const issues = (admin: string) =>
    loadConfigText(
      `listen_addr: "${admin.startsWith("[") ? "[::1]" : "0.0.0.0"}:8080"\n` +
        `admin: { listen_addr: "${admin}", token: t }\nroutes: { /: { type: static, root: . } }\n`,
      { file: "c.yaml", env },
    ).issues.map((i) => i.message);
  assert.deepEqual(issues("[::1]:8080"), [
    "admin.listen_addr ([::1]:8080) is the same address as listen_addr ([::1]:8080)",
  ]);
  assert.match(issues("[0:0::1]:8080").join(), /is the same address as listen_addr/);
  assert.deepEqual(issues("[::2]:8080"), []);
  // Two addresses, one port: "the same address" was said of 127.0.0.1 and 0.0.0.0.
  assert.deepEqual(issues("127.0.0.1:8080"), [
    "admin.listen_addr (127.0.0.1:8080) shares port 8080 with listen_addr (0.0.0.0:8080), " +
    "which listens on every IPv4 address",
  ]);
  const any = loadConfigText(
    'listen_addr: "127.0.0.1:8080"\nadmin: { listen_addr: "[::]:8080", token: t }\n' +
      "routes: { /: { type: static, root: . } }\n",
    { file: "c.yaml", env },
  );
  assert.deepEqual(any.issues.map((i) => i.message), [
    "admin.listen_addr ([::]:8080) listens on every address, so on listen_addr's port 8080 " +
    "(127.0.0.1:8080) too",
  ]);
  const v4 = loadConfigText(
    'listen_addr: "0.0.0.0:8080"\nadmin: { listen_addr: "[::1]:8080" }\n' +
      "routes: { /: { type: static, root: . } }\n",
    { file: "c.yaml", env },
  );
  assert.deepEqual(v4.issues.map((i) => i.message), [], "0.0.0.0 and ::1 do not meet");
});

Deno.test("parseListenAddr: a link-local address keeps its zone, which binding it needs", () => {
  // The Rust Prox took [fe80::1%2]:80; Prox refused every zone, so no link-local listener.
  assert.deepEqual(parseListenAddr("[fe80::1%eth0]:80"), { hostname: "fe80::1%eth0", port: 80 });
  assert.deepEqual(parseListenAddr("[FE80::0:1%2]:80"), { hostname: "fe80::1%2", port: 80 });
  assert.equal(formatListenAddr({ hostname: "fe80::1%eth0", port: 80 }), "[fe80::1%eth0]:80");
  assert.match(parseListenAddr("[fe80::1%]:80") as string, /use IP:PORT/);
  assert.match(parseListenAddr("[fe80::1%a b]:80") as string, /use IP:PORT/);
});

Deno.test("parseListenAddr: a URL says to drop the scheme (it said to bracket IPv6)", () => {
  assert.equal(
    parseListenAddr("http://0.0.0.0:8080"),
    'Invalid listen address "http://0.0.0.0:8080": write the address without a scheme, e.g. ' +
      "0.0.0.0:8080",
  );
  assert.match(
    parseListenAddr("https://[::]:443/") as string,
    /without a scheme, e\.g\. \[::\]:443$/,
  );
});
