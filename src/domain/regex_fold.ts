// Case-insensitive regexes without the `i` flag. V8's linear-time engine, which the shipped V8
// flags let finish a regex that backtracks catastrophically on a hostile request, cannot run a
// regex with `i`: such a `(?i)` condition could stall the process for minutes. Spelling every
// ASCII letter in both cases (`a` → `[aA]`, `[a-f]` → `[a-fA-F]`) means the same without it.

const LETTER = /^[A-Za-z]$/;
/** Escapes that name a class or a control character, never a letter to fold. */
const PLAIN_ESCAPE = /[bBdDwWsSfnrtv]/;
const IN_CLASS_ESCAPE = /[bdDwWsSfnrtv]/;

function otherCase(c: string): string {
  return c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase();
}

/** The other-case counterparts of the letters in the range `a`–`b`, as class contents. */
function foldRange(a: string, b: string): string {
  const lo = a.charCodeAt(0), hi = b.charCodeAt(0);
  let out = "";
  const lower = [Math.max(lo, 97), Math.min(hi, 122)];
  if (lower[0] <= lower[1]) {
    out += `${String.fromCharCode(lower[0] - 32)}-${String.fromCharCode(lower[1] - 32)}`;
  }
  const upper = [Math.max(lo, 65), Math.min(hi, 90)];
  if (upper[0] <= upper[1]) {
    out += `${String.fromCharCode(upper[0] + 32)}-${String.fromCharCode(upper[1] + 32)}`;
  }
  return out;
}

/** True for an escape (the letter or digit after `\`) whose meaning does not depend on case. */
function keepsMeaning(e: string | undefined, inClass: boolean): boolean {
  if (e === undefined) return false;
  if (!/[A-Za-z0-9]/.test(e)) return true; // an escaped syntax character
  return (inClass ? IN_CLASS_ESCAPE : PLAIN_ESCAPE).test(e);
}

/**
 * The ASCII character an escape at `i` stands for (`\x2e`, `\u0041`, `\cJ`, `\0`) and the
 * escape's length, or null: for ASCII, the `i` flag (without `u`) folds letters only.
 */
function asciiEscape(source: string, i: number): [string, number] | null {
  const m = /^\\(?:x([0-7][0-9A-Fa-f])|u00([0-7][0-9A-Fa-f])|c([A-Za-z])|0(?![0-9]))/.exec(
    source.slice(i, i + 6),
  );
  if (!m) return null;
  const hex = m[1] ?? m[2];
  const code = hex !== undefined ? parseInt(hex, 16) : m[3] ? m[3].charCodeAt(0) % 32 : 0;
  return [String.fromCharCode(code), m[0].length];
}

/**
 * JavaScript regex source (compiled without `u`) that matches what `source` with the `i` flag
 * matches, without that flag; null when `source` holds what this does not rewrite (non-ASCII,
 * backreferences, escapes of characters beyond ASCII, inline modifiers): it then keeps its `i`
 * flag.
 */
export function withoutIgnoreCase(source: string): string | null {
  // deno-lint-ignore no-control-regex
  if (/[^\x00-\x7f]/.test(source)) return null;
  let out = "";
  let i = 0;
  while (i < source.length) {
    const c = source[i];
    if (c === "\\") {
      const e = asciiEscape(source, i);
      if (e !== null) {
        const [ch, n] = e;
        out += LETTER.test(ch) ? `[${ch}${otherCase(ch)}]` : source.slice(i, i + n);
        i += n;
        continue;
      }
      if (!keepsMeaning(source[i + 1], false)) return null;
      out += source.slice(i, i + 2);
      i += 2;
    } else if (c === "(" && source[i + 1] === "?") {
      const g = /^\(\?(?::|=|!|<=|<!|<[A-Za-z_$][\w$]*>)/.exec(source.slice(i));
      if (!g) return null;
      out += g[0];
      i += g[0].length;
    } else if (c === "{") {
      // A quantifier ({2,3}) or a literal brace: no letters to fold either way.
      const q = /^\{[0-9,]*\}?/.exec(source.slice(i))![0];
      out += q;
      i += q.length;
    } else if (c === "[") {
      let j = i + 1;
      let body = source[j] === "^" ? "^" : "";
      j += body.length;
      let extra = "";
      while (j < source.length && source[j] !== "]") {
        if (source[j] === "\\") {
          const e = asciiEscape(source, j);
          if (e !== null && LETTER.test(e[0])) extra += otherCase(e[0]);
          else if (e === null && !keepsMeaning(source[j + 1], true)) return null;
          const n = e === null ? 2 : e[1];
          body += source.slice(j, j + n);
          j += n;
          if (source[j] === "-" && source[j + 1] !== "]") return null; // an escape as range start
          continue;
        }
        const a = source[j];
        if (source[j + 1] === "-" && j + 2 < source.length && source[j + 2] !== "]") {
          const b = source[j + 2];
          if (b === "\\" || b === "[") return null;
          body += `${a}-${b}`;
          extra += foldRange(a, b);
          j += 3;
        } else {
          body += a === "-" ? "\\-" : a; // a lone "-" escaped: letters follow it below
          if (LETTER.test(a)) extra += otherCase(a);
          j++;
        }
      }
      if (j >= source.length) return null;
      out += `[${body}${extra}]`;
      i = j + 1;
    } else {
      out += LETTER.test(c) ? `[${c}${otherCase(c)}]` : c;
      i++;
    }
  }
  return out;
}
