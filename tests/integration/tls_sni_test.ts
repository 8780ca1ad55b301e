// Several certificates on one listener (`tls.sni`): the name a client asks for in its ClientHello
// picks the certificate (one naming it, else the main one), over HTTP/1.1 and HTTP/2, behind a
// balancer that sends PROXY protocol headers, and after a reload that adds one; with real clients
// (Deno's TLS, curl) that verify the certificate they get against the test CA.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { readFrom } from "./_raw_client.ts";
import { loadConfigText } from "../../src/config/load.ts";
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
      assert.equal(await getAs(server.port, "other.test"), "HTTP/1.1 200 OK ok");
    } finally {
      await server.shutdown();
    }
  });
});
