import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { ProxyError } from "../domain/errors.ts";
import { buildSnapshot } from "./snapshot.ts";
import { createHandler } from "./pipeline.ts";
import { MirrorTraffic } from "./mirror.ts";
import { REPLAY_CAP } from "./body_replay.ts";
import { noopMetrics, silentLogger } from "../ports.ts";
import type { ClientInfo, MirrorResult, UpstreamRequest } from "../ports.ts";

const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

/** Requests seen by a fake upstream client, with the body each carried. */
interface Seen {
  origin: string;
  target: string;
  method: string;
  headers: Map<string, string>;
  body: string | null;
  tls?: UpstreamRequest["tls"];
  protocol?: UpstreamRequest["protocol"];
}

async function bodyText(body: UpstreamRequest["body"]): Promise<string | null> {
  if (body === null) return null;
  if (body instanceof Uint8Array) return new TextDecoder().decode(body);
  return await new Response(body).text();
}

function setup(
  route: string,
  o: { random?: () => number; primary?: (req: UpstreamRequest) => Promise<Response> } = {},
) {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"\nhealth_check: { enabled: false }\nroutes:\n  "/api":\n${route}`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const seen: Seen[] = [];
  const results: MirrorResult[] = [];
  const mirrors = new MirrorTraffic();
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: {
      async send(req) {
        const s: Seen = {
          origin: req.origin.origin,
          target: req.target,
          method: req.method,
          headers: new Map(req.headers),
          body: null,
          tls: req.tls,
          protocol: req.protocol,
        };
        if (req.origin.hostname === "primary" && o.primary) return o.primary(req);
        s.body = await bodyText(req.body);
        seen.push(s);
        return new Response(`from ${req.origin.hostname}`);
      },
      close: () => Promise.resolve(),
    },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: silentLogger,
    metrics: { ...noopMetrics, mirror: (_route, r) => void results.push(r) },
    random: o.random ?? (() => 0.5),
    mirrors,
  });
  const shadow = () => seen.filter((s) => s.origin === "http://shadow");
  return { handler, seen, shadow, results, mirrors };
}

const settled = () => new Promise((r) => setTimeout(r, 0));

Deno.test("mirror copies a sampled request as it goes upstream, with the mirror's Host", async () => {
  const t = setup(`    type: proxy
    target: "http://primary"
    path_rewrite: /v2
    request_headers: { set: { X-Team: blue } }
    mirror: { target: "http://shadow" }`);
  const res = await t.handler(
    new Request("http://example.com/api/items?q=1", {
      method: "PUT",
      body: "hello",
      headers: { "content-type": "text/plain", cookie: "a=1" },
    }),
    info,
  );
  assert.equal(await res.text(), "from primary");
  await settled();
  const [primary] = t.seen.filter((s) => s.origin === "http://primary");
  const [copy] = t.shadow();
  assert.equal(copy.method, "PUT");
  assert.equal(copy.target, "/v2/items?q=1");
  assert.equal(copy.body, "hello");
  assert.equal(copy.headers.get("host"), "shadow");
  assert.equal(primary.headers.get("host"), "primary");
  for (const h of ["x-team", "x-request-id", "x-forwarded-for", "cookie", "content-type"]) {
    assert.equal(copy.headers.get(h), primary.headers.get(h), h);
  }
  assert.deepEqual(t.results, ["mirrored"]);
  assert.equal(t.mirrors.slots.routes, 0, "the slot is given back");
});

Deno.test("mirror samples with the injected random draw: percent 30 skips 0.3, 31 takes it", async () => {
  for (const [percent, copies] of [[30, 0], [31, 1], [0, 0], [100, 1]]) {
    const t = setup(
      `    type: proxy\n    target: "http://primary"\n` +
        `    mirror: { target: "http://shadow", percent: ${percent} }`,
      { random: () => 0.3 },
    );
    await (await t.handler(new Request("http://h/api"), info)).body?.cancel();
    await settled();
    assert.equal(t.shadow().length, copies, `percent ${percent}`);
  }
});

Deno.test("mirror sends each target a copy; preserve_host keeps the client's Host; body: false sends none", async () => {
  const t = setup(`    type: load_balance
    targets: ["http://primary"]
    mirror:
      target: ["http://shadow", "http://shadow2"]
      preserve_host: true
      body: false`);
  await (await t.handler(
    new Request("http://example.com/api", { method: "POST", body: "x" }),
    info,
  ))
    .body?.cancel();
  await settled();
  const copies = t.seen.filter((s) => s.origin !== "http://primary");
  assert.deepEqual(copies.map((c) => c.origin).sort(), ["http://shadow", "http://shadow2"]);
  for (const c of copies) {
    assert.equal(c.headers.get("host"), "example.com");
    assert.equal(c.body, null);
    // The POST had a body: its copy says it has none (RFC 9110 §8.6; nginx answers 411 without).
    assert.equal(c.headers.get("content-length"), "0");
  }
  assert.deepEqual(t.results, ["mirrored", "mirrored"]);
});

Deno.test("mirror drops a copy whose streamed body the failed upstream never read", async () => {
  const t = setup(
    `    type: proxy\n    target: "http://primary"\n    retries: { attempts: 0 }\n` +
      `    mirror: { target: "http://shadow", max_body: 1MiB }`,
    {
      primary: () => Promise.reject(new ProxyError("connect", "refused", { sentNothing: true })),
    },
  );
  // A chunked upload (no Content-Length) over the replay cap: what follows the cap streams,
  // copied as it passes (a smaller one is read whole before the upstream is chosen, and copied).
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array(REPLAY_CAP));
      c.enqueue(new TextEncoder().encode("abc"));
      c.close();
    },
  });
  const res = await t.handler(
    new Request("http://h/api", {
      method: "POST",
      body,
      headers: { "transfer-encoding": "chunked" },
    }),
    info,
  );
  assert.equal(res.status, 502);
  await res.body?.cancel();
  await settled();
  assert.equal(t.shadow().length, 0);
  assert.deepEqual(t.results, ["dropped_body_incomplete"]);
  assert.equal(t.mirrors.slots.routes, 0);
});

Deno.test("mirror sends the mirror's Host even when the route preserves the client's", async () => {
  const t = setup(`    type: proxy
    target: "http://primary"
    preserve_host: true
    mirror: { target: "http://shadow:8081/base" }`);
  await (await t.handler(new Request("http://example.com/api/x"), info)).body?.cancel();
  await settled();
  const [primary] = t.seen.filter((s) => s.origin === "http://primary");
  const [copy] = t.seen.filter((s) => s.origin === "http://shadow:8081");
  assert.equal(primary.headers.get("host"), "example.com");
  assert.equal(copy.headers.get("host"), "shadow:8081");
  assert.equal(copy.target, "/base/x", "a path on the mirror URL comes first, as on a target");
});

Deno.test("mirror drops a copy whose streamed body ends short of its Content-Length", async () => {
  // An HTTP/2 upload the client resets ends for Deno as if it were complete: the copy must not
  // go out as a whole (shorter) request.
  const t = setup(
    `    type: proxy\n    target: "http://primary"\n    mirror: { target: "http://shadow", max_body: 1MiB }`,
  );
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array(70_000));
      c.close();
    },
  });
  const res = await t.handler(
    new Request("http://h/api", {
      method: "POST",
      body,
      headers: { "content-length": "100000" },
    }),
    info,
  );
  await res.body?.cancel();
  await settled();
  assert.equal(t.shadow().length, 0);
  assert.deepEqual(t.results, ["dropped_body_incomplete"]);
});

Deno.test("mirror keeps the route's TLS trust for an https mirror but not its server_name", async () => {
  const t = setup(`    type: proxy
    target: "https://primary"
    tls: { insecure_skip_verify: true, server_name: primary.internal }
    mirror: { target: "https://shadow" }`);
  await (await t.handler(new Request("http://h/api"), info)).body?.cancel();
  await settled();
  const [primary] = t.seen.filter((s) => s.origin === "https://primary");
  const [copy] = t.seen.filter((s) => s.origin === "https://shadow");
  assert.equal(primary.tls?.serverName, "primary.internal");
  assert.equal(copy.tls?.insecureSkipVerify, true);
  assert.equal(copy.tls?.serverName, undefined);
});

Deno.test("mirror of an h2c route (gRPC) speaks h2c to an http mirror; h2 only to an https one", async () => {
  const t = setup(`    type: proxy
    target: "http://primary"
    upstream_protocol: h2c
    mirror: { target: ["http://shadow", "https://secure"] }`);
  const res = await t.handler(
    new Request("http://h/api/test.Echo/Echo", {
      method: "POST",
      body: new Uint8Array([0, 0, 0, 0, 1, 7]),
      headers: { "content-type": "application/grpc", te: "trailers" },
    }),
    info,
  );
  await res.body?.cancel();
  await settled();
  const [primary] = t.seen.filter((s) => s.origin === "http://primary");
  const [copy] = t.shadow();
  const [secure] = t.seen.filter((s) => s.origin === "https://secure");
  assert.equal(primary.protocol, "h2c");
  // A gRPC shadow listens with h2c as the route's targets do: HTTP/1.1 reached none of them.
  assert.equal(copy.protocol, "h2c");
  // h2c cannot go over TLS: the https mirror chooses by ALPN.
  assert.equal(secure.protocol, undefined);
  assert.deepEqual(t.results, ["mirrored", "mirrored"]);
});

Deno.test("mirror gives its slot back when the upstream answers without reading the streamed body", async () => {
  const t = setup(
    `    type: proxy\n    target: "http://primary"\n    mirror: { target: "http://shadow", max_body: 1MiB }`,
    // An answer before the upload (a 413, a gRPC error status): the body is never read.
    { primary: () => Promise.resolve(new Response("no", { status: 413 })) },
  );
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(new Uint8Array(REPLAY_CAP));
    },
  });
  let delivered = () => {};
  const completed = new Promise<void>((r) => delivered = r);
  const res = await t.handler(
    new Request("http://h/api", {
      method: "POST",
      body,
      headers: { "transfer-encoding": "chunked" },
    }),
    { ...info, protocol: "h2", completed },
  );
  assert.equal(res.status, 413);
  await res.body?.cancel();
  delivered();
  await settled();
  assert.equal(t.shadow().length, 0);
  assert.deepEqual(t.results, ["dropped_body_incomplete"]);
  assert.equal(t.mirrors.slots.routes, 0, "the slot is given back");
});
