// Reference point: the least a proxy on Deno can do per request without Deno.serve or any Fetch
// object. Raw sockets on both sides (Deno.listen, Deno.connect), keep-alive to the backend, the
// client's request head passed on as it came, the backend's Content-Length answer read into one
// buffer and written back as it came. No parsing beyond the two heads' ends and the length, no
// request bodies, chunked answers, timeouts or errors: only for the benchmark's GETs of fixed-size
// files, never for real traffic. It bounds what an HTTP/1.1 engine of Prox's own could reach.
// Usage: deno run -A bench/raw_proxy.ts PORT BACKEND_PORT

const [port, backend] = Deno.args.map(Number);
// bench/decompose.ts stops this process with SIGINT: exit normally so that --cpu-prof writes.
Deno.addSignalListener("SIGINT", () => Deno.exit(0));
interface Upstream {
  conn: Deno.TcpConn;
  buf: Uint8Array<ArrayBuffer>;
}
const idle: Upstream[] = [];
const decoder = new TextDecoder();
const LENGTH = /\r\ncontent-length:[ \t]*(\d+)/i;

/** The offset just past the blank line that ends a head in `b[0..n)`, or -1. */
function headEnd(b: Uint8Array, n: number): number {
  for (let i = 3; i < n; i++) {
    if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) return i + 1;
  }
  return -1;
}

async function writeAll(conn: Deno.Conn, b: Uint8Array): Promise<void> {
  for (let w = 0; w < b.length;) w += await conn.write(b.subarray(w));
}

/** Reads into `buf` from `have` until `done(total)`; the new total. */
async function readUntil(
  conn: Deno.Conn,
  buf: Uint8Array,
  have: number,
  done: (n: number) => boolean,
): Promise<number> {
  while (!done(have)) {
    if (have === buf.length) throw new Error("larger than the raw proxy's buffer");
    const n = await conn.read(buf.subarray(have));
    if (n === null) throw new Error("connection closed");
    have += n;
  }
  return have;
}

async function serve(client: Deno.TcpConn): Promise<void> {
  client.setNoDelay(true);
  const buf = new Uint8Array(16 * 1024);
  let have = 0;
  for (;;) {
    let end = headEnd(buf, have);
    if (end < 0) {
      // A client that closes between requests ends the loop here (readUntil throws).
      have = await readUntil(client, buf, have, (n) => (end = headEnd(buf, n)) > 0);
    }
    let u = idle.pop();
    if (!u) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: backend });
      conn.setNoDelay(true);
      u = { conn, buf: new Uint8Array(128 * 1024) };
    }
    await writeAll(u.conn, buf.subarray(0, end));
    buf.copyWithin(0, end, have);
    have -= end;
    let uEnd = -1;
    let got = await readUntil(u.conn, u.buf, 0, (n) => (uEnd = headEnd(u.buf, n)) > 0);
    const length = LENGTH.exec(decoder.decode(u.buf.subarray(0, uEnd)));
    if (!length) throw new Error("the raw proxy needs a Content-Length answer");
    const total = uEnd + Number(length[1]);
    got = await readUntil(u.conn, u.buf, got, (n) => n >= total);
    await writeAll(client, u.buf.subarray(0, total));
    idle.push(u);
  }
}

for await (const conn of Deno.listen({ hostname: "127.0.0.1", port })) {
  serve(conn).catch(() => conn.close());
}
