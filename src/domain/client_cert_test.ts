import assert from "node:assert/strict";
import { compileClientCert, isSha256Fingerprint, normalizeFingerprint } from "./client_cert.ts";

const ALICE = {
  subject: "CN=alice,O=Example",
  san: "URI:spiffe://example.org/alice",
  fingerprint: "ab".repeat(32),
};

Deno.test("compileClientCert: every key given must hold, and no certificate never passes", () => {
  assert.equal(compileClientCert({})(ALICE), true);
  assert.equal(compileClientCert({})(undefined), false);
  assert.equal(compileClientCert({ subject_matches: "^CN=alice," })(ALICE), true);
  assert.equal(compileClientCert({ subject_matches: "^CN=bob," })(ALICE), false);
  const both = compileClientCert({ subject_matches: "alice", san_matches: "^URI:spiffe://other/" });
  assert.equal(both(ALICE), false);
  // Rust syntax, as the other regexes of the config: (?i) folds case.
  assert.equal(compileClientCert({ subject_matches: "(?i)^cn=ALICE" })(ALICE), true);
  const printed = compileClientCert({ fingerprints: ["AB:".repeat(31) + "AB"] });
  assert.equal(printed(ALICE), true);
  assert.equal(printed({ ...ALICE, fingerprint: "cd".repeat(32) }), false);
});

Deno.test("normalizeFingerprint and isSha256Fingerprint take hex with colons or spaces, any case", () => {
  assert.equal(normalizeFingerprint("AB:cd EF"), "abcdef");
  assert.equal(isSha256Fingerprint("AB:".repeat(31) + "AB"), true);
  assert.equal(isSha256Fingerprint("ab".repeat(20)), false); // SHA-1's length
  assert.equal(isSha256Fingerprint("zz".repeat(32)), false);
});
