// startTcpHealth with a scripted connect: send/expect over answers split across reads or too long,
// and stop() ending a probe still in flight without changing a state after.
import assert from "node:assert/strict";
import { carryTcpHealth, startTcpHealth } from "./tcp_health.ts";
import { compileTcp } from "./tcp_proxy.ts";
import { TcpEntry } from "../config/schema_tcp.ts";
import { recordingLogger } from "../../tests/integration/_ws.ts";
import { waitFor } from "../../tests/_harness.ts";

const enc = new TextEncoder();

/** A plan for one target with `health_check` (thresholds 1). */
function plan(hc: Record<string, unknown>) {
  return compileTcp(
    "redis",
    TcpEntry.parse({
      listen_addr: "127.0.0.1:0",
      targets: ["127.0.0.1:6379"],
      health_check: { interval: "1h", unhealthy_threshold: 1, healthy_threshold: 1, ...hc },
    }),
  );
}

/** A connect whose connection answers `chunks` one read each, then its end. */
function answering(chunks: string[], written: string[]): typeof Deno.connect {
  return (() => {
    const left = chunks.map((c) => enc.encode(c));
    const conn = {
      write: (b: Uint8Array) => {
        written.push(new TextDecoder().decode(b));
        return Promise.resolve(b.length);
      },
      // As a socket's read: at most what `buf` holds, the rest on the next read.
      read: (buf: Uint8Array) => {
        const next = left.shift();
        if (!next) return Promise.resolve(null);
        const n = Math.min(next.length, buf.length);
        buf.set(next.subarray(0, n));
        if (n < next.length) left.unshift(next.subarray(n));
        return Promise.resolve(n);
      },
      close: () => {},
    };
    return Promise.resolve(conn as unknown as Deno.TcpConn);
  }) as unknown as typeof Deno.connect;
}

Deno.test("tcp health send/expect: an answer split across reads matches; a long one without it fails", async () => {
  const written: string[] = [];
  const logger = recordingLogger();
  const p = plan({ send: "PING\r\n", expect: "+PONG" });
  const c = startTcpHealth(p, { logger, connect: answering(["+PO", "NG\r\n"], written) });
  await waitFor(() => c.states()[0].status === "up", { what: "up" });
  c.stop();
  assert.deepEqual(written, ["PING\r\n"]);

  const long = plan({ expect: "+PONG" });
  const d = startTcpHealth(long, {
    logger,
    connect: answering(["x".repeat(3000), "y".repeat(3000)], []),
  });
  await waitFor(() => d.states()[0].status === "down", { what: "down" });
  d.stop();
  const down = logger.records.find((r) => r.msg === "tcp target marked down by health check")!;
  assert.match(String(down.reason), /^no "\+PONG" in the first 4096 bytes \(it answered "xxx/);
});

Deno.test("tcp health send_hex/expect_hex: a failure shows the expected and the answered bytes in hex", async () => {
  const written: string[] = [];
  const logger = recordingLogger();
  const p = plan({ send_hex: "50 49", expect_hex: "4E" });
  const c = startTcpHealth(p, { logger, connect: answering(["\x00\x01R"], written) });
  await waitFor(() => c.states()[0].status === "down", { what: "down" });
  c.stop();
  assert.deepEqual(written, ["PI"]);
  const down = logger.records.find((r) => r.msg === "tcp target marked down by health check")!;
  assert.equal(down.reason, "closed before answering bytes 4e (it answered 000152)");
});

Deno.test("tcp health: stop() aborts a probe still connecting, and no state changes after", async () => {
  let signal: AbortSignal | undefined;
  const connect = ((o: { signal?: AbortSignal }) => {
    signal = o.signal;
    return new Promise((_, reject) =>
      o.signal!.addEventListener("abort", () => reject(new Error("aborted")))
    );
  }) as unknown as typeof Deno.connect;
  const logger = recordingLogger();
  const c = startTcpHealth(plan({}), { logger, connect });
  assert.equal(signal?.aborted, false);
  c.stop();
  assert.equal(signal?.aborted, true);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(c.states()[0].status, "unknown");
  assert.equal(logger.records.length, 0);
});

Deno.test("tcp health: a connect that completes as the timeout fires still ends in the timeout", async () => {
  // The connection comes just as the probe gives up on it (Deno.connect may resolve after its
  // signal aborted), and its target never answers: the probe must not wait for ever.
  // As a socket's: a read ends when the connection is closed, and one after fails.
  let isClosed = false, wake: (() => void) | undefined;
  const conn = {
    write: (b: Uint8Array) =>
      isClosed ? Promise.reject(new Deno.errors.BadResource()) : Promise.resolve(b.length),
    read: () =>
      isClosed
        ? Promise.reject(new Deno.errors.BadResource())
        : new Promise<null>((_, reject) => wake = () => reject(new Deno.errors.BadResource())),
    close: () => {
      isClosed = true;
      wake?.();
    },
  };
  const connect =
    ((o: { signal: AbortSignal }) =>
      new Promise((resolve) =>
        o.signal.addEventListener("abort", () => resolve(conn as unknown as Deno.TcpConn))
      )) as unknown as typeof Deno.connect;
  const logger = recordingLogger();
  const c = startTcpHealth(plan({ timeout: "10ms", send: "PING\r\n", expect: "+PONG" }), {
    logger,
    connect,
  });
  await waitFor(() => c.states()[0].status === "down", { what: "down" });
  c.stop();
  const down = logger.records.find((r) => r.msg === "tcp target marked down by health check")!;
  assert.equal(down.reason, "no answer within 10 ms");
});

Deno.test("tcp health with proxy_protocol: a probe begins with the header an upstream expects (v1 UNKNOWN, v2 LOCAL)", async () => {
  // An upstream behind `proxy_protocol` (nginx `listen … proxy_protocol`, HAProxy `accept-proxy`)
  // reads a header first on every connection: a probe without one is a broken connection to it,
  // and `send` would be read as a malformed header (HAProxy sends it on checks too).
  const withPp = (version: "v1" | "v2", hc: Record<string, unknown>) =>
    compileTcp(
      "redis",
      TcpEntry.parse({
        listen_addr: "127.0.0.1:0",
        targets: ["127.0.0.1:6379"],
        proxy_protocol: version,
        health_check: { interval: "1h", unhealthy_threshold: 1, healthy_threshold: 1, ...hc },
      }),
    );
  const v1: string[] = [];
  const a = startTcpHealth(withPp("v1", { send: "PING\r\n", expect: "+PONG" }), {
    logger: recordingLogger(),
    connect: answering(["+PONG\r\n"], v1),
  });
  await waitFor(() => a.states()[0].status === "up", { what: "up" });
  a.stop();
  assert.equal(v1.join(""), "PROXY UNKNOWN\r\nPING\r\n");

  const v2: string[] = [];
  const b = startTcpHealth(withPp("v2", {}), {
    logger: recordingLogger(),
    connect: answering([], v2),
  });
  await waitFor(() => b.states()[0].status === "up", { what: "up" });
  b.stop();
  assert.equal(v2.join(""), "\r\n\r\n\0\r\nQUIT\n\x20\0\0\0");
});

Deno.test("carryTcpHealth: a changed entry's targets keep their check states and, per sni name, their ejections", () => {
  const entry = (extra: Record<string, unknown>) =>
    compileTcp(
      "tls",
      TcpEntry.parse({
        listen_addr: "127.0.0.1:0",
        sni: { "a.test": ["10.0.0.1:443", "10.0.0.2:443"], "b.test": ["10.0.0.1:443"] },
        default: ["10.0.0.3:443"],
        health_check: { interval: "10s" },
        ...extra,
      }),
    );
  const prev = entry({});
  const a = prev.sni!.exact.get("a.test")!;
  const b = prev.sni!.exact.get("b.test")!;
  const down = { status: "down" as const, successes: 1, failures: 0 };
  a.active[0] = b.active[0] = down;
  a.health[1] = { failures: 0, times: [], ejectedUntil: 5_000, ejections: 1 };
  // A new target for b.test, another timeout: the plan is new.
  const next = entry({
    sni: { "a.test": ["10.0.0.2:443", "10.0.0.1:443"], "b.test": ["10.0.0.4:443", "10.0.0.1:443"] },
    timeouts: { connect: "3s" },
  });
  carryTcpHealth(next, prev);
  const na = next.sni!.exact.get("a.test")!, nb = next.sni!.exact.get("b.test")!;
  assert.deepEqual(na.active, [a.active[1], down]);
  assert.deepEqual(nb.active.map((h) => h.status), ["unknown", "down"]);
  assert.equal(nb.active[1].successes, 1, "the successes counted toward healthy_threshold stay");
  assert.equal(na.health[0].ejectedUntil, 5_000, "a.test's ejection of 10.0.0.2 stays");
  assert.equal(nb.health[1].ejectedUntil, 0);
  // Passive health turned off: the ejection ends.
  const off = entry({ passive_health: { enabled: false } });
  carryTcpHealth(off, prev);
  assert.equal(off.sni!.exact.get("a.test")!.health[1].ejectedUntil, 0);
  // The check itself changed: the state stands until its first result, which decides.
  const other = entry({ health_check: { interval: "10s", send: "PING" } });
  carryTcpHealth(other, prev);
  const oa = other.sni!.exact.get("a.test")!;
  assert.equal(oa.active[0].status, "down");
  assert.equal(oa.active[0].carried, true);
});

Deno.test("tcp health: rounds are jittered (up to 10% early), so checkers started together drift apart", async () => {
  // On a fixed setInterval, the checkers of a `workers` Prox probed every target in lock-step.
  const times: number[][] = [[], []];
  const refused = (k: number) =>
    (() => {
      times[k].push(performance.now());
      return Promise.reject(new Deno.errors.ConnectionRefused("refused"));
    }) as unknown as typeof Deno.connect;
  const p = () => plan({ interval: "1s", timeout: "100ms" });
  const early = startTcpHealth(p(), {
    logger: recordingLogger(),
    connect: refused(0),
    random: () => 0,
  });
  const late = startTcpHealth(p(), {
    logger: recordingLogger(),
    connect: refused(1),
    random: () => 1,
  });
  try {
    await waitFor(() => times[0].length >= 3 && times[1].length >= 3, {
      what: "three rounds each",
      timeoutMs: 5_000,
    });
    // 0.9 s apart against 1 s: the third rounds 0.2 s apart (timers fire late, never early).
    assert.ok(times[1][2] - times[0][2] > 100, `${times[1][2] - times[0][2]} ms apart`);
  } finally {
    early.stop();
    late.stop();
  }
});
