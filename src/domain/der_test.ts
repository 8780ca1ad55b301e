import assert from "node:assert/strict";
import { pssParams, readDer } from "./der.ts";

Deno.test("pssParams: RFC 4055's defaults, the fields given, and malformed parameters refused", () => {
  const tlv = (tag: number, ...parts: number[][]) => {
    const body = parts.flat();
    return [tag, body.length, ...body];
  };
  const oid = (...bytes: number[]) => tlv(0x06, bytes);
  const PSS = oid(0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a);
  const MGF1 = oid(0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08);
  const SHA256 = tlv(0x30, oid(0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01), [0x05, 0x00]);
  const read = (...params: number[][]) => {
    const der = Uint8Array.from(tlv(0x30, PSS, ...params));
    return pssParams(der, readDer(der, 0));
  };
  assert.deepEqual(read(tlv(0x30)), {
    hash: "1.3.14.3.2.26",
    mgfHash: "1.3.14.3.2.26",
    saltLength: 20,
    trailer: 1,
  });
  assert.deepEqual(
    read(
      tlv(0x30, tlv(0xa0, SHA256), tlv(0xa1, tlv(0x30, MGF1, SHA256)), tlv(0xa2, tlv(0x02, [32]))),
    ),
    {
      hash: "2.16.840.1.101.3.4.2.1",
      mgfHash: "2.16.840.1.101.3.4.2.1",
      saltLength: 32,
      trailer: 1,
    },
  );
  for (
    const bad of [
      [], // no parameters
      [[0x05, 0x00]], // NULL
      [tlv(0x30, tlv(0xa2, tlv(0x02, [0xff])))], // a negative salt
      [tlv(0x30, tlv(0xa2, tlv(0x02, [1, 0, 0, 0])))], // a salt past any key
      [tlv(0x30, tlv(0xa2, tlv(0x04, [32])))], // not an INTEGER
      [tlv(0x30, tlv(0xa4, tlv(0x02, [1])))], // an unknown field
      [tlv(0x30, tlv(0xa1, tlv(0x30, SHA256)))], // a mask function other than MGF1
      [tlv(0x30, tlv(0xa1, tlv(0x30, MGF1)))], // MGF1 without its digest
      [tlv(0x30, tlv(0xa0))], // an empty digest
    ]
  ) assert.throws(() => read(...bad), /RSASSA-PSS/, JSON.stringify(bad));
});
