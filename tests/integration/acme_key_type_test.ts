// tls.acme.key_type against Debian's pebble: an RSA certificate for clients that need one, and a
// reload to another type orders a certificate with that key and swaps it in.
import assert from "node:assert/strict";
import { interopTest, startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { freePort, startPebble } from "./_pebble.ts";
import { acmeYaml, memoryLogger, tlsGet, TOOLS, withTempDir } from "./_acme.ts";

interopTest(
  "ACME key_type: rsa2048 serves an RSA certificate; a reload to p384 orders and serves a P-384 one",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("keyed"));
      const file = `${dir}/prox.yaml`;
      const yaml = (keyType: string) =>
        acmeYaml({
          ca: pebble.directoryUrl,
          storage: `${dir}/acme`,
          httpPort,
          upstream: up.url,
          acmeExtra: `    key_type: ${keyType}`,
        });
      await Deno.writeTextFile(file, yaml("rsa2048"));
      const server = await startServer({ path: file }, {
        logger: memoryLogger(),
        watch: false,
        acme: { checkIntervalMs: 1_000 },
      });
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "the RSA certificate" });
        const rsa = await tlsGet(server.port, pebble.root);
        assert.equal(rsa.key, "rsa 2048");
        assert.equal(rsa.status, 200);

        await Deno.writeTextFile(file, yaml("p384"));
        const result = await server.reload();
        assert.ok(result.ok, JSON.stringify(result.issues));
        const ec = await waitFor(async () => {
          const got = await tlsGet(server.port, pebble.root);
          return got.key.startsWith("ec") ? got : null;
        }, { timeoutMs: 30_000, what: "the P-384 certificate" });
        assert.equal(ec.key, "ec secp384r1");
        assert.equal(ec.status, 200);
        assert.equal(pebble.orders(), 2);
        assert.equal(server.acme!.status().state, "ok");
      } finally {
        await server.shutdown();
      }
    }),
);
