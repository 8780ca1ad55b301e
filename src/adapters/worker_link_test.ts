import assert from "node:assert/strict";
import { commandLine, purgeInput } from "./worker_link.ts";

Deno.test("purgeInput takes exactly one url, prefix or route string", () => {
  assert.deepEqual(purgeInput({ url: "http://h/x" }), { url: "http://h/x" });
  assert.deepEqual(purgeInput({ prefix: "http://h/" }), { prefix: "http://h/" });
  assert.deepEqual(purgeInput({ route: "/api" }), { route: "/api" });
  for (const bad of [null, "x", {}, { url: 1 }, { url: "a", route: "b" }, { path: "/x" }]) {
    assert.equal(purgeInput(bad), null, JSON.stringify(bad));
  }
  assert.equal(commandLine({ type: "purge", input: { route: "/a" } }), 'purge {"route":"/a"}\n');
});
