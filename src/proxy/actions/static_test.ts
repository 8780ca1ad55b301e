import assert from "node:assert/strict";
import { serveStatic } from "./static.ts";
import type { StaticOptions } from "./static.ts";
import { FileChangedError, type FileStore, HEAD_ROOM, HEADROOM, RAW_BODY } from "../../ports.ts";
import type { Roomy } from "../../ports.ts";
import { WireResponse } from "../wire_response.ts";
import { httpDate } from "../../domain/conditional.ts";
import { compressPolicy } from "../../domain/compress.ts";

const MTIME = Date.UTC(2026, 0, 2, 3, 4, 5);
/** A request's time, a day after the files changed (unless a test gives its own). */
const NOW = MTIME + 86_400_000;
const enc = new TextEncoder();

/** An in-memory FileStore over `path → content` (directories implied), counting opens. */
function memStore(files: Record<string, string>): FileStore & { opens: number } {
  const store = {
    opens: 0,
    stat(_root: string, rel: string) {
      const p = rel.replace(/^\/+|\/+$/g, "");
      if (p in files) {
        return Promise.resolve({
          isFile: true,
          isDirectory: false,
          size: enc.encode(files[p]).length,
          mtime: MTIME,
        });
      }
      const dir = p === "" || Object.keys(files).some((f) => f.startsWith(p + "/"));
      return Promise.resolve(
        dir ? { isFile: false, isDirectory: true, size: 0, mtime: MTIME } : null,
      );
    },
    open(_root: string, rel: string, range?: { start: number; end: number }) {
      const p = rel.replace(/^\/+/, "");
      if (!(p in files)) return Promise.resolve(null);
      store.opens++;
      const bytes = enc.encode(files[p]);
      const part = range ? bytes.subarray(range.start, range.end + 1) : bytes;
      return Promise.resolve(new Response(part).body);
    },
  };
  return store;
}

const FILES = {
  "index.html": "<h1>home</h1>",
  "a.txt": "0123456789",
  "app.js": "console.log(1)",
  "app.js.br": "BR",
  "app.js.gz": "GZIP",
  "app.js.zst": "ZSTD",
  "same.js": "same",
  "same.js.br": "BR",
  "same.js.gz": "GZ",
  "docs/index.html": "<h1>docs</h1>",
  "docs/empty/x": "",
  ".env": "SECRET=1",
  "sub/.git/config": "x",
  ".well-known/security.txt": "Contact: x",
  "404.html": "custom not found",
  "empty.txt": "",
};

async function get(
  path: string,
  opts: Partial<StaticOptions> & { method?: string; headers?: HeadersInit } = {},
) {
  const files = opts.files ?? memStore(FILES);
  const prefix = opts.prefix ?? "/static";
  const req = new Request(`http://x${prefix === "/" ? "" : prefix}${path}`, {
    method: opts.method ?? "GET",
    headers: opts.headers,
  });
  const res = await serveStatic(req, {
    root: "/srv",
    relPath: path,
    prefix,
    query: "",
    requestId: "rid",
    ...opts,
    now: opts.now ?? NOW,
    files,
  });
  const body = await res.text();
  return { res, body, status: res.status, h: res.headers };
}

Deno.test("serveStatic serves a file with type, length, validators and nosniff", async () => {
  const { status, body, h } = await get("/a.txt");
  assert.equal(status, 200);
  assert.equal(body, "0123456789");
  assert.equal(h.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(h.get("content-length"), "10");
  assert.match(h.get("etag")!, /^W\/"a-/);
  assert.equal(h.get("last-modified"), httpDate(MTIME));
  assert.equal(h.get("accept-ranges"), "bytes");
  assert.equal(h.get("x-content-type-options"), "nosniff");
  assert.equal(h.get("cache-control"), null);
});

Deno.test("serveStatic HEAD sends the real length and never opens the file", async () => {
  const files = memStore(FILES);
  const { status, body, h } = await get("/a.txt", { method: "HEAD", files });
  assert.equal(status, 200);
  assert.equal(body, "");
  assert.equal(h.get("content-length"), "10");
  assert.equal(files.opens, 0);
});

Deno.test("serveStatic answers other methods with 405 and Allow, OPTIONS with 204", async () => {
  const post = await get("/a.txt", { method: "POST" });
  assert.equal(post.status, 405);
  assert.equal(post.h.get("allow"), "GET, HEAD, OPTIONS");
  const opt = await get("/a.txt", { method: "OPTIONS" });
  assert.equal(opt.status, 204);
  assert.equal(opt.h.get("allow"), "GET, HEAD, OPTIONS");
});

Deno.test("serveStatic answers 304 to If-None-Match and If-Modified-Since without opening", async () => {
  const files = memStore(FILES);
  const first = await get("/a.txt", { files, cacheControl: "max-age=60" });
  const etag = first.h.get("etag")!;
  const inm = await get("/a.txt", { files, headers: { "if-none-match": etag } });
  assert.equal(inm.status, 304);
  assert.equal(inm.h.get("etag"), etag);
  assert.equal(inm.h.get("cache-control"), null);
  const withCc = await get("/a.txt", {
    files,
    cacheControl: "max-age=60",
    headers: { "if-modified-since": httpDate(MTIME) },
  });
  assert.equal(withCc.status, 304);
  assert.equal(withCc.h.get("cache-control"), "max-age=60");
  assert.equal(files.opens, 1);
  const stale = await get("/a.txt", { headers: { "if-none-match": 'W/"old"' } });
  assert.equal(stale.status, 200);
  const ifMatch = await get("/a.txt", { headers: { "if-match": '"nope"' } });
  assert.equal(ifMatch.status, 412);
});

Deno.test("serveStatic dates a file from the future no later than the request", async () => {
  // RFC 9110 §8.8.2.1: a Last-Modified after the answer's Date is replaced by that time.
  const now = MTIME - 86_400_000;
  const res = await get("/a.txt", { now });
  assert.equal(res.h.get("last-modified"), httpDate(now));
  // Revalidating with that date: the file is still newer than it, never a 304 or a range.
  const ims = await get("/a.txt", { now, headers: { "if-modified-since": httpDate(now) } });
  assert.equal(ims.status, 200);
  const range = await get("/a.txt", {
    now,
    headers: { range: "bytes=0-0", "if-range": httpDate(now) },
  });
  assert.equal(range.status, 200);
  const nm = await get("/a.txt", { now, headers: { "if-none-match": res.h.get("etag")! } });
  assert.equal(nm.status, 304);
  assert.equal(nm.h.get("last-modified"), httpDate(now));
  // A file dated in the past keeps its own date.
  assert.equal((await get("/a.txt", { now: MTIME + 1 })).h.get("last-modified"), httpDate(MTIME));
});

Deno.test("serveStatic serves one range with 206 and refuses unsatisfiable ones with 416", async () => {
  const r = await get("/a.txt", { headers: { range: "bytes=2-4" } });
  assert.equal(r.status, 206);
  assert.equal(r.body, "234");
  assert.equal(r.h.get("content-range"), "bytes 2-4/10");
  assert.equal(r.h.get("content-length"), "3");
  const suffix = await get("/a.txt", { headers: { range: "bytes=-3" } });
  assert.equal(suffix.body, "789");
  const bad = await get("/a.txt", { headers: { range: "bytes=10-" } });
  assert.equal(bad.status, 416);
  assert.equal(bad.h.get("content-range"), "bytes */10");
  const multi = await get("/a.txt", { headers: { range: "bytes=0-1,3-4" } });
  assert.equal(multi.status, 200);
  assert.equal(multi.body, "0123456789");
});

Deno.test("serveStatic If-Range: the Last-Modified date keeps the range, a stale one does not", async () => {
  const ok = await get("/a.txt", { headers: { range: "bytes=0-0", "if-range": httpDate(MTIME) } });
  assert.equal(ok.status, 206);
  assert.equal(ok.body, "0");
  const stale = await get("/a.txt", {
    headers: { range: "bytes=0-0", "if-range": httpDate(MTIME - 60_000) },
  });
  assert.equal(stale.status, 200);
  assert.equal(stale.body, "0123456789");
  // Asked within the second the file was changed, its date is no strong validator yet: the file
  // may change again under the same date, so the whole file goes (RFC 9110 §13.1.5, §8.8.2.2).
  const fresh = await get("/a.txt", {
    now: MTIME + 500,
    headers: { range: "bytes=0-0", "if-range": httpDate(MTIME) },
  });
  assert.equal(fresh.status, 200);
  assert.equal(fresh.body, "0123456789");
  const later = await get("/a.txt", {
    now: MTIME + 1000,
    headers: { range: "bytes=0-0", "if-range": httpDate(MTIME) },
  });
  assert.equal(later.status, 206);
});

Deno.test("serveStatic If-Range: the file's own weak ETag keeps the range (Chrome's cache sends it)", async () => {
  // Chrome's HTTP cache, holding part of a video whose Last-Modified is a minute older than its
  // Date, asks for the rest with its stored (weak) ETag in If-Range; a 200 would send the whole
  // file again from byte 0 for each such seek.
  const first = await get("/a.txt");
  const etag = first.h.get("etag")!;
  const r = await get("/a.txt", { headers: { range: "bytes=2-4", "if-range": etag } });
  assert.equal(r.status, 206);
  assert.equal(r.body, "234");
  const other = await get("/a.txt", { headers: { range: "bytes=2-4", "if-range": 'W/"a-1"' } });
  assert.equal(other.status, 200);
  assert.equal(other.body, "0123456789");
  const fresh = await get("/a.txt", {
    now: MTIME + 500,
    headers: { range: "bytes=2-4", "if-range": etag },
  });
  assert.equal(fresh.status, 200, "changed within this second: it may change again under the tag");
});

Deno.test("serveStatic If-Range: no range of a file the route compresses for this client", async () => {
  // The compressed answer carries the file's tag and date: a client resuming it with either would
  // append identity bytes to compressed ones. The whole file goes (and is compressed) instead.
  const compress = compressPolicy({ min_length: 0 });
  const etag = (await get("/a.txt")).h.get("etag")!;
  for (const ifRange of [etag, httpDate(MTIME)]) {
    const gz = await get("/a.txt", {
      compress,
      headers: { range: "bytes=2-4", "if-range": ifRange, "accept-encoding": "gzip" },
    });
    assert.equal(gz.status, 200, `If-Range: ${ifRange}, compressed for this client`);
    // A client that accepts no coding gets the identity file: its range is of those bytes.
    const plain = await get("/a.txt", {
      compress,
      headers: { range: "bytes=2-4", "if-range": ifRange },
    });
    assert.equal(plain.status, 206, `If-Range: ${ifRange}, identity`);
    // Nor a type the route does not compress (a PNG, a video).
    const png = await get("/a.txt", {
      compress: compressPolicy({ min_length: 0, types: ["image/png"] }),
      headers: { range: "bytes=2-4", "if-range": ifRange, "accept-encoding": "gzip" },
    });
    assert.equal(png.status, 206, `If-Range: ${ifRange}, a type left as it is`);
  }
  // Without If-Range a range is a range: of the identity file, as always.
  const bare = await get("/a.txt", {
    compress,
    headers: { range: "bytes=2-4", "accept-encoding": "gzip" },
  });
  assert.equal(bare.status, 206);
});

Deno.test("serveStatic serves index files and redirects directories to the slash form", async () => {
  const root = await get("/");
  assert.equal(root.body, "<h1>home</h1>");
  assert.equal(root.h.get("content-type"), "text/html; charset=utf-8");
  const docs = await get("/docs/");
  assert.equal(docs.body, "<h1>docs</h1>");
  const redirect = await get("/docs", { query: "?a=1&b" });
  assert.equal(redirect.status, 308);
  assert.equal(redirect.h.get("location"), "/static/docs/?a=1&b");
  const bare = await get("", { query: "?q" });
  assert.equal(bare.h.get("location"), "/static/?q");
  const atRoot = await get("/docs", { prefix: "/" });
  assert.equal(atRoot.h.get("location"), "/docs/");
  const files = memStore({ "evil.com/x": "" });
  const openRedirect = await get("//evil.com", { prefix: "/", files });
  assert.equal(openRedirect.h.get("location"), "/evil.com/");
  assert.equal((await get("/docs/empty/")).status, 404);
  assert.equal((await get("/a.txt/")).status, 404);
});

Deno.test("serveStatic hides dotfiles unless show_dotfiles, but not /.well-known", async () => {
  assert.equal((await get("/.env")).status, 404);
  assert.equal((await get("/sub/.git/config")).status, 404);
  assert.equal((await get("/.env", { showDotfiles: true })).body, "SECRET=1");
  assert.equal((await get("/.well-known/security.txt")).body, "Contact: x");
});

Deno.test("serveStatic rejects encoded separators, dots and NUL bytes", async () => {
  for (const p of ["/a%2Fb", "/a%5Cb", "/%2e%2e", "/x%00", "/a\\b", "/%E0%A4%A"]) {
    assert.equal((await get(p)).status, 400, p);
  }
  assert.equal((await get("/a%2Etxt")).body, "0123456789");
});

Deno.test("serveStatic picks precompressed siblings by Accept-Encoding and varies on it", async () => {
  const br = await get("/app.js", {
    precompressed: true,
    headers: { "accept-encoding": "gzip, br" },
  });
  assert.equal(br.body, "BR");
  assert.equal(br.h.get("content-encoding"), "br");
  assert.equal(br.h.get("content-type"), "text/javascript; charset=utf-8");
  assert.equal(br.h.get("vary"), "Accept-Encoding");
  const zstd = await get("/app.js", {
    precompressed: true,
    headers: { "accept-encoding": "gzip, zstd" },
  });
  assert.equal(zstd.body, "ZSTD");
  assert.equal(zstd.h.get("content-encoding"), "zstd");
  const gz = await get("/app.js", { precompressed: true, headers: { "accept-encoding": "gzip" } });
  assert.equal(gz.body, "GZIP");
  assert.notEqual(gz.h.get("etag"), br.h.get("etag"));
  // Same size and mtime: still one tag per coding, so a br copy cannot validate a gzip one.
  const sameBr = await get("/same.js", {
    precompressed: true,
    headers: { "accept-encoding": "br" },
  });
  const sameGz = await get("/same.js", {
    precompressed: true,
    headers: { "accept-encoding": "gzip", "if-none-match": sameBr.h.get("etag")! },
  });
  assert.equal(sameGz.status, 200);
  assert.equal(sameGz.body, "GZ");
  assert.notEqual(sameGz.h.get("etag"), sameBr.h.get("etag"));
  const plain = await get("/app.js", { precompressed: true });
  assert.equal(plain.body, "console.log(1)");
  assert.equal(plain.h.get("content-encoding"), null);
  assert.equal(plain.h.get("vary"), "Accept-Encoding");
  const off = await get("/app.js", { headers: { "accept-encoding": "br" } });
  assert.equal(off.body, "console.log(1)");
  const noSibling = await get("/a.txt", {
    precompressed: true,
    headers: { "accept-encoding": "br" },
  });
  assert.equal(noSibling.body, "0123456789");
  const ranged = await get("/app.js", {
    precompressed: true,
    headers: { "accept-encoding": "br", range: "bytes=0-6" },
  });
  assert.equal(ranged.body, "console");
});

Deno.test("serveStatic: a compressed sibling offers no ranges, and an If-Range date it could stand for gets the whole file", async () => {
  const br = await get("/app.js", { precompressed: true, headers: { "accept-encoding": "br" } });
  assert.equal(br.h.get("accept-ranges"), null);
  const plain = await get("/app.js", { precompressed: true });
  assert.equal(plain.h.get("accept-ranges"), "bytes");
  // A client resuming the br answer by its date (the same mtime as app.js): identity bytes would
  // be appended to compressed ones.
  const date = br.h.get("last-modified")!;
  const resumed = await get("/app.js", {
    precompressed: true,
    headers: { "accept-encoding": "br", range: "bytes=2-", "if-range": date },
  });
  assert.equal(resumed.status, 200);
  assert.equal(resumed.body, "console.log(1)");
  // Without a sibling it may have been sent, the date holds: a 206.
  const identity = await get("/app.js", {
    precompressed: true,
    headers: { range: "bytes=0-6", "if-range": date },
  });
  assert.equal(identity.status, 206);
  assert.equal(identity.body, "console");
});

Deno.test("serveStatic falls back to the SPA entry, then the custom 404 page", async () => {
  const spa = await get("/app/route/42", { spaFallback: "index.html" });
  assert.equal(spa.status, 200);
  assert.equal(spa.body, "<h1>home</h1>");
  const dotted = await get("/user/jane.doe", {
    spaFallback: "index.html",
    headers: { accept: "text/html,application/xhtml+xml" },
  });
  assert.equal(dotted.body, "<h1>home</h1>");
  // Accept decided between the page and a 404: shared caches must know (RFC 9110 §12.5.5).
  assert.equal(dotted.h.get("vary"), "Accept");
  assert.equal(spa.h.get("vary"), null, "no extension: a page whatever Accept says");
  const asset = await get("/assets/missing.js", { spaFallback: "index.html" });
  assert.equal(asset.status, 404);
  const custom = await get("/missing", { notFoundPage: "/404.html", cacheControl: "max-age=9" });
  assert.equal(custom.status, 404);
  assert.equal(custom.body, "custom not found");
  assert.equal(custom.h.get("cache-control"), "no-store");
  const plain = await get("/missing");
  assert.equal(plain.status, 404);
  assert.match(plain.body, /request id: rid/);
  const hidden = await get("/.env", { notFoundPage: "404.html" });
  assert.equal(hidden.body, "custom not found");
  const customHead = await get("/missing", { notFoundPage: "404.html", method: "HEAD" });
  assert.equal(customHead.status, 404);
  assert.equal(customHead.body, "");
});

Deno.test("serveStatic serves empty files and applies cache_control", async () => {
  const e = await get("/empty.txt", { cacheControl: "public, max-age=3600" });
  assert.equal(e.status, 200);
  assert.equal(e.body, "");
  assert.equal(e.h.get("content-length"), "0");
  assert.equal(e.h.get("cache-control"), "public, max-age=3600");
});

Deno.test("serveStatic types media, captions, Markdown and archives a browser must not guess", async () => {
  const names: Record<string, string> = {
    "talk.m4a": "audio/mp4",
    "clip.MOV": "video/quicktime",
    "song.ogg": "audio/ogg",
    "take.wav": "audio/wav",
    "live/index.m3u8": "application/vnd.apple.mpegurl",
    "subs/en.vtt": "text/vtt; charset=utf-8",
    "README.md": "text/markdown; charset=utf-8",
    "openapi.yaml": "application/yaml",
    "dist.tar": "application/x-tar",
    "report.docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "app.js": "text/javascript; charset=utf-8",
    "v1.2/noext": "application/octet-stream",
    "x.unknown": "application/octet-stream",
  };
  const files = memStore(Object.fromEntries(Object.keys(names).map((n) => [n, "x"])));
  for (const [name, type] of Object.entries(names)) {
    const { status, h } = await get("/" + name, { files });
    assert.equal(status, 200, name);
    assert.equal(h.get("content-type"), type, name);
  }
});

Deno.test("serveStatic answers from the new file when it was rewritten in place between stat and open", async () => {
  // A deploy copying over index.html: stat saw the old size, the read finds the file shorter.
  let content = "<h1>old version</h1>";
  let rewrites = 1;
  const files: FileStore = {
    stat: () =>
      Promise.resolve({ isFile: true, isDirectory: false, size: content.length, mtime: MTIME }),
    open: (_root, rel, range) => {
      if (rewrites-- > 0) {
        content = "<h1>new</h1>";
        return Promise.reject(new FileChangedError(rel));
      }
      return Promise.resolve(enc.encode(content).slice(range!.start, range!.end + 1));
    },
  };
  const { status, body, h } = await get("/index.html", { files });
  assert.equal(status, 200);
  assert.equal(body, "<h1>new</h1>");
  assert.equal(h.get("content-length"), "12");
  assert.match(h.get("etag")!, /^W\/"c-/);

  // Changing again on the second try is an error (a 500), not a loop.
  rewrites = 2;
  await assert.rejects(get("/index.html", { files }), FileChangedError);
});

Deno.test("serveStatic answers a listener that writes itself with the bytes and room for the head", async () => {
  // A store that reads small files whole, leaving the room asked for in front (or none).
  const bytesStore = (leaveRoom: boolean): FileStore => ({
    ...memStore(FILES),
    open(_root, rel, range, _handle, room = 0) {
      const bytes = enc.encode(FILES[rel as keyof typeof FILES]);
      const part = range ? bytes.subarray(range.start, range.end + 1) : bytes;
      if (!leaveRoom) return Promise.resolve(part.slice());
      const out = new Uint8Array(room + part.length);
      out.set(part, room);
      return Promise.resolve(out.subarray(room));
    },
  });
  for (const leaveRoom of [true, false]) {
    const { res, body, status } = await get("/a.txt", { files: bytesStore(leaveRoom), lean: true });
    assert.equal(status, 200);
    assert.equal(body, "0123456789");
    assert.ok(res instanceof WireResponse);
    assert.equal((res as unknown as Roomy)[HEADROOM]!(), 0, "claimed once the body was read");
    const again = await serveStatic(new Request("http://x/static/a.txt"), {
      root: "/srv",
      relPath: "/a.txt",
      prefix: "/static",
      query: "",
      requestId: "rid",
      files: bytesStore(leaveRoom),
      lean: true,
      now: NOW,
    }) as unknown as Roomy;
    assert.equal(new TextDecoder().decode(again[RAW_BODY]), "0123456789");
    assert.equal(again[HEADROOM]!(), leaveRoom ? HEAD_ROOM : 0);
    assert.equal(again[HEADROOM]!(), 0);
  }
  // Not lean: a Fetch Response, as before.
  const { res } = await get("/a.txt", { files: bytesStore(true) });
  assert.ok(res instanceof Response);
});
