// Certificate files replaced on disk: what the reload reports. Real files, an in-process Prox.
import assert from "node:assert/strict";
import { ROOT } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
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
