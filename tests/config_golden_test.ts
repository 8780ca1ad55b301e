// Golden tests: every config in tests/fixtures/config/ against its exact expected output
// (issues as `prox validate` prints them; for valid files also the resolved config).
// Regenerate with UPDATE_GOLDEN=1 after an intended change, then review the diff.
import assert from "node:assert/strict";
import { formatIssue, loadConfigText } from "../src/config/load.ts";
import { ROOT } from "./_harness.ts";

const DIR = `${ROOT}/tests/fixtures/config`;
const update = Deno.env.get("UPDATE_GOLDEN") === "1";

function render(file: string, text: string, base: string): string {
  const env = {
    exists: (p: string) => {
      try {
        Deno.statSync(p.startsWith("/") ? p : `${base}/${p}`);
        return true;
      } catch {
        return false;
      }
    },
    env: (n: string) => n === "PROX_TEST_ENV" ? "from-env" : undefined,
    readText: (p: string) => ({
      text: Deno.readTextFileSync(p.startsWith("/") ? p : `${base}/${p}`),
    }),
    stat: (p: string) => {
      try {
        const st = Deno.statSync(p.startsWith("/") ? p : `${base}/${p}`);
        return { isFile: st.isFile, size: st.size };
      } catch {
        return null;
      }
    },
  };
  const result = loadConfigText(text, { file, env });
  const lines = result.issues.map(formatIssue);
  lines.push(result.config ? "valid" : "invalid");
  if (result.config) lines.push(JSON.stringify(result.config, null, 2));
  return lines.join("\n") + "\n";
}

for (const entry of [...Deno.readDirSync(DIR)].sort((a, b) => a.name.localeCompare(b.name))) {
  if (!entry.name.endsWith(".yaml")) continue;
  Deno.test(`golden config ${entry.name}`, () => {
    const text = Deno.readTextFileSync(`${DIR}/${entry.name}`);
    const actual = render(entry.name, text, DIR);
    const outPath = `${DIR}/${entry.name.replace(/\.yaml$/, ".out")}`;
    if (update) Deno.writeTextFileSync(outPath, actual);
    assert.equal(actual, Deno.readTextFileSync(outPath));
    assert.equal(
      entry.name.startsWith("invalid"),
      actual.includes("\ninvalid\n") || actual.startsWith("invalid"),
    );
  });
}

Deno.test("golden config: the repository's config.yaml is valid", () => {
  const out = render("config.yaml", Deno.readTextFileSync(`${ROOT}/config.yaml`), ROOT);
  assert.ok(!out.includes(": error:"), out);
});

Deno.test("golden config: every yaml example in README.md is valid", () => {
  const readme = Deno.readTextFileSync(`${ROOT}/README.md`);
  const blocks = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.ok(blocks.length > 0, "README has yaml examples");
  for (const [i, block] of blocks.entries()) {
    const text = block.includes("listen_addr") ? block : `listen_addr: "127.0.0.1:3000"\n${block}`;
    const result = loadConfigText(text, {
      file: `README example ${i + 1}`,
      env: { exists: () => true },
    });
    const errors = result.issues.filter((x) => x.severity === "error").map(formatIssue);
    assert.deepEqual(errors, [], `README example ${i + 1}:\n${text}`);
  }
});

Deno.test("golden config: one anchor reused by hundreds of routes loads", () => {
  // The YAML library's default alias limit (100) made validate crash on such a file.
  const routes = Array.from(
    { length: 300 },
    (_, i) =>
      `  "/r${i}": { type: redirect, target: "/x${i}", rate_limit: ${i === 0 ? "&rl " : "*rl"}${
        i === 0 ? "{ by: ip, requests: 100, period: 1m }" : ""
      } }`,
  ).join("\n");
  const result = loadConfigText(`listen_addr: "127.0.0.1:3000"\nroutes:\n${routes}\n`, {
    file: "aliases.yaml",
    env: { exists: () => true },
  });
  assert.deepEqual(result.issues.map(formatIssue), []);
  assert.equal(Object.keys(result.config!.routes).length, 300);
});

Deno.test("golden config: an empty key is absent, but a null inside set_json is sent", () => {
  const result = loadConfigText(
    `listen_addr: "127.0.0.1:3000"
tls:
routes:
  "/":
    type: redirect
    target: "/api"
    status_code: ~
  "/api":
    type: proxy
    target: "http://127.0.0.1:8080"
    response_body: { set_json: { error: null, items: [null] } }
`,
    { file: "nulls.yaml", env: { exists: () => true } },
  );
  assert.deepEqual(result.issues.map(formatIssue), []);
  const c = result.config!;
  assert.equal(c.tls, undefined);
  const api = c.routes["/api"] as { response_body?: { set_json?: unknown } };
  assert.deepEqual(api.response_body?.set_json, { error: null, items: [null] });
});
