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

Deno.test("a connection's read buffer grows for a long head and shrinks once it is consumed", async () => {
  const [client, server] = await socketPair();
  const c = new Conn(server);
  try {
    // 48 KiB of one head: the 2 KiB buffer grows (to at most 64 KiB) to hold it.
    await client.write(new Uint8Array(48 * 1024).fill(97));
    while (c.end - c.start < 48 * 1024) assert.ok(await c.fill());
    assert.equal(c.end - c.start, 48 * 1024);
    assert.equal(c.buf.length, 64 * 1024);
    c.start = c.end; // the head was taken
    // The connection now waits for its next request with 2 KiB, not the 64 KiB a long head needed.
    await client.write(new Uint8Array(10));
    assert.ok(await c.fill());
    assert.equal(c.buf.length, 2 * 1024);
    assert.equal(c.end - c.start, 10);
    c.start = c.end;
    // A 3 KiB head grows it to 4 KiB, which it keeps for the next request (at most 8 KiB).
    await client.write(new Uint8Array(3 * 1024).fill(98));
    while (c.end - c.start < 3 * 1024) assert.ok(await c.fill());
    assert.equal(c.buf.length, 4 * 1024);
    c.start = c.end;
    await client.write(new Uint8Array(10));
    assert.ok(await c.fill());
    assert.equal(c.buf.length, 4 * 1024);
    assert.equal(c.end - c.start, 10);
    client.close();
    assert.equal(await c.fill(), false);
  } finally {
    c.close();
    try {
      client.close();
    } catch { /* closed above */ }
  }
});
