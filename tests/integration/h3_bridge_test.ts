// HTTP/3 listener + request bridge against a plain handler, driven by the in-repo client on
// Deno.connectQuic: real QUIC on 127.0.0.1, no proxy in between.
import assert from "node:assert/strict";
import { ProxyError, statusFor } from "../../src/domain/errors.ts";
import { interopTest, ROOT, run, waitFor } from "../_harness.ts";
import { altSvcValue, type H3Listener, startH3Listener } from "../../src/adapters/h3/mod.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { encodeFrame, frameHeader, FrameType, H3Error } from "../../src/adapters/h3/frames.ts";
import { decodeFieldSection, encodeFieldSection } from "../../src/adapters/h3/qpack.ts";
import { StreamReader } from "../../src/adapters/h3/stream_reader.ts";
import type { ClientInfo, Handler } from "../../src/ports.ts";
import { noopMetrics, silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const cert = Deno.readTextFileSync(`${TLS}/cert.pem`);
const key = Deno.readTextFileSync(`${TLS}/key.pem`);
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);

/** The field section of a request for `/` on localhost (QPACK, no dynamic table). */
function requestHead(method = "GET"): Uint8Array {
  return encodeFieldSection([
    [":method", method],
    [":scheme", "https"],
    [":authority", "localhost"],
    [":path", "/"],
  ]);
}

async function withListener(
  handler: Handler,
  fn: (l: H3Listener) => Promise<void>,
  options: { request_header_timeout?: number } = {},
): Promise<void> {
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    handler,
    logger: silentLogger,
    options: { max_idle_timeout: 5000, max_field_section_size: 8192, ...options },
  });
  try {
    await fn(l);
  } finally {
    await l.shutdown(0);
  }
}

const client = (port: number) => connectH3({ hostname: "127.0.0.1", port, caCerts: [ca] });

Deno.test("startH3Listener serves a GET through the handler with h3 ClientInfo", async () => {
  let seen: ClientInfo | undefined;
  let seenReq: { url: string; host: string | null; cookie: string | null } | undefined;
  await withListener((req, info) => {
    seen = info;
    seenReq = { url: req.url, host: req.headers.get("host"), cookie: req.headers.get("cookie") };
    const h = new Headers({ "content-type": "text/plain", "x-proto": "h3" });
    h.append("set-cookie", "a=1");
    h.append("set-cookie", "b=2");
    return Promise.resolve(new Response("hello over h3", { headers: h }));
  }, async (l) => {
    await using c = await client(l.port);
    const res = await c.request("/path?q=1", {
      fields: [
        [":method", "GET"],
        [":scheme", "https"],
        [":authority", `localhost:${l.port}`],
        [":path", "/path?q=1"],
        ["cookie", "x=1"],
        ["cookie", "y=2"],
      ],
    });
    assert.equal(res.status, 200);
    assert.equal(new TextDecoder().decode(res.body), "hello over h3");
    assert.equal(res.headers.get("x-proto"), "h3");
    assert.deepEqual(res.headers.getSetCookie(), ["a=1", "b=2"]);
    assert.equal(seen?.protocol, "h3");
    assert.equal(seen?.tls, true);
    assert.equal(seen?.localPort, l.port);
    assert.equal(seen?.remoteAddr.hostname, "127.0.0.1");
    assert.equal(seenReq?.url, `https://localhost:${l.port}/path?q=1`);
    assert.equal(seenReq?.host, `localhost:${l.port}`);
    assert.equal(seenReq?.cookie, "x=1; y=2");
  });
});

Deno.test("startH3Listener streams a 1 MiB request body and a 8 MiB response intact", async () => {
  const big = new Uint8Array(8 * 1024 * 1024).map((_, i) => (i * 7) & 0xff);
  await withListener(async (req) => {
    if (req.method === "POST") {
      const body = new Uint8Array(await req.arrayBuffer());
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
      return new Response(`${body.length} ${Array.from(digest).join(",")}`);
    }
    return new Response(
      ReadableStream.from((function* () {
        for (let off = 0; off < big.length; off += 100_000) yield big.subarray(off, off + 100_000);
      })()),
      { headers: { "content-length": String(big.length) } },
    );
  }, async (l) => {
    await using c = await client(l.port);
    const post = crypto.getRandomValues(new Uint8Array(65536));
    const body = new Uint8Array(1024 * 1024);
    for (let i = 0; i < 16; i++) body.set(post, i * 65536);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
    const res = await c.request("/echo", {
      method: "POST",
      body,
      headers: { "content-length": String(body.length) },
    });
    assert.equal(
      new TextDecoder().decode(res.body),
      `${body.length} ${Array.from(digest).join(",")}`,
    );
    const dl = await c.request("/big");
    assert.equal(dl.status, 200);
    assert.equal(dl.body.length, big.length);
    assert.deepEqual(dl.body, big);
  });
});

Deno.test("startH3Listener: a body that disagrees with content-length is the client's error", async () => {
  let seen: unknown;
  await withListener(async (req) => {
    try {
      await req.arrayBuffer();
      return new Response("read");
    } catch (err) {
      seen = err;
      throw err;
    }
  }, async (l) => {
    await using c = await client(l.port);
    const res = await c.request("/up", {
      method: "POST",
      headers: { "content-length": "10" },
      body: new Uint8Array(5),
    });
    assert.notEqual(res.status, 200);
    // A plain error read as "client gone" (499 in the log, "Client closed request" in the body).
    assert.ok(seen instanceof ProxyError, String(seen));
    assert.equal(seen.kind, "bad_request");
  });
});

Deno.test("startH3Listener answers malformed requests with 400, 431 and 501", async () => {
  let calls = 0;
  const refusals: string[] = [];
  // Refusals still reach the handler, flagged, so that they are logged and counted (pipeline.ts).
  await withListener((req, info) => {
    if (!info.refused) calls++;
    else refusals.push(`${info.refused.method} ${new URL(req.url).pathname} ${info.refused.kind}`);
    const status = info.refused ? statusFor(info.refused.kind) : 200;
    return Promise.resolve(new Response("ok", { status }));
  }, async (l) => {
    await using c = await client(l.port);
    const base = (path = "/"): [string, string][] => [
      [":method", "GET"],
      [":scheme", "https"],
      [":authority", "localhost"],
      [":path", path],
    ];
    assert.equal((await c.request("/", { fields: [...base(), ["Upper", "x"]] })).status, 400);
    assert.equal(
      (await c.request("/", { fields: [...base(), ["connection", "close"]] })).status,
      400,
    );
    assert.equal((await c.request("/", { fields: base().slice(0, 3) })).status, 400);
    assert.equal(
      (await c.request("/", { fields: [...base(), ["x", "v".repeat(9000)]] })).status,
      431,
    );
    assert.equal(
      (await c.request("/", { fields: [[":method", "CONNECT"], [":authority", "a:1"]] })).status,
      501,
    );
    // TRACE: 405 as over HTTP/1.1 and HTTP/2 (the Request constructor refused it: 400).
    const trace = base();
    trace[0] = [":method", "TRACE"];
    assert.equal((await c.request("/", { fields: trace })).status, 405);
    assert.equal(calls, 0);
    assert.deepEqual(refusals, [
      "GET / bad_request",
      "GET / bad_request",
      "GET / bad_request",
      "- / header_too_large",
      "CONNECT / not_implemented",
      "TRACE / method_not_allowed",
    ]);
    // a GREASE frame before HEADERS is ignored
    const grease = encodeFrame(0x21 + 0x1f * 3, new Uint8Array(5));
    const headers = encodeFrame(FrameType.HEADERS, encodeFieldSection(base("/g")));
    const raw = new Uint8Array([...grease, ...headers]);
    assert.equal((await c.request("/", { raw })).status, 200);
    assert.equal(calls, 1);
  });
});

Deno.test("startH3Listener refuses a GET or HEAD that carries content (501), as over HTTP/1.1 and HTTP/2, rather than dropping it", async () => {
  let calls = 0;
  const refusals: string[] = [];
  await withListener((_req, info) => {
    if (!info.refused) calls++;
    else refusals.push(`${info.refused.method} ${info.refused.kind}`);
    const status = info.refused ? statusFor(info.refused.kind) : 200;
    return Promise.resolve(new Response(null, { status }));
  }, async (l) => {
    await using c = await client(l.port);
    const head = (method: string) => encodeFrame(FrameType.HEADERS, requestHead(method));
    const data = (n: number) => encodeFrame(FrameType.DATA, new Uint8Array(n));
    // Content with the head, and content after it (the client's own writes: HEADERS, DATA, FIN).
    const withBody = Uint8Array.of(...head("GET"), ...data(3));
    assert.equal((await c.request("/", { raw: withBody })).status, 501);
    assert.equal((await c.request("/", { method: "HEAD", body: new Uint8Array(2) })).status, 501);
    // No content: an empty DATA frame and a GET whose stream ends after its head go on.
    assert.equal(
      (await c.request("/", { raw: Uint8Array.of(...head("GET"), ...data(0)) })).status,
      200,
    );
    assert.equal((await c.request("/")).status, 200);
    assert.equal(calls, 2);
    assert.deepEqual(refusals, ["GET not_implemented", "HEAD not_implemented"]);
  });
});

Deno.test("startH3Listener: content after a GET whose stream stayed open went on fails the request, not dropped", async () => {
  const called = Promise.withResolvers<void>();
  let aborted = false;
  // The handler answers only once the request is gone.
  const handler: Handler = (req) => {
    called.resolve();
    return new Promise((resolve) => {
      req.signal.addEventListener("abort", () => {
        aborted = true;
        resolve(new Response("late"));
      }, { once: true });
    });
  };
  await withListener(handler, async (l) => {
    await using c = await client(l.port);
    const stream = await c.conn.createBidirectionalStream();
    const w = stream.writable.getWriter();
    const get = requestHead();
    await w.write(encodeFrame(FrameType.HEADERS, get));
    await called.promise; // past request_header_timeout without an end: it went on
    await w.write(encodeFrame(FrameType.DATA, new Uint8Array(3)));
    await waitFor(() => aborted, { what: "the request failed" });
    await w.close().catch(() => {});
    await stream.readable.cancel().catch(() => {});
  }, { request_header_timeout: 50 });
});

Deno.test("startH3Listener checks content-length against the DATA received", async () => {
  let error = "";
  await withListener(async (req) => {
    try {
      await req.arrayBuffer();
      return new Response("read");
    } catch (err) {
      error = String(err);
      return new Response("bad body", { status: 400 });
    }
  }, async (l) => {
    await using c = await client(l.port);
    const res = await c.request("/", {
      method: "POST",
      body: new Uint8Array(10),
      headers: { "content-length": "20" },
    });
    assert.equal(res.status, 400);
    assert.match(error, /content-length/);
  });
});

Deno.test("startH3Listener closes the connection on DATA before HEADERS (H3_FRAME_UNEXPECTED)", async () => {
  await withListener(() => Promise.resolve(new Response("ok")), async (l) => {
    await using c = await client(l.port);
    await assert.rejects(() =>
      c.request("/", { raw: encodeFrame(FrameType.DATA, new Uint8Array(3)) })
    );
    const info = await c.conn.closed.then((i) => String(i.closeCode), (e) => String(e));
    assert.match(info, new RegExp(`${H3Error.FRAME_UNEXPECTED}|0x105`), info);
  });
});

Deno.test("startH3Listener closes the connection on a frame cut short by FIN (H3_FRAME_ERROR)", async () => {
  const handler: Handler = async (req) => {
    await req.arrayBuffer().catch(() => {});
    return new Response("ok");
  };
  const head = encodeFrame(
    FrameType.HEADERS,
    encodeFieldSection([
      [":method", "POST"],
      [":scheme", "https"],
      [":authority", "localhost"],
      [":path", "/"],
    ]),
  );
  // RFC 9114 §7.1: a stream that ends cleanly inside a frame is a connection error.
  for (
    const raw of [
      Uint8Array.of(FrameType.HEADERS, 20, 0, 0, 0xd1), // HEADERS of 20 bytes, 3 sent
      Uint8Array.of(...head, FrameType.DATA, 10, 1, 2, 3), // DATA of 10 bytes, 3 sent
    ]
  ) {
    await withListener(handler, async (l) => {
      await using c = await client(l.port);
      await c.request("/", { raw }).catch(() => {});
      const info = await c.conn.closed.then((i) => String(i.closeCode), (e) => String(e));
      assert.match(info, new RegExp(`${H3Error.FRAME_ERROR}|0x106`), info);
    });
  }
});

Deno.test("startH3Listener closes the connection on DATA after a GET's trailers (H3_FRAME_UNEXPECTED)", async () => {
  await withListener(() => Promise.resolve(new Response("ok")), async (l) => {
    await using c = await client(l.port);
    const get = requestHead();
    // HEADERS, trailers, then DATA: an invalid sequence of frames (RFC 9114 §4.1)
    const raw = Uint8Array.of(
      ...encodeFrame(FrameType.HEADERS, get),
      ...encodeFrame(FrameType.HEADERS, encodeFieldSection([["x-trailer", "1"]])),
      ...encodeFrame(FrameType.DATA, new Uint8Array(1)),
    );
    await c.request("/", { raw }).catch(() => {});
    const info = await c.conn.closed.then((i) => String(i.closeCode), (e) => String(e));
    assert.match(info, new RegExp(`${H3Error.FRAME_UNEXPECTED}|0x105`), info);
  });
});

Deno.test("H3Listener.shutdown sends GOAWAY and lets the in-flight request finish", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let started = false;
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    logger: silentLogger,
    handler: async () => {
      started = true;
      await gate;
      return new Response("finished");
    },
  });
  await using c = await client(l.port);
  const inflight = c.request("/slow");
  await waitFor(() => started, { what: "request to reach the handler" });
  const down = l.shutdown(5000);
  await waitFor(() => c.goawayId !== null, { what: "GOAWAY" });
  assert.equal(c.goawayId, 4);
  release();
  const res = await inflight;
  assert.equal(new TextDecoder().decode(res.body), "finished");
  c.close(); // clients close once idle after GOAWAY; the listener then stops lingering
  await down;
});

Deno.test("altSvcValue advertises the real port", () => {
  assert.equal(altSvcValue(8443, 3600), 'h3=":8443"; ma=3600');
});

interopTest("H3Listener.setCertificate serves new connections with the new certificate", [
  "openssl",
], async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      `${dir}/k.pem`,
      "-out",
      `${dir}/c.pem`,
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
    ]);
    assert.equal(out.code, 0, out.stderr);
    const cert2 = await Deno.readTextFile(`${dir}/c.pem`);
    const key2 = await Deno.readTextFile(`${dir}/k.pem`);
    await withListener(() => Promise.resolve(new Response("ok")), async (l) => {
      await assert.rejects(() =>
        connectH3({ hostname: "127.0.0.1", port: l.port, caCerts: [cert2] })
      );
      l.setCertificate(cert2, key2);
      await using c = await connectH3({ hostname: "127.0.0.1", port: l.port, caCerts: [cert2] });
      assert.equal((await c.request("/")).status, 200);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startH3Listener refuses connections past max_connections (logged once per burst) and counts h3 connections", async () => {
  const counts = { opened: 0, closed: 0 };
  const warnings: string[] = [];
  const logger = { ...silentLogger, warn: (msg: string) => void warnings.push(msg) };
  const metrics = {
    ...noopMetrics,
    connectionOpened: (p: string) => p === "h3" && counts.opened++,
    connectionClosed: (p: string) => p === "h3" && counts.closed++,
  };
  const l = await startH3Listener({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    logger,
    metrics,
    handler: () => Promise.resolve(new Response("ok")),
    options: { max_connections: 1 },
  });
  try {
    await using first = await client(l.port);
    assert.equal((await first.request("/")).status, 200);
    assert.equal(counts.opened, 1);
    for (let i = 0; i < 5; i++) await assert.rejects(() => client(l.port));
    // One line for the burst, not one per refused handshake (spoofed Initials would flood logs).
    assert.deepEqual(warnings, ["HTTP/3 connections refused: limit reached"]);
    first.close();
    await waitFor(() => counts.closed === 1, { what: "connection closed" });
    await using again = await client(l.port);
    assert.equal((await again.request("/")).status, 200);
  } finally {
    await l.shutdown(0);
  }
});

Deno.test("startH3Listener serves 1,000 requests over 20 concurrent streams of one connection", async () => {
  let served = 0;
  await withListener(() => {
    served++;
    return Promise.resolve(new Response("x".repeat(100)));
  }, async (l) => {
    await using c = await client(l.port);
    let sent = 0;
    await Promise.all(Array.from({ length: 20 }, async () => {
      while (sent < 1000) {
        sent++;
        const res = await c.request(`/n/${sent}`);
        assert.equal(res.status, 200);
        assert.equal(res.body.length, 100);
      }
    }));
    assert.equal(served, 1000);
  });
});

Deno.test("startH3Listener sends no body for HEAD, 204 and 304 but keeps content-length", async () => {
  await withListener((req) => {
    const path = new URL(req.url).pathname;
    if (path === "/204") return Promise.resolve(new Response(null, { status: 204 }));
    if (path === "/304") {
      return Promise.resolve(new Response(null, { status: 304, headers: { etag: '"a"' } }));
    }
    return Promise.resolve(new Response("twelve bytes", { headers: { "content-length": "12" } }));
  }, async (l) => {
    await using c = await client(l.port);
    const head = await c.request("/", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), "12");
    assert.equal(head.body.length, 0);
    assert.equal((await c.request("/204")).body.length, 0);
    const nm = await c.request("/304");
    assert.equal(nm.status, 304);
    assert.equal(nm.headers.get("etag"), '"a"');
  });
});

Deno.test("startH3Listener answers early without reading a large upload and stops the sender", async () => {
  await withListener(async (req) => {
    await req.body?.cancel();
    return new Response("too large", { status: 413 });
  }, async (l) => {
    await using c = await client(l.port);
    const body = new Uint8Array(8 * 1024 * 1024);
    const res = await c.request("/upload", { method: "POST", body });
    assert.equal(res.status, 413);
    // the connection is still usable
    assert.equal(
      (await c.request("/upload", { method: "POST", body: new Uint8Array(10) })).status,
      413,
    );
  });
});

/** A response whose body fails after 1,000 bytes (an upstream reset mid-body). */
const failing = (withLength: boolean) =>
  new Response(
    new ReadableStream({
      start(ctl) {
        ctl.enqueue(new Uint8Array(1000));
      },
      pull(ctl) {
        ctl.error(new Error("upstream reset"));
      },
    }),
    withLength ? { headers: { "content-length": "5000" } } : {},
  );

Deno.test("startH3Listener never lets a failed response body look complete", async () => {
  await withListener(
    (req) => Promise.resolve(failing(new URL(req.url).pathname === "/cl")),
    async (l) => {
      await using c1 = await client(l.port);
      const short = await c1.request("/cl");
      assert.equal(short.headers.get("content-length"), "5000");
      assert.ok(short.body.length < 5000, `body ${short.body.length} bytes`);
      await using c2 = await client(l.port);
      await assert.rejects(() => c2.request("/nocl")); // the connection is closed instead
    },
  );
});

Deno.test("startH3Listener settles ClientInfo.completed: delivered resolves, a failed body rejects", async () => {
  const settled: Record<string, Promise<string>> = {};
  await withListener((req, info) => {
    const path = new URL(req.url).pathname;
    assert.ok(info.completed, "completed is set per request");
    settled[path] = info.completed.then(() => "delivered", () => "failed");
    if (path === "/ok") return Promise.resolve(new Response("x".repeat(5000)));
    return Promise.resolve(failing(true));
  }, async (l) => {
    await using c = await client(l.port);
    assert.equal((await c.request("/ok")).body.length, 5000);
    assert.equal(await settled["/ok"], "delivered");
    await using c2 = await client(l.port);
    await c2.request("/bad").catch(() => {});
    assert.equal(await settled["/bad"], "failed");
  });
});

Deno.test("startH3Listener sends the more urgent response first (RFC 9218 priority)", async () => {
  const sizes: Record<string, number> = { "/low": 4 * 1024 * 1024, "/high": 16 * 1024 * 1024 };
  await withListener(
    (req) => Promise.resolve(new Response(new Uint8Array(sizes[new URL(req.url).pathname]))),
    async (l) => {
      await using c = await client(l.port);
      const order: string[] = [];
      // Round-robin would finish the small background download first; urgency must win.
      const low = c.request("/low", { headers: { priority: "u=7" } }).then(() => order.push("low"));
      const high = c.request("/high", { headers: { priority: "u=0" } }).then(() =>
        order.push("high")
      );
      await Promise.all([low, high]);
      assert.deepEqual(order, ["high", "low"]);
    },
  );
});

Deno.test("startH3Listener decodes a GET's trailers: a dynamic table reference is QPACK_DECOMPRESSION_FAILED", async () => {
  // The handler answers only once the request is gone, so the trailers are read before it.
  const handler: Handler = (req) =>
    new Promise((resolve) => {
      const done = () => resolve(new Response("late"));
      if (req.signal.aborted) done();
      else req.signal.addEventListener("abort", done, { once: true });
    });
  await withListener(handler, async (l) => {
    await using c = await client(l.port);
    const get = requestHead();
    // Trailers whose field line refers to the dynamic table we announced as empty (RFC 9204
    // §2.2.3): the same section as a POST's trailers or a request head closes the connection.
    const raw = Uint8Array.of(
      ...encodeFrame(FrameType.HEADERS, get),
      ...encodeFrame(FrameType.HEADERS, Uint8Array.of(0x00, 0x00, 0x80)),
    );
    const answered = c.request("/", { raw }).catch(() => {});
    // Without the check the request waits forever (keep-alive frames hold the connection).
    let timer: ReturnType<typeof setTimeout> | undefined;
    const info = await Promise.race([
      c.conn.closed.then((i) => String(i.closeCode), (e) => String(e)),
      new Promise<string>((r) => timer = setTimeout(() => r("still open after 5 s"), 5000)),
    ]);
    clearTimeout(timer);
    c.conn.close();
    await answered;
    assert.match(info, new RegExp(`${H3Error.QPACK_DECOMPRESSION_FAILED}|0x200`), info);
  });
});

Deno.test("startH3Listener: request trailers past max_field_section_size are a 431, as a head is", async () => {
  let seen: unknown;
  await withListener(async (req) => {
    try {
      await req.arrayBuffer();
      return new Response("read");
    } catch (err) {
      seen = err;
      return new Response(null, { status: err instanceof ProxyError ? statusFor(err.kind) : 500 });
    }
  }, async (l) => {
    await using c = await client(l.port);
    const post = encodeFieldSection([
      [":method", "POST"],
      [":scheme", "https"],
      [":authority", "localhost"],
      [":path", "/up"],
    ]);
    const raw = Uint8Array.of(
      ...encodeFrame(FrameType.HEADERS, post),
      ...encodeFrame(FrameType.DATA, new Uint8Array(3)),
      ...encodeFrame(FrameType.HEADERS, encodeFieldSection([["x-big", "a".repeat(9000)]])),
    );
    const res = await c.request("/up", { raw });
    assert.ok(seen instanceof ProxyError, String(seen));
    assert.equal(seen.kind, "header_too_large");
    assert.equal(res.status, 431);
  });
});

Deno.test("startH3Listener answers 431 to an oversized HEADERS frame without reading it all", async () => {
  await withListener((_req, info) => {
    const status = info.refused ? statusFor(info.refused.kind) : 200;
    return Promise.resolve(new Response(null, { status }));
  }, async (l) => {
    await using c = await client(l.port);
    const s = await c.conn.createBidirectionalStream();
    const w = s.writable.getWriter();
    // A HEADERS frame declared at 1 GiB (max_field_section_size is 8192), its first KiB sent:
    // the answer is known now, and waiting for the rest would take a client's gigabyte (or,
    // from one that sends no more, hold the stream to request_header_timeout and answer nothing).
    await w.write(frameHeader(FrameType.HEADERS, 2 ** 30));
    await w.write(new Uint8Array(1024));
    const r = new StreamReader(s.readable);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      (async () => {
        assert.equal(await r.varint(), FrameType.HEADERS);
        const fields = decodeFieldSection(await r.exact((await r.varint())!))!;
        return fields.find(([k]) => k === ":status")?.[1];
      })(),
      new Promise<string>((res) => timer = setTimeout(() => res("no answer after 5 s"), 5000)),
    ]);
    clearTimeout(timer);
    await r.cancel();
    w.releaseLock();
    assert.equal(status, "431");
  });
});
