import assert from "node:assert/strict";
import { startSupervisor } from "./workers.ts";
import { SOCKET_ENV, WORKER_ENV } from "./worker_link.ts";
import type { Logger } from "../ports.ts";
import { silentLogger } from "../ports.ts";

// A worker whose event loop never lets it drain: it reports ready, then ignores its stdin (where
// drains arrive) and SIGTERM.
const STUCK_WORKER = `
const conn = await Deno.connect({ transport: "unix", path: Deno.env.get("${SOCKET_ENV}") });
const msg = { type: "ready", worker: Number(Deno.env.get("${WORKER_ENV}")), pid: Deno.pid };
await conn.write(new TextEncoder().encode(JSON.stringify(msg) + "\\n"));
Deno.addSignalListener("SIGTERM", () => {});
setInterval(() => {}, 1000);
`;

Deno.test("supervisor: a worker still running past the drain deadline is killed and the exit code is 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-stuck-worker-" });
  const script = `${dir}/stuck.ts`;
  await Deno.writeTextFile(script, STUCK_WORKER);
  const errors: string[] = [];
  const logger: Logger = { ...silentLogger, error: (m) => void errors.push(m) };
  const sup = startSupervisor(1, {
    logger,
    command: { cmd: Deno.execPath(), args: ["run", "-A", script] },
    drainDeadlineMs: 300,
  });
  try {
    await sup.ready;
    const [pid] = sup.pids();
    await sup.shutdown({ reason: "test" });
    assert.equal(sup.exitCode, 1);
    assert.deepEqual(errors, ["Workers still running past the drain deadline: killing them"]);
    assert.throws(() => Deno.kill(pid, "SIGCONT"), "the stuck worker is gone");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
