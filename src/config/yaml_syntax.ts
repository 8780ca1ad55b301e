// YAML syntax errors as problems a user can act on: where the mistake is (an unclosed quote at its
// opening, not at the end of the file), what it is, and how to fix it; one per line.

import { isAlias, isMap, isScalar, isSeq, visit } from "yaml";
import { isMergePair } from "./yaml_locate.ts";
import type { Document, LineCounter, Node, Scalar } from "yaml";

/** A syntax problem at an offset of the source. */
export interface SyntaxProblem {
  offset: number;
  message: string;
  hint: string;
}

const GENERIC_HINT = "Check the indentation and quoting on this line";
const DUPLICATE_HINT = "Each key may appear once in a mapping (of two equal route keys the Rust " +
  "Prox silently used the last); merge or rename the duplicate";

/**
 * The document's syntax errors, unknown tags and unresolved aliases, at most one per line, in
 * file order.
 */
export function syntaxProblems(doc: Document, text: string, lc: LineCounter): SyntaxProblem[] {
  const out: SyntaxProblem[] = [];
  // A mis-indented line yields two errors at one spot; the multi-line key one explains it.
  const errors = [...doc.errors].sort((a, b) =>
    a.pos[0] - b.pos[0] ||
    Number(b.code === "MULTILINE_IMPLICIT_KEY") - Number(a.code === "MULTILINE_IMPLICIT_KEY")
  );
  let last = -1;
  for (const err of errors) {
    if (err.pos[0] === last) continue;
    last = err.pos[0];
    const message = err.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    out.push(explain(doc, text, lc, { code: err.code, pos: err.pos, message }));
  }
  for (const w of doc.warnings) {
    // `!env X`, `!secret x`, `!Ref x` from other tools: the value would load as the bare text.
    if (w.code !== "TAG_RESOLVE_FAILED") continue;
    const tag = /Unresolved tag: (\S+)/.exec(w.message)?.[1] ?? "";
    out.push({
      offset: w.pos[0],
      message: `Unknown YAML tag ${tag}: Prox expands no tags, so the value would load as written`,
      hint: "Remove the tag and write the value itself (to fill in values from the environment, " +
        "generate the file, e.g. prox serve -c <(envsubst < config.tpl.yaml))",
    });
  }
  {
    visit(doc, {
      Alias(_, node, ancestors) {
        const target = node.resolve(doc);
        if (target !== undefined && node.range && ancestors.includes(target)) {
          // `&a [*a]`: a value holding itself would repeat forever (it overflowed the stack).
          out.push({
            offset: node.range[0],
            message: `The alias *${node.source} sits inside the value anchored &${node.source}, ` +
              "so that value would contain itself without end",
            hint: "Point the alias at a value defined outside this one",
          });
          return;
        }
        if (target !== undefined || !node.range) return;
        const name = node.source;
        // `*.example.com/api:` unquoted: YAML reads an alias, not a wildcard host.
        const looksLiteral = /^[.\/]|[\/:]/.test(name);
        out.push({
          offset: node.range[0],
          message: looksLiteral
            ? `An unquoted * starts a YAML alias: *${name.replace(/:$/, "")} refers to no anchor`
            : `Unknown anchor "${name}" in alias *${name}`,
          hint: looksLiteral
            ? `Quote it: "*${name.replace(/:$/, "")}"${name.endsWith(":") ? ":" : ""}`
            : `Mark the value to reuse with &${name} above this line ` +
              "(an anchor must come before its aliases)",
        });
      },
      Map(_, map) {
        // `404:` and `"404":` are two keys to YAML, one to Prox: the second replaced the first.
        const keys = new Set<string>();
        for (const p of map.items) {
          if (!isScalar(p.key) || isMergePair(p)) continue;
          const key = String(p.key.value);
          if (keys.has(key) && p.key.range) {
            out.push({
              offset: p.key.range[0],
              message: `YAML syntax error: Duplicate key "${key}"`,
              hint: DUPLICATE_HINT,
            });
          }
          keys.add(key);
        }
      },
      Pair(_, pair) {
        if (!isMergePair(pair)) return;
        const sources = isSeq(pair.value) ? pair.value.items : [pair.value];
        // (An alias without its anchor is reported as such.)
        const bad = sources.find((v) =>
          isAlias(v) ? v.resolve(doc) !== undefined && !isMap(v.resolve(doc)) : !isMap(v)
        );
        const at = (bad as Node | null)?.range?.[0] ?? (pair.key as Node).range?.[0];
        if (!bad || at === undefined) return;
        out.push({
          offset: at,
          message: "A merge key (<<) takes a mapping, an alias of one (*name) or a list of them",
          hint: "Point it at an anchored mapping, e.g. <<: *defaults",
        });
      },
    });
  }
  // After `*.example.com/:` read as an alias, the lines below it only fail in its wake.
  const literal = out.find((p) => p.message.startsWith("An unquoted *"));
  if (literal) return [literal, ...out.filter((p) => p.offset < literal.offset)];
  const seen = new Set<number>();
  return out.filter((p) => {
    const line = lc.linePos(p.offset).line;
    if (seen.has(line)) return false;
    seen.add(line);
    return true;
  }).sort((a, b) => a.offset - b.offset);
}

function explain(
  doc: Document,
  text: string,
  lc: LineCounter,
  err: { code: string; pos: [number, number]; message: string },
): SyntaxProblem {
  const at = err.pos[0];
  const syntax = (message: string, hint: string, offset = at) => ({
    offset,
    message: `YAML syntax error: ${message}`,
    hint,
  });
  switch (err.code) {
    case "DUPLICATE_KEY": {
      const key = /^("[^"\n]*"|'[^'\n]*'|[^:\n]*?)\s*:/.exec(text.slice(at))?.[1];
      return syntax(
        key ? `Duplicate key ${/^["']/.test(key) ? key : `"${key}"`}` : err.message,
        DUPLICATE_HINT,
      );
    }
    case "MULTIPLE_DOCS":
      return syntax(
        "A second YAML document starts here (---): a config is one document",
        "Remove this --- line and merge what follows into the document above, or move it to " +
          "its own file",
      );
    case "RESOURCE_EXHAUSTION":
      // `[[[[…` thousands deep: the parser ran out of stack, and the value is no text to quote.
      return syntax(
        "The value nests too deeply ([ or { inside each other hundreds of times)",
        "Write it with a few levels of nesting",
      );
    case "TAB_AS_INDENT":
      return syntax(err.message, "Indent with spaces: YAML does not allow tabs there");
    case "BLOCK_AS_IMPLICIT_KEY": {
      // `body: Error: not found`: the second ": " would start a mapping inside the value.
      const line = text.split(/\r?\n/)[lc.linePos(at).line - 1] ?? "";
      const m = /^\s*(?:- )?([^\s:#"'][^:#]*?):\s+(.*?)\s*(?:\s#.*)?$/.exec(line);
      if (!m || !/: /.test(m[2]) || /^["'[{]/.test(m[2])) return syntax(err.message, GENERIC_HINT);
      const quoted = m[2].replaceAll("\\", "\\\\").replaceAll('"', '\\"');
      return syntax(
        'The value holds ": ", which YAML reads as the start of another key',
        `Quote the value: ${m[1]}: "${quoted}"`,
      );
    }
    case "MISSING_CHAR": {
      // `status` alone on its line: a key without its colon.
      const word = /^([A-Za-z_][\w.-]*)[ \t]*(?:#.*)?(?:\r?\n|$)/.exec(text.slice(at))?.[1];
      if (/^Implicit map keys need to be followed by map values/.test(err.message) && word) {
        return syntax(
          `"${word}" has no colon after it`,
          `Write ${word}: and its value, or remove the line`,
        );
      }
      const quoted = /quote$/.test(err.message) ? openQuote(doc, at) : undefined;
      if (quoted === undefined) return syntax(err.message, GENERIC_HINT);
      return syntax(
        "This quote is never closed: the value runs on to the end of the file",
        "Close the quote at the end of the value",
        quoted,
      );
    }
    case "BAD_INDENT": {
      if (/^All mapping items must start at the same column/.test(err.message)) {
        const between = betweenIndents(text, lc.linePos(at).line - 1);
        if (between) {
          const { line, indent, deeper, shallower } = between;
          const spaces = (n: number) => n === 1 ? "1 space" : `${n} spaces`;
          return syntax(
            `Line ${line} is indented ${spaces(indent)}, which lines up with no key above it`,
            `Indent it ${spaces(deeper.indent)} like line ${deeper.line} (a key of that mapping)` +
              (shallower ? `, or ${shallower.indent} like line ${shallower.line}` : ""),
            lc.lineStarts[line - 1] + indent,
          );
        }
      }
      const close = /end with an? ([\]}])$/.exec(err.message)?.[1];
      const open = close ? openFlow(doc, at) : undefined;
      if (open === undefined) return syntax(err.message, GENERIC_HINT);
      const o = close === "]" ? "[" : "{";
      return syntax(
        `This ${o} is never closed`,
        `Close it with ${close} (a ${o} … ${close} value may go on over the next lines only ` +
          "while they are indented more than its key)",
        open,
      );
    }
    case "MULTILINE_IMPLICIT_KEY": {
      const { line, col } = lc.linePos(at);
      const lines = text.split(/\r?\n/);
      const indent = (l: string) => l.length - l.trimStart().length;
      const next = lines[line] ?? "";
      const spans = lc.linePos(err.pos[1]).line > line;
      if (spans && /:( |$)/.test(next) && indent(next) > indent(lines[line - 1] ?? "")) {
        // The line below is indented deeper than its siblings, so it continues this value.
        return syntax(
          `Line ${line + 1} is indented deeper than the key on line ${line}, so it runs into ` +
            "that key's value",
          `Indent line ${line + 1} like the key above it`,
          lc.lineStarts[line] + indent(next),
        );
      }
      return col >= 1
        ? syntax(
          "A key needs a colon and a space before its value",
          "Write key: value (a space after the colon)",
        )
        : syntax(err.message, GENERIC_HINT);
    }
    default: {
      // `listen_addr: [::]:443`, `root: @app`: a plain value cannot start with these characters.
      const line = text.split(/\r?\n/)[lc.linePos(at).line - 1] ?? "";
      const here = /^[[{*&!%@`][^,\]}\r\n#]*/.exec(text.slice(at))?.[0].trim();
      const value = here ||
        /^\s*(?:- )?[^\s:#][^:#]*:\s+([[{*&!%@`|>][^#]*?)\s*$/.exec(line)?.[1];
      const quote = value && !/^[|>][-+0-9]*$/.test(value)
        ? `If ${value} is meant as text, quote it: "${value.replaceAll('"', '\\"')}"`
        : undefined;
      // `[::]:443`: the caret was at ":443", after a list YAML had read whole.
      const flow = !here && value && /^Unexpected scalar at node end/.test(err.message)
        ? /^(\[[^\]]*\]|\{[^}]*\})./.exec(value)?.[1]
        : undefined;
      if (flow && value && quote) {
        const start = lc.lineStarts[lc.linePos(at).line - 1] + line.indexOf(value);
        return syntax(
          `A plain value cannot start with ${flow[0]}: YAML reads ${flow} as a ` +
            `${flow[0] === "[" ? "list" : "mapping"}, then cannot read what follows`,
          quote,
          start,
        );
      }
      return syntax(err.message, quote ?? GENERIC_HINT);
    }
  }
}

/**
 * A line (index `i`) indented less than the line above it but more than the key that holds that
 * line: the nearest key columns above and below its indentation, with their 1-based lines.
 */
function betweenIndents(text: string, i: number): {
  line: number;
  indent: number;
  deeper: { indent: number; line: number };
  shallower?: { indent: number; line: number };
} | undefined {
  const lines = text.split(/\r?\n/);
  const column = (l: string) => l.length - l.trimStart().length;
  // The column of the keys a line holds: after its list dashes (`- path: /a`).
  const keyColumn = (l: string) => column(l) + (/^(?:- +)*/.exec(l.trimStart())?.[0].length ?? 0);
  const indent = column(lines[i] ?? "");
  const levels: { indent: number; line: number }[] = [];
  for (let j = i - 1; j >= 0; j--) {
    const l = lines[j];
    if (l.trim() === "" || l.trimStart().startsWith("#")) continue;
    const min = levels.at(-1)?.indent ?? Infinity;
    if (column(l) < min || levels.length === 0) levels.push({ indent: keyColumn(l), line: j + 1 });
    if (column(l) === 0) break;
  }
  const deeper = levels.filter((l) => l.indent > indent).at(-1);
  // Dedented from the line above, yet onto no column of a key that holds it.
  if (!deeper || levels[0].indent <= indent || levels.some((l) => l.indent === indent)) {
    return undefined;
  }
  const shallower = levels.find((l) => l.indent < indent);
  return { line: i + 1, indent, deeper, shallower };
}

/** The start of the innermost flow collection (`{…}`, `[…]`) open before `at`. */
function openFlow(doc: Document, at: number): number | undefined {
  let found: number | undefined;
  const check = (node: { flow?: boolean; range?: [number, number, number] | null }) => {
    const start = node.range?.[0];
    if (node.flow && start !== undefined && start < at && (found === undefined || start > found)) {
      found = start;
    }
  };
  visit(doc, { Map: (_, n) => check(n), Seq: (_, n) => check(n) });
  return found;
}

/** The start of the quoted scalar (value or key) that an unclosed-quote error at `end` ends. */
function openQuote(doc: Document, end: number): number | undefined {
  let found: number | undefined;
  visit(doc, {
    Scalar(_, node: Scalar) {
      const quoted = node.type === "QUOTE_DOUBLE" || node.type === "QUOTE_SINGLE";
      if (!quoted || !node.range || node.range[0] >= end || node.range[1] < end) return undefined;
      found = node.range[0];
      return visit.BREAK;
    },
  });
  return found;
}
