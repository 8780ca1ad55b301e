import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { buildSnapshot } from "./snapshot.ts";
import { createHandler } from "./pipeline.ts";
import { explainRequest } from "./explain.ts";
import { waitFor } from "../../tests/_harness.ts";
import { noopMetrics, silentLogger } from "../ports.ts";
import type { AccessRecord, ClientInfo, Metrics, UpstreamRequest } from "../ports.ts";

const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

const T0 = Date.UTC(2026, 10, 27, 0, 0, 0);

/**
 * A handler for one caching route in front of `answer`, on a clock the test moves. Records
 * what reached the upstream and the cache metric.
 */
function setup(
  answer: (r: UpstreamRequest, n: number) => Response | Promise<Response>,
  opts: { cache?: string; extra?: string } = {},
) {
  const yaml = `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://10.1.1.1/base"
    cache: ${opts.cache ?? "true"}
    ${opts.extra ?? ""}
`;
  const { config, issues } = loadConfigText(yaml, { file: "t.yaml", env: { exists: () => true } });
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const clock = { t: T0 };
  const sent: UpstreamRequest[] = [];
  const results: string[] = [];
  const access: AccessRecord[] = [];
  const metrics: Metrics = { ...noopMetrics, cache: (_r, result) => void results.push(result) };
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: {
      send(r) {
        sent.push(r);
        return Promise.resolve(answer(r, sent.length));
      },
      close: () => Promise.resolve(),
    },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => clock.t, monotonic: () => clock.t },
    logger: silentLogger,
    metrics,
    access: (rec) => access.push(rec),
    random: () => 0.5,
  });
  const get = async (path: string, init: RequestInit = {}) => {
    const res = await handler(new Request(`http://example.com${path}`, init), info);
    return { res, text: await res.text() };
  };
  return { handler, get, clock, sent, results, access, snapshot };
}

const date = (ms: number) => new Date(ms).toUTCString();

Deno.test("cache: a fresh response is served from the store with Age and Cache-Status", async () => {
  const c = setup((_r, n) =>
    new Response(`body ${n}`, {
      headers: { "cache-control": "max-age=60", date: date(T0), "content-length": "6" },
    })
  );
  const a = await c.get("/x?b=2&a=1");
  assert.equal(a.text, "body 1");
  assert.equal(a.res.headers.get("cache-status"), "prox; fwd=uri-miss; fwd-status=200; stored");
  c.clock.t += 10_000;
  const b = await c.get("/x?b=2&a=1");
  assert.equal(b.text, "body 1");
  assert.equal(b.res.headers.get("age"), "10");
  assert.equal(b.res.headers.get("cache-status"), "prox; hit; ttl=50");
  assert.equal(c.sent.length, 1);
  assert.equal(c.sent[0].target, "/base/x?b=2&a=1");
  // Another query is another resource.
  assert.equal((await c.get("/x?a=1&b=2")).text, "body 2");
  assert.deepEqual(c.results, ["miss", "hit", "miss"]);
  // The access line says it too; no upstream on a hit.
  assert.deepEqual(c.access.map((r) => [r.cache, r.upstream]), [
    ["miss", "http://10.1.1.1/base"],
    ["hit", null],
    ["miss", "http://10.1.1.1/base"],
  ]);
});

Deno.test("cache: HEAD is answered from a GET entry without a body", async () => {
  const c = setup(() =>
    new Response("hello", { headers: { "cache-control": "max-age=60", "content-length": "5" } })
  );
  await c.get("/h");
  const head = await c.get("/h", { method: "HEAD" });
  assert.equal(head.text, "");
  assert.equal(head.res.headers.get("content-length"), "5");
  assert.match(head.res.headers.get("cache-status")!, /hit/);
  assert.equal(c.sent.length, 1);
});

Deno.test("cache: what must not be stored is not", async () => {
  const cases: [string, HeadersInit, RequestInit?][] = [
    ["no-store", { "cache-control": "no-store, max-age=60" }],
    ["private", { "cache-control": "private, max-age=60" }],
    ["set-cookie", { "cache-control": "max-age=60", "set-cookie": "s=1" }],
    ["vary star", { "cache-control": "max-age=60", vary: "*" }],
    ["no freshness", {}],
    ["authorization", { "cache-control": "max-age=60" }, {
      headers: { authorization: "Bearer x" },
    }],
    ["request no-store", { "cache-control": "max-age=60" }, {
      headers: { "cache-control": "no-store" },
    }],
  ];
  for (const [name, headers, init] of cases) {
    const c = setup(() => new Response("x", { headers }));
    await c.get("/p", init);
    await c.get("/p", init);
    assert.equal(c.sent.length, 2, name);
  }
  // 206 and 500 are not stored either.
  for (const status of [206, 500]) {
    const c = setup(() =>
      new Response("x", { status, headers: { "cache-control": "max-age=60" } })
    );
    await c.get("/p");
    await c.get("/p");
    assert.equal(c.sent.length, 2, String(status));
  }
});

Deno.test("cache: public or s-maxage makes a response to Authorization storable", async () => {
  const c = setup(() => new Response("x", { headers: { "cache-control": "public, max-age=60" } }));
  const auth = { headers: { authorization: "Bearer x" } };
  await c.get("/p", auth);
  await c.get("/p", auth);
  assert.equal(c.sent.length, 1);
});

Deno.test("cache: s-maxage wins over max-age, and Expires counts from Date", async () => {
  const c = setup((r) =>
    new Response("x", {
      headers: r.target.endsWith("/s")
        ? { "cache-control": "max-age=1000, s-maxage=5" }
        : { date: date(T0), expires: date(T0 + 20_000) },
    })
  );
  await c.get("/s");
  await c.get("/e");
  c.clock.t += 6_000;
  await c.get("/s");
  await c.get("/e");
  assert.deepEqual(c.sent.map((r) => r.target), ["/base/s", "/base/e", "/base/s"]);
  c.clock.t += 15_000;
  await c.get("/e");
  assert.equal(c.sent.length, 4);
});

Deno.test("cache: the Age an upstream sends counts against freshness", async () => {
  const c = setup(() =>
    new Response("x", { headers: { "cache-control": "max-age=60", age: "55" } })
  );
  await c.get("/a");
  c.clock.t += 4_000;
  const hit = await c.get("/a");
  assert.equal(hit.res.headers.get("age"), "59");
  c.clock.t += 2_000;
  await c.get("/a");
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: a stale entry is revalidated and a 304 refreshes it", async () => {
  const c = setup((r, n) => {
    if (n === 1) {
      return new Response("v1", {
        headers: { "cache-control": "max-age=10", etag: '"v1"', "x-gen": "1" },
      });
    }
    assert.equal(r.headers.get("if-none-match"), '"v1"');
    return new Response(null, {
      status: 304,
      headers: { "cache-control": "max-age=30", "x-gen": "2" },
    });
  });
  await c.get("/r");
  c.clock.t += 11_000;
  const again = await c.get("/r");
  assert.equal(again.res.status, 200);
  assert.equal(again.text, "v1");
  assert.equal(again.res.headers.get("x-gen"), "2");
  assert.equal(again.res.headers.get("cache-status"), "prox; fwd=stale; fwd-status=304");
  c.clock.t += 20_000;
  assert.match((await c.get("/r")).res.headers.get("cache-status")!, /hit; ttl=10/);
  assert.equal(c.sent.length, 2);
  assert.deepEqual(c.results, ["miss", "revalidated", "hit"]);
});

Deno.test("cache: a stale entry replaced by a new 200 on revalidation", async () => {
  const c = setup((_r, n) =>
    new Response(`v${n}`, {
      headers: { "cache-control": "max-age=10", "last-modified": date(T0 - n * 60_000) },
    })
  );
  await c.get("/r");
  c.clock.t += 11_000;
  const second = await c.get("/r");
  assert.equal(second.text, "v2");
  assert.equal(c.sent[1].headers.get("if-modified-since"), date(T0 - 60_000));
  assert.equal(second.res.headers.get("cache-status"), "prox; fwd=stale; fwd-status=200; stored");
  assert.equal((await c.get("/r")).text, "v2");
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: no-cache responses are stored but revalidated on every use", async () => {
  const c = setup((_r, n) =>
    n === 1
      ? new Response("v1", { headers: { "cache-control": "no-cache", etag: '"a"' } })
      : new Response(null, { status: 304 })
  );
  await c.get("/n");
  assert.equal((await c.get("/n")).text, "v1");
  assert.equal((await c.get("/n")).text, "v1");
  assert.equal(c.sent.length, 3);
  assert.equal(c.sent[2].headers.get("if-none-match"), '"a"');
});

Deno.test("cache: request no-cache and max-age=0 revalidate; only-if-cached never forwards", async () => {
  const c = setup(() =>
    new Response("x", { headers: { "cache-control": "max-age=60", etag: '"e"' } })
  );
  const miss = await c.get("/o", { headers: { "cache-control": "only-if-cached" } });
  assert.equal(miss.res.status, 504);
  assert.equal(c.sent.length, 0);
  await c.get("/o");
  const forced = await c.get("/o", { headers: { "cache-control": "no-cache" } });
  // The entry was fresh: the request's directive sent it on (RFC 9211 fwd=request).
  assert.equal(forced.res.headers.get("cache-status"), "prox; fwd=request; fwd-status=200; stored");
  await c.get("/o", { headers: { "cache-control": "max-age=0" } });
  assert.equal(c.sent.length, 3);
  assert.equal(c.sent[2].headers.get("if-none-match"), '"e"');
  c.clock.t += 5_000;
  await c.get("/o", { headers: { "cache-control": "max-age=3" } });
  assert.equal(c.sent.length, 4);
  const only = await c.get("/o", { headers: { "cache-control": "only-if-cached" } });
  assert.equal(only.res.status, 200);
  assert.equal(c.sent.length, 4);
  // A stale entry is `stale`, whatever the request said.
  c.clock.t += 61_000;
  const late = await c.get("/o", { headers: { "cache-control": "no-cache" } });
  assert.match(late.res.headers.get("cache-status")!, /^prox; fwd=stale;/);
});

Deno.test("cache: Vary keys on the request headers it names, after request header rules", async () => {
  const c = setup(
    (r) =>
      new Response(`lang ${r.headers.get("accept-language")}`, {
        headers: { "cache-control": "max-age=60", vary: "Accept-Language" },
      }),
    {
      extra:
        'request_headers: { add: { accept-language: "xx" }, condition: { path_matches: "^/forced" } }',
    },
  );
  const en = { headers: { "accept-language": "en" } };
  const de = { headers: { "accept-language": "de" } };
  assert.equal((await c.get("/v", en)).text, "lang en");
  assert.equal((await c.get("/v", de)).text, "lang de");
  const vmiss = c.results.at(-1);
  assert.equal(vmiss, "miss");
  assert.equal((await c.get("/v", en)).text, "lang en");
  assert.equal((await c.get("/v", de)).text, "lang de");
  assert.equal(c.sent.length, 2);
  // The rule makes every request look alike to the upstream: one entry serves them all.
  assert.equal((await c.get("/forced", en)).text, "lang xx");
  assert.equal((await c.get("/forced", de)).text, "lang xx");
  assert.equal(c.sent.length, 3);
});

Deno.test("cache: the client's own conditional gets 304 from a stored entry", async () => {
  const c = setup(() =>
    new Response("x", {
      headers: { "cache-control": "max-age=60", etag: '"t"', "last-modified": date(T0) },
    })
  );
  await c.get("/c");
  const inm = await c.get("/c", { headers: { "if-none-match": 'W/"t"' } });
  assert.equal(inm.res.status, 304);
  assert.equal(inm.res.headers.get("etag"), '"t"');
  const ims = await c.get("/c", { headers: { "if-modified-since": date(T0 + 1000) } });
  assert.equal(ims.res.status, 304);
  const other = await c.get("/c", { headers: { "if-none-match": '"u"' } });
  assert.equal(other.res.status, 200);
  assert.equal(c.sent.length, 1);
});

Deno.test("cache: an unsafe request invalidates the stored URI", async () => {
  const c = setup((r, n) =>
    new Response(`${r.method} ${n}`, { headers: { "cache-control": "max-age=60" } })
  );
  await c.get("/u");
  assert.equal((await c.get("/u")).text, "GET 1");
  await c.get("/u", { method: "POST", body: "x" });
  assert.equal((await c.get("/u")).text, "GET 3");
});

Deno.test("cache: Range and If-Match requests bypass the cache", async () => {
  const c = setup(() => new Response("x", { headers: { "cache-control": "max-age=60" } }));
  await c.get("/b");
  const ranged = await c.get("/b", { headers: { range: "bytes=0-0" } });
  assert.equal(ranged.res.headers.get("cache-status"), "prox; fwd=bypass");
  await c.get("/b", { headers: { "if-match": '"x"' } });
  assert.equal(c.sent.length, 3);
});

Deno.test("cache: default_ttl gives freshness only to responses without any", async () => {
  const c = setup(() => new Response("x"), { cache: "{ default_ttl: 30s }" });
  await c.get("/d");
  c.clock.t += 29_000;
  await c.get("/d");
  assert.equal(c.sent.length, 1);
  c.clock.t += 2_000;
  await c.get("/d");
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: a body over max_object_size streams through and is not stored", async () => {
  const c = setup(
    () => new Response("0123456789", { headers: { "cache-control": "max-age=60" } }),
    {
      cache: "{ max_object_size: 8 }",
    },
  );
  assert.equal((await c.get("/big")).text, "0123456789");
  assert.equal((await c.get("/big")).text, "0123456789");
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: an upstream body that fails midway leaves no entry", async () => {
  let fail = true;
  const c = setup(() => {
    const body = new ReadableStream<Uint8Array>({
      start(ctl) {
        ctl.enqueue(new TextEncoder().encode("part"));
        if (fail) ctl.error(new Error("upstream reset"));
        else ctl.close();
      },
    });
    return new Response(body, { headers: { "cache-control": "max-age=60" } });
  });
  await assert.rejects(() => c.get("/f"));
  fail = false;
  assert.equal((await c.get("/f")).text, "part");
  assert.equal(c.sent.length, 2);
  assert.equal((await c.get("/f")).text, "part");
  assert.equal(c.sent.length, 2);
});

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

Deno.test("cache: routes without cache have none", () => {
  const { config } = loadConfigText(
    `listen_addr: "127.0.0.1:0"\nroutes:\n  "/": { type: proxy, target: "http://h" }\n`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  const snap = buildSnapshot(config!, { version: 1 });
  assert.equal(snap.router.entries[0].value.cache, null);
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
  await c.get("/e?q=1");
  assert.match(
    (await explain("http://example.com/e?q=1"))!,
    /served from the store \(fresh for 60 s/,
  );
  assert.match(
    (await explain("http://example.com/e?q=1", [["cache-control", "no-cache"]]))!,
    /refused by the request: it would be revalidated with If-None-Match/,
  );
  assert.match((await explain("http://example.com/e?q=1", [["range", "bytes=0-1"]]))!, /has range/);
  assert.match((await explain("http://example.com/e", [], "DELETE"))!, /DELETE answered below 400/);
  c.clock.t += 61_000;
  assert.match((await explain("http://example.com/e?q=1"))!, /stale: it would be revalidated/);
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

Deno.test("cache: an answer stale on arrival without validators takes no room", async () => {
  const c = setup((r) =>
    new Response("x", {
      headers: r.target.endsWith("/v")
        ? { "cache-control": "max-age=0", etag: '"v"' }
        : { "cache-control": "max-age=0" },
    })
  );
  const store = c.snapshot.router.entries[0].value.cache!.store;
  const plain = await c.get("/z");
  assert.equal(plain.res.headers.get("cache-status"), "prox; fwd=uri-miss; fwd-status=200");
  assert.equal(store.size, 0);
  // With a validator it is kept, to be revalidated.
  await c.get("/v");
  assert.equal(store.size, 1);
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
