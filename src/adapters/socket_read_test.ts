import assert from "node:assert/strict";
import { readsDirect, socketReader, socketWriter, writesDirect } from "./socket_read.ts";

/** A connected pair of TCP sockets on 127.0.0.1. */
async function pair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const [client, server] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
      listener.accept(),
    ]);
    return [client, server];
  } finally {
    listener.close();
  }
}

Deno.test("socketReader reads a Deno socket through the op: bytes as sent, then 0 at its end", async () => {
  const [a, b] = await pair();
  try {
    // This Deno exposes the op and the resource id: reads skip Conn.read (and its Set).
    assert.equal(
      readsDirect(a),
      true,
      "this Deno no longer exposes core.read or the rid: reads fall back to Conn.read (socket_read.ts)",
    );
    const read = socketReader(a);
    await b.write(new TextEncoder().encode("hello"));
    const buf = new Uint8Array(3);
    let got = "";
    while (got.length < 5) {
      const n = await read(buf);
      assert.ok(n > 0 && n <= 3);
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    assert.equal(got, "hello");
    b.closeWrite();
    assert.equal(await read(buf), 0);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("socketReader rejects a read of a closed socket as Conn.read does", async () => {
  const [a, b] = await pair();
  const read = socketReader(a);
  const pending = read(new Uint8Array(8));
  a.close();
  const viaOp = await pending.then(() => null, (err: unknown) => err);
  assert.ok(viaOp instanceof Error, "the pending read fails");
  assert.equal((viaOp as Error).name, "Interrupted");
  await assert.rejects(read(new Uint8Array(8)), Deno.errors.BadResource);
  b.close();
});

Deno.test("socketReader falls back to a socket's own read, with 0 for its end", async () => {
  const chunks = [new Uint8Array([1, 2]), null];
  const socket = {
    read(p: Uint8Array): Promise<number | null> {
      const c = chunks.shift() ?? null;
      if (c) p.set(c);
      return Promise.resolve(c ? c.byteLength : null);
    },
  };
  assert.equal(readsDirect(socket), false);
  const read = socketReader(socket);
  const buf = new Uint8Array(4);
  assert.equal(await read(buf), 2);
  assert.deepEqual([...buf.subarray(0, 2)], [1, 2]);
  assert.equal(await read(buf), 0);
});

Deno.test("socketWriter writes a Deno socket through the op, and fails on a closed one as Conn.write", async () => {
  const [a, b] = await pair();
  try {
    assert.equal(
      writesDirect(a),
      true,
      "this Deno no longer exposes core.write or the rid: writes fall back to Conn.write",
    );
    const write = socketWriter(a);
    const sent = new TextEncoder().encode("hello, world");
    let off = 0;
    while (off < sent.length) off += await write(sent.subarray(off));
    a.closeWrite();
    const got: number[] = [];
    const buf = new Uint8Array(64);
    for (let n; (n = await b.read(buf)) !== null;) got.push(...buf.subarray(0, n));
    assert.equal(new TextDecoder().decode(new Uint8Array(got)), "hello, world");
  } finally {
    a.close();
    b.close();
  }
  await assert.rejects(socketWriter(a)(new Uint8Array(1)), Deno.errors.BadResource);
  await assert.rejects(a.write(new Uint8Array(1)), Deno.errors.BadResource);
});

Deno.test("socketWriter falls back to a socket's own write", async () => {
  const seen: number[] = [];
  const socket = {
    write(p: Uint8Array): Promise<number> {
      seen.push(...p.subarray(0, 2));
      return Promise.resolve(Math.min(2, p.length));
    },
  };
  assert.equal(writesDirect(socket), false);
  assert.equal(await socketWriter(socket)(new Uint8Array([7, 8, 9])), 2);
  assert.deepEqual(seen, [7, 8]);
});
