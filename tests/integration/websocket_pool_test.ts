// WebSockets under `upstream_pool`: a proxied WebSocket holds its upstream connection for its
// whole life, so it takes one of its target's connections until either side closes, waits in the
// queue or is shed (503, Retry-After) like any request, and shows in the pool's figures and
// prox_upstream_shed_total. Real `ws` peers on both sides; the pool read from admin /status.
import assert from "node:assert/strict";
import { waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger } from "../../src/ports.ts";
import type { ProxServer } from "../../src/server.ts";
import { closed, connect, echo, messages, recordingLogger, WsClient, wsUpstream } from "./_ws.ts";
import type { WsUpstream } from "./_ws.ts";

const TOKEN = "ws-pool-token";
const auth = { authorization: `Bearer ${TOKEN}` };

interface Prox extends AsyncDisposable {
  server: ProxServer;
  ws: string;
  http: string;
  /** The pool figures of target `url` from /status (null: none known). */
  pool(
    url: string,
  ): Promise<{ busy: number; idle: number; waiting: number; opened: number } | null>;
  status(url: string): Promise<{ ejectedForMs: number; drained: boolean; inFlight: number }>;
  /** A series' value from /metrics, or undefined. */
  metric(series: string): Promise<number | undefined>;
  admin: string;
}

async function startProx(yaml: string, logger: Logger = silentLogger): Promise<Prox> {
  const server = await startServer({
    text: `listen_addr: "127.0.0.1:0"
admin: { listen_addr: "127.0.0.1:0", token: "${TOKEN}" }
health_check: { enabled: false }
${yaml}`,
    name: "test.yaml",
  }, { logger, version: "test" });
  const admin = `http://127.0.0.1:${server.admin!.port}`;
  const row = async (url: string) => {
    const res = await fetch(`${admin}/status`, { headers: auth });
    assert.equal(res.status, 200);
    const body = await res.json() as { upstreams: Record<string, unknown>[] };
    return body.upstreams.find((u) => u.url === url)!;
  };
  return {
    server,
    admin,
    ws: `ws://127.0.0.1:${server.port}`,
    http: `http://127.0.0.1:${server.port}`,
    pool: async (url) => (await row(url)).pool as never,
    status: async (url) => (await row(url)) as never,
    async metric(series) {
      const text = await (await fetch(`${admin}/metrics`, { headers: auth })).text();
      const line = text.split("\n").find((l) => l.startsWith(`${series} `));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/** The upgrade's refusal: its HTTP status and headers, or null when it opened (then closed). */
async function refusal(url: string): Promise<{ status: number; retryAfter: string | null } | null> {
  return await new Promise((resolve, reject) => {
    const ws = new WsClient(url);
    ws.once("open", () => {
      ws.close();
      resolve(null);
    });
    ws.once("unexpected-response", (_req, res) => {
      res.resume();
      res.on("end", () => {
        resolve({
          status: res.statusCode!,
          retryAfter: (res.headers["retry-after"] as string | undefined) ?? null,
        });
        ws.terminate();
      });
    });
    ws.once("error", (e) => {
      if (!/Unexpected server response/.test(String(e))) reject(e);
    });
  });
}

/** Waits until the upstream has `n` sockets and Prox's pool for it `n` busy connections. */
async function settled(prox: Prox, up: WsUpstream, target: string, n: number) {
  await waitFor(async () => up.sockets.size === n && (await prox.pool(target))?.busy === n, {
    what: `${n} WebSocket(s) at the upstream and in the pool`,
  });
}

/** Closes `ws` and waits until the upstream and Prox's pool hold no connection for it. */
async function closeFreed(prox: Prox, up: WsUpstream, target: string, ws: WsClient) {
  ws.close();
  await closed(ws);
  await settled(prox, up, target, 0);
}

/** Prox with one route to `up`, one connection per upstream, `pool` the rest of upstream_pool. */
async function pooledProx(up: WsUpstream, pool: string) {
  const target = `http://127.0.0.1:${up.port}`;
  const prox = await startProx(`
upstream_pool: { max_connections_per_upstream: 1, ${pool} }
routes: { "/": { type: proxy, target: "${target}" } }
`);
  return Object.assign(prox, { target });
}

for (const type of ["proxy", "websocket"] as const) {
  Deno.test(`upstream_pool: a WebSocket on a ${type} route takes a connection for its life; past the limit it is shed, and the slot comes back when either side closes`, async () => {
    await using up = await wsUpstream();
    const target = `http://127.0.0.1:${up.port}`;
    await using prox = await startProx(`
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 0 }
routes:
  "/api": { type: proxy, target: "${target}" }
  "/": { type: ${type}, target: "${type === "websocket" ? up.url : target}" }
`);
    const a = await connect(`${prox.ws}/a`);
    await settled(prox, up, target, 1);
    // The pool gauge under the target as the route names it (a `websocket` route's ws:// URL).
    const named = type === "websocket" ? up.url : target;
    const busy = await prox.metric(`prox_upstream_connections{backend="${named}",state="busy"}`);
    assert.equal(busy, 1);
    // The one connection is taken: a second WebSocket, and an ordinary request, are shed.
    assert.deepEqual(await refusal(`${prox.ws}/b`), { status: 503, retryAfter: "1" });
    const shedHttp = await fetch(`${prox.http}/api/x`);
    await shedHttp.body?.cancel();
    assert.equal(shedHttp.status, 503);
    assert.equal(up.sockets.size, 1, "the upstream saw one WebSocket");
    // Counted under the target as the route names it (one of each for the `websocket` route's
    // WebSocket and the proxy route's request, which name it apart).
    const shed = (backend: string) =>
      prox.metric(`prox_upstream_shed_total{backend="${backend}",reason="queue_full"}`);
    if (type === "proxy") assert.equal(await shed(target), 2);
    else assert.deepEqual([await shed(up.url), await shed(target)], [1, 1]);
    // The client closes: the slot comes back.
    a.close(1000);
    await closed(a);
    await settled(prox, up, target, 0);
    const b = await connect(`${prox.ws}/b`);
    b.send("hi");
    assert.equal(String((await messages(b, 1))[0].data), "hi");
    await settled(prox, up, target, 1);
    // The upstream closes: the slot comes back too.
    const bClosed = closed(b);
    for (const s of up.sockets) s.close(4000, "bye");
    assert.equal((await bClosed).code, 4000);
    await settled(prox, up, target, 0);
    const c = await connect(`${prox.ws}/c`);
    await closeFreed(prox, up, target, c);
    assert.equal((await prox.pool(target))!.opened, 3, "each WebSocket opened one connection");
  });
}

Deno.test("upstream_pool: a WebSocket past the limit waits in the queue for a connection", async () => {
  await using up = await wsUpstream();
  await using prox = await pooledProx(up, "queue_limit: 4, queue_timeout: 60s");
  const { target } = prox;
  const a = await connect(prox.ws);
  await settled(prox, up, target, 1);
  let bOpen = false;
  const b = connect(prox.ws).then((ws) => (bOpen = true, ws));
  await waitFor(async () => (await prox.pool(target))?.waiting === 1, { what: "b queued" });
  assert.equal(bOpen, false);
  assert.equal(up.sockets.size, 1);
  a.close();
  const ws = await b;
  ws.send("queued");
  assert.equal(String((await messages(ws, 1))[0].data), "queued");
  await settled(prox, up, target, 1);
  await closeFreed(prox, up, target, ws);
});

Deno.test("upstream_pool: at the limit, an idle kept-alive connection makes room for a WebSocket", async () => {
  await using up = await wsUpstream();
  // The ws server answers plain HTTP requests with 426, on a connection it keeps alive.
  await using prox = await pooledProx(up, "queue_limit: 0");
  const { target } = prox;
  const res = await fetch(`${prox.http}/plain`);
  await res.body?.cancel();
  await waitFor(async () => (await prox.pool(target))?.idle === 1, { what: "one idle" });
  const ws = await connect(prox.ws);
  await settled(prox, up, target, 1);
  assert.equal((await prox.pool(target))!.idle, 0);
  await closeFreed(prox, up, target, ws);
});

Deno.test("upstream_pool: a WebSocket that waited past queue_timeout is shed with 503", async () => {
  await using up = await wsUpstream();
  await using prox = await pooledProx(up, "queue_limit: 4, queue_timeout: 100ms");
  const { target } = prox;
  const a = await connect(prox.ws);
  await settled(prox, up, target, 1);
  assert.deepEqual(await refusal(prox.ws), { status: 503, retryAfter: "1" });
  const shed = await prox.metric(
    `prox_upstream_shed_total{backend="${target}",reason="queue_timeout"}`,
  );
  assert.equal(shed, 1);
  await closeFreed(prox, up, target, a);
});

Deno.test("upstream_pool: the slot comes back after a refused upgrade, a failed connect, a client gone while queued or during the upstream handshake", async () => {
  // The upstream refuses paths under /no with 401, and holds its answer for /slow.
  const gates: (() => void)[] = [];
  await using up = await wsUpstream(echo, {
    verifyClient: (info: { req: { url?: string } }, cb: (ok: boolean) => void) => {
      if (info.req.url?.startsWith("/slow")) gates.push(() => cb(true));
      else cb(!info.req.url?.startsWith("/no"));
    },
  });
  const target = `http://127.0.0.1:${up.port}`;
  // A port with nothing listening.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = `http://127.0.0.1:${l.addr.port}`;
  l.close();
  await using prox = await startProx(`
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 4, queue_timeout: 60s }
routes:
  "/dead": { type: proxy, target: "${dead}", passive_health: { enabled: false } }
  "/": { type: proxy, target: "${target}", passive_health: { enabled: false } }
`);
  // Refused by the upstream: the client gets its status, the slot is free at once after.
  for (let i = 0; i < 3; i++) assert.equal((await refusal(`${prox.ws}/no`))?.status, 401);
  await settled(prox, up, target, 0);
  // Nothing listening: closed with 1014, the slot is free after.
  for (let i = 0; i < 3; i++) {
    const ws = new WsClient(`${prox.ws}/dead`);
    assert.equal((await closed(ws)).code, 1014);
  }
  await waitFor(async () => (await prox.pool(dead))?.busy === 0, { what: "dead slot free" });
  // A client that leaves while queued: it gives up its place, and takes no connection later.
  const a = await connect(prox.ws);
  await settled(prox, up, target, 1);
  const gone = new WsClient(prox.ws);
  gone.on("error", () => {});
  await waitFor(async () => (await prox.pool(target))?.waiting === 1, { what: "queued" });
  gone.terminate();
  await waitFor(async () => (await prox.pool(target))?.waiting === 0, { what: "left queue" });
  await closeFreed(prox, up, target, a);
  const b = await connect(prox.ws);
  await settled(prox, up, target, 1);
  await closeFreed(prox, up, target, b);
  // A client that leaves while its upstream handshake is under way: the upstream's socket is
  // closed once it opens, and the slot comes back.
  const slow = new WsClient(`${prox.ws}/slow`);
  slow.on("error", () => {});
  await waitFor(() => gates.length === 1, { what: "upstream handshake under way" });
  assert.equal((await prox.pool(target))?.busy, 1);
  slow.terminate();
  await new Promise((r) => slow.once("close", r));
  gates.shift()!();
  await settled(prox, up, target, 0);
  const c = await connect(prox.ws);
  c.close();
  await closed(c);
});

Deno.test("load_balance: a WebSocket connect failure counts against its target; a drained target gets no new WebSockets", async () => {
  await using up = await wsUpstream();
  const live = `http://127.0.0.1:${up.port}`;
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = `http://127.0.0.1:${l.addr.port}`;
  l.close();
  await using prox = await startProx(`
routes:
  "/":
    type: load_balance
    targets: ["${dead}", "${live}"]
    passive_health: { failures: 1, base_ejection: 60s }
`);
  // Whichever goes first, every WebSocket ends at the live target (a failed connect is retried).
  for (let i = 0; i < 2; i++) {
    const ws = await connect(prox.ws);
    ws.close();
    await closed(ws);
  }
  assert.ok((await prox.status(dead)).ejectedForMs > 0, "the dead target is ejected");
  // Drained: the live target takes no new WebSocket (and the dead one is out): 503.
  const res = await fetch(`${prox.admin}/upstreams/drain?target=${encodeURIComponent(live)}`, {
    method: "POST",
    headers: auth,
  });
  await res.body?.cancel();
  assert.equal(res.status, 200);
  const before = up.requests.length;
  assert.equal((await refusal(prox.ws))?.status, 503);
  assert.equal(up.requests.length, before);
});

Deno.test("retries.per_try_timeout bounds a WebSocket's upstream handshake: a hung target is left for the next", async () => {
  await using live = await wsUpstream();
  // Takes the connection and never answers the handshake.
  const held: Deno.Conn[] = [];
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const c of l) held.push(c);
  })();
  const hung = `http://127.0.0.1:${l.addr.port}`;
  try {
    await using prox = await startProx(`
routes:
  "/":
    type: load_balance
    targets: ["${hung}", "http://127.0.0.1:${live.port}"]
    timeouts: { connect: 20s }
    retries: { attempts: 1, per_try_timeout: 300ms }
    passive_health: { enabled: false }
`);
    // Round robin: one of the two goes to the hung target first.
    for (let i = 0; i < 2; i++) {
      const t0 = performance.now();
      const ws = await connect(prox.ws);
      const ms = performance.now() - t0;
      assert.ok(ms < 10_000, `opened after ${Math.round(ms)} ms, not per_try_timeout's 300 ms`);
      ws.send("x");
      assert.equal(String((await messages(ws, 1))[0].data), "x");
      ws.close();
      await closed(ws);
    }
    assert.ok(held.length >= 1, "the hung target was tried");
  } finally {
    l.close();
    await accepting.catch(() => {});
    for (const c of held) c.close();
  }
});

Deno.test("a WebSocket client gone during a retry's backoff is not connected to the next target", async () => {
  await using backup = await wsUpstream();
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = `http://127.0.0.1:${l.addr.port}`;
  l.close();
  const logger = recordingLogger();
  await using prox = await startProx(
    `
routes:
  "/":
    type: load_balance
    targets: ["${dead}", { url: "http://127.0.0.1:${backup.port}", backup: true }]
    retries: { attempts: 1, backoff: 1s }
    passive_health: { failures: 1 }
`,
    logger,
  );
  // The primary refuses: ejected, the retry waits its backoff (0.5 to 1 s), then goes to the
  // backup, unless the client left meanwhile.
  const ws = new WsClient(prox.ws);
  ws.on("error", () => {});
  await waitFor(async () => (await prox.status(dead)).ejectedForMs > 0, { what: "ejected" });
  ws.terminate();
  await new Promise((r) => ws.once("close", r));
  // Once the request is over (its access line, 499): no handshake reached the backup.
  const line = await waitFor(() => logger.records.find((r) => r.msg === "access"), {
    what: "the access line",
  });
  assert.equal(line.status, 499);
  assert.equal(backup.requests.length, 0, "the backup got no handshake for a client gone");
  // And the route still works.
  const next = await connect(prox.ws);
  next.close();
  await closed(next);
  assert.equal(backup.requests.length, 1);
});

Deno.test("a reload that changes the route of a WebSocket waiting for a pool slot closes it once it opens", async () => {
  await using up = await wsUpstream();
  const target = `http://127.0.0.1:${up.port}`;
  const config = (extra: string) =>
    `listen_addr: "127.0.0.1:0"
admin: { listen_addr: "127.0.0.1:0", token: "${TOKEN}" }
health_check: { enabled: false }
upstream_pool: { max_connections_per_upstream: 1, queue_limit: 4, queue_timeout: 60s }
routes:
  "/": { type: proxy, target: "${target}"${extra} }
`;
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(file, config(""));
  const server = await startServer({ path: file }, { logger: silentLogger, version: "test" });
  try {
    const admin = `http://127.0.0.1:${server.admin!.port}`;
    const waiting = async () => {
      const res = await fetch(`${admin}/status`, { headers: auth });
      const body = await res.json() as { upstreams: { url: string; pool: { waiting: number } }[] };
      return body.upstreams.find((u) => u.url === target)?.pool.waiting;
    };
    const ws = `ws://127.0.0.1:${server.port}`;
    const a = await connect(ws);
    const b = connect(ws);
    await waitFor(async () => (await waiting()) === 1, { what: "b queued" });
    // The route changes: the open one is closed, and the one waiting too once it opens.
    await Deno.writeTextFile(file, config(", preserve_host: true"));
    const r = await server.reload();
    assert.ok(r.ok);
    assert.equal((await closed(a)).code, 1001);
    const bws = await b;
    const bClosed = closed(bws);
    await waitFor(() => bws.readyState === WsClient.CLOSED, { what: "b closed by Prox" });
    assert.equal((await bClosed).code, 1001);
    await waitFor(() => up.sockets.size === 0, { what: "upstream sockets closed" });
  } finally {
    await server.shutdown();
    await Deno.remove(file);
  }
});

Deno.test("websocket route: failed handshakes eject its target, which then gets 503 without a connect; in /status and the metrics", async () => {
  // Takes each connection and closes it at once: every handshake fails.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let accepted = 0;
  const accepting = (async () => {
    for await (const c of l) {
      accepted++;
      c.close();
    }
  })();
  const target = `ws://127.0.0.1:${l.addr.port}`;
  try {
    await using prox = await startProx(`
passive_health: { failures: 2, base_ejection: 60s, panic_threshold_percent: 0 }
routes:
  "/": { type: websocket, target: "${target}" }
`);
    // Each failure is the client's 1014, until the second ejects the target.
    for (let i = 0; i < 2; i++) {
      const ws = new WsClient(prox.ws);
      ws.on("error", () => {});
      assert.equal((await closed(ws)).code, 1014);
    }
    assert.equal(accepted, 2);
    const row = await prox.status(target);
    assert.ok(row.ejectedForMs > 0, "the target is ejected");
    // Ejected: 503 at once with when to come back, and no connection made.
    const r = await refusal(prox.ws);
    assert.equal(r?.status, 503);
    assert.ok(Number(r?.retryAfter) > 1);
    assert.equal(accepted, 2, "no connect to an ejected target");
    assert.equal(await prox.metric(`prox_backend_ejections_total{backend="${target}"}`), 1);
    assert.equal(
      await prox.metric(`prox_backend_requests_total{backend="${target}",route="/",status="599"}`),
      2,
    );
  } finally {
    l.close();
    await accepting.catch(() => {});
  }
});

Deno.test("websocket route: with the default panic threshold its lone target is tried all the same", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const target = `ws://127.0.0.1:${l.addr.port}`;
  l.close();
  await using prox = await startProx(`
passive_health: { failures: 1 }
routes:
  "/": { type: websocket, target: "${target}" }
`);
  for (let i = 0; i < 2; i++) {
    const ws = new WsClient(prox.ws);
    ws.on("error", () => {});
    assert.equal((await closed(ws)).code, 1014);
  }
  assert.equal((await prox.status(target)).ejectedForMs, 0);
});

Deno.test("websocket route: a drained target gets no new WebSockets, its open ones stay; undrained it takes them again", async () => {
  await using up = await wsUpstream();
  await using prox = await startProx(`
routes:
  "/": { type: websocket, target: "${up.url}" }
`);
  const a = await connect(prox.ws);
  await waitFor(() => up.sockets.size === 1, { what: "a at the upstream" });
  assert.equal((await prox.status(up.url)).inFlight, 1, "an open WebSocket is in flight");
  const drain = async (what: "drain" | "undrain") => {
    const res = await fetch(
      `${prox.admin}/upstreams/${what}?target=${encodeURIComponent(up.url)}`,
      { method: "POST", headers: auth },
    );
    assert.equal(res.status, 200);
    return await res.json();
  };
  assert.deepEqual(await drain("drain"), { target: up.url, drained: true, inFlight: 1 });
  assert.equal((await prox.status(up.url)).drained, true);
  const before = up.requests.length;
  assert.equal((await refusal(prox.ws))?.status, 503);
  assert.equal(up.requests.length, before, "no handshake reached the drained target");
  // The open one still relays, and counts down when it closes.
  a.send("still here");
  assert.equal(String((await messages(a, 1))[0].data), "still here");
  a.close();
  await closed(a);
  await waitFor(async () => (await prox.status(up.url)).inFlight === 0, { what: "in flight 0" });
  assert.deepEqual(await drain("undrain"), { target: up.url, drained: false, inFlight: 0 });
  const b = await connect(prox.ws);
  b.close();
  await closed(b);
});
