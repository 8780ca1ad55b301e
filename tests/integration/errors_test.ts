// Failures map to statuses in one place: 504 on timeouts, 413 over the body limit, 502 on an
// upstream that resets; error bodies carry the request id and nothing internal.
import assert from "node:assert/strict";
import { ROOT, startUpstream, waitFor } from "../_harness.ts";
import { silentLogger } from "../../src/ports.ts";
import { proxyRoute, startProxy } from "./_proxy.ts";
import { recordingLogger } from "./_ws.ts";

Deno.test("an upstream that never answers gets 504 after response_header", async () => {
  const release = Promise.withResolvers<void>();
  await using up = await startUpstream(async () => {
    await release.promise;
    return new Response("late");
  });
  await using prox = await startProxy(`${proxyRoute(up.url)}
    timeouts: { response_header: 200ms }
    retries: { attempts: 0 }
`);
  const t0 = performance.now();
  const res = await fetch(`${prox.url}/slow`);
  const text = await res.text();
  release.resolve();
  assert.equal(res.status, 504);
  assert.equal(res.headers.get("proxy-status"), "prox; error=http_response_timeout");
  assert.match(text, /request id: /);
  assert.ok(!text.includes(String(up.port)));
  assert.ok(performance.now() - t0 < 5_000);
});

Deno.test("a hung upstream of a proxy route costs one response_header timeout, not one per retry", async () => {
  const release = Promise.withResolvers<void>();
  let hits = 0;
  await using up = await startUpstream(async () => {
    hits++;
    await release.promise;
    return new Response("late");
  });
  // Default retries (2): each went back to the only target and waited the timeout again.
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}", timeouts: { response_header: 300ms } }
`);
  const t0 = performance.now();
  const res = await fetch(`${prox.url}/slow`);
  await res.body?.cancel();
  const ms = performance.now() - t0;
  release.resolve();
  assert.equal(res.status, 504);
  assert.equal(hits, 1);
  assert.ok(ms < 850, `${ms} ms`); // three attempts took over 900
});

Deno.test("retries.per_try_timeout still retries a proxy route's one target", async () => {
  const release = Promise.withResolvers<void>();
  let hits = 0;
  await using up = await startUpstream(async () => {
    if (++hits === 1) await release.promise;
    return new Response(`answer ${hits}`);
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}", retries: { attempts: 1, per_try_timeout: 200ms } }
`);
  const res = await fetch(`${prox.url}/slow`);
  release.resolve();
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "answer 2");
});

Deno.test("a request body over max_request_body gets 413, declared or streamed", async () => {
  let reached = 0;
  await using up = await startUpstream(async (req) => {
    reached++;
    await req.body?.cancel();
    return new Response("ok");
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
limits: { max_request_body: 1KiB }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
  const declared = await fetch(`${prox.url}/up`, { method: "POST", body: "x".repeat(2048) });
  assert.equal(declared.status, 413);
  await declared.body?.cancel();
  assert.equal(reached, 0);
  const small = await fetch(`${prox.url}/up`, { method: "POST", body: "x".repeat(100) });
  assert.equal(await small.text(), "ok");
  const chunks = new ReadableStream<Uint8Array>({
    start(ctl) {
      for (let i = 0; i < 8; i++) ctl.enqueue(new Uint8Array(512));
      ctl.close();
    },
  });
  const streamed = await fetch(`${prox.url}/up`, { method: "POST", body: chunks });
  assert.equal(streamed.status, 413);
  await streamed.body?.cancel();
});

Deno.test("a streamed upload over max_request_body to an HTTP/2 upstream gets 413, not 502", async () => {
  const TLS = `${ROOT}/tests/fixtures/tls`;
  const got: number[] = [];
  await using up = await startUpstream(async (req) => {
    let n = 0;
    try {
      for await (const chunk of req.body!) n += chunk.byteLength;
    } catch { /* cut off by Prox */ }
    got.push(n);
    return new Response("ok");
  }, {
    cert: await Deno.readTextFile(`${TLS}/cert.pem`),
    key: await Deno.readTextFile(`${TLS}/key.pem`),
    hostname: "localhost",
  });
  const warnings: string[] = [];
  await using prox = await startProxy(
    `
health_check: { enabled: false }
limits: { max_request_body: 100KiB }
routes:
  "/": { type: proxy, target: "${up.url}", tls: { ca_cert: "${TLS}/ca.pem" } }
`,
    { logger: { ...silentLogger, warn: (_m, f) => warnings.push(String(f?.kind)) } },
  );
  // The fields fetch would add itself: with them the request goes over HTTP/2 (fetch).
  const headers = {
    "user-agent": "t",
    accept: "*/*",
    "accept-language": "en",
    "accept-encoding": "identity",
  };
  const upload = () =>
    new ReadableStream<Uint8Array>({
      start(ctl) {
        for (let i = 0; i < 64; i++) ctl.enqueue(new Uint8Array(16384));
        ctl.close();
      },
    });
  const res = await fetch(`${prox.url}/x`, { method: "POST", body: upload(), headers });
  assert.equal(res.status, 413);
  await res.body?.cancel();
  // Taken for the upstream's reset it was a 502, and a passive-health failure.
  assert.deepEqual(warnings, ["body_too_large"]);
  const small = await fetch(`${prox.url}/x`, { method: "POST", body: "small", headers });
  assert.equal(await small.text(), "ok");
  await waitFor(() => got.includes(5), { what: "the small upload upstream" });
});

Deno.test("an upload that stalls on its way to an HTTP/2 upstream gets 408 after timeouts.idle", async () => {
  const TLS = `${ROOT}/tests/fixtures/tls`;
  await using up = await startUpstream(async (req) => {
    await req.arrayBuffer().catch(() => {});
    return new Response("ok");
  }, {
    cert: await Deno.readTextFile(`${TLS}/cert.pem`),
    key: await Deno.readTextFile(`${TLS}/key.pem`),
    hostname: "localhost",
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    tls: { ca_cert: "${TLS}/ca.pem" }
    timeouts: { idle: 300ms }
`);
  const headers = {
    "user-agent": "t",
    accept: "*/*",
    "accept-language": "en",
    "accept-encoding": "identity",
  };
  // Past the size read whole before an upstream is chosen, then nothing more until the end.
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      ctl = c;
      c.enqueue(new Uint8Array(100_000));
    },
  });
  const t0 = performance.now();
  const res = await fetch(`${prox.url}/x`, { method: "POST", body, headers });
  // fetch has no idle timeout: the exchange waited for the response header timeout (504, 65 s).
  assert.equal(res.status, 408);
  assert.ok(performance.now() - t0 < 5000);
  await res.body?.cancel();
  ctl.close();
});

Deno.test("an upstream that closes the connection without answering gets 502", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepting = (async () => {
    for await (const conn of listener) {
      const buf = new Uint8Array(4096);
      await conn.read(buf).catch(() => null);
      conn.close();
    }
  })();
  await using prox = await startProxy(`${proxyRoute(`http://127.0.0.1:${port}`)}
    retries: { attempts: 0 }
`);
  const res = await fetch(`${prox.url}/x`);
  assert.equal(res.status, 502);
  assert.equal(res.headers.get("proxy-status"), "prox; error=connection_terminated");
  assert.match(await res.text(), /request id: /);
  listener.close();
  await accepting.catch(() => {});
});

Deno.test("request headers over limits.max_header_bytes get 431", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(`
health_check: { enabled: false }
limits: { max_header_bytes: 2KiB }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
  const big = await fetch(`${prox.url}/`, { headers: { cookie: "a=" + "x".repeat(4096) } });
  assert.equal(big.status, 431);
  assert.match(await big.text(), /request id: /);
  const fine = await fetch(`${prox.url}/`, { headers: { cookie: "a=b" } });
  assert.equal(await fine.text(), "ok");
});

Deno.test("timeouts.total bounds the whole exchange: 504 before the head, a cut body after", async () => {
  const release = Promise.withResolvers<void>();
  await using up = await startUpstream(async (req) => {
    if (new URL(req.url).pathname === "/head") {
      await release.promise;
      return new Response("late");
    }
    // Headers at once, then a body that ends only when released (too late if total works).
    const body = new ReadableStream<Uint8Array>({
      start(ctl) {
        ctl.enqueue(new TextEncoder().encode("partial"));
        release.promise.then(() => {
          try {
            ctl.close();
          } catch { /* cancelled by Prox's deadline: the expected case */ }
        });
      },
    });
    return new Response(body);
  });
  await using prox = await startProxy(`${proxyRoute(up.url)}
    timeouts: { total: 300ms }
    retries: { attempts: 0 }
`);
  const t0 = performance.now();
  const head = await fetch(`${prox.url}/head`);
  assert.equal(head.status, 504);
  assert.match(await head.text(), /request id: /);
  assert.ok(performance.now() - t0 < 5_000);
  const cut = await fetch(`${prox.url}/stream`);
  assert.equal(cut.status, 200);
  // Without the deadline the body would complete once released: bound the test, not the wait.
  const guard = setTimeout(release.resolve, 5_000);
  await assert.rejects(cut.text());
  clearTimeout(guard);
  release.resolve();
});

Deno.test("a client that leaves while the upstream is silent frees the upstream connection", async () => {
  // The exchange looks up the client's Request.signal only after a tick of its timer; this checks
  // that Deno.serve's signal then ends the exchange, long before response_header would.
  const upstream = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let arrived = false;
  let closedByProx = false;
  const served = (async () => {
    const c = await upstream.accept();
    const buf = new Uint8Array(4096);
    await c.read(buf);
    arrived = true;
    try {
      closedByProx = (await c.read(buf)) === null; // Prox sends nothing more: EOF or reset
    } catch {
      closedByProx = true;
    }
    c.close();
  })();
  try {
    await using prox = await startProxy(
      `${proxyRoute(`http://127.0.0.1:${(upstream.addr as Deno.NetAddr).port}`)}
    timeouts: { response_header: 60s }
    retries: { attempts: 0 }
`,
    );
    const client = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    await client.write(new TextEncoder().encode("GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n"));
    await waitFor(() => arrived, { what: "the request at the upstream" });
    const t0 = performance.now();
    client.close();
    await waitFor(() => closedByProx, { what: "Prox closing the upstream connection" });
    assert.ok(performance.now() - t0 < 5_000);
  } finally {
    upstream.close();
    await served;
  }
});

Deno.test("a client that stalls in the middle of its request body gets 408; the upstream never sees it", async () => {
  let reached = 0;
  await using up = await startUpstream(async (req) => {
    reached++;
    return new Response(await req.text());
  });
  await using prox = await startProxy(`${proxyRoute(up.url)}
    timeouts: { idle: 200ms }
`);
  const client = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    const t0 = performance.now();
    await client.write(
      new TextEncoder().encode(
        "POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n0123456789",
      ),
    );
    const buf = new Uint8Array(4096);
    const n = await client.read(buf);
    const head = new TextDecoder().decode(buf.subarray(0, n ?? 0));
    assert.match(head, /^HTTP\/1\.1 408 /);
    assert.ok(performance.now() - t0 >= 190, "not before the idle timeout");
    assert.equal(reached, 0);
  } finally {
    client.close();
  }
  // The same body sent whole goes through.
  const ok = await fetch(`${prox.url}/upload`, { method: "POST", body: "x".repeat(100) });
  assert.equal(await ok.text(), "x".repeat(100));
  assert.equal(reached, 1);
});

Deno.test("timeouts.total also bounds a small body trickled in before an upstream is chosen (408)", async () => {
  let reached = 0;
  await using up = await startUpstream(async (req) => {
    reached++;
    return new Response(await req.text());
  });
  await using prox = await startProxy(`${proxyRoute(up.url)}
    timeouts: { total: 400ms, idle: 60s }
`);
  // Declared (read whole first) and chunked (kept for replay): each is read before any upstream
  // is chosen, a byte every 50 ms.
  for (
    const head of [
      "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10000\r\n\r\n",
      "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
  ) {
    const chunked = head.includes("chunked");
    const client = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    const t0 = performance.now();
    await client.write(new TextEncoder().encode(head));
    let stop = false;
    const trickle = (async () => {
      while (!stop) {
        await new Promise((r) => setTimeout(r, 50));
        const byte = new TextEncoder().encode(chunked ? "1\r\nx\r\n" : "x");
        await client.write(byte).catch(() => stop = true);
      }
    })();
    try {
      const buf = new Uint8Array(4096);
      // Bounded: without the deadline the answer would come after the whole body (minutes).
      let guard: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<null>((r) => guard = setTimeout(() => r(null), 5_000));
      const n = await Promise.race([client.read(buf), late]);
      clearTimeout(guard);
      const ms = performance.now() - t0;
      const answer = new TextDecoder().decode(buf.subarray(0, n ?? 0));
      assert.match(answer, /^HTTP\/1\.1 408 /, head);
      assert.ok(ms >= 390 && ms < 3_000, `${ms} ms`);
    } finally {
      stop = true;
      await trickle;
      client.close();
    }
  }
  assert.equal(reached, 0);
});

Deno.test("retries.per_try_timeout counts from the end of a streamed upload, not through a slow client's", async () => {
  let hits = 0;
  await using up = await startUpstream(async (req) => {
    hits++;
    const n = (await req.arrayBuffer()).byteLength;
    return new Response(`got ${n}`);
  });
  await using prox = await startProxy(`${proxyRoute(up.url)}
    retries: { attempts: 1, per_try_timeout: 300ms }
`);
  // 160 KiB (past what is kept for a retry) over about a second: 8 KiB every 50 ms.
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      if (sent > 0) await new Promise((r) => setTimeout(r, 50));
      if (sent++ === 20) c.close();
      else c.enqueue(new Uint8Array(8192));
    },
  });
  const res = await fetch(`${prox.url}/upload`, { method: "PUT", body });
  assert.deepEqual([res.status, await res.text()], [200, `got ${20 * 8192}`]);
  assert.equal(hits, 1);
});

Deno.test("retries.per_try_timeout still bounds an upstream that is silent after a streamed upload", async () => {
  const release = Promise.withResolvers<void>();
  await using up = await startUpstream(async (req) => {
    await req.arrayBuffer();
    await release.promise;
    return new Response("late");
  });
  await using prox = await startProxy(`${proxyRoute(up.url)}
    retries: { attempts: 1, per_try_timeout: 300ms }
`);
  const t0 = performance.now();
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array(100_000));
      c.close();
    },
  });
  const res = await fetch(`${prox.url}/upload`, { method: "PUT", body });
  await res.body?.cancel();
  const ms = performance.now() - t0;
  release.resolve();
  assert.equal(res.status, 504);
  assert.ok(ms >= 290 && ms < 3_000, `${ms} ms`);
});

Deno.test("Prox's own error answers say why in Proxy-Status (RFC 9209) and in the access log", async () => {
  // A port nothing listens on: bound, then closed.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closed = (l.addr as Deno.NetAddr).port;
  l.close();
  await using up = await startUpstream(() => new Response("ok"));
  const access: Record<string, unknown>[] = [];
  const logger = {
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => void (m === "access" && access.push(f!)),
  };
  await using prox = await startProxy(
    `
health_check: { enabled: false }
log: { access_log: json }
routes:
  "/refused": { type: proxy, target: "http://127.0.0.1:${closed}", retries: { attempts: 0 } }
  "/nowhere": { type: proxy, target: "http://prox-test.invalid", retries: { attempts: 0 } }
  "/ok": { type: proxy, target: "${up.url}" }
  "example.com/only": { type: proxy, target: "${up.url}" }
`,
    { logger },
  );
  const status = async (path: string) => {
    const res = await fetch(`${prox.url}${path}`);
    await res.body?.cancel();
    return [res.status, res.headers.get("proxy-status")];
  };
  assert.deepEqual(await status("/refused"), [502, "prox; error=connection_refused"]);
  assert.deepEqual(await status("/nowhere"), [502, "prox; error=dns_error"]);
  assert.deepEqual(await status("/only"), [404, "prox; error=destination_not_found"]);
  // The upstream's own answers carry none.
  assert.deepEqual(await status("/ok"), [200, null]);
  await waitFor(() => access.length === 4, { what: "four access records" });
  assert.deepEqual(
    access.map((l) => l.error),
    ["connection_refused", "dns_error", "destination_not_found", null],
  );
});

Deno.test("a refused connection is retried on another target, a POST included; a lone target gets it again", async () => {
  const bodies: string[] = [];
  await using up = await startUpstream(async (req) => {
    bodies.push(await req.text());
    return new Response("ok");
  });
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = (dead.addr as Deno.NetAddr).port;
  dead.close();
  const logger = recordingLogger();
  await using prox = await startProxy(
    `
health_check: { enabled: false }
passive_health: { enabled: false }
routes:
  "/lb":
    type: load_balance
    strategy: first
    targets: ["http://127.0.0.1:${deadPort}", "${up.url}"]
    retries: { attempts: 1 }
  "/lone": { type: proxy, target: "http://127.0.0.1:${deadPort}", retries: { attempts: 2 } }
`,
    { logger },
  );
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${prox.url}/lb`, { method: "POST", body: `post ${i}` });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ok");
  }
  assert.deepEqual(bodies, ["post 0", "post 1", "post 2"]);
  const res = await fetch(`${prox.url}/lone`);
  await res.body?.cancel();
  assert.equal(res.status, 502);
  // Nowhere else to go: the lone target was tried again, attempts times (a restarting backend).
  const retries = logger.records.filter((r) => r.msg === "Retrying upstream request");
  assert.deepEqual(retries.map((r) => [r.route, r.reason]), [
    ["/lb", "connect"],
    ["/lb", "connect"],
    ["/lb", "connect"],
    ["/lone", "connect"],
    ["/lone", "connect"],
  ]);
});
