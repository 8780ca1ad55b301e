// The Rust Prox compiled its conditions' regexes with Rust's `regex` crate. Most of that syntax
// means the same in JavaScript; the parts that JavaScript refuses, or silently reads otherwise, are
// rewritten here so that a seed config keeps matching what it matched (see compileRegex).

/** ASCII classes of Rust's `[[:name:]]` syntax, as JavaScript class contents. */
const POSIX: Record<string, string> = {
  alnum: "0-9A-Za-z",
  alpha: "A-Za-z",
  ascii: "\\x00-\\x7F",
  blank: "\\t ",
  cntrl: "\\x00-\\x1F\\x7F",
  digit: "0-9",
  graph: "!-~",
  lower: "a-z",
  print: " -~",
  punct: "!-\\/:-@\\[-`{-~",
  space: "\\t\\n\\v\\f\\r ",
  upper: "A-Z",
  word: "0-9A-Za-z_",
  xdigit: "0-9A-Fa-f",
};

/** Characters JavaScript accepts escaped in every mode (`u` included). */
const JS_SYNTAX = "^$\\.*+?()[]{}|/";

interface Frame {
  /** Verbose mode (`x`): whitespace and `#` comments are not part of the pattern. */
  x: boolean;
  /** Modifier groups opened by `(?flags)` inside this group, closed with it (and around `|`). */
  mods: string[];
  /** Rust's `U`: greedy and lazy quantifiers swapped. */
  swap: boolean;
}

/** One `\p{…}` property as JavaScript names it (Rust also takes script names bare), or undefined. */
function unicodeProperty(name: string): string | undefined {
  const bare = name.replace(
    /^(sc|scx|gc|script|script_extensions|general_category)\s*[:=]\s*/i,
    "",
  );
  const prefix = /^(sc|script)\s*[:=]/i.test(name)
    ? "Script="
    : /^(scx|script_extensions)\s*[:=]/i.test(name)
    ? "Script_Extensions="
    : "";
  for (const candidate of prefix ? [prefix + bare] : [bare, `Script=${bare}`]) {
    try {
      new RegExp(`\\p{${candidate}}`, "u");
      return candidate;
    } catch { /* try the next spelling */ }
  }
  return undefined;
}

/** A code point as an escape that means the same with and without the `u` flag. */
function codePointEscape(cp: number): string {
  const hex = (n: number) => `\\u${n.toString(16).toUpperCase().padStart(4, "0")}`;
  if (cp <= 0xffff) return hex(cp);
  const v = cp - 0x10000;
  return `(?:${hex(0xd800 + (v >> 10))}${hex(0xdc00 + (v & 0x3ff))})`;
}

/**
 * Reads one escape at `src[i] === "\\"`; returns its JavaScript form and the index after it, or an
 * error. `inClass` keeps `\-` escaped (it is a range otherwise).
 */
function escape(
  src: string,
  i: number,
  o: { inClass: boolean; useUnicode: () => void },
): [string, number] | string {
  const n = src[i + 1];
  if (n === undefined) return ["\\", i + 1];
  if (!o.inClass && n === "A") return ["^", i + 2];
  if (!o.inClass && n === "z") return ["$", i + 2];
  if (n === "a") return ["\\x07", i + 2];
  // Word boundaries of regex 1.10: \< \> \b{start} \b{end} \b{start-half} \b{end-half}
  const boundary = o.inClass ? undefined : /^(?:<|>|b\{(start|end|start-half|end-half)\})/.exec(
    src.slice(i + 1),
  );
  if (boundary) {
    const kind = boundary[1] ?? (n === "<" ? "start" : "end");
    const js = {
      start: "\\b(?=\\w)",
      end: "\\b(?<=\\w)",
      "start-half": "(?<!\\w)",
      "end-half": "(?!\\w)",
    }[kind]!;
    return [js, i + 1 + boundary[0].length];
  }
  if (n === "p" || n === "P") {
    let name: string;
    let end: number;
    if (src[i + 2] === "{") {
      end = src.indexOf("}", i + 3);
      if (end < 0) return `Unclosed "\\${n}{"`;
      name = src.slice(i + 3, end);
      end++;
    } else {
      name = src[i + 2] ?? "";
      end = i + 3;
    }
    const js = unicodeProperty(name);
    if (js === undefined) return `Unknown Unicode class "\\${n}{${name}}"`;
    o.useUnicode();
    return [`\\${n}{${js}}`, end];
  }
  // \x{10FFFF}, \u{7F}, \U{7F}, \U0000007F: Rust's code point escapes (JavaScript reads the braced
  // forms as repetitions without the `u` flag)
  const hex = n === "x" || n === "u" || n === "U"
    ? /^\{([0-9A-Fa-f]{1,8})\}/.exec(src.slice(i + 2)) ??
      (n === "U" ? /^([0-9A-Fa-f]{8})/.exec(src.slice(i + 2)) : null)
    : null;
  if (hex) {
    const cp = parseInt(hex[1], 16);
    if (cp > 0x10ffff) return `Invalid code point "\\${n}${hex[0]}"`;
    return [codePointEscape(cp), i + 2 + hex[0].length];
  }
  // Rust lets any punctuation be escaped; JavaScript's `u` mode only its own syntax characters
  if (!/[0-9A-Za-z]/.test(n) && !JS_SYNTAX.includes(n) && !(o.inClass && n === "-")) {
    return [n, i + 2];
  }
  return [`\\${n}`, i + 2];
}

/** Skips verbose-mode whitespace and `#` comments from `i`; returns the next index. */
function skipVerbose(src: string, i: number): number {
  while (i < src.length) {
    if (/\s/.test(src[i])) i++;
    else if (src[i] === "#") {
      const nl = src.indexOf("\n", i);
      i = nl < 0 ? src.length : nl + 1;
    } else break;
  }
  return i;
}

/** Reads a bracketed class at `src[i] === "["`; returns its JavaScript form and the next index. */
function charClass(
  src: string,
  i: number,
  o: { x: boolean; useUnicode: () => void },
): [string, number] | string {
  let j = i + 1;
  let head = "[";
  if (src[j] === "^") head += src[j++];
  // Rust reads a `]` first in a class as a literal; JavaScript as the end of an empty class,
  // which never matches. `[^]` (JavaScript's "any character") keeps its JavaScript meaning.
  let body = head === "[" && src[j] === "]" ? (j++, "\\]") : "";
  let negatedPosix: string | undefined;
  while (j < src.length && src[j] !== "]") {
    if (o.x && (/\s/.test(src[j]) || src[j] === "#")) {
      j = skipVerbose(src, j);
      continue;
    }
    if (src[j] === "\\") {
      const e = escape(src, j, { inClass: true, useUnicode: o.useUnicode });
      if (typeof e === "string") return e;
      body += e[0];
      j = e[1];
      continue;
    }
    const posix = /^\[:(\^?)([a-z]+):\]/.exec(src.slice(j));
    if (posix && POSIX[posix[2]] !== undefined) {
      if (posix[1]) negatedPosix = posix[0];
      body += POSIX[posix[2]];
      j += posix[0].length;
      continue;
    }
    body += src[j++];
  }
  if (j >= src.length) return [src.slice(i), j]; // unterminated: JavaScript reports it
  if (negatedPosix !== undefined) {
    if (head !== "[" || body !== POSIX[negatedPosix.slice(3, -2)]) {
      return `"${negatedPosix}" is only supported as a whole class ("[${negatedPosix}]")`;
    }
    head = "[^";
  }
  return [`${head}${body}]`, j + 1];
}

/**
 * Rewrites a regex in Rust `regex` syntax (which JavaScript syntax mostly is) into JavaScript
 * source and flags: inline flags `(?i)`, `(?x)`, `(?i-s:…)` anywhere (`x`, verbose, is applied
 * here; `u` is Rust's default), `(?P<name>`, `\A`, `\z`, `\pL`/`\p{Greek}` (compiled with the `u`
 * flag), `\x{…}`, `\<`/`\>`/`\b{start}` word boundaries, `\a`, ASCII classes `[[:digit:]]` and a
 * leading `]` in a class. `U` swaps greedy and lazy quantifiers. Returns an error for Rust's
 * `R` (CRLF mode), which JavaScript has no equivalent of.
 */
export function fromRustSyntax(src: string): { source: string; flags: string } | string {
  let flags = "";
  let out = "";
  const stack: Frame[] = [{ x: false, mods: [], swap: false }];
  /** A quantifier as written, lazy or greedy as `U` makes it. */
  const quantifier = (q: string, at: number, swap: boolean): number => {
    const lazy = src[at] === "?";
    out += q + (lazy !== swap ? "?" : "");
    return lazy ? at + 1 : at;
  };
  const useUnicode = () => {
    if (!flags.includes("u")) flags += "u";
  };
  let i = 0;
  while (i < src.length) {
    const top = stack[stack.length - 1];
    const c = src[i];
    if (top.x && (/\s/.test(c) || c === "#")) {
      i = skipVerbose(src, i);
      continue;
    }
    if (c === "\\") {
      const e = escape(src, i, { inClass: false, useUnicode });
      if (typeof e === "string") return e;
      out += e[0];
      i = e[1];
    } else if (c === "[") {
      const e = charClass(src, i, { x: top.x, useUnicode });
      if (typeof e === "string") return e;
      out += e[0];
      i = e[1];
    } else if (c === "(") {
      const g = /^\(\?([A-Za-z]*)(?:-([A-Za-z]*))?([:)])/.exec(src.slice(i));
      if (src.startsWith("(?P<", i)) {
        out += "(?<";
        i += 4;
        stack.push({ x: top.x, mods: [], swap: top.swap });
      } else if (g && (g[1] !== "" || g[2] !== undefined)) {
        const on = g[1];
        const off = g[2] ?? "";
        const bad = /[^imsxuUR]/.exec(on + off);
        if (bad) return `Unknown flag "${bad[0]}" in "${g[0]}"`;
        if (on.includes("R")) {
          return `Rust flag "R" of "${g[0]}" has no JavaScript equivalent: ` +
            `rewrite the pattern without it`;
        }
        const x = on.includes("x") ? true : off.includes("x") ? false : top.x;
        const swap = on.includes("U") ? true : off.includes("U") ? false : top.swap;
        const jsOn = [...new Set(on.replace(/[^ims]/g, ""))].join("");
        const jsOff = [...new Set(off.replace(/[^ims]/g, ""))].filter((f) => !jsOn.includes(f))
          .join("");
        const mod = jsOn || jsOff ? `(?${jsOn}${jsOff ? `-${jsOff}` : ""}:` : "";
        i += g[0].length;
        if (g[3] === ":") {
          out += mod || "(?:";
          stack.push({ x, mods: [], swap });
        } else if (out === "" && stack.length === 1 && !jsOff) {
          // leading flags: the whole pattern's
          for (const f of jsOn) if (!flags.includes(f)) flags += f;
          top.x = x;
          top.swap = swap;
        } else {
          // the rest of the enclosing group, across its alternatives
          if (mod) {
            out += mod;
            top.mods.push(mod);
          }
          top.x = x;
          top.swap = swap;
        }
      } else {
        // a group: its opening ((?:, (?=, (?<name>…) is copied whole, so its ? is no quantifier
        const open = /^\((?:\?(?:[:=!]|<[=!]|<[A-Za-z_]\w*>))?/.exec(src.slice(i))![0];
        out += open;
        i += open.length;
        stack.push({ x: top.x, mods: [], swap: top.swap });
      }
    } else if (c === "{" && /^\{\d*(,\d*)?\}/.test(src.slice(i))) {
      const q = /^\{\d*(,\d*)?\}/.exec(src.slice(i))![0];
      i = quantifier(q, i + q.length, top.swap);
    } else if (c === "*" || c === "+" || c === "?") {
      i = quantifier(c, i + 1, top.swap);
    } else if (c === "]" || c === "}") {
      // Rust reads a lone `]` or `}` as itself; JavaScript's `u` mode (used for \p) refuses them
      out += `\\${c}`;
      i++;
    } else if (c === "|") {
      out += ")".repeat(top.mods.length) + "|" + top.mods.join("");
      i++;
    } else if (c === ")") {
      out += ")".repeat(top.mods.length) + ")";
      if (stack.length > 1) stack.pop();
      else top.mods = [];
      i++;
    } else {
      out += c;
      i++;
    }
  }
  out += ")".repeat(stack[stack.length - 1].mods.length);
  return { source: out, flags };
}
