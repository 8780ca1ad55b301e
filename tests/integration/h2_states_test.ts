// Stream states of Prox's own HTTP/2 engine (RFC 9113 §5.1, §5.3.1, §8.1), as h2spec checks
// them, with a raw h2c client: frames on streams the client closed or ended, stream ids that go
// back, a stream that depends on itself, trailers that are malformed, while frames in flight on a
// stream this side reset are still ignored; and WINDOW_UPDATE floods.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { RawH2c } from "./_raw_h2.ts";
import { ErrorCode, Flag, FrameType } from "../../src/adapters/h2/frames.ts";

// These tests are of the engine itself, even when the suite runs on Deno.serve.
onProxEngines();

function config(upstream: string, protocols = ""): string {
  return `health_check: { enabled: false }
${protocols ? `protocols: { ${protocols} }` : ""}
routes:
  "/":
    type: proxy
    target: "${upstream}"
`;
}

/** An upstream that holds every request until `release()`, counting those that arrived. */
async function heldUpstream() {
  let release!: () => void;
  const held = new Promise<void>((r) => release = r);
  const state = { arrived: 0 };
  const up = await startUpstream(async () => {
    state.arrived++;
    await held;
    return new Response("late");
  });
  return Object.assign(up, { release, state });
}

const u32 = (p: Uint8Array) => ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;

Deno.test("HEADERS on a stream whose request has ended is STREAM_CLOSED (RFC 9113 §5.1)", async () => {
  await using up = await heldUpstream();
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    c.request(1, "/held");
    await c.flush();
    await waitFor(() => up.state.arrived === 1, { what: "the request upstream" });
    // Half-closed (remote): a second field block that ends the stream again.
    c.fields(1, [["x-trailer", "1"]], true);
    await c.flush();
    await waitFor(() => c.error(1) !== undefined, { what: "the stream error" });
    assert.equal(c.error(1), ErrorCode.STREAM_CLOSED);
  } finally {
    up.release();
    await c.close();
  }
});

Deno.test("DATA or HEADERS on a stream the client reset, or that both sides ended, is STREAM_CLOSED", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  for (const type of [FrameType.DATA, FrameType.HEADERS]) {
    const c = await RawH2c.open(prox.port);
    try {
      // Stream 1: the client resets it; stream 3: answered, both sides ended.
      c.request(1, "/reset", false, "POST");
      c.out.u32(FrameType.RST_STREAM, 1, ErrorCode.CANCEL);
      c.request(3, "/done");
      await c.flush();
      await waitFor(() => c.on(3, FrameType.DATA).some((f) => f.flags & Flag.END_STREAM), {
        what: "stream 3's answer",
      });
      for (const id of [1, 3]) {
        if (type === FrameType.DATA) {
          c.out.frame(FrameType.DATA, Flag.END_STREAM, id, Uint8Array.of(1));
        } else c.fields(id, [["x-late", "1"]], true);
      }
      await c.flush();
      await waitFor(() => c.error(1) !== undefined && c.error(3) !== undefined, {
        what: `the errors (type ${type})`,
      });
      assert.equal(c.error(1), ErrorCode.STREAM_CLOSED, `type ${type}, stream 1`);
      assert.equal(c.error(3), ErrorCode.STREAM_CLOSED, `type ${type}, stream 3`);
    } finally {
      await c.close();
    }
  }
});

Deno.test("frames in flight on a stream this side reset are ignored", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    // Stream 1 is malformed (reset by the engine); the client's DATA and trailers on it crossed
    // the RST_STREAM, and must be ignored (RFC 9113 §5.1, "closed").
    c.fields(1, [[":method", "POST"], [":path", "/"], [":authority", "localhost"]], false);
    c.out.frame(FrameType.DATA, 0, 1, new Uint8Array(100));
    c.fields(1, [["x-trailer", "1"]], true);
    c.request(3, "/after");
    await c.flush();
    await waitFor(() => c.on(3, FrameType.DATA).length > 0, { what: "stream 3's answer" });
    await c.settled();
    assert.equal(c.on(1, FrameType.RST_STREAM).length, 1);
    assert.equal(u32(c.on(1, FrameType.RST_STREAM)[0].payload), ErrorCode.PROTOCOL_ERROR);
    assert.equal(c.goaway(), undefined);
  } finally {
    await c.close();
  }
});

Deno.test("a new stream with an id below one already opened is a connection PROTOCOL_ERROR", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    c.request(5, "/five");
    c.request(3, "/three");
    await c.flush();
    await waitFor(() => c.goaway() !== undefined, { what: "GOAWAY" });
    assert.equal(c.goaway(), ErrorCode.PROTOCOL_ERROR);
    assert.equal(c.status(3), undefined);
  } finally {
    await c.close();
  }
});

Deno.test("a stream that depends on itself is a stream PROTOCOL_ERROR (RFC 9113 §5.3.1)", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    // HEADERS whose priority names stream 1 itself; PRIORITY for stream 3 on stream 3.
    c.request(1, "/self", true, "GET", Flag.PRIORITY, Uint8Array.of(0, 0, 0, 1, 16));
    c.out.frame(FrameType.PRIORITY, 0, 3, Uint8Array.of(0, 0, 0, 3, 16));
    c.request(5, "/fine");
    await c.flush();
    await waitFor(() => c.on(5, FrameType.DATA).length > 0, { what: "stream 5's answer" });
    await c.settled();
    assert.equal(c.status(1), undefined);
    assert.equal(c.error(1), ErrorCode.PROTOCOL_ERROR);
    assert.equal(c.error(3), ErrorCode.PROTOCOL_ERROR);
    assert.equal(c.goaway(), undefined);
  } finally {
    await c.close();
  }
});

Deno.test("trailers with a pseudo-field or an upper-case name are malformed (RFC 9113 §8.1)", async () => {
  await using up = await heldUpstream();
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    c.request(1, "/pseudo", false, "POST");
    c.request(3, "/upper", false, "POST");
    c.request(5, "/fine", false, "POST");
    for (const id of [1, 3, 5]) c.out.frame(FrameType.DATA, 0, id, Uint8Array.of(1));
    c.fields(1, [[":path", "/again"]], true);
    c.fields(3, [["X-Upper", "1"]], true);
    c.fields(5, [["x-fine", "1"]], true);
    await c.flush();
    await waitFor(() => c.error(1) !== undefined && c.error(3) !== undefined, {
      what: "the stream errors",
    });
    assert.equal(c.error(1), ErrorCode.PROTOCOL_ERROR);
    assert.equal(c.error(3), ErrorCode.PROTOCOL_ERROR);
    up.release();
    await waitFor(() => c.status(5) !== undefined, { what: "stream 5's answer" });
    assert.equal(c.status(5), "200");
  } finally {
    up.release();
    await c.close();
  }
});

Deno.test("a flood of WINDOW_UPDATEs that let no DATA go out ends the connection with ENHANCE_YOUR_CALM", async () => {
  await using up = await startUpstream(() => new Response(new Uint8Array(1 << 20)));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    // The streams' windows are 0: each connection WINDOW_UPDATE wakes every answer waiting for
    // window, and none can send (the cost of a frame times the streams, for 13 bytes).
    c.out.settings([[0x4, 0]]);
    for (let id = 1; id < 200; id += 2) c.request(id, `/big${id}`);
    await c.flush();
    await c.settled();
    for (let i = 0; i < 5000; i++) c.out.u32(FrameType.WINDOW_UPDATE, 0, 1);
    await c.flush().catch(() => {});
    await waitFor(() => c.goaway() !== undefined, { what: "GOAWAY" });
    assert.equal(c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  } finally {
    await c.close();
  }
});

Deno.test("a client reading a long answer through a 1 KiB window may send the WINDOW_UPDATEs it needs", async () => {
  await using up = await startUpstream(() => new Response(new Uint8Array(512 << 10)));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    // A 1 KiB stream window, given back (and the connection's) after each 512 bytes read.
    c.out.settings([[0x4, 1024]]);
    c.request(1, "/big");
    await c.flush();
    let credited = 0;
    await waitFor(async () => {
      const got = c.data(1);
      if (got - credited >= 512) {
        c.out.u32(FrameType.WINDOW_UPDATE, 1, got - credited);
        c.out.u32(FrameType.WINDOW_UPDATE, 0, got - credited);
        credited = got;
        await c.flush();
      }
      return c.closed || c.on(1, FrameType.DATA).some((f) => f.flags & Flag.END_STREAM);
    }, { what: "the whole answer", timeoutMs: 60_000, intervalMs: 1 });
    assert.equal(c.goaway(), undefined);
    assert.equal(c.data(1), 512 << 10);
  } finally {
    await c.close();
  }
});

Deno.test("a flood of HEADERS past the stream limit ends the connection with ENHANCE_YOUR_CALM", async () => {
  await using up = await heldUpstream();
  await using prox = await startProxy(config(up.url, "http2_max_concurrent_streams: 1"));
  const c = await RawH2c.open(prox.port);
  try {
    c.request(1, "/held");
    await c.flush();
    await waitFor(() => up.state.arrived === 1, { what: "the request upstream" });
    // Each new stream is refused (RST_STREAM REFUSED_STREAM, CVE-2019-9514): work and a frame
    // for each, with no request served to pay for it.
    for (let id = 3; id < 6000; id += 2) c.request(id, "/refused");
    await c.flush().catch(() => {});
    await waitFor(() => c.goaway() !== undefined, { what: "GOAWAY" });
    assert.equal(c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  } finally {
    up.release();
    await c.close();
  }
});

Deno.test("a client that sends a WINDOW_UPDATE with each request keeps its connection, answers without DATA too", async () => {
  await using up = await startUpstream(() => new Response(null, { status: 204 }));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    // As a client that widens each stream's window as it opens it: 1,200 requests answered by
    // HEADERS alone, each with its WINDOW_UPDATE, in batches within the stream limit.
    for (let batch = 0; batch < 12; batch++) {
      const ids = Array.from({ length: 100 }, (_, i) => 2 * (batch * 100 + i) + 1);
      for (const id of ids) {
        c.request(id, `/r${id}`);
        c.out.u32(FrameType.WINDOW_UPDATE, id, 1 << 20);
      }
      await c.flush();
      await waitFor(() => c.closed || ids.every((id) => c.status(id) !== undefined), {
        what: `batch ${batch}`,
      });
    }
    assert.equal(c.goaway(), undefined);
    assert.equal(c.status(2399), "204");
  } finally {
    await c.close();
  }
});

Deno.test("te: Trailers in another case is trailers (a coding name ignores case); te: gzip is malformed", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url));
  const c = await RawH2c.open(prox.port);
  try {
    const base: [string, string][] = [
      [":method", "GET"],
      [":scheme", "http"],
      [":path", "/"],
      [":authority", "localhost"],
    ];
    c.fields(1, [...base, ["te", "trailers"]], true);
    c.fields(3, [...base, ["te", "Trailers"]], true);
    c.fields(5, [...base, ["te", "gzip"]], true);
    await c.flush();
    await waitFor(() => c.status(1) && c.status(3) && c.error(5) !== undefined, {
      what: "two answers and a reset",
    });
    assert.equal(c.status(1), "200");
    assert.equal(c.status(3), "200");
    assert.equal(c.error(5), ErrorCode.PROTOCOL_ERROR);
  } finally {
    await c.close();
  }
});
