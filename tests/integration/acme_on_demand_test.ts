// On-demand TLS (`tls.acme.on_demand`) end to end against Debian's pebble: a name the ask endpoint
// allows gets its certificate during its first handshake, a refused one gets no order, a second
// handshake and a restart use the stored certificate, and `max_certificates` and `rate` hold.
import assert from "node:assert/strict";
import { interopTest, waitFor } from "../_harness.ts";
import { startUpstream } from "../_harness.ts";
import type { AcmeTuning } from "../../src/adapters/acme.ts";
import { X509Certificate } from "node:crypto";
import { freePort, startPebble } from "./_pebble.ts";
import type { Pebble } from "./_pebble.ts";
import {
  memoryLogger,
  onDemandYaml,
  start,
  startAsk,
  tlsGet,
  TOOLS,
  withTempDir,
} from "./_acme.ts";

const TUNING: AcmeTuning = { lockPollMs: 50 };

/** A TLS request for `name` that must fail: the main (default) certificate answers, not its own. */
async function refused(port: number, pebble: Pebble, name: string) {
  await assert.rejects(
    tlsGet(port, pebble.root, "/", name),
    /is not in the cert's altnames: DNS:prox\.test, DNS:www\.prox\.test/,
  );
}

interopTest(
  "ACME on demand: an allowed name gets its own certificate during its first handshake; a refused one gets no order; a restart loads the stored one",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("on demand"));
      await using ask = startAsk(["a.prox.test"]);
      const yaml = onDemandYaml({ pebble, dir, httpPort, upstream: up.url, ask: ask.url });
      const logger = memoryLogger();
      const first = await start(yaml, TUNING, logger);
      let serial: string;
      try {
        await waitFor(() => first.ready(), { timeoutMs: 30_000, what: "the main certificate" });
        assert.equal(pebble.orders(), 1);
        // The first handshake for the name waits for its order.
        const got = await tlsGet(first.port, pebble.root, "/", "a.prox.test");
        assert.equal(got.names, "DNS:a.prox.test");
        assert.equal(got.status, 200);
        assert.match(got.body, /on demand$/);
        assert.equal(pebble.orders(), 2);
        assert.deepEqual(ask.asked, ["a.prox.test"]);
        serial = got.serial;
        // A second handshake is served the same certificate, without an order or a question.
        const again = await tlsGet(first.port, pebble.root, "/", "A.prox.test");
        assert.equal(again.serial, serial);
        assert.equal(pebble.orders(), 2);
        assert.deepEqual(ask.asked, ["a.prox.test"]);
        // A refused name: asked about, not ordered; the main certificate answers (and the client
        // refuses it).
        await refused(first.port, pebble, "evil.prox.test");
        assert.deepEqual(ask.asked, ["a.prox.test", "evil.prox.test"]);
        assert.equal(pebble.orders(), 2);
        // The refusal is cached briefly: not asked again at once.
        await refused(first.port, pebble, "evil.prox.test");
        assert.equal(ask.asked.length, 2);
        // The configured names still get the main certificate, without a question.
        const main = await tlsGet(first.port, pebble.root, "/", "www.prox.test");
        assert.equal(main.names, "DNS:prox.test, DNS:www.prox.test");
        assert.equal(ask.asked.length, 2);
        assert.deepEqual(first.onDemand!.status(), { held: ["a.prox.test"], orders: 1 });
      } finally {
        await first.shutdown();
      }
      assert.ok((await Deno.stat(`${dir}/acme/a.prox.test.crt`)).isFile);

      // A restart loads the stored certificate: no order.
      const second = await start(yaml, TUNING);
      try {
        await waitFor(() => second.ready(), { what: "HTTPS after the restart" });
        const got = await tlsGet(second.port, pebble.root, "/", "a.prox.test");
        assert.equal(got.serial, serial);
        assert.equal(pebble.orders(), 2);
        assert.equal(second.onDemand!.status().orders, 0);
      } finally {
        await second.shutdown();
      }
    }),
);

interopTest(
  "ACME on demand: max_certificates bounds the certificates held (least recently used dropped, loaded again from storage); rate bounds new orders",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("bounded"));
      await using ask = startAsk(["a.prox.test", "b.prox.test", "c.prox.test"]);
      const yaml = onDemandYaml({
        pebble,
        dir,
        httpPort,
        upstream: up.url,
        ask: ask.url,
        onDemand: `      max_certificates: 1\n` +
          `      rate: { orders: 2, per: 1h }\n`,
      });
      const logger = memoryLogger();
      const server = await start(yaml, TUNING, logger);
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "the main certificate" });
        const a = await tlsGet(server.port, pebble.root, "/", "a.prox.test");
        assert.equal(a.names, "DNS:a.prox.test");
        assert.deepEqual(server.onDemand!.status().held, ["a.prox.test"]);
        const b = await tlsGet(server.port, pebble.root, "/", "b.prox.test");
        assert.equal(b.names, "DNS:b.prox.test");
        // One held: a's keeper was let go.
        assert.deepEqual(server.onDemand!.status().held, ["b.prox.test"]);
        assert.equal(pebble.orders(), 3);
        // a again: from storage, without an order (the rate is spent, and is not needed).
        const a2 = await tlsGet(server.port, pebble.root, "/", "a.prox.test");
        assert.equal(a2.serial, a.serial);
        assert.deepEqual(server.onDemand!.status().held, ["a.prox.test"]);
        assert.equal(pebble.orders(), 3);
        // c: allowed, but a third new order within the hour is past the rate: none placed.
        await refused(server.port, pebble, "c.prox.test");
        assert.equal(pebble.orders(), 3);
        assert.ok(ask.asked.includes("c.prox.test"));
        assert.ok(
          logger.lines.some((l) => l.includes("on_demand.rate allows 2 orders")),
          logger.lines.join("\n"),
        );
        assert.equal(server.onDemand!.status().orders, 2);
      } finally {
        await server.shutdown();
      }
    }),
);

interopTest(
  "ACME on demand: a held certificate falling due is renewed and the next handshake gets the new one",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("renewed"));
      await using ask = startAsk(["a.prox.test"]);
      const yaml = onDemandYaml({ pebble, dir, httpPort, upstream: up.url, ask: ask.url });
      let offset = 0;
      const server = await start(yaml, {
        ...TUNING,
        now: () => Date.now() + offset,
        random: () => 0,
        checkIntervalMs: 50,
      });
      try {
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "the main certificate" });
        const first = await tlsGet(server.port, pebble.root, "/", "a.prox.test");
        assert.equal(first.names, "DNS:a.prox.test");
        // Past its renewal time (30 days before expiry; the main certificate's too).
        const pem = await Deno.readTextFile(`${dir}/acme/a.prox.test.crt`);
        const notAfter = Date.parse(new X509Certificate(pem).validTo);
        offset = notAfter - Date.now() - 29 * 86_400_000;
        const renewed = await waitFor(async () => {
          const r = await tlsGet(server.port, pebble.root, "/", "a.prox.test");
          return r.serial !== first.serial ? r : null;
        }, { timeoutMs: 30_000, what: "the renewed on-demand certificate" });
        assert.equal(renewed.names, "DNS:a.prox.test");
        assert.equal(renewed.status, 200);
        // Renewals are not first orders: asked once, counted once.
        assert.deepEqual(ask.asked, ["a.prox.test"]);
        assert.equal(server.onDemand!.status().orders, 1);
      } finally {
        await server.shutdown();
      }
    }),
);
