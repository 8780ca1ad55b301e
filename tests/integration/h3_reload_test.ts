// HTTP/3 turned off and on again by reloads: Deno frees a UDP port only when its endpoint is
// garbage-collected, so "off" keeps the port bound (refusing connections) and "on" resumes it.
import assert from "node:assert/strict";
import { ROOT } from "../_harness.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);

const config = (h3: boolean) =>
  `listen_addr: "127.0.0.1:0"
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
protocols:
  http3_enabled: ${h3}
health_check: { enabled: false }
routes:
  "/":
    type: redirect
    target: "https://example.com/"
`;

Deno.test("Prox reload turns HTTP/3 off (connections refused, no Alt-Svc) and on again at once", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/prox.yaml`;
    await Deno.writeTextFile(file, config(true));
    const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
    try {
      const port = server.port;
      const h3Port = () => server.h3?.port ?? null;
      assert.equal(h3Port(), port);
      await Deno.writeTextFile(file, config(false));
      assert.equal((await server.reload()).ok, true);
      assert.equal(h3Port(), null);
      assert.equal(server.snapshot().altSvc, null);
      // Refused at once (the idle timeout only bounds a wrong outcome).
      await assert.rejects(Deno.connectQuic<false>({
        hostname: "127.0.0.1",
        port,
        serverName: "localhost",
        caCerts: [ca],
        alpnProtocols: ["h3"],
        maxIdleTimeout: 2000,
      }));

      await Deno.writeTextFile(file, config(true));
      assert.equal((await server.reload()).ok, true);
      // Back immediately: before, the rebind failed (port still held) and was retried forever.
      assert.equal(h3Port(), port);
      assert.equal(server.snapshot().altSvc, `h3=":${port}"; ma=86400`);
      await using c = await connectH3({ hostname: "127.0.0.1", port, caCerts: [ca] });
      assert.equal((await c.request("/")).status, 307);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
