// A reload of a large config (thousands of routes) keeps answering requests: its YAML parse and
// validation run in a worker (src/adapters/config_offthread.ts). Before, they ran on the event
// loop, and no request was answered for the seconds they took.
import assert from "node:assert/strict";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { denoEnv } from "../../src/adapters/config_source.ts";

/** A config of `routes` proxy routes with header rules and conditions, plus a /ping route. */
function largeConfig(routes: number): string {
  const lines = [
    `listen_addr: "127.0.0.1:0"`,
    "health_check: { enabled: false }",
    "routes:",
    "  /ping: { type: respond, body: pong }",
  ];
  for (let i = 0; i < routes; i++) {
    lines.push(
      `  "/svc-${i}/api":`,
      "    type: proxy",
      `    target: "http://10.${(i >> 8) & 255}.${i & 255}.1:8080"`,
      "    timeouts: { connect: 2s }",
      "    request_headers:",
      `      set: { "X-Service": "svc-${i}", "X-Request-Start": "{timestamp}" }`,
      `      condition: { path_matches: "^/svc-${i}/api/v[0-9]+/", method_is: [GET, POST] }`,
      "    response_headers:",
      `      condition: { status_is: "5xx" }`,
      `      set: { "Cache-Control": "no-store" }`,
    );
    if (i % 4 === 0) {
      lines.push(
        `  "/svc-${i}/api#canary":`,
        "    type: proxy",
        `    target: "http://10.${(i >> 8) & 255}.${i & 255}.2:8080"`,
        `    match: { has_header: { name: Cookie, value_matches: "(^|; )canary=1(;|$)" } }`,
      );
    }
  }
  return lines.join("\n") + "\n";
}

/**
 * Sends requests one after another to `url` while `during` runs; the longest time between two
 * answers (or between the start or end of `during` and the nearest answer), and how long it ran.
 */
async function longestGap(
  url: string,
  during: () => Promise<void>,
): Promise<{ gap: number; took: number }> {
  const answers: number[] = [];
  let running = true;
  const client = (async () => {
    while (running) {
      const res = await fetch(url);
      assert.equal(await res.text(), "pong");
      answers.push(performance.now());
    }
  })();
  // Keep-alive connection open and answering before the reload starts.
  while (answers.length < 5) await new Promise((r) => setTimeout(r, 1));
  const start = performance.now();
  await during();
  const end = performance.now();
  const firstAfter = answers.length;
  while (answers.length === firstAfter) await new Promise((r) => setTimeout(r, 1));
  running = false;
  await client;
  const times = [start, ...answers.filter((t) => t > start && t < end), end];
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i] - times[i - 1]);
  return { gap, took: end - start };
}

Deno.test("reload: a large config is parsed off the event loop, which keeps answering", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-reload-offthread-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(file, largeConfig(2000));
  const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
  try {
    // The same config with one route more: a real change, applied.
    await Deno.writeTextFile(file, largeConfig(2001));
    let ok = false;
    const { gap, took } = await longestGap(`http://127.0.0.1:${server.port}/ping`, async () => {
      ok = (await server.reload()).ok;
    });
    assert.ok(ok, "the reload applied");
    assert.ok(server.snapshot().config.routes["/svc-2000/api"], "the new route serves");
    // Before, the event loop was blocked for nearly the whole reload (gap ≈ took). Parsing and
    // validating (most of it) now run in a worker; what is left here (the snapshot build, the
    // diff) is a fraction of it on any machine, however slow or loaded.
    assert.ok(
      gap < took / 2,
      `the longest time without an answer was ${gap.toFixed(0)} ms of a ${
        took.toFixed(0)
      } ms reload`,
    );
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: a large config that fails in the worker is reported as before and the old one serves", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-reload-offthread-" });
  const file = `${dir}/config.yaml`;
  const good = largeConfig(1500);
  await Deno.writeTextFile(file, good);
  const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
  try {
    // A misspelt key deep in the file, and a target that is no URL.
    const bad = good.replace(
      '"/svc-1200/api":\n    type: proxy',
      '"/svc-1200/api":\n    tpye: proxy',
    )
      .replace('"http://10.4.220.1:8080"', '"10.4.220.1:8080"');
    assert.notEqual(bad, good);
    await Deno.writeTextFile(file, bad);
    const result = await server.reload();
    assert.equal(result.ok, false);
    const expected = loadConfigText(bad, { file, env: denoEnv }).issues;
    assert.ok(expected.length >= 2);
    assert.deepStrictEqual(result.issues, expected);
    assert.match(
      result.issues.map((i) => `${i.file}:${i.line}:${i.col}: ${i.message} ${i.hint}`).join("\n"),
      /config\.yaml:\d+:5: Unknown key "tpye" Did you mean "type"\?/,
    );
    const res = await fetch(`http://127.0.0.1:${server.port}/ping`);
    assert.equal(await res.text(), "pong");
    assert.equal(server.snapshot().version, 1);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
