import assert from "node:assert/strict";
import { errorResponse, grpcErrorResponse } from "./respond.ts";

Deno.test("grpcErrorResponse: a trailers-only answer, its message percent-encoded and bounded", () => {
  const res = grpcErrorResponse(
    errorResponse("rate_limited", "id-1", { message: "Slow down: 100% é", exact: true }),
    "application/grpc",
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("grpc-status"), "8");
  assert.equal(res.headers.get("grpc-message"), "Slow down: 100%25 %C3%A9");
  assert.equal(res.headers.get("x-request-id"), "id-1");
  assert.equal(res.body, null);
  // A long configured message (a rate limit's) is cut to 1,024 characters before encoding, on a
  // character: a client refusing a head over 8 KiB still reads the status.
  const long = grpcErrorResponse(
    errorResponse("rate_limited", "id-2", { message: "😀".repeat(3000), exact: true }),
    "application/grpc-web",
  );
  const msg = long.headers.get("grpc-message")!;
  assert.equal(msg, "%F0%9F%98%80".repeat(1024));
  assert.equal(long.headers.get("content-type"), "application/grpc-web");
});

Deno.test("errorResponse: text that may quote the client is marked nosniff", () => {
  const res = errorResponse("bad_request", "id-3", { message: 'Invalid Content-Length "<b>"' });
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
  assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
});
