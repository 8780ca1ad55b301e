// The response cache under a route's `compress`: the 304 the store answers a client's condition
// with carries the Vary and ETag its stored 200 gets.

import assert from "node:assert/strict";
import type { Compressor } from "../ports.ts";
import { setup } from "./_cache_fixture.ts";

/** A stand-in engine: passes the bytes on (the coding is only named). */
const identity: Compressor = () => ({
  write: (chunk, emit) => emit(chunk),
  end: () => {},
  close: () => {},
});

const ETAG = '"v1"';

Deno.test("cachedProxy 304 from the store keeps the ETag and Vary of a 200 left uncompressed", async () => {
  for (const [type, size] of [["image/png", 4096], ["text/plain", 10]] as const) {
    const t = setup(() =>
      new Response(new Uint8Array(size), {
        headers: {
          "content-type": type,
          "content-length": String(size),
          "cache-control": "max-age=60",
          etag: ETAG,
        },
      }), { extra: "compress: true", compressor: identity });
    const ae = { "accept-encoding": "gzip" };
    const full = await t.get("/x", { headers: ae });
    assert.equal(full.res.status, 200);
    assert.equal(full.res.headers.get("content-encoding"), null, type);
    assert.equal(full.res.headers.get("etag"), ETAG);
    assert.equal(full.res.headers.get("vary"), null);
    const cond = await t.get("/x", { headers: { ...ae, "if-none-match": ETAG } });
    assert.equal(cond.res.status, 304);
    assert.equal(t.sent.length, 1);
    // RFC 9110 §15.4.5: the fields the 200 would carry; a weakened tag in a client's cache
    // would no longer serve If-Range, and a Vary it never had splits its entry.
    assert.equal(cond.res.headers.get("etag"), ETAG, type);
    assert.equal(cond.res.headers.get("vary"), null, type);
  }
});

Deno.test("cachedProxy 304 from the store weakens the ETag of a 200 compressed", async () => {
  const t = setup(() =>
    new Response("a".repeat(4096), {
      headers: { "content-type": "text/plain", "cache-control": "max-age=60", etag: ETAG },
    }), { extra: "compress: true", compressor: identity });
  const ae = { "accept-encoding": "gzip" };
  const full = await t.get("/x", { headers: ae });
  assert.equal(full.res.headers.get("content-encoding"), "gzip");
  const tag = full.res.headers.get("etag")!;
  assert.equal(tag, `W/${ETAG}`);
  const cond = await t.get("/x", { headers: { ...ae, "if-none-match": tag } });
  assert.equal(cond.res.status, 304);
  assert.equal(cond.res.headers.get("etag"), tag);
  assert.equal(cond.res.headers.get("vary"), "Accept-Encoding");
});
