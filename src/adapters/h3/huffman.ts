// Huffman coding for QPACK/HPACK strings (RFC 7541 §5.2, Appendix B; RFC 9204 §4.1.2).
// Decoding is table-driven, one input byte per step: a 256-state automaton (one state per
// internal node of the code tree) precomputed at load time, each entry packing the next state,
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
const stateOfNode = new Map<number, number>();
const nodeOfState: number[] = [];
const acceptState: boolean[] = [];
(function number(node: number, depth: number, allOnes: boolean) {
  if (symbolOf[node] >= 0) return;
  stateOfNode.set(node, nodeOfState.length);
  nodeOfState.push(node);
  // A string may end here only if the pending bits are a prefix of EOS (all ones), < 8 bits.
  acceptState.push(allOnes && depth <= 7);
  number(children[2 * node], depth + 1, false);
  number(children[2 * node + 1], depth + 1, allOnes);
})(0, 0, true);

// TABLE[state * 256 + byte] = next | sym1 << 8 | sym2 << 16 | count << 24 | FAIL
const TABLE = new Uint32Array(nodeOfState.length * 256);
for (let st = 0; st < nodeOfState.length; st++) {
  for (let byte = 0; byte < 256; byte++) {
    let node = nodeOfState[st];
    let entry = 0;
    let count = 0;
    for (let i = 7; i >= 0; i--) {
      node = children[2 * node + ((byte >> i) & 1)];
      const sym = symbolOf[node];
      if (sym < 0) continue;
      if (sym === EOS) {
        entry |= FAIL;
        break;
      }
      entry |= sym << (8 + 8 * count);
      count++;
      node = 0;
    }
    TABLE[st * 256 + byte] = entry | (stateOfNode.get(node) ?? 0) | (count << 24);
  }
}

/** Decodes a Huffman-coded string into bytes (RFC 7541 §5.2). */
export function huffmanDecode(input: Uint8Array): Uint8Array {
  // Each input byte yields at most 8/5 symbols; len * 8 / 5 + 1 bounds the output.
  const out = new Uint8Array(Math.ceil((input.length * 8) / 5) + 1);
  let n = 0;
  let state = 0;
  for (let i = 0; i < input.length; i++) {
    const e = TABLE[state * 256 + input[i]];
    if (e & FAIL) throw new HuffmanError("EOS symbol in string");
    const count = (e >>> 24) & 3;
    if (count > 0) out[n++] = (e >>> 8) & 0xff;
    if (count > 1) out[n++] = (e >>> 16) & 0xff;
    state = e & 0xff;
  }
  if (!acceptState[state]) throw new HuffmanError("invalid padding");
  return out.subarray(0, n);
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
