import assert from "node:assert/strict";
import { renewalAt, renewalReason, retryDelay, sanNames } from "./acme_schedule.ts";

const DAY = 86_400_000;
const facts = { notAfter: 100 * DAY, names: ["a.example", "B.example"] };

Deno.test("renewalAt is renewal_days before notAfter, moved earlier by at most a day of jitter", () => {
  assert.equal(renewalAt(facts, { renewBeforeDays: 30, jitter: 0 }), 70 * DAY);
  const late = renewalAt(facts, { renewBeforeDays: 30, jitter: 0.999999 });
  assert.ok(late < 70 * DAY && late > 69 * DAY);
  // Short renewal periods get a tenth as jitter window, never more.
  assert.ok(renewalAt(facts, { renewBeforeDays: 1, jitter: 0.999999 }) > 99 * DAY - DAY / 10);
});

Deno.test("renewalAt: a lead time past half the lifetime becomes a third of it (short-lived certificates)", () => {
  const HOUR = DAY / 24;
  const day = { notBefore: 10 * DAY, notAfter: 11 * DAY, names: [] };
  assert.equal(renewalAt(day, { renewBeforeDays: 30, jitter: 0 }), 11 * DAY - 8 * HOUR);
  const sixDays = { notBefore: 0, notAfter: 6 * DAY, names: [] };
  assert.equal(renewalAt(sixDays, { renewBeforeDays: 30, jitter: 0 }), 4 * DAY);
  // 90-day certificates keep the configured 30 days.
  const ninety = { notBefore: 10 * DAY, notAfter: 100 * DAY, names: [] };
  assert.equal(renewalAt(ninety, { renewBeforeDays: 30, jitter: 0 }), 70 * DAY);
  // Jitter stays within the shortened period.
  assert.ok(renewalAt(day, { renewBeforeDays: 30, jitter: 0.999999 }) > 11 * DAY - 9 * HOUR);
});

Deno.test("renewalReason keeps a valid certificate covering every domain", () => {
  const base = { domains: ["a.example", "b.example"], renewAt: 70 * DAY };
  assert.equal(renewalReason(facts, { ...base, now: 10 * DAY }), null);
  assert.equal(renewalReason(null, { ...base, now: 10 * DAY }), "missing");
  assert.equal(renewalReason(facts, { ...base, domains: ["c.example"], now: 0 }), "domains");
  assert.equal(renewalReason(facts, { ...base, now: 70 * DAY }), "due");
  assert.equal(renewalReason(facts, { ...base, now: 100 * DAY }), "expired");
  // A key of another type than configured is replaced; one whose type is unknown is not.
  const rsa = { ...facts, keyType: "rsa2048" };
  assert.equal(renewalReason(rsa, { ...base, now: 10 * DAY, keyType: "p256" }), "key_type");
  assert.equal(renewalReason(rsa, { ...base, now: 10 * DAY, keyType: "rsa2048" }), null);
  assert.equal(renewalReason(facts, { ...base, now: 10 * DAY, keyType: "p256" }), null);
  assert.equal(
    renewalReason(rsa, { ...base, domains: ["c.example"], now: 0, keyType: "p256" }),
    "domains",
  );
});

Deno.test("retryDelay doubles per failure within [50 %, 100 %] and is capped", () => {
  assert.deepEqual([1, 2, 3, 4].map((n) => retryDelay(n, { random: 0, baseMs: 1000 })), [
    500,
    1000,
    2000,
    4000,
  ]);
  assert.equal(retryDelay(2, { random: 0.999999, baseMs: 1000 }), 1999);
  assert.equal(retryDelay(60, { random: 0.999999, baseMs: 1000, maxMs: 5000 }), 4999);
  assert.equal(retryDelay(1, { random: Number.NaN }), 30_000);
});

Deno.test("sanNames keeps DNS names only", () => {
  assert.deepEqual(sanNames("DNS:a.example, IP Address:127.0.0.1, DNS:b.example"), [
    "a.example",
    "b.example",
  ]);
  assert.deepEqual(sanNames(undefined), []);
});
