// A route's `bandwidth` through the real proxy: real upstream, static files, real clients over
// HTTP/1.1 (Prox's engine, or Deno.serve with PROX_H1_ENGINE=deno), HTTP/2 and HTTP/3. Timing
// is asserted from below only (a loaded machine is slower, never faster than the pace).

import assert from "node:assert/strict";
import { ROOT, startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";

const KiB = 1024;
const FILE = new Uint8Array(256 * KiB).map((_, i) => (i * 7) & 0xff);
/** 192 KiB past `after` at 1 MiB/s is 187.5 ms; a fifth off for the clocks' grain. */
const PACED_MS = 150;
const TLS = `${ROOT}/tests/fixtures/tls`;

/**
 * An upstream with a 256 KiB file and an endless body (which notes when it is cancelled), a
 * static directory with the same file, and Prox in front with `head` at the top of its config.
 */
async function setup(head = "") {
  let endlessCancelled!: () => void;
  const cancelled = new Promise<void>((r) => endlessCancelled = r);
  let endlessSent = 0;
  const up = await startUpstream((req) => {
    const path = new URL(req.url).pathname;
    if (path === "/file") return new Response(FILE);
    if (path === "/half") return new Response(FILE.subarray(0, 128 * KiB));
    if (path === "/endless") {
      return new Response(
        new ReadableStream<Uint8Array>({
          pull(c) {
            endlessSent += 64 * KiB;
            c.enqueue(new Uint8Array(64 * KiB));
          },
          cancel: () => endlessCancelled(),
        }, { highWaterMark: 0 }),
      );
    }
    return new Response("nope", { status: 404 });
  });
  const root = await Deno.makeTempDir({ prefix: "prox-bandwidth-" });
  await Deno.writeFile(`${root}/big.bin`, FILE);
  const proxy = await startProxy(
    `${head}
health_check: { enabled: false }
routes:
  "/slow":
    type: proxy
    target: "${up.url}"
    bandwidth: { rate: 1MiB/s, after: 64KiB }
  "/fast":
    type: proxy
    target: "${up.url}"
  "/shared":
    type: proxy
    target: "${up.url}"
    bandwidth: { rate: 1MiB, per: client }
  "/files":
    type: static
    root: "${root}"
    bandwidth: { rate: 1MiB, after: 64KiB }
`,
    head ? { keepListen: true, tls: true } : {},
  );
  return {
    proxy,
    cancelled,
    endlessSent: () => endlessSent,
    async [Symbol.asyncDispose]() {
      await proxy[Symbol.asyncDispose]();
      await up[Symbol.asyncDispose]();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Downloads `url`: the bytes, ms until the first 64 KiB were in, and ms until the end. */
async function download(url: string, client?: Deno.HttpClient) {
  const start = performance.now();
  const res = await fetch(url, client ? { client } : {});
  assert.equal(res.status, 200);
  const parts: Uint8Array[] = [];
  let got = 0;
  let firstMs = -1;
  for await (const part of res.body!) {
    parts.push(part);
    got += part.byteLength;
    if (firstMs < 0 && got >= 64 * KiB) firstMs = performance.now() - start;
  }
  const bytes = new Uint8Array(got);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.byteLength;
  }
  return { bytes, firstMs, totalMs: performance.now() - start };
}

/**
 * The download was paced: all of it, the rest at the rate, and (`burst`) the first `after` bytes
 * ahead of the rest. Not over TLS, whose listener sockets Deno leaves with Nagle's algorithm on:
 * there the burst's last segment waits for the client's delayed ACK (40 ms), paced or not.
 */
function assertPaced(
  d: { bytes: Uint8Array; firstMs: number; totalMs: number },
  what: string,
  o = { burst: true },
) {
  assert.deepEqual(d.bytes, FILE, what);
  assert.ok(d.totalMs >= PACED_MS, `${what}: the whole came in ${d.totalMs} ms`);
  // The first 64 KiB did not wait for the pace: they came before the rest could.
  if (o.burst) assert.ok(d.firstMs < d.totalMs - PACED_MS, `${what}: 64 KiB in ${d.firstMs} ms`);
}

Deno.test("bandwidth: a download's first `after` bytes come at once, the rest at `rate` (HTTP/1.1)", async () => {
  await using s = await setup();
  assertPaced(await download(`${s.proxy.url}/slow/file`), "proxied");
  assertPaced(await download(`${s.proxy.url}/files/big.bin`), "static");
  // A route without it: the same bytes (its pace is not measured from above on a busy machine).
  assert.deepEqual((await download(`${s.proxy.url}/fast/file`)).bytes, FILE);
});

Deno.test("bandwidth: HTTP/2 and HTTP/3 answers are paced alike", async () => {
  await using s = await setup(`listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
protocols: { http3_enabled: true }`);
  const caCerts = [await Deno.readTextFile(`${TLS}/ca.pem`)];
  using h2 = Deno.createHttpClient({ caCerts, http1: false });
  const d = await download(`https://localhost:${s.proxy.port}/slow/file`, h2);
  assertPaced(d, "HTTP/2", { burst: false });
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: s.proxy.port, caCerts });
  const start = performance.now();
  const res = await h3.request("/files/big.bin");
  const ms = performance.now() - start;
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, FILE);
  assert.ok(ms >= PACED_MS, `HTTP/3: the whole came in ${ms} ms`);
});

Deno.test("bandwidth: a client that leaves mid-download ends the upstream's body", async () => {
  await using s = await setup();
  const res = await fetch(`${s.proxy.url}/slow/endless`);
  const reader = res.body!.getReader();
  let got = 0;
  while (got < 96 * KiB) got += (await reader.read()).value!.byteLength;
  await reader.cancel();
  // The upstream's body is cancelled (its connection closed), not read on at the pace for nobody.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<string>((r) => timer = setTimeout(() => r("still read"), 5_000));
  assert.equal(await Promise.race([s.cancelled.then(() => "cancelled"), late]), "cancelled");
  clearTimeout(timer);
  // (It had sent little more than the socket buffers hold, far from an endless body.)
  assert.ok(s.endlessSent() < 64 * 1024 * KiB, `${s.endlessSent()} bytes`);
});

Deno.test("bandwidth: a graceful shutdown ends a paced download at shutdown_timeout", async () => {
  await using up = await startUpstream(() =>
    new Response(
      new ReadableStream<Uint8Array>({
        pull: (c) => c.enqueue(new Uint8Array(64 * KiB)),
      }, { highWaterMark: 0 }),
    )
  );
  const proxy = await startProxy(`
shutdown_timeout: 200ms
health_check: { enabled: false }
routes:
  "/slow": { type: proxy, target: "${up.url}", bandwidth: { rate: 16KiB } }
`);
  const res = await fetch(`${proxy.url}/slow/endless`);
  const reader = res.body!.getReader();
  await reader.read();
  // The download would take for ever at 16 KiB/s: the drain cuts it, and shutdown returns.
  await proxy.server.shutdown();
  await assert.rejects(async () => {
    for (;;) if ((await reader.read()).done) throw new Error("ended as if complete");
  });
});

Deno.test("bandwidth per: client: a client's downloads at once share the rate", async () => {
  await using s = await setup();
  // Two of 128 KiB at once: 256 KiB at 1 MiB/s together is 250 ms (each alone would take 125).
  const both = await Promise.all([
    download(`${s.proxy.url}/shared/half`),
    download(`${s.proxy.url}/shared/half`),
  ]);
  for (const d of both) {
    assert.deepEqual(d.bytes, FILE.subarray(0, 128 * KiB));
    assert.ok(d.totalMs >= 200, `one of two came in ${d.totalMs} ms`);
  }
});
