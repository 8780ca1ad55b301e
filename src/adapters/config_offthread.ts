// A reload's parse and validation of a large config in a Web Worker (config_worker.ts), so the
// event loop keeps answering requests meanwhile: 5,000 routes (2.5 MiB of YAML) took 2-5 s of
// YAML parsing, schema and cross-field checks, during which nothing was served. The worker runs
// the same loadConfigText with the same environment and posts back the plain result; a config
// under OFF_THREAD_BYTES is loaded in place (a worker costs ~100 ms to start, more than such a
// config takes), and where no worker can start (the `deno bundle` file has no worker module
// beside it) every load is done in place.

import { loadConfigText } from "../config/load.ts";
import type { LoadResult } from "../config/load.ts";
import { parseConfig } from "../config/parse.ts";
import type { ConfigIssue } from "../config/parse.ts";
import type { Config } from "../config/schema.ts";
import { denoEnv } from "./config_source.ts";

/** Config text at least this long is parsed and validated in a worker on reload. */
export const OFF_THREAD_BYTES = 64 * 1024;

/** What the main thread sends the worker. */
export interface LoadRequest {
  text: string;
  file: string;
}

/** What the worker posts back: the LoadResult without its `locate` function. */
export type LoadReply =
  | {
    ok: true;
    config?: Config;
    candidate?: Config;
    issues: ConfigIssue[];
    /** Where the keys a reload may name after loading sit (JSON key path → position). */
    places: [string, { line: number; col: number }][];
    /** Paths of JSON.rawJSON values (exact big integers), which structured cloning flattens. */
    raw: (string | number)[][];
  }
  /** loadConfigText threw, or the result cannot be cloned: the main thread loads it itself. */
  | { ok: false; error: string };

/** The keys a reload's later failures name: the listen addresses (listener_set.ts listenKey). */
export function listenKeys(config: Config | undefined): (string | number)[][] {
  return [
    ["listen_addr"],
    ["http_redirect", "listen_addr"],
    ["tls", "acme", "http_listen_addr"],
    ["admin", "listen_addr"],
    ...Object.keys(config?.tcp ?? {}).map((name) => ["tcp", name, "listen_addr"]),
  ];
}

const isRawJson = (JSON as unknown as { isRawJSON(v: unknown): boolean }).isRawJSON;
const rawJson = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON;

/** The paths of the JSON.rawJSON values in `value` (set_json's exact big integers). */
export function rawJsonPaths(value: unknown, at: (string | number)[] = []): (string | number)[][] {
  if (isRawJson(value)) return [at];
  if (value === null || typeof value !== "object") return [];
  const out: (string | number)[][] = [];
  for (const [k, v] of Object.entries(value)) {
    out.push(...rawJsonPaths(v, [...at, Array.isArray(value) ? Number(k) : k]));
  }
  return out;
}

/**
 * Replaces the values at `paths` by `wrap` of them: JSON.rawJSON values, which structured cloning
 * refuses, become plain `{rawJSON}` objects for the trip, and JSON.rawJSON values again after it.
 */
function rewrap(config: Config, paths: (string | number)[][], wrap: (text: string) => unknown) {
  for (const path of paths) {
    let parent = config as unknown as Record<string | number, unknown>;
    for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
    const k = path.at(-1)!;
    parent[k] = wrap((parent[k] as { rawJSON: string }).rawJSON);
  }
}

/** The worker's reply for a request: loadConfigText's result, ready to be posted. */
export function loadReply(req: LoadRequest): LoadReply {
  try {
    const r = loadConfigText(req.text, { file: req.file, env: denoEnv });
    const config = r.config ?? r.candidate;
    const raw = config ? rawJsonPaths(config) : [];
    if (config) rewrap(config, raw, (rawJSON) => ({ rawJSON }));
    return {
      ok: true,
      config: r.config,
      candidate: r.candidate,
      issues: r.issues,
      places: r.locate ? listenKeys(config).map((k) => [JSON.stringify(k), r.locate!(k)]) : [],
      raw,
    };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

/** Set once a worker failed to start: later loads are done in place. */
let noWorker = false;

/**
 * Parses and validates `text` as loadConfigText does, in a worker when it is at least
 * `above` bytes long (default OFF_THREAD_BYTES); the result is the same. When the worker
 * cannot do it, the text is loaded here, and `onFallback` is told why.
 */
export function loadConfigOffThread(
  text: string,
  opts: { file: string; above?: number; onFallback?: (why: string) => void },
): Promise<LoadResult> {
  const inPlace = () => loadConfigText(text, { file: opts.file, env: denoEnv });
  if (noWorker || text.length < (opts.above ?? OFF_THREAD_BYTES)) {
    return Promise.resolve(inPlace());
  }
  return new Promise<LoadResult>((resolve, reject) => {
    // Loaded here: the worker module did not load (no worker is tried again), or the worker
    // could not load the text (an error, say a stack overflow with the worker's smaller stack,
    // is then the one a load here gives).
    const fallback = (why: string, broken: boolean) => {
      noWorker ||= broken;
      opts.onFallback?.(why);
      try {
        resolve(inPlace());
      } catch (err) {
        reject(err);
      }
    };
    // `deno bundle`'s one file has no worker module beside it (Deno would print the worker's
    // "Module not found" as an uncaught error): not tried.
    const url = new URL("./config_worker.ts", import.meta.url);
    if (url.protocol === "file:" && !denoEnv.exists(decodeURIComponent(url.pathname))) {
      return fallback(`No worker module at ${url.pathname}`, true);
    }
    let worker: Worker;
    try {
      worker = new Worker(url, { type: "module", name: "prox-config" });
    } catch (err) {
      return fallback(String(err), true);
    }
    const done = () => {
      worker.onmessage = worker.onerror = worker.onmessageerror = null;
      worker.terminate();
    };
    worker.onerror = (e) => {
      e.preventDefault();
      done();
      fallback(e.message, true);
    };
    worker.onmessageerror = () => {
      done();
      fallback("Cannot read the worker's reply", false);
    };
    worker.onmessage = (e: MessageEvent<LoadReply>) => {
      done();
      const reply = e.data;
      if (!reply.ok) return fallback(reply.error, false);
      const config = reply.config ?? reply.candidate;
      if (config) rewrap(config, reply.raw, rawJson);
      const places = new Map(reply.places);
      // A key not looked up in the worker (none so far) is found by parsing again, here.
      let parsed: ReturnType<typeof parseConfig> | undefined;
      const locate = (path: (string | number)[]) =>
        places.get(JSON.stringify(path)) ?? (parsed ??= parseConfig(text, opts.file)).locate(path);
      resolve({
        config: reply.config,
        candidate: reply.candidate,
        issues: reply.issues,
        locate,
      });
    };
    worker.postMessage({ text, file: opts.file } satisfies LoadRequest);
  });
}
