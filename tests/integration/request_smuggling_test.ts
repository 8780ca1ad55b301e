// Request smuggling attempts (RFC 9112 §6.3, §11.2) on raw sockets, on whichever HTTP/1.1 engine
// the suite runs (PROX_H1_ENGINE): each hides a request for /smuggled where a parser that reads
// the framing another way would find one. What a recording upstream received on the wire must be
// exactly the requests Prox took, each framed by one Content-Length or Transfer-Encoding.
import assert from "node:assert/strict";
import { rawServer } from "../_upstream_peers.ts";
import { startProxy } from "./_proxy.ts";
import { rawExchange } from "./_raw_client.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** One request an upstream received: its line, fields as sent (lowercase names) and body. */
interface Got {
  line: string;
  fields: [string, string][];
  body: string;
}

/** A raw upstream that reads requests framed by Content-Length or chunked and answers "ok". */
function recordingUpstream() {
  const seen: Got[] = [];
  const server = rawServer(async (c) => {
    let buf = "";
    const chunk = new Uint8Array(65536);
    const more = async () => {
      const n = await c.read(chunk);
      if (n === null) return false;
      buf += dec.decode(chunk.subarray(0, n));
      return true;
    };
    for (;;) {
      let end;
      while ((end = buf.indexOf("\r\n\r\n")) < 0) if (!await more()) return;
      const lines = buf.slice(0, end).split("\r\n");
      buf = buf.slice(end + 4);
      const fields = lines.slice(1).map((l): [string, string] => {
        const colon = l.indexOf(":");
        return [l.slice(0, colon).toLowerCase(), l.slice(colon + 1).trim()];
      });
      const get = (n: string) => fields.find(([k]) => k === n)?.[1];
      let body = "";
      if (get("transfer-encoding") === "chunked") {
        for (;;) {
          let lf;
          while ((lf = buf.indexOf("\r\n")) < 0) if (!await more()) return;
          const size = parseInt(buf.slice(0, lf), 16);
          while (buf.length < lf + 2 + size + 2) if (!await more()) return;
          body += buf.slice(lf + 2, lf + 2 + size);
          buf = buf.slice(lf + 2 + size + 2);
          if (size === 0) break;
        }
      } else {
        const length = Number(get("content-length") ?? 0);
        while (buf.length < length) if (!await more()) return;
        body = buf.slice(0, length);
        buf = buf.slice(length);
      }
      seen.push({ line: lines[0], fields, body });
      await c.write(enc.encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
    }
  });
  return { server, seen };
}

const SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n";
const AFTER = "GET /after HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
const post = (fields: string[], body: string, version = "HTTP/1.1") =>
  `POST /p ${version}\r\nHost: a.test\r\n${fields.map((f) => f + "\r\n").join("")}\r\n${body}`;
/** A chunked body of "hello" with the smuggled request after its end. */
const CHUNKED = "5\r\nhello\r\n0\r\n\r\n" + SMUGGLED;

/**
 * The attempts: what the client sends (then AFTER, on the same connection) and the request lines
 * the upstream may see. None may be /smuggled.
 */
const REFUSED: [string, string][] = [
  // RFC 9112 §6.3 (3): both framings is an error here (a server MAY refuse it, and must close).
  ["TE and CL", post(["Transfer-Encoding: chunked", `Content-Length: ${CHUNKED.length}`], CHUNKED)],
  ["CL and TE", post([`Content-Length: ${CHUNKED.length}`, "Transfer-Encoding: chunked"], CHUNKED)],
  ["chunked, identity", post(["Transfer-Encoding: chunked, identity"], CHUNKED)],
  ["identity, chunked", post(["Transfer-Encoding: identity, chunked"], CHUNKED)],
  [
    "xchunked and CL",
    post(["Transfer-Encoding: xchunked", "Content-Length: 5"], "hello" + SMUGGLED),
  ],
  ["chunked twice", post(["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], CHUNKED)],
  ["chunked then gzip", post(["Transfer-Encoding: chunked", "Transfer-Encoding: gzip"], CHUNKED)],
  ["chunked with a parameter", post(["Transfer-Encoding: chunked;q=1"], CHUNKED)],
  ["chunked in HTTP/1.0", post(["Transfer-Encoding: chunked"], CHUNKED, "HTTP/1.0")],
  [
    "chunked and CL in HTTP/1.0",
    post(["Transfer-Encoding: chunked", "Content-Length: 5"], "hello" + SMUGGLED, "HTTP/1.0"),
  ],
  ["TE folded (obs-fold)", post(["Transfer-Encoding:", " chunked", "Content-Length: 5"], CHUNKED)],
  [
    "TE with space before colon",
    post(["Transfer-Encoding : chunked", "Content-Length: 5"], CHUNKED),
  ],
  ["CL with space before colon", post(["Content-Length : 5"], "hello" + SMUGGLED)],
  [
    "two CLs",
    post(["Content-Length: 5", `Content-Length: ${5 + SMUGGLED.length}`], "hello" + SMUGGLED),
  ],
  ["CL list", post([`Content-Length: 5, ${5 + SMUGGLED.length}`], "hello" + SMUGGLED)],
  ...["+5", "-5", "0x5", "5 5", "5.0", "1e1", "18446744073709551621", ""].map((
    v,
  ): [string, string] => [`CL "${v}"`, post([`Content-Length: ${v}`], "hello" + SMUGGLED)]),
  // A CR in a value: a parser that ends lines at CR alone reads a second Content-Length.
  ["CR in a value", post(["X-A: a\rContent-Length: 0", "Content-Length: 5"], "hello" + SMUGGLED)],
  ["NUL in a value", post(["X-A: a\x00b", "Content-Length: 5"], "hello" + SMUGGLED)],
  // A chunk size past 64 bits, which a parser that wraps reads as 5.
  ["chunk size overflow", post(["Transfer-Encoding: chunked"], "10000000000000005\r\n" + CHUNKED)],
  ["chunk size 0x5", post(["Transfer-Encoding: chunked"], "0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)],
  ["chunk size -5", post(["Transfer-Encoding: chunked"], "-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)],
  // Bare LFs in the chunked framing, and a bare CR in an extension, which parsers read apart.
  ["bare LF after a chunk size", post(["Transfer-Encoding: chunked"], "5\nhello\r\n0\r\n\r\n")],
  ["bare LF after chunk data", post(["Transfer-Encoding: chunked"], "5\r\nhello\n0\r\n\r\n")],
  ["bare CR in an extension", post(["Transfer-Encoding: chunked"], "5;a\rb\r\nhello\r\n0\r\n\r\n")],
  [
    "chunk data longer than its size",
    post(["Transfer-Encoding: chunked"], "3\r\nhello\r\n0\r\n\r\n"),
  ],
];

/** Prox with one proxy route to a recordingUpstream() (`up`), both closed with it. */
async function recordingProxy() {
  const up = recordingUpstream();
  await using stack = new AsyncDisposableStack();
  stack.use(up.server);
  const prox = stack.use(
    await startProxy(`
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.server.url}" } }
`),
  );
  const owned = stack.move();
  return Object.assign(prox, { up, [Symbol.asyncDispose]: () => owned.disposeAsync() });
}

Deno.test("framing that parsers may read apart is refused and never reaches the upstream", async () => {
  await using prox = await recordingProxy();
  const { up } = prox;
  for (const [name, text] of REFUSED) {
    const out = await rawExchange(prox.port, text + AFTER, undefined, 5_000);
    // A 400, 501 or (Deno.serve, for a malformed chunked body) a close without an answer; the
    // connection ends there either way, so /after is never read.
    assert.match(out, /^(HTTP\/1\.[01] (400|501) [^]*)?$/, `${name}: ${JSON.stringify(out)}`);
    assert.doesNotMatch(out, /HTTP\/1\.1 200 /, name);
    assert.deepEqual(up.seen.map((s) => s.line), [], name);
  }
});

Deno.test("framing a proxy must take is forwarded with one framing and nothing after it", async () => {
  await using prox = await recordingProxy();
  const { up } = prox;
  const taken: [string, string][] = [
    [
      "chunked with extensions",
      post(["Transfer-Encoding: chunked"], '5;a=b;c="d"\r\nhello\r\n0;z\r\n\r\n'),
    ],
    ["CHUNKED in capitals", post(["Transfer-Encoding: CHUNKED"], "5\r\nhello\r\n0\r\n\r\n")],
    ["chunked after spaces", post(["Transfer-Encoding:   chunked"], "5\r\nhello\r\n0\r\n\r\n")],
    [
      "chunk sizes with leading zeros",
      post(["Transfer-Encoding: chunked"], "0003\r\nhel\r\n002\r\nlo\r\n0\r\n\r\n"),
    ],
    // Trailer fields that would frame or route a message if merged: dropped (RFC 9110 §6.5.1).
    [
      "framing and routing trailers",
      post(
        ["Transfer-Encoding: chunked"],
        "5\r\nhello\r\n0\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\nHost: evil.test\r\n\r\n",
      ),
    ],
    ["CL with leading zeros", post(["Content-Length: 005"], "hello")],
    // RFC 9112 §6.3 (5): Content-Length fields that all say the same are that one length. They
    // got 400 (Deno.serve joins them into "5, 5", which Prox took for no number).
    ["two equal CLs", post(["Content-Length: 5", "Content-Length: 5"], "hello")],
    // Connection may name any field hop-by-hop (RFC 9110 §7.6.1), framing fields too: the body
    // still goes with a length of Prox's own.
    [
      "Connection: content-length",
      post(["Content-Length: 5", "Connection: content-length"], "hello"),
    ],
    [
      "Connection: transfer-encoding",
      post(
        ["Transfer-Encoding: chunked", "Connection: transfer-encoding"],
        "5\r\nhello\r\n0\r\n\r\n",
      ),
    ],
    ["Connection: host", post(["Content-Length: 5", "Connection: host, x-a", "X-A: 1"], "hello")],
  ];
  for (const [name, text] of taken) {
    up.seen.length = 0;
    const out = await rawExchange(prox.port, text + AFTER, undefined, 5_000);
    assert.match(
      out,
      /^HTTP\/1\.1 200 [^]*HTTP\/1\.1 200 [^]*ok$/,
      `${name}: ${JSON.stringify(out)}`,
    );
    assert.deepEqual(up.seen.map((s) => s.line), ["POST /p HTTP/1.1", "GET /after HTTP/1.1"], name);
    const [p] = up.seen;
    assert.equal(p.body, "hello", name);
    const framing = p.fields.filter(([k]) => k === "content-length" || k === "transfer-encoding");
    assert.equal(framing.length, 1, `${name}: ${JSON.stringify(p.fields)}`);
    const names = p.fields.map(([k]) => k);
    assert.equal(names.filter((k) => k === "host").length, 1, name);
    for (const gone of ["connection", "x-a", "te", "trailer", "expect"]) {
      assert.ok(!names.includes(gone), `${name}: ${gone} went upstream`);
    }
    assert.ok(
      !p.fields.some(([, v]) => v.includes("evil")),
      `${name}: ${JSON.stringify(p.fields)}`,
    );
  }
});
