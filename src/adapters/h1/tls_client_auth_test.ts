import assert from "node:assert/strict";
import { clientCertOf } from "./tls_client_auth.ts";
import { pemBlocks } from "../../domain/crl.ts";

const RAW = new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x06]);
const ALICE = new URL("../../../tests/fixtures/tls/alice.pem", import.meta.url);

Deno.test("clientCertOf writes the names as RFC 4514 does, control characters escaped", () => {
  const cert = clientCertOf({
    raw: RAW,
    // node lists the attributes most general first; a repeated one is an array.
    subject: { O: ["Acme, Inc.", "Ops"], CN: "evil\r\nX-Admin: 1" },
    issuer: { CN: " CA #1 " },
    serialNumber: "0a1b",
    fingerprint256: "AB:CD",
    // (Read from the certificate, not node's, whose values may hold an unquoted ", ".)
    subjectaltname: "URI:spiffe://x/, URI:spiffe://y",
    valid_to: "Nov  5 00:38:10 2126 GMT",
  })!;
  // A header rule sending the subject is never skipped for a control character (which would leave
  // a client's own header of that name in place).
  assert.equal(cert.subject, "CN=evil\\0D\\0AX-Admin: 1,O=Acme\\, Inc.,O=Ops");
  assert.equal(cert.issuer, "CN=\\ CA #1\\ ");
  assert.equal(cert.san, "<unreadable>");
  assert.equal(cert.serial, "0A1B");
  assert.equal(cert.fingerprint, "abcd");
  assert.equal(cert.notAfter, "2126-11-05T00:38:10.000Z");
  assert.match(cert.pem, /^-----BEGIN CERTIFICATE-----\nMAMCAQY=\n-----END CERTIFICATE-----\n$/);
});

Deno.test("clientCertOf: no certificate presented is null", () => {
  assert.equal(clientCertOf({}), null);
  assert.equal(clientCertOf({ raw: new Uint8Array(0) }), null);
});

Deno.test("clientCertOf reads the subjectAltName from the certificate", () => {
  const raw = pemBlocks(Deno.readTextFileSync(ALICE), "CERTIFICATE")[0];
  assert.equal(clientCertOf({ raw })!.san, "URI:spiffe://prox.test/alice");
});
