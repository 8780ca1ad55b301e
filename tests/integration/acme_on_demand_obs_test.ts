// On-demand TLS seen from outside, against Debian's pebble: the metrics (checked by promtool), the
// admin API's `/status` section and the log lines after an allowed issuance, a refused name (asked,
// then from the cache) and a name `rate` refused (backing off).
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { interopTest, run, startUpstream, waitFor } from "../_harness.ts";
import type { OnDemandStatus } from "../../src/adapters/acme_on_demand.ts";
import { freePort, startPebble } from "./_pebble.ts";
import {
  memoryLogger,
  onDemandYaml,
  start,
  startAsk,
  tlsGet,
  TOOLS,
  withTempDir,
} from "./_acme.ts";

/** The value of one series in an exposition, undefined when absent. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

interopTest(
  "ACME on demand: metrics, /status and log lines after an issuance, a refused name and a rate-limited one",
  [...TOOLS, "promtool"],
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("observed"));
      await using ask = startAsk(["a.prox.test", "b.prox.test"]);
      const yaml = onDemandYaml({
        pebble,
        dir,
        httpPort,
        upstream: up.url,
        ask: ask.url,
        extra: `admin: { listen_addr: "127.0.0.1:0" }`,
        onDemand: `      rate: { orders: 1, per: 1h }\n`,
      });
      const logger = memoryLogger();
      const server = await start(yaml, { lockPollMs: 50 }, logger);
      try {
        const admin = `http://127.0.0.1:${server.admin!.port}`;
        const metrics = async () => await (await fetch(`${admin}/metrics`)).text();
        const onDemand = async (): Promise<OnDemandStatus> =>
          (await (await fetch(`${admin}/status`)).json()).onDemand;
        const asks = (t: string, r: string) =>
          value(t, `prox_tls_on_demand_asks_total{result="${r}"}`);
        const orders = (t: string, r: string) =>
          value(t, `prox_tls_on_demand_orders_total{result="${r}"}`);
        const expiry = (t: string, name: string) =>
          value(t, `prox_tls_certificate_expiry_timestamp_seconds{name="on_demand:${name}"}`);
        await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "the main certificate" });

        // Before any: zeros, no series of a name, an empty section.
        let t = await metrics();
        assert.equal(asks(t, "allowed"), 0);
        assert.equal(orders(t, "issued"), 0);
        assert.equal(value(t, "prox_tls_on_demand_certificates"), 0);
        assert.doesNotMatch(t, /name="on_demand:/);
        assert.deepEqual(await onDemand(), {
          held: [],
          heldTotal: 0,
          backingOff: [],
          backingOffTotal: 0,
          inFlight: 0,
          askAnswers: 0,
          orders: 0,
        });

        // Allowed: issued during the handshake.
        const before = Date.now();
        const a = await tlsGet(server.port, pebble.root, "/", "a.prox.test");
        assert.equal(a.names, "DNS:a.prox.test");
        const notAfter = Date.parse(
          new X509Certificate(await Deno.readTextFile(`${dir}/acme/a.prox.test.crt`)).validTo,
        );
        t = await metrics();
        assert.equal(asks(t, "allowed"), 1);
        assert.equal(orders(t, "issued"), 1);
        assert.equal(orders(t, "failed"), 0);
        assert.equal(value(t, "prox_tls_on_demand_certificates"), 1);
        assert.equal(expiry(t, "a.prox.test"), notAfter / 1000);
        let s = await onDemand();
        assert.equal(s.heldTotal, 1);
        assert.equal(s.held.length, 1);
        assert.equal(s.held[0].name, "a.prox.test");
        assert.equal(s.held[0].notAfter, notAfter);
        assert.ok(s.held[0].lastUsed >= before && s.held[0].lastUsed <= Date.now());
        assert.equal(s.orders, 1);
        assert.equal(s.backingOffTotal, 0);
        const obtained = logger.lines.filter((l) =>
          l.includes("ACME on-demand certificate obtained")
        );
        assert.equal(obtained.length, 1, logger.lines.join("\n"));
        assert.match(obtained[0], /^info .*"name":"a\.prox\.test","from":"order"/);

        // Used again: its last use moves.
        const used = s.held[0].lastUsed;
        await waitFor(() => Date.now() > used, { what: "the clock to move" });
        assert.equal((await tlsGet(server.port, pebble.root, "/", "a.prox.test")).serial, a.serial);
        assert.ok((await onDemand()).held[0].lastUsed > used);

        // Refused: asked, then the cached answer; no order, nothing held or backing off.
        for (let i = 0; i < 2; i++) {
          await assert.rejects(tlsGet(server.port, pebble.root, "/", "evil.prox.test"));
        }
        assert.deepEqual(ask.asked, ["a.prox.test", "evil.prox.test"]);
        t = await metrics();
        assert.equal(asks(t, "refused"), 1);
        assert.equal(asks(t, "cached_refused"), 1);
        assert.equal(orders(t, "issued"), 1);
        assert.equal(expiry(t, "evil.prox.test"), undefined);
        s = await onDemand();
        assert.deepEqual(s.held.map((h) => h.name), ["a.prox.test"]);
        assert.equal(s.backingOffTotal, 0);
        assert.equal(s.askAnswers, 2);

        // Allowed but past `rate`: no order, counted, backing off, one warning.
        await assert.rejects(tlsGet(server.port, pebble.root, "/", "b.prox.test"));
        t = await metrics();
        assert.equal(orders(t, "rate_limited"), 1);
        assert.equal(orders(t, "failed"), 0);
        assert.equal(orders(t, "issued"), 1);
        assert.equal(value(t, "prox_tls_on_demand_certificates"), 1);
        s = await onDemand();
        assert.deepEqual(s.held.map((h) => h.name), ["a.prox.test"]);
        assert.equal(s.backingOffTotal, 1);
        assert.equal(s.backingOff[0].name, "b.prox.test");
        assert.equal(s.backingOff[0].failures, 1);
        assert.ok(s.backingOff[0].nextTry > Date.now(), String(s.backingOff[0].nextTry));
        assert.match(s.backingOff[0].error, /on_demand\.rate allows 1 orders/);
        const warned = logger.lines.filter((l) =>
          l.startsWith("warn ACME on-demand certificate not obtained")
        );
        assert.equal(warned.length, 1, logger.lines.join("\n"));
        assert.match(warned[0], /"name":"b\.prox\.test"/);

        // The exposition with every on-demand series passes promtool.
        const out = await run("promtool", ["check", "metrics"], { stdin: t, timeoutMs: 20_000 });
        assert.equal(out.code, 0, out.stdout + out.stderr);
        assert.equal((out.stdout + out.stderr).trim(), "");
      } finally {
        await server.shutdown();
      }

      // A restart loads a's certificate from storage at its first handshake: held, with its
      // expiry series, and no order.
      const restarted = memoryLogger();
      const again = await start(yaml, { lockPollMs: 50 }, restarted);
      try {
        await waitFor(() => again.ready(), { what: "HTTPS after the restart" });
        await tlsGet(again.port, pebble.root, "/", "a.prox.test");
        const t = await (await fetch(`http://127.0.0.1:${again.admin!.port}/metrics`)).text();
        assert.equal(value(t, "prox_tls_on_demand_certificates"), 1);
        assert.equal(value(t, 'prox_tls_on_demand_orders_total{result="issued"}'), 0);
        assert.ok(
          value(t, 'prox_tls_certificate_expiry_timestamp_seconds{name="on_demand:a.prox.test"}')! >
            Date.now() / 1000,
        );
        assert.ok(
          restarted.lines.some((l) =>
            /^info ACME on-demand certificate obtained .*"from":"storage"/.test(l)
          ),
          restarted.lines.join("\n"),
        );
      } finally {
        await again.shutdown();
      }
    }),
);
