import assert from "node:assert/strict";
import { Registry } from "./prom_classes.ts";
import { createTcpMetrics, tcpAccessLogOf } from "./tcp_observe.ts";
import type { TcpRecord } from "./tcp_observe.ts";

const rec: TcpRecord = {
  time: Date.UTC(2026, 10, 28, 12, 0, 0),
  name: "pg",
  clientIp: "10.0.0.1",
  clientPort: 40000,
  target: "10.0.0.5:5432",
  bytesIn: 120,
  bytesOut: 4567,
  durationMs: 12.34567,
  outcome: "closed",
};

Deno.test("tcpAccessLogOf writes JSON lines like the HTTP access log, or a CLF-like line", () => {
  const lines: string[] = [];
  const sink = (line: string) => void lines.push(line);
  tcpAccessLogOf("json", { sink })!(rec);
  tcpAccessLogOf(true, { sink })!({ ...rec, outcome: "reset", error: "Connection reset" });
  tcpAccessLogOf("common", { sink })!(rec);
  assert.equal(tcpAccessLogOf(false, { sink }), undefined);
  assert.deepEqual(JSON.parse(lines[0]), {
    ...rec,
    time: "2026-11-28T12:00:00.000Z",
    level: "info",
    msg: "tcp access",
    durationMs: 12.346,
  });
  assert.equal(JSON.parse(lines[1]).error, "Connection reset");
  assert.equal(
    lines[2],
    '10.0.0.1 - - [28/Nov/2026:12:00:00 +0000] "TCP pg 10.0.0.5:5432" closed 4567 120 12\n',
  );
});

Deno.test("createTcpMetrics counts outcomes and bytes, and drops entries a reload removed", async () => {
  const registry = new Registry();
  const active = new Map([["pg", 2]]);
  const m = createTcpMetrics(registry, () => active);
  m.retain(["pg", "old"]);
  m.connection("pg", "closed");
  m.connection("old", "reset");
  m.bytes("pg", "received", 10);
  m.bytes("pg", "received", 5);
  m.bytes("old", "sent", 7);
  let text = await registry.metrics();
  assert.match(text, /^prox_tcp_connections_total\{name="pg",outcome="closed"\} 1$/m);
  assert.match(text, /^prox_tcp_bytes_total\{name="pg",direction="received"\} 15$/m);
  assert.match(text, /^prox_tcp_active_connections\{name="pg"\} 2$/m);
  m.retain(["pg"]);
  m.bytes("old", "sent", 7); // a connection of the removed entry still finishing
  m.connection("old", "closed");
  text = await registry.metrics();
  assert.doesNotMatch(text, /name="old"/);
  assert.match(text, /^prox_tcp_bytes_total\{name="pg",direction="received"\} 15$/m);
});

Deno.test("every metric createTcpMetrics registers has a row in monitoring/README.md's table", async () => {
  // As metrics_prom_test checks createPromMetrics' (the tcp series are registered apart).
  const registry = new Registry();
  createTcpMetrics(registry, () => new Map());
  const names = [...(await registry.metrics()).matchAll(/^# TYPE (prox_\w+) /gm)].map((m) => m[1]);
  assert.equal(names.length, 4, names.join());
  const table = await Deno.readTextFile(new URL("../../monitoring/README.md", import.meta.url));
  const missing = names.filter((n) => !table.includes("| `" + n + "` "));
  assert.deepEqual(missing, [], "add a row for each to monitoring/README.md");
});
