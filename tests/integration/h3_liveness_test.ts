// HTTP/3 connection lifetime: a connection outlives a slow response (QUIC's idle timeout counts
// packets, and a client that only waits sends none, so the server keeps it alive while it owes a
// response); a client that leaves mid-response is not reported as a server failure.
import assert from "node:assert/strict";
import { ROOT, waitFor } from "../_harness.ts";
import { startH3Listener } from "../../src/adapters/h3/mod.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { encodeFrame, FrameType } from "../../src/adapters/h3/frames.ts";
import { encodeFieldSection } from "../../src/adapters/h3/qpack.ts";
import { ProxyError } from "../../src/domain/errors.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const cert = Deno.readTextFileSync(`${TLS}/cert.pem`);
const key = Deno.readTextFileSync(`${TLS}/key.pem`);
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);

Deno.test("startH3Listener keeps a connection alive past max_idle_timeout while a response is pending, then lets it idle out", async () => {
  const IDLE = 600;
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    logger: silentLogger,
    // The handler answers after 2.5 idle timeouts, like a slow upstream.
    handler: () => new Promise((ok) => setTimeout(() => ok(new Response("late")), IDLE * 2.5)),
    options: { max_idle_timeout: IDLE },
  });
  try {
    await using c = await connectH3({ hostname: "127.0.0.1", port: l.port, caCerts: [ca] });
    const res = await c.request("/slow");
    assert.equal(res.status, 200);
    assert.equal(new TextDecoder().decode(res.body), "late");
    // With nothing in flight the keep-alive stops and the idle timeout closes the connection.
    let closed = false;
    c.conn.closed.then(() => closed = true, () => closed = true);
    await waitFor(() => closed, { timeoutMs: IDLE * 8, what: "the idle connection to close" });
  } finally {
    await l.shutdown(0);
  }
});

Deno.test("startH3Listener aborts a request whose client cancelled it (STOP_SENDING) while its answer is pending", async () => {
  // A browser leaving a long poll: its GET stream has ended, so only STOP_SENDING
  // (H3_REQUEST_CANCELLED) says so, which Deno reports on a write alone. A slow upstream must
  // not be waited for on behalf of a client that is gone (over TCP the closed socket tells).
  const IDLE = 600;
  const called = Promise.withResolvers<void>();
  const aborted = Promise.withResolvers<void>();
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    logger: silentLogger,
    handler: (req) => {
      called.resolve();
      return new Promise((ok) => {
        const late = setTimeout(() => ok(new Response("late")), IDLE * 10);
        req.signal.addEventListener("abort", () => {
          clearTimeout(late);
          aborted.resolve();
          ok(new Response("gone"));
        });
      });
    },
    options: { max_idle_timeout: IDLE },
  });
  try {
    await using c = await connectH3({ hostname: "127.0.0.1", port: l.port, caCerts: [ca] });
    const s = await c.conn.createBidirectionalStream();
    const w = s.writable.getWriter();
    await w.write(
      encodeFrame(
        FrameType.HEADERS,
        encodeFieldSection([
          [":method", "GET"],
          [":scheme", "https"],
          [":authority", "localhost"],
          [":path", "/poll"],
        ]),
      ),
    );
    await w.close();
    await called.promise;
    await s.readable.cancel(); // STOP_SENDING
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      aborted.promise.then(() => "aborted"),
      new Promise<string>((ok) => timer = setTimeout(() => ok("still waiting"), IDLE * 5)),
    ]);
    clearTimeout(timer);
    assert.equal(outcome, "aborted");
  } finally {
    await l.shutdown(0);
  }
});

Deno.test("startH3Listener logs no warning when the client closes its connection mid-response", async () => {
  const warnings: string[] = [];
  let settled = false;
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    logger: { ...silentLogger, warn: (msg: string) => void warnings.push(msg) },
    // Like the pipeline: an endless body that fails with client_gone once the request aborts.
    handler: (req, info) => {
      info.completed?.then(() => settled = true, () => settled = true);
      return Promise.resolve(
        new Response(
          new ReadableStream<Uint8Array>({
            async pull(c) {
              await new Promise((ok) => setTimeout(ok, 5));
              if (req.signal.aborted) c.error(new ProxyError("client_gone", "Client went away"));
              else c.enqueue(new Uint8Array(16384));
            },
          }),
        ),
      );
    },
  });
  try {
    const conn = await Deno.connectQuic({
      hostname: "127.0.0.1",
      port: l.port,
      serverName: "localhost",
      caCerts: [ca],
      alpnProtocols: ["h3"],
    });
    const s = await conn.createBidirectionalStream();
    const w = s.writable.getWriter();
    await w.write(encodeFrame(
      FrameType.HEADERS,
      encodeFieldSection([[":method", "GET"], [":scheme", "https"], [":authority", "localhost"], [
        ":path",
        "/",
      ]]),
    ));
    await w.close();
    const r = s.readable.getReader();
    for (let got = 0; got < 50_000;) got += (await r.read()).value?.length ?? 0;
    conn.close();
    await waitFor(() => settled, { what: "the response to settle" });
    assert.deepEqual(warnings, []);
  } finally {
    await l.shutdown(0);
  }
});

Deno.test("H3Listener.shutdown lets a slow client take the whole response before closing", async () => {
  const SIZE = 512 * 1024;
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    logger: silentLogger,
    handler: () =>
      Promise.resolve(
        new Response(new Uint8Array(SIZE), { headers: { "content-length": String(SIZE) } }),
      ),
  });
  const conn = await Deno.connectQuic({
    hostname: "127.0.0.1",
    port: l.port,
    serverName: "localhost",
    caCerts: [ca],
    alpnProtocols: ["h3"],
  });
  let down: Promise<void> | undefined;
  try {
    const s = await conn.createBidirectionalStream();
    const w = s.writable.getWriter();
    await w.write(encodeFrame(
      FrameType.HEADERS,
      encodeFieldSection([[":method", "GET"], [":scheme", "https"], [":authority", "localhost"], [
        ":path",
        "/",
      ]]),
    ));
    await w.close();
    // The server has written the whole response (it fits the flow-control window) when the
    // shutdown starts; this client takes about a second to read it, longer than the old linger.
    let got = 0;
    for await (const chunk of s.readable) {
      got += chunk.length;
      down ??= l.shutdown(10_000);
      await new Promise((ok) => setTimeout(ok, 200));
    }
    assert.ok(got > SIZE, `got ${got} bytes`); // the body and its frame headers
  } finally {
    conn.close(); // as clients do once idle after GOAWAY: the shutdown ends here, not at 10 s
    await (down ?? l.shutdown(0));
  }
});
