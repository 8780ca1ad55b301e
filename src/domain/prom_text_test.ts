import assert from "node:assert/strict";
import { bucketQuantile, parsePromText } from "./prom_text.ts";

Deno.test("parsePromText reads names, escaped labels and special values", () => {
  const text = [
    "# HELP prox_requests_total Requests",
    "# TYPE prox_requests_total counter",
    'prox_requests_total{route="/a \\"q\\"\\\\",method="GET",status="200"} 7',
    'prox_request_duration_seconds_bucket{le="+Inf",route="/a"} 3 1700000000000',
    "prox_ready 1",
    "",
    "other_metric 2",
  ].join("\n");
  const got = parsePromText(text, (n) => n.startsWith("prox_"));
  assert.deepEqual(got, [
    {
      name: "prox_requests_total",
      labels: { route: '/a "q"\\', method: "GET", status: "200" },
      value: 7,
    },
    { name: "prox_request_duration_seconds_bucket", labels: { le: "+Inf", route: "/a" }, value: 3 },
    { name: "prox_ready", labels: {}, value: 1 },
  ]);
});

Deno.test("parsePromText says which line is malformed", () => {
  assert.match(parsePromText("<html>") as string, /^line 1: no metric name/);
  assert.match(parsePromText('x{a="1"} abc') as string, /^line 1: no number/);
  assert.match(parsePromText('ok 1\nx{a="1} 2') as string, /^line 2: unterminated/);
  assert.match(parsePromText("x{a=1} 2") as string, /^line 1: malformed labels/);
});

Deno.test("bucketQuantile interpolates within the bucket as histogram_quantile does", () => {
  // 10 observations: 4 under 0.1, 4 more under 0.2, 2 more under 0.5.
  const b: [number, number][] = [[0.1, 4], [0.2, 8], [0.5, 10], [Infinity, 10]];
  assert.equal(bucketQuantile(0.5, b), 0.125); // rank 5: a quarter into (0.1, 0.2]
  assert.ok(Math.abs(bucketQuantile(0.95, b)! - 0.425) < 1e-9); // rank 9.5: half of (0.2, 0.5]
  assert.equal(bucketQuantile(0.2, b), 0.05); // the first bucket starts at 0
});

Deno.test("bucketQuantile gives the top finite bound past it, null without observations", () => {
  assert.equal(bucketQuantile(0.95, [[1, 1], [5, 2], [Infinity, 10]]), 5);
  assert.equal(bucketQuantile(0.5, [[1, 0], [Infinity, 0]]), null);
  assert.equal(bucketQuantile(0.5, []), null);
});
