// Multi-core serving (`workers: N`, `--workers N`): the first process is a supervisor that does
// not serve. It starts N worker processes running this same program with the same arguments;
// each binds the same TCP ports with SO_REUSEPORT, so Linux spreads new connections over them.
// Worker 0 alone runs the admin listener and HTTP/3 (UDP has no SO_REUSEPORT in Deno).
//
// The supervisor forwards SIGHUP (reload) to worker 0 and, once it applied the config, to the
// others (which reload the text it applied, kept in the supervisor's directory); it tells them
// to drain on SIGTERM/SIGINT/SIGUSR1/SIGUSR2 (a line on their stdin, so a worker that systemd
// signals too does not take the two for a forcing second signal), restarts a worker that dies
// unexpectedly or falls silent (exponential back-off), and exits 0 once all workers drained.
// Workers run in their own session (a terminal's Ctrl-C reaches only the supervisor, which
// forwards it once), report readiness and a heartbeat over a Unix socket, and drain when the
// supervisor disappears (their stdin, a pipe from the supervisor, reaches EOF).

import type { Logger } from "../ports.ts";
import { appliedConfigIn, commandLine, readControlLines } from "./worker_link.ts";
import { keepConfigCopy, readConfigCopy } from "./config_copy.ts";
import type { ControlMessage, SupervisorCommand } from "./worker_link.ts";
import { COUNT_ENV, SOCKET_ENV, WORKER_ENV } from "./worker_link.ts";
import { metricsSocket } from "./worker_metrics.ts";

/** A command line that starts another copy of this program. */
export interface SelfCommand {
  cmd: string;
  args: string[];
}

/**
 * The command line this process was started with (`deno run … mod.ts serve …`, `deno run
 * dist/prox.js …`, or a compiled `prox …`): Linux's /proc/self/cmdline keeps Deno's own flags
 * (permissions, --config, --unstable-net); elsewhere rebuilt from Deno.mainModule and Deno.args.
 */
export function selfCommand(): SelfCommand {
  try {
    const argv = Deno.readTextFileSync("/proc/self/cmdline").split("\0");
    if (argv.at(-1) === "") argv.pop();
    if (argv.length > 0) return { cmd: Deno.execPath(), args: argv.slice(1) };
  } catch { /* not Linux: rebuild below */ }
  const compiled = !/(^|[\\/])deno(\.exe)?$/.test(Deno.execPath());
  return {
    cmd: Deno.execPath(),
    args: compiled
      ? [...Deno.args]
      : ["run", "-A", "--unstable-net", Deno.mainModule, ...Deno.args],
  };
}

/** A running supervisor; `shutdown` and `reload` match what the signal trap expects. */
export interface Supervisor {
  readonly logger: Logger;
  /** Resolves once every worker reported listening; rejects when one exits before that. */
  readonly ready: Promise<void>;
  /** Process ids of the running workers, by worker index (0 while one is restarting). */
  pids(): number[];
  /** Sends SIGHUP to worker 0; once it applied the config, the others apply the same text. */
  reload(opts?: { trigger?: string }): Promise<void>;
  /** Tells every worker to drain (SIGUSR2 for a takeover, else SIGTERM); resolves when all exited. */
  shutdown(opts?: { reason?: string }): Promise<void>;
  /** Second stop signal: workers exit at once (resolves once they were told). */
  force(): Promise<void>;
  /** After shutdown: 0 when every worker drained and exited cleanly, else 1. */
  readonly exitCode: number;
}

/** A reload worker 0 applied (its config version) that the other workers apply too. */
interface Round {
  round: number;
  trigger: string;
}

interface Slot {
  index: number;
  child: Deno.ChildProcess | null;
  /** The child's stdin: commands (drain, force) as lines; its end tells the worker we left. */
  stdin: WritableStreamDefaultWriter<Uint8Array> | null;
  startedAt: number;
  ready: boolean;
  /** The watchdog killed it (silent, or not listening in time): not killed twice. */
  killed?: boolean;
  /** When its last message (ready, alive…) arrived: a stuck worker falls silent. */
  lastSeen: number;
  /**
   * A reload was asked for while it started: sent once it listens (worker 0: a SIGHUP; the
   * others: the latest round of worker 0's).
   */
  reloadPending?: true | Round;
  /** Crashes in a row (reset once a worker ran for `stableMs`). */
  failures: number;
  timer?: ReturnType<typeof setTimeout>;
  exited: Promise<void>;
}

/** Longest Unix socket path Linux accepts (sun_path is 108 bytes with the final NUL). */
const MAX_SOCKET_PATH = 107;
/** Reloads of worker 0's whose other workers' answers are waited for at once. */
const MAX_ROUNDS = 20;
/** Targets a worker may hold down at once, as the supervisor keeps them (configs have fewer). */
const MAX_HELD = 10_000;

/**
 * The supervisor's temporary directory and its control socket. Fails with the fix in the message
 * when TMPDIR is missing, read-only or too long for the sockets (`path must be shorter than
 * SUN_LEN` said nothing of where or why).
 */
function openControl(count: number) {
  let dir: string | undefined;
  try {
    dir = Deno.makeTempDirSync({ prefix: "prox-workers-" });
    const longest = metricsSocket(dir, count - 1);
    if (new TextEncoder().encode(longest).byteLength > MAX_SOCKET_PATH) {
      throw new Error(`the socket path "${longest}" is longer than ${MAX_SOCKET_PATH} bytes`);
    }
    const socketPath = `${dir}/control.sock`;
    return { dir, socketPath, control: Deno.listen({ transport: "unix", path: socketPath }) };
  } catch (err) {
    if (dir !== undefined) {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch { /* best effort */ }
    }
    const where = dir ?? Deno.env.get("TMPDIR") ?? "/tmp";
    const why = (err as Error).message.replace(/ \(os error \d+\)(: tmpdir)?$/, "");
    throw new Error(
      `Cannot create the workers' control sockets in "${where}": ${why}; set TMPDIR to a writable directory with a short path`,
    );
  }
}

/** Starts `count` workers and supervises them until `shutdown`. */
export function startSupervisor(count: number, opts: {
  logger: Logger;
  command?: SelfCommand;
  /**
   * The config text the supervisor checked: every worker starts from it (kept where restarted
   * workers find the applied config), not from the file, which a save may have changed since,
   * or between two workers' reads. Worker 0 then reloads a file that differs.
   */
  config?: string;
  /** First restart delay (default 100 ms); doubles per crash in a row up to `maxBackoffMs`. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** A worker that ran this long before dying counts as a first crash again (default 30 s). */
  stableMs?: number;
  /**
   * How long a drain may take before the workers still running are killed (SIGKILL): the
   * config's shutdown_timeout plus a grace, so a worker whose event loop is stuck cannot hold
   * the supervisor forever. A function is asked when the drain begins, with the config text the
   * workers last applied (null when none kept one), since a reload may have changed the timeout.
   * Default: no limit.
   */
  drainDeadlineMs?: number | ((applied: string | null) => number);
  /**
   * A listening worker silent this long (no heartbeat: its event loop is stuck) is killed and
   * restarted like a crashed one (default 10 s; workers beat every second).
   */
  hangMs?: number;
  /**
   * A worker not listening this long after it was started is killed (default 60 s): at
   * start-up the start fails rather than wait for ever; later it is restarted with back-off.
   */
  startMs?: number;
}): Supervisor {
  const { logger } = opts;
  const command = opts.command ?? selfCommand();
  const backoffMs = opts.backoffMs ?? 100;
  const maxBackoffMs = opts.maxBackoffMs ?? 30_000;
  const stableMs = opts.stableMs ?? 30_000;
  const hangMs = opts.hangMs ?? 10_000;
  const startMs = opts.startMs ?? 60_000;
  const { dir, socketPath, control } = openControl(count);
  if (opts.config !== undefined) keepConfigCopy(appliedConfigIn(dir), opts.config, logger);
  const ready = Promise.withResolvers<void>();
  let started = false;
  let stopping: Promise<void> | null = null;
  let failed = false;
  const slots: Slot[] = [];

  const live = () => slots.filter((s) => s.child !== null);
  const send = (slot: Slot, sig: Deno.Signal) => {
    try {
      slot.child?.kill(sig);
    } catch { /* exited meanwhile */ }
  };
  // A worker still starting has no SIGHUP handler yet (the default action kills it), and one
  // waiting to be restarted has no process: either gets the reload once it reports listening.
  // Worker 0 gets a SIGHUP; the others a `reload` line naming worker 0's round, which they
  // answer (a follower's reloads coalesce, but each request gets its answer).
  const reload = (slot: Slot, round?: Round) => {
    if (!slot.ready) slot.reloadPending = round ?? true;
    else if (round) void tell(slot, { type: "reload", ...round });
    else send(slot, "SIGHUP");
  };
  /** By round: the other workers whose answer worker 0 still waits for (its admin API). */
  const rounds = new Map<number, Set<number>>();
  const answered = (worker: number, round: number | undefined) => {
    const waiting = round === undefined ? undefined : rounds.get(round);
    if (!waiting?.delete(worker) || waiting.size > 0) return;
    rounds.delete(round!);
    toZero({ type: "reloaded", round: round! });
  };
  const encoder = new TextEncoder();
  const tell = (slot: Slot, cmd: SupervisorCommand): Promise<void> =>
    slot.child && slot.stdin
      ? slot.stdin.write(encoder.encode(commandLine(cmd))).catch(() => {/* exited meanwhile */})
      : Promise.resolve();

  const spawn = (slot: Slot) => {
    slot.timer = undefined;
    if (stopping) return;
    let child: Deno.ChildProcess;
    try {
      child = startChild(slot);
    } catch (err) {
      // The program is gone (removed by an upgrade), or no process can be made (EAGAIN,
      // ENOMEM): an uncaught error here took the supervisor, and with it every worker, down.
      return spawnFailed(slot, err as Error);
    }
    slot.child = child;
    slot.stdin = child.stdin.getWriter();
    slot.startedAt = performance.now();
    slot.ready = false;
    slot.killed = false;
    slot.exited = child.status.then((status) => onExit(slot, child, status));
  };

  const startChild = (slot: Slot) =>
    new Deno.Command(command.cmd, {
      args: command.args,
      env: {
        [WORKER_ENV]: String(slot.index),
        [COUNT_ENV]: String(count),
        [SOCKET_ENV]: socketPath,
      },
      stdin: "piped",
      stdout: "inherit",
      stderr: "inherit",
      detached: true,
    }).spawn();

  const spawnFailed = (slot: Slot, err: Error) => {
    if (!started) {
      logger.error(`Cannot start worker ${slot.index}: ${err.message}`, { worker: slot.index });
      failed = true;
      ready.reject(new Error(`worker ${slot.index} could not be started: ${err.message}`));
      void shutdown("startup failure");
      return;
    }
    slot.failures++;
    const delay = Math.min(backoffMs * 2 ** (slot.failures - 1), maxBackoffMs);
    logger.error(`Cannot restart worker ${slot.index}: ${err.message}`, {
      worker: slot.index,
      command: command.cmd,
      restartInMs: delay,
    });
    slot.timer = setTimeout(() => spawn(slot), delay);
  };

  const onExit = (slot: Slot, child: Deno.ChildProcess, status: Deno.CommandStatus) => {
    if (slot.child !== child) return;
    slot.child = null;
    // Not listening: a reload asked for until its successor listens waits for it.
    slot.ready = false;
    void slot.stdin?.close().catch(() => {});
    slot.stdin = null;
    const how = status.signal ? `signal ${status.signal}` : `code ${status.code}`;
    // A round it was to answer is answered (its successor starts from what worker 0 applied);
    // a worker 0 gone waits for none.
    if (slot.index === 0) rounds.clear();
    else for (const round of [...rounds.keys()]) answered(slot.index, round);
    if (stopping) {
      if (status.code !== 0) failed = true;
      return;
    }
    if (!started) {
      logger.error(`Cannot start worker ${slot.index}: it exited with ${how}`, {
        worker: slot.index,
        pid: child.pid,
      });
      failed = true;
      ready.reject(new Error(`worker ${slot.index} exited with ${how} before listening`));
      void shutdown("startup failure");
      return;
    }
    // Its UDP port is closed: the others stop advertising HTTP/3 until its successor has it up.
    if (slot.index === 0 && zeroAltSvc !== null) {
      toOthers({ type: "h3", altSvc: zeroAltSvc = null });
    }
    // What it held down, it holds no more (its successor tells anew).
    if (slot.index !== 0) {
      heldDown.delete(slot.index);
      toZero({ type: "health", worker: slot.index, backend: null, healthy: true, reason: null });
    }
    const ranMs = Math.round(performance.now() - slot.startedAt);
    slot.failures = ranMs >= stableMs ? 1 : slot.failures + 1;
    const delay = Math.min(backoffMs * 2 ** (slot.failures - 1), maxBackoffMs);
    logger.error("Worker exited unexpectedly; restarting it", {
      worker: slot.index,
      pid: child.pid,
      exit: how,
      ranMs,
      restartInMs: delay,
    });
    slot.timer = setTimeout(() => spawn(slot), delay);
  };

  /** The Alt-Svc worker 0 advertises (null: its HTTP/3 is down), for the others to follow. */
  let zeroAltSvc: string | null = null;
  const toOthers = (cmd: SupervisorCommand) => {
    for (const s of slots) if (s.index !== 0) void tell(s, cmd);
  };
  /** Targets drained through worker 0's admin API and not undrained since. */
  const drainedTargets = new Set<string>();
  /**
   * The targets each other worker holds down, as it told (passive ejections, health checks):
   * passed on to worker 0, which notifies, and again to a worker 0 restarted. Bounded per worker.
   */
  const heldDown = new Map<number, Map<string, string | null>>();
  const toZero = (cmd: SupervisorCommand) => {
    if (slots[0]) void tell(slots[0], cmd);
  };
  const onMessage = (msg: ControlMessage) => {
    const slot = slots[msg.worker];
    if (!slot || slot.child?.pid !== msg.pid) return;
    slot.lastSeen = performance.now();
    if (msg.type === "alive") return;
    if (msg.type === "ready") {
      slot.ready = true;
      // A restarted worker starts with no target drained: the ones drained before.
      for (const target of drainedTargets) {
        void tell(slot, { type: "target", target, drained: true });
      }
      // It advertises HTTP/3 only while worker 0 serves it.
      if (slot.index !== 0 && zeroAltSvc !== null) {
        void tell(slot, { type: "h3", altSvc: zeroAltSvc });
      }
      // A worker 0 started again knows nothing of what the others hold down.
      if (slot.index === 0 && started) {
        for (const [worker, held] of heldDown) {
          for (const [backend, reason] of held) {
            void tell(slot, { type: "health", worker, backend, healthy: false, reason });
          }
        }
      }
      const pending = slot.reloadPending;
      slot.reloadPending = undefined;
      if (pending) reload(slot, pending === true ? undefined : pending);
      if (started) logger.info("Worker restarted", { worker: msg.worker, pid: msg.pid });
      else if (slots.every((s) => s.ready)) {
        started = true;
        ready.resolve();
      }
    } else if (msg.type === "reload" && slot.index !== 0) {
      // Another worker refused what worker 0 applied (a file it could not read, a bind it could
      // not make): it keeps serving its previous config. Said at error level here and to worker
      // 0, whose admin API (/status, /config/history) shows it, and which, once every worker
      // answered, undoes the reload in every worker (a `rollback` round like any other).
      if (!msg.ok) {
        const error = msg.error ?? "no reason given";
        logger.error(
          `Worker ${slot.index} refused the reload: it keeps serving its previous config`,
          { worker: slot.index, pid: msg.pid, trigger: msg.trigger, error },
        );
        const { trigger, round } = msg;
        toZero({ type: "reload-failed", worker: slot.index, trigger, error, round });
      }
      answered(slot.index, msg.round);
    } else if (msg.type === "reload" && slot.index === 0) {
      // Worker 0 reloads first (SIGHUP, its file watch, its admin API): the others apply the
      // config text it applied, and nothing when it refused one (a config some workers would
      // serve and others not; worker 0 alone binds the admin address, for one).
      if (!msg.ok) {
        logger.warn("Worker 0 refused the reload: every worker keeps the config it serves", {
          trigger: msg.trigger,
        });
        return;
      }
      const round = { round: msg.version ?? 0, trigger: msg.trigger };
      const waiting = new Set(slots.filter((s) => s !== slot && s.ready).map((s) => s.index));
      for (const s of slots) if (s !== slot) reload(s, round);
      // Those still starting apply it once they listen; worker 0 waits for the others.
      if (waiting.size === 0) return toZero({ type: "reloaded", round: round.round });
      rounds.set(round.round, waiting);
      // Bounded: a round one worker never answers (its reload hangs) is given up on.
      for (const old of rounds.keys()) if (rounds.size > MAX_ROUNDS) rounds.delete(old);
    } else if (msg.type === "h3" && slot.index === 0) {
      zeroAltSvc = msg.altSvc;
      toOthers({ type: "h3", altSvc: msg.altSvc });
    } else if (msg.type === "purge") {
      // A cache purge through worker 0's admin API: each worker has its own caches.
      for (const s of slots) if (s !== slot) void tell(s, { type: "purge", input: msg.input });
    } else if (msg.type === "target" && slot.index === 0) {
      // A target drained through worker 0's admin API: each worker balances on its own. Kept
      // here too, for workers started later (bounded by the config's targets, as worker 0 is).
      if (msg.drained) drainedTargets.add(msg.target);
      else drainedTargets.delete(msg.target);
      const cmd = { type: "target", target: msg.target, drained: msg.drained } as const;
      for (const s of slots) if (s !== slot) void tell(s, cmd);
    } else if (msg.type === "health" && slot.index !== 0) {
      let held = heldDown.get(slot.index);
      if (!msg.healthy) {
        if (!held) heldDown.set(slot.index, held = new Map());
        if (held.size < MAX_HELD || held.has(msg.backend)) held.set(msg.backend, msg.reason);
      } else held?.delete(msg.backend);
      const { backend, healthy, reason } = msg;
      toZero({ type: "health", worker: slot.index, backend, healthy, reason });
    }
  };
  // A worker that listens but whose event loop is stuck keeps getting its share of the new
  // connections (SO_REUSEPORT), which then hang: kill it, and onExit restarts it with back-off.
  // Monotonic time: a wall clock stepped forward (NTP, a VM resumed) made every worker look silent.
  const period = Math.min(1000, hangMs / 2, startMs / 2);
  let lastTick = performance.now();
  const watchdog = setInterval(() => {
    const now = performance.now();
    const late = now - lastTick - period;
    lastTick = now;
    if (stopping) return;
    // This process itself did not run (SIGSTOP, a frozen cgroup): the beats sent meanwhile are
    // still unread, and silence measured across that gap says nothing of the workers (it killed
    // them all). The gap is not counted against them.
    if (late > period) {
      for (const s of slots) {
        s.lastSeen += late;
        s.startedAt += late;
      }
    }
    for (const s of slots) {
      if (s.child && !s.ready && !s.killed && now - s.startedAt >= startMs) {
        logger.error("Worker did not start listening in time: killing it", {
          worker: s.index,
          pid: s.child.pid,
          startMs,
        });
        s.killed = true;
        send(s, "SIGKILL");
      }
      if (!s.child || !s.ready || s.killed || now - s.lastSeen < hangMs) continue;
      logger.error("Worker stopped responding: killing it", {
        worker: s.index,
        pid: s.child.pid,
        silentMs: Math.round(now - s.lastSeen),
      });
      s.killed = true;
      send(s, "SIGKILL");
    }
  }, period);
  const accepting = (async () => {
    for await (const conn of control) void readControlLines(conn, onMessage);
  })().catch(() => {});

  async function shutdown(reason: string): Promise<void> {
    stopping ??= (async () => {
      const signal: Deno.Signal = reason === "takeover" ? "SIGUSR2" : "SIGTERM";
      const deadlineMs = typeof opts.drainDeadlineMs === "function"
        ? opts.drainDeadlineMs(readConfigCopy(appliedConfigIn(dir)))
        : opts.drainDeadlineMs;
      logger.info("Draining workers", { reason, workers: live().length, deadlineMs });
      for (const s of slots) {
        clearTimeout(s.timer);
        void tell(s, { type: "drain", signal });
      }
      let deadline: ReturnType<typeof setTimeout> | undefined;
      if (deadlineMs !== undefined) {
        deadline = setTimeout(() => {
          const stuck = live();
          if (stuck.length === 0) return;
          logger.error("Workers still running past the drain deadline: killing them", {
            workers: stuck.map((s) => s.index),
            pids: stuck.map((s) => s.child?.pid),
            deadlineMs,
          });
          failed = true;
          for (const s of stuck) send(s, "SIGKILL");
        }, deadlineMs);
      }
      await Promise.all(slots.map((s) => s.exited));
      clearTimeout(deadline);
      clearInterval(watchdog);
      control.close();
      await accepting;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      logger.info("Stopped", { reason, workers: slots.length });
    })();
    return await stopping;
  }

  for (let index = 0; index < count; index++) {
    const slot: Slot = {
      index,
      child: null,
      stdin: null,
      startedAt: 0,
      lastSeen: 0,
      ready: false,
      failures: 0,
      exited: Promise.resolve(),
    };
    slots.push(slot);
  }
  // Every slot exists before the first spawn: a failed one stops those already started.
  for (const slot of slots) spawn(slot);
  // A rejected `ready` is reported by whoever awaits it; keep it from being "unhandled".
  ready.promise.catch(() => {});

  return {
    logger,
    ready: ready.promise,
    pids: () => slots.map((s) => s.child?.pid ?? 0),
    reload(o) {
      logger.info("Reloading workers", { trigger: o?.trigger ?? "api" });
      reload(slots[0]);
      return Promise.resolve();
    },
    shutdown: (o) => shutdown(o?.reason ?? "shutdown"),
    async force() {
      await Promise.all(slots.map((s) => tell(s, { type: "force" })));
      // The process exits next, before `shutdown` would remove the sockets' directory.
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch { /* gone already */ }
    },
    get exitCode() {
      return failed ? 1 : 0;
    },
  };
}
