// Mutual TLS on the main listener (`tls.client_auth`): clients present a certificate the CA file
// vouches for, the routes and upstreams see who they are through the `{tls_client_*}`
// placeholders, and a client without one (or with a stranger's) is refused in the handshake.
// Clients: Deno's fetch (rustls) with a client certificate, curl over HTTP/1.1 and HTTP/2.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { startOcsp } from "../_ocsp.ts";
import { pemBlocks } from "../../src/domain/crl.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { denoEnv } from "../../src/adapters/config_source.ts";
import { startServer } from "../../src/server.ts";
import type { ConfigError } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const CA = Deno.readTextFileSync(`${TLS}/ca.pem`);
const ALICE = { cert: Deno.readTextFileSync(`${TLS}/alice.pem`), key: `${TLS}/alice.key` };

/** The upstream echoes what Prox told it of the client, as JSON. */
const config = (upstream: string, mode = "require", extra = "") => `
health_check: { enabled: false }
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
  client_auth: { ca_cert: "${TLS}/ca.pem", mode: ${mode} }
${extra}routes:
  /:
    type: proxy
    target: "${upstream}"
    request_headers:
      set:
        X-Client-Subject: "{tls_client_subject}"
        X-Client-Issuer: "{tls_client_issuer}"
        X-Client-Serial: "{tls_client_serial}"
        X-Client-Fingerprint: "{tls_client_fingerprint}"
        X-Client-San: "{tls_client_san}"
        X-Client-Cert: "{tls_client_cert}"
`;

const echo = () =>
  startUpstream((req) =>
    Response.json(Object.fromEntries([...req.headers].filter(([k]) => k.startsWith("x-client-"))))
  );

/** curl's arguments to trust the test CA and present alice's certificate. */
const CURL_AS_ALICE = [
  "--cacert",
  `${TLS}/ca.pem`,
  "--cert",
  `${TLS}/alice.pem`,
  "--key",
  `${TLS}/alice.key`,
];
const STRANGER = { cert: Deno.readTextFileSync(`${TLS}/stranger.pem`), key: `${TLS}/stranger.key` };

/** An EC P-256 key and request (or self-signed certificate, with -x509): openssl's arguments. */
const P256 = "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/**
 * A bash script making, in its directory, a root CA (root.pem, root.key) and an intermediate it
 * issued (int.pem, int.key) with serial `serial` and the extensions lines `ext` besides CA:TRUE.
 */
const rootAndIntermediate = (serial: string, ext = "") =>
  `${P256} -x509 -days 1 -keyout root.key -out root.pem -subj /CN=Root \\
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
${P256} -keyout int.key -out int.csr -subj /CN=Intermediate
printf 'basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\n${ext}' > int.ext
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -set_serial ${serial} -days 1 \\
  -extfile int.ext -out int.pem
`;

/**
 * Runs `fn` with a temporary directory (removed after) and `sh`, which runs a bash script there
 * (`set -e`) and fails the test when it fails.
 */
async function inTempDir(
  prefix: string,
  fn: (dir: string, sh: (script: string) => Promise<void>) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  const sh = async (script: string) => {
    const r = await run("bash", ["-c", `set -e\ncd "${dir}"\n${script}`]);
    assert.equal(r.code, 0, r.stderr);
  };
  try {
    await fn(dir, sh);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Asserts that a GET to `url` presenting `who`'s certificate (or none) fails its handshake. */
async function refused(url: string, who?: { cert: string; key: string }): Promise<void> {
  using c = client(who);
  await assert.rejects(() => fetch(url, { client: c }).then((r) => r.text()), TypeError);
}

/** A Deno HTTP client that trusts the test CA and presents `who`'s certificate, if any. */
function client(who?: { cert: string; key: string }): Deno.HttpClient {
  return Deno.createHttpClient({
    caCerts: [CA],
    ...(who ? { cert: who.cert, key: Deno.readTextFileSync(who.key) } : {}),
  });
}

Deno.test("tls.client_auth require: a client certificate from the CA gets through, and the upstream learns who it is", async () => {
  await using up = await echo();
  const access: Record<string, unknown>[] = [];
  const logger: Logger = {
    ...silentLogger,
    info: (m, f) => void (m === "access" && access.push(f!)),
  };
  await using prox = await startProxy(config(up.url), { tls: true, logger });
  using alice = client(ALICE);
  const res = await fetch(`https://localhost:${prox.port}/`, {
    client: alice,
    // A client's own claim is replaced by what the certificate says.
    headers: { "X-Client-Subject": "CN=admin" },
  });
  assert.equal(res.status, 200);
  const seen = await res.json();
  const x = new X509Certificate(ALICE.cert);
  assert.equal(seen["x-client-subject"], "CN=alice,O=Prox Test");
  assert.equal(seen["x-client-issuer"], "CN=Prox Test CA");
  assert.equal(seen["x-client-serial"], x.serialNumber.toUpperCase());
  assert.equal(seen["x-client-fingerprint"], x.fingerprint256.replaceAll(":", "").toLowerCase());
  assert.equal(seen["x-client-san"], "URI:spiffe://prox.test/alice");
  // The PEM, URL-encoded on one line: the same certificate.
  const pem = decodeURIComponent(seen["x-client-cert"]);
  assert.equal(new X509Certificate(pem).fingerprint256, x.fingerprint256);
  // The access line names the client.
  await waitFor(() => access.length === 1);
  assert.equal(access[0].tlsClient, "CN=alice,O=Prox Test");
});

Deno.test("tls.client_auth require: no certificate, or one the CA did not issue, fails the handshake", async () => {
  await using up = await echo();
  await using prox = await startProxy(config(up.url), { tls: true });
  await refused(`https://localhost:${prox.port}/`);
  await refused(`https://localhost:${prox.port}/`, STRANGER);
  // The listener still serves a client that has one.
  using alice = client(ALICE);
  const res = await fetch(`https://localhost:${prox.port}/`, { client: alice });
  assert.equal((await res.json())["x-client-subject"], "CN=alice,O=Prox Test");
  // A request the engine refuses itself is answered (then its side of the connection is ended).
  using once = client(ALICE);
  const long = await fetch(`https://localhost:${prox.port}/`, {
    client: once,
    headers: { "x-big": "x".repeat(70_000) },
  });
  assert.equal(long.status, 431);
  await long.body?.cancel();
});

Deno.test("tls.client_auth verify_if_given: a client may present none, but not a stranger's", async () => {
  await using up = await echo();
  await using prox = await startProxy(config(up.url, "verify_if_given"), { tls: true });
  using anonymous = client();
  const res = await fetch(`https://localhost:${prox.port}/`, {
    client: anonymous,
    headers: { "X-Client-Subject": "CN=admin" },
  });
  assert.equal(res.status, 200);
  // No certificate: the placeholders are empty, and the client's own claim is gone.
  assert.equal((await res.json())["x-client-subject"], "");
  using alice = client(ALICE);
  const res2 = await fetch(`https://localhost:${prox.port}/`, { client: alice });
  assert.equal((await res2.json())["x-client-subject"], "CN=alice,O=Prox Test");
  await refused(`https://localhost:${prox.port}/`, STRANGER);
});

interopTest("tls.client_auth with curl over HTTP/1.1 and HTTP/2", ["curl"], async () => {
  await using up = await echo();
  await using prox = await startProxy(config(up.url), { tls: true });
  for (const version of ["--http1.1", "--http2"]) {
    const out = await run("curl", [
      "-sS",
      version,
      ...CURL_AS_ALICE,
      "-w",
      "\n%{http_version}",
      `https://localhost:${prox.port}/`,
    ]);
    const [body, httpVersion] = out.stdout.trim().split("\n");
    assert.equal(httpVersion, version === "--http2" ? "2" : "1.1", out.stderr);
    assert.equal(JSON.parse(body)["x-client-subject"], "CN=alice,O=Prox Test");
    const refused = await run("curl", [
      "-sS",
      version,
      "--cacert",
      `${TLS}/ca.pem`,
      `https://localhost:${prox.port}/`,
    ]);
    assert.notEqual(refused.code, 0, `${version} without a certificate: ${refused.stdout}`);
  }
  // An absolute-form request line is relayed to Deno.serve, which hears of the certificate from
  // the engine as of the client's address.
  const relayed = () => prox.server.listeners[0].counts!.relayed;
  const before = relayed();
  const out = await run("curl", [
    "-sS",
    "--http1.1",
    ...CURL_AS_ALICE,
    "--request-target",
    `https://localhost:${prox.port}/`,
    `https://localhost:${prox.port}/`,
  ]);
  assert.equal(relayed(), before + 1, "relayed to Deno.serve");
  assert.equal(JSON.parse(out.stdout)["x-client-subject"], "CN=alice,O=Prox Test", out.stderr);
});

interopTest("tls.client_auth: a connection Prox closes ends with TLS close_notify (openssl)", [
  "openssl",
], async () => {
  await using up = await echo();
  await using prox = await startProxy(config(up.url), { tls: true });
  const out = await run("openssl", [
    "s_client",
    "-connect",
    `127.0.0.1:${prox.port}`,
    "-servername",
    "localhost",
    "-CAfile",
    `${TLS}/ca.pem`,
    "-cert",
    `${TLS}/alice.pem`,
    "-key",
    `${TLS}/alice.key`,
    "-quiet",
    "-ign_eof",
  ], { stdin: "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" });
  assert.match(out.stdout, /"x-client-subject":"CN=alice,O=Prox Test"/);
  // Without close_notify OpenSSL 3 reports the end of TCP as a truncated answer.
  assert.doesNotMatch(out.stderr, /unexpected eof/, out.stderr);
});

Deno.test("tls.client_auth: a reload turns it on and off on the running listener", async () => {
  await using up = await echo();
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  const write = (auth: boolean) =>
    Deno.writeTextFile(
      file,
      `listen_addr: "127.0.0.1:0"\n${config(up.url)}`.replace(
        / {2}client_auth: .*\n/,
        auth ? "$&" : "",
      ),
    );
  await write(false);
  const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
  try {
    const url = `https://localhost:${server.port}/`;
    using anonymous = client();
    const get = async () => (await (await fetch(url, { client: anonymous })).json());
    assert.equal((await get())["x-client-subject"], "");
    await write(true);
    assert.equal((await server.reload()).ok, true);
    // The new listener asks for a certificate; a pooled connection of the old one may serve once.
    anonymous.close();
    await refused(url);
    using alice = client(ALICE);
    const res = await fetch(url, { client: alice });
    assert.equal((await res.json())["x-client-subject"], "CN=alice,O=Prox Test");
    await write(false);
    assert.equal((await server.reload()).ok, true);
    using third = client();
    const res2 = await fetch(url, { client: third });
    assert.equal((await res2.json())["x-client-subject"], "");
  } finally {
    await server.shutdown();
    await Deno.remove(file);
  }
});

Deno.test("tls.client_auth: a new CA file takes effect at the next reload, a broken one fails it", async () => {
  await using up = await echo();
  const dir = await Deno.makeTempDir();
  const ca = `${dir}/clients-ca.pem`;
  await Deno.copyFile(`${TLS}/ca.pem`, ca);
  const file = `${dir}/prox.yaml`;
  await Deno.writeTextFile(
    file,
    `listen_addr: "127.0.0.1:0"\n${config(up.url)}`.replace(
      `ca_cert: "${TLS}/ca.pem"`,
      `ca_cert: "${ca}"`,
    ),
  );
  const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
  try {
    const url = `https://localhost:${server.port}/`;
    const as = async (who: { cert: string; key: string }) => {
      using c = client(who);
      return (await (await fetch(url, { client: c })).json())["x-client-subject"];
    };
    assert.equal(await as(ALICE), "CN=alice,O=Prox Test");
    // The clients' CA is rotated to one that did not issue alice's certificate.
    await Deno.copyFile(`${TLS}/stranger.pem`, ca);
    assert.equal((await server.reload()).ok, true);
    await refused(url, ALICE);
    // A file truncated mid-rotation fails the reload; the listener keeps the CA it has.
    await Deno.writeTextFile(ca, "");
    assert.equal((await server.reload()).ok, false);
    await refused(url, ALICE);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client_cert on a route: only the certificates it names get through, others 403", async () => {
  await using up = await echo();
  const alice = new X509Certificate(ALICE.cert).fingerprint256;
  await using prox = await startProxy(
    config(
      up.url,
      "verify_if_given",
      `admin: { listen_addr: "127.0.0.1:0" }\n`,
    ).replace(
      "routes:\n",
      `routes:
  /alice: { type: proxy, target: "${up.url}", client_cert: { subject_matches: "^CN=alice,", san_matches: 'spiffe://prox\\.test/' } }
  /bob: { type: proxy, target: "${up.url}", client_cert: { subject_matches: "^CN=bob," } }
  /print: { type: proxy, target: "${up.url}", client_cert: { fingerprints: ["${alice}"] } }
  /any: { type: proxy, target: "${up.url}", client_cert: {} }
`,
    ),
    { tls: true },
  );
  const status = async (c: Deno.HttpClient, path: string) => {
    const res = await fetch(`https://localhost:${prox.port}${path}`, { client: c });
    await res.body?.cancel();
    return res.status;
  };
  using anonymous = client();
  using aliceClient = client(ALICE);
  assert.deepEqual(
    await Promise.all(["/alice", "/bob", "/print", "/any", "/"].map((p) => status(aliceClient, p))),
    [200, 403, 200, 200, 200],
  );
  assert.deepEqual(
    await Promise.all(["/alice", "/bob", "/print", "/any", "/"].map((p) => status(anonymous, p))),
    [403, 403, 403, 403, 200],
  );
  const metrics = await (await fetch(`http://127.0.0.1:${prox.server.admin!.port}/metrics`)).text();
  assert.match(metrics, /prox_access_denied_total\{route="\/any",reason="client_cert"\} 1/);
});

Deno.test("tls.client_auth crl_file: a revoked certificate is refused, another from the CA is not", async () => {
  await using up = await echo();
  await using prox = await startProxy(
    config(up.url).replace(
      `ca_cert: "${TLS}/ca.pem"`,
      `ca_cert: "${TLS}/ca.pem", crl_file: "${TLS}/alice-revoked.crl"`,
    ),
    { tls: true },
  );
  await refused(`https://localhost:${prox.port}/`, ALICE); // serial 6, on the list
  using other = client({ cert: Deno.readTextFileSync(`${TLS}/cert.pem`), key: `${TLS}/key.pem` });
  const res = await fetch(`https://localhost:${prox.port}/`, { client: other });
  assert.equal((await res.json())["x-client-subject"], "CN=localhost");
});

Deno.test("tls.client_auth crl_file: a list not signed by ca_cert stops the start, and a reload keeps the lists served", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-crl-" });
  try {
    // The test CA's list with one byte of its revoked serial changed after signing.
    const der = pemBlocks(Deno.readTextFileSync(`${TLS}/alice-revoked.crl`), "X509 CRL")[0];
    const forged = der.slice();
    for (let i = der.length - 3; i > 0; i--) {
      if (der[i] === 0x02 && der[i + 1] === 0x01 && der[i + 2] === 0x06) { // INTEGER 6: alice
        forged[i + 2] = 0x05;
        break;
      }
    }
    assert.notDeepEqual(forged, der);
    const forgedPem = `-----BEGIN X509 CRL-----\n${
      btoa(String.fromCharCode(...forged))
    }\n-----END X509 CRL-----\n`;
    const crlFile = `${dir}/list.crl`;
    await Deno.writeTextFile(crlFile, forgedPem);
    await using up = await echo();
    const yaml = config(up.url).replace(
      `ca_cert: "${TLS}/ca.pem"`,
      `ca_cert: "${TLS}/ca.pem", crl_file: "${crlFile}"`,
    );
    // Refused at start as `prox validate` refuses it: located at the key, with the reason.
    await assert.rejects(startProxy(yaml, { tls: true }), (e: unknown) => {
      const issues = (e as ConfigError).issues ?? [];
      return issues.some((i) =>
        i.path === "tls.client_auth.crl_file" &&
        /list\.crl: the list of "Prox Test CA" does not verify with its issuer's key/.test(
          i.message,
        )
      );
    });
    // Started with the genuine list; the forged one written over it is refused on reload, and
    // alice stays revoked.
    await Deno.copyFile(`${TLS}/alice-revoked.crl`, crlFile);
    await using prox = await startProxy(yaml, { tls: true });
    await refused(`https://localhost:${prox.port}/`, ALICE);
    await Deno.writeTextFile(crlFile, forgedPem);
    const r = await prox.server.reload();
    assert.equal(r.ok, false);
    await refused(`https://localhost:${prox.port}/`, ALICE);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tls.client_auth crl_file: a renewed list takes effect at the reload, closing only the connections of the clients it revokes", async () => {
  await inTempDir("prox-crl-live-", async (dir, sh) => {
    // The test CA's list revoking nobody, then its list revoking alice written over it.
    await sh(
      `printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=idx\\ndefault_md=sha256\\ncrlnumber=num\\ndefault_crl_days=1\\n' > crl.cnf
touch idx && echo 01 > num
openssl ca -batch -config crl.cnf -cert "${TLS}/ca.pem" -keyfile "${TLS}/ca.key" -gencrl -out list.crl`,
    );
    await using up = await echo();
    const file = `${dir}/prox.yaml`;
    await Deno.writeTextFile(
      file,
      `listen_addr: "127.0.0.1:0"\n${config(up.url)}`.replace(
        `ca_cert: "${TLS}/ca.pem"`,
        `ca_cert: "${TLS}/ca.pem", crl_file: "${dir}/list.crl"`,
      ),
    );
    const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
    /** A keep-alive connection presenting `who`'s certificate, and a GET on it (its answer). */
    const connect = async (who: { cert: string; key: string }) => {
      const conn = await Deno.connectTls({
        hostname: "localhost",
        port: server.port,
        caCerts: [CA],
        cert: who.cert,
        key: Deno.readTextFileSync(who.key),
      });
      const ask = async () => {
        await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        let text = "";
        const buf = new Uint8Array(16384);
        // The answer is JSON with Content-Length: read until its body is whole.
        while (!/\r\n\r\n[\s\S]*\}$/.test(text)) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) return text + "<EOF>";
          text += new TextDecoder().decode(buf.subarray(0, n));
        }
        return text;
      };
      return { conn, ask };
    };
    const alice = await connect(ALICE);
    const other = await connect({
      cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
      key: `${TLS}/key.pem`,
    });
    try {
      assert.match(await alice.ask(), /^HTTP\/1\.1 200[\s\S]*CN=alice/);
      assert.match(await other.ask(), /^HTTP\/1\.1 200[\s\S]*CN=localhost/);
      await Deno.copyFile(`${TLS}/alice-revoked.crl`, `${dir}/list.crl`);
      assert.equal((await server.reload()).ok, true);
      // A new handshake with alice's certificate is refused now, and her open connection is
      // closed...
      await refused(`https://localhost:${server.port}/`, ALICE);
      assert.equal(await alice.ask(), "<EOF>");
      // ...while another client's connection is neither closed nor told to close (a new listener
      // would have drained it, and with it every WebSocket of every client).
      const again = await other.ask();
      assert.match(again, /^HTTP\/1\.1 200[\s\S]*CN=localhost/);
      assert.doesNotMatch(again, /\r\nconnection: close\r\n/i);
    } finally {
      alice.conn.close();
      other.conn.close();
      await server.shutdown();
    }
  });
});

Deno.test("validate: tls.client_auth's CA file, HTTP/3 and Deno.serve", () => {
  const issues = (tls: string, extra = "") =>
    loadConfigText(
      `listen_addr: "127.0.0.1:0"\n${extra}tls:\n  cert_path: "${TLS}/cert.pem"\n  key_path: "${TLS}/key.pem"\n${tls}routes:\n  /: { type: static, root: "." }\n`,
      { env: denoEnv, file: "t.yaml" },
    ).issues.filter((i) => i.severity === "error").map((i) => `${i.path}: ${i.message}`);
  assert.deepEqual(issues(`  client_auth: { ca_cert: "${TLS}/ca.pem" }\n`), []);
  assert.match(
    issues(`  client_auth: { ca_cert: "${TLS}/none.pem" }\n`).join("\n"),
    /tls\.client_auth\.ca_cert: CA certificate file not found/,
  );
  assert.match(
    issues(`  client_auth: { ca_cert: "${TLS}/README.md" }\n`).join("\n"),
    /holds no PEM certificate/,
  );
  assert.match(
    issues(
      `  client_auth: { ca_cert: "${TLS}/ca.pem" }\n`,
      "protocols: { http3_enabled: true }\n",
    ).join("\n"),
    /protocols\.http3_enabled: HTTP\/3 cannot ask clients for certificates/,
  );
  assert.match(
    issues(
      `  client_auth: { ca_cert: "${TLS}/ca.pem" }\n`,
      "protocols: { http1_engine: deno }\n",
    ).join("\n"),
    /tls\.client_auth: tls\.client_auth needs Prox's own engines/,
  );
  assert.match(
    issues(`  client_auth: { ca_cert: "${TLS}/ca.pem", mode: optional }\n`).join("\n"),
    /mode/,
  );
  const crl = (file: string) =>
    issues(`  client_auth: { ca_cert: "${TLS}/ca.pem", crl_file: "${file}" }\n`).join("\n");
  assert.equal(crl(`${TLS}/alice-revoked.crl`), "");
  assert.match(crl(`${TLS}/none.crl`), /crl_file: Certificate revocation list file not found/);
  assert.match(
    crl(`${TLS}/ca.pem`),
    /crl_file: .*ca\.pem holds no usable revocation list: no X509 CRL/,
  );
  // A list must be signed by a certificate of ca_cert: the test CA's list against another CA.
  assert.match(
    issues(
      `  client_auth: { ca_cert: "${TLS}/stranger.pem", crl_file: "${TLS}/alice-revoked.crl" }\n`,
    ).join("\n"),
    /crl_file: .*alice-revoked\.crl: the list of "Prox Test CA" is not from a CA in ca_cert/,
  );
  // A route's client_cert: its regexes, its fingerprints, and a listener that asks.
  const routeIssues = (rule: string, auth = true) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:0"\ntls:\n  cert_path: "${TLS}/cert.pem"\n  key_path: "${TLS}/key.pem"\n` +
        (auth ? `  client_auth: { ca_cert: "${TLS}/ca.pem" }\n` : "") +
        `routes:\n  /: { type: static, root: ".", client_cert: ${rule} }\n`,
      { env: denoEnv, file: "t.yaml" },
    ).issues.filter((i) => i.severity === "error").map((i) => `${i.path}: ${i.message}`);
  assert.deepEqual(
    routeIssues(`{ subject_matches: "^CN=a", fingerprints: ["${"AB:".repeat(31)}AB"] }`),
    [],
  );
  assert.match(
    routeIssues("{}", false).join(),
    /routes\.\/\.client_cert: client_cert needs tls\.client_auth/,
  );
  assert.match(
    routeIssues(`{ subject_matches: "(" }`).join(),
    /client_cert\.subject_matches: Invalid regular expression/,
  );
  assert.match(
    routeIssues(`{ fingerprints: ["abc"] }`).join(),
    /client_cert\.fingerprints\.0: "abc" is no SHA-256 fingerprint/,
  );
});

/**
 * Makes, in `dir`, a root CA, an intermediate it issued (int.pem), a client certificate the
 * intermediate issued (leaf.pem, leaf.key; chain.pem with the intermediate), the root's list
 * revoking the intermediate (root.crl) and the intermediate's list revoking the leaf (int.crl).
 */
async function revokedIntermediate(dir: string): Promise<void> {
  const script = `set -e
cd "${dir}"
${rootAndIntermediate("0x1122")}${P256} -keyout leaf.key -out leaf.csr -subj /CN=bob
printf 'basicConstraints=critical,CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -set_serial 7 -days 1 \\
  -extfile leaf.ext -out leaf.pem
cat leaf.pem int.pem > chain.pem
printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=idx\\ndefault_md=sha256\\ncrlnumber=num\\ndefault_crl_days=1\\n' > crl.cnf
touch idx && echo 01 > num
openssl ca -batch -config crl.cnf -cert root.pem -keyfile root.key -revoke int.pem
openssl ca -batch -config crl.cnf -cert root.pem -keyfile root.key -gencrl -out root.crl
sed 's/=idx/=idx2/; s/=num/=num2/' crl.cnf > int-crl.cnf && touch idx2 && echo 01 > num2
openssl ca -batch -config int-crl.cnf -cert int.pem -keyfile int.key -revoke leaf.pem
openssl ca -batch -config int-crl.cnf -cert int.pem -keyfile int.key -gencrl -out int.crl
`;
  const r = await run("bash", ["-c", script]);
  assert.equal(r.code, 0, r.stderr);
}

interopTest(
  "tls.client_auth crl_file: a certificate whose intermediate the root's list revokes is refused",
  [
    "openssl",
  ],
  () =>
    inTempDir("prox-crl-chain-", async (dir) => {
      await revokedIntermediate(dir);
      await using up = await echo();
      const leaf = { cert: Deno.readTextFileSync(`${dir}/chain.pem`), key: `${dir}/leaf.key` };
      for (const ca of ["root.pem", "int.pem root.pem"]) {
        // The intermediate comes from the client (ca_cert: the root), or from ca_cert itself.
        const caFile = `${dir}/ca.pem`;
        await Deno.writeTextFile(
          caFile,
          ca.split(" ").map((f) => Deno.readTextFileSync(`${dir}/${f}`)).join(""),
        );
        const yaml = config(up.url).replace(
          `ca_cert: "${TLS}/ca.pem"`,
          `ca_cert: "${caFile}", crl_file: "${dir}/root.crl"`,
        );
        await using prox = await startProxy(yaml, { tls: true });
        await refused(`https://localhost:${prox.port}/`, leaf);
        // Without the list the same client gets through: the refusal is the revocation's.
        await using open = await startProxy(
          yaml.replace(`, crl_file: "${dir}/root.crl"`, ""),
          { tls: true },
        );
        using c = client(leaf);
        const res = await fetch(`https://localhost:${open.port}/`, { client: c });
        assert.equal((await res.json())["x-client-subject"], "CN=bob", ca);
      }
    }),
);

interopTest(
  "tls.client_auth crl_file: an intermediate's list needs the intermediate in ca_cert, and then revokes its leaves",
  ["openssl"],
  () =>
    inTempDir("prox-crl-int-", async (dir) => {
      await revokedIntermediate(dir);
      await using up = await echo();
      const caFile = `${dir}/ca.pem`;
      const yaml = config(up.url).replace(
        `ca_cert: "${TLS}/ca.pem"`,
        `ca_cert: "${caFile}", crl_file: "${dir}/int.crl"`,
      );
      // The root alone: the list's issuer is nowhere in ca_cert, and the error says what to add.
      await Deno.copyFile(`${dir}/root.pem`, caFile);
      const res = loadConfigText(`listen_addr: "127.0.0.1:0"\n${yaml}`, {
        env: denoEnv,
        file: "t.yaml",
      });
      const issue = res.issues.find((i) => i.path === "tls.client_auth.crl_file");
      assert.match(issue?.message ?? "", /the list of "Intermediate" is not from a CA in ca_cert/);
      assert.match(
        issue?.hint ?? "",
        /an intermediate's list needs the intermediate's certificate in ca_cert/,
      );
      // With the intermediate beside the root, its list applies: the leaf (serial 7) is refused.
      await Deno.writeTextFile(
        caFile,
        Deno.readTextFileSync(`${dir}/int.pem`) + Deno.readTextFileSync(`${dir}/root.pem`),
      );
      const leaf = { cert: Deno.readTextFileSync(`${dir}/chain.pem`), key: `${dir}/leaf.key` };
      await using prox = await startProxy(yaml, { tls: true });
      await refused(`https://localhost:${prox.port}/`, leaf);
      // Without the list the same client gets through: the refusal is the revocation's.
      await using open = await startProxy(yaml.replace(`, crl_file: "${dir}/int.crl"`, ""), {
        tls: true,
      });
      using c = client(leaf);
      const ok = await fetch(`https://localhost:${open.port}/`, { client: c });
      assert.equal((await ok.json())["x-client-subject"], "CN=bob");
    }),
);

/**
 * The test CA's list (revoking nothing) in `dir`/`name`, with the given thisUpdate and nextUpdate
 * (openssl's YYYYMMDDHHMMSSZ).
 */
async function caList(dir: string, name: string, from: string, to: string): Promise<string> {
  const script = `set -e
cd "${dir}"
printf '[ca]\ndefault_ca=d\n[d]\ndatabase=idx-${name}\ndefault_md=sha256\ncrlnumber=num-${name}\n' > ${name}.cnf
touch idx-${name} && echo 01 > num-${name}
openssl ca -batch -config ${name}.cnf -cert "${TLS}/ca.pem" -keyfile "${TLS}/ca.key" -gencrl \
  -crl_lastupdate ${from} -crl_nextupdate ${to} -out ${name}
`;
  const r = await run("bash", ["-c", script]);
  assert.equal(r.code, 0, r.stderr);
  return Deno.readTextFileSync(`${dir}/${name}`);
}

interopTest(
  "tls.client_auth crl_expired: a certificate whose issuer's list is out of date is refused, or let in with allow",
  ["openssl"],
  () =>
    inTempDir("prox-crl-stale-", async (dir) => {
      const old = await caList(dir, "old.crl", "20200101000000Z", "20200108000000Z");
      const current = await caList(dir, "new.crl", "20200101000000Z", "20991231000000Z");
      const crlFile = `${dir}/list.crl`;
      await Deno.writeTextFile(crlFile, old);
      await using up = await echo();
      const localhost = { cert: Deno.readTextFileSync(`${TLS}/cert.pem`), key: `${TLS}/key.pem` };
      const yaml = (extra: string) =>
        config(up.url).replace(
          `ca_cert: "${TLS}/ca.pem"`,
          `ca_cert: "${TLS}/ca.pem", crl_file: "${crlFile}"${extra}`,
        );
      const refusals: string[] = [];
      const logger: Logger = {
        ...silentLogger,
        debug: (msg, fields) => void refusals.push(`${msg} ${JSON.stringify(fields ?? {})}`),
      };
      {
        await using prox = await startProxy(yaml(""), { tls: true, logger });
        await refused(`https://localhost:${prox.port}/`, localhost);
        await waitFor(
          () =>
            refusals.some((r) =>
              r.includes("revocation list out of date since 2020-01-08T00:00:00.000Z")
            ),
          { what: "the refusal's log line" },
        );
      }
      {
        await using prox = await startProxy(yaml(", crl_expired: allow"), { tls: true });
        using c = client(localhost);
        const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
        assert.equal((await res.json())["x-client-subject"], "CN=localhost");
      }
      {
        // The same issuer's later list beside the old one: the issuer is up to date.
        await Deno.writeTextFile(crlFile, old + current);
        await using prox = await startProxy(yaml(""), { tls: true });
        using c = client(localhost);
        const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
        assert.equal((await res.json())["x-client-subject"], "CN=localhost");
      }
      // prox validate warns about the old list alone, saying what follows under each setting.
      const warnings = async (extra: string) => {
        await Deno.writeTextFile(crlFile, old);
        return loadConfigText(
          `listen_addr: "127.0.0.1:0"\ntls:\n  cert_path: "${TLS}/cert.pem"\n  key_path: "${TLS}/key.pem"\n  client_auth: { ca_cert: "${TLS}/ca.pem", crl_file: "${crlFile}"${extra} }\nroutes:\n  /: { type: static, root: "." }\n`,
          { env: denoEnv, file: "t.yaml" },
        ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`).join("\n");
      };
      assert.match(
        await warnings(""),
        /^warning tls\.client_auth\.crl_file: .*list\.crl is out of date: its issuer promised a new list by 2020-01-08T00:00:00\.000Z: client certificates from that issuer are refused/m,
      );
      assert.match(
        await warnings(", crl_expired: allow"),
        /crl_expired: allow: clients it would have revoked since may still get in/,
      );
      assert.doesNotMatch(await warnings(", crl_expired: allow"), /^error/m);
    }),
);

/**
 * A client certificate the test CA issues in `dir` (`name`.pem, `name`.key), with the extensions
 * section `ext` (openssl x509 -extfile).
 */
async function issue(dir: string, name: string, subject: string, ext: string) {
  await Deno.writeTextFile(`${dir}/${name}.ext`, ext);
  const script = `set -e
cd "${dir}"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ${name}.key \\
  -out ${name}.csr -subj '${subject}' -multivalue-rdn -utf8
openssl x509 -req -in ${name}.csr -CA "${TLS}/ca.pem" -CAkey "${TLS}/ca.key" -set_serial 0x${
    crypto.randomUUID().slice(0, 8)
  } \\
  -days 1 -extfile ${name}.ext -extensions x -out ${name}.pem
`;
  const r = await run("bash", ["-c", script]);
  assert.equal(r.code, 0, r.stderr);
  return { cert: await Deno.readTextFile(`${dir}/${name}.pem`), key: `${dir}/${name}.key` };
}

interopTest('client_cert san_matches: one subjectAltName holding ", URI:…" does not read as two', [
  "openssl",
], async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-san-" });
  try {
    // One URI whose text is "spiffe://prox.test/dev, URI:spiffe://prox.test/ops", and one email.
    // The route admits a list that holds the name URI:spiffe://prox.test/ops, at its start or
    // after another name's ", ".
    const mallory = await issue(
      dir,
      "mallory",
      "/CN=mallory",
      "[x]\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\nsubjectAltName=@alt\n" +
        '[alt]\nURI.1 = spiffe://prox.test/dev, URI:spiffe://prox.test/ops\nemail.1 = "a, DNS:b"@c.test\n',
    );
    await using up = await echo();
    await using prox = await startProxy(
      config(up.url).replace(
        "routes:\n",
        `routes:\n  /ops: { type: proxy, target: "${up.url}", client_cert: { san_matches: '(^|, )URI:spiffe://prox\\.test/ops(,|$)' } }\n`,
      ),
      { tls: true },
    );
    using c = client(mallory);
    const ops = await fetch(`https://localhost:${prox.port}/ops`, { client: c });
    await ops.body?.cancel();
    assert.equal(ops.status, 403);
    // The upstream sees each value quoted, as Node.js writes one holding a comma.
    const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
    assert.equal(
      (await res.json())["x-client-san"],
      'URI:"spiffe://prox.test/dev\\u002c URI:spiffe://prox.test/ops", email:"a\\u002c DNS:b@c.test"',
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest("client_cert subject_matches: every attribute of the subject counts (DC too)", [
  "openssl",
], async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-dn-" });
  try {
    // Another alice of the same CA, in another domain (DC).
    const other = await issue(
      dir,
      "other",
      "/DC=com/DC=elsewhere/O=Prox Test/CN=alice",
      "[x]\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    await using up = await echo();
    await using prox = await startProxy(
      config(up.url).replace(
        "routes:\n",
        `routes:\n  /alice: { type: proxy, target: "${up.url}", client_cert: { subject_matches: "^CN=alice,O=Prox Test$" } }\n`,
      ),
      { tls: true },
    );
    const get = async (who: { cert: string; key: string }, path: string) => {
      using c = client(who);
      return await fetch(`https://localhost:${prox.port}${path}`, { client: c });
    };
    const status = async (who: { cert: string; key: string }) => {
      const res = await get(who, "/alice");
      await res.body?.cancel();
      return res.status;
    };
    assert.equal(await status(ALICE), 200);
    assert.equal(await status(other), 403);
    assert.equal(
      (await (await get(other, "/")).json())["x-client-subject"],
      "CN=alice,O=Prox Test,DC=elsewhere,DC=com",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tls.client_auth: a client that ends its side after its request still gets the answer", async () => {
  await using up = await echo();
  await using prox = await startProxy(config(up.url), { tls: true });
  // As Deno's own TLS listener answers it (HTTP/1.0 clients and `nc -N`-like tools do this).
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port: prox.port,
    caCerts: [CA],
    cert: ALICE.cert,
    key: Deno.readTextFileSync(ALICE.key),
  });
  await conn.write(
    new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
  );
  await conn.closeWrite(); // close_notify, then FIN
  const answer = await new Response(conn.readable).text();
  assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(answer, /"x-client-subject":"CN=alice,O=Prox Test"/);
});

interopTest(
  "tls.client_auth: a certificate whose keyUsage does not allow signing is refused, as OpenSSL refuses it",
  [
    "openssl",
  ],
  () =>
    inTempDir("prox-ku-", async (dir) => {
      const base = "[x]\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n";
      // An encryption-only key (keyEncipherment): RFC 5280 §4.2.1.3 bars it from signing the
      // handshake. One that may sign, and one without keyUsage at all, are taken.
      const encrypting = await issue(
        dir,
        "enc",
        "/CN=enc",
        `${base}keyUsage=critical,keyEncipherment\n`,
      );
      const signing = await issue(
        dir,
        "sig",
        "/CN=sig",
        `${base}keyUsage=critical,digitalSignature\n`,
      );
      const plain = await issue(dir, "plain", "/CN=plain", base);
      await using up = await echo();
      const refusals: string[] = [];
      const logger: Logger = {
        ...silentLogger,
        enabled: () => true,
        debug: (m, f) =>
          void (m === "TLS client certificate refused" && refusals.push(String(f?.reason))),
      };
      await using prox = await startProxy(config(up.url), { tls: true, logger });
      const status = async (who: { cert: string; key: string }) => {
        using c = client(who);
        try {
          const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
          await res.body?.cancel();
          return res.status;
        } catch {
          return 0; // the connection was closed
        }
      };
      assert.equal(await status(signing), 200);
      assert.equal(await status(plain), 200);
      assert.equal(await status(encrypting), 0);
      assert.deepEqual(refusals, [
        "certificate's keyUsage does not allow digital signatures (CN=enc; RFC 5280 §4.2.1.3)",
      ]);
    }),
);

interopTest(
  "tls.client_auth ocsp: a certificate its responder says is revoked is refused, a good one served, the answer kept",
  ["openssl"],
  () =>
    inTempDir("prox-ocsp-", async (dir) => {
      await using ocsp = await startOcsp({
        dir,
        valid: [`${TLS}/cert.pem`],
        revoked: [`${TLS}/alice.pem`],
        nmin: 10,
      });
      await using up = await echo();
      const refusals: string[] = [];
      const logger: Logger = {
        ...silentLogger,
        debug: (msg, fields) => void refusals.push(`${msg} ${JSON.stringify(fields ?? {})}`),
      };
      await using prox = await startProxy(
        config(up.url).replace(
          `ca_cert: "${TLS}/ca.pem"`,
          `ca_cert: "${TLS}/ca.pem", ocsp: { responder: "${ocsp.url}" }`,
        ),
        { tls: true, logger },
      );
      await refused(`https://localhost:${prox.port}/`, ALICE);
      await waitFor(() => refusals.some((r) => /certificate revoked on \d{4}-.*OCSP/.test(r)), {
        what: "the refusal's log line",
      });
      const localhost = { cert: Deno.readTextFileSync(`${TLS}/cert.pem`), key: `${TLS}/key.pem` };
      for (let i = 0; i < 3; i++) {
        using c = client(localhost);
        const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
        assert.equal((await res.json())["x-client-subject"], "CN=localhost");
      }
      // One request per certificate: the answers (nextUpdate in 10 min) are kept.
      assert.equal(ocsp.requests(), 2);
    }),
);

Deno.test("tls.client_auth ocsp: a responder that cannot be asked refuses clients, or lets them in with on_error: allow (logged)", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const down = `http://127.0.0.1:${l.addr.port}/`;
  l.close();
  await using up = await echo();
  const warnings: string[] = [];
  const logger: Logger = {
    ...silentLogger,
    warn: (msg, fields) => void warnings.push(`${msg} ${JSON.stringify(fields ?? {})}`),
  };
  const yaml = (extra: string) =>
    config(up.url).replace(
      `ca_cert: "${TLS}/ca.pem"`,
      `ca_cert: "${TLS}/ca.pem", ocsp: { responder: "${down}"${extra} }`,
    );
  {
    await using prox = await startProxy(yaml(""), { tls: true });
    await refused(`https://localhost:${prox.port}/`, ALICE);
  }
  await using prox = await startProxy(yaml(", on_error: allow"), { tls: true, logger });
  using c = client(ALICE);
  const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
  assert.match((await res.json())["x-client-subject"], /^CN=alice,/);
  assert.equal(warnings.filter((w) => w.includes("OCSP status not learned")).length, 1);
  assert.match(warnings.join("\n"), /could not be asked/);
});

Deno.test("validate: tls.client_auth.ocsp's responder and timeout", () => {
  const issues = (ocsp: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:0"\ntls:\n  cert_path: "${TLS}/cert.pem"\n  key_path: "${TLS}/key.pem"\n  client_auth: { ca_cert: "${TLS}/ca.pem", ocsp: ${ocsp} }\nroutes:\n  /: { type: static, root: "." }\n`,
      { env: denoEnv, file: "t.yaml" },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues("{}"), []);
  assert.deepEqual(issues('{ responder: "http://ocsp.example.com", check: chain }'), []);
  assert.deepEqual(issues('{ responder: "ldap://ocsp.example.com" }'), [
    'error tls.client_auth.ocsp.responder: "ldap://ocsp.example.com" is no http:// or https:// URL',
  ]);
  assert.deepEqual(issues("{ timeout: 0s }"), [
    "error tls.client_auth.ocsp.timeout: timeout must be greater than 0",
  ]);
  assert.deepEqual(issues("{ timeout: 2m }"), [
    "warning tls.client_auth.ocsp.timeout: A handshake may wait 120 s for the OCSP responder",
  ]);
  assert.match(issues("{ on_error: ignore }").join(), /on_error/);
});

interopTest(
  "tls.client_auth ocsp check: chain asks about the intermediate too, at the responder it names",
  ["openssl"],
  () =>
    inTempDir("prox-ocsp-chain-", async (dir, sh) => {
      // The root's responder knows the intermediate as revoked; the intermediate names it.
      await using rootOcsp = await startOcsp({
        dir,
        ca: `${dir}/root.pem`,
        caKey: `${dir}/root.key`,
        revoked: [`${dir}/int.pem`],
        prepare: (url) =>
          sh(rootAndIntermediate("0x2211", `authorityInfoAccess=OCSP;URI:${url}\\n`)),
      });
      // The intermediate's responder knows the leaf as good; the leaf names it.
      await using intOcsp = await startOcsp({
        dir,
        ca: `${dir}/int.pem`,
        caKey: `${dir}/int.key`,
        valid: [`${dir}/leaf.pem`],
        prepare: (url) =>
          sh(`${P256} -keyout leaf.key -out leaf.csr -subj /CN=bob
printf 'extendedKeyUsage=clientAuth\\nauthorityInfoAccess=OCSP;URI:${url}\\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -set_serial 9 -days 1 -extfile leaf.ext -out leaf.pem
cat leaf.pem int.pem > chain.pem`),
      });
      await using up = await echo();
      const leaf = { cert: Deno.readTextFileSync(`${dir}/chain.pem`), key: `${dir}/leaf.key` };
      const yaml = (check: string) =>
        config(up.url).replace(
          `ca_cert: "${TLS}/ca.pem"`,
          `ca_cert: "${dir}/root.pem", ocsp: { check: ${check} }`,
        );
      {
        await using prox = await startProxy(yaml("leaf"), { tls: true });
        using c = client(leaf);
        const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
        assert.equal((await res.json())["x-client-subject"], "CN=bob");
        assert.deepEqual([intOcsp.requests(), rootOcsp.requests()], [1, 0]);
      }
      await using prox = await startProxy(yaml("chain"), { tls: true });
      await refused(`https://localhost:${prox.port}/`, leaf);
      assert.deepEqual([intOcsp.requests(), rootOcsp.requests()], [2, 1]);
    }),
);

interopTest(
  "tls.client_auth ocsp: the issuer is the one that signed the certificate, not a look-alike the client sends along",
  ["openssl"],
  () =>
    inTempDir("prox-ocsp-fake-", async (dir) => {
      // A CA of the client's making with the test CA's name and key identifier, and a responder
      // (as a forger on the plain-HTTP path would be) that signs "good" for alice with its key.
      const r = await run("bash", [
        "-c",
        `set -e\ncd "${dir}"\nski=$(openssl x509 -in "${TLS}/ca.pem" -noout -ext subjectKeyIdentifier | tail -1 | tr -d ' ')
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \\
  -keyout fake.key -out fake.pem -subj "/CN=Prox Test CA" -addext "subjectKeyIdentifier=$ski" \\
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      await using forged = await startOcsp({
        dir,
        ca: `${dir}/fake.pem`,
        caKey: `${dir}/fake.key`,
        valid: [`${TLS}/alice.pem`],
      });
      // The CA's own responder says alice is good.
      await using real = await startOcsp({ dir, valid: [`${TLS}/alice.pem`] });
      await using up = await echo();
      const aliceAndFake = {
        cert: ALICE.cert + Deno.readTextFileSync(`${dir}/fake.pem`),
        key: ALICE.key,
      };
      const yaml = (url: string) =>
        config(up.url).replace(
          `ca_cert: "${TLS}/ca.pem"`,
          `ca_cert: "${TLS}/ca.pem", ocsp: { responder: "${url}" }`,
        );
      {
        await using prox = await startProxy(yaml(forged.url), { tls: true });
        await refused(`https://localhost:${prox.port}/`, aliceAndFake);
        await refused(`https://localhost:${prox.port}/`, ALICE);
      }
      // The look-alike changes nothing for the real answer: asked about the CA's certificate.
      await using prox = await startProxy(yaml(real.url), { tls: true });
      using c = client(aliceAndFake);
      const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
      assert.match((await res.json())["x-client-subject"], /^CN=alice,/);
    }),
);

interopTest(
  "validate: crl_file's out-of-date warning is per issuer: an old list beside a current one of the same CA is no warning",
  ["openssl"],
  () =>
    inTempDir("prox-crl-stale-validate-", async (dir) => {
      const old = await caList(dir, "old.crl", "20200101000000Z", "20200108000000Z");
      const current = await caList(dir, "new.crl", "20200101000000Z", "20991231000000Z");
      const crlFile = `${dir}/list.crl`;
      const issues = async (lists: string) => {
        await Deno.writeTextFile(crlFile, lists);
        return loadConfigText(
          `listen_addr: "127.0.0.1:0"\ntls:\n  cert_path: "${TLS}/cert.pem"\n  key_path: "${TLS}/key.pem"\n  client_auth: { ca_cert: "${TLS}/ca.pem", crl_file: "${crlFile}" }\nroutes:\n  /: { type: static, root: "." }\n`,
          { env: denoEnv, file: "t.yaml" },
        ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
      };
      // Its clients are let in (the test above): nothing to warn about.
      assert.deepEqual(await issues(old + current), []);
      assert.deepEqual(await issues(current + old), []);
      assert.match(
        (await issues(old)).join("\n"),
        /list\.crl is out of date: its issuer promised a new list by 2020-01-08T00:00:00\.000Z: client certificates from that issuer are refused/,
      );
    }),
);

interopTest(
  "tls.client_auth ocsp check: chain with an intermediate as ca_cert: it is the trust anchor, not an issuer missing",
  ["openssl"],
  () =>
    inTempDir("prox-ocsp-anchor-", async (dir, sh) => {
      await sh(rootAndIntermediate("0x3311"));
      // The intermediate's responder knows the leaf as good; the leaf names it.
      await using intOcsp = await startOcsp({
        dir,
        ca: `${dir}/int.pem`,
        caKey: `${dir}/int.key`,
        valid: [`${dir}/leaf.pem`],
        prepare: (url) =>
          sh(`${P256} -keyout leaf.key -out leaf.csr -subj /CN=carol
printf 'extendedKeyUsage=clientAuth\\nauthorityInfoAccess=OCSP;URI:${url}\\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -set_serial 10 -days 1 -extfile leaf.ext -out leaf.pem`),
      });
      await using up = await echo();
      const leaf = { cert: Deno.readTextFileSync(`${dir}/leaf.pem`), key: `${dir}/leaf.key` };
      await using prox = await startProxy(
        config(up.url).replace(
          `ca_cert: "${TLS}/ca.pem"`,
          `ca_cert: "${dir}/int.pem", ocsp: { check: chain }`,
        ),
        { tls: true },
      );
      using c = client(leaf);
      const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
      assert.equal((await res.json())["x-client-subject"], "CN=carol");
      assert.equal(intOcsp.requests(), 1);
    }),
);

interopTest(
  "prox_tls_client_refused_total counts each refusal by why (handshake, crl_revoked, ocsp_unknown)",
  ["openssl"],
  () =>
    inTempDir("prox-refused-", async (dir) => {
      // A responder that knows no certificate: every status asked is unknown.
      await using ocsp = await startOcsp({ dir });
      await using up = await echo();
      await using prox = await startProxy(
        config(up.url, "require", `admin: { listen_addr: "127.0.0.1:0" }\n`).replace(
          `ca_cert: "${TLS}/ca.pem"`,
          `ca_cert: "${TLS}/ca.pem", crl_file: "${TLS}/alice-revoked.crl", ocsp: { responder: "${ocsp.url}" }`,
        ),
        { tls: true },
      );
      const url = `https://localhost:${prox.port}/`;
      await refused(url, ALICE); // on the list
      await refused(url, { cert: Deno.readTextFileSync(`${TLS}/cert.pem`), key: `${TLS}/key.pem` });
      await refused(url, STRANGER); // another CA: TLS refuses it
      await refused(url); // none
      const count = async (reason: string) => {
        const text = await (await fetch(`http://127.0.0.1:${prox.server.admin!.port}/metrics`))
          .text();
        return Number(
          new RegExp(`^prox_tls_client_refused_total\\{reason="${reason}"\\} (\\d+)`, "m")
            .exec(text)?.[1] ?? 0,
        );
      };
      await waitFor(async () => await count("handshake") === 2, { what: "two handshakes refused" });
      assert.equal(await count("crl_revoked"), 1);
      assert.equal(await count("ocsp_unknown"), 1);
      assert.equal(await count("ocsp_revoked"), 0);
    }),
);

Deno.test("tls.client_auth ocsp: a reload that replaces the listener, and the shutdown, abort the OCSP requests in flight", async () => {
  // A responder that takes each request and never answers: only Prox can end the exchange.
  const hang = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open: { ended: boolean }[] = [];
  const accepting = (async () => {
    for await (const conn of hang) {
      const entry = { ended: false };
      open.push(entry);
      void (async () => {
        const buf = new Uint8Array(4096);
        try {
          while (await conn.read(buf) !== null) { /* the request, unanswered */ }
        } catch { /* reset */ }
        entry.ended = true;
        conn.close();
      })();
    }
  })();
  await using up = await echo();
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  // A timeout far past waitFor's 10 s: the requests must end because Prox ends them.
  const write = (timeout: string) =>
    Deno.writeTextFile(
      file,
      `listen_addr: "127.0.0.1:0"\n${config(up.url)}`.replace(
        `ca_cert: "${TLS}/ca.pem"`,
        `ca_cert: "${TLS}/ca.pem", ocsp: { responder: "http://127.0.0.1:${hang.addr.port}/", timeout: ${timeout} }`,
      ),
    );
  await write("25s");
  const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
  const url = `https://localhost:${server.port}/`;
  const attempt = async () => {
    using c = client(ALICE);
    await fetch(url, { client: c }).then((r) => r.text()).catch(() => {});
  };
  try {
    const first = attempt();
    await waitFor(() => open.length === 1, { what: "the first OCSP request" });
    await write("20s"); // another client_auth: a new listener, the old one drains
    assert.equal((await server.reload()).ok, true);
    await waitFor(() => open[0].ended, { what: "the replaced listener's OCSP request to end" });
    await first;
    const second = attempt();
    await waitFor(() => open.length === 2, { what: "the second OCSP request" });
    await server.shutdown();
    await waitFor(() => open[1].ended, { what: "the OCSP request to end at shutdown" });
    await second;
  } finally {
    await server.shutdown();
    hang.close();
    await accepting.catch(() => {});
    await Deno.remove(file);
  }
});

interopTest(
  "tls.client_auth crl_file: a certificate of the chain whose issuer has no list there is refused, as nginx refuses it",
  ["openssl"],
  () =>
    inTempDir("prox-crl-missing-", async (dir, sh) => {
      // Root → intermediate → leaf, and each CA's list, revoking nothing.
      await sh(
        `${rootAndIntermediate("0x4411")}${P256} -keyout leaf.key -out leaf.csr -subj /CN=dave
printf 'basicConstraints=critical,CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -set_serial 11 -days 1 \\
  -extfile leaf.ext -out leaf.pem
cat leaf.pem int.pem > chain.pem
cat int.pem root.pem > ca.pem
for ca in root int; do
  printf "[ca]\\ndefault_ca=d\\n[d]\\ndatabase=idx-$ca\\ndefault_md=sha256\\ncrlnumber=num-$ca\\ndefault_crl_days=1\\n" > $ca.cnf
  touch idx-$ca && echo 01 > num-$ca
  openssl ca -batch -config $ca.cnf -cert $ca.pem -keyfile $ca.key -gencrl -out $ca.crl
done
cat root.crl int.crl > both.crl`,
      );
      await using up = await echo();
      const refusals: string[] = [];
      const logger: Logger = {
        ...silentLogger,
        enabled: () => true,
        debug: (m, f) =>
          void (m === "TLS client certificate refused" &&
            refusals.push(`${f?.kind}: ${f?.reason}`)),
      };
      const leaf = { cert: Deno.readTextFileSync(`${dir}/chain.pem`), key: `${dir}/leaf.key` };
      const yaml = (crl: string) =>
        config(up.url).replace(
          `ca_cert: "${TLS}/ca.pem"`,
          `ca_cert: "${dir}/ca.pem", crl_file: "${dir}/${crl}"`,
        );
      {
        // Both lists: nothing revoked, the client gets through.
        await using prox = await startProxy(yaml("both.crl"), { tls: true, logger });
        using c = client(leaf);
        const res = await fetch(`https://localhost:${prox.port}/`, { client: c });
        assert.equal((await res.json())["x-client-subject"], "CN=dave");
      }
      for (const [crl, missing] of [["int.crl", "CN=Intermediate"], ["root.crl", "CN=dave"]]) {
        // The root's list missing (the intermediate cannot be checked), or the intermediate's
        // (the leaf cannot): refused, saying whose list to add.
        await using prox = await startProxy(yaml(crl), { tls: true, logger });
        await refused(`https://localhost:${prox.port}/`, leaf);
        await waitFor(
          () => refusals.some((r) => r.startsWith("crl_missing: ") && r.includes(missing)),
          {
            what: `the refusal of ${crl}`,
          },
        );
      }
      // prox validate says which CA of ca_cert has no list, and what follows.
      const warnings = loadConfigText(`listen_addr: "127.0.0.1:0"\n${yaml("int.crl")}`, {
        env: denoEnv,
        file: "t.yaml",
      }).issues.filter((i) => i.path === "tls.client_auth.crl_file").map((i) =>
        `${i.severity}: ${i.message} (${i.hint})`
      );
      assert.equal(warnings.length, 1, warnings.join("\n"));
      assert.match(
        warnings[0],
        /^warning: .*int\.crl has no list of "Root" \(a CA of ca_cert\): client certificates whose chain holds a certificate it issued are refused .*\(Add the CRL of "Root" to the file/,
      );
    }),
);

Deno.test("validate: crl_file's missing-list warning is about CAs of ca_cert, not a client certificate pinned there", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-crl-pinned-" });
  try {
    await Deno.writeTextFile(`${dir}/ca.pem`, CA + ALICE.cert);
    const issues = loadConfigText(
      `listen_addr: "127.0.0.1:0"\ntls:\n  cert_path: "${TLS}/cert.pem"\n  key_path: "${TLS}/key.pem"\n  client_auth: { ca_cert: "${dir}/ca.pem", crl_file: "${TLS}/alice-revoked.crl" }\nroutes:\n  /: { type: static, root: "." }\n`,
      { env: denoEnv, file: "t.yaml" },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
    assert.deepEqual(issues, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
