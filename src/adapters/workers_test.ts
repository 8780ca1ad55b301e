import assert from "node:assert/strict";
import { startSupervisor } from "./workers.ts";
import { parseCommand, SOCKET_ENV, WORKER_ENV } from "./worker_link.ts";
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

/** True while `pid` runs (a zombie awaiting its reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

Deno.test("supervisor: a worker that stops responding (SIGSTOP: its event loop never runs) is killed and restarted; a live one is left alone", async () => {
  const { freePort, ROOT, waitFor } = await import("../../tests/_harness.ts");
  const dir = await Deno.makeTempDir({ prefix: "prox-hung-worker-" });
  const port = freePort();
  await Deno.writeTextFile(`${dir}/index.html`, "hello\n");
  await Deno.writeTextFile(
    `${dir}/config.yaml`,
    `listen_addr: "127.0.0.1:${port}"\nworkers: 2\nshutdown_timeout: 2s\n` +
      `health_check:\n  enabled: false\nlog:\n  level: error\n` +
      `routes:\n  "/":\n    type: static\n    root: ${JSON.stringify(dir)}\n`,
  );
  const errors: { msg: string; fields?: Record<string, unknown> }[] = [];
  const logger: Logger = {
    ...silentLogger,
    error: (msg, fields) => void errors.push({ msg, fields }),
  };
  const sup = startSupervisor(2, {
    logger,
    command: {
      cmd: Deno.execPath(),
      args: [
        "run",
        "-A",
        "--config",
        `${ROOT}/deno.json`,
        `${ROOT}/mod.ts`,
        "serve",
        "-c",
        `${dir}/config.yaml`,
        "--no-watch",
      ],
    },
    hangMs: 3000,
    drainDeadlineMs: 5000,
  });
  try {
    await sup.ready;
    const [live, hung] = sup.pids();
    Deno.kill(hung, "SIGSTOP");
    await waitFor(() => !alive(hung), { what: "the hung worker to be killed", timeoutMs: 15_000 });
    const restarted = await waitFor(() => {
      const pid = sup.pids()[1];
      return pid !== 0 && pid !== hung ? pid : 0;
    }, { what: "worker 1 to be restarted", timeoutMs: 15_000 });
    assert.ok(alive(restarted));
    assert.equal(sup.pids()[0], live, "the worker that answers is not killed");
    assert.equal(errors[0]?.msg, "Worker stopped responding: killing it", JSON.stringify(errors));
    assert.equal(errors[0]?.fields?.worker, 1);
    const res = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(await res.text(), "hello\n");
  } finally {
    await sup.shutdown({ reason: "test" });
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(sup.exitCode, 0);
});

Deno.test("supervisor: a worker that never reports listening is killed after startMs: the start fails instead of waiting for ever", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-mute-worker-" });
  const script = `${dir}/mute.ts`;
  await Deno.writeTextFile(script, "setInterval(() => {}, 1000);\n");
  const errors: string[] = [];
  const logger: Logger = { ...silentLogger, error: (m) => void errors.push(m) };
  const sup = startSupervisor(1, {
    logger,
    command: { cmd: Deno.execPath(), args: ["run", "-A", script] },
    startMs: 500,
  });
  try {
    const [pid] = sup.pids();
    await assert.rejects(sup.ready, /worker 0 exited with signal SIGKILL before listening/);
    await sup.shutdown({ reason: "test" });
    assert.equal(errors[0], "Worker did not start listening in time: killing it");
    assert.throws(() => Deno.kill(pid, "SIGCONT"), "the mute worker is gone");
    assert.equal(sup.exitCode, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// A worker that reports listening and then beats every BEAT_MS (a real one: every second).
const BEATING_WORKER = `
const conn = await Deno.connect({ transport: "unix", path: Deno.env.get("${SOCKET_ENV}") });
const worker = Number(Deno.env.get("${WORKER_ENV}"));
const send = (type) =>
  conn.write(new TextEncoder().encode(JSON.stringify({ type, worker, pid: Deno.pid }) + "\\n"));
await send("ready");
setInterval(() => void send("alive").catch(() => {}), Number(Deno.env.get("BEAT_MS")));
// A drain (any line), or the supervisor gone: exit.
for await (const _ of Deno.stdin.readable) break;
Deno.exit(0);
`;

/** Starts 2 workers beating every `beatMs` under a supervisor whose watchdog waits `hangMs`. */
async function beatingWorkers(beatMs: number, hangMs: number) {
  const dir = await Deno.makeTempDir({ prefix: "prox-beating-worker-" });
  const script = `${dir}/beating.ts`;
  await Deno.writeTextFile(script, BEATING_WORKER);
  const errors: string[] = [];
  const logger: Logger = { ...silentLogger, error: (m) => void errors.push(m) };
  Deno.env.set("BEAT_MS", String(beatMs)); // inherited by the workers
  const sup = startSupervisor(2, {
    logger,
    command: { cmd: Deno.execPath(), args: ["run", "-A", script] },
    hangMs,
  });
  Deno.env.delete("BEAT_MS");
  await sup.ready;
  return {
    sup,
    errors,
    async [Symbol.asyncDispose]() {
      await sup.shutdown({ reason: "test" });
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Waits `ms` of the event loop (several watchdog periods: what must not happen has had time). */
const periods = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("supervisor: a wall clock stepped forward (NTP, a VM resumed) does not make live workers look silent", async () => {
  // Beats far apart: the watchdog (every second) looks before the next one arrives.
  await using w = await beatingWorkers(5000, 10_000);
  const pids = w.sup.pids();
  const realNow = Date.now;
  Date.now = () => realNow() + 60_000;
  try {
    await periods(1500);
  } finally {
    Date.now = realNow;
  }
  assert.deepEqual(w.errors, []);
  assert.deepEqual(w.sup.pids(), pids);
});

Deno.test("supervisor: after the supervisor itself did not run for a while (SIGSTOP, a frozen cgroup) live workers are not killed", async () => {
  await using w = await beatingWorkers(100, 1000);
  const pids = w.sup.pids();
  // Blocks this process (the supervisor) for twice hangMs; the workers beat on meanwhile.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2000);
  await periods(1500);
  assert.deepEqual(w.errors, []);
  assert.deepEqual(w.sup.pids(), pids);
});

// A worker that reports listening and applies reloads as its index says: worker 0 applies the
// SIGHUP's (as its config version 7), the others refuse the supervisor's `reload` lines. What
// the supervisor writes to its stdin goes to a file.
const RELOADING_WORKER = `
const conn = await Deno.connect({ transport: "unix", path: Deno.env.get("${SOCKET_ENV}") });
const worker = Number(Deno.env.get("${WORKER_ENV}"));
const send = (m) => conn.write(
  new TextEncoder().encode(JSON.stringify({ ...m, worker, pid: Deno.pid }) + "\\n"),
);
Deno.addSignalListener("SIGHUP", () => {
  if (worker === 0) void send({ type: "reload", trigger: "SIGHUP", ok: true, version: 7 });
});
await send({ type: "ready" });
const out = await Deno.open(Deno.env.get("STDIN_LOG") + worker, { write: true, create: true });
for await (const chunk of Deno.stdin.readable) {
  await out.write(chunk);
  const line = new TextDecoder().decode(chunk);
  if (line.startsWith("drain")) break;
  if (line.startsWith("reload ")) {
    const { round, trigger } = JSON.parse(line.slice(7));
    void send({ type: "reload", trigger, round, ok: false, error: "config.yaml:1:1: error: boom" });
  }
}
Deno.exit(0);
`;

Deno.test("supervisor: a reload another worker refuses is logged as an error naming it and its error, and told to worker 0 with the round", async () => {
  const { waitFor } = await import("../../tests/_harness.ts");
  const dir = await Deno.makeTempDir({ prefix: "prox-refusing-worker-" });
  const script = `${dir}/reloading.ts`;
  await Deno.writeTextFile(script, RELOADING_WORKER);
  const errors: { msg: string; fields?: Record<string, unknown> }[] = [];
  const logger: Logger = {
    ...silentLogger,
    error: (msg, fields) => void errors.push({ msg, fields }),
  };
  Deno.env.set("STDIN_LOG", `${dir}/stdin-`); // inherited by the workers
  const sup = startSupervisor(3, {
    logger,
    command: { cmd: Deno.execPath(), args: ["run", "-A", script] },
  });
  Deno.env.delete("STDIN_LOG");
  try {
    await sup.ready;
    await sup.reload({ trigger: "SIGHUP" });
    // Worker 0 is told of each refusal, then that every other worker answered round 7.
    const told = await waitFor(async () => {
      const text = await Deno.readTextFile(`${dir}/stdin-0`).catch(() => "");
      const both = text.split("reload-failed").length === 3;
      return both && /reloaded.*\n$/.test(text) ? text : null;
    }, { what: "worker 0 told the round's outcome" });
    const lines = told.trim().split("\n").map(parseCommand);
    // Once, after the refusals: worker 0's admin API answers then.
    assert.equal(lines.findIndex((c) => c?.type === "reloaded"), lines.length - 1, told);
    const refusals = lines.filter((c) => c?.type === "reload-failed");
    assert.deepEqual(
      refusals.map((c) => c?.type === "reload-failed" && c.worker).sort(),
      [1, 2],
    );
    assert.deepEqual(refusals[0], {
      type: "reload-failed",
      worker: (refusals[0] as { worker: number }).worker,
      trigger: "SIGHUP",
      error: "config.yaml:1:1: error: boom",
      round: 7,
    });
    assert.deepEqual(lines.at(-1), { type: "reloaded", round: 7 });
    // And the supervisor's own log names each worker and its error.
    const refused = errors.filter((e) => /^Worker \d refused the reload/.test(e.msg));
    assert.deepEqual(refused.map((e) => e.fields?.worker).sort(), [1, 2]);
    assert.equal(refused[0].fields?.error, "config.yaml:1:1: error: boom");
  } finally {
    await sup.shutdown({ reason: "test" });
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(sup.exitCode, 0);
});
