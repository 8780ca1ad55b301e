import assert from "node:assert/strict";
import {
  certificateIsCa,
  certificateIssuerSerial,
  parseCrl,
  pemBlocks,
  revocationCheck,
} from "./crl.ts";

const TLS = new URL("../../tests/fixtures/tls/", import.meta.url);
const read = (name: string) => Deno.readTextFileSync(new URL(name, TLS));
const der = (name: string) => pemBlocks(read(name), "CERTIFICATE")[0];

Deno.test("parseCrl reads the issuer, the revoked serials and the next update of an openssl list", () => {
  const crl = parseCrl(pemBlocks(read("alice-revoked.crl"), "X509 CRL")[0]);
  assert.deepEqual([...crl.revoked], ["6"]);
  // The list's issuer is the test CA: the same Name bytes as the certificates it issued.
  assert.equal(crl.issuer, certificateIssuerSerial(der("alice.pem")).issuer);
  assert.ok(crl.nextUpdate !== null && crl.nextUpdate > Date.UTC(2100, 0, 1));
});

Deno.test("revocationCheck: a certificate on its issuer's list is revoked, others are not", () => {
  const check = revocationCheck(read("alice-revoked.crl"));
  assert.equal(check.lists, 1);
  assert.equal(check.revoked(der("alice.pem")), true);
  assert.equal(check.revoked(der("cert.pem")), false); // same CA, serial not listed
  // Another issuer's certificate: not on this list.
  assert.equal(check.revoked(der("stranger.pem")), false);
  // Bytes that are no certificate are not let in.
  assert.equal(check.revoked(new Uint8Array([0x30, 0x03, 0x02, 0x01])), true);
  // Whose issuer has a list here: the CA's certificates; not a stranger's, nor an unreadable one.
  assert.deepEqual(
    [der("alice.pem"), der("stranger.pem"), new Uint8Array([0x30, 0x00])].map((d) =>
      check.listed(d)
    ),
    [true, false, false],
  );
});

Deno.test("revocationCheck.staleSince: past its issuer's latest next update, for that issuer's certificates only", () => {
  const text = read("alice-revoked.crl");
  const check = revocationCheck(text);
  const due = check.nextUpdate!;
  assert.ok(due > Date.now());
  assert.equal(check.staleSince(der("cert.pem"), Date.now()), null);
  assert.equal(check.staleSince(der("cert.pem"), due + 1), due);
  assert.equal(check.staleSince(der("cert.pem"), due), null); // due, not yet past
  // An issuer without a list here has none to be out of date.
  assert.equal(check.staleSince(der("stranger.pem"), due + 1), null);
  assert.equal(check.staleSince(new Uint8Array([0x30, 0x03, 0x02, 0x01]), due + 1), null);
  assert.equal(check.outOfDate(Date.now()), null);
  assert.equal(check.outOfDate(due + 1), due);
});

Deno.test("revocationCheck refuses a file without a list, or a list it cannot read", () => {
  assert.throws(() => revocationCheck(read("ca.pem")), /no X509 CRL/);
  assert.throws(
    () => revocationCheck("-----BEGIN X509 CRL-----\nMAMCAQE=\n-----END X509 CRL-----\n"),
    /CertificateList|truncated/,
  );
  // A file caught mid-write (cron's second list cut short): not read as the first list alone,
  // which would drop the second issuer's revocations.
  const list = read("alice-revoked.crl");
  assert.throws(
    () => revocationCheck(list + list.slice(0, list.length / 2)),
    /2 lists begin, 1 ends/,
  );
  assert.throws(() => revocationCheck(list.slice(0, -30)), /1 list begins, 0 end/);
});

Deno.test("certificateIsCa: the CA's certificate is one, a client's is not", () => {
  assert.equal(certificateIsCa(der("ca.pem")), true);
  assert.equal(certificateIsCa(der("alice.pem")), false);
  assert.throws(() => certificateIsCa(new Uint8Array([0x30, 0x00])), /not a certificate/);
});
