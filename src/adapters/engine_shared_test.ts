import assert from "node:assert/strict";
import { deadlineTrailers, EngineInfo } from "./engine_shared.ts";
import { ProxyError } from "../domain/errors.ts";
import { BODY_BYTES } from "../ports.ts";
import type { CountedResponse } from "../ports.ts";

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

Deno.test("deadlineTrailers: a native gRPC answer's timeout becomes grpc-status 4 trailers; nothing else does", () => {
  const answer = (type: string) => {
    const res: CountedResponse = new Response(null, { headers: { "content-type": type } });
    res[BODY_BYTES] = { bytes: 5, ended: false };
    return res;
  };
  const late = new ProxyError("timeout", 'Upstream "10.0.0.5:50051" was idle for 300 ms');
  const grpc = answer("application/grpc+proto");
  assert.ok(deadlineTrailers(grpc, late));
  // The reason Prox's own timeout answers give, not the error's text (an upstream's address).
  assert.deepEqual(grpc[BODY_BYTES]!.trailers, [
    ["grpc-status", "4"],
    ["grpc-message", "Gateway timeout"],
  ]);
  // A response without a counter gets one.
  const bare = new Response(null, { headers: { "content-type": "application/grpc" } });
  assert.ok(deadlineTrailers(bare, late));
  assert.equal((bare as CountedResponse)[BODY_BYTES]!.trailers![0][1], "4");
  // Not a timeout, not native gRPC (gRPC-Web's status is in its body), not a ProxyError: no.
  for (
    const [type, err] of [
      ["application/grpc", new ProxyError("upstream_reset", "reset")],
      ["application/grpc-web", late],
      ["text/plain", late],
      ["application/grpc", new Error("timeout")],
    ] as const
  ) {
    const res = answer(type);
    assert.ok(!deadlineTrailers(res, err), `${type} ${err}`);
    assert.equal(res[BODY_BYTES]!.trailers, undefined);
  }
});
