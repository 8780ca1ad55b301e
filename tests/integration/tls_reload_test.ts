// Certificate files replaced on disk: what the reload reports. Real files, an in-process Prox.
import assert from "node:assert/strict";
import { ROOT, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { tcpMigrateReq } from "../../src/adapters/listener_set.ts";
import { readFrom } from "./_raw_client.ts";
import { onProxEngines } from "./_proxy.ts";

// The swap under load is the engine's (Deno.serve's drain closes a new connection as idle).
onProxEngines();
import { recordingLogger } from "./_ws.ts";
import { withTempDir } from "./_acme.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;

Deno.test("a reload that finds new certificate files says the certificate changed, not 'none'", async () => {
  await withTempDir(async (dir) => {
    await Deno.copyFile(`${TLS}/cert.pem`, `${dir}/cert.pem`);
    await Deno.copyFile(`${TLS}/key.pem`, `${dir}/key.pem`);
    const file = `${dir}/prox.yaml`;
    await Deno.writeTextFile(
      file,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
tls: { cert_path: "${dir}/cert.pem", key_path: "${dir}/key.pem" }
routes:
  "/": { type: redirect, target: "https://example.com/" }
`,
    );
    const server = await startServer({ path: file }, { logger: recordingLogger(), watch: false });
    try {
      // Nothing changed: none.
      const same = await server.reload();
      assert.ok(same.ok);
      assert.deepEqual(same.changes, []);
      // The same key with another certificate (future.pem is a leaf for expired.key).
      await Deno.copyFile(`${TLS}/future.pem`, `${dir}/cert.pem`);
      await Deno.copyFile(`${TLS}/expired.key`, `${dir}/key.pem`);
      const rotated = await server.reload();
      assert.ok(rotated.ok, JSON.stringify(rotated.issues));
      assert.deepEqual(rotated.changes, [
        `TLS certificate changed (${dir}/cert.pem: valid until 2201-01-01T00:00:00.000Z)`,
      ]);
    } finally {
      await server.shutdown();
    }
  });
});

/**
 * Swaps the main certificate 4 times while 8 clients each open a TLS connection per request;
 * returns the failed requests. `sni`: a tls.sni entry too (the TLS is then relayed to loopback).
 */
async function swapUnderLoad(sni: boolean): Promise<string[]> {
  const failures: string[] = [];
  await withTempDir(async (dir) => {
    await Deno.copyFile(`${TLS}/cert.pem`, `${dir}/cert.pem`);
    await Deno.copyFile(`${TLS}/key.pem`, `${dir}/key.pem`);
    const file = `${dir}/prox.yaml`;
    await Deno.writeTextFile(
      file,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
tls: { cert_path: "${dir}/cert.pem", key_path: "${dir}/key.pem"${
        sni ? `, sni: [{ cert_path: "${TLS}/other.pem", key_path: "${TLS}/other.key" }]` : ""
      } }
routes:
  "/": { type: respond, body: "ok" }
`,
    );
    const server = await startServer({ path: file }, {
      logger: recordingLogger(),
      watch: false,
    });
    const caCerts = [await Deno.readTextFile(`${TLS}/ca.pem`)];
    const port = server.port;
    let ok = 0;
    let stop = false;
    // Clients that open a connection per request (curl in a loop, health checkers): one whose
    // new connection closes unanswered cannot retry it as on a reused keep-alive one.
    const loops = Array.from({ length: 8 }, async () => {
      while (!stop) {
        try {
          const c = await Deno.connectTls({ hostname: "localhost", port, caCerts });
          try {
            await c.write(
              new TextEncoder().encode(
                "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
              ),
            );
            const out = await readFrom(c);
            if (!out.startsWith("HTTP/1.1 200")) {
              throw new Error(`answer: ${JSON.stringify(out)}`);
            }
            ok++;
          } finally {
            c.close();
          }
        } catch (err) {
          failures.push(String(err));
        }
      }
    });
    try {
      // aia.pem and cert.pem are both leaves for key.pem: each swap binds a new listener.
      for (const next of ["aia.pem", "cert.pem", "aia.pem", "cert.pem"]) {
        const before = ok;
        await waitFor(() => ok >= before + 50, { what: "requests between swaps" });
        await Deno.copyFile(`${TLS}/${next}`, `${dir}/cert.pem`);
        const r = await server.reload();
        assert.ok(r.ok && r.changes?.length === 1, JSON.stringify(r));
      }
      const before = ok;
      await waitFor(() => ok >= before + 50, { what: "requests after the swaps" });
    } finally {
      stop = true;
      await Promise.all(loops);
      await server.shutdown();
    }
  });
  return failures;
}

// Without tcp_migrate_req, connections still in the old listener's accept queue are reset (README).
const migrates = tcpMigrateReq() === "1";

Deno.test({
  name: "a certificate swapped under load: no request on a new TLS connection fails",
  ignore: !migrates,
  fn: async () => assert.deepEqual(await swapUnderLoad(false), []),
});

Deno.test({
  name: "a certificate swapped under load with tls.sni: no relayed answer is cut",
  // The relays were closed as soon as the old listener's last connection ended, with its answer
  // still in the loopback socket.
  ignore: !migrates,
  fn: async () => assert.deepEqual(await swapUnderLoad(true), []),
});
