import assert from "node:assert/strict";
import { H3Connection } from "./connection.ts";
import { encodeFrame, encodeSettings, FrameType, StreamType } from "./frames.ts";
import { encodeFieldSection } from "./qpack.ts";
import { serveRequest } from "./request.ts";
import { silentLogger } from "../../ports.ts";

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

Deno.test("H3Connection reads the peer's control and QPACK streams in small buffers, not 64 KiB", async () => {
  const sizes: number[] = [];
  const closed = Promise.withResolvers<Deno.QuicCloseInfo>();
  const control = new Uint8Array([StreamType.CONTROL, ...encodeSettings([[0x06, 16384]])]);
  const uni = new ReadableStream({
    start(c) {
      c.enqueue(peerStream(control, sizes, closed.promise));
      c.enqueue(peerStream(new Uint8Array([StreamType.QPACK_ENCODER]), sizes, closed.promise));
      c.enqueue(peerStream(new Uint8Array([StreamType.QPACK_DECODER]), sizes, closed.promise));
    },
    pull: (c) => closed.promise.then(() => c.close()),
  });
  const conn = {
    closed: closed.promise,
    remoteAddr: { transport: "udp", hostname: "127.0.0.1", port: 1 },
    incomingUnidirectionalStreams: uni,
    incomingBidirectionalStreams: new ReadableStream({
      pull: (c) => closed.promise.then(() => c.close()),
    }),
    createUnidirectionalStream: () => Promise.resolve(new WritableStream()),
    close: () => closed.resolve({ closeCode: 0, reason: "" }),
  } as unknown as Deno.QuicConn;
  const h3 = new H3Connection(conn, {
    handler: () => Promise.resolve(new Response("")),
    logger: silentLogger,
    localPort: 443,
    limits: {
      maxFieldSectionSize: 16384,
      maxControlFrame: 16384,
      headerTimeoutMs: 1000,
      keepAliveMs: 0,
    },
  });
  const served = h3.serve();
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
  const head = encodeFrame(
    FrameType.HEADERS,
    encodeFieldSection([
      [":method", "GET"],
      [":scheme", "https"],
      [":authority", "a.test"],
      [":path", "/x"],
    ]),
  );
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
  });
  await written.promise;
  while (sizes.length < 2) await new Promise((r) => setTimeout(r, 1));
  // The HEADERS came in Deno's 64 KiB; the read waiting for the FIN held another 64 KiB, and a
  // cancelled one kept it until the connection's next event: 64 KiB per HTTP/3 connection.
  assert.ok(sizes.slice(1).every((n) => n <= 512), `read buffers: ${sizes.join(", ")}`);
  gone.resolve();
  await served;
});
