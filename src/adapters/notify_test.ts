import assert from "node:assert/strict";
import { createNotifier, notifyingMetrics, reportingHealth } from "./notify.ts";
import type { Notifier } from "./notify.ts";
import { noopMetrics, silentLogger } from "../ports.ts";

function recorder() {
  const sent: { event: string; fields: Record<string, unknown> }[] = [];
  const n = { send: (event, _text, fields) => void sent.push({ event, fields }) } as Notifier;
  return { n, sent, events: () => sent.map((s) => `${s.event} ${s.fields.backend}`) };
}

const A = "http://10.0.0.5:8080";
const B = "http://10.0.0.6:8080";

Deno.test("notify with workers: a target is down while any worker holds it down, up once none does", () => {
  const r = recorder();
  const m = notifyingMetrics(noopMetrics, r.n);
  m.backendHealth(A, true); // worker 0's start: no news
  m.workerHealth(1, A, false, "ejected after 1 failure(s)");
  assert.deepEqual(r.events(), [`backend_down ${A}`]);
  assert.equal(r.sent[0].fields.worker, 1);
  m.backendHealth(A, false, "3 failed probe(s)"); // worker 0 too: already told
  m.workerHealth(2, A, false, "ejected");
  m.workerHealth(1, A, true, "ejection ended");
  m.backendHealth(A, true, "probe passed");
  assert.equal(r.sent.length, 1); // worker 2 still holds it down
  m.workerHealth(2, A, true, "ejection ended");
  assert.deepEqual(r.events(), [`backend_down ${A}`, `backend_up ${A}`]);
  // A worker that exits holds nothing down any more.
  m.workerHealth(1, B, false, "ejected");
  m.workerHealth(1, A, false, "ejected");
  m.workerHealth(2, B, false, "ejected");
  m.workerGone(1);
  assert.deepEqual(r.events().slice(2), [
    `backend_down ${B}`,
    `backend_down ${A}`,
    `backend_up ${A}`,
  ]);
  // A target a reload removed is forgotten: a late word of it is news again, and so is its end.
  m.backendsConfigured([A]);
  m.workerGone(2); // held B, which is no longer configured: nothing to tell
  assert.equal(r.sent.length, 5);
  // A worker's first word that a target is up is no news.
  m.workerHealth(3, B, true);
  assert.equal(r.sent.length, 5);
});

Deno.test("reportingHealth tells changes only, and an end for a target held down that a reload removed", () => {
  const told: string[] = [];
  const m = reportingHealth(noopMetrics, (b, up, why) => told.push(`${b} ${up} ${why}`));
  m.backendHealth(A, true, "start");
  m.backendHealth(A, true, "probe");
  m.backendHealth(B, false, "ejected");
  m.backendHealth(B, false, "still");
  m.backendHealth(A, false, "probe failed");
  m.backendsConfigured([A]);
  assert.deepEqual(told, [
    `${B} false ejected`,
    `${A} false probe failed`,
    `${B} true no longer configured`,
  ]);
});

Deno.test("createNotifier says why a delivery failed, without the webhook's secret path or query", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const warned: unknown[] = [];
  const n = createNotifier({
    config: () => ({
      webhook: `http://127.0.0.1:${port}/services/T000/S3CRETPATH?token=S3CRETQUERY`,
      timeout: 2_000,
    }),
    logger: { ...silentLogger, warn: (m, f) => void warned.push([m, f]) },
    instance: "test",
  });
  n.send("reload", "prox test: reloaded", {});
  await n.settled(); // the delivery, its one retry a second later, and the warning
  n.close();
  const text = JSON.stringify(warned);
  assert.match(text, /Notification not delivered/);
  assert.match(text, /refused/i, text);
  assert.doesNotMatch(text, /S3CRET/, text);
});
