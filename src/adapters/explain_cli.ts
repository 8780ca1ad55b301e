// `prox explain`: loads a config as `serve` would (same parse, validation and snapshot build),
// explains one request with src/proxy/explain.ts and prints the report as text or JSON.

import { formatIssue } from "../config/load.ts";
import { parseIp } from "../domain/ip.ts";
import { buildSnapshot } from "../proxy/snapshot.ts";
import { DRY_RUN_ID, explainRequest } from "../proxy/explain.ts";
import type { ExplainDeps, ExplainRequest, Explanation } from "../proxy/explain.ts";
import type { Snapshot } from "../proxy/snapshot.ts";
import { silentLogger } from "../ports.ts";
import {
  ConfigReadError,
  configReadError,
  denoEnv,
  loadSource,
  readReferencedFiles,
} from "./config_source.ts";
import { createDenoFileStore } from "./files_deno.ts";

/** RFC 9110 §5.6.2's token: a method or a header name. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** A request line from the command line: `[METHOD] URL`, a bare path meaning http://localhost. */
export function requestFromArgs(
  positionals: string[],
  o: { headers?: string[]; clientIp?: string },
): ExplainRequest | string {
  if (positionals.length === 0) {
    return "explain needs a URL, e.g. prox explain GET http://example.com/api";
  }
  if (positionals.length > 2) return `unexpected argument "${positionals[2]}"`;
  const [method, raw] = positionals.length === 2 ? positionals : ["GET", positionals[0]];
  if (!TOKEN.test(method)) return `invalid method "${method}"`;
  const text = raw.startsWith("/") ? `http://localhost${raw}` : raw;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `invalid URL "${raw}": use an absolute URL such as http://example.com/path`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `invalid URL "${raw}": the scheme must be http or https`;
  }
  const headers: [string, string][] = [];
  for (const h of o.headers ?? []) {
    const colon = h.indexOf(":");
    if (colon <= 0) return `invalid header "${h}": write it as 'Name: value'`;
    const name = h.slice(0, colon).trim();
    const value = h.slice(colon + 1).trim();
    // RFC 9110 §5.1, §5.5: a token for the name, no NUL, CR or LF in the value (Headers refuses
    // them, and a listener never hands such a request to Prox).
    if (!TOKEN.test(name)) return `invalid header "${h}": "${name}" is not a header name`;
    if (/[\0\r\n]/.test(value)) return `invalid header "${name}": NUL, CR or LF in its value`;
    headers.push([name, value]);
  }
  let clientIp = o.clientIp;
  if (clientIp !== undefined) {
    const addr = parseIp(clientIp);
    if (!addr || clientIp.includes("%")) {
      return `invalid client address "${clientIp}": use an IPv4 or IPv6 address, e.g. 10.0.0.7`;
    }
    // As a listener gives a peer: IPv6 without brackets.
    clientIp = clientIp.trim().replace(/^\[(.*)\]$/, "$1");
  }
  return { method: method.toUpperCase(), url: text, headers, clientIp };
}

/** Loads `file` as `serve` would into a snapshot; null (issues said on `err`) when it cannot. */
export async function loadSnapshot(
  file: string,
  err: (s: string) => void,
): Promise<Snapshot | null> {
  let loaded;
  try {
    loaded = await loadSource({ path: file });
  } catch (e) {
    const said = configReadError(file, e);
    err(
      said instanceof ConfigReadError
        ? `error: ${said.message}\n  fix: ${said.hint}`
        : `error: Cannot read config "${file}": ${said.message}`,
    );
    return null;
  }
  const errors = loaded.issues.filter((i) => i.severity === "error");
  if (!loaded.config || errors.length > 0) {
    for (const i of errors) err(formatIssue(i));
    err(`\n${file} is invalid: run prox validate -c ${file}`);
    return null;
  }
  // The files `serve` reads too (error pages, CA certificates, htpasswd files): without them no page was named.
  return buildSnapshot(loaded.config, {
    version: 1,
    env: denoEnv.env,
    files: await readReferencedFiles(loaded.config),
  });
}

/** What explain reads offline: the snapshot, the real files, the real clock, no health. */
export function offlineDeps(snapshot: Snapshot): ExplainDeps {
  return {
    snapshot,
    files: createDenoFileStore(),
    clock: { now: () => Date.now(), monotonic: () => performance.now() },
    logger: silentLogger,
  };
}

/** Runs `prox explain`; returns the exit code (0 explained, 1 invalid config). */
export async function explainCommand(
  file: string,
  o: {
    request: ExplainRequest;
    format: "text" | "json";
    out: (s: string) => void;
    err: (s: string) => void;
  },
): Promise<number> {
  const snapshot = await loadSnapshot(file, o.err);
  if (!snapshot) return 1;
  const e = await explainRequest(o.request, offlineDeps(snapshot));
  o.out(o.format === "json" ? JSON.stringify(e, null, 2) : formatExplanation(e));
  return 0;
}

/** The report as text, for a person. */
export function formatExplanation(e: Explanation): string {
  const r = e.request;
  const lines = [`${r.method} ${r.host}${r.path}${r.query}  (client ${r.clientIp})`, ""];
  if (e.routes.length > 0) {
    lines.push("Routes:");
    for (const v of e.routes) lines.push(`  ${v.matched ? "✓" : "✗"} ${v.key}: ${v.reason}`);
    lines.push("");
  }
  lines.push(`Route:  ${e.route ?? "(none)"}`, `Action: ${e.action}`);
  if (e.answer) {
    const a = e.answer;
    lines.push(`Answer: ${a.status}${a.message ? ` ${a.message}` : ""}`);
    if (a.location !== undefined) lines.push(`  Location: ${a.location}`);
    if (a.file !== undefined) lines.push(`  File:     ${a.file}`);
    if (a.page !== undefined) lines.push(`  Page:     ${a.page} (error_pages)`);
  }
  const u = e.upstream;
  if (u) {
    lines.push(`Upstream: ${u.url}${u.websocket ? " (WebSocket)" : ""}`);
    lines.push(`  policy ${u.policy}; pick: ${u.pick ?? "none"} (${u.pickReason})`);
    for (const t of u.targets) {
      const health = t.available === null ? "health unknown" : t.available ? "up" : "down";
      lines.push(`  - ${t.url}${t.backup ? " (backup)" : ""}: ${health}`);
    }
  }
  const h = e.requestHeaders;
  if (h) {
    lines.push("Request headers upstream (diff):");
    for (const k of h.removed) lines.push(`  - ${k}`);
    for (const [k, was, now] of h.changed) lines.push(`  ~ ${k}: ${was} → ${now}`);
    for (const [k, v] of h.added) {
      // Explain's own id means "a new one per request", not this value.
      const shown = k === "x-request-id" && v === DRY_RUN_ID ? "(a new id per request)" : v;
      lines.push(`  + ${k}: ${shown}`);
    }
  }
  if (e.responseRules.length > 0) {
    lines.push("Response header rules:");
    for (const s of e.responseRules) lines.push(`  ${s}`);
  }
  for (const l of e.rateLimits) {
    const key = l.exempt
      ? "exempt"
      : l.keys.length === 0
      ? "no key (on_missing_key decides)"
      : l.keys.join(" and ");
    lines.push(`Rate limit ${l.policy} by ${l.by}: key ${key}`);
  }
  for (const n of e.notes) lines.push(`Note: ${n}`);
  return lines.join("\n");
}
