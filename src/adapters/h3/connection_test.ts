import assert from "node:assert/strict";
import { H3Connection } from "./connection.ts";
import { encodeFrame, encodeSettings, FrameType, H3Error, StreamType } from "./frames.ts";
import { encodeFieldSection } from "./qpack.ts";
import { serveRequest } from "./request.ts";
import { silentLogger } from "../../ports.ts";
import { encodeVarint } from "./varint.ts";

/**
 * A peer stream as Deno makes one: a byte stream that hands 64 KiB to each pull unless the
 * reader brings its own buffer. Records the size of every buffer it is given.
 */
function peerStream(
  bytes: Uint8Array,
  sizes: number[],
  gone: Promise<unknown>,
): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: 64 * 1024,
    async pull(c) {
      const view = c.byobRequest!.view! as Uint8Array;
      sizes.push(view.byteLength);
      if (sent) {
        // Open and idle, as a control stream stays, until the connection goes.
        await gone;
        c.close();
        return c.byobRequest!.respond(0);
      }
      sent = true;
      view.set(bytes);
      c.byobRequest!.respond(bytes.length);
    },
  });
}

/**
 * A QuicConn as H3Connection uses one: the peer streams `uni` and `bidi` make (given the promise
 * of the close), each incoming list open until `close`; `sendStream` makes this side's streams.
 */
function fakeQuic(opts: {
  uni?: (closed: Promise<unknown>) => unknown[];
  bidi?: (closed: Promise<unknown>) => unknown[];
  sendStream?: () => WritableStream<Uint8Array>;
}) {
  const closed = Promise.withResolvers<Deno.QuicCloseInfo>();
  const incoming = (streams: unknown[] = []) =>
    new ReadableStream({
      start: (c) => streams.forEach((stream) => c.enqueue(stream)),
      pull: (c) => closed.promise.then(() => c.close()),
    });
  const conn = {
    closed: closed.promise,
    remoteAddr: { transport: "udp", hostname: "127.0.0.1", port: 1 },
    incomingUnidirectionalStreams: incoming(opts.uni?.(closed.promise)),
    incomingBidirectionalStreams: incoming(opts.bidi?.(closed.promise)),
    createUnidirectionalStream: () =>
      Promise.resolve(opts.sendStream ? opts.sendStream() : new WritableStream()),
    close: (info: Deno.QuicCloseInfo = { closeCode: 0, reason: "" }) => closed.resolve(info),
  } as unknown as Deno.QuicConn;
  return { conn, closed: closed.promise };
}

/** An H3Connection on `conn` (answering "ok"), serving: `served` ends with the connection. */
function serveH3(conn: Deno.QuicConn) {
  const h3 = new H3Connection(conn, {
    handler: () => Promise.resolve(new Response("ok")),
    logger: silentLogger,
    localPort: 443,
    limits: {
      maxFieldSectionSize: 16384,
      maxControlFrame: 16384,
      headerTimeoutMs: 1000,
      keepAliveMs: 0,
    },
  });
  return { h3, served: h3.serve() };
}

/** The HEADERS frame of a GET of `path` on https://a.test. */
const getHeaders = (path: string) =>
  encodeFrame(
    FrameType.HEADERS,
    encodeFieldSection([
      [":method", "GET"],
      [":scheme", "https"],
      [":authority", "a.test"],
      [":path", path],
    ]),
  );

Deno.test("H3Connection reads the peer's control and QPACK streams in small buffers, not 64 KiB", async () => {
  const sizes: number[] = [];
  const control = new Uint8Array([StreamType.CONTROL, ...encodeSettings([[0x06, 16384]])]);
  const { conn } = fakeQuic({
    uni: (closed) => [
      peerStream(control, sizes, closed),
      peerStream(new Uint8Array([StreamType.QPACK_ENCODER]), sizes, closed),
      peerStream(new Uint8Array([StreamType.QPACK_DECODER]), sizes, closed),
    ],
  });
  const { h3, served } = serveH3(conn);
  // Each stream: its first read (the type, SETTINGS) and the pending one that then waits.
  while (sizes.length < 6) await new Promise((r) => setTimeout(r, 1));
  // Deno allocated 64 KiB for each pending read, and the last chunk's view kept another:
  // 384 KiB per idle HTTP/3 connection.
  assert.ok(sizes.every((n) => n <= 512), `read buffers: ${sizes.join(", ")}`);
  conn.close();
  await served;
  await h3.closed;
});

Deno.test("serveRequest waits for the end of a GET's stream in small buffers, not 64 KiB", async () => {
  const sizes: number[] = [];
  const gone = Promise.withResolvers<void>();
  const head = getHeaders("/x");
  const written = Promise.withResolvers<void>();
  const stream = {
    readable: peerStream(head, sizes, gone.promise),
    writable: Object.assign(new WritableStream({ write: () => written.resolve() }), { id: 0n }),
  } as unknown as Deno.QuicBidirectionalStream;
  const served = serveRequest(stream, {
    handler: () => Promise.resolve(new Response("ok")),
    logger: silentLogger,
    info: {
      remoteAddr: { hostname: "127.0.0.1", port: 1 },
      localPort: 443,
      protocol: "h3",
      tls: true,
    },
    maxFieldSectionSize: 16384,
    signal: new AbortController().signal,
    headerTimeoutMs: 1000,
    closeConnection: () => {},
    waiting: new Set(),
  });
  await written.promise;
  while (sizes.length < 2) await new Promise((r) => setTimeout(r, 1));
  // The HEADERS came in Deno's 64 KiB; the read waiting for the FIN held another 64 KiB, and a
  // cancelled one kept it until the connection's next event: 64 KiB per HTTP/3 connection.
  assert.ok(sizes.slice(1).every((n) => n <= 512), `read buffers: ${sizes.join(", ")}`);
  gone.resolve();
  await served;
});

/** A peer byte stream fed by `push`, open until `end` (or cancelled, which waits for `hold`). */
function fedStream(hold: Promise<void> = Promise.resolve()) {
  let ctrl!: ReadableByteStreamController;
  const stream = new ReadableStream({
    type: "bytes",
    start: (c) => void (ctrl = c),
    cancel: () => hold,
  });
  return {
    stream,
    push: (bytes: Uint8Array) => ctrl.enqueue(bytes.slice()),
    end: () => ctrl.close(),
  };
}

Deno.test("H3Connection: a PRIORITY_UPDATE for a stream whose response is sent is no connection error", async () => {
  const control = fedStream();
  // The request stream's reading side is still being cancelled when the update arrives.
  const cancelling = Promise.withResolvers<void>();
  const request = fedStream(cancelling.promise);
  request.push(getHeaders("/"));
  // Deno's send stream once closed: its resource is gone and setting sendOrder throws.
  const responded = Promise.withResolvers<void>();
  let sent = false;
  const writable = new WritableStream<Uint8Array>({
    close: () => {
      sent = true;
      responded.resolve();
    },
  });
  Object.defineProperties(writable, {
    id: { value: 0n },
    sendOrder: {
      get: () => 0,
      set: () => {
        if (sent) throw new Deno.errors.BadResource("Bad resource ID");
      },
    },
  });
  const { conn, closed } = fakeQuic({
    uni: () => [control.stream],
    bidi: () => [{ readable: request.stream, writable }],
  });
  const { h3, served } = serveH3(conn);
  control.push(Uint8Array.of(StreamType.CONTROL, ...encodeSettings([])));
  await responded.promise;
  // Chromium reprioritizes streams at any time (RFC 9218 §7.1): this one has just finished. A
  // DATA frame after it closes the connection with a known code, so the update was read first.
  const update = encodeFrame(
    FrameType.PRIORITY_UPDATE,
    Uint8Array.of(0, ...new TextEncoder().encode("u=1")),
  );
  control.push(Uint8Array.of(...update, ...encodeFrame(FrameType.DATA, new Uint8Array(0))));
  const info = await closed;
  assert.equal(info.closeCode, H3Error.FRAME_UNEXPECTED, info.reason);
  cancelling.resolve();
  await served;
  await h3.closed;
});

Deno.test("H3Connection.goaway does not wait on a control stream the peer gives no flow credit", async () => {
  // A peer may grant a few bytes of stream credit and no more: Deno's write then never
  // resolves, and a shutdown awaiting the GOAWAY write waited for ever.
  let writes = 0;
  const { conn } = fakeQuic({
    sendStream: () =>
      new WritableStream<Uint8Array>({
        // The stream type and SETTINGS go out; nothing after them ever does.
        write: () => ++writes <= 3 ? Promise.resolve() : new Promise(() => {}),
      }),
  });
  const { h3, served } = serveH3(conn);
  while (writes < 3) await new Promise((r) => setTimeout(r, 1));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    h3.goaway().then(() => "sent"),
    new Promise<string>((ok) => timer = setTimeout(() => ok("stuck"), 1000)),
  ]);
  clearTimeout(timer);
  assert.equal(outcome, "sent");
  h3.close();
  await served;
  await h3.closed;
});

Deno.test("H3Connection: PRIORITY_UPDATEs for thousands of streams never opened keep the newest 128", async () => {
  const control = fedStream();
  const { conn, closed } = fakeQuic({ uni: () => [control.stream] });
  const { h3, served } = serveH3(conn);
  control.push(Uint8Array.of(StreamType.CONTROL, ...encodeSettings([])));
  // A client may announce urgencies ahead of its streams (RFC 9218 §7.1); one that names stream
  // ids it never opens must not grow the connection's memory.
  const u = new TextEncoder().encode("u=1");
  for (let i = 0; i < 5_000; i++) {
    control.push(
      encodeFrame(FrameType.PRIORITY_UPDATE, Uint8Array.of(...encodeVarint(4 * i), ...u)),
    );
  }
  // A DATA frame closes the connection with a known code once the updates before it were read.
  control.push(encodeFrame(FrameType.DATA, new Uint8Array(0)));
  const info = await closed;
  assert.equal(info.closeCode, H3Error.FRAME_UNEXPECTED, info.reason);
  assert.equal(h3.pendingUrgencies, 128);
  await served;
  await h3.closed;
});
