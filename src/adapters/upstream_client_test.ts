// The HTTP/1.1 upstream client against real servers: Deno.serve upstreams for ordinary traffic,
// raw TCP servers for what Deno.serve never sends (1xx, trailers, resets). A reused connection
// found closed, idle closes, aborts and the pool's queue are in upstream_client_pool_test.ts.
import assert from "node:assert/strict";
import { startUpstream } from "../../tests/_harness.ts";
import { createUpstreamClient } from "./upstream_client.ts";
import { WireResponse } from "../proxy/wire_response.ts";
import { BODY_BYTES, HEADROOM, RAW_BODY } from "../ports.ts";
import type { CountedResponse, RawBodied, Roomy } from "../ports.ts";
import {
  rawServer,
  readRequest,
  rejects,
  request,
  write,
  writeAll,
} from "../../tests/_upstream_peers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("upstream client sends headers as given, keeps the query and reuses the connection", async () => {
  const ports: number[] = [];
  await using up = await startUpstream((req, info) => {
    ports.push(info.remoteAddr.port);
    const u = new URL(req.url);
    return Response.json({ host: req.headers.get("host"), path: u.pathname + u.search });
  });
  const client = createUpstreamClient();
  try {
    for (let i = 0; i < 3; i++) {
      const res = await client.send(
        request(`${up.url}/a%20b/c?x=1&y=%2F&z`, { headers: { host: "example.test" } }),
      );
      assert.deepEqual(await res.json(), { host: "example.test", path: "/a%20b/c?x=1&y=%2F&z" });
    }
    assert.equal(new Set(ports).size, 1, "one keep-alive connection");
    assert.deepEqual(client.stats().map((s) => [s.open, s.idle]), [[1, 1]]);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client answers a lean request with WireResponses, buffered or streamed", async () => {
  await using up = await startUpstream((req) => {
    const path = new URL(req.url).pathname;
    // No length: the answer comes chunked, and is streamed.
    if (path === "/chunked") return new Response(new Blob(["ab", "cd"]).stream());
    const size = path === "/big" ? 40_000 : path === "/bigger" ? 70_000 : 0;
    return new Response(size ? "b".repeat(size) : "small");
  });
  const client = createUpstreamClient();
  try {
    for (
      const [path, raw, body] of [
        ["/small", true, "small"],
        // Up to oneChunkLimit (64 KiB) read whole for the engine.
        ["/big", true, "b".repeat(40_000)],
        ["/bigger", false, "b".repeat(70_000)],
        ["/chunked", false, "abcd"],
      ] as const
    ) {
      const res: unknown = await client.send(request(`${up.url}${path}`, { lean: true }));
      // No Fetch Response (whose Headers validate every field again) for the engine to write.
      assert.ok(!(res instanceof Response), path);
      assert.ok(res instanceof WireResponse, path);
      assert.equal((res as unknown as RawBodied)[RAW_BODY] !== undefined, raw, path);
      if (raw) {
        // Room for the head in front of the bytes, claimed once.
        const bytes = (res as unknown as RawBodied)[RAW_BODY]!;
        const room = (res as unknown as Roomy)[HEADROOM]!();
        assert.ok(room >= 512 && bytes.byteOffset >= room, path);
        assert.equal((res as unknown as Roomy)[HEADROOM]!(), 0, path);
      }
      assert.equal(await res.text(), body, path);
      assert.equal((res as unknown as Roomy)[HEADROOM]!(), 0, path);
    }
    // Not lean: Fetch Responses.
    assert.ok((await client.send(request(`${up.url}/chunked`))) instanceof Response);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client streams request bodies with Content-Length and chunked", async () => {
  await using up = await startUpstream(async (req) => {
    const body = new Uint8Array(await req.arrayBuffer());
    return new Response(body, { headers: { "x-te": req.headers.get("transfer-encoding") ?? "" } });
  });
  const client = createUpstreamClient();
  try {
    const fixed = await client.send(request(up.url, {
      method: "POST",
      headers: { "content-length": "5" },
      body: new Blob(["hello"]).stream(),
    }));
    assert.equal(fixed.headers.get("x-te"), "");
    assert.equal(await fixed.text(), "hello");
    const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
    const res = await client.send(request(up.url, {
      method: "PUT",
      body: new Blob([big, big]).stream(),
    }));
    assert.equal(res.headers.get("x-te"), "chunked");
    const got = new Uint8Array(await res.arrayBuffer());
    assert.equal(got.byteLength, big.byteLength * 2);
    assert.deepEqual(got.subarray(big.byteLength), big);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client sends a body given as bytes in the head's write, with its length", async () => {
  const firstReads: string[] = [];
  await using up = rawServer(async (c) => {
    const buf = new Uint8Array(65536);
    const n = await c.read(buf);
    if (n === null) return;
    firstReads.push(dec.decode(buf.subarray(0, n)));
    await writeAll(c, enc.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
  });
  const client = createUpstreamClient();
  try {
    // Without a Content-Length of its own, the client adds one: no chunked framing for bytes.
    const res = await client.send(request(up.url, {
      method: "POST",
      body: enc.encode("hello"),
    }));
    assert.equal(await res.text(), "ok");
    const [first] = firstReads;
    assert.match(first, /^POST \/ HTTP\/1\.1\r\n/);
    assert.match(first, /\r\ncontent-length: 5\r\n/);
    assert.doesNotMatch(first, /transfer-encoding/i);
    assert.ok(first.endsWith("\r\n\r\nhello"), `one read holds head and body: ${first}`);
    // A declared length that the bytes do not match is refused before anything is sent.
    const e = await rejects(
      client.send(request(up.url, {
        method: "POST",
        headers: { "content-length": "4" },
        body: enc.encode("hello"),
      })),
      "bad_request",
    );
    assert.ok(e.sentNothing);
    assert.equal(firstReads.length, 1);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client sends bytes bodies of any size intact on a reused connection", async () => {
  await using up = await startUpstream(async (req) => {
    const got = new Uint8Array(await req.arrayBuffer());
    return new Response(got, { headers: { "x-cl": req.headers.get("content-length") ?? "" } });
  });
  const client = createUpstreamClient();
  try {
    // In the connection's write buffer with the head, in one new buffer with it, and after it.
    for (const size of [10, 8 * 1024, 20 * 1024, 100 * 1024, 3]) {
      const body = new Uint8Array(size).map((_, i) => (i * 31 + size) & 0xff);
      const res = await client.send(request(up.url, { method: "POST", body }));
      assert.equal(res.headers.get("x-cl"), String(size));
      assert.deepEqual(new Uint8Array(await res.arrayBuffer()), body, `${size} bytes`);
    }
    assert.deepEqual(client.stats().map((s) => s.open), [1], "one connection for all");
  } finally {
    await client.close();
  }
});

Deno.test("upstream client passes gzip bytes and redirects through untouched", async () => {
  const gz = new Uint8Array(
    await new Response(
      new Blob(["hello hello hello"]).stream().pipeThrough(new CompressionStream("gzip")),
    ).arrayBuffer(),
  );
  await using up = await startUpstream((req) =>
    new URL(req.url).pathname === "/r"
      ? new Response(null, { status: 302, headers: { location: "/elsewhere" } })
      : new Response(gz, { headers: { "content-encoding": "gzip" } })
  );
  const client = createUpstreamClient();
  try {
    const res = await client.send(request(up.url, { headers: { "accept-encoding": "gzip" } }));
    assert.equal(res.headers.get("content-encoding"), "gzip");
    assert.deepEqual(new Uint8Array(await res.arrayBuffer()), gz);
    const r = await client.send(request(`${up.url}/r`));
    assert.equal(r.status, 302);
    assert.equal(r.headers.get("location"), "/elsewhere");
    await r.body?.cancel();
  } finally {
    await client.close();
  }
});

Deno.test("upstream client: HEAD, 204 and 304 have no body and keep the connection", async () => {
  const ports = new Set<number>();
  await using up = await startUpstream((req, info) => {
    ports.add(info.remoteAddr.port);
    const p = new URL(req.url).pathname;
    if (p === "/204") return new Response(null, { status: 204 });
    if (p === "/304") return new Response(null, { status: 304, headers: { etag: '"x"' } });
    return new Response("twelve bytes", { headers: { "content-length": "12" } });
  });
  const client = createUpstreamClient();
  try {
    const head = await client.send(request(up.url, { method: "HEAD" }));
    assert.equal(head.body, null);
    assert.equal(head.headers.get("content-length"), "12");
    assert.equal((await client.send(request(`${up.url}/204`))).body, null);
    const nm = await client.send(request(`${up.url}/304`));
    assert.equal(nm.status, 304);
    assert.equal(nm.body, null);
    assert.equal(await (await client.send(request(up.url))).text(), "twelve bytes");
    assert.equal(ports.size, 1);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client skips 1xx and decodes chunked bodies with extensions and trailers", async () => {
  await using srv = rawServer(async (c) => {
    while (await readRequest(c)) {
      await write(
        c,
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" +
          "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n" +
          "5;ext=1\r\nhello\r\n1\r\n \r\n",
      );
      await write(c, "5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n");
    }
  });
  const client = createUpstreamClient();
  try {
    for (let i = 0; i < 2; i++) {
      const res = await client.send(request(srv.url, { headers: { expect: "100-continue" } }));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("x-a"), "1");
      assert.equal(res.headers.get("transfer-encoding"), null);
      assert.equal(await res.text(), "hello world");
    }
    assert.deepEqual(client.stats().map((s) => s.open), [1]);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client streams server-sent events one by one", async () => {
  let release!: () => void;
  const second = new Promise<void>((r) => release = r);
  await using up = await startUpstream(() =>
    new Response(
      new ReadableStream({
        async start(ctl) {
          ctl.enqueue(enc.encode("data: one\n\n"));
          await second;
          ctl.enqueue(enc.encode("data: two\n\n"));
          ctl.close();
        },
      }),
      { headers: { "content-type": "text/event-stream" } },
    )
  );
  const client = createUpstreamClient();
  try {
    const res = await client.send(request(up.url));
    const reader = res.body!.getReader();
    assert.equal(dec.decode((await reader.read()).value), "data: one\n\n");
    release();
    assert.equal(dec.decode((await reader.read()).value), "data: two\n\n");
    assert.equal((await reader.read()).done, true);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client passes buffered chunks on together, and what arrived without waiting", async () => {
  const gate = Promise.withResolvers<void>();
  const letters = Array.from({ length: 20_000 }, (_, i) => String.fromCharCode(97 + i % 26));
  await using srv = rawServer(async (c) => {
    await readRequest(c);
    // 20,000 chunks of one byte in one write: was one chunk each for the client to write.
    const tiny = letters.map((l) => `1\r\n${l}\r\n`).join("");
    await write(c, `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${tiny}0\r\n\r\n`);
    await readRequest(c);
    await write(c, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nd");
    await gate.promise;
    await write(c, "e\r\n0\r\n\r\n");
  });
  const client = createUpstreamClient();
  try {
    const res = await client.send(request(srv.url));
    const reader = res.body!.getReader();
    let text = "";
    let reads = 0;
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      text += dec.decode(r.value);
      reads++;
    }
    assert.equal(text, letters.join(""));
    assert.ok(reads < 20, `${reads} chunks`);
    const next = await client.send(request(srv.url));
    const r2 = next.body!.getReader();
    // Chunks 3 and (part of) 2 have come: passed on before the rest of the second arrives.
    assert.equal(dec.decode((await r2.read()).value), "abcd");
    gate.resolve();
    assert.equal(dec.decode((await r2.read()).value), "e");
    assert.equal((await r2.read()).done, true);
  } finally {
    gate.resolve();
    await client.close();
  }
});

Deno.test("upstream client delivers a Content-Length body up to 64 KiB as one chunk; a larger one streams", async () => {
  const sizes = [48 * 1024, 100 * 1024];
  const gates = sizes.map(() => Promise.withResolvers<void>());
  await using srv = rawServer(async (c) => {
    for (let i = 0; await readRequest(c); i++) {
      const bytes = enc.encode(`HTTP/1.1 200 OK\r\ncontent-length: ${sizes[i]}\r\n\r\n`);
      const body = new Uint8Array(sizes[i]).fill(97);
      // The head and 40,000 body bytes now, the rest once the test has asked for a chunk.
      const head = new Uint8Array(bytes.length + 40_000);
      head.set(bytes);
      head.set(body.subarray(0, 40_000), bytes.length);
      await writeAll(c, head);
      await gates[i].promise;
      await writeAll(c, body.subarray(40_000));
    }
  });
  const client = createUpstreamClient();
  try {
    for (const [i, size] of sizes.entries()) {
      const res = await client.send(request(srv.url));
      const reader = res.body!.getReader();
      const first = reader.read();
      if (size <= 64 * 1024) {
        // Nothing may come before the whole body is there.
        gates[i].resolve();
        assert.equal((await first).value!.byteLength, size);
      } else {
        // Past the limit the first bytes come before the upstream sends the rest.
        const n = (await first).value!.byteLength;
        assert.ok(n > 0 && n <= 40_000, `first chunk ${n}`);
        gates[i].resolve();
        let total = n;
        for (let r = await reader.read(); !r.done; r = await reader.read()) {
          total += r.value.byteLength;
        }
        assert.equal(total, size);
        continue;
      }
      assert.equal((await reader.read()).done, true);
    }
    assert.deepEqual(client.stats().map((s) => s.open), [1]);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client takes up to 32 interim answers, not an endless run of them", async () => {
  const interim = (n: number) => "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n".repeat(n);
  await using srv = rawServer(async (c) => {
    for (let head; (head = await readRequest(c));) {
      const n = Number(head.split(" ")[1].slice(1));
      await write(c, interim(n) + "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    }
  });
  const client = createUpstreamClient();
  try {
    const res = await client.send(request(`${srv.url}/32`));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ok");
    const err = await rejects(client.send(request(`${srv.url}/33`)), "protocol");
    assert.match(err.message, /over 32 interim \(1xx\) responses/);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client maps refused, reset, timeouts and oversized heads to ProxyError", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = (l.addr as Deno.NetAddr).port;
  l.close();
  const client = createUpstreamClient({ maxHeaderBytes: 4096 });
  let stall!: () => void;
  const stalled = new Promise<void>((r) => stall = r);
  await using srv = rawServer(async (c) => {
    const head = await readRequest(c);
    const path = head?.split(" ")[1];
    if (path === "/reset") return;
    if (path === "/big") {
      await write(c, `HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(8000)}\r\n\r\n`);
    } else if (path === "/bad") await write(c, "HTTP/1.1 2x0 OK\r\n\r\n");
    else if (path === "/idle") {
      await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nab");
    }
    await stalled;
  });
  try {
    const refused = await rejects(client.send(request(`http://127.0.0.1:${deadPort}/`)), "connect");
    assert.equal(refused.sentNothing, true);
    assert.match(
      refused.message,
      /Cannot connect to upstream "http:\/\/127.0.0.1:\d+": connection refused/,
    );
    const reset = await rejects(client.send(request(`${srv.url}/reset`)), "upstream_reset");
    assert.equal(reset.sentNothing, false);
    await rejects(client.send(request(`${srv.url}/big`)), "protocol");
    await rejects(client.send(request(`${srv.url}/bad`)), "protocol");
    const timeouts = { connect: 1000, responseHeader: 100, idle: 100 };
    // Never before the limit: the shared ticker counts from its first look after the arm or the
    // last byte, so a timeout fires up to two ticks late, not early.
    let t0 = performance.now();
    await rejects(client.send(request(`${srv.url}/stall`, { timeouts })), "timeout");
    assert.ok(performance.now() - t0 >= 100, "not before timeouts.response_header");
    t0 = performance.now();
    const res = await client.send(request(`${srv.url}/idle`, { timeouts }));
    await rejects(res.text(), "timeout");
    assert.ok(performance.now() - t0 >= 100, "not before timeouts.idle");
    assert.deepEqual(client.stats(), []); // nothing open: both origins forgotten
  } finally {
    stall();
    await client.close();
  }
});

Deno.test("upstream client drops this hop's fields from responses and still honours Connection", async () => {
  let conns = 0;
  await using srv = rawServer(async (c) => {
    conns++;
    for (let i = 0; await readRequest(c); i++) {
      await write(
        c,
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: " +
          (i === 0 ? "X-Secret" : "close, x-secret") +
          "\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\nTE: trailers\r\nTrailer: x-sum\r\n" +
          "Upgrade: h2c\r\nProxy-Authenticate: Basic\r\nX-Keep: yes\r\nSet-Cookie: a=1\r\n" +
          "Set-Cookie: b=2\r\n\r\nok",
      );
    }
  });
  const client = createUpstreamClient();
  try {
    for (let i = 0; i < 3; i++) {
      const res = await client.send(request(srv.url));
      assert.deepEqual(
        [...res.headers],
        [["content-length", "2"], ["set-cookie", "a=1"], ["set-cookie", "b=2"], [
          "x-keep",
          "yes",
        ]],
      );
      assert.equal(await res.text(), "ok");
    }
    // The first connection served two requests (the second said close); the third needed a new one.
    assert.equal(conns, 2);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client drops a reason phrase Fetch rejects; a field Fetch rejects is a protocol error that frees the connection", async () => {
  let conns = 0;
  let answered = 0;
  await using srv = rawServer(async (c) => {
    conns++;
    // Counted across connections: one that sent a refused head is not used again.
    for (let i = answered; await readRequest(c); i = ++answered) {
      const bad = i === 1 ? "X-Bad: a\x00b\r\n" : "";
      // Content-Length over the client's 32 KiB read-whole limit: the body would stream.
      const big = i === 2 ? 40_000 : 2;
      await write(
        c,
        `HTTP/1.1 200 ${i === 0 ? "O\x01K" : "OK"}\r\nContent-Length: ${big}\r\n` +
          `${i === 2 ? "X-Bad: a\x00b\r\n" : bad}X-Keep: yes\r\n\r\n` + "k".repeat(big),
      );
    }
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1, queueTimeout: 2_000 });
  try {
    const res = await client.send(request(srv.url));
    assert.equal(res.status, 200);
    assert.equal(res.statusText, "");
    assert.equal(res.headers.get("x-keep"), "yes");
    assert.equal(await res.text(), "kk");
    const whole = await rejects(client.send(request(srv.url)), "protocol");
    assert.match(whole.message, /Invalid upstream response head/);
    const streamed = await rejects(client.send(request(srv.url)), "protocol");
    assert.match(streamed.message, /Invalid upstream response head/);
    // One connection allowed: a request after the failures gets one (not a queue timeout).
    assert.equal((await client.send(request(srv.url))).status, 200);
    assert.equal(conns, 3, "each failure closed its connection");
  } finally {
    await client.close();
  }
});

Deno.test("upstream client scans a head that arrives line by line once, not again per read", async () => {
  // Each read scanned the whole head so far for its end: a head trickled in N reads cost O(N²)
  // (15,000 short lines, one per read: 3.4 s of CPU for one 60 KB head).
  const lines = 2000;
  let looks = 0;
  let looked = Promise.withResolvers<void>();
  const indexOf = Uint8Array.prototype.indexOf;
  Object.defineProperty(Uint8Array.prototype, "indexOf", {
    configurable: true,
    writable: true,
    value: function (this: Uint8Array, ...a: [number, number?]) {
      looks++;
      looked.resolve();
      return indexOf.apply(this, a);
    },
  });
  await using srv = rawServer(async (c) => {
    await readRequest(c);
    await write(c, "HTTP/1.1 200 OK\r\n");
    for (let i = 0; i < lines; i++) {
      // The next line goes once the client has looked at what came so far: one read per line.
      looked = Promise.withResolvers<void>();
      await write(c, `x-${i}: v\r\n`);
      await looked.promise;
    }
    await write(c, "content-length: 2\r\n\r\nok");
  });
  const client = createUpstreamClient();
  try {
    const res = await client.send(request(`${srv.url}/`));
    assert.equal(res.headers.get(`x-${lines - 1}`), "v");
    assert.equal(await res.text(), "ok");
  } finally {
    delete (Uint8Array.prototype as { indexOf?: unknown }).indexOf;
    await client.close();
  }
  assert.equal(Uint8Array.prototype.indexOf, indexOf, "restored");
  assert.ok(looks < 10 * lines, `${looks} searches for ${lines} lines`);
});

Deno.test("upstream client takes a trailer field longer than a chunk-size line, within the trailers' limit", async () => {
  // A trailer line was held to a chunk-size line's 4 KiB when it came in more than one read: an
  // 8 KiB field (a long grpc-message, a signature) cut off a body that had arrived whole, though
  // the trailers' limit is 64 KiB (and the same line in one read passed).
  const long = "m".repeat(8_000);
  let gate = Promise.withResolvers<void>();
  await using srv = rawServer(async (c) => {
    for (let head; (head = await readRequest(c));) {
      const line = `x-long: ${"m".repeat(head.includes("/over") ? 70_000 : 8_000)}\r\n\r\n`;
      // The line in two parts, the second once the client has taken the body.
      await write(c, `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n`);
      await write(c, line.slice(0, 6_000));
      await gate.promise;
      await write(c, line.slice(6_000));
    }
  });
  const client = createUpstreamClient();
  try {
    const res = await client.send(request(`${srv.url}/`));
    const reader = res.body!.getReader();
    assert.equal(dec.decode((await reader.read()).value), "ok");
    gate.resolve();
    assert.equal((await reader.read()).done, true);
    const counted = (res as CountedResponse)[BODY_BYTES]!;
    assert.deepEqual(counted.trailers, [["x-long", long]]);
    // Past the trailers' limit, the body still ends in an error.
    gate = Promise.withResolvers<void>();
    gate.resolve();
    const over = await client.send(request(`${srv.url}/over`));
    const err = await rejects(over.text(), "protocol");
    assert.match(err.message, /trailer fields exceed 65536 bytes/);
  } finally {
    gate.resolve();
    await client.close();
  }
});

Deno.test("upstream client closes a connection whose answer it refused, as nginx does", async () => {
  // A status past 599, a control character in a value, a name Fetch refuses: each was a 502, yet
  // the connection went back to the pool, trusting the framing of a head found broken.
  const answers = [
    "HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nX Bad: ab\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 204 No Content\r\nX-Bad: a\x01b\r\n\r\n",
  ];
  let conns = 0;
  let sent = 0;
  await using srv = rawServer(async (c) => {
    conns++;
    // Each connection answers a good request first, then the next bad one.
    for (let i = 0; await readRequest(c); i++) {
      await write(c, i === 0 ? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" : answers[sent++]);
    }
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
  try {
    for (let i = 0; i < answers.length; i++) {
      assert.equal(await (await client.send(request(srv.url))).text(), "ok");
      const err = await rejects(client.send(request(srv.url)), "protocol");
      assert.match(err.message, /Invalid upstream|status 600/, `answer ${i}`);
      assert.equal(conns, i + 1, `answer ${i}: its connection was not reused`);
    }
  } finally {
    await client.close();
  }
});

Deno.test("upstream client looks for the end of a trickled chunk-size line only in what came", async () => {
  // Each read of a chunk-size line that came a byte at a time searched the rest of the
  // connection's buffer (16 KiB or more) past the bytes read: 16 KiB of work per byte.
  const line = "1;" + "e".repeat(2_000) + "\r\n";
  let scanned = 0;
  let looked = Promise.withResolvers<void>();
  const indexOf = Uint8Array.prototype.indexOf;
  Object.defineProperty(Uint8Array.prototype, "indexOf", {
    configurable: true,
    writable: true,
    value: function (this: Uint8Array, v: number, from = 0) {
      const at = indexOf.call(this, v, from);
      scanned += (at < 0 ? this.length : at + 1) - from; // the bytes it looked at
      looked.resolve();
      return at;
    },
  });
  const trickled = Promise.withResolvers<number>();
  await using srv = rawServer(async (c) => {
    await readRequest(c);
    await write(c, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n");
    await looked.promise;
    const before = scanned;
    for (const ch of line) {
      // The next byte goes once the client has looked at what came so far: one read per byte.
      looked = Promise.withResolvers<void>();
      await write(c, ch);
      await looked.promise;
    }
    trickled.resolve(scanned - before);
    await write(c, "x\r\n0\r\n\r\n");
  });
  const client = createUpstreamClient();
  try {
    const res = await client.send(request(`${srv.url}/`));
    assert.equal(await res.text(), "okx");
  } finally {
    delete (Uint8Array.prototype as { indexOf?: unknown }).indexOf;
    await client.close();
  }
  assert.equal(Uint8Array.prototype.indexOf, indexOf, "restored");
  const n = await trickled.promise;
  assert.ok(n < 64 * 1024 + 8 * line.length, `${n} bytes scanned for a ${line.length}-byte line`);
});

Deno.test("upstream client passes on an early answer to a large body given as bytes that the upstream stopped reading", async () => {
  // The upstream answers 413 after the head and closes without reading the body: the rest of the
  // write failed (a broken pipe) and the client got a 502 for it, where a streamed body (and
  // nginx) passes the 413 on.
  await using srv = rawServer(async (c) => {
    await readRequest(c);
    await write(c, "HTTP/1.1 413 Too Large\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbig");
  });
  const client = createUpstreamClient();
  try {
    const size = 16 * 1024 * 1024;
    const res = await client.send(
      request(srv.url, {
        method: "POST",
        body: new Uint8Array(size),
        headers: { "content-length": String(size) },
      }),
    );
    assert.equal(res.status, 413);
    assert.equal(await res.text(), "big");
  } finally {
    await client.close();
  }
});
