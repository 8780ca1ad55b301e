import assert from "node:assert/strict";
import { createWorkerMetrics } from "./worker_metrics.ts";
import { createPromMetrics } from "./metrics_prom.ts";
import { silentLogger } from "../ports.ts";

Deno.test("createWorkerMetrics labels by worker without changing the registry's own series", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-wm-" });
  const m = createPromMetrics({ processMetrics: false });
  const wm = createWorkerMetrics({ index: 0, count: 1, dir, logger: silentLogger });
  try {
    wm.attach(m.registry);
    m.rateLimit("/old", "allowed");
    m.retry("/old", "connect");
    m.request("/old", "GET", 200, 0.01);
    const first = await wm.text();
    assert.match(
      first,
      /^prox_rate_limit_hits_total\{route="\/old",action="allowed",worker="0"\} 1$/m,
    );
    // A reload that removed /old drops its series (prom-client's remove() threw on the leftover
    // worker label, so they stayed).
    await m.routesConfigured(["/new"]);
    const after = await wm.text();
    assert.doesNotMatch(after, /route="\/old"/);
    assert.doesNotMatch(await m.text(), /worker=/);
  } finally {
    wm.close();
    await Deno.remove(dir, { recursive: true });
  }
});

const CONFIG = new URL("../../deno.json", import.meta.url).pathname;

Deno.test("a worker's metrics socket keeps answering after an accept failed for want of descriptors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-wm-fd-" });
  // A worker process with few descriptors shares its metrics, then uses up its descriptors
  // until a line on its stdin tells it to give them back.
  const script = `${dir}/worker.ts`;
  await Deno.writeTextFile(
    script,
    `import { createWorkerMetrics } from "${new URL("./worker_metrics.ts", import.meta.url)}";
import { createPromMetrics } from "${new URL("./metrics_prom.ts", import.meta.url)}";
import { silentLogger } from "${new URL("../ports.ts", import.meta.url)}";
const m = createPromMetrics({ processMetrics: false });
const dir = ${JSON.stringify(dir)};
createWorkerMetrics({ index: 1, count: 2, dir, logger: silentLogger }).attach(m.registry);
// Deno sets up its signal handling lazily, with a descriptor of its own, and panics if that
// fails ("Too many open files" in ext/signals); Prox listens for signals from its start, so
// the worker does too, before it uses up its descriptors.
Deno.addSignalListener("SIGUSR2", () => {});
const held = [];
try { for (;;) held.push(Deno.openSync("/dev/null")); } catch { /* EMFILE */ }
console.log("full");
for await (const _ of Deno.stdin.readable) break;
for (const f of held) f.close();
console.log("freed");
await new Promise((r) => setTimeout(r, 30_000));
`,
  );
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      `ulimit -n 64 && exec "$@"`,
      "sh",
      Deno.execPath(),
      "run",
      "-A",
      "--config",
      CONFIG,
      script,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const errText = new Response(child.stderr).text();
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let printed = "";
  const until = async (word: string) => {
    while (!printed.includes(word)) {
      const { value, done } = await out.read();
      if (done) throw new Error(`worker exited before "${word}"`);
      printed += value;
    }
  };
  const writer = child.stdin.getWriter();
  let conn: Deno.Conn | null = null;
  try {
    await until("full");
    // Worker 0 asks for the metrics now: the worker's accept fails (EMFILE).
    conn = await Deno.connect({ transport: "unix", path: `${dir}/metrics-1.sock` });
    await new Promise((r) => setTimeout(r, 200));
    await writer.write(new TextEncoder().encode("\n"));
    await until("freed");
    // Once it has descriptors again, the waiting request is answered.
    const c = conn;
    const timer = setTimeout(() => c.close(), 3000);
    const text = await new Response(c.readable).text().catch(() => "");
    conn = null;
    clearTimeout(timer);
    assert.ok(text.startsWith("["), `metrics JSON, got ${JSON.stringify(text.slice(0, 80))}`);
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch { /* exited already */ }
    const status = await child.status;
    const said = (await errText).slice(-2000);
    throw new Error(`${err}; the worker exited with ${status.code}, stderr: ${said}`);
  } finally {
    try {
      conn?.close();
    } catch { /* closed */ }
    try {
      child.kill("SIGKILL");
    } catch { /* exited already */ }
    await child.status;
    await writer.close().catch(() => {});
    await out.cancel();
    await Deno.remove(dir, { recursive: true });
  }
});
