// Upstreams for the load-balancing and health tests: a named Deno.serve backend that can be
// killed (hard close) and restarted on its port, and a logger that keeps every message.
import type { Logger, LogLevel } from "../../src/ports.ts";

/** A Logger that keeps every message (to count retries, ejections, recoveries). */
export function recordingLogger(): Logger & { lines: { level: LogLevel; msg: string }[] } {
  const lines: { level: LogLevel; msg: string }[] = [];
  const log = (level: LogLevel, msg: string) => void lines.push({ level, msg });
  return {
    lines,
    log,
    debug: (m) => log("debug", m),
    info: (m) => log("info", m),
    warn: (m) => log("warn", m),
    error: (m) => log("error", m),
  };
}

/** A named upstream that can be killed (hard close) and restarted on the same port. */
export class Backend implements AsyncDisposable {
  port = 0;
  hits = 0;
  probes = 0;
  healthStatus = 200;
  /** Delay before answering a non-health request. */
  delayMs = 0;
  /** While set, non-health requests hang until `release()`. */
  hang = false;
  #hung: (() => void)[] = [];
  #ac: AbortController | null = null;
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;

  constructor(readonly name: string) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  start(): this {
    this.#ac = new AbortController();
    this.#server = Deno.serve({
      hostname: "127.0.0.1",
      port: this.port,
      signal: this.#ac.signal,
      onListen: () => {},
    }, async (req) => {
      if (new URL(req.url).pathname === "/health") {
        this.probes++;
        return new Response(this.healthStatus === 200 ? "ok" : "down", {
          status: this.healthStatus,
        });
      }
      this.hits++;
      if (this.hang) await new Promise<void>((r) => this.#hung.push(r));
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
      return new Response(this.name);
    });
    this.port = this.#server.addr.port;
    return this;
  }

  /** Lets every hung request finish. */
  release(): void {
    this.hang = false;
    for (const r of this.#hung.splice(0)) r();
  }

  /** Hard close: listener and open connections go away at once. */
  async kill(): Promise<void> {
    this.#ac?.abort();
    await this.#server?.finished;
    this.#server = null;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#server) await this.kill();
  }
}
