import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { buildSnapshot } from "./snapshot.ts";
import { date, info, setup, T0 } from "./_cache_fixture.ts";

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

Deno.test("cache: a Vary naming no field name is answered, never stored", async () => {
  // "Accept Encoding" (a space for the dash) is no field name: its value cannot be read from a
  // request, so no request can be shown to match (RFC 9111 §4.1), as with Vary: *.
  const c = setup(() =>
    new Response("x", { headers: { "cache-control": "max-age=60", vary: "Accept Encoding" } })
  );
  const a = await c.get("/p");
  assert.equal(a.res.status, 200);
  assert.equal(a.text, "x");
  assert.equal((await c.get("/p")).text, "x");
  assert.equal(c.sent.length, 2);
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

Deno.test("cache: an upstream's Age past 2^31 counts as 2^31 and is served as digits", async () => {
  // RFC 9111 §1.2.2: a delta-seconds too large for the cache is 2147483648; String() of a larger
  // number is "1e+23", which is no Age (RFC 9111 §5.1).
  const c = setup(() =>
    new Response("x", {
      headers: { "cache-control": "max-age=60", etag: '"a"', age: "99999999999999999999999" },
    })
  );
  await c.get("/a");
  const res = (await c.get("/a", { headers: { "cache-control": "max-stale" } })).res;
  assert.match(res.headers.get("cache-status")!, /hit.*max-stale/);
  assert.equal(res.headers.get("age"), "2147483648");
});

Deno.test("cache: an upstream's Age sent twice counts by its first value", async () => {
  // RFC 9111 §5.1: a list-based Age uses its first member, not none (which made it fresh).
  const c = setup(() => {
    const headers = new Headers({ "cache-control": "max-age=60" });
    headers.append("age", "55");
    headers.append("age", "55");
    return new Response("x", { headers });
  });
  await c.get("/a");
  c.clock.t += 6_000;
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

Deno.test("cache: a 304 naming another ETag does not revalidate the entry", async () => {
  // RFC 9111 §4.3.4: a 304 whose strong validator no stored response has updates none (an
  // origin that answered by If-Modified-Since alone, the file changed under the same date). The
  // old body relabelled "v2" would else be confirmed by every later 304 for "v2", for good.
  const c = setup((r, n) => {
    if (n === 1) {
      return new Response("v1", { headers: { "cache-control": "max-age=10", etag: '"v1"' } });
    }
    if (r.headers.get("if-none-match") !== null) {
      return new Response(null, {
        status: 304,
        headers: { "cache-control": "max-age=10", etag: '"v2"' },
      });
    }
    return new Response("v2", { headers: { "cache-control": "max-age=10", etag: '"v2"' } });
  });
  await c.get("/e");
  c.clock.t += 11_000;
  const again = await c.get("/e");
  assert.equal(again.text, "v2");
  assert.equal(again.res.headers.get("etag"), '"v2"');
  assert.equal(c.sent.length, 3);
  assert.equal(c.sent[2].headers.get("if-none-match"), null);
  assert.equal((await c.get("/e")).text, "v2");
  assert.equal(c.sent.length, 3);
  // A weak 304 for the same tag revalidates it (weak comparison).
  const w = setup((_r, n) =>
    n === 1
      ? new Response("w1", { headers: { "cache-control": "max-age=10", etag: '"w1"' } })
      : new Response(null, { status: 304, headers: { etag: 'W/"w1"' } })
  );
  await w.get("/w");
  w.clock.t += 11_000;
  assert.equal((await w.get("/w")).text, "w1");
  assert.equal(w.sent.length, 2);
});

Deno.test("cache: a 304 that makes the entry unstorable drops it", async () => {
  // The 304's fields replace the stored ones (RFC 9111 §4.3.4); what they then say must hold of
  // the stored answer as of a new one (RFC 9111 §3): private, no-store and Vary: * are not kept,
  // nor is an entry the 304 keys by other Vary fields than it is stored under (RFC 9111 §4.1).
  const cases: Record<string, string>[] = [
    { "cache-control": "private, max-age=30" },
    { "cache-control": "no-store" },
    { "cache-control": "max-age=30", vary: "*" },
    { "cache-control": "max-age=30", vary: "accept-language" },
  ];
  for (const fields of cases) {
    const name = JSON.stringify(fields);
    const c = setup((_r, n) =>
      n === 1
        ? new Response("v1", { headers: { "cache-control": "max-age=10", etag: '"v1"' } })
        : new Response(null, { status: 304, headers: fields })
    );
    await c.get("/r");
    c.clock.t += 11_000;
    const again = await c.get("/r");
    assert.equal(again.text, "v1", name);
    const next = await c.get("/r");
    assert.doesNotMatch(next.res.headers.get("cache-status")!, /hit/, name);
    assert.equal(c.sent.length, 3, name);
  }
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
  assert.equal(second.res.headers.get("cache-status"), "prox; fwd=stale; fwd-status=200");
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
  // Nor one the store cannot answer (RFC 9111 §5.2.1.7: the stored answer or 504).
  const passedBy: Record<string, string>[] = [{ "if-match": '"e"' }, { range: "bytes=0-0" }];
  for (const h of passedBy) {
    const passed = await c.get("/o", { headers: { "cache-control": "only-if-cached", ...h } });
    assert.equal(passed.res.status, 504);
    assert.match(passed.res.headers.get("cache-status")!, /detail=only-if-cached/);
  }
  assert.equal(c.sent.length, 0);
  await c.get("/o");
  const forced = await c.get("/o", { headers: { "cache-control": "no-cache" } });
  // The entry was fresh: the request's directive sent it on (RFC 9211 fwd=request).
  assert.equal(forced.res.headers.get("cache-status"), "prox; fwd=request; fwd-status=200");
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

Deno.test("cache: Vary values that differ only in order, case, spacing or field lines share one entry", async () => {
  // RFC 9111 §4.1: values that mean the same (list members reordered where order means nothing,
  // case-insensitive tokens, optional whitespace, one line or several) match one stored variant.
  const c = setup((r) =>
    new Response(`for ${r.headers.get("accept-encoding")} ${r.headers.get("accept-language")}`, {
      headers: { "cache-control": "max-age=60", vary: "Accept-Encoding, Accept-Language" },
    })
  );
  const ask = (ae: string | string[], al: string) => {
    const headers = new Headers({ "accept-language": al });
    for (const v of [ae].flat()) headers.append("accept-encoding", v);
    return c.get("/n", { headers });
  };
  assert.equal((await ask("gzip, br", "en-US, de;q=0.5")).text, "for gzip, br en-US, de;q=0.5");
  for (
    const [ae, al] of [
      ["br,gzip", "en-US,de;q=0.5"],
      ["BR, GZip", "en-us , de; q=0.50"],
      [["br", "gzip"], "en-US ,de;q=0.500"],
      ["gzip;q=1, br, ,", "en-US, de;q=0.5"],
    ] as const
  ) {
    assert.equal((await ask(ae as string | string[], al)).text, "for gzip, br en-US, de;q=0.5");
  }
  assert.equal(c.sent.length, 1, "one upstream request for five spellings of one request");
  // Values that mean something else still get their own answer: another weight, a coding
  // refused, languages in another order (some apps pick the first of equal weight).
  for (
    const [ae, al] of [
      ["gzip;q=0.5, br", "en-US, de;q=0.5"],
      ["gzip, br;q=0", "en-US, de;q=0.5"],
      ["gzip, br", "de;q=0.5, en-US"],
      ["gzip, br", "de, en-US"],
    ]
  ) {
    assert.equal((await ask(ae, al)).text, `for ${ae} ${al}`);
  }
  assert.equal(c.sent.length, 5);
});

Deno.test("cache: an answer echoing the Origin without Vary: Origin is kept per origin", async () => {
  // The app's own CORS (no `cors` on the route) forgot Vary: Origin.
  const c = setup((r) => {
    const origin = r.headers.get("origin");
    return new Response(`for ${origin}`, {
      headers: {
        "cache-control": "max-age=60",
        ...(origin ? { "access-control-allow-origin": origin } : {}),
      },
    });
  });
  const from = (origin: string) => ({ headers: { origin } });
  const a = await c.get("/o", from("https://a.test"));
  assert.equal(a.res.headers.get("access-control-allow-origin"), "https://a.test");
  const b = await c.get("/o", from("https://b.test"));
  assert.equal(b.text, "for https://b.test");
  assert.equal(b.res.headers.get("access-control-allow-origin"), "https://b.test");
  assert.equal((await c.get("/o", from("https://a.test"))).text, "for https://a.test");
  assert.equal(c.sent.length, 2);
  // `*` is the same for everyone: one entry.
  const star = setup(() =>
    new Response("x", {
      headers: { "cache-control": "max-age=60", "access-control-allow-origin": "*" },
    })
  );
  await star.get("/s", from("https://a.test"));
  await star.get("/s", from("https://b.test"));
  assert.equal(star.sent.length, 1);
});

Deno.test("cache: an answer compressed by the upstream without Vary: Accept-Encoding is kept per Accept-Encoding", async () => {
  // An upstream that compresses for clients that accept it and forgets Vary (nginx's `gzip on`
  // without `gzip_vary on`, its default): a client that asked for no coding must not be handed
  // the gzip bytes stored for another.
  const c = setup((r) => {
    const gzip = /gzip/.test(r.headers.get("accept-encoding") ?? "");
    return new Response(gzip ? "GZIP BYTES" : "plain text", {
      headers: { "cache-control": "max-age=60", ...(gzip ? { "content-encoding": "gzip" } : {}) },
    });
  });
  const a = await c.get("/z", { headers: { "accept-encoding": "gzip" } });
  assert.equal(a.res.headers.get("content-encoding"), "gzip");
  assert.equal((await c.get("/z", { headers: { "accept-encoding": "gzip" } })).text, "GZIP BYTES");
  assert.equal(c.sent.length, 1, "a hit for the same Accept-Encoding");
  for (const ae of ["identity", "br", null]) {
    const b = await c.get("/z", ae === null ? {} : { headers: { "accept-encoding": ae } });
    assert.equal(b.res.headers.get("content-encoding"), null, `Accept-Encoding: ${ae}`);
    assert.equal(b.text, "plain text", `Accept-Encoding: ${ae}`);
  }
  // Once a plain answer is stored, a gzip client may get it (it is no less right for them).
  const d = await c.get("/z", { headers: { "accept-encoding": "gzip" } });
  assert.equal(
    d.text,
    d.res.headers.get("content-encoding") === "gzip" ? "GZIP BYTES" : "plain text",
  );
  // An identity answer is the same for every client: one entry, whatever the client accepts.
  const plain = setup(() => new Response("x", { headers: { "cache-control": "max-age=60" } }));
  await plain.get("/p", { headers: { "accept-encoding": "gzip" } });
  await plain.get("/p", { headers: { "accept-encoding": "br" } });
  assert.equal(plain.sent.length, 1);
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

Deno.test("cache: a stored entry's 304 answers the client's own conditional, not a request_headers rule's", async () => {
  // As nginx's cache does: a 304 tells the client its copy holds, and only the client knows which
  // copy it has. A rule that removes If-None-Match for the upstream leaves the client's 304 as it
  // is; a rule that adds one must not send a bodiless 304 to a client that has nothing.
  const answer = () =>
    new Response("x", { headers: { "cache-control": "max-age=60", etag: '"t"' } });
  const removed = setup(answer, { extra: "request_headers: { remove: [If-None-Match] }" });
  await removed.get("/c");
  const inm = await removed.get("/c", { headers: { "if-none-match": '"t"' } });
  assert.equal(inm.res.status, 304);
  assert.equal(removed.sent.length, 1);
  const added = setup(answer, { extra: `request_headers: { set: { If-None-Match: '"t"' } }` });
  await added.get("/c");
  const plain = await added.get("/c");
  assert.equal(plain.res.status, 200);
  assert.equal(plain.text, "x");
  assert.equal(added.sent.length, 1);
});

Deno.test("cache: an unsafe request invalidates the stored URI", async () => {
  const c = setup((r, n) =>
    new Response(`${r.method} ${n}`, { headers: { "cache-control": "max-age=60" } })
  );
  await c.get("/u");
  assert.equal((await c.get("/u")).text, "GET 1");
  const post = await c.get("/u", { method: "POST", body: "x" });
  assert.equal(post.res.headers.get("cache-status"), "prox; fwd=method; fwd-status=200");
  assert.equal((await c.get("/u")).text, "GET 3");
});

Deno.test("cache: an answer fetched before an unsafe request changed its URI is not stored", async () => {
  // RFC 9111 §4.4: the POST made what is stored for the URI outdated, and so may be the answer
  // of a GET that left before it did.
  const held = Promise.withResolvers<Response>();
  const sent = Promise.withResolvers<void>();
  const c = setup((r, n) => {
    if (r.method === "POST") return new Response("done");
    if (n > 1) return new Response("new", { headers: { "cache-control": "max-age=60" } });
    sent.resolve();
    return held.promise;
  });
  const pending = c.handler(new Request("http://example.com/u"), info);
  await sent.promise;
  assert.equal((await c.get("/u", { method: "POST", body: "x" })).text, "done");
  held.resolve(new Response("old", { headers: { "cache-control": "max-age=60" } }));
  assert.equal(await (await pending).text(), "old");
  assert.equal((await c.get("/u")).text, "new");
});

Deno.test("cache: a 304 to an older revalidation does not bring back the entry a newer answer replaced", async () => {
  // A HEAD revalidates the stale v1 without holding the key; meanwhile a GET stores v2. The 304
  // that then comes for v1 says v1 is current, not v2's body, which it must not replace.
  const held = Promise.withResolvers<Response>();
  const sent = Promise.withResolvers<void>();
  const c = setup((r, n) => {
    if (n === 1) {
      return new Response("v1", { headers: { "cache-control": "max-age=10", etag: '"v1"' } });
    }
    if (r.method === "HEAD") {
      sent.resolve();
      return held.promise;
    }
    return new Response("v2", { headers: { "cache-control": "max-age=10", etag: '"v2"' } });
  });
  await c.get("/v");
  c.clock.t += 11_000;
  const head = c.handler(new Request("http://example.com/v", { method: "HEAD" }), info);
  await sent.promise;
  assert.equal((await c.get("/v")).text, "v2");
  held.resolve(
    new Response(null, { status: 304, headers: { "cache-control": "max-age=100", etag: '"v1"' } }),
  );
  await (await head).body?.cancel();
  const after = await c.get("/v");
  assert.equal(after.text, "v2");
  assert.equal(c.sent.length, 3);
});

Deno.test("cache: If-Match requests, and Range ones nothing fresh is stored for, bypass the cache", async () => {
  const c = setup(() => new Response("x", { headers: { "cache-control": "max-age=60" } }));
  const ranged = await c.get("/b", { headers: { range: "bytes=0-0" } });
  assert.equal(ranged.res.headers.get("cache-status"), "prox; fwd=bypass");
  assert.equal(c.sent[0].headers.get("range"), "bytes=0-0");
  await c.get("/b");
  await c.get("/b", { headers: { "if-match": '"x"' } });
  assert.equal(c.sent.length, 3);
  c.clock.t += 61_000;
  await c.get("/b", { headers: { range: "bytes=0-0" } });
  assert.equal(c.sent.length, 4);
  const head = await c.get("/b", { method: "HEAD", headers: { range: "bytes=0-0" } });
  assert.equal(head.res.headers.get("cache-status"), "prox; fwd=bypass");
});

Deno.test("cache: a Range request is answered from a fresh stored answer (206, 416, or the whole)", async () => {
  // As nginx's and Varnish's caches: a video or a download stored whole serves its ranges too,
  // rather than each range (a player asks for many) going upstream.
  const lastModified = date(T0 - 10_000);
  const c = setup(() =>
    new Response("0123456789", {
      headers: {
        "cache-control": "max-age=60",
        etag: '"v1"',
        "last-modified": lastModified,
        date: date(T0),
        "content-type": "video/mp4",
      },
    })
  );
  await c.get("/v");
  const range = async (value: string, more: Record<string, string> = {}) => {
    const got = await c.get("/v", { headers: { range: value, ...more } });
    return {
      status: got.res.status,
      text: got.text,
      range: got.res.headers.get("content-range"),
      length: got.res.headers.get("content-length"),
      cache: got.res.headers.get("cache-status"),
    };
  };
  assert.deepEqual(await range("bytes=2-4"), {
    status: 206,
    text: "234",
    range: "bytes 2-4/10",
    length: "3",
    cache: "prox; hit; ttl=60",
  });
  assert.equal((await range("bytes=-3")).text, "789");
  assert.equal((await range("bytes=7-")).range, "bytes 7-9/10");
  const past = await range("bytes=20-");
  assert.equal(past.status, 416);
  assert.equal(past.range, "bytes */10");
  // Several ranges, or a malformed one: the whole answer (RFC 9110 §14.2 allows it).
  assert.equal((await range("bytes=0-1,3-4")).status, 200);
  assert.equal((await range("lines=1-2")).text, "0123456789");
  // If-Range: a strong tag or the exact Last-Modified that matches; else the whole answer.
  assert.equal((await range("bytes=0-0", { "if-range": '"v1"' })).status, 206);
  assert.equal((await range("bytes=0-0", { "if-range": lastModified })).status, 206);
  assert.equal((await range("bytes=0-0", { "if-range": '"v0"' })).status, 200);
  assert.equal((await range("bytes=0-0", { "if-range": 'W/"v1"' })).status, 200);
  assert.equal((await range("bytes=0-0", { "if-range": date(T0 - 20_000) })).status, 200);
  // The client's own If-None-Match comes first: its copy holds.
  assert.equal((await range("bytes=0-0", { "if-none-match": '"v1"' })).status, 304);
  assert.equal(c.sent.length, 1);
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

Deno.test("cache: a malformed or negative max-age is stale, whatever default_ttl says", async () => {
  // RFC 9111 §4.2.1: invalid freshness information is best taken as stale.
  for (const cc of ["max-age=-1", "max-age=ten", "s-maxage=-5, max-age=60"]) {
    const c = setup(() => new Response("x", { headers: { "cache-control": cc } }), {
      cache: "{ default_ttl: 30s }",
    });
    await c.get("/d");
    await c.get("/d");
    assert.equal(c.sent.length, 2, cc);
  }
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

Deno.test("cache: routes without cache have none", () => {
  const { config } = loadConfigText(
    `listen_addr: "127.0.0.1:0"\nroutes:\n  "/": { type: proxy, target: "http://h" }\n`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  const snap = buildSnapshot(config!, { version: 1 });
  assert.equal(snap.router.entries[0].value.cache, null);
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

Deno.test("cache: a flood of distinct URLs stays within max_size and max_entries", async () => {
  const c = setup(
    () => new Response("y".repeat(500), { headers: { "cache-control": "max-age=60" } }),
    {
      cache: "{ max_size: 8KiB, max_entries: 12, max_object_size: 1KiB }",
    },
  );
  const store = c.snapshot.router.entries[0].value.cache!.store;
  for (let i = 0; i < 200; i++) {
    await c.get(`/f?i=${i}`);
    assert.ok(store.bytes <= 8192 && store.size <= 12, `${store.bytes} bytes, ${store.size}`);
  }
  assert.ok(store.size >= 8, String(store.size));
  // The most recent are the ones kept.
  assert.match((await c.get("/f?i=199")).res.headers.get("cache-status")!, /hit/);
  assert.match((await c.get("/f?i=0")).res.headers.get("cache-status")!, /fwd=uri-miss/);
});

Deno.test("cache: Cache-Status says stored only when the answer is known to fit", async () => {
  const chunked = (text: string, headers: Record<string, string> = {}) =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(ctl) {
          ctl.enqueue(new TextEncoder().encode(text));
          ctl.close();
        },
      }),
      { headers: { "cache-control": "max-age=60", ...headers } },
    );
  const c = setup(
    (r) =>
      r.target.endsWith("/big")
        ? chunked("0123456789")
        : r.target.endsWith("/small")
        ? chunked("01234")
        : r.target.endsWith("/wide")
        // Fits max_object_size, but not the store with its 300 bytes of header fields.
        ? new Response("0123456", {
          headers: { "cache-control": "max-age=60", "x-pad": "p".repeat(300) },
        })
        : new Response("0123456", {
          headers: { "cache-control": "max-age=60", "content-length": "7" },
        }),
    { cache: "{ max_object_size: 8, max_size: 512 }" },
  );
  // Of unknown length and, as it turns out, too large: not stored, and not said to be.
  const big = await c.get("/big");
  assert.equal(big.text, "0123456789");
  assert.equal(big.res.headers.get("cache-status"), "prox; fwd=uri-miss; fwd-status=200");
  assert.match((await c.get("/big")).res.headers.get("cache-status")!, /fwd=uri-miss/);
  // Of unknown length and small: stored, which the next request shows.
  const small = await c.get("/small");
  assert.equal(small.res.headers.get("cache-status"), "prox; fwd=uri-miss; fwd-status=200");
  assert.match((await c.get("/small")).res.headers.get("cache-status")!, /^prox; hit/);
  // A known length that fits is said to be stored.
  const known = await c.get("/known");
  assert.equal(known.res.headers.get("cache-status"), "prox; fwd=uri-miss; fwd-status=200; stored");
  assert.match((await c.get("/known")).res.headers.get("cache-status")!, /^prox; hit/);
  const wide = await c.get("/wide");
  assert.equal(wide.res.headers.get("cache-status"), "prox; fwd=uri-miss; fwd-status=200");
  assert.match((await c.get("/wide")).res.headers.get("cache-status")!, /fwd=uri-miss/);
  assert.equal(c.sent.length, 6);
});

Deno.test("cache: max-stale serves a stale entry as a hit unless the answer forbids it", async () => {
  const c = setup((r) =>
    new Response("v", {
      headers: {
        "cache-control": r.target.endsWith("/must") ? "max-age=10, must-revalidate" : "max-age=10",
      },
    })
  );
  await c.get("/s");
  await c.get("/must");
  c.clock.t += 25_000;
  const any = await c.get("/s", { headers: { "cache-control": "max-stale" } });
  assert.equal(any.text, "v");
  assert.equal(any.res.headers.get("cache-status"), "prox; hit; ttl=-15; detail=max-stale");
  assert.equal(any.res.headers.get("age"), "25");
  const enough = await c.get("/s", { headers: { "cache-control": "max-stale=15" } });
  assert.match(enough.res.headers.get("cache-status")!, /^prox; hit; ttl=-15/);
  // With only-if-cached, a stale entry the client accepts answers instead of 504.
  const offline = await c.get("/s", { headers: { "cache-control": "only-if-cached, max-stale" } });
  assert.equal(offline.res.status, 200);
  assert.equal(c.sent.length, 2);
  // Staler than the client accepts, or an answer that must be revalidated: fetched again.
  const tooStale = await c.get("/s", { headers: { "cache-control": "max-stale=14" } });
  assert.match(tooStale.res.headers.get("cache-status")!, /^prox; fwd=stale/);
  const must = await c.get("/must", { headers: { "cache-control": "max-stale" } });
  assert.match(must.res.headers.get("cache-status")!, /^prox; fwd=stale/);
  assert.equal(c.sent.length, 4);
});

Deno.test("cache: a 304 without Date dates the refreshed entry by its arrival, not the old Date", async () => {
  // RFC 9110 §6.6.1: a recipient caching a response without Date records when it arrived; the
  // stored 200's Date would else date the refreshed entry, stale again at once, with a wrong Age.
  const c = setup((_r, n) =>
    n === 1
      ? new Response("v1", {
        headers: { "cache-control": "max-age=60", etag: '"v1"', date: date(T0) },
      })
      : new Response(null, { status: 304, headers: { "cache-control": "max-age=60" } })
  );
  await c.get("/d");
  c.clock.t += 120_000;
  const again = await c.get("/d");
  assert.equal(again.res.headers.get("cache-status"), "prox; fwd=stale; fwd-status=304");
  assert.equal(again.res.headers.get("age"), "0");
  assert.equal(again.res.headers.get("date"), date(T0 + 120_000));
  c.clock.t += 10_000;
  const hit = await c.get("/d");
  assert.equal(hit.res.headers.get("cache-status"), "prox; hit; ttl=50");
  assert.equal(hit.res.headers.get("age"), "10");
  assert.equal(c.sent.length, 2);
});

Deno.test("cache: a no-cache answer without validators, or an event stream, is not stored nor waited for", async () => {
  // A no-cache answer without validators may never be served without the origin and cannot be
  // revalidated; an event stream is a live feed, even fresh for a minute. Stored, either held its
  // key while it ran, so that each other request for it (an event stream's subscribers) waited
  // for the one fetching it, up to COLLAPSE_WAIT_MS; an ended feed was replayed as new events.
  for (
    const headers of [
      { "content-type": "text/event-stream", "cache-control": "no-cache" },
      { "content-type": "text/event-stream; charset=utf-8", "cache-control": "max-age=60" },
    ]
  ) {
    const streams: ReadableStreamDefaultController<Uint8Array>[] = [];
    const c = setup(
      () =>
        new Response(new ReadableStream({ start: (ctl) => void streams.push(ctl) }), { headers }),
      { cache: "{ default_ttl: 30s }" },
    );
    const first = await c.handler(new Request("http://example.com/events"), info);
    assert.doesNotMatch(first.headers.get("cache-status")!, /stored/);
    const second = c.handler(new Request("http://example.com/events"), info);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), 2_000));
    const won = await Promise.race([second, late]);
    clearTimeout(timer);
    assert.notEqual(
      won,
      "late",
      `the second request waited for the first one's (${headers["cache-control"]})`,
    );
    assert.equal(c.sent.length, 2);
    for (const ctl of streams) ctl.close();
    await first.body!.cancel();
    await (await second).body!.cancel();
    assert.equal(c.snapshot.router.entries[0].value.cache!.store.size, 0);
  }
});
