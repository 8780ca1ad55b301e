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
