// max_connections counts QUIC handshakes in progress: Initials that never complete (a flood from
// spoofed sources) each hold ~15 KB until the handshake times out, so they must not pile up
// beyond the limit; their slots come back once they time out.
import assert from "node:assert/strict";
import { ROOT, waitFor } from "../_harness.ts";
import { startH3Listener } from "../../src/adapters/h3/mod.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const cert = Deno.readTextFileSync(`${TLS}/cert.pem`);
const key = Deno.readTextFileSync(`${TLS}/key.pem`);
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);

/**
 * Forwards each client's first datagram (its Initial) to `port` and nothing else, answers
 * included: handshakes through it never complete, and the server's give up after its idle timeout.
 */
function blackHole(port: number) {
  const front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let forwarded = 0;
  const seen = new Set<number>();
  const pumps = Promise.all([
    (async () => {
      for (;;) {
        const [d, from] = await front.receive();
        const source = (from as Deno.NetAddr).port;
        if (seen.has(source)) continue;
        seen.add(source);
        forwarded++;
        await back.send(d, { transport: "udp", hostname: "127.0.0.1", port });
      }
    })().catch(() => {}),
    (async () => {
      for (;;) await back.receive();
    })().catch(() => {}),
  ]);
  return {
    port: (front.addr as Deno.NetAddr).port,
    forwarded: () => forwarded,
    async close() {
      front.close();
      back.close();
      await pumps;
    },
  };
}

Deno.test("startH3Listener counts unfinished handshakes against max_connections until they time out", async () => {
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    logger: silentLogger,
    handler: () => Promise.resolve(new Response("ok")),
    options: { max_connections: 2, max_idle_timeout: 500 },
  });
  const hole = blackHole(l.port);
  try {
    // Own endpoints (one source port each), closed at the end to end the clients' attempts.
    const clients = [0, 1].map(() => new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 }));
    const stuck = clients.map((endpoint) =>
      Deno.connectQuic<false>({
        endpoint,
        hostname: "127.0.0.1",
        port: hole.port,
        serverName: "localhost",
        caCerts: [ca],
        alpnProtocols: ["h3"],
        maxIdleTimeout: 300,
      }).then((c) => c.close(), () => {})
    );
    await waitFor(() => hole.forwarded() >= 2, { what: "two Initials forwarded" });
    // Both slots are taken by handshakes that will never finish: a third client is refused.
    await assert.rejects(connectH3({ hostname: "127.0.0.1", port: l.port, caCerts: [ca] }));
    // Once they have timed out on the server, the slots are free again.
    const c = await waitFor(
      () => connectH3({ hostname: "127.0.0.1", port: l.port, caCerts: [ca] }),
      { timeoutMs: 10_000, what: "a connection after the stuck handshakes timed out" },
    );
    try {
      assert.equal((await c.request("/")).status, 200);
    } finally {
      await c[Symbol.asyncDispose]();
      for (const e of clients) e.close();
      await Promise.all(stuck);
    }
  } finally {
    await hole.close();
    await l.shutdown(0);
  }
});
