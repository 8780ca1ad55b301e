// TLS passthrough: `tcp` entries with `sni` route by the ClientHello's server name without
// terminating TLS; the client verifies the upstream's own certificate end to end (Deno's rustls,
// openssl s_client, curl).

import assert from "node:assert/strict";
import { startProxy } from "./_proxy.ts";
import { recordingLogger } from "./_ws.ts";
import {
  CA,
  CERT,
  dec,
  enc,
  exchange,
  KEY,
  nthAccess,
  rawUpstream,
  readAll,
  writeAll,
} from "./_tcp.ts";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";

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

/** A ClientHello naming `name`, in records of at most `size` bytes (as tls_client_hello_test). */
function clientHello(name: string, size: number): Uint8Array {
  const u16 = (n: number) => [n >> 8, n & 0xff];
  const sni = [...enc.encode(name)];
  const entry = [0, ...u16(sni.length), ...sni];
  const ext = [0, 0, ...u16(entry.length + 2), ...u16(entry.length), ...entry];
  const body = [3, 3, ...new Array(32).fill(7), 0, ...u16(2), 0x13, 0x01, 1, 0];
  body.push(...u16(ext.length), ...ext);
  const hs = [1, 0, ...u16(body.length), ...body];
  const out: number[] = [];
  for (let i = 0; i < hs.length; i += size) {
    const frag = hs.slice(i, i + size);
    out.push(22, 3, 1, ...u16(frag.length), ...frag);
  }
  return new Uint8Array(out);
}

Deno.test("tcp sni reads a ClientHello split over segments and records, and sends it on unchanged", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("answer") });
  await using prox = await startProxy(
    `${base}tcp:\n  tls:\n    listen_addr: "127.0.0.1:0"\n` +
      `    sni: { "split.example.com": ["${up.addr}"] }\n`,
  );
  const hello = clientHello("split.example.com", 7);
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: prox.server.tcpAddr("tls")!.port,
  });
  conn.setNoDelay(true);
  for (const [from, to] of [[0, 3], [3, 20], [20, hello.length]]) {
    await writeAll(conn, hello.subarray(from, to));
    // Not a wait for a condition: a pause so that each piece leaves as its own TCP segment.
    await new Promise((r) => setTimeout(r, 30));
  }
  await writeAll(conn, enc.encode("after the hello"));
  await conn.closeWrite();
  assert.equal(dec.decode(await readAll(conn)), "answer");
  conn.close();
  const got = up.received[0];
  assert.deepEqual(got.subarray(0, hello.length), hello);
  assert.equal(dec.decode(got.subarray(hello.length)), "after the hello");
});

Deno.test("tcp sni counts the ClientHello in prox_tcp_bytes_total received, as the access log does", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("answer") });
  await using prox = await startProxy(
    `${base}admin: { listen_addr: "127.0.0.1:0" }\ntcp:\n  tls:\n` +
      `    listen_addr: "127.0.0.1:0"\n    sni: { "m.example.com": ["${up.addr}"] }\n`,
  );
  const hello = clientHello("m.example.com", 16384);
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: prox.server.tcpAddr("tls")!.port,
  });
  await writeAll(conn, hello);
  await writeAll(conn, enc.encode("after"));
  await conn.closeWrite();
  assert.equal(dec.decode(await readAll(conn)), "answer");
  conn.close();
  assert.equal(up.received[0].length, hello.length + 5);
  const metrics = await (await fetch(`http://127.0.0.1:${prox.server.admin!.port}/metrics`)).text();
  const received = metrics.match(
    /^prox_tcp_bytes_total\{name="tls",direction="received"\} (\d+)$/m,
  );
  assert.equal(Number(received?.[1]), hello.length + 5, "received: the ClientHello and the rest");
});

Deno.test("tcp sni answers a server name nothing matches with the unrecognized_name alert (RFC 6066 §3)", async () => {
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  tls:\n    listen_addr: "127.0.0.1:0"\n` +
      `    sni: { "db.example.com": ["127.0.0.1:9"] }\n`,
    { logger },
  );
  const port = prox.server.tcpAddr("tls")!.port;
  // Deno's TLS client names the alert.
  const err = await tlsPing(port, "other.example.com").then(() => null, (e: Error) => e);
  assert.match(String(err), /UnrecognisedName|unrecognized.name/i);
  // On the wire: one fatal alert record, then the end.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, clientHello("other.example.com", 16384));
  assert.deepEqual([...await readAll(conn)], [21, 3, 3, 0, 2, 2, 112]);
  conn.close();
  // The alert's bytes are the connection's bytesOut.
  const rec = await nthAccess(logger.records, 2);
  assert.deepEqual([rec.outcome, rec.bytesOut], ["no_route", 7]);
});

Deno.test("tcp sni with accept_proxy_protocol reads the ClientHello after the balancer's header", async () => {
  await using up = rawUpstream({ reply: () => enc.encode("answer") });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  tls:\n    listen_addr: "127.0.0.1:0"\n` +
      `    sni: { "db.example.com": ["${up.addr}"] }\n` +
      `    accept_proxy_protocol: { from: ["127.0.0.1"] }\n`,
    { logger },
  );
  const port = prox.server.tcpAddr("tls")!.port;
  const hello = clientHello("db.example.com", 50);
  const header = enc.encode("PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n");
  // The header and the ClientHello's first bytes in one write, the rest later.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const both = new Uint8Array(header.length + hello.length);
  both.set(header);
  both.set(hello, header.length);
  await writeAll(conn, both.subarray(0, header.length + 20));
  await writeAll(conn, both.subarray(header.length + 20));
  await conn.closeWrite();
  assert.equal(dec.decode(await readAll(conn)), "answer");
  conn.close();
  assert.deepEqual(await waitFor(() => up.received[0]), hello);
  const rec = await nthAccess(logger.records, 1);
  assert.equal(rec.clientIp, "203.0.113.7");
  assert.equal(rec.serverName, "db.example.com");
  assert.equal(rec.bytesIn, hello.length);
});

Deno.test("tcp sni sends a ClientHello whose server name is no DNS name to default; without one it is closed", async () => {
  await using named = rawUpstream({ reply: () => enc.encode("named") });
  await using fallback = rawUpstream({ reply: () => enc.encode("default") });
  const logger = recordingLogger();
  await using prox = await startProxy(
    `${base}tcp:\n  tls:\n    listen_addr: "127.0.0.1:0"\n` +
      `    sni: { "db.example.com": ["${named.addr}"] }\n    default: ["${fallback.addr}"]\n` +
      `  strict:\n    listen_addr: "127.0.0.1:0"\n` +
      `    sni: { "db.example.com": ["${named.addr}"] }\n`,
    { logger },
  );
  /** Sends a ClientHello naming `name` and what the target answers, to the entry's port. */
  const send = async (entry: string, name: string) => {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: prox.server.tcpAddr(entry)!.port,
    });
    await writeAll(conn, clientHello(name, 16384));
    await conn.closeWrite();
    const got = dec.decode(await readAll(conn));
    conn.close();
    return got;
  };
  // An IPv6 literal (RFC 6066 §3 allows no literal) and a name with a space: well-formed
  // ClientHellos a target may still accept, as nginx and HAProxy send them on to their default.
  assert.equal(await send("tls", "::1"), "default");
  const first = await nthAccess(logger.records, 1);
  assert.deepEqual([first.outcome, first.serverName], ["closed", "::1"]);
  assert.equal(await send("tls", "bad name"), "default");
  assert.equal(fallback.accepted, 2);
  // Without a default: closed before any target is asked, as before.
  assert.equal(await send("strict", "::1"), "");
  const closed = await nthAccess(logger.records, 3);
  assert.deepEqual([closed.outcome, closed.serverName], ["bad_hello", "::1"]);
  assert.equal(named.accepted, 0);
});
