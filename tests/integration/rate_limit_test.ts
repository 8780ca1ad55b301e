import assert from "node:assert/strict";
import { startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { startServer } from "../../src/server.ts";
import { createRateLimitStores } from "../../src/adapters/rate_limit_stores.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger } from "../../src/ports.ts";

/** Sends a GET and returns status, the rate-limit headers and the body (always consumed). */
async function hit(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  const body = await res.text();
  return {
    status: res.status,
    body,
    retryAfter: res.headers.get("retry-after"),
    policy: res.headers.get("ratelimit-policy"),
    limit: res.headers.get("ratelimit"),
  };
}

async function statuses(n: number, url: string, headers: Record<string, string> = {}) {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await hit(url, headers)).status);
  return out.join(",");
}

const upstream = () => startUpstream(() => new Response("ok"));

Deno.test("rate limit by ip: 3 per minute means 3, then 429 with Retry-After and IETF headers", async () => {
  await using up = await upstream();
  await using prox = await startProxy(`
routes:
  "/api":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 3, period: 1m }
`);
  const first = await hit(`${prox.url}/api/x`);
  assert.equal(first.status, 200);
  assert.equal(first.body, "ok");
  assert.equal(first.policy, '"default";q=3;w=60');
  assert.equal(first.limit, '"default";r=2;t=20');
  assert.equal(await statuses(2, `${prox.url}/api/x`), "200,200");
  const denied = await hit(`${prox.url}/api/x`);
  assert.equal(denied.status, 429);
  assert.match(denied.body, /^Too Many Requests\n/);
  assert.equal(denied.retryAfter, "20");
  assert.equal(denied.limit, '"default";r=0;t=20');
  assert.equal(denied.policy, '"default";q=3;w=60');
});

Deno.test("rate limit by ip groups IPv6 clients by /64 behind trusted proxies", async () => {
  await using up = await upstream();
  await using prox = await startProxy(`
trusted_proxies: ["127.0.0.1/32"]
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 2, period: 1h, algorithm: fixed_window }
`);
  const a = { "x-forwarded-for": "2001:db8:1:2::1" };
  const b = { "x-forwarded-for": "2001:db8:1:2:ffff::9" }; // same /64
  const c = { "x-forwarded-for": "2001:db8:1:3::1" }; // other /64
  const v4 = { "x-forwarded-for": "192.0.2.7" };
  assert.equal(await statuses(1, `${prox.url}/`, a), "200");
  assert.equal(await statuses(2, `${prox.url}/`, b), "200,429");
  assert.equal(await statuses(3, `${prox.url}/`, c), "200,200,429");
  assert.equal(await statuses(3, `${prox.url}/`, v4), "200,200,429");
});

Deno.test("rate limit by header: per value; on_missing_key deny answers without the header", async () => {
  await using up = await upstream();
  await using prox = await startProxy(`
routes:
  "/api":
    type: proxy
    target: "${up.url}"
    rate_limit:
      by: header
      header_name: X-API-Key
      requests: 2
      period: 1h
      status_code: 403
      message: "Rate limit exceeded for your API key."
      algorithm: sliding_window
      on_missing_key: deny
`);
  assert.equal(await statuses(3, `${prox.url}/api`, { "x-api-key": "k1" }), "200,200,403");
  assert.equal(await statuses(2, `${prox.url}/api`, { "x-api-key": "k2" }), "200,200");
  // Sent again with junk (X-API-Key: k2 + X-API-Key: r1 arrive as "k2, r1"): still k2's bucket,
  // the value an app reading the first one (Go, Java, Rust) authenticates.
  for (const junk of ["r1", "r2"]) {
    assert.equal(await statuses(1, `${prox.url}/api`, { "x-api-key": `k2, ${junk}` }), "403");
  }
  assert.equal(await statuses(1, `${prox.url}/api`, { "x-api-key": ", k3" }), "403");
  const missing = await hit(`${prox.url}/api`);
  assert.equal(missing.status, 403);
  assert.equal(missing.body, "Rate limit exceeded for your API key.", "the message as written");
  assert.equal(missing.retryAfter, null);
});

Deno.test("rate limit by header with on_missing_key allow lets requests without it through", async () => {
  await using up = await upstream();
  await using prox = await startProxy(`
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: header, header_name: X-User, requests: 1, period: 1h }
`);
  assert.equal(await statuses(3, `${prox.url}/`), "200,200,200");
  assert.equal(await statuses(2, `${prox.url}/`, { "x-user": "u" }), "200,429");
});

Deno.test("rate limit by route shares one bucket between all clients", async () => {
  await using up = await upstream();
  await using prox = await startProxy(`
trusted_proxies: ["127.0.0.1/32"]
routes:
  "/r":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: route, requests: 2, period: 1h, algorithm: gcra }
  "/free":
    type: proxy
    target: "${up.url}"
`);
  assert.equal(await statuses(1, `${prox.url}/r`, { "x-forwarded-for": "10.0.0.1" }), "200");
  assert.equal(await statuses(2, `${prox.url}/r`, { "x-forwarded-for": "10.0.0.2" }), "200,429");
  assert.equal(await statuses(3, `${prox.url}/free`), "200,200,200");
});

Deno.test("rate limit by cookie and by query parameter", async () => {
  await using up = await upstream();
  await using prox = await startProxy(`
routes:
  "/c":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: cookie, cookie_name: session, requests: 1, period: 1h, on_missing_key: deny }
  "/q":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: query, query_param: key, requests: 1, period: 1h, on_missing_key: deny }
`);
  const s1 = { cookie: "theme=dark; session=abc" };
  const s2 = { cookie: 'session="def"' };
  assert.equal(await statuses(2, `${prox.url}/c`, s1), "200,429");
  assert.equal(await statuses(2, `${prox.url}/c`, s2), "200,429");
  assert.equal(await statuses(1, `${prox.url}/c`, { cookie: "theme=dark" }), "429");
  assert.equal(await statuses(2, `${prox.url}/q?key=a&x=1`), "200,429");
  assert.equal(await statuses(1, `${prox.url}/q?key=b`), "200");
  assert.equal(await statuses(1, `${prox.url}/q?other=1`), "429");
  // Sent twice with different values (the app may read either): both count, so a fresh junk
  // value beside the used one is no fresh bucket. The same value twice is that key.
  assert.equal(await statuses(2, `${prox.url}/q?key=r1&key=b`), "429,429");
  assert.equal(await statuses(1, `${prox.url}/q?key=b&key=r2`), "429");
  assert.equal(await statuses(1, `${prox.url}/q?key=r3&key=r4`), "200");
  assert.equal(await statuses(1, `${prox.url}/q?key=c&key=c`), "200");
  assert.equal(await statuses(1, `${prox.url}/c`, { cookie: "session=r1; session=abc" }), "429");
  assert.equal(await statuses(1, `${prox.url}/c`, { cookie: "session=g; session=g" }), "200");
});

Deno.test("rate limit headers: false sends no RateLimit fields but keeps Retry-After", async () => {
  await using up = await upstream();
  await using prox = await startProxy(`
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 1, period: 30s, headers: false, burst: 1 }
`);
  const ok = await hit(`${prox.url}/`);
  assert.equal(ok.status, 200);
  assert.equal(ok.policy, null);
  assert.equal(ok.limit, null);
  const no = await hit(`${prox.url}/`);
  assert.equal(no.status, 429);
  assert.equal(no.retryAfter, "30");
  assert.equal(no.limit, null);
});

Deno.test("rate limit shadow mode counts and logs but never blocks", async () => {
  await using up = await upstream();
  const logs: string[] = [];
  const logger: Logger = {
    ...silentLogger,
    warn: (msg) => void logs.push(msg),
    log: (_l, msg) => void logs.push(msg),
  };
  await using prox = await startProxy(
    `
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 1, period: 1h, shadow: true }
  "/key":
    type: proxy
    target: "${up.url}"
    rate_limit:
      { by: header, header_name: X-Key, on_missing_key: deny, requests: 1, period: 1h, shadow: true }
`,
    { logger },
  );
  assert.equal(await statuses(4, `${prox.url}/`), "200,200,200,200");
  assert.equal(logs.filter((m) => m.includes("shadow")).length, 1); // once per interval
  // Without the key, on_missing_key: deny would refuse: in shadow mode it is only counted.
  assert.equal(await statuses(2, `${prox.url}/key`), "200,200");
  assert.equal(logs.filter((m) => m.includes("shadow")).length, 2);
});

Deno.test("rate limit state survives a reload for unchanged limits and resets for changed ones", async () => {
  await using up = await upstream();
  const dir = await Deno.makeTempDir();
  const path = `${dir}/prox.yaml`;
  const write = (requests: number, message: string) =>
    Deno.writeTextFile(
      path,
      `listen_addr: "127.0.0.1:0"
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: ${requests}, period: 1h, message: "${message}" }
`,
    );
  await write(2, "slow down");
  const server = await startServer({ path }, { logger: silentLogger });
  try {
    const url = `http://127.0.0.1:${server.port}/`;
    assert.equal(await statuses(3, url), "200,200,429");
    await write(2, "please slow down"); // only the message changed: counters kept
    assert.equal((await server.reload()).ok, true);
    const denied = await hit(url);
    assert.equal(denied.status, 429);
    assert.match(denied.body, /^please slow down/);
    await write(3, "please slow down"); // the limit changed: a new limiter
    assert.equal((await server.reload()).ok, true);
    assert.equal(await statuses(4, url), "200,200,200,429");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rate limit memory stays bounded: a flood of distinct client IPs keeps max_keys", async () => {
  await using up = await upstream();
  const stores = createRateLimitStores();
  const server = await startServer({
    name: "flood.yaml",
    text: `listen_addr: "127.0.0.1:0"
trusted_proxies: ["127.0.0.1/32"]
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 1, period: 1h, max_keys: 50 }
`,
  }, { logger: silentLogger, rateLimits: stores });
  try {
    const url = `http://127.0.0.1:${server.port}/`;
    const id = server.snapshot().router.entries[0].value.rateLimits[0].id;
    for (let i = 0; i < 300; i++) {
      const r = await hit(url, { "x-forwarded-for": `2001:db8:${i.toString(16)}::1` });
      assert.equal(r.status, 200); // every spoofed client is new
      assert.ok(stores.memory.keyCount(id) <= 50);
    }
    assert.equal(stores.memory.keyCount(id), 50);
    // The most recent clients are still limited; the oldest were evicted (LRU).
    assert.equal((await hit(url, { "x-forwarded-for": "2001:db8:12b::1" })).status, 429);
    assert.equal((await hit(url, { "x-forwarded-for": "2001:db8:0::1" })).status, 200);
  } finally {
    await server.shutdown();
    await stores.close();
  }
});

Deno.test("rate limit exempt_ips are never limited and get no RateLimit headers", async () => {
  await using up = await upstream();
  await using prox = await startProxy(`
trusted_proxies: ["127.0.0.1/32"]
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 1, period: 1h, exempt_ips: ["192.0.2.0/24", "2001:db8::/32"] }
`);
  for (const ip of ["192.0.2.5", "2001:db8:1::1"]) {
    for (let i = 0; i < 3; i++) {
      const r = await hit(`${prox.url}/`, { "x-forwarded-for": ip });
      assert.equal(r.status, 200);
      assert.equal(r.limit, null);
    }
  }
  assert.equal(await statuses(2, `${prox.url}/`, { "x-forwarded-for": "198.51.100.1" }), "200,429");
});

Deno.test("rate limits: several limits per route, each announced, the violated one named", async () => {
  await using up = await upstream();
  await using prox = await startProxy(`
routes:
  "/api":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 3, period: 1m }
    rate_limits:
      - { name: daily, by: header, header_name: X-Key, requests: 2, period: 1d, on_missing_key: deny }
`);
  const url = `${prox.url}/api`;
  const first = await hit(url, { "x-key": "a" });
  assert.equal(first.status, 200);
  assert.equal(first.policy, '"limit1";q=3;w=60, "daily";q=2;w=86400');
  assert.equal(first.limit, '"limit1";r=2;t=20, "daily";r=1;t=43200');
  assert.equal((await hit(url, { "x-key": "a" })).status, 200);
  const byDaily = await hit(url, { "x-key": "a" }); // per-minute allows, daily refuses
  assert.equal(byDaily.status, 429);
  assert.equal(byDaily.retryAfter, "43200");
  assert.equal(byDaily.limit, '"daily";r=0;t=43200');
  const byMinute = await hit(url, { "x-key": "b" }); // the IP used its 3 per minute
  assert.equal(byMinute.status, 429);
  assert.equal(byMinute.limit, '"limit1";r=0;t=20');
});

Deno.test("rate limit applies to redirect and static routes too", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/index.html`, "hi");
    await using prox = await startProxy(`
routes:
  "/old":
    type: redirect
    target: "/new"
    rate_limit: { by: ip, requests: 1, period: 1h }
  "/site":
    type: static
    root: "${dir}"
    rate_limit: { by: route, requests: 1, period: 1h, algorithm: sliding_window }
`);
    const redirect = await fetch(`${prox.url}/old`, { redirect: "manual" });
    await redirect.body?.cancel();
    assert.equal(redirect.status, 307);
    assert.equal(redirect.headers.get("ratelimit"), '"default";r=0;t=3600');
    assert.equal(await statuses(1, `${prox.url}/old`), "429");
    assert.equal(await statuses(2, `${prox.url}/site/`), "200,429");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rate limit headers are added after an upstream's own RateLimit policies", async () => {
  await using up = await startUpstream(() =>
    new Response("ok", {
      headers: { "ratelimit-policy": '"app";q=10;w=60', "ratelimit": '"app";r=0;t=20' },
    })
  );
  await using prox = await startProxy(`
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 3, period: 1m }
`);
  const res = await hit(`${prox.url}/`);
  assert.equal(res.status, 200);
  // The app has no quota left: a client must still see that, beside Prox's own.
  assert.equal(res.policy, '"app";q=10;w=60, "default";q=3;w=60');
  assert.equal(res.limit, '"app";r=0;t=20, "default";r=2;t=20');
});

Deno.test("rate limit by header Host keys HTTP/2 requests (which carry no Host field) by authority", async () => {
  const tls = new URL("../fixtures/tls/", import.meta.url).pathname;
  await using up = await upstream();
  await using prox = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${tls}cert.pem", key_path: "${tls}key.pem" }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: header, header_name: Host, requests: 2, period: 1h, on_missing_key: deny }
`,
    { keepListen: true, tls: true },
  );
  const caCerts = [await Deno.readTextFile(`${tls}ca.pem`)];
  const h1 = Deno.createHttpClient({ caCerts, http2: false });
  const h2 = Deno.createHttpClient({ caCerts, http1: false });
  try {
    const get = async (client: Deno.HttpClient, host = "localhost") => {
      const res = await fetch(`https://${host}:${prox.port}/`, { client });
      await res.body?.cancel();
      return res.status;
    };
    // One bucket for the host whatever the protocol (was: HTTP/2 refused as "missing key").
    assert.deepEqual([await get(h2), await get(h1), await get(h2)], [200, 200, 429]);
    assert.equal(await get(h2, "127.0.0.1"), 200); // another authority, another bucket
  } finally {
    h1.close();
    h2.close();
  }
});
