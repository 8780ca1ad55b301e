// The response cache's flow beyond one request: collapsing, clients that leave, what the
// upstream sees, explain and mirror (the fixture is in _cache_fixture.ts).
import assert from "node:assert/strict";
import { explainRequest } from "./explain.ts";
import { waitFor } from "../../tests/_harness.ts";
import { noopMetrics, silentLogger } from "../ports.ts";
import { ProxyError } from "../domain/errors.ts";
import { info, setup } from "./_cache_fixture.ts";
import { READ_AHEAD_MAX, teeBody } from "./cache_response.ts";
import { purgeCache } from "./cache_purge.ts";

Deno.test("cache: a client that leaves mid-body leaves no entry, and lets the upstream go", async () => {
  let cancelled = 0;
  const c = setup((_r, n) => {
    const body = new ReadableStream<Uint8Array>({
      start(ctl) {
        ctl.enqueue(new TextEncoder().encode("abc"));
        if (n > 1) ctl.close(); // the first never ends
      },
      cancel() {
        cancelled++;
      },
    });
    return new Response(body, { headers: { "cache-control": "max-age=60" } });
  });
  const res = await c.handler(new Request("http://example.com/l"), info);
  const reader = res.body!.getReader();
  assert.equal(new TextDecoder().decode((await reader.read()).value), "abc");
  await reader.cancel();
  assert.equal(cancelled, 1);
  assert.equal((await c.get("/l")).text, "abc");
  assert.equal(c.sent.length, 2);
  // A body the upstream finished is whole, even if its client left before reading it all.
  assert.match((await c.get("/l")).res.headers.get("cache-status")!, /hit/);
});

Deno.test("cache: concurrent misses for one entry send one request upstream", async () => {
  const gate = Promise.withResolvers<void>();
  const c = setup((_r, n) => {
    const body = new ReadableStream<Uint8Array>({
      async start(ctl) {
        ctl.enqueue(new TextEncoder().encode(`v${n} `));
        await gate.promise;
        ctl.enqueue(new TextEncoder().encode("end"));
        ctl.close();
      },
    });
    return new Response(body, { headers: { "cache-control": "max-age=60" } });
  });
  // The first request's client reads nothing: the others must not wait on it.
  const leader = await c.handler(new Request("http://example.com/herd"), info);
  const followers = Array.from({ length: 5 }, () => c.get("/herd"));
  gate.resolve();
  const got = await Promise.all(followers);
  for (const f of got) {
    assert.equal(f.text, "v1 end");
    assert.equal(f.res.headers.get("cache-status"), "prox; hit; ttl=60; collapsed");
  }
  assert.equal(c.sent.length, 1);
  assert.equal(await leader.text(), "v1 end");
});

Deno.test("cache: bodies read ahead of clients that do not read them are bounded per route", async () => {
  // Miss bodies are read from the upstream ahead of their clients, for requests that wait for
  // the entry; clients that read nothing (or slowly) must not have Prox hold every such body at
  // once: past READ_AHEAD_MAX the rest goes at each client's pace, as without a cache.
  const chunk = 16 * 1024;
  const size = 512 * 1024;
  let pulled = 0;
  const c = setup(() => {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(ctl) {
        ctl.enqueue(new Uint8Array(chunk));
        pulled += chunk;
        sent += chunk;
        if (sent === size) ctl.close();
      },
    }, { highWaterMark: 0 });
    return new Response(body, { headers: { "cache-control": "max-age=60" } });
  });
  const n = READ_AHEAD_MAX / size + 16;
  const responses: Response[] = [];
  for (let i = 0; i < n; i++) {
    responses.push(await c.handler(new Request(`http://example.com/big?${i}`), info));
  }
  // Reading ahead is microtasks only: one macrotask later it has gone as far as it may.
  await new Promise((r) => setTimeout(r, 0));
  assert.ok(pulled <= READ_AHEAD_MAX + n * 2 * chunk, `${pulled} bytes read ahead`);
  // Every body still arrives whole, and is stored.
  for (const res of responses.slice(1)) assert.equal((await res.arrayBuffer()).byteLength, size);
  assert.match((await c.get("/big?1")).res.headers.get("cache-status")!, /hit/);
  // What clients took, or left without, is counted out again.
  await responses[0].body!.cancel();
  assert.equal(c.snapshot.router.entries[0].value.cache!.readAhead.bytes, 0);
});

Deno.test("cache: requests that waited go upstream themselves when nothing is stored", async () => {
  const gate = Promise.withResolvers<void>();
  const c = setup(async (_r, n) => {
    if (n === 1) await gate.promise;
    return new Response(`v${n}`, { headers: { "cache-control": "private" } });
  });
  const first = c.get("/p");
  // The follower waits for the first answer's head, which says private: it asks on its own.
  const second = c.get("/p");
  gate.resolve();
  assert.equal((await first).text, "v1");
  assert.equal((await second).text, "v2");
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: a leader whose client left still fills the entry others wait for", async () => {
  const gate = Promise.withResolvers<void>();
  const c = setup(() => {
    const body = new ReadableStream<Uint8Array>({
      async start(ctl) {
        ctl.enqueue(new TextEncoder().encode("part,"));
        await gate.promise;
        ctl.enqueue(new TextEncoder().encode("rest"));
        ctl.close();
      },
    });
    return new Response(body, { headers: { "cache-control": "max-age=60" } });
  });
  const leader = await c.handler(new Request("http://example.com/w"), info);
  const follower = c.get("/w");
  // Once the follower waits, the leader's client goes away.
  const filling = c.snapshot.router.entries[0].value.cache!.filling;
  await waitFor(() => [...filling.values()][0]?.waiters === 1, { what: "a waiting follower" });
  await leader.body!.cancel();
  gate.resolve();
  const f = await follower;
  assert.equal(f.text, "part,rest");
  assert.match(f.res.headers.get("cache-status")!, /collapsed/);
  assert.equal(c.sent.length, 1);
});

Deno.test("cache: the request as the upstream gets it decides (request_headers rules first)", async () => {
  // A rule that removes Cache-Control keeps clients from forcing a refetch.
  const c = setup(() => new Response("x", { headers: { "cache-control": "max-age=60" } }), {
    extra: "request_headers: { remove: [Cache-Control] }",
  });
  await c.get("/q");
  const forced = await c.get("/q", { headers: { "cache-control": "no-cache" } });
  assert.match(forced.res.headers.get("cache-status")!, /hit/);
  assert.equal(c.sent.length, 1);
  // A rule that adds credentials upstream makes the answers private to them.
  const auth = setup(() => new Response("x", { headers: { "cache-control": "max-age=60" } }), {
    extra: 'request_headers: { set: { Authorization: "Bearer upstream-key" } }',
  });
  await auth.get("/q");
  await auth.get("/q");
  assert.equal(auth.sent.length, 2);
});

Deno.test("cache: HEAD from an entry stored without Content-Length gets the body's length", async () => {
  const c = setup(() => {
    const body = new ReadableStream<Uint8Array>({
      start(ctl) {
        ctl.enqueue(new TextEncoder().encode("chunked"));
        ctl.close();
      },
    });
    return new Response(body, { headers: { "cache-control": "max-age=60" } });
  });
  assert.equal((await c.get("/k")).res.headers.get("content-length"), null);
  const head = await c.get("/k", { method: "HEAD" });
  assert.equal(head.res.headers.get("content-length"), "7");
  assert.equal(c.sent.length, 1);
});

Deno.test("cache: explain says what the cache would do, and changes nothing", async () => {
  const c = setup(() =>
    new Response("x", { headers: { "cache-control": "max-age=60", etag: '"e"' } })
  );
  const explain = (url: string, headers: [string, string][] = [], method = "GET") =>
    explainRequest({ method, url, headers }, {
      snapshot: c.snapshot,
      files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
      clock: { now: () => c.clock.t, monotonic: () => c.clock.t },
      logger: silentLogger,
    }).then((e) => e.notes.find((n) => /cache/i.test(n)));
  assert.match(
    (await explain("http://example.com/e?q=1"))!,
    /^Cache key "http example\.com \/base\/e\?q=1": nothing stored/,
  );
  // A request with Authorization: only an answer that says it may be shared is stored.
  assert.match(
    (await explain("http://example.com/e?q=1", [["authorization", "Bearer t"]]))!,
    /nothing stored.*carries an identity: only answers marked public, s-maxage or must-revalidate/,
  );
  assert.doesNotMatch((await explain("http://example.com/e?q=1"))!, /identity/);
  await c.get("/e?q=1");
  assert.match(
    (await explain("http://example.com/e?q=1"))!,
    /served from the store \(fresh for 60 s/,
  );
  assert.match(
    (await explain("http://example.com/e?q=1", [["cache-control", "no-cache"]]))!,
    /refused by the request: it would be revalidated with If-None-Match/,
  );
  // A range of a fresh stored answer is served from it; of anything else, passed by.
  assert.match(
    (await explain("http://example.com/e?q=1", [["range", "bytes=0-1"]]))!,
    /served from the store/,
  );
  assert.match(
    (await explain("http://example.com/e?q=2", [["range", "bytes=0-1"]]))!,
    /has range and nothing fresh is stored for it/,
  );
  assert.match((await explain("http://example.com/e", [], "DELETE"))!, /DELETE answered below 400/);
  c.clock.t += 61_000;
  assert.match((await explain("http://example.com/e?q=1"))!, /stale: it would be revalidated/);
  assert.match(
    (await explain("http://example.com/e?q=1", [["cache-control", "max-stale"]]))!,
    /stale by 1 s, served as the request's max-stale allows/,
  );
  assert.equal(c.sent.length, 1);
});

Deno.test("cache: Vary on a field Prox writes keys on the value the upstream got", async () => {
  // The upstream varies by client address: it sees Prox's X-Forwarded-For, never the client's.
  const c = setup(
    (r) =>
      new Response(`for ${r.headers.get("x-forwarded-for")}`, {
        headers: { "cache-control": "max-age=60", vary: "X-Forwarded-For" },
      }),
  );
  const from = async (ip: string, init: RequestInit = {}) => {
    const res = await c.handler(new Request("http://example.com/geo", init), {
      ...info,
      remoteAddr: { hostname: ip, port: 4000 },
    });
    return await res.text();
  };
  assert.equal(await from("192.0.2.7"), "for 192.0.2.7");
  // A forged X-Forwarded-For from an untrusted client names nobody to the upstream.
  assert.equal(
    await from("192.0.2.8", { headers: { "x-forwarded-for": "192.0.2.7" } }),
    "for 192.0.2.8",
  );
  assert.equal(
    await from("192.0.2.7", { headers: { "x-forwarded-for": "10.9.9.9" } }),
    "for 192.0.2.7",
  );
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: what a trusted proxy's X-Forwarded-* and X-Original-URL tell the upstream keys the entry", async () => {
  // A trusted proxy's forwarding fields reach the upstream as they came, and apps build links and
  // pick the page from them (X-Forwarded-Host, -Proto, -Prefix, X-Original-URL): one that passes a
  // client's own on (a cloud load balancer passes unknown fields) must not have that client's
  // answer served to every other (web cache poisoning).
  const fields = [
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-original-url",
    "x-rewrite-url",
  ];
  const c = setup(
    (r) =>
      new Response(fields.map((f) => `${f}=${r.headers.get(f)}`).join(" "), {
        headers: { "cache-control": "max-age=60" },
      }),
    { top: 'trusted_proxies: ["10.0.0.0/8"]' },
  );
  const from = async (ip: string, path: string, headers: Record<string, string> = {}) => {
    const res = await c.handler(new Request(`http://example.com${path}`, { headers }), {
      ...info,
      remoteAddr: { hostname: ip, port: 4000 },
    });
    return await res.text();
  };
  for (const f of fields) {
    const path = `/${f}`;
    // First the forged field, then the trusted proxy's plain request and a direct client's.
    assert.match(await from("10.0.0.5", path, { [f]: "evil" }), new RegExp(`${f}=evil`), f);
    assert.doesNotMatch(await from("10.0.0.5", path), /evil/, f);
    assert.doesNotMatch(await from("192.0.2.7", path), /evil/, f);
    // Each answer stored under what the upstream was told.
    assert.match(await from("10.0.0.5", path, { [f]: "evil" }), /evil/, f);
  }
  assert.equal(c.sent.length, 2 * fields.length);
  // A purge of the URL drops the entries of every proxy's fields.
  const purged = purgeCache({ url: "http://example.com/x-forwarded-host" }, {
    snapshot: c.snapshot,
    metrics: noopMetrics,
  });
  assert.deepEqual(purged, { ok: true, route: "/", purged: 2 });
});

Deno.test("cache: a trusted proxy's Forwarded keys the entry by its host and proto, not its for", async () => {
  // Frameworks that read RFC 7239 (Spring's ForwardedHeaderFilter) build links from its host=
  // and proto=; for= names each client and is left out, or every client would have an entry.
  const c = setup(
    (r) =>
      new Response(`${r.headers.get("forwarded")}`, { headers: { "cache-control": "max-age=60" } }),
    { top: 'trusted_proxies: ["10.0.0.0/8"]' },
  );
  const from = async (forwarded: string) => {
    const res = await c.handler(
      new Request("http://example.com/f", { headers: { forwarded } }),
      { ...info, remoteAddr: { hostname: "10.0.0.5", port: 4000 } },
    );
    return await res.text();
  };
  assert.match(await from("for=192.0.2.1;host=evil;proto=https"), /host=evil/);
  assert.doesNotMatch(await from("for=192.0.2.2;host=example.com;proto=https"), /evil/);
  // Another client behind the same host and proto: the same entry.
  assert.match(await from("for=192.0.2.3;host=example.com;proto=https"), /192\.0\.2\.2/);
  // A host= hidden behind another (an upstream may take the first) is another entry too.
  assert.match(await from("for=192.0.2.4;host=evil;host=example.com;proto=https"), /evil/);
  assert.equal(c.sent.length, 3);
});

Deno.test("cache: an answer built for another spelling of the host is served from the store, never stored", async () => {
  // `example.com.` keys as `example.com` (one entry, one purge), but the upstream is told the
  // host as it came (X-Forwarded-Host) and builds links and redirects on it: to browsers
  // `example.com.` is another origin (no cookies, no HSTS), so that answer must not be stored for
  // every client of `example.com`.
  const c = setup((r) =>
    new Response(`https://${r.headers.get("x-forwarded-host")}/next`, {
      headers: { "cache-control": "max-age=60" },
    })
  );
  assert.equal((await c.get("/p")).text, "https://example.com/next");
  // The stored answer serves the other spelling, which stores nothing of its own.
  const dotted = async (path: string) =>
    await (await c.handler(new Request(`http://example.com.${path}`), info)).text();
  assert.equal(await dotted("/p"), "https://example.com/next");
  assert.equal(await dotted("/q"), "https://example.com./next");
  assert.equal((await c.get("/q")).text, "https://example.com/next");
  assert.equal(c.sent.length, 3);
});

Deno.test("cache: a stored answer is not mirrored; requests that go upstream are", async () => {
  const c = setup(() => new Response("x", { headers: { "cache-control": "max-age=60" } }), {
    extra: 'mirror: { target: "http://10.2.2.2" }',
  });
  const mirrored = () => c.sent.filter((r) => r.origin.hostname === "10.2.2.2").length;
  await c.get("/m");
  await waitFor(() => mirrored() === 1, { what: "the miss mirrored" });
  assert.match((await c.get("/m")).res.headers.get("cache-status")!, /hit/);
  await c.get("/m", { method: "POST", body: "x" });
  await waitFor(() => mirrored() === 2, { what: "the POST mirrored" });
  assert.equal(c.sent.filter((r) => r.origin.hostname === "10.1.1.1").length, 2);
});

Deno.test("cache: once a key answered uncacheably, its requests no longer wait for each other", async () => {
  const gates: PromiseWithResolvers<void>[] = [];
  const c = setup(async () => {
    const gate = Promise.withResolvers<void>();
    gates.push(gate);
    await gate.promise;
    return new Response("mine", { headers: { "cache-control": "private" } });
  });
  const first = c.get("/me");
  await waitFor(() => gates.length === 1, { what: "the first request upstream" });
  gates[0].resolve();
  await first;
  // Now known uncacheable: a slow request does not hold the next one back.
  const second = c.get("/me");
  await waitFor(() => gates.length === 2, { what: "the second request upstream" });
  const third = c.get("/me");
  // (A waiting request would go on its own only after COLLAPSE_WAIT_MS, 5 s.)
  await waitFor(() => gates.length === 3, {
    what: "the third request upstream, not waiting",
    timeoutMs: 2_000,
  });
  for (const g of gates) g.resolve();
  assert.equal((await second).text, "mine");
  assert.equal((await third).text, "mine");
});

Deno.test("cache: keys remembered as uncacheable cost a few bytes each, whatever the URL's length", async () => {
  // PASS_MAX keys of URLs up to the 64 KiB a request head may hold would be 640 MiB.
  const c = setup(() => new Response("mine", { headers: { "cache-control": "private" } }));
  const long = "x".repeat(32 * 1024);
  for (let i = 0; i < 20; i++) await c.get(`/${long}?${i}`);
  const passes = c.snapshot.router.entries[0].value.cache!.passes;
  assert.equal(passes.size, 20);
  for (const k of passes.keys()) assert.ok(String(k).length < 64, "a key holds its URL");
});

Deno.test("cache: stale-if-error answers from a stale entry while the upstream fails", async () => {
  let mode: "ok" | "503" | "down" = "ok";
  const c = setup((r) => {
    if (mode === "down") {
      throw new ProxyError("connect", "Cannot connect to upstream: connection refused", {
        retryable: true,
        sentNothing: true,
      });
    }
    if (mode === "503") return new Response("busy", { status: 503 });
    const cc = r.target.endsWith("/strict")
      ? "max-age=10, stale-if-error=60, must-revalidate"
      : "max-age=10, stale-if-error=60";
    // /plain-s has no validator: it is fetched again, not revalidated.
    const etag: Record<string, string> = r.target.endsWith("/plain-s") ? {} : { etag: '"g"' };
    return new Response("good", { headers: { "cache-control": cc, ...etag } });
  });
  await c.get("/s");
  await c.get("/plain-s");
  await c.get("/strict");
  mode = "503";
  c.clock.t += 30_000;
  const a = await c.get("/s");
  assert.equal(a.res.status, 200);
  assert.equal(a.text, "good");
  assert.equal(
    a.res.headers.get("cache-status"),
    "prox; fwd=stale; fwd-status=503; detail=stale-if-error",
  );
  assert.equal(a.res.headers.get("age"), "30");
  // must-revalidate forbids it.
  assert.equal((await c.get("/strict")).res.status, 503);
  mode = "down";
  const b = await c.get("/plain-s");
  assert.equal(b.text, "good");
  assert.equal(b.res.headers.get("cache-status"), "prox; fwd=stale; detail=stale-if-error");
  // The failures the clients did not see are in the log.
  assert.equal(c.warnings.filter((w) => /stale-if-error/.test(w)).length, 2);
  // Past the window the failure shows.
  c.clock.t += 41_000;
  assert.equal((await c.get("/s")).res.status, 502);
  // And once the upstream is back, the entry is refreshed.
  mode = "ok";
  assert.match((await c.get("/s")).res.headers.get("cache-status")!, /fwd=stale; fwd-status=200/);
});

Deno.test("teeBody: a failure while storing leaves the body whole and the process running", async () => {
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array([1, 2, 3]));
      c.close();
    },
  });
  const tee = teeBody(body, {
    limit: 100,
    done: () => {
      throw new Error("store failed");
    },
    waits: () => false,
  });
  assert.deepEqual(
    new Uint8Array(await new Response(tee.body).arrayBuffer()),
    new Uint8Array([1, 2, 3]),
  );
});

Deno.test("teeBody: a body kept coming for waiting requests is let go once it cannot be stored", async () => {
  // The client leaves while another request waits for the entry, so the upstream body is read
  // on; past the limit it will not be stored, and nobody reads it: the upstream is let go.
  const cancelled = Promise.withResolvers<unknown>();
  let chunks = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (++chunks <= 100) c.enqueue(new Uint8Array(1000));
    },
    cancel: (reason) => cancelled.resolve(reason),
  }, { highWaterMark: 0 });
  let stored: Uint8Array | null | undefined;
  const tee = teeBody(body, { limit: 5000, done: (b) => stored = b, waits: () => true });
  const client = tee.body.getReader();
  await client.read();
  await client.cancel("client gone");
  await cancelled.promise;
  assert.equal(stored, null);
  assert.ok(chunks <= 7, `read ${chunks} chunks`);
});

Deno.test("cache: a 304 to a client's own condition does not stop requests from collapsing", async () => {
  // A browser revalidating its copy of an entry Prox has not stored gets the upstream's 304: that
  // says nothing of whether the URL is cacheable, so the next fill is still waited for.
  const gates: PromiseWithResolvers<void>[] = [];
  const c = setup(async (r) => {
    if (r.headers.get("if-none-match") !== null) {
      return new Response(null, { status: 304, headers: { etag: '"v1"' } });
    }
    const gate = Promise.withResolvers<void>();
    gates.push(gate);
    await gate.promise;
    return new Response("body", { headers: { "cache-control": "max-age=60", etag: '"v1"' } });
  });
  const cond = await c.get("/c", { headers: { "if-none-match": '"v1"' } });
  assert.equal(cond.res.status, 304);
  const leader = c.get("/c");
  await waitFor(() => gates.length === 1, { what: "the leader upstream" });
  const followers = Array.from({ length: 3 }, () => c.get("/c"));
  // Each follower either waits for the leader's entry or goes upstream itself.
  const filling = c.snapshot.router.entries[0].value.cache!.filling;
  await waitFor(() => ([...filling.values()][0]?.waiters ?? 0) + gates.length === 4, {
    what: "the followers waiting or upstream",
  });
  for (const g of gates) g.resolve();
  assert.equal((await leader).text, "body");
  for (const f of await Promise.all(followers)) {
    assert.match(f.res.headers.get("cache-status")!, /collapsed/);
  }
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: an answer whose body a response_body rule replaces is stored, and the rule applies to hits", async () => {
  // The upstream's body comes after its head, as over a network.
  const gate = Promise.withResolvers<void>();
  const c = setup(() =>
    new Response(
      new ReadableStream<Uint8Array>({
        async start(ctl) {
          await gate.promise;
          ctl.enqueue(new TextEncoder().encode("orig"));
          ctl.close();
        },
      }),
      { headers: { "cache-control": "max-age=60" } },
    ), {
    extra: 'response_body: { set_text: "replaced {request_id}" }',
  });
  const first = await c.get("/b");
  assert.match(first.text, /^replaced /);
  gate.resolve();
  // The rule let the upstream's body go; the cache still reads it to its end and stores it.
  await waitFor(async () => /hit/.test((await c.get("/b")).res.headers.get("cache-status")!), {
    what: "a hit",
    timeoutMs: 2000,
  });
  const hit = await c.get("/b");
  assert.match(hit.text, /^replaced /);
  assert.notEqual(hit.text, first.text); // expanded for each request
  assert.equal(c.sent.length, 1);
});

Deno.test("cache: a leader whose client leaves before the answer's head still fetches it for those waiting", async () => {
  // Varnish's fetch goes on without its client; had it been aborted, every waiting request would
  // go upstream on its own at once (a herd on a slow page, the case collapsing is for).
  const gate = Promise.withResolvers<void>();
  const aborted: unknown[] = [];
  const c = setup(async (r) => {
    const signal = r.signal ?? r.clientSignal?.();
    await new Promise<void>((resolve, reject) => {
      signal?.addEventListener("abort", () => {
        aborted.push(signal.reason);
        reject(signal.reason);
      });
      gate.promise.then(resolve);
    });
    return new Response("slow page", { headers: { "cache-control": "max-age=60" } });
  });
  const ac = new AbortController();
  const leader = c.handler(new Request("http://example.com/slow", { signal: ac.signal }), info);
  const followers = Array.from({ length: 3 }, () => c.get("/slow"));
  const filling = c.snapshot.router.entries[0].value.cache!.filling;
  await waitFor(() => [...filling.values()][0]?.waiters === 3, { what: "three waiting requests" });
  ac.abort();
  gate.resolve();
  for (const f of await Promise.all(followers)) {
    assert.equal(f.text, "slow page");
    assert.match(f.res.headers.get("cache-status")!, /collapsed/);
  }
  assert.equal(c.sent.length, 1);
  assert.deepEqual(aborted, []);
  await (await leader).body?.cancel();
});

Deno.test("cache: a leader whose client left, once nobody waits any more, lets the upstream go", async () => {
  const aborted: unknown[] = [];
  const c = setup((r) => {
    const signal = r.signal ?? r.clientSignal?.();
    return new Promise<Response>((_resolve, reject) => {
      signal?.addEventListener("abort", () => {
        aborted.push(signal.reason);
        reject(signal.reason);
      });
    });
  });
  const ac = new AbortController();
  const leader = c.handler(new Request("http://example.com/never", { signal: ac.signal }), info);
  await waitFor(() => c.sent.length === 1, { what: "the leader's upstream request" });
  ac.abort();
  await waitFor(() => aborted.length === 1, { what: "the upstream let go" });
  await (await leader).body?.cancel();
});

Deno.test("cache: copies of bodies still arriving are bounded by the route's max_size", async () => {
  // Each miss keeps a copy of its body until it has all come; many slow misses at once (distinct
  // URLs, a trickling upstream) held max_object_size each, unbounded by max_size. Past it, a
  // body is not stored and streams through.
  const chunk = 200 * 1024;
  const gate = Promise.withResolvers<void>();
  const c = setup(() => {
    const body = new ReadableStream<Uint8Array>({
      async start(ctl) {
        ctl.enqueue(new Uint8Array(chunk));
        await gate.promise;
        ctl.close();
      },
    });
    return new Response(body, { headers: { "cache-control": "max-age=60" } });
  }, { cache: "{ max_size: 512KiB, max_object_size: 256KiB }" });
  const policy = c.snapshot.router.entries[0].value.cache!;
  const n = 8;
  const readers = [];
  for (let i = 0; i < n; i++) {
    const res = await c.handler(new Request(`http://example.com/slow?${i}`), info);
    const reader = res.body!.getReader();
    assert.equal((await reader.read()).value!.byteLength, chunk);
    readers.push(reader);
  }
  // What the store would not hold once they are all in is not kept meanwhile either.
  assert.ok(
    policy.inFlight.bytes <= policy.store.capacity,
    `${policy.inFlight.bytes} bytes held for entries in progress`,
  );
  gate.resolve();
  for (const reader of readers) assert.equal((await reader.read()).done, true);
  assert.equal(policy.inFlight.bytes, 0);
  // The first that fit are stored; the others went through.
  assert.match((await c.get("/slow?0")).res.headers.get("cache-status")!, /hit/);
  assert.match((await c.get("/slow?1")).res.headers.get("cache-status")!, /hit/);
  assert.match((await c.get("/slow?7")).res.headers.get("cache-status")!, /miss/);
});

Deno.test("cache: when the fetch others wait for fails, one of them fetches for the rest", async () => {
  // As nginx's cache lock: the next request takes the lock, the others wait on (within the same
  // 5 s). They went upstream all at once, a herd on an upstream that had just failed.
  const gate = Promise.withResolvers<void>();
  const second = Promise.withResolvers<void>();
  const c = setup(async (_r, n) => {
    if (n === 1) {
      await gate.promise;
      throw new ProxyError("connect", "Cannot connect to upstream: refused");
    }
    await second.promise;
    return new Response(`v${n}`, { headers: { "cache-control": "max-age=60" } });
  });
  const leader = c.get("/f");
  const followers = Array.from({ length: 3 }, () => c.get("/f"));
  const filling = c.snapshot.router.entries[0].value.cache!.filling;
  await waitFor(() => [...filling.values()][0]?.waiters === 3, { what: "three waiting requests" });
  gate.resolve();
  assert.equal((await leader).res.status, 502);
  await waitFor(() => [...filling.values()][0]?.waiters === 2 || c.sent.length > 2, {
    what: "the next fetch, waited for",
  });
  second.resolve();
  const got = await Promise.all(followers);
  assert.deepEqual(got.map((f) => f.text), ["v2", "v2", "v2"]);
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: requests whose answers are kept from the store by their own Authorization do not queue", async () => {
  // The leader's answer was not stored because of its own request (Authorization): the others go
  // upstream together, not one after another.
  const gate = Promise.withResolvers<void>();
  const rest = Promise.withResolvers<void>();
  const c = setup(async (_r, n) => {
    await (n === 1 ? gate.promise : rest.promise);
    return new Response("mine", { headers: { "cache-control": "max-age=60" } });
  });
  const auth = { headers: { authorization: "Bearer t" } };
  const leader = c.get("/a", auth);
  const followers = Array.from({ length: 3 }, () => c.get("/a", auth));
  const filling = c.snapshot.router.entries[0].value.cache!.filling;
  await waitFor(() => [...filling.values()][0]?.waiters === 3, { what: "three waiting requests" });
  gate.resolve();
  await leader;
  // Well within COLLAPSE_WAIT_MS, after which waiting requests go upstream anyway.
  await waitFor(() => c.sent.length === 4, { what: "the three sent together", timeoutMs: 2_000 });
  rest.resolve();
  for (const f of await Promise.all(followers)) assert.equal(f.text, "mine");
});

Deno.test("cache: requests that waited for a fetch that failed get the stale entry its stale-if-error allows", async () => {
  // Each would otherwise ask the upstream that just failed again, one after another.
  const gate = Promise.withResolvers<void>();
  const c = setup(async (_r, n) => {
    if (n === 1) {
      return new Response("b1", { headers: { "cache-control": "max-age=10, stale-if-error=60" } });
    }
    if (n === 2) await gate.promise;
    throw new ProxyError("connect", "Cannot connect to upstream: refused");
  });
  await c.get("/e");
  c.clock.t += 20_000;
  const leader = c.get("/e");
  const followers = Array.from({ length: 3 }, () => c.get("/e"));
  const filling = c.snapshot.router.entries[0].value.cache!.filling;
  await waitFor(() => [...filling.values()][0]?.waiters === 3, { what: "three waiting requests" });
  gate.resolve();
  for (const f of [await leader, ...await Promise.all(followers)]) {
    assert.equal(f.text, "b1");
    assert.match(f.res.headers.get("cache-status")!, /detail=stale-if-error/);
  }
  assert.equal(c.sent.length, 2);
});
