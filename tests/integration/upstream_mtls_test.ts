// Mutual TLS to upstreams (`tls.client_cert` and `tls.client_key`): Prox presents a client
// certificate to a Node.js upstream that refuses connections without one signed by the test CA,
// over HTTP/1.1 (Prox's own client through node:tls, with `server_name`, with a PROXY protocol
// header first, with `insecure_skip_verify`), over HTTP/2 (fetch), to a WebSocket upstream, to a
// forward_auth service and in health checks.
import assert from "node:assert/strict";
import { interopTest, ROOT, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { nodeServer } from "./_node.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { denoEnv } from "../../src/adapters/config_source.ts";
import { memoryLogger } from "./_acme.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const CLIENT = `client_cert: "${TLS}/cert.pem", client_key: "${TLS}/key.pem"`;

/**
 * Node.js servers that ask for a client certificate and refuse a handshake without one the test
 * CA signed: HTTPS (HTTP/1.1, with a WebSocket upgrade that sends one text message) and HTTP/2.
 * Each answer names the client certificate's subject CN, the HTTP version and the path.
 */
async function mtlsUpstream() {
  const script = `
    const https = require("node:https");
    const http2 = require("node:http2");
    const crypto = require("node:crypto");
    const fs = require("node:fs");
    const opts = {
      cert: fs.readFileSync(${JSON.stringify(`${TLS}/cert.pem`)}),
      key: fs.readFileSync(${JSON.stringify(`${TLS}/key.pem`)}),
      ca: fs.readFileSync(${JSON.stringify(`${TLS}/ca.pem`)}),
      requestCert: true,
      rejectUnauthorized: true,
    };
    const who = (socket) => socket.getPeerCertificate().subject.CN;
    const answer = (req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ cn: who(req.socket), version: req.httpVersion, path: req.url }));
    };
    const h1 = https.createServer(opts, answer);
    h1.on("upgrade", (req, socket) => {
      const accept = crypto.createHash("sha1")
        .update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
        .digest("base64");
      const msg = Buffer.from("hello " + who(socket));
      socket.write("HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\n" +
        "Connection: Upgrade\\r\\nSec-WebSocket-Accept: " + accept + "\\r\\n\\r\\n");
      socket.write(Buffer.concat([Buffer.from([0x81, msg.length]), msg]));
      socket.on("data", () => {});
    });
    const h2 = http2.createSecureServer({ ...opts, allowHTTP1: false }, answer);
    h1.listen(0, "127.0.0.1", () => h2.listen(0, "127.0.0.1", () =>
      console.log(h1.address().port + " " + h2.address().port)));
  `;
  const node = await nodeServer(script);
  const [h1, h2] = node.line.split(" ").map(Number);
  return { h1, h2, [Symbol.asyncDispose]: () => node[Symbol.asyncDispose]() };
}

/**
 * A TCP front for `port` that takes the PROXY protocol v1 line off each connection, keeps it,
 * and relays the rest (the TLS handshake onwards) unchanged.
 */
function proxyProtocolFront(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const lines: string[] = [];
  const conns = new Set<Deno.Conn>();
  const relay = async (client: Deno.Conn) => {
    const buf = new Uint8Array(256);
    let got = 0;
    let end = -1;
    while (end < 0) {
      const n = await client.read(buf.subarray(got));
      if (n === null) return client.close();
      got += n;
      end = buf.subarray(0, got).findIndex((b, i) => b === 13 && buf[i + 1] === 10);
    }
    lines.push(new TextDecoder().decode(buf.subarray(0, end)));
    const up = await Deno.connect({ hostname: "127.0.0.1", port });
    conns.add(up);
    await up.write(buf.subarray(end + 2, got));
    await Promise.allSettled([
      client.readable.pipeTo(up.writable),
      up.readable.pipeTo(client.writable),
    ]);
  };
  (async () => {
    for await (const c of listener) {
      conns.add(c);
      relay(c).catch(() => {});
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    lines,
    [Symbol.dispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

function config(target: string, tls: string, extra = "") {
  return `
health_check: { enabled: false }
routes:
  /:
    type: proxy
    target: "${target}"
    tls: { ${tls} }
${extra}`;
}

interopTest("client_cert: an upstream that requires a client certificate gets Prox's", [
  "node",
], async () => {
  await using up = await mtlsUpstream();
  await using prox = await startProxy(
    config(`https://localhost:${up.h1}`, `ca_cert: "${TLS}/ca.pem", ${CLIENT}`) +
      `  /none:
    type: proxy
    target: "https://localhost:${up.h1}"
    tls: { ca_cert: "${TLS}/ca.pem" }
  /expired:
    type: proxy
    target: "https://localhost:${up.h1}"
    tls: { ca_cert: "${TLS}/ca.pem", client_cert: "${TLS}/expired.pem", client_key: "${TLS}/expired.key" }
  /untrusted:
    type: proxy
    target: "https://localhost:${up.h1}"
    tls: { ${CLIENT} }
`,
  );
  const res = await fetch(`${prox.url}/x?y=1`, { method: "POST", body: "b" });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { cn: "localhost", version: "1.1", path: "/x?y=1" });
  // Kept alive: the second request reuses the pooled connection and its certificate.
  const again = await fetch(`${prox.url}/x`);
  assert.equal((await again.json()).cn, "localhost");
  // Without a certificate, with an expired one, and (certificate or not) with the upstream's
  // certificate unverifiable: no answer from the upstream.
  for (const path of ["/none", "/expired", "/untrusted"]) {
    const r = await fetch(`${prox.url}${path}`);
    await r.body?.cancel();
    assert.equal(r.status, 502, path);
  }
});

interopTest("client_cert with server_name: the name verified is server_name, not the IP", [
  "node",
], async () => {
  await using up = await mtlsUpstream();
  const route = (key: string, name: string) =>
    `  ${key}:
    type: proxy
    target: "https://127.0.0.1:${up.h1}"
    tls: { ca_cert: "${TLS}/ca.pem", server_name: ${name}, ${CLIENT} }
`;
  await using prox = await startProxy(
    `health_check: { enabled: false }\nroutes:\n${route("/", "localhost")}` +
      route("/other", "other.test"),
  );
  const res = await fetch(`${prox.url}/`);
  assert.equal(res.status, 200);
  assert.equal((await res.json()).cn, "localhost");
  const other = await fetch(`${prox.url}/other`);
  await other.body?.cancel();
  assert.equal(other.status, 502); // the certificate does not name other.test
});

interopTest("client_cert over HTTP/2: an upstream that picks h2 by ALPN gets the certificate", [
  "node",
], async () => {
  await using up = await mtlsUpstream();
  await using prox = await startProxy(
    config(`https://localhost:${up.h2}`, `ca_cert: "${TLS}/ca.pem", ${CLIENT}`),
  );
  // A request fetch sends as built goes over HTTP/2 (see README, "TLS upstreams").
  const h = {
    "user-agent": "t",
    accept: "*/*",
    "accept-language": "en",
    "accept-encoding": "identity",
  };
  await waitFor(async () => {
    const res = await fetch(`${prox.url}/h2`, { headers: h });
    const body = await res.json();
    assert.equal(res.status, 200);
    assert.equal(body.cn, "localhost");
    return body.version === "2.0" ? body : null;
  });
});

interopTest("client_cert with proxy_protocol and insecure_skip_verify: header first, then TLS", [
  "node",
], async () => {
  await using up = await mtlsUpstream();
  using front = proxyProtocolFront(up.h1);
  await using prox = await startProxy(
    config(
      `https://localhost:${front.port}`,
      `insecure_skip_verify: true, ${CLIENT}`,
      "    proxy_protocol: v1\n",
    ),
  );
  const res = await fetch(`${prox.url}/pp`);
  assert.equal(res.status, 200);
  assert.equal((await res.json()).cn, "localhost");
  // The destination is the listener's port with the unspecified address (README).
  assert.match(front.lines[0], /^PROXY TCP4 127\.0\.0\.1 0\.0\.0\.0 \d+ \d+$/);
});

interopTest("client_cert on websocket routes, forward_auth and health checks", [
  "node",
], async () => {
  await using up = await mtlsUpstream();
  const tls = `{ ca_cert: "${TLS}/ca.pem", ${CLIENT} }`;
  await using prox = await startProxy(`
health_check: { enabled: true, interval_secs: 1, path: /health }
routes:
  /ws:
    type: websocket
    target: "wss://localhost:${up.h1}"
    tls: ${tls}
  /auth:
    type: proxy
    target: "https://localhost:${up.h1}"
    tls: ${tls}
    forward_auth:
      url: "https://localhost:${up.h1}/verify"
      tls: ${tls}
  /noauth:
    type: proxy
    target: "https://localhost:${up.h1}"
    tls: ${tls}
    forward_auth:
      url: "https://localhost:${up.h1}/verify"
      tls: { ca_cert: "${TLS}/ca.pem" }
  /bare:
    type: proxy
    target: "https://127.0.0.1:${up.h1}"
    tls: { ca_cert: "${TLS}/ca.pem", server_name: localhost }
`);
  const ws = new WebSocket(`ws://127.0.0.1:${prox.port}/ws`);
  const msg = await new Promise<string>((resolve, reject) => {
    ws.onmessage = (e) => resolve(String(e.data));
    ws.onerror = () => reject(new Error("WebSocket failed"));
  });
  ws.close();
  assert.equal(msg, "hello localhost");
  const auth = await fetch(`${prox.url}/auth/x`);
  assert.equal(auth.status, 200);
  assert.equal((await auth.json()).path, "/x"); // the route's prefix is stripped
  // The same service asked without a certificate cannot be reached: refused.
  const noauth = await fetch(`${prox.url}/noauth/x`);
  await noauth.body?.cancel();
  assert.notEqual(noauth.status, 200);
  assert.ok(noauth.status >= 500, String(noauth.status));
  // The probes carry the certificate: its target is up once the one probed without is down.
  const status = (id: string) => prox.server.upstreams.list().find((u) => u.id === id)?.status;
  await waitFor(() => status(`https://127.0.0.1:${up.h1}`) === "down", { what: "bare down" });
  assert.equal(status(`https://localhost:${up.h1}`), "up");
});

Deno.test("validate: a client_key not client_cert's is an error, an expired client_cert a warning", () => {
  // Every handshake failed ("unsupported protocol"), was retried and counted against the upstream.
  const issues = (cert: string, key: string) =>
    loadConfigText(
      config("https://localhost:8443", `client_cert: "${cert}", client_key: "${key}"`)
        .replace("health_check", 'listen_addr: "127.0.0.1:3000"\nhealth_check'),
      { file: "c.yaml", env: denoEnv },
    ).issues.map((i) => `${i.path}: ${i.message}`);
  assert.deepEqual(issues(`${TLS}/cert.pem`, `${TLS}/key.pem`), []);
  // Expired: upstreams refuse it (every request a 502), and a reload to it went through quietly.
  assert.deepEqual(issues(`${TLS}/expired.pem`, `${TLS}/expired.key`), [
    `routes./.tls.client_cert: Client certificate ${TLS}/expired.pem expired on ` +
    "2020-02-01T00:00:00.000Z",
  ]);
  // The leaf must come first: the CA's certificate before it was taken for the client's.
  const dir = Deno.makeTempDirSync();
  Deno.writeTextFileSync(
    `${dir}/chain.pem`,
    Deno.readTextFileSync(`${TLS}/ca.pem`) + Deno.readTextFileSync(`${TLS}/cert.pem`),
  );
  assert.match(
    issues(`${dir}/chain.pem`, `${TLS}/key.pem`).join(),
    /not the private key of the first/,
  );
  // An encrypted key in the traditional form (openssl genrsa -aes256 -traditional, openssl ec
  // -aes256) has no ENCRYPTED in its BEGIN line: it passed, and every handshake failed.
  Deno.writeTextFileSync(
    `${dir}/enc.key`,
    "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n" +
      "DEK-Info: AES-256-CBC,11C29E052639D181C3169F681282EB77\n\nAAAA\n" +
      "-----END RSA PRIVATE KEY-----\n",
  );
  assert.deepEqual(issues(`${TLS}/cert.pem`, `${dir}/enc.key`), [
    `routes./.tls.client_key: ${dir}/enc.key is encrypted: Prox cannot ask for its passphrase`,
  ]);
  Deno.removeSync(dir, { recursive: true });
  assert.deepEqual(issues(`${TLS}/cert.pem`, `${TLS}/expired.key`), [
    `routes./.tls.client_key: ${TLS}/expired.key is not the private key of the first certificate in ` +
    `${TLS}/cert.pem`,
  ]);
});

interopTest("client_cert refused by the upstream: the log says the certificate may be why", [
  "node",
], async () => {
  await using up = await mtlsUpstream();
  const logger = memoryLogger();
  await using prox = await startProxy(
    config(
      `https://localhost:${up.h1}`,
      `ca_cert: "${TLS}/ca.pem", client_cert: "${TLS}/expired.pem", ` +
        `client_key: "${TLS}/expired.key"`,
    ),
    { logger },
  );
  // TLS 1.3: the upstream checks the certificate after the client's handshake is done, and
  // closes the connection (node:tls in Deno does not pass on its alert).
  const res = await fetch(`${prox.url}/x`);
  await res.body?.cancel();
  assert.equal(res.status, 502);
  const line = logger.lines.find((l) => l.startsWith("warn Request failed"));
  assert.match(
    line ?? "",
    /may not accept the client certificate \(tls\.client_cert\)/,
    logger.lines.join("\n"),
  );
});

interopTest("client_cert: a rotated certificate file is what new connections present", [
  "node",
], async () => {
  await using up = await mtlsUpstream();
  const dir = await Deno.makeTempDir();
  try {
    const install = async (cert: string, key: string) => {
      // The key first: the pair is checked, and a reload between the two writes is refused.
      await Deno.writeTextFile(`${dir}/client.key`, await Deno.readTextFile(`${TLS}/${key}`));
      await Deno.writeTextFile(`${dir}/client.pem`, await Deno.readTextFile(`${TLS}/${cert}`));
    };
    await install("expired.pem", "expired.key");
    const tls = `{ ca_cert: "${TLS}/ca.pem", client_cert: "${dir}/client.pem", ` +
      `client_key: "${dir}/client.key" }`;
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  /h1:
    type: proxy
    target: "https://localhost:${up.h1}"
    tls: ${tls}
  /h2:
    type: proxy
    target: "https://localhost:${up.h2}"
    tls: ${tls}
`,
    );
    const server = await startServer({ path: `${dir}/config.yaml` }, {
      logger: silentLogger,
      watchDebounceMs: 20,
    });
    try {
      const get = async (path: string) => {
        // As built, so that it goes over HTTP/2 (see "client_cert over HTTP/2").
        const headers = {
          "user-agent": "t",
          accept: "*/*",
          "accept-language": "en",
          "accept-encoding": "identity",
        };
        const res = await fetch(`http://127.0.0.1:${server.port}${path}`, { headers });
        if (res.status !== 200) return (await res.body?.cancel(), res.status);
        const body = await res.json();
        return `${body.cn} ${body.version}`;
      };
      assert.equal(await get("/h1"), 502);
      assert.equal(await get("/h2"), 502);
      await install("cert.pem", "key.pem");
      await waitFor(async () => await get("/h1") === "localhost 1.1", {
        what: "h1 with the new one",
      });
      assert.equal(await get("/h2"), "localhost 2.0");
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("validate: tls on a route none of whose targets is https warns that it does nothing", () => {
  // A client certificate on an http:// or unix: target was never presented, without a word.
  const warnings = (routes: string) =>
    loadConfigText(`listen_addr: "127.0.0.1:3000"\nroutes:\n${routes}`, {
      file: "c.yaml",
      env: { exists: () => true },
    }).issues.map((i) => `${i.path}: ${i.message}`);
  const tls = "tls: { server_name: a.test }";
  assert.deepEqual(warnings(`  /: { type: proxy, target: "http://127.0.0.1:8080", ${tls} }\n`), [
    "routes./.tls: tls has no effect: no target of the route is https:// (http:// and unix: " +
    "targets are reached without TLS)",
  ]);
  assert.equal(warnings(`  /: { type: proxy, target: "unix:/run/a.sock", ${tls} }\n`).length, 1);
  assert.equal(
    warnings(`  /: { type: websocket, target: "ws://127.0.0.1:8080", tls: {} }\n`).length,
    1,
  );
  assert.deepEqual(
    warnings(`  /: { type: proxy, target: "https://127.0.0.1:8443", ${tls} }\n`),
    [],
  );
  assert.deepEqual(
    warnings(`  /: { type: websocket, target: "wss://127.0.0.1:8443", tls: {} }\n`),
    [],
  );
  // A mirror to an https target takes the route's tls.
  assert.deepEqual(
    warnings(
      `  /: { type: proxy, target: "http://127.0.0.1:8080", ${tls}, ` +
        `mirror: { target: "https://127.0.0.1:8443" } }\n`,
    ),
    [],
  );
  assert.deepEqual(
    warnings(
      `  /: { type: load_balance, targets: ["http://127.0.0.1:1", "https://127.0.0.1:2"], ${tls} }\n`,
    ),
    [],
  );
  // forward_auth alike.
  assert.deepEqual(
    warnings(
      `  /: { type: proxy, target: "https://127.0.0.1:8443", ` +
        `forward_auth: { url: "http://127.0.0.1:9000/auth", ${tls} } }\n`,
    ),
    [
      "routes./.forward_auth.tls: tls has no effect: the forward_auth url is not https://",
    ],
  );
  assert.deepEqual(
    warnings(
      `  /: { type: proxy, target: "https://127.0.0.1:8443", ` +
        `forward_auth: { url: "https://127.0.0.1:9000/auth", ${tls} } }\n`,
    ),
    [],
  );
});

interopTest("validate: an X.509 v1 client_cert warns that HTTP/2 and WebSocket upstreams fail", [
  "openssl",
], async () => {
  // `openssl x509 -req` without -extfile (the tutorials' way) makes a v1 certificate: Deno's
  // HTTP client refuses to load it ("invalid peer certificate: UnsupportedCertVersion").
  const dir = await Deno.makeTempDir();
  try {
    const sh = (args: string[]) => new Deno.Command("openssl", { args, stderr: "null" }).output();
    await sh([
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      `${dir}/v1.key`,
      "-out",
      `${dir}/v1.csr`,
      "-subj",
      "/CN=v1",
    ]);
    await sh([
      "x509",
      "-req",
      "-in",
      `${dir}/v1.csr`,
      "-CA",
      `${TLS}/ca.pem`,
      "-CAkey",
      `${TLS}/ca.key`,
      "-set_serial",
      "7",
      "-days",
      "30",
      "-out",
      `${dir}/v1.pem`,
    ]);
    const issues = loadConfigText(
      `listen_addr: "127.0.0.1:3000"\n` +
        config(
          "https://localhost:8443",
          `client_cert: "${dir}/v1.pem", client_key: "${dir}/v1.key"`,
        ),
      { file: "c.yaml", env: denoEnv },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
    assert.deepEqual(issues, [
      `warning routes./.tls.client_cert: Client certificate ${dir}/v1.pem is X.509 version 1: ` +
      "Deno's HTTP client cannot present it, so requests that go over HTTP/2 and WebSocket " +
      "connections to the upstream fail",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest("client_cert refused in a TLS 1.2 handshake: the log says the certificate may be why", [
  "node",
], async () => {
  // TLS 1.2 judges the client's certificate inside the handshake; node:tls in Deno drops the
  // alert and said only "Client network socket disconnected before secure TLS connection…".
  const script = `
    const https = require("node:https");
    const fs = require("node:fs");
    const s = https.createServer({
      maxVersion: "TLSv1.2",
      cert: fs.readFileSync(${JSON.stringify(`${TLS}/cert.pem`)}),
      key: fs.readFileSync(${JSON.stringify(`${TLS}/key.pem`)}),
      ca: fs.readFileSync(${JSON.stringify(`${TLS}/ca.pem`)}),
      requestCert: true,
      rejectUnauthorized: true,
    }, (req, res) => res.end("ok"));
    s.listen(0, "127.0.0.1", () => console.log(s.address().port));
  `;
  await using node = await nodeServer(script);
  const port = Number(node.line);
  {
    const logger = memoryLogger();
    await using prox = await startProxy(
      config(
        `https://localhost:${port}`,
        `ca_cert: "${TLS}/ca.pem", client_cert: "${TLS}/expired.pem", ` +
          `client_key: "${TLS}/expired.key"`,
      ) + `  /ok:\n    type: proxy\n    target: "https://localhost:${port}"\n` +
        `    tls: { ca_cert: "${TLS}/ca.pem", ${CLIENT} }\n`,
      { logger },
    );
    const ok = await fetch(`${prox.url}/ok`);
    assert.equal(await ok.text(), "ok");
    const res = await fetch(`${prox.url}/x`);
    await res.body?.cancel();
    assert.equal(res.status, 502);
    const line = logger.lines.find((l) => l.startsWith("warn Request failed"));
    assert.match(
      line ?? "",
      /may not accept the client certificate \(tls\.client_cert\)/,
      logger.lines.join("\n"),
    );
  }
});
