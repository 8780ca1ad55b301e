import assert from "node:assert/strict";
import { Conn } from "./server.ts";

/** A socket that hands out `chunks` one read at a time, then ends. */
function fakeConn(chunks: Uint8Array[]): Deno.TcpConn {
  return {
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
    setNoDelay() {},
    close() {},
    read(into: Uint8Array): Promise<number | null> {
      const next = chunks.shift();
      if (!next) return Promise.resolve(null);
      assert.ok(next.byteLength <= into.byteLength, "the test's chunk fits the buffer");
      into.set(next);
      return Promise.resolve(next.byteLength);
    },
  } as unknown as Deno.TcpConn;
}

Deno.test("a connection's read buffer grows for a long head and shrinks once it is consumed", async () => {
  const chunks = Array.from({ length: 6 }, () => new Uint8Array(8 * 1024).fill(97));
  const c = new Conn(fakeConn([...chunks, new Uint8Array(10)]));
  for (let i = 0; i < 6; i++) assert.ok(await c.fill());
  assert.equal(c.end - c.start, 48 * 1024);
  assert.equal(c.buf.length, 64 * 1024);
  c.start = c.end; // the head was taken
  // The connection now waits for its next request with 8 KiB, not the 64 KiB a long head needed.
  assert.ok(await c.fill());
  assert.equal(c.buf.length, 8 * 1024);
  assert.equal(c.end - c.start, 10);
  assert.equal(await c.fill(), false);
  c.close();
});
