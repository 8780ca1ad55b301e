// Reference point: the least an HTTP/1.1 proxy on Deno.serve can do per request. Keep-alive
// sockets to the backend, the request head written from the request's own fields, the response
// head split on CRLF and its Content-Length body read into one buffer, its fields appended to a
// new Response. No timeouts, abort handling, pool limits, validation, chunked bodies or request
// bodies: only for the benchmark's GETs of fixed-size files, never for real traffic.
// Usage: deno run -A bench/bare_proxy.ts PORT BACKEND_PORT

const [port, backend] = Deno.args.map(Number);
interface Upstream {
  conn: Deno.Conn;
  buf: Uint8Array<ArrayBuffer>;
}
const idle: Upstream[] = [];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function headEnd(b: Uint8Array, n: number): number {
  for (let i = 3; i < n; i++) {
    if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) return i + 1;
  }
  return -1;
}

async function readAtLeast(u: Upstream, have: number, want: (n: number) => boolean) {
  while (!want(have)) {
    if (have === u.buf.length) throw new Error("response larger than the bare client's buffer");
    const n = await u.conn.read(u.buf.subarray(have));
    if (n === null) throw new Error("backend closed the connection");
    have += n;
  }
  return have;
}

Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, async (req) => {
  let u = idle.pop();
  if (!u) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: backend });
    conn.setNoDelay(true);
    u = { conn, buf: new Uint8Array(128 * 1024) };
  }
  let head = req.method + " " + req.url.slice(req.url.indexOf("/", 8)) + " HTTP/1.1\r\n";
  req.headers.forEach((v, k) => {
    if (k !== "connection") head += k + ": " + v + "\r\n";
  });
  await u.conn.write(encoder.encode(head + "\r\n"));
  let end = -1;
  let have = await readAtLeast(u, 0, (n) => (end = headEnd(u.buf, n)) > 0);
  const lines = decoder.decode(u.buf.subarray(0, end - 4)).split("\r\n");
  const fields: [string, string][] = [];
  let length = 0;
  for (let i = 1; i < lines.length; i++) {
    const colon = lines[i].indexOf(":");
    const name = lines[i].slice(0, colon);
    const value = lines[i].slice(colon + 1).trim();
    if (name.toLowerCase() === "content-length") length = Number(value);
    else if (name.toLowerCase() !== "connection") fields.push([name, value]);
  }
  have = await readAtLeast(u, have, (n) => n >= end + length);
  const body = u.buf.slice(end, end + length);
  idle.push(u);
  const res = new Response(body, { status: Number(lines[0].slice(9, 12)) });
  for (const [name, value] of fields) res.headers.append(name, value);
  return res;
});
// bench/profile.ts stops this process with SIGINT: exit normally so that --cpu-prof writes its file.
Deno.addSignalListener("SIGINT", () => Deno.exit(0));
