// Prox's own HTTP/1.1 engine (src/adapters/h1/) at the edges of HTTP/1.1 (RFC 9112), sent as raw
// bytes: what the client gets, and that nothing it should not reaches the upstream.
import assert from "node:assert/strict";
import { rawServer, readRequest } from "../_upstream_peers.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { rawExchange, readFrom } from "./_raw_client.ts";

const enc = new TextEncoder();

// These tests are of the engine itself, even when the suite runs on Deno.serve.
onProxEngines();

/** An upstream that keeps each request head in `heads` and answers "ok" on a kept connection. */
function headsUpstream(heads: string[]) {
  return rawServer(async (c) => {
    for (;;) {
      const head = await readRequest(c);
      if (head === null) return;
      heads.push(head);
      await c.write(enc.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
    }
  });
}

function engineProxy(target: string) {
  return startProxy(`
protocols: { http1_engine: prox }
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${target}" }
`);
}

Deno.test("only a connection's first bytes can be the HTTP/2 preface; a PRI request later or unlike it is a 400", async () => {
  const heads: string[] = [];
  await using up = headsUpstream(heads);
  await using prox = await engineProxy(up.url);
  // The engine took any head beginning "PRI *" for h2c with prior knowledge and answered an
  // HTTP/1.1 client in HTTP/2 frames, even after it had served it HTTP/1.1 requests. The preface
  // begins a connection (RFC 9113 §3.3); any other PRI request is Deno.serve's 400, as with
  // http1_engine: deno.
  const cases = [
    "PRI * HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "PRI *x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "GET /first HTTP/1.1\r\nHost: a.test\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
  ];
  for (const text of cases) {
    const out = await rawExchange(prox.port, text, /HTTP\/1\.1 400 /, 5_000);
    assert.match(out, /^(HTTP\/1\.1 200 OK\r\n[^]*?ok)?HTTP\/1\.1 400 /, JSON.stringify(text));
  }
  assert.deepEqual(heads.map((h) => h.slice(0, h.indexOf("\r\n"))), ["GET /first HTTP/1.1"]);
  // The preface as a connection's first bytes is still HTTP/2 (a SETTINGS frame comes back),
  // however it is split.
  for (const split of [24, 5, 3]) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    try {
      const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
      await c.write(enc.encode(preface.slice(0, split)));
      if (split < 24) {
        await new Promise((r) => setTimeout(r, 20));
        await c.write(enc.encode(preface.slice(split)));
      }
      const buf = new Uint8Array(9);
      let n = 0;
      while (n < 9) {
        const got = await c.read(buf.subarray(n));
        assert.ok(got !== null, `closed after ${n} bytes (split at ${split})`);
        n += got;
      }
      assert.equal(buf[3], 4, `a SETTINGS frame (split at ${split})`);
    } finally {
      c.close();
    }
  }
});

Deno.test("a relayed request that Deno.serve refuses while its body still comes gets the refusal, not a reset", async () => {
  const heads: string[] = [];
  await using up = headsUpstream(heads);
  await using prox = await engineProxy(up.url);
  // Deno.serve answers a transfer coding it does not know (501) and closes its connection while
  // the body still comes. The relay took the failed write towards it for both sides failing and
  // closed the client's connection before Deno.serve's answer was passed on: the client got
  // nothing, where with http1_engine: deno it gets the 501.
  for (let i = 0; i < 3; i++) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    const head = "POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    const sending = (async () => {
      await c.write(enc.encode(head));
      const chunk = new Uint8Array(64 * 1024).fill(120);
      for (let sent = 0; sent < 8 << 20;) sent += await c.write(chunk);
    })().catch(() => {});
    try {
      const out = await readFrom(c, /\r\n\r\n/);
      assert.match(out, /^HTTP\/1\.1 501 /, `attempt ${i}: ${JSON.stringify(out)}`);
    } finally {
      c.close();
      await sending;
    }
  }
  assert.equal(heads.length, 0);
});

Deno.test("an HTTP/1.1 request without Host gets 400 and reaches no upstream; HTTP/1.0 needs none", async () => {
  const heads: string[] = [];
  await using up = headsUpstream(heads);
  await using prox = await engineProxy(up.url);
  // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host. The engine
  // relayed it to Deno.serve, which made up `localhost:<port>` and proxied it.
  for (
    const text of [
      "GET /none HTTP/1.1\r\n\r\n",
      "POST /none HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
      "GET /ok HTTP/1.1\r\nHost: a.test\r\n\r\nGET /none HTTP/1.1\r\nX-A: 1\r\n\r\n",
    ]
  ) {
    const out = await rawExchange(prox.port, text, undefined, 5_000);
    assert.match(
      out,
      /^(HTTP\/1\.1 200 OK\r\n[^]*?ok)?HTTP\/1\.1 400 Bad Request\r\n[^]*connection: close\r\n\r\n$/,
      JSON.stringify(text),
    );
  }
  // A head the engine relays to Deno.serve (a bare LF, an odd Content-Length, another Expect, an
  // absolute-form target), or a request on a connection relayed earlier, went upstream with the
  // made-up `localhost:<port>` as its host: refused there too.
  for (
    const text of [
      "GET /none HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n",
      "POST /none HTTP/1.1\r\nContent-Length: 005\r\n\r\nhello",
      "GET /none HTTP/1.1\r\nExpect: tea\r\n\r\n",
      "GET http://b.test/none HTTP/1.1\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: a.test\r\nX-A: 1\nX-B: 2\r\n\r\nGET /none HTTP/1.1\r\n\r\n",
    ]
  ) {
    const out = await rawExchange(prox.port, text, /HTTP\/1\.1 400 [^]*request id: \S+\n/, 5_000);
    assert.match(
      out,
      /^(HTTP\/1\.1 200 OK\r\n[^]*?ok)?HTTP\/1\.1 400 Bad Request\r\n/,
      `${JSON.stringify(text)}: ${out}`,
    );
  }
  const out = await rawExchange(prox.port, "GET /old HTTP/1.0\r\n\r\n");
  assert.match(out, /^HTTP\/1\.[01] 200 /);
  // Relayed, too: HTTP/1.0 has no Host.
  const relayed = await rawExchange(prox.port, "GET /old2 HTTP/1.0\r\nX-A: 1\nX-B: 2\r\n\r\n");
  assert.match(relayed, /^HTTP\/1\.[01] 200 /);
  // So is one after the empty line an old client sends after a request (RFC 9112 §2.2), which the
  // engine relays: the connection still speaks HTTP/1.0.
  const ka = "Connection: keep-alive\r\n";
  const after = await rawExchange(
    prox.port,
    `GET /old3 HTTP/1.0\r\nHost: a.test\r\n${ka}\r\n\r\nGET /old4 HTTP/1.0\r\n\r\n`,
    undefined,
    5_000,
  );
  assert.match(after, /^HTTP\/1\.[01] 200 [^]*ok\s*HTTP\/1\.[01] 200 [^]*ok$/, after);
  assert.deepEqual(heads.map((h) => h.slice(0, h.indexOf("\r\n"))), [
    "GET /ok HTTP/1.1",
    "GET /ok HTTP/1.1",
    "GET /old HTTP/1.1",
    "GET /old2 HTTP/1.1",
    "GET /old3 HTTP/1.1",
    "GET /old4 HTTP/1.1",
  ]);
});

Deno.test("a request of a later HTTP/1 minor version is served as HTTP/1.1", async () => {
  const heads: string[] = [];
  await using up = headsUpstream(heads);
  await using prox = await engineProxy(up.url);
  // RFC 9110 §2.5: a recipient SHOULD process a message of a higher minor version as the highest
  // minor version it implements. Both engines answered HTTP/1.2 with 400.
  const out = await rawExchange(
    prox.port,
    "GET /two HTTP/1.2\r\nHost: a.test\r\n\r\n" +
      "POST /nine HTTP/1.9\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n" +
      "GET /last HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
  );
  assert.equal(out.match(/HTTP\/1\.1 200 OK\r\n/g)?.length, 3, out);
  assert.deepEqual(heads.map((h) => h.slice(0, h.indexOf("\r\n"))), [
    "GET /two HTTP/1.1",
    "POST /nine HTTP/1.1",
    "GET /last HTTP/1.1",
  ]);
  // Two digits are no minor version (RFC 9112 §2.3): still a 400.
  assert.match(
    await rawExchange(prox.port, "GET /ten HTTP/1.10\r\nHost: a.test\r\n\r\n"),
    /^HTTP\/1\.1 400 /,
  );
});

Deno.test("a request line of another major HTTP version gets 505", async () => {
  const heads: string[] = [];
  await using up = headsUpstream(heads);
  await using prox = await engineProxy(up.url);
  // RFC 9110 §15.6.6: 505 is the answer to a major version the server does not support. Both
  // engines answered 400, as to a malformed head.
  for (
    const text of [
      "GET /v HTTP/2.0\r\nHost: a.test\r\n\r\n",
      "GET /v HTTP/3.0\r\nHost: a.test\r\n\r\n",
      "GET http://a.test/v HTTP/2.0\r\nHost: a.test\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: a.test\r\n\r\nGET /v HTTP/2.0\r\nHost: a.test\r\n\r\n",
    ]
  ) {
    const out = await rawExchange(prox.port, text, undefined, 5_000);
    assert.match(
      out,
      /^(HTTP\/1\.1 200 OK\r\n[^]*?ok)?HTTP\/1\.1 505 HTTP Version Not Supported\r\n[^]*connection: close\r\n\r\n$/,
      JSON.stringify(text),
    );
  }
  assert.deepEqual(heads.map((h) => h.slice(0, h.indexOf("\r\n"))), ["GET /ok HTTP/1.1"]);
  // The HTTP/2 preface that begins a connection is still HTTP/2 (the first test above).
});

Deno.test("a head over the engine's limits gets 431, a request line over it 414", async () => {
  const heads: string[] = [];
  await using up = headsUpstream(heads);
  await using prox = await engineProxy(up.url);
  // RFC 9110 §15.5.15 and RFC 6585 §5: both engines answered a bare 400 to a head of more than 64
  // KiB or 128 field lines, as to a malformed one.
  const many = Array.from({ length: 130 }, (_, i) => `X-${i}: ${i}\r\n`).join("");
  const big = Array.from({ length: 20 }, (_, i) => `X-${i}: ${"v".repeat(4000)}\r\n`).join("");
  const cases: [string | string[], number][] = [
    [`GET /many HTTP/1.1\r\nHost: a.test\r\n${many}\r\n`, 431],
    // The same head a few bytes at a time, as HeadScan sees it.
    [
      [`GET /many HTTP/1.1\r\nHost: a.test\r\n${many.slice(0, 500)}`, `${many.slice(500)}\r\n`],
      431,
    ],
    [`GET /big HTTP/1.1\r\nHost: a.test\r\n${big}\r\n`, 431],
    [`GET /${"u".repeat(70_000)} HTTP/1.1\r\nHost: a.test\r\n\r\n`, 414],
  ];
  for (const [text, status] of cases) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
    try {
      for (const part of typeof text === "string" ? [text] : text) {
        await c.write(enc.encode(part));
        await new Promise((r) => setTimeout(r, 10));
      }
      const out = await readFrom(c);
      assert.match(out, new RegExp(`^HTTP/1\\.1 ${status} [^]*connection: close\\r\\n\\r\\n$`));
    } finally {
      c.close();
    }
  }
  // 128 field lines and a head just under 64 KiB are served.
  const fields = Array.from({ length: 125 }, (_, i) => `X-${i}: ${i}\r\n`).join("");
  const ok = await rawExchange(
    prox.port,
    `GET /fine HTTP/1.1\r\nHost: a.test\r\n${fields}X-P: ${"p".repeat(60_000)}\r\n` +
      "Connection: close\r\n\r\n",
  );
  assert.match(ok, /^HTTP\/1\.1 200 /);
  assert.deepEqual(heads.map((h) => h.slice(0, h.indexOf("\r\n"))), ["GET /fine HTTP/1.1"]);
});

Deno.test("a POST with Upgrade: h2c (curl --http2 -d over plain HTTP) is served over HTTP/1.1", async () => {
  // Deno.serve answers such a request a bare 400, and the engine relayed it there: curl --http2
  // with a body failed against Prox where nginx serves it (RFC 9110 §7.8: a server may ignore
  // Upgrade). The engine ignores the Upgrade of any method but GET; nothing of it goes upstream.
  const seen: string[] = [];
  await using up = rawServer(async (c) => {
    // A head, then the body its Content-Length says.
    let got = "";
    const buf = new Uint8Array(4096);
    for (;;) {
      const end = got.indexOf("\r\n\r\n");
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(got)?.[1] ?? 0);
      if (end >= 0 && got.length >= end + 4 + length) break;
      const n = await c.read(buf);
      if (n === null) return;
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    seen.push(got);
    await c.write(
      enc.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"),
    );
  });
  await using prox = await engineProxy(up.url);
  const h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" +
    "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n";
  const out = await rawExchange(
    prox.port,
    `POST /form HTTP/1.1\r\nHost: a.test\r\n${h2c}Content-Length: 5\r\n\r\nhello` +
      "GET /next HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
  );
  assert.match(out, /^HTTP\/1\.1 200 OK\r\n[^]*?\r\n\r\nokHTTP\/1\.1 200 OK\r\n/);
  assert.doesNotMatch(out, /101 Switching/);
  assert.match(seen[0], /^POST \/form HTTP\/1\.1\r\n/);
  assert.ok(seen[0].endsWith("\r\n\r\nhello"), seen[0]);
  assert.doesNotMatch(seen[0], /upgrade|http2-settings|connection/i);
});

Deno.test("a chunked body of many tiny chunks goes upstream in few chunks, not one per chunk", async () => {
  // The engine handed on each chunk's data as a piece of its own, and each went upstream as a chunk
  // of its own in a write of its own: a client sending 1-byte chunks (6 bytes each on the wire)
  // cost about 25 times the CPU of the same body in one chunk. The data of the chunks that came
  // in one read now goes on as one piece.
  const count = 100_000;
  const got: { chunks: number; data: number }[] = [];
  await using up = rawServer(async (c) => {
    let text = "";
    const buf = new Uint8Array(65536);
    while (!text.endsWith("\r\n0\r\n\r\n")) {
      const n = await c.read(buf);
      if (n === null) return;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    // The body's chunks, decoded (its data is all "a", so the last chunk is where it ends).
    let at = text.indexOf("\r\n\r\n") + 4;
    const seen = { chunks: 0, data: 0 };
    for (;;) {
      const line = text.indexOf("\r\n", at);
      const size = parseInt(text.slice(at, line), 16);
      if (size === 0) break;
      seen.chunks++;
      seen.data += size;
      at = line + 2 + size + 2;
    }
    got.push(seen);
    await c.write(
      enc.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"),
    );
  });
  await using prox = await engineProxy(up.url);
  const out = await rawExchange(
    prox.port,
    "POST /tiny HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
      "1\r\na\r\n".repeat(count) + "0\r\n\r\n",
  );
  assert.match(out, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(got.length, 1);
  assert.equal(got[0].data, count, "every byte of data arrived");
  assert.ok(got[0].chunks < count / 50, `${got[0].chunks} chunks upstream`);
});
