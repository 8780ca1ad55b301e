// A reload that changes how a target is checked (path, host, headers…): the target keeps its
// status until the new check's first result, which decides. It used to count as available (and
// was announced "no longer health-checked") until that result came.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { recordingLogger } from "./_backend.ts";

/**
 * An upstream whose /health fails and whose /ready probe hangs until `release()`; every other
 * path answers "app" and is counted in `served`.
 */
async function heldUpstream() {
  let release = () => {};
  const held = new Promise<void>((r) => release = r);
  const counts = { served: 0 };
  const up = await startUpstream(async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/health") return new Response("no", { status: 500 });
    if (path === "/ready") return await held.then(() => new Response("ok"));
    counts.served++;
    return new Response("app");
  });
  return { up, counts, release: () => release() };
}

Deno.test("reload: a down target whose check changed stays out until the new check's first result", async () => {
  const { up, counts, release } = await heldUpstream();
  await using _up = up;
  const dir = await Deno.makeTempDir({ prefix: "prox-check-change-" });
  const file = `${dir}/prox.yaml`;
  const config = (path: string) => `
listen_addr: "127.0.0.1:0"
health_check: { interval_secs: 60, timeout_secs: 30, path: ${path} }
routes:
  "/": { type: load_balance, targets: ["${up.url}"] }
`;
  await Deno.writeTextFile(file, config("/health"));
  const logger = recordingLogger();
  const server = await startServer({ path: file }, { logger });
  try {
    const reg = server.upstreams;
    const url = `http://127.0.0.1:${server.port}/`;
    await waitFor(() => reg.list().find((u) => u.status === "down"), { what: "marked down" });
    await Deno.writeTextFile(file, config("/ready"));
    assert.ok((await server.reload()).ok);
    // The /ready probe is in flight: the target is still known down.
    const res = await fetch(url);
    assert.equal(res.status, 503);
    await res.body?.cancel();
    assert.equal(counts.served, 0);
    assert.ok(!logger.lines.some((l) => /no longer health-checked/.test(l.msg)), "not announced");
    // Its first result decides at once (not healthy_threshold of them).
    release();
    await waitFor(() => reg.list().find((u) => u.status === "up"), { what: "up by /ready" });
    const ok = await fetch(url);
    assert.equal(await ok.text(), "app");
    assert.ok(logger.lines.some((l) => l.msg === "Upstream recovered: health check passed"));
  } finally {
    release();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: a route that now checks a down target its own way waits for that check's first result", async () => {
  const { up, counts, release } = await heldUpstream();
  await using _up = up;
  const dir = await Deno.makeTempDir({ prefix: "prox-check-change-" });
  const file = `${dir}/prox.yaml`;
  // Both routes share the /health check of the one target; the reload gives /a its own.
  const config = (a: string) => `
listen_addr: "127.0.0.1:0"
health_check: { interval_secs: 60, timeout_secs: 30 }
routes:
  "/a": { type: load_balance, targets: ["${up.url}"]${a} }
  "/b": { type: load_balance, targets: ["${up.url}"] }
`;
  await Deno.writeTextFile(file, config(""));
  const server = await startServer({ path: file }, { logger: recordingLogger() });
  try {
    const reg = server.upstreams;
    await waitFor(() => reg.list().find((u) => u.status === "down"), { what: "marked down" });
    await Deno.writeTextFile(file, config(", health_check: { path: /ready }"));
    assert.ok((await server.reload()).ok);
    for (const route of ["/a", "/b"]) {
      const res = await fetch(`http://127.0.0.1:${server.port}${route}`);
      assert.equal(res.status, 503, route);
      await res.body?.cancel();
    }
    assert.equal(counts.served, 0);
    release();
    // /a's own check passes: /a serves, /b (still failing /health) does not.
    const a = await waitFor(async () => {
      const res = await fetch(`http://127.0.0.1:${server.port}/a`);
      if (res.status === 200) return await res.text();
      await res.body?.cancel();
      return undefined;
    }, { what: "/a served" });
    assert.equal(a, "app");
    const b = await fetch(`http://127.0.0.1:${server.port}/b`);
    assert.equal(b.status, 503);
    await b.body?.cancel();
  } finally {
    release();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
