import assert from "node:assert/strict";
import { helloScan, MAX_HELLO_BYTES, peekClientHello } from "./tls_client_hello.ts";

const enc = new TextEncoder();
const EMPTY = new Uint8Array(0);
const u16 = (n: number) => [n >> 8, n & 0xff];
const u24 = (n: number) => [n >> 16, (n >> 8) & 0xff, n & 0xff];

/** A ClientHello body with the given extensions (type, data) as a client would send it. */
function helloBody(exts: [number, number[]][] | null): number[] {
  const body = [3, 3, ...new Array(32).fill(7), 32, ...new Array(32).fill(9)];
  body.push(...u16(4), 0x13, 0x01, 0x13, 0x02, 1, 0);
  if (exts === null) return body;
  const ext = exts.flatMap(([t, d]) => [...u16(t), ...u16(d.length), ...d]);
  return [...body, ...u16(ext.length), ...ext];
}

function sniExt(name: string): [number, number[]] {
  const n = [...enc.encode(name)];
  const entry = [0, ...u16(n.length), ...n];
  return [0, [...u16(entry.length), ...entry]];
}

/** The handshake message (type 1 + length) of a body. */
function handshake(body: number[]): number[] {
  return [1, ...u24(body.length), ...body];
}

/** `hs` split into records of at most `size` bytes each. */
function records(hs: number[], size = 16384): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < hs.length; i += size) {
    const frag = hs.slice(i, i + size);
    out.push(22, 3, 1, ...u16(frag.length), ...frag);
  }
  return new Uint8Array(out);
}

const padding = (n: number): [number, number[]] => [21, new Array(n).fill(0)];

Deno.test("peekClientHello reads the server name, lowercased without a final dot", () => {
  const buf = records(handshake(helloBody([[10, [0, 2, 0, 29]], sniExt("DB.Example.com.")])));
  assert.deepEqual(peekClientHello(buf), { kind: "hello", serverName: "db.example.com" });
});

Deno.test("peekClientHello asks for more on every prefix of a ClientHello", () => {
  const buf = records(handshake(helloBody([sniExt("a.example.com")])));
  for (let i = 0; i < buf.length; i++) {
    assert.deepEqual(peekClientHello(buf.subarray(0, i)), { kind: "more" }, `prefix ${i}`);
  }
  assert.equal(peekClientHello(buf).kind, "hello");
});

Deno.test("peekClientHello reassembles a ClientHello split over several records", () => {
  const hs = handshake(helloBody([padding(1500), sniExt("split.example.com")]));
  for (const size of [1, 3, 5, 100, 1000]) {
    const buf = records(hs, size);
    assert.deepEqual(peekClientHello(buf), { kind: "hello", serverName: "split.example.com" });
    assert.deepEqual(peekClientHello(buf.subarray(0, buf.length - 1)), { kind: "more" });
  }
});

Deno.test("peekClientHello gives a null name without SNI or without extensions", () => {
  assert.deepEqual(peekClientHello(records(handshake(helloBody([padding(4)])))), {
    kind: "hello",
    serverName: null,
  });
  assert.deepEqual(peekClientHello(records(handshake(helloBody(null)))), {
    kind: "hello",
    serverName: null,
  });
});

Deno.test("peekClientHello refuses garbage at once", () => {
  const cases: [string, Uint8Array][] = [
    ["plain HTTP", enc.encode("GET / HTTP/1.1\r\n")],
    ["SSLv2", new Uint8Array([0x80, 0x2e, 0x01, 0x03, 0x01])],
    ["record version", new Uint8Array([22, 9, 1, 0, 5])],
    ["empty record", new Uint8Array([22, 3, 1, 0, 0])],
    ["oversized record", new Uint8Array([22, 3, 1, 0x48, 0x01])],
    ["ServerHello", records([2, 0, 0, 2, 3, 3])],
    ["alert after a partial hello", new Uint8Array([22, 3, 1, 0, 2, 1, 0, 21, 3, 1, 0, 2, 2, 40])],
  ];
  for (const [what, buf] of cases) assert.equal(peekClientHello(buf).kind, "invalid", what);
});

Deno.test("peekClientHello gives a server name that is not a DNS name as none, with what was sent", () => {
  // A well-formed ClientHello whose host_name is no DNS name (RFC 6066 §3 allows none but a DNS
  // name; clients send IP literals and worse): it is a ClientHello without a usable name, which
  // `default` takes, as nginx's ssl_preread map and HAProxy's req.ssl_sni would.
  const peek = (name: string) => peekClientHello(records(handshake(helloBody([sniExt(name)]))));
  const cases: [string, string, string][] = [
    ["bad name.example.com", "bad name.example.com", "a space"],
    ["ünï.example", "\\xc3\\xbcn\\xc3\\xaf.example", "not ASCII, escaped"],
    ["a..b", "a..b", "empty label"],
    ["x.example.com..", "x.example.com..", "two final dots"],
    [".", ".", "the root alone"],
    ["::1", "::1", "an IPv6 literal"],
    ["[fd00::2]", "[fd00::2]", "an IPv6 literal in brackets"],
    ["a\\b\n", "a\\x5cb\\x0a", "a backslash and a control byte, escaped"],
  ];
  for (const [name, sent, what] of cases) {
    assert.deepEqual(peek(name), { kind: "hello", serverName: null, invalidName: sent }, what);
  }
  // An empty host_name too, and one past 254 bytes (shown cut).
  assert.deepEqual(peek(""), { kind: "hello", serverName: null, invalidName: "" });
  const long = peek("a".repeat(300));
  assert.equal(long.kind === "hello" && long.invalidName, "a".repeat(254));
});

Deno.test("peekClientHello refuses malformed bodies and names", () => {
  const bad = (body: number[]) => peekClientHello(records(handshake(body))).kind;
  const good = helloBody([sniExt("x.example.com")]);
  assert.equal(bad(good.slice(0, 20)), "invalid", "truncated body");
  assert.equal(bad([...good, 0]), "invalid", "extensions shorter than the body");
  assert.equal(bad(helloBody([[0, [0, 9, 0, 0, 1, 120]]])), "invalid", "server_name list length");
  // Two names where the target may read another than Prox routed on (RFC 8446 §4.2: one
  // extension of a type; RFC 6066 §3: one name of a type).
  assert.equal(
    bad(helloBody([sniExt("public.example.com"), sniExt("admin.internal")])),
    "invalid",
    "two server_name extensions",
  );
  const twoNames = (a: string, b: string): [number, number[]] => {
    const e = (n: string) => [0, ...u16(n.length), ...enc.encode(n)];
    const list = [...e(a), ...e(b)];
    return [0, [...u16(list.length), ...list]];
  };
  assert.equal(
    bad(helloBody([twoNames("public.example.com", "admin.internal")])),
    "invalid",
    "two host_name entries",
  );
  const noSuites = [3, 3, ...new Array(32).fill(7), 0, 0, 0, 1, 0];
  assert.equal(bad(noSuites), "invalid", "no cipher suites");
});

Deno.test("peekClientHello bounds the bytes it waits for", () => {
  // Declared larger than the bound: refused from its first four bytes.
  const big = handshake(helloBody([padding(MAX_HELLO_BYTES), sniExt("big.example.com")]));
  assert.equal(peekClientHello(records(big).subarray(0, 9)).kind, "invalid");
  assert.equal(peekClientHello(records(big, 1).subarray(0, 24)).kind, "invalid");
  // A smaller bound given by the caller.
  const hs = handshake(helloBody([padding(600), sniExt("a.example.com")]));
  assert.equal(peekClientHello(records(hs), 512).kind, "invalid");
  assert.equal(peekClientHello(records(hs), 1024).kind, "hello");
  // A ClientHello of 4 KiB sent one byte per record takes 6 bytes per byte: refused at the bound.
  const slow = [22, 3, 1, 0, 4, 1, 0, 0x10, 0];
  for (let i = 0; i < 4096; i++) slow.push(22, 3, 1, 0, 1, 0);
  assert.equal(peekClientHello(new Uint8Array(slow).subarray(0, 6000)).kind, "more");
  assert.deepEqual(peekClientHello(new Uint8Array(slow.slice(0, MAX_HELLO_BYTES))), {
    kind: "invalid",
    reason: `no complete ClientHello in ${MAX_HELLO_BYTES} bytes`,
  });
});

Deno.test("peekClientHello stays linear when every byte of the ClientHello is its own record", () => {
  // 2,700 one-byte records (16 KiB), peeked after each as the connection reads them: the header
  // was reassembled again for every record, ~100 ms a peek, minutes of one core per connection.
  const hs = handshake(helloBody([padding(2600), sniExt("slow.example.com")]));
  const buf = records(hs, 1);
  const deadline = performance.now() + 5000;
  let last = peekClientHello(EMPTY);
  for (let end = 6; end <= buf.length && performance.now() < deadline; end += 6) {
    last = peekClientHello(buf.subarray(0, end));
  }
  assert.deepEqual(last, { kind: "hello", serverName: "slow.example.com" });
});

Deno.test("peekClientHello with a scan reads each record once as the bytes grow, a byte at a time", () => {
  // A client that sends one-byte records one byte per segment: each read brings a byte, and a
  // peek that walked every record from the first again took 2.7 s of one core per connection
  // (16 KiB), the event loop stalled for every client of the process meanwhile.
  const hs = handshake(helloBody([padding(2600), sniExt("slow.example.com")]));
  const buf = records(hs, 1);
  const scan = helloScan();
  let last = peekClientHello(EMPTY, MAX_HELLO_BYTES, scan);
  for (let end = 1; end <= buf.length && last.kind === "more"; end++) {
    last = peekClientHello(buf.subarray(0, end), MAX_HELLO_BYTES, scan);
  }
  assert.deepEqual(last, { kind: "hello", serverName: "slow.example.com" });
  // Each record looked at once when its header has come and once when it is whole (a walk from
  // the first record at every read looked at ~ n²/2: 3.6 million for these 2,700).
  const count = hs.length;
  assert.ok(scan.looks <= 2 * count, `${scan.looks} looks at ${count} records`);
  // The same answers as without a scan, at every length (a record still arriving included).
  for (const size of [1, 7, 100, 16384]) {
    const b = records(handshake(helloBody([padding(300), sniExt("a.example.com")])), size);
    const sc = helloScan();
    for (let end = 0; end <= b.length; end++) {
      const part = b.subarray(0, end);
      assert.deepEqual(peekClientHello(part, MAX_HELLO_BYTES, sc), peekClientHello(part), `${end}`);
    }
  }
  // A size verdict from a record still arriving stands with a scan too.
  const big = records(handshake(helloBody([padding(MAX_HELLO_BYTES), sniExt("b.example.com")])));
  const sb = helloScan();
  assert.equal(peekClientHello(big.subarray(0, 8), MAX_HELLO_BYTES, sb).kind, "more");
  assert.equal(peekClientHello(big.subarray(0, 9), MAX_HELLO_BYTES, sb).kind, "invalid");
});
