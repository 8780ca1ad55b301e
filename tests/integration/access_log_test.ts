// Access-log byte counts through a real Prox: bodies Prox writes itself (errors, 429) and streamed
// upstream bodies (on a route with `timeouts.total`, from an HTTP/2 upstream), delivered in full or
// abandoned by the client.
import assert from "node:assert/strict";
import { ROOT, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger } from "../../src/ports.ts";

function recorder(): { lines: Record<string, unknown>[]; logger: Logger } {
  const lines: Record<string, unknown>[] = [];
  return { lines, logger: { ...silentLogger, info: (m, f) => m === "access" && lines.push(f!) } };
}

Deno.test("access log: bytesOut counts the bodies of Prox's own answers (404, 429, 502)", async () => {
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadUrl = `http://127.0.0.1:${(dead.addr as Deno.NetAddr).port}`;
  dead.close();
  await using up = await startUpstream(() => new Response("ok"));
  const { lines, logger } = recorder();
  await using p = await startProxy(
    `health_check: { enabled: false }
log: { access_log: json }
routes:
  "/lim": { type: proxy, target: "${up.url}", rate_limit: { by: ip, requests: 1, period: 1m } }
  "/dead": { type: proxy, target: "${deadUrl}", retries: { attempts: 0 } }
`,
    { logger },
  );
  const sizes = new Map<string, number>();
  for (const path of ["/nope", "/lim/a", "/lim/b", "/dead/x"]) {
    const res = await fetch(`${p.url}${path}`);
    sizes.set(`${path} ${res.status}`, (await res.arrayBuffer()).byteLength);
  }
  await waitFor(() => lines.length === 4, { what: "four access records" });
  const logged = new Map(lines.map((l) => [`${l.path} ${l.status}`, l.bytesOut]));
  assert.deepEqual([...sizes.keys()], ["/nope 404", "/lim/a 200", "/lim/b 429", "/dead/x 502"]);
  for (const [key, size] of sizes) {
    assert.ok(size > 0, key);
    assert.equal(logged.get(key), size, key);
  }
});

Deno.test("access log: a timeouts.total route counts streamed bytes and marks a client that left", async () => {
  const tick = 100;
  await using up = await startUpstream((req) => {
    const n = new URL(req.url).pathname === "/t/long" ? 50 : 3;
    let i = 0;
    // Chunked (no Content-Length): 1,000-byte chunks, one every `tick` ms.
    return new Response(
      new ReadableStream<Uint8Array>({
        async pull(ctl) {
          if (i++ === n) return ctl.close();
          await new Promise((r) => setTimeout(r, tick));
          ctl.enqueue(new Uint8Array(1000));
        },
      }),
    );
  });
  const { lines, logger } = recorder();
  await using p = await startProxy(
    `health_check: { enabled: false }
log: { access_log: json }
routes:
  "/t": { type: proxy, target: "${up.url}", timeouts: { total: 30s } }
`,
    { logger },
  );
  const res = await fetch(`${p.url}/t/stream`);
  assert.equal(res.headers.get("content-length"), null);
  assert.equal((await res.arrayBuffer()).byteLength, 3000);
  const done = await waitFor(() => lines.find((l) => l.path === "/t/stream"), {
    what: "the access record of the streamed response",
  });
  assert.equal(done.bytesOut, 3000);
  assert.equal(done.incomplete, undefined);

  // The client reads two chunks of fifty and leaves.
  const ac = new AbortController();
  const long = await fetch(`${p.url}/t/long`, { signal: ac.signal });
  const reader = long.body!.getReader();
  let got = 0;
  while (got < 2000) got += (await reader.read()).value!.byteLength;
  ac.abort();
  await reader.cancel().catch(() => {});
  const cut = await waitFor(() => lines.find((l) => l.path === "/t/long"), {
    timeoutMs: 20 * tick,
    what: "the access record of the abandoned response",
  });
  assert.equal(cut.incomplete, true);
  assert.ok(Number(cut.bytesOut) >= 2000 && Number(cut.bytesOut) < 50_000, `${cut.bytesOut}`);
});

Deno.test("access log: a streamed body from an HTTP/2 upstream is counted; a client that left is marked", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  const tick = 100;
  await using up = await startUpstream((req) => {
    const n = new URL(req.url).pathname === "/long" ? 50 : 3;
    let i = 0;
    return new Response(
      new ReadableStream<Uint8Array>({
        async pull(ctl) {
          if (i++ === n) return ctl.close();
          await new Promise((r) => setTimeout(r, tick));
          ctl.enqueue(new Uint8Array(1000));
        },
      }),
    );
  }, {
    cert: Deno.readTextFileSync(`${tls}/cert.pem`),
    key: Deno.readTextFileSync(`${tls}/key.pem`),
  });
  const { lines, logger } = recorder();
  await using p = await startProxy(
    `health_check: { enabled: false }
log: { access_log: json }
routes:
  "/":
    type: proxy
    target: "https://localhost:${up.port}"
    tls: { ca_cert: "${tls}/ca.pem" }
`,
    { logger },
  );
  // Bytes fetch would not alter (identity, its default fields present): it may go over HTTP/2.
  const headers = {
    "accept-encoding": "identity",
    "accept": "*/*",
    "accept-language": "*",
    "user-agent": "t/1",
  };
  const res = await fetch(`${p.url}/stream`, { headers });
  assert.equal((await res.arrayBuffer()).byteLength, 3000);
  const done = await waitFor(() => lines.find((l) => l.path === "/stream"), {
    what: "the access record of the streamed response",
  });
  assert.equal(done.bytesOut, 3000);
  assert.equal(done.incomplete, undefined);

  const ac = new AbortController();
  const long = await fetch(`${p.url}/long`, { headers, signal: ac.signal });
  const reader = long.body!.getReader();
  let got = 0;
  while (got < 2000) got += (await reader.read()).value!.byteLength;
  ac.abort();
  await reader.cancel().catch(() => {});
  const cut = await waitFor(() => lines.find((l) => l.path === "/long"), {
    timeoutMs: 20 * tick,
    what: "the access record of the abandoned response",
  });
  assert.equal(cut.incomplete, true);
  assert.ok(Number(cut.bytesOut) >= 2000 && Number(cut.bytesOut) < 50_000, `${cut.bytesOut}`);
});

Deno.test("access log: a response the drain timeout cuts is written as incomplete before Prox stops", async () => {
  await using up = await startUpstream(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    // An endless download: 1,000 bytes every 50 ms.
    return new Response(
      new ReadableStream<Uint8Array>({
        async pull(ctl) {
          await new Promise((r) => timer = setTimeout(r, 50));
          ctl.enqueue(new Uint8Array(1000));
        },
        cancel: () => clearTimeout(timer),
      }),
    );
  });
  const { lines, logger } = recorder();
  const p = await startProxy(
    `health_check: { enabled: false }
shutdown_timeout: 200ms
log: { access_log: json }
routes: { "/": { type: proxy, target: "${up.url}" } }
`,
    { logger },
  );
  const res = await fetch(`${p.url}/endless`);
  const reader = res.body!.getReader();
  try {
    let got = 0;
    while (got < 2000) got += (await reader.read()).value!.byteLength;
    await p.server.shutdown();
    const cut = lines.find((l) => l.path === "/endless");
    assert.ok(cut, "an access line for the response cut at shutdown");
    assert.equal(cut.incomplete, true);
    assert.ok(Number(cut.bytesOut) >= 2000, `${cut.bytesOut}`);
  } finally {
    await reader.cancel().catch(() => {});
    await p[Symbol.asyncDispose]();
  }
  // Written once: the connection closing afterwards adds no second line.
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(lines.filter((l) => l.path === "/endless").length, 1);
});

Deno.test("access log: the query string is logged as forwarded, apart from the path", async () => {
  const seen: string[] = [];
  await using up = await startUpstream((req) => {
    seen.push(new URL(req.url).search);
    return new Response("ok");
  });
  const { lines, logger } = recorder();
  await using p = await startProxy(
    `health_check: { enabled: false }
log: { access_log: json }
routes:
  "/q": { type: proxy, target: "${up.url}" }
`,
    { logger },
  );
  for (const path of ["/q/a?b=1&c=%20x", "/q/none", "/q/empty?"]) {
    await (await fetch(`${p.url}${path}`)).body?.cancel();
  }
  await waitFor(() => lines.length === 3, { what: "three access records" });
  assert.deepEqual(seen, ["?b=1&c=%20x", "", ""]);
  assert.deepEqual(
    lines.map((l) => [l.path, l.query]),
    [["/q/a", "b=1&c=%20x"], ["/q/none", ""], ["/q/empty", ""]],
  );
});

Deno.test("access log: access_log_filter keeps the lines it names; a route's access_log: false none", async () => {
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadUrl = `http://127.0.0.1:${(dead.addr as Deno.NetAddr).port}`;
  dead.close();
  await using up = await startUpstream(async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/slow") await new Promise((r) => setTimeout(r, 300));
    return new Response("x", { status: path === "/fail" ? 500 : path === "/missing" ? 404 : 200 });
  });
  const { lines, logger } = recorder();
  await using p = await startProxy(
    `health_check: { enabled: false }
log:
  access_log: json
  access_log_filter: { status: ["404", "5xx"], min_duration: 250ms, retried: true }
routes:
  "/": { type: proxy, target: "${up.url}" }
  "/quiet": { type: proxy, target: "${up.url}", path_rewrite: /fail, access_log: false }
  "/lb":
    type: load_balance
    targets: ["${deadUrl}", "${up.url}"]
    strategy: first
    retries: { attempts: 1 }
`,
    { logger },
  );
  const statuses: string[] = [];
  // The 404 last: its line is the one to wait for.
  for (const path of ["/ok", "/fail", "/slow", "/quiet", "/lb/x", "/missing"]) {
    const res = await fetch(`${p.url}${path}`);
    await res.body?.cancel();
    statuses.push(`${path} ${res.status}`);
  }
  assert.deepEqual(statuses, [
    "/ok 200",
    "/fail 500",
    "/slow 200",
    "/quiet 500",
    "/lb/x 200",
    "/missing 404",
  ]);
  await waitFor(() => lines.some((l) => l.status === 404), { what: "the 404's access line" });
  assert.deepEqual(lines.map((l) => `${l.path} ${l.status} ${l.retries}`), [
    "/fail 500 0",
    "/slow 200 0",
    "/lb/x 200 1",
    "/missing 404 0",
  ]);
});

Deno.test("access log: access_log_filter failed: true keeps an answer cut short, whatever its status", async () => {
  // The answer's chunks come only as the test lets them: the client leaves after the first.
  const more = Promise.withResolvers<void>();
  await using up = await startUpstream((req) => {
    if (new URL(req.url).pathname !== "/stream") return new Response("ok");
    return new Response(
      new ReadableStream<Uint8Array>({
        async start(ctl) {
          ctl.enqueue(new Uint8Array(1000));
          await more.promise;
          ctl.enqueue(new Uint8Array(1000));
          ctl.close();
        },
      }),
    );
  });
  const { lines, logger } = recorder();
  await using p = await startProxy(
    `health_check: { enabled: false }
log: { access_log: json, access_log_filter: { failed: true } }
routes:
  "/": { type: proxy, target: "${up.url}" }
`,
    { logger },
  );
  const ok = await fetch(`${p.url}/ok`);
  assert.equal(await ok.text(), "ok");
  const ac = new AbortController();
  const res = await fetch(`${p.url}/stream`, { signal: ac.signal });
  const reader = res.body!.getReader();
  await reader.read();
  ac.abort();
  await reader.cancel().catch(() => {});
  more.resolve();
  await waitFor(() => lines.some((l) => l.path === "/stream"), { what: "the cut answer's line" });
  // A 200 both, but only the one cut short is kept ("/ok" was delivered first, whole).
  assert.deepEqual(lines.map((l) => `${l.path} ${l.status} ${l.incomplete}`), [
    "/stream 200 true",
  ]);
});
