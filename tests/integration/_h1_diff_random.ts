// Random inputs for the differential test of the two HTTP/1.1 engines (_h1_diff.ts), from a
// seeded PRNG so that a difference names its seed and case and replays: mutations of the corpus
// (mostly heads the engine relays to Deno.serve) and well-formed requests built at random (the
// engine's own ground).
import { seededRandom } from "../_harness.ts";
import type { Input } from "./_h1_diff.ts";
import { corpus, req } from "./_h1_diff_corpus.ts";
import { ANSWER_MODES } from "./_h1_diff_upstream.ts";

// Bytes a mutation inserts or substitutes: the ones parsers disagree on.
const NASTY = [
  " ",
  "\t",
  "\r",
  "\n",
  "\r\n",
  "\x00",
  "\x0b",
  "\x7f",
  "\x80",
  "\xff",
  ":",
  ",",
  ";",
  "/",
  "\\",
  "?",
  "#",
  "%",
  "@",
  '"',
  "0",
  "-",
  "+",
  "A",
  "a",
];

/** One random mutation of `text` (the seed picks it). */
export function mutate(text: string, rnd: () => number): string {
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
  const at = Math.floor(rnd() * (text.length + 1));
  switch (Math.floor(rnd() * 7)) {
    case 0: // insert a nasty byte
      return text.slice(0, at) + pick(NASTY) + text.slice(at);
    case 1: // replace one byte
      return text.slice(0, at) + pick(NASTY) + text.slice(at + 1);
    case 2: // delete one byte
      return text.slice(0, at) + text.slice(at + 1);
    case 3: { // duplicate a line
      const lines = text.split("\r\n");
      const i = Math.floor(rnd() * lines.length);
      lines.splice(i, 0, lines[i]);
      return lines.join("\r\n");
    }
    case 4: { // flip the case of a byte
      const c = text[at] ?? "";
      const f = c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase();
      return text.slice(0, at) + f + text.slice(at + 1);
    }
    case 5: // add a field
      return text.replace("\r\n", "\r\n" + pick(EXTRA) + "\r\n");
    default: // swap two lines
    {
      const lines = text.split("\r\n");
      const i = 1 + Math.floor(rnd() * Math.max(1, lines.length - 3));
      const j = 1 + Math.floor(rnd() * Math.max(1, lines.length - 3));
      [lines[i], lines[j]] = [lines[j], lines[i]];
      return lines.join("\r\n");
    }
  }
}

const EXTRA = [
  "Content-Length: 0",
  "Content-Length: 5",
  "Transfer-Encoding: chunked",
  "Host: b.test",
  "Connection: close",
  "Expect: 100-continue",
  "Upgrade: websocket",
  "X-Answer: chunked",
  "X-Answer: head",
  "Cookie: a=1",
  "Te: trailers",
  " folded",
];

/** `count` mutated inputs from the corpus's plainer cases, seeded. */
export function mutations(seed: number, count: number): Input[] {
  const rnd = seededRandom(seed);
  const base = corpus().filter((c) => c.writes.length === 1 && c.writes[0].length < 4096);
  const out: Input[] = [];
  for (let i = 0; i < count; i++) {
    const b = base[Math.floor(rnd() * base.length)];
    let text = b.writes[0];
    const n = 1 + Math.floor(rnd() * 3);
    for (let k = 0; k < n; k++) text = mutate(text, rnd);
    out.push({ name: `seed ${seed} #${i} (${b.name}, ${n} mutations)`, writes: [text] });
  }
  return out;
}

const TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/**
 * `count` well-formed inputs built at random (the engine's own ground: HTTP/1.1 or 1.0,
 * origin-form, one Host, plain fields, bodies by length or chunked), one to three requests each,
 * split at random into writes: what the pipeline makes of the engine's lean request must be what
 * it makes of Deno.serve's.
 */
export function structured(seed: number, count: number): Input[] {
  const rnd = seededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const str = (chars: string, max: number) => {
    let s = "";
    for (let n = Math.floor(rnd() * max); n > 0; n--) s += chars[Math.floor(rnd() * chars.length)];
    return s;
  };
  let visible = "";
  for (let c = 0x21; c < 0x7f; c++) visible += String.fromCharCode(c);
  const valueChars = visible + "  \t\x80\xe9\xff";
  const one = () => {
    const method = pick(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "X-Y"]);
    const segs = Array.from(
      { length: Math.floor(rnd() * 4) },
      () =>
        pick(["a", "..", ".", "", "%2e", "%2F", "%41", "b;c", str(visible.replace("?", ""), 6)]),
    );
    let target = pick(["/", "/ans/", "/files/", "/old/", "/gz/", "/cors/", "/small/", "/dead/"]) +
      segs.join("/");
    if (rnd() < 0.3) target += "?" + str(visible, 12);
    const fields: string[] = [];
    const host = pick(["a.test", "b.test", "B.test:80", "[::1]:8", "127.0.0.1", "a.test.", "x_y"]);
    const body = method === "GET" || method === "HEAD" || rnd() < 0.4 ? "" : str(visible, 20);
    for (let n = Math.floor(rnd() * 5); n > 0; n--) {
      fields.push(
        `${
          pick([
            "X-A",
            "x-a",
            "Cookie",
            "Accept",
            "Accept-Encoding",
            "Origin",
            "Range",
            "If-None-Match",
            "Via",
            "X-Forwarded-For",
            "Forwarded",
            str(TCHARS, 8) || "Z",
          ])
        }:${pick(["", " ", "\t"])}${str(valueChars, 16).trim()}${pick(["", " ", "\t"])}`,
      );
    }
    if (rnd() < 0.5) fields.push(`X-Answer: ${pick(ANSWER_MODES)}`);
    // HTTP/1.0 now and then; an HTTP/1.1 body chunked now and then (split at random, with an
    // extension or a trailer field here and there): both are the engine's own ground too.
    const version = rnd() < 0.2 ? "HTTP/1.0" : "HTTP/1.1";
    let wire = body;
    if (body && version === "HTTP/1.1" && rnd() < 0.4) {
      fields.push("Transfer-Encoding: chunked");
      wire = "";
      for (let rest = body; rest;) {
        const n = 1 + Math.floor(rnd() * rest.length);
        wire += `${n.toString(16)}${rnd() < 0.2 ? pick([";a=b", " ;x", ';q="v w"']) : ""}\r\n`;
        wire += rest.slice(0, n) + "\r\n";
        rest = rest.slice(n);
      }
      wire += `0\r\n${rnd() < 0.2 ? "X-T: 1\r\n" : ""}\r\n`;
    } else if (body || rnd() < 0.1) fields.push(`Content-Length: ${body.length}`);
    if (rnd() < 0.15) {
      fields.push(
        pick(["Connection: close", "Connection: keep-alive", "Connection: x-a", "TE: trailers"]),
      );
    }
    const at = Math.floor(rnd() * (fields.length + 1));
    fields.splice(at, 0, `${pick(["Host", "host", "HOST"])}: ${host}`);
    return req(method, target, fields, { host: null, body: wire, version });
  };
  const out: Input[] = [];
  for (let i = 0; i < count; i++) {
    const text = Array.from({ length: 1 + Math.floor(rnd() * 3) }, one).join("");
    const writes: string[] = [];
    // At most one split: a pause there sends the rest late (a body after its head is relayed).
    const cut = rnd() < 0.3 ? Math.floor(rnd() * text.length) : text.length;
    writes.push(text.slice(0, cut));
    if (cut < text.length) writes.push(text.slice(cut));
    out.push({ name: `structured ${seed} #${i}`, writes, pauseMs: writes.length > 1 ? 5 : 0 });
  }
  return out;
}
