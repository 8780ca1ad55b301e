// The static route through the real proxy: real files in a temp dir, fetch and curl as clients.

import assert from "node:assert/strict";
import { interopTest, ROOT, run, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { startH3Listener } from "../../src/adapters/h3/mod.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { createDenoFileStore } from "../../src/adapters/files_deno.ts";
import { serveStatic } from "../../src/proxy/actions/static.ts";
import { silentLogger } from "../../src/ports.ts";

/** A temp site: files, a directory, a dotfile, a symlink out of the root, precompressed JS. */
async function site(): Promise<{ base: string; root: string } & AsyncDisposable> {
  const base = await Deno.makeTempDir({ prefix: "prox-static-" });
  const root = `${base}/www`;
  await Deno.mkdir(`${root}/docs`, { recursive: true });
  await Deno.writeTextFile(`${root}/index.html`, "<h1>home</h1>");
  await Deno.writeTextFile(`${root}/docs/index.html`, "<h1>docs</h1>");
  await Deno.writeTextFile(`${root}/a.txt`, "0123456789");
  await Deno.writeTextFile(`${root}/.env`, "SECRET=1");
  await Deno.writeTextFile(`${root}/404.html`, "custom 404");
  await Deno.writeTextFile(`${root}/app.js`, "console.log('plain')");
  await Deno.writeFile(
    `${root}/app.js.gz`,
    new Uint8Array(
      await new Response(
        new Blob(["console.log('gz')"]).stream().pipeThrough(new CompressionStream("gzip")),
      ).arrayBuffer(),
    ),
  );
  await Deno.writeTextFile(`${base}/secret.txt`, "top secret");
  await Deno.symlink(`${base}/secret.txt`, `${root}/escape.txt`);
  return {
    base,
    root,
    async [Symbol.asyncDispose]() {
      await Deno.remove(base, { recursive: true });
    },
  };
}

function config(root: string): string {
  return `routes:
  "/static":
    type: static
    root: ${JSON.stringify(root)}
    cache_control: "public, max-age=60"
    precompressed: true
    not_found_page: "404.html"
  "/app":
    type: static
    root: ${JSON.stringify(root)}
    spa_fallback: "index.html"
`;
}

function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

/** Open descriptors of this process whose target ends with `name`. */
function fdsOn(name: string): number {
  return [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
    try {
      return Deno.readLinkSync(`/proc/self/fd/${e.name}`).endsWith(name);
    } catch {
      return false;
    }
  }).length;
}

Deno.test("static route serves files, 304, ranges and slash redirects through the proxy", async () => {
  await using s = await site();
  await using p = await startProxy(config(s.root));
  const a = await fetch(`${p.url}/static/a.txt`);
  assert.equal(await a.text(), "0123456789");
  assert.equal(a.headers.get("cache-control"), "public, max-age=60");
  const etag = a.headers.get("etag")!;
  const nm = await fetch(`${p.url}/static/a.txt`, { headers: { "if-none-match": etag } });
  await nm.body?.cancel();
  assert.equal(nm.status, 304);
  const r = await fetch(`${p.url}/static/a.txt`, { headers: { range: "bytes=3-5" } });
  assert.equal(r.status, 206);
  assert.equal(await r.text(), "345");
  const dir = await fetch(`${p.url}/static/docs?x=1`, { redirect: "manual" });
  await dir.body?.cancel();
  assert.equal(dir.status, 308);
  assert.equal(dir.headers.get("location"), "/static/docs/?x=1");
  assert.equal(await (await fetch(`${p.url}/static/docs/`)).text(), "<h1>docs</h1>");
  assert.equal(await (await fetch(`${p.url}/static/`)).text(), "<h1>home</h1>");
  const spa = await fetch(`${p.url}/app/some/client/route`);
  assert.equal(await spa.text(), "<h1>home</h1>");
});

Deno.test("static route keeps a range asked with the file's own ETag in If-Range, unless it compresses that file", async () => {
  // Chrome's cache resumes a partly stored video with its stored (weak) ETag in If-Range: a 200
  // sent the whole file again from byte 0 for each seek.
  await using s = await site();
  const hourAgo = Date.now() / 1000 - 3600;
  await Deno.writeFile(`${s.root}/clip.mp4`, new Uint8Array(5000).map((_, i) => i & 0xff));
  await Deno.writeTextFile(`${s.root}/log.txt`, "line\n".repeat(1000));
  for (const f of ["clip.mp4", "log.txt"]) await Deno.utime(`${s.root}/${f}`, hourAgo, hourAgo);
  await using p = await startProxy(`routes:
  /:
    type: static
    root: ${JSON.stringify(s.root)}
    compress: true
`);
  const tag = async (path: string) => {
    const res = await fetch(`${p.url}${path}`, { method: "HEAD" });
    await res.body?.cancel();
    return res.headers.get("etag")!;
  };
  const clip = await fetch(`${p.url}/clip.mp4`, {
    headers: { range: "bytes=4000-", "if-range": await tag("/clip.mp4") },
  });
  assert.equal(clip.status, 206);
  assert.equal(clip.headers.get("content-range"), "bytes 4000-4999/5000");
  assert.equal((await clip.arrayBuffer()).byteLength, 1000);
  // A text file the route compresses for this client: its compressed answer has the same tag.
  const logTag = await tag("/log.txt");
  const gz = await fetch(`${p.url}/log.txt`, {
    headers: { range: "bytes=4000-", "if-range": logTag, "accept-encoding": "gzip" },
  });
  assert.equal(gz.status, 200);
  assert.equal(gz.headers.get("content-encoding"), "gzip");
  // (fetch leaves the body coded when the request names its own Accept-Encoding.)
  const whole = await new Response(gz.body!.pipeThrough(new DecompressionStream("gzip"))).text();
  assert.equal(whole.length, 5000);
  const plain = await fetch(`${p.url}/log.txt`, {
    headers: { range: "bytes=4000-", "if-range": logTag, "accept-encoding": "identity" },
  });
  assert.equal(plain.status, 206);
  assert.equal((await plain.text()).length, 1000);
});

Deno.test("static route refuses dotfiles, symlink escapes and traversal through the proxy", async () => {
  await using s = await site();
  await using p = await startProxy(config(s.root));
  for (const path of ["/static/.env", "/static/escape.txt"]) {
    const res = await fetch(`${p.url}${path}`);
    assert.equal(res.status, 404, path);
    assert.equal(await res.text(), "custom 404");
  }
  for (const path of ["/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt", "/static/a%00"]) {
    const res = await fetch(`${p.url}${path}`);
    const body = await res.text();
    assert.ok(res.status === 400 || res.status === 404, `${path}: ${res.status}`);
    assert.ok(!body.includes("top secret"), path);
  }
  // A raw backslash is read as "/" by the URL parser, as browsers do (README: Safe paths): it
  // names the same file as the slash would, and `..\` climbs no further than `../` does.
  const curl = (path: string) =>
    run("curl", ["-sS", "--path-as-is", "-w", " %{http_code}", `${p.url}${path}`]);
  assert.equal((await curl("/static/docs\\index.html")).stdout, "<h1>docs</h1> 200");
  const up = await curl("/static/docs\\..\\..\\..\\secret.txt");
  assert.ok(up.stdout.endsWith(" 404") && !up.stdout.includes("top secret"), up.stdout);
});

Deno.test("static route never dates a file later than the answer, so a redeploy is not answered 304", async () => {
  // A file whose mtime is ahead of the clock (unpacked from an archive made on a machine whose
  // clock ran fast): Last-Modified must not be later than Date (RFC 9110 §8.8.2.1).
  await using s = await site();
  const month = Date.now() / 1000 + 30 * 86_400;
  await Deno.writeTextFile(`${s.root}/future.txt`, "version 1");
  await Deno.utime(`${s.root}/future.txt`, month, month);
  await using p = await startProxy(config(s.root));
  const first = await fetch(`${p.url}/static/future.txt`);
  assert.equal(await first.text(), "version 1");
  const lastModified = first.headers.get("last-modified")!;
  assert.ok(
    Date.parse(lastModified) <= Date.parse(first.headers.get("date")!),
    `Last-Modified ${lastModified} is after Date ${first.headers.get("date")}`,
  );
  // The next deploy, dated a few seconds after that answer (long before the month-ahead date): a
  // cache revalidating by date alone must get the new content, not a 304.
  await Deno.writeTextFile(`${s.root}/future.txt`, "version 2");
  const soon = Date.now() / 1000 + 5;
  await Deno.utime(`${s.root}/future.txt`, soon, soon);
  const again = await fetch(`${p.url}/static/future.txt`, {
    headers: { "if-modified-since": lastModified },
  });
  assert.equal(again.status, 200);
  assert.equal(await again.text(), "version 2");
});

Deno.test("static route HEAD and cancelled downloads leave no file descriptor open", async () => {
  await using s = await site();
  await Deno.writeFile(`${s.root}/big.bin`, new Uint8Array(4 * 1024 * 1024));
  await using p = await startProxy(config(s.root));
  // Warm up the client connection pool so its sockets are counted in the baseline.
  await (await fetch(`${p.url}/static/a.txt`)).text();
  const before = openFds();
  for (let i = 0; i < 30; i++) {
    const res = await fetch(`${p.url}/static/big.bin`, { method: "HEAD" });
    assert.equal(res.headers.get("content-length"), String(4 * 1024 * 1024));
    await res.body?.cancel();
  }
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${p.url}/static/big.bin`);
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
  }
  // The server side closes its file once it notices the cancelled body.
  await waitFor(() => fdsOn("big.bin") === 0, { what: "big.bin to be closed" });
  await waitFor(() => openFds() <= before, { what: "file descriptors to be released" });
});

interopTest("static route speaks HTTP/1.1 to curl: HEAD length, range, gzip sibling", [
  "curl",
], async () => {
  await using s = await site();
  await using p = await startProxy(config(s.root));
  const head = await run("curl", ["-sS", "-I", `${p.url}/static/a.txt`]);
  assert.match(head.stdout, /^HTTP\/1\.1 200/);
  assert.match(head.stdout, /content-length: 10\r?\n/i);
  assert.match(head.stdout, /etag: W\/"a-/i);
  const range = await run("curl", ["-sS", "-r", "0-3", "-D", "-", `${p.url}/static/a.txt`]);
  assert.match(range.stdout, /^HTTP\/1\.1 206/);
  assert.match(range.stdout, /content-range: bytes 0-3\/10/i);
  assert.ok(range.stdout.endsWith("\r\n\r\n0123"));
  const gz = await run("curl", ["-sS", "--compressed", "-D", "-", `${p.url}/static/app.js`]);
  assert.match(gz.stdout, /content-encoding: gzip/i);
  assert.match(gz.stdout, /vary: Accept-Encoding/i);
  assert.ok(gz.stdout.endsWith("console.log('gz')"));
  const bad = await run("curl", [
    "-sS",
    "-o",
    "/dev/null",
    "-w",
    "%{http_code}",
    "--path-as-is",
    `${p.url}/static/../../etc/passwd`,
  ]);
  assert.ok(bad.stdout === "404" || bad.stdout === "400", bad.stdout);
  const post = await run("curl", [
    "-sS",
    "-X",
    "POST",
    "-D",
    "-",
    "-o",
    "/dev/null",
    `${p.url}/static/a.txt`,
  ]);
  assert.match(post.stdout, /^HTTP\/1\.1 405/);
  assert.match(post.stdout, /allow: GET, HEAD, OPTIONS/i);
});

interopTest("static route over h2 with TLS: HEAD length, range and a 3 MiB body intact", [
  "curl",
], async () => {
  await using s = await site();
  const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 31 + 7) & 0xff);
  await Deno.writeFile(`${s.root}/big.bin`, data);
  const tls = `${ROOT}/tests/fixtures/tls`;
  await using p = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls:
  cert_path: "${tls}/cert.pem"
  key_path: "${tls}/key.pem"
${config(s.root)}`,
    { keepListen: true, tls: true },
  );
  const base = `https://localhost:${p.port}/static`;
  const curl = ["-sS", "--http2", "--cacert", `${tls}/ca.pem`];
  const head = await run("curl", [...curl, "-I", `${base}/big.bin`]);
  assert.match(head.stdout, /^HTTP\/2 200/, head.stderr);
  assert.match(head.stdout, new RegExp(`content-length: ${data.length}\r?\n`));
  const range = await run("curl", [...curl, "-r", "-5", "-w", " %{http_code}", `${base}/a.txt`]);
  assert.equal(range.stdout, "56789 206", range.stderr);
  const out = `${s.base}/download.bin`;
  const get = await run("curl", [...curl, "-o", out, "-w", "%{http_version}", `${base}/big.bin`]);
  assert.equal(get.stdout, "2", get.stderr);
  assert.deepEqual(await Deno.readFile(out), data);
});

Deno.test("static files over HTTP/3: HEAD length without body, range, 3 MiB body intact", async () => {
  await using s = await site();
  const data = new Uint8Array(3 * 1024 * 1024 + 5).map((_, i) => (i * 13 + 1) & 0xff);
  await Deno.writeFile(`${s.root}/big.bin`, data);
  const tls = `${ROOT}/tests/fixtures/tls`;
  const files = createDenoFileStore();
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(`${tls}/cert.pem`),
    key: await Deno.readTextFile(`${tls}/key.pem`),
    handler: (req) =>
      serveStatic(req, {
        root: s.root,
        relPath: new URL(req.url).pathname,
        prefix: "/",
        query: "",
        files,
        requestId: "h3",
        now: Date.now(),
      }),
    logger: silentLogger,
    options: { max_idle_timeout: 5000, max_field_section_size: 8192 },
  });
  try {
    await using c = await connectH3({
      hostname: "127.0.0.1",
      port: l.port,
      caCerts: [await Deno.readTextFile(`${tls}/ca.pem`)],
    });
    const head = await c.request("/big.bin", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), String(data.length));
    assert.equal(head.body.length, 0);
    const range = await c.request("/a.txt", { headers: { range: "bytes=1-3" } });
    assert.equal(range.status, 206);
    assert.equal(new TextDecoder().decode(range.body), "123");
    const big = await c.request("/big.bin");
    assert.equal(big.status, 200);
    assert.deepEqual(big.body, data);
  } finally {
    await l.shutdown(0);
  }
});
