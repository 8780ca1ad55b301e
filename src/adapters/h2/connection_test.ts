import assert from "node:assert/strict";
import { silentLogger } from "../../ports.ts";
import { H2Connection } from "./connection.ts";
import type { H2Env, H2Socket } from "./connection.ts";
import { ErrorCode, FRAME_HEADER, FrameType, FrameWriter, PREFACE } from "./frames.ts";

/** A socket that feeds `feed` to the engine, keeps what it writes, and ends when closed. */
class FakeSocket implements H2Socket {
  written: number[] = [];
  #fed = false;
  #at = 0;
  #end: (() => void) | null = null;

  constructor(readonly feed: Uint8Array) {}

  read(p: Uint8Array): Promise<number> {
    if (!this.#fed) {
      // As much as the engine's buffer takes: a long feed comes over several reads.
      const n = Math.min(p.length, this.feed.length - this.#at);
      p.set(this.feed.subarray(this.#at, this.#at + n));
      this.#at += n;
      this.#fed = this.#at === this.feed.length;
      return Promise.resolve(n);
    }
    this.#idle?.();
    return new Promise((resolve) => this.#end = () => resolve(0));
  }

  #idle: (() => void) | null = null;
  /** Resolves once the engine has read the whole feed and waits for more. */
  idle(): Promise<void> {
    return new Promise((resolve) => this.#idle = resolve);
  }

  write(p: Uint8Array): Promise<number> {
    this.written.push(...p);
    return Promise.resolve(p.length);
  }

  close(): void {
    this.#end?.();
  }

  /** The frames written: [type, stream, payload]. */
  frames(): Array<[number, number, Uint8Array]> {
    const b = Uint8Array.from(this.written);
    const out: Array<[number, number, Uint8Array]> = [];
    for (let at = 0; at + FRAME_HEADER <= b.length;) {
      const len = (b[at] << 16) | (b[at + 1] << 8) | b[at + 2];
      const id = ((b[at + 5] & 0x7f) << 24) | (b[at + 6] << 16) | (b[at + 7] << 8) | b[at + 8];
      out.push([b[at + 3], id, b.subarray(at + FRAME_HEADER, at + FRAME_HEADER + len)]);
      at += FRAME_HEADER + len;
    }
    return out;
  }
}

const u32 = (p: Uint8Array) => ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;

Deno.test("H2Connection: a stream refused for a drain is not named in the drain's GOAWAY", async () => {
  // A connection whose first request comes once its listener drains (it was set up meanwhile):
  // the GOAWAY's last stream is the last that may be served (RFC 9113 §6.8), not the one refused.
  const w = new FrameWriter();
  w.frame(FrameType.SETTINGS, 0, 0);
  // :method GET, :scheme http, :path /, :authority (literal "a").
  w.headers(1, Uint8Array.of(0x82, 0x86, 0x84, 0x41, 0x01, 0x61), true, 16384);
  const frames = w.take();
  const feed = new Uint8Array(PREFACE.length + frames.length);
  feed.set(PREFACE);
  feed.set(frames, PREFACE.length);
  const socket = new FakeSocket(feed);
  const env: H2Env = {
    handler: () => Promise.resolve(new Response("x")),
    logger: silentLogger,
    localPort: 0,
    tls: false,
    draining: () => true,
  };
  const conn = new H2Connection(socket, env, { hostname: "127.0.0.1", port: 1 });
  await conn.run();
  const out = socket.frames();
  const goaway = out.find(([type]) => type === FrameType.GOAWAY);
  const rst = out.find(([type, id]) => type === FrameType.RST_STREAM && id === 1);
  assert.equal(rst && u32(rst[2]), ErrorCode.REFUSED_STREAM);
  assert.equal(goaway && u32(goaway[2]), 0);
});

Deno.test("H2Connection: streams refused by the hundred, their ids far apart, are remembered within bounds", async () => {
  // Each refused stream is remembered as closed (so frames crossing its RST_STREAM are ignored),
  // and each gap in the ids as skipped: a client chooses both, so both are capped.
  const w = new FrameWriter();
  w.frame(FrameType.SETTINGS, 0, 0);
  for (let i = 0; i < 900; i++) {
    // :method GET, :scheme http, :path /, :authority "a" (indexed after the first); ids 4 apart.
    const block = i === 0
      ? Uint8Array.of(0x82, 0x86, 0x84, 0x41, 0x01, 0x61)
      : Uint8Array.of(0x82, 0x86, 0x84, 0xbe);
    w.headers(1 + 4 * i, block, true, 16384);
  }
  const frames = w.take();
  const feed = new Uint8Array(PREFACE.length + frames.length);
  feed.set(PREFACE);
  feed.set(frames, PREFACE.length);
  const socket = new FakeSocket(feed);
  const env: H2Env = {
    handler: () => Promise.resolve(new Response("x")),
    logger: silentLogger,
    localPort: 0,
    tls: false,
    draining: () => true,
  };
  const conn = new H2Connection(socket, env, { hostname: "127.0.0.1", port: 1 });
  await conn.run();
  const resets = socket.frames().filter(([type]) => type === FrameType.RST_STREAM);
  assert.equal(resets.length, 900, "every stream was read and refused");
  assert.deepEqual(conn.remembered, { ended: 256, skipped: 16 });
});

Deno.test("H2Connection: a body trickled in one-byte DATA frames that nobody reads is held in few chunks", async () => {
  // 10,000 frames of one byte each are 90 KB on the wire, well within the stream's window; held
  // as a chunk each they were 10,000 buffers (some 200 bytes of objects apiece, and a queue whose
  // shift() walks them all), a thousandfold over the bytes the window allows.
  const w = new FrameWriter();
  w.frame(FrameType.SETTINGS, 0, 0);
  // :method POST (literal, indexed name 2), :scheme http, :path /, :authority "a"; no END_STREAM.
  w.headers(
    1,
    Uint8Array.of(0x42, 0x04, 0x50, 0x4f, 0x53, 0x54, 0x86, 0x84, 0x41, 0x01, 0x61),
    false,
    16384,
  );
  for (let i = 0; i < 10_000; i++) w.frame(FrameType.DATA, 0, 1, Uint8Array.of(i & 0xff));
  const frames = w.take();
  const feed = new Uint8Array(PREFACE.length + frames.length);
  feed.set(PREFACE);
  feed.set(frames, PREFACE.length);
  const socket = new FakeSocket(feed);
  const idle = socket.idle();
  const answered = Promise.withResolvers<Response>();
  let body: ReadableStream<Uint8Array> | null = null;
  const env: H2Env = {
    handler: (req) => {
      body = req.body;
      return answered.promise; // the upstream has not read the body yet
    },
    logger: silentLogger,
    localPort: 0,
    tls: false,
    draining: () => false,
  };
  const conn = new H2Connection(socket, env, { hostname: "127.0.0.1", port: 1 });
  const run = conn.run();
  await idle;
  assert.ok(conn.queuedChunks <= 20, `${conn.queuedChunks} chunks`);
  // What is read is the body as it came, byte for byte.
  const reader = body!.getReader();
  const got: number[] = [];
  while (got.length < 10_000) {
    const r = await reader.read();
    if (r.done) break;
    got.push(...r.value);
  }
  assert.deepEqual(got, Array.from({ length: 10_000 }, (_, i) => i & 0xff));
  answered.resolve(new Response("ok"));
  socket.close();
  await run;
});

/** A socket the test writes to as it goes, and whose writes it can wait for. */
class PipeSocket implements H2Socket {
  written: Uint8Array[] = [];
  #fed: Uint8Array[] = [];
  #reader: (() => void) | null = null;
  #watchers: Array<() => void> = [];
  #closed = false;

  push(bytes: Uint8Array): void {
    this.#fed.push(bytes.slice());
    this.#reader?.();
  }

  async read(p: Uint8Array): Promise<number> {
    while (this.#fed.length === 0) {
      if (this.#closed) return 0;
      await new Promise<void>((resolve) => this.#reader = resolve);
      this.#reader = null;
    }
    const first = this.#fed[0];
    const n = Math.min(p.length, first.length);
    p.set(first.subarray(0, n));
    if (n === first.length) this.#fed.shift();
    else this.#fed[0] = first.subarray(n);
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    this.written.push(p.slice());
    for (const w of this.#watchers) w();
    return Promise.resolve(p.length);
  }

  close(): void {
    this.#closed = true;
    this.#reader?.();
  }

  /** Resolves once `ok()` holds (checked after each write, and at once). */
  async until(ok: () => boolean): Promise<void> {
    while (!ok()) {
      await new Promise<void>((resolve) => this.#watchers.push(resolve));
      this.#watchers = [];
    }
  }

  /** The frames written: [type, stream, payload, flags]. */
  frames(): Array<[number, number, Uint8Array, number]> {
    const b = new Uint8Array(this.written.reduce((n, c) => n + c.length, 0));
    let off = 0;
    for (const c of this.written) {
      b.set(c, off);
      off += c.length;
    }
    const out: Array<[number, number, Uint8Array, number]> = [];
    for (let at = 0; at + FRAME_HEADER <= b.length;) {
      const len = (b[at] << 16) | (b[at + 1] << 8) | b[at + 2];
      const id = ((b[at + 5] & 0x7f) << 24) | (b[at + 6] << 16) | (b[at + 7] << 8) | b[at + 8];
      out.push([b[at + 3], id, b.subarray(at + FRAME_HEADER, at + FRAME_HEADER + len), b[at + 4]]);
      at += FRAME_HEADER + len;
    }
    return out;
  }

  /** DATA bytes written, in all or on stream `id`. */
  data(id?: number): number {
    let n = 0;
    for (const [type, sid, p] of this.frames()) {
      if (type === FrameType.DATA && (id === undefined || sid === id)) n += p.length;
    }
    return n;
  }
}

/** A connection whose `streams` GETs each get `size` bytes, the client's stream windows `window`. */
function waitingAnswers(streams: number, size: number, window: number) {
  const socket = new PipeSocket();
  const env: H2Env = {
    handler: () => Promise.resolve(new Response(new Uint8Array(size))),
    logger: silentLogger,
    localPort: 0,
    tls: false,
    draining: () => false,
  };
  const conn = new H2Connection(socket, env, { hostname: "127.0.0.1", port: 1 });
  const run = conn.run();
  const w = new FrameWriter();
  w.settings([[0x4, window]]); // SETTINGS_INITIAL_WINDOW_SIZE
  for (let i = 0; i < streams; i++) {
    // :method GET, :scheme http, :path /, :authority "a" (literal, not indexed).
    w.headers(1 + 2 * i, Uint8Array.of(0x82, 0x86, 0x84, 0x01, 0x01, 0x61), true, 16384);
  }
  socket.push(PREFACE);
  socket.push(w.take());
  return { socket, conn, run };
}

function windowUpdate(id: number, inc: number): Uint8Array {
  const w = new FrameWriter();
  w.u32(FrameType.WINDOW_UPDATE, id, inc);
  return w.take().slice();
}

Deno.test("H2Connection: a connection WINDOW_UPDATE wakes the answers it has window for, in turn", async () => {
  // 20 answers of 20,000 bytes each in the connection's 65,535: three go whole, the fourth in
  // part, and 17 wait. Each WINDOW_UPDATE of 1,000 has room for one of them: waking all 17 for it
  // cost 17 wake-ups (each finding no window but one) per frame.
  const { socket, conn, run } = waitingAnswers(20, 20_000, 1 << 20);
  await socket.until(() => socket.data() === 65_535);
  // (The last answers begin to wait a moment after the last write.)
  while (conn.waitingForWindow < 17) await new Promise((r) => setTimeout(r, 1));
  const served: number[] = [];
  for (let i = 1; i <= 10; i++) {
    socket.push(windowUpdate(0, 1000));
    await socket.until(() => socket.data() === 65_535 + 1000 * i);
    const last = socket.frames().filter(([type]) => type === FrameType.DATA).at(-1)!;
    served.push(last[1]);
  }
  assert.ok(conn.windowWakes <= 10, `${conn.windowWakes} wake-ups for 10 WINDOW_UPDATEs`);
  // The waiting answers take the window in turn, not the first one again and again.
  assert.equal(new Set(served).size, 10, `streams served: ${served}`);
  socket.push(windowUpdate(0, 20 * 20_000));
  await socket.until(() => socket.data() === 20 * 20_000);
  for (let i = 0; i < 20; i++) assert.equal(socket.data(1 + 2 * i), 20_000);
  socket.close();
  await run;
});

Deno.test("H2Connection: a connection WINDOW_UPDATE does not wake answers waiting for their stream's window", async () => {
  const { socket, conn, run } = waitingAnswers(20, 20_000, 100);
  await socket.until(() => socket.data() === 2000);
  while (conn.waitingForWindow < 20) await new Promise((r) => setTimeout(r, 1));
  const ping = new FrameWriter();
  ping.frame(FrameType.PING, 0, 0, new Uint8Array(8));
  socket.push(windowUpdate(0, 1000));
  socket.push(ping.take().slice());
  await socket.until(() => socket.frames().some(([type]) => type === FrameType.PING));
  assert.equal(conn.windowWakes, 0);
  // A stream's own WINDOW_UPDATE wakes that stream alone.
  socket.push(windowUpdate(5, 500));
  await socket.until(() => socket.data(5) === 600);
  assert.equal(conn.windowWakes, 1);
  for (let i = 0; i < 20; i++) socket.push(windowUpdate(1 + 2 * i, 20_000));
  socket.push(windowUpdate(0, 20 * 20_000));
  await socket.until(() => socket.data() === 20 * 20_000);
  socket.close();
  await run;
});

Deno.test("H2Connection: a larger SETTINGS_INITIAL_WINDOW_SIZE lets the answers waiting for their stream's window go on", async () => {
  const { socket, conn, run } = waitingAnswers(20, 20_000, 100);
  await socket.until(() => socket.data() === 2000);
  while (conn.waitingForWindow < 20) await new Promise((r) => setTimeout(r, 1));
  const w = new FrameWriter();
  w.settings([[0x4, 1100]]);
  socket.push(w.take().slice());
  await socket.until(() => socket.data() === 20 * 1100);
  assert.equal(conn.windowWakes, 20);
  socket.push(windowUpdate(0, 20 * 20_000));
  w.settings([[0x4, 20_000]]);
  socket.push(w.take().slice());
  await socket.until(() => socket.data() === 20 * 20_000);
  socket.close();
  await run;
});

Deno.test("H2Connection: window an answer was woken for and did not use goes to the next in turn when its stream is reset while its writes wait", async () => {
  // Stream 1 (4 MiB) and stream 3 (1,000 bytes) wait for the connection window; a WINDOW_UPDATE
  // of 1 MiB is all stream 1's. It sends until the writes wait (the client reads nothing), is
  // reset there, and gives up what it did not send: stream 3 must get it, no further
  // WINDOW_UPDATE coming.
  class HeldSocket extends PipeSocket {
    held: PromiseWithResolvers<void> | null = null;
    heldWrites = 0;
    override write(p: Uint8Array): Promise<number> {
      if (this.held === null) return super.write(p);
      this.heldWrites++;
      return this.held.promise.then(() => super.write(p));
    }
  }
  const socket = new HeldSocket();
  const sizes = [4 << 20, 1000];
  const env: H2Env = {
    handler: () => Promise.resolve(new Response(new Uint8Array(sizes.shift()!))),
    logger: silentLogger,
    localPort: 0,
    tls: false,
    draining: () => false,
  };
  const conn = new H2Connection(socket, env, { hostname: "127.0.0.1", port: 1 });
  const run = conn.run();
  const w = new FrameWriter();
  w.settings([[0x4, 0x7fffffff]]); // SETTINGS_INITIAL_WINDOW_SIZE
  // :method GET, :scheme http, :path /, :authority "a" (literal, not indexed).
  w.headers(1, Uint8Array.of(0x82, 0x86, 0x84, 0x01, 0x01, 0x61), true, 16384);
  w.headers(3, Uint8Array.of(0x82, 0x86, 0x84, 0x01, 0x01, 0x61), true, 16384);
  socket.push(PREFACE);
  socket.push(w.take());
  await socket.until(() => socket.data() === 65_535);
  while (conn.waitingForWindow < 2) await new Promise((r) => setTimeout(r, 1));
  socket.held = Promise.withResolvers<void>();
  socket.push(windowUpdate(0, 1 << 20));
  // Stream 1 wrote until its writes had to wait.
  while (socket.heldWrites === 0) await new Promise((r) => setTimeout(r, 1));
  w.u32(FrameType.RST_STREAM, 1, ErrorCode.CANCEL);
  socket.push(w.take().slice());
  while (conn.remembered.ended === 0) await new Promise((r) => setTimeout(r, 1));
  const gate = socket.held;
  socket.held = null;
  gate.resolve();
  const deadline = Date.now() + 2_000;
  while (socket.data(3) < 1000 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(socket.data(3), 1000, "stream 3's answer came");
  socket.close();
  await run;
});
