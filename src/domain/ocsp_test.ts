import assert from "node:assert/strict";
import { ocspRequest, parseOcspResponse } from "./ocsp.ts";

const bytes = (hex: string) => Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));

Deno.test("ocspRequest encodes one SHA-1 CertID", () => {
  const req = ocspRequest({
    issuerNameHash: bytes("11".repeat(20)),
    issuerKeyHash: bytes("22".repeat(20)),
    serial: bytes("06"),
  });
  // OCSPRequest { TBSRequest { requestList { Request { CertID (58 bytes of contents) } } } }.
  assert.equal(
    Array.from(req.subarray(0, 10), (b) => b.toString(16).padStart(2, "0")).join(""),
    "30423040303e303c303a",
  );
  assert.equal(req.length, 0x44);
  assert.deepEqual(Array.from(req.subarray(10, 21)), Array.from(bytes("300906052b0e03021a0500")));
  assert.deepEqual(Array.from(req.subarray(-3)), [0x02, 0x01, 0x06]);
});

Deno.test("parseOcspResponse: an unsuccessful status has no responses; garbage throws", () => {
  // OCSPResponse { responseStatus tryLater (3) }
  const later = parseOcspResponse(bytes("30030a0103"));
  assert.equal(later.status, 3);
  assert.deepEqual(later.responses, []);
  assert.throws(() => parseOcspResponse(bytes("30030a0100")), /without responseBytes/);
  assert.throws(() => parseOcspResponse(bytes("3003020100")), /not an OCSPResponse/);
  assert.throws(() => parseOcspResponse(bytes("30030a010300")), /not an OCSPResponse/);
  assert.throws(() => parseOcspResponse(new Uint8Array(0)), /truncated/);
});
