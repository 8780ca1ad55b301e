import assert from "node:assert/strict";
import { AggregatorRegistry, Counter, Histogram, Registry } from "prom-client";
import { HotCounter, HotHistogram } from "./metrics_hot.ts";

type Registrable = Parameters<Registry["registerMetric"]>[0];
const BUCKETS = [0.001, 0.01, 0.1, 1];
const OBSERVATIONS: [string, string, number][] = [
  ["/api", "GET", 0.0004],
  ["/api", "GET", 0.001], // on a bound: counted in that bucket (le is inclusive)
  ["/api", "POST", 0.05],
  ['/q"uote\\', "GET", 7], // above every bound; a label value that needs escaping
  ["/api", "GET", 0.3],
];

/** The same observations through prom-client's own metrics and through the hot ones. */
function pair() {
  const ref = new Registry();
  const refCounter = new Counter({
    name: "t_requests_total",
    help: "Requests",
    labelNames: ["route", "method", "status"],
    registers: [ref],
  });
  const refHist = new Histogram({
    name: "t_duration_seconds",
    help: "Duration",
    labelNames: ["route", "method"],
    buckets: BUCKETS,
    registers: [ref],
  });
  const hot = new Registry();
  const counter = new HotCounter({
    name: "t_requests_total",
    help: "Requests",
    labelNames: ["route", "method", "status"],
  });
  const hist = new HotHistogram({
    name: "t_duration_seconds",
    help: "Duration",
    labelNames: ["route", "method"],
    buckets: BUCKETS,
  });
  hot.registerMetric(counter as unknown as Registrable);
  hot.registerMetric(hist as unknown as Registrable);
  for (const [route, method, s] of OBSERVATIONS) {
    refCounter.inc({ route, method, status: "200" });
    refHist.observe({ route, method }, s);
    counter.cell(route, method, "200").value++;
    hist.observe(hist.cell(route, method), s);
  }
  return { ref, hot, counter, hist };
}

Deno.test("HotCounter and HotHistogram expose the same text as prom-client's metrics", async () => {
  const { ref, hot } = pair();
  assert.deepEqual(await hot.metrics(), await ref.metrics());
});

Deno.test("HotCounter and HotHistogram give the same JSON, so worker aggregation sums them", async () => {
  const a = pair(), b = pair();
  // Equal but for prom-client's empty exemplar fields.
  const json = async (r: Registry) =>
    JSON.parse(
      JSON.stringify(await r.getMetricsAsJSON(), (k, v) => k === "exemplar" ? undefined : v),
    );
  assert.deepEqual(await json(a.hot), await json(a.ref));
  const summed = AggregatorRegistry.aggregate([
    await a.hot.getMetricsAsJSON(),
    await b.hot.getMetricsAsJSON(),
  ]);
  const refSummed = AggregatorRegistry.aggregate([
    await a.ref.getMetricsAsJSON(),
    await b.ref.getMetricsAsJSON(),
  ]);
  const text = await summed.metrics();
  assert.deepEqual(text, await refSummed.metrics());
  // The aggregate is really the sum: 3 GET /api requests per registry.
  assert.deepEqual(
    /t_requests_total\{route="\/api",method="GET",status="200"\} (\d+)/.exec(text)?.[1],
    "6",
  );
});

Deno.test("HotCounter and HotHistogram remove every series matching the labels given", async () => {
  const { counter, hist, hot } = pair();
  counter.remove({ route: "/api" });
  hist.remove({ route: "/api", method: "GET" });
  const text = await hot.metrics();
  assert.deepEqual(text.includes('t_requests_total{route="/api"'), false);
  assert.deepEqual(text.includes('t_duration_seconds_count{route="/api",method="GET"}'), false);
  assert.deepEqual(text.includes('t_duration_seconds_count{route="/api",method="POST"} 1'), true);
  // A removed label set starts again from zero.
  counter.cell("/api", "GET", "200").value++;
  assert.deepEqual(
    (await hot.metrics()).includes('t_requests_total{route="/api",method="GET",status="200"} 1'),
    true,
  );
});

Deno.test("HotCounter holds at most maxCells label sets, then counts new ones under (overflow)", async () => {
  const c = new HotCounter({ name: "t_total", help: "T", labelNames: ["route"], maxCells: 3 });
  for (let i = 0; i < 10; i++) c.cell(`/r${i}`).value++;
  const { values } = await c.get();
  assert.deepEqual(values.length, 4);
  assert.deepEqual(values.find((v) => v.labels.route === "(overflow)")?.value, 7);
  assert.deepEqual(values.filter((v) => v.labels.route !== "(overflow)").map((v) => v.value), [
    1,
    1,
    1,
  ]);
});
