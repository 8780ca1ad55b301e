// `accept_proxy_protocol`: a load balancer's PROXY header (v1 or v2) names the client of each
// connection it makes to Prox, for X-Forwarded-For, ip_access, rate limits and the access log.
// Real sockets send the header as a balancer would; fetch and curl are the plain clients.
import assert from "node:assert/strict";
import { freePort, interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { readFrom } from "./_raw_client.ts";
import { proxyHeader } from "../../src/domain/proxy_protocol.ts";
import { silentLogger } from "../../src/ports.ts";
import { relayBufferBytes } from "../../src/adapters/h1/server.ts";

const enc = new TextEncoder();

/** An upstream that answers with the X-Forwarded-For it got. */
function xffUpstream() {
  return startUpstream((req) => new Response(req.headers.get("x-forwarded-for") ?? "none"));
}

/** Keeps the warnings and access records Prox logs. */
function recorder() {
  const warnings: Record<string, unknown>[] = [];
  const access: Record<string, unknown>[] = [];
  return {
    warnings,
    access,
    logger: {
      ...silentLogger,
      warn: (m: string, f?: Record<string, unknown>) => warnings.push({ m, ...f }),
      info: (m: string, f?: Record<string, unknown>) => m === "access" && access.push(f!),
    },
  };
}

function config(target: string, from = '["127.0.0.1"]', more = ""): string {
  return `
health_check: { enabled: false }
log: { access_log: true }
accept_proxy_protocol: { from: ${from}, timeout: 300ms }
routes:
  "/":
    type: proxy
    target: "${target}"
${more}`;
}

/** Sends `bytes` on a new connection and reads until the peer closes it. */
async function exchange(port: number, ...parts: (string | Uint8Array)[]): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    for (const p of parts) await c.write(typeof p === "string" ? enc.encode(p) : p);
    return await readFrom(c);
  } finally {
    c.close();
  }
}

const addrs = (ip: string, port: number) => ({
  source: { ip, port },
  destination: { ip: ip.includes(":") ? "::1" : "127.0.0.1", port: 443 },
});

const GET = "GET /a HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";

Deno.test("accept_proxy_protocol: the v1 or v2 header's source is the client, in one write with the request or apart", async () => {
  await using up = await xffUpstream();
  const { access, logger } = recorder();
  await using prox = await startProxy(config(up.url), { logger });
  const cases: [string, ...(string | Uint8Array)[]][] = [
    ["203.0.113.7", proxyHeader("v1", addrs("203.0.113.7", 40000)), GET],
    ["2001:db8::9", proxyHeader("v2", addrs("2001:db8::9", 40001)), GET],
    // The header and the request in one segment, as balancers send them.
    [
      "198.51.100.3",
      new Uint8Array([...proxyHeader("v2", addrs("198.51.100.3", 1)), ...enc.encode(GET)]),
    ],
    // The header split across writes.
    ["192.0.2.44", "PROXY TCP4 192.0.2.44 ", "127.0.0.1 5 443\r\n", GET],
  ];
  for (const [ip, ...parts] of cases) {
    const got = await exchange(prox.port, ...parts);
    assert.match(got, /^HTTP\/1\.1 200 /, ip);
    assert.ok(got.endsWith(`\r\n\r\n${ip}`), `${ip}: ${got}`);
  }
  await waitFor(() => access.length >= cases.length, { what: "the access records" });
  assert.deepEqual(access.map((r) => r.clientIp), cases.map((c) => c[0]));
});

Deno.test("accept_proxy_protocol: a health check's LOCAL or UNKNOWN keeps the balancer's address; keep-alive and relayed requests keep the client", async () => {
  await using up = await xffUpstream();
  await using prox = await startProxy(config(up.url));
  assert.ok((await exchange(prox.port, proxyHeader("v2", null), GET)).endsWith("127.0.0.1"));
  assert.ok((await exchange(prox.port, "PROXY UNKNOWN\r\n", GET)).endsWith("127.0.0.1"));
  // Two requests on one connection, the second relayed to Deno.serve (HTTP/1.0 without Host):
  // both carry the client the header named.
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(proxyHeader("v1", addrs("203.0.113.50", 7)));
    await c.write(enc.encode("GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n"));
    const first = await readFrom(c, /203\.0\.113\.50$/);
    assert.match(first, /^HTTP\/1\.1 200 /);
    await c.write(enc.encode("GET /2 HTTP/1.0\r\n\r\n"));
    const second = await readFrom(c);
    assert.match(second, /^HTTP\/1\.[01] 200 /);
    assert.ok(second.endsWith("203.0.113.50"), second);
  } finally {
    c.close();
  }
});

Deno.test("accept_proxy_protocol: ip_access judges the client the header names", async () => {
  await using up = await xffUpstream();
  await using prox = await startProxy(
    config(up.url, '["127.0.0.1"]', '    ip_access: { deny: ["203.0.113.0/24"] }'),
  );
  const denied = await exchange(prox.port, proxyHeader("v1", addrs("203.0.113.9", 1)), GET);
  assert.match(denied, /^HTTP\/1\.1 403 /);
  const allowed = await exchange(prox.port, proxyHeader("v1", addrs("198.51.100.9", 1)), GET);
  assert.match(allowed, /^HTTP\/1\.1 200 /);
});

Deno.test("accept_proxy_protocol: a sender without a valid header is closed unanswered and logged once per 10 s", async () => {
  await using up = await xffUpstream();
  const { warnings, logger } = recorder();
  await using prox = await startProxy(config(up.url), { logger });
  // A plain request where the header belongs, a broken header, and silence past the timeout.
  assert.equal(await exchange(prox.port, GET), "");
  assert.equal(await exchange(prox.port, "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", GET), "");
  assert.equal(await exchange(prox.port), "");
  await waitFor(() => warnings.length >= 1, { what: "the warning" });
  assert.equal(warnings[0].m, "Connection closed: no valid PROXY protocol header");
  assert.equal(warnings[0].peer, "127.0.0.1");
  assert.equal(warnings[0].reason, "no PROXY protocol header");
  assert.equal(warnings.length, 1, "the next ones within 10 s are counted, not logged");
});

Deno.test("accept_proxy_protocol: a sender's connection closed before any byte (a TCP health check) is no broken header to warn about", async () => {
  // Balancers' plain TCP checks connect and close without a byte: nginx and HAProxy (dontlognull)
  // stay quiet about them, and a warning every 10 s would hide the real ones.
  await using up = await xffUpstream();
  const { warnings, logger } = recorder();
  await using prox = await startProxy(config(up.url), { logger });
  for (let i = 0; i < 2; i++) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    await c.closeWrite();
    assert.equal(await readFrom(c), ""); // Prox closed it, unanswered
    c.close();
  }
  assert.equal(await exchange(prox.port, GET), "");
  await waitFor(() => warnings.length >= 1, { what: "the warning" });
  assert.equal(warnings[0].reason, "no PROXY protocol header");
  assert.equal(warnings[0].suppressedSinceLast, undefined);
});

Deno.test("accept_proxy_protocol: a header still on its way when Prox shuts down (or a reload replaces the listener) is no balancer's fault to warn about", async () => {
  await using up = await xffUpstream();
  const { warnings, logger } = recorder();
  const prox = await startProxy(config(up.url).replace("timeout: 300ms", "timeout: 60s"), {
    logger,
  });
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(enc.encode("PROXY TCP4 192.0.2.1 "));
    // A whole exchange on a connection accepted after it: this one's header is being read.
    assert.match(await exchange(prox.port, proxyHeader("v2", null), GET), /^HTTP\/1\.1 200 /);
    await prox.server.shutdown();
    assert.equal(await readFrom(c), "");
  } finally {
    c.close();
  }
  assert.deepEqual(warnings, []);
});

Deno.test("accept_proxy_protocol: timeout 0s waits without limit, and one past 24.8 days as long as a timer can (neither closes every connection at once)", async () => {
  await using up = await xffUpstream();
  for (const timeout of ["0s", "30d"]) {
    await using prox = await startProxy(
      config(up.url).replace("timeout: 300ms", `timeout: ${timeout}`),
    );
    const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    try {
      await c.write(enc.encode("PROXY TCP4 192.0.2.1 "));
      // Whole exchanges on other connections, accepted after this one, until a few milliseconds
      // have passed: a timer that was to close it (0 ms, or 1 ms for an overflowed delay) has run.
      const since = performance.now();
      while (performance.now() - since < 5) {
        assert.match(await exchange(prox.port, proxyHeader("v2", null), GET), /^HTTP\/1\.1 200 /);
      }
      await c.write(enc.encode("127.0.0.1 5 443\r\n" + GET));
      const got = await readFrom(c);
      assert.ok(got.endsWith("\r\n\r\n192.0.2.1"), `${timeout}: ${JSON.stringify(got)}`);
    } finally {
      c.close();
    }
  }
});

Deno.test("accept_proxy_protocol: peers not in from send no header and are served as themselves", async () => {
  await using up = await xffUpstream();
  await using prox = await startProxy(config(up.url, '["10.0.0.0/8"]'));
  const res = await fetch(`${prox.url}/a`);
  assert.equal(await res.text(), "127.0.0.1");
  // Their PROXY line is no header but a malformed request.
  const got = await exchange(prox.port, proxyHeader("v1", addrs("203.0.113.7", 1)), GET);
  assert.doesNotMatch(got, /203\.0\.113\.7/);
});

const TLS = `${ROOT}/tests/fixtures/tls`;

function tlsConfig(target: string, from = '["127.0.0.1"]'): string {
  return `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
${config(target, from)}`;
}

Deno.test("accept_proxy_protocol with TLS: the header comes before the handshake and names the client", async () => {
  await using up = await xffUpstream();
  await using prox = await startProxy(tlsConfig(up.url), { keepListen: true, tls: true });
  const caCerts = [await Deno.readTextFile(`${TLS}/ca.pem`)];
  for (const [v, ip] of [["v1", "203.0.113.7"], ["v2", "2001:db8::5"]] as const) {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    await tcp.write(proxyHeader(v, addrs(ip, 4242)));
    const c = await Deno.startTls(tcp, { hostname: "localhost", caCerts });
    try {
      await c.write(enc.encode(GET));
      const got = await readFrom(c);
      assert.match(got, /^HTTP\/1\.1 200 /, v);
      assert.ok(got.endsWith(`\r\n\r\n${ip}`), `${v}: ${got}`);
    } finally {
      c.close();
    }
  }
  // Without its header, a sender's connection never gets through the handshake.
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  const bare = await Deno.startTls(tcp, { hostname: "localhost", caCerts }).catch(() => null);
  if (bare) {
    try {
      await assert.rejects(bare.handshake());
    } finally {
      bare.close();
    }
  }
  // Peers not in from: TLS as usual (fetch over HTTPS).
  await using direct = await startProxy(tlsConfig(up.url, '["10.0.0.0/8"]'), {
    keepListen: true,
    tls: true,
  });
  const client = Deno.createHttpClient({ caCerts });
  try {
    const res = await fetch(`https://localhost:${direct.port}/a`, { client });
    assert.equal(await res.text(), "127.0.0.1");
  } finally {
    client.close();
  }
});

Deno.test("accept_proxy_protocol with TLS: a relayed connection that goes quiet after a large answer holds only its small relay buffers", async () => {
  const big = "x".repeat(20 * 1024);
  await using up = await startUpstream(() => new Response(big));
  await using prox = await startProxy(tlsConfig(up.url), { keepListen: true, tls: true });
  const caCerts = [await Deno.readTextFile(`${TLS}/ca.pem`)];
  const idle = relayBufferBytes();
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  await tcp.write(proxyHeader("v1", addrs("203.0.113.7", 4242)));
  const c = await Deno.startTls(tcp, { hostname: "localhost", caCerts });
  try {
    for (let i = 0; i < 3; i++) {
      await c.write(enc.encode("GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n"));
      const got = await readFrom(c, new RegExp(`\r\n\r\nx{${big.length}}$`));
      assert.match(got, /^HTTP\/1\.1 200 /);
    }
    // The connection is kept open and quiet: each direction's relay is back to its 2 KiB buffer
    // (the answer came in reads of up to 32 KiB).
    await waitFor(() => relayBufferBytes() === idle + 2 * 2048, {
      what: `relay buffers back to 2 × 2 KiB (${relayBufferBytes() - idle} bytes held)`,
    });
  } finally {
    c.close();
  }
  await waitFor(() => relayBufferBytes() === idle, { what: "relay buffers released" });
});

interopTest("accept_proxy_protocol with TLS: curl --haproxy-protocol gets HTTP/2 by ALPN", [
  "curl",
], async () => {
  await using up = await xffUpstream();
  const { access, logger } = recorder();
  await using prox = await startProxy(tlsConfig(up.url), { keepListen: true, tls: true, logger });
  for (const [flag, version] of [["--http2", "2"], ["--http1.1", "1.1"]]) {
    const out = await run("curl", [
      "-sS",
      flag,
      "--haproxy-protocol",
      "--cacert",
      `${TLS}/ca.pem`,
      "-w",
      "\n%{http_version} %{http_code}",
      `https://localhost:${prox.port}/a`,
    ]);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout, `127.0.0.1\n${version} 200`);
  }
  await waitFor(() => access.length >= 2, { what: "the access records" });
  assert.deepEqual(access.map((r) => r.protocol), ["h2", "http/1.1"]);
});

Deno.test("accept_proxy_protocol: the http_redirect listener reads the header too (a balancer sends it to port 80 as well)", async () => {
  await using up = await xffUpstream();
  const httpPort = freePort();
  await using prox = await startProxy(
    tlsConfig(up.url) + `http_redirect: { listen_addr: "127.0.0.1:${httpPort}" }\n`,
    { keepListen: true, tls: true },
  );
  const got = await exchange(
    httpPort,
    proxyHeader("v1", addrs("203.0.113.7", 1)),
    "GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
  );
  assert.match(got, /^HTTP\/1\.1 308 /);
  assert.match(
    got,
    new RegExp(`\r\nlocation: https://127\\.0\\.0\\.1:${prox.port}/a\\?b=1\r\n`, "i"),
  );
  // Without its header, the sender is closed unanswered there too.
  assert.equal(await exchange(httpPort, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "");
});
