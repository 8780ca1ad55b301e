// Process signals for `prox serve`, trapped before the config is even read: a SIGTERM, SIGHUP
// or SIGUSR2 that arrives while Prox starts must not hit the default action (terminate) and
// must not be lost. What arrives early is remembered and acted on once the server runs.
//
//   SIGTERM, SIGINT  drain (readiness false, stop accepting, finish in-flight) and exit 0
//   SIGUSR2          the same, logged as a takeover (sent by `prox serve --takeover`)
//   SIGUSR1          the same (the Rust Prox's "restart", which only stopped it)
//   SIGHUP           reload the config
//   a second stop signal exits at once with code 1

import type { Logger } from "../ports.ts";

/** What the trap needs from a running server. */
export interface Stoppable {
  shutdown(opts?: { reason?: string }): Promise<void>;
  reload(opts?: { trigger?: string }): Promise<unknown>;
  readonly logger: Logger;
  /** Called on a second stop signal, just before exiting (a supervisor stops its workers). */
  force?(): void;
}

/** Trapped signals; `serve` resolves with the exit code, `release` removes the listeners. */
export interface SignalTrap {
  /** Acts on signals for `server` (including ones that came before) until it has stopped. */
  serve(server: Stoppable): Promise<number>;
  release(): void;
}

const STOP: Deno.Signal[] = ["SIGTERM", "SIGINT", "SIGUSR2", "SIGUSR1"];

/** Installs the listeners now; call before starting the server. */
export function trapSignals(opts: { logger: Logger }): SignalTrap {
  let server: Stoppable | null = null;
  let stopBy: Deno.Signal | null = null;
  let reloadPending = false;
  const done = Promise.withResolvers<number>();

  const stop = (signal: Deno.Signal) => {
    if (stopBy) {
      (server?.logger ?? opts.logger).warn("Second signal: exiting now", { signal });
      server?.force?.();
      Deno.exit(1);
    }
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
    release,
  };
}
