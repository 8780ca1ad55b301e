// Differential testing of Prox's own HTTP/1.1 engine against Deno.serve: one recording upstream,
// two Prox instances on the same config (one per engine), and a raw client that sends the same
// bytes to both and compares what came back and what the upstream saw. Used by
// h1_engine_diff_test.ts (a fixed corpus, in CI) and bench/h1_engine_diff.ts (seeded random
// mutations, by hand).
import { startProxy } from "./_proxy.ts";
import type { TestProxy } from "./_proxy.ts";
import { ByteReader, bytes, recordingUpstream } from "./_h1_diff_upstream.ts";
import type { Seen } from "./_h1_diff_upstream.ts";
import { knownRewrites } from "./_h1_diff_known.ts";
import { waitFor } from "../_harness.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger } from "../../src/ports.ts";

/** One answer as a client reads it. */
export interface Answer {
  /** The status line's version ("1.1", or "1.0" to an HTTP/1.0 client). */
  version: string;
  status: number;
  reason: string;
  fields: [string, string][];
  framing: "length" | "chunked" | "close" | "none";
  body: string;
  trailers?: string;
}

/** What a client saw on one connection. */
export interface Outcome {
  answers: Answer[];
  /** How the exchange ended: the server closed, left it open (a probe was answered), or went silent. */
  end: "closed" | "open" | "silent" | "malformed";
  upstream: Seen[];
  /** The access records Prox wrote for the exchange. */
  access: Record<string, unknown>[];
}

/** Reads one answer (its 1xx heads skipped into `interim`); null when the stream ended first. */
async function readAnswer(r: ByteReader, head: boolean): Promise<Answer | null | "malformed"> {
  const h = await r.head();
  if (h === null) return r.buf.length > 0 ? "malformed" : null;
  const lines = h.split("\r\n");
  const m = /^HTTP\/(1\.[01]) (\d{3}) ?(.*)$/.exec(lines[0]);
  if (!m) return "malformed";
  const fields: [string, string][] = lines.slice(1).map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
  const status = Number(m[2]);
  const a: Answer = { version: m[1], status, reason: m[3], fields, framing: "none", body: "" };
  const get = (n: string) => fields.find(([k]) => k.toLowerCase() === n)?.[1];
  if (head || status < 200 || status === 204 || status === 304) return a;
  if (get("transfer-encoding")?.toLowerCase().endsWith("chunked")) {
    a.framing = "chunked";
    const b = await r.chunked();
    if (b === null) return "malformed";
    a.body = b.body;
    if (b.trailers) a.trailers = b.trailers;
  } else if (get("content-length") !== undefined) {
    a.framing = "length";
    const b = await r.take(Number(get("content-length")));
    if (b === null) return "malformed";
    a.body = b;
  } else {
    a.framing = "close";
    a.body = await r.rest();
  }
  return a;
}

/**
 * The methods of the requests in `input`, in order (a HEAD's answer has no body): heads found by
 * their blank line, bodies skipped by a plain Content-Length or chunked framing.
 */
export function methodsOf(input: string): string[] {
  const out: string[] = [];
  let at = 0;
  while (at < input.length) {
    while (input.startsWith("\r\n", at)) at += 2;
    const m = /\r?\n\r?\n/.exec(input.slice(at));
    if (!m) break;
    const head = input.slice(at, at + m.index);
    at += m.index + m[0].length;
    const line = /^([A-Za-z-]+) \S+ HTTP\/1\.[01]$/m.exec(head.split(/\r?\n/)[0]);
    if (!line) break;
    out.push(line[1]);
    if (/^transfer-encoding:.*chunked/im.test(head)) {
      const end = input.indexOf("0\r\n\r\n", at);
      if (end < 0) break;
      at = end + 5;
    } else {
      const cl = /^content-length:[ \t]*(\d+)[ \t]*$/im.exec(head);
      at += cl ? Number(cl[1]) : 0;
    }
  }
  return out;
}

/** One input: the bytes a client writes, as writes (each a string), with pauses between them. */
export interface Input {
  name: string;
  writes: string[];
  /** Milliseconds between writes (default 0: back to back, still separate writes). */
  pauseMs?: number;
  /** Ends the client's sending side after the writes (a half-close; no probe can follow). */
  halfClose?: boolean;
}

const PROBE = "GET /__probe HTTP/1.1\r\nHost: probe.test\r\nConnection: close\r\n\r\n";

/**
 * Sends `input` on a new connection to `port` and reads the answers: as many as it sent requests
 * (then a probe tells an open connection from a closed one), or until the server closes or stays
 * silent for `quietMs`.
 */
export async function exchange(
  port: number,
  input: Input,
  quietMs = 500,
): Promise<Omit<Outcome, "upstream" | "access">> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const r = new ByteReader(c);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let silent = false;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      silent = true;
      try {
        c.close();
      } catch { /* closed */ }
    }, quietMs);
  };
  const expected = methodsOf(input.writes.join(""));
  const answers: Answer[] = [];
  let end: Outcome["end"] = "closed";
  try {
    arm();
    for (let i = 0; i < input.writes.length; i++) {
      if (i > 0 && input.pauseMs) await new Promise((res) => setTimeout(res, input.pauseMs));
      try {
        await writeAll(c, bytes(input.writes[i]));
      } catch {
        break; // closed on us (an early 400): read what came
      }
    }
    if (input.halfClose) await (c as Deno.TcpConn).closeWrite().catch(() => {});
    for (;;) {
      const a = await readAnswer(r, expected[answers.length] === "HEAD");
      if (a === "malformed") {
        end = silent ? "silent" : "malformed";
        break;
      }
      if (a === null) {
        end = silent ? "silent" : "closed";
        break;
      }
      arm();
      if (a.status >= 100 && a.status < 200) continue;
      answers.push(a);
      if (answers.length < expected.length) continue;
      if (a.framing === "close" || input.halfClose) break;
      // All answered: is the connection still open? A probe on it tells.
      try {
        await writeAll(c, bytes(PROBE));
      } catch {
        break;
      }
      const p = await readAnswer(r, false);
      end = p !== null && p !== "malformed" ? "open" : silent ? "silent" : "closed";
      break;
    }
  } finally {
    clearTimeout(timer);
    try {
      c.close();
    } catch { /* closed by the timer */ }
  }
  return { answers, end };
}

async function writeAll(c: Deno.Conn, b: Uint8Array): Promise<void> {
  for (let off = 0; off < b.length;) off += await c.write(b.subarray(off));
}

/** The config both Prox instances run (the engine chosen per instance). */
export function diffConfig(upstream: string, engine: "prox" | "deno", staticRoot: string): string {
  return `
protocols: { http1_engine: ${engine} }
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${upstream}"
    retries: { attempts: 0 }
  "b.test/":
    type: proxy
    target: "${upstream}"
    response_headers: { add: { x-route: b } }
  "/files":
    type: static
    root: "${staticRoot}"
  "/old":
    type: redirect
    target: "/new"
    status_code: 308
  "/dead":
    type: proxy
    target: "http://127.0.0.1:1"
    retries: { attempts: 0 }
  "/gz":
    type: proxy
    target: "${upstream}"
    compress: { min_length: 1 }
  "/cors":
    type: proxy
    target: "${upstream}"
    cors: { allow_origins: ["https://app.test"], allow_headers: [X-A] }
  "/small":
    type: proxy
    target: "${upstream}"
    max_request_body: 3
limits: { max_header_bytes: 32KiB }
`;
}

/** Two Prox instances on one recording upstream: `deno` and `prox`. Dispose to stop all. */
export async function diffRig() {
  const up = recordingUpstream();
  const root = await Deno.makeTempDir({ prefix: "prox-diff-" });
  await Deno.writeTextFile(`${root}/a.txt`, "static file body\n");
  // PROX_H1_ENGINE would force one engine on both: each config says its own here.
  const forced = Deno.env.get("PROX_H1_ENGINE");
  Deno.env.delete("PROX_H1_ENGINE");
  // Each instance's access records (what an operator sees of a request).
  const logs = { deno: [] as Record<string, unknown>[], prox: [] as Record<string, unknown>[] };
  const logger = (into: Record<string, unknown>[]): Logger => ({
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => {
      if (m === "access") into.push(f!);
    },
  });
  let deno: TestProxy, prox: TestProxy;
  try {
    deno = await startProxy(diffConfig(up.url, "deno", root), { logger: logger(logs.deno) });
    prox = await startProxy(diffConfig(up.url, "prox", root), { logger: logger(logs.prox) });
  } finally {
    if (forced !== undefined) Deno.env.set("PROX_H1_ENGINE", forced);
  }
  /** Runs `input` against one engine and returns what the client and the upstream saw. */
  const run = async (which: "deno" | "prox", input: Input, quietMs?: number): Promise<Outcome> => {
    up.seen.length = 0;
    logs[which].length = 0;
    const port = which === "deno" ? deno.port : prox.port;
    const o = await exchange(port, input, quietMs);
    // A request is logged once its answer went out, which may be just after the client read it.
    // Answers without a request id are Deno.serve's own (a 400 for a malformed head): not logged.
    const logged = o.answers.filter((a) => a.fields.some(([k]) => k === "x-request-id")).length;
    await waitFor(() => logs[which].length >= logged, { timeoutMs: 2000 }).catch(() => {});
    return { ...o, upstream: up.seen.splice(0), access: logs[which].splice(0) };
  };
  return {
    deno: deno!,
    prox: prox!,
    up,
    run,
    async [Symbol.asyncDispose]() {
      await prox.server.shutdown();
      await deno.server.shutdown();
      await up[Symbol.asyncDispose]();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Fields that differ between any two runs (time, request ids, ports): masked before comparing. */
const VOLATILE = new Set(["date", "x-request-id", "last-modified", "etag"]);

/** Access record fields that differ between any two runs (times, ids). */
const ACCESS_VOLATILE = new Set(["time", "durationMs", "upstreamMs", "requestId", "ttfbMs"]);

/** An outcome in comparable form (normalize). */
export interface Normalized {
  end: string;
  answers: {
    version: string;
    status: number;
    reason: string;
    fields: [string, string][];
    framing: string;
    body: string;
    trailers?: string;
  }[];
  upstream: { line: string; fields: [string, string][]; body: string }[];
  access: Record<string, unknown>[];
}

/**
 * The comparable form of an outcome: names lowercase, volatile values masked, the proxy's own
 * port masked, fields sorted by name (Fetch's Headers sort theirs; the engine keeps the wire's
 * order), same-name fields in the order they came.
 */
export function normalize(o: Outcome, port: number): Normalized {
  const mask = (s: string) => s.replaceAll(String(port), "PORT");
  const fields = (fs: [string, string][]): [string, string][] =>
    fs.map(([k, v]): [string, string] => {
      const n = k.toLowerCase();
      return [n, VOLATILE.has(n) ? "*" : mask(v)];
    }).sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
  return {
    end: o.end,
    answers: o.answers.map((a) => ({
      version: a.version,
      status: a.status,
      reason: a.reason,
      fields: fields(a.fields),
      framing: a.framing,
      body: mask(a.body).replace(/[0-9a-f]{8}-[0-9a-z]{6}/g, "ID"),
      ...(a.trailers === undefined ? {} : { trailers: a.trailers }),
    })),
    upstream: o.upstream.map((s) => ({ line: s.line, fields: fields(s.fields), body: s.body })),
    // Sorted, not in the order they were written: pipelined requests' answers may end in either order.
    access: o.access.map((r) =>
      Object.fromEntries(
        Object.entries(r).filter(([k]) => !ACCESS_VOLATILE.has(k)).map((
          [k, v],
        ) => [k, typeof v === "string" ? mask(v) : v]),
      )
    ).sort((a, b) => JSON.stringify(a) < JSON.stringify(b) ? -1 : 1),
  };
}

/** Both sides of one input, normalized, and whether they differ beyond the known differences. */
export interface Comparison {
  deno: Normalized;
  prox: Normalized;
  /** Equal as they came. */
  same: boolean;
  /** Equal once the known differences are rewritten (_h1_diff_known.ts). */
  known: boolean;
}

/**
 * Runs `input` against both engines and compares. A pair that differs beyond the known
 * differences is run once more with a longer quiet time, so that a slow moment of this machine
 * (an answer later than `quietMs`, a request of the previous input reaching the upstream late)
 * is not taken for a difference.
 */
export async function compare(
  rig: Awaited<ReturnType<typeof diffRig>>,
  input: Input,
  quietMs = 500,
): Promise<Comparison> {
  let c: Comparison | undefined;
  for (const quiet of [quietMs, quietMs * 6]) {
    const deno = normalize(await rig.run("deno", input, quiet), rig.deno.port);
    const prox = normalize(await rig.run("prox", input, quiet), rig.prox.port);
    const same = JSON.stringify(deno) === JSON.stringify(prox);
    const [kd, kp] = knownRewrites(deno, prox, undefined, input.writes.join(""));
    const known = same || JSON.stringify(kd) === JSON.stringify(kp);
    c = { deno, prox, same, known };
    if (known) break;
  }
  return c!;
}
