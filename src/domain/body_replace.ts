// Substring replacement in a streamed body (a `response_body` rule's `replace`, as nginx's
// `sub_filter` and Caddy's `replace-response`). It works on bytes: a UTF-8 `find` matches UTF-8
// text only on character boundaries (UTF-8 is self-synchronizing), so no character is split, and
// a body in another charset is matched byte for byte. Between chunks it holds back only the bytes
// that may still begin a match: fewer than the longest `find`.

/** One compiled pair: the bytes to find and their replacement for this response. */
export interface ReplacePair {
  find: Uint8Array;
  replace: Uint8Array;
}

const EMPTY = new Uint8Array(0);

/**
 * A streaming replacer. At each position the first pair (in list order) whose `find` is there
 * wins, and scanning goes on after it: replacement text is never searched again (the semantics
 * of a global regex `a|b|c`). With `once`, each pair replaces its first match only.
 */
export class StreamReplacer {
  #pairs: ReplacePair[];
  #once: boolean;
  #used: boolean[];
  /** Pairs still active, and whether any starts with a byte: the scan's fast path. */
  #first = new Uint8Array(256);
  #active = 0;
  #carry: Uint8Array = EMPTY;

  constructor(pairs: readonly ReplacePair[], opts: { once?: boolean } = {}) {
    if (pairs.some((p) => p.find.byteLength === 0)) {
      throw new RangeError("Cannot replace an empty string");
    }
    this.#pairs = [...pairs];
    this.#once = opts.once === true;
    this.#used = pairs.map(() => false);
    this.#index();
  }

  #index(): void {
    this.#first.fill(0);
    this.#active = 0;
    this.#pairs.forEach((p, i) => {
      if (this.#used[i]) return;
      this.#first[p.find[0]] = 1;
      this.#active++;
    });
  }

  /** Bytes held back, waiting for the next chunk (for tests: never more than longest find - 1). */
  get held(): number {
    return this.#carry.byteLength;
  }

  /** The output for one more chunk of input (possibly empty: all of it held back). */
  push(chunk: Uint8Array): Uint8Array {
    if (chunk.byteLength === 0) return EMPTY;
    let buf = chunk;
    if (this.#carry.byteLength > 0) {
      buf = new Uint8Array(this.#carry.byteLength + chunk.byteLength);
      buf.set(this.#carry);
      buf.set(chunk, this.#carry.byteLength);
    }
    return this.#scan(buf, false);
  }

  /** The bytes still held back, at the end of the body (a partial match there is no match). */
  flush(): Uint8Array {
    const buf = this.#carry;
    if (buf.byteLength === 0) return EMPTY;
    return this.#scan(buf, true);
  }

  #scan(buf: Uint8Array, end: boolean): Uint8Array {
    const parts: Uint8Array[] = [];
    const n = buf.byteLength;
    let from = 0; // start of the bytes not yet given out
    let p = 0;
    let hold = n; // where the held-back bytes start
    const first = this.#first;
    outer: while (p < n && this.#active > 0) {
      if (first[buf[p]] === 0) {
        p++;
        continue;
      }
      for (let i = 0; i < this.#pairs.length; i++) {
        if (this.#used[i]) continue;
        const f = this.#pairs[i].find;
        const avail = n - p;
        const len = f.byteLength < avail ? f.byteLength : avail;
        let k = 0;
        while (k < len && buf[p + k] === f[k]) k++;
        if (k < len) continue;
        if (len < f.byteLength) {
          // A prefix of this find runs to the end: it may match once more bytes come, and it
          // would win over any later pair here or any match further on.
          if (end) continue;
          hold = p;
          break outer;
        }
        if (p > from) parts.push(buf.subarray(from, p));
        const r = this.#pairs[i].replace;
        if (r.byteLength > 0) parts.push(r);
        p += f.byteLength;
        from = p;
        if (this.#once) {
          this.#used[i] = true;
          this.#index();
        }
        continue outer;
      }
      p++;
    }
    if (hold > from) parts.push(buf.subarray(from, hold));
    // A copy: the chunk's buffer may be reused by whoever gave it.
    this.#carry = hold < n ? buf.slice(hold) : EMPTY;
    if (parts.length === 1) return parts[0];
    let size = 0;
    for (const x of parts) size += x.byteLength;
    const out = new Uint8Array(size);
    let at = 0;
    for (const x of parts) {
      out.set(x, at);
      at += x.byteLength;
    }
    return out;
  }
}
