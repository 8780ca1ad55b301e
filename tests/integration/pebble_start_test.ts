// The pebble helper itself: the ACME tests depend on it starting every time.
import assert from "node:assert/strict";
import { interopTest } from "../_harness.ts";
import { freePort, PEBBLE_TLS_CA, startPebble } from "./_pebble.ts";
import { TOOLS, withTempDir } from "./_acme.ts";

interopTest(
  "startPebble takes other ports when one it picked is taken before pebble binds it",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      // A listener that never answers holds the port handed out for pebble's management
      // interface (the third pick): pebble exits on the failed bind.
      using held = Deno.listen({ hostname: "127.0.0.1", port: freePort() });
      let picks = 0;
      const pickPort = () => ++picks === 3 ? held.addr.port : freePort();
      const started = Date.now();
      await using pebble = await startPebble({ httpPort: freePort(), dir, pickPort });
      assert.ok(picks >= 10, `a second set of ports was picked (${picks} picks)`);
      assert.ok(pebble.root.includes("BEGIN CERTIFICATE"));
      assert.notEqual(new URL(pebble.directoryUrl).port, String(held.addr.port));
      using client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(PEBBLE_TLS_CA)] });
      const directory = await (await fetch(pebble.directoryUrl, { client })).json();
      assert.match(directory.newOrder, /\/order-plz$/);
      // Well inside one start's budget: the exit was noticed, not waited out.
      assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
    }),
);
