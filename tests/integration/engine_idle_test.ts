// protocols.http1_idle_timeout on Prox's own engines against slow clients: a head trickled a byte
// at a time (slowloris) over HTTP/1.1, a field block trickled over HTTP/2, and an idle HTTP/2
// connection, which gets a GOAWAY before it is closed.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines, proxyRoute, startProxy } from "./_proxy.ts";
import { RawH2Client } from "./_raw_h2.ts";
import { ErrorCode, Flag, FrameType, PREFACE } from "../../src/adapters/h2/frames.ts";

const enc = new TextEncoder();

// The limit is the engines' (Deno.serve has none of its own).
onProxEngines();

class H2c extends RawH2Client {
  static async open(port: number): Promise<H2c> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const c = new H2c(conn);
    await conn.write(PREFACE);
    c.out.settings([]);
    await c.flush();
    return c;
  }
}

/** Writes `bytes` one every 200 ms until a write fails or `ms` passed; the time it took. */
async function trickle(conn: Deno.Conn, bytes: Uint8Array, ms: number): Promise<number> {
  const began = performance.now();
  for (const b of bytes) {
    if (performance.now() - began > ms) break;
    await new Promise((r) => setTimeout(r, 200));
    if (!await conn.write(Uint8Array.of(b)).then(() => true, () => false)) break;
  }
  return performance.now() - began;
}

const IDLE = `protocols: { http1_idle_timeout: 1s }\n`;

Deno.test("a head trickled a byte every 200 ms to the HTTP/1.1 engine is cut at http1_idle_timeout", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(IDLE + proxyRoute(up.url));
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    const head = "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + "1".repeat(100) + "\r\n\r\n";
    // 4 s of bytes at most: the engine closes it after 1 s (and its sweep), the writes then fail.
    const took = await trickle(c, enc.encode(head), 6000);
    const buf = new Uint8Array(1024);
    assert.equal(await c.read(buf).catch(() => null), null, "no answer, closed");
    assert.ok(took < 5000, `the trickled head kept its connection for ${Math.round(took)} ms`);
  } finally {
    c.close();
  }
});

Deno.test("an HTTP/2 field block trickled a byte every 200 ms is cut at http1_idle_timeout", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(IDLE + proxyRoute(up.url));
  const c = await H2c.open(prox.port);
  try {
    c.enc.begin().field(":method", "GET").field(":scheme", "http").field(":path", "/");
    c.enc.field(":authority", "a");
    for (let i = 0; i < 40; i++) c.enc.field(`x-slow-${i}`, "1234567890");
    const block = c.enc.block;
    // HEADERS with the first bytes and no END_HEADERS, then a CONTINUATION a byte at a time.
    c.out.frame(FrameType.HEADERS, Flag.END_STREAM, 1, block.subarray(0, 8));
    await c.flush();
    c.out.frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, block.subarray(8));
    const frame = c.out.take();
    const took = await trickle(c.conn, frame, 6000);
    assert.ok(c.closed || took < 5000, `the trickled block kept its connection for ${took} ms`);
    assert.equal(c.on(1, FrameType.HEADERS).length, 0);
  } finally {
    await c.close();
  }
});

Deno.test("an idle HTTP/2 connection gets GOAWAY NO_ERROR at http1_idle_timeout, then is closed", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(IDLE + proxyRoute(up.url));
  const c = await H2c.open(prox.port);
  try {
    c.enc.begin().field(":method", "GET").field(":scheme", "http").field(":path", "/");
    c.out.headers(1, c.enc.field(":authority", "a").block, true, 16384);
    await c.flush();
    const began = performance.now();
    // The answer, then nothing from either side: closed after about a second.
    await waitFor(() => c.closed, { what: "the connection closed" });
    const after = performance.now() - began;
    assert.equal(c.status(1), "200");
    const goaway = c.frames.filter((f) => f.type === FrameType.GOAWAY);
    assert.equal(goaway.length, 1);
    const view = new DataView(goaway[0].payload.buffer, goaway[0].payload.byteOffset);
    assert.deepEqual([view.getUint32(0), view.getUint32(4)], [1, ErrorCode.NO_ERROR]);
    assert.ok(after >= 900 && after < 5000, `closed after ${Math.round(after)} ms`);
  } finally {
    await c.close();
  }
});

Deno.test("protocols.http1_header_timeout cuts a trickled head long before http1_idle_timeout; an idle connection stays", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(
    `protocols: { http1_idle_timeout: 60s, http1_header_timeout: 1s }\n${proxyRoute(up.url)}`,
  );
  // Kept alive after an answer and quiet: only http1_idle_timeout applies.
  const idle = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await idle.write(enc.encode("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    const buf = new Uint8Array(1024);
    assert.ok(await idle.read(buf));
    const head = "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + "1".repeat(100) + "\r\n\r\n";
    const took = await trickle(c, enc.encode(head), 6000);
    assert.equal(await c.read(buf).catch(() => null), null, "no answer, closed");
    assert.ok(took < 5000, `the trickled head kept its connection for ${Math.round(took)} ms`);
    // Still open after those seconds: it sent nothing of a next head.
    await idle.write(enc.encode("GET /again HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    assert.match(
      new TextDecoder().decode(buf.subarray(0, (await idle.read(buf))!)),
      /^HTTP\/1\.1 200 /,
    );
  } finally {
    c.close();
    idle.close();
  }
});
