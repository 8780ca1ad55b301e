// HTTPS with h2 by ALPN, h2c with prior knowledge, the plain-HTTP redirect listener, HSTS and
// IPv6 listeners, checked with curl as an independent client.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { rawServer, readRequest, write } from "../_upstream_peers.ts";
import { recordingLogger } from "./_ws.ts";
import { loadSource, startServer } from "../../src/server.ts";

/** The protocol of the access record of the request to `path` (written once it is delivered). */
function loggedProtocol(logger: ReturnType<typeof recordingLogger>, path: string): unknown {
  return logger.records.find((r) => r.msg === "access" && r.path === path)?.protocol;
}

/** An upstream answering `body(req)` that records the Via header of every request it gets. */
async function viaUpstream(body: (req: Request) => string) {
  const via: (string | null)[] = [];
  const up = await startUpstream((req) => {
    via.push(req.headers.get("via"));
    return new Response(body(req));
  });
  return Object.assign(up, { via });
}

const TLS = `${ROOT}/tests/fixtures/tls`;

function tlsConfig(upstream: string, extra = ""): string {
  return `listen_addr: "127.0.0.1:0"
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
  hsts: { max_age: 1d, include_subdomains: true }
health_check: { enabled: false }
${extra}
routes:
  "/":
    type: proxy
    target: "${upstream}"
`;
}

interopTest("curl --http2 over TLS negotiates h2 through Prox, logged and forwarded as h2", [
  "curl",
], async () => {
  await using up = await viaUpstream((req) => `hello ${new URL(req.url).search}`);
  const logger = recordingLogger();
  await using prox = await startProxy(tlsConfig(up.url), { keepListen: true, tls: true, logger });
  const out = await run("curl", [
    "-sS",
    "--http2",
    "--cacert",
    `${TLS}/ca.pem`,
    "-w",
    "\n%{http_version} %{http_code}",
    "-D",
    "-",
    `https://localhost:${prox.port}/x?a=1`,
  ]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /hello \?a=1\n2 200$/);
  assert.match(out.stdout, /strict-transport-security: max-age=86400; includeSubDomains/i);
  assert.deepEqual(up.via, ["2 prox"]);
  assert.equal(await waitFor(() => loggedProtocol(logger, "/x"), { what: "access record" }), "h2");
});

interopTest("curl over HTTP/1.1 with TLS still works, logged as http/1.1", ["curl"], async () => {
  await using up = await viaUpstream(() => "h1");
  const logger = recordingLogger();
  await using prox = await startProxy(tlsConfig(up.url), { keepListen: true, tls: true, logger });
  const out = await run("curl", [
    "-sS",
    "--http1.1",
    "--cacert",
    `${TLS}/ca.pem`,
    "-w",
    " %{http_version}",
    `https://localhost:${prox.port}/`,
  ]);
  assert.equal(out.stdout, "h1 1.1", out.stderr);
  assert.deepEqual(up.via, ["1.1 prox"]);
  assert.equal(
    await waitFor(() => loggedProtocol(logger, "/"), { what: "access record" }),
    "http/1.1",
  );
});

interopTest("h2c with prior knowledge is served without TLS, logged as h2c", ["curl"], async () => {
  await using up = await viaUpstream(() => "plain");
  const logger = recordingLogger();
  await using prox = await startProxy(
    `
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
    { logger },
  );
  const out = await run("curl", [
    "-sS",
    "--http2-prior-knowledge",
    "-w",
    " %{http_version}",
    `${prox.url}/`,
  ]);
  assert.equal(out.stdout, "plain 2", out.stderr);
  assert.deepEqual(up.via, ["2 prox"]);
  assert.equal(await waitFor(() => loggedProtocol(logger, "/"), { what: "access record" }), "h2c");
});

Deno.test("the plain-HTTP listener redirects to HTTPS with 308, ACME challenges too when tls.acme is off", async () => {
  await using up = await startUpstream(() => new Response("secure"));
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const httpPort = (probe.addr as Deno.NetAddr).port;
  probe.close();
  await using prox = await startProxy(
    tlsConfig(up.url, `http_redirect: { listen_addr: "127.0.0.1:${httpPort}" }`),
    { keepListen: true, tls: true },
  );
  const res = await fetch(`http://127.0.0.1:${httpPort}/a/b?c=1`, { redirect: "manual" });
  await res.body?.cancel();
  assert.equal(res.status, 308);
  assert.equal(res.headers.get("location"), `https://127.0.0.1:${prox.port}/a/b?c=1`);
  // Without tls.acme, challenges are redirected too: a CA follows to a webroot route over HTTPS
  // (certbot --webroot renewing cert_path).
  const acme = await fetch(`http://127.0.0.1:${httpPort}/.well-known/acme-challenge/x`, {
    redirect: "manual",
  });
  await acme.body?.cancel();
  assert.equal(acme.status, 308);
  assert.equal(
    acme.headers.get("location"),
    `https://127.0.0.1:${prox.port}/.well-known/acme-challenge/x`,
  );
  // What raw clients send: the Location was built from Host unchecked ("a/b" moved the path,
  // "u@evil" added userinfo) and from a parsed, re-encoded URL (a signed query changed).
  const location = async (target: string, host: string) => {
    const head = await rawHead(httpPort, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    return /^location: (.*)$/m.exec(head)?.[1] ?? head.slice(0, head.indexOf("\r\n"));
  };
  const to = `:${prox.port}`;
  assert.equal(await location("/p?a=1", "evil.test/x"), "HTTP/1.1 400 Bad Request");
  assert.equal(await location("/p?a=1", "u@evil.test"), "HTTP/1.1 400 Bad Request");
  assert.equal(await location("/p", "[::1]:8080"), `https://[::1]${to}/p`);
  assert.equal(await location("/p", "a.test:"), `https://a.test${to}/p`);
  const signed = `/s/../t?sig='a%2Fb'&s="<q>"&u=|^`;
  assert.equal(await location(signed, "a.test"), `https://a.test${to}${signed}`);
  assert.equal(await location("/caf\u00e9", "a.test"), `https://a.test${to}/caf%C3%A9`);
  // Absolute form: the target's authority, not Host (RFC 9112 §3.2.2).
  assert.equal(await location("http://b.test/p", "a.test"), `https://b.test${to}/p`);
});

Deno.test("the plain-HTTP listener redirects only hosts a route takes, not any Host a client names", async () => {
  // As Caddy: a redirect is for the sites served. A Host no route takes would get a 404 over
  // HTTPS; redirected, it sends clients (or a cache in front) to whatever name the request gave.
  await using up = await startUpstream(() => new Response("secure"));
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const httpPort = (probe.addr as Deno.NetAddr).port;
  probe.close();
  await using prox = await startProxy(
    tlsConfig(up.url, `http_redirect: { listen_addr: "127.0.0.1:${httpPort}" }`)
      .replace('"/":', '"a.test/":\n    hosts: ["*.b.test", "[::1]"]'),
    { keepListen: true, tls: true },
  );
  const to = `:${prox.port}`;
  const answer = async (target: string, host: string) => {
    const head = await rawHead(httpPort, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    return /^location: (.*)$/m.exec(head)?.[1] ?? head.slice(0, head.indexOf("\r\n"));
  };
  assert.equal(await answer("/p?q=1", "a.test"), `https://a.test${to}/p?q=1`);
  assert.equal(await answer("/p", "A.Test.:80"), `https://A.Test.${to}/p`);
  assert.equal(await answer("/p", "x.b.test"), `https://x.b.test${to}/p`);
  assert.equal(await answer("/p", "[::1]:80"), `https://[::1]${to}/p`);
  assert.equal(await answer("/p", "evil.test"), "HTTP/1.1 404 Not Found");
  assert.equal(await answer("/p", "b.test"), "HTTP/1.1 404 Not Found");
  assert.equal(await answer("/p", "127.0.0.1"), "HTTP/1.1 404 Not Found");
  // Absolute form: its authority is the host redirected to (RFC 9112 §3.2.2), so it is checked.
  assert.equal(await answer("http://evil.test/p", "a.test"), "HTTP/1.1 404 Not Found");
});

/** The response head for one raw request on a fresh connection. */
async function rawHead(port: number, request: string): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await c.write(new TextEncoder().encode(request));
    let text = "";
    const buf = new Uint8Array(4096);
    while (!text.includes("\r\n\r\n")) {
      const n = await c.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text.slice(0, text.indexOf("\r\n\r\n"));
  } finally {
    c.close();
  }
}

Deno.test("certificate files: a key that is not the first certificate's is a config error (also on reload); an expired one a warning", async () => {
  const pair = (cert: string, key: string) =>
    tlsConfig("http://127.0.0.1:9").replace(`${TLS}/cert.pem`, cert).replace(`${TLS}/key.pem`, key);
  const issues = async (yaml: string) =>
    (await loadSource({ text: yaml, name: "p.yaml" })).issues.map((i) =>
      `${i.severity} ${i.path}: ${i.message}`
    );
  const dir = await Deno.makeTempDir();
  try {
    // The CA's key beside the leaf; the intermediate (here the CA) before the leaf.
    assert.deepEqual(await issues(pair(`${TLS}/cert.pem`, `${TLS}/ca.key`)), [
      `error tls.key_path: Private key ${TLS}/ca.key does not belong to the first certificate in ${TLS}/cert.pem`,
    ]);
    const chain = `${dir}/chain.pem`;
    await Deno.writeTextFile(
      chain,
      Deno.readTextFileSync(`${TLS}/ca.pem`) + Deno.readTextFileSync(`${TLS}/cert.pem`),
    );
    assert.match(
      (await issues(pair(chain, `${TLS}/key.pem`))).join(),
      /does not belong to the first certificate/,
    );
    await Deno.writeTextFile(`${dir}/junk.pem`, "not a certificate\n");
    assert.deepEqual(await issues(pair(`${dir}/junk.pem`, `${TLS}/key.pem`)), [
      `error tls.cert_path: Cannot read a PEM certificate from ${dir}/junk.pem`,
    ]);
    assert.deepEqual(await issues(pair(`${TLS}/expired.pem`, `${TLS}/expired.key`)), [
      `warning tls.cert_path: Certificate ${TLS}/expired.pem expired on 2020-02-01T00:00:00.000Z`,
    ]);
    assert.deepEqual(await issues(pair(`${TLS}/cert.pem`, `${TLS}/key.pem`)), []);
    // One file holding certificate and key, as the listener accepts it.
    const both = `${dir}/both.pem`;
    await Deno.writeTextFile(
      both,
      Deno.readTextFileSync(`${TLS}/cert.pem`) + Deno.readTextFileSync(`${TLS}/key.pem`),
    );
    assert.deepEqual(await issues(pair(both, both)), []);
    // A chain cut short: the listener refuses the whole file.
    const cut = `${dir}/cut.pem`;
    await Deno.writeTextFile(
      cut,
      Deno.readTextFileSync(`${TLS}/cert.pem`) +
        Deno.readTextFileSync(`${TLS}/ca.pem`).slice(0, 300),
    );
    assert.deepEqual(await issues(pair(cut, `${TLS}/key.pem`)), [
      `error tls.cert_path: The certificate chain in ${cut} is truncated or damaged (the listener cannot load it)`,
    ]);

    // A reload onto a mismatched pair is refused; the running certificate keeps serving.
    const file = `${dir}/prox.yaml`;
    await Deno.writeTextFile(file, pair(`${TLS}/cert.pem`, `${TLS}/key.pem`));
    const server = await startServer({ path: file }, { logger: recordingLogger(), watch: false });
    try {
      await Deno.writeTextFile(file, pair(`${TLS}/cert.pem`, `${TLS}/ca.key`));
      const result = await server.reload();
      assert.equal(result.ok, false);
      assert.match(result.issues![0].message, /does not belong to the first certificate/);
      const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${TLS}/ca.pem`)] });
      const res = await fetch(`https://localhost:${server.port}/-/nothing`, { client });
      await res.body?.cancel();
      client.close();
      assert.ok(res.status > 0);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest(
  "certificate files: a key Deno's TLS refuses is a config error, not a listener that fails to start",
  [
    "openssl",
  ],
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const issues = async (name: string, keyArgs: string[]) => {
        const [key, cert] = [`${dir}/${name}.key`, `${dir}/${name}.pem`];
        const made = await run("openssl", [
          "req",
          "-x509",
          ...keyArgs,
          "-nodes",
          "-keyout",
          key,
          "-out",
          cert,
          "-days",
          "30",
          "-subj",
          "/CN=localhost",
          "-addext",
          "subjectAltName=DNS:localhost",
        ]);
        assert.equal(made.code, 0, made.stderr);
        const yaml = tlsConfig("http://127.0.0.1:9").replace(`${TLS}/cert.pem`, cert)
          .replace(`${TLS}/key.pem`, key);
        return (await loadSource({ text: yaml, name: "p.yaml" })).issues.map((i) => i.message);
      };
      // Valid keys that rustls cannot use: `prox validate` said valid, then serve failed with
      // "failed to parse private key as RSA, ECDSA, or EdDSA".
      assert.match(
        (await issues("rsa1024", ["-newkey", "rsa:1024"])).join(),
        /RSA key of 1024 bits/,
      );
      assert.match((await issues("ed448", ["-newkey", "ed448"])).join(), /of type ed448/);
      const k1 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"];
      assert.match((await issues("k1", k1)).join(), /on curve secp256k1/);
      assert.deepEqual(
        await issues("p384", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]),
        [],
      );
      // Served, but browsers refuse Ed25519, Chromium P-521 (ERR_SSL_PROTOCOL_ERROR): warnings.
      assert.deepEqual(
        await issues("p521", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"]),
        [
          `Private key ${dir}/p521.key is ECDSA P-521, which Chrome and other Chromium browsers do not accept in TLS: their handshakes fail`,
        ],
      );
      assert.deepEqual(await issues("ed25519", ["-newkey", "ed25519"]), [
        `Private key ${dir}/ed25519.key is Ed25519, which browsers (Chrome, Firefox, Safari) do not accept in TLS: their handshakes fail`,
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("an IPv6 listen address serves over [::1]", async () => {
  await using up = await startUpstream(() => new Response("v6"));
  let server;
  try {
    server = await startProxy(
      `listen_addr: "[::1]:0"
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
      { keepListen: true },
    );
  } catch (err) {
    // A machine without IPv6 loopback cannot run this test.
    if (String(err).includes("Address not available")) return;
    throw err;
  }
  await using prox = server;
  const res = await fetch(`http://[::1]:${prox.port}/`);
  assert.equal(await res.text(), "v6");
});

Deno.test("a dual-stack listener names an IPv4 client as IPv4, not ::ffff:a.b.c.d", async () => {
  await using up = await startUpstream((req) =>
    new Response(`${req.headers.get("x-forwarded-for")} | ${req.headers.get("forwarded")}`)
  );
  let server;
  try {
    server = await startProxy(
      `listen_addr: "[::]:0"
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}", forwarded: true } }
`,
      { keepListen: true },
    );
  } catch (err) {
    if (String(err).includes("Address not available")) return; // no IPv6 here
    throw err;
  }
  await using prox = server;
  const res = await fetch(`http://127.0.0.1:${prox.port}/`);
  // Was "::ffff:127.0.0.1 | for=\"[::ffff:127.0.0.1]\"…": an IPv4 allowlist upstream refused it.
  assert.match(await res.text(), /^127\.0\.0\.1 \| for=127\.0\.0\.1;/);
});

interopTest("h2load drives h2c requests through Prox without errors", ["h2load"], async () => {
  await using up = await startUpstream(() => new Response("x".repeat(100)));
  await using prox = await startProxy(`
health_check: { enabled: false }
log: { access_log: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
  const out = await run("h2load", ["-n", "400", "-c", "4", "-m", "8", `${prox.url}/`]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed/);
  assert.match(out.stdout, /Application protocol: h2c/);
});

interopTest("an upstream Content-Length reaches an h2 client as one value, and never on a 204", [
  "curl",
], async () => {
  const heads: Record<string, string> = {
    twice: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok",
    none: "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
    reset: "HTTP/1.1 205 Reset Content\r\ncontent-length: 5\r\n\r\nhello",
  };
  await using up = rawServer(async (c) => {
    const head = await readRequest(c);
    if (head === null) return;
    await write(c, heads[head.slice(head.indexOf("/") + 1, head.indexOf(" HTTP/"))]);
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}", retries: { attempts: 0 } } }
`);
  const get = (name: string) =>
    run("curl", ["-sS", "-i", "--http2-prior-knowledge", `${prox.url}/${name}`]);
  // Combined into "2, 2", or a length on a response without content: curl's HTTP/2 layer
  // refused both (PROTOCOL_ERROR).
  const twice = await get("twice");
  assert.equal(twice.code, 0, twice.stderr);
  assert.match(twice.stdout, /^content-length: 2\r$/m);
  assert.match(twice.stdout, /\r\n\r\nok$/);
  for (const name of ["none", "reset"]) {
    const out = await get(name);
    assert.equal(out.code, 0, `${name}: ${out.stderr}`);
    assert.match(out.stdout, /^HTTP\/2 20[45] /);
    assert.doesNotMatch(out.stdout, /content-length: 5/);
  }
});
