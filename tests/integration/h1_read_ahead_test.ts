// Prox's own HTTP/1.1 engine reading a request body ahead (Conn.#readAhead) while nothing reads it
// yet (a queued upstream connection, a signal asked for first), and its header timeout.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { heldUpstream, holdFirst, pattern, queuedProxy, queuedUploadHead } from "./_held.ts";
import { readFrom } from "./_raw_client.ts";

const enc = new TextEncoder();

onProxEngines();

/** An upstream that records each request's path and the SHA-256 of its body. */
async function recordingUpstream() {
  const got: { path: string; sha: string; len: number }[] = [];
  const server = await startUpstream(async (req) => {
    const body = new Uint8Array(await req.arrayBuffer());
    const sha = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
    got.push({ path: new URL(req.url).pathname, sha: hex(sha), len: body.length });
    return new Response("ok " + new URL(req.url).pathname);
  });
  return Object.assign(server, { got });
}

/** Closes `c` unless a timer already did. */
function shut(c: Deno.Conn): void {
  try {
    c.close();
  } catch { /* closed */ }
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function sha(b: Uint8Array<ArrayBuffer>): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", b)));
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, o), o += p.length;
  return out;
}

Deno.test("a chunked body whose end came with its head, read ahead while forward_auth asks, is answered, and the request pipelined behind it too", async () => {
  await using up = await recordingUpstream();
  await using auth = await startUpstream(() => new Response(null, { status: 200 }));
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    forward_auth: { url: "${auth.url}/check" }
`);
  const body = pattern(3000);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  // (A body read held up behind the read ahead waits for bytes the client never sends.)
  const timer = setTimeout(() => c.close(), 5000);
  try {
    await c.write(concat(
      enc.encode("POST /one HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
      enc.encode(body.length.toString(16) + "\r\n"),
      body,
      enc.encode("\r\n0\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n"),
    ));
    const out = await readFrom(c, /ok \/one[^]*ok \/two/);
    assert.match(out, /^HTTP\/1\.1 200 [^]*ok \/one[^]*HTTP\/1\.1 200 [^]*ok \/two$/);
    assert.deepEqual(up.got, [
      { path: "/one", sha: await sha(body), len: body.length },
      { path: "/two", sha: await sha(new Uint8Array(0)), len: 0 },
    ]);
  } finally {
    clearTimeout(timer);
    shut(c);
  }
});

/** Prox with `http1_header_timeout: timeout` and one proxy route to `up`. */
function headerTimeoutProxy(up: string, timeout: string) {
  return startProxy(`
protocols: { http1_header_timeout: ${timeout} }
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up}" } }
`);
}

/** Resolves after `ms` (the pace of a client that trickles its heads: the time is the test). */
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("http1_header_timeout counts from a head's own first bytes, not from the head before it on the connection", async () => {
  await using up = await recordingUpstream();
  await using prox = await headerTimeoutProxy(up.url, "5s");
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    // A first head that takes 3 s (within the limit): the idle sweep (once a second) saw it.
    await c.write(enc.encode("GET /one HTTP/1.1\r\n"));
    await pause(3000);
    await c.write(enc.encode("Host: a\r\n\r\n"));
    assert.match(await readFrom(c, /ok \/one/), /^HTTP\/1\.1 200 /);
    // The next begins at once and takes 4.5 s: within its own 5 s, past 5 s from the first's start
    // (and past 6 s, whichever tick stamped the first).
    await c.write(enc.encode("GET /two HTTP/1.1\r\n"));
    await pause(4500);
    await c.write(enc.encode("Host: a\r\n\r\n"));
    assert.match(await readFrom(c, /ok \/two/), /^HTTP\/1\.1 200 [^]*ok \/two$/);
  } finally {
    shut(c);
  }
});

Deno.test("http1_header_timeout closes a connection whose head does not come whole in time; an idle one stays", async () => {
  await using up = await recordingUpstream();
  await using prox = await headerTimeoutProxy(up.url, "1s");
  const idle = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  const slow = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await idle.write(enc.encode("GET /one HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert.match(await readFrom(idle, /ok \/one/), /^HTTP\/1\.1 200 /);
    await slow.write(enc.encode("GET /slow HTTP/1.1\r\n"));
    // Closed by the server: the read ends with nothing.
    assert.equal(await readFrom(slow), "");
    // The idle keep-alive connection, open as long, still serves.
    await idle.write(enc.encode("GET /two HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert.match(await readFrom(idle, /ok \/two/), /^HTTP\/1\.1 200 [^]*ok \/two$/);
  } finally {
    shut(idle);
    shut(slow);
  }
});

Deno.test("an upload read ahead while queued reaches the upstream byte for byte, a request pipelined behind it is served, and the connection then waits with its usual buffer", async () => {
  await using up = await heldUpstream();
  await using prox = await queuedProxy(up.url);
  const { first } = await holdFirst(up, prox);
  const body = pattern(200_000);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(queuedUploadHead(body.length));
    await c.write(body.subarray(0, 100));
    await waitFor(async () => (await prox.pool()).waiting === 1, { what: "the upload queued" });
    // Small pieces while it waits (each a read ahead), the rest and the next request once it goes.
    let off = 100;
    for (; off < 30_000; off += 1000) await c.write(body.subarray(off, off + 1000));
    up.release();
    assert.equal(await (await first).text(), "late");
    await waitFor(() => up.arrived.length === 2, { what: "the upload at the upstream" });
    const rest = concat(body.subarray(off), enc.encode("GET /next HTTP/1.1\r\nHost: a\r\n\r\n"));
    for (let o = 0; o < rest.length;) o += await c.write(rest.subarray(o));
    await waitFor(() => up.bodies.length === 2, { what: "the upload's body read upstream" });
    up.release();
    await waitFor(() => up.arrived.length === 3, { what: "the pipelined request upstream" });
    up.release();
    const out = await readFrom(c, /late[^]*late/);
    assert.match(out, /^HTTP\/1\.1 200 [^]*late[^]*HTTP\/1\.1 200 [^]*late$/);
    assert.equal(await sha(up.bodies[1].slice()), await sha(body));
    assert.deepEqual(up.arrived, ["/first", "/queued", "/next"]);
    assert.equal(up.bodies[2].length, 0);
    // Its 64 KiB of read ahead are not kept: it waits with what its requests need (8 KiB at most),
    // beside fetch's keep-alive connection of one GET (2 KiB).
    const engine = async () => {
      const res = await fetch(`http://127.0.0.1:${prox.server.admin!.port}/status`);
      const s = await res.json();
      return s.listeners.find((l: { name: string }) => l.name === "main").http1Engine;
    };
    const want = { connections: 2, readBufferBytes: 2048 + 8192 };
    const got = await waitFor(async () => {
      const e = await engine();
      return e.connections === want.connections && e.readBufferBytes === want.readBufferBytes && e;
    }, { timeoutMs: 5000, what: JSON.stringify(want) });
    assert.equal(got.readBufferBytes, want.readBufferBytes);
  } finally {
    shut(c);
  }
});

Deno.test("an upload read ahead that timed out in the queue (503): the request pipelined behind its body is served", async () => {
  await using up = await heldUpstream();
  await using prox = await startProxy(`
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 8, queue_timeout: 1s }
routes: { "/": { type: proxy, target: "${up.url}", timeouts: { response_header: 60s } } }
`);
  const { first } = await holdFirst(up, prox);
  const body = pattern(100_000);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(queuedUploadHead(body.length));
    await c.write(body.subarray(0, 5000));
    const refused = await readFrom(c, /\r\n\r\n[^]*/);
    assert.match(refused, /^HTTP\/1\.1 503 /);
    const rest = concat(body.subarray(5000), enc.encode("GET /next HTTP/1.1\r\nHost: a\r\n\r\n"));
    for (let o = 0; o < rest.length;) o += await c.write(rest.subarray(o));
    up.release();
    assert.equal(await (await first).text(), "late");
    await waitFor(() => up.arrived.length === 2, { what: "the pipelined request upstream" });
    up.release();
    const out = await readFrom(c, /late/);
    assert.match(out, /HTTP\/1\.1 200 [^]*late$/);
    assert.deepEqual(up.arrived, ["/first", "/next"]);
  } finally {
    shut(c);
  }
});

Deno.test("an upload sent in pieces while queued whose client then leaves leaves the queue", async () => {
  await using up = await heldUpstream();
  await using prox = await queuedProxy(up.url);
  const { first } = await holdFirst(up, prox);
  const body = pattern(200_000);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(queuedUploadHead(body.length));
    await waitFor(async () => (await prox.pool()).waiting === 1, { what: "the upload queued" });
    for (let off = 0; off < 20_000; off += 500) await c.write(body.subarray(off, off + 500));
  } finally {
    c.close();
  }
  await waitFor(async () => (await prox.pool()).waiting === 0, { what: "the queue to empty" });
  up.release();
  assert.equal(await (await first).text(), "late");
  assert.deepEqual(up.arrived, ["/first"]);
});

for (const chunked of [false, true]) {
  Deno.test(`a ${chunked ? "chunked" : "Content-Length"} body read ahead while forward_auth asks reaches the upstream byte for byte, the request pipelined behind it stays for its turn`, async () => {
    await using up = await recordingUpstream();
    let asked!: () => void;
    const checking = new Promise<void>((r) => asked = r);
    let answer!: () => void;
    const answered = new Promise<void>((r) => answer = r);
    await using auth = await startUpstream(async () => {
      asked();
      await answered;
      return new Response(null, { status: 200 });
    });
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    forward_auth: { url: "${auth.url}/check" }
`);
    const body = pattern(3000);
    const framed = chunked
      ? concat(
        enc.encode("400\r\n"),
        body.subarray(0, 1024),
        enc.encode("\r\n" + (body.length - 1024).toString(16) + "\r\n"),
        body.subarray(1024),
        enc.encode("\r\n0\r\n\r\n"),
      )
      : body;
    const framing = chunked ? "Transfer-Encoding: chunked" : `Content-Length: ${body.length}`;
    const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    const timer = setTimeout(() => c.close(), 5000);
    try {
      await c.write(concat(
        enc.encode(`POST /one HTTP/1.1\r\nHost: a\r\n${framing}\r\n\r\n`),
        framed.subarray(0, 1000),
      ));
      // The rest, and a request behind it, while the auth service holds the check (the engine
      // reads ahead meanwhile).
      await checking;
      await c.write(concat(
        framed.subarray(1000),
        enc.encode("POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"),
      ));
      answer();
      const out = await readFrom(c, /ok \/one[^]*ok \/two/);
      assert.match(out, /^HTTP\/1\.1 200 [^]*ok \/one[^]*HTTP\/1\.1 200 [^]*ok \/two$/);
      assert.deepEqual(up.got, [
        { path: "/one", sha: await sha(body), len: body.length },
        { path: "/two", sha: await sha(enc.encode("hello")), len: 5 },
      ]);
    } finally {
      clearTimeout(timer);
      shut(c);
    }
  });
}

Deno.test("http1_header_timeout does not cut a head pipelined behind a request the engine is still serving", async () => {
  await using up = await heldUpstream();
  await using prox = await headerTimeoutProxy(up.url, "1s");
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    // The second head's start comes with the first request, which the upstream holds 2.5 s:
    // the engine is busy, the client is not late.
    await c.write(enc.encode("GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\n"));
    await waitFor(() => up.arrived.length === 1, { what: "the first request at the upstream" });
    await pause(2500);
    up.release();
    assert.match(await readFrom(c, /late/), /^HTTP\/1\.1 200 /);
    await c.write(enc.encode("Host: a\r\n\r\n"));
    await waitFor(() => up.arrived.length === 2, { what: "the second request at the upstream" });
    up.release();
    assert.match(await readFrom(c, /late/), /^HTTP\/1\.1 200 [^]*late$/);
  } finally {
    shut(c);
  }
});
