import assert from "node:assert/strict";
import { loadConfigText } from "./load.ts";

const BASE = `listen_addr: "0.0.0.0:8080"
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "http://127.0.0.1:3000" } }
`;

/** The errors of BASE plus `yaml`, as `path: message`. */
const errors = (yaml: string) =>
  loadConfigText(BASE + yaml, { file: "c.yaml", env: { exists: () => true } }).issues
    .filter((i) => i.severity === "error").map((i) => `${i.path}: ${i.message}`);

Deno.test("validateTcp: with workers a tcp listener needs a fixed port", () => {
  const tcp = `tcp: { db: { listen_addr: "127.0.0.1:0", targets: ["10.0.0.5:5432"] } }\n`;
  assert.deepEqual(errors(tcp), []);
  assert.deepEqual(errors(`workers: 2\n${tcp}`), [
    'tcp.db.listen_addr: workers: 2 needs a fixed port in "127.0.0.1:0": with port 0 each ' +
    "worker would listen on a different port",
  ]);
});

Deno.test("validateTcp: client_hello may not be 0s on an sni entry, and is free elsewhere", () => {
  const sni = `sni: { "a.example.com": ["10.0.0.7:443"] }`;
  const entry = (keys: string) =>
    `tcp: { e: { listen_addr: "0.0.0.0:8443", ${keys}, timeouts: { client_hello: 0s } } }\n`;
  assert.deepEqual(errors(entry(sni)), [
    "tcp.e.timeouts.client_hello: timeouts.client_hello of 0s would refuse every client",
  ]);
  assert.deepEqual(errors(entry(`targets: ["10.0.0.5:1"]`)), []);
});

Deno.test("validateTcp: an IPv6 tcp listener on [::] clashes with an IPv4 one of its port", () => {
  const yaml = `tcp:
  a: { listen_addr: "[::]:5432", targets: ["10.0.0.5:5432"] }
  b: { listen_addr: "10.0.0.1:5432", targets: ["10.0.0.6:5432"] }
`;
  assert.deepEqual(errors(yaml), [
    "tcp.b.listen_addr: tcp.b.listen_addr (10.0.0.1:5432) shares port 5432 with " +
    "tcp.a.listen_addr ([::]:5432), which listens on every address",
  ]);
});

Deno.test("validateTcp: an empty sni table needs a default (else every connection is closed)", () => {
  const entry = (keys: string) => `tcp: { e: { listen_addr: "0.0.0.0:8443", ${keys} } }\n`;
  assert.deepEqual(errors(entry("sni: {}")), [
    "tcp.e.sni: tcp.e.sni names no server and there is no default: every connection would be closed",
  ]);
  assert.deepEqual(errors(entry(`sni: {}, default: ["10.0.0.9:443"]`)), []);
});

Deno.test("validateTcp: a target that is the entry's own listener is refused (each connection would open another)", () => {
  const entry = (listen: string, target: string) =>
    `tcp: { e: { listen_addr: "${listen}", targets: ["10.0.0.5:1", "${target}"] } }\n`;
  const loop = (listen: string, target: string) =>
    `tcp.e.targets.1: tcp target ${target} is this entry's own listener (${listen}): ` +
    "each connection would open another until no descriptor is left";
  assert.deepEqual(errors(entry("127.0.0.1:5433", "127.0.0.1:5433")), [
    loop("127.0.0.1:5433", "127.0.0.1:5433"),
  ]);
  assert.deepEqual(errors(entry("0.0.0.0:5433", "localhost:5433")), [
    loop("0.0.0.0:5433", "localhost:5433"),
  ]);
  assert.deepEqual(errors(entry("[::]:5433", "[::1]:5433")), [loop("[::]:5433", "[::1]:5433")]);
  assert.deepEqual(errors(entry("0.0.0.0:5433", "127.0.0.2:5433")), [
    loop("0.0.0.0:5433", "127.0.0.2:5433"),
  ]);
  // Another port, another address: no loop.
  assert.deepEqual(errors(entry("127.0.0.1:5433", "127.0.0.1:5432")), []);
  assert.deepEqual(errors(entry("10.0.0.1:5433", "127.0.0.1:5433")), []);
  assert.deepEqual(errors(entry("0.0.0.0:5433", "[::1]:5433")), []);
  assert.deepEqual(errors(entry("[::]:5433", "127.0.0.1:5433")), [
    loop("[::]:5433", "127.0.0.1:5433"),
  ]);
  // In the sni table and the default too.
  const sni = `tcp: { e: { listen_addr: "[::]:8443", sni: { "a.example.com": ` +
    `["127.0.0.1:8443"] }, default: ["[::1]:8443"] } }\n`;
  assert.equal(errors(sni).length, 2);
});

Deno.test("validateTcp: an expect longer than the 4 KiB of answer a probe searches is refused", () => {
  const entry = (hc: string) =>
    `tcp: { db: { listen_addr: "127.0.0.1:5433", targets: ["10.0.0.5:5432"], health_check: { ${hc} } } }\n`;
  assert.deepEqual(errors(entry(`expect: "${"x".repeat(4096)}"`)), []);
  assert.deepEqual(errors(entry(`expect: "${"é".repeat(2049)}"`)), [
    "tcp.db.health_check.expect: expect is 4098 bytes long: a probe looks for it in the first " +
    "4096 bytes of the answer, so every probe would fail",
  ]);
  assert.deepEqual(errors(entry(`expect_hex: "${"00 ".repeat(4097)}"`)), [
    "tcp.db.health_check.expect_hex: expect_hex is 4097 bytes long: a probe looks for it in the " +
    "first 4096 bytes of the answer, so every probe would fail",
  ]);
});

Deno.test("validateTcp: passive_health.max_latency is refused on a tcp entry (a connect has no answer)", () => {
  const yaml = `tcp: { db: { listen_addr: "127.0.0.1:5432", targets: ["10.0.0.5:5432"], ` +
    `passive_health: { max_latency: 2s } } }\n`;
  const out = errors(yaml);
  assert.equal(out.length, 1, out.join("\n"));
  assert.match(out[0], /^tcp\.db\.passive_health\.max_latency: /);
});
