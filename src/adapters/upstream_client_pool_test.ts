// The upstream client's connections against real servers: a reused connection found closed, an
// idle one closed by the upstream, aborts, and the pool's first-come-first-served queue and
// shedding.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../../tests/_harness.ts";
import { createUpstreamClient } from "./upstream_client.ts";
import { rawServer, readRequest, rejects, request, write } from "../../tests/_upstream_peers.ts";

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

Deno.test("upstream client closes a connection idle for idle_timeout, not before, with or without the upstream's Keep-Alive timeout", async () => {
  const IDLE = 300;
  for (const keepAlive of ["", "keep-alive: timeout=60\r\n"]) {
    const closedAt = Promise.withResolvers<number>();
    await using srv = rawServer(async (c) => {
      await readRequest(c);
      await write(c, `HTTP/1.1 200 OK\r\n${keepAlive}content-length: 2\r\n\r\nok`);
      // The next read ends when Prox closes the parked connection.
      await readRequest(c);
      closedAt.resolve(performance.now());
    });
    const client = createUpstreamClient({ idleTimeout: IDLE });
    try {
      // Parked after this (once the answer came), and by the time send resolves: the body came
      // with the head. A clock read after the await can come late on a busy machine (298.5 ms
      // "idle" was seen), so the one before it bounds the idle time from below.
      const sent = performance.now();
      const res = await client.send(request(srv.url));
      assert.equal(await res.text(), "ok");
      assert.equal(client.stats()[0].idle, 1);
      const idleFor = (await closedAt.promise) - sent;
      assert.ok(idleFor >= IDLE - 1, `closed after ${idleFor.toFixed(1)} ms idle (${keepAlive})`);
      await waitFor(() => client.stats().length === 0, { what: "the closed connection let go" });
    } finally {
      await client.close();
    }
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
    assert.deepEqual(client.stats(), []); // released: nothing open, the origin forgotten
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
    assert.deepEqual(client.stats(), []); // released: nothing open, the origin forgotten
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

Deno.test("upstream pool: hold takes a connection place (a WebSocket's) that requests and other holds wait for", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1, queueLimit: 1 });
  try {
    // A ws: URL counts against its http: origin.
    const ws = { origin: new URL(up.url.replace("http:", "ws:")) };
    const release = client.hold(ws, undefined);
    assert.equal(typeof release, "function");
    assert.deepEqual(client.stats().map((s) => [s.open, s.queued, s.opened]), [[1, 0, 1]]);
    const waiting = client.send(request(up.url));
    await waitFor(() => client.stats()[0].queued === 1);
    const shed = await rejects(Promise.resolve(client.hold(ws, undefined)), "overloaded");
    assert.equal(shed.shed, "queue_full");
    (release as () => void)();
    (release as () => void)(); // once only
    assert.equal(await (await waiting).text(), "ok");
    assert.deepEqual(client.stats().map((s) => [s.open, s.idle, s.queued]), [[1, 1, 0]]);
    // At the limit, the idle connection makes room for the next hold.
    const next = client.hold(ws, undefined);
    assert.deepEqual(client.stats().map((s) => [s.open, s.idle]), [[1, 0]]);
    (next as () => void)();
    assert.deepEqual(client.stats(), []);
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
    const t0 = performance.now();
    const err = await rejects(client.send(request(up.url)), "overloaded");
    assert.match(err.message, /within 50 ms/);
    assert.ok(performance.now() - t0 >= 49, "not before queue_timeout");
    assert.equal(client.stats()[0].queued, 0);
    release();
    await (await first).text();
  } finally {
    await client.close();
  }
});

Deno.test("upstream client forgets an origin once it has no connection left (no idle sweep needed)", async () => {
  // Connection: close answers (never parked) and refused connects: neither leaves an idle
  // connection behind, so the idle sweep never runs for these origins.
  const servers = Array.from({ length: 3 }, () =>
    rawServer(async (c) => {
      await readRequest(c);
      await write(c, "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok");
    }));
  const refused = servers.map(() => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const url = `http://127.0.0.1:${(l.addr as Deno.NetAddr).port}`;
    l.close();
    return url;
  });
  const client = createUpstreamClient();
  try {
    for (const s of servers) assert.equal(await (await client.send(request(s.url))).text(), "ok");
    for (const url of refused) await assert.rejects(client.send(request(url)));
    assert.deepEqual(client.stats(), []);
  } finally {
    await client.close();
    for (const s of servers) await s[Symbol.asyncDispose]();
  }
});

Deno.test("upstream client: bytes past a Content-Length never answer the next request", async () => {
  // An exact-size read of the body's end left them in the socket; the connection went to the
  // waiting request, which took them for its response (and every later one was off by one).
  const stray = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nPOISON";
  let gate = Promise.withResolvers<void>();
  await using srv = rawServer(async (c) => {
    for (let head = await readRequest(c); head !== null; head = await readRequest(c)) {
      const size = Number(head.slice(5, head.indexOf(" HTTP/")));
      if (size === 0) {
        await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood");
        continue;
      }
      await gate.promise;
      // One write: the stray response is already there when the body's end is read.
      await write(
        c,
        `HTTP/1.1 200 OK\r\ncontent-length: ${size}\r\n\r\n${"x".repeat(size)}${stray}`,
      );
    }
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
  try {
    // Read whole (≤ 32 KiB), read into one chunk (≤ 64 KiB), streamed.
    for (const size of [20_000, 40_000, 100_000]) {
      gate = Promise.withResolvers<void>();
      const first = client.send(request(`${srv.url}/${size}`));
      const next = client.send(request(`${srv.url}/0`));
      await waitFor(() => client.stats()[0]?.queued === 1, { what: "second request waiting" });
      gate.resolve();
      assert.equal((await (await first).text()).length, size);
      assert.equal(await (await next).text(), "good", `after ${size} bytes`);
    }
  } finally {
    await client.close();
  }
});

Deno.test("upstream client: a connection answered before the request body went out is not reused", async () => {
  // An upstream that answers each head at once, reading no body: a body sent after its answer to
  // the POST was taken for a request, whose response then went to the request queued next.
  const inner = "GET /inner HTTP/1.1\r\nhost: a\r\n\r\n";
  await using srv = rawServer(async (c) => {
    let pending = "";
    const buf = new Uint8Array(65536);
    for (;;) {
      while (!pending.includes("\r\n\r\n")) {
        const n = await c.read(buf);
        if (n === null) return;
        pending += new TextDecoder().decode(buf.subarray(0, n));
      }
      const end = pending.indexOf("\r\n\r\n") + 4;
      const path = pending.slice(pending.indexOf(" ") + 1, pending.indexOf(" HTTP/"));
      pending = pending.slice(end);
      await write(c, `HTTP/1.1 200 OK\r\ncontent-length: ${path.length}\r\n\r\n${path}`);
    }
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
  try {
    const body = new TransformStream<Uint8Array, Uint8Array>();
    const writer = body.writable.getWriter();
    const res = await client.send(request(`${srv.url}/upload`, {
      method: "POST",
      body: body.readable,
      headers: { "content-length": String(inner.length) },
    }));
    assert.equal(await res.text(), "/upload");
    // Sent while the upload is open: it waited for the connection (and now gets one of its own).
    const next = client.send(request(`${srv.url}/next`));
    await writer.write(new TextEncoder().encode(inner)).catch(() => {});
    await writer.close().catch(() => {});
    assert.equal(await (await next).text(), "/next");
  } finally {
    await client.close();
  }
});

Deno.test("upstream client: an upload still open when its response has ended frees the connection", async () => {
  // The upload went on being read for a response already complete: a client that kept it open
  // (an upstream answering 401 at once) held the connection and its pool slot for good.
  await using srv = rawServer(async (c) => {
    for (let head = await readRequest(c); head !== null; head = await readRequest(c)) {
      await write(c, "HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope");
    }
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1, queueTimeout: 2_000 });
  try {
    const body = new TransformStream<Uint8Array, Uint8Array>();
    const res = await client.send(request(`${srv.url}/upload`, {
      method: "POST",
      body: body.readable,
      headers: { "content-length": "1000000" },
    }));
    assert.equal(await res.text(), "nope");
    const next = await client.send(request(`${srv.url}/next`));
    assert.equal(next.status, 401);
    await next.body?.cancel();
    await assert.rejects(body.writable.getWriter().write(new Uint8Array(1)));
  } finally {
    await client.close();
  }
});

Deno.test("upstream client: a connection the upstream closed after answering is not handed to a waiter", async () => {
  // A server may close after any response without saying so (RFC 9112 §9.6). The connection went
  // straight to the request waiting for it, which met the close: a POST failed (not retried).
  let gate = Promise.withResolvers<void>();
  await using srv = rawServer(async (c) => {
    await readRequest(c, 5);
    await gate.promise;
    await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
  const post = () =>
    client.send(request(srv.url, {
      method: "POST",
      body: new TextEncoder().encode("hello"),
      headers: { "content-length": "5" },
    }));
  try {
    for (let round = 0; round < 3; round++) {
      gate = Promise.withResolvers<void>();
      const first = post();
      const second = post();
      await waitFor(() => client.stats()[0]?.queued === 1, { what: "second request waiting" });
      gate.resolve();
      assert.equal(await (await first).text(), "ok");
      assert.equal(await (await second).text(), "ok");
    }
  } finally {
    await client.close();
  }
});

Deno.test("upstream client: the retry after a closed reused connection waits for a new one", async () => {
  // Each connection answers one request and closes on the next without a word. The retry was
  // handed the connection another request had just used: closed too, and the request failed.
  await using srv = rawServer(async (c) => {
    if (!(await readRequest(c))) return;
    await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    await readRequest(c);
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
  try {
    assert.equal(await (await client.send(request(srv.url))).text(), "ok");
    const retried = client.send(request(srv.url)); // meets the close, retries
    const queued = client.send(request(srv.url)); // waits; then takes the slot first
    assert.equal(await (await queued).text(), "ok");
    assert.equal(await (await retried).text(), "ok");
  } finally {
    await client.close();
  }
});

Deno.test("upstream client sends a non-idempotent request once, even on a reused connection closed unanswered", async () => {
  // The upstream read the POST and closed without a word: it may have acted on it (RFC 9112
  // §9.3.1), and a proxy must not retry a non-idempotent request (RFC 9110 §9.2.2). The POST was
  // sent again on a new connection. A GET is still sent again, and so is a request the upstream
  // closed on before it could be written.
  const seen: string[] = [];
  await using srv = rawServer(async (c) => {
    for (let head = await readRequest(c); head !== null; head = await readRequest(c)) {
      const method = head.slice(0, head.indexOf(" "));
      seen.push(method);
      if (seen.length % 2 === 0) return; // every second request: taken, then the close
      await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    }
  });
  const client = createUpstreamClient();
  try {
    assert.equal(await (await client.send(request(srv.url))).text(), "ok");
    const err = await rejects(client.send(request(srv.url, { method: "POST" })), "upstream_reset");
    assert.equal(err.staleConnection, true, "a reused connection: forward() decides on a retry");
    assert.deepEqual(seen, ["GET", "POST"]);
    assert.equal(await (await client.send(request(srv.url))).text(), "ok");
    assert.equal(await (await client.send(request(srv.url, { method: "DELETE" }))).text(), "ok");
    assert.deepEqual(seen, ["GET", "POST", "GET", "DELETE", "DELETE"]);
  } finally {
    await client.close();
  }
});

Deno.test("upstream pool: onConnection tells a request that waited for a connection when it has one", async () => {
  const gates: (() => void)[] = [];
  await using up = await startUpstream(async (req) => {
    await new Promise<void>((r) => gates.push(r));
    return new Response(new URL(req.url).pathname);
  });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
  try {
    const told: string[] = [];
    const a = client.send(request(`${up.url}/a`, { onConnection: () => told.push("a") }));
    await waitFor(() => gates.length === 1);
    const b = client.send(request(`${up.url}/b`, { onConnection: () => told.push("b") }));
    await waitFor(() => client.stats()[0]?.queued === 1);
    assert.deepEqual(told, [], "a had a connection at once; b is still waiting");
    gates.shift()!();
    assert.equal(await (await a).text(), "/a");
    await waitFor(() => gates.length === 1);
    assert.deepEqual(told, ["b"]);
    gates.shift()!();
    assert.equal(await (await b).text(), "/b");
  } finally {
    await client.close();
  }
});

Deno.test("upstream client closes a reused connection the upstream closed after taking the request", async () => {
  // The close reached the read kept pending since the connection was parked after it was handed
  // out again: that marked it dead without closing it, and fail() closes only a live one, so the
  // socket stayed open (one descriptor per stale connection met, with the upstream in CLOSE_WAIT).
  let conns = 0;
  const seenClosed = Promise.withResolvers<boolean>();
  await using srv = rawServer(async (c) => {
    if (conns++ > 0) {
      await readRequest(c);
      await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
      return;
    }
    await readRequest(c);
    await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    // Takes the second request, then ends its side (its idle timeout, just then).
    await readRequest(c);
    await (c as Deno.TcpConn).closeWrite();
    // Prox closing its side ends this read; a descriptor left open keeps it waiting.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      c.read(new Uint8Array(16)).then((n) => n === null, () => true),
      new Promise<false>((r) => timer = setTimeout(() => r(false), 2_000)),
    ]);
    clearTimeout(timer);
    seenClosed.resolve(closed);
  });
  const client = createUpstreamClient();
  try {
    assert.equal(await (await client.send(request(srv.url))).text(), "ok");
    // Found closed: sent once more on a new connection.
    assert.equal(await (await client.send(request(srv.url))).text(), "ok");
    assert.equal(conns, 2);
    assert.equal(await seenClosed.promise, true, "Prox closed the stale connection");
  } finally {
    await client.close();
  }
});

Deno.test("upstream client does not send again a request the upstream answered with an interim response before closing", async () => {
  // A 100 or 103 says the request arrived: a close after it is no stale keep-alive connection but
  // a failure while answering (a crash), and the GET was sent again, after the 103's fields had
  // gone to the client, as if nothing had been received (the buffer, emptied, looked unread).
  for (const interim of ["100 Continue", "103 Early Hints\r\nlink: </a.css>; rel=preload"]) {
    let seen = 0;
    await using srv = rawServer(async (c) => {
      for (let head = await readRequest(c); head !== null; head = await readRequest(c)) {
        if (++seen % 2 === 1) await write(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        else return void await write(c, `HTTP/1.1 ${interim}\r\n\r\n`);
      }
    });
    const client = createUpstreamClient();
    try {
      assert.equal(await (await client.send(request(srv.url))).text(), "ok");
      const err = await rejects(client.send(request(srv.url)), "upstream_reset");
      assert.equal(err.staleConnection, false, interim);
      assert.equal(seen, 2, `${interim}: sent once`);
    } finally {
      await client.close();
    }
  }
});
