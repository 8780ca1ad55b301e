// WebSocket closing handshakes that a peer never completes (RFC 6455 §7.1.1, §5.5.1), a close
// without a status code, and upgrades on HTTP/1.0. Raw TCP peers stand in for what `ws` and
// browsers never do: a handshake answered, then silence.

import assert from "node:assert/strict";
import { ROOT, waitFor } from "../_harness.ts";
import { rawExchange, readFrom } from "./_raw_client.ts";
import { closed, connect, recordingLogger, startWsProxy, wsRoute, wsUpstream } from "./_ws.ts";

const enc = new TextEncoder();
const TLS = `${ROOT}/tests/fixtures/tls`;
const HANDSHAKE = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/** Reads `c` until the peer ends the connection; resolves with what came. */
async function untilEnd(c: Deno.Conn): Promise<number[]> {
  const got: number[] = [];
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await c.read(buf).catch(() => null);
    if (n === null) return got;
    got.push(...buf.subarray(0, n));
  }
}

/**
 * A client that sends the handshake to Prox at `port`, then answers nothing, not even a close:
 * what came until Prox ended the connection, which it must within 10 s (the test fails if the
 * client had to cut it).
 */
async function unansweringClient(port: number): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await c.write(enc.encode(`GET / HTTP/1.1\r\nHost: a\r\n${HANDSHAKE}\r\n`));
    let cut = false;
    const timer = setTimeout(() => (cut = true, c.close()), 10_000);
    const all = await untilEnd(c);
    clearTimeout(timer);
    assert.equal(cut, false, "Prox ended the connection");
    const text = new TextDecoder().decode(new Uint8Array(all));
    assert.match(text, /^HTTP\/1\.1 101 /);
    return text;
  } finally {
    try {
      c.close();
    } catch { /* closed by the timer */ }
  }
}

/**
 * A WebSocket upstream on raw TCP that accepts the handshake, then reads and never answers
 * anything: a close frame included (a hung app, or a peer a network partition cut off).
 */
function silentUpstream(tls = false) {
  const l = tls
    ? Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
      key: Deno.readTextFileSync(`${TLS}/key.pem`),
    })
    : Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  /** What each connection received, once the connection ended. */
  const ended: (number[] | null)[] = [];
  const reading: Promise<void>[] = [];
  const loop = (async () => {
    for await (const c of l) {
      conns.push(c);
      const head = await readFrom(c, /\r\n\r\n/);
      const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1] ?? "";
      const sha = await crypto.subtle.digest(
        "SHA-1",
        enc.encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
      );
      const accept = btoa(String.fromCharCode(...new Uint8Array(sha)));
      await c.write(enc.encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
      ));
      const i = ended.push(null) - 1;
      reading.push(untilEnd(c).then((got) => void (ended[i] = got)));
    }
  })();
  return {
    url: `${tls ? "wss" : "ws"}://127.0.0.1:${(l.addr as Deno.NetAddr).port}`,
    ended,
    async [Symbol.asyncDispose]() {
      l.close();
      await loop.catch(() => {});
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by Prox */ }
      }
      await Promise.all(reading);
    },
  };
}

Deno.test("an upstream that never answers the client's close is let go of", async () => {
  await using up = silentUpstream();
  await using prox = await startWsProxy(wsRoute(up.url));
  const ws = await connect(`${prox.ws}/`);
  ws.close(1000, "bye");
  assert.equal((await closed(ws)).code, 1000);
  // Prox sent its close frame and then waited for the answer for good: the upstream connection
  // stayed open, past Prox's own shutdown.
  const got = await waitFor(() => up.ended[0], { what: "Prox to end the upstream connection" });
  assert.equal(got[0], 0x88, "a close frame went first");
});

Deno.test("an upstream behind a custom CA (Deno's event-based client) that never answers the close is let go of", async () => {
  await using up = silentUpstream(true);
  await using prox = await startWsProxy(wsRoute(up.url, `tls: { ca_cert: "${TLS}/ca.pem" }`));
  const ws = await connect(`${prox.ws}/`);
  ws.close(1000, "bye");
  assert.equal((await closed(ws)).code, 1000);
  const got = await waitFor(() => up.ended[0], { what: "Prox to end the upstream connection" });
  assert.ok(got.length > 0, "a close frame went first (encrypted)");
});

Deno.test("a client that never answers the upstream's close is let go of, and logged", async () => {
  const logger = recordingLogger();
  await using up = await wsUpstream((ws) => ws.close(4000, "go away"));
  await using prox = await startWsProxy(wsRoute(up.url), { logger });
  // The 101, the close frame Prox relays, then (this client answering nothing) the end.
  const text = await unansweringClient(prox.port);
  assert.ok(text.includes("go away"), "the upstream's close was relayed");
  // The connection was never counted as ended (no log line, its in-flight count held).
  const line = await waitFor(() => logger.records.find((r) => r.msg === "WebSocket closed"));
  assert.equal(line.code, 4000);
  assert.equal(line.closedBy, "upstream");
});

Deno.test("an HTTP/1.0 request is not upgraded, on websocket and proxy routes", async () => {
  // Only Prox's own engine knows a request's version: PROX_H1_ENGINE=deno (the suite's second pass
  // in .ci/run) is lifted for this test.
  const forced = Deno.env.get("PROX_H1_ENGINE");
  Deno.env.delete("PROX_H1_ENGINE");
  await using _restore = {
    [Symbol.asyncDispose]: () => {
      if (forced !== undefined) Deno.env.set("PROX_H1_ENGINE", forced);
      return Promise.resolve();
    },
  };
  await using up = await wsUpstream();
  await using prox = await startWsProxy(`
routes:
  /ws: { type: websocket, target: "${up.url}" }
  /app: { type: proxy, target: "http://127.0.0.1:${up.port}" }
`);
  // RFC 6455 §4.1: the handshake is HTTP/1.1 or later; RFC 9110 §7.8: a server ignores an
  // Upgrade in an HTTP/1.0 request. Prox answered "HTTP/1.0 101" and relayed frames. A websocket
  // route refuses it; a proxy route passes it on as plain HTTP (which `ws` answers with 426).
  for (const [path, status] of [["/ws", 400], ["/app", 426]] as const) {
    const out = await rawExchange(
      prox.port,
      `GET ${path} HTTP/1.0\r\nHost: a\r\n${HANDSHAKE}\r\n`,
      /\r\n\r\n/,
      5_000,
    );
    assert.match(out, new RegExp(`^HTTP/1\\.[01] ${status} `), path);
  }
  assert.equal(up.requests.length, 0, "no upstream WebSocket was opened");
});

Deno.test("a close without a status code reaches the upstream without one", async () => {
  const upstreamSaw: { code: number; reason: string }[] = [];
  await using up = await wsUpstream((ws) => {
    ws.on("close", (code, reason) => upstreamSaw.push({ code, reason: reason.toString() }));
  });
  await using prox = await startWsProxy(wsRoute(up.url));
  const ws = await connect(`${prox.ws}/`);
  ws.close(); // an empty close frame: 1005 is reported, never sent (RFC 6455 §7.1.5, §7.4.1)
  assert.equal((await closed(ws)).code, 1005);
  // It reached the upstream as 1000, a normal closure the client never said.
  assert.deepEqual(await waitFor(() => upstreamSaw[0]), { code: 1005, reason: "" });
});

Deno.test("a client that never answers the 1014 close of an unreachable upstream is let go of", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await using prox = await startWsProxy(wsRoute(`ws://127.0.0.1:${port}`));
  // The 101, Prox's 1014 close, then (this client answering nothing) the end: Deno waited for
  // the answer for good, holding the connection until the process ended.
  const text = await unansweringClient(prox.port);
  assert.ok(text.includes("Bad gateway"), "the 1014 close went first");
});
