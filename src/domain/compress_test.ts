import assert from "node:assert/strict";
import {
  compressPolicy,
  decideCompression,
  etagForEncoded,
  typeMatcher,
  varyWithAcceptEncoding,
} from "./compress.ts";
import type { CompressInput } from "./compress.ts";

const policy = compressPolicy(true)!;
const json: CompressInput = {
  method: "GET",
  acceptEncoding: "gzip, deflate, br, zstd",
  status: 200,
  contentType: "application/json; charset=utf-8",
  contentEncoding: null,
  contentLength: "5000",
  cacheControl: null,
  hasBody: true,
};
const decide = (over: Partial<CompressInput>, p = policy) =>
  decideCompression({ ...json, ...over }, p);

Deno.test("decideCompression picks the client's best coding, the route's order breaking ties", () => {
  assert.deepEqual(decide({}), { kind: "encode", coding: "zstd" });
  assert.deepEqual(decide({ acceptEncoding: "gzip;q=1, br;q=0.5" }), {
    kind: "encode",
    coding: "gzip",
  });
  assert.deepEqual(decide({ acceptEncoding: "*" }), { kind: "encode", coding: "zstd" });
  assert.deepEqual(decide({ acceptEncoding: "x-gzip" }), { kind: "encode", coding: "gzip" });
  assert.deepEqual(decide({ acceptEncoding: "*, zstd;q=0" }), { kind: "encode", coding: "br" });
  const gzipFirst = compressPolicy({ algorithms: ["gzip", "br"] })!;
  assert.deepEqual(decide({}, gzipFirst), { kind: "encode", coding: "gzip" });
  assert.deepEqual(decide({ acceptEncoding: "zstd" }, gzipFirst), { kind: "vary" });
});

Deno.test("decideCompression: no acceptable coding still varies; the response's own form skips", () => {
  assert.deepEqual(decide({ acceptEncoding: null }), { kind: "vary" });
  assert.deepEqual(decide({ acceptEncoding: "identity" }), { kind: "vary" });
  assert.deepEqual(decide({ acceptEncoding: "gzip;q=0" }), { kind: "vary" });
  for (
    const over of [
      { status: 204 },
      { status: 205 },
      { status: 205, method: "HEAD", hasBody: false },
      { status: 204, method: "HEAD", hasBody: false },
      { status: 206 },
      { status: 304 },
      { status: 101 },
      { contentEncoding: "gzip" },
      { cacheControl: "public, no-transform" },
      { contentType: null },
      { contentType: "image/png" },
      { contentType: "application/zip" },
      { contentLength: "1023" },
      { hasBody: false },
    ] satisfies Partial<CompressInput>[]
  ) assert.deepEqual(decide(over), { kind: "skip" }, JSON.stringify(over));
  assert.deepEqual(decide({ contentEncoding: "identity" }).kind, "encode");
  assert.deepEqual(decide({ cacheControl: "no-transformer" }).kind, "encode");
  assert.deepEqual(decide({ contentLength: null }).kind, "encode", "unknown length");
  assert.deepEqual(decide({ status: 404 }).kind, "encode");
  assert.deepEqual(decide({ method: "HEAD", hasBody: false }).kind, "encode");
  assert.deepEqual(
    decide({ contentLength: "10" }, compressPolicy({ min_length: 0 })!).kind,
    "encode",
  );
});

Deno.test("typeMatcher: exact types and * patterns, no parameters", () => {
  const m = typeMatcher(["text/*", "application/*+json", "image/svg+xml"]);
  assert.ok(m("text/html"));
  assert.ok(m("application/ld+json"));
  assert.ok(m("image/svg+xml"));
  assert.ok(!m("application/json"));
  assert.ok(!m("image/svgxxml"), "+ and . are literal");
  assert.ok(!m("text/html/x"));
  assert.ok(compressPolicy(true)!.types("text/event-stream"));
  assert.ok(!compressPolicy(true)!.types("font/woff2"));
  assert.equal(compressPolicy(false), null);
  assert.equal(compressPolicy(undefined), null);
});

Deno.test("varyWithAcceptEncoding and etagForEncoded", () => {
  assert.equal(varyWithAcceptEncoding(null), "Accept-Encoding");
  assert.equal(varyWithAcceptEncoding("Origin"), "Origin, Accept-Encoding");
  assert.equal(varyWithAcceptEncoding("origin, accept-encoding"), "origin, accept-encoding");
  assert.equal(varyWithAcceptEncoding("*"), "*");
  assert.equal(etagForEncoded('"abc"'), 'W/"abc"');
  assert.equal(etagForEncoded('W/"abc"'), 'W/"abc"');
});

Deno.test("decideCompression never encodes native gRPC (its clients do not undo Content-Encoding); gRPC-Web is HTTP", () => {
  // application/*+json (a default type) matches application/grpc+json.
  assert.deepEqual(decide({ contentType: "application/grpc+json" }), { kind: "skip" });
  const all = compressPolicy({ types: ["application/grpc", "application/grpc+proto", "*/*"] })!;
  for (
    const contentType of [
      "application/grpc",
      "application/GRPC+proto; x=1",
      "application/grpc+json",
    ]
  ) {
    assert.deepEqual(decide({ contentType }, all), { kind: "skip" }, contentType);
  }
  assert.deepEqual(decide({ contentType: "application/grpc-web-text" }, all), {
    kind: "encode",
    coding: "zstd",
  });
});
