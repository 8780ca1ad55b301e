// An HTTP/2 client that resets its upload (RST_STREAM CANCEL, what curl and browsers send when
// they abort) must not reach the upstream as a complete body: hyper ends such a body as if the
// client had sent END_STREAM, so Prox confirms the end first (src/adapters/http_serve.ts).
import assert from "node:assert/strict";
import { waitFor } from "../_harness.ts";
import { memoryLogger } from "./_acme.ts";
import { startProxy } from "./_proxy.ts";

const enc = new TextEncoder();

/** An HTTP/2 frame (RFC 9113 §4.1). */
function frame(type: number, flags: number, stream: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + payload.byteLength);
  const v = new DataView(out.buffer);
  v.setUint32(0, payload.byteLength << 8);
  out[3] = type;
  out[4] = flags;
  v.setUint32(5, stream);
  out.set(payload, 9);
  return out;
}

/** HPACK: a literal field without indexing, its name from the static table (RFC 7541 §6.2.2). */
function literal(index: number, value: string): number[] {
  return [index, value.length, ...enc.encode(value)];
}

/**
 * Opens an h2c connection (preface and SETTINGS exchanged) and sends a POST head, with a
 * content-length when `length` is given.
 */
async function h2cPost(port: number, length?: number): Promise<Deno.TcpConn> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  await c.write(enc.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
  await c.write(frame(4, 0, 0, new Uint8Array())); // SETTINGS
  await c.read(new Uint8Array(65536)); // the server's SETTINGS
  await c.write(frame(4, 1, 0, new Uint8Array())); // SETTINGS ACK
  // :method POST (static 3), :scheme http (6), :path and :authority as literals.
  const head = [0x83, 0x86, ...literal(4, "/upload"), ...literal(1, "a.test")];
  // content-length: static index 28, past the 4-bit prefix (15, then 13; RFC 7541 §5.1).
  if (length !== undefined) head.push(0x0f, ...literal(13, String(length)));
  await c.write(frame(1, 4, 1, new Uint8Array(head))); // HEADERS, END_HEADERS
  return c;
}

/**
 * Opens an h2c connection, sends a POST head (with content-length `declared` if given), `size`
 * bytes of body in DATA frames without END_STREAM, then (once `beforeReset` settles)
 * RST_STREAM(CANCEL), or an empty DATA frame with END_STREAM for "end"; the connection stays
 * open a moment.
 */
async function upload(
  port: number,
  size: number,
  beforeReset: (() => Promise<unknown>) | "end",
  declared?: number,
): Promise<void> {
  const c = await h2cPost(port, declared);
  const buf = new Uint8Array(65536);
  try {
    for (let left = size; left > 0; left -= 16000) {
      await c.write(frame(0, 0, 1, new Uint8Array(Math.min(left, 16000)).fill(122))); // 'z'
    }
    if (beforeReset === "end") await c.write(frame(0, 1, 1, new Uint8Array())); // END_STREAM
    else {
      await beforeReset();
      await c.write(frame(3, 0, 1, new Uint8Array([0, 0, 0, 8]))); // RST_STREAM CANCEL
    }
    // Whatever the server sends until it has seen the reset (WINDOW_UPDATE, maybe a GOAWAY).
    const until = Date.now() + 300;
    c.setNoDelay(true);
    while (Date.now() < until) {
      const t = setTimeout(() => c.close(), until - Date.now());
      const n = await c.read(buf).catch(() => null);
      clearTimeout(t);
      if (n === null) break;
    }
  } finally {
    try {
      c.close();
    } catch { /* closed by the timer */ }
  }
}

/** A raw HTTP/1.1 upstream that records each request's bytes and whether its body ended. */
function recordingUpstream() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: { text: string; ended: boolean; closed: boolean }[] = [];
  const conns = new Set<Deno.Conn>();
  const serve = async (c: Deno.Conn) => {
    const rec = { text: "", ended: false, closed: false };
    seen.push(rec);
    const buf = new Uint8Array(65536);
    const dec = new TextDecoder();
    try {
      for (;;) {
        const n = await c.read(buf);
        if (n === null) break;
        rec.text += dec.decode(buf.subarray(0, n));
        const cl = /content-length: (\d+)/i.exec(rec.text);
        const body = rec.text.slice(rec.text.indexOf("\r\n\r\n") + 4);
        if (
          rec.text.includes("\r\n\r\n") &&
          (cl ? body.length >= Number(cl[1]) : body.endsWith("0\r\n\r\n"))
        ) {
          rec.ended = true;
          await c.write(
            enc.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"),
          );
        }
      }
    } catch { /* reset */ }
    rec.closed = true;
    if (conns.delete(c)) c.close();
  };
  const accepting = (async () => {
    for await (const c of listener) {
      conns.add(c);
      serve(c);
    }
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    seen,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting.catch(() => {});
      for (const c of conns) c.close();
      conns.clear();
    },
  };
}

for (const size of [1000, 200_000]) {
  Deno.test(`an HTTP/2 upload of unknown length reset by the client after ${size} bytes never ends cleanly upstream`, async () => {
    await using up = recordingUpstream();
    const logger = memoryLogger();
    await using prox = await startProxy(
      `
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
      { logger },
    );
    // A large body streams: the reset comes once the upstream has all of it (so that no abort
    // can overtake the body's end); a small one is read whole before an upstream is chosen.
    await upload(
      prox.port,
      size,
      () =>
        size > 65536
          ? waitFor(() => up.seen.some((r) => r.text.length > size), { what: "the body upstream" })
          : Promise.resolve(),
    );
    const access = () => logger.lines.find((l) => l.includes('"path":"/upload"'));
    await waitFor(() => access() !== undefined, { what: "the access line" });
    // Small bodies were read whole and sent with a content-length, large ones got the last
    // chunk: either way the upstream took 1000 or 200,000 bytes for the whole upload.
    assert.deepEqual(up.seen.filter((r) => r.ended).map((r) => r.text.length), []);
    assert.match(access()!, /"status":499/);
    await waitFor(() => up.seen.every((r) => r.closed), { what: "the upstream connection closed" });
  });
}

for (const size of [1000, 200_000]) {
  Deno.test(`an HTTP/2 upload with a content-length reset by the client after ${size} bytes is logged 499, not 400`, async () => {
    await using up = recordingUpstream();
    const logger = memoryLogger();
    await using prox = await startProxy(
      `
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
      { logger },
    );
    // hyper ends the reset body as if complete, short of its length: no malformed request, a
    // client that left (the same upload cut over HTTP/1.1 is 499 too).
    await upload(
      prox.port,
      size,
      () =>
        size > 65536
          ? waitFor(() => up.seen.some((r) => r.text.length > size), { what: "the body upstream" })
          : Promise.resolve(),
      2 * size,
    );
    const access = () => logger.lines.find((l) => l.includes('"path":"/upload"'));
    await waitFor(() => access() !== undefined, { what: "the access line" });
    assert.match(access()!, /"status":499/);
    assert.deepEqual(logger.lines.filter((l) => l.startsWith("warn")), []);
    assert.deepEqual(up.seen.filter((r) => r.ended).map((r) => r.text.length), []);
    await waitFor(() => up.seen.every((r) => r.closed), { what: "the upstream connection closed" });
  });
}

Deno.test("an HTTP/2 upload of unknown length that ends goes upstream whole", async () => {
  await using up = recordingUpstream();
  const logger = memoryLogger();
  await using prox = await startProxy(
    `
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
    { logger },
  );
  for (const size of [1000, 200_000]) {
    await upload(prox.port, size, "end");
    const zs = (t: string) => t.length - t.replaceAll("z", "").length;
    await waitFor(() => up.seen.some((r) => r.ended && zs(r.text) === size), {
      what: `the ${size} bytes upstream`,
    });
  }
  const access = () => logger.lines.filter((l) => l.includes('"path":"/upload"'));
  await waitFor(() => access().length === 2, { what: "two access lines" });
  for (const l of access()) assert.match(l, /"status":200/);
});

Deno.test("shutdown while an HTTP/2 client uploads a body of unknown length: it completes first", async () => {
  await using up = recordingUpstream();
  const logger = memoryLogger();
  const prox = await startProxy(
    `
shutdown_timeout: 10s
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
    { logger },
  );
  const c = await h2cPost(prox.port);
  // Answers PINGs, as every client does: hyper's graceful shutdown waits for one (GOAWAY, PING,
  // then the final GOAWAY) before it goes on; and GOAWAY with its own, as Node's client does.
  const answering = (async () => {
    const buf = new Uint8Array(1 << 20);
    let have = new Uint8Array(0);
    let goneAway = false;
    for (;;) {
      const n = await c.read(buf).catch(() => null);
      if (n === null) return;
      const all = new Uint8Array(have.byteLength + n);
      all.set(have);
      all.set(buf.subarray(0, n), have.byteLength);
      let at = 0;
      while (all.byteLength - at >= 9) {
        const len = (all[at] << 16) | (all[at + 1] << 8) | all[at + 2];
        if (all.byteLength - at < 9 + len) break;
        if (all[at + 3] === 6 && (all[at + 4] & 1) === 0) {
          await c.write(frame(6, 1, 0, all.slice(at + 9, at + 9 + len))).catch(() => {});
        } else if (all[at + 3] === 7 && !goneAway) {
          // As Node's client: a GOAWAY of its own (no pushed streams), upon which hyper closes
          // the connection once no stream it knows of is open.
          goneAway = true;
          await c.write(frame(7, 0, 0, new Uint8Array(8))).catch(() => {});
        }
        at += 9 + len;
      }
      have = all.slice(at);
    }
  })();
  let stopping: Promise<void> | undefined;
  try {
    // 32 KiB (still read for a retry before any upstream is chosen), shutdown, then the rest.
    for (let i = 0; i < 2; i++) await c.write(frame(0, 0, 1, new Uint8Array(16384).fill(122)));
    await new Promise((r) => setTimeout(r, 50));
    stopping = prox.server.shutdown();
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 50));
      await c.write(frame(0, 0, 1, new Uint8Array(16384).fill(122)));
    }
    await c.write(frame(0, 1, 1, new Uint8Array())); // END_STREAM
    const zs = (t: string) => t.length - t.replaceAll("z", "").length;
    // Was cut at once (RST_STREAM to the client, 499): such a body was not waited for.
    await waitFor(() => up.seen.some((r) => r.ended && zs(r.text) === 10 * 16384), {
      what: "the whole body upstream",
    });
    const access = () => logger.lines.find((l) => l.includes('"path":"/upload"'));
    await waitFor(access, { what: "the access line" });
    assert.match(access()!, /"status":200/);
  } finally {
    c.close();
    await answering;
    await (stopping ?? prox.server.shutdown());
  }
});
