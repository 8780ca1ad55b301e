import assert from "node:assert/strict";
import { certificateNames, distinguishedName, mustStaple, subjectAltNames } from "./x509_names.ts";
import { pemBlocks } from "./crl.ts";
import { readDer } from "./der.ts";

const TLS = new URL("../../tests/fixtures/tls/", import.meta.url).pathname;
const der = (file: string) => pemBlocks(Deno.readTextFileSync(`${TLS}${file}`), "CERTIFICATE")[0];

Deno.test("subjectAltNames writes each name as OpenSSL names its kind", () => {
  assert.equal(
    subjectAltNames(der("cert.pem")),
    "DNS:localhost, DNS:*.localhost, DNS:example.com, DNS:*.example.com, IP Address:127.0.0.1, IP Address:::1",
  );
  assert.equal(subjectAltNames(der("alice.pem")), "URI:spiffe://prox.test/alice");
  // No subjectAltName extension.
  assert.equal(subjectAltNames(der("ca.pem")), "");
});

/** A certificate (DER) holding only the subjectAltName extension `san` (its GeneralNames). */
function withSan(san: number[]): Uint8Array {
  const tlv = (tag: number, body: number[]) => [tag, body.length, ...body];
  const ext = tlv(0x30, [
    ...tlv(0x06, [0x55, 0x1d, 0x11]), // 2.5.29.17
    ...tlv(0x04, tlv(0x30, san)),
  ]);
  // serial, signature, issuer, validity, subject, key: only their shapes matter here.
  const tbs = tlv(0x30, [
    ...tlv(0xa0, tlv(0x02, [2])),
    ...tlv(0x02, [1]),
    ...tlv(0x30, []),
    ...tlv(0x30, []),
    ...tlv(0x30, []),
    ...tlv(0x30, []),
    ...tlv(0x30, []),
    ...tlv(0xa3, tlv(0x30, ext)),
  ]);
  return new Uint8Array(tlv(0x30, tbs));
}

Deno.test("subjectAltNames quotes a value holding a comma, a quote or a control character", () => {
  const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));
  const uri = (s: string) => [0x86, s.length, ...ascii(s)];
  assert.equal(
    subjectAltNames(withSan([...uri("spiffe://a, URI:spiffe://b"), ...uri("spiffe://c")])),
    'URI:"spiffe://a\\u002c URI:spiffe://b", URI:spiffe://c',
  );
  assert.equal(subjectAltNames(withSan(uri('x"\ny'))), 'URI:"x\\"\\ny"');
  // IP addresses of either family, a v4-mapped one as such.
  const ip = (b: number[]) => [0x87, b.length, ...b];
  assert.equal(
    subjectAltNames(withSan([
      ...ip([10, 0, 0, 1]),
      ...ip([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
      ...ip([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]),
    ])),
    "IP Address:10.0.0.1, IP Address:2001:db8::1, IP Address:::ffff:10.0.0.1",
  );
});

/** A Name (DER) of the RDNs given, each a list of [OID bytes, string tag, value]. */
function name(rdns: [number[], number, string][][]): Uint8Array {
  const tlv = (tag: number, body: number[]) => [tag, body.length, ...body];
  const utf8 = (s: string) => [...new TextEncoder().encode(s)];
  return new Uint8Array(tlv(
    0x30,
    rdns.flatMap((rdn) =>
      tlv(
        0x31,
        rdn.flatMap(([oid, tag, v]) => tlv(0x30, [...tlv(0x06, oid), ...tlv(tag, utf8(v))])),
      )
    ),
  ));
}

const CN = [0x55, 0x04, 0x03], O = [0x55, 0x04, 0x0a], OU = [0x55, 0x04, 0x0b];
const DC = [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19];
const UID = [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01];

Deno.test("distinguishedName writes a Name as RFC 4514 does: most specific first, every attribute", () => {
  const dn = (rdns: [number[], number, string][][]) => {
    const der = name(rdns);
    return distinguishedName(der, readDer(der, 0));
  };
  // DC and UID kept; repeated OUs in their own places; a multi-valued RDN joined by "+".
  assert.equal(
    dn([
      [[DC, 0x16, "com"]],
      [[DC, 0x16, "example"]],
      [[O, 0x0c, "Acme, Inc."]],
      [[OU, 0x0c, "a"]],
      [[CN, 0x0c, "alice"], [UID, 0x0c, "42"]],
      [[OU, 0x0c, "b"]],
    ]),
    "OU=b,CN=alice+UID=42,OU=a,O=Acme\\, Inc.,DC=example,DC=com",
  );
  // Escapes (RFC 4514 §2.4), control characters as \XX (a header cannot carry them).
  assert.equal(dn([[[CN, 0x0c, " #x\r\nX-Admin: 1+y "]]]), "CN=\\ #x\\0D\\0AX-Admin: 1\\+y\\ ");
  // An attribute without a short name: its OID, the value's DER in hex (§2.4).
  assert.equal(dn([[[[0x55, 0x04, 0x48], 0x0c, "r"]]]), "2.5.4.72=#0c0172");
});

Deno.test("certificateNames reads a certificate's subject and issuer", () => {
  assert.deepEqual(certificateNames(der("alice.pem")), {
    subject: "CN=alice,O=Prox Test",
    issuer: "CN=Prox Test CA",
  });
});

Deno.test("distinguishedName: an attribute type DER does not allow is not read as another", () => {
  // 55 80 04 03 would read as CN (2.5.4.3) with its padding skipped; 88 37 is 2.999.
  for (const [oid, want] of [[[0x55, 0x80, 0x04, 0x03], null], [[0x88, 0x37], "2.999=#0c0178"]]) {
    const der = name([[[oid as number[], 0x0c, "x"]]]);
    const read = () => distinguishedName(der, readDer(der, 0));
    if (want === null) assert.throws(read);
    else assert.equal(read(), want);
  }
});

/** A certificate (DER) holding only a TLS Feature extension (1.3.6.1.5.5.7.1.24) of `value`. */
function withTlsFeature(value: number[]): Uint8Array {
  const tlv = (tag: number, body: number[]) => [tag, body.length, ...body];
  const ext = tlv(0x30, [
    ...tlv(0x06, [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x18]),
    ...tlv(0x04, value),
  ]);
  const tbs = tlv(0x30, [
    ...tlv(0xa0, tlv(0x02, [2])),
    ...tlv(0x02, [1]),
    ...[0, 0, 0, 0, 0].flatMap(() => tlv(0x30, [])),
    ...tlv(0xa3, tlv(0x30, ext)),
  ]);
  return new Uint8Array(tlv(0x30, tbs));
}

Deno.test("mustStaple reads a TLS Feature listing status_request, and is false for a malformed one", () => {
  const tlv = (tag: number, body: number[]) => [tag, body.length, ...body];
  assert.equal(mustStaple(withTlsFeature(tlv(0x30, tlv(0x02, [5])))), true);
  assert.equal(
    mustStaple(withTlsFeature(tlv(0x30, [...tlv(0x02, [17]), ...tlv(0x02, [5])]))),
    true,
  );
  assert.equal(mustStaple(withTlsFeature(tlv(0x30, tlv(0x02, [17])))), false);
  assert.equal(mustStaple(der("cert.pem")), false);
  // As its comment says: false, not an exception (a list cut short, an empty value, a length
  // past the end), so that whoever asks needs no try of its own.
  for (const bad of [[], [0x30], [0x30, 0x05, 0x02, 0x01, 0x05], [0x30, 0x03, 0x02, 0x05, 0x05]]) {
    assert.equal(mustStaple(withTlsFeature(bad)), false, JSON.stringify(bad));
  }
});
