import assert from "node:assert/strict";
import { certificateCovers, chooseCertificate } from "./cert_names.ts";

const c = (...dns: string[]) => ({ dns, ip: [] });

Deno.test("certificateCovers: a wildcard holds one label; exactly takes names only", () => {
  assert.equal(certificateCovers(c("*.a.example"), "x.a.example"), true);
  assert.equal(certificateCovers(c("*.a.example"), "x.y.a.example"), false);
  assert.equal(certificateCovers(c("*.a.example"), "a.example"), false);
  assert.equal(certificateCovers(c("*.a.example"), "x.a.example", true), false);
  assert.equal(certificateCovers(c("X.A.example."), "x.a.example.", true), true);
  assert.equal(certificateCovers({ dns: [], ip: ["::1"] }, "[0:0::1]", true), true);
});

Deno.test("chooseCertificate: an exact name before a wildcard, else the first, else -1", () => {
  const list = [c("*.a.example", "a.example"), c("www.a.example"), c("*.a.example", "b.example")];
  assert.equal(chooseCertificate(list, "www.a.example"), 1);
  assert.equal(chooseCertificate(list, "WWW.A.example."), 1);
  assert.equal(chooseCertificate(list, "api.a.example"), 0);
  assert.equal(chooseCertificate(list, "b.example"), 2);
  assert.equal(chooseCertificate(list, "nothing.example"), -1);
  assert.equal(chooseCertificate([], "a.example"), -1);
});

Deno.test("chooseCertificate: the main certificate's exact name beats another's wildcard", () => {
  // nginx, Caddy and HAProxy: an exact name wins whichever certificate (server block) holds it.
  const main = c("www.a.example", "a.example");
  const sni = [c("*.a.example"), c("api.a.example")];
  assert.equal(chooseCertificate(sni, "www.a.example", main), -1);
  assert.equal(chooseCertificate(sni, "WWW.A.example.", main), -1);
  assert.equal(chooseCertificate(sni, "api.a.example", main), 1);
  assert.equal(chooseCertificate(sni, "x.a.example", main), 0);
  // An exact name in a tls.sni certificate still comes first (as before).
  assert.equal(chooseCertificate([c("www.a.example")], "www.a.example", main), 0);
  assert.equal(chooseCertificate(sni, "nothing.example", main), -1);
});
