// readHello against a scripted connection: a hostile client's ClientHello, one byte per read.
import assert from "node:assert/strict";
import { readHello } from "./tcp_open.ts";

Deno.test("readHello reads a ClientHello of one-byte records, a byte per read, to its verdict", async () => {
  // 16 KiB of one-byte records, each read bringing one byte (a client sending a byte per
  // segment): each read's peek walked every record again, 2.7 s of one core per connection. That
  // each record is looked at once is tls_client_hello_test's (a count, not a time); this checks
  // readHello keeps one scan across reads and reaches the verdict.
  const bytes: number[] = [22, 3, 1, 0, 4, 1, 0, 0x3e, 0x80]; // a ClientHello of 16,000 bytes
  while (bytes.length < 16 * 1024) bytes.push(22, 3, 1, 0, 1, 0);
  let at = 0;
  const conn = {
    read: (buf: Uint8Array) => {
      if (at >= bytes.length) return Promise.resolve(null);
      buf[0] = bytes[at++];
      return Promise.resolve(1);
    },
    close: () => {},
  } as unknown as Deno.TcpConn;
  const hello = await readHello(conn, 60_000);
  assert.equal(hello.kind, "bad_hello");
  assert.match(String(hello.reason), /no complete ClientHello in 16384 bytes/);
});
