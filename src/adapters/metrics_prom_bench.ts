// Per-request cost of observability: `deno bench src/adapters/metrics_prom_bench.ts`.
import { createPromMetrics } from "./metrics_prom.ts";
import { formatAccessJson, formatClf } from "./log_json.ts";
import type { AccessRecord } from "../ports.ts";

const m = createPromMetrics({ processMetrics: false });
const rec: AccessRecord = {
  time: Date.now(),
  requestId: "0a1b2c3d-00001a",
  clientIp: "192.0.2.7",
  method: "GET",
  host: "example.com",
  path: "/api/users/42",
  query: "",
  status: 200,
  bytesIn: 0,
  bytesOut: 1234,
  durationMs: 1.234,
  route: "/api",
  upstream: "http://10.0.0.1:8080",
  upstreamStatus: 200,
  upstreamMs: 1.1,
  protocol: "h2",
  tls: true,
  retries: 0,
  error: null,
  userAgent: "Mozilla/5.0",
  referer: null,
};

Deno.bench("metrics: request + backendRequest (one proxied request)", () => {
  m.request("/api", "GET", 200, 0.0123);
  m.backendRequest("http://10.0.0.1:8080", "/api", 200, 0.011);
});

Deno.bench("access log: JSON line", () => {
  formatAccessJson(rec);
});

Deno.bench("access log: combined line", () => {
  formatClf(rec, true);
});

for (let i = 0; i < 50; i++) {
  for (const s of [200, 404, 502]) m.request(`/r${i}`, "GET", s, 0.01 * (i % 7));
}
Deno.bench("exposition: 50 routes x 3 statuses", async () => {
  await m.text();
});
