// HTTP/3 connections outlive a slow response: QUIC's idle timeout counts packets, and a client
// that only waits sends none, so the server keeps the connection alive while it owes a response.
import assert from "node:assert/strict";
import { ROOT, waitFor } from "../_harness.ts";
import { startH3Listener } from "../../src/adapters/h3/mod.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
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
