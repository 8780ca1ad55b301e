// HPACK (RFC 7541) for Prox's own HTTP/2 engine: a decoder with the dynamic table that clients
// use for their requests (curl, browsers and h2load index nearly every field), and an encoder for
// answers that uses the static table's names and no dynamic table of its own, so that it never
// needs the client's table size and every answer's block stands alone. Huffman coding is shared
// with QPACK (h3/huffman.ts).

import { huffmanDecodeText, HuffmanError } from "../h3/huffman.ts";

/** A block that cannot be decoded: a COMPRESSION_ERROR for the connection (RFC 9113 §4.3). */
export class HpackError extends Error {
  constructor(reason: string) {
    super(`Cannot decode HPACK block: ${reason}`);
    this.name = "HpackError";
  }
}

/** The static table (RFC 7541 Appendix A), indexed from 1; entry 0 is unused. */
export const HPACK_STATIC: ReadonlyArray<readonly [string, string]> = [
  ["", ""],
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/** Each field's overhead in the table's size (RFC 7541 §4.1). */
const ENTRY_OVERHEAD = 32;

/** Reads an integer with an N-bit prefix at `o.at` (RFC 7541 §5.1), moving `o.at` past it. */
function readInt(buf: Uint8Array, o: { at: number }, prefixBits: number): number {
  const mask = (1 << prefixBits) - 1;
  let value = buf[o.at++] & mask;
  if (value < mask) return value;
  for (let shift = 0;; shift += 7) {
    if (o.at >= buf.length) throw new HpackError("truncated integer");
    if (shift > 21) throw new HpackError("integer too large");
    const b = buf[o.at++];
    value += (b & 0x7f) * 2 ** shift;
    if (!(b & 0x80)) return value;
  }
}

/** A byte string as a JavaScript string, one character per byte (field values are Latin-1). */
function latin1(bytes: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let i = from; i < to; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

function readString(buf: Uint8Array, o: { at: number }): string {
  if (o.at >= buf.length) throw new HpackError("truncated string");
  const huffman = (buf[o.at] & 0x80) !== 0;
  const len = readInt(buf, o, 7);
  const end = o.at + len;
  if (end > buf.length) throw new HpackError("string longer than the block");
  const from = o.at;
  o.at = end;
  if (!huffman) return latin1(buf, from, end);
  try {
    return huffmanDecodeText(buf.subarray(from, end));
  } catch (err) {
    if (err instanceof HuffmanError) throw new HpackError(err.message);
    throw err;
  }
}

/**
 * One connection's decoder: its dynamic table lives as long as the connection, and blocks must
 * be decoded in the order they came.
 */
export class HpackDecoder {
  /** The dynamic table, oldest first (index 62 is the last entry). */
  #names: string[] = [];
  #values: string[] = [];
  #size = 0;
  /** Entries before this one were evicted (see #evict). */
  #first = 0;
  /** The size the encoder last chose (a table size update), at most `#max`. */
  #limit: number;

  /** `max`: SETTINGS_HEADER_TABLE_SIZE as this side announced it (4096 by default). */
  constructor(readonly max = 4096) {
    this.#limit = max;
  }

  /** The table's size now (for tests). */
  get size(): number {
    return this.#size;
  }

  /**
   * Drops the oldest entries until the table fits `limit`. They are passed over (`#first`) rather
   * than spliced out: a peer that indexes every field evicts on nearly every block, and moving the
   * whole table each time showed in profiles; the arrays are compacted once half is passed over.
   */
  #evict(limit: number): void {
    let first = this.#first;
    while (this.#size > limit && first < this.#names.length) {
      this.#size -= this.#names[first].length + this.#values[first].length + ENTRY_OVERHEAD;
      first++;
    }
    if (first > 32 && first * 2 > this.#names.length) {
      this.#names.splice(0, first);
      this.#values.splice(0, first);
      first = 0;
    }
    this.#first = first;
  }

  #insert(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    if (size > this.#limit) {
      // Larger than the table: it empties, and the field is not kept (§4.4).
      this.#names.length = this.#values.length = 0;
      this.#first = 0;
      this.#size = 0;
      return;
    }
    this.#evict(this.#limit - size);
    this.#names.push(name);
    this.#values.push(value);
    this.#size += size;
  }

  #nameAt(index: number): string {
    if (index < HPACK_STATIC.length) {
      if (index === 0) throw new HpackError("index 0");
      return HPACK_STATIC[index][0];
    }
    const i = this.#names.length - 1 - (index - HPACK_STATIC.length);
    if (i < this.#first) throw new HpackError(`index ${index} past the table`);
    return this.#names[i];
  }

  /**
   * Decodes one field block, calling `field` for each field in order. Throws HpackError for a
   * block that breaks the format, and stops early (returning false) once the fields' size (name
   * + value + 32 each, as SETTINGS_MAX_HEADER_LIST_SIZE counts) passes `maxListSize`; the table
   * is still updated then, so the connection can go on.
   */
  decode(
    block: Uint8Array,
    field: (name: string, value: string) => void,
    maxListSize = Infinity,
  ): boolean {
    const o = { at: 0 };
    let listSize = 0;
    let fieldsSeen = false;
    let within = true;
    while (o.at < block.length) {
      const b = block[o.at];
      let name: string;
      let value: string;
      if (b & 0x80) {
        // Indexed field (§6.1).
        const index = readInt(block, o, 7);
        if (index === 0) throw new HpackError("index 0");
        if (index < HPACK_STATIC.length) [name, value] = HPACK_STATIC[index];
        else {
          const i = this.#names.length - 1 - (index - HPACK_STATIC.length);
          if (i < this.#first) throw new HpackError(`index ${index} past the table`);
          name = this.#names[i];
          value = this.#values[i];
        }
      } else if ((b & 0xe0) === 0x20) {
        // Dynamic table size update (§6.3): only before the block's first field.
        if (fieldsSeen) throw new HpackError("table size update after a field");
        const size = readInt(block, o, 5);
        if (size > this.max) throw new HpackError(`table size ${size} over ${this.max}`);
        this.#limit = size;
        this.#evict(size);
        continue;
      } else {
        // A literal (§6.2): with incremental indexing (01), without (0000) or never indexed (0001).
        const indexing = (b & 0xc0) === 0x40;
        const index = readInt(block, o, indexing ? 6 : 4);
        name = index === 0 ? readString(block, o) : this.#nameAt(index);
        value = readString(block, o);
        if (indexing) this.#insert(name, value);
      }
      fieldsSeen = true;
      if (!within) continue;
      listSize += name.length + value.length + ENTRY_OVERHEAD;
      if (listSize > maxListSize) within = false;
      else field(name, value);
    }
    return within;
  }
}

/** The static index of each field name (its first entry), for the encoder. */
const NAME_INDEX = new Map<string, number>();
for (let i = HPACK_STATIC.length - 1; i > 0; i--) NAME_INDEX.set(HPACK_STATIC[i][0], i);
/** Statuses with an entry of their own in the static table. */
const STATUS_INDEX: Record<number, number> = {
  200: 8,
  204: 9,
  206: 10,
  304: 11,
  400: 12,
  404: 13,
  500: 14,
};

/**
 * Encodes answer fields without a dynamic table: each field a literal "without indexing" (with
 * its name's static index where there is one), no Huffman coding. Writes into a growing buffer.
 */
export class HpackEncoder {
  #buf = new Uint8Array(512);
  #at = 0;

  #room(n: number): void {
    if (this.#at + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#at + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.#buf.subarray(0, this.#at));
    this.#buf = bigger;
  }

  #int(value: number, prefixBits: number, first: number): void {
    this.#room(6);
    const mask = (1 << prefixBits) - 1;
    if (value < mask) {
      this.#buf[this.#at++] = first | value;
      return;
    }
    this.#buf[this.#at++] = first | mask;
    value -= mask;
    while (value >= 128) {
      this.#buf[this.#at++] = (value & 0x7f) | 0x80;
      value = Math.floor(value / 128);
    }
    this.#buf[this.#at++] = value;
  }

  #string(s: string): void {
    this.#int(s.length, 7, 0);
    this.#room(s.length);
    const buf = this.#buf;
    let at = this.#at;
    for (let i = 0; i < s.length; i++) buf[at++] = s.charCodeAt(i);
    this.#at = at;
  }

  /** Starts a block. */
  begin(): this {
    this.#at = 0;
    return this;
  }

  status(code: number): this {
    const index = STATUS_INDEX[code];
    if (index !== undefined) {
      this.#room(1);
      this.#buf[this.#at++] = 0x80 | index;
    } else this.field(":status", String(code));
    return this;
  }

  /** One field; `name` must be lower case (as HeaderList and Headers keep them). */
  field(name: string, value: string): this {
    const index = NAME_INDEX.get(name);
    if (index !== undefined) this.#int(index, 4, 0);
    else {
      this.#room(1);
      this.#buf[this.#at++] = 0;
      this.#string(name);
    }
    this.#string(value);
    return this;
  }

  /** The block so far, a view valid until the next `begin`. */
  get block(): Uint8Array {
    return this.#buf.subarray(0, this.#at);
  }
}
