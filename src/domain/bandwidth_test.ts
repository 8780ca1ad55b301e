import assert from "node:assert/strict";
import type { BandwidthPolicy } from "./bandwidth.ts";
import {
  bandwidthText,
  CATCH_UP_MS,
  nextPiece,
  sliceFor,
  startPace,
  takeBytes,
} from "./bandwidth.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Sends `total` bytes in pieces as the stream does, on a clock that moves only by the waits
 * (plus `late` ms per wait): the time the last piece went, and each piece's send time.
 */
function simulate(
  policy: BandwidthPolicy,
  o: { total: number; chunk: number; late?: number },
): { end: number; sends: { at: number; bytes: number }[] } {
  const pace = startPace(policy);
  const slice = sliceFor(policy);
  let now = 1000;
  let left = o.total;
  const sends: { at: number; bytes: number }[] = [];
  while (left > 0) {
    let chunk = Math.min(o.chunk, left);
    left -= chunk;
    while (chunk > 0) {
      const n = nextPiece(pace, chunk, slice);
      const wait = takeBytes(pace, policy, { n, now });
      if (wait > 0) now += wait + (o.late ?? 0);
      sends.push({ at: now, bytes: n });
      chunk -= n;
    }
  }
  return { end: now, sends };
}

Deno.test("takeBytes lets the first `after` bytes go at once, then paces at `rate`", () => {
  const policy: BandwidthPolicy = { rate: MiB, after: 64 * KiB, per: "response" };
  const { end, sends } = simulate(policy, { total: 256 * KiB, chunk: 16 * KiB });
  // 64 KiB free, then 192 KiB at 1 MiB/s: 187.5 ms.
  assert.equal(end - 1000, 187.5);
  const atOnce = sends.filter((s) => s.at === 1000).reduce((a, s) => a + s.bytes, 0);
  assert.equal(atOnce, 64 * KiB);
});

Deno.test("takeBytes: bytes sent never run ahead of after + rate × elapsed", () => {
  const policy: BandwidthPolicy = { rate: 100 * KiB, after: 10 * KiB, per: "response" };
  const { sends } = simulate(policy, { total: 300 * KiB, chunk: 64 * KiB });
  let sent = 0;
  for (const s of sends) {
    sent += s.bytes;
    // The clock started at the first paced byte (1000), which was also the first send.
    assert.ok(sent <= policy.after + policy.rate * (s.at - 1000) / 1000 + 1e-6, `${sent}`);
  }
});

Deno.test("nextPiece cuts a chunk where the free allowance ends, then into slices", () => {
  const policy: BandwidthPolicy = { rate: 80 * KiB, after: 1000, per: "response" };
  const pace = startPace(policy);
  const slice = sliceFor(policy);
  assert.equal(slice, 10 * KiB);
  assert.equal(nextPiece(pace, 64 * KiB, slice), 1000);
  assert.equal(takeBytes(pace, policy, { n: 1000, now: 0 }), 0);
  assert.equal(nextPiece(pace, 63 * KiB, slice), 10 * KiB);
  // A slow rate still sends pieces of 256 bytes at least.
  assert.equal(sliceFor({ rate: 100, after: 0, per: "response" }), 256);
});

Deno.test("takeBytes forgives lateness up to CATCH_UP_MS, so timers firing late keep the rate", () => {
  const policy: BandwidthPolicy = { rate: MiB, after: 0, per: "response" };
  // Each timer fires 5 ms late: within the catch-up, the whole still takes 1 s (plus the last
  // wait's lateness), not 1 s + 5 ms per piece.
  const { end } = simulate(policy, { total: MiB, chunk: 64 * KiB, late: 5 });
  assert.ok(end - 1000 <= 1000 + 5 + 1e-6, `${end - 1000}`);
  assert.ok(end - 1000 >= 1000 - 1e-6, `${end - 1000}`);
});

Deno.test("takeBytes gives a client that stalled no more than CATCH_UP_MS of burst", () => {
  const policy: BandwidthPolicy = { rate: MiB, after: 0, per: "response" };
  const pace = startPace(policy);
  assert.equal(takeBytes(pace, policy, { n: 64 * KiB, now: 0 }), 62.5);
  // The client read nothing for 10 s: the next piece is not free, only 50 ms are forgiven.
  const wait = takeBytes(pace, policy, { n: 64 * KiB, now: 10_062.5 });
  assert.equal(wait, 62.5 - CATCH_UP_MS);
});

Deno.test("bandwidthText says the policy as people write it", () => {
  assert.equal(
    bandwidthText({ rate: MiB, after: 10 * MiB, per: "response" }),
    "1 MiB/s after the first 10 MiB",
  );
  assert.equal(bandwidthText({ rate: 1_000_000, after: 0, per: "response" }), "976.56 KiB/s");
  assert.equal(bandwidthText({ rate: 500, after: 0, per: "response" }), "500 B/s");
});

Deno.test("takeBytes: responses sharing a bucket (per client or route) share its rate", () => {
  const policy: BandwidthPolicy = { rate: 100 * KiB, after: 0, per: "client" };
  const bucket = { due: NaN };
  const a = startPace(policy, bucket);
  const b = startPace(policy, bucket);
  // Their pieces take turns: each waits for the other's too, so together they get the rate.
  assert.equal(takeBytes(a, policy, { n: 10 * KiB, now: 0 }), 100);
  assert.equal(takeBytes(b, policy, { n: 10 * KiB, now: 0 }), 200);
  assert.equal(takeBytes(a, policy, { n: 10 * KiB, now: 100 }), 200);
  // `after` stays each response's own.
  const c = startPace({ ...policy, after: 5 * KiB }, bucket);
  assert.equal(takeBytes(c, policy, { n: 5 * KiB, now: 100 }), 0);
  // A fresh bucket for a response of another client: no wait but its own.
  assert.equal(takeBytes(startPace(policy), policy, { n: 10 * KiB, now: 100 }), 100);
});
