// `workers: N` end to end: real `prox serve` processes (a supervisor and its workers) on a
// shared port, real HTTP clients, real signals.

import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { freePort, spawnProx } from "./_cli_process.ts";
import type { ProxProcess } from "./_cli_process.ts";
import { DEBUG_HEADER_ENV } from "../../src/adapters/worker_link.ts";

async function fixture(opts: { workers?: number; admin?: number; port?: number } = {}) {
  const dir = await Deno.makeTempDir({ prefix: "prox-workers-test-" });
  for (const name of ["a", "b"]) {
    await Deno.mkdir(`${dir}/${name}`);
    await Deno.writeTextFile(`${dir}/${name}/index.html`, `site ${name}\n`);
  }
  const port = opts.port ?? freePort();
  const write = (site: string) =>
    Deno.writeTextFile(
      `${dir}/config.yaml`,
      [
        `listen_addr: "127.0.0.1:${port}"`,
        `workers: ${opts.workers ?? 2}`,
        "shutdown_timeout: 5s",
        "health_check:\n  enabled: false",
        ...(opts.admin ? [`admin:\n  listen_addr: "127.0.0.1:${opts.admin}"`] : []),
        `routes:\n  "/":\n    type: static\n    root: ${JSON.stringify(`${dir}/${site}`)}`,
        "",
      ].join("\n"),
    );
  await write("a");
  return {
    dir,
    port,
    url: `http://127.0.0.1:${port}/`,
    write,
    // Declared before the processes, so removed after they stopped.
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Starts `prox serve` with the worker debug header on (inherited by the workers). */
function serve(args: string[]): ProxProcess {
  Deno.env.set(DEBUG_HEADER_ENV, "1");
  try {
    return spawnProx(["serve", ...args]);
  } finally {
    Deno.env.delete(DEBUG_HEADER_ENV);
  }
}

/** One request on a fresh connection: which worker answered, and the body. */
async function hit(url: string): Promise<{ worker: string; body: string; status: number }> {
  const client = Deno.createHttpClient({});
  try {
    const res = await fetch(url, { client });
    const body = await res.text();
    return { worker: res.headers.get("x-prox-worker") ?? "none", body, status: res.status };
  } finally {
    client.close();
  }
}

/** Requests on fresh connections until every worker in `want` answered with `body`. */
async function seenWorkers(url: string, want: string[], body: string): Promise<Set<string>> {
  const seen = new Set<string>();
  await waitFor(async () => {
    const r = await hit(url);
    assert.equal(r.status, 200);
    if (r.body === body) seen.add(r.worker);
    return want.every((w) => seen.has(w));
  }, { what: `answers "${body.trim()}" from workers ${want}`, intervalMs: 1 });
  return seen;
}

/** True while `pid` runs (a zombie awaiting its reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function workerPids(p: ProxProcess): number[] {
  const line = p.output().split("\n").find((l) => l.includes("Prox listening with workers"));
  return line ? JSON.parse(line).pids : [];
}

/**
 * The admin listener's address once the workers are up. Worker 0's admin listener starts after
 * its main one, and its log line may reach the output after the supervisor's "listening" line.
 */
async function adminOf(p: ProxProcess): Promise<string> {
  await p.waitForOutput((o) =>
    o.includes("Prox listening with workers") && o.includes('"Admin listening"')
  );
  return p.output().match(/"Admin listening","addr":"([^"]+)"/)![1];
}

Deno.test("workers: 2 serves from both workers; SIGHUP reloads every worker; SIGTERM drains all and exits 0", async () => {
  await using f = await fixture();
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  await p.waitForOutput("Prox listening with workers");
  const pids = workerPids(p);
  assert.equal(pids.length, 2);
  assert.notEqual(pids[0], pids[1]);
  assert.notEqual(pids[0], p.pid);
  await seenWorkers(f.url, ["0", "1"], "site a\n");

  await f.write("b");
  p.signal("SIGHUP");
  await p.waitForOutput((o) => o.split("Config reloaded").length - 1 === 2);
  // Every worker now serves the new config, and none the old one.
  const after = await Promise.all(Array.from({ length: 30 }, () => hit(f.url)));
  assert.deepEqual(new Set(after.map((r) => r.body)), new Set(["site b\n"]));
  await seenWorkers(f.url, ["0", "1"], "site b\n");

  p.signal("SIGTERM");
  const status = await p.status;
  assert.equal(status.code, 0, p.output());
  assert.equal(p.output().split('"msg":"Stopped"').length - 1, 3, "two workers + supervisor");
  for (const pid of pids) assert.throws(() => Deno.kill(pid, "SIGCONT"), "worker still alive");
});

Deno.test("workers: a killed worker is restarted and serves again; --workers overrides the config", async () => {
  await using f = await fixture({ workers: 1 });
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--workers", "2"]);
  await p.waitForOutput("Prox listening with workers");
  const [, victim] = workerPids(p);
  Deno.kill(victim, "SIGKILL");
  await p.waitForOutput("Worker exited unexpectedly; restarting it");
  await p.waitForOutput("Worker restarted");
  const line = p.output().split("\n").find((l) => l.includes("Worker restarted"))!;
  const { worker, pid } = JSON.parse(line);
  assert.equal(worker, 1);
  assert.notEqual(pid, victim);
  await seenWorkers(f.url, ["0", "1"], "site a\n");
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a worker restarted while the file is invalid starts from the config the others run", async () => {
  await using f = await fixture();
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  await p.waitForOutput("Prox listening with workers");
  await f.write("b");
  p.signal("SIGHUP");
  await p.waitForOutput((o) => o.split("Config reloaded").length - 1 === 2);
  await Deno.writeTextFile(`${f.dir}/config.yaml`, "routes: [\n");
  p.signal("SIGHUP");
  // Worker 0 rejects it; the others do not even try.
  await p.waitForOutput("Worker 0 refused the reload");
  assert.equal(p.output().split("Reload rejected").length - 1, 1, p.output());
  const [, victim] = workerPids(p);
  Deno.kill(victim, "SIGKILL");
  // It used to read the invalid file, exit 1 and be restarted in a loop.
  await p.waitForOutput("Worker restarted");
  await seenWorkers(f.url, ["0", "1"], "site b\n");
  assert.ok(!p.output().includes("Cannot start worker"), p.output());
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: only worker 0 runs the admin listener; its /metrics has every worker's series; an admin reload reaches every worker", async () => {
  await using f = await fixture({ admin: freePort() });
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  const admin = await adminOf(p);
  assert.equal(p.output().split("Admin listening").length - 1, 1);
  const status = await (await fetch(`http://${admin}/status`)).json();
  assert.equal(status.prox.pid, workerPids(p)[0]);
  await seenWorkers(f.url, ["0", "1"], "site a\n");
  const metrics = await (await fetch(`http://${admin}/metrics`)).text();
  for (const w of ["0", "1"]) {
    const series = new RegExp(`^prox_requests_total\\{[^}]*worker="${w}"[^}]*\\} [1-9]`, "m");
    assert.match(metrics, series, `worker ${w}'s requests in:\n${metrics.slice(0, 2000)}`);
  }
  assert.equal(metrics.split("# TYPE prox_requests_total counter").length - 1, 1);

  await f.write("b");
  const res = await fetch(`http://${admin}/config/reload`, { method: "POST" });
  assert.equal(res.status, 200, await res.text());
  await p.waitForOutput((o) => o.split("Config reloaded").length - 1 === 2);
  await seenWorkers(f.url, ["0", "1"], "site b\n");
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: port 0 is refused with a clear message (exit 1)", async () => {
  await using f = await fixture({ port: 0 });
  await using p = serve(["-c", `${f.dir}/config.yaml`]);
  const status = await p.status;
  assert.equal(status.code, 1);
  assert.match(p.output(), /workers: 2 needs a fixed port in "127\.0\.0\.1:0"/);
});

Deno.test("workers: a TMPDIR that is missing or too long for the control sockets is named in the error (exit 1)", async () => {
  await using f = await fixture();
  const long = `${f.dir}/${"t".repeat(100)}`;
  await Deno.mkdir(long);
  const cases = [[`${f.dir}/missing`, /No such file/], [long, /longer than 107 bytes/]] as const;
  for (const [tmp, why] of cases) {
    await using p = spawnProx(["serve", "-c", `${f.dir}/config.yaml`], { env: { TMPDIR: tmp } });
    assert.equal((await p.status).code, 1, p.output());
    assert.match(p.output(), /Cannot create the workers' control sockets in "/);
    assert.match(p.output(), why);
    assert.match(p.output(), /set TMPDIR to a writable directory with a short path/);
  }
  assert.deepEqual([...Deno.readDirSync(long)], [], "the supervisor left its directory behind");
});

Deno.test("workers: a forced stop (second signal) leaves no directory in TMPDIR", async () => {
  const release = Promise.withResolvers<void>();
  let arrived = 0;
  await using up = await startUpstream(async () => {
    arrived++;
    await release.promise;
    return new Response("slow\n");
  });
  await using f = await fixture();
  try {
    const tmp = `${f.dir}/tmp`;
    await Deno.mkdir(tmp);
    await Deno.writeTextFile(
      `${f.dir}/config.yaml`,
      `listen_addr: "127.0.0.1:${f.port}"\nworkers: 2\nhealth_check:\n  enabled: false\n` +
        `routes:\n  "/":\n    type: proxy\n    target: "${up.url}"\n`,
    );
    await using p = spawnProx(["serve", "-c", `${f.dir}/config.yaml`], { env: { TMPDIR: tmp } });
    await p.waitForOutput("Prox listening with workers");
    assert.equal([...Deno.readDirSync(tmp)].length, 1, "the supervisor's directory");
    const inFlight = hit(f.url).catch(() => null);
    await waitFor(() => arrived === 1, { what: "the request at the upstream" });
    p.signal("SIGTERM");
    await p.waitForOutput("Draining workers");
    p.signal("SIGTERM");
    assert.equal((await p.status).code, 1, p.output());
    release.resolve();
    await inFlight;
    assert.deepEqual([...Deno.readDirSync(tmp)], [], "the forced stop left its sockets behind");
  } finally {
    release.resolve();
  }
});

Deno.test("workers: a worker that cannot be started again (program removed) is retried; the supervisor and the other worker stay", async () => {
  await using f = await fixture();
  // The supervisor starts workers with the program it runs: a link to deno that can be removed.
  const deno = `${f.dir}/deno`;
  const place = async () => {
    try {
      await Deno.link(Deno.realPathSync(Deno.execPath()), deno);
    } catch {
      await Deno.copyFile(Deno.execPath(), deno); // another file system
    }
  };
  await place();
  await using p = spawnProx(["serve", "-c", `${f.dir}/config.yaml`], {
    deno,
    env: { [DEBUG_HEADER_ENV]: "1" },
  });
  await p.waitForOutput("Prox listening with workers");
  const [, pid1] = workerPids(p);
  await Deno.remove(deno);
  Deno.kill(pid1, "SIGKILL");
  await p.waitForOutput("Cannot restart worker 1");
  assert.match(p.output(), /No such file or directory/);
  assert.equal((await hit(f.url)).status, 200, "worker 0 serves on");
  await place();
  await p.waitForOutput("Worker restarted");
  await seenWorkers(f.url, ["0", "1"], "site a\n");
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a takeover replaces a supervisor and all its workers", async () => {
  await using f = await fixture();
  const pidFile = `${f.dir}/prox.pid`;
  await using old = serve(["-c", `${f.dir}/config.yaml`, "--pid-file", pidFile]);
  await old.waitForOutput("Prox listening with workers");
  const oldPids = workerPids(old);
  await using next = serve(["-c", `${f.dir}/config.yaml`, "--pid-file", pidFile, "--takeover"]);
  await next.waitForOutput("Took over");
  assert.equal((await old.status).code, 0, old.output());
  assert.match(old.output(), /"reason":"takeover"/);
  for (const pid of oldPids) assert.throws(() => Deno.kill(pid, "SIGCONT"));
  assert.equal(Number((await Deno.readTextFile(pidFile)).trim()), next.pid);
  await seenWorkers(f.url, ["0", "1"], "site a\n");
  next.signal("SIGTERM");
  assert.equal((await next.status).code, 0, next.output());
});

Deno.test("workers: when the supervisor is killed, its workers drain and exit by themselves", async () => {
  await using f = await fixture();
  await using p = serve(["-c", `${f.dir}/config.yaml`]);
  await p.waitForOutput("Prox listening with workers");
  const pids = workerPids(p);
  assert.ok(pids.every(alive));
  p.signal("SIGKILL");
  await p.status;
  await waitFor(() => !pids.some(alive), { what: "orphaned workers to exit" });
});

Deno.test("workers: when the supervisor is killed (SIGKILL), the last worker to exit removes its directory (sockets, the applied config) from TMPDIR", async () => {
  await using f = await fixture();
  const tmp = `${f.dir}/tmp`;
  await Deno.mkdir(tmp);
  await using p = spawnProx(["serve", "-c", `${f.dir}/config.yaml`], { env: { TMPDIR: tmp } });
  await p.waitForOutput("Prox listening with workers");
  const pids = workerPids(p);
  assert.equal([...Deno.readDirSync(tmp)].length, 1, "the supervisor's directory");
  p.signal("SIGKILL");
  await p.status;
  await waitFor(() => !pids.some(alive), { what: "orphaned workers to exit" });
  assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name), [], "left behind");
});

Deno.test("workers: when the supervisor is killed (SIGKILL) before its workers listen, they exit and leave nothing in TMPDIR", async () => {
  await using f = await fixture();
  const tmp = `${f.dir}/tmp`;
  await Deno.mkdir(tmp);
  await using p = spawnProx(["serve", "-c", `${f.dir}/config.yaml`], { env: { TMPDIR: tmp } });
  // Spawned, and far from listening (Deno alone takes longer to load Prox).
  await waitFor(() => childrenOf(p.pid).length === 2, { what: "two workers", intervalMs: 1 });
  p.signal("SIGKILL");
  // The workers hold the output pipes: the status comes once they all exited.
  await p.status;
  assert.ok(!p.output().includes("Prox listening with workers"), "killed too late");
  assert.match(p.output(), /Cannot start worker/);
  assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name), [], "left behind");
});

Deno.test("workers: SIGTERM to the supervisor and its workers at once (systemd's KillMode=control-group) drains, not forces", async () => {
  const release = Promise.withResolvers<void>();
  let arrived = 0;
  await using up = await startUpstream(async () => {
    arrived++;
    await release.promise;
    return new Response("slow\n");
  });
  await using f = await fixture();
  await Deno.writeTextFile(
    `${f.dir}/config.yaml`,
    [
      `listen_addr: "127.0.0.1:${f.port}"`,
      "workers: 2",
      "shutdown_timeout: 10s",
      "health_check:\n  enabled: false",
      `routes:\n  "/":\n    type: proxy\n    target: "${up.url}"`,
      "",
    ].join("\n"),
  );
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  await p.waitForOutput("Prox listening with workers");
  const pids = workerPids(p);
  const failed = (err: unknown) => ({ status: 0, body: String(err), worker: "" });
  const inFlight = Array.from({ length: 4 }, () => hit(f.url).catch(failed));
  await waitFor(() => arrived === 4, { what: "4 requests at the upstream" });
  // What `systemctl stop` does by default: every process of the unit gets SIGTERM (here the
  // workers' arrive first, so the supervisor's drain reaches workers already draining).
  for (const pid of pids) Deno.kill(pid, "SIGTERM");
  await p.waitForOutput((o) => o.split('"msg":"Draining"').length - 1 === 2);
  p.signal("SIGTERM");
  await p.waitForOutput("Draining workers");
  release.resolve();
  for (const r of await Promise.all(inFlight)) {
    assert.deepEqual([r.status, r.body], [200, "slow\n"]);
  }
  assert.equal((await p.status).code, 0, p.output());
  assert.doesNotMatch(p.output(), /Second signal/);
});

/** Process ids whose parent is `ppid` (Linux /proc). */
function childrenOf(ppid: number): number[] {
  const kids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === ppid) {
        kids.push(Number(e.name));
      }
    } catch { /* gone */ }
  }
  return kids;
}

Deno.test("workers: a drain may take the shutdown_timeout the workers run, one a reload raised included", async () => {
  await using f = await fixture();
  const text = await Deno.readTextFile(`${f.dir}/config.yaml`);
  const timeout = (t: string) =>
    Deno.writeTextFile(`${f.dir}/config.yaml`, text.replace("shutdown_timeout: 5s", t));
  await timeout("shutdown_timeout: 1s");
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  await p.waitForOutput("Prox listening with workers");
  await timeout("shutdown_timeout: 40s");
  p.signal("SIGHUP");
  await p.waitForOutput((o) => o.split("Config reloaded").length - 1 === 2);
  p.signal("SIGTERM");
  await p.waitForOutput("Draining workers");
  const line = p.output().split("\n").find((l) => l.includes("Draining workers"))!;
  // The workers were killed 10 s past the start-up value (1 s), cutting what the 40 s allowed.
  assert.equal(JSON.parse(line).deadlineMs, 50_000, line);
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a reload whose config worker 0 cannot keep for the others (TMPDIR full, unwritable) is applied by none", async () => {
  await using f = await fixture();
  const tmp = `${f.dir}/tmp`;
  await Deno.mkdir(tmp);
  Deno.env.set("TMPDIR", tmp);
  let p: ProxProcess;
  try {
    p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  } finally {
    Deno.env.delete("TMPDIR");
  }
  await using _p = p;
  await p.waitForOutput("Prox listening with workers");
  const [leader] = workerPids(p);
  const [dir] = [...Deno.readDirSync(tmp)].map((e) => `${tmp}/${e.name}`);
  // Where worker 0 writes the copy before renaming it: a directory there fails the write.
  await Deno.mkdir(`${dir}/config.applied.yaml.${leader}.tmp`);
  await f.write("b");
  p.signal("SIGHUP");
  await p.waitForOutput((o) =>
    o.includes("Reload failed") || o.split("Config reloaded").length - 1 === 2
  );
  // The others reloaded the copy worker 0 kept before: it served b, they a.
  const bodies = new Map<string, string>();
  await waitFor(async () => {
    const r = await hit(f.url);
    bodies.set(r.worker, r.body);
    return bodies.size === 2;
  }, { what: "answers from both workers", intervalMs: 1 });
  assert.deepEqual(Object.fromEntries(bodies), { 0: "site a\n", 1: "site a\n" });
  assert.match(p.output(), /Cannot keep the applied config for the other workers/);
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a SIGHUP while a worker restarts does not kill it; it reloads once it listens", async () => {
  await using f = await fixture();
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  await p.waitForOutput("Prox listening with workers");
  const [, victim] = workerPids(p);
  Deno.kill(victim, "SIGKILL");
  // The replacement is spawned but still loading: it has no SIGHUP handler yet.
  const pids = workerPids(p);
  await waitFor(() => childrenOf(p.pid).some((pid) => !pids.includes(pid) && alive(pid)), {
    what: "the replacement worker",
  });
  p.signal("SIGHUP");
  await p.waitForOutput("Worker restarted");
  // The reload reaches it once it listens: both workers reloaded.
  await p.waitForOutput((o) => o.split("Config reloaded").length - 1 === 2);
  assert.doesNotMatch(p.output(), /"exit":"signal SIGHUP"/);
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a reload worker 0 refuses (its admin address is taken) is applied by no worker: all keep serving the old config", async () => {
  await using f = await fixture({ admin: freePort() });
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  await p.waitForOutput("Prox listening with workers");
  await seenWorkers(f.url, ["0", "1"], "site a\n");
  // Site b, and an admin address another program holds: only worker 0 binds it, and fails.
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const text = await Deno.readTextFile(`${f.dir}/config.yaml`);
  await Deno.writeTextFile(
    `${f.dir}/config.yaml`,
    text.replace(
      /admin:\n {2}listen_addr: "[^"]+"/,
      `admin:\n  listen_addr: "127.0.0.1:${(taken.addr as Deno.NetAddr).port}"`,
    ).replaceAll(`${f.dir}/a`, `${f.dir}/b`),
  );
  p.signal("SIGHUP");
  const followerReloaded = (o: string) =>
    o.split("\n").some((l) => l.includes('"Config reloaded"') && l.includes('"worker":1'));
  await p.waitForOutput((o) =>
    o.includes('"msg":"Reload failed') &&
    (o.includes("Worker 0 refused the reload") || followerReloaded(o))
  );
  assert.ok(!followerReloaded(p.output()), p.output());
  const after = await Promise.all(Array.from({ length: 30 }, () => hit(f.url)));
  assert.deepEqual(new Set(after.map((r) => r.body)), new Set(["site a\n"]));
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a file change reloads worker 0, and the others apply what it applied", async () => {
  await using f = await fixture();
  await using p = serve(["-c", `${f.dir}/config.yaml`]);
  await p.waitForOutput("Prox listening with workers");
  await f.write("b");
  await p.waitForOutput((o) => o.split("Config reloaded").length - 1 === 2);
  await seenWorkers(f.url, ["0", "1"], "site b\n");
  // Worker 0 alone watches the files.
  assert.equal(p.output().split("Config files changed").length - 1, 1, p.output());
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a file saved while worker 0 (which alone watches) is down is applied once it is back", async () => {
  await using f = await fixture();
  await using p = serve(["-c", `${f.dir}/config.yaml`]);
  await p.waitForOutput("Prox listening with workers");
  const [leader] = workerPids(p);
  // SIGKILL: it runs no more code, so the save below reaches no watcher of its.
  Deno.kill(leader, "SIGKILL");
  await f.write("b");
  await p.waitForOutput("Worker restarted");
  // It restarts from the config the others run, and used to take the saved file as what it
  // loaded: the save was never applied (a fix saved during a crash loop, too).
  await p.waitForOutput((o) => o.split("Config reloaded").length - 1 === 2);
  await seenWorkers(f.url, ["0", "1"], "site b\n");
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: the workers start from the config the supervisor checked, not from a file saved meanwhile", async () => {
  await using f = await fixture();
  await using p = serve(["-c", `${f.dir}/config.yaml`]);
  // Spawned, and far from reading the file (Deno alone takes longer to load Prox): each worker
  // read it for itself, so a save now gave them another config than the one checked, or one
  // per worker (a save between their reads).
  await waitFor(() => childrenOf(p.pid).length === 2, { what: "two workers", intervalMs: 1 });
  await Deno.writeTextFile(`${f.dir}/config.yaml`, "routes: [\n");
  await p.waitForOutput((o) => o.includes("Prox listening with workers") || o.includes("Cannot"));
  assert.match(p.output(), /Prox listening with workers/);
  // Worker 0 then finds the file changed, as a save made after the start.
  await p.waitForOutput("Reload rejected");
  await seenWorkers(f.url, ["0", "1"], "site a\n");
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a SIGHUP while worker 0 (which reloads first) waits to be restarted reaches every worker", async () => {
  await using f = await fixture();
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  await p.waitForOutput("Prox listening with workers");
  await f.write("b");
  const [leader] = workerPids(p);
  Deno.kill(leader, "SIGKILL");
  // Its slot has no process now: the restart waits 100 ms.
  await p.waitForOutput("Worker exited unexpectedly; restarting it");
  p.signal("SIGHUP");
  await p.waitForOutput("Worker restarted");
  await seenWorkers(f.url, ["0", "1"], "site b\n");
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a cache purge through worker 0's admin API empties every worker's cache", async () => {
  let upstreamHits = 0;
  await using up = await startUpstream(() => {
    upstreamHits++;
    return new Response("cached", {
      headers: { "cache-control": "max-age=300", "surrogate-key": "page" },
    });
  });
  const dir = await Deno.makeTempDir({ prefix: "prox-workers-test-" });
  try {
    const port = freePort();
    const admin = freePort();
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      [
        `listen_addr: "127.0.0.1:${port}"`,
        "workers: 2",
        "shutdown_timeout: 5s",
        "health_check:\n  enabled: false",
        `admin:\n  listen_addr: "127.0.0.1:${admin}"`,
        `routes:\n  "/":\n    type: proxy\n    target: "${up.url}"\n    cache: true`,
        "",
      ].join("\n"),
    );
    await using p = serve(["-c", `${dir}/config.yaml`, "--no-watch"]);
    await p.waitForOutput("Prox listening with workers");
    /** Requests on fresh connections until each worker answered once as `want` says. */
    const fromEach = async (want: RegExp) => {
      const seen = new Set<string>();
      await waitFor(async () => {
        const client = Deno.createHttpClient({});
        try {
          const res = await fetch(`http://127.0.0.1:${port}/page`, { client });
          assert.equal(await res.text(), "cached");
          assert.equal(res.headers.get("surrogate-key"), null);
          if (want.test(res.headers.get("cache-status") ?? "")) {
            seen.add(res.headers.get("x-prox-worker")!);
          }
        } finally {
          client.close();
        }
        return seen.size === 2;
      }, { what: `an answer matching ${want} from each worker`, intervalMs: 1 });
    };
    await fromEach(/^prox; hit/);
    assert.equal(upstreamHits, 2); // one miss per worker: each has its own cache
    const res = await fetch(`http://127.0.0.1:${admin}/cache/purge?route=/`, { method: "POST" });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { route: "/", purged: 1 });
    await p.waitForOutput("Cache purged as worker 0's admin API asked");
    await fromEach(/fwd=uri-miss/);
    assert.equal(upstreamHits, 4);
    // A purge by tag reaches every worker as well.
    await fromEach(/^prox; hit/);
    const tag = await fetch(`http://127.0.0.1:${admin}/cache/purge?tag=page`, { method: "POST" });
    assert.deepEqual(await tag.json(), { purged: 1 });
    await p.waitForOutput((out) => out.split("Cache purged as worker 0's admin API").length === 3);
    await fromEach(/fwd=uri-miss/);
    assert.equal(upstreamHits, 6);
    p.signal("SIGTERM");
    assert.equal((await p.status).code, 0, p.output());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("workers: a target drained through worker 0's admin API is drained in every worker, and in one restarted later", async () => {
  await using a = await startUpstream(() => new Response("a"));
  await using b = await startUpstream(() => new Response("b"));
  const dir = await Deno.makeTempDir({ prefix: "prox-workers-test-" });
  try {
    const port = freePort();
    const admin = freePort();
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      [
        `listen_addr: "127.0.0.1:${port}"`,
        "workers: 2",
        "shutdown_timeout: 5s",
        "health_check:\n  enabled: false",
        `admin:\n  listen_addr: "127.0.0.1:${admin}"`,
        `routes:\n  "/":\n    type: load_balance\n    targets: ["${a.url}", "${b.url}"]`,
        "",
      ].join("\n"),
    );
    await using p = serve(["-c", `${dir}/config.yaml`, "--no-watch"]);
    await p.waitForOutput("Prox listening with workers");
    /** What each worker answered, over fresh connections, until each answered 4 times. */
    const answers = async () => {
      const by = new Map<string, string[]>();
      await waitFor(async () => {
        const r = await hit(`http://127.0.0.1:${port}/`);
        by.set(r.worker, [...(by.get(r.worker) ?? []), r.body]);
        return by.size === 2 && [...by.values()].every((l) => l.length >= 4);
      }, { what: "four answers from each worker", intervalMs: 1 });
      // Round robin in each worker: both targets within four answers unless one is drained.
      return [...by].sort().map(([w, l]) => `${w}: ${[...new Set(l)].sort().join(" ")}`);
    };
    assert.deepEqual(await answers(), ["0: a b", "1: a b"]);
    const res = await fetch(`http://127.0.0.1:${admin}/upstreams/drain?target=${a.url}`, {
      method: "POST",
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
    await p.waitForOutput("Target drained as worker 0's admin API asked");
    assert.deepEqual(await answers(), ["0: b", "1: b"]);
    // A worker restarted since gets it drained too.
    Deno.kill(workerPids(p)[1], "SIGKILL");
    await p.waitForOutput("Worker restarted");
    await p.waitForOutput((out) =>
      out.split("Target drained as worker 0's admin API asked").length === 3
    );
    assert.deepEqual(await answers(), ["0: b", "1: b"]);
    p.signal("SIGTERM");
    assert.equal((await p.status).code, 0, p.output());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("workers: a passive ejection in worker 1 is notified by worker 0, down then up once; a killed worker's hold ends", async () => {
  const got: Record<string, unknown>[] = [];
  const hook = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    got.push(await req.json());
    return new Response(null, { status: 204 });
  });
  // Requests to /fail get 503, which ejects the target (passive health) in the worker serving it.
  await using up = await startUpstream((req) =>
    new Response("x", { status: new URL(req.url).pathname === "/fail" ? 503 : 200 })
  );
  const dir = await Deno.makeTempDir({ prefix: "prox-workers-test-" });
  try {
    const port = freePort();
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      [
        `listen_addr: "127.0.0.1:${port}"`,
        "workers: 2",
        "shutdown_timeout: 5s",
        // Probes (of /) pass: they tell when an ejection ended (else the next request would).
        "health_check: { interval_secs: 1, timeout_secs: 1, unhealthy_threshold: 1, healthy_threshold: 1 }",
        "passive_health: { failures: 1, statuses: [503], base_ejection: 2s, panic_threshold_percent: 0 }",
        `notify: { webhook: "http://127.0.0.1:${hook.addr.port}/hook" }`,
        `routes:\n  "/":\n    type: proxy\n    target: "${up.url}"`,
        "",
      ].join("\n"),
    );
    await using p = serve(["-c", `${dir}/config.yaml`, "--no-watch"]);
    await p.waitForOutput("Prox listening with workers");
    /** A /fail answered by worker 1: a connection that worker 1 accepted, kept for the /fail. */
    const ejectInWorker1 = () =>
      waitFor(async () => {
        const client = Deno.createHttpClient({});
        try {
          const first = await fetch(`http://127.0.0.1:${port}/`, { client });
          await first.body?.cancel();
          if (first.headers.get("x-prox-worker") !== "1") return false;
          const fail = await fetch(`http://127.0.0.1:${port}/fail`, { client });
          await fail.body?.cancel();
          assert.equal(fail.headers.get("x-prox-worker"), "1");
          return true;
        } finally {
          client.close();
        }
      }, { what: "a /fail answered by worker 1", intervalMs: 1 });
    await ejectInWorker1();
    const events = () => got.map((g) => `${g.event} ${g.worker ?? "-"}`);
    await waitFor(() => got.length >= 2, { what: `backend_down and backend_up: ${events()}` });
    assert.deepEqual(events(), ["backend_down 1", "backend_up 1"]);
    assert.equal(got[0].backend, up.url);
    assert.match(String(got[0].reason), /ejected/);
    // Ejected again (for longer: 4 s), then worker 1 is killed: what it held down it holds no
    // more.
    await ejectInWorker1();
    await waitFor(() => got.length >= 3, { what: "a second backend_down" });
    Deno.kill(workerPids(p)[1], "SIGKILL");
    await waitFor(() => got.length >= 4, { what: "backend_up after worker 1 exited" });
    assert.deepEqual(events().slice(2), ["backend_down 1", "backend_up -"]);
    p.signal("SIGTERM");
    assert.equal((await p.status).code, 0, p.output());
  } finally {
    await hook.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("workers: a reload another worker refuses fails POST /config/reload, is logged as an error naming it, and that worker keeps its config", async () => {
  await using f = await fixture({ admin: freePort() });
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  const admin = await adminOf(p);
  const [, one] = workerPids(p);
  // Worker 1 stopped: it applies the reload only after what worker 0 applied names a directory
  // that is gone by then (as a deploy that removes the previous release's files would).
  Deno.kill(one, "SIGSTOP");
  let answer: Promise<Response> | undefined;
  try {
    await f.write("b");
    answer = fetch(`http://${admin}/config/reload`, { method: "POST" });
    await p.waitForOutput((o) =>
      o.split("\n").some((l) => l.includes('"Config reloaded"') && l.includes('"worker":0'))
    );
    await Deno.rename(`${f.dir}/b`, `${f.dir}/b-gone`);
  } finally {
    Deno.kill(one, "SIGCONT");
  }
  // The admin API answers once every worker did: worker 1 refused, so the reload failed.
  const res = await answer!;
  const body = await res.json();
  assert.equal(res.status, 422, JSON.stringify(body) + p.output());
  assert.equal(body.ok, false);
  assert.match(JSON.stringify(body.issues), /Worker 1 refused the reload.*Directory not found/);
  const refused = p.output().split("\n").find((l) => l.includes("Worker 1 refused the reload"));
  const line = JSON.parse(refused!);
  assert.equal(line.level, "error");
  assert.equal(line.worker, 1);
  assert.match(line.error, /Directory not found/);
  const status = await (await fetch(`http://${admin}/status`)).json();
  assert.equal(status.config.lastReload.ok, false);
  assert.match(status.config.lastReload.errors[0], /Worker 1 refused the reload.*Directory/);
  // Worker 1 still serves the config it had.
  await waitFor(async () => {
    const r = await hit(f.url);
    if (r.worker === "1") assert.equal(r.body, "site a\n");
    return r.worker === "1";
  }, { what: "an answer from worker 1", intervalMs: 1 });
  // A reload every worker applies answers 200 once they all did (SIGHUP reaches them the same way).
  await Deno.rename(`${f.dir}/b-gone`, `${f.dir}/b`);
  const again = await fetch(`http://${admin}/config/reload`, { method: "POST" });
  assert.equal(again.status, 200, await again.text());
  await seenWorkers(f.url, ["0", "1"], "site b\n");
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

Deno.test("workers: a reload another worker refuses is rolled back in every worker, and a worker restarted then starts from the config they all serve", async () => {
  await using f = await fixture({ admin: freePort() });
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  const admin = await adminOf(p);
  const [, one] = workerPids(p);
  // As above: worker 1 reads what worker 0 applied only after the directory it names is gone.
  Deno.kill(one, "SIGSTOP");
  let answer: Promise<Response> | undefined;
  try {
    await f.write("b");
    answer = fetch(`http://${admin}/config/reload`, { method: "POST" });
    await p.waitForOutput((o) =>
      o.split("\n").some((l) => l.includes('"Config reloaded"') && l.includes('"worker":0'))
    );
    await Deno.rename(`${f.dir}/b`, `${f.dir}/b-gone`);
  } finally {
    Deno.kill(one, "SIGCONT");
  }
  const res = await answer!;
  const body = await res.json();
  assert.equal(res.status, 422, JSON.stringify(body) + p.output());
  assert.match(JSON.stringify(body.issues), /Worker 1 refused the reload/);
  assert.match(JSON.stringify(body.issues), /every worker went back to the previous config/);
  // All or nothing: worker 0 serves the config it had too (it used to serve b, worker 1 a).
  await Deno.rename(`${f.dir}/b-gone`, `${f.dir}/b`);
  await seenWorkers(f.url, ["0", "1"], "site a\n");
  const metrics = await (await fetch(`http://${admin}/metrics`)).text();
  assert.match(metrics, /^prox_config_reload_rollbacks_total\{[^}]*worker="0"[^}]*\} 1$/m);
  // The config kept for restarts is the one they serve: a worker restarted now serves a, not b.
  Deno.kill(one, "SIGKILL");
  await p.waitForOutput("Worker restarted");
  await seenWorkers(f.url, ["0", "1"], "site a\n");
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});

/** One HTTPS request on a fresh connection: which worker answered, and its Alt-Svc. */
async function altSvcOf(
  url: string,
  ca: string,
): Promise<{ worker: string; altSvc: string | null }> {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const res = await fetch(url, { client });
    await res.body?.cancel();
    return {
      worker: res.headers.get("x-prox-worker") ?? "none",
      altSvc: res.headers.get("alt-svc"),
    };
  } finally {
    client.close();
  }
}

Deno.test("workers: Alt-Svc is advertised by no worker while worker 0 cannot bind HTTP/3's UDP port, by every worker once it can", async () => {
  await using f = await fixture();
  const tls = new URL("../fixtures/tls", import.meta.url).pathname;
  const ca = await Deno.readTextFile(`${tls}/ca.pem`);
  const text = await Deno.readTextFile(`${f.dir}/config.yaml`);
  await Deno.writeTextFile(
    `${f.dir}/config.yaml`,
    text.replace(
      "routes:",
      `tls:\n  cert_path: "${tls}/cert.pem"\n  key_path: "${tls}/key.pem"\n` +
        "protocols:\n  http3_enabled: true\nroutes:",
    ),
  );
  const url = `https://localhost:${f.port}/`;
  // Another program holds the UDP port: worker 0 (which alone runs HTTP/3) cannot bind it.
  const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: f.port });
  let held = true;
  try {
    await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
    await p.waitForOutput("Prox listening with workers");
    // Fresh connections until both workers answered: neither may advertise HTTP/3.
    const seen = new Map<string, string | null>();
    await waitFor(async () => {
      const r = await altSvcOf(url, ca);
      seen.set(r.worker, r.altSvc);
      return seen.size === 2;
    }, { what: "answers from both workers", intervalMs: 1 });
    assert.deepEqual(Object.fromEntries(seen), { 0: null, 1: null });
    // The port is free again: worker 0's retry binds it, and then every worker advertises it.
    udp.close();
    held = false;
    const want = `h3=":${f.port}"; ma=86400`;
    const advertised = new Set<string>();
    await waitFor(async () => {
      const r = await altSvcOf(url, ca);
      if (r.altSvc === want) advertised.add(r.worker);
      return advertised.size === 2;
    }, { what: "Alt-Svc from both workers", intervalMs: 1, timeoutMs: 15_000 });
    p.signal("SIGTERM");
    assert.equal((await p.status).code, 0, p.output());
  } finally {
    if (held) udp.close();
  }
});

Deno.test("workers: POST /config/reload says every worker went back from a refused reload only once each did", async () => {
  await using f = await fixture({ admin: freePort(), workers: 3 });
  await using p = serve(["-c", `${f.dir}/config.yaml`, "--no-watch"]);
  const admin = await adminOf(p);
  const [, one, two] = workerPids(p);
  // Worker 1 refuses (as above); worker 2 applies the reload, and is stopped before the rollback
  // reaches it.
  Deno.kill(one, "SIGSTOP");
  let answered = false;
  let answer: Promise<Response> | undefined;
  try {
    await f.write("b");
    answer = fetch(`http://${admin}/config/reload`, { method: "POST" });
    void answer.then(() => answered = true, () => {});
    await p.waitForOutput((o) =>
      o.split("\n").filter((l) => l.includes('"Config reloaded"')).length === 2
    );
    await Deno.rename(`${f.dir}/b`, `${f.dir}/b-gone`);
    Deno.kill(two, "SIGSTOP");
    Deno.kill(one, "SIGCONT");
    // Worker 0 went back (its history has the rollback) while worker 2 still serves site b:
    // the answer used to come then, saying that every worker went back.
    await waitFor(async () => {
      const history = await (await fetch(`http://${admin}/config/history`)).json();
      return history.some((r: { trigger?: string }) => r.trigger === "rollback");
    }, { what: "worker 0's rollback" });
    assert.equal(answered, false, "answered before worker 2 went back");
  } finally {
    Deno.kill(one, "SIGCONT");
    Deno.kill(two, "SIGCONT");
  }
  const res = await answer;
  const body = JSON.stringify(await res.json());
  assert.equal(res.status, 422, body + p.output());
  assert.match(body, /Worker 1 refused the reload.*every worker went back to the previous config/);
  // So worker 2's very next answers are site a's.
  for (let seen = false; !seen;) {
    const r = await hit(f.url);
    if (r.worker === "2") assert.deepEqual([r.status, r.body], [200, "site a\n"], p.output());
    seen = r.worker === "2";
  }
  p.signal("SIGTERM");
  assert.equal((await p.status).code, 0, p.output());
});
