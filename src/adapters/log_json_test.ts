import assert from "node:assert/strict";
import {
  clfTime,
  createAccessLog,
  createBufferedSink,
  createJsonLogger,
  createQueuedWriter,
  formatClf,
  PIPE_BUF,
  resolveLogLevel,
} from "./log_json.ts";
import type { LineSink } from "./log_json.ts";
import type { AccessRecord } from "../ports.ts";

function capture(): { lines: [string, string][]; sink: LineSink } {
  const lines: [string, string][] = [];
  return { lines, sink: (line, stream) => lines.push([stream, line]) };
}

const REC: AccessRecord = {
  time: Date.UTC(2026, 10, 25, 21, 5, 9),
  requestId: "abc-1",
  clientIp: "192.0.2.7",
  method: "GET",
  host: "example.com",
  path: '/a "b"',
  query: "",
  status: 200,
  bytesIn: 0,
  bytesOut: 1234,
  durationMs: 1.23456,
  route: "/",
  upstream: "http://10.0.0.1:8080",
  upstreamStatus: 200,
  upstreamMs: 1.1,
  protocol: "h2",
  tls: true,
  retries: 0,
  error: null,
  userAgent: "curl/8",
  referer: null,
};

Deno.test("createJsonLogger writes JSON lines, warn and error to stderr, drops below level", () => {
  const { lines, sink } = capture();
  const log = createJsonLogger({ level: "info", sink, now: () => 0 });
  log.debug("hidden");
  log.info("Prox listening", { addr: "127.0.0.1:3000" });
  log.error("Boom", { error: new Error("bad thing"), n: 10n });
  assert.equal(lines.length, 2);
  assert.equal(lines[0][0], "stdout");
  assert.deepEqual(JSON.parse(lines[0][1]), {
    time: "1970-01-01T00:00:00.000Z",
    level: "info",
    msg: "Prox listening",
    addr: "127.0.0.1:3000",
  });
  assert.equal(lines[1][0], "stderr");
  const err = JSON.parse(lines[1][1]);
  assert.deepEqual(err.error, { name: "Error", message: "bad thing" });
  assert.equal(err.n, "10");
  assert.ok(lines.every(([, l]) => l.endsWith("\n") && !l.slice(0, -1).includes("\n")));
});

Deno.test("resolveLogLevel: env (and --log-level) beats config, default info", () => {
  assert.equal(resolveLogLevel({}), "info");
  assert.equal(resolveLogLevel({ config: "warn" }), "warn");
  assert.equal(resolveLogLevel({ env: "debug", config: "warn" }), "debug");
  assert.equal(resolveLogLevel({ env: "loud", config: "error" }), "error");
});

Deno.test("createAccessLog json writes one line with every AccessRecord field", () => {
  const { lines, sink } = capture();
  createAccessLog("json", { sink })(REC);
  assert.equal(lines.length, 1);
  const o = JSON.parse(lines[0][1]);
  for (const k of Object.keys(REC)) assert.ok(k in o, `missing ${k}`);
  assert.equal(o.time, "2026-11-25T21:05:09.000Z");
  assert.equal(o.requestId, "abc-1");
  assert.equal(o.durationMs, 1.235);
  assert.equal(o.referer, null);
  assert.equal(o.msg, "access");
});

Deno.test("formatClf writes Common and Combined Log Format with escaped quotes", () => {
  assert.equal(clfTime(REC.time), "[25/Nov/2026:21:05:09 +0000]");
  assert.equal(
    formatClf(REC, false),
    '192.0.2.7 - - [25/Nov/2026:21:05:09 +0000] "GET /a \\x22b\\x22 HTTP/2.0" 200 1234',
  );
  assert.equal(
    formatClf({ ...REC, bytesOut: 0 }, true),
    '192.0.2.7 - - [25/Nov/2026:21:05:09 +0000] "GET /a \\x22b\\x22 HTTP/2.0" 200 - "-" "curl/8"',
  );
  // the query string in the request line, after the path
  assert.equal(
    formatClf({ ...REC, query: 'q=1&x="y"' }, false),
    '192.0.2.7 - - [25/Nov/2026:21:05:09 +0000] "GET /a \\x22b\\x22?q=1&x=\\x22y\\x22 HTTP/2.0" 200 1234',
  );
  // basic_auth's user in the authuser field, escaped so the fields stay apart
  assert.equal(
    formatClf({ ...REC, authUser: 'jö "x" y' }, false),
    '192.0.2.7 - jö\\x20\\x22x\\x22\\x20y [25/Nov/2026:21:05:09 +0000] "GET /a \\x22b\\x22 HTTP/2.0" 200 1234',
  );
  // an HTTP/1.0 request (Prox's own engine tells)
  assert.match(formatClf({ ...REC, protocol: "http/1.0" }, false), / HTTP\/1\.0" 200 1234$/);
  const { lines, sink } = capture();
  createAccessLog("combined", { sink })(REC);
  assert.match(lines[0][1], /"curl\/8"\n$/);
});

Deno.test("createBufferedSink writes whole lines of at most PIPE_BUF bytes (no interleaving in a shared pipe)", () => {
  const writes: string[] = [];
  const b = createBufferedSink({ sink: (l) => void writes.push(l) });
  const line = (i: number) => `{"n":${i},"ua":"${"é".repeat(300)}"}\n`; // 600 bytes of é
  for (let i = 0; i < 100; i++) b.sink(line(i), "stdout");
  const long = "x".repeat(PIPE_BUF + 10) + "\n";
  b.sink(long, "stdout");
  b.sink(line(100), "stdout");
  b.flush();
  const enc = new TextEncoder();
  assert.ok(writes.length > 1);
  assert.equal(writes.join(""), [...Array(100).keys()].map(line).join("") + long + line(100));
  for (const w of writes) {
    assert.ok(w.endsWith("\n"), "whole lines");
    if (w !== long) assert.ok(enc.encode(w).length <= PIPE_BUF, `${enc.encode(w).length} bytes`);
  }
  assert.ok(writes.includes(long), "a longer line goes alone");
});

Deno.test("createBufferedSink batches lines into one write per flush and on size", async () => {
  const writes: [string, string][] = [];
  const b = createBufferedSink({
    flushMs: 5,
    maxBytes: 30,
    sink: (l, s) => void writes.push([s, l]),
  });
  b.sink("a\n", "stdout");
  b.sink("b\n", "stdout");
  b.sink("e\n", "stderr");
  assert.equal(writes.length, 0);
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(writes, [["stdout", "a\nb\n"], ["stderr", "e\n"]]);
  b.sink("x".repeat(40) + "\n", "stdout");
  assert.equal(writes.length, 3);
  b.sink("tail\n", "stdout");
  b.flush();
  assert.deepEqual(writes.at(-1), ["stdout", "tail\n"]);
});

Deno.test("createJsonLogger follows a reloaded level unless PROX_LOG_LEVEL decided", () => {
  const saved = Deno.env.get("PROX_LOG_LEVEL");
  try {
    Deno.env.delete("PROX_LOG_LEVEL");
    const { lines, sink } = capture();
    const log = createJsonLogger({ level: "info", sink, now: () => 0 });
    assert.equal(log.enabled?.("info"), true);
    assert.equal(log.enabled?.("debug"), false);
    log.setLevel("error");
    assert.equal(log.enabled?.("warn"), false);
    assert.equal(log.enabled?.("error"), true);
    log.info("after reload");
    log.error("still");
    log.setLevel(undefined); // the key removed: back to the default, info
    log.info("default again");
    assert.deepEqual(lines.map(([, l]) => JSON.parse(l).msg), ["still", "default again"]);
    // Chosen on the command line (or in the environment): a reload does not change it.
    Deno.env.set("PROX_LOG_LEVEL", "warn");
    const pinned = capture();
    const fixed = createJsonLogger({ level: "info", sink: pinned.sink, now: () => 0 });
    fixed.setLevel("debug");
    fixed.info("dropped");
    assert.equal(pinned.lines.length, 0);
  } finally {
    if (saved === undefined) Deno.env.delete("PROX_LOG_LEVEL");
    else Deno.env.set("PROX_LOG_LEVEL", saved);
  }
});

Deno.test("createQueuedWriter writes in order without blocking, drops past maxBytes and says how many", async () => {
  const written: string[] = [];
  const waiting: (() => void)[] = [];
  const dec = new TextDecoder();
  // A file whose reader stalls until told to go on.
  const file = {
    write: (p: Uint8Array) =>
      new Promise<number>((resolve) =>
        waiting.push(() => {
          written.push(dec.decode(p));
          resolve(p.length);
        })
      ),
    writeSync: (p: Uint8Array) => {
      written.push(`sync:${dec.decode(p)}`);
      return p.length;
    },
  };
  const drops: number[] = [];
  const w = createQueuedWriter(file, { maxBytes: 8, onDropped: (n) => drops.push(n) });
  w.write("a\n");
  w.write("b\n");
  w.write("c\n");
  w.write("d\ne\n"); // 2 + 2 + 2 + 4 > 8: dropped
  assert.deepEqual(written, []);
  await new Promise((r) => setTimeout(r, 0));
  while (waiting.length > 0) {
    waiting.shift()!();
    await new Promise((r) => setTimeout(r, 0));
  }
  assert.deepEqual(written, ["a\n", "b\n", "c\n"]);
  assert.deepEqual(drops, [2]);
  // At exit: the chunk in flight stays with its write, the rest goes synchronously.
  w.write("f\n");
  w.write("g\n");
  await new Promise((r) => setTimeout(r, 0));
  w.flushSync();
  assert.deepEqual(written.slice(3), ["sync:g\n"]);
  waiting.shift()!();
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(written.slice(4), ["f\n"]);
  // A line logged just before Deno.exit (same task): not in flight yet, flushSync writes it.
  w.write("h\n");
  w.flushSync();
  assert.deepEqual(written.slice(5), ["sync:h\n"]);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(waiting.length, 0);
});

Deno.test("createQueuedWriter: after a drain that timed out (the reader stalls), flushSync does not block the exit", async () => {
  const pending: (() => void)[] = [];
  const synced: string[] = [];
  const file = {
    write: () => new Promise<number>((resolve) => pending.push(() => resolve(0))),
    writeSync: (p: Uint8Array) => {
      synced.push(new TextDecoder().decode(p)); // would block on the stalled pipe
      return p.length;
    },
  };
  const w = createQueuedWriter(file);
  w.write("a\n");
  w.write("b\n");
  await w.drain(10);
  w.flushSync();
  assert.deepEqual(synced, []);
});
