import assert from "node:assert/strict";
import { EngineInfo } from "./engine_shared.ts";

const info = () =>
  new EngineInfo({ hostname: "127.0.0.1", port: 1 }, 8080, "http/1.1", false, "host", false);
const outcome = (p: Promise<void>) => p.then(() => "delivered", (e: Error) => e.message);

Deno.test("EngineInfo's completed settles with the answer, whether asked for before or after", async () => {
  const before = info();
  const asked = before.completed;
  assert.equal(before.completed, asked, "one promise per request");
  before.settle(true);
  before.settle(false); // settled once
  assert.equal(await outcome(asked), "delivered");

  const failed = info();
  const p = failed.completed;
  failed.settle(false);
  assert.equal(await outcome(p), "client went away");

  const late = info();
  late.settle(true);
  assert.equal(await outcome(late.completed), "delivered");
  const lateFail = info();
  lateFail.settle(false);
  assert.equal(await outcome(lateFail.completed), "client went away");

  // Never asked for: nothing to settle, and no unhandled rejection either way.
  info().settle(false);
  info().settle(true);
  const plain = info();
  assert.equal(plain.writesItself, true);
  assert.equal(plain.authority, "host");
});
