// The worker's side of `workers: N`: who it is (environment set by the supervisor), how it
// tells the supervisor it listens or that the admin API reloaded or purged, and how it notices
// that the supervisor is gone. Messages are JSON lines over the supervisor's Unix socket.

import type { Handler } from "../ports.ts";
import type { PurgeInput } from "../proxy/cache_purge.ts";

/** Environment variable holding this worker's index (set by the supervisor only). */
export const WORKER_ENV = "PROX_WORKER";
/** Environment variable holding the supervisor's control socket path. */
export const SOCKET_ENV = "PROX_SUPERVISOR_SOCKET";
/** Environment variable holding the number of workers. */
export const COUNT_ENV = "PROX_WORKERS";
/** When "1", every response carries `x-prox-worker: INDEX` (tests, debugging the spread). */
export const DEBUG_HEADER_ENV = "PROX_DEBUG_WORKER_HEADER";

/** A line a worker sends the supervisor. */
export type ControlMessage =
  | { type: "ready"; worker: number; pid: number }
  | { type: "alive"; worker: number; pid: number }
  /**
   * A worker applied (`ok`) or refused a reload, with the error when it refused: the others
   * follow only what worker 0 applied, and another worker's refusal is reported (README
   * "Multi-core").
   */
  | {
    type: "reload";
    worker: number;
    pid: number;
    trigger: string;
    ok: boolean;
    error?: string;
    /** Worker 0, having applied one: its config version, which names the others' round. */
    version?: number;
    /** Another worker: the round (worker 0's version) this outcome answers. */
    round?: number;
  }
  | { type: "purge"; worker: number; pid: number; input: PurgeInput }
  /** Worker 0's HTTP/3 came up (the Alt-Svc it advertises) or went down (null). */
  | { type: "h3"; worker: number; pid: number; altSvc: string | null }
  /** Worker 0's admin API drained (or undrained) a target: every worker follows. */
  | { type: "target"; worker: number; pid: number; target: string; drained: boolean }
  /** Another worker's view of a target changed (passive ejection, health checks): for worker 0. */
  | {
    type: "health";
    worker: number;
    pid: number;
    backend: string;
    healthy: boolean;
    reason: string | null;
  };

/** The longest reason a health line carries (the lines are bounded: MAX_LINE). */
const MAX_REASON = 300;
/** The longest reload error a line carries (the rest is in that worker's own log line). */
export const MAX_RELOAD_ERROR = 1000;
/** The longest target a health line carries (longer ones are not passed on). */
export const MAX_HEALTH_TARGET = 2048;

/** A purge as a worker passes it on, or null when `v` is none (one url, prefix, route or tag). */
export function purgeInput(v: unknown): PurgeInput | null {
  if (!v || typeof v !== "object") return null;
  const keys = Object.keys(v);
  const value = (v as Record<string, unknown>)[keys[0]];
  if (keys.length !== 1 || typeof value !== "string") return null;
  if (keys[0] === "url") return { url: value };
  if (keys[0] === "prefix") return { prefix: value };
  if (keys[0] === "route") return { route: value };
  if (keys[0] === "tag") return { tag: value };
  return null;
}

/** An Alt-Svc value as worker 0 passes it on (`h3=":PORT"; ma=N`), or null. */
function altSvcOrNull(v: unknown): v is string | null {
  return v === null || typeof v === "string" && v.length <= 100;
}

/** This process's worker role, or null when it was not started by a supervisor. */
export interface WorkerRole {
  index: number;
  /** How many workers the supervisor runs. */
  count: number;
  socket: string;
  /** The supervisor's directory (sockets). */
  dir: string;
  /** Worker 0 runs what only one process can: admin listener, HTTP/3. */
  exclusive: boolean;
  debugHeader: boolean;
}

/** Reads the worker role from the environment. */
export function workerRole(): WorkerRole | null {
  const index = Number(Deno.env.get(WORKER_ENV) ?? "NaN");
  const socket = Deno.env.get(SOCKET_ENV);
  const count = Number(Deno.env.get(COUNT_ENV) ?? "1");
  if (!Number.isInteger(index) || index < 0 || !socket) return null;
  return {
    index,
    count: Number.isInteger(count) && count > index ? count : index + 1,
    socket,
    dir: socket.slice(0, socket.lastIndexOf("/")),
    exclusive: index === 0,
    debugHeader: Deno.env.get(DEBUG_HEADER_ENV) === "1",
  };
}

/** Where the workers keep the config they last applied (restarted workers start from it). */
export function appliedConfigPath(role: WorkerRole): string {
  return appliedConfigIn(role.dir);
}

/** The same, for the supervisor's directory `dir`. */
export function appliedConfigIn(dir: string): string {
  return `${dir}/config.applied.yaml`;
}

/**
 * After the supervisor died (SIGKILL, OOM): removes what this worker and the supervisor left in
 * the supervisor's directory (its control socket, the applied config, which may hold secrets,
 * this worker's `own` files), then the directory once empty, so the last worker out removes it.
 */
export function leaveDirectory(role: WorkerRole, own: string[]): void {
  for (const path of [role.socket, appliedConfigPath(role), ...own]) {
    try {
      Deno.removeSync(path);
    } catch { /* gone already */ }
  }
  try {
    Deno.removeSync(role.dir); // fails while another worker's socket is still there
  } catch { /* not empty, or gone */ }
}

/** The worker's open line to the supervisor. */
export interface SupervisorLink {
  send(msg: ControlMessage): Promise<void>;
  close(): void;
}

/** Connects to the supervisor's socket. */
export async function connectSupervisor(role: WorkerRole): Promise<SupervisorLink> {
  const conn = await Deno.connect({ transport: "unix", path: role.socket });
  const enc = new TextEncoder();
  let closed = false;
  return {
    async send(msg) {
      if (closed) return;
      const bytes = enc.encode(JSON.stringify(msg) + "\n");
      let off = 0;
      while (off < bytes.length) off += await conn.write(bytes.subarray(off));
    },
    close() {
      if (closed) return;
      closed = true;
      conn.close();
    },
  };
}

/** How often a worker tells the supervisor its event loop runs (see `startHeartbeat`). */
export const HEARTBEAT_MS = 1000;

/**
 * Sends `alive` every HEARTBEAT_MS from a timer, so a worker whose event loop is stuck (a
 * runaway loop, SIGSTOP) falls silent and the supervisor replaces it. Returns the stop function.
 */
export function startHeartbeat(link: SupervisorLink, role: WorkerRole): () => void {
  const timer = setInterval(() => {
    link.send({ type: "alive", worker: role.index, pid: Deno.pid }).catch(() => {});
  }, HEARTBEAT_MS);
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}

/**
 * What the supervisor writes to a worker's stdin (a pipe it holds): one command per line.
 * Drains go this way, not as signals, so a worker can tell them from a SIGTERM sent to it
 * directly (systemd signals every process of the unit): only two signals force an exit.
 */
export type SupervisorCommand =
  | { type: "drain"; signal: Deno.Signal }
  | { type: "force" }
  | { type: "purge"; input: PurgeInput }
  | { type: "target"; target: string; drained: boolean }
  /** To the other workers: the Alt-Svc worker 0 advertises now (null: no HTTP/3 up there). */
  | { type: "h3"; altSvc: string | null }
  /**
   * To worker 0: worker `worker` refused a reload worker 0 applied (it serves its previous
   * config); `round` when it answered one (see `reloaded`).
   */
  | { type: "reload-failed"; worker: number; trigger: string; error: string; round?: number }
  /** To the other workers: apply what worker 0 applied as its version `round`, and answer. */
  | { type: "reload"; round: number; trigger: string }
  /**
   * To worker 0: every other worker answered round `round` (or exited); those that refused it
   * were told before, each in its `reload-failed` line.
   */
  | { type: "reloaded"; round: number }
  /**
   * To worker 0: worker `worker`'s view of `backend` (null: that worker exited, and holds no
   * target down any more).
   */
  | {
    type: "health";
    worker: number;
    backend: string | null;
    healthy: boolean;
    reason: string | null;
  };

/** The line that carries `cmd` to a worker's stdin. */
export function commandLine(cmd: SupervisorCommand): string {
  if (cmd.type === "purge") return `purge ${JSON.stringify(cmd.input)}\n`;
  if (cmd.type === "health") {
    const { worker, backend, healthy, reason } = cmd;
    return `health ${JSON.stringify({ worker, backend, healthy, reason })}\n`;
  }
  if (cmd.type === "target") {
    return `target ${JSON.stringify({ target: cmd.target, drained: cmd.drained })}\n`;
  }
  if (cmd.type === "reload") {
    return `reload ${JSON.stringify({ round: cmd.round, trigger: cmd.trigger })}\n`;
  }
  if (cmd.type === "reloaded") {
    return `reloaded ${JSON.stringify({ round: cmd.round })}\n`;
  }
  if (cmd.type === "h3") return `h3 ${JSON.stringify({ altSvc: cmd.altSvc })}\n`;
  if (cmd.type === "reload-failed") {
    const { worker, trigger, error, round } = cmd;
    return `reload-failed ${JSON.stringify({ worker, trigger, error, round })}\n`;
  }
  return cmd.type === "drain" ? `drain ${cmd.signal}\n` : "force\n";
}

const COMMAND_SIGNALS: Deno.Signal[] = ["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"];

/** One line of the supervisor's, or null when it is none (exported for the tests). */
export function parseCommand(line: string): SupervisorCommand | null {
  if (line.startsWith("health ")) {
    try {
      const v = JSON.parse(line.slice(7));
      return Number.isInteger(v?.worker) && v.worker > 0 &&
          (v.backend === null || typeof v.backend === "string") &&
          typeof v.healthy === "boolean" && (v.reason === null || typeof v.reason === "string")
        ? {
          type: "health",
          worker: v.worker,
          backend: v.backend,
          healthy: v.healthy,
          reason: v.reason,
        }
        : null;
    } catch {
      return null;
    }
  }
  if (line.startsWith("target ")) {
    try {
      const v = JSON.parse(line.slice(7));
      return typeof v?.target === "string" && typeof v.drained === "boolean"
        ? { type: "target", target: v.target, drained: v.drained }
        : null;
    } catch {
      return null;
    }
  }
  if (line.startsWith("reload ")) {
    try {
      const v = JSON.parse(line.slice(7));
      return Number.isInteger(v?.round) && typeof v.trigger === "string"
        ? { type: "reload", round: v.round, trigger: v.trigger }
        : null;
    } catch {
      return null;
    }
  }
  if (line.startsWith("h3 ")) {
    try {
      const v = JSON.parse(line.slice(3));
      return altSvcOrNull(v?.altSvc) ? { type: "h3", altSvc: v.altSvc } : null;
    } catch {
      return null;
    }
  }
  if (line.startsWith("reloaded ")) {
    try {
      const v = JSON.parse(line.slice(9));
      return Number.isInteger(v?.round) ? { type: "reloaded", round: v.round } : null;
    } catch {
      return null;
    }
  }
  if (line.startsWith("reload-failed ")) {
    try {
      const v = JSON.parse(line.slice(14));
      return Number.isInteger(v?.worker) && v.worker > 0 && typeof v.trigger === "string" &&
          typeof v.error === "string"
        ? {
          type: "reload-failed",
          worker: v.worker,
          trigger: v.trigger,
          error: v.error,
          ...(Number.isInteger(v.round) ? { round: v.round } : {}),
        }
        : null;
    } catch {
      return null;
    }
  }
  if (line.startsWith("purge ")) {
    try {
      const input = purgeInput(JSON.parse(line.slice(6)));
      return input ? { type: "purge", input } : null;
    } catch {
      return null;
    }
  }
  const [word, arg] = line.trim().split(" ");
  if (word === "force") return { type: "force" };
  const signal = COMMAND_SIGNALS.find((s) => s === arg);
  return word === "drain" && signal ? { type: "drain", signal } : null;
}

/**
 * Follows the supervisor through stdin: calls `onCommand` per command line, and `gone` once
 * stdin ends (the supervisor exited).
 */
export function followSupervisor(
  onCommand: (cmd: SupervisorCommand) => void,
  gone: () => void,
): void {
  void (async () => {
    const dec = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of Deno.stdin.readable) {
        buf += dec.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const cmd = parseCommand(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          if (cmd) onCommand(cmd);
        }
        if (buf.length > MAX_LINE) buf = "";
      }
    } catch { /* closed */ }
    gone();
  })();
}

const MAX_LINE = 4096;

/** Supervisor side: parses JSON lines from one worker connection until it closes. */
export async function readControlLines(
  conn: Deno.Conn,
  onMessage: (msg: ControlMessage) => void,
): Promise<void> {
  const dec = new TextDecoder();
  let buf = "";
  try {
    for await (const chunk of conn.readable) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = parseMessage(line);
        if (msg) onMessage(msg);
      }
      // A line never gets this long from a real worker: drop the connection.
      if (buf.length > MAX_LINE) break;
    }
  } catch { /* worker gone */ }
  try {
    conn.close();
  } catch { /* already closed */ }
}

/** One line of a worker's, or null when it is none (exported for the tests). */
export function parseMessage(line: string): ControlMessage | null {
  try {
    const m = JSON.parse(line);
    if (!m || typeof m.worker !== "number" || typeof m.pid !== "number") return null;
    if (m.type === "ready" || m.type === "alive") {
      return { type: m.type, worker: m.worker, pid: m.pid };
    }
    if (m.type === "reload") {
      const { worker, pid } = m;
      const ok = m.ok === true;
      const error = ok
        ? undefined
        : typeof m.error === "string"
        ? m.error.slice(0, MAX_RELOAD_ERROR)
        : "no reason given";
      const version = ok && Number.isInteger(m.version) ? m.version : undefined;
      const round = Number.isInteger(m.round) ? m.round : undefined;
      return {
        type: "reload",
        worker,
        pid,
        trigger: String(m.trigger),
        ok,
        ...(error !== undefined ? { error } : {}),
        ...(version !== undefined ? { version } : {}),
        ...(round !== undefined ? { round } : {}),
      };
    }
    if (m.type === "target" && typeof m.target === "string" && typeof m.drained === "boolean") {
      const { worker, pid, target, drained } = m;
      return { type: "target", worker, pid, target, drained };
    }
    if (
      m.type === "health" && typeof m.backend === "string" && typeof m.healthy === "boolean" &&
      m.backend.length <= MAX_HEALTH_TARGET
    ) {
      const reason = typeof m.reason === "string" ? m.reason.slice(0, MAX_REASON) : null;
      const { worker, pid, backend, healthy } = m;
      return { type: "health", worker, pid, backend, healthy, reason };
    }
    if (m.type === "h3" && altSvcOrNull(m.altSvc)) {
      return { type: "h3", worker: m.worker, pid: m.pid, altSvc: m.altSvc };
    }
    const input = m.type === "purge" ? purgeInput(m.input) : null;
    if (input) return { type: "purge", worker: m.worker, pid: m.pid, input };
  } catch { /* not JSON */ }
  return null;
}

/** Adds `x-prox-worker: INDEX` to every response (debug aid for `workers: N`). */
export function withWorkerHeader(handler: Handler, index: number): Handler {
  return async (req, info) => {
    const res = await handler(req, info);
    if (res.status === 101) return res;
    try {
      res.headers.set("x-prox-worker", String(index));
      return res;
    } catch {
      const headers = new Headers(res.headers);
      headers.set("x-prox-worker", String(index));
      return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
    }
  };
}
