import assert from "node:assert/strict";
import { configChanges, configChangeSteps } from "./diff.ts";
import { loadConfigText } from "./load.ts";
import type { Config } from "./schema.ts";

function cfg(yaml: string): Config {
  const { config, issues } = loadConfigText(`listen_addr: "127.0.0.1:3000"\n${yaml}`, {
    file: "t.yaml",
    env: { exists: () => true },
  });
  assert.ok(config, JSON.stringify(issues));
  return config;
}

const base = cfg(`routes:
  /api: { type: proxy, target: "http://10.0.0.1:80" }
  /lb: { type: load_balance, targets: ["http://10.0.0.2", "http://10.0.0.3"] }
  /old: { type: redirect, target: "/" }
`);

Deno.test("configChanges says which routes came, went and changed, and how", () => {
  assert.deepEqual(configChanges(base, base), []);
  const next = cfg(`log: { level: debug }
routes:
  /api: { type: proxy, target: "http://10.0.0.9:80", compress: true }
  /lb:
    type: load_balance
    targets: ["http://10.0.0.2", { url: "http://10.0.0.4", weight: 3 }]
    strategy: least_connections
  /new: { type: static, root: . }
`);
  assert.deepEqual(configChanges(base, next), [
    'route "/api": target http://10.0.0.1:80 → http://10.0.0.9:80; changed compress',
    'route "/lb": targets added: http://10.0.0.4; targets removed: http://10.0.0.3; changed strategy',
    'route "/new" added (static)',
    'route "/old" removed',
    "log changed",
  ]);
});

Deno.test("configChanges: weights without new URLs, a type change, and a bound on the lines", () => {
  const weights = cfg(`routes:
  /api: { type: proxy, target: "http://10.0.0.1:80" }
  /lb: { type: load_balance, targets: ["http://10.0.0.2", { url: "http://10.0.0.3", weight: 5 }] }
  /old: { type: static, root: . }
`);
  assert.deepEqual(configChanges(base, weights), [
    'route "/lb": changed targets',
    'route "/old": type redirect → static',
  ]);
  const many = cfg(
    "routes:\n" +
      Array.from({ length: 60 }, (_, i) => `  /r${i}: { type: redirect, target: "/" }\n`).join(""),
  );
  const lines = configChanges(base, many);
  assert.equal(lines.length, 41);
  assert.equal(lines[40], "and 23 more changes");
});

Deno.test("configChanges names a redirect's new target (the line said nothing after the route)", () => {
  const moved = cfg(`routes:
  /api: { type: proxy, target: "http://10.0.0.1:80" }
  /lb: { type: load_balance, targets: ["http://10.0.0.2", "http://10.0.0.3"] }
  /old: { type: redirect, target: "/new" }
`);
  assert.deepEqual(configChanges(base, moved), ['route "/old": target / → /new']);
});

Deno.test("configChangeSteps pauses once per route of the new config and ends with configChanges' lines", () => {
  const next = cfg(`routes:
  /api: { type: proxy, target: "http://10.0.0.9:80" }
  /lb: { type: load_balance, targets: ["http://10.0.0.2", "http://10.0.0.3"] }
`);
  const steps = configChangeSteps(base, next);
  let pauses = 0;
  for (let step = steps.next();; step = steps.next(), pauses++) {
    if (step.done) {
      assert.deepEqual(step.value, configChanges(base, next));
      break;
    }
  }
  assert.equal(pauses, 2);
});
