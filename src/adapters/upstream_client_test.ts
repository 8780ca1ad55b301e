// The HTTP/1.1 upstream client against real servers: Deno.serve upstreams for ordinary traffic,
// raw TCP servers for what Deno.serve never sends (1xx, trailers, resets, stale keep-alive).
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../../tests/_harness.ts";
import { ProxyError } from "../domain/errors.ts";
import type { UpstreamRequest, UpstreamTimeouts } from "../ports.ts";
import { createUpstreamClient } from "./upstream_client.ts";

const T: UpstreamTimeouts = { connect: 2_000, responseHeader: 5_000, idle: 5_000 };
const enc = new TextEncoder();
const dec = new TextDecoder();

function request(
  url: string,
  o: Partial<Omit<UpstreamRequest, "url" | "headers">> & { headers?: HeadersInit } = {},
): UpstreamRequest {
  const u = new URL(url);
  const headers = new Headers(o.headers);
  if (!headers.has("host")) headers.set("host", u.host);
  return { method: "GET", body: null, timeouts: T, ...o, url: u, headers };
}

/** A raw TCP server: `onConn` gets each accepted connection. Dispose to stop. */
function rawServer(onConn: (c: Deno.Conn, n: number) => Promise<void>) {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tasks: Promise<void>[] = [];
  const loop = (async () => {
    let n = 0;
    for await (const c of l) {
      tasks.push(
        onConn(c, n++).catch(() => {}).finally(() => {
          try {
            c.close();
          } catch { /* closed */ }
        }),
      );
    }
  })();
  return {
    url: `http://127.0.0.1:${(l.addr as Deno.NetAddr).port}`,
    async [Symbol.asyncDispose]() {
      l.close();
      await loop.catch(() => {});
      await Promise.all(tasks);
    },
  };
}

/** Reads from `c` until a full request head (and `bodyBytes` more) arrived. */
async function readRequest(c: Deno.Conn, bodyBytes = 0): Promise<string | null> {
  const buf = new Uint8Array(65536);
  let text = "";
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0 && text.length >= end + 4 + bodyBytes) return text;
    const n = await c.read(buf);
    if (n === null) return null;
    text += dec.decode(buf.subarray(0, n));
  }
}

const write = (c: Deno.Conn, s: string) => c.write(enc.encode(s));
async function writeAll(c: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await c.write(bytes.subarray(off));
}

async function rejects(p: Promise<unknown>, kind: string): Promise<ProxyError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ProxyError, `not a ProxyError: ${err}`);
    assert.equal(err.kind, kind, err.message);
    return err;
  }
  throw new Error(`expected a ${kind} error`);
}

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

Deno.test("upstream client retries once when a reused connection was closed", async () => {
  let conns = 0;
  await using srv = rawServer(async (c) => {
    conns++;
    // Answer the first request; take the second and close without a word (the keep-alive race).
    if (!(await readRequest(c))) return;
    await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    await readRequest(c);
  });
  const client = createUpstreamClient();
  try {
    assert.equal(await (await client.send(request(srv.url))).text(), "ok");
    assert.equal(await (await client.send(request(srv.url))).text(), "ok");
    assert.equal(conns, 2);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client notices an idle connection closed by the upstream", async () => {
  let conns = 0;
  const closed: Promise<void>[] = [];
  await using srv = rawServer(async (c) => {
    conns++;
    await readRequest(c);
    await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
  });
  const client = createUpstreamClient();
  try {
    assert.equal(await (await client.send(request(srv.url))).text(), "ok");
    await waitFor(() => client.stats().every((s) => s.idle === 0), { what: "idle close seen" });
    assert.equal(await (await client.send(request(srv.url))).text(), "ok");
    assert.equal(conns, 2);
    await Promise.all(closed);
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
    await rejects(client.send(request(`${srv.url}/stall`, { timeouts })), "timeout");
    const res = await client.send(request(`${srv.url}/idle`, { timeouts }));
    await rejects(res.text(), "timeout");
    assert.deepEqual(client.stats().map((s) => s.open), [0, 0]);
  } finally {
    stall();
    await client.close();
  }
});

/**
 * A raw server that reads each request and never answers, except that with `answerFirst` its first
 * connection gets a quick 200. `arrived` is set once a request reached a stalled connection.
 * Disposing it first releases the stalled handlers.
 */
function stallingServer(o: { answerFirst?: boolean } = {}) {
  const gate = Promise.withResolvers<void>();
  const state = { arrived: false };
  const srv = rawServer(async (c, n) => {
    await readRequest(c);
    if (o.answerFirst && n === 0) {
      await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
      return;
    }
    state.arrived = true;
    await gate.promise;
  });
  return {
    url: srv.url,
    arrived: () => state.arrived,
    async [Symbol.asyncDispose]() {
      gate.resolve();
      await srv[Symbol.asyncDispose]();
    },
  };
}

Deno.test("upstream client: an aborted request releases its connection", async () => {
  await using srv = stallingServer();
  const client = createUpstreamClient();
  try {
    const ac = new AbortController();
    const p = client.send(request(srv.url, { signal: ac.signal }));
    await waitFor(srv.arrived, { what: "request at upstream" });
    ac.abort();
    await rejects(p, "client_gone");
    assert.deepEqual(client.stats().map((s) => s.open), [0]);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client: a client signal is looked up only for a slow exchange, which it then aborts", async () => {
  await using srv = stallingServer({ answerFirst: true });
  const client = createUpstreamClient({ maxIdlePerUpstream: 0 });
  try {
    const ac = new AbortController();
    let lookups = 0;
    const clientSignal = () => {
      lookups++;
      return ac.signal;
    };
    // A quick exchange ends before a tick of the timer: the signal is never read.
    const res = await client.send(request(srv.url, { clientSignal }));
    assert.equal(await res.text(), "ok");
    assert.equal(lookups, 0);
    // A stalled one links it after a tick, and a client that leaves then frees the connection.
    const p = client.send(request(srv.url, { clientSignal }));
    await waitFor(() => srv.arrived() && lookups === 1, { what: "a late look-up of the signal" });
    ac.abort();
    await rejects(p, "client_gone");
    assert.deepEqual(client.stats().map((s) => s.open), [0]);
  } finally {
    await client.close();
  }
});

Deno.test("upstream pool: a queued request whose client already left is not queued", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  await using srv = rawServer(async (c) => {
    await readRequest(c);
    await gate;
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
  try {
    const first = client.send(request(srv.url));
    await waitFor(() => client.stats()[0]?.open === 1, { what: "the first request's connection" });
    await rejects(
      client.send(request(srv.url, { clientSignal: () => AbortSignal.abort() })),
      "client_gone",
    );
    assert.equal(client.stats()[0].queued, 0);
    release(); // the upstream closes without answering
    await rejects(first, "upstream_reset");
  } finally {
    release();
    await client.close();
  }
});

Deno.test("upstream pool queues first come first served and sheds past queue_limit", async () => {
  const gates: (() => void)[] = [];
  const order: string[] = [];
  await using up = await startUpstream(async (req) => {
    const id = new URL(req.url).pathname;
    order.push(id);
    await new Promise<void>((r) => gates.push(r));
    return new Response(id);
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1, queueLimit: 2 });
  try {
    const a = client.send(request(`${up.url}/a`));
    await waitFor(() => gates.length === 1);
    const b = client.send(request(`${up.url}/b`));
    const c = client.send(request(`${up.url}/c`));
    const shed = await rejects(client.send(request(`${up.url}/d`)), "overloaded");
    assert.equal(shed.sentNothing, true);
    assert.deepEqual(client.stats().map((s) => [s.open, s.queued]), [[1, 2]]);
    for (const p of [a, b, c]) {
      await waitFor(() => gates.length > 0);
      gates.shift()!();
      await (await p).text();
    }
    assert.deepEqual(order, ["/a", "/b", "/c"]);
  } finally {
    await client.close();
  }
});

Deno.test("upstream pool sheds a request that waited queue_timeout", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  await using up = await startUpstream(async () => {
    await gate;
    return new Response("x");
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1, queueTimeout: 50 });
  try {
    const first = client.send(request(up.url));
    await waitFor(() => client.stats()[0]?.open === 1);
    const err = await rejects(client.send(request(up.url)), "overloaded");
    assert.match(err.message, /within 50 ms/);
    release();
    await (await first).text();
  } finally {
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
  await using srv = rawServer(async (c) => {
    conns++;
    for (let i = 0; await readRequest(c); i++) {
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
    assert.ok(conns >= 2, "the streamed failure closed its connection");
  } finally {
    await client.close();
  }
});
