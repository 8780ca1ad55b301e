// 0-RTT replay: gtlsclient resumes a session and sends its request in 0-RTT through a UDP relay
// that records the client's Initial + 0-RTT datagram; replaying it later (as an attacker who
// captured it would) must not run the request again. Two layers hold: Deno's TLS stack did not
// accept the same early data twice (the test also passes with a 0.5-RTT accept), and Prox only
// processes requests on connections whose handshake completed (RFC 8470 §3).
import assert from "node:assert/strict";
import { interopTest, ROOT, run, waitFor } from "../_harness.ts";
import { startH3Listener } from "../../src/adapters/h3/mod.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;

/** True for a datagram starting with a QUIC long-header Initial or 0-RTT packet (RFC 9000 §17.2). */
function initialOrEarly(d: Uint8Array): boolean {
  return (d[0] & 0x80) !== 0 && ((d[0] & 0x30) === 0x00 || (d[0] & 0x30) === 0x10);
}

/** A one-client UDP relay to `port` that records the client's Initial and 0-RTT datagrams. */
function relay(port: number) {
  const front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const server: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port };
  let client: Deno.Addr | null = null;
  const firstFlight: Uint8Array[] = [];
  const pump = async (
    from: Deno.DatagramConn,
    onPacket: (d: Uint8Array, a: Deno.Addr) => Promise<void>,
  ) => {
    try {
      for (;;) {
        const [d, a] = await from.receive();
        await onPacket(d, a);
      }
    } catch { /* closed */ }
  };
  const done = Promise.all([
    pump(front, async (d, a) => {
      client = a;
      if (initialOrEarly(d)) firstFlight.push(d.slice());
      await back.send(d, server);
    }),
    pump(back, async (d) => {
      if (client) await front.send(d, client);
    }),
  ]);
  return {
    port: (front.addr as Deno.NetAddr).port,
    firstFlight,
    async close() {
      front.close();
      back.close();
      await done;
    },
  };
}

/** Resolves with `p`, or with `fallback` after `ms`. */
async function within<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<F>((ok) => timer = setTimeout(() => ok(fallback), ms));
  try {
    return await Promise.race([p.catch(() => fallback), t]);
  } finally {
    clearTimeout(timer);
  }
}

interopTest("a replayed 0-RTT flight is never served", ["gtlsclient"], async () => {
  const hits = new Map<string, number>();
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(`${TLS}/cert.pem`),
    key: await Deno.readTextFile(`${TLS}/key.pem`),
    logger: silentLogger,
    handler: (req) => {
      const path = new URL(req.url).pathname;
      hits.set(path, (hits.get(path) ?? 0) + 1);
      return Promise.resolve(new Response(`served ${path}`));
    },
  });
  const dir = await Deno.makeTempDir();
  const r = relay(l.port);
  try {
    const gtls = (port: number, path: string) =>
      run("gtlsclient", [
        ...["--no-quic-dump", "--exit-on-all-streams-close", "--timeout=5s", "-m", "POST"],
        ...[`--session-file=${dir}/session`, `--tp-file=${dir}/tp`],
        ...["127.0.0.1", String(port), `https://localhost:${l.port}${path}`],
      ], { timeoutMs: 30_000 });
    await gtls(l.port, "/first"); // gets a session ticket
    const second = await gtls(r.port, "/transfer");
    assert.match(second.stdout + second.stderr, /0RTT STREAM\(0x0b\) id=0x0 fin=1/);
    assert.match(second.stdout + second.stderr, /\[:status: 200\]/);
    assert.equal(hits.get("/transfer"), 1);
    assert.ok(r.firstFlight.length > 0);

    // The attacker replays the captured first flight (Initial + 0-RTT) from a new address.
    const attacker = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      // Replay until the server treats it as a new connection (once the original one is gone).
      const reply = attacker.receive().then(() => "answered", () => "closed");
      let answer = "silent";
      for (let i = 0; i < 10 && answer === "silent"; i++) {
        for (const d of r.firstFlight) {
          await attacker.send(d, { transport: "udp", hostname: "127.0.0.1", port: l.port });
        }
        answer = await within(reply, 500, "silent");
      }
      assert.equal(answer, "answered", "the server took the replayed flight as a new connection");
      // A 0.5-RTT server would run the replayed request now; give it the chance to misbehave.
      await within(
        waitFor(() => (hits.get("/transfer") ?? 0) > 1, { timeoutMs: 1000 }),
        1500,
        null,
      );
      // Then a fresh, legitimate request proves the server processed everything queued before it.
      const third = await gtls(l.port, "/after");
      assert.match(third.stdout + third.stderr, /\[:status: 200\]/);
      await waitFor(() => hits.get("/after") === 1, { what: "request after the replay" });
      assert.equal(
        hits.get("/transfer"),
        1,
        `replayed 0-RTT request was served (server ${answer})`,
      );
    } finally {
      attacker.close();
    }
  } finally {
    await r.close();
    await l.shutdown(0);
    await Deno.remove(dir, { recursive: true });
  }
});
