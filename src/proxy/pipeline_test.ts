import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { ProxyError } from "../domain/errors.ts";
import { buildSnapshot } from "./snapshot.ts";
import { createHandler } from "./pipeline.ts";
import { noopMetrics, silentLogger } from "../ports.ts";
import type { AccessRecord, ClientInfo } from "../ports.ts";
import { createMemoryStore } from "../adapters/store_memory.ts";
import { WireRequest } from "../adapters/h1/wire_request.ts";
import { HeaderList } from "../domain/header_list.ts";
import { RAW_BODY } from "../ports.ts";

const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

function handlerFor(
  yaml: string,
  send: (r: { clientSignal?: () => AbortSignal }) => Promise<Response>,
) {
  const { config, issues } = loadConfigText(`listen_addr: "127.0.0.1:0"\n${yaml}`, {
    file: "t.yaml",
    env: { exists: () => true },
  });
  assert.ok(config, JSON.stringify(issues));
  const records: AccessRecord[] = [];
  const snapshot = buildSnapshot(config, { version: 1 });
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: { send, close: () => Promise.resolve() },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: silentLogger,
    metrics: noopMetrics,
    access: (r) => records.push(r),
    random: () => 0.5,
  });
  return { handler, records };
}

Deno.test("createHandler logs 499 when the client goes away before the upstream answers", async () => {
  const { handler, records } = handlerFor(
    `health_check: { enabled: false }\nroutes: { "/": { type: proxy, target: "http://10.1.1.1" } }`,
    (r) =>
      new Promise((_, reject) => {
        const gone = () => reject(new ProxyError("client_gone", "gone"));
        const signal = r.clientSignal!();
        if (signal.aborted) gone();
        else signal.addEventListener("abort", gone);
      }),
  );
  const ctl = new AbortController();
  const pending = handler(new Request("http://h/x", { signal: ctl.signal }), info);
  ctl.abort();
  await (await pending).body?.cancel();
  assert.equal(records.length, 1);
  assert.equal(records[0].status, 499);
  assert.equal(records[0].clientIp, "192.0.2.7");
});

Deno.test("createHandler answers 400 for paths that cannot be normalized and 404 without a route", async () => {
  const { handler, records } = handlerFor(
    `routes: { "/api": { type: redirect, target: "/x" } }`,
    () => Promise.reject(new Error("unused")),
  );
  const bad = await handler(new Request("http://h/api/..%2fadmin"), info);
  assert.equal(bad.status, 400);
  assert.match(await bad.text(), /request id: 7fffffff-/);
  const none = await handler(new Request("http://h/other"), info);
  assert.equal(none.status, 404);
  await none.body?.cancel();
  assert.deepEqual(records.map((r) => [r.status, r.route]), [[400, null], [404, null]]);
});

Deno.test("the last request's objects outlive a full GC (recent.ts), earlier ones do not", async () => {
  // Needs --expose-gc, so it runs in a child process; the first request's objects must be
  // collected there, which shows that the GC ran and that only the newest ones are kept.
  const at = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
  const script = `
    import { loadConfigText } from ${at("../config/load.ts")};
    import { buildSnapshot } from ${at("./snapshot.ts")};
    import { createHandler } from ${at("./pipeline.ts")};
    import { noopMetrics, silentLogger } from ${at("../ports.ts")};
    const { config } = loadConfigText(
      'listen_addr: "127.0.0.1:0"\\nhealth_check: { enabled: false }\\n' +
        'routes: { "/": { type: proxy, target: "http://10.1.1.1" } }',
      { file: "t.yaml", env: { exists: () => true } },
    );
    const snapshot = buildSnapshot(config, { version: 1 });
    const sent = [];
    const handler = createHandler({
      snapshot: () => snapshot,
      upstream: {
        send: (r) => { sent.push(new WeakRef(r)); return Promise.resolve(new Response("ok")); },
        close: () => Promise.resolve(),
      },
      files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
      clock: { now: () => 0, monotonic: () => 0 },
      logger: silentLogger,
      metrics: noopMetrics,
    });
    const info = { remoteAddr: { hostname: "192.0.2.7", port: 4000 }, localPort: 80,
      protocol: "http/1.1", tls: false };
    const reqs = [];
    const responses = [];
    for (const path of ["/first", "/last"]) {
      const req = new Request("http://h" + path);
      reqs.push(new WeakRef(req));
      const res = await handler(req, info);
      responses.push(new WeakRef(res));
      await res.text();
    }
    await new Promise((r) => setTimeout(r, 0)); // WeakRef targets are held until the job ends
    gc({ type: "major", execution: "sync", flavor: "last-resort" });
    const alive = (refs) => refs.map((r) => r.deref() !== undefined);
    console.log(JSON.stringify({ reqs: alive(reqs), responses: alive(responses), sent: alive(sent) }));
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `--config=${new URL("../../deno.json", import.meta.url).pathname}`,
      "--v8-flags=--expose-gc",
      "-",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(script));
  await w.close();
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.deepEqual(JSON.parse(text), {
    reqs: [false, true],
    responses: [false, true],
    sent: [false, true],
  });
});

Deno.test("createHandler counts a request 'allowed' once, and only when every limit let it through", async () => {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://10.0.0.1:80"
    rate_limits:
      - { name: wide, by: ip, requests: 100, period: 1h }
      - { name: narrow, by: ip, requests: 2, period: 1h }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const actions: string[] = [];
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: { send: () => Promise.resolve(new Response("ok")), close: () => Promise.resolve() },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: silentLogger,
    metrics: { ...noopMetrics, rateLimit: (_route, action) => void actions.push(action) },
    rateLimits: createMemoryStore(),
    random: () => 0.5,
  });
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) {
    const res = await handler(new Request("http://proxy.test/x"), info);
    await res.body?.cancel();
    statuses.push(res.status);
  }
  assert.deepEqual(statuses, [200, 200, 429, 429]);
  // The wide limit let all four through, but two were refused: 2 allowed, 2 limited.
  assert.deepEqual(actions, ["allowed", "allowed", "limited", "limited"]);
});

Deno.test("rate limits: a failed store is asked, counted and logged once per request and route", async () => {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://10.0.0.1:80"
    rate_limits:
      - { name: second, by: ip, requests: 10, period: 1s }
      - { name: daily, by: route, requests: 1000, period: 1d }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const actions: string[] = [];
  const warned: Record<string, unknown>[] = [];
  let asked = 0;
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: { send: () => Promise.resolve(new Response("ok")), close: () => Promise.resolve() },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: { ...silentLogger, warn: (_m, f) => void warned.push(f!) },
    metrics: { ...noopMetrics, rateLimit: (_route, action) => void actions.push(action) },
    rateLimits: {
      consume: () => {
        asked++;
        return Promise.reject(new Error("Cannot reach Redis: timed out after 100 ms"));
      },
    },
    random: () => 0.5,
  });
  for (let i = 0; i < 2; i++) {
    const res = await handler(new Request("http://proxy.test/x"), info);
    await res.body?.cancel();
    assert.equal(res.status, 200); // on_error: allow
  }
  // One store call per request (a stalled store's timeout is not paid once per limit), one
  // "error" per request, and one log line per 10 s for the route.
  assert.equal(asked, 2);
  assert.deepEqual(actions, ["error", "error"]);
  assert.equal(warned.length, 1);
});

Deno.test({
  name: "timeouts.total: a response body the client cancels ends the deadline's timer",
  sanitizeOps: true,
  sanitizeResources: true,
}, async () => {
  const { handler } = handlerFor(
    `health_check: { enabled: false }
routes: { "/": { type: proxy, target: "http://10.1.1.1", timeouts: { total: 20s } } }`,
    () =>
      Promise.resolve(
        new Response(
          new ReadableStream<Uint8Array>({
            start: (c) => c.enqueue(new TextEncoder().encode("partial")), // never ends
          }),
        ),
      ),
  );
  const res = await handler(new Request("http://h/x"), info);
  const reader = res.body!.getReader();
  assert.equal((await reader.read()).done, false);
  // The op sanitizer fails the test if the 20 s timer is still pending.
  await reader.cancel();
});

Deno.test("createHandler logs a client fault once per 10 s per kind, then with the count held back", async () => {
  const { config } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "http://10.1.1.1", max_request_body: 10 } }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  const snapshot = buildSnapshot(config!, { version: 1 });
  let now = 0;
  const warned: Record<string, unknown>[] = [];
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: { send: () => Promise.reject(new Error("unused")), close: () => Promise.resolve() },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000 + now, monotonic: () => now },
    logger: { ...silentLogger, warn: (_m, f) => void warned.push(f!) },
    metrics: noopMetrics,
    random: () => 0.5,
  });
  const big = () =>
    new Request("http://h/x", {
      method: "POST",
      body: "x".repeat(100),
      headers: { "content-length": "100" },
    });
  for (let i = 0; i < 5; i++) {
    const res = await handler(big(), info);
    await res.body?.cancel();
    assert.equal(res.status, 413);
    now += 1000;
  }
  assert.equal(warned.length, 1);
  now += 10_000;
  await (await handler(big(), info)).body?.cancel();
  assert.equal(warned.length, 2);
  assert.equal(warned[1].kind, "body_too_large");
  assert.equal(warned[1].suppressedSinceLast, 4);
});

Deno.test("createHandler refuses a ; or an encoded slash that moves a request off a route chosen by path_matches", async () => {
  // The route for /admin is a conditional one on "/": `/admin;x` failed its path_matches and went
  // to the open route, whose Tomcat, Jetty or Spring upstream drops ";x" and serves /admin (and
  // a Go or Spring one decodes /admin%2Fy to /admin/y): past the admin route's auth.
  const { handler } = handlerFor(
    `routes:
  /: { type: respond, body: "open" }
  "/#admin": { type: respond, status: 403, match: { path_matches: "^/admin(/|$)" } }
  "/#legacy": { type: respond, status: 202, match: { path_matches: ";jsessionid=" } }
  /secret: { type: respond, status: 401 }
`,
    () => Promise.reject(new Error("unused")),
  );
  // Nor may such a route's match take a path whose segments name another route's key.
  for (
    const path of ["/admin;x", "/admin;x/y", "/admin%2Fy", "/admin%5Cy", "/secret;jsessionid=1"]
  ) {
    const res = await handler(new Request(`http://h${path}`), info);
    assert.equal(res.status, 400, path);
    await res.body?.cancel();
  }
  // Where the parameter or the escape leaves the route as it is, the request goes on.
  // A route whose match holds only with the parameter names it, as a key holding `;` does.
  for (
    const [path, status] of [
      ["/other;x", 200],
      ["/admin/y;x", 403],
      ["/x%2Fadmin", 200],
      ["/app;jsessionid=1", 202],
    ]
  ) {
    const res = await handler(new Request(`http://h${path}`), info);
    assert.equal(res.status, status, String(path));
    await res.body?.cancel();
  }
});

Deno.test("createHandler paces the answers of a route with bandwidth, and only those", async () => {
  const sent: Response[] = [];
  const { handler } = handlerFor(
    `health_check: { enabled: false }
routes:
  /paced: { type: proxy, target: "http://10.1.1.1", bandwidth: { rate: 1MiB, after: 1KiB } }
  /plain: { type: proxy, target: "http://10.1.1.1" }`,
    () => {
      const res = new Response(new Uint8Array(4096), { headers: { "content-length": "4096" } });
      sent.push(res);
      return Promise.resolve(res);
    },
  );
  const plain = await handler(new Request("http://h/plain/x"), info);
  // Without bandwidth the upstream's answer goes on as it came: no stream wrapped around it.
  assert.equal(plain, sent[0]);
  await plain.body?.cancel();
  const paced = await handler(new Request("http://h/paced/x"), info);
  assert.notEqual(paced, sent[1]);
  assert.equal(paced.headers.get("content-length"), "4096");
  assert.equal((await paced.bytes()).byteLength, 4096);
  // A HEAD has no body to pace: its answer is left as it is.
  const small = await handler(new Request("http://h/paced/x", { method: "HEAD" }), info);
  assert.equal(small, sent[2]);
});

Deno.test("an HTTP/2 request whose body came whole with its head is not made a stream to be drained when nothing read it", async () => {
  const { handler } = handlerFor(
    `routes: { "/old": { type: redirect, target: "/new" } }`,
    () => Promise.reject(new Error("no upstream here")),
  );
  const bytes = new TextEncoder().encode("a=1");
  const h2 = { ...info, protocol: "h2" as const };
  const fields = HeaderList.adopt(["host", "content-length"], ["h", "3"]);
  const whole = new WireRequest(
    "POST",
    "http://h/old",
    fields,
    () => new AbortController().signal,
    bytes,
  );
  const res = await handler(whole as unknown as Request, h2);
  assert.equal(res.status, 307);
  // Still the bytes as they came: nobody asked for a stream of them.
  assert.equal(whole[RAW_BODY], bytes);
  // A body still being uploaded is drained (read to its end) so the stream is not reset.
  let pulled = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled = true;
      c.enqueue(bytes);
      c.close();
    },
  });
  const uploading = new WireRequest(
    "POST",
    "http://h/old",
    fields,
    () => new AbortController().signal,
    null,
    stream,
  );
  await handler(uploading as unknown as Request, h2);
  await new Promise((r) => setTimeout(r, 0));
  assert.ok(pulled);
  assert.ok(stream.locked);
});
