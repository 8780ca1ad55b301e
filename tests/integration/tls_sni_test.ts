// Several certificates on one listener (`tls.sni`): the name a client asks for in its ClientHello
// picks the certificate (one naming it, else the main one), over HTTP/1.1 and HTTP/2, behind a
// balancer that sends PROXY protocol headers, and after a reload that adds one; with real clients
// (Deno's TLS, curl) that verify the certificate they get against the test CA.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { readFrom } from "./_raw_client.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { denoEnv } from "../../src/adapters/config_source.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import { withTempDir } from "./_acme.ts";

onProxEngines();

const TLS = `${ROOT}/tests/fixtures/tls`;
const CA = Deno.readTextFileSync(`${TLS}/ca.pem`);
const enc = new TextEncoder();

const config = (upstream: string, extra = "") => `
health_check: { enabled: false }
metrics: { on_main_listener: true }
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
  sni:
    - { cert_path: "${TLS}/other.pem", key_path: "${TLS}/other.key" }
${extra}routes:
  /: { type: proxy, target: "${upstream}" }
`;

/**
 * Connects to 127.0.0.1:`port`, asks for `name` by SNI and verifies the certificate for it; the
 * status line of a GET, or throws when the certificate does not name it. `prefix` goes first,
 * before TLS (a PROXY header).
 */
async function getAs(port: number, name: string, prefix = ""): Promise<string> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  if (prefix) await tcp.write(enc.encode(prefix));
  const c = await Deno.startTls(tcp, { hostname: name, caCerts: [CA] });
  try {
    await c.handshake();
    await c.write(enc.encode(`GET / HTTP/1.1\r\nHost: ${name}\r\nConnection: close\r\n\r\n`));
    const out = await readFrom(c);
    return out.slice(0, out.indexOf("\r\n")) + " " + out.slice(out.indexOf("\r\n\r\n") + 4);
  } finally {
    c.close();
  }
}

Deno.test("tls.sni: the ClientHello's name picks the certificate, else the main one", async () => {
  await using up = await startUpstream((req) => new Response(req.headers.get("x-forwarded-for")));
  await using prox = await startProxy(config(up.url), { tls: true });
  // The relay keeps the client's address (X-Forwarded-For, access log).
  assert.equal(await getAs(prox.port, "other.test"), "HTTP/1.1 200 OK 127.0.0.1");
  assert.equal(await getAs(prox.port, "www.other.test"), "HTTP/1.1 200 OK 127.0.0.1"); // *.other.test
  assert.equal(await getAs(prox.port, "localhost"), "HTTP/1.1 200 OK 127.0.0.1"); // the main certificate
  assert.equal(await getAs(prox.port, "example.com"), "HTTP/1.1 200 OK 127.0.0.1");
  // A name neither holds gets the main certificate, which the client refuses for it.
  await assert.rejects(() => getAs(prox.port, "nothing.test"), /certificate|NotValidForName/i);
  // Every certificate's expiry is a metric.
  using client = Deno.createHttpClient({ caCerts: [CA] });
  const metrics = await (await fetch(`https://localhost:${prox.port}/metrics`, { client })).text();
  for (const file of ["cert.pem", "other.pem"]) {
    assert.match(
      metrics,
      new RegExp(`prox_tls_certificate_expiry_timestamp_seconds\\{name="[^"]*/${file}"\\} \\d`),
    );
  }
});

interopTest("tls.sni over HTTP/2 with curl: each name gets its own certificate", [
  "curl",
], async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url), { tls: true });
  for (const name of ["other.test", "localhost"]) {
    const out = await run("curl", [
      "-sS",
      "--http2",
      "--cacert",
      `${TLS}/ca.pem`,
      "--resolve",
      `${name}:${prox.port}:127.0.0.1`,
      "-w",
      "%{http_version} %{http_code}",
      "-o",
      "/dev/null",
      `https://${name}:${prox.port}/`,
    ]);
    assert.equal(out.stdout.trim(), "2 200", `${name}: ${out.stderr}`);
  }
});

Deno.test("tls.sni behind accept_proxy_protocol: the header, then the ClientHello", async () => {
  await using up = await startUpstream((req) => new Response(req.headers.get("x-forwarded-for")));
  await using prox = await startProxy(
    config(up.url, 'accept_proxy_protocol: { from: ["127.0.0.1/32"] }\n'),
    { tls: true },
  );
  const header = "PROXY TCP4 192.0.2.9 127.0.0.1 5000 443\r\n";
  // The client the header names reaches the upstream, whichever certificate served it.
  assert.equal(await getAs(prox.port, "other.test", header), "HTTP/1.1 200 OK 192.0.2.9");
  assert.equal(await getAs(prox.port, "localhost", header), "HTTP/1.1 200 OK 192.0.2.9");
});

Deno.test("validate: tls.sni files, the names they add, and Deno.serve", () => {
  const issues = (tls: string, extra = "") =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"\ntls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem"${tls} }\n` +
        `${extra}routes:\n  other.test/: { type: static, root: . }\n`,
      { file: "c.yaml", env: { exists: (p) => !p.includes("missing") } },
    ).issues.map((i) => `${i.severity}: ${i.message}`);
  assert.deepEqual(
    issues(`, sni: [{ cert_path: "${TLS}/other.pem", key_path: "${TLS}/other.key" }]`),
    [],
  );
  assert.match(
    issues(`, sni: [{ cert_path: "${TLS}/missing.pem", key_path: "${TLS}/other.key" }]`).join(),
    /error: Certificate file not found: .*missing\.pem/,
  );
  assert.match(
    issues(
      `, sni: [{ cert_path: "${TLS}/other.pem", key_path: "${TLS}/other.key" }]`,
      "protocols: { http1_engine: deno }\n",
    ).join(),
    /error: tls\.sni needs Prox's own engines/,
  );
});

Deno.test("tls.sni: a certificate file replaced on disk is served after the reload", async () => {
  await withTempDir(async (dir) => {
    await using up = await startUpstream(() => new Response("ok"));
    // other.test's slot holds the main certificate at first: asking for other.test fails.
    await Deno.copyFile(`${TLS}/cert.pem`, `${dir}/sni.pem`);
    await Deno.copyFile(`${TLS}/key.pem`, `${dir}/sni.key`);
    const file = `${dir}/prox.yaml`;
    await Deno.writeTextFile(
      file,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
  sni: [{ cert_path: "${dir}/sni.pem", key_path: "${dir}/sni.key" }]
routes:
  /: { type: proxy, target: "${up.url}" }
`,
    );
    const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
    try {
      await assert.rejects(() => getAs(server.port, "other.test"));
      await Deno.copyFile(`${TLS}/other.pem`, `${dir}/sni.pem`);
      await Deno.copyFile(`${TLS}/other.key`, `${dir}/sni.key`);
      const r = await server.reload();
      assert.ok(r.ok, JSON.stringify(r.issues));
      // The reload says which certificate changed, as for the main one.
      assert.match(
        String(r.changes),
        /TLS certificate changed \([^)]*\/sni\.pem: valid until 2126/,
      );
      assert.equal(await getAs(server.port, "other.test"), "HTTP/1.1 200 OK ok");
    } finally {
      await server.shutdown();
    }
  });
});

/** The first flight of a real TLS client (Deno's) asking for `name`: its ClientHello. */
async function clientHello(name: string): Promise<Uint8Array> {
  const catcher = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: catcher.addr.port });
  const client = await Deno.startTls(tcp, { hostname: name, caCerts: [CA] });
  const done = client.handshake().catch(() => {});
  const caught = await catcher.accept();
  const hello = new Uint8Array(16384);
  const n = (await caught.read(hello))!;
  caught.close();
  catcher.close();
  await done;
  client.close();
  return hello.slice(0, n);
}

Deno.test("tls.sni: a client that stops after its ClientHello is closed when its 10 s are up", async () => {
  // Deno cannot close a TLS connection mid-handshake; the relay's own socket to the client it can.
  await using prox = await startProxy(config("http://127.0.0.1:9"), { tls: true });
  await Promise.all(["other.test", "localhost"].map(async (name) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    const started = Date.now();
    await c.write(await clientHello(name));
    let open = false;
    const guard = setTimeout(() => {
      open = true;
      c.close();
    }, 20_000);
    const got = await readFrom(c).finally(() => clearTimeout(guard));
    assert.ok(!open, `${name}: still open after 20 s`);
    c.close();
    assert.ok(got.length > 0, "the ServerHello came");
    const took = Date.now() - started;
    assert.ok(took >= 9_000 && took < 12_000, `${name}: closed after ${took} ms`);
  }));
});

/**
 * This process's 127.0.0.1 sockets in /proc/net/tcp: listening ports, and established [local,
 * remote] pairs.
 */
function loopbackSockets(): { listening: Set<number>; established: [number, number][] } {
  const own = new Set<string>();
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(Deno.readLinkSync(`/proc/self/fd/${e.name}`));
      if (m) own.add(m[1]);
    } catch { /* closed meanwhile */ }
  }
  const listening = new Set<number>();
  const established: [number, number][] = [];
  for (const line of Deno.readTextFileSync("/proc/net/tcp").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !own.has(f[9]) || !f[1].startsWith("0100007F:")) continue;
    const [local, remote] = [parseInt(f[1].slice(9), 16), parseInt(f[2].slice(9), 16)];
    if (f[3] === "0A") listening.add(local);
    if (f[3] === "01" && f[2].startsWith("0100007F:")) established.push([local, remote]);
  }
  return { listening, established };
}

Deno.test({
  name: "tls.sni: a relay's port to one certificate's listener names no client at another's",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    // Linux gives connect() the same local port for different destinations: relays to two
    // loopback listeners may share one, and each listener must know only its own relays.
    await using up = await startUpstream((req) => new Response(req.headers.get("x-forwarded-for")));
    const before = loopbackSockets().listening;
    await using prox = await startProxy(
      config(up.url, 'accept_proxy_protocol: { from: ["127.0.0.1/32"] }\n'),
      { tls: true },
    );
    const ours = [...loopbackSockets().listening].filter((p) => !before.has(p) && p !== prox.port);
    // A ClientHello for the main certificate: its relay waits for the rest of the handshake,
    // from a port of its own.
    const hello = await clientHello("localhost");
    // Only a connection that appears with the victim's is its relay (not one made before it).
    const known = new Set(loopbackSockets().established.map(([l, r]) => `${l}>${r}`));
    const victim = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    await victim.write(enc.encode("PROXY TCP4 192.0.2.77 127.0.0.1 5000 443\r\n"));
    await victim.write(hello);
    const [relayPort, mainPort] = await waitFor(() =>
      loopbackSockets().established.find(([l, r]) => ours.includes(r) && !known.has(`${l}>${r}`))
    );
    // The other certificate's listener: the one of Prox's that completes its handshake.
    let sniPort = 0;
    for (const p of ours.filter((p) => p !== mainPort)) {
      const c = await Deno.startTls(await Deno.connect({ hostname: "127.0.0.1", port: p }), {
        hostname: "other.test",
        caCerts: [CA],
      });
      if (await c.handshake().then(() => true, () => false)) sniPort = p;
      c.close();
    }
    assert.ok(sniPort > 0);
    // A local connection to it from the relay's port (the kernel's next ports, in turn: Linux
    // scans the ports of the range's parity from where its last pick for this destination left
    // off, then the others).
    let from: Deno.TcpConn | null = null;
    const [low, high] = Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").trim()
      .split(/\s+/).map(Number);
    const tries = 2 * (high - low + 1) + 1000;
    for (let i = 0; i < tries && !from; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: sniPort });
      if (c.localAddr.port === relayPort) from = c;
      else c.close();
    }
    assert.ok(
      from,
      `the kernel gave no connection the relay's port ${relayPort} in ${tries} tries`,
    );
    const tls = await Deno.startTls(from, { hostname: "other.test", caCerts: [CA] });
    try {
      await tls.handshake();
      await tls.write(
        enc.encode("GET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"),
      );
      assert.equal(await readFrom(tls), "", "served as the relayed client 192.0.2.77");
    } finally {
      tls.close();
      victim.close();
    }
  },
});

Deno.test("tls.sni: served where Deno.serve would take the listener (PROX_H1_ENGINE=deno, tracing)", async () => {
  // OTEL_DENO=true puts the listeners on Deno.serve as PROX_H1_ENGINE=deno does, and Deno.serve
  // takes one certificate: the others were dropped without a word.
  await using up = await startUpstream(() => new Response("ok"));
  Deno.env.set("PROX_H1_ENGINE", "deno");
  try {
    await using prox = await startProxy(config(up.url), { tls: true });
    assert.equal(await getAs(prox.port, "other.test"), "HTTP/1.1 200 OK ok");
    assert.equal(await getAs(prox.port, "localhost"), "HTTP/1.1 200 OK ok");
  } finally {
    Deno.env.delete("PROX_H1_ENGINE");
  }
});

interopTest("tls.sni: a name one certificate holds exactly beats another's wildcard", [
  "openssl",
], async () => {
  // other.pem holds *.other.test and comes first; www-other.pem holds www.other.test itself.
  await using up = await startUpstream(() => new Response("ok"));
  const www = `    - { cert_path: "${TLS}/www-other.pem", key_path: "${TLS}/other.key" }\n`;
  await using prox = await startProxy(config(up.url).replace("routes:", `${www}routes:`), {
    tls: true,
  });
  /** The subjectAltName of the certificate served to a ClientHello naming `name`. */
  const served = async (name: string) => {
    const hello = await run("openssl", [
      "s_client",
      "-connect",
      `127.0.0.1:${prox.port}`,
      "-servername",
      name,
      "-showcerts",
    ], { stdin: "" });
    const pem = hello.stdout.match(/-----BEGIN CERTIFICATE-----[^]*?-----END CERTIFICATE-----/);
    assert.ok(pem, `no certificate for ${name}: ${hello.stderr}`);
    const x = await run("openssl", ["x509", "-noout", "-ext", "subjectAltName"], { stdin: pem[0] });
    return x.stdout.split("\n")[1].trim();
  };
  assert.equal(await served("www.other.test"), "DNS:www.other.test");
  assert.equal(await served("api.other.test"), "DNS:other.test, DNS:*.other.test");
  assert.equal(await served("other.test"), "DNS:other.test, DNS:*.other.test");
  assert.match(await served("localhost"), /^DNS:localhost, /);
});

interopTest("tls.sni: the main certificate's exact name beats a tls.sni wildcard", [
  "openssl",
], async () => {
  // The main certificate names www.other.test itself; other.pem's *.other.test holds it too. As
  // with nginx's server_name and Caddy, the exact name wins, whichever certificate holds it.
  await using up = await startUpstream(() => new Response("ok"));
  const cfg = config(up.url)
    .replace(`${TLS}/cert.pem`, `${TLS}/www-other.pem`)
    .replace(`${TLS}/key.pem`, `${TLS}/other.key`);
  await using prox = await startProxy(cfg, { tls: true });
  assert.equal(await servedSan(prox.port, "www.other.test"), "DNS:www.other.test");
  assert.equal(await servedSan(prox.port, "WWW.Other.Test"), "DNS:www.other.test");
  assert.equal(await servedSan(prox.port, "api.other.test"), "DNS:other.test, DNS:*.other.test");
  // No name (an IP-literal connection): the main certificate.
  assert.equal(await servedSan(prox.port, null), "DNS:www.other.test");
});

/** The subjectAltName of the certificate served to a ClientHello naming `name` (none: null). */
async function servedSan(port: number, name: string | null): Promise<string> {
  const hello = await run("openssl", [
    "s_client",
    "-connect",
    `127.0.0.1:${port}`,
    ...(name === null ? ["-noservername"] : ["-servername", name]),
    "-showcerts",
  ], { stdin: "" });
  const pem = hello.stdout.match(/-----BEGIN CERTIFICATE-----[^]*?-----END CERTIFICATE-----/);
  assert.ok(pem, `no certificate for ${name}: ${hello.stderr}`);
  const x = await run("openssl", ["x509", "-noout", "-ext", "subjectAltName"], { stdin: pem[0] });
  return x.stdout.split("\n")[1].trim();
}

Deno.test("validate: a tls.sni certificate that is never chosen, or serves no route's host", () => {
  const OTHER = `{ cert_path: "${TLS}/other.pem", key_path: "${TLS}/other.key" }`;
  const MAIN = `{ cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }`;
  const issues = (sni: string, routes: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"\ntls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem", sni: [${sni}] }\n` +
        `routes:\n${routes}`,
      { file: "c.yaml", env: denoEnv },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  const both =
    "  other.test/: { type: static, root: . }\n  localhost/: { type: static, root: . }\n";
  assert.deepEqual(issues(OTHER, both), []);
  // Every name it holds an earlier one holds: the earlier one is always chosen.
  assert.match(
    issues(`${OTHER}, ${OTHER}`, both).join("\n"),
    /warning tls\.sni\.1\.cert_path: .*never chosen/,
  );
  // An exact name an earlier wildcard holds: the exact one is chosen for it.
  const WWW = `{ cert_path: "${TLS}/www-other.pem", key_path: "${TLS}/other.key" }`;
  const www = `${both}  www.other.test/: { type: static, root: . }\n`;
  assert.deepEqual(issues(`${OTHER}, ${WWW}`, www), []);
  // A wildcard behind an exact name of an earlier one: chosen for the other names under it.
  assert.deepEqual(issues(`${WWW}, ${OTHER}`, www), []);
  // The same exact name twice: the later one is never chosen.
  assert.match(issues(`${WWW}, ${WWW}`, www).join("\n"), /tls\.sni\.1\.cert_path: .*never chosen/);
  // The main certificate's names: chosen before it for them, which is not an error.
  assert.deepEqual(issues(`${OTHER}, ${MAIN}`, both), []);
  // Every route names its hosts, and it holds none of them.
  assert.match(
    issues(OTHER, "  localhost/: { type: static, root: . }\n").join("\n"),
    /warning tls\.sni\.0\.cert_path: .*holds none of the routes' hosts/,
  );
  assert.deepEqual(
    issues(OTHER, "  localhost/: { type: static, root: . }\n  /: { type: static, root: . }\n"),
    [],
  );
  assert.deepEqual(
    issues(OTHER, '  localhost/: { type: static, root: ., hosts: ["a.other.test"] }\n'),
    [],
  );
});

Deno.test("validate: a tls.sni certificate for IP addresses only is not chosen by clients", () => {
  // Clients send no server name when they connect to an address (RFC 6066 §3).
  const issues = (ip: string[], dns: string[] = []) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"\ntls: { cert_path: main.pem, key_path: main.key, sni: [{ cert_path: ip.pem, key_path: ip.key }] }\n` +
        `routes:\n  /: { type: static, root: . }\n`,
      {
        file: "c.yaml",
        env: {
          exists: () => true,
          certificate: (cert) => ({
            notAfter: Date.now() + 1e10,
            keyMatches: true,
            names: cert === "ip.pem" ? { dns, ip } : { dns: ["example.com"], ip: [] },
          }),
        },
      },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.match(
    issues(["10.0.0.1"]).join("\n"),
    /warning tls\.sni\.0\.cert_path: .*get the main certificate/,
  );
  assert.deepEqual(issues(["10.0.0.1"], ["internal.example"]), []);
});
