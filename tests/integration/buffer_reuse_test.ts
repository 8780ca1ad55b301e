// Prox's HTTP/1.1 engine reuses the buffer a whole answer (up to 64 KiB) was read into once it
// wrote it (adapters/buffer_pool.ts): answers of many sizes at once must each arrive as sent, and
// a body the cache kept or a rule read must not be overwritten by a later answer.

import assert from "node:assert/strict";
import { startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";

/** `size` bytes of the letter `ch` (a-z), as the upstream sends for /<size>/<ch>. */
const body = (size: number, ch: string) => ch.repeat(size);

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
  const sizes = [1, 100, 1023, 1024, 4096, 30_000, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1];
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
