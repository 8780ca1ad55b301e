import assert from "node:assert/strict";
import { subjectAltNames } from "./x509_names.ts";
import { pemBlocks } from "./crl.ts";

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
