// Prox's HTTP/1.1 engine reuses the buffer a whole answer (up to 64 KiB) was read into once it
// wrote it (adapters/buffer_pool.ts), and the buffers of a larger answer's chunks: answers of many
// sizes at once must each arrive as sent, and a body the cache kept or a rule read must not be
// overwritten by a later answer.

import assert from "node:assert/strict";
import { interopTest, run, startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";

/** `size` bytes of the letter `ch` (a-z), as the upstream sends for /<size>/<ch>. */
const body = (size: number, ch: string) => ch.repeat(size);

/** Prox with one proxy route to an upstream that answers /<size>/<ch> with `body(size, ch)`. */
async function lettersProxy() {
  const up = await startUpstream((req) => {
    const [, size, ch] = new URL(req.url).pathname.split("/").slice(-3);
    return new Response(body(Number(size), ch));
  });
  const prox = await startProxy(`
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
  return {
    url: prox.url,
    async [Symbol.asyncDispose]() {
      await prox[Symbol.asyncDispose]();
      await up[Symbol.asyncDispose]();
    },
  };
}

Deno.test("pooled answer buffers: concurrent answers, cached and rewritten bodies arrive intact", async () => {
  await using up = await startUpstream((req) => {
    const [, size, ch] = new URL(req.url).pathname.split("/").slice(-3);
    return new Response(body(Number(size), ch), {
      headers: { "cache-control": "max-age=300", "content-type": "text/plain" },
    });
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/cached": { type: proxy, target: "${up.url}", cache: { max_size: 4MiB, max_object_size: 64KiB } }
  "/ruled":
    type: proxy
    target: "${up.url}"
    response_body: { condition: { status_is: 404 }, set_text: "never" }
  "/": { type: proxy, target: "${up.url}" }
`);
  const get = async (path: string) => {
    const res = await fetch(`${prox.url}${path}`);
    return { status: res.status, text: await res.text() };
  };
  // Stored whole by the cache, then served from it after many answers used the pool.
  const kept = await get("/cached/65536/c");
  assert.equal(kept.text, body(65536, "c"));
  const ruled = await get("/ruled/40000/r");
  assert.equal(ruled.text, body(40000, "r"));

  const letters = "abdefghijklmnopqstuvwxyz";
  // Past 64 KiB answers stream, in chunks read into kept buffers (ports.ts LEND_CHUNKS).
  const sizes = [
    1,
    100,
    1023,
    1024,
    4096,
    4097,
    30_000,
    64 * 1024 - 1,
    64 * 1024,
    64 * 1024 + 1,
    300_000,
    1_048_576,
  ];
  const jobs: { path: string; want: string }[] = [];
  for (let i = 0; i < 240; i++) {
    const size = sizes[i % sizes.length];
    const ch = letters[i % letters.length];
    jobs.push({ path: `/${size}/${ch}`, want: body(size, ch) });
  }
  // 24 at a time, each checked byte for byte: a buffer given back while still being written,
  // or lent to two answers, shows up as another answer's letters.
  let next = 0;
  await Promise.all(Array.from({ length: 24 }, async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      const got = await get(job.path);
      assert.equal(got.status, 200);
      assert.ok(
        got.text === job.want,
        `${job.path}: ${got.text.length} bytes, starts ${got.text.slice(0, 8)}`,
      );
    }
  }));
  const again = await get("/cached/65536/c");
  assert.equal(again.text, body(65536, "c"));
});

// (nghttp rather than curl: Debian's curl 7.88 fails its second multiplexed h2c transfer with
// "Error in the HTTP2 framing layer", against nginx as well.)
interopTest("pooled answer buffers: HTTP/2 streams at once on one connection arrive intact", [
  "nghttp",
], async () => {
  await using prox = await lettersProxy();
  // One letter per stream, all on one connection (h2c, prior knowledge): nghttp prints the
  // bodies as their DATA frames come, interleaved, so each letter's count is what is checked.
  const sizes = [100, 4096, 4097, 20_000, 64 * 1024, 300_000];
  const letters = "abcdefghijklmnopqrstuvwxyz";
  const want = new Map<string, number>();
  const urls: string[] = [];
  for (let i = 0; i < letters.length; i++) {
    const size = sizes[i % sizes.length];
    want.set(letters[i], size * 8);
    urls.push(`${prox.url}/${size}/${letters[i]}`);
  }
  // Each 8 times: 208 streams, so that buffers given back are taken again while others are sent.
  const r = await run("nghttp", ["-m", "8", ...urls]);
  assert.equal(r.code, 0, r.stderr);
  const got = new Map<string, number>();
  for (const ch of r.stdout) got.set(ch, (got.get(ch) ?? 0) + 1);
  assert.deepEqual(got, want);
});

Deno.test("pooled answer buffers: a chunk still being written to a slow client is not reused", async () => {
  await using prox = await lettersProxy();
  // More than the sockets hold: Prox's writes to the client that does not read stay pending,
  // holding their chunks, while answers to another client take buffers of the same pool.
  const SIZE = 24 * 1024 * 1024;
  const slow = await fetch(`${prox.url}/${SIZE}/s`);
  for (const ch of "abc") {
    const fast = await fetch(`${prox.url}/${SIZE}/${ch}`);
    assert.ok((await fast.text()) === body(SIZE, ch), `fast answer ${ch}`);
  }
  const got = new Uint8Array(await slow.arrayBuffer());
  assert.equal(got.length, SIZE);
  const wrong = got.findIndex((b) => b !== 115); // "s"
  assert.equal(wrong, -1, `byte ${wrong} of the slow answer is ${String.fromCharCode(got[wrong])}`);
});

Deno.test("pooled request body buffers: a chunk still being written to a slow upstream is not reused", async () => {
  // Each upload is answered with how many of its bytes are not its letter (the last path part).
  const slowEntered = Promise.withResolvers<void>();
  const fastDone = Promise.withResolvers<void>();
  await using up = await startUpstream(async (req) => {
    const path = new URL(req.url).pathname;
    const letter = path.charCodeAt(path.length - 1);
    if (path.startsWith("/slow")) {
      slowEntered.resolve();
      await fastDone.promise; // the body waits in the sockets meanwhile
    }
    let wrong = 0;
    let size = 0;
    for await (const chunk of req.body!) {
      size += chunk.byteLength;
      for (const b of chunk) if (b !== letter) wrong++;
    }
    return new Response(`${size} ${wrong}`);
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
timeouts: { idle: 60s }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
  // More than the sockets hold: Prox's writes of this body stay pending, holding their chunks,
  // while the bodies of other uploads are read into buffers of the same pool.
  const SIZE = 24 * 1024 * 1024;
  const upload = (path: string, ch: string) =>
    fetch(`${prox.url}${path}`, { method: "POST", body: new TextEncoder().encode(ch.repeat(SIZE)) })
      .then((r) => r.text());
  const slow = upload("/slow/s", "s");
  await slowEntered.promise;
  try {
    for (const ch of "abc") assert.equal(await upload(`/fast/${ch}`, ch), `${SIZE} 0`, ch);
  } finally {
    fastDone.resolve();
  }
  assert.equal(await slow, `${SIZE} 0`);
});
