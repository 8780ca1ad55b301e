import assert from "node:assert/strict";
import { interopTest, run } from "../../tests/_harness.ts";
import { startOcsp } from "../../tests/_ocsp.ts";
import { pemBlocks } from "../domain/crl.ts";
import { createHash } from "node:crypto";
import { ocspCertFields, ocspRequest } from "../domain/ocsp.ts";
import { createOcspChecker, type OcspConfig } from "./ocsp_check.ts";

const TLS = new URL("../../tests/fixtures/tls/", import.meta.url).pathname;
const der = (file: string) => pemBlocks(Deno.readTextFileSync(file), "CERTIFICATE")[0];
const ALICE = der(`${TLS}alice.pem`);
const LOCALHOST = der(`${TLS}cert.pem`);
const CA = der(`${TLS}ca.pem`);

const config = (o: Partial<OcspConfig>): OcspConfig => ({
  check: "leaf",
  timeout: 3_000,
  on_error: "refuse",
  cache_size: 100,
  ...o,
});

/** Runs `fn` with a temporary directory. */
async function inDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "prox-ocsp-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

interopTest(
  "OCSP: openssl's responder says good and revoked; answers are kept until asked again",
  ["openssl"],
  () =>
    inDir(async (dir) => {
      await using ocsp = await startOcsp({
        dir,
        valid: [`${TLS}cert.pem`],
        revoked: [`${TLS}alice.pem`],
        nmin: 10,
      });
      const checker = createOcspChecker(config({ responder: ocsp.url }));
      try {
        assert.deepEqual(await checker.check(LOCALHOST, CA), { refused: null });
        const alice = await checker.check(ALICE, CA);
        assert.match(alice.refused ?? "", /^certificate revoked on \d{4}-.*\(OCSP, http:/);
        assert.equal(ocsp.requests(), 2);
        // Kept: the same certificates are not asked about again (nor at once, concurrently).
        await Promise.all([checker.check(LOCALHOST, CA), checker.check(ALICE, CA)]);
        assert.equal(ocsp.requests(), 2);
        assert.equal(checker.cached, 2);
      } finally {
        checker.close();
      }
      // A certificate the responder does not know (not in its index) is refused.
      await using other = await startOcsp({ dir, valid: [`${TLS}cert.pem`] });
      const c2 = createOcspChecker(config({ responder: other.url, cache_size: 1 }));
      try {
        assert.match((await c2.check(ALICE, CA)).refused ?? "", /does not know the certificate/);
        // One concurrent flight per certificate.
        const [a, b] = await Promise.all([c2.check(LOCALHOST, CA), c2.check(LOCALHOST, CA)]);
        assert.deepEqual([a, b], [{ refused: null }, { refused: null }]);
        assert.equal(other.requests(), 2);
        assert.equal(c2.cached, 1, "bounded by cache_size");
      } finally {
        c2.close();
      }
    }),
);

interopTest(
  "OCSP: an answer signed by another key, a responder that is down, one that never answers",
  ["openssl"],
  () =>
    inDir(async (dir) => {
      // Signed by a key the CA did not delegate to (a stranger's): not trusted.
      await using forged = await startOcsp({
        dir,
        valid: [`${TLS}cert.pem`],
        signer: { cert: `${TLS}stranger.pem`, key: `${TLS}stranger.key` },
      });
      const c = createOcspChecker(config({ responder: forged.url }));
      assert.match(
        (await c.check(LOCALHOST, CA)).refused ?? "",
        /not signed by the certificate's issuer or its delegate/,
      );
      c.close();
      // Nothing listens: refused, or let in with on_error: allow (the error said).
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const down = `http://127.0.0.1:${l.addr.port}/`;
      l.close();
      const refuse = createOcspChecker(config({ responder: down }));
      assert.match((await refuse.check(LOCALHOST, CA)).refused ?? "", /could not be asked/);
      const allow = createOcspChecker(config({ responder: down, on_error: "allow" }));
      const v = await allow.check(LOCALHOST, CA);
      assert.equal(v.refused, null);
      assert.match(v.error ?? "", /could not be asked/);
      refuse.close();
      allow.close();
      // Accepts and never answers: the timeout decides.
      const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const held: Deno.Conn[] = [];
      const accepting = (async () => {
        for await (const conn of silent) held.push(conn);
      })();
      const slow = createOcspChecker(
        config({ responder: `http://127.0.0.1:${silent.addr.port}/`, timeout: 200 }),
      );
      assert.match((await slow.check(LOCALHOST, CA)).refused ?? "", /no answer within 200 ms/);
      slow.close();
      silent.close();
      await accepting.catch(() => {});
      for (const conn of held) conn.close();
    }),
);

interopTest(
  "OCSP: the responder a certificate names (authorityInfoAccess), and a delegated responder",
  ["openssl"],
  () =>
    inDir(async (dir) => {
      // A delegated responder certificate, issued by the CA for OCSP signing.
      const script = `set -e
cd "${dir}"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout resp.key -out resp.csr -subj /CN=responder
printf 'extendedKeyUsage=OCSPSigning\\n' > resp.ext
openssl x509 -req -in resp.csr -CA "${TLS}ca.pem" -CAkey "${TLS}ca.key" -set_serial 0x5151 -days 1 -extfile resp.ext -out resp.pem
`;
      const r = await run("bash", ["-c", script]);
      assert.equal(r.code, 0, r.stderr);
      await using ocsp = await startOcsp({
        dir,
        revoked: [`${TLS}alice.pem`],
        signer: { cert: `${dir}/resp.pem`, key: `${dir}/resp.key` },
      });
      // A client certificate naming that responder.
      const leaf = `set -e
cd "${dir}"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout aia.key -out aia.csr -subj /CN=aia
printf 'authorityInfoAccess=OCSP;URI:${ocsp.url},caIssuers;URI:http://ca.invalid/ca.der\\nextendedKeyUsage=clientAuth\\n' > aia.ext
openssl x509 -req -in aia.csr -CA "${TLS}ca.pem" -CAkey "${TLS}ca.key" -set_serial 0x5152 -days 1 -extfile aia.ext -out aia.pem
`;
      const r2 = await run("bash", ["-c", leaf]);
      assert.equal(r2.code, 0, r2.stderr);
      const aia = der(`${dir}/aia.pem`);
      assert.deepEqual(ocspCertFields(aia).ocspUrls, [ocsp.url]);
      assert.equal(ocspCertFields(der(`${dir}/resp.pem`)).ocspSigning, true);
      const c = createOcspChecker(config({}));
      try {
        // Not in the responder's index: unknown, asked where the certificate says.
        assert.match((await c.check(aia, CA)).refused ?? "", /does not know the certificate/);
        assert.equal(ocsp.requests(), 1);
        // alice names no responder: refused (with ocsp.responder unset) without asking.
        assert.match((await c.check(ALICE, CA)).refused ?? "", /names no OCSP responder/);
      } finally {
        c.close();
      }
      const viaDelegate = createOcspChecker(config({ responder: ocsp.url }));
      try {
        assert.match((await viaDelegate.check(ALICE, CA)).refused ?? "", /^certificate revoked/);
      } finally {
        viaDelegate.close();
      }
    }),
);

interopTest(
  "OCSP: the request is byte for byte the one openssl ocsp -no_nonce makes",
  ["openssl"],
  () =>
    inDir(async (dir) => {
      const r = await run("openssl", [
        "ocsp",
        ...["-issuer", `${TLS}ca.pem`, "-cert", `${TLS}alice.pem`, "-no_nonce"],
        ...["-reqout", `${dir}/req.der`],
      ]);
      assert.equal(r.code, 0, r.stderr);
      const alice = ocspCertFields(ALICE);
      const ca = ocspCertFields(CA);
      const sha1 = (b: Uint8Array) => new Uint8Array(createHash("sha1").update(b).digest());
      const ours = ocspRequest({
        issuerNameHash: sha1(alice.issuerName),
        issuerKeyHash: sha1(ca.publicKey),
        serial: alice.serial,
      });
      assert.deepEqual(Array.from(ours), Array.from(await Deno.readFile(`${dir}/req.der`)));
    }),
);

interopTest(
  "OCSP: a certificate with a private extension that is not DER inside is asked about like another",
  ["openssl"],
  () =>
    inDir(async (dir) => {
      // RFC 5280 wants DER in every extnValue, but an extension no one processes is not read
      // (OpenSSL takes such a certificate).
      const r = await run("bash", [
        "-c",
        `set -e
cd "${dir}"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout p.key -out p.csr -subj /CN=priv
printf 'extendedKeyUsage=clientAuth\\n1.3.6.1.4.1.99999.1=DER:FFFF\\n' > p.ext
openssl x509 -req -in p.csr -CA "${TLS}ca.pem" -CAkey "${TLS}ca.key" -set_serial 77 -days 1 -extfile p.ext -out p.pem
`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      await using ocsp = await startOcsp({ dir, valid: [`${dir}/p.pem`] });
      const checker = createOcspChecker(config({ responder: ocsp.url }));
      try {
        assert.deepEqual(await checker.check(der(`${dir}/p.pem`), CA), { refused: null });
      } finally {
        checker.close();
      }
    }),
);

Deno.test("OCSP: close ends a request in flight at once, refused whatever on_error says, and kept nowhere", async () => {
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) held.push(conn);
  })();
  const checker = createOcspChecker(
    config({
      responder: `http://127.0.0.1:${silent.addr.port}/`,
      timeout: 60_000,
      on_error: "allow",
    }),
  );
  try {
    const pending = checker.check(LOCALHOST, CA);
    while (held.length === 0) await new Promise((r) => setTimeout(r, 10));
    checker.close();
    const v = await pending;
    assert.match(v.refused ?? "", /listener closed/);
    assert.equal(checker.cached, 0);
    assert.match((await checker.check(LOCALHOST, CA)).refused ?? "", /listener closed/);
  } finally {
    checker.close();
    silent.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  }
});

interopTest(
  "OCSP: an answer without nextUpdate is current for an hour from its thisUpdate, not forever",
  ["openssl"],
  () =>
    inDir(async (dir) => {
      // No -nmin: openssl's answers carry thisUpdate (now) and no nextUpdate.
      await using ocsp = await startOcsp({ dir, valid: [`${TLS}cert.pem`] });
      const at = (offsetMs: number) =>
        createOcspChecker(config({ responder: ocsp.url, cache_size: 0 }), {
          now: () => Date.now() + offsetMs,
        });
      const fresh = at(50 * 60_000);
      const replayed = at(2 * 3_600_000);
      try {
        // Seen by a clock 50 min ahead the answer is 50 min old: taken; by one 2 h ahead: not.
        assert.deepEqual(await fresh.check(LOCALHOST, CA), { refused: null });
        assert.match(
          (await replayed.check(LOCALHOST, CA)).refused ?? "",
          /is out of date: it names no nextUpdate, and its thisUpdate \(.*\) is over an hour old/,
        );
      } finally {
        fresh.close();
        replayed.close();
      }
    }),
);

interopTest(
  "OCSP: an answer signed with RSA-PSS is checked with the parameters it names",
  ["openssl"],
  () =>
    inDir(async (dir) => {
      // An RSA CA and a client certificate it issued (the test CA's key is EC).
      const r = await run("bash", [
        "-c",
        `set -e
cd "${dir}"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout rsa-ca.key -out rsa-ca.pem -subj /CN=RSA-CA \\
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout leaf.key -out leaf.csr -subj /CN=erin
printf 'extendedKeyUsage=clientAuth\\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA rsa-ca.pem -CAkey rsa-ca.key -set_serial 0x77 -days 1 -extfile leaf.ext -out leaf.pem
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout other.key -out other.pem -subj /CN=RSA-CA`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const ca = der(`${dir}/rsa-ca.pem`);
      const leaf = der(`${dir}/leaf.pem`);
      const responder = (rsigopt: string[], rmd?: string) =>
        startOcsp({
          dir,
          ca: `${dir}/rsa-ca.pem`,
          caKey: `${dir}/rsa-ca.key`,
          valid: [`${dir}/leaf.pem`],
          rsigopt,
          rmd,
        });
      for (
        const [opts, rmd] of [
          [["rsa_padding_mode:pss"], undefined],
          [["rsa_padding_mode:pss", "rsa_pss_saltlen:20"], "sha384"],
          [["rsa_padding_mode:pss", "rsa_pss_saltlen:0"], "sha512"],
          [[], undefined], // PKCS #1 v1.5, as before
        ] as const
      ) {
        await using ocsp = await responder([...opts], rmd);
        const checker = createOcspChecker(config({ responder: ocsp.url }));
        try {
          assert.deepEqual(await checker.check(leaf, ca), { refused: null }, opts.join(" "));
        } finally {
          checker.close();
        }
      }
      // Another RSA key's PSS signature is still not the CA's.
      await using forged = await startOcsp({
        dir,
        ca: `${dir}/rsa-ca.pem`,
        caKey: `${dir}/rsa-ca.key`,
        valid: [`${dir}/leaf.pem`],
        signer: { cert: `${dir}/other.pem`, key: `${dir}/other.key` },
        rsigopt: ["rsa_padding_mode:pss"],
      });
      const checker = createOcspChecker(config({ responder: forged.url }));
      try {
        assert.match((await checker.check(leaf, ca)).refused ?? "", /not signed by/);
      } finally {
        checker.close();
      }
    }),
);

interopTest(
  "OCSP: answers are kept by a monotonic clock: the wall clock set back does not keep them longer",
  ["openssl"],
  () =>
    inDir(async (dir) => {
      await using ocsp = await startOcsp({ dir, valid: [`${TLS}cert.pem`], nmin: 10 });
      let wall = Date.now();
      let mono = 0;
      const checker = createOcspChecker(config({ responder: ocsp.url }), {
        now: () => wall,
        elapsed: () => mono,
      });
      try {
        assert.deepEqual(await checker.check(LOCALHOST, CA), { refused: null });
        mono += 5 * 60_000; // 5 min on: kept (nextUpdate in 10 min)
        assert.deepEqual(await checker.check(LOCALHOST, CA), { refused: null });
        assert.equal(ocsp.requests(), 1);
        // The wall clock set back a day (a VM restored, NTP stepping), 11 min on: asked again.
        wall -= 86_400_000;
        mono += 6 * 60_000;
        await checker.check(LOCALHOST, CA);
        assert.equal(ocsp.requests(), 2);
      } finally {
        checker.close();
      }
    }),
);
