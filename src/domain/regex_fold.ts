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
 * JavaScript regex source (compiled without `u`) that matches what `source` with the `i` flag
 * matches, without that flag; null when `source` holds what this does not rewrite (non-ASCII,
 * backreferences, `\x41`-style escapes, inline modifiers): it then keeps its `i` flag.
 */
export function withoutIgnoreCase(source: string): string | null {
  // deno-lint-ignore no-control-regex
  if (/[^\x00-\x7f]/.test(source)) return null;
  let out = "";
  let i = 0;
  while (i < source.length) {
    const c = source[i];
    if (c === "\\") {
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
          if (!keepsMeaning(source[j + 1], true)) return null;
          body += source.slice(j, j + 2);
          j += 2;
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
