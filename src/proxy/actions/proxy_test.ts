import assert from "node:assert/strict";
import { loadConfigText } from "../../config/load.ts";
import { buildSnapshot } from "../snapshot.ts";
import { createHandler } from "../pipeline.ts";
import { noopMetrics, silentLogger } from "../../ports.ts";
import type { ClientInfo, UpstreamRequest } from "../../ports.ts";
import { waitFor } from "../../../tests/_harness.ts";

const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "h2",
  tls: true,
};

function handlerFor(yaml: string, send: (r: UpstreamRequest) => Promise<Response>) {
  const { config, issues } = loadConfigText(`listen_addr: "127.0.0.1:0"\n${yaml}`, {
    file: "t.yaml",
    env: { exists: () => true },
  });
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  return createHandler({
    snapshot: () => snapshot,
    upstream: { send, close: () => Promise.resolve() },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: silentLogger,
    metrics: noopMetrics,
    random: () => 0.5,
  });
}

/** An upload of `chunks` × 1 MiB that records how far it was read and whether it was cancelled. */
function upload(chunks: number) {
  const state = { read: 0, cancelled: false, done: false };
  const body = new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (state.read === chunks) {
        state.done = true;
        ctl.close();
        return;
      }
      state.read++;
      ctl.enqueue(new Uint8Array(1024 * 1024));
    },
    cancel() {
      state.cancelled = true;
    },
  }, { highWaterMark: 0 });
  return { body, state };
}

const rule = (extra = "") =>
  `health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://10.1.1.1"
    ${extra}
    request_body: { set_text: "replaced" }`;

Deno.test("a replaced request body is drained to its end, not cancelled mid-upload", async () => {
  // Cancelling resets an HTTP/2 stream the client is still sending on, and the response with it.
  let sent = "";
  const handler = handlerFor(rule(), (r) => {
    sent = new TextDecoder().decode(r.body as Uint8Array);
    return Promise.resolve(new Response("ok"));
  });
  const { body, state } = upload(4);
  const res = await handler(new Request("http://h/up", { method: "POST", body }), info);
  assert.equal(await res.text(), "ok");
  assert.equal(sent, "replaced");
  await waitFor(() => state.done, { what: "the whole upload read" });
  assert.equal(state.cancelled, false);
});

Deno.test("a replaced request body over max_request_body gets 413, read only up to the limit", async () => {
  let sent = 0;
  const handler = handlerFor(
    rule("max_request_body: 2MiB"),
    () => Promise.resolve(new Response(`ok ${++sent}`)),
  );
  const { body, state } = upload(8);
  const res = await handler(new Request("http://h/up", { method: "POST", body }), info);
  assert.equal(res.status, 413);
  await res.body?.cancel();
  assert.equal(sent, 0);
  await waitFor(() => state.cancelled, { what: "the upload cancelled past the limit" });
  assert.ok(state.read <= 4, `read ${state.read} MiB`);
});

Deno.test("a request body rule's condition sees the Host a header rule set, else the authority", async () => {
  const yaml = (set: string) =>
    `health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://10.1.1.1"
    request_headers: { set: { ${set} } }
    request_body:
      condition: { has_header: { name: Host, value_matches: "^backend\\\\." } }
      set_text: "replaced"`;
  for (
    const [set, host, want] of [
      ["Host: backend.internal", "public.example", "replaced"],
      ["X-A: b", "public.example", "sent"],
      // The Host field beside an absolute-form target is not the authority (RFC 9112 §3.2.2).
      ["X-A: b", "backend.example", "sent"],
    ]
  ) {
    let sent = "";
    const handler = handlerFor(yaml(set), (r) => {
      sent = new TextDecoder().decode(r.body as Uint8Array);
      return Promise.resolve(new Response("ok"));
    });
    const req = new Request("http://public.example/up", {
      method: "POST",
      body: "sent",
      headers: { host: host },
    });
    const res = await handler(req, { ...info, protocol: "http/1.1" });
    await res.body?.cancel();
    assert.equal(sent, want, `${set}, Host: ${host}`);
  }
});

Deno.test("a client gone before its request is forwarded under timeouts.total: the upstream request is aborted too", async () => {
  // The deadline's signal replaces the client's on the upstream request: a client that left
  // earlier (while a filter waited) must abort it as a client leaving later does.
  const seen: boolean[] = [];
  const h = handlerFor(
    `health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://10.1.1.1"
    timeouts: { total: 30s }`,
    (r) => {
      seen.push(r.signal?.aborted === true || r.clientSignal?.().aborted === true);
      return Promise.resolve(new Response("ok"));
    },
  );
  const ac = new AbortController();
  ac.abort(new Error("client went away"));
  const res = await h(new Request("http://example.com/x", { signal: ac.signal }), info);
  await res.body?.cancel();
  assert.ok(seen.every((aborted) => aborted), `upstream asked with a live signal: ${seen}`);
});
