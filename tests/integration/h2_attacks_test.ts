// Prox's own HTTP/2 engine against a client that breaks RFC 9113 on purpose (raw frames over h2c):
// frames on streams the client may not use, flow-control windows pushed past their bounds,
// floods of frames that ask work without a request, field blocks too large or badly coded, and
// request bodies that do not match their content-length.
import assert from "node:assert/strict";
import { interopTest, run, startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { RawH2c } from "./_raw_h2.ts";
import { ErrorCode, Flag, FrameType } from "../../src/adapters/h2/frames.ts";

// These tests are of the engine itself, even when the suite runs on Deno.serve.
onProxEngines();

function config(upstream: string): string {
  return `health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${upstream}"
`;
}

const be32 = (n: number) => Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);

Deno.test("DATA, WINDOW_UPDATE or RST_STREAM on an even (server) stream id is a connection PROTOCOL_ERROR", async () => {
  // No server push: an even stream is idle for good, and a frame other than HEADERS or PRIORITY
  // on an idle stream is a connection error (RFC 9113 §5.1), even below the last stream opened.
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const frames: [number, Uint8Array][] = [
    [FrameType.RST_STREAM, be32(ErrorCode.CANCEL)],
    [FrameType.WINDOW_UPDATE, be32(1)],
    [FrameType.DATA, Uint8Array.of(1)],
  ];
  for (const [type, payload] of frames) {
    const c = await RawH2c.open(prox.port);
    try {
      c.request(5, "/first");
      await c.flush();
      await waitFor(() => c.on(5, FrameType.DATA).length > 0, { what: "the first answer" });
      c.out.frame(type, 0, 2, payload);
      await c.flush();
      await c.settled();
      assert.equal(c.goaway(), ErrorCode.PROTOCOL_ERROR, `frame type ${type}`);
    } finally {
      await c.close();
    }
  }
});

Deno.test("WINDOW_UPDATEs past 2^31-1 or of zero are FLOW_CONTROL_ERROR and PROTOCOL_ERROR, on the connection or the stream", async () => {
  let release!: () => void;
  const held = new Promise<void>((r) => release = r);
  await using up = await startUpstream(async () => {
    await held;
    return new Response("late");
  });
  await using prox = await startProxy(config(up.url));
  try {
    for (
      const [id, inc, code] of [[0, 0x7fffffff, ErrorCode.FLOW_CONTROL_ERROR], [
        0,
        0,
        ErrorCode.PROTOCOL_ERROR,
      ]]
    ) {
      const c = await RawH2c.open(prox.port);
      try {
        c.out.u32(FrameType.WINDOW_UPDATE, id, inc);
        await c.flush();
        await waitFor(() => c.closed || c.goaway() !== undefined, { what: "the GOAWAY" });
        assert.equal(c.goaway(), code);
      } finally {
        await c.close();
      }
    }
    const c = await RawH2c.open(prox.port);
    try {
      c.request(1, "/a");
      c.request(3, "/b");
      c.out.u32(FrameType.WINDOW_UPDATE, 1, 0x7fffffff);
      c.out.u32(FrameType.WINDOW_UPDATE, 3, 0);
      await c.settled();
      await waitFor(() => c.error(1) !== undefined && c.error(3) !== undefined, { what: "resets" });
      assert.equal(c.error(1), ErrorCode.FLOW_CONTROL_ERROR);
      assert.equal(c.error(3), ErrorCode.PROTOCOL_ERROR);
      assert.equal(c.goaway(), undefined);
    } finally {
      await c.close();
    }
  } finally {
    release();
  }
});

Deno.test("floods of SETTINGS, PRIORITY or empty DATA end the connection with ENHANCE_YOUR_CALM", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const floods: [string, (c: RawH2c) => void][] = [
    ["SETTINGS", (c) => c.out.settings([])],
    ["PRIORITY", (c) => c.out.frame(FrameType.PRIORITY, 0, 7, Uint8Array.of(0, 0, 0, 0, 16))],
    ["empty DATA", (c) => c.out.frame(FrameType.DATA, 0, 3, new Uint8Array(0))],
  ];
  for (const [what, frame] of floods) {
    const c = await RawH2c.open(prox.port);
    try {
      // Stream 3 open with a body on its way; stream 1 answered.
      c.request(1, "/a");
      c.request(3, "/b", false, "POST");
      await c.flush();
      for (let round = 0; round < 20 && !c.closed && c.goaway() === undefined; round++) {
        for (let i = 0; i < 1000; i++) frame(c);
        await c.flush().catch(() => {});
      }
      await waitFor(() => c.closed || c.goaway() !== undefined, { what: `the GOAWAY (${what})` });
      assert.equal(c.goaway(), ErrorCode.ENHANCE_YOUR_CALM, what);
    } finally {
      await c.close();
    }
  }
});

Deno.test("a field block past SETTINGS_MAX_HEADER_LIST_SIZE gets 431 and the connection goes on", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    const fields: [string, string][] = [
      [":method", "GET"],
      [":scheme", "http"],
      [":path", "/big"],
      [":authority", "localhost"],
    ];
    for (let i = 0; i < 20; i++) fields.push([`x-big-${i}`, "v".repeat(4000)]);
    c.enc.begin();
    for (const [n, v] of fields) c.enc.field(n, v);
    c.out.headers(1, c.enc.block, true, 16384);
    c.request(3, "/fine");
    await c.flush();
    await waitFor(() => c.status(1) !== undefined && c.status(3) !== undefined, {
      what: "both answers",
    });
    assert.equal(c.status(1), "431");
    assert.equal(c.status(3), "200");
  } finally {
    await c.close();
  }
});

Deno.test("a field block with bad Huffman padding is a connection COMPRESSION_ERROR", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    // :method GET, :scheme http, :path as a Huffman string "a" padded with 11 bits of ones.
    c.out.headers(1, Uint8Array.of(0x82, 0x86, 0x04, 0x82, 0x1f, 0xff), true, 16384);
    await c.flush();
    await waitFor(() => c.closed || c.goaway() !== undefined, { what: "the GOAWAY" });
    assert.equal(c.goaway(), ErrorCode.COMPRESSION_ERROR);
  } finally {
    await c.close();
  }
});

Deno.test("a body longer or shorter than its content-length is a stream PROTOCOL_ERROR, and never reaches the upstream whole", async () => {
  const got: string[] = [];
  await using up = await startUpstream(async (req) => {
    try {
      got.push(`${req.headers.get("content-length")}:${(await req.arrayBuffer()).byteLength}`);
    } catch {
      got.push("failed");
    }
    return new Response("ok");
  });
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    const post = (id: number, length: number) => {
      c.fields(id, [
        [":method", "POST"],
        [":scheme", "http"],
        [":path", `/p${id}`],
        [":authority", "localhost"],
        ["content-length", String(length)],
      ], false);
    };
    post(1, 10);
    c.out.frame(FrameType.DATA, Flag.END_STREAM, 1, new Uint8Array(20));
    post(3, 10);
    c.out.frame(FrameType.DATA, Flag.END_STREAM, 3, new Uint8Array(5));
    post(5, 10);
    await c.flush();
    await c.settled();
    // Stream 5's body goes past its length in a later frame, after some of it was taken.
    c.out.frame(FrameType.DATA, 0, 5, new Uint8Array(6));
    await c.settled();
    c.out.frame(FrameType.DATA, Flag.END_STREAM, 5, new Uint8Array(6));
    await c.flush();
    await waitFor(() => [1, 3, 5].every((id) => c.error(id) !== undefined), { what: "resets" });
    for (const id of [1, 3, 5]) assert.equal(c.error(id), ErrorCode.PROTOCOL_ERROR, `stream ${id}`);
    // Whatever reached the upstream did not arrive as a whole request of another length.
    for (const g of got) assert.ok(g === "failed" || g === "10:10", g);
  } finally {
    await c.close();
  }
});

Deno.test("requests without :path, with a :path not starting with /, or with a connection-specific field are malformed", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    const base: [string, string][] = [[":method", "GET"], [":scheme", "http"], [":authority", "a"]];
    const cases: [string, string][][] = [
      base,
      [...base, [":path", "x"]],
      [...base, [":path", "/"], [":status", "200"]],
      [...base, [":path", "/"], ["keep-alive", "1"]],
      [...base, [":path", "/"], ["proxy-connection", "1"]],
      [...base, [":path", "/"], ["transfer-encoding", "chunked"]],
      [...base, [":path", "/"], ["upgrade", "h2c"]],
      [...base, [":path", "/"], ["te", "gzip"]],
      [[":path", "/"], ["x", "1"], ...base],
    ];
    cases.forEach((f, i) => c.fields(2 * i + 1, f, true));
    const fine = 2 * cases.length + 1;
    c.fields(fine, [...base, [":path", "/"], ["te", "trailers"]], true);
    await c.flush();
    await waitFor(() => c.status(fine) !== undefined, { what: "the fine answer" });
    cases.forEach((_, i) =>
      assert.equal(c.error(2 * i + 1), ErrorCode.PROTOCOL_ERROR, `case ${i}`)
    );
    assert.equal(c.status(fine), "200");
  } finally {
    await c.close();
  }
});

Deno.test("odd :authority values are answered as the HTTP/1.1 engine answers such a Host, the connection untouched", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    // What the HTTP/1.1 engine answers for each as a Host.
    const cases: [string, string][] = [
      ["a:99999", "200"],
      ["[::1", "400"],
      ["a:b", "400"],
      [":80", "400"],
      ["[::1]:80", "200"],
      ["a\\b", "400"],
    ];
    cases.forEach(([a], i) =>
      c.fields(2 * i + 1, [[":method", "GET"], [":scheme", "http"], [":path", "/"], [
        ":authority",
        a,
      ]], true)
    );
    await c.flush();
    await waitFor(() => cases.every((_, i) => c.status(2 * i + 1) !== undefined), {
      what: "every answer",
    });
    cases.forEach(([a, status], i) => assert.equal(c.status(2 * i + 1), status, a));
    assert.equal(c.goaway(), undefined);
  } finally {
    await c.close();
  }
});

Deno.test("with a large http2_max_frame_size, one HEADERS frame is held to the field block bound as CONTINUATIONs are", async () => {
  // A block past 80 KiB (the 64 KiB header list and room for its coding) ends the connection when
  // CONTINUATIONs bring it; a single frame of 1 MiB was decoded whole, each of its strings made
  // into text, although none of its fields could be served.
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(`protocols: { http2_max_frame_size: 1048576 }
${config(up.url)}`);
  const c = await RawH2c.open(prox.port);
  try {
    const fields: [string, string][] = [
      [":method", "GET"],
      [":scheme", "http"],
      [":path", "/"],
      [":authority", "localhost"],
    ];
    c.enc.begin();
    for (const [n, v] of fields) c.enc.field(n, v);
    for (let i = 0; i < 200; i++) c.enc.field(`x-${i}`, "v".repeat(4000));
    const block = c.enc.block;
    assert.ok(block.length > 500_000 && block.length < 1 << 20);
    c.out.frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 1, block);
    await c.flush();
    await waitFor(() => c.closed || c.goaway() !== undefined || c.status(1) !== undefined, {
      what: "the answer",
    });
    assert.equal(c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  } finally {
    await c.close();
  }
});

Deno.test("streams this side resets for the client's fault still count until their work ends (MadeYouReset)", async () => {
  // CVE-2025-8671: a client that makes the server reset its streams (here a WINDOW_UPDATE of 0)
  // opens new ones while the upstream still works for the old; the streams so reset must count
  // against the stream limit, or the upstream gets unbounded work.
  let release!: () => void;
  const held = new Promise<void>((r) => release = r);
  let arrived = 0;
  await using up = await startUpstream(async () => {
    arrived++;
    await held;
    return new Response("late");
  });
  await using prox = await startProxy(`protocols: { http2_max_concurrent_streams: 4 }
${config(up.url)}`);
  const c = await RawH2c.open(prox.port);
  try {
    for (let i = 0; i < 40; i++) {
      const id = 1 + 2 * i;
      c.request(id, `/r${i}`);
      c.out.u32(FrameType.WINDOW_UPDATE, id, 0);
      await c.flush().catch(() => {});
      await c.settled();
      if (c.closed) break;
    }
    assert.ok(arrived <= 4, `${arrived} requests reached the upstream`);
    assert.equal(c.error(79), ErrorCode.REFUSED_STREAM);
  } finally {
    release();
    await c.close();
  }
});

interopTest("h2load with 16 KiB windows and 100 streams at once gets every answer whole", [
  "h2load",
], async () => {
  // Answers four times the windows, 100 at a time: most wait for the connection's window, and
  // each WINDOW_UPDATE must go to those that can send until it is used up.
  const body = new Uint8Array(64 * 1024).fill(0x61);
  await using up = await startUpstream(() => new Response(body));
  await using prox = await startProxy(config(up.url));
  const out = await run("h2load", [
    "-n",
    "300",
    "-c",
    "1",
    "-m",
    "100",
    "-w",
    "14",
    "-W",
    "14",
    `http://127.0.0.1:${prox.port}/`,
  ], { timeoutMs: 60_000 });
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /300 succeeded, 0 failed, 0 errored/, out.stdout);
  assert.match(out.stdout, /status codes: 300 2xx/, out.stdout);
  assert.match(out.stdout, new RegExp(`\\(${300 * body.length}\\) data`), out.stdout);
});

Deno.test("a SETTINGS frame of more than 32 values ends the connection with ENHANCE_YOUR_CALM (CVE-2020-11080)", async () => {
  // A 16 KiB SETTINGS frame holds 2,730 values; each SETTINGS_INITIAL_WINDOW_SIZE moves every
  // open stream's window, so with 128 streams open 900 such frames took 1.3 s of the engine's
  // time, against 62 ms with none open (nghttp2 takes at most 32 values a frame).
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  for (const [values, calm] of [[32, false], [33, true]] as const) {
    const c = await RawH2c.open(prox.port);
    try {
      c.out.settings(Array.from({ length: values }, (_, i) => [0x4, 65535 + (i & 1)]));
      await c.settled();
      if (calm) assert.equal(c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
      else {
        assert.equal(c.goaway(), undefined);
        const acks = c.frames.filter((f) => f.type === FrameType.SETTINGS && f.flags & Flag.ACK);
        assert.equal(acks.length, 2, "both SETTINGS acked");
      }
    } finally {
      await c.close();
    }
  }
});
