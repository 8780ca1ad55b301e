// WebSockets over HTTP/2 (RFC 8441) against a raw HTTP/2 client on h2c: what a client that
// breaks the rules gets, SETTINGS_ENABLE_CONNECT_PROTOCOL with and without
// `protocols.websocket_enabled`, and flow control with a client that grants no window.
import assert from "node:assert/strict";
import { waitFor } from "../_harness.ts";
import { onProxEngines } from "./_proxy.ts";
import { RawH2Client } from "./_raw_h2.ts";
import { startWsProxy, wsRoute, wsUpstream } from "./_ws.ts";
import { ErrorCode, Flag, FrameType, PREFACE, Setting } from "../../src/adapters/h2/frames.ts";
import { closePayload, encodeFrame, Op, WsParser } from "../../src/domain/ws_frame.ts";
import type { WsEvent } from "../../src/domain/ws_frame.ts";

onProxEngines();

const u32 = (p: Uint8Array) => ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
const MASK = new Uint8Array([9, 8, 7, 6]);

/** A raw h2c client (prior knowledge) that reads every frame into `frames`. */
class RawH2c extends RawH2Client {
  static async open(port: number, settings: [number, number][] = []): Promise<RawH2c> {
    const c = new RawH2c(await Deno.connect({ hostname: "127.0.0.1", port }));
    await c.conn.write(PREFACE);
    c.out.settings(settings);
    await c.flush();
    return c;
  }

  /** An extended CONNECT on `id` with the pseudo-fields given (and version 13). */
  connect(id: number, pseudo: [string, string][], extra: [string, string][] = []): void {
    this.enc.begin();
    this.enc.field(":method", "CONNECT");
    for (const [n, v] of pseudo) this.enc.field(n, v);
    this.enc.field("sec-websocket-version", "13");
    for (const [n, v] of extra) this.enc.field(n, v);
    this.out.headers(id, this.enc.block, false, 16384);
  }

  /** The server's first SETTINGS, as a map. */
  settings(): Map<number, number> {
    const f = this.frames.find((f) => f.type === FrameType.SETTINGS && !(f.flags & Flag.ACK));
    const m = new Map<number, number>();
    for (let i = 0; f && i + 6 <= f.payload.length; i += 6) {
      m.set((f.payload[i] << 8) | f.payload[i + 1], u32(f.payload.subarray(i + 2, i + 6)));
    }
    return m;
  }
}

const FULL: [string, string][] = [
  [":protocol", "websocket"],
  [":scheme", "http"],
  [":path", "/"],
  [":authority", "localhost"],
];

Deno.test("HTTP/2 WebSocket: extended CONNECT without :path, :scheme or :authority is reset PROTOCOL_ERROR", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(wsRoute(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    await waitFor(() => c.settings().size > 0);
    assert.equal(c.settings().get(Setting.ENABLE_CONNECT_PROTOCOL), 1);
    let id = 1;
    for (const missing of [":path", ":scheme", ":authority"]) {
      c.connect(id, FULL.filter(([n]) => n !== missing));
      id += 2;
    }
    // :protocol on a GET is malformed too (RFC 8441 §4).
    c.enc.begin().field(":method", "GET");
    for (const [n, v] of FULL) c.enc.field(n, v);
    c.out.headers(id, c.enc.block, true, 16384);
    await c.flush();
    await waitFor(() => c.on(id, FrameType.RST_STREAM).length > 0);
    for (let s = 1; s <= id; s += 2) {
      const rst = c.on(s, FrameType.RST_STREAM);
      assert.equal(rst.length, 1, `stream ${s}`);
      assert.equal(u32(rst[0].payload), ErrorCode.PROTOCOL_ERROR, `stream ${s}`);
    }
    assert.equal(up.requests.length, 0);
  } finally {
    await c.close();
  }
});

Deno.test("HTTP/2 WebSocket: websocket_enabled: false announces no extended CONNECT and refuses :protocol", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(
    `protocols: { websocket_enabled: false }\n${wsRoute(up.url)}`,
  );
  const c = await RawH2c.open(prox.port);
  try {
    await waitFor(() => c.settings().size > 0);
    assert.equal(c.settings().has(Setting.ENABLE_CONNECT_PROTOCOL), false);
    c.connect(1, FULL);
    await c.flush();
    await waitFor(() => c.on(1, FrameType.RST_STREAM).length > 0);
    assert.equal(u32(c.on(1, FrameType.RST_STREAM)[0].payload), ErrorCode.PROTOCOL_ERROR);
  } finally {
    await c.close();
  }
});

Deno.test("HTTP/2 WebSocket: a client that grants no window holds the upstream back (no unbounded buffering)", async () => {
  const MSG = 64 * 1024;
  const COUNT = 512; // 32 MiB
  /** Messages the upstream has handed to its socket (one at a time, each once written). */
  let written = 0;
  await using up = await wsUpstream((ws) => {
    ws.on("message", () => {
      const next = () => {
        if (written === COUNT) return;
        const chunk = new Uint8Array(MSG);
        chunk[0] = written & 0xff;
        ws.send(chunk, (err) => {
          if (err) return;
          written++;
          next();
        });
      };
      next();
    });
  });
  await using prox = await startWsProxy(wsRoute(up.url));
  // A stream window of 16 KiB and the connection's 64 KiB, never raised until the end.
  const c = await RawH2c.open(prox.port, [[Setting.INITIAL_WINDOW_SIZE, 16384]]);
  try {
    c.connect(1, FULL);
    await c.flush();
    await waitFor(() => c.status(1));
    assert.equal(c.status(1), "200");
    c.out.frame(
      FrameType.DATA,
      0,
      1,
      encodeFrame(Op.TEXT, new TextEncoder().encode("go"), { mask: MASK }),
    );
    await c.flush();
    // The upstream's writes stop: Prox stopped reading it, and the socket buffers filled.
    let last = -1, since = Date.now();
    await waitFor(() => {
      if (written !== last) [last, since] = [written, Date.now()];
      return Date.now() - since > 500 || written === COUNT;
    }, { timeoutMs: 20_000 });
    assert.ok(written < COUNT / 2, `the upstream was held back (${written} of ${COUNT} written)`);
    const data = () => c.on(1, FrameType.DATA).reduce((n, f) => n + f.payload.length, 0);
    assert.ok(data() <= 16384, `at most the stream window sent (${data()})`);
    // Window granted: every message arrives, in order.
    c.out.u32(FrameType.WINDOW_UPDATE, 0, 0x7fffffff - 65535);
    c.out.u32(FrameType.WINDOW_UPDATE, 1, 0x7fffffff - 16384);
    await c.flush();
    const parser = new WsParser({ maxMessage: 1 << 20, masked: false });
    const got: WsEvent[] = [];
    let seen = 0;
    await waitFor(() => {
      const frames = c.on(1, FrameType.DATA);
      for (; seen < frames.length; seen++) got.push(...parser.push(frames[seen].payload));
      return got.length >= COUNT;
    }, { timeoutMs: 30_000, what: "all messages" });
    assert.equal(got.length, COUNT);
    got.forEach((e, i) => {
      assert.equal(e.type, "binary");
      assert.equal((e as { data: Uint8Array }).data[0], i & 0xff);
    });
    // The client closes; Prox answers and ends the stream.
    c.out.frame(FrameType.DATA, 0, 1, encodeFrame(Op.CLOSE, closePayload(1000), { mask: MASK }));
    await c.flush();
    await waitFor(() => c.on(1, FrameType.DATA).some((f) => f.flags & Flag.END_STREAM));
  } finally {
    await c.close();
  }
});

/**
 * Sends `count` binary messages of `size` bytes on stream 1 as the windows allow (the stream's
 * 256 KiB and the connection's 1 MiB that Prox grants, plus what it credits back), until Prox
 * stops crediting for half a second: the number sent, and whether one more fits now.
 */
async function sendUntilHeld(
  c: RawH2c,
  count: number,
  size: number,
): Promise<{ sent: number; canSend: () => boolean }> {
  const credit = () =>
    c.frames.filter((f) => f.type === FrameType.WINDOW_UPDATE && (f.id === 0 || f.id === 1))
      .reduce((m, f) => (m[f.id] += u32(f.payload), m), [65535, 65535] as number[]);
  const initial = [1 << 20, 256 * 1024];
  const sentBytes = [0, 0];
  const frame = encodeFrame(Op.BINARY, new Uint8Array(size), { mask: MASK });
  const room = () =>
    Math.min(
      initial[0] + credit()[0] - 65535 - sentBytes[0],
      initial[1] + credit()[1] - 65535 - sentBytes[1],
    );
  let sent = 0;
  let stuckSince = Date.now();
  while (sent < count) {
    if (room() >= frame.length) {
      for (let off = 0; off < frame.length; off += 16384) {
        c.out.frame(FrameType.DATA, 0, 1, frame.subarray(off, off + 16384));
      }
      await c.flush();
      sentBytes[0] += frame.length;
      sentBytes[1] += frame.length;
      sent++;
      stuckSince = Date.now();
      continue;
    }
    // No window: Prox stopped reading the stream. Held for half a second is held.
    if (Date.now() - stuckSince > 500) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  return { sent, canSend: () => room() >= frame.length };
}

/** A `ws` upstream that reads nothing until `resume()`, counting the messages it then gets. */
async function pausedUpstream() {
  let socket: { pause(): void; resume(): void } | undefined;
  const counts = { received: 0 };
  const up = await wsUpstream((ws) => {
    // deno-lint-ignore no-explicit-any
    socket = (ws as any)._socket;
    socket!.pause();
    ws.on("message", () => counts.received++);
  });
  return {
    url: up.url,
    get received() {
      return counts.received;
    },
    resume: () => socket!.resume(),
    [Symbol.asyncDispose]: () => up[Symbol.asyncDispose](),
  };
}

Deno.test("HTTP/2 WebSocket: an upstream that does not read holds the client back by its window, not 1013", async () => {
  const MSG = 64 * 1024;
  const COUNT = 400; // 25 MiB, past the 16 MiB a client that cannot pause may queue
  await using up = await pausedUpstream();
  await using prox = await startWsProxy(wsRoute(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    c.connect(1, FULL);
    await c.flush();
    await waitFor(() => c.status(1));
    const { sent, canSend } = await sendUntilHeld(c, COUNT, MSG);
    assert.ok(sent < COUNT, `the client was held back (${sent} of ${COUNT} sent)`);
    assert.equal(c.on(1, FrameType.DATA).length, 0, "no close (1013) from Prox");
    // The upstream reads again: everything sent arrives, and the client may go on.
    up.resume();
    await waitFor(() => up.received === sent, { timeoutMs: 20_000 });
    await waitFor(canSend);
  } finally {
    await c.close();
  }
});

Deno.test("HTTP/2 WebSocket: a client held back by its upstream longer than ping_interval is not closed for not answering pings", async () => {
  await using up = await pausedUpstream();
  // Pings after 200 ms of silence, a close 200 ms after an unanswered one.
  await using prox = await startWsProxy(wsRoute(up.url, "ping_interval: 200ms"));
  const c = await RawH2c.open(prox.port);
  const parser = new WsParser({ maxMessage: 1 << 20, masked: false });
  const events: WsEvent[] = [];
  let seen = 0;
  const read = () => {
    const frames = c.on(1, FrameType.DATA);
    for (; seen < frames.length; seen++) events.push(...parser.push(frames[seen].payload));
    return events;
  };
  try {
    c.connect(1, FULL);
    await c.flush();
    await waitFor(() => c.status(1));
    const { sent } = await sendUntilHeld(c, 400, 64 * 1024);
    assert.ok(sent < 400, `the client was held back (${sent} sent)`);
    // The client has no window to answer a ping with. Held for four ping intervals (the half
    // second sendUntilHeld waited, and as long again), Prox has not given up on it.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(read().filter((e) => e.type === "close"), [], "no close while held");
    up.resume();
    await waitFor(() => up.received === sent, { timeoutMs: 20_000 });
    assert.deepEqual(read().filter((e) => e.type === "close"), [], "no close once released");
  } finally {
    await c.close();
  }
});

Deno.test("HTTP/2 WebSocket: each counts against max_connections_per_ip as its own connection would", async () => {
  await using up = await wsUpstream(() => {});
  // The HTTP/2 connection takes one place of the address's three: two WebSockets fit.
  await using prox = await startWsProxy(
    `limits: { max_connections_per_ip: 3 }\n${wsRoute(up.url)}`,
  );
  const c = await RawH2c.open(prox.port);
  try {
    for (const id of [1, 3, 5]) c.connect(id, FULL);
    await c.flush();
    await waitFor(() => c.status(1) && c.status(3) && c.status(5));
    assert.deepEqual([c.status(1), c.status(3), c.status(5)], ["200", "200", "429"]);
    // A WebSocket that ends gives its place back.
    c.out.u32(FrameType.RST_STREAM, 1, ErrorCode.CANCEL);
    await c.flush();
    let next = 7;
    await waitFor(async () => {
      const id = next;
      next += 2;
      c.connect(id, FULL);
      await c.flush();
      await waitFor(() => c.status(id));
      return c.status(id) === "200";
    }, { what: "a WebSocket once the first has ended" });
  } finally {
    await c.close();
  }
});

Deno.test("HTTP/2 WebSocket: each counts against max_connections as its own connection would", async () => {
  await using up = await wsUpstream(() => {});
  // One HTTP/2 connection carried up to http2_max_concurrent_streams WebSockets past the total.
  await using prox = await startWsProxy(`limits: { max_connections: 3 }\n${wsRoute(up.url)}`);
  const c = await RawH2c.open(prox.port);
  try {
    for (const id of [1, 3, 5]) c.connect(id, FULL);
    await c.flush();
    await waitFor(() => c.status(1) && c.status(3) && c.status(5));
    assert.deepEqual([c.status(1), c.status(3), c.status(5)], ["200", "200", "503"]);
    // A WebSocket that ends gives its place back.
    c.out.u32(FrameType.RST_STREAM, 1, ErrorCode.CANCEL);
    await c.flush();
    let next = 7;
    await waitFor(async () => {
      const id = next;
      next += 2;
      c.connect(id, FULL);
      await c.flush();
      await waitFor(() => c.status(id));
      return c.status(id) === "200";
    }, { what: "a WebSocket once the first has ended" });
  } finally {
    await c.close();
  }
});

Deno.test("HTTP/2 WebSocket: a ping flood from a client that grants no window queues one pong, for the latest ping (RFC 6455 §5.5.3)", async () => {
  let heard = "";
  await using up = await wsUpstream((ws) => ws.on("message", (m) => heard = String(m)));
  await using prox = await startWsProxy(wsRoute(up.url));
  const c = await RawH2c.open(prox.port, [[Setting.INITIAL_WINDOW_SIZE, 0]]);
  try {
    c.connect(1, FULL);
    await c.flush();
    await waitFor(() => c.status(1));
    assert.equal(c.status(1), "200");
    const PINGS = 5000;
    for (let i = 0; i < PINGS; i++) {
      const p = new Uint8Array(4);
      new DataView(p.buffer).setUint32(0, i);
      c.out.frame(FrameType.DATA, 0, 1, encodeFrame(Op.PING, p, { mask: MASK }));
    }
    c.out.frame(
      FrameType.DATA,
      0,
      1,
      encodeFrame(Op.TEXT, new TextEncoder().encode("after"), { mask: MASK }),
    );
    await c.flush();
    // The message after the pings reached the upstream: every ping was read.
    await waitFor(() => heard === "after");
    assert.equal(c.on(1, FrameType.DATA).length, 0);
    c.out.u32(FrameType.WINDOW_UPDATE, 1, 1 << 20);
    await c.flush();
    const parser = new WsParser({ maxMessage: 1 << 20, masked: false });
    const pongs: number[] = [];
    let seen = 0;
    await waitFor(() => {
      const frames = c.on(1, FrameType.DATA);
      for (; seen < frames.length; seen++) {
        for (const e of parser.push(frames[seen].payload)) {
          if (e.type === "pong") {
            pongs.push(new DataView(e.data.buffer, e.data.byteOffset).getUint32(0));
          }
        }
      }
      return pongs.at(-1) === PINGS - 1;
    }, { what: "the pong of the last ping" });
    assert.ok(pongs.length <= 3, `pongs queued while the window was shut: ${pongs.length}`);
  } finally {
    await c.close();
  }
});

Deno.test("HTTP/2 WebSocket: WebSockets held back by their upstream do not use up the connection's window", async () => {
  const sockets: { pause(): void; resume(): void }[] = [];
  await using up = await wsUpstream((ws) => {
    // deno-lint-ignore no-explicit-any
    const sock = (ws as any)._socket;
    sock.pause();
    sockets.push(sock);
  });
  await using prox = await startWsProxy(wsRoute(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    const ids = [1, 3, 5, 7, 9, 11];
    for (const id of ids) c.connect(id, FULL);
    await c.flush();
    await waitFor(() => ids.every((id) => c.status(id) === "200"));
    const granted = (id: number) =>
      c.on(id, FrameType.WINDOW_UPDATE).reduce((n, f) => n + u32(f.payload), 0);
    const sent = new Map<number, number>([[0, 0], ...ids.map((id) => [id, 0] as [number, number])]);
    const room = (id: number) => (id === 0 ? 65535 : 256 * 1024) + granted(id) - sent.get(id)!;
    const frame = encodeFrame(Op.BINARY, new Uint8Array(16 * 1024 - 8), { mask: MASK });
    let stuckSince = Date.now();
    // Each WebSocket sends as its window and the connection's allow, until Prox stops reading.
    while (Date.now() - stuckSince < 500) {
      let wrote = false;
      for (const id of ids) {
        if (Math.min(room(0), room(id)) < frame.length) continue;
        c.out.frame(FrameType.DATA, 0, id, frame);
        sent.set(id, sent.get(id)! + frame.length);
        sent.set(0, sent.get(0)! + frame.length);
        wrote = true;
      }
      if (wrote) {
        await c.flush();
        stuckSince = Date.now();
      } else await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(ids.every((id) => room(id) < frame.length), "every WebSocket is held back");
    // What the stalled WebSockets hold is theirs: the connection can still carry other streams.
    assert.ok(room(0) >= 256 * 1024, `the connection's window left: ${room(0)}`);
    for (const s of sockets) s.resume();
  } finally {
    await c.close();
  }
});

Deno.test("HTTP/2 WebSocket: a slow client still taking what came before the upstream's close gets it all, and the close", async () => {
  const MSG = 64 * 1024;
  const COUNT = 4;
  await using up = await wsUpstream((ws) => {
    ws.on("message", () => {
      for (let i = 0; i < COUNT; i++) ws.send(new Uint8Array(MSG).fill(i));
      ws.close(1000, "done");
    });
  });
  await using prox = await startWsProxy(wsRoute(up.url));
  // A stream window of 16 KiB, not raised until Prox has waited the 5 s it gives an idle client
  // to answer a close: 240 KiB are still queued before the close frame then (under 4 s at the
  // 64 KiB/s Prox allows a slow client), and the client has not had them yet.
  const c = await RawH2c.open(prox.port, [[Setting.INITIAL_WINDOW_SIZE, 16384]]);
  try {
    c.connect(1, FULL);
    await c.flush();
    await waitFor(() => c.status(1));
    c.out.frame(
      FrameType.DATA,
      0,
      1,
      encodeFrame(Op.TEXT, new TextEncoder().encode("go"), { mask: MASK }),
    );
    await c.flush();
    await waitFor(() => up.sockets.size === 0, { what: "the upstream's close handshake" });
    await new Promise((r) => setTimeout(r, 5_500));
    assert.equal(c.on(1, FrameType.RST_STREAM).length, 0, "the stream was reset");
    c.out.u32(FrameType.WINDOW_UPDATE, 0, 0x7fffffff - 65535);
    c.out.u32(FrameType.WINDOW_UPDATE, 1, 0x7fffffff - 16384);
    await c.flush();
    const parser = new WsParser({ maxMessage: 1 << 20, masked: false });
    const got: WsEvent[] = [];
    let seen = 0;
    await waitFor(() => {
      const frames = c.on(1, FrameType.DATA);
      for (; seen < frames.length; seen++) got.push(...parser.push(frames[seen].payload));
      return got.some((e) => e.type === "close") || c.on(1, FrameType.RST_STREAM).length > 0;
    }, { what: "the close" });
    assert.deepEqual(got.map((e) => e.type), ["binary", "binary", "binary", "binary", "close"]);
    assert.deepEqual(got[4], { type: "close", code: 1000, reason: "done" });
    c.out.frame(FrameType.DATA, 0, 1, encodeFrame(Op.CLOSE, closePayload(1000), { mask: MASK }));
    await c.flush();
    await waitFor(() => c.on(1, FrameType.DATA).some((f) => f.flags & Flag.END_STREAM));
  } finally {
    await c.close();
  }
});
