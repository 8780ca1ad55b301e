import assert from "node:assert/strict";
import { listenKeys, loadConfigOffThread } from "./config_offthread.ts";
import { loadConfigText } from "../config/load.ts";
import { denoEnv } from "./config_source.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const FIXTURES = `${ROOT}tests/fixtures/config`;

/** Every fixture config (valid and invalid), the shipped config.yaml, and a few edge cases. */
function samples(): [string, string][] {
  const out: [string, string][] = [];
  for (const e of Deno.readDirSync(FIXTURES)) {
    if (e.isFile && e.name.endsWith(".yaml")) {
      out.push([e.name, Deno.readTextFileSync(`${FIXTURES}/${e.name}`)]);
    }
  }
  out.push(["config.yaml", Deno.readTextFileSync(`${ROOT}config.yaml`)]);
  // set_json's big integers are JSON.rawJSON values, which a structured clone makes plain objects.
  out.push([
    "raw_json.yaml",
    `listen_addr: "127.0.0.1:0"
routes:
  /n:
    type: respond
    response_body: { set_json: { id: 12345678901234567890, list: [1, 98765432109876543210] } }
tcp:
  db: { listen_addr: "127.0.0.1:0", targets: ["127.0.0.1:5432"] }
`,
  ]);
  out.push(["syntax.yaml", "listen_addr: [\nroutes: {"]);
  out.push(["empty.yaml", ""]);
  return out.sort(([a], [b]) => a < b ? -1 : 1);
}

Deno.test("loadConfigOffThread: the worker gives what loadConfigText gives, for every sample", async () => {
  const fallbacks: string[] = [];
  for (const [name, text] of samples()) {
    const here = loadConfigText(text, { file: name, env: denoEnv });
    const there = await loadConfigOffThread(text, {
      file: name,
      above: 0,
      onFallback: (why) => fallbacks.push(`${name}: ${why}`),
    });
    assert.deepStrictEqual(there.config, here.config, name);
    assert.deepStrictEqual(there.candidate, here.candidate, name);
    assert.deepStrictEqual(there.issues, here.issues, name);
    for (const key of listenKeys(here.config ?? here.candidate)) {
      assert.deepStrictEqual(there.locate?.(key), here.locate?.(key), `${name}: ${key}`);
    }
    // A key the worker did not look up is found too.
    assert.deepStrictEqual(there.locate?.(["routes"]), here.locate?.(["routes"]), name);
  }
  assert.deepStrictEqual(fallbacks, []);
});

Deno.test("loadConfigOffThread: set_json's exact big integers survive the worker", async () => {
  const [, text] = samples().find(([n]) => n === "raw_json.yaml")!;
  const fallbacks: string[] = [];
  const { config } = await loadConfigOffThread(text, {
    file: "raw_json.yaml",
    above: 0,
    onFallback: (why) => fallbacks.push(why),
  });
  assert.deepStrictEqual(fallbacks, []);
  const route = config!.routes["/n"] as { response_body?: { set_json?: unknown } };
  assert.equal(
    JSON.stringify(route.response_body?.set_json),
    '{"id":12345678901234567890,"list":[1,98765432109876543210]}',
  );
});

Deno.test("loadConfigOffThread: a config under the threshold is loaded in place, at once", async () => {
  const text = 'listen_addr: "127.0.0.1:0"\nroutes:\n  /: { type: respond }\n';
  const t0 = performance.now();
  const r = await loadConfigOffThread(text, { file: "small.yaml" });
  assert.ok(r.config);
  // A worker takes tens of milliseconds to start; this config takes about one to load.
  assert.ok(performance.now() - t0 < 15, `took ${performance.now() - t0} ms`);
});
