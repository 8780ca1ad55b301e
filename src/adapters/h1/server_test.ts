import assert from "node:assert/strict";
import { Conn } from "./server.ts";

/** Both ends of a real TCP connection on 127.0.0.1. */
async function socketPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const [client, server] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: (l.addr as Deno.NetAddr).port }),
      l.accept(),
    ]);
    return [client, server as Deno.TcpConn];
  } finally {
    l.close();
  }
}

Deno.test("a connection's read buffer grows for a long head and shrinks to what its requests need", async () => {
  const [client, server] = await socketPair();
  const c = new Conn(server);
  const next = async (bytes: number) => {
    await client.write(new Uint8Array(bytes).fill(97));
    while (c.end - c.start < bytes) assert.ok(await c.fill());
    assert.equal(c.end - c.start, bytes);
  };
  /** The request in the buffer took `bytes` (as serve() says) and was consumed. */
  const served = (bytes: number) => {
    c.need(bytes);
    c.start = c.end;
  };
  /** The buffer the next (10-byte) request is read with. */
  const nextWith = async (size: number) => {
    await next(10);
    assert.equal(c.buf.length, size);
  };
  try {
    // A new connection reads its first request with 8 KiB.
    assert.equal(c.buf.length, 8 * 1024);
    // It took 200 bytes: the next request is waited for with 2 KiB.
    await next(200);
    served(200);
    await nextWith(2 * 1024);
    served(10);
    // A request of 3 KiB (a head and a small body) grows it to 4 KiB, which it keeps for the
    // next request, and for the ones after (the most any of them took).
    await next(3 * 1024);
    assert.equal(c.buf.length, 4 * 1024);
    served(3 * 1024);
    await nextWith(4 * 1024);
    served(10);
    await nextWith(4 * 1024);
    served(10);
    // 48 KiB of one head: the buffer grows (to at most 64 KiB) to hold it, and goes back to
    // 8 KiB, the most kept, once it is consumed.
    await next(48 * 1024);
    assert.equal(c.buf.length, 64 * 1024);
    served(48 * 1024);
    await nextWith(8 * 1024);
    client.close();
    assert.equal(await c.fill(), false);
  } finally {
    c.close();
    try {
      client.close();
    } catch { /* closed above */ }
  }
});
