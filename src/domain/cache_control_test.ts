import assert from "node:assert/strict";
import {
  freshnessLifetime,
  initialAge,
  mergeNotModified,
  mustRevalidate,
  parseCacheControl,
  requestNeeds,
  staleIfErrorWindow,
  staleUse,
  staleWhileRevalidateWindow,
  unstorableReason,
  usableWithoutOrigin,
  varyNames,
} from "./cache_control.ts";
import type { StoreInput } from "./cache_control.ts";

const T = Date.UTC(2026, 0, 1);
const date = (ms: number) => new Date(ms).toUTCString();

Deno.test("parseCacheControl reads tokens, quoted strings and case-insensitive names", () => {
  const d = parseCacheControl('Max-Age=60, no-cache="Set-Cookie, X-A", public,,s-maxage = 5');
  assert.equal(d.get("max-age"), "60");
  assert.equal(d.get("no-cache"), "Set-Cookie, X-A");
  assert.equal(d.get("public"), null);
  assert.equal(d.get("s-maxage"), "5");
  assert.equal(parseCacheControl("max-age=1, max-age=9").get("max-age"), "1");
  assert.equal(parseCacheControl(null).size, 0);
});

Deno.test("freshnessLifetime prefers s-maxage, then max-age, then Expires - Date", () => {
  const t = {
    requestTime: T,
    responseTime: T,
    date: date(T),
    age: null,
    expires: date(T + 90_000),
  };
  assert.equal(freshnessLifetime(parseCacheControl("max-age=10, s-maxage=20"), t), 20_000);
  assert.equal(freshnessLifetime(parseCacheControl("max-age=10"), t), 10_000);
  assert.equal(freshnessLifetime(parseCacheControl(""), t), 90_000);
  // An invalid Expires means already expired, and so does a malformed max-age or s-maxage,
  // whatever else the answer says (RFC 9111 §4.2.1, as nginx refuses to cache it): a negative
  // one is the origin saying "expired", never "ask Expires or the route's default_ttl".
  assert.equal(freshnessLifetime(parseCacheControl(""), { ...t, expires: "0" }), 0);
  assert.equal(freshnessLifetime(parseCacheControl("max-age=ten"), t), 0);
  assert.equal(freshnessLifetime(parseCacheControl("max-age=-1"), t, 5_000), 0);
  assert.equal(
    freshnessLifetime(parseCacheControl("max-age=-1"), { ...t, expires: null }, 5_000),
    0,
  );
  assert.equal(freshnessLifetime(parseCacheControl("s-maxage=1.5, max-age=60"), t), 0);
  assert.equal(freshnessLifetime(parseCacheControl("max-age"), t), 0);
  // Too large is not malformed: 2^31 s (RFC 9111 §1.2.2).
  assert.equal(
    freshnessLifetime(parseCacheControl("max-age=99999999999999999999"), t),
    2 ** 31 * 1000,
  );
  // Heuristic freshness only when configured.
  assert.equal(freshnessLifetime(parseCacheControl(""), { ...t, expires: null }), 0);
  assert.equal(freshnessLifetime(parseCacheControl(""), { ...t, expires: null }, 5_000), 5_000);
});

Deno.test("initialAge takes the larger of apparent age and Age plus the response delay", () => {
  const base = { requestTime: T, responseTime: T + 2_000, expires: null };
  assert.equal(initialAge({ ...base, date: date(T - 30_000), age: null }), 32_000);
  assert.equal(initialAge({ ...base, date: date(T + 2_000), age: "100" }), 102_000);
  assert.equal(initialAge({ ...base, date: null, age: "bogus" }), 2_000);
  // A list (two Age field lines, a chain that appended one): the first member (RFC 9111 §5.1).
  assert.equal(initialAge({ ...base, date: null, age: "100, 7" }), 102_000);
  assert.equal(initialAge({ ...base, date: null, age: "bogus, 7" }), 2_000);
  // Too large is 2^31 s (RFC 9111 §1.2.2).
  assert.equal(
    initialAge({ ...base, date: null, age: "1" + "0".repeat(30) }),
    2 ** 31 * 1000 + 2_000,
  );
});

Deno.test("unstorableReason follows RFC 9111 §3 for a shared cache", () => {
  const base: StoreInput = {
    status: 200,
    response: parseCacheControl("max-age=60"),
    request: parseCacheControl(null),
    hasExpires: false,
    varyStar: false,
    hasSetCookie: false,
    authorized: false,
  };
  assert.equal(unstorableReason(base), null);
  // An event stream is a live feed, whatever its freshness says.
  assert.equal(unstorableReason({ ...base, eventStream: true }), "event stream");
  assert.equal(unstorableReason({ ...base, status: 206 }), "status");
  assert.equal(unstorableReason({ ...base, status: 500 }), "status");
  assert.equal(unstorableReason({ ...base, response: parseCacheControl("private") }), "private");
  assert.equal(
    unstorableReason({ ...base, request: parseCacheControl("no-store") }),
    "request no-store",
  );
  assert.equal(unstorableReason({ ...base, authorized: true }), "authorization");
  for (const ok of ["public", "s-maxage=5", "must-revalidate, max-age=5"]) {
    assert.equal(
      unstorableReason({ ...base, authorized: true, response: parseCacheControl(ok) }),
      null,
    );
  }
  const none = { ...base, response: parseCacheControl(null) };
  assert.equal(unstorableReason(none), "no freshness");
  assert.equal(unstorableReason({ ...none, defaultTtl: 1000 }), null);
  assert.equal(unstorableReason({ ...none, status: 302, defaultTtl: 1000 }), "no freshness");
  assert.equal(unstorableReason({ ...none, hasExpires: true, status: 302 }), null);
  assert.equal(unstorableReason({ ...none, response: parseCacheControl("no-cache") }), null);
});

Deno.test("usableWithoutOrigin honours no-cache, max-age and min-fresh", () => {
  const fresh = { age: 10_000, lifetime: 60_000, noCache: false };
  assert.equal(usableWithoutOrigin(fresh, requestNeeds(parseCacheControl(null))), true);
  assert.equal(
    usableWithoutOrigin({ ...fresh, age: 60_000 }, requestNeeds(parseCacheControl(null))),
    false,
  );
  assert.equal(
    usableWithoutOrigin({ ...fresh, noCache: true }, requestNeeds(parseCacheControl(null))),
    false,
  );
  assert.equal(usableWithoutOrigin(fresh, requestNeeds(parseCacheControl("max-age=0"))), false);
  assert.equal(usableWithoutOrigin(fresh, requestNeeds(parseCacheControl("max-age=9"))), false);
  assert.equal(usableWithoutOrigin(fresh, requestNeeds(parseCacheControl("min-fresh=50"))), true);
  assert.equal(usableWithoutOrigin(fresh, requestNeeds(parseCacheControl("min-fresh=51"))), false);
});

Deno.test("mergeNotModified replaces fields but keeps those describing the stored body", () => {
  const merged = mergeNotModified(
    [["content-length", "5"], ["etag", '"a"'], ["x", "1"], ["x", "2"], [
      "cache-control",
      "max-age=1",
    ]],
    [["cache-control", "max-age=9"], ["content-length", "0"], ["x", "3"]],
  );
  assert.deepEqual(merged, [
    ["content-length", "5"],
    ["etag", '"a"'],
    ["cache-control", "max-age=9"],
    ["x", "3"],
  ]);
});

Deno.test("varyNames lower-cases, sorts and reports *", () => {
  assert.deepEqual(varyNames("Accept-Language, accept-encoding"), [
    "accept-encoding",
    "accept-language",
  ]);
  assert.deepEqual(varyNames("Origin, *"), ["*"]);
  // A member that is no field name matches no request, as * (RFC 9110 §12.5.5).
  assert.deepEqual(varyNames("Accept Encoding"), ["*"]);
  assert.deepEqual(varyNames("origin, a(b)"), ["*"]);
  assert.deepEqual(varyNames(null), []);
});

Deno.test("staleIfErrorWindow allows stale answers only where nothing forbids them", () => {
  assert.equal(staleIfErrorWindow(parseCacheControl("max-age=10, stale-if-error=60")), 60_000);
  assert.equal(staleIfErrorWindow(parseCacheControl("max-age=10")), 0);
  for (const no of ["must-revalidate", "proxy-revalidate", "s-maxage=5", "no-cache"]) {
    assert.equal(staleIfErrorWindow(parseCacheControl(`stale-if-error=60, ${no}`)), 0, no);
  }
});

Deno.test("requestNeeds reads max-stale with and without a value", () => {
  assert.equal(requestNeeds(parseCacheControl("max-stale")).maxStale, Infinity);
  assert.equal(requestNeeds(parseCacheControl("max-stale=30")).maxStale, 30_000);
  assert.equal(requestNeeds(parseCacheControl("max-stale=x")).maxStale, undefined);
  assert.equal(requestNeeds(parseCacheControl(null)).maxStale, undefined);
});

Deno.test("staleWhileRevalidateWindow: the directive, else the route's default, never when forbidden", () => {
  const w = (cc: string, fallback?: number) =>
    staleWhileRevalidateWindow(parseCacheControl(cc), fallback);
  assert.equal(w("max-age=10, stale-while-revalidate=30"), 30_000);
  assert.equal(w("max-age=10, stale-while-revalidate=30", 5_000), 30_000);
  assert.equal(w("max-age=10"), 0);
  assert.equal(w("max-age=10", 5_000), 5_000);
  assert.equal(w("max-age=10, stale-while-revalidate", 5_000), 5_000);
  // The origin's explicit directive counts beside s-maxage; the route's default does not.
  assert.equal(w("s-maxage=10, stale-while-revalidate=30"), 30_000);
  assert.equal(w("s-maxage=10", 5_000), 0);
  for (const no of ["must-revalidate", "proxy-revalidate", "no-cache"]) {
    assert.equal(w(`max-age=1, stale-while-revalidate=60, ${no}`, 5_000), 0, no);
  }
  assert.equal(mustRevalidate(parseCacheControl("s-maxage=1")), true);
  assert.equal(mustRevalidate(parseCacheControl("max-age=1")), false);
});

Deno.test("staleUse: stale-while-revalidate first, then the request's max-stale", () => {
  const needs = (cc: string | null) => requestNeeds(parseCacheControl(cc));
  const o = {
    age: 70_000,
    lifetime: 60_000,
    noCache: false,
    mustRevalidate: false,
    staleWhileRevalidate: 0,
  };
  assert.equal(staleUse(o, needs(null)), null);
  assert.equal(staleUse(o, needs("max-stale")), "max-stale");
  assert.equal(staleUse(o, needs("max-stale=10")), "max-stale");
  assert.equal(staleUse(o, needs("max-stale=9")), null);
  assert.equal(staleUse({ ...o, mustRevalidate: true }, needs("max-stale")), null);
  const swr = { ...o, staleWhileRevalidate: 10_000 };
  assert.equal(staleUse(swr, needs(null)), "stale-while-revalidate");
  assert.equal(staleUse({ ...swr, age: 70_001 }, needs(null)), null);
  assert.equal(staleUse({ ...swr, age: 70_001 }, needs("max-stale")), "max-stale");
  // A request that wants freshness gets none of it.
  for (
    const cc of ["no-cache", "max-age=0", "max-age=60", "min-fresh=1", "min-fresh=1, max-stale"]
  ) {
    assert.equal(staleUse(swr, needs(cc)), null, cc);
  }
  assert.equal(staleUse({ ...swr, noCache: true }, needs("max-stale")), null);
  // A fresh entry the request refused (min-fresh) is not "stale".
  assert.equal(staleUse({ ...o, age: 50_000 }, needs("max-stale")), null);
});
