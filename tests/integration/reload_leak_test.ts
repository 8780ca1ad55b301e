// Leaks across reloads: 200 reloads that each replace listeners (TLS, tcp), health checks, rate
// limits and routes must leave the open file descriptors and the heap (after a full GC) where
// they were once warm. Runs `_reload_loop.ts` in its own process, with --expose-gc.

import assert from "node:assert/strict";
import { ROOT, run } from "../_harness.ts";

Deno.test("200 reloads replacing listeners, checks, limits and routes leave fds and heap flat", async () => {
  const out = await run(Deno.execPath(), [
    "run",
    "-A",
    "--v8-flags=--expose-gc",
    "--config",
    `${ROOT}/deno.json`,
    `${ROOT}/tests/integration/_reload_loop.ts`,
    "200",
  ], { timeoutMs: 120_000 });
  assert.equal(out.code, 0, out.stderr);
  const { failures, samples } = JSON.parse(out.stdout.trim().split("\n").pop()!) as {
    failures: number;
    samples: { i: number; fds: number; heap: number }[];
  };
  assert.equal(failures, 0);
  const warm = samples[0];
  const last = samples[samples.length - 1];
  assert.equal(last.i, 200);
  // A listener, watcher, prober or Redis-style connection kept per reload would add 180 fds.
  for (const s of samples) assert.ok(s.fds <= warm.fds + 3, JSON.stringify(samples));
  // V8's own compiled code grows a little as the loop warms up (under 1.5 MiB seen); a snapshot,
  // router or checker kept per reload would be several times that.
  const grown = last.heap - warm.heap;
  assert.ok(grown < 4 * 1024 * 1024, `heap grew ${grown} bytes: ${JSON.stringify(samples)}`);
});
