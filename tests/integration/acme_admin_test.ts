// The admin API's POST /acme/renew: against Debian's pebble a valid certificate is replaced at
// once and the new one served; against a CA that fails, the forced order goes out despite the
// back-off, and its failure backs off again rather than repeating at every check.
import assert from "node:assert/strict";
import { interopTest, startUpstream, waitFor } from "../_harness.ts";
import { freePort, startPebble } from "./_pebble.ts";
import { acmeYaml, start, tlsGet, TOOLS, withTempDir } from "./_acme.ts";

const TOKEN = "acme-admin-token";
const ADMIN = `admin: { listen_addr: "127.0.0.1:0", token: "${TOKEN}" }`;
const renew = (port: number) =>
  fetch(`http://127.0.0.1:${port}/acme/renew`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` },
  });

interopTest(
  "ACME: POST /acme/renew replaces a certificate that is not due and the new one is served",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("renewed"));
      const yaml = acmeYaml({
        ca: pebble.directoryUrl,
        storage: `${dir}/acme`,
        httpPort,
        upstream: up.url,
        extra: ADMIN,
      });
      const server = await start(yaml);
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "the first certificate" });
        const before = await tlsGet(server.port, pebble.root);
        const res = await renew(server.admin!.port);
        assert.equal(res.status, 202);
        assert.equal((await res.json()).renewing, true);
        const after = await waitFor(async () => {
          const got = await tlsGet(server.port, pebble.root);
          return got.serial !== before.serial ? got : null;
        }, { timeoutMs: 30_000, what: "the renewed certificate" });
        assert.equal(after.status, 200);
        assert.equal(pebble.orders(), 2);
        assert.equal(server.acme!.status().state, "ok");
      } finally {
        await server.shutdown();
      }
    }),
);

Deno.test("ACME: a forced order goes out despite the back-off, and its failure backs off again", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("never"));
    const yaml = acmeYaml({
      ca: `https://127.0.0.1:${freePort()}/dir`,
      storage: `${dir}/acme`,
      httpPort: freePort(),
      upstream: up.url,
      extra: ADMIN,
    });
    // Periodic checks every 20 ms; a failed order backs off for a minute.
    const server = await start(yaml, {
      retryBaseMs: 120_000,
      clientRetries: 0,
      checkIntervalMs: 20,
    });
    try {
      await waitFor(() => server.acme!.status().failures === 1, { what: "the first failed order" });
      const res = await renew(server.admin!.port);
      assert.equal(res.status, 202);
      await res.body?.cancel();
      await waitFor(() => server.acme!.status().failures === 2, { what: "the forced order" });
      // Nothing can be awaited for an order that must not happen: 25 periodic checks pass.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(server.acme!.status().failures, 2);
      assert.ok(server.acme!.status().retryInMs! > 10_000);
    } finally {
      await server.shutdown();
    }
  });
});
