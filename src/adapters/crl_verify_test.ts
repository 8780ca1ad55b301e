import assert from "node:assert/strict";
import { unsignedLists } from "./crl_verify.ts";
import { pemBlocks, revocationCheck } from "../domain/crl.ts";
import { interopTest, run } from "../../tests/_harness.ts";

const TLS = new URL("../../tests/fixtures/tls/", import.meta.url).pathname;
const CRL = Deno.readTextFileSync(`${TLS}alice-revoked.crl`);
const CA = Deno.readTextFileSync(`${TLS}ca.pem`);

/** `der` as a PEM X509 CRL. */
const pem = (der: Uint8Array) =>
  `-----BEGIN X509 CRL-----\n${btoa(String.fromCharCode(...der))}\n-----END X509 CRL-----\n`;

/** Where `needle` last occurs in `hay`. */
function lastIndexOf(hay: Uint8Array, needle: number[]): number {
  outer: for (let i = hay.length - needle.length; i >= 0; i--) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

Deno.test("unsignedLists: the test CA's list verifies (ECDSA P-256, SHA-256) with its certificate", () => {
  assert.deepEqual(unsignedLists(CRL, CA), []);
  // Among other certificates of the file too.
  const others = Deno.readTextFileSync(`${TLS}stranger.pem`) + CA;
  assert.deepEqual(unsignedLists(CRL, others), []);
});

Deno.test("unsignedLists: a list from another CA, one altered after signing, one of an unknown algorithm", () => {
  assert.deepEqual(unsignedLists(CRL, Deno.readTextFileSync(`${TLS}stranger.pem`)), [
    'the list of "Prox Test CA" is not from a CA in ca_cert (no certificate there is its issuer: for an intermediate\'s list, add the intermediate to ca_cert)',
  ]);
  const der = pemBlocks(CRL, "X509 CRL")[0];
  // alice's serial (6) on the list made 7: the signature no longer covers what the list says.
  const serial = lastIndexOf(der, [0x02, 0x01, 0x06]);
  assert.ok(serial > 0);
  const altered = der.slice();
  altered[serial + 2] = 0x07;
  assert.deepEqual(unsignedLists(pem(altered), CA), [
    `the list of "Prox Test CA" does not verify with its issuer's key in ca_cert`,
  ]);
  // The outer signatureAlgorithm (ecdsa-with-SHA256, the last of its two copies) made unknown.
  const oid = lastIndexOf(der, [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]);
  const odd = der.slice();
  odd[oid + 9] = 0x09;
  assert.deepEqual(unsignedLists(pem(odd), CA), [
    'the list of "Prox Test CA" is signed with an algorithm Prox does not check (1.2.840.10045.4.3.9)',
  ]);
  // Two lists: each is judged.
  assert.equal(unsignedLists(CRL + pem(altered), CA).length, 1);
});

interopTest(
  "unsignedLists: lists openssl signs with RSA (SHA-256) and Ed25519 verify; crossed, they do not",
  [
    "openssl",
  ],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "prox-crl-" });
    try {
      const made: Record<string, { ca: string; crl: string }> = {};
      for (const [name, key] of [["rsa", "rsa:2048"], ["ed25519", "ed25519"]]) {
        const at = (f: string) => `${dir}/${name}.${f}`;
        const ok = async (args: string[]) => {
          const r = await run("openssl", args);
          assert.equal(r.code, 0, r.stderr);
        };
        await ok([
          "req",
          "-x509",
          "-newkey",
          key,
          "-nodes",
          "-keyout",
          at("key"),
          "-out",
          at("pem"),
          "-subj",
          `/CN=${name} CA`,
          "-days",
          "1",
          "-addext",
          "basicConstraints=critical,CA:TRUE",
          "-addext",
          "keyUsage=critical,keyCertSign,cRLSign",
        ]); // deno-fmt-ignore
        await Deno.writeTextFile(at("idx"), "");
        await Deno.writeTextFile(at("num"), "01\n");
        await Deno.writeTextFile(
          at("cnf"),
          `[ca]\ndefault_ca = d\n[d]\ndatabase = ${at("idx")}\ndefault_md = default\n` +
            `crlnumber = ${at("num")}\ndefault_crl_days = 1\n`,
        );
        await ok([
          "ca",
          "-batch",
          "-config",
          at("cnf"),
          "-cert",
          at("pem"),
          "-keyfile",
          at("key"),
          "-gencrl",
          "-out",
          at("crl"),
        ]); // deno-fmt-ignore
        made[name] = { ca: await Deno.readTextFile(at("pem")), crl: await Deno.readTextFile(at("crl")) };
      }
      assert.deepEqual(unsignedLists(made.rsa.crl, made.rsa.ca), []);
      assert.deepEqual(unsignedLists(made.ed25519.crl, made.ed25519.ca), []);
      assert.equal(unsignedLists(made.rsa.crl, made.ed25519.ca).length, 1);
      assert.deepEqual(
        unsignedLists(made.rsa.crl + made.ed25519.crl, made.ed25519.ca + made.rsa.ca),
        [],
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

interopTest("revocationCheck: a delta or an indirect list is refused, a partial one is read", [
  "openssl",
], async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-crl-ext-" });
  try {
    // A CA, a certificate it revokes, and its lists with each critical extension.
    const script = `set -e
cd "${dir}"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \\
  -keyout ca.key -out ca.pem -subj /CN=CA -addext keyUsage=critical,keyCertSign,cRLSign
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout a.key -out a.csr \\
  -subj /CN=a
openssl x509 -req -in a.csr -CA ca.pem -CAkey ca.key -set_serial 0x1122 -days 1 -out a.pem
cat > ca.cnf <<X
[ca]
default_ca = d
[d]
database = idx
default_md = sha256
crlnumber = num
default_crl_days = 1
[delta]
2.5.29.27 = critical,ASN1:INTEGER:1
[indirect]
issuingDistributionPoint = critical,@indirect_idp
[indirect_idp]
indirectCRL = TRUE
[partial]
issuingDistributionPoint = critical,@partial_idp
[partial_idp]
fullname = URI:http://crl.example/ca.crl
onlysomereasons = keyCompromise
X
touch idx && echo 01 > num
openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -revoke a.pem
for e in delta indirect partial; do
  openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -gencrl -crlexts $e -out $e.crl
done
`;
    const r = await run("bash", ["-c", script]);
    assert.equal(r.code, 0, r.stderr);
    const list = (name: string) => Deno.readTextFileSync(`${dir}/${name}.crl`);
    // Read as a complete list, the delta let in every certificate its base revokes.
    assert.throws(() => revocationCheck(list("delta")), /^Error: the list is a delta CRL/);
    assert.throws(() => revocationCheck(list("indirect")), /^Error: the list is an indirect CRL/);
    const a = pemBlocks(Deno.readTextFileSync(`${dir}/a.pem`), "CERTIFICATE")[0];
    assert.equal(revocationCheck(list("partial")).revoked(a), true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest(
  "unsignedLists: a list openssl signs with RSA-PSS verifies, with the parameters it names",
  [
    "openssl",
  ],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "prox-crl-pss-" });
    try {
      const r = await run("bash", [
        "-c",
        `set -e
cd "${dir}"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -subj "/CN=PSS CA" -days 1 \\
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
touch idx && echo 01 > num
printf '[ca]\\ndefault_ca = d\\n[d]\\ndatabase = idx\\ndefault_md = sha384\\ncrlnumber = num\\ndefault_crl_days = 1\\n' > cnf
openssl ca -batch -config cnf -cert ca.pem -keyfile ca.key -gencrl -out pss.crl \\
  -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:20
openssl ca -batch -config cnf -cert ca.pem -keyfile ca.key -gencrl -out pss-digest.crl \\
  -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest
openssl crl -in pss.crl -noout -text | grep -q "Salt Length: 0x14"`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const ca = await Deno.readTextFile(`${dir}/ca.pem`);
      for (const f of ["pss.crl", "pss-digest.crl"]) {
        assert.deepEqual(unsignedLists(await Deno.readTextFile(`${dir}/${f}`), ca), [], f);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
