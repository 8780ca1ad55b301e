import assert from "node:assert/strict";
import { loadConfigText } from "../../config/load.ts";
import { ProxyError } from "../../domain/errors.ts";
import { buildSnapshot } from "../snapshot.ts";
import { createHandler } from "../pipeline.ts";
import { noopMetrics, silentLogger } from "../../ports.ts";
import type { ClientInfo } from "../../ports.ts";
import type { PipelineDeps } from "../context.ts";
import { slotsInUse } from "./concurrency.ts";

/** A handler whose route limits each X-Key value to one request in progress. */
function limited(send: (n: number) => Promise<Response>) {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://10.1.1.1"
    concurrency_limit: { max: 1, by: header, header_name: X-Key }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  let n = 0;
  const deps: PipelineDeps = {
    snapshot: () => snapshot,
    upstream: { send: () => send(n++), close: () => Promise.resolve() },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: silentLogger,
    metrics: noopMetrics,
    access: () => {},
    random: () => 0.5,
  };
  return { handler: createHandler(deps), deps };
}

/** A request's ClientInfo whose delivery the test settles. */
function delivery() {
  const d = Promise.withResolvers<void>();
  d.promise.catch(() => {});
  const info: ClientInfo = {
    remoteAddr: { hostname: "192.0.2.7", port: 4000 },
    localPort: 80,
    protocol: "http/1.1",
    tls: false,
    completed: d.promise,
  };
  return { info, delivered: d.resolve, abandoned: () => d.reject(new Error("client gone")) };
}

Deno.test("slotsInUse: thousands of distinct keys leave nothing behind, whatever became of their requests", async () => {
  // Answered, or failed upstream (a ProxyError, a bug, the client gone): each key once, and the
  // client either has the answer delivered or goes away before it is.
  const outcomes = [
    () => Promise.resolve(new Response("ok")),
    () => Promise.reject(new ProxyError("connect", "refused")),
    () => Promise.reject(new TypeError("a bug")),
    () => Promise.reject(new ProxyError("client_gone", "gone")),
  ];
  const { handler, deps } = limited((n) => outcomes[n % outcomes.length]());
  const held: (() => void)[] = [];
  for (let i = 0; i < 2_000; i++) {
    const d = delivery();
    const res = await handler(
      new Request("http://h/x", { headers: { "x-key": `k${i}` } }),
      d.info,
    );
    await res.body?.cancel();
    held.push(i % 2 === 0 ? d.delivered : d.abandoned);
  }
  // Until delivered or abandoned, each answer holds its key's slot.
  assert.equal(slotsInUse(deps), 2_000);
  for (const settle of held) settle();
  await new Promise((r) => setTimeout(r, 0)); // the releases run on delivery's settling
  assert.equal(slotsInUse(deps), 0);
});

Deno.test("slotsInUse: a key's second request refused while the first is held takes no slot", async () => {
  const { handler, deps } = limited(() => Promise.resolve(new Response("ok")));
  const first = delivery();
  await (await handler(new Request("http://h/", { headers: { "x-key": "a" } }), first.info))
    .body?.cancel();
  const second = delivery();
  const refused = await handler(
    new Request("http://h/", { headers: { "x-key": "a" } }),
    second.info,
  );
  assert.equal(refused.status, 429);
  await refused.body?.cancel();
  second.abandoned();
  first.abandoned();
  await new Promise((r) => setTimeout(r, 0)); // the releases run on delivery's settling
  assert.equal(slotsInUse(deps), 0);
});
