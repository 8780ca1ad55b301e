// limits.max_connections_per_ip and max_connections on HTTP/3: a client address past its limit
// has its QUIC connection closed with H3_EXCESSIVE_LOAD once the handshake has shown its address,
// counted in prox_connections_refused_total as on TCP; a reload changes the limits live; ngtcp2's
// gtlsclient sees the close code.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, waitFor } from "../_harness.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);

const config = (perIp: number) =>
  `listen_addr: "127.0.0.1:0"
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
protocols: { http3_enabled: true }
limits: { max_connections_per_ip: ${perIp} }
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: false }
routes:
  "/": { type: redirect, target: "https://example.com/" }
`;

Deno.test("HTTP/3: a client address past max_connections_per_ip is closed with H3_EXCESSIVE_LOAD", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/prox.yaml`;
  await Deno.writeTextFile(file, config(1));
  const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
  const open: { close(): void }[] = [];
  try {
    const port = server.h3!.port;
    const first = await connectH3({ hostname: "127.0.0.1", port, caCerts: [ca] });
    open.push(first);
    assert.equal((await first.request("/")).status, 307);
    // The second from 127.0.0.1: its handshake completes, then Prox closes it.
    const second = await connectH3({ hostname: "127.0.0.1", port, caCerts: [ca] });
    open.push(second);
    const info = await second.conn.closed;
    assert.equal(info.closeCode, 0x107);
    // The first is untouched, and its close frees the address's slot.
    assert.equal((await first.request("/")).status, 307);
    const metrics = async () =>
      await (await fetch(`http://127.0.0.1:${server.admin!.port}/metrics`)).text();
    assert.match(
      await metrics(),
      /prox_connections_refused_total\{limit="max_connections_per_ip"\} 1/,
    );
    first.close();
    const third = await waitFor(async () => {
      const c = await connectH3({ hostname: "127.0.0.1", port, caCerts: [ca] });
      open.push(c);
      try {
        return (await c.request("/")).status === 307 ? c : undefined;
      } catch {
        return undefined; // closed: the first's close had not reached Prox yet
      }
    }, { what: "a connection once the first has closed" });
    // A reload raises the limit for the connections that come next.
    await Deno.writeTextFile(file, config(2));
    assert.equal((await server.reload()).ok, true);
    const fourth = await connectH3({ hostname: "127.0.0.1", port, caCerts: [ca] });
    open.push(fourth);
    assert.equal((await fourth.request("/")).status, 307);
    assert.equal((await third.request("/")).status, 307);
  } finally {
    for (const c of open) c.close();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest(
  "HTTP/3: gtlsclient past max_connections_per_ip gets CONNECTION_CLOSE H3_EXCESSIVE_LOAD",
  ["gtlsclient"],
  async () => {
    const dir = await Deno.makeTempDir();
    const file = `${dir}/prox.yaml`;
    await Deno.writeTextFile(file, config(1));
    const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
    const first = await connectH3({ hostname: "127.0.0.1", port: server.h3!.port, caCerts: [ca] });
    try {
      const port = String(server.h3!.port);
      const gtls = async () => {
        const r = await run("gtlsclient", [
          ...["--exit-on-all-streams-close", "--timeout=5s", "127.0.0.1", port],
          `https://localhost:${port}/`,
        ], { timeoutMs: 30_000 });
        return r.stdout + r.stderr;
      };
      assert.equal((await first.request("/")).status, 307);
      // The address's one connection is held: gtlsclient's handshake completes, then Prox closes.
      const refused = await gtls();
      assert.match(
        refused,
        /CONNECTION_CLOSE\(0x1d\) error_code=\S*\(0x107\).*Too many connections/,
      );
      assert.doesNotMatch(refused, /\[:status: 307\]/);
      // Once the held one closes, the address may connect again.
      first.close();
      await waitFor(async () => /\[:status: 307\]/.test(await gtls()), {
        what: "gtlsclient served once the first connection closed",
      });
    } finally {
      first.close();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
