import assert from "node:assert/strict";
import type { Field } from "./qpack.ts";
import {
  MessageError,
  parseRequestHead,
  parseTrailers,
  parseUrgency,
  responseFields,
} from "./message.ts";

const opts = { maxFieldSectionSize: 16384 };
const base: Field[] = [
  [":method", "GET"],
  [":scheme", "https"],
  [":authority", "example.com"],
  [":path", "/a?b=1"],
];

function status(fields: Field[], o = opts): number {
  try {
    parseRequestHead(fields, o);
    return 0;
  } catch (err) {
    assert.ok(err instanceof MessageError, String(err));
    return err.status;
  }
}

Deno.test("parseRequestHead accepts a well-formed request and joins split cookies", () => {
  const head = parseRequestHead(
    [...base, ["cookie", "a=1"], ["accept", "*/*"], ["cookie", "b=2"], ["content-length", "5"]],
    opts,
  );
  assert.equal(head.method, "GET");
  assert.equal(head.authority, "example.com");
  assert.equal(head.path, "/a?b=1");
  assert.equal(head.contentLength, 5);
  assert.deepEqual(head.headers.find(([k]) => k === "cookie"), ["cookie", "a=1; b=2"]);
});

Deno.test("parseRequestHead rejects malformed pseudo-headers", () => {
  assert.equal(status(base.filter(([k]) => k !== ":method")), 400);
  assert.equal(status(base.filter(([k]) => k !== ":path")), 400);
  assert.equal(status([...base, [":path", "/x"]]), 400); // duplicate
  assert.equal(status([["accept", "*/*"], ...base]), 400); // pseudo after regular
  assert.equal(status([...base, [":status", "200"]]), 400); // response pseudo
  assert.equal(status([...base.slice(0, 3), [":path", "relative"]]), 400);
  assert.equal(status([[":method", "GET"], [":scheme", "https"], [":path", "/"]]), 400);
  assert.equal(
    status([[":method", "GET"], [":scheme", "ftp"], [":authority", "a"], [":path", "/"]]),
    400,
  );
  assert.equal(status([[":method", "CONNECT"], [":authority", "a:443"]]), 501);
});

Deno.test("parseRequestHead rejects connection headers, bad names and values", () => {
  for (
    const h of ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]
  ) {
    assert.equal(status([...base, [h, "x"]]), 400, h);
  }
  assert.equal(status([...base, ["te", "gzip"]]), 400);
  assert.equal(status([...base, ["te", "trailers"]]), 0);
  assert.equal(status([...base, ["Accept", "x"]]), 400); // uppercase
  assert.equal(status([...base, ["x", "a\r\nb"]]), 400);
  // Every control character but HTAB (RFC 9114 §10.3): they went upstream as raw bytes.
  assert.equal(status([...base, ["x", "a\x01b"]]), 400);
  assert.equal(status([...base, ["x", "a\x7fb"]]), 400);
  assert.equal(status([...base, ["x", "a\tb"]]), 0, "HTAB is allowed");
  assert.equal(status([...base, ["content-length", "-1"]]), 400);
  assert.equal(status([...base, ["content-length", "1"], ["content-length", "2"]]), 400);
  assert.equal(status([...base, ["host", "other.example"]]), 400);
});

Deno.test("parseRequestHead answers 431 past the field section limit", () => {
  assert.equal(status([...base, ["x", "v".repeat(200)]], { maxFieldSectionSize: 200 }), 431);
});

Deno.test("parseRequestHead takes host when :authority is absent", () => {
  const head = parseRequestHead(
    [...base.filter(([k]) => k !== ":authority"), ["host", "h.test"]],
    opts,
  );
  assert.equal(head.authority, "h.test");
});

Deno.test("parseTrailers rejects pseudo-headers", () => {
  assert.deepEqual(parseTrailers([["x-sum", "1"]]), [["x-sum", "1"]]);
  assert.throws(() => parseTrailers([[":path", "/"]]), MessageError);
});

Deno.test("responseFields drops connection-specific headers and keeps each set-cookie", () => {
  const h = new Headers([
    ["content-type", "text/plain"],
    ["connection", "x-hop"],
    ["x-hop", "1"],
    ["keep-alive", "5"],
    ["transfer-encoding", "chunked"],
  ]);
  h.append("set-cookie", "a=1");
  h.append("set-cookie", "b=2");
  assert.deepEqual(responseFields(200, h), [
    [":status", "200"],
    ["content-type", "text/plain"],
    ["set-cookie", "a=1"],
    ["set-cookie", "b=2"],
  ]);
});

Deno.test("parseUrgency reads u from RFC 9218 priority values", () => {
  assert.equal(parseUrgency("u=0"), 0);
  assert.equal(parseUrgency("u=5, i"), 5);
  assert.equal(parseUrgency("i, u=1"), 1);
  assert.equal(parseUrgency("i"), null);
  assert.equal(parseUrgency("u=9"), null);
  assert.equal(parseUrgency("u=-1"), null);
  assert.equal(parseUrgency(""), null);
});

Deno.test("parseRequestHead refuses whitespace in :path, as the HTTP/1.1 and HTTP/2 engines do", () => {
  // The URL parser would drop a tab ("/ad\tmin" became /admin) and encode a space.
  for (const path of ["/ad\tmin", "/a b", "/a?b= 1"]) {
    assert.equal(status([...base.slice(0, 3), [":path", path]]), 400, JSON.stringify(path));
  }
});
