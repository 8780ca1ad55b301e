// gRPC deadlines through Prox (PROTOCOL-HTTP2.md "grpc-timeout"): the client's grpc-timeout
// bounds the call with the route's timeouts, goes upstream as the time left, and a call that
// runs out ends as gRPC does (grpc-status 4, DEADLINE_EXCEEDED): trailers-only before the answer's
// head, trailers after part of its body, never a plain 504 or a reset. node:http2 on both sides,
// on 127.0.0.1:0.
import http2 from "node:http2";
import assert from "node:assert/strict";
import { waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { parseGrpcTimeout } from "../../src/domain/grpc.ts";
import { silentLogger } from "../../src/ports.ts";
import { deadlineTimers } from "../../src/proxy/deadline_timers.ts";

onProxEngines();

/** A gRPC message frame of `text`. */
function frame(text: string): Uint8Array<ArrayBuffer> {
  const msg = new TextEncoder().encode(text);
  const b = new Uint8Array(5 + msg.length);
  new DataView(b.buffer).setUint32(1, msg.length);
  b.set(msg, 5);
  return b;
}

/**
 * A gRPC-ish h2c upstream: `seen` keeps each request head, `closed` counts streams that ended
 * (reset by Prox included); `answer` decides what a stream gets (by default: nothing, ever).
 */
async function upstream(answer: (s: http2.ServerHttp2Stream) => void = () => {}) {
  const server = http2.createServer();
  const seen: http2.IncomingHttpHeaders[] = [];
  let closed = 0;
  server.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
    seen.push(headers);
    stream.on("error", () => {});
    stream.on("close", () => closed++);
    answer(stream);
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  return {
    port,
    seen,
    closed: () => closed,
    async [Symbol.asyncDispose]() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Answers the head and one message at once, then nothing more (a stalled server stream). */
const stallAfterOne = (s: http2.ServerHttp2Stream) => {
  s.respond({ ":status": 200, "content-type": "application/grpc" });
  s.write(frame("one"));
};

function route(port: number, timeouts = "") {
  return `health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://127.0.0.1:${port}"
    upstream_protocol: h2c
${timeouts ? `    timeouts: ${timeouts}\n` : ""}`;
}

interface Call {
  head: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders | null;
  body: string;
  /** The stream's RST_STREAM code when Prox reset it (0: it ended cleanly). */
  rst: number;
  ms: number;
}

/** One call over h2c to Prox: POST `path` with `headers`, a one-message body. */
async function call(port: number, headers: Record<string, string>): Promise<Call> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  const t0 = performance.now();
  try {
    return await new Promise<Call>((resolve) => {
      const req = session.request({
        ":method": "POST",
        ":path": "/test.Echo/Echo",
        "content-type": "application/grpc",
        te: "trailers",
        ...headers,
      });
      const out: Call = { head: {}, trailers: null, body: "", rst: 0, ms: 0 };
      req.on("response", (h) => out.head = h);
      req.on("trailers", (t) => out.trailers = t);
      req.on("data", (c: Uint8Array) => out.body += new TextDecoder().decode(c.subarray(5)));
      req.on("error", () => {});
      req.on("close", () => {
        out.rst = req.rstCode ?? 0;
        out.ms = performance.now() - t0;
        resolve(out);
      });
      req.end(frame("hi"));
    });
  } finally {
    session.close();
  }
}

Deno.test("grpc-timeout: a call whose upstream does not answer in time gets DEADLINE_EXCEEDED (trailers-only, HTTP 200) well before the route's timeouts", async () => {
  await using up = await upstream();
  await using prox = await startProxy(route(up.port, "{ total: 30s, response_header: 30s }"));
  const got = await call(prox.port, { "grpc-timeout": "200m" });
  assert.equal(got.head[":status"], 200);
  assert.equal(got.head["grpc-status"], "4");
  assert.equal(got.head["grpc-message"], "Gateway timeout");
  assert.equal(got.rst, 0);
  // Generous: the route's own timeouts would have taken 30 s.
  assert.ok(got.ms < 5_000, `${got.ms} ms`);
  // The upstream's stream was given up too.
  await waitFor(() => up.closed() === 1);
});

Deno.test("grpc-timeout: a call whose deadline has passed already (0n, as grpc-go sends it) fails at once, and the upstream never sees it", async () => {
  await using up = await upstream();
  await using prox = await startProxy(route(up.port));
  const got = await call(prox.port, { "grpc-timeout": "0n" });
  assert.equal(got.head[":status"], 200);
  assert.equal(got.head["grpc-status"], "4");
  assert.equal(up.seen.length, 0);
});

Deno.test("grpc-timeout: the upstream is told the time left, never more than the client sent, and no more than the route's timeouts.total", async () => {
  await using up = await upstream((s) => {
    s.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "0" }));
    s.end(frame("ok"));
  });
  await using prox = await startProxy(route(up.port, "{ total: 2s }"));
  const sent = await call(prox.port, { "grpc-timeout": "5S" });
  assert.equal(sent.trailers?.["grpc-status"], "0");
  const a = parseGrpcTimeout(String(up.seen[0]["grpc-timeout"]));
  assert.ok(a !== undefined && a > 0 && a <= 2_000, `forwarded ${up.seen[0]["grpc-timeout"]}`);
  // Under the route's total: the client's own, less Prox's time.
  await call(prox.port, { "grpc-timeout": "1500m" });
  const b = parseGrpcTimeout(String(up.seen[1]["grpc-timeout"]));
  assert.ok(b !== undefined && b > 0 && b < 1_500, `forwarded ${up.seen[1]["grpc-timeout"]}`);
  // Malformed: ignored (passed on as it came, no deadline of its own).
  const bad = await call(prox.port, { "grpc-timeout": "5s" });
  assert.equal(bad.trailers?.["grpc-status"], "0");
  assert.equal(up.seen[2]["grpc-timeout"], "5s");
  // Without one, none is made up.
  await call(prox.port, {});
  assert.equal(up.seen[3]["grpc-timeout"], undefined);
});

Deno.test("grpc-timeout: only gRPC requests are bound by it (another type's field goes on as it is)", async () => {
  await using up = await upstream((s) => {
    s.respond({ ":status": 200, "content-type": "text/plain" });
    s.end("fine");
  });
  await using prox = await startProxy(route(up.port));
  const got = await call(prox.port, { "content-type": "text/plain", "grpc-timeout": "1n" });
  assert.equal(got.head[":status"], 200);
  assert.equal(got.head["grpc-status"], undefined);
  assert.equal(up.seen[0]["grpc-timeout"], "1n");
});

Deno.test("grpc-timeout: a deadline that passes mid-stream ends the call with trailers grpc-status 4, not a reset", async () => {
  await using up = await upstream(stallAfterOne);
  const lines: Record<string, unknown>[] = [];
  const logger = {
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => m === "access" && lines.push(f!),
  };
  await using prox = await startProxy(
    route(up.port, "{ total: 30s }") + "log: { access_log: json }\n",
    { logger },
  );
  const got = await call(prox.port, { "grpc-timeout": "300m" });
  assert.equal(got.head[":status"], 200);
  assert.equal(got.body, "one");
  assert.equal(got.rst, 0);
  assert.equal(got.trailers?.["grpc-status"], "4");
  assert.equal(got.trailers?.["grpc-message"], "Gateway timeout");
  await waitFor(() => up.closed() === 1);
  // The access log says how the call ended.
  await waitFor(() => lines.length === 1);
  assert.equal(lines[0].grpcStatus, "4");
});

for (const [what, timeouts] of [["idle", "{ idle: 300ms }"], ["total", "{ total: 300ms }"]]) {
  Deno.test(`gRPC: the route's timeouts.${what} passing mid-stream ends the call with trailers grpc-status 4, not a reset`, async () => {
    await using up = await upstream(stallAfterOne);
    await using prox = await startProxy(route(up.port, timeouts));
    const got = await call(prox.port, {});
    assert.equal(got.body, "one");
    assert.equal(got.rst, 0);
    assert.equal(got.trailers?.["grpc-status"], "4");
    await waitFor(() => up.closed() === 1);
  });
}

Deno.test("gRPC over HTTP/1.1 with TE: trailers: a deadline mid-stream ends the chunked body with grpc-status 4 in its trailer section", async () => {
  await using up = await upstream(stallAfterOne);
  await using prox = await startProxy(route(up.port, "{ total: 30s }"));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    const body = frame("hi");
    await conn.write(new TextEncoder().encode(
      "POST /test.Echo/Echo HTTP/1.1\r\nhost: a\r\ncontent-type: application/grpc\r\n" +
        `te: trailers\r\ngrpc-timeout: 300m\r\ncontent-length: ${body.length}\r\n\r\n`,
    ));
    await conn.write(body);
    let text = "";
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
      if (text.endsWith("\r\n0\r\n\r\n") || /\r\n0\r\n(?:.+\r\n)+\r\n$/.test(text)) break;
    }
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, /one/);
    assert.match(
      text,
      /\r\n0\r\ngrpc-status: 4\r\ngrpc-message: Gateway timeout\r\n\r\n$/,
    );
  } finally {
    conn.close();
  }
});

Deno.test("gRPC-Web: a grpc-timeout that passes mid-stream ends the body with a trailer frame of grpc-status 4", async () => {
  await using up = await upstream(stallAfterOne);
  await using prox = await startProxy(route(up.port) + "    grpc_web: true\n");
  const res = await fetch(`${prox.url}/test.Echo/Echo`, {
    method: "POST",
    headers: { "content-type": "application/grpc-web", "grpc-timeout": "300m" },
    body: frame("hi"),
  });
  assert.equal(res.status, 200);
  const body = new Uint8Array(await res.arrayBuffer());
  const frames: [number, string][] = [];
  for (let at = 0; at < body.length;) {
    const len = new DataView(body.buffer, at + 1, 4).getUint32(0);
    frames.push([body[at], new TextDecoder().decode(body.subarray(at + 5, at + 5 + len))]);
    at += 5 + len;
  }
  assert.deepEqual(frames, [
    [0, "one"],
    [0x80, "grpc-status:4\r\ngrpc-message:Gateway timeout\r\n"],
  ]);
  await waitFor(() => up.closed() === 1);
});

Deno.test("grpc-timeout: no deadline outlives its call (answered whole, trailers-only, reset by the client mid-body, or with a per-try timeout)", async () => {
  let mode = "whole";
  await using up = await upstream((s) => {
    if (mode === "stall") return stallAfterOne(s);
    if (mode === "trailers-only") {
      s.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "5" }, {
        endStream: true,
      });
      return;
    }
    s.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "0" }));
    s.end(frame("ok"));
  });
  // Deadlines of 60 s: one left behind would still be waiting when the test looks.
  await using prox = await startProxy(route(up.port));
  const whole = await call(prox.port, { "grpc-timeout": "60S" });
  assert.equal(whole.trailers?.["grpc-status"], "0");
  assert.equal(whole.body, "ok");
  await waitFor(() => deadlineTimers.size === 0);

  mode = "trailers-only";
  const only = await call(prox.port, { "grpc-timeout": "60S" });
  assert.equal(only.head["grpc-status"], "5");
  await waitFor(() => deadlineTimers.size === 0);

  // The client resets its stream after the first message: the upstream's stream ends too, and the
  // deadline with it.
  mode = "stall";
  const session = http2.connect(`http://127.0.0.1:${prox.port}`);
  session.on("error", () => {});
  try {
    const req = session.request({
      ":method": "POST",
      ":path": "/test.Echo/Echo",
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": "60S",
    });
    req.on("error", () => {});
    req.end(frame("hi"));
    await new Promise<void>((resolve) => req.once("data", () => resolve()));
    assert.equal(deadlineTimers.size, 1);
    req.close(http2.constants.NGHTTP2_CANCEL);
    // (The two calls before it are the upstream's first two streams.)
    await waitFor(() => up.closed() === 3);
    await waitFor(() => deadlineTimers.size === 0);
  } finally {
    session.close();
  }
});

Deno.test("grpc-timeout: with a per-try timeout a deadline mid-stream still ends the call with grpc-status 4 and leaves no timer", async () => {
  await using up = await upstream(stallAfterOne);
  await using prox = await startProxy(
    route(up.port) + "    retries: { attempts: 2, per_try_timeout: 20s }\n",
  );
  const got = await call(prox.port, { "grpc-timeout": "300m" });
  assert.equal(got.body, "one");
  assert.equal(got.trailers?.["grpc-status"], "4");
  await waitFor(() => up.closed() === 1);
  assert.equal(deadlineTimers.size, 0);
});
