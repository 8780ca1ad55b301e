import assert from "node:assert/strict";
import { pacedAnswer, pacedBody, pacedResponse, sharesInUse } from "./bandwidth.ts";
import type { PipelineDeps, RequestContext } from "../context.ts";
import { BODY_BYTES } from "../../ports.ts";
import { ProxyError } from "../../domain/errors.ts";
import { deadlineTrailers } from "../../adapters/engine_shared.ts";
import type { BodyCounter, Clock, CountedResponse, Timer } from "../../ports.ts";

const KiB = 1024;

/** A clock that moves only when a wait fires, and a timer whose waits fire when told. */
function fakeTime() {
  let now = 0;
  const waits: { ms: number; fire: () => void; cleared: boolean }[] = [];
  const clock: Clock = { now: () => now, monotonic: () => now };
  const timer: Timer = (fn, ms) => {
    const w = { ms, cleared: false, fire: () => {} };
    w.fire = () => {
      now += ms;
      fn();
    };
    waits.push(w);
    return () => w.cleared = true;
  };
  return { clock, timer, waits, now: () => now };
}

/** A source of `chunks` chunks of `size` bytes that notes how many were pulled and a cancel. */
function source(chunks: number, size: number) {
  const seen = { pulled: 0, cancelled: false as unknown };
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (seen.pulled === chunks) return c.close();
      seen.pulled++;
      c.enqueue(new Uint8Array(size).fill(seen.pulled));
    },
    cancel(reason) {
      seen.cancelled = reason ?? true;
    },
  }, { highWaterMark: 0 });
  return { stream, seen };
}

/** Reads the paced stream to its end, firing each wait as it comes: bytes and send times. */
async function drain(body: ReadableStream<Uint8Array>, t: ReturnType<typeof fakeTime>) {
  const reader = body.getReader();
  const sends: { at: number; bytes: number }[] = [];
  for (;;) {
    const read = reader.read();
    // Let the pull reach its wait (or its enqueue), then fire what it waits for.
    for (let i = 0; i < 5; i++) await Promise.resolve();
    const pending = t.waits.find((w) => !w.cleared && w.ms > 0);
    if (pending) {
      t.waits.splice(t.waits.indexOf(pending), 1);
      pending.fire();
    }
    const r = await read;
    if (r.done) return sends;
    sends.push({ at: t.now(), bytes: r.value.byteLength });
  }
}

Deno.test("pacedBody sends `after` bytes at once, then at `rate`, all of the body in order", async () => {
  const t = fakeTime();
  const { stream } = source(16, 16 * KiB); // 256 KiB
  const counter: BodyCounter = { bytes: 0, ended: false };
  const body = pacedBody(stream, { rate: KiB * KiB, after: 64 * KiB, per: "response" as const }, {
    ...t,
    counter,
  });
  const sends = await drain(body, t);
  const total = sends.reduce((a, s) => a + s.bytes, 0);
  assert.equal(total, 256 * KiB);
  assert.equal(sends.filter((s) => s.at === 0).reduce((a, s) => a + s.bytes, 0), 64 * KiB);
  // 192 KiB at 1 MiB/s.
  assert.equal(sends.at(-1)!.at, 187.5);
  assert.deepEqual(counter, { bytes: 256 * KiB, ended: true });
});

Deno.test("pacedBody reads the upstream only as the client reads (no read-ahead)", async () => {
  const t = fakeTime();
  const { stream, seen } = source(100, 64 * KiB);
  const counter: BodyCounter = { bytes: 0, ended: false };
  const body = pacedBody(stream, { rate: 64 * KiB, after: 0, per: "response" as const }, {
    ...t,
    counter,
  });
  const reader = body.getReader();
  const first = reader.read();
  for (let i = 0; i < 5; i++) await Promise.resolve();
  // One chunk read; its first eighth-of-a-second piece waits for its time.
  assert.equal(seen.pulled, 1);
  t.waits[0].fire();
  assert.equal((await first).value?.byteLength, 8 * KiB);
  await reader.cancel();
});

Deno.test("pacedBody: a client that leaves mid-wait stops the timer and cancels the upstream", async () => {
  const t = fakeTime();
  const { stream, seen } = source(100, 64 * KiB);
  const counter: BodyCounter = { bytes: 0, ended: false };
  const body = pacedBody(stream, { rate: 64 * KiB, after: 0, per: "response" as const }, {
    ...t,
    counter,
  });
  const reader = body.getReader();
  const read = reader.read();
  for (let i = 0; i < 5; i++) await Promise.resolve();
  assert.equal(t.waits.length, 1);
  await reader.cancel("gone");
  assert.equal((await read).done, true);
  assert.equal(t.waits[0].cleared, true);
  assert.equal(seen.cancelled, "gone");
  assert.equal(counter.ended, false);
});

Deno.test("pacedBody passes an upstream failure on to the client", async () => {
  const t = fakeTime();
  const failing = new ReadableStream<Uint8Array>({
    pull(c) {
      c.error(new Error("upstream reset"));
    },
  });
  const counter: BodyCounter = { bytes: 0, ended: false };
  const body = pacedBody(failing, { rate: KiB, after: 0, per: "response" as const }, {
    ...t,
    counter,
  });
  await assert.rejects(body.getReader().read(), /upstream reset/);
});

Deno.test("pacedResponse leaves answers with nothing to pace as they are", async () => {
  const t = fakeTime();
  const policy = { rate: KiB, after: 10 * KiB, per: "response" as const };
  const small = new Response("x".repeat(100), { headers: { "content-length": "100" } });
  assert.equal(pacedResponse(small, policy, { method: "GET", ...t }), small);
  const head = new Response(null, { status: 200 });
  assert.equal(pacedResponse(head, policy, { method: "HEAD", ...t }), head);
  const notModified = new Response(null, { status: 304 });
  assert.equal(pacedResponse(notModified, policy, { method: "GET", ...t }), notModified);
  await small.body?.cancel();

  // A large one is paced, its status and fields kept, its bytes counted for the access log.
  const { stream } = source(2, 16 * KiB);
  const inner: BodyCounter = { bytes: 0, ended: false, trailers: [["grpc-status", "0"]] };
  const big: CountedResponse = new Response(stream, {
    status: 206,
    headers: { "content-length": String(32 * KiB), "x-a": "1" },
  });
  big[BODY_BYTES] = inner;
  const out = pacedResponse(big, policy, { method: "GET", ...t }) as CountedResponse;
  assert.notEqual(out, big);
  assert.equal(out.status, 206);
  assert.equal(out.headers.get("x-a"), "1");
  assert.equal(out.headers.get("content-length"), String(32 * KiB));
  await drain(out.body!, t);
  assert.equal(out[BODY_BYTES]?.bytes, 32 * KiB);
  assert.equal(out[BODY_BYTES]?.ended, true);
  assert.deepEqual(out[BODY_BYTES]?.trailers, [["grpc-status", "0"]]);
});

Deno.test("pacedAnswer: per client, a client's answers share one bucket, kept while in use", async () => {
  const t = fakeTime();
  const deps = { clock: t.clock, timer: t.timer } as PipelineDeps;
  const policy = { rate: 64 * KiB, after: 0, per: "client" as const };
  const answer = (clientIp: string) => {
    const ctx = {
      req: new Request("http://h/dl"),
      info: {},
      route: { id: "/dl" },
      clientIp,
    } as unknown as RequestContext;
    return pacedAnswer(ctx, deps, new Response(source(1, 8 * KiB).stream), policy);
  };
  const a = answer("192.0.2.1").body!.getReader();
  const b = answer("192.0.2.1").body!.getReader();
  const c = answer("2001:db8::1").body!.getReader();
  const d = answer("2001:db8::2").body!.getReader(); // the same /64: the same client
  assert.equal(sharesInUse(deps), 2);
  const reads = [a.read(), b.read(), c.read(), d.read()];
  for (let i = 0; i < 5; i++) await Promise.resolve();
  // Each 8 KiB piece is an eighth of a second at 64 KiB/s: the second of a client waits for both.
  assert.deepEqual(t.waits.map((w) => w.ms), [125, 250, 125, 250]);
  for (const w of t.waits) w.fire();
  await Promise.all(reads);
  // Ended or cancelled, the answers give their buckets back: nothing is kept for idle clients.
  assert.equal((await a.read()).done, true);
  assert.equal((await c.read()).done, true);
  assert.equal(sharesInUse(deps), 2);
  await b.cancel();
  await d.cancel();
  assert.equal(sharesInUse(deps), 0);
});

Deno.test("pacedBody: a client that leaves while the upstream is slow is not counted as delivered", async () => {
  const t = fakeTime();
  let cancelled = false;
  // An upstream that has sent nothing yet.
  const stalled = new ReadableStream<Uint8Array>({
    pull: () => new Promise(() => {}),
    cancel: () => {
      cancelled = true;
    },
  }, { highWaterMark: 0 });
  let done = 0;
  const counter: BodyCounter = { bytes: 0, ended: false };
  const body = pacedBody(stalled, { rate: KiB, after: 0, per: "response" as const }, {
    ...t,
    counter,
    done: () => done++,
  });
  const reader = body.getReader();
  const read = reader.read();
  for (let i = 0; i < 5; i++) await Promise.resolve();
  await reader.cancel();
  assert.equal((await read).done, true);
  for (let i = 0; i < 5; i++) await Promise.resolve();
  assert.equal(cancelled, true);
  assert.equal(counter.ended, false);
  assert.equal(done, 1);
});

Deno.test("pacedResponse: a gRPC answer whose deadline passes mid-body can still end with trailers", async () => {
  // The engines end such a call with grpc-status 4 in the counter's trailers (deadlineTrailers):
  // the paced answer's counter must take them, not throw (its trailers were a getter only).
  const t = fakeTime();
  const policy = { rate: KiB, after: 0, per: "response" as const };
  const timeout = new ProxyError("timeout", "No complete upstream response within 100 ms");
  const failing = new ReadableStream<Uint8Array>({
    pull(c) {
      c.error(timeout);
    },
  });
  const inner: BodyCounter = { bytes: 0, ended: false };
  const res: CountedResponse = new Response(failing, {
    headers: { "content-type": "application/grpc" },
  });
  res[BODY_BYTES] = inner;
  const out = pacedResponse(res, policy, { method: "POST", ...t }) as CountedResponse;
  let err: unknown;
  await out.body!.getReader().read().catch((e) => err = e);
  assert.equal(err, timeout);
  assert.equal(deadlineTrailers(out, err), true);
  assert.deepEqual(out[BODY_BYTES]?.trailers?.[0], ["grpc-status", "4"]);
});
