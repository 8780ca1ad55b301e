// TLS passthrough: `tcp` entries with `sni` route by the ClientHello's server name without
// terminating TLS; the client verifies the upstream's own certificate end to end (Deno's rustls,
// openssl s_client, curl).

import assert from "node:assert/strict";
import { startProxy } from "./_proxy.ts";
import { recordingLogger } from "./_ws.ts";
import { CA, CERT, dec, enc, exchange, KEY, nthAccess, rawUpstream, writeAll } from "./_tcp.ts";
import { interopTest, ROOT, run, startUpstream } from "../_harness.ts";

const base = `
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "http://127.0.0.1:9" }
`;

/** TLS to `port` with SNI `name`, verified against the test CA; echoes "ping" once. */
async function tlsPing(port: number, name: string): Promise<string> {
  // A handshake that never completes (a ClientHello lost on the way) fails rather than hangs.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error("No TLS echo within 10 s")), 10_000)
  );
  try {
    return await Promise.race([tlsPingOnce(port, name), late]);
  } finally {
    clearTimeout(timer);
  }
}

async function tlsPingOnce(port: number, name: string): Promise<string> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  const tls = await Deno.startTls(tcp, { hostname: name, caCerts: [CA] });
  try {
    await writeAll(tls, enc.encode("ping"));
    const buf = new Uint8Array(4);
    let got = 0;
    while (got < 4) {
      const n = await tls.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    return dec.decode(buf.subarray(0, got));
  } finally {
    tls.close();
  }
}

Deno.test("tcp sni routes TLS by server name to upstreams whose certificates the client verifies", async () => {
  await using a = rawUpstream({ tls: true, stream: true });
  await using b = rawUpstream({ tls: true, stream: true });
  await using c = rawUpstream({ tls: true, stream: true });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:
  tls:
    listen_addr: "127.0.0.1:0"
    sni:
      "DB.example.com": ["${a.addr}"]
      "*.example.com": ["${b.addr}"]
    default: ["${c.addr}"]
`,
    { logger },
  );
  const port = prox.server.tcpAddr("tls")!.port;
  assert.equal(await tlsPing(port, "db.example.com"), "ping");
  assert.equal(a.accepted, 1);
  const first = await nthAccess(logger.records, 1);
  assert.equal(first.serverName, "db.example.com");
  assert.equal(first.target, a.addr);
  assert.equal(first.outcome, "closed");
  assert.ok((first.bytesIn as number) > 100, "the ClientHello counts as received");
  assert.equal(await tlsPing(port, "www.example.com"), "ping");
  assert.equal(b.accepted, 1);
  // No key matches: the default.
  assert.equal(await tlsPing(port, "localhost"), "ping");
  assert.equal(c.accepted, 1);
  assert.equal((await nthAccess(logger.records, 3)).serverName, "localhost");
});

Deno.test("tcp sni closes what is not a ClientHello, a late one, and one nothing matches", async () => {
  await using a = rawUpstream({ tls: true, stream: true });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:
  tls:
    listen_addr: "127.0.0.1:0"
    sni: { "db.example.com": ["${a.addr}"] }
    timeouts: { client_hello: 300ms }
`,
    { logger },
  );
  const port = prox.server.tcpAddr("tls")!.port;
  // Plain HTTP to the TLS port.
  assert.equal(await exchange(port, "GET / HTTP/1.1\r\nhost: x\r\n\r\n"), "");
  const bad = await nthAccess(logger.records, 1);
  assert.equal(bad.outcome, "bad_hello");
  assert.equal(bad.serverName, null);
  // A client that sends half a record and waits.
  const slow = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(slow, new Uint8Array([22, 3, 1, 0, 200, 1]));
  const t0 = performance.now();
  assert.equal(await slow.read(new Uint8Array(1)), null);
  slow.close();
  assert.ok(performance.now() - t0 >= 250);
  assert.equal((await nthAccess(logger.records, 2)).outcome, "hello_timeout");
  // A name without a key and no default: closed, nothing reached the upstream.
  await assert.rejects(tlsPing(port, "other.example.com"));
  const none = await nthAccess(logger.records, 3);
  assert.equal(none.outcome, "no_route");
  assert.equal(none.serverName, "other.example.com");
  assert.equal(a.accepted, 0);
});

interopTest(
  "tcp sni passes openssl s_client through to the upstream it names",
  ["openssl"],
  async () => {
    await using a = rawUpstream({ tls: true, greet: "220 upstream ready\n" });
    await using prox = await startProxy(
      `${base}tcp:\n  tls:\n    listen_addr: "127.0.0.1:0"\n` +
        `    sni: { "db.example.com": ["${a.addr}"] }\n`,
    );
    const port = prox.server.tcpAddr("tls")!.port;
    const r = await run("openssl", [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-servername",
      "db.example.com",
      "-verify_hostname",
      "db.example.com",
      "-CAfile",
      `${ROOT}/tests/fixtures/tls/ca.pem`,
      "-verify_return_error",
      "-ign_eof",
    ], { stdin: "", timeoutMs: 20_000 });
    assert.match(r.stdout, /Verify return code: 0 \(ok\)/, r.stdout + r.stderr);
    assert.match(r.stdout, /220 upstream ready/, "the upstream's greeting came back");
    assert.equal(a.accepted, 1);
  },
);

interopTest(
  "tcp sni carries curl's HTTPS to a TLS upstream, verified end to end",
  ["curl"],
  async () => {
    await using https = await startUpstream(() => new Response("served by the upstream"), {
      cert: CERT,
      key: KEY,
    });
    await using prox = await startProxy(
      `${base}tcp:\n  tls:\n    listen_addr: "127.0.0.1:0"\n` +
        `    sni: { "*.example.com": ["127.0.0.1:${https.port}"] }\n`,
    );
    const port = prox.server.tcpAddr("tls")!.port;
    const r = await run("curl", [
      "-sS",
      "--cacert",
      `${ROOT}/tests/fixtures/tls/ca.pem`,
      "--resolve",
      `api.example.com:${port}:127.0.0.1`,
      `https://api.example.com:${port}/`,
    ], { timeoutMs: 20_000 });
    assert.equal(r.stdout, "served by the upstream", r.stderr);
  },
);
