// Traffic mirroring through a real Prox: a real upstream and a real shadow on 127.0.0.1:0. The
// copy carries what the upstream gets, never delays or fails it, is capped in flight and in body
// size, and follows reloads.
import assert from "node:assert/strict";
import { freePort, startUpstream, waitFor } from "../_harness.ts";
import type { TestServer } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { recordingLogger } from "./_backend.ts";
import { startServer } from "../../src/server.ts";
import { noopMetrics } from "../../src/ports.ts";
import type { Metrics, MirrorResult } from "../../src/ports.ts";

/** What a test server received. */
interface Received {
  method: string;
  path: string;
  headers: Headers;
  body: string;
}

/** A shadow that records requests; `mode` decides its answer; held requests wait for release. */
async function startShadow(): Promise<
  TestServer & {
    seen: Received[];
    mode: "ok" | "500" | "hang";
    release(): void;
  }
> {
  const seen: Received[] = [];
  let held: (() => void)[] = [];
  const s = {
    mode: "ok" as "ok" | "500" | "hang",
    seen,
    release() {
      s.mode = "ok";
      for (const r of held) r();
      held = [];
    },
  };
  const up = await startUpstream(async (req) => {
    const u = new URL(req.url);
    seen.push({
      method: req.method,
      path: u.pathname + u.search,
      headers: req.headers,
      body: await req.text(),
    });
    if (s.mode === "hang") await new Promise<void>((r) => held.push(r));
    return new Response("shadow", { status: s.mode === "500" ? 500 : 200 });
  });
  return Object.assign(s, {
    port: up.port,
    url: up.url,
    server: up.server,
    async [Symbol.asyncDispose]() {
      s.release();
      await up[Symbol.asyncDispose]();
    },
  });
}

/** An upstream that records requests and answers with the size of the body it read. */
function startPrimary(seen: Received[]): Promise<TestServer> {
  return startUpstream(async (req) => {
    const u = new URL(req.url);
    const body = await req.text();
    seen.push({ method: req.method, path: u.pathname + u.search, headers: req.headers, body });
    return new Response(`primary read ${body.length}`);
  });
}

function recordingMetrics(): Metrics & { results: MirrorResult[] } {
  const results: MirrorResult[] = [];
  return { ...noopMetrics, results, mirror: (_route, r) => void results.push(r) };
}

const count = (results: MirrorResult[], r: MirrorResult) => results.filter((x) => x === r).length;

Deno.test("mirror: the shadow gets the upstream request (method, path, query, headers, body) with its own Host", async () => {
  const primarySeen: Received[] = [];
  await using primary = await startPrimary(primarySeen);
  await using shadow = await startShadow();
  const metrics = recordingMetrics();
  await using prox = await startProxy(
    `health_check: { enabled: false }
routes:
  "/api":
    type: proxy
    target: "${primary.url}"
    path_rewrite: /v2
    request_headers: { set: { X-Team: blue } }
    mirror: { target: "${shadow.url}" }
`,
    { metrics },
  );
  const json = JSON.stringify({ a: 1 });
  const res = await fetch(`${prox.url}/api/items?q=1&r=2`, {
    method: "POST",
    body: json,
    headers: { "content-type": "application/json", authorization: "Bearer t" },
  });
  assert.equal(await res.text(), `primary read ${json.length}`);
  await waitFor(() => shadow.seen.length === 1, { what: "the copy" });
  const [copy] = shadow.seen;
  const [orig] = primarySeen;
  assert.equal(copy.method, "POST");
  assert.equal(copy.path, "/v2/items?q=1&r=2");
  assert.equal(copy.body, json);
  assert.equal(copy.headers.get("host"), `127.0.0.1:${shadow.port}`);
  assert.equal(orig.headers.get("host"), `127.0.0.1:${primary.port}`);
  for (const h of ["x-team", "x-request-id", "authorization", "content-type", "x-forwarded-for"]) {
    assert.equal(copy.headers.get(h), orig.headers.get(h), h);
  }
  await waitFor(() => metrics.results.length === 1);
  assert.deepEqual(metrics.results, ["mirrored"]);
});

Deno.test("mirror: a shadow that hangs, answers 500 or is down leaves the primary unaffected", async () => {
  const primarySeen: Received[] = [];
  await using primary = await startPrimary(primarySeen);
  await using shadow = await startShadow();
  const metrics = recordingMetrics();
  const logger = recordingLogger();
  const down = freePort(); // nothing listens there
  await using prox = await startProxy(
    `health_check: { enabled: false }
log: { level: debug }
routes:
  "/held": { type: proxy, target: "${primary.url}", mirror: { target: "${shadow.url}", timeout: 1m } }
  "/slow": { type: proxy, target: "${primary.url}", mirror: { target: "${shadow.url}", timeout: 300ms } }
  "/down": { type: proxy, target: "${primary.url}", mirror: { target: "http://127.0.0.1:${down}" } }
`,
    { metrics, logger },
  );
  shadow.mode = "hang";
  // Answered while its copy is still held by the shadow (for a minute, were it waited for).
  const res = await fetch(`${prox.url}/held/x`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "primary read 0");
  await waitFor(() => shadow.seen.length === 1, { what: "the held copy" });
  assert.deepEqual(metrics.results, [], "the copy is still under way");
  shadow.release();
  await waitFor(() => count(metrics.results, "mirrored") === 1, { what: "the released copy" });

  // A copy past its timeout is abandoned, counted and logged at debug only.
  shadow.mode = "hang";
  const slow = await fetch(`${prox.url}/slow/x`);
  assert.equal(await slow.text(), "primary read 0");
  await waitFor(() => count(metrics.results, "failed") === 1, { what: "the timeout" });

  shadow.release();
  shadow.mode = "500";
  const five = await fetch(`${prox.url}/slow/y`);
  assert.equal(five.status, 200);
  await five.body?.cancel();
  await waitFor(() => count(metrics.results, "mirrored") === 2, { what: "the 500 copy" });

  const refused = await fetch(`${prox.url}/down/z`);
  assert.equal(refused.status, 200);
  await refused.body?.cancel();
  await waitFor(() => count(metrics.results, "failed") === 2, { what: "the refused copy" });

  assert.equal(primarySeen.length, 4);
  const mirrorLines = logger.lines.filter((l) => l.msg.startsWith("Mirror"));
  assert.ok(
    mirrorLines.some((l) => l.msg === "Mirror request failed"),
    JSON.stringify(mirrorLines),
  );
  assert.deepEqual(mirrorLines.filter((l) => l.level !== "debug"), []);
  assert.deepEqual(logger.lines.filter((l) => l.level === "error"), []);
});

Deno.test("mirror: a shadow that sends its head, then stalls its body past the timeout, counts as failed", async () => {
  await using primary = await startPrimary([]);
  const stalled: ReadableStreamDefaultController<Uint8Array>[] = [];
  // Its head and a first chunk at once, then nothing more until the test ends.
  await using shadow = await startUpstream(() =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode("partial"));
          stalled.push(c);
        },
      }),
    )
  );
  const metrics = recordingMetrics();
  const logger = recordingLogger();
  await using prox = await startProxy(
    `health_check: { enabled: false }
log: { level: debug }
routes:
  "/": { type: proxy, target: "${primary.url}", mirror: { target: "${shadow.url}", timeout: 200ms } }
`,
    { metrics, logger },
  );
  const res = await fetch(`${prox.url}/x`);
  assert.equal(await res.text(), "primary read 0");
  try {
    await waitFor(() => metrics.results.length === 1, { what: "the copy's outcome" });
    // The answer never ended within the copy's timeout: no complete answer, as for a shadow
    // that sends nothing (not "Mirror answered").
    assert.deepEqual(metrics.results, ["failed"]);
    assert.ok(
      logger.lines.some((l) => l.msg === "Mirror request failed"),
      JSON.stringify(logger.lines.filter((l) => l.msg.startsWith("Mirror"))),
    );
  } finally {
    for (const c of stalled) {
      try {
        c.close();
      } catch { /* cancelled already */ }
    }
  }
});

Deno.test("mirror: max_in_flight caps copies under way; the excess is dropped and counted", async () => {
  const primarySeen: Received[] = [];
  await using primary = await startPrimary(primarySeen);
  await using shadow = await startShadow();
  const metrics = recordingMetrics();
  await using prox = await startProxy(
    `health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${primary.url}", mirror: { target: "${shadow.url}", max_in_flight: 2 } }
`,
    { metrics },
  );
  shadow.mode = "hang";
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${prox.url}/r${i}`);
    assert.equal(await res.text(), "primary read 0");
  }
  await waitFor(() => shadow.seen.length === 2, { what: "two held copies" });
  assert.equal(count(metrics.results, "dropped_in_flight"), 3);
  shadow.release();
  await waitFor(() => count(metrics.results, "mirrored") === 2, { what: "the copies' end" });
  // The slots are free again.
  await (await fetch(`${prox.url}/after`)).body?.cancel();
  await waitFor(() => shadow.seen.length === 3, { what: "a copy after release" });
  assert.deepEqual(shadow.seen.map((s) => s.path), ["/r0", "/r1", "/after"]);
});

/**
 * A chunked upload whose second half is sent only once the upstream has read the first: it gets
 * through only if Prox streams the body rather than holding it for the mirror.
 */
function gatedUpload(half: number, firstArrived: Promise<void>): ReadableStream<Uint8Array> {
  let step = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      if (step === 0) c.enqueue(new Uint8Array(half).fill(97)); // "a"
      else if (step === 1) {
        await firstArrived;
        c.enqueue(new Uint8Array(half).fill(98)); // "b"
      } else c.close();
      step++;
    },
  });
}

/** An upstream that resolves `first` once `threshold` body bytes arrived, then reads the rest. */
async function startGatedPrimary(threshold: number) {
  let arrived!: () => void;
  const first = new Promise<void>((r) => arrived = r);
  const up = await startUpstream(async (req) => {
    let n = 0;
    for await (const c of req.body!) {
      n += c.byteLength;
      if (n >= threshold) arrived();
    }
    return new Response(`primary read ${n}`);
  });
  return Object.assign(up, { first });
}

Deno.test("mirror: an upload streams to the upstream; the shadow gets it whole when within max_body, nothing past it", async () => {
  const half = 96 * 1024; // over the 64 KiB kept for retries, so the body streams
  for (const maxBody of ["1MiB", "100KiB"]) {
    await using primary = await startGatedPrimary(half);
    await using shadow = await startShadow();
    const metrics = recordingMetrics();
    await using prox = await startProxy(
      `health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${primary.url}", mirror: { target: "${shadow.url}", max_body: ${maxBody} } }
`,
      { metrics },
    );
    const res = await fetch(`${prox.url}/up`, {
      method: "POST",
      body: gatedUpload(half, primary.first),
      duplex: "half",
    } as RequestInit);
    assert.equal(await res.text(), `primary read ${2 * half}`, maxBody);
    if (maxBody === "1MiB") {
      await waitFor(() => shadow.seen.length === 1, { what: "the copy" });
      const body = shadow.seen[0].body;
      assert.equal(body.length, 2 * half);
      assert.equal(body, "a".repeat(half) + "b".repeat(half));
      assert.equal(shadow.seen[0].headers.get("content-length"), String(2 * half));
      await waitFor(() => metrics.results.length === 1);
      assert.deepEqual(metrics.results, ["mirrored"]);
    } else {
      await waitFor(() => metrics.results.length === 1);
      assert.deepEqual(metrics.results, ["dropped_body_too_large"]);
      assert.equal(shadow.seen.length, 0);
    }
  }
});

Deno.test("mirror: a declared body over max_body is not copied; body: false copies without it", async () => {
  await using primary = await startPrimary([]);
  await using shadow = await startShadow();
  const metrics = recordingMetrics();
  await using prox = await startProxy(
    `health_check: { enabled: false }
routes:
  "/capped": { type: proxy, target: "${primary.url}", mirror: { target: "${shadow.url}", max_body: 1KiB } }
  "/bare": { type: proxy, target: "${primary.url}", mirror: { target: "${shadow.url}", body: false } }
`,
    { metrics },
  );
  const big = "x".repeat(5000);
  const capped = await fetch(`${prox.url}/capped`, { method: "PUT", body: big });
  assert.equal(await capped.text(), "primary read 5000");
  await waitFor(() => metrics.results.length === 1);
  assert.deepEqual(metrics.results, ["dropped_body_too_large"]);
  const bare = await fetch(`${prox.url}/bare`, { method: "PUT", body: big });
  assert.equal(await bare.text(), "primary read 5000");
  await waitFor(() => shadow.seen.length === 1, { what: "the bodiless copy" });
  assert.equal(shadow.seen[0].method, "PUT");
  assert.equal(shadow.seen[0].body, "");
  assert.equal(shadow.seen[0].headers.get("content-length") ?? "0", "0");
});

Deno.test("mirror: body: false copies an upload as Content-Length: 0 (RFC 9110 §8.6), chunked or not", async () => {
  await using primary = await startPrimary([]);
  await using shadow = await startShadow();
  const metrics = recordingMetrics();
  await using prox = await startProxy(
    `health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${primary.url}", mirror: { target: "${shadow.url}", body: false } }
`,
    { metrics },
  );
  // A PUT or POST without a length is refused by servers such as nginx (411 Length Required).
  const sized = await fetch(`${prox.url}/sized`, { method: "PUT", body: "x".repeat(100) });
  assert.equal(await sized.text(), "primary read 100");
  const streamed = await fetch(`${prox.url}/streamed`, {
    method: "POST",
    body: new Blob(["y".repeat(200)]).stream(),
    duplex: "half",
  } as RequestInit);
  assert.equal(await streamed.text(), "primary read 200");
  await waitFor(() => shadow.seen.length === 2, { what: "the bodiless copies" });
  for (const copy of shadow.seen) {
    assert.equal(copy.body, "", copy.path);
    assert.equal(copy.headers.get("content-length"), "0", copy.path);
    assert.equal(copy.headers.get("transfer-encoding"), null, copy.path);
  }
  // A request without a body is copied without one, and without a length it did not have.
  await (await fetch(`${prox.url}/get`)).body?.cancel();
  await waitFor(() => shadow.seen.length === 3, { what: "the GET's copy" });
  assert.equal(shadow.seen[2].headers.get("content-length"), null);
  // An empty PUT (Content-Length: 0) keeps its length.
  const empty = await fetch(`${prox.url}/empty`, { method: "PUT", body: "" });
  assert.equal(await empty.text(), "primary read 0");
  await waitFor(() => shadow.seen.length === 4, { what: "the empty PUT's copy" });
  assert.equal(shadow.seen[3].headers.get("content-length"), "0");
});

Deno.test("mirror: a reload changes the mirror target, and removing it stops the copies", async () => {
  await using primary = await startPrimary([]);
  await using a = await startShadow();
  await using b = await startShadow();
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  const write = (mirror: string) =>
    Deno.writeTextFile(
      file,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${primary.url}"${mirror} }
`,
    );
  await write(`, mirror: { target: "${a.url}" }`);
  const server = await startServer({ path: file }, { watch: false, logger: recordingLogger() });
  try {
    const base = `http://127.0.0.1:${server.port}`;
    await (await fetch(`${base}/one`)).body?.cancel();
    await waitFor(() => a.seen.length === 1, { what: "the copy to a" });

    await write(`, mirror: { target: "${b.url}" }`);
    assert.ok((await server.reload()).ok);
    await (await fetch(`${base}/two`)).body?.cancel();
    await waitFor(() => b.seen.length === 1, { what: "the copy to b" });

    await write("");
    assert.ok((await server.reload()).ok);
    const res = await fetch(`${base}/three`);
    assert.equal(await res.text(), "primary read 0");
    // Mirrored again: a copy of /three, sent before its answer, would have come before /four's.
    await write(`, mirror: { target: "${b.url}" }`);
    assert.ok((await server.reload()).ok);
    await (await fetch(`${base}/four`)).body?.cancel();
    await waitFor(() => b.seen.length === 2, { what: "the copy of /four" });
    assert.deepEqual([a.seen.map((s) => s.path), b.seen.map((s) => s.path)], [["/one"], [
      "/two",
      "/four",
    ]]);
  } finally {
    await server.shutdown();
    await Deno.remove(file);
  }
});

Deno.test("mirror: shutdown abandons copies still waiting on a shadow", async () => {
  await using primary = await startPrimary([]);
  await using shadow = await startShadow();
  const metrics = recordingMetrics();
  const prox = await startProxy(
    `health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${primary.url}", mirror: { target: "${shadow.url}", timeout: 1m } }
`,
    { metrics },
  );
  shadow.mode = "hang";
  await (await fetch(`${prox.url}/held`)).body?.cancel();
  await waitFor(() => shadow.seen.length === 1, { what: "the held copy" });
  const t0 = performance.now();
  await prox.server.shutdown();
  assert.ok(performance.now() - t0 < 5_000, "shutdown did not wait for the copy");
  await waitFor(() => metrics.results.length === 1, { what: "the abandoned copy" });
  assert.deepEqual(metrics.results, ["failed"]);
});
