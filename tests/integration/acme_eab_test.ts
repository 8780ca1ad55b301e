// External account binding (RFC 8555 §7.3.4) against Debian's pebble configured to require it,
// as ZeroSSL and Google Trust Services do: no binding and a wrong MAC key are refused by the CA
// (the first with a message naming tls.acme.eab), the right key from the environment registers
// the account and the certificate serves.
import assert from "node:assert/strict";
import { interopTest, startUpstream, waitFor } from "../_harness.ts";
import { freePort, startPebble } from "./_pebble.ts";
import { acmeYaml, start, tlsGet, TOOLS, withTempDir } from "./_acme.ts";

/** A MAC key as CAs give them: random bytes, base64url. */
function macKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(48));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

interopTest(
  "ACME external account binding: refused without it and with a wrong key, registered with the CA's key",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      const key = macKey();
      await using pebble = await startPebble({ httpPort, dir, eab: { "kid-prox": key } });
      await using up = await startUpstream(() => new Response("bound"));
      const tuning = { retryBaseMs: 60_000, clientRetries: 0 };
      const yaml = (storage: string, acmeExtra?: string) =>
        acmeYaml({ ca: pebble.directoryUrl, storage, httpPort, upstream: up.url, acmeExtra });

      const failed = async (storage: string, acmeExtra?: string) => {
        const server = await start(yaml(storage, acmeExtra), tuning);
        try {
          await waitFor(() => server.acme!.status().failures === 1, { what: "the failed order" });
          assert.equal(server.acme!.current(), null);
          return server.acme!.status().lastError ?? "";
        } finally {
          await server.shutdown();
        }
      };
      const none = await failed(`${dir}/none`);
      assert.match(none, /requires external account binding: set tls\.acme\.eab/);
      const wrong = await failed(
        `${dir}/wrong`,
        `    eab: { kid: kid-prox, hmac_key: ${macKey()} }`,
      );
      assert.match(
        wrong,
        /refused the external account binding of kid "kid-prox": check tls\.acme\.eab/,
      );
      assert.equal(pebble.orders(), 0);

      const variable = "PROX_TEST_EAB_KEY";
      Deno.env.set(variable, key);
      const server = await start(
        yaml(`${dir}/right`, `    eab: { kid: kid-prox, hmac_key_env: ${variable} }`),
        tuning,
      );
      try {
        await waitFor(() => server.ready(), {
          timeoutMs: 30_000,
          what: "HTTPS with the certificate",
        });
        const got = await tlsGet(server.port, pebble.root);
        assert.equal(got.status, 200);
        assert.match(got.body, /bound$/);
        assert.equal(pebble.orders(), 1);
      } finally {
        await server.shutdown();
        Deno.env.delete(variable);
      }
    }),
);

interopTest(
  "ACME external account binding: a MAC key fixed in its variable and restarted is not held off by the back-off of the wrong key's failure",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      const key = macKey();
      await using pebble = await startPebble({ httpPort, dir, eab: { "kid-prox": key } });
      await using up = await startUpstream(() => new Response("fixed"));
      const variable = "PROX_TEST_EAB_KEY_FIXED";
      const yaml = acmeYaml({
        ca: pebble.directoryUrl,
        storage: `${dir}/acme`,
        httpPort,
        upstream: up.url,
        acmeExtra: `    eab: { kid: kid-prox, hmac_key_env: ${variable} }`,
      });
      const tuning = { retryBaseMs: 600_000, clientRetries: 0 };
      Deno.env.set(variable, macKey());
      try {
        const wrong = await start(yaml, tuning);
        try {
          await waitFor(() => wrong.acme!.status().failures === 1, { what: "the refused key" });
        } finally {
          await wrong.shutdown();
        }
        // The same config file: only the variable changed (as a key inline in it would have).
        Deno.env.set(variable, key);
        const server = await start(yaml, tuning);
        try {
          await waitFor(() => server.ready(), {
            timeoutMs: 30_000,
            what: "HTTPS with the fixed key",
          });
          assert.equal(pebble.orders(), 1);
        } finally {
          await server.shutdown();
        }
      } finally {
        Deno.env.delete(variable);
      }
    }),
);
