// An upstream's 103 Early Hints (RFC 8297) reach HTTP/1.1, HTTP/2 and HTTP/3 clients of Prox's own engines
// ahead of the answer, without hop-by-hop fields; an upstream's 100 does not. HTTP/1.0 clients,
// `early_hints: false` routes and Deno.serve (`http1_engine: deno`, which cannot send a 1xx) get
// the final answer only, intact.
import assert from "node:assert/strict";
import { rawServer, readRequest, write } from "../_upstream_peers.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { rawExchange } from "./_raw_client.ts";
import { RawH2Client } from "./_raw_h2.ts";
import { interopTest, ROOT, run, waitFor } from "../_harness.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { Flag, FrameType, PREFACE } from "../../src/adapters/h2/frames.ts";

// The engine is chosen per test (http1_engine), whatever PROX_H1_ENGINE says.
onProxEngines();

const HINTS = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n" +
  "Connection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\n";
const FINAL = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLink: </a.css>; rel=preload\r\n\r\nhello";

/** An HTTP/1.1 upstream that answers each request with a 100, a 103 and then a 200. */
function hintingUpstream(interim = "HTTP/1.1 100 Continue\r\n\r\n" + HINTS) {
  return rawServer(async (c) => {
    while (await readRequest(c) !== null) await write(c, interim + FINAL);
  });
}

function config(target: string, o: { engine?: string; route?: string } = {}): string {
  return `health_check: { enabled: false }
protocols: { http1_engine: ${o.engine ?? "prox"} }
routes:
  "/":
    type: proxy
    target: "${target}"
${o.route ?? ""}`;
}

const GET = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

Deno.test("early hints: an HTTP/1.1 client gets the upstream's 103 (Link, no hop-by-hop fields) before the 200, and no 100", async () => {
  await using up = hintingUpstream();
  await using prox = await startProxy(config(up.url));
  const out = await rawExchange(prox.port, GET);
  const [hints, final] = out.split(/\r\n\r\n/);
  assert.match(hints, /^HTTP\/1\.1 103 Early Hints\r\n/);
  assert.match(hints, /\r\nLink: <\/a\.css>; rel=preload(\r\n|$)/);
  assert.doesNotMatch(hints, /x-hop|keep-alive|connection/i);
  assert.match(final, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(final, /\r\nlink: <\/a\.css>; rel=preload\r\n/i);
  assert.ok(out.endsWith("\r\n\r\nhello"), out);
  assert.doesNotMatch(out, / 100 /);
});

Deno.test("early hints: none for an HTTP/1.0 client (RFC 9110 §15.2) nor on a route with early_hints: false", async () => {
  await using up = hintingUpstream();
  await using prox = await startProxy(config(up.url));
  const old = await rawExchange(prox.port, "GET / HTTP/1.0\r\nHost: a\r\n\r\n");
  assert.match(old, /^HTTP\/1\.0 200 OK\r\n/);
  assert.ok(old.endsWith("\r\n\r\nhello"), old);

  await using off = await startProxy(config(up.url, { route: "    early_hints: false\n" }));
  const out = await rawExchange(off.port, GET);
  assert.match(out, /^HTTP\/1\.1 200 OK\r\n/);
  assert.ok(out.endsWith("\r\n\r\nhello"), out);
});

Deno.test("early hints: Deno.serve (http1_engine: deno) cannot send a 1xx: the 200 comes alone, intact", async () => {
  await using up = hintingUpstream();
  await using prox = await startProxy(config(up.url, { engine: "deno" }));
  const out = await rawExchange(prox.port, GET);
  assert.match(out, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(out, /\r\nlink: <\/a\.css>; rel=preload\r\n/i);
  assert.ok(out.endsWith("\r\n\r\nhello"), out);
});

Deno.test("early hints: more than one 103 each go on, in order, before the answer", async () => {
  const second = "HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n";
  await using up = hintingUpstream(HINTS + second);
  await using prox = await startProxy(config(up.url));
  const out = await rawExchange(prox.port, GET);
  const heads = out.split(/\r\n\r\n/);
  assert.match(heads[0], /^HTTP\/1\.1 103 .*\r\nLink: <\/a\.css>/s);
  assert.match(heads[1], /^HTTP\/1\.1 103 .*\r\nLink: <\/b\.js>/s);
  assert.match(heads[2], /^HTTP\/1\.1 200 OK\r\n/);
});

/** A raw h2c client (prior knowledge) that decodes the field blocks of a stream. */
class H2c extends RawH2Client {
  static async open(port: number): Promise<H2c> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const c = new H2c(conn);
    await conn.write(PREFACE);
    c.out.settings([]);
    await c.flush();
    return c;
  }

  get(id: number): void {
    this.enc.begin().field(":method", "GET").field(":scheme", "http").field(":path", "/");
    this.out.headers(id, this.enc.field(":authority", "a").block, true, 16384);
  }

  /** Each HEADERS of stream `id` as its fields, and whether it ended the stream. */
  blocks(id: number): { fields: [string, string][]; end: boolean }[] {
    return this.on(id, FrameType.HEADERS).map((f) => {
      const fields: [string, string][] = [];
      this.dec.decode(f.payload, (n, v) => fields.push([n, v]));
      return { fields, end: (f.flags & Flag.END_STREAM) !== 0 };
    });
  }
}

Deno.test("early hints: an HTTP/2 client gets the 103 as a field block of its own before the answer's", async () => {
  await using up = hintingUpstream();
  await using prox = await startProxy(config(up.url));
  const c = await H2c.open(prox.port);
  try {
    c.get(1);
    await c.flush();
    await waitFor(() => c.on(1, FrameType.DATA).some((f) => f.flags & Flag.END_STREAM), {
      what: "the answer's end",
    });
    const blocks = c.blocks(1);
    assert.equal(blocks.length, 2);
    assert.deepEqual(blocks[0], {
      fields: [[":status", "103"], ["link", "</a.css>; rel=preload"]],
      end: false,
    });
    assert.deepEqual(blocks[1].fields[0], [":status", "200"]);
  } finally {
    await c.close();
  }
});

Deno.test("early hints: an HTTP/3 client gets each 103 as a HEADERS frame of its own before the answer's", async () => {
  // Browsers act on Early Hints over HTTP/2 and HTTP/3 only: HTTP/3 is where they matter.
  const second = "HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n";
  await using up = hintingUpstream(HINTS + second);
  const tls = `${ROOT}/tests/fixtures/tls`;
  await using prox = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${tls}/cert.pem", key_path: "${tls}/key.pem" }
protocols: { http3_enabled: true }
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
`,
    { keepListen: true, tls: true },
  );
  const ca = Deno.readTextFileSync(`${tls}/ca.pem`);
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  const res = await h3.request("/");
  assert.deepEqual(res.interim, [
    [[":status", "103"], ["link", "</a.css>; rel=preload"]],
    [[":status", "103"], ["link", "</b.js>; rel=preload"]],
  ]);
  assert.equal(res.status, 200);
  assert.equal(new TextDecoder().decode(res.body), "hello");
});

interopTest("early hints: curl -v sees the 103 before the 200 over HTTP/1.1 and HTTP/2", [
  "curl",
], async () => {
  await using up = hintingUpstream();
  await using prox = await startProxy(config(up.url));
  for (
    const [flag, version] of [["--http1.1", "HTTP/1.1"], ["--http2-prior-knowledge", "HTTP/2"]]
  ) {
    const out = await run("curl", ["-sv", flag, `${prox.url}/`]);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout, "hello");
    const hints = out.stderr.indexOf(`< ${version} 103`);
    assert.ok(hints >= 0, out.stderr);
    assert.ok(out.stderr.indexOf(`< ${version} 200`) > hints, out.stderr);
    assert.match(out.stderr, /< link: <\/a\.css>; rel=preload/i);
  }
});
