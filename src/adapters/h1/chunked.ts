// The decoder of a chunked request body (RFC 9112 §7.1) for Prox's own HTTP/1.1 engine
// (server.ts), byte by byte as the body comes, so that a body split anywhere decodes alike. Chunk
// extensions are read past and trailer fields dropped (Deno.serve drops them too), each bounded;
// anything else that is not the grammar (a bare LF, a size that is not hex, a missing CRLF after a
// chunk's data) is an error: the engine cannot tell where the request ends, so it answers 400 and
// closes the connection. No Deno APIs.

/** The longest chunk-size line (digits and extensions) taken. */
export const MAX_SIZE_LINE = 4096;
/**
 * The most bytes of trailer fields taken after the last chunk: about what Deno.serve takes (64 KiB
 * went through there, 80 did not), so that a body it would serve is not refused here.
 */
export const MAX_TRAILERS = 64 * 1024;

const enum C {
  Size0,
  Size,
  Bws,
  Ext,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  Trailer0,
  TrailerName,
  Trailer,
  TrailerLf,
  EndLf,
  Done,
}

/** A chunked body that breaks its grammar; the message says where. */
export class ChunkedError extends Error {}

/** Decodes one chunked body; a new one per request. */
export class ChunkedDecoder {
  #s = C.Size0;
  /** Bytes of the current chunk's data still to come. */
  #left = 0;
  /** Bytes of the current size line, or of trailer fields so far. */
  #count = 0;
  /** The body's data in the last `decode` input: `[dataStart, dataEnd)` (empty when none). */
  dataStart = 0;
  dataEnd = 0;

  /** True once the last chunk and the trailer section came. */
  get done(): boolean {
    return this.#s === C.Done;
  }

  /** Bytes of data the current chunk still has to bring (0 outside a chunk's data). */
  get dataLeft(): number {
    return this.#s === C.Data ? this.#left : 0;
  }

  /** Counts `n` bytes of the current chunk's data read elsewhere (at most `dataLeft`). */
  took(n: number): void {
    this.#left -= n;
    if (this.#left === 0) this.#s = C.DataCr;
  }

  /**
   * Decodes from `b[from..to)`: the number of bytes used. It stops after the first run of data it
   * finds (`[dataStart, dataEnd)`, empty when none) or at the body's end, so bytes after the body
   * (the next request) are never used. Throws ChunkedError on a malformed body.
   */
  decode(b: Uint8Array, from: number, to: number): number {
    this.dataStart = this.dataEnd = from;
    let i = from;
    while (i < to && this.#s !== C.Done) {
      if (this.#s === C.Data) {
        const n = Math.min(this.#left, to - i);
        this.dataStart = i;
        this.dataEnd = i + n;
        this.took(n);
        return i + n - from;
      }
      const x = b[i++];
      switch (this.#s) {
        case C.Size0:
        case C.Size: {
          const d = hexDigit(x);
          if (d >= 0) {
            if (this.#left > (Number.MAX_SAFE_INTEGER - d) / 16) throw bad("chunk size too large");
            this.#left = this.#left * 16 + d;
            this.#s = C.Size;
          } else if (this.#s === C.Size0) throw bad("chunk size is not hex");
          else if (x === 13) this.#s = C.SizeLf;
          else if (x === 59) this.#s = C.Ext; // ";"
          else if (x === 32 || x === 9) this.#s = C.Bws;
          else throw bad("chunk size is not hex");
          break;
        }
        case C.Bws: // whitespace between the size and an extension (RFC 9112 §7.1.1)
          if (x === 59) this.#s = C.Ext;
          else if (x === 13) this.#s = C.SizeLf;
          else if (x !== 32 && x !== 9) throw bad("chunk size line");
          break;
        case C.Ext: // extensions: read past, visible bytes only
          if (x === 13) this.#s = C.SizeLf;
          else if ((x < 32 && x !== 9) || x === 127) throw bad("chunk extension");
          break;
        case C.SizeLf:
          if (x !== 10) throw bad("chunk size line ends without CRLF");
          this.#count = 0;
          this.#s = this.#left === 0 ? C.Trailer0 : C.Data;
          continue;
        case C.DataCr:
          if (x !== 13) throw bad("chunk data longer than its size");
          this.#s = C.DataLf;
          break;
        case C.DataLf:
          if (x !== 10) throw bad("chunk data ends without CRLF");
          this.#s = C.Size0;
          continue;
        case C.Trailer0: // a trailer field's first byte, or the body's final CRLF
          if (x === 13) this.#s = C.EndLf;
          else if (IS_TCHAR[x]) this.#s = C.TrailerName;
          else throw bad("trailer field"); // an empty name, obs-fold, a bare LF
          break;
        case C.TrailerName: // a field-line: a token, then ":" (RFC 9112 §5)
          if (x === 58) this.#s = C.Trailer;
          else if (!IS_TCHAR[x]) throw bad("trailer field name");
          break;
        case C.Trailer:
          if (x === 13) this.#s = C.TrailerLf;
          else if ((x < 32 && x !== 9) || x === 127) throw bad("trailer field");
          break;
        case C.TrailerLf:
          if (x !== 10) throw bad("trailer field ends without CRLF");
          this.#s = C.Trailer0;
          break;
        case C.EndLf:
          if (x !== 10) throw bad("body ends without CRLF");
          this.#s = C.Done;
          break;
      }
      if (++this.#count > (this.#s >= C.Trailer0 ? MAX_TRAILERS : MAX_SIZE_LINE)) {
        throw bad(this.#s >= C.Trailer0 ? "trailer fields too long" : "chunk size line too long");
      }
    }
    return i - from;
  }
}

// tchar (RFC 9110 §5.6.2) by byte.
const IS_TCHAR = new Uint8Array(256);
for (const ch of "!#$%&'*+-.^_`|~") IS_TCHAR[ch.charCodeAt(0)] = 1;
for (let i = 0; i < 256; i++) {
  if ((i >= 48 && i <= 57) || (i >= 65 && i <= 90) || (i >= 97 && i <= 122)) IS_TCHAR[i] = 1;
}

function hexDigit(x: number): number {
  if (x >= 48 && x <= 57) return x - 48;
  if (x >= 97 && x <= 102) return x - 87;
  if (x >= 65 && x <= 70) return x - 55;
  return -1;
}

function bad(what: string): ChunkedError {
  return new ChunkedError(`Malformed chunked request body: ${what}`);
}
