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

Deno.test("cachedProxy HEAD from the store on a compressing route carries no body", async () => {
  // fromStore answers HEAD with an empty stream (so the length is kept); compress ran it through
  // the engine, whose end bytes (a gzip trailer) became a HEAD body: counted in the access log,
  // and for a listener that writes what it gets, bytes after a bodiless answer.
  const trailer: Compressor = () => ({
    write: (chunk, emit) => emit(chunk),
    end: (emit) => emit(new TextEncoder().encode("<end")),
    close: () => {},
  });
  const t = setup(() =>
    new Response("a".repeat(4096), {
      headers: { "content-type": "text/plain", "cache-control": "max-age=60" },
    }), { extra: "compress: true", compressor: trailer });
  const ae = { "accept-encoding": "gzip" };
  await t.get("/x", { headers: ae });
  const head = await t.get("/x", { method: "HEAD", headers: ae });
  assert.match(head.res.headers.get("cache-status")!, /hit/);
  assert.equal(head.res.headers.get("content-encoding"), "gzip");
  assert.equal(head.text, "");
});
