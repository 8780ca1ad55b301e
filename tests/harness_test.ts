import assert from "node:assert/strict";
import { startUpstream, waitFor } from "./_harness.ts";

Deno.test("startUpstream serves on an ephemeral port", async () => {
  await using up = await startUpstream(() => new Response("hi"));
  assert.ok(up.port > 0);
  const res = await fetch(up.url);
  assert.equal(await res.text(), "hi");
});

Deno.test("waitFor rejects when the condition never holds", async () => {
  await assert.rejects(waitFor(() => false, { timeoutMs: 50, what: "never" }), /never/);
});
