// The h2c upstream client (upstream_h2c.ts) against raw HTTP/2 peers that send exactly the frames
// a test needs: trailers, GOAWAY, REFUSED_STREAM, a server that answers in HTTP/1.1, one that never
// answers, malformed answers, and the idle close.
import assert from "node:assert/strict";
import { createUpstreamClient } from "./upstream_client.ts";
import { createH2cClient } from "./upstream_h2c.ts";
import { BODY_BYTES, RAW_BODY } from "../ports.ts";
import type { CountedResponse } from "../ports.ts";
import { rawServer, rejects, request, T, write, writeAll } from "../../tests/_upstream_peers.ts";
import { waitFor } from "../../tests/_harness.ts";
import {
  ErrorCode,
  Flag,
  FRAME_HEADER,
  FrameType,
  FrameWriter,
  PREFACE,
  Setting,
} from "./h2/frames.ts";
import { HpackDecoder, HpackEncoder } from "./h2/hpack.ts";
import { WireResponse } from "../proxy/wire_response.ts";
import { ProxyError } from "../domain/errors.ts";

/** An upstream client that closes when the test's scope ends (`await using`), after what it ran. */
function closingClient(): ReturnType<typeof createUpstreamClient> & AsyncDisposable {
  const client = createUpstreamClient();
  return Object.assign(client, { [Symbol.asyncDispose]: () => client.close() });
}

/**
 * A GET of `url`/ over h2c for each call, its failure caught (a failed assertion closes the client
 * first).
 */
function sender(client: ReturnType<typeof createUpstreamClient>, url: string) {
  return () => {
    const p = client.send(request(`${url}/`, { protocol: "h2c" }));
    p.catch(() => {});
    return p;
  };
}

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Uint8Array;
}

/** The server side of one raw HTTP/2 connection: frames in, frames out. */
class Peer {
  #buf = new Uint8Array(0);
  readonly dec = new HpackDecoder();
  readonly enc = new HpackEncoder();
  constructor(readonly c: Deno.Conn) {}

  async #more(): Promise<boolean> {
    const chunk = new Uint8Array(65536);
    const n = await this.c.read(chunk);
    if (n === null) return false;
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
    return true;
  }

  /** Reads the client's preface and answers with `settings`. */
  async start(settings: Array<[number, number]> = []): Promise<void> {
    while (this.#buf.length < PREFACE.length) if (!await this.#more()) throw new Error("EOF");
    assert.deepEqual(this.#buf.subarray(0, PREFACE.length), PREFACE);
    this.#buf = this.#buf.slice(PREFACE.length);
    const w = new FrameWriter();
    w.settings(settings);
    await this.send(w);
  }

  /** The next frame, or null at the end of the connection. */
  async frame(): Promise<Frame | null> {
    for (;;) {
      if (this.#buf.length >= FRAME_HEADER) {
        const len = (this.#buf[0] << 16) | (this.#buf[1] << 8) | this.#buf[2];
        if (this.#buf.length >= FRAME_HEADER + len) {
          const f = {
            type: this.#buf[3],
            flags: this.#buf[4],
            stream: new DataView(this.#buf.buffer, this.#buf.byteOffset).getUint32(5) & 0x7fffffff,
            payload: this.#buf.slice(FRAME_HEADER, FRAME_HEADER + len),
          };
          this.#buf = this.#buf.slice(FRAME_HEADER + len);
          return f;
        }
      }
      if (!await this.#more()) return null;
    }
  }

  /** Frames until a request's HEADERS; its fields and stream. */
  async request(): Promise<{ stream: number; fields: Map<string, string>; end: boolean } | null> {
    for (;;) {
      const f = await this.frame();
      if (f === null) return null;
      if (f.type === FrameType.SETTINGS && !(f.flags & Flag.ACK)) {
        const w = new FrameWriter();
        w.frame(FrameType.SETTINGS, Flag.ACK, 0);
        await this.send(w);
      }
      if (f.type !== FrameType.HEADERS) continue;
      const fields = new Map<string, string>();
      this.dec.decode(f.payload, (k, v) => fields.set(k, v));
      return { stream: f.stream, fields, end: (f.flags & Flag.END_STREAM) !== 0 };
    }
  }

  head(w: FrameWriter, stream: number, fields: [string, string][], end: boolean): void {
    const e = this.enc.begin();
    for (const [k, v] of fields) e.field(k, v);
    w.headers(stream, e.block, end, 16384);
  }

  async send(w: FrameWriter): Promise<void> {
    await writeAll(this.c, w.take());
  }
}

/** A raw HTTP/2 server: `onConn` gets each connection as a Peer (its preface read). */
function h2Server(onConn: (p: Peer, n: number) => Promise<void>, settings?: [number, number][]) {
  return rawServer(async (c, n) => {
    const p = new Peer(c);
    await p.start(settings);
    await onConn(p, n);
  });
}

const enc = new TextEncoder();

/** Reads the peer's frames to the connection's end, passing on the code of `stream`'s RST_STREAM. */
async function watchReset(p: Peer, stream: number, reset: (code: number) => void): Promise<void> {
  for (;;) {
    const f = await p.frame();
    if (f === null) return;
    if (f.type === FrameType.RST_STREAM && f.stream === stream) reset(u32(f.payload));
  }
}

Deno.test("h2c: the answer's body and trailers come through, and the request is HTTP/2's", async () => {
  const seen: Map<string, string>[] = [];
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    seen.push(r.fields);
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "200"], ["content-type", "application/grpc"]], false);
    w.frame(FrameType.DATA, 0, r.stream, enc.encode("hello "));
    w.frame(FrameType.DATA, 0, r.stream, enc.encode("world"));
    p.head(w, r.stream, [["grpc-status", "0"], ["grpc-message", "ok"]], true);
    await p.send(w);
    await p.frame(); // until Prox closes
  });
  await using client = closingClient();
  const res = await client.send(
    request(`${up.url}/svc/Call?x=1`, {
      protocol: "h2c",
      headers: { host: "api.example", connection: "x-drop", "x-keep": "1" },
    }),
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/grpc");
  assert.equal(await res.text(), "hello world");
  const counter = (res as CountedResponse)[BODY_BYTES]!;
  assert.deepEqual(counter.trailers, [["grpc-status", "0"], ["grpc-message", "ok"]]);
  assert.equal(counter.bytes, 11);
  assert.ok(counter.ended);
  const f = seen[0];
  assert.equal(f.get(":method"), "GET");
  assert.equal(f.get(":scheme"), "http");
  assert.equal(f.get(":authority"), "api.example");
  assert.equal(f.get(":path"), "/svc/Call?x=1");
  assert.equal(f.get("te"), "trailers");
  assert.equal(f.get("x-keep"), "1");
  assert.equal(f.has("host"), false);
  assert.equal(f.has("connection"), false);
});

Deno.test("h2c: requests share one connection, and a request body streams as DATA", async () => {
  let conns = 0;
  await using up = h2Server(async (p) => {
    conns++;
    const bodies = new Map<number, string>();
    for (;;) {
      const f = await p.frame();
      if (f === null) return;
      if (f.type === FrameType.HEADERS && (f.flags & Flag.END_STREAM)) bodies.set(f.stream, "");
      if (f.type === FrameType.HEADERS) {
        p.dec.decode(f.payload, () => {});
        if (!bodies.has(f.stream)) bodies.set(f.stream, "");
        if (!(f.flags & Flag.END_STREAM)) continue;
      }
      if (f.type === FrameType.DATA) {
        bodies.set(f.stream, bodies.get(f.stream) + new TextDecoder().decode(f.payload));
        if (!(f.flags & Flag.END_STREAM)) continue;
      }
      if (f.type !== FrameType.HEADERS && f.type !== FrameType.DATA) continue;
      const w = new FrameWriter();
      p.head(w, f.stream, [[":status", "200"]], false);
      w.frame(FrameType.DATA, Flag.END_STREAM, f.stream, enc.encode(`got:${bodies.get(f.stream)}`));
      await p.send(w);
    }
  });
  await using client = closingClient();
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(enc.encode("part1,"));
      c.enqueue(enc.encode("part2"));
      c.close();
    },
  });
  const answers = await Promise.all([
    client.send(request(`${up.url}/a`, { protocol: "h2c" })).then((r) => r.text()),
    client.send(request(`${up.url}/b`, { protocol: "h2c", method: "POST", body }))
      .then((r) => r.text()),
    client.send(
      request(`${up.url}/c`, { protocol: "h2c", method: "PUT", body: enc.encode("bytes") }),
    ).then((r) => r.text()),
  ]);
  assert.deepEqual(answers, ["got:", "got:part1,part2", "got:bytes"]);
  assert.equal(conns, 1);
  assert.equal(client.pools().find((p) => p.h2Streams !== null)?.h2Streams, 0);
});

for (const how of ["GOAWAY", "REFUSED_STREAM"] as const) {
  Deno.test(`h2c: a request the upstream did not process (${how}) may go again`, async () => {
    let conns = 0;
    await using up = h2Server(async (p) => {
      conns++;
      for (let n = 0;; n++) {
        const r = await p.request();
        if (r === null) return;
        const w = new FrameWriter();
        if (conns === 1 && n === 0) {
          if (how === "GOAWAY") w.goaway(0, ErrorCode.NO_ERROR);
          else w.u32(FrameType.RST_STREAM, r.stream, ErrorCode.REFUSED_STREAM);
          await p.send(w);
          if (how === "GOAWAY") return;
          continue;
        }
        p.head(w, r.stream, [[":status", "204"]], true);
        await p.send(w);
      }
    });
    await using client = closingClient();
    // Sent again at once, on another stream (and connection after a GOAWAY).
    const res = await client.send(request(`${up.url}/`, { protocol: "h2c" }));
    assert.equal(res.status, 204);
    assert.equal(conns, how === "GOAWAY" ? 2 : 1);
  });
}

Deno.test("h2c: a refused request with a streamed body fails as not sent (forward's retry may replay it)", async () => {
  await using up = h2Server(async (p) => {
    for (;;) {
      const r = await p.request();
      if (r === null) return;
      const w = new FrameWriter();
      w.u32(FrameType.RST_STREAM, r.stream, ErrorCode.REFUSED_STREAM);
      await p.send(w);
    }
  });
  await using client = closingClient();
  const body = new ReadableStream<Uint8Array>({ pull: () => new Promise(() => {}) });
  const err = await rejects(
    client.send(request(`${up.url}/`, { protocol: "h2c", method: "POST", body })),
    "upstream_reset",
  );
  assert.equal(err.sentNothing, true);
});

Deno.test("h2c: an upstream that answers in HTTP/1.1 fails with a clear protocol error", async () => {
  await using up = rawServer(async (c) => {
    await c.read(new Uint8Array(1024));
    await write(c, "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
  });
  await using client = closingClient();
  const err = await rejects(client.send(request(`${up.url}/`, { protocol: "h2c" })), "protocol");
  assert.match(err.message, /HTTP\/1\.x.*h2c/);
});

Deno.test("h2c: timeouts.response_header counts from the request's end, not while its body still streams (a gRPC client stream)", async () => {
  await using up = h2Server(async (p) => {
    let got = "";
    for (;;) {
      const f = await p.frame();
      if (f === null) return;
      if (f.type === FrameType.HEADERS) p.dec.decode(f.payload, () => {});
      if (f.type === FrameType.DATA) got += new TextDecoder().decode(f.payload);
      // A gRPC server that answers a client stream once it has all of it.
      if (f.type === FrameType.DATA && (f.flags & Flag.END_STREAM)) {
        const w = new FrameWriter();
        p.head(w, f.stream, [[":status", "200"]], false);
        w.frame(FrameType.DATA, Flag.END_STREAM, f.stream, enc.encode(`got:${got}`));
        await p.send(w);
      }
    }
  });
  await using client = closingClient();
  // An upload that lasts four times the head timeout, a message every 100 ms.
  let n = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      if (n > 0) await new Promise((r) => setTimeout(r, 100));
      if (n === 6) return c.close();
      c.enqueue(enc.encode(String(n++)));
    },
  });
  const timeouts = { ...T, responseHeader: 150 };
  const res = await client.send(
    request(`${up.url}/`, { protocol: "h2c", method: "POST", body, timeouts }),
  );
  assert.equal(await res.text(), "got:012345");
});

Deno.test("h2c: an unanswered request whose body stops coming ends at timeouts.idle (408), the stream reset", async () => {
  let reset = -1;
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    await watchReset(p, r.stream, (code) => reset = code);
  });
  await using client = closingClient();
  const body = new ReadableStream<Uint8Array>({
    start: (c) => c.enqueue(enc.encode("first, then nothing")),
  });
  const req = request(`${up.url}/`, {
    protocol: "h2c",
    method: "POST",
    body,
    timeouts: { ...T, responseHeader: 100, idle: 200 },
    // The test's own limit: a client that leaves fails it (client_gone), not hangs it.
    signal: AbortSignal.timeout(4_000),
  });
  await rejects(client.send(req), "request_timeout");
  await waitFor(() => reset === ErrorCode.CANCEL);
});

Deno.test("h2c: no answer head within timeouts.response_header is a timeout, the stream reset", async () => {
  let reset = -1;
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    await watchReset(p, r.stream, (code) => reset = code);
  });
  await using client = closingClient();
  await rejects(
    client.send(
      request(`${up.url}/`, { protocol: "h2c", timeouts: { ...T, responseHeader: 100 } }),
    ),
    "timeout",
  );
  await waitFor(() => reset === ErrorCode.CANCEL);
});

Deno.test("h2c: malformed answers fail the stream with a protocol error", async () => {
  const answers: [string, string][][] = [
    [[":status", "200"], ["connection", "keep-alive"]],
    [["content-type", "text/plain"]],
    [[":status", "200"], [":path", "/"]],
    [[":status", "2000"]],
    [[":status", "200"], ["Upper", "x"]],
    [[":status", "200"], ["x-a", "one\r\nset-cookie: injected"]],
    [[":status", "200"], ["x-a", " padded"]],
    [[":status", "200"], ["x-a", "nul\0"]],
    [[":status", "200"], ["bad name", "x"]],
  ];
  await using up = h2Server(async (p) => {
    for (;;) {
      const r = await p.request();
      if (r === null) return;
      const w = new FrameWriter();
      p.head(w, r.stream, answers[(r.stream - 1) / 2], true);
      await p.send(w);
    }
  });
  await using client = closingClient();
  for (let i = 0; i < answers.length; i++) {
    await rejects(client.send(request(`${up.url}/`, { protocol: "h2c" })), "protocol");
  }
});

Deno.test("h2c: the upstream's SETTINGS_MAX_CONCURRENT_STREAMS holds: more go on new connections", async () => {
  let received = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const mostOpen: number[] = [];
  await using up = h2Server(async (p, n) => {
    mostOpen[n] = 0;
    let open = 0;
    const answers: Promise<void>[] = [];
    for (;;) {
      const r = await p.request();
      if (r === null) break;
      received++;
      mostOpen[n] = Math.max(mostOpen[n], ++open);
      // The first request is answered at once; the rest wait for the gate.
      answers.push((received === 1 ? Promise.resolve() : gate).then(async () => {
        const w = new FrameWriter();
        p.head(w, r.stream, [[":status", "200"]], true);
        open--;
        await p.send(w);
      }));
    }
    await Promise.all(answers);
  }, [[Setting.MAX_CONCURRENT_STREAMS, 2]]);
  const client = createUpstreamClient();
  try {
    // The first answer comes after the upstream's SETTINGS: the client knows the limit.
    assert.equal((await client.send(request(`${up.url}/`, { protocol: "h2c" }))).status, 200);
    const burst = Array.from(
      { length: 5 },
      () => client.send(request(`${up.url}/`, { protocol: "h2c" })),
    );
    await waitFor(() => received === 6);
    release();
    for (const res of await Promise.all(burst)) assert.equal(res.status, 200);
    assert.ok(mostOpen.every((m) => m <= 2), `streams open at once per connection: ${mostOpen}`);
    assert.ok(mostOpen.length >= 3, `connections: ${mostOpen.length}`);
  } finally {
    release();
    await client.close();
  }
});

Deno.test("h2c: a session idle past upstream_pool's idle timeout is closed with GOAWAY", async () => {
  let goaway = false;
  let ended = false;
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "200"]], true);
    await p.send(w);
    for (;;) {
      const f = await p.frame();
      if (f === null) break;
      if (f.type === FrameType.GOAWAY) goaway = true;
    }
    ended = true;
  });
  const client = createUpstreamClient({ idleTimeout: 300 });
  try {
    const res = await client.send(request(`${up.url}/`, { protocol: "h2c" }));
    assert.equal(res.status, 200);
    await waitFor(() => ended, { timeoutMs: 5_000 });
    assert.ok(goaway);
  } finally {
    await client.close();
  }
});

Deno.test("h2c: trailers with a CR or LF in a value fail the stream (never a line of their own)", async () => {
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "200"]], false);
    w.frame(FrameType.DATA, 0, r.stream, enc.encode("body"));
    p.head(w, r.stream, [["grpc-status", "0\r\nx-injected: 1"]], true);
    await p.send(w);
    await p.frame();
  });
  await using client = closingClient();
  const res = await client.send(request(`${up.url}/`, { protocol: "h2c" }));
  await assert.rejects(res.text());
  assert.equal((res as CountedResponse)[BODY_BYTES]!.trailers, undefined);
});

/** The u32 of a frame's payload at `at` (RST_STREAM's code, WINDOW_UPDATE's increment). */
const u32 = (p: Uint8Array, at = 0) =>
  new DataView(p.buffer, p.byteOffset).getUint32(at) & 0x7fffffff;

Deno.test("h2c: DATA beyond the stream window Prox granted is a FLOW_CONTROL_ERROR, not buffered (RFC 9113 §6.9.1)", async () => {
  let reset = -1;
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "200"]], false);
    // 1 MiB is the window Prox gave; 64 more frames of 16 KiB go past it.
    const chunk = new Uint8Array(16384);
    for (let i = 0; i < 64 + 64; i++) w.frame(FrameType.DATA, 0, r.stream, chunk);
    await p.send(w);
    for (;;) {
      const f = await p.frame();
      if (f === null) return;
      if (f.type === FrameType.RST_STREAM && f.stream === r.stream) reset = u32(f.payload);
      if (f.type === FrameType.GOAWAY) reset = u32(f.payload, 4);
    }
  });
  await using client = closingClient();
  const res = await client.send(request(`${up.url}/`, { protocol: "h2c" }));
  await waitFor(() => reset !== -1, { timeoutMs: 3_000, what: "a reset" });
  assert.equal(reset, ErrorCode.FLOW_CONTROL_ERROR);
  await assert.rejects(res.arrayBuffer());
});

Deno.test("h2c: a body the client cancels gives its unread bytes back to the connection window", async () => {
  let window = 65535;
  let granted = () => {};
  let cancelled = () => {};
  const CONN = 8 * 1024 * 1024;
  const SIZE = 1024 * 1024 - 16384;
  await using up = h2Server(async (p) => {
    const requests: number[] = [];
    let wake = () => {};
    const reader = (async () => {
      for (;;) {
        const f = await p.frame();
        if (f === null) return;
        if (f.type === FrameType.WINDOW_UPDATE && f.stream === 0) window += u32(f.payload);
        if (f.type === FrameType.HEADERS) {
          p.dec.decode(f.payload, () => {});
          requests.push(f.stream);
        }
        if (f.type === FrameType.PING && (f.flags & Flag.ACK)) granted();
        wake();
      }
    })();
    for (let n = 0; n < 10; n++) {
      while (requests.length === 0) await new Promise<void>((r) => wake = r);
      const id = requests.shift()!;
      // As much as the connection window allows (a peer that keeps to it).
      const size = Math.min(SIZE, window);
      window -= size;
      const w = new FrameWriter();
      p.head(w, id, [[":status", "200"]], false);
      for (let off = 0; off < size; off += 16384) {
        w.frame(FrameType.DATA, 0, id, new Uint8Array(Math.min(16384, size - off)));
      }
      w.frame(FrameType.PING, 0, 0, new Uint8Array(8));
      const acked = new Promise<void>((r) => granted = r);
      await p.send(w);
      await acked; // every DATA frame was read by Prox
      cancelled();
    }
    await reader;
  });
  await using client = closingClient();
  for (let n = 0; n < 10; n++) {
    const done = new Promise<void>((r) => cancelled = r);
    const res = await client.send(request(`${up.url}/`, { protocol: "h2c" }));
    await done;
    await res.body!.cancel();
  }
  // What no client will read is the connection's again: the upstream can send more.
  await waitFor(() => window >= CONN / 2, { timeoutMs: 3_000, what: `window ${window}` });
});

Deno.test("h2c: answers whose clients do not read hold only their own stream windows, not the connection's (other streams go on)", async () => {
  let window = 65535;
  let granted = () => {};
  const SIZE = 1024 * 1024 - 16384;
  const N = 10;
  await using up = h2Server(async (p) => {
    const requests: number[] = [];
    let wake = () => {};
    const reader = (async () => {
      for (;;) {
        const f = await p.frame();
        if (f === null) {
          granted(); // the client closed before its ACK: nothing more to wait for
          return;
        }
        if (f.type === FrameType.WINDOW_UPDATE && f.stream === 0) window += u32(f.payload);
        if (f.type === FrameType.HEADERS) {
          p.dec.decode(f.payload, () => {});
          requests.push(f.stream);
        }
        if (f.type === FrameType.PING && (f.flags & Flag.ACK)) granted();
        wake();
      }
    })();
    for (let n = 0; n < N; n++) {
      while (requests.length === 0) await new Promise<void>((r) => wake = r);
      const id = requests.shift()!;
      // Within its stream's window, as much as the connection window allows.
      const size = Math.min(SIZE, window);
      window -= size;
      const w = new FrameWriter();
      p.head(w, id, [[":status", "200"]], false);
      for (let off = 0; off < size; off += 16384) {
        w.frame(FrameType.DATA, 0, id, new Uint8Array(Math.min(16384, size - off)));
      }
      w.frame(FrameType.PING, 0, 0, new Uint8Array(8));
      const acked = new Promise<void>((r) => granted = r);
      await p.send(w);
      await acked; // every DATA frame was read by Prox
    }
    await reader;
  });
  const client = createUpstreamClient();
  const answers: Response[] = [];
  try {
    // Ten slow clients, none reading: each answer holds at most its stream's 1 MiB in Prox.
    for (let n = 0; n < N; n++) {
      answers.push(await client.send(request(`${up.url}/`, { protocol: "h2c" })));
    }
    // The connection's window is not theirs to take: another stream's answer can still come.
    await waitFor(() => window >= SIZE, { timeoutMs: 3_000, what: `window ${window}` });
  } finally {
    for (const res of answers) await res.body!.cancel();
    await client.close();
  }
});

Deno.test("h2c: a body shorter or longer than its content-length fails (RFC 9113 §8.1.1)", async () => {
  await using up = h2Server(async (p) => {
    for (;;) {
      const r = await p.request();
      if (r === null) return;
      const w = new FrameWriter();
      p.head(w, r.stream, [[":status", "200"], ["content-length", "10"]], false);
      const body = r.stream === 1 ? "short" : "much too long!";
      w.frame(FrameType.DATA, Flag.END_STREAM, r.stream, enc.encode(body));
      await p.send(w);
    }
  });
  await using client = closingClient();
  for (let i = 0; i < 2; i++) {
    const res = await client.send(request(`${up.url}/`, { protocol: "h2c" }));
    await assert.rejects(res.text(), /content-length/);
  }
});

/**
 * An upstream that answers the first request with the frames `flood` writes: the request fails as
 * a protocol error and the upstream gets a GOAWAY with ENHANCE_YOUR_CALM.
 */
async function endsCalm(
  flood: (w: FrameWriter, stream: number, p: Peer) => void,
  expected: number = ErrorCode.ENHANCE_YOUR_CALM,
  answered = false,
): Promise<void> {
  let code = -1;
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    flood(w, r.stream, p);
    await p.send(w).catch(() => {});
    for (;;) {
      const f = await p.frame().catch(() => null);
      if (f === null) return;
      if (f.type === FrameType.GOAWAY) code = u32(f.payload, 4);
    }
  });
  await using client = closingClient();
  const sent = client.send(request(`${up.url}/`, { protocol: "h2c" }));
  // (A flood after the answer's head fails its body instead.)
  if (answered) await rejects((await sent).text(), "protocol");
  else await rejects(sent, "protocol");
  await waitFor(() => code !== -1);
  assert.equal(code, expected);
}

Deno.test("h2c: a flood of empty CONTINUATION frames ends the connection (ENHANCE_YOUR_CALM)", async () => {
  await endsCalm((w, stream, p) => {
    const e = p.enc.begin().field(":status", "200");
    w.frame(FrameType.HEADERS, Flag.END_STREAM, stream, e.block);
    for (let i = 0; i < 50_000; i++) w.frame(FrameType.CONTINUATION, 0, stream);
    w.frame(FrameType.CONTINUATION, Flag.END_HEADERS, stream);
  });
});

Deno.test("h2c: after a GOAWAY, the session closes once its last stream is over", async () => {
  let ended = false;
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    w.goaway(r.stream, ErrorCode.NO_ERROR);
    p.head(w, r.stream, [[":status", "200"]], false);
    await p.send(w);
    gone();
    await answer;
    p.head(w, r.stream, [["grpc-status", "0"]], true);
    await p.send(w);
    while (await p.frame() !== null) { /* until Prox closes */ }
    ended = true;
  });
  let gone!: () => void;
  const went = new Promise<void>((r) => gone = r);
  let finish!: () => void;
  const answer = new Promise<void>((r) => finish = r);
  await using client = closingClient();
  const res = await client.send(request(`${up.url}/`, { protocol: "h2c" }));
  await went;
  finish();
  assert.equal(await res.text(), "");
  await waitFor(() => ended, { timeoutMs: 3_000, what: "the connection closed" });
  assert.equal(client.pools().find((p) => p.h2Streams !== null)?.h2Streams ?? 0, 0);
});

Deno.test("h2c: a request body the upstream never opens its window for ends at timeouts.idle, the stream reset", async () => {
  let reset = -1;
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    // A whole answer at once; the request body's window (65,535 bytes) is never opened.
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "200"]], true);
    await p.send(w);
    await watchReset(p, r.stream, (code) => reset = code);
  });
  await using client = closingClient();
  const res = await client.send(
    request(`${up.url}/`, {
      protocol: "h2c",
      method: "POST",
      body: new Uint8Array(200_000),
      timeouts: { ...T, idle: 200 },
    }),
  );
  assert.equal(await res.text(), "");
  await waitFor(() => reset !== -1, { timeoutMs: 3_000, what: "a reset" });
  assert.equal(reset, ErrorCode.CANCEL);
  assert.equal(client.pools().find((p) => p.h2Streams !== null)?.h2Streams, 0);
});

Deno.test("h2c: a flood of PING frames ends the connection (ENHANCE_YOUR_CALM), its ACKs not queued without end", async () => {
  await endsCalm((w) => {
    for (let i = 0; i < 20_000; i++) w.frame(FrameType.PING, 0, 0, new Uint8Array(8));
  });
});

Deno.test("h2c: a flood of SETTINGS frames ends the connection (ENHANCE_YOUR_CALM)", async () => {
  await endsCalm((w) => {
    for (let i = 0; i < 20_000; i++) w.settings([[Setting.MAX_CONCURRENT_STREAMS, 100]]);
  });
});

Deno.test("h2c: a SETTINGS frame of more than 32 values ends the connection (ENHANCE_YOUR_CALM, CVE-2020-11080)", async () => {
  // 2,000 values, each SETTINGS_INITIAL_WINDOW_SIZE moving every open stream's window.
  await endsCalm((w) => {
    const values: [number, number][] = [];
    for (let i = 0; i < 2000; i++) values.push([Setting.INITIAL_WINDOW_SIZE, 65535 + (i & 1)]);
    w.settings(values);
  });
});

Deno.test("h2c: a flood of WINDOW_UPDATE frames ends the connection (ENHANCE_YOUR_CALM)", async () => {
  await endsCalm((w, stream) => {
    for (let i = 0; i < 10_000; i++) {
      w.u32(FrameType.WINDOW_UPDATE, 0, 1);
      w.u32(FrameType.WINDOW_UPDATE, stream, 1);
    }
  });
});

Deno.test("h2c: a flood of empty DATA frames ends the connection (ENHANCE_YOUR_CALM), the answer's body failing", async () => {
  await endsCalm(
    (w, stream, p) => {
      p.head(w, stream, [[":status", "200"]], false);
      for (let i = 0; i < 20_000; i++) w.frame(FrameType.DATA, 0, stream);
    },
    ErrorCode.ENHANCE_YOUR_CALM,
    true,
  );
});

Deno.test("h2c: a flood of empty DATA frames on a stream already over ends the connection (ENHANCE_YOUR_CALM)", async () => {
  let code = -1;
  await using up = h2Server(async (p) => {
    const first = (await p.request())!;
    const w = new FrameWriter();
    p.head(w, first.stream, [[":status", "204"]], true);
    await p.send(w);
    const second = (await p.request())!;
    for (let i = 0; i < 20_000; i++) w.frame(FrameType.DATA, 0, first.stream);
    await p.send(w).catch(() => {});
    void second;
    for (;;) {
      const f = await p.frame().catch(() => null);
      if (f === null) return;
      if (f.type === FrameType.GOAWAY) code = u32(f.payload, 4);
    }
  });
  await using client = closingClient();
  assert.equal((await client.send(request(`${up.url}/`, { protocol: "h2c" }))).status, 204);
  // The request not yet answered fails (502).
  await rejects(client.send(request(`${up.url}/`, { protocol: "h2c" })), "protocol");
  await waitFor(() => code !== -1);
  assert.equal(code, ErrorCode.ENHANCE_YOUR_CALM);
});

Deno.test("h2c: SETTINGS_INITIAL_WINDOW_SIZE that takes a stream's window past 2^31-1 is a FLOW_CONTROL_ERROR (RFC 9113 §6.9.2)", async () => {
  let outcome = "";
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    w.u32(FrameType.WINDOW_UPDATE, r.stream, 0x7fffffff - 65535);
    w.settings([[Setting.INITIAL_WINDOW_SIZE, 65536]]);
    await p.send(w);
    let acks = 0;
    for (;;) {
      const f = await p.frame().catch(() => null);
      if (f === null) return;
      if (f.type === FrameType.GOAWAY) outcome = `GOAWAY ${u32(f.payload, 4)}`;
      // The first ACK is of the preface's SETTINGS, the second of the change.
      if (f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) && ++acks === 2) outcome ||= "ACK";
    }
  });
  await using client = closingClient();
  const body = new ReadableStream<Uint8Array>({ pull: () => new Promise(() => {}) });
  const sent = client.send(request(`${up.url}/`, { protocol: "h2c", method: "POST", body }));
  sent.catch(() => {});
  await waitFor(() => outcome !== "");
  assert.equal(outcome, `GOAWAY ${ErrorCode.FLOW_CONTROL_ERROR}`);
  await rejects(sent, "protocol");
});

Deno.test("h2c: an upstream that allows no streams (SETTINGS_MAX_CONCURRENT_STREAMS 0) is not sent a connection per request", async () => {
  let conns = 0;
  await using up = h2Server(async (p) => {
    conns++;
    for (;;) {
      const r = await p.request();
      if (r === null) return;
      const w = new FrameWriter();
      w.u32(FrameType.RST_STREAM, r.stream, ErrorCode.REFUSED_STREAM);
      await p.send(w);
    }
  }, [[Setting.MAX_CONCURRENT_STREAMS, 0]]);
  await using client = closingClient();
  for (let i = 0; i < 5; i++) {
    const err = await rejects(
      client.send(request(`${up.url}/`, { protocol: "h2c" })),
      "upstream_reset",
    );
    assert.equal(err.sentNothing, true);
  }
  assert.ok(conns <= 2, `connections: ${conns}`);
});

Deno.test("h2c: a flood of interim (1xx) answers ends the connection (ENHANCE_YOUR_CALM)", async () => {
  await endsCalm((w, stream, p) => {
    for (let i = 0; i < 5_000; i++) {
      p.head(w, stream, [[":status", "103"], ["link", "</a>"]], false);
    }
    p.head(w, stream, [[":status", "200"]], true);
  });
});

Deno.test("h2c: pools() counts the client's own HTTP/2 connections (busy with streams, idle without)", async () => {
  let answer!: () => void;
  const answered = new Promise<void>((r) => answer = r);
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    await answered;
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "204"]], true);
    await p.send(w);
    while (await p.frame() !== null) { /* until Prox closes */ }
  });
  const client = createUpstreamClient();
  try {
    const row = () => client.pools().find((p) => p.h2Streams !== null)!;
    const res = client.send(request(`${up.url}/`, { protocol: "h2c" }));
    res.catch(() => {});
    await waitFor(() => row()?.busy === 1);
    assert.deepEqual([row().h2Streams, row().idle], [1, 0]);
    answer();
    assert.equal((await res).status, 204);
    await waitFor(() => row().h2Streams === 0);
    assert.deepEqual([row().busy, row().idle], [0, 1]);
  } finally {
    answer();
    await client.close();
  }
});

Deno.test("h2c: a response body the upstream pauses past timeouts.idle fails with a timeout, the stream reset", async () => {
  let reset = -1;
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "200"]], false);
    w.frame(FrameType.DATA, 0, r.stream, enc.encode("first"));
    await p.send(w);
    await watchReset(p, r.stream, (code) => reset = code);
  });
  await using client = closingClient();
  const t0 = performance.now();
  const res = await client.send(
    request(`${up.url}/`, { protocol: "h2c", timeouts: { ...T, idle: 200 } }),
  );
  const reader = res.body!.getReader();
  assert.equal(new TextDecoder().decode((await reader.read()).value), "first");
  await assert.rejects(reader.read(), (e: Error) => /idle for 200 ms/.test(e.message));
  assert.ok(performance.now() - t0 >= 200, "never before the idle timeout");
  await waitFor(() => reset !== -1, { timeoutMs: 3_000, what: "a reset" });
  assert.equal(reset, ErrorCode.CANCEL);
});

for (const how of ["signal", "clientSignal"] as const) {
  Deno.test(`h2c: a client that leaves before the answer head (${how}) resets the stream`, async () => {
    let reset = -1;
    await using up = h2Server(async (p) => {
      const r = (await p.request())!;
      await watchReset(p, r.stream, (code) => reset = code);
    });
    await using client = closingClient();
    const ac = new AbortController();
    let looked = false;
    const lookUp = () => (looked = true, ac.signal);
    const sent = client.send(
      request(`${up.url}/`, {
        protocol: "h2c",
        ...(how === "signal" ? { signal: ac.signal } : { clientSignal: lookUp }),
      }),
    );
    sent.catch(() => {});
    await waitFor(() => client.pools().find((p) => p.h2Streams !== null)?.h2Streams === 1);
    // A signal looked up only when needed: once the exchange has lasted a tick or two.
    if (how === "clientSignal") await waitFor(() => looked);
    ac.abort();
    await rejects(sent, "client_gone");
    await waitFor(() => reset !== -1, { timeoutMs: 3_000, what: "a reset" });
    assert.equal(reset, ErrorCode.CANCEL);
  });
}

Deno.test("h2c: an exchange answered at once never looks up the client's signal (it costs per request)", async () => {
  await using up = h2Server(async (p) => {
    for (;;) {
      const r = await p.request();
      if (r === null) return;
      const w = new FrameWriter();
      p.head(w, r.stream, [[":status", "200"]], false);
      w.frame(FrameType.DATA, Flag.END_STREAM, r.stream, enc.encode("ok"));
      await p.send(w);
    }
  });
  await using client = closingClient();
  let lookUps = 0;
  const clientSignal = () => (lookUps++, new AbortController().signal);
  for (let i = 0; i < 5; i++) {
    const res = await client.send(request(`${up.url}/`, { protocol: "h2c", clientSignal }));
    assert.equal(await res.text(), "ok");
  }
  assert.equal(lookUps, 0);
});

for (const how of ["GOAWAY", "REFUSED_STREAM"] as const) {
  Deno.test(`h2c: a streamed body the upstream did not process (${how}) before any of it was read goes again whole`, async () => {
    let conns = 0;
    let second!: () => void;
    const secondSeen = new Promise<void>((r) => second = r);
    await using up = h2Server(async (p) => {
      conns++;
      for (let n = 0;; n++) {
        const r = await p.request();
        if (r === null) return;
        const w = new FrameWriter();
        if (conns === 1 && n === 0) {
          if (how === "GOAWAY") w.goaway(0, ErrorCode.NO_ERROR);
          else w.u32(FrameType.RST_STREAM, r.stream, ErrorCode.REFUSED_STREAM);
          await p.send(w);
          if (how === "GOAWAY") return;
          continue;
        }
        second();
        let got = "";
        for (;;) {
          const f = await p.frame();
          if (f === null) return;
          if (f.type !== FrameType.DATA || f.stream !== r.stream) continue;
          got += new TextDecoder().decode(f.payload);
          if (f.flags & Flag.END_STREAM) break;
        }
        p.head(w, r.stream, [[":status", "200"]], false);
        w.frame(FrameType.DATA, Flag.END_STREAM, r.stream, enc.encode(got));
        await p.send(w);
      }
    });
    await using client = closingClient();
    // The body's first bytes come only once the request went again: none was read before.
    const parts = ["hello ", "world"];
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        await secondSeen;
        const part = parts.shift();
        if (part === undefined) c.close();
        else c.enqueue(enc.encode(part));
      },
    }, { highWaterMark: 0 });
    const res = await client.send(
      request(`${up.url}/`, { protocol: "h2c", method: "POST", body }),
    );
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "hello world");
    assert.equal(conns, how === "GOAWAY" ? 2 : 1);
  });
}

Deno.test("h2c: a streamed body refused once some of it was read is not sent again (it is not kept)", async () => {
  let streams = 0;
  await using up = h2Server(async (p) => {
    for (;;) {
      const r = await p.request();
      if (r === null) return;
      const w = new FrameWriter();
      if (++streams > 1) {
        p.head(w, r.stream, [[":status", "204"]], true);
        await p.send(w);
        continue;
      }
      // Refused once the body's first bytes came.
      for (;;) {
        const f = await p.frame();
        if (f === null) return;
        if (f.type === FrameType.DATA && f.stream === r.stream && f.payload.length > 0) break;
      }
      w.u32(FrameType.RST_STREAM, r.stream, ErrorCode.REFUSED_STREAM);
      await p.send(w);
    }
  });
  await using client = closingClient();
  let cancelled = false;
  let sent = false;
  const body = new ReadableStream<Uint8Array>({
    pull(c): Promise<void> | void {
      if (sent) return new Promise(() => {});
      sent = true;
      c.enqueue(enc.encode("hello"));
    },
    cancel: () => void (cancelled = true),
  }, { highWaterMark: 0 });
  await rejects(
    client.send(request(`${up.url}/`, { protocol: "h2c", method: "POST", body })),
    "upstream_reset",
  );
  assert.equal(streams, 1);
  // The rest of the body is not left hanging: it is cancelled.
  await waitFor(() => cancelled, { what: "the body cancelled" });
});

Deno.test("h2c: RST_STREAM on stream 0 or an idle stream, WINDOW_UPDATE on an idle stream and a padded HEADERS without its pad length are connection errors (RFC 9113 §5.1, §6.2, §6.4)", async (t) => {
  const cases: [string, (w: FrameWriter, stream: number) => void, number][] = [
    [
      "RST_STREAM on 0",
      (w) => w.u32(FrameType.RST_STREAM, 0, ErrorCode.CANCEL),
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "RST_STREAM idle",
      (w, s) => w.u32(FrameType.RST_STREAM, s + 2, ErrorCode.CANCEL),
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "RST_STREAM even",
      (w) => w.u32(FrameType.RST_STREAM, 2, ErrorCode.CANCEL),
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "WINDOW_UPDATE idle",
      (w, s) => w.u32(FrameType.WINDOW_UPDATE, s + 2, 1),
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "HEADERS padded, empty",
      (w, s) => w.frame(FrameType.HEADERS, Flag.PADDED | Flag.END_HEADERS, s),
      ErrorCode.FRAME_SIZE_ERROR,
    ],
  ];
  for (const [name, bad, code] of cases) {
    await t.step(name, () => endsCalm((w, stream) => bad(w, stream), code));
  }
});

Deno.test("h2c: a 103's fields go to the request's hints (without content-length), a 100's do not", async () => {
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "100"], ["x-interim", "1"]], false);
    p.head(w, r.stream, [[":status", "103"], ["link", "</a.css>; rel=preload"], [
      "content-length",
      "0",
    ]], false);
    p.head(w, r.stream, [[":status", "200"], ["content-length", "2"]], false);
    w.frame(FrameType.DATA, Flag.END_STREAM, r.stream, enc.encode("ok"));
    await p.send(w);
    await p.frame(); // until Prox closes
  });
  const got: [string, string][][] = [];
  await using client = closingClient();
  const res = await client.send(
    request(`${up.url}/`, { protocol: "h2c", hints: { earlyHints: (f) => got.push(f) } }),
  );
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "ok");
  assert.deepEqual(got, [[["link", "</a.css>; rel=preload"]]]);
});

Deno.test("h2c: a lean request's answer is a WireResponse (no Fetch Response and Headers), fields, body and trailers as they came", async () => {
  await using up = h2Server(async (p) => {
    for (;;) {
      const r = await p.request();
      if (r === null) return;
      const w = new FrameWriter();
      p.head(w, r.stream, [[":status", "200"], ["content-type", "application/grpc"], [
        "x-a",
        "1",
      ], ["x-a", "2"]], false);
      w.frame(FrameType.DATA, 0, r.stream, enc.encode("body"));
      p.head(w, r.stream, [["grpc-status", "0"]], true);
      await p.send(w);
    }
  });
  await using client = closingClient();
  const lean = await client.send(
    request(`${up.url}/svc/Call`, { protocol: "h2c", lean: true }),
  );
  assert.ok(lean instanceof WireResponse);
  assert.equal(lean.status, 200);
  assert.equal(lean.headers.get("x-a"), "1, 2");
  assert.equal(await lean.text(), "body");
  assert.deepEqual((lean as unknown as CountedResponse)[BODY_BYTES]!.trailers, [[
    "grpc-status",
    "0",
  ]]);
  const plain = await client.send(request(`${up.url}/svc/Call`, { protocol: "h2c" }));
  assert.ok(!(plain instanceof WireResponse));
  assert.ok(plain instanceof Response);
  assert.equal(await plain.text(), "body");
});

Deno.test("h2c: a lean answer whose body came whole with its head (no trailers) is handed on as bytes; one still coming, as a stream", async () => {
  const later = Promise.withResolvers<void>();
  await using up = h2Server(async (p) => {
    let n = 0;
    for (;;) {
      const r = await p.request();
      if (r === null) return;
      const w = new FrameWriter();
      p.head(w, r.stream, [[":status", "200"], ["content-type", "text/plain"]], false);
      if (n++ === 0) {
        // Head and body in one write: in the same read, most likely.
        w.frame(FrameType.DATA, 0, r.stream, enc.encode("whole "));
        w.frame(FrameType.DATA, Flag.END_STREAM, r.stream, enc.encode("body"));
        await p.send(w);
      } else {
        await p.send(w);
        await later.promise;
        const d = new FrameWriter();
        d.frame(FrameType.DATA, Flag.END_STREAM, r.stream, enc.encode("later"));
        await p.send(d);
      }
    }
  });
  const client = createUpstreamClient();
  try {
    const whole = await client.send(request(`${up.url}/a`, { protocol: "h2c", lean: true }));
    assert.ok(whole instanceof WireResponse);
    assert.equal(new TextDecoder().decode(whole[RAW_BODY]), "whole body");
    const counter = (whole as unknown as CountedResponse)[BODY_BYTES]!;
    assert.equal(counter.bytes, 10);
    assert.ok(counter.ended);
    const coming = await client.send(request(`${up.url}/b`, { protocol: "h2c", lean: true }));
    assert.ok(coming instanceof WireResponse);
    assert.equal(coming[RAW_BODY], undefined);
    later.resolve();
    assert.equal(await coming.text(), "later");
  } finally {
    later.resolve();
    await client.close();
  }
});

Deno.test("h2c: an answer trickled in one-byte DATA frames, unread meanwhile, is held in few chunks", async () => {
  // 10,000 frames of one byte, within the stream's window: a buffer each while the client does
  // not read held some 200 bytes of objects per byte (1.6 GB for the connection's 8 MiB window).
  const N = 10_000;
  const acked = Promise.withResolvers<void>();
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "200"]], false);
    for (let i = 0; i < N; i++) w.frame(FrameType.DATA, 0, r.stream, Uint8Array.of(i & 0xff));
    w.frame(FrameType.DATA, Flag.END_STREAM, r.stream);
    w.frame(FrameType.PING, 0, 0, new Uint8Array(8));
    await p.send(w);
    for (;;) {
      const f = await p.frame();
      if (f === null) return;
      if (f.type === FrameType.PING && (f.flags & Flag.ACK)) acked.resolve();
    }
  });
  await using client = closingClient();
  const res = await client.send(request(`${up.url}/`, { protocol: "h2c" }));
  await acked.promise; // every DATA frame was read by Prox, none by the client
  const chunks: Uint8Array[] = [];
  for await (const c of res.body!) chunks.push(c);
  assert.ok(chunks.length <= 20, `${chunks.length} chunks`);
  const got = chunks.flatMap((c) => [...c]);
  assert.deepEqual(got, Array.from({ length: N }, (_, i) => i & 0xff));
});

Deno.test("h2c: an upstream that stops reading the connection (windows open) ends the upload at timeouts.idle", async () => {
  // The windows are as large as HTTP/2 allows, so flow control never stops the body: the socket
  // does, once the upstream reads nothing and the kernel's buffers are full.
  const { promise: done, resolve: finish } = Promise.withResolvers<void>();
  let conns = 0;
  await using up = h2Server(async (p, n) => {
    conns++;
    const w = new FrameWriter();
    if (n > 0) {
      const r = (await p.request())!;
      p.head(w, r.stream, [[":status", "204"]], true);
      await p.send(w);
      return void await p.frame();
    }
    w.u32(FrameType.WINDOW_UPDATE, 0, 0x7fffffff - 65535);
    await p.send(w);
    await p.request();
    await done; // reads nothing more
  }, [[Setting.INITIAL_WINDOW_SIZE, 0x7fffffff]]);
  using _finish = { [Symbol.dispose]: () => finish() };
  const chunk = new Uint8Array(64 * 1024);
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull: (c) => c.enqueue(chunk),
    cancel: () => {
      cancelled = true;
    },
  }, { highWaterMark: 0 });
  const client = createUpstreamClient();
  try {
    const sent = client.send(
      request(`${up.url}/`, {
        protocol: "h2c",
        method: "POST",
        body,
        timeouts: { ...T, idle: 300 },
      }),
    );
    const limit = new Promise<"hung">((r) => setTimeout(() => r("hung"), 5_000));
    const got = await Promise.race([sent.then(() => "answered", (e) => e), limit]);
    assert.ok(got instanceof ProxyError, `no error: ${got}`);
    assert.equal(got.kind, "timeout");
    assert.match(got.message, /read none of the request body for 300 ms/);
    assert.ok(cancelled, "the client's body is cancelled");
    // That connection takes no more streams: the next request goes on a new one.
    const next = await client.send(request(`${up.url}/`, { protocol: "h2c" }));
    assert.equal(next.status, 204);
    assert.equal(conns, 2);
  } finally {
    finish();
    await client.close();
  }
});

Deno.test("h2c: a new connection whose SETTINGS name no stream limit is not held to the limit another connection was given", async () => {
  // The first connection allows one stream; the second says nothing of a limit (RFC 9113
  // §6.5.2: none), so it takes more than one stream, as any other connection would.
  const acked: boolean[] = [];
  const held: number[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  await using up = h2Server(async (p, n) => {
    acked[n] = false;
    held[n] = 0;
    if (n === 0) {
      const w = new FrameWriter();
      w.settings([[Setting.MAX_CONCURRENT_STREAMS, 1]]);
      await p.send(w);
    }
    const answers: Promise<void>[] = [];
    for (let first = n === 0;;) {
      const f = await p.frame();
      if (f === null) break;
      if (f.type === FrameType.SETTINGS) {
        const w = new FrameWriter();
        if (f.flags & Flag.ACK) acked[n] = true;
        else w.frame(FrameType.SETTINGS, Flag.ACK, 0);
        await p.send(w);
        continue;
      }
      if (f.type !== FrameType.HEADERS) continue;
      p.dec.decode(f.payload, () => {});
      const answer = async () => {
        const w = new FrameWriter();
        p.head(w, f.stream, [[":status", "204"]], true);
        await p.send(w);
      };
      if (first) await answer();
      else {
        held[n]++;
        answers.push(gate.then(answer));
      }
      first = false;
    }
    await Promise.all(answers);
  });
  const client = createUpstreamClient();
  const send = sender(client, up.url);
  try {
    // Answered after both SETTINGS: the client knows the first connection's limit.
    assert.equal((await send()).status, 204);
    const a = send();
    await waitFor(() => held[0] === 1, { what: "the first connection's stream" });
    const b = send();
    await waitFor(() => held[1] === 1 && acked[1], { what: "the second connection's stream" });
    const c = send();
    await waitFor(() => held[1] + (held[2] ?? 0) === 2, { what: "the third request" });
    assert.equal(held.length, 2, "no third connection");
    release();
    for (const res of await Promise.all([a, b, c])) assert.equal(res.status, 204);
  } finally {
    release();
    await client.close();
  }
});

/** An HPACK integer with an `n`-bit prefix under `flags` (RFC 7541 §5.1). */
function hpackInt(v: number, n: number, flags: number): number[] {
  const max = (1 << n) - 1;
  if (v < max) return [flags | v];
  const out = [flags | max];
  for (v -= max; v >= 128; v >>= 7) out.push((v & 0x7f) | 0x80);
  out.push(v);
  return out;
}

/** A literal field with a new name (RFC 7541 §6.2): `indexed` adds it to the dynamic table. */
function hpackLiteral(name: string, value: string, indexed: boolean): number[] {
  const str = (s: string) => [...hpackInt(s.length, 7, 0), ...enc.encode(s)];
  return [indexed ? 0x40 : 0x00, ...str(name), ...str(value)];
}

Deno.test("h2c: an answer head over the size limit fails its stream only, the connection's field table kept in step", async () => {
  await using up = h2Server(async (p) => {
    for (;;) {
      const r = await p.request();
      if (r === null) return;
      const w = new FrameWriter();
      if (r.fields.get(":path") === "/big") {
        // 70 KB of fields (in HEADERS and CONTINUATION frames), then one the table keeps.
        const block = [0x88]; // :status 200
        for (let i = 0; i < 70; i++) {
          block.push(...hpackLiteral(`x-f${i}`, "a".repeat(1000), false));
        }
        block.push(...hpackLiteral("x-last", "kept", true));
        w.headers(r.stream, Uint8Array.from(block), true, 16384);
      } else {
        // :status 200, then the field the big block added to the table (index 62).
        w.headers(r.stream, Uint8Array.from([0x88, 0x80 | 62]), true, 16384);
      }
      await p.send(w);
    }
  });
  await using client = closingClient();
  const err = await rejects(
    client.send(request(`${up.url}/big`, { protocol: "h2c" })),
    "protocol",
  );
  assert.match(err.message, /sent fields over 65536 bytes/);
  const res = await client.send(request(`${up.url}/small`, { protocol: "h2c" }));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-last"), "kept");
  assert.equal(client.pools().find((p) => p.h2Streams !== null)?.busy ?? 0, 0);
});

Deno.test("h2c: a GOAWAY while streams are open: those at or under its last stream finish, those above go again on a new connection", async () => {
  let conns = 0;
  const { promise: retried, resolve: retry } = Promise.withResolvers<void>();
  await using up = h2Server(async (p, n) => {
    conns++;
    if (n > 0) {
      for (;;) {
        const r = await p.request();
        if (r === null) return;
        retry();
        const w = new FrameWriter();
        p.head(w, r.stream, [[":status", "200"], ["x-conn", String(n)]], false);
        w.frame(FrameType.DATA, Flag.END_STREAM, r.stream, enc.encode(`again ${r.stream}`));
        await p.send(w);
      }
    }
    const first = (await p.request())!;
    let w = new FrameWriter();
    // The first stream's head, then a GOAWAY that keeps it; its body comes after.
    p.head(w, first.stream, [[":status", "200"]], false);
    await p.send(w);
    const second = (await p.request())!;
    w = new FrameWriter();
    w.goaway(first.stream, ErrorCode.NO_ERROR);
    w.frame(FrameType.DATA, 0, first.stream, enc.encode("still "));
    await p.send(w);
    await retried; // the second request goes again meanwhile
    w = new FrameWriter();
    w.frame(FrameType.DATA, Flag.END_STREAM, first.stream, enc.encode(`here ${second.stream}`));
    await p.send(w);
    await p.frame(); // until the client closes the connection
  });
  await using client = closingClient();
  const a = await client.send(request(`${up.url}/a`, { protocol: "h2c" }));
  const b = client.send(request(`${up.url}/b`, { protocol: "h2c" }));
  const resB = await b;
  assert.equal(resB.headers.get("x-conn"), "1");
  assert.equal(await resB.text(), "again 1");
  assert.equal(await a.text(), "still here 3");
  assert.equal(conns, 2);
  // The first connection closes once its last stream is over.
  await waitFor(() => client.pools().find((p) => p.h2Streams !== null)?.idle === 1);
});

Deno.test("h2c: a whole answer is read whole after the upload it did not wait for is given up (timeouts.idle)", async () => {
  // The upstream answers at once, body, trailers and all, and never opens a window for the rest
  // of the request body (RFC 9113 §8.1: a server may answer before the request's end).
  let reset = -1;
  await using up = h2Server(async (p) => {
    const r = (await p.request())!;
    const w = new FrameWriter();
    p.head(w, r.stream, [[":status", "200"]], false);
    w.frame(FrameType.DATA, 0, r.stream, enc.encode("the whole answer"));
    p.head(w, r.stream, [["x-done", "yes"]], true);
    await p.send(w);
    await watchReset(p, r.stream, (code) => reset = code);
  });
  await using client = closingClient();
  const res = await client.send(
    request(`${up.url}/`, {
      protocol: "h2c",
      method: "POST",
      body: new Uint8Array(200_000),
      timeouts: { ...T, idle: 200 },
    }),
  ) as CountedResponse;
  // The client reads only once the upload was given up.
  await waitFor(() => reset !== -1, { timeoutMs: 3_000, what: "a reset" });
  assert.equal(reset, ErrorCode.CANCEL);
  assert.equal(await res.text(), "the whole answer");
  assert.deepEqual(res[BODY_BYTES]?.trailers, [["x-done", "yes"]]);
});

Deno.test("h2c: SETTINGS_MAX_CONCURRENT_STREAMS lowered under the streams open: they finish, new ones go elsewhere", async () => {
  const acks: number[] = [];
  const held: number[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  await using up = h2Server(async (p, n) => {
    acks[n] = 0;
    held[n] = 0;
    const answers: Promise<void>[] = [];
    for (;;) {
      const f = await p.frame();
      if (f === null) break;
      if (f.type === FrameType.SETTINGS) {
        const w = new FrameWriter();
        if (f.flags & Flag.ACK) acks[n]++;
        else w.frame(FrameType.SETTINGS, Flag.ACK, 0);
        await p.send(w);
        continue;
      }
      if (f.type !== FrameType.HEADERS) continue;
      p.dec.decode(f.payload, () => {});
      const stream = f.stream;
      if (n === 0 && ++held[0] === 3) {
        // Three streams open: from now on one at most.
        const w = new FrameWriter();
        w.settings([[Setting.MAX_CONCURRENT_STREAMS, 1]]);
        await p.send(w);
      } else if (n > 0) held[n]++;
      answers.push(gate.then(async () => {
        const w = new FrameWriter();
        p.head(w, stream, [[":status", "204"]], true);
        await p.send(w);
      }));
    }
    await Promise.all(answers);
  });
  const client = createUpstreamClient();
  const send = sender(client, up.url);
  try {
    const first = [send(), send(), send()];
    // The lowered limit is known (its ACK, the second, came) before the next request.
    await waitFor(() => held[0] === 3 && acks[0] === 2, { what: "the lowered limit" });
    const next = send();
    await waitFor(() => held.slice(1).some((h) => h === 1), { what: "the next request" });
    assert.equal(held[0], 3, "the first connection took no more streams");
    release();
    for (const res of await Promise.all([...first, next])) assert.equal(res.status, 204);
  } finally {
    release();
    await client.close();
  }
});

/**
 * An upstream that takes `uploads` POSTs of `size` bytes on one connection through the h2c client
 * itself (its `windowWakes` counted), the client's stream windows `window`, and answers each once
 * its body is whole (on streams 3, 5, …: a GET on stream 1 goes first, for the SETTINGS to be in
 * force). `windowUpdate` and the like write frames to the client; `data` counts the DATA bytes
 * that came on each stream, `order` the streams of the DATA frames in turn.
 */
async function waitingUploads(uploads: number, size: number, window: number) {
  const data = new Map<number, number>();
  const order: number[] = [];
  let heads = 0;
  let pings = 0;
  let peer!: Peer;
  const up = h2Server(async (p) => {
    peer = p;
    for (;;) {
      const f = await p.frame();
      if (f === null) return;
      if (f.type === FrameType.PING && (f.flags & Flag.ACK)) pings++;
      if (f.type === FrameType.HEADERS) {
        p.dec.decode(f.payload, () => {});
        if (f.flags & Flag.END_STREAM) {
          // The first request, a GET, that makes sure the SETTINGS are in force.
          const w = new FrameWriter();
          p.head(w, f.stream, [[":status", "200"]], true);
          await p.send(w);
          continue;
        }
        heads++;
        data.set(f.stream, 0);
      }
      if (f.type !== FrameType.DATA) continue;
      data.set(f.stream, data.get(f.stream)! + f.payload.length);
      if (f.payload.length > 0) order.push(f.stream);
      if (f.flags & Flag.END_STREAM) {
        const w = new FrameWriter();
        p.head(w, f.stream, [[":status", "200"]], true);
        await p.send(w);
      }
    }
  }, [[Setting.INITIAL_WINDOW_SIZE, window]]);
  const client = createH2cClient({
    maxHeaderBytes: 65536,
    idleTimeout: 0,
    connect: () => Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(up.url).port) }),
  });
  const first = await client.send(request(`${up.url}/`, { protocol: "h2c" }), "k", () => {});
  await first.body?.cancel();
  const answers: Promise<Response>[] = [];
  for (let i = 0; i < uploads; i++) {
    const body = new Uint8Array(size);
    answers.push(
      client.send(request(`${up.url}/`, { protocol: "h2c", method: "POST", body }), "k", () => {}),
    );
  }
  for (const a of answers) a.catch(() => {}); // a failed assertion closes the client first
  const total = () => [...data.values()].reduce((a, b) => a + b, 0);
  const w = new FrameWriter();
  return {
    data,
    order,
    total,
    pings: () => pings,
    wakes: () => client.stats("k").windowWakes,
    /** Waits until every request's head and `bytes` of their bodies came. */
    until: (bytes: number) =>
      waitFor(() => heads === uploads && total() === bytes, { what: `${bytes} bytes` }),
    async windowUpdate(stream: number, inc: number) {
      w.u32(FrameType.WINDOW_UPDATE, stream, inc);
      await peer.send(w);
    },
    async settings(values: [number, number][]) {
      w.settings(values);
      await peer.send(w);
    },
    async ping() {
      w.frame(FrameType.PING, 0, 0, new Uint8Array(8));
      await peer.send(w);
    },
    /** Writes the frames `write` adds, in one write. */
    async send(write: (w: FrameWriter) => void) {
      write(w);
      await peer.send(w);
    },
    /** Every answer came (200), each body whole, but those of the streams `reset`. */
    async finish(reset: number[] = []) {
      const all = await Promise.allSettled(answers);
      for (let i = 0; i < all.length; i++) {
        const a = all[i];
        if (reset.includes(3 + 2 * i)) {
          assert.equal(a.status, "rejected");
          continue;
        }
        assert.equal(a.status, "fulfilled");
        if (a.status === "fulfilled") {
          assert.equal(a.value.status, 200);
          await a.value.body?.cancel();
        }
      }
      for (const [stream, n] of data) {
        if (!reset.includes(stream)) assert.equal(n, size, `stream ${stream}`);
      }
    },
    async [Symbol.asyncDispose]() {
      await client.close();
      await up[Symbol.asyncDispose]();
    },
  };
}

Deno.test("h2c: a connection WINDOW_UPDATE wakes the uploads it has window for, in turn", async () => {
  // 20 uploads of 20,000 bytes in the connection's 65,535: three go whole, the fourth in part,
  // and 17 wait. Each WINDOW_UPDATE of 1,000 has room for one of them: waking all 17 for it cost
  // 17 wake-ups per frame, and the first woke first each time and took every one.
  await using t = await waitingUploads(20, 20_000, 1 << 20);
  await t.until(65_535);
  const served: number[] = [];
  for (let i = 1; i <= 10; i++) {
    await t.windowUpdate(0, 1000);
    await t.until(65_535 + 1000 * i);
    served.push(t.order.at(-1)!);
  }
  assert.equal(new Set(served).size, 10, `streams served: ${served}`);
  assert.ok(t.wakes() <= 10, `${t.wakes()} wake-ups for 10 WINDOW_UPDATEs`);
  await t.windowUpdate(0, 20 * 20_000);
  await t.finish();
});

Deno.test("h2c: a connection WINDOW_UPDATE does not wake uploads waiting for their stream's window", async () => {
  await using t = await waitingUploads(20, 20_000, 100);
  await t.until(2000);
  await t.windowUpdate(0, 1000);
  await t.ping();
  await waitFor(() => t.pings() === 1, { what: "the PING's ACK" });
  assert.equal(t.wakes(), 0);
  // A stream's own WINDOW_UPDATE wakes that stream alone.
  await t.windowUpdate(7, 500);
  await waitFor(() => t.data.get(7) === 600, { what: "stream 7's 500 bytes" });
  assert.equal(t.wakes(), 1);
  assert.equal(t.total(), 2500);
  for (let i = 0; i < 20; i++) await t.windowUpdate(3 + 2 * i, 20_000);
  await t.windowUpdate(0, 20 * 20_000);
  await t.finish();
});

Deno.test("h2c: a larger SETTINGS_INITIAL_WINDOW_SIZE lets the uploads waiting for their stream's window go on", async () => {
  await using t = await waitingUploads(20, 20_000, 100);
  await t.until(2000);
  await t.settings([[Setting.INITIAL_WINDOW_SIZE, 1100]]);
  await t.until(20 * 1100);
  assert.equal(t.wakes(), 20);
  await t.windowUpdate(0, 20 * 20_000);
  await t.settings([[Setting.INITIAL_WINDOW_SIZE, 20_000]]);
  await t.finish();
});

Deno.test("h2c: window set aside for an upload woken to send goes to the next in turn when its stream is reset first", async () => {
  // Stream 9 sent part of its body and waits first; the WINDOW_UPDATE sets 1,000 bytes aside for
  // it, and the RST_STREAM read with it ends it before it runs: the 1,000 go to stream 11.
  await using t = await waitingUploads(20, 20_000, 1 << 20);
  await t.until(65_535);
  await t.send((w) => {
    w.u32(FrameType.WINDOW_UPDATE, 0, 1000);
    w.u32(FrameType.RST_STREAM, 9, ErrorCode.CANCEL);
  });
  await t.until(66_535);
  assert.equal(t.data.get(11), 1000);
  assert.equal(t.wakes(), 2);
  await t.windowUpdate(0, 20 * 20_000);
  await t.finish([9]);
});

Deno.test("h2c: window an upload was woken for and did not use goes to the next in turn when its stream ends while its writes wait", async () => {
  // Stream 3 (4 MiB) and stream 5 wait for the connection window; a WINDOW_UPDATE of 1 MiB is
  // all stream 3's. It sends until the writes wait (the socket takes nothing), is reset there,
  // and gives up what it did not send: stream 5 must get it, no further WINDOW_UPDATE coming.
  let frames!: Peer;
  const data = new Map<number, number>();
  const heads: number[] = [];
  const up = h2Server(async (p) => {
    frames = p;
    for (;;) {
      const f = await p.frame();
      if (f === null) return;
      if (f.type === FrameType.HEADERS) {
        p.dec.decode(f.payload, () => {});
        heads.push(f.stream);
        if (f.flags & Flag.END_STREAM) {
          const w = new FrameWriter();
          p.head(w, f.stream, [[":status", "200"]], true);
          await p.send(w);
        }
      }
      if (f.type !== FrameType.DATA) continue;
      data.set(f.stream, (data.get(f.stream) ?? 0) + f.payload.length);
      if (f.flags & Flag.END_STREAM) {
        const w = new FrameWriter();
        p.head(w, f.stream, [[":status", "200"]], true);
        await p.send(w);
      }
    }
  }, [[Setting.INITIAL_WINDOW_SIZE, 0x7fffffff]]);
  // The client's socket: writes wait (as when the kernel's buffers are full) while `held`.
  let held: PromiseWithResolvers<void> | null = null;
  let heldWrites = 0;
  const client = createH2cClient({
    maxHeaderBytes: 65536,
    idleTimeout: 0,
    connect: async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(up.url).port) });
      return {
        read: (b: Uint8Array) => c.read(b),
        write: async (b: Uint8Array) => {
          if (held) {
            heldWrites++;
            await held.promise;
          }
          return await c.write(b);
        },
        close: () => c.close(),
      };
    },
  });
  try {
    const first = await client.send(request(`${up.url}/`, { protocol: "h2c" }), "k", () => {});
    await first.body?.cancel();
    const post = (size: number) =>
      client.send(
        request(`${up.url}/`, { protocol: "h2c", method: "POST", body: new Uint8Array(size) }),
        "k",
        () => {},
      );
    const big = post(4 << 20);
    big.catch(() => {});
    await waitFor(() => data.get(3) === 65_535, { what: "stream 3's first 65,535 bytes" });
    const small = post(1000);
    small.catch(() => {});
    await waitFor(() => heads.includes(5), { what: "stream 5's head" });
    held = Promise.withResolvers<void>();
    const w = new FrameWriter();
    w.u32(FrameType.WINDOW_UPDATE, 0, 1 << 20);
    await frames.send(w);
    // Stream 3 sent into the socket until its writes had to wait.
    await waitFor(() => heldWrites > 0, { what: "a write waiting" });
    w.u32(FrameType.RST_STREAM, 3, ErrorCode.CANCEL);
    await frames.send(w);
    await assert.rejects(big);
    const gate = held;
    held = null;
    gate.resolve();
    const res = await small;
    assert.equal(res.status, 200);
    assert.equal(data.get(5), 1000);
  } finally {
    held?.resolve();
    await client.close();
    await up[Symbol.asyncDispose]();
  }
});
