import assert from "node:assert/strict";
import { authoritativeServers, awaitTxt } from "./acme_dns.ts";
import type { ServerLookup, TxtLookup } from "./acme_dns.ts";
import type { Logger } from "../ports.ts";

const quiet: Logger & { warned: string[] } = {
  warned: [],
  log() {},
  debug() {},
  info() {},
  warn(m) {
    quiet.warned.push(m);
  },
  error() {},
};

Deno.test("authoritativeServers: the closest zone with NS records, its servers' addresses on port 53", async () => {
  const asked: string[] = [];
  const lookup: ServerLookup = (name, type) => {
    asked.push(`${type} ${name}`);
    if (type === "NS") {
      return Promise.resolve(name === "example.com" ? ["ns1.dns.test", "ns2.dns.test"] : []);
    }
    if (type === "A") {
      return Promise.resolve(name === "ns1.dns.test" ? ["192.0.2.1"] : ["192.0.2.2"]);
    }
    // A lookup error (no AAAA) is a server without that family, not a failure.
    return Promise.reject(new Error("no AAAA"));
  };
  assert.deepEqual(await authoritativeServers("_acme-challenge.a.example.com", lookup), [
    { ipAddr: "192.0.2.1", port: 53 },
    { ipAddr: "192.0.2.2", port: 53 },
  ]);
  assert.deepEqual(asked.slice(0, 2), ["NS a.example.com", "NS example.com"]);
  assert.deepEqual(await authoritativeServers("x.invalid", () => Promise.resolve([])), []);
});

Deno.test("awaitTxt: waits until every server answers the value; names the ones that never did", async () => {
  let round = 0;
  const txt: TxtLookup = (name, server) => {
    assert.equal(name, "_acme-challenge.example.com");
    // The second server catches up on the third look.
    if (server.ipAddr === "192.0.2.2" && round++ < 2) return Promise.resolve([["stale"]]);
    return Promise.resolve([["v"]]);
  };
  const resolvers = ["192.0.2.1", "192.0.2.2:5353"];
  await awaitTxt("_acme-challenge.example.com.", "v", {
    resolvers,
    timeoutMs: 5_000,
    pollMs: 1,
    logger: quiet,
    txt,
  });
  assert.equal(round, 3);
  await assert.rejects(
    awaitTxt("_acme-challenge.example.com.", "v", {
      resolvers,
      timeoutMs: 20,
      pollMs: 1,
      logger: quiet,
      txt: (_n, s) =>
        s.port === 5353
          ? Promise.reject(new Error("connection refused"))
          : Promise.resolve([["v"]]),
    }),
    /was not seen on 192\.0\.2\.2:5353 within 0 s \(last error: connection refused\)/,
  );
  // No authoritative servers found: the CA is asked anyway, with a warning.
  await awaitTxt("_acme-challenge.example.com.", "v", {
    timeoutMs: 20,
    logger: quiet,
    lookup: () => Promise.resolve([]),
    txt: () => Promise.reject(new Error("not asked")),
  });
  assert.match(quiet.warned.join(), /no authoritative name servers found/);
});

Deno.test("awaitTxt: a name server counts as seen through any of its addresses (no IPv6 route: its AAAA unreachable)", async () => {
  const lookup: ServerLookup = (name, type) => {
    if (type === "NS") return Promise.resolve(name === "example.com" ? ["ns1.dns.test"] : []);
    if (type === "A") return Promise.resolve(["192.0.2.1"]);
    if (type === "AAAA") return Promise.resolve(["2001:db8::1"]);
    return Promise.resolve([]);
  };
  const asked: string[] = [];
  const txt: TxtLookup = (_name, server) => {
    asked.push(server.ipAddr);
    return server.ipAddr.includes(":")
      ? Promise.reject(new Error("Network is unreachable (os error 101)"))
      : Promise.resolve([["v"]]);
  };
  await awaitTxt("_acme-challenge.example.com.", "v", {
    timeoutMs: 200,
    pollMs: 1,
    logger: quiet,
    lookup,
    txt,
  });
  assert.ok(asked.includes("192.0.2.1"));
  // Still, a server none of whose addresses shows the value is waited for, and named.
  await assert.rejects(
    awaitTxt("_acme-challenge.example.com.", "v", {
      timeoutMs: 20,
      pollMs: 1,
      logger: quiet,
      lookup,
      txt: (_n, s) =>
        s.ipAddr.includes(":")
          ? Promise.reject(new Error("Network is unreachable"))
          : Promise.resolve([["stale"]]),
    }),
    /was not seen on ns1\.dns\.test \(192\.0\.2\.1, 2001:db8::1\)/,
  );
});
