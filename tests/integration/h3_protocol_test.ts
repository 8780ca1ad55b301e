// Protocol violations on raw QUIC streams get the RFC 9114 / RFC 9204 connection error codes;
// extensions (GREASE streams) are ignored; a request stream that never sends HEADERS is dropped.
import assert from "node:assert/strict";
import { ROOT } from "../_harness.ts";
import { type H3Listener, startH3Listener } from "../../src/adapters/h3/mod.ts";
import { encodeFrame, encodeSettings, FrameType, H3Error } from "../../src/adapters/h3/frames.ts";
import { encodeFieldSection } from "../../src/adapters/h3/qpack.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const cert = Deno.readTextFileSync(`${TLS}/cert.pem`);
const key = Deno.readTextFileSync(`${TLS}/key.pem`);
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);
const SETTINGS = encodeSettings([[0x01, 0], [0x07, 0]]);

async function withServer(fn: (l: H3Listener) => Promise<void>): Promise<void> {
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    logger: silentLogger,
    handler: () => Promise.resolve(new Response("ok")),
    options: { request_header_timeout: 300, max_idle_timeout: 5000 },
  });
  try {
    await fn(l);
  } finally {
    await l.shutdown(0);
  }
}

/** Opens a raw connection, runs `streams` (uni streams to open, in order), returns the close code. */
async function closeCodeAfter(
  port: number,
  streams: { bytes: number[] | Uint8Array; fin?: boolean }[],
): Promise<number> {
  const conn = await Deno.connectQuic({
    hostname: "127.0.0.1",
    port,
    serverName: "localhost",
    caCerts: [ca],
    alpnProtocols: ["h3"],
  });
  const held: WritableStreamDefaultWriter<Uint8Array>[] = [];
  try {
    for (const s of streams) {
      const w = (await conn.createUnidirectionalStream()).getWriter();
      held.push(w);
      await w.write(Uint8Array.from(s.bytes));
      if (s.fin) await w.close();
    }
    const info = await conn.closed;
    return info.closeCode;
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

const control = (...frames: Uint8Array[]) => [0x00, ...frames.flatMap((f) => [...f])];

Deno.test("h3 connection error: control stream without SETTINGS first is H3_MISSING_SETTINGS", async () => {
  await withServer(async (l) => {
    const code = await closeCodeAfter(l.port, [{
      bytes: control(encodeFrame(FrameType.GOAWAY, Uint8Array.of(0))),
    }]);
    assert.equal(code, H3Error.MISSING_SETTINGS);
  });
});

Deno.test("h3 connection error: a second control stream is H3_STREAM_CREATION_ERROR", async () => {
  await withServer(async (l) => {
    const code = await closeCodeAfter(l.port, [{ bytes: control(SETTINGS) }, {
      bytes: control(SETTINGS),
    }]);
    assert.equal(code, H3Error.STREAM_CREATION_ERROR);
  });
});

Deno.test("h3 connection error: a client push stream is H3_STREAM_CREATION_ERROR", async () => {
  await withServer(async (l) => {
    const code = await closeCodeAfter(l.port, [{ bytes: control(SETTINGS) }, {
      bytes: [0x01, 0x00],
    }]);
    assert.equal(code, H3Error.STREAM_CREATION_ERROR);
  });
});

Deno.test("h3 connection error: DATA on the control stream is H3_FRAME_UNEXPECTED", async () => {
  await withServer(async (l) => {
    const code = await closeCodeAfter(l.port, [{
      bytes: control(SETTINGS, encodeFrame(FrameType.DATA, Uint8Array.of(1))),
    }]);
    assert.equal(code, H3Error.FRAME_UNEXPECTED);
  });
});

Deno.test("h3 connection error: an empty PRIORITY_UPDATE is H3_FRAME_ERROR", async () => {
  await withServer(async (l) => {
    const empty = encodeFrame(FrameType.PRIORITY_UPDATE, new Uint8Array(0));
    const code = await closeCodeAfter(l.port, [{ bytes: control(SETTINGS, empty) }]);
    assert.equal(code, H3Error.FRAME_ERROR);
  });
});

Deno.test("h3 connection error: HTTP/2 settings are H3_SETTINGS_ERROR", async () => {
  await withServer(async (l) => {
    const code = await closeCodeAfter(l.port, [{
      bytes: control(encodeSettings([[0x04, 65535]])),
    }]);
    assert.equal(code, H3Error.SETTINGS_ERROR);
  });
});

Deno.test("h3 connection error: closing the control stream is H3_CLOSED_CRITICAL_STREAM", async () => {
  await withServer(async (l) => {
    const code = await closeCodeAfter(l.port, [{ bytes: control(SETTINGS), fin: true }]);
    assert.equal(code, H3Error.CLOSED_CRITICAL_STREAM);
  });
});

Deno.test("h3 connection error: dynamic table inserts are QPACK_ENCODER_STREAM_ERROR", async () => {
  await withServer(async (l) => {
    // Insert with literal name "a" = "b" on the encoder stream (RFC 9204 §4.3.3)
    const code = await closeCodeAfter(l.port, [{ bytes: control(SETTINGS) }, {
      bytes: [0x02, 0x41, 0x61, 0x01, 0x62],
    }]);
    assert.equal(code, H3Error.QPACK_ENCODER_STREAM_ERROR);
  });
});

Deno.test("h3 connection error: CANCEL_PUSH, a growing GOAWAY or a shrinking MAX_PUSH_ID is H3_ID_ERROR", async () => {
  await withServer(async (l) => {
    const id = (type: number, v: number) => encodeFrame(type, Uint8Array.of(v));
    for (
      const frames of [
        // Prox promised no push, so no push id can be cancelled (RFC 9114 §7.2.3)
        [id(FrameType.CANCEL_PUSH, 0)],
        [id(FrameType.GOAWAY, 4), id(FrameType.GOAWAY, 8)], // §5.2
        [id(FrameType.MAX_PUSH_ID, 8), id(FrameType.MAX_PUSH_ID, 4)], // §7.2.7
      ]
    ) {
      const code = await closeCodeAfter(l.port, [{ bytes: control(SETTINGS, ...frames) }]);
      assert.equal(code, H3Error.ID_ERROR, frames.map((f) => f[0]).join(", "));
    }
  });
});

Deno.test("h3 connection error: a PRIORITY_UPDATE for no request stream or push is H3_ID_ERROR", async () => {
  await withServer(async (l) => {
    const u = new TextEncoder().encode("u=1");
    for (
      const frame of [
        // stream 2 is a server-initiated unidirectional stream, not a request (RFC 9218 §7.1)
        encodeFrame(FrameType.PRIORITY_UPDATE, Uint8Array.of(2, ...u)),
        // the push variant: Prox promised no push (§7.2)
        encodeFrame(FrameType.PRIORITY_UPDATE + 1, Uint8Array.of(0, ...u)),
      ]
    ) {
      const code = await closeCodeAfter(l.port, [{ bytes: control(SETTINGS, frame) }]);
      assert.equal(code, H3Error.ID_ERROR);
    }
  });
});

Deno.test("h3 connection error: an Insert Count Increment is QPACK_DECODER_STREAM_ERROR", async () => {
  await withServer(async (l) => {
    // Two Stream Cancellations (one with a multi-byte id), then Increment 1: Prox inserts
    // nothing, so no count can grow (RFC 9204 §4.4.3)
    const code = await closeCodeAfter(l.port, [{ bytes: control(SETTINGS) }, {
      bytes: [0x03, 0x7f, 0x81, 0x01, 0x40, 0x01],
    }]);
    assert.equal(code, H3Error.QPACK_DECODER_STREAM_ERROR);
  });
});

Deno.test("h3 connection error: a Section Acknowledgment is QPACK_DECODER_STREAM_ERROR", async () => {
  await withServer(async (l) => {
    // Section Acknowledgment of stream 0: Prox never sends a section that needs one (§4.4.1)
    const code = await closeCodeAfter(l.port, [{ bytes: control(SETTINGS) }, {
      bytes: [0x03, 0x80],
    }]);
    assert.equal(code, H3Error.QPACK_DECODER_STREAM_ERROR);
  });
});

Deno.test("h3 ignores GREASE streams and drops a request stream that never sends HEADERS", async () => {
  await withServer(async (l) => {
    const conn = await Deno.connectQuic({
      hostname: "127.0.0.1",
      port: l.port,
      serverName: "localhost",
      caCerts: [ca],
      alpnProtocols: ["h3"],
    });
    try {
      const held: WritableStreamDefaultWriter<Uint8Array>[] = [];
      // PRIORITY_UPDATE for the request stream (id 4) before it opens, as Chromium does
      const update = encodeFrame(
        FrameType.PRIORITY_UPDATE,
        Uint8Array.of(4, ...new TextEncoder().encode("u=0, i")),
      );
      // Stream Cancellations on the QPACK decoder stream are allowed (RFC 9204 §4.4.2).
      const decoder = [0x03, 0x44, 0x7f, 0x81, 0x01];
      for (const bytes of [control(SETTINGS, update), [0x21 + 0x1f * 2, 1, 2, 3], decoder]) {
        const w = (await conn.createUnidirectionalStream()).getWriter();
        held.push(w);
        await w.write(Uint8Array.from(bytes));
      }
      // A silent request stream: the server gives up after request_header_timeout (300 ms).
      const silent = await conn.createBidirectionalStream();
      const sw = silent.writable.getWriter();
      await sw.write(Uint8Array.of(0x21, 10, 1, 2)); // a GREASE frame cut short
      const t0 = performance.now();
      const chunks: Uint8Array[] = [];
      for await (const c of silent.readable) chunks.push(c);
      assert.equal(chunks.length, 0);
      assert.ok(performance.now() - t0 < 4000);
      // The connection still serves requests.
      const s = await conn.createBidirectionalStream();
      const w = s.writable.getWriter();
      const fields = encodeFieldSection([
        [":method", "GET"],
        [":scheme", "https"],
        [":authority", "localhost"],
        [":path", "/"],
        ["priority", "u=1"],
      ]);
      await w.write(encodeFrame(FrameType.HEADERS, fields));
      await w.close();
      let got = 0;
      for await (const c of s.readable) got += c.length;
      assert.ok(got > 0);
      sw.releaseLock();
    } finally {
      conn.close();
    }
  });
});

Deno.test("h3 tolerates a unidirectional stream closed before its type was read (RFC 9114 §6.2)", async () => {
  await withServer(async (l) => {
    const conn = await Deno.connectQuic({
      hostname: "127.0.0.1",
      port: l.port,
      serverName: "localhost",
      caCerts: [ca],
      alpnProtocols: ["h3"],
    });
    try {
      const held = (await conn.createUnidirectionalStream()).getWriter();
      await held.write(Uint8Array.from(control(SETTINGS)));
      // Half of a two-byte stream type, then FIN: not a critical stream, nothing to close.
      const cut = (await conn.createUnidirectionalStream()).getWriter();
      await cut.write(Uint8Array.of(0x40));
      await cut.close();
      const s = await conn.createBidirectionalStream();
      const w = s.writable.getWriter();
      await w.write(encodeFrame(
        FrameType.HEADERS,
        encodeFieldSection([[":method", "GET"], [":scheme", "https"], [":authority", "localhost"], [
          ":path",
          "/",
        ]]),
      ));
      await w.close();
      let got = 0;
      for await (const c of s.readable) got += c.length;
      assert.ok(got > 0, "the request was answered");
      held.releaseLock();
    } finally {
      conn.close();
    }
  });
});
