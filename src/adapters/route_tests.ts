// `prox test FILE`: table-driven routing tests for CI. Each case names a request and what Prox
// should do with it; each is explained by the live pipeline's own steps (prox explain) against
// the config, nothing is sent, and every difference is reported at its line in the test file.

import { LineCounter, parseDocument } from "yaml";
import type { Document } from "yaml";
import { z } from "zod";
import { explainRequest } from "../proxy/explain.ts";
import { mismatches } from "../proxy/explain_expect.ts";
import { offsetOf } from "../config/yaml_locate.ts";
import { suggest } from "../domain/suggest.ts";
import { loadSnapshot, offlineDeps, requestFromArgs } from "./explain_cli.ts";

const Case = z.object({
  name: z.string().optional(),
  /** `METHOD URL` or `URL` (GET); a bare path means http://localhost. */
  request: z.string().min(1),
  headers: z.record(z.string(), z.union([z.string(), z.number()]).transform(String)).optional(),
  client_ip: z.string().optional(),
  expect: z.object({
    route: z.string().nullable().optional(),
    action: z.enum(["proxy", "load_balance", "static", "redirect", "respond", "websocket", "error"])
      .optional(),
    status: z.int().min(100).max(599).optional(),
    location: z.string().optional(),
    file: z.string().optional(),
    page: z.string().optional(),
    upstream: z.string().optional(),
    target: z.string().optional(),
    headers: z.record(z.string(), z.string().nullable()).optional(),
  }).strict(),
}).strict();
const Cases = z.array(Case).min(1);
const CASE_KEYS = Object.keys(Case.shape);
const EXPECT_KEYS = Object.keys(Case.shape.expect.shape);

/** Runs the cases of `testsFile` against `configFile`; exit code 0 all passed, 1 otherwise. */
export async function routeTestsCommand(
  testsFile: string,
  o: { config: string; out: (s: string) => void; err: (s: string) => void },
): Promise<number> {
  let text: string;
  try {
    text = await Deno.readTextFile(testsFile);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "file not found" : String(e);
    o.err(`error: Cannot read tests "${testsFile}": ${why}`);
    return 1;
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  const at = (path: (string | number)[]) => {
    const { line, col } = lc.linePos(offsetOf(doc as Document, path));
    return `${testsFile}:${line}:${col}`;
  };
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      const { line, col } = lc.linePos(e.pos[0]);
      o.err(`${testsFile}:${line}:${col}: error: ${e.message.split("\n")[0]}`);
    }
    return 1;
  }
  const parsed = Cases.safeParse(doc.toJS());
  if (!parsed.success) {
    for (const i of parsed.error.issues) {
      const path = i.path as (string | number)[];
      if (i.code === "unrecognized_keys") {
        const known = path.at(-1) === "expect" ? EXPECT_KEYS : CASE_KEYS;
        for (const key of i.keys) {
          const guess = suggest(key, known);
          o.err(
            `${at([...path, key])}: error: ${[...path, key].join(".")}: Unknown key "${key}"` +
              (guess
                ? `\n  fix: Did you mean "${guess}"?`
                : `\n  fix: Allowed: ${known.join(", ")}`),
          );
        }
        continue;
      }
      o.err(`${at(path)}: error: ${path.join(".") || "(top)"}: ${i.message}`);
    }
    o.err(
      "  fix: the file is a list of cases: - { request: GET http://host/path, expect: { route: /path } }",
    );
    return 1;
  }
  const snapshot = await loadSnapshot(o.config, o.err);
  if (!snapshot) return 1;
  const deps = offlineDeps(snapshot);
  let passed = 0;
  let failed = 0;
  for (const [i, c] of parsed.data.entries()) {
    const headers = Object.entries(c.headers ?? {});
    const request = requestFromArgs(c.request.trim().split(/\s+/), {
      headers: headers.map(([k, v]) => `${k}: ${v}`),
      clientIp: c.client_ip,
    });
    const label = c.name ?? c.request;
    if (typeof request === "string") {
      failed++;
      // Said at the key that makes the request one no client can send.
      const key = request.startsWith("invalid client address")
        ? "client_ip"
        : request.startsWith("invalid header")
        ? "headers"
        : "request";
      o.out(`FAIL ${label}\n  ${at([i, key])}: ${request}`);
      continue;
    }
    const e = await explainRequest(request, deps);
    const bad = mismatches(c.expect, e, headers);
    if (bad.length === 0) {
      passed++;
      o.out(`ok   ${label}`);
      continue;
    }
    failed++;
    o.out(`FAIL ${label}`);
    for (const m of bad) {
      o.out(`  ${at([i, "expect", ...m.key.split(/\.(.*)/s).filter(Boolean)])}: ${m.message}`);
    }
  }
  o.out(`\n${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}
