// `prox explain` as users run it (exit codes, text and JSON), the admin `/explain` endpoint, and
// the proof that explain and the live proxy agree: the same request sent through a real Prox to a
// real upstream arrives with the path and headers explain predicted.

import assert from "node:assert/strict";
import { findTool, interopTest, ROOT, run, startUpstream } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Explanation } from "../../src/proxy/explain.ts";

const prox = (args: string[]) =>
  run(Deno.execPath(), ["run", "-A", "--config", `${ROOT}/deno.json`, `${ROOT}/mod.ts`, ...args], {
    env: { NO_COLOR: "1" },
    timeoutMs: 30_000,
  });

const TOKEN = "explain-admin-token";

const yaml = (upstream: string) =>
  `listen_addr: "127.0.0.1:0"
admin:
  listen_addr: "127.0.0.1:0"
  token: "${TOKEN}"
health_check: { enabled: false }
routes:
  "/api":
    type: load_balance
    strategy: round_robin
    targets: ["${upstream}/base", "http://127.0.0.1:9/never"]
    path_rewrite: /v2
    request_headers:
      add: { X-Env: prod, X-Seen-Path: "{uri_path}", X-Api-Token: tok-123 }
      remove: [Cookie]
    rate_limit: { by: ip, requests: 100, period: 1m }
  "/old":
    type: redirect
    target: https://new.example.com/
`;

async function withConfig(text: string, fn: (file: string) => Promise<void>): Promise<void> {
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    await Deno.writeTextFile(file, text);
    await fn(file);
  } finally {
    await Deno.remove(file);
  }
}

Deno.test("prox explain prints the route, the upstream URL and the header diff; exit codes", async () => {
  await withConfig(yaml("http://127.0.0.1:8080"), async (file) => {
    const r = await prox(["explain", "-c", file, "POST", "http://example.com/api/users?x=1"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /✓ \/api: longest matching prefix \/api/);
    assert.match(r.stdout, /✗ \/old: prefix \/old does not match path \/api\/users/);
    assert.match(r.stdout, /Upstream: http:\/\/127\.0\.0\.1:8080\/base\/v2\/users\?x=1/);
    assert.match(r.stdout, /health unknown/);
    assert.match(r.stdout, /\+ x-env: prod/);
    assert.match(r.stdout, /\+ x-request-id: \(a new id per request\)/);
    assert.match(r.stdout, /key ip:192\.0\.2\.1/);
    const j = await prox(["explain", "-c", file, "/old/a", "--format", "json"]);
    assert.equal(j.code, 0, j.stderr);
    const e: Explanation = JSON.parse(j.stdout);
    assert.deepEqual(e.answer, { status: 307, location: "https://new.example.com/a" });
    const usage = await prox(["explain", "-c", file]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /explain needs a URL/);
    const header = await prox(["explain", "-c", file, "/api", "-H", "NoColon"]);
    assert.equal(header.code, 2);
    assert.match(header.stderr, /write it as 'Name: value'/);
  });
  await withConfig("routes:\n  /x: { type: proxy, target: nope }\n", async (file) => {
    const bad = await prox(["explain", "-c", file, "/x"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /:2:22: error: routes\.\/x\.target/);
  });
  const help = await prox(["help", "explain"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: prox explain/);
});

interopTest(
  "explain (CLI and admin) and the live proxy agree on the upstream path and headers",
  ["curl"],
  async () => {
    const seen: { path: string; headers: [string, string][] }[] = [];
    await using up = await startUpstream((req) => {
      const u = new URL(req.url);
      seen.push({ path: u.pathname + u.search, headers: [...req.headers] });
      return new Response("ok");
    });
    const text = yaml(up.url);
    await withConfig(text, async (file) => {
      const server = await startServer({ path: file }, { logger: silentLogger, version: "test" });
      try {
        const sent: [string, string][] = [
          ["User-Agent", "explain-test"],
          ["Accept", "*/*"],
          ["Cookie", "session=1"],
          ["X-Forwarded-For", "203.0.113.9"],
        ];
        const target = `http://127.0.0.1:${server.port}/api/a/b?q=%27x%27&y`;
        const curl = await run(findTool("curl")!, [
          "-sS",
          ...sent.flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
          target,
        ]);
        assert.equal(curl.code, 0, curl.stderr);
        assert.equal(seen.length, 1);
        const got = seen[0];

        // Offline, through the CLI, with the client address the proxy saw.
        const cli = await prox([
          "explain",
          "-c",
          file,
          "--format",
          "json",
          "--client-ip",
          "127.0.0.1",
          target,
          ...sent.flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
        ]);
        assert.equal(cli.code, 0, cli.stderr);
        // Live, over the admin listener (health known, nothing sent upstream).
        const params = new URLSearchParams({ url: target, method: "GET", client_ip: "127.0.0.1" });
        for (const [k, v] of sent) params.append("header", `${k}: ${v}`);
        const res = await fetch(`http://127.0.0.1:${server.admin!.port}/explain?${params}`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        });
        assert.equal(res.status, 200);
        const live: Explanation = await res.json();
        assert.equal(seen.length, 1, "explain sent nothing upstream");

        // A secret a rule adds is shown to the admin API redacted (the CLI reads the file anyway).
        const token = (e: Explanation) =>
          e.requestHeaders!.added.find(([k]) => k === "x-api-token");
        assert.deepEqual(token(live), ["x-api-token", "[redacted]"]);
        live.requestHeaders!.added = live.requestHeaders!.added.map(([k, v]) =>
          k === "x-api-token" ? [k, "tok-123"] : [k, v]
        );
        for (const e of [JSON.parse(cli.stdout) as Explanation, live]) {
          assert.equal(e.route, "/api");
          assert.equal(e.upstream!.url, `${up.url}/base/v2/a/b?q=%27x%27&y`);
          assert.equal(e.upstream!.url.slice(up.url.length), got.path);
          // The client's headers with explain's diff applied are what the upstream received.
          const expected = new Map<string, string>([["host", `127.0.0.1:${server.port}`]]);
          for (const [k, v] of sent) expected.set(k.toLowerCase(), v);
          for (const k of e.requestHeaders!.removed) expected.delete(k);
          for (const [k, , v] of e.requestHeaders!.changed) expected.set(k, v);
          for (const [k, v] of e.requestHeaders!.added) expected.set(k, v);
          const received = new Map(got.headers);
          // Each request has its own id.
          for (const m of [expected, received]) m.delete("x-request-id");
          assert.deepEqual(Object.fromEntries(received), Object.fromEntries(expected));
        }
        assert.deepEqual(live.upstream!.targets.map((t) => t.available), [true, true]);
      } finally {
        await server.shutdown();
      }
    });
  },
);
