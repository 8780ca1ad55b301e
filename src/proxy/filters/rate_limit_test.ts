import assert from "node:assert/strict";
import { compileRateLimit, cookieValue, limitField, policyField } from "./rate_limit.ts";
import { policyOf } from "../../domain/rate_limit.ts";
import { RateLimit } from "../../config/schema.ts";

const cfg = (over: Record<string, unknown>) =>
  RateLimit.parse({ by: "ip", requests: 10, period: "1m", ...over });

Deno.test("policyField announces q per whole-second window, rescaling sub-second periods", () => {
  assert.equal(
    policyField(policyOf("token_bucket", { requests: 10, periodMs: 60_000 })),
    '"default";q=10;w=60',
  );
  assert.equal(policyField(policyOf("gcra", { requests: 5, periodMs: 500 })), '"default";q=10;w=1');
  assert.equal(
    policyField(policyOf("token_bucket", { requests: 2, periodMs: 1_000, burst: 5 })),
    '"default";q=2;w=1;prox-burst=5',
  );
  assert.equal(limitField(3, 7), '"default";r=3;t=7');
});

Deno.test("compileRateLimit ids change with the limit's shape, not with its response", () => {
  const base = compileRateLimit("/api", cfg({}));
  assert.equal(compileRateLimit("/api", cfg({ message: "x", status_code: 503 })).id, base.id);
  assert.equal(compileRateLimit("/api", cfg({ headers: false, shadow: true })).id, base.id);
  assert.notEqual(compileRateLimit("/api", cfg({ requests: 11 })).id, base.id);
  assert.notEqual(compileRateLimit("/api", cfg({ algorithm: "gcra" })).id, base.id);
  assert.notEqual(compileRateLimit("/other", cfg({})).id, base.id);
  assert.equal(base.policy.periodMs, 60_000);
  assert.ok(base.id.startsWith("/api#"));
});

Deno.test("cookieValue finds a cookie among others and unquotes it", () => {
  assert.equal(cookieValue("a=1; session=xyz; b=2", "session"), "xyz");
  assert.equal(cookieValue('session="q v"', "session"), "q v");
  assert.equal(cookieValue("sessionx=1", "session"), null);
  assert.equal(cookieValue(null, "session"), null);
});
