// On-demand TLS with more than one keeper for a name: two instances sharing `storage_path`, and
// `workers: 2` (real `prox serve` processes), each asked for the same new name at about the same
// time. The store's order lock puts them in turn: one orders, the other loads its certificate.
import assert from "node:assert/strict";
import { interopTest, startUpstream, waitFor } from "../_harness.ts";
import type { AcmeTuning } from "../../src/adapters/acme.ts";
import { DEBUG_HEADER_ENV } from "../../src/adapters/worker_link.ts";
import { freePort, startPebble } from "./_pebble.ts";
import { spawnProx } from "./_cli_process.ts";
import type { ProxProcess } from "./_cli_process.ts";
import { onDemandYaml, start, startAsk, tlsGet, TOOLS, withTempDir } from "./_acme.ts";

interopTest(
  "ACME on demand: two instances sharing storage_path asked for one new name at once place one order and serve the same certificate",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("shared"));
      await using ask = startAsk();
      // Both bind the challenge port (SO_REUSEPORT) and answer from the shared store.
      const yaml = onDemandYaml({ pebble, dir, httpPort, upstream: up.url, ask: ask.url });
      const tuning: AcmeTuning = { lockPollMs: 50, checkIntervalMs: 1_000 };
      const [a, b] = await Promise.all([start(yaml, tuning), start(yaml, tuning)]);
      try {
        await waitFor(() => a.ready() && b.ready(), { timeoutMs: 30_000, what: "both HTTPS" });
        assert.equal(pebble.orders(), 1);
        const [ra, rb] = await Promise.all([
          tlsGet(a.port, pebble.root, "/", "a.prox.test"),
          tlsGet(b.port, pebble.root, "/", "a.prox.test"),
        ]);
        assert.equal(ra.names, "DNS:a.prox.test");
        assert.equal(ra.status, 200);
        assert.equal(rb.status, 200);
        assert.equal(ra.serial, rb.serial);
        // One order for the name: the other instance waited for the lock and loaded it.
        assert.equal(pebble.orders(), 2);
        assert.equal(a.onDemand!.status().orders + b.onDemand!.status().orders, 1);
        assert.equal(ask.asked.length, 2);
        await assert.rejects(Deno.stat(`${dir}/acme/order.lock`), Deno.errors.NotFound);
      } finally {
        await Promise.all([a.shutdown(), b.shutdown()]);
      }
    }),
);

interopTest(
  "ACME on demand with workers: 2 (real prox serve processes): one order for a new name, every worker serves it",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      const httpPort = freePort();
      await using pebble = await startPebble({ httpPort, dir });
      await using up = await startUpstream(() => new Response("from a worker"));
      await using ask = startAsk();
      const port = freePort();
      const yaml = onDemandYaml({
        pebble,
        dir,
        httpPort,
        upstream: up.url,
        ask: ask.url,
        extra: "workers: 2\nshutdown_timeout: 5s",
      }).replace(`listen_addr: "127.0.0.1:0"`, `listen_addr: "127.0.0.1:${port}"`);
      await Deno.writeTextFile(`${dir}/prox.yaml`, yaml);
      Deno.env.set(DEBUG_HEADER_ENV, "1");
      let prox: ProxProcess;
      try {
        prox = spawnProx(["serve", "-c", `${dir}/prox.yaml`, "--no-watch"]);
      } finally {
        Deno.env.delete(DEBUG_HEADER_ENV);
      }
      await using _prox = prox;
      const fail = (err: Error) => {
        throw new Error(`${err.message}\n${prox.output()}`);
      };
      const workers = new Set<string>();
      await waitFor(async () => {
        const r = await tlsGet(port, pebble.root).catch(() => null);
        const worker = r?.body.match(/x-prox-worker: (\d+)/i)?.[1];
        if (r?.status === 200 && worker) workers.add(worker);
        return workers.size === 2;
      }, { timeoutMs: 30_000, what: "both workers on HTTPS" }).catch(fail);
      assert.equal(pebble.orders(), 1);
      // Several handshakes for the new name at once: the kernel spreads them over the workers.
      const serials = new Map<string, string>();
      const first = await Promise.all(
        Array.from({ length: 6 }, () => tlsGet(port, pebble.root, "/", "a.prox.test")),
      );
      // Until each worker has answered for it (one that got none yet loads it from storage).
      await waitFor(async () => {
        for (const r of [...first.splice(0), await tlsGet(port, pebble.root, "/", "a.prox.test")]) {
          assert.equal(r.names, "DNS:a.prox.test");
          const worker = r.body.match(/x-prox-worker: (\d+)/i)?.[1];
          if (r.status === 200 && worker) serials.set(worker, r.serial);
        }
        return serials.size === 2;
      }, { timeoutMs: 30_000, what: "both workers serving a.prox.test" }).catch(fail);
      assert.equal(new Set(serials.values()).size, 1, JSON.stringify([...serials]));
      assert.equal(pebble.orders(), 2, prox.output());
      // The workers share the supervisor's output pipe: stop them all before disposing.
      prox.signal("SIGTERM");
      assert.equal((await prox.status).code, 0);
    }),
);
