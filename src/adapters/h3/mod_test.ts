import assert from "node:assert/strict";
import { altSvcValue, quicTransportOptions } from "./mod.ts";

Deno.test("quicTransportOptions maps http3_config keys and names the ignored ones", () => {
  const seed = quicTransportOptions({
    max_data: 10_000_000,
    max_stream_data: 1_000_000,
    max_streams_bidi: 50,
    max_idle_timeout: 12_000,
    congestion_control: "cubic",
    enable_0rtt: true,
  });
  assert.deepEqual(seed.transport, {
    maxIdleTimeout: 12_000,
    maxConcurrentBidirectionalStreams: 50,
    maxConcurrentUnidirectionalStreams: 16,
    congestionControl: "throughput",
  });
  assert.deepEqual(seed.ignored, []);
  const odd = quicTransportOptions({
    max_data: 1,
    max_packet_size: 1200,
    congestion_control: "reno",
    enable_0rtt: false,
  });
  assert.deepEqual(odd.ignored, [
    "max_data",
    "max_packet_size",
    "congestion_control=reno (using cubic)",
    "enable_0rtt=false (0-RTT is always accepted)",
  ]);
  assert.equal(
    quicTransportOptions({ congestion_control: "bbr" }).transport.congestionControl,
    "low-latency",
  );
});

Deno.test("altSvcValue formats the h3 alternative (RFC 7838 §3)", () => {
  assert.equal(altSvcValue(443, 86400), 'h3=":443"; ma=86400');
});
