import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { closed, connect, startWsProxy, wsRoute, wsUpstream } from "./_ws.ts";
import type { WsClient } from "./_ws.ts";

/**
 * An upstream whose answers wait until the test lets them go, head first, then the body (but
 * `/quick`, answered at once).
 */
async function heldUpstream() {
  const waiting: { head: () => void; body: () => void }[] = [];
  const up = await startUpstream(async (req) => {
    if (new URL(req.url).pathname === "/quick") return new Response("quick");
    let head!: () => void;
    let body!: () => void;
    const headGo = new Promise<void>((r) => head = r);
    const bodyGo = new Promise<void>((r) => body = r);
    waiting.push({ head, body });
    await headGo;
    return new Response(
      new ReadableStream<Uint8Array>({
        async start(ctl) {
          ctl.enqueue(new TextEncoder().encode("first "));
          await bodyGo;
          ctl.enqueue(new TextEncoder().encode("last"));
          ctl.close();
        },
      }),
    );
  });
  return Object.assign(up, { waiting });
}

Deno.test("concurrency_limit: a client's requests past max are refused until one is delivered", async () => {
  await using up = await heldUpstream();
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    concurrency_limit: { max: 2, by: ip }
`);
  const a = fetch(`${prox.url}/a`);
  const b = fetch(`${prox.url}/b`);
  await waitFor(() => up.waiting.length === 2, { what: "two requests upstream" });
  const refused = await fetch(`${prox.url}/c`);
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get("retry-after"), "1");
  await refused.body?.cancel();
  // One answer's head is out but its body still streams: its slot is still held.
  up.waiting[0].head();
  const resA = await a;
  assert.equal(resA.status, 200);
  const still = await fetch(`${prox.url}/d`);
  assert.equal(still.status, 429);
  await still.body?.cancel();
  // Delivered: the slot is free again.
  up.waiting[0].body();
  assert.equal(await resA.text(), "first last");
  // (Given back once the engine reports the body delivered: a moment after the client has it.)
  await waitFor(async () => {
    const res = await fetch(`${prox.url}/quick`);
    await res.body?.cancel();
    return res.status === 200;
  }, { what: "a slot given back" });
  for (const w of up.waiting) {
    w.head();
    w.body();
  }
  assert.equal(await (await b).text(), "first last");
});

Deno.test("concurrency_limit: by header with on_missing_key: deny; exempt addresses", async () => {
  await using up = await heldUpstream();
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/key":
    type: proxy
    target: "${up.url}"
    concurrency_limit: { max: 1, by: header, header_name: X-Api-Key, on_missing_key: deny }
  "/free":
    type: proxy
    target: "${up.url}"
    concurrency_limit: { max: 1, by: route, exempt_ips: ["127.0.0.1"] }
`);
  const none = await fetch(`${prox.url}/key/x`);
  assert.equal(none.status, 429);
  assert.equal(none.headers.get("retry-after"), null, "waiting would not bring a key");
  await none.body?.cancel();
  const k1 = fetch(`${prox.url}/key/x`, { headers: { "x-api-key": "one" } });
  await waitFor(() => up.waiting.length === 1, { what: "key one upstream" });
  // Another key has a slot of its own; the same key has none.
  const k2 = fetch(`${prox.url}/key/x`, { headers: { "x-api-key": "two" } });
  await waitFor(() => up.waiting.length === 2, { what: "key two upstream" });
  const again = await fetch(`${prox.url}/key/x`, { headers: { "x-api-key": "one" } });
  assert.equal(again.status, 429);
  await again.body?.cancel();
  // 127.0.0.1 is exempt: two at once on a max: 1 route.
  const f1 = fetch(`${prox.url}/free/1`);
  const f2 = fetch(`${prox.url}/free/2`);
  await waitFor(() => up.waiting.length === 4, { what: "both exempt requests upstream" });
  for (const w of up.waiting) {
    w.head();
    w.body();
  }
  for (const r of [k1, k2, f1, f2]) assert.equal((await r).status, 200, await (await r).text());
});

Deno.test("concurrency_limit: a query key sent twice holds a slot of each value", async () => {
  await using up = await heldUpstream();
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    concurrency_limit: { max: 1, by: query, query_param: k, on_missing_key: deny }
`);
  const letGo = () => {
    for (const w of up.waiting) {
      w.head();
      w.body();
    }
  };
  /** The status of a request to `/quick` (answered at once when let in). */
  const quick = async (q: string) => {
    const res = await fetch(`${prox.url}/quick?${q}`);
    await res.body?.cancel();
    return res.status;
  };
  const held = fetch(`${prox.url}/a?k=real`);
  const other = fetch(`${prox.url}/c?k=one&k=two`);
  try {
    await waitFor(() => up.waiting.length === 2, { what: "both held requests upstream" });
    // An app that reads the last value (PHP, Django) sees k=real: a fresh first value beside it
    // must not make room for another request of that key.
    assert.equal(await quick("k=junk&k=real"), 429);
    // Both values are held while a request with two is in progress.
    assert.equal(await quick("k=one"), 429);
    assert.equal(await quick("k=two"), 429);
  } finally {
    letGo();
  }
  assert.equal(await (await held).text(), "first last");
  assert.equal(await (await other).text(), "first last");
  // All given back: each value has its slot again.
  await waitFor(async () => await quick("k=two&k=real") === 200, { what: "slots given back" });
});

Deno.test("concurrency_limit: a WebSocket holds its slot for the session, given back when it closes", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(wsRoute(up.url, "concurrency_limit: { max: 1, by: ip }"));
  const first = await connect(prox.ws);
  // The session is in progress: a second upgrade from the same address is refused.
  const refused = await connect(prox.ws).then(() => 0, (e) => e.status);
  assert.equal(refused, 429);
  first.close(1000);
  await closed(first);
  // Given back once Prox has seen the session end (its close handshake is asynchronous).
  let second: WsClient | undefined;
  await waitFor(async () => {
    second = await connect(prox.ws).catch(() => undefined);
    return second !== undefined;
  }, { what: "a slot free after the first session closed" });
  second!.close(1000);
  await closed(second!);
});
