// Prox's own HTTP/1.1 engine reading a request body ahead (Conn.#readAhead) while nothing reads it
// yet (a queued upstream connection, a signal asked for first), and its header timeout.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
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

function pattern(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + (i >> 8)) & 0xff;
  return out;
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

/** Resolves after `ms` (the pace of a client that trickles its heads: the time is the test). */
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("http1_header_timeout counts from a head's own first bytes, not from the head before it on the connection", async () => {
  await using up = await recordingUpstream();
  await using prox = await startProxy(`
protocols: { http1_header_timeout: 5s }
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
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
  await using prox = await startProxy(`
protocols: { http1_header_timeout: 1s }
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
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
