import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { ProxyError } from "../domain/errors.ts";
import { buildSnapshot } from "./snapshot.ts";
import { createHandler } from "./pipeline.ts";
import { noopMetrics, silentLogger } from "../ports.ts";
import type { AccessRecord, ClientInfo } from "../ports.ts";

const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

function handlerFor(yaml: string, send: (r: { signal?: AbortSignal }) => Promise<Response>) {
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
        if (r.signal!.aborted) gone();
        else r.signal!.addEventListener("abort", gone);
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
