import assert from "node:assert/strict";
import { authorized, isLoopback, redactSecrets, startAdmin } from "./admin.ts";
import type { AdminCallbacks, AdminListener } from "./admin.ts";
import { embedJson } from "./admin_page.ts";
import type { StatusJson } from "./admin_status.ts";
import { silentLogger } from "../ports.ts";

const STATUS: StatusJson = {
  prox: { version: "t", deno: "2", pid: 1, startedAt: 0, uptimeSeconds: 5 },
  ready: true,
  draining: false,
  config: { version: 3, lastReload: null },
  listeners: [{ name: "main", addr: "127.0.0.1:1", tls: false }],
  routes: [{
    id: "/api",
    type: "proxy",
    prefix: "/api",
    hosts: [],
    targets: ["http://b:1"],
    rateLimit: null,
    access: null,
  }],
  upstreams: [{
    url: "http://b:1",
    routes: ["/api"],
    healthy: true,
    since: 1,
    reason: null,
    inFlight: 0,
    latencyMs: 1.5,
    ejectedForMs: 0,
    drained: false,
    slowStart: [],
    pool: { busy: 1, idle: 2, waiting: 0, opened: 5, reused: 40, h2Streams: null },
  }],
  limiterKeys: {},
  caches: {},
  certificates: [],
  acme: null,
  onDemand: null,
};

function fake(over: Partial<AdminCallbacks> = {}): AdminCallbacks & { reloads: number } {
  const cb = {
    reloads: 0,
    status: () => STATUS,
    reload() {
      cb.reloads++;
      return Promise.resolve({ ok: true, version: 4, at: 0, issues: [] });
    },
    ready: () => true,
    effectiveConfig: () => ({
      admin: { token: "s3cret" },
      rate_limit_store: { url: "redis://user:pw@redis:6379/0" },
      routes: { "/": { request_headers: { add: { Authorization: "Bearer x", "X-Ok": "1" } } } },
    }),
    metricsText: () => Promise.resolve("# TYPE up gauge\nup 1\n"),
    ...over,
  };
  return cb;
}

async function withAdmin(
  cb: AdminCallbacks,
  token: string | undefined,
  fn: (base: string) => Promise<void>,
): Promise<void> {
  const admin: AdminListener = startAdmin({ hostname: "127.0.0.1", port: 0 }, {
    callbacks: cb,
    token,
    logger: silentLogger,
  });
  try {
    await fn(`http://127.0.0.1:${admin.port}`);
  } finally {
    await admin.shutdown();
  }
}

Deno.test("startAdmin serves metrics, probes, status and the page without a token", async () => {
  await withAdmin(fake(), undefined, async (base) => {
    const m = await fetch(`${base}/metrics`);
    assert.equal(m.status, 200);
    assert.match(m.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
    assert.equal(await m.text(), "# TYPE up gauge\nup 1\n");
    assert.equal(await (await fetch(`${base}/healthz`)).text(), "ok\n");
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const s = await (await fetch(`${base}/status`)).json();
    assert.equal(s.routes[0].id, "/api");
    const page = await fetch(`${base}/`);
    assert.match(page.headers.get("content-security-policy")!, /script-src 'nonce-/);
    const html = await page.text();
    assert.match(html, /<title>Prox status<\/title>/);
    assert.doesNotMatch(html, /<(script|link|img)[^>]+(src|href)=/);
    const miss = await fetch(`${base}/nope`);
    assert.equal(miss.status, 404);
    assert.ok((await miss.json()).endpoints.includes("GET /metrics"));
  });
});

Deno.test("startAdmin's 404 lists every endpoint the admin API has", async () => {
  await withAdmin(fake(), undefined, async (base) => {
    const miss = await fetch(`${base}/nope`);
    assert.equal(miss.status, 404);
    assert.deepEqual((await miss.json()).endpoints, [
      "GET /",
      "GET /healthz",
      "GET /readyz",
      "GET /metrics",
      "GET /config",
      "GET /config/history",
      "GET /status",
      "GET /explain",
      "POST /config/reload",
      "POST /cache/purge",
      "POST /upstreams/drain",
      "POST /upstreams/undrain",
      "POST /acme/renew",
    ]);
  });
});

Deno.test("startAdmin without a token refuses a host name DNS could rebind to loopback", async () => {
  await withAdmin(fake(), undefined, async (base) => {
    const port = new URL(base).port;
    const client = Deno.createHttpClient({ allowHost: true });
    const as = async (host: string, path = "/config/reload", method = "POST") => {
      const res = await fetch(`${base}${path}`, { method, headers: { host }, client });
      await res.body?.cancel();
      return res.status;
    };
    try {
      // A page on evil.example whose name now resolves to 127.0.0.1: same origin for the browser.
      assert.equal(await as(`evil.example:${port}`), 403);
      assert.equal(await as(`evil.example:${port}`, "/config", "GET"), 403);
      assert.equal(await as(`evil.example:${port}`, "/healthz", "GET"), 200, "probes stay open");
      for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
        assert.equal(await as(host, "/config", "GET"), 200, host);
      }
    } finally {
      client.close();
    }
  });
});

Deno.test("startAdmin on 0.0.0.0 without a token refuses a browser's request for a rebound name", async () => {
  // 0.0.0.0 takes loopback connections too (a container's admin published on the host's
  // 127.0.0.1): a page whose name DNS rebinds to 127.0.0.1 reaches it as its own origin.
  const cb = fake();
  const admin = startAdmin({ hostname: "0.0.0.0", port: 0 }, {
    callbacks: cb,
    logger: silentLogger,
  });
  const base = `http://127.0.0.1:${admin.port}`;
  const client = Deno.createHttpClient({ allowHost: true });
  const as = async (host: string, headers: Record<string, string>, method = "GET") => {
    const path = method === "POST" ? "/config/reload" : "/config";
    const res = await fetch(`${base}${path}`, { method, headers: { host, ...headers }, client });
    await res.body?.cancel();
    return res.status;
  };
  try {
    const evil = `evil.example:${admin.port}`;
    // The page's same-origin fetch, and its same-origin POST (Origin then equals Host).
    assert.equal(
      await as(evil, { "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors" }),
      403,
    );
    assert.equal(await as(evil, { origin: `http://${evil}` }, "POST"), 403);
    assert.equal(cb.reloads, 0);
    // A scraper or curl naming the host (docker compose's `prox:9090`) is no browser.
    assert.equal(await as(`prox:${admin.port}`, {}), 200);
    // A browser on the address itself.
    assert.equal(await as(`127.0.0.1:${admin.port}`, { "sec-fetch-site": "none" }), 200);
  } finally {
    client.close();
    await admin.shutdown();
  }
});
Deno.test("startAdmin requires the token except on probes; Basic with the token works", async () => {
  await withAdmin(fake({ ready: () => false }), "tok-123", async (base) => {
    const denied = await fetch(`${base}/metrics`);
    assert.equal(denied.status, 401);
    assert.match(denied.headers.get("www-authenticate")!, /Basic realm/);
    await denied.body?.cancel();
    const wrong = await fetch(`${base}/status`, { headers: { authorization: "Bearer tok-124" } });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const ok = await fetch(`${base}/status`, { headers: { authorization: "Bearer tok-123" } });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    const basic = await fetch(`${base}/`, {
      headers: { authorization: `Basic ${btoa("admin:tok-123")}` },
    });
    assert.equal(basic.status, 200);
    await basic.body?.cancel();
    assert.equal(await (await fetch(`${base}/healthz`)).text(), "ok\n");
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 503);
    await ready.body?.cancel();
  });
});

Deno.test("startAdmin POST /config/reload reports the result and refuses cross-origin posts", async () => {
  const cb = fake();
  await withAdmin(cb, undefined, async (base) => {
    const r = await fetch(`${base}/config/reload`, { method: "POST" });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { ok: true, version: 4, at: 0, issues: [] });
    const x = await fetch(`${base}/config/reload`, {
      method: "POST",
      headers: { origin: "https://evil.example" },
    });
    assert.equal(x.status, 403);
    await x.body?.cancel();
    const get = await fetch(`${base}/config/reload`);
    assert.equal(get.status, 405);
    assert.equal(get.headers.get("allow"), "POST");
    await get.body?.cancel();
    assert.equal(cb.reloads, 1);
  });
  const failing = fake({
    reload: () => Promise.resolve({ ok: false, version: 3, at: 0, issues: [{ message: "bad" }] }),
  });
  await withAdmin(failing, undefined, async (base) => {
    const r = await fetch(`${base}/config/reload`, { method: "POST" });
    assert.equal(r.status, 422);
    assert.equal((await r.json()).issues[0].message, "bad");
  });
  // Shutting down: no fault of the config's.
  const stopping = fake({
    reload: () =>
      Promise.resolve({
        ok: false,
        version: 3,
        at: 0,
        issues: [{ message: "Cannot reload: shutting down" }],
        skipped: true as const,
      }),
  });
  await withAdmin(stopping, undefined, async (base) => {
    const r = await fetch(`${base}/config/reload`, { method: "POST" });
    assert.equal(r.status, 503);
    assert.equal((await r.json()).issues[0].message, "Cannot reload: shutting down");
  });
});

Deno.test("startAdmin: a known endpoint asked with another method is 405 with Allow, an unknown one 404", async () => {
  const cb = fake();
  await withAdmin(cb, "tok-1", async (base) => {
    const auth = { authorization: "Bearer tok-1" };
    const ask = async (method: string, path: string) => {
      const r = await fetch(`${base}${path}`, { method, headers: auth });
      await r.body?.cancel();
      return `${r.status} ${r.headers.get("allow")}`;
    };
    assert.equal(await ask("PUT", "/config/reload"), "405 POST");
    assert.equal(await ask("DELETE", "/cache/purge"), "405 POST");
    assert.equal(await ask("DELETE", "/status"), "405 GET, HEAD");
    assert.equal(await ask("POST", "/metrics"), "405 GET, HEAD");
    assert.equal(await ask("PUT", "/nothing"), "404 null");
    // Without the token: 401 first, whatever the method.
    const anon = await fetch(`${base}/config/reload`, { method: "PUT" });
    assert.equal(anon.status, 401);
    await anon.body?.cancel();
    assert.equal(cb.reloads, 0);
  });
});

Deno.test("startAdmin GET /config redacts tokens, auth headers and URL passwords", async () => {
  await withAdmin(fake(), undefined, async (base) => {
    const c = await (await fetch(`${base}/config`)).json();
    assert.equal(c.admin.token, "[redacted]");
    assert.equal(c.rate_limit_store.url, "redis://user:[redacted]@redis:6379/0");
    assert.equal(c.routes["/"].request_headers.add.Authorization, "[redacted]");
    assert.equal(c.routes["/"].request_headers.add["X-Ok"], "1");
  });
});

Deno.test("redactSecrets and authorized edge cases", () => {
  assert.deepEqual(redactSecrets({ a: ["http://x:y@h/", "plain"], password: 5 }), {
    a: ["http://x:[redacted]@h/", "plain"],
    password: "[redacted]",
  });
  // basic_auth users: the bcrypt hashes under user names
  const users = { alice: `$2y$05$${"a".repeat(53)}`, bob: `$2b$10$${"b".repeat(53)}` };
  assert.deepEqual(redactSecrets({ basic_auth: { realm: "R", users } }), {
    basic_auth: { realm: "R", users: { alice: "[redacted]", bob: "[redacted]" } },
  });
  // A raw "@" in the password (new URL() takes it whole): nothing of it shows.
  assert.deepEqual(
    redactSecrets({ forward_auth: false, x: { copy_response_cookies: true, auth_token: "t" } }),
    { forward_auth: false, x: { copy_response_cookies: true, auth_token: "[redacted]" } },
  );
  // tls.acme.eab's MAC key (and its variable's name, as token_env's).
  assert.deepEqual(
    redactSecrets({ eab: { kid: "k", hmac_key: "abc", hmac_key_env: "EAB_KEY" } }),
    { eab: { kid: "k", hmac_key: "[redacted]", hmac_key_env: "[redacted]" } },
  );
  assert.equal(redactSecrets("redis://:p@ss@h:6379/0"), "redis://:[redacted]@h:6379/0");
  assert.equal(redactSecrets("redis://u:p@s@s@h"), "redis://u:[redacted]@h");
  const headers = {
    "X-Auth": "a",
    "X-Access-Key": "b",
    "Ocp-Apim-Subscription-Key": "c",
    "X-Hub-Signature": "d",
    "X-Ok": "e",
  };
  assert.deepEqual(redactSecrets({ set: headers, on_missing_key: "deny", key_path: "k.pem" }), {
    set: {
      "X-Auth": "[redacted]",
      "X-Access-Key": "[redacted]",
      "Ocp-Apim-Subscription-Key": "[redacted]",
      "X-Hub-Signature": "[redacted]",
      "X-Ok": "e",
    },
    on_missing_key: "deny",
    key_path: "k.pem",
  });
  // ioredis reads options from the query, the password too.
  assert.deepEqual(
    redactSecrets({ url: "redis://h:6379/0?db=1&password=pw&x=y" }),
    { url: "redis://h:6379/0?db=1&password=[redacted]&x=y" },
  );
  assert.equal(
    redactSecrets("redis://:a@h/?Pass%77ord=b#f"),
    "redis://:[redacted]@h/?Pass%77ord=[redacted]#f",
  );
  assert.equal(redactSecrets("http://h/?q=1"), "http://h/?q=1");
  // Query credentials by their usual names: Google's ?key=, a signed URL's sig, an OAuth code.
  assert.equal(
    redactSecrets("https://idp.example/jwks?key=AIzaS3CRET&sig=S1G&code=C0DE&v=1"),
    "https://idp.example/jwks?key=[redacted]&sig=[redacted]&code=[redacted]&v=1",
  );
  assert.equal(authorized(undefined, "t"), false);
  assert.equal(authorized("Bearer t", "t"), true);
  assert.equal(authorized("bearer  t", "t"), true);
  assert.equal(authorized("Bearer tt", "t"), false);
  assert.equal(authorized("Basic !!!", "t"), false);
  assert.equal(authorized(`Basic ${btoa("u:p:t")}`, "p:t"), true);
  // Exactly one credential after the scheme; Basic needs its user-id and colon.
  assert.equal(authorized("Bearer t junk", "t"), false);
  assert.equal(authorized(`Basic ${btoa("t")}`, "t"), false);
  assert.equal(authorized(`Basic ${btoa(":t")}`, "t"), true);
  // A token beyond ASCII, as a browser sends it after the UTF-8 challenge.
  const utf8 = (s: string) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));
  assert.equal(authorized(`Basic ${utf8("admin:pässwört€")}`, "pässwört€"), true);
  assert.equal(authorized(`Basic ${utf8("admin:passwort")}`, "pässwört€"), false);
});

Deno.test("embedJson cannot close the script element", () => {
  const s = embedJson({ x: "</script><script>alert(1)</script>" });
  assert.ok(!s.includes("<"));
  assert.deepEqual(JSON.parse(s), { x: "</script><script>alert(1)</script>" });
});

Deno.test("startAdmin warns when reachable from the network without a token", async () => {
  const warnings: string[] = [];
  const logger = { ...silentLogger, warn: (m: string) => void warnings.push(m) };
  const a = startAdmin({ hostname: "0.0.0.0", port: 0 }, { callbacks: fake(), logger });
  await a.shutdown();
  assert.deepEqual(warnings, ["Admin listener is reachable from the network without a token"]);
  const b = startAdmin({ hostname: "0.0.0.0", port: 0 }, { callbacks: fake(), logger, token: "t" });
  await b.shutdown();
  const c = startAdmin({ hostname: "127.0.0.1", port: 0 }, { callbacks: fake(), logger });
  await c.shutdown();
  assert.equal(warnings.length, 1);
  assert.equal(isLoopback("::1"), true);
  assert.equal(isLoopback("127.0.0.2"), true);
  assert.equal(isLoopback("10.0.0.1"), false);
});

Deno.test("startAdmin gzips a large exposition when the scraper accepts it", async () => {
  const big = Array.from({ length: 500 }, (_, i) => `x_total{route="/r${i}"} ${i}`).join("\n");
  await withAdmin(
    fake({ metricsText: () => Promise.resolve(big + "\n") }),
    undefined,
    async (base) => {
      const res = await fetch(`${base}/metrics`, { headers: { "accept-encoding": "gzip" } });
      assert.equal(res.headers.get("content-encoding"), "gzip");
      assert.equal(await res.text(), big + "\n");
      const plain = await fetch(`${base}/metrics`, { headers: { "accept-encoding": "identity" } });
      assert.equal(plain.headers.get("content-encoding"), null);
      assert.equal(await plain.text(), big + "\n");
    },
  );
});

Deno.test("admin POST /cache/purge: token required, one of url, prefix, route or tag, POST only", async () => {
  const asked: unknown[] = [];
  const cb = fake({
    purgeCache(input) {
      asked.push(input);
      return "route" in input && input.route === "/gone"
        ? { ok: false, status: 404, error: 'Cannot purge: no route "/gone"' }
        : { ok: true, route: "/api", purged: 3 };
    },
  });
  await withAdmin(cb, "tok", async (base) => {
    const auth = { authorization: "Bearer tok" };
    const anon = await fetch(`${base}/cache/purge?route=/api`, { method: "POST" });
    assert.equal(anon.status, 401);
    await anon.body?.cancel();
    const url = encodeURIComponent("https://example.com/a?b=1");
    const ok = await fetch(`${base}/cache/purge?url=${url}`, { method: "POST", headers: auth });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { route: "/api", purged: 3 });
    const gone = await fetch(`${base}/cache/purge?route=/gone`, { method: "POST", headers: auth });
    assert.equal(gone.status, 404);
    assert.deepEqual(await gone.json(), { error: 'Cannot purge: no route "/gone"' });
    // Tags repeated or listed reach the purge as one comma list.
    const tags = await fetch(`${base}/cache/purge?tag=a&tag=b,c`, {
      method: "POST",
      headers: auth,
    });
    assert.equal(tags.status, 200);
    await tags.body?.cancel();
    const two = await fetch(`${base}/cache/purge?route=/api&prefix=x`, {
      method: "POST",
      headers: auth,
    });
    assert.equal(two.status, 400);
    await two.body?.cancel();
    const long = await fetch(`${base}/cache/purge?prefix=${"x".repeat(2001)}`, {
      method: "POST",
      headers: auth,
    });
    assert.equal(long.status, 400);
    await long.body?.cancel();
    const get = await fetch(`${base}/cache/purge?route=/api`, { headers: auth });
    assert.equal(get.status, 405);
    assert.equal(get.headers.get("allow"), "POST");
    await get.body?.cancel();
    // A page in a browser holding the credentials cannot purge from another origin.
    const cross = await fetch(`${base}/cache/purge?route=/api`, {
      method: "POST",
      headers: { ...auth, origin: "https://evil.example" },
    });
    assert.equal(cross.status, 403);
    await cross.body?.cancel();
  });
  assert.deepEqual(asked, [{ url: "https://example.com/a?b=1" }, { route: "/gone" }, {
    tag: "a,b,c",
  }]);
});

Deno.test("redactSecrets: a notify webhook's path and query are its credential", () => {
  const out = JSON.stringify(redactSecrets({
    notify: {
      webhook: "https://hooks.slack.com/services/T000/B000/XXXXSECRET?x=1",
      timeout: 5000,
    },
  }));
  assert.ok(!out.includes("XXXXSECRET"), out);
  assert.ok(out.includes("https://hooks.slack.com/"), out);
  assert.deepEqual(redactSecrets({ webhook: "https://u:pw@h.example/x" }), {
    webhook: "https://h.example/[redacted]",
  });
});

Deno.test("admin POST /acme/renew: 202 when an order starts, 409 during one, 404 without ACME, GET 405, token required", async () => {
  const acme = {
    state: "ok" as const,
    domains: ["a.example"],
    notAfter: 1,
    renewAt: 0,
    failures: 0,
    lastError: null,
    orders: 0,
    retryInMs: null,
  };
  let started = true;
  let asked = 0;
  const cb = fake({
    renewCertificate: () => (asked++, { started, acme }),
  });
  await withAdmin(cb, "t", async (base) => {
    const post = (auth = "Bearer t") =>
      fetch(`${base}/acme/renew`, { method: "POST", headers: { authorization: auth } });
    const denied = await post("Bearer nope");
    assert.equal(denied.status, 401);
    await denied.body?.cancel();
    assert.equal(asked, 0);
    const ok = await post();
    assert.equal(ok.status, 202);
    assert.deepEqual(await ok.json(), { renewing: true, acme });
    started = false;
    const busy = await post();
    assert.equal(busy.status, 409);
    assert.match((await busy.json()).error, /an ACME order is in progress/);
    const get = await fetch(`${base}/acme/renew`, { headers: { authorization: "Bearer t" } });
    assert.equal(get.status, 405);
    assert.equal(get.headers.get("allow"), "POST");
    await get.body?.cancel();
    assert.equal(asked, 2);
  });
  await withAdmin(fake({ renewCertificate: () => null }), undefined, async (base) => {
    const none = await fetch(`${base}/acme/renew`, { method: "POST" });
    assert.equal(none.status, 404);
    assert.match((await none.json()).error, /tls\.acme is not enabled/);
  });
});

Deno.test("redactSecrets: a webhook's headers are its credentials, whatever their names", () => {
  const out = JSON.stringify(redactSecrets({
    notify: {
      webhook: "https://api.honeycomb.io/1/events/x",
      headers: { "X-Honeycomb-Team": "HONEYSECRET" },
    },
    tls: {
      acme: {
        dns: {
          webhook: "https://dns.example/hook",
          headers: { "DD-APPLICATION-KEY": "DDSECRET", "X-Zone": "ZONEVALUE" },
        },
      },
    },
    // Elsewhere (no webhook beside them) header values stay visible unless their name says secret.
    health_check: { headers: { "X-Probe": "visible" } },
  }));
  assert.ok(!/HONEYSECRET|DDSECRET|ZONEVALUE/.test(out), out);
  assert.ok(out.includes('"X-Honeycomb-Team":"[redacted]"'), out);
  assert.ok(out.includes('"X-Probe":"visible"'), out);
});

Deno.test("admin GET /explain hides a header value a rule took from {env.NAME}, whatever the header's name", async () => {
  const name = "PROX_ADMIN_TEST_EXPLAIN_SECRET";
  Deno.env.set(name, "env-secret-4711");
  try {
    const cb = fake({
      effectiveConfig: () => ({
        routes: { "/": { request_headers: { set: { "X-Internal": `k={env.${name}}` } } } },
      }),
      explain: () =>
        Promise.resolve({
          requestHeaders: {
            added: [["x-internal", "k=env-secret-4711"], ["x-plain", "visible"]],
            changed: [["x-changed", "a", "env-secret-4711"]],
            removed: [],
          },
        } as never),
    });
    await withAdmin(cb, "t", async (base) => {
      const res = await fetch(`${base}/explain?url=http://h/`, {
        headers: { authorization: "Bearer t" },
      });
      const text = await res.text();
      assert.equal(res.status, 200, text);
      assert.ok(!text.includes("env-secret-4711"), text);
      const e = JSON.parse(text);
      assert.deepEqual(e.requestHeaders.added, [["x-internal", "[redacted]"], [
        "x-plain",
        "visible",
      ]]);
      assert.deepEqual(e.requestHeaders.changed, [["x-changed", "a", "[redacted]"]]);
    });
  } finally {
    Deno.env.delete(name);
  }
});
