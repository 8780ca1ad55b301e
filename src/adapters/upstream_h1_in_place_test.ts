// Answers of more than 4 KiB for Prox's engines (`lean` requests) are read into the connection's
// own buffer and handed on with it, the connection reading on into a fresh one
// (upstream_h1.ts readInPlace): each answer must stay as sent while later ones arrive, with room
// for the engine's head in front, on one reused connection; a head too long for that room, an
// interim answer first, and bytes past the body must not break it.
import assert from "node:assert/strict";
import { createUpstreamClient } from "./upstream_client.ts";
import { H1Connection, MAX_LARGE } from "./upstream_h1_conn.ts";
import { rawServer, readRequest, request, write } from "../../tests/_upstream_peers.ts";
import { HEAD_ROOM, HEADROOM, RAW_BODY, RELEASE } from "../ports.ts";
import type { Releasable, Roomy } from "../ports.ts";

const LETTERS = "abcdefghijklmnopqrstuvwxyz";

/** An upstream answering /<size>/<letter>[/pad] with that many letters (pad: a 10 KiB field). */
function lettersServer(o: { stray?: boolean; interim?: boolean } = {}) {
  const conns = { n: 0 };
  const srv = rawServer(async (c) => {
    conns.n++;
    for (let head = await readRequest(c); head !== null; head = await readRequest(c)) {
      const [size, ch, pad] = head.slice(5, head.indexOf(" HTTP/")).split("/");
      const n = Number(size);
      const extra = pad ? `x-pad: ${"p".repeat(10_000)}\r\n` : "";
      const early = o.interim
        ? "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
        : "";
      const stray = o.stray && n === 30_000
        ? "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nPOISON"
        : "";
      // One write: head, body and whatever follows arrive together.
      await write(
        c,
        `${early}HTTP/1.1 200 OK\r\n${extra}content-length: ${n}\r\n\r\n${ch.repeat(n)}${stray}`,
      );
    }
  });
  return { srv, conns };
}

/** The bytes of a lean answer as the engine takes them, and whether they had room in front. */
function raw(res: Response): { bytes: Uint8Array; roomy: boolean } {
  const bytes = (res as Roomy)[RAW_BODY]!;
  const room = (res as Roomy)[HEADROOM]?.() ?? 0;
  return { bytes, roomy: room >= HEAD_ROOM && bytes.byteOffset >= HEAD_ROOM };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("upstream client: answers read in place stay whole while later ones arrive, on one connection", async () => {
  const { srv, conns } = lettersServer();
  await using _ = srv;
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
  try {
    const sizes = [100, 30_000, 100, 65_536, 5_000, 65_536, 4_097, 20, 65_000];
    const kept: { bytes: Uint8Array; want: string }[] = [];
    for (let i = 0; i < 3 * sizes.length; i++) {
      const size = sizes[i % sizes.length];
      const ch = LETTERS[i % LETTERS.length];
      const res = await client.send(request(`${srv.url}/${size}/${ch}`, { lean: true }));
      assert.equal(res.status, 200);
      const { bytes, roomy } = raw(res);
      assert.equal(text(bytes), ch.repeat(size), `answer ${i} (${size} bytes)`);
      // Room for the engine's head in front, so that head and body go out in one write uncopied.
      assert.ok(roomy, `answer ${i} (${size} bytes) has no room for its head`);
      // Every other answer is kept, as a client still being written to holds it; the others go
      // back, as the engine gives them once written, and are taken again by later answers.
      if (i % 2 === 0) kept.push({ bytes, want: ch.repeat(size) });
      else (res as Releasable)[RELEASE]?.();
    }
    for (const [i, k] of kept.entries()) assert.ok(text(k.bytes) === k.want, `kept answer ${i}`);
    assert.equal(conns.n, 1);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client: a long head, an interim answer or bytes past the body with an answer read in place", async () => {
  {
    const { srv, conns } = lettersServer({ interim: true });
    await using _ = srv;
    const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
    try {
      // A 10 KiB field: head and a 64 KiB body no longer fit the buffer; read as before.
      for (const path of ["/65536/a/pad", "/40000/b", "/65536/c/pad", "/65536/d"]) {
        const res = await client.send(request(`${srv.url}${path}`, { lean: true }));
        const [, size, ch] = path.split("/");
        assert.equal(text(raw(res).bytes), ch.repeat(Number(size)), path);
        assert.equal(res.headers.has("x-pad"), path.endsWith("/pad"));
        (res as Releasable)[RELEASE]?.();
      }
      assert.equal(conns.n, 1);
    } finally {
      await client.close();
    }
  }
  {
    const { srv, conns } = lettersServer({ stray: true });
    await using _ = srv;
    const client = createUpstreamClient({ maxConnectionsPerUpstream: 1 });
    try {
      const first = await client.send(request(`${srv.url}/30000/e`, { lean: true }));
      assert.equal(text(raw(first).bytes), "e".repeat(30_000));
      // The stray answer came with it: the connection is not reused, and never answers this.
      const next = await client.send(request(`${srv.url}/10/f`, { lean: true }));
      assert.equal(text(raw(next).bytes), "f".repeat(10));
      assert.equal(conns.n, 2);
    } finally {
      await client.close();
    }
  }
});

Deno.test("upstream connections: at most MAX_LARGE at once read into a larger buffer", () => {
  // A transport whose reads never end: the connections are only made larger and failed here.
  const transport = {
    read: () => new Promise<number | null>(() => {}),
    write: (p: Uint8Array) => Promise.resolve(p.byteLength),
    close: () => {},
  };
  const buffer = new ArrayBuffer(80 * 1024);
  const conns = Array.from({ length: MAX_LARGE + 1 }, () => new H1Connection(transport, "t"));
  const made = conns.map((c) => c.enlarge(buffer));
  // (Connections of other tests in this process may hold places too.)
  assert.ok(made.filter(Boolean).length <= MAX_LARGE);
  assert.equal(made[MAX_LARGE], false);
  assert.equal(conns[MAX_LARGE].buf.byteLength, 16 * 1024);
  // A connection that ends gives its place back.
  conns[made.indexOf(true)].fail(null);
  assert.equal(conns[MAX_LARGE].enlarge(buffer), true);
  for (const c of conns) c.fail(null);
});
