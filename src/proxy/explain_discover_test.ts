import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { buildSnapshot } from "./snapshot.ts";
import { explainRequest } from "./explain.ts";
import { silentLogger } from "../ports.ts";
import type { FileStore } from "../ports.ts";

const files: FileStore = { stat: () => Promise.resolve(null), open: () => Promise.reject() };

Deno.test("explainRequest on a discover route without targets: 503, not a crash", async () => {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
routes:
  /:
    type: load_balance
    discover: { dns: "http://app.test:8080", refresh: 5s }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const out = await explainRequest({ method: "GET", url: "http://x/", headers: [] }, {
    snapshot,
    files,
    clock: { now: () => 0, monotonic: () => 0 },
    logger: silentLogger,
  });
  assert.equal(out.answer?.status, 503);
  assert.equal(out.upstream?.pick ?? null, null);
  assert.ok(
    out.notes.some((n) => n.includes("discover") && n.includes("app.test")),
    JSON.stringify(out.notes),
  );
});
