// ACME renewal end to end against Debian's pebble: a certificate that falls due is renewed and
// swapped live while a request loop and an in-flight request run, in a private network namespace.
import assert from "node:assert/strict";
import { interopTest, requireInterop, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { freePort, startPebble } from "./_pebble.ts";
import { acmeYaml, currentSerial, DOMAINS, start, tlsGet, TOOLS, withTempDir } from "./_acme.ts";

/**
 * Renewal under load. Runs in a private network namespace with net.ipv4.tcp_migrate_req=1:
 * without it Linux resets connections still queued on a listener that closes, even when
 * another SO_REUSEPORT listener on the port would take them (see README, "Automatic TLS").
 */
function renewalScenario(): Promise<void> {
  return withTempDir(async (dir) => {
    const httpPort = freePort();
    await using pebble = await startPebble({ httpPort, dir });
    let release: () => void = () => {};
    const slowGate = new Promise<void>((r) => release = r);
    await using up = await startUpstream(async (req) => {
      if (new URL(req.url).pathname === "/slow") await slowGate;
      return new Response("ok");
    });
    const yaml = acmeYaml({
      ca: pebble.directoryUrl,
      storage: `${dir}/acme`,
      httpPort,
      upstream: up.url,
      extra: "protocols: { http3_enabled: true }",
    });
    let offset = 0;
    const server = await start(yaml, {
      now: () => Date.now() + offset,
      random: () => 0,
      checkIntervalMs: 50,
    });
    try {
      await waitFor(() => server.ready(), { timeoutMs: 30_000, what: "first certificate" });
      const port = server.port;
      const first = await tlsGet(port, pebble.root);
      assert.equal(first.status, 200);
      const renewAt = server.acme!.status().renewAt!;
      assert.equal(renewAt, server.acme!.status().notAfter! - 30 * 86_400_000);
      // HTTP/3 keeps its UDP endpoint and switches certificate in place: record the switch.
      const h3 = server.h3!;
      const h3Certs: string[] = [];
      const setCertificate = h3.setCertificate.bind(h3);
      h3.setCertificate = (cert, key) => {
        h3Certs.push(cert);
        setCertificate(cert, key);
      };

      // Clients hammer the proxy on fresh connections while the certificate changes.
      const seen = new Set<string>();
      let requests = 0;
      const errors: string[] = [];
      let stop = false;
      let retried = 0;
      const loop = async () => {
        while (!stop) {
          try {
            let r = await tlsGet(port, pebble.root);
            if (r.status === 0 && r.body === "") {
              // Deno.serve's graceful shutdown closes connections that have not sent a request
              // yet; like browsers, retry a GET whose connection closed before any response
              // byte (RFC 9112 §9.3.1).
              retried++;
              r = await tlsGet(port, pebble.root);
            }
            if (r.status !== 200) errors.push(`status ${r.status}`);
            seen.add(r.serial);
            requests++;
          } catch (err) {
            errors.push(String(err));
          }
        }
      };
      const loops = [loop(), loop()];
      const slow = tlsGet(port, pebble.root, "/slow");
      await waitFor(() => requests >= 5, { what: "requests before renewal" });

      offset = renewAt - Date.now() + 1000; // the certificate is now due
      const renewed = await waitFor(async () => {
        const r = await tlsGet(port, pebble.root);
        return r.serial !== first.serial ? r : null;
      }, { timeoutMs: 30_000, what: "the renewed certificate" });
      offset = 0;
      const after = requests;
      await waitFor(() => requests >= after + 5, { what: "requests after renewal" });
      stop = true;
      await Promise.all(loops);
      release();
      const slowResult = await slow;

      assert.equal(renewed.status, 200);
      assert.equal(renewed.names, first.names);
      assert.equal(server.port, port);
      assert.deepEqual(errors, []);
      assert.ok(retried <= 4 * server.acme!.status().orders, `${retried} retries`);
      assert.ok(seen.has(first.serial) && seen.has(renewed.serial), [...seen].join());
      // The request that was in flight on the replaced listener completed.
      assert.equal(slowResult.status, 200);
      assert.equal(slowResult.serial, first.serial);
      assert.ok(server.acme!.status().orders >= 2);
      assert.ok(pebble.orders() >= 2);
      // HTTP/3 got the renewed chain and serves new connections with it.
      assert.ok(h3Certs.length >= 1);
      assert.equal(server.h3, h3);
      await using h3c = await connectH3({
        hostname: "127.0.0.1",
        port,
        caCerts: [pebble.root],
        serverName: DOMAINS[0],
      });
      assert.equal((await h3c.request("/")).status, 200);
      // What HTTP/3 was given is what storage holds and what TCP serves.
      const stored = await Deno.readTextFile(`${dir}/acme/prox.test.crt`);
      assert.equal(h3Certs.at(-1), stored);
      assert.equal((await tlsGet(port, pebble.root)).serial, currentSerial(stored));
    } finally {
      release();
      await server.shutdown();
    }
  });
}

const RENEWAL =
  "ACME renewal when due swaps the served certificate live: a request loop and an in-flight request see no error";
if (Deno.env.get("PROX_ACME_NETNS") === "1") {
  Deno.test(RENEWAL, renewalScenario);
} else if (Deno.uid() === 0 || requireInterop) {
  interopTest(RENEWAL, [...TOOLS, "unshare", "ip"], async () => {
    if (Deno.uid() !== 0) throw new Error("Cannot run: unshare -n needs root");
    const script = [
      "ip link set lo up",
      "echo 1 > /proc/sys/net/ipv4/tcp_migrate_req",
      `exec "${Deno.execPath()}" test -A --no-check --trace-leaks --config "${ROOT}/deno.json" --filter "/^ACME renewal/" "${
        new URL(import.meta.url).pathname
      }"`,
    ].join(" && ");
    const out = await run("unshare", ["-n", "sh", "-c", script], {
      env: { PROX_ACME_NETNS: "1", NO_COLOR: "1" },
      cwd: "/",
      timeoutMs: 120_000,
    });
    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.match(out.stdout, /ok \| 1 passed \| 0 failed/);
  });
} else {
  Deno.test({
    name: `${RENEWAL} (needs root for a private network namespace)`,
    ignore: true,
    fn() {},
  });
}
