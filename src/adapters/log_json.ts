// Logs as JSON lines: the Logger port (warn and error to stderr, the rest to stdout) and the
// access log (one line per request: JSON, or Common/Combined Log Format as Apache and nginx
// write them). Lines queue behind asynchronous writes, so a log reader that stalls (journald
// under load, a hung shipper) cannot stall Prox; what is queued is written out at exit.

import type { AccessRecord, Logger, LogLevel, Protocol } from "../ports.ts";

/** Where a line goes; the default writes to Deno.stdout / Deno.stderr. */
export type LineSink = (line: string, stream: "stdout" | "stderr") => void;

/** Access log formats: `json` lines, or the NCSA Common/Combined Log Formats. */
export type AccessLogFormat = "json" | "common" | "combined";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

const encoder = new TextEncoder();

/** What a queued writer needs of a file: Deno.stdout's two writes. */
export interface WritableFile {
  write(p: Uint8Array): Promise<number>;
  writeSync(p: Uint8Array): number;
}

/** A writer that never blocks its caller: chunks queue behind one asynchronous write. */
export interface QueuedWriter {
  write(chunk: string): void;
  /** Resolves once everything queued is written, or after `timeoutMs`. */
  drain(timeoutMs: number): Promise<void>;
  /**
   * Writes what is queued synchronously (at exit), but for a chunk whose write is under way;
   * nothing after a drain that timed out.
   */
  flushSync(): void;
}

/** Most bytes held for a stream that does not keep up; past it, lines are dropped and counted. */
export const MAX_QUEUED_BYTES = 8 * 1024 * 1024;

/**
 * Queues chunks for `file` and writes them one asynchronous write at a time, in order, starting
 * after the current task (a line logged just before `Deno.exit` is still queued, for flushSync).
 * A reader that stalls (a log shipper that hangs, a full pipe) holds up to `maxBytes`; later
 * lines are dropped, and `onDropped` hears how many once the queue has drained. A file that
 * cannot be written (EPIPE: the reader went away) drops what is queued.
 */
export function createQueuedWriter(
  file: WritableFile,
  opts: { maxBytes?: number; onDropped?: (lines: number) => void } = {},
): QueuedWriter {
  const max = opts.maxBytes ?? MAX_QUEUED_BYTES;
  let queue: Uint8Array[] = [];
  let queued = 0;
  let dropped = 0;
  /** A pump is scheduled or running. */
  let pumping = false;
  /** The chunk whose write is under way. */
  let inFlight: Uint8Array | null = null;
  let drained: (() => void)[] = [];
  /** A drain timed out: the reader is stuck, and a synchronous write at exit would hang. */
  let stalled = false;
  const pump = async () => {
    while (queue.length > 0) {
      const chunk = inFlight = queue[0];
      try {
        let off = 0;
        while (off < chunk.length) off += await file.write(chunk.subarray(off));
      } catch {
        queue = [];
        queued = 0;
        break;
      } finally {
        inFlight = null;
      }
      if (queue[0] === chunk) {
        queue.shift();
        queued -= chunk.length;
      }
      if (queue.length === 0 && dropped > 0) {
        const n = dropped;
        dropped = 0;
        opts.onDropped?.(n);
      }
    }
    pumping = false;
    for (const done of drained) done();
    drained = [];
  };
  return {
    write(chunk) {
      const bytes = encoder.encode(chunk);
      if (queued + bytes.length > max && queued > 0) {
        for (let i = chunk.indexOf("\n"); i >= 0; i = chunk.indexOf("\n", i + 1)) dropped++;
        return;
      }
      queue.push(bytes);
      queued += bytes.length;
      if (pumping) return;
      pumping = true;
      queueMicrotask(() => void pump());
    },
    drain(timeoutMs) {
      if (!pumping) return Promise.resolve();
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          stalled = true;
          resolve();
        }, timeoutMs);
        drained.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
    flushSync() {
      // Lines for a reader that did not take any within the drain's time are lost: a process
      // that cannot exit (a SIGTERM ignored until SIGKILL) would be worse.
      if (stalled) return;
      // The chunk being written belongs to its write; the rest goes now.
      const rest = queue.filter((c) => c !== inFlight);
      queue = inFlight ? [inFlight] : [];
      queued = inFlight?.length ?? 0;
      try {
        for (const c of rest) {
          let off = 0;
          while (off < c.length) off += file.writeSync(c.subarray(off));
        }
      } catch { /* dropped (the reader went away) */ }
    },
  };
}

const writers: Partial<Record<"stdout" | "stderr", QueuedWriter>> = {};

/** The process's queue for `stream`; what it holds is written out when the process exits. */
function writer(stream: "stdout" | "stderr"): QueuedWriter {
  const had = writers[stream];
  if (had) return had;
  const w = writers[stream] = createQueuedWriter(
    stream === "stdout" ? Deno.stdout : Deno.stderr,
    {
      onDropped: (lines) =>
        stdioSink(
          toJson({
            time: new Date().toISOString(),
            level: "warn",
            msg: `Log lines dropped: ${stream} was not read fast enough`,
            lines,
          }) + "\n",
          "stderr",
        ),
    },
  );
  globalThis.addEventListener("unload", () => w.flushSync());
  return w;
}

/**
 * Waits (up to `timeoutMs`) until the log lines queued so far are written: call it before
 * `Deno.exit`, which would cut a write under way.
 */
export async function flushStdio(timeoutMs = 2000): Promise<void> {
  await Promise.all([writers.stdout?.drain(timeoutMs), writers.stderr?.drain(timeoutMs)]);
}

/**
 * Writes a line to stdout or stderr, queued (see createQueuedWriter). A stream that cannot be
 * written (EPIPE: the log reader went away, as when journald restarts) drops the line: losing
 * log lines must not stop Prox serving.
 */
export const stdioSink: LineSink = (line, stream) => writer(stream).write(line);

/** A sink that batches lines; `flush()` writes what is pending (call it before exiting). */
export interface BufferedSink {
  readonly sink: LineSink;
  flush(): void;
}

/**
 * Bytes a write to a pipe keeps whole (POSIX PIPE_BUF on Linux): a longer one can interleave with
 * another process's writes to the same pipe (the workers of `workers: N` share stdout).
 */
export const PIPE_BUF = 4096;

/** UTF-8 length of a string (a surrogate pair counts 4). */
function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) n += c >= 0xd800 && c <= 0xdfff ? 1 : c > 0x7ff ? 2 : 1;
  }
  return n;
}

/**
 * Batches lines into writes per `flushMs` (default 1 ms) or per `maxBytes` (64 KiB): under load
 * one syscall carries many access-log lines. Each write is whole lines of at most `atomicBytes`
 * (PIPE_BUF; only a longer line goes alone), so lines from several processes never interleave
 * in a pipe. A crash loses at most `flushMs` of lines.
 */
export function createBufferedSink(
  opts: { flushMs?: number; maxBytes?: number; atomicBytes?: number; sink?: LineSink } = {},
): BufferedSink {
  const out = opts.sink ?? stdioSink;
  const flushMs = opts.flushMs ?? 1;
  const maxBytes = opts.maxBytes ?? 64 * 1024;
  const atomic = opts.atomicBytes ?? PIPE_BUF;
  const write = (lines: string[], stream: "stdout" | "stderr") => {
    let chunk = "";
    let bytes = 0;
    for (const line of lines) {
      const n = utf8Length(line);
      if (bytes > 0 && bytes + n > atomic) {
        out(chunk, stream);
        chunk = "";
        bytes = 0;
      }
      chunk += line;
      bytes += n;
    }
    if (bytes > 0) out(chunk, stream);
  };
  const pending: Record<"stdout" | "stderr", string[]> = { stdout: [], stderr: [] };
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    size = 0;
    for (const stream of ["stdout", "stderr"] as const) {
      if (pending[stream].length === 0) continue;
      const lines = pending[stream];
      pending[stream] = [];
      write(lines, stream);
    }
  };
  const sink: LineSink = (line, stream) => {
    pending[stream].push(line);
    size += line.length;
    if (size >= maxBytes) return flush();
    if (timer === undefined) {
      timer = setTimeout(flush, flushMs);
      // Pending log lines never keep the process alive.
      Deno.unrefTimer(timer);
    }
  };
  return { sink, flush };
}

/** True when `s` names a log level. */
export function isLogLevel(s: unknown): s is LogLevel {
  return typeof s === "string" && s in ORDER;
}

/**
 * The effective level: the `PROX_LOG_LEVEL` environment variable (set by `--log-level` too)
 * wins over the config's `log.level`; the default is info (start-up, reloads, warnings, errors).
 */
export function resolveLogLevel(opts: { env?: string; config?: LogLevel }): LogLevel {
  if (isLogLevel(opts.env)) return opts.env;
  return opts.config ?? "info";
}

/** JSON.stringify that keeps Error messages and never throws (cycles, BigInt). */
function toJson(obj: Record<string, unknown>): string {
  try {
    return escapeC1(JSON.stringify(obj, (_k, v) => {
      if (v instanceof Error) return { name: v.name, message: v.message };
      if (typeof v === "bigint") return v.toString();
      return v;
    }));
  } catch (err) {
    return JSON.stringify({
      time: obj.time,
      level: obj.level,
      msg: obj.msg,
      logError: String(err),
    });
  }
}

/**
 * Creates the JSON-lines Logger; lines below `level` are dropped before any formatting.
 * `setLevel` follows a reloaded `log.level` (unless `PROX_LOG_LEVEL` or `--log-level` decided).
 */
export function createJsonLogger(
  opts: { level?: LogLevel; sink?: LineSink; now?: () => number } = {},
): Logger & { setLevel(level: LogLevel | undefined): void } {
  let envLevel: string | undefined;
  try {
    envLevel = Deno.env.get("PROX_LOG_LEVEL");
  } catch {
    envLevel = undefined; // no --allow-env: the config decides
  }
  let min = ORDER[resolveLogLevel({ env: envLevel, config: opts.level })];
  const sink = opts.sink ?? stdioSink;
  const now = opts.now ?? Date.now;
  const log = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < min) return;
    const line = toJson({ time: new Date(now()).toISOString(), level, msg, ...fields });
    sink(line + "\n", ORDER[level] >= ORDER.warn ? "stderr" : "stdout");
  };
  return {
    log,
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
    enabled: (level) => ORDER[level] >= min,
    setLevel(level) {
      min = ORDER[resolveLogLevel({ env: envLevel, config: level })];
    },
  };
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** `[10/Oct/2000:13:55:36 +0000]` in UTC, as in the NCSA formats. */
export function clfTime(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `[${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000]`;
}

const PROTO_LINE: Record<Protocol | "http/1.0", string> = {
  "http/1.0": "HTTP/1.0",
  "http/1.1": "HTTP/1.1",
  h2: "HTTP/2.0",
  h2c: "HTTP/2.0",
  h3: "HTTP/3.0",
};

// deno-lint-ignore no-control-regex
const CLF_ESCAPE = /["\\\x00-\x1f\x7f-\x9f]/g;
// deno-lint-ignore no-control-regex
const CLF_ESCAPE_BYTES = /["\\\x00-\x1f\x7f-\xff]/g;

/**
 * Escapes a value for a quoted NCSA field as `\xHH`: quotes, backslashes and control characters
 * (C1 too: U+009B is CSI to many terminals). With `bytes` (header fields, which Deno hands over
 * one character per byte) every byte past ASCII, as nginx writes them, rather than re-encoding
 * them as UTF-8 (mojibake: "é" sent in UTF-8 became "Ã©").
 */
function clfQuote(s: string | null, bytes = false): string {
  if (s === null || s === "") return "-";
  return s.replace(
    bytes ? CLF_ESCAPE_BYTES : CLF_ESCAPE,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

const C1 = /[\x7f-\x9f]/g;

/**
 * JSON.stringify escapes C0 controls but writes DEL and the C1 controls as they are: U+009B is
 * CSI to terminals that honour C1, so a User-Agent could drive the terminal of whoever tails the
 * log. Escaped, the line parses to the same string.
 */
function escapeC1(json: string): string {
  return json.replace(C1, (c) => `\\u00${c.charCodeAt(0).toString(16)}`);
}

/** One access record in Common (or, with `combined`, Combined) Log Format, without newline. */
export function formatClf(rec: AccessRecord, combined: boolean): string {
  const bytes = rec.bytesOut > 0 ? String(rec.bytesOut) : "-";
  // The authuser field (basic_auth's user): unquoted, so a space is escaped too.
  const user = rec.authUser ? clfQuote(rec.authUser).replaceAll(" ", "\\x20") : "-";
  let line = `${rec.clientIp} - ${user} ${clfTime(rec.time)} ` +
    `"${clfQuote(rec.method)} ${clfQuote(rec.query ? `${rec.path}?${rec.query}` : rec.path)} ${
      PROTO_LINE[rec.protocol]
    }" ${rec.status} ${bytes}`;
  if (combined) line += ` "${clfQuote(rec.referer, true)}" "${clfQuote(rec.userAgent, true)}"`;
  return line;
}

/** One access record as a JSON line (without newline): the AccessRecord fields, time in ISO. */
export function formatAccessJson(rec: AccessRecord): string {
  // Only strings, numbers, booleans and null: plain JSON.stringify (no replacer) is safe and fast.
  return escapeC1(JSON.stringify({
    ...rec,
    time: new Date(rec.time).toISOString(),
    level: "info",
    msg: "access",
    durationMs: Math.round(rec.durationMs * 1000) / 1000,
    upstreamMs: rec.upstreamMs === null ? null : Math.round(rec.upstreamMs * 1000) / 1000,
  }));
}

/**
 * The access-log writer for `log.access_log`: none when false; with an injected `logger` (tests,
 * embedding) the records go to it as "access" lines; else formatted lines to `sink`.
 */
export function accessLogOf(
  setting: boolean | AccessLogFormat,
  o: { logger?: Logger; sink: LineSink },
): ((rec: AccessRecord) => void) | undefined {
  if (setting === false) return undefined;
  const logger = o.logger;
  if (logger) return (rec) => logger.info("access", { ...rec });
  return createAccessLog(setting === true ? "json" : setting, { sink: o.sink });
}

/** Creates the access-log writer the pipeline calls once per request (to stdout). */
export function createAccessLog(
  format: AccessLogFormat,
  opts: { sink?: LineSink } = {},
): (rec: AccessRecord) => void {
  const sink = opts.sink ?? stdioSink;
  switch (format) {
    case "json":
      return (rec) => sink(formatAccessJson(rec) + "\n", "stdout");
    case "common":
      return (rec) => sink(formatClf(rec, false) + "\n", "stdout");
    case "combined":
      return (rec) => sink(formatClf(rec, true) + "\n", "stdout");
  }
}
