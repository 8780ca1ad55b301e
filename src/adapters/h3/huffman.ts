// Huffman coding for QPACK/HPACK strings (RFC 7541 §5.2, Appendix B; RFC 9204 §4.1.2).
// Decoding is table-driven, one input byte per step: a 256-state automaton (one state per
// internal node of the code tree) built on first use, each entry packing the next state,
// up to two emitted symbols and a failure bit (EOS seen).

import { HUFFMAN_CODES, HUFFMAN_LENGTHS } from "./huffman_table.ts";

/** Thrown for invalid Huffman input: EOS inside the string or bad padding. */
export class HuffmanError extends Error {
  constructor(reason: string) {
    super(`Cannot decode Huffman string: ${reason}`);
    this.name = "HuffmanError";
  }
}

const EOS = 256;
const FAIL = 1 << 26;

/** The decoding automaton: transitions and which states may end a string. */
interface Automaton {
  /** table[state * 256 + byte] = next | sym1 << 8 | sym2 << 16 | count << 24 | FAIL */
  table: Uint32Array;
  accept: boolean[];
}

let automaton: Automaton | undefined;

/**
 * Builds the automaton on the first decode (a few ms of start-up that a Prox without HTTP/3
 * never needs).
 */
function buildAutomaton(): Automaton {
  // Code tree: node 0 is the root; children[2n] / children[2n+1]; symbol >= 0 marks a leaf.
  const children: number[] = [0, 0];
  const symbolOf: number[] = [-1];
  for (let s = 0; s <= EOS; s++) {
    let node = 0;
    for (let i = HUFFMAN_LENGTHS[s] - 1; i >= 0; i--) {
      const bit = (HUFFMAN_CODES[s] >>> i) & 1;
      let next = children[2 * node + bit];
      if (next === 0) {
        next = symbolOf.length;
        symbolOf.push(-1);
        children.push(0, 0);
        children[2 * node + bit] = next;
      }
      node = next;
    }
    symbolOf[node] = s;
  }

  // States are the internal nodes, numbered in tree order with the root as state 0.
  const stateOfNode = new Int32Array(symbolOf.length);
  const nodeOfState: number[] = [];
  const accept: boolean[] = [];
  (function number(node: number, depth: number, allOnes: boolean) {
    if (symbolOf[node] >= 0) return;
    stateOfNode[node] = nodeOfState.length;
    nodeOfState.push(node);
    // A string may end here only if the pending bits are a prefix of EOS (all ones), < 8 bits.
    accept.push(allOnes && depth <= 7);
    number(children[2 * node], depth + 1, false);
    number(children[2 * node + 1], depth + 1, allOnes);
  })(0, 0, true);

  // Four bits at a time first (codes are 5+ bits long: at most one symbol per nibble):
  // nibble[state * 16 + n] = next | sym << 8 | count << 24 | FAIL.
  const states = nodeOfState.length;
  const nibble = new Uint32Array(states * 16);
  for (let st = 0; st < states; st++) {
    for (let n = 0; n < 16; n++) {
      let node = nodeOfState[st];
      let entry = 0;
      for (let i = 3; i >= 0; i--) {
        node = children[2 * node + ((n >> i) & 1)];
        const sym = symbolOf[node];
        if (sym < 0) continue;
        if (sym === EOS) {
          entry = FAIL;
          break;
        }
        entry = sym << 8 | 1 << 24;
        node = 0;
      }
      nibble[st * 16 + n] = entry | stateOfNode[node];
    }
  }
  // Then a byte as two nibbles: 16 times fewer tree steps than walking 8 bits per entry.
  const table = new Uint32Array(states * 256);
  for (let st = 0; st < states; st++) {
    for (let byte = 0; byte < 256; byte++) {
      const hi = nibble[st * 16 + (byte >> 4)];
      if (hi & FAIL) {
        table[st * 256 + byte] = FAIL;
        continue;
      }
      const lo = nibble[(hi & 0xff) * 16 + (byte & 15)];
      if (lo & FAIL) {
        table[st * 256 + byte] = FAIL;
        continue;
      }
      const count = (hi >>> 24) + (lo >>> 24);
      const syms = hi >>> 24 ? (hi & 0xff00) | ((lo & 0xff00) << 8) : lo & 0xff00;
      table[st * 256 + byte] = syms | (lo & 0xff) | (count << 24);
    }
  }
  return { table, accept };
}

/** Whether the decoding table exists yet (tests: importing the module must not build it). */
export function huffmanTableBuilt(): boolean {
  return automaton !== undefined;
}

/**
 * Decodes `input` into `out` (room for `input.length * 8 / 5 + 1` bytes) and returns the length
 * decoded.
 */
function decodeInto(input: Uint8Array, out: Uint8Array): number {
  const { table, accept } = automaton ??= buildAutomaton();
  let n = 0;
  let state = 0;
  for (let i = 0; i < input.length; i++) {
    const e = table[state * 256 + input[i]];
    if (e & FAIL) throw new HuffmanError("EOS symbol in string");
    const count = (e >>> 24) & 3;
    if (count > 0) out[n++] = (e >>> 8) & 0xff;
    if (count > 1) out[n++] = (e >>> 16) & 0xff;
    state = e & 0xff;
  }
  if (!accept[state]) throw new HuffmanError("invalid padding");
  return n;
}

/** Each input byte yields at most 8/5 symbols: the output's bound. */
const bound = (length: number) => Math.ceil((length * 8) / 5) + 1;

/** Decodes a Huffman-coded string into bytes (RFC 7541 §5.2). */
export function huffmanDecode(input: Uint8Array): Uint8Array {
  const out = new Uint8Array(bound(input.length));
  return out.subarray(0, decodeInto(input, out));
}

/**
 * Where `huffmanDecodeText` decodes: kept, since a new typed array costs 0.2–0.7 µs in Deno (its
 * ArrayBuffer; 0.7 where V8's sweeper of ArrayBuffers runs on another core), several times the
 * decoding of a request's path. Strings past its size get their own.
 */
const SCRATCH = new Uint8Array(4096);

/**
 * Decodes a Huffman-coded string to text, one character per byte (field values are Latin-1
 * ByteStrings), without a buffer of its own for strings up to 2.5 KiB encoded.
 */
export function huffmanDecodeText(input: Uint8Array): string {
  const size = bound(input.length);
  const out = size <= SCRATCH.length ? SCRATCH : new Uint8Array(size);
  const n = decodeInto(input, out);
  let s = "";
  for (let i = 0; i < n; i += 4096) {
    const part = out.subarray(i, Math.min(n, i + 4096));
    s += String.fromCharCode.apply(null, part as unknown as number[]);
  }
  return s;
}

/** Length in bytes of the Huffman encoding of `input`. */
export function huffmanEncodedLength(input: Uint8Array): number {
  let bits = 0;
  for (let i = 0; i < input.length; i++) bits += HUFFMAN_LENGTHS[input[i]];
  return Math.ceil(bits / 8);
}

/** Huffman-encodes `input`, padding the last byte with the EOS prefix (all ones). */
export function huffmanEncode(input: Uint8Array): Uint8Array {
  const out = new Uint8Array(huffmanEncodedLength(input));
  let n = 0;
  let cur = 0; // pending bits, fewer than 8 + 30, kept below 2^53
  let bits = 0;
  for (let i = 0; i < input.length; i++) {
    const len = HUFFMAN_LENGTHS[input[i]];
    cur = cur * 2 ** len + HUFFMAN_CODES[input[i]];
    bits += len;
    while (bits >= 8) {
      const div = 2 ** (bits - 8);
      out[n++] = Math.floor(cur / div) & 0xff;
      cur %= div;
      bits -= 8;
    }
  }
  if (bits > 0) out[n++] = ((cur << (8 - bits)) | (0xff >> bits)) & 0xff;
  return out;
}
