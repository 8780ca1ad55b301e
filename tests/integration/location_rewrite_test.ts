import assert from "node:assert/strict";
import { startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";

/** An upstream that redirects to the URL its `to` query parameter names, with `base` prefixed. */
async function redirecting() {
  return await startUpstream((req) => {
    const u = new URL(req.url);
    const to = u.searchParams.get("to")!.replaceAll("{self}", `http://127.0.0.1:${u.port}`);
    return new Response(null, {
      status: 302,
      headers: { location: to, refresh: `0; url=${to}`, "x-path": u.pathname },
    });
  });
}

const ask = async (url: string) => {
  const res = await fetch(url, { redirect: "manual" });
  await res.body?.cancel();
  return res;
};

Deno.test("an upstream's redirect to itself reaches the client as the route's path", async () => {
  await using up = await redirecting();
  // `cache` makes the answer a Fetch Response (Prox's HTTP/1.1 engine otherwise writes its own).
  for (const extra of ["", "cache: true"]) {
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/app":
    type: proxy
    target: "${up.url}"
    ${extra}
  "/lb":
    type: load_balance
    targets: ["${up.url}/base"]
    path_rewrite: /v2
`);
    const to = encodeURIComponent("{self}/login?next=%2Fhome#top");
    let res = await ask(`${prox.url}/app/x?to=${to}`);
    assert.equal(res.status, 302);
    assert.equal(res.headers.get("location"), "/app/login?next=%2Fhome#top", extra);
    assert.equal(res.headers.get("refresh"), "0; url=/app/login?next=%2Fhome#top");
    // The target's path and path_rewrite go back to the route prefix.
    res = await ask(`${prox.url}/lb/x?to=${encodeURIComponent("{self}/base/v2/y")}`);
    assert.equal(res.headers.get("x-path"), "/base/v2/x");
    assert.equal(res.headers.get("location"), "/lb/y");
    // Outside what the route maps, or elsewhere: as it came.
    for (const other of ["{self}/elsewhere", "https://example.com/a", "/relative"]) {
      res = await ask(`${prox.url}/lb/x?to=${encodeURIComponent(other)}`);
      assert.equal(res.headers.get("location"), other.replace("{self}", up.url));
    }
  }
});

Deno.test("rewrite_location: false passes the upstream's Location on as it came", async () => {
  await using up = await redirecting();
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/app": { type: proxy, target: "${up.url}", rewrite_location: false }
`);
  const res = await ask(`${prox.url}/app/x?to=${encodeURIComponent("{self}/login")}`);
  assert.equal(res.headers.get("location"), `${up.url}/login`);
});
