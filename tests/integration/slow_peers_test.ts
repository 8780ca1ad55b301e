// Slow and stalled peers: clients that leave while their request waits for an upstream (HTTP/1.1
// on either engine, HTTP/2 on Prox's engine over h2c and TLS), clients that never read a large
// answer, and requests queued for an upstream connection whose client went away.
import assert from "node:assert/strict";
import { ROOT, startUpstream, waitFor } from "../_harness.ts";
import { proxyRoute, startProxy } from "./_proxy.ts";
import { rawServer, readRequest, writeAll } from "../_upstream_peers.ts";
import { heldUpstream, holdFirst, queuedProxy } from "./_held.ts";
import { RawH2Client } from "./_raw_h2.ts";
import { readFrom } from "./_raw_client.ts";
import {
  ErrorCode,
  FrameType,
  FrameWriter,
  PREFACE,
  Setting,
} from "../../src/adapters/h2/frames.ts";
import { HpackEncoder } from "../../src/adapters/h2/hpack.ts";

const enc = new TextEncoder();
const TLS = `${ROOT}/tests/fixtures/tls`;
const CA = Deno.readTextFileSync(`${TLS}/ca.pem`);
/** Longer than any wait here: the upstream request ends only because the client left. */
const WAIT = "{ response_header: 60s }";

/** An upstream that reads each request head and never answers; counts heads and closed connections. */
function silentUpstream() {
  const seen = { heads: 0, ended: 0 };
  const server = rawServer(async (c) => {
    if (await readRequest(c) === null) return;
    seen.heads++;
    const buf = new Uint8Array(4096);
    while (await c.read(buf).catch(() => null) !== null) { /* until Prox lets go */ }
    seen.ended++;
  });
  return Object.assign(server, { seen });
}

class H2 extends RawH2Client {
  static async open(port: number, tls: boolean): Promise<H2> {
    const conn = tls
      ? await Deno.connectTls({
        hostname: "localhost",
        port,
        caCerts: [CA],
        alpnProtocols: ["h2"],
      })
      : await Deno.connect({ hostname: "127.0.0.1", port });
    const c = new H2(conn);
    await conn.write(PREFACE);
    c.out.settings([]);
    await c.flush();
    return c;
  }

  get(id: number, path: string, scheme: string): void {
    this.enc.begin().field(":method", "GET").field(":scheme", scheme).field(":path", path);
    this.out.headers(id, this.enc.field(":authority", "localhost").block, true, 16384);
  }
}

Deno.test("a client that leaves while its HTTP/1.1 request waits for the upstream ends the upstream request", async () => {
  await using up = silentUpstream();
  await using prox = await startProxy(`${proxyRoute(up.url)}\n    timeouts: ${WAIT}`);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  await c.write(enc.encode("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n"));
  await waitFor(() => up.seen.heads === 1, { what: "the request at the upstream" });
  c.close();
  await waitFor(() => up.seen.ended === 1, { what: "the upstream connection to end" });
});

Deno.test("a client that leaves while its request waits for an h2c upstream resets that upstream stream", async () => {
  let arrived = 0, aborted = 0;
  await using up = await startUpstream((req) => {
    arrived++;
    req.signal.addEventListener("abort", () => aborted++);
    return new Promise((answer) => {
      req.signal.addEventListener("abort", () => answer(new Response("too late")));
    });
  });
  await using prox = await startProxy(
    `${proxyRoute(up.url)}\n    upstream_protocol: h2c\n    timeouts: ${WAIT}`,
  );
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  await c.write(enc.encode("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n"));
  await waitFor(() => arrived === 1, { what: "the request at the upstream" });
  c.close();
  await waitFor(() => aborted === 1, { what: "the upstream stream to be reset" });
});

/** Prox on an HTTP/2 listener (TLS with ALPN h2, or h2c with prior knowledge) to `up`. */
function h2Proxy(up: string, tls: boolean, timeouts = WAIT) {
  const tlsConf = tls ? `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }\n` : "";
  return startProxy(`${tlsConf}${proxyRoute(up)}\n    timeouts: ${timeouts}`, { tls });
}

/** An HTTP/2 connection to Prox whose stream 1, a GET of /wait, is at the (silent) upstream. */
async function waitingStream(port: number, tls: boolean, up: { seen: { heads: number } }) {
  const h = await H2.open(port, tls);
  try {
    h.get(1, "/wait", tls ? "https" : "http");
    await h.flush();
    await waitFor(() => up.seen.heads === 1, { what: "the request at the upstream" });
    return h;
  } catch (e) {
    await h.close();
    throw e;
  }
}

for (const tls of [false, true]) {
  const proto = tls ? "TLS" : "h2c";
  Deno.test(`a client that resets its HTTP/2 stream (${proto}) while it waits for the upstream ends the upstream request`, async () => {
    await using up = silentUpstream();
    await using prox = await h2Proxy(up.url, tls);
    const h = await waitingStream(prox.port, tls, up);
    try {
      // Within the upstream client's first tick (it looks the client's signal up only then).
      h.out.u32(FrameType.RST_STREAM, 1, ErrorCode.CANCEL);
      await h.flush();
      await waitFor(() => up.seen.ended === 1, { what: "the upstream connection to end" });
    } finally {
      await h.close();
    }
  });

  Deno.test(`a client that closes its HTTP/2 connection (${proto}) while a request waits for the upstream ends the upstream request`, async () => {
    await using up = silentUpstream();
    await using prox = await h2Proxy(up.url, tls);
    const h = await waitingStream(prox.port, tls, up);
    await h.close();
    await waitFor(() => up.seen.ended === 1, { what: "the upstream connection to end" });
  });
}

/** An upstream that answers 100 MiB, made as it is read; `pulled()`: the bytes read so far. */
async function bigUpstream() {
  const chunk = new Uint8Array(64 * 1024);
  let pulled = 0;
  const server = await startUpstream(() =>
    new Response(
      new ReadableStream({
        pull(ctl) {
          if (pulled >= 100 * 1024 * 1024) return ctl.close();
          pulled += chunk.length;
          ctl.enqueue(chunk);
        },
      }, { highWaterMark: 0 }),
    )
  );
  return Object.assign(server, { pulled: () => pulled });
}

/** Waits until `pulled` has not grown for half a second, and returns it. */
async function settled(pulled: () => number): Promise<number> {
  let last = -1;
  await waitFor(async () => {
    await new Promise((r) => setTimeout(r, 500));
    const still = pulled() === last && last > 0;
    last = pulled();
    return still;
  }, { what: "the upstream reads to stop", timeoutMs: 30_000 });
  return last;
}

Deno.test("a client that never reads a 100 MiB answer holds Prox's reads of the upstream to a few MiB", async () => {
  await using up = await bigUpstream();
  await using prox = await startProxy(`${proxyRoute(up.url)}\n    timeouts: { idle: 60s }`);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(enc.encode("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"));
    const pulled = await settled(up.pulled);
    // What the socket buffers on both sides hold, and the engine's own bounded buffers.
    assert.ok(pulled < 16 * 1024 * 1024, `read ${pulled} bytes of the upstream`);
  } finally {
    c.close();
  }
});

for (const tls of [false, true]) {
  Deno.test(`an HTTP/2 client (${tls ? "TLS" : "h2c"}) that grants 2 GiB windows and never reads holds Prox's reads to a few MiB`, async () => {
    await using up = await bigUpstream();
    await using prox = await h2Proxy(up.url, tls, "{ idle: 60s }");
    const conn = tls
      ? await Deno.connectTls({
        hostname: "localhost",
        port: prox.port,
        caCerts: [CA],
        alpnProtocols: ["h2"],
      })
      : await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    try {
      // Flow control would let all of it through: only the socket's backpressure holds Prox back.
      const out = new FrameWriter();
      out.settings([[Setting.INITIAL_WINDOW_SIZE, 0x7fffffff]]);
      out.u32(FrameType.WINDOW_UPDATE, 0, 0x7fffffff - 65535);
      const fields = new HpackEncoder().begin().field(":method", "GET")
        .field(":scheme", tls ? "https" : "http").field(":path", "/big");
      out.headers(1, fields.field(":authority", "localhost").block, true, 16384);
      await conn.write(PREFACE);
      await conn.write(out.take());
      const pulled = await settled(up.pulled);
      assert.ok(pulled < 16 * 1024 * 1024, `read ${pulled} bytes of the upstream`);
    } finally {
      conn.close();
    }
  });
}

{
  Deno.test("a GET waiting for an upstream connection leaves the queue when its HTTP/1.1 client goes", async () => {
    await using up = await heldUpstream();
    await using prox = await queuedProxy(up.url);
    const { first } = await holdFirst(up, prox);
    const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    try {
      await c.write(enc.encode("GET /queued HTTP/1.1\r\nHost: a\r\n\r\n"));
      await waitFor(async () => (await prox.pool()).waiting === 1, { what: "the request queued" });
    } finally {
      c.close();
    }
    await waitFor(async () => (await prox.pool()).waiting === 0, { what: "the queue to empty" });
    up.release();
    assert.equal(await (await first).text(), "late");
    // The connection went to no one: the next request has it at once.
    const next = fetch(`${prox.url}/next`);
    await waitFor(() => up.arrived.length === 2, { what: "the next request at the upstream" });
    up.release();
    assert.equal(await (await next).text(), "late");
    assert.deepEqual(up.arrived, ["/first", "/next"]);
  });
}

for (const tls of [false, true]) {
  Deno.test(`an HTTP/2 stream (${tls ? "TLS" : "h2c"}) waiting for an upstream connection leaves the queue when reset`, async () => {
    await using up = await heldUpstream();
    const tlsConf = tls
      ? `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }\n`
      : "";
    const prox = await startProxy(
      `${tlsConf}
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 8, queue_timeout: 60s }
routes: { "/": { type: proxy, target: "${up.url}", timeouts: ${WAIT} } }
`,
      { tls },
    );
    await using _ = prox;
    const waiting = async () => {
      const res = await fetch(`http://127.0.0.1:${prox.server.admin!.port}/status`);
      return (await res.json()).upstreams[0].pool.waiting as number;
    };
    const h = await H2.open(prox.port, tls);
    try {
      h.get(1, "/first", tls ? "https" : "http");
      h.get(3, "/queued", tls ? "https" : "http");
      await h.flush();
      await waitFor(async () => up.arrived.length === 1 && await waiting() === 1, {
        what: "one request at the upstream, one queued",
      });
      h.out.u32(FrameType.RST_STREAM, 3, ErrorCode.CANCEL);
      await h.flush();
      await waitFor(async () => await waiting() === 0, { what: "the queue to empty" });
      up.release();
      await waitFor(() => h.on(1, FrameType.DATA).length > 0, { what: "the first answer" });
      assert.deepEqual(up.arrived, ["/first"]);
    } finally {
      await h.close();
    }
  });
}

/** An upstream that sends a head announcing 100000 bytes and 10 of them, then nothing. */
function stallingUpstream() {
  return rawServer(async (c) => {
    if (await readRequest(c) === null) return;
    await c.write(enc.encode("HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789"));
    const buf = new Uint8Array(4096);
    while (await c.read(buf).catch(() => null) !== null) { /* until Prox lets go */ }
  });
}

/** The value of `series` on Prox's admin /metrics (undefined: absent). */
async function metric(admin: number, series: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const CUT = 'prox_response_body_failures_total{route="/",kind="timeout"}';

Deno.test("an upstream that stalls mid-body: the HTTP/1.1 client's answer is cut after timeouts.idle, and counted", async () => {
  await using up = stallingUpstream();
  await using prox = await startProxy(
    `admin: { listen_addr: "127.0.0.1:0" }\n${proxyRoute(up.url)}\n    timeouts: { idle: 300ms }`,
  );
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(enc.encode("GET /cut HTTP/1.1\r\nHost: a\r\n\r\n"));
    const buf = new Uint8Array(65536);
    let got = "";
    for (let n; (n = await c.read(buf)) !== null;) {
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    assert.match(got, /^HTTP\/1\.1 200 [^]*\r\n\r\n0123456789$/);
  } finally {
    c.close();
  }
  const admin = prox.server.admin!.port;
  await waitFor(async () => await metric(admin, CUT) === 1, { what: `${CUT} 1` });
});

for (const tls of [false, true]) {
  Deno.test(`an upstream that stalls mid-body: the HTTP/2 (${tls ? "TLS" : "h2c"}) client's stream is reset after timeouts.idle, and counted`, async () => {
    await using up = stallingUpstream();
    const tlsConf = tls
      ? `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }\n`
      : "";
    await using prox = await startProxy(
      `${tlsConf}admin: { listen_addr: "127.0.0.1:0" }\n${
        proxyRoute(up.url)
      }\n    timeouts: { idle: 300ms }`,
      { tls },
    );
    const h = await H2.open(prox.port, tls);
    try {
      h.get(1, "/cut", tls ? "https" : "http");
      await h.flush();
      await waitFor(() => h.on(1, FrameType.RST_STREAM).length === 1, { what: "the reset" });
      assert.equal(h.status(1), "200");
    } finally {
      await h.close();
    }
    const admin = prox.server.admin!.port;
    await waitFor(async () => await metric(admin, CUT) === 1, { what: `${CUT} 1` });
  });
}

/** An upstream that reads uploads until Prox lets go (`ended` counts those) and answers a GET. */
function uploadSink() {
  const seen = { uploads: 0, ended: 0 };
  const server = rawServer(async (c) => {
    const head = await readRequest(c);
    if (head === null) return;
    if (head.startsWith("GET")) {
      await c.write(
        enc.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"),
      );
      return;
    }
    seen.uploads++;
    const buf = new Uint8Array(65536);
    while (await c.read(buf).catch(() => null) !== null) { /* until Prox lets go */ }
    seen.ended++;
  });
  return Object.assign(server, { seen });
}

const SLOW_POST = `upstream_pool: { max_connections_per_upstream: 1, queue_timeout: 60s }\n`;

Deno.test("an HTTP/1.1 upload that stalls on its way upstream gets 408 at timeouts.idle, the upstream request ends and its connection is free", async () => {
  await using up = uploadSink();
  await using prox = await startProxy(
    `${SLOW_POST}${proxyRoute(up.url)}\n    timeouts: { idle: 300ms, response_header: 60s }`,
  );
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(enc.encode("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"));
    await writeAll(c, new Uint8Array(100_000));
    // (Prox's engine closes the connection after it; Deno.serve keeps it, as it keeps any.)
    assert.match(await readFrom(c, /request id: [^\n]+\n/), /^HTTP\/1\.1 408 /);
  } finally {
    c.close();
  }
  await waitFor(() => up.seen.ended === 1, { what: "the upstream request to end" });
  assert.equal(await (await fetch(`${prox.url}/next`)).text(), "ok");
});

for (const tls of [false, true]) {
  Deno.test(`an HTTP/2 (${tls ? "TLS" : "h2c"}) upload that stalls on its way upstream ends at timeouts.idle, the upstream request with it`, async () => {
    await using up = uploadSink();
    const tlsConf = tls
      ? `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }\n`
      : "";
    await using prox = await startProxy(
      `${tlsConf}${SLOW_POST}${
        proxyRoute(up.url)
      }\n    timeouts: { idle: 300ms, response_header: 60s }`,
      { tls },
    );
    const h = await H2.open(prox.port, tls);
    try {
      h.enc.begin().field(":method", "POST").field(":scheme", tls ? "https" : "http");
      h.enc.field(":path", "/up").field(":authority", "localhost");
      h.out.headers(1, h.enc.field("content-length", "1000000").block, false, 16384);
      // The stream's initial window (64 KiB less a byte) and a little more than the replay cap.
      for (let i = 0; i < 4; i++) h.out.frame(FrameType.DATA, 0, 1, new Uint8Array(16000));
      await h.flush();
      await waitFor(() => h.status(1) !== undefined || h.on(1, FrameType.RST_STREAM).length > 0, {
        what: "an answer or a reset",
      });
      if (h.status(1) !== undefined) assert.equal(h.status(1), "408");
    } finally {
      await h.close();
    }
    await waitFor(() => up.seen.ended === 1, { what: "the upstream request to end" });
  });
}
