import assert from "node:assert/strict";
import { clientCertOf } from "./tls_client_auth.ts";
import { pemBlocks } from "../../domain/crl.ts";

const ALICE = new URL("../../../tests/fixtures/tls/alice.pem", import.meta.url);

Deno.test("clientCertOf reads the names from the certificate, the rest from node", () => {
  const raw = pemBlocks(Deno.readTextFileSync(ALICE), "CERTIFICATE")[0];
  const cert = clientCertOf({
    raw,
    serialNumber: "0a1b",
    fingerprint256: "AB:CD",
    valid_to: "Nov  5 00:38:10 2126 GMT",
  })!;
  assert.equal(cert.subject, "CN=alice,O=Prox Test");
  assert.equal(cert.issuer, "CN=Prox Test CA");
  assert.equal(cert.san, "URI:spiffe://prox.test/alice");
  assert.equal(cert.serial, "0A1B");
  assert.equal(cert.fingerprint, "abcd");
  assert.equal(cert.notAfter, "2126-11-05T00:38:10.000Z");
  assert.match(cert.pem, /^-----BEGIN CERTIFICATE-----\nMII[\s\S]+\n-----END CERTIFICATE-----\n$/);
});

Deno.test("clientCertOf: no certificate presented is null, one that cannot be read says so", () => {
  assert.equal(clientCertOf({}), null);
  assert.equal(clientCertOf({ raw: new Uint8Array(0) }), null);
  const odd = clientCertOf({ raw: new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x06]) })!;
  assert.deepEqual([odd.subject, odd.issuer, odd.san], Array(3).fill("<unreadable>"));
});
