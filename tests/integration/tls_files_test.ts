// Certificate and key files as operators bring them: byte-order marks, validity dates.
import assert from "node:assert/strict";
import { interopTest, ROOT, run } from "../_harness.ts";
import { recordingLogger } from "./_ws.ts";
import { withTempDir } from "./_acme.ts";
import { loadSource, startServer } from "../../src/server.ts";
import type { ConfigIssue } from "../../src/config/parse.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const BOM = "\uFEFF";
const read = (name: string) => Deno.readTextFileSync(`${TLS}/${name}`);

/** Runs openssl with `args`; fails the test if it fails. */
async function openssl(...args: string[]): Promise<void> {
  const out = await run("openssl", args);
  assert.equal(out.code, 0, out.stderr);
}

/** The config's issues as `map` prints them. */
async function issuesOf<T>(yaml: string, map: (i: ConfigIssue) => T): Promise<T[]> {
  return (await loadSource({ text: yaml, name: "p.yaml" })).issues.map(map);
}

function config(cert: string, key: string): string {
  return `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${cert}", key_path: "${key}" }
health_check: { enabled: false }
routes:
  "/":
    type: redirect
    target: "https://example.com/"
`;
}

interopTest(
  "certificate files with byte-order marks serve their whole chain (an intermediate after one was dropped)",
  ["openssl"],
  () =>
    withTempDir(async (dir) => {
      // A chain concatenated from files saved with a BOM, and a key saved the same way: the
      // listener failed to start ("No keys found in key data", or KeyMismatch when the leaf
      // had one) or served the leaf without the intermediate after the BOM.
      await Deno.writeTextFile(`${dir}/chain.pem`, BOM + read("cert.pem") + BOM + read("ca.pem"));
      await Deno.writeTextFile(`${dir}/key.pem`, BOM + read("key.pem"));
      const file = `${dir}/prox.yaml`;
      await Deno.writeTextFile(file, config(`${dir}/chain.pem`, `${dir}/key.pem`));
      const server = await startServer({ path: file }, { logger: recordingLogger(), watch: false });
      try {
        const out = await run("openssl", [
          "s_client",
          "-connect",
          `127.0.0.1:${server.port}`,
          "-servername",
          "localhost",
          "-showcerts",
        ], { stdin: "", timeoutMs: 5000 });
        const sent = out.stdout.match(/^ *\d+ s:.*$/gm)?.map((l) => l.trim());
        assert.deepEqual(sent, ["0 s:CN = localhost", "1 s:CN = Prox Test CA"], out.stdout);
      } finally {
        await server.shutdown();
      }
    }),
);

Deno.test("a certificate not valid yet is a warning, as an expired one is", async () => {
  const yaml = config(`${TLS}/future.pem`, `${TLS}/expired.key`);
  assert.deepEqual(await issuesOf(yaml, (i) => `${i.severity} ${i.path}: ${i.message}`), [
    `warning tls.cert_path: Certificate ${TLS}/future.pem is not valid before 2200-01-01T00:00:00.000Z`,
  ]);
});

Deno.test("route hosts the certificate does not name are warned about, at the host", async () => {
  // The fixture names localhost, *.localhost, example.com, *.example.com, 127.0.0.1 and ::1.
  const yaml = `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
health_check: { enabled: false }
routes:
  "shop.example.com/": { type: redirect, target: "https://example.com/" }
  "a.b.example.com/": { type: redirect, target: "https://example.com/" }
  "/x":
    type: redirect
    target: "https://example.com/"
    hosts: [Example.COM., other.org, "*.other.org", 127.0.0.1, 10.0.0.1, api.localhost]
  "/y": { type: redirect, target: "https://example.com/", hosts: [other.org] }
`;
  const not = (host: string) => `Certificate ${TLS}/cert.pem does not name ${host}`;
  assert.deepEqual(await issuesOf(yaml, (i) => `${i.severity} ${i.line} ${i.path}: ${i.message}`), [
    `warning 6 routes.a.b.example.com/: ${
      not("a.b.example.com")
    }: HTTPS clients reject it for that host`,
    `warning 10 routes./x.hosts.1: ${not("other.org")}: HTTPS clients reject it for that host`,
    `warning 10 routes./x.hosts.4: ${not("10.0.0.1")}: HTTPS clients reject it for that host`,
  ]);
});

Deno.test("an IPv6 route host is checked against the certificate's IP addresses", async () => {
  // The fixture names IP ::1, which node:crypto lists as 0:0:0:0:0:0:0:1.
  const yaml = `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
health_check: { enabled: false }
routes:
  "[::1]/": { type: redirect, target: "https://example.com/" }
  "/x": { type: redirect, target: "https://example.com/", hosts: ["[::2]"] }
`;
  assert.deepEqual(await issuesOf(yaml, (i) => `${i.severity} ${i.path}: ${i.message}`), [
    `warning routes./x.hosts.0: Certificate ${TLS}/cert.pem does not name [::2]: HTTPS clients reject it for that host`,
  ]);
});

interopTest(
  "a DER certificate or key gets the openssl command that converts it; a directory is named as such",
  [
    "openssl",
  ],
  () =>
    withTempDir(async (dir) => {
      await openssl("x509", "-in", `${TLS}/cert.pem`, "-outform", "DER", "-out", `${dir}/cert.der`);
      await openssl("pkey", "-in", `${TLS}/key.pem`, "-outform", "DER", "-out", `${dir}/key.der`);
      const issues = (cert: string, key: string) =>
        issuesOf(config(cert, key), (i) => `${i.path}: ${i.message} / ${i.hint}`);
      assert.deepEqual(await issues(`${dir}/cert.der`, `${TLS}/key.pem`), [
        `tls.cert_path: Cannot read a PEM certificate from ${dir}/cert.der / ${dir}/cert.der is binary (DER, or PKCS#12 .pfx/.p12), not PEM: convert it with \`openssl x509 -inform DER -in ${dir}/cert.der -out cert.pem\` (PKCS#12: \`openssl pkcs12 -in ${dir}/cert.der -nokeys -out cert.pem\`)`,
      ]);
      assert.match(
        (await issues(`${TLS}/cert.pem`, `${dir}/key.der`)).join(),
        new RegExp(`openssl pkey -inform DER -in ${dir}/key.der -out key.pem`),
      );
      // A directory (or a file Prox may not read) was "Cannot read a PEM certificate", with a
      // hint about the PEM format; then "Is a directory (os error 21)", with none.
      assert.deepEqual(await issues(dir, `${TLS}/key.pem`), [
        `tls.cert_path: ${dir} is a directory, not a file / Name the file itself (a PEM certificate chain)`,
      ]);
    }),
);

Deno.test("hsts preload without a year's max_age and include_subdomains is warned about", async () => {
  const issues = (hsts: string) =>
    issuesOf(
      config(`${TLS}/cert.pem`, `${TLS}/key.pem`).replace(
        `key_path: "${TLS}/key.pem" }`,
        `key_path: "${TLS}/key.pem", hsts: ${hsts} }`,
      ),
      (i) => `${i.path}: ${i.message}`,
    );
  assert.deepEqual(await issues("{ max_age: 1d, preload: true }"), [
    "tls.hsts.preload: HSTS preload lists refuse this header: preload needs max_age of at least 365d and include_subdomains: true",
  ]);
  assert.deepEqual(await issues("{ include_subdomains: true, preload: true }"), []);
  assert.deepEqual(await issues("{ max_age: 1d }"), []);
});

Deno.test("a public CA's certificate alone in cert_path (its intermediate missing) is warned about", async () => {
  const issues = (cert: string) =>
    issuesOf(config(cert, `${TLS}/key.pem`), (i) => `${i.path}: ${i.message}`);
  // certbot's cert.pem instead of fullchain.pem: desktop browsers fetch the intermediate, curl,
  // Android and API clients fail.
  assert.deepEqual(await issues(`${TLS}/aia.pem`), [
    `tls.cert_path: Certificate ${TLS}/aia.pem holds only the server's certificate, without the intermediate that issued it (CN=Prox Test CA): clients that do not download it themselves (curl, Android, API clients) fail`,
  ]);
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/full.pem`, read("aia.pem") + read("ca.pem"));
    assert.deepEqual(await issues(`${dir}/full.pem`), []);
    // A private CA's leaf (mkcert's, this test CA's) names no download address: no warning.
    assert.deepEqual(await issues(`${TLS}/cert.pem`), []);
  });
});

interopTest(
  "a certificate without subjectAltName (CN only) is warned about",
  ["openssl"],
  () =>
    withTempDir(async (dir) => {
      await openssl(
        ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
        ...["-keyout", `${dir}/key.pem`, "-out", `${dir}/cert.pem`, "-days", "30"],
        ...["-subj", "/CN=localhost"],
      );
      const yaml = config(`${dir}/cert.pem`, `${dir}/key.pem`).replace(
        '"/":',
        '"localhost/":',
      );
      // Chromium says ERR_CERT_COMMON_NAME_INVALID, rustls "certificate is not valid for any names".
      assert.deepEqual(await issuesOf(yaml, (i) => `${i.path}: ${i.message}`), [
        `tls.cert_path: Certificate ${dir}/cert.pem has no subjectAltName: browsers and TLS libraries ignore the subject's CN and reject it for every host`,
      ]);
    }),
);

interopTest(
  "a must-staple certificate (Prox cannot staple OCSP answers) is warned about",
  ["openssl"],
  () =>
    withTempDir(async (dir) => {
      for (
        const [name, ext] of [["plain", []], ["staple", ["-addext", "tlsfeature=status_request"]]]
      ) {
        await openssl(
          ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
          ...["-keyout", `${dir}/${name}.key`, "-out", `${dir}/${name}.pem`, "-days", "30"],
          ...["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", ...ext],
        );
      }
      const issues = (name: string) =>
        issuesOf(config(`${dir}/${name}.pem`, `${dir}/${name}.key`), (i) =>
          `${i.path}: ${i.message}`);
      assert.deepEqual(await issues("plain"), []);
      assert.deepEqual(await issues("staple"), [
        `tls.cert_path: Certificate ${dir}/staple.pem asks clients to require a stapled OCSP answer (TLS Feature status_request, "OCSP must-staple"), which Prox cannot send: Firefox refuses it`,
      ]);
    }),
);
