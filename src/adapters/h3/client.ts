// A small HTTP/3 client on Deno.connectQuic reusing the codec: fast integration tests without a
// browser, and a probe for malformed input (raw fields or raw bytes on a request stream).

import {
  encodeFrame,
  encodeSettings,
  FrameType,
  parseSingleVarint,
  Setting,
  StreamType,
} from "./frames.ts";
import { decodeFieldSection, encodeFieldSection, type Field } from "./qpack.ts";
import { StreamReader } from "./stream_reader.ts";

/** A complete HTTP/3 response. */
export interface H3Response {
  status: number;
  headers: Headers;
  body: Uint8Array;
  trailers: Field[];
  /** The interim (1xx) responses before it, in order, as their fields. */
  interim: Field[][];
}

/** What `request` sends: either a normal request or raw fields/bytes for protocol tests. */
export interface H3RequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: Uint8Array | ReadableStream<Uint8Array>;
  /** Replaces the whole field section (pseudo-headers included). */
  fields?: Field[];
  /** Written as-is instead of HEADERS + DATA. */
  raw?: Uint8Array;
}

/** An HTTP/3 client connection. */
export interface H3Client extends AsyncDisposable {
  readonly conn: Deno.QuicConn;
  /** The stream id of the server's GOAWAY, once received. */
  readonly goawayId: number | null;
  request(path: string, init?: H3RequestInit): Promise<H3Response>;
  close(): void;
}

/** Connects to an HTTP/3 server (ALPN h3) and sets up the control and QPACK streams. */
export async function connectH3(opts: {
  hostname: string;
  port: number;
  caCerts?: string[];
  serverName?: string;
}): Promise<H3Client> {
  const conn = await Deno.connectQuic({
    hostname: opts.hostname,
    port: opts.port,
    serverName: opts.serverName ?? "localhost",
    caCerts: opts.caCerts,
    alpnProtocols: ["h3"],
  });
  const authority = `${opts.serverName ?? "localhost"}:${opts.port}`;
  // Keep the writers: a collected send stream is FIN'd, which the server must treat as fatal.
  const critical: WritableStreamDefaultWriter<Uint8Array>[] = [];
  const settings = encodeSettings([[Setting.QPACK_MAX_TABLE_CAPACITY, 0], [
    Setting.QPACK_BLOCKED_STREAMS,
    0,
  ]]);
  for (
    const [type, extra] of [[StreamType.CONTROL, settings], [StreamType.QPACK_ENCODER, null], [
      StreamType.QPACK_DECODER,
      null,
    ]] as const
  ) {
    const w = (await conn.createUnidirectionalStream()).getWriter();
    const buf = new Uint8Array(1 + (extra?.length ?? 0));
    buf[0] = type;
    if (extra) buf.set(extra, 1);
    await w.write(buf);
    critical.push(w);
  }
  let goawayId: number | null = null;
  /** Requests awaiting their response; the connection is closed after GOAWAY once none are. */
  let active = 0;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    critical.length = 0; // referenced here so the streams live as long as the client
    try {
      conn.close({ closeCode: 0x100, reason: "" });
    } catch { /* already closed */ }
  };
  const readUni = (async () => {
    const reader = conn.incomingUnidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        const r = new StreamReader(value);
        (async () => {
          if ((await r.varint()) !== StreamType.CONTROL) return await drain(r);
          for (;;) {
            const type = await r.varint();
            if (type === null) return;
            const payload = await r.exact((await r.varint())!);
            if (type === FrameType.GOAWAY) {
              goawayId = parseSingleVarint(payload, "GOAWAY");
              if (active === 0) close(); // as browsers do: nothing more to ask this server
            }
          }
        })().catch(() => {});
      }
    } catch {
      /* closed */
    } finally {
      reader.releaseLock();
    }
  })();
  return {
    conn,
    get goawayId() {
      return goawayId;
    },
    async request(path, init = {}) {
      const stream = await conn.createBidirectionalStream();
      const w = stream.writable.getWriter();
      const writing = (async () => {
        if (init.raw) {
          await w.write(init.raw);
          return await w.close();
        }
        const fields: Field[] = init.fields ?? [
          [":method", init.method ?? "GET"],
          [":scheme", "https"],
          [":authority", authority],
          [":path", path],
          ...Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v] as Field),
        ];
        await w.write(encodeFrame(FrameType.HEADERS, encodeFieldSection(fields)));
        if (init.body instanceof ReadableStream) {
          for await (const chunk of init.body) await w.write(encodeFrame(FrameType.DATA, chunk));
        } else if (init.body) {
          for (let off = 0; off < init.body.length; off += 65536) {
            await w.write(encodeFrame(FrameType.DATA, init.body.subarray(off, off + 65536)));
          }
        }
        await w.close();
      })();
      writing.catch(() => {});
      active++;
      try {
        const res = await readResponse(new StreamReader(stream.readable));
        await writing.catch(() => {});
        return res;
      } finally {
        if (--active === 0 && goawayId !== null) close();
      }
    },
    close,
    async [Symbol.asyncDispose]() {
      close();
      await conn.closed.catch(() => {});
      await readUni;
    },
  };
}

async function drain(r: StreamReader): Promise<void> {
  while (!(await r.atEnd())) await r.upTo(65536);
}

/** Reads HEADERS (1xx set apart), DATA and trailers until FIN. */
async function readResponse(r: StreamReader): Promise<H3Response> {
  let head: Field[] | null = null;
  const interim: Field[][] = [];
  const chunks: Uint8Array[] = [];
  let trailers: Field[] = [];
  for (;;) {
    const type = await r.varint("frame type");
    if (type === null) break;
    const len = await r.varint("frame length");
    if (len === null) throw new Error("Truncated frame");
    if (type === FrameType.DATA) {
      if (!head) throw new Error("DATA before HEADERS");
      chunks.push((await r.exact(len, "DATA")).slice());
    } else if (type === FrameType.HEADERS) {
      const fields = decodeFieldSection(await r.exact(len, "HEADERS"))!;
      const status = Number(fields.find(([k]) => k === ":status")?.[1]);
      if (!head && status >= 100 && status < 200) {
        interim.push(fields);
        continue;
      }
      if (!head) head = fields;
      else trailers = fields;
    } else await r.skip(len);
  }
  if (!head) throw new Error("Stream ended without a response");
  let size = 0;
  for (const c of chunks) size += c.length;
  const body = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    body.set(c, off);
    off += c.length;
  }
  const headers = new Headers();
  for (const [k, v] of head) if (!k.startsWith(":")) headers.append(k, v);
  const status = Number(head.find(([k]) => k === ":status")?.[1]);
  return { status, headers, body, trailers, interim };
}
