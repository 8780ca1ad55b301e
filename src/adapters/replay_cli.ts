// `prox replay`: streams JSON access logs (files, gzip files, or stdin) through src/proxy/replay.ts
// against a candidate config (and optionally the current one) and prints what would change.

import { ASSUMPTIONS, Replayer } from "../proxy/replay.ts";
import type { ReplayTally } from "../proxy/replay_tally.ts";
import { loadSnapshot, offlineDeps } from "./explain_cli.ts";

/**
 * Longest line read; a longer one is skipped. A request head is at most ~64 KiB, but its access
 * line holds the URL twice (path and Referer) and writes a C1 byte of a User-Agent in six.
 */
const MAX_LINE = 1024 * 1024;

/** The lines of a byte stream, one at a time (memory: one line); overlong ones as null. */
export async function* readLines(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string | null> {
  let buf = "";
  let overlong = false;
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield overlong ? null : buf.slice(0, nl);
      overlong = false;
      buf = buf.slice(nl + 1);
    }
    if (buf.length > MAX_LINE) {
      overlong = true;
      buf = "";
    }
  }
  if (overlong) yield null;
  else if (buf !== "") yield buf;
}

/** Options of `prox replay`. */
export interface ReplayOptions {
  config: string;
  against?: string;
  format: "text" | "json";
  failOnChange: boolean;
  samples?: number;
  out: (s: string) => void;
  err: (s: string) => void;
  /** Standard input, for the file name `-`. */
  stdin?: ReadableStream<Uint8Array>;
}

/**
 * Runs `prox replay`: exit 0 done, 1 when a config or log cannot be read, holds lines but no
 * access record, or (with `failOnChange`) when any request would change.
 */
export async function replayCommand(files: string[], o: ReplayOptions): Promise<number> {
  const candidate = await loadSnapshot(o.config, o.err);
  if (!candidate) return 1;
  const current = o.against ? await loadSnapshot(o.against, o.err) : undefined;
  if (current === null) return 1;
  const replayer = new Replayer(offlineDeps(candidate), {
    against: current ? offlineDeps(current) : undefined,
    samples: o.samples,
  });
  for (const file of files) {
    let stream: ReadableStream<Uint8Array>;
    try {
      stream = file === "-" ? o.stdin ?? Deno.stdin.readable : (await Deno.open(file)).readable;
    } catch (e) {
      const why = e instanceof Deno.errors.NotFound ? "file not found" : String(e);
      o.err(`error: Cannot read access log "${file}": ${why}`);
      return 1;
    }
    if (file.endsWith(".gz")) stream = await gunzipped(stream);
    const name = file === "-" ? "stdin" : file;
    let n = 0;
    try {
      for await (const line of readLines(stream)) {
        n++;
        if (line === null) replayer.tally.skip(`${name}:${n}`, `longer than ${MAX_LINE} bytes`);
        else await replayer.line(line, `${name}:${n}`);
      }
    } catch (e) {
      o.err(`error: Cannot read access log "${file}" past line ${n}: ${errText(e)}`);
      return 1;
    }
  }
  const t = replayer.tally;
  const source = { config: o.config, against: o.against ?? null, files };
  o.out(
    o.format === "json" ? JSON.stringify(reportJson(t, source), null, 2) : reportText(t, source),
  );
  if (t.requests === 0 && t.unreplayable > 0) {
    // Access records, but none could be replayed: nothing was checked either; say what was found.
    const records = t.unreplayable === 1
      ? "the 1 access record"
      : `the ${t.unreplayable} access records`;
    o.err(
      `error: None of ${records} in ${
        files.join(", ")
      } could be replayed (${t.firstUnreplayable})\n` +
        "  fix: replay needs the host and path each record logged to make a URL; check the log was not cut or edited",
    );
    return 1;
  }
  if (t.requests === 0 && t.skipped > t.logLines) {
    // Lines, but none a JSON access record (NCSA lines, another program's log): nothing was
    // checked, which a CI job must not take for "nothing changed".
    o.err(
      `error: No JSON access records in ${files.join(", ")}\n` +
        "  fix: replay reads log.access_log: json lines (the default), as Prox writes them to stdout",
    );
    return 1;
  }
  return o.failOnChange && t.changed > 0 ? 1 : 0;
}

/**
 * A gzip stream decompressed, every member of it (RFC 1952 §2.2: `cat a.gz b.gz`, bgzip, pigz
 * write several), as zcat reads it: DecompressionStream stops at the first member's end and
 * fails on the next. node:zlib is loaded only for a .gz log.
 */
async function gunzipped(stream: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> {
  const [{ createGunzip }, { Readable }] = await Promise.all([
    import("node:zlib"),
    import("node:stream"),
  ]);
  // The Node and web stream types disagree only on details these calls do not use.
  // deno-lint-ignore no-explicit-any
  const source = Readable.fromWeb(stream as any);
  const gunzip = createGunzip();
  // An error of the file's stream reaches the reader as the gunzip stream's.
  source.on("error", (e) => gunzip.destroy(e));
  return Readable.toWeb(source.pipe(gunzip)) as unknown as ReadableStream<Uint8Array>;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

interface Source {
  config: string;
  against: string | null;
  files: string[];
}

/** The report for machines. */
export function reportJson(t: ReplayTally, s: Source) {
  return {
    config: s.config,
    against: s.against,
    files: s.files,
    requests: t.requests,
    unchanged: t.unchanged,
    changed: t.changed,
    notFound: t.notFound,
    changes: t.groups(),
    otherChanges: t.otherChanges,
    uncertain: t.uncertain(),
    assumptions: ASSUMPTIONS,
    skipped: { lines: t.skipped, logLines: t.logLines, first: t.skippedSamples },
  };
}

/** The report for a person. */
export function reportText(t: ReplayTally, s: Source): string {
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const basis = s.against ? `compared with ${s.against}` : "compared with the logged outcomes";
  const lines = [
    `Replayed ${plural(t.requests, "request")} from ${
      s.files.join(", ")
    } against ${s.config}, ${basis}`,
    `  ${t.unchanged} unchanged`,
    `  ${t.changed} changed`,
  ];
  if (t.notFound > 0) {
    lines.push(`  ${t.notFound} now ${t.notFound === 1 ? "gets" : "get"} 404: no route matches`);
  }
  const groups = t.groups();
  if (groups.length > 0) {
    lines.push("", "Changes (from  ->  to, then sample requests):");
    for (const g of groups) {
      lines.push(`  ${g.from}  ->  ${g.to}  (${plural(g.count, "request")})`);
      for (const sample of g.samples) lines.push(`      ${sample}`);
    }
    if (t.otherChanges > 0) {
      lines.push(`  ${plural(t.otherChanges, "more changed request")} in groups not listed`);
    }
  }
  const doubts = t.uncertain();
  if (doubts.length > 0) {
    lines.push("", "Uncertain (these routes decide on what the access log does not hold):");
    for (const u of doubts) {
      lines.push(`  ${u.route} (${plural(u.requests, "request")}): ${u.reason}`);
    }
  }
  lines.push("", "Assumed:");
  for (const a of ASSUMPTIONS) lines.push(`  ${a}`);
  if (t.skipped > 0) {
    const own = t.logLines > 0 ? ` (${t.logLines} of them Prox's own log lines)` : "";
    const bad = t.unreplayable > 0
      ? ` (${t.unreplayable} of them access records that cannot be replayed)`
      : "";
    const what = t.skipped === 1
      ? bad ? "line" : "line that is not a request"
      : bad
      ? "lines"
      : "lines that are not requests";
    lines.push("", `Skipped ${t.skipped} ${what}${own}${bad}`);
    for (const x of t.skippedSamples) lines.push(`  ${x}`);
    if (t.skipped - t.logLines > t.skippedSamples.length) lines.push("  …");
  }
  return lines.join("\n");
}
