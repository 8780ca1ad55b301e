import assert from "node:assert/strict";
import { JwksCache } from "./jwks.ts";
import { silentLogger } from "../ports.ts";
import type { JwksAnswer } from "../ports.ts";

const SET = JSON.stringify({
  keys: [{
    kty: "OKP",
    crv: "Ed25519",
    x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
    kid: "a",
  }],
});

/** A JwksCache over a scripted fetcher and a hand-moved clock. */
function setup(answers: (() => JwksAnswer | Promise<JwksAnswer>)[]) {
  let t = 0;
  const calls: number[] = [];
  const logged: [string, string, Record<string, unknown> | undefined][] = [];
  const cache = new JwksCache({
    fetcher: {
      fetch() {
        calls.push(t);
        const next = answers.shift();
        return next ? Promise.resolve().then(next) : Promise.reject(new Error("refused"));
      },
    },
    clock: { now: () => t, monotonic: () => t },
    logger: {
      ...silentLogger,
      log: (level, msg, f) => logged.push([level, msg, f]),
      warn: (msg, f) => logged.push(["warn", msg, f]),
    },
  });
  return { cache, calls, logged, tick: (ms: number) => t += ms };
}

const bounds = { minMs: 30_000, maxMs: 3_600_000 };
const ok = (cacheControl: string | null = null): () => JwksAnswer => () => ({
  status: 200,
  body: SET,
  cacheControl,
});

Deno.test("JwksCache: max-age within the bounds, then a background refresh", async () => {
  const { cache, calls, tick } = setup([ok("max-age=5"), ok("max-age=999999"), ok()]);
  assert.equal((await cache.keys("u", { bounds }))?.length, 1);
  tick(29_000); // max-age 5 s, raised to the 30 s floor
  await cache.keys("u", { bounds });
  assert.equal(calls.length, 1);
  tick(1_000);
  const held = await cache.keys("u", { bounds }); // stale: answered with the held keys at once
  assert.equal(held?.length, 1);
  assert.equal(calls.length, 2);
  await new Promise((r) => setTimeout(r, 0)); // the refresh lands
  tick(3_599_000); // max-age capped at jwks_max_refresh
  await cache.keys("u", { bounds });
  assert.equal(calls.length, 2);
  tick(1_000);
  await cache.keys("u", { bounds });
  assert.equal(calls.length, 3);
});

Deno.test("JwksCache: a set whose keys have no kid is not refetched for a token's kid", async () => {
  const noKid = JSON.stringify({ keys: [{ ...JSON.parse(SET).keys[0], kid: undefined }] });
  const { cache, calls, tick } = setup([() => ({ status: 200, body: noKid, cacheControl: null })]);
  assert.equal((await cache.keys("u", { kid: "x", bounds }))?.length, 1);
  tick(60_000);
  assert.equal((await cache.keys("u", { kid: "y", bounds }))?.length, 1);
  assert.equal(calls.length, 1);
});

Deno.test("JwksCache: a failure keeps the last keys; unknown kids refetch once per minMs", async () => {
  const { cache, calls, tick } = setup([
    () => ({ status: 500, body: "", cacheControl: null }),
    ok(),
  ]);
  assert.equal(await cache.keys("u", { bounds }), null); // IdP down at start: no keys, no throw
  assert.equal(await cache.keys("u", { bounds }), null);
  assert.equal(calls.length, 1, "a failed fetch waits minMs before the next");
  tick(30_000);
  assert.equal((await cache.keys("u", { bounds }))?.length, 1);
  tick(30_000);
  // A kid the set lacks: one refetch (it fails), the keys held stay.
  assert.equal((await cache.keys("u", { kid: "b", bounds }))?.length, 1);
  assert.equal((await cache.keys("u", { kid: "c", bounds }))?.length, 1);
  assert.equal(calls.length, 3);
});

Deno.test("JwksCache: a new set is logged at info with its kids, the same set again at debug", async () => {
  const { cache, logged, tick } = setup([ok("max-age=60"), ok("max-age=60")]);
  await cache.keys("u", { bounds });
  tick(60_000);
  await cache.keys("u", { bounds });
  await new Promise((r) => setTimeout(r, 0)); // the background refresh lands
  assert.deepEqual(logged, [
    ["info", "JWK Set fetched", { url: "u", kids: "a", keepSeconds: 60 }],
    ["debug", "JWK Set fetched", { url: "u", kids: "a", keepSeconds: 60 }],
  ]);
});

Deno.test("JwksCache: an HMAC (oct) key in a fetched set is not used: anyone can read it", async () => {
  const oct = { kty: "oct", k: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", kid: "h" };
  const mixed = JSON.stringify({ keys: [oct, ...JSON.parse(SET).keys] });
  const { cache } = setup([() => ({ status: 200, body: mixed, cacheControl: null })]);
  const keys = await cache.keys("u", { bounds });
  assert.deepEqual(keys?.map((k) => k.kid), ["a"]);
  // A set of only HMAC keys is a failed fetch: nothing verifies with it.
  const only = setup([() => ({
    status: 200,
    body: JSON.stringify({ keys: [oct] }),
    cacheControl: null,
  })]);
  assert.equal(await only.cache.keys("u", { bounds }), null);
});

Deno.test("JwksCache: logs the URL with a secret query value or password redacted", async () => {
  const { cache, logged, tick } = setup([ok("max-age=60")]);
  const url = "https://idp.example/jwks?api_key=K3YVALUE&tenant=t1";
  await cache.keys(url, { bounds });
  tick(60_000);
  // The refresh fails (the script has no more answers): warned, the keys held stay.
  assert.equal((await cache.keys(url, { bounds }))?.length, 1);
  await new Promise((r) => setTimeout(r, 0)); // the background refresh lands
  const text = JSON.stringify(logged);
  assert.match(text, /JWK Set fetched/);
  assert.match(text, /Cannot fetch JWK Set/);
  assert.doesNotMatch(text, /K3YVALUE/, text);
  assert.match(text, /tenant=t1/, text);
});
