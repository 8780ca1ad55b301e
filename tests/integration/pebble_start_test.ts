// The pebble helper itself: the ACME tests depend on it starting every time.
import assert from "node:assert/strict";
import { interopTest } from "../_harness.ts";
import { startMockDns } from "./_dns.ts";
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

// challtestsrv logs a failed bind and runs on without that listener (no exit to notice).
for (const [pick, what] of [[4, "management API"], [1, "DNS server"]] as const) {
  /**
   * A port held as challtestsrv's would be: its DNS port over UDP too (held over TCP alone, its
   * UDP server answers the readiness probe, and only the TCP bind's log line, which may come
   * after the probe, says it failed).
   */
  const hold = () => {
    const tcp = Deno.listen({ hostname: "127.0.0.1", port: freePort() });
    const udp = pick === 1
      ? Deno.listenDatagram({ hostname: "127.0.0.1", port: tcp.addr.port, transport: "udp" })
      : null;
    return {
      addr: tcp.addr,
      [Symbol.dispose]() {
        tcp.close();
        udp?.close();
      },
    };
  };
  interopTest(
    `startPebble takes other ports when challtestsrv's ${what} port is taken`,
    TOOLS,
    () =>
      withTempDir(async (dir) => {
        using held = hold();
        let picks = 0;
        const pickPort = () => ++picks === pick ? held.addr.port : freePort();
        const started = Date.now();
        await using pebble = await startPebble({ httpPort: freePort(), dir, pickPort });
        assert.ok(picks >= 10, `a second set of ports was picked (${picks} picks)`);
        assert.notEqual(new URL(pebble.challtestsrv).port, String(held.addr.port));
        assert.notEqual(pebble.dns, `127.0.0.1:${held.addr.port}`);
        assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
      }),
  );
  interopTest(
    `startMockDns takes other ports when its ${what} port is taken`,
    ["pebble-challtestsrv"],
    async () => {
      using held = hold();
      let picks = 0;
      // startMockDns picks the DNS port first, then the management port.
      const pickPort = () => ++picks === (pick === 1 ? 1 : 2) ? held.addr.port : freePort();
      await using dns = await startMockDns({ pickPort });
      assert.ok(picks >= 4, `a second set of ports was picked (${picks} picks)`);
      assert.notEqual(dns.server, `127.0.0.1:${held.addr.port}`);
      await dns.setA("app.test", ["127.0.0.7"]);
      const got = await Deno.resolveDns("app.test", "A", {
        nameServer: { ipAddr: "127.0.0.1", port: Number(dns.server.split(":")[1]) },
      });
      assert.deepEqual(got, ["127.0.0.7"]);
    },
  );
}
