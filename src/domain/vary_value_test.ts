import assert from "node:assert/strict";
import { varyValue } from "./vary_value.ts";

Deno.test("varyValue gives one spelling to Accept-Encoding values that mean the same", () => {
  const same = [
    "gzip, br",
    "br,gzip",
    "BR , GZip",
    "gzip;q=1, br",
    "gzip, , br",
    "br;Q=1.000,gzip",
  ];
  for (const v of same) assert.equal(varyValue("accept-encoding", v), "br,gzip", v);
  assert.equal(varyValue("accept-encoding", "gzip;q=0.50, br"), "br,gzip;q=0.5");
  assert.equal(varyValue("accept-encoding", "gzip"), "gzip");
  // Not the same: another weight, a refused coding, absent vs empty (identity only).
  assert.notEqual(varyValue("accept-encoding", "gzip;q=0.5, br"), "br,gzip");
  assert.notEqual(varyValue("accept-encoding", "gzip, br;q=0"), "br,gzip");
  assert.equal(varyValue("accept-encoding", null), null);
  assert.equal(varyValue("accept-encoding", ""), "");
  // A coding named twice: the last weight may decide, so the order stays.
  assert.equal(varyValue("accept-encoding", "gzip;q=0, br, gzip"), "gzip;q=0,br,gzip");
  assert.equal(varyValue("accept-encoding", "gzip, br, gzip;q=0"), "gzip,br,gzip;q=0");
});

Deno.test("varyValue keeps the order of Accept and Accept-Language, normalising spacing and case", () => {
  assert.equal(varyValue("accept-language", "en-US , de; q=0.50"), "en-us,de;q=0.5");
  assert.equal(varyValue("accept-language", "de;q=0.5, en-US"), "de;q=0.5,en-us");
  assert.equal(
    varyValue("accept", "Text/HTML; Level=1, application/xml;q=0.9, */*;q=0.8"),
    "text/html;level=1,application/xml;q=0.9,*/*;q=0.8",
  );
  // A q=1 that is not the last parameter, and an invalid qvalue, are kept as they are.
  assert.equal(varyValue("accept", "text/html;q=1;x=y"), "text/html;q=1;x=y");
  assert.equal(varyValue("accept-encoding", "gzip;q=2"), "gzip;q=2");
  // A quoted string may hold a comma or a semicolon: the value compares as sent.
  assert.equal(varyValue("accept", 'text/html;x="a, b"'), 'text/html;x="a, b"');
});

Deno.test("varyValue compares fields of unknown syntax as sent", () => {
  for (const name of ["user-agent", "cookie", "origin", "x-custom"]) {
    assert.equal(varyValue(name, "A  b,c"), "A  b,c", name);
    assert.notEqual(varyValue(name, "a, b"), varyValue(name, "a,b"), name);
  }
});
