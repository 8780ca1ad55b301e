// Process signals for `prox serve`, trapped before the config is even read: a SIGTERM, SIGHUP
// or SIGUSR2 that arrives while Prox starts must not hit the default action (terminate) and
// must not be lost. What arrives early is remembered and acted on once the server runs.
//
//   SIGTERM, SIGINT  drain (readiness false, stop accepting, finish in-flight) and exit 0
//   SIGUSR2          the same, logged as a takeover (sent by `prox serve --takeover`)
//   SIGUSR1          the same (the Rust Prox's "restart", which only stopped it)
//   SIGHUP           reload the config
//   a second stop signal exits at once with code 1 (queued log lines get EXIT_FLUSH_MS), unless
//   it is SIGUSR2: a takeover's successor signals whatever the pid file names, which may be a
//   Prox already draining (stopped by SIGTERM a moment before), and that drain must go on
//
// A worker of `workers: N` is also told to drain by its supervisor (`drain`, over its stdin
// pipe, not a signal): under systemd's default KillMode=control-group the worker gets the
// SIGTERM itself as well, and that one must not count as a second signal.

import type { Logger } from "../ports.ts";
import { flushStdio } from "./log_json.ts";

/**
 * How long a forced exit waits for queued log lines: a stdout nobody reads (journald under
 * load) would otherwise block the exit's synchronous flush for good.
 */
const EXIT_FLUSH_MS = 250;

/** Exits with code 1 once the queued log lines are written, or after EXIT_FLUSH_MS without. */
const exitOne = () => void flushStdio(EXIT_FLUSH_MS).finally(() => Deno.exit(1));

/** What the trap needs from a running server. */
export interface Stoppable {
  shutdown(opts?: { reason?: string }): Promise<void>;
  reload(opts?: { trigger?: string }): Promise<unknown>;
  readonly logger: Logger;
  /** Called on a second stop signal, just before exiting (a supervisor stops its workers). */
  force?(): void | Promise<void>;
}

/** Trapped signals; `serve` resolves with the exit code, `release` removes the listeners. */
export interface SignalTrap {
  /** Acts on signals for `server` (including ones that came before) until it has stopped. */
  serve(server: Stoppable): Promise<number>;
  /** Starts the drain as a first stop signal would, unless one began already; never forces. */
  drain(signal: Deno.Signal): void;
  /** Exits at once with code 1, as a second stop signal does. */
  exitNow(why: string): void;
  release(): void;
}

const STOP: Deno.Signal[] = ["SIGTERM", "SIGINT", "SIGUSR2", "SIGUSR1"];

/** Installs the listeners now; call before starting the server. */
export function trapSignals(opts: { logger: Logger }): SignalTrap {
  let server: Stoppable | null = null;
  let stopBy: Deno.Signal | null = null;
  let signalled = false;
  let reloadPending = false;
  const done = Promise.withResolvers<number>();

  const exitNow = (msg: string, signal?: Deno.Signal) => {
    (server?.logger ?? opts.logger).warn(msg, { signal });
    const told = server?.force?.();
    if (!told) return exitOne();
    // Exits once the workers were told (a pipe write), or after 1 s whatever happened.
    setTimeout(exitOne, 1000);
    void told.finally(exitOne);
  };
  const stop = (signal: Deno.Signal) => {
    if (signalled && signal === "SIGUSR2") {
      const log = server?.logger ?? opts.logger;
      log.info("Takeover signal while already draining: the drain goes on", { signal });
      return;
    }
    if (signalled) return exitNow("Second signal: exiting now", signal);
    signalled = true;
    drain(signal);
  };
  const drain = (signal: Deno.Signal) => {
    if (stopBy) return;
    stopBy = signal;
    if (server) begin(server, signal);
    else opts.logger.info("Stop signal during startup: stopping once started", { signal });
  };
  const begin = (s: Stoppable, signal: Deno.Signal) => {
    const reason = signal === "SIGUSR2" ? "takeover" : signal;
    s.shutdown({ reason }).then(() => done.resolve(0), (err) => {
      s.logger.error("Shutdown failed", { error: String(err) });
      done.resolve(1);
    });
  };
  const hup = () => {
    if (server) void server.reload({ trigger: "SIGHUP" });
    else reloadPending = true;
  };
  const handlers: [Deno.Signal, () => void][] = [
    ...STOP.map((sig): [Deno.Signal, () => void] => [sig, () => stop(sig)]),
    ["SIGHUP", hup],
  ];
  for (const [sig, fn] of handlers) Deno.addSignalListener(sig, fn);

  const release = () => {
    for (const [sig, fn] of handlers) Deno.removeSignalListener(sig, fn);
  };
  return {
    async serve(s) {
      server = s;
      if (stopBy) begin(s, stopBy);
      else if (reloadPending) void s.reload({ trigger: "SIGHUP" });
      const code = await done.promise;
      release();
      return code;
    },
    drain,
    exitNow: (why) => exitNow(why),
    release,
  };
}
