// The recording upstream of the differential test of the two HTTP/1.1 engines (_h1_diff.ts): a
// raw TCP server that records every request as it came (line, fields with their spelling, body)
// and answers in the way the request's `x-answer` field asks for, including ways Deno.serve never
// answers (1xx, trailers, odd reason phrases, obs-text, a 205, a body until close).

/** What the upstream saw of one request: its line, fields as they came, and its body. */
export interface Seen {
  line: string;
  fields: [string, string][];
  body: string;
}

// Latin-1 both ways: field values are byte strings.
function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) {
    s += String.fromCharCode(...b.subarray(i, Math.min(b.length, i + 8192)));
  }
  return s;
}
export function bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

/**
 * How the recording upstream answers, chosen by the request's `x-answer` field (default `echo`):
 * each mode tries one way an upstream may frame or word its answer.
 */
const ANSWERS: Record<string, (seen: Seen) => string[]> = {
  echo: () => [],
  chunked: () => [
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
    "5\r\nhello\r\n",
    "6\r\n world\r\n0\r\n\r\n",
  ],
  trailers: () => [
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 42\r\n\r\n",
  ],
  close: () => ["HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", ""],
  early: () => [
    "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
  ],
  continue:
    () => ["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"],
  "204": () => ["HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"],
  "204cl": () => ["HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"],
  "304": () => ['HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 1234\r\n\r\n'],
  "304bare": () => ['HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'],
  "205": () => ["HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n\r\n"],
  "418": () => ["HTTP/1.1 418 I'm a teapot\r\nContent-Length: 3\r\n\r\ntea"],
  "299": () => ["HTTP/1.1 299 Whatever\r\nContent-Length: 3\r\n\r\nodd"],
  "599": () => ["HTTP/1.1 599 \r\nContent-Length: 3\r\n\r\nodd"],
  noreason: () => ["HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"],
  reason: () => ["HTTP/1.1 200 Very Fine Indeed\r\nContent-Length: 2\r\n\r\nok"],
  reasoncr: () => ["HTTP/1.1 200 OK\rX-Evil: 1\r\nContent-Length: 2\r\n\r\nok"],
  reasoncrchunked:
    () => ["HTTP/1.1 200 OK\rX-Evil: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
  reasonnul: () => ["HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok"],
  reasonctl: () => ["HTTP/1.1 200 O\x01K\x7f\r\nContent-Length: 2\r\n\r\nok"],
  reasonobs: () => ["HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 2\r\n\r\nok"],
  reasontab: () => ["HTTP/1.1 200 O\tK \r\nContent-Length: 2\r\n\r\nok"],
  reasonlong: () => [`HTTP/1.1 200 ${"R".repeat(5000)}\r\nContent-Length: 2\r\n\r\nok`],
  "101": () => [
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nraw bytes",
  ],
  "600": () => ["HTTP/1.1 600 Six Hundred\r\nContent-Length: 2\r\n\r\nok"],
  "999": () => ["HTTP/1.1 999 Nines\r\nContent-Length: 2\r\n\r\nok"],
  "199": () => ["HTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
  "http10": () => ["HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
  "http10close": () => ["HTTP/1.0 200 OK\r\n\r\nuntil the end", ""],
  "lf": () => ["HTTP/1.1 200 OK\nContent-Length: 2\nX-Lf: 1\n\nok"],
  "cl2": () => ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"],
  "cllist": () => ["HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"],
  "tecl": () => [
    "HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
  ],
  "ctl": () => ["HTTP/1.1 200 OK\r\nX-Ctl: a\x01b\r\nContent-Length: 2\r\n\r\nok"],
  valuecr: () => ["HTTP/1.1 200 OK\r\nX-Cr: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok"],
  valuenul: () => ["HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\nok"],
  namespace: () => ["HTTP/1.1 200 OK\r\nX-Sp : a\r\nContent-Length: 2\r\n\r\nok"],
  nameodd: () => ["HTTP/1.1 200 OK\r\nX(Odd): a\r\nContent-Length: 2\r\n\r\nok"],
  fold: () => ["HTTP/1.1 200 OK\r\nX-F: a\r\n b\r\nContent-Length: 2\r\n\r\nok"],
  "date":
    () => ["HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"],
  "server":
    () => ["HTTP/1.1 200 OK\r\nServer: upstream/1\r\nVia: 1.0 up\r\nContent-Length: 2\r\n\r\nok"],
  reason404: () => ["HTTP/1.1 404 Gone Fishing\r\nContent-Length: 2\r\n\r\nno"],
  obs: () => ["HTTP/1.1 200 OK\r\nX-Obs: caf\xe9 \xff\r\nContent-Length: 2\r\n\r\nok"],
  dup: () => [
    "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Dup: one\r\nSet-Cookie: b=2\r\nX-Dup: two\r\nVary: a\r\nVary: b\r\nContent-Length: 2\r\n\r\nok",
  ],
  caps: () => [
    "HTTP/1.1 200 OK\r\nX-MiXeD-CaSe: Yes\r\nCONTENT-TYPE: text/plain\r\nContent-Length: 2\r\n\r\nok",
  ],
  bighead: () => {
    let h = "HTTP/1.1 200 OK\r\n";
    for (let i = 0; i < 100; i++) h += `X-Big-${i}: ${"v".repeat(300)}\r\n`;
    return [h + "Content-Length: 2\r\n\r\nok"];
  },
  empty: () => ["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
  emptyvalue: () => ["HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Spaces:   \r\nContent-Length: 2\r\n\r\nok"],
  head: (s) =>
    s.line.startsWith("HEAD ")
      ? ["HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"]
      : ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
  headchunked: (s) =>
    s.line.startsWith("HEAD ")
      ? ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
      : ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
  headnolen: (s) =>
    s.line.startsWith("HEAD ")
      ? ["HTTP/1.1 200 OK\r\nX-N: 1\r\n\r\n"]
      : ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
  slow: () => ["HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nslo", "w b", "ody"],
  slowchunked: () => [
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nslo\r\n",
    "3\r\nw b\r\n",
    "3\r\nody\r\n0\r\n\r\n",
  ],
  connfields: () => [
    "HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
  ],
  upgrade: () => ["HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nok"],
  big: () => ["HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + "b".repeat(100_000)],
  gzip: () => [
    "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n\x1f\x8b\x08\x00",
  ],
};

/** The ways the recording upstream can answer (`x-answer` values). */
export const ANSWER_MODES: readonly string[] = Object.keys(ANSWERS);

/** A raw TCP upstream that records every request and answers by its `x-answer` field. */
export function recordingUpstream() {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: Seen[] = [];
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const loop = (async () => {
    for await (const c of l) {
      conns.add(c);
      tasks.push(
        upstreamConn(c, seen).catch(() => {}).finally(() => {
          conns.delete(c);
          try {
            c.close();
          } catch { /* closed */ }
        }),
      );
    }
  })();
  return {
    url: `http://127.0.0.1:${(l.addr as Deno.NetAddr).port}`,
    seen,
    async [Symbol.asyncDispose]() {
      l.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await loop.catch(() => {});
      await Promise.all(tasks);
    },
  };
}

async function upstreamConn(c: Deno.Conn, seen: Seen[]): Promise<void> {
  const r = new ByteReader(c);
  for (;;) {
    const head = await r.head();
    if (head === null) return;
    const lines = head.split("\r\n");
    const fields: [string, string][] = lines.slice(1).filter((l) => l).map((l) => {
      const i = l.indexOf(":");
      return [l.slice(0, i), l.slice(i + 1).trim()];
    });
    const get = (n: string) => fields.find(([k]) => k.toLowerCase() === n)?.[1];
    let body = "";
    if (get("transfer-encoding")?.toLowerCase() === "chunked") {
      const b = await r.chunked();
      if (b === null) return;
      body = b.body;
    } else {
      const n = Number(get("content-length") ?? 0);
      const b = await r.take(n);
      if (b === null) return;
      body = b;
    }
    const s: Seen = { line: lines[0], fields, body };
    seen.push(s);
    // The first of several (Deno.serve joins them with ", "; the engine sends each).
    const mode = get("x-answer")?.split(",")[0].trim() ?? "echo";
    const parts = (ANSWERS[mode] ?? ANSWERS.echo)(s);
    if (parts.length === 0) {
      const text = `${s.line} (${body.length} bytes)`;
      const out = s.line.startsWith("HEAD ") ? "" : text;
      await c.write(
        bytes(`HTTP/1.1 200 OK\r\ncontent-length: ${text.length}\r\n\r\n${out}`),
      );
      continue;
    }
    for (let i = 0; i < parts.length; i++) {
      if (i > 0) await new Promise((res) => setTimeout(res, 20));
      if (parts[i] === "") return; // close
      await c.write(bytes(parts[i]));
    }
  }
}

/** Reads a byte stream as Latin-1 text, by heads, lengths and chunks. */
export class ByteReader {
  buf = "";
  eof = false;
  #scratch = new Uint8Array(65536);
  constructor(readonly c: Deno.Conn) {}

  async more(): Promise<boolean> {
    if (this.eof) return false;
    const n = await this.c.read(this.#scratch).catch(() => null);
    if (n === null) {
      this.eof = true;
      return false;
    }
    this.buf += latin1(this.#scratch.subarray(0, n));
    return true;
  }

  /** A head up to its blank line (without it), or null at EOF. */
  async head(): Promise<string | null> {
    for (;;) {
      const i = this.buf.indexOf("\r\n\r\n");
      if (i >= 0) {
        const h = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 4);
        return h;
      }
      if (!await this.more()) return null;
    }
  }

  async take(n: number): Promise<string | null> {
    while (this.buf.length < n) if (!await this.more()) return null;
    const out = this.buf.slice(0, n);
    this.buf = this.buf.slice(n);
    return out;
  }

  async line(): Promise<string | null> {
    for (;;) {
      const i = this.buf.indexOf("\r\n");
      if (i >= 0) {
        const l = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 2);
        return l;
      }
      if (!await this.more()) return null;
    }
  }

  async chunked(): Promise<{ body: string; trailers: string } | null> {
    let body = "";
    for (;;) {
      const size = await this.line();
      if (size === null) return null;
      const n = parseInt(size, 16);
      if (!(n >= 0)) return null;
      if (n === 0) break;
      const data = await this.take(n + 2);
      if (data === null) return null;
      body += data.slice(0, n);
    }
    let trailers = "";
    for (;;) {
      const l = await this.line();
      if (l === null) return null;
      if (l === "") return { body, trailers };
      trailers += l + "\n";
    }
  }

  async rest(): Promise<string> {
    while (await this.more());
    const out = this.buf;
    this.buf = "";
    return out;
  }
}
