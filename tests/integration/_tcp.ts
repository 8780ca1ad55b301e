// Real peers for the `tcp` listener tests: raw TCP upstreams on 127.0.0.1:0 (echo after the
// client's FIN, or recording what arrived) and a TLS one, plus client helpers.

import { ROOT, waitFor } from "../_harness.ts";

export const enc = new TextEncoder();
export const dec = new TextDecoder();
export const CA = Deno.readTextFileSync(`${ROOT}/tests/fixtures/tls/ca.pem`);
export const CERT = Deno.readTextFileSync(`${ROOT}/tests/fixtures/tls/cert.pem`);
export const KEY = Deno.readTextFileSync(`${ROOT}/tests/fixtures/tls/key.pem`);

/** A raw TCP upstream; `received` holds what each connection sent, in arrival order. */
export interface RawUpstream extends AsyncDisposable {
  port: number;
  addr: string;
  received: Uint8Array[];
  /** Connections accepted so far. */
  accepted: number;
  /** Connections still open. */
  open: number;
}

/**
 * Starts an upstream that reads each connection to its end (the client's FIN, passed on by
 * Prox), then answers `reply(bytes)` and closes: an answer arrives only if the FIN did. With
 * `stream`, it echoes each chunk at once instead (an interactive peer that never closes first).
 */
export function rawUpstream(
  opts: {
    reply?: (got: Uint8Array) => Uint8Array;
    stream?: boolean;
    tls?: boolean;
    /** Sent first on each connection, which is then closed (a server that speaks first). */
    greet?: string;
    /** The port to listen on (one an earlier upstream had, to bring a target back); 0: any. */
    port?: number;
  } = {},
): RawUpstream {
  const at = { hostname: "127.0.0.1", port: opts.port ?? 0 };
  const listener = opts.tls ? Deno.listenTls({ ...at, cert: CERT, key: KEY }) : Deno.listen(at);
  const port = (listener.addr as Deno.NetAddr).port;
  const conns = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  const up: RawUpstream = {
    port,
    addr: `127.0.0.1:${port}`,
    received: [],
    accepted: 0,
    open: 0,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.allSettled([...handlers]);
    },
  };
  const serve = async (conn: Deno.Conn) => {
    up.accepted++;
    up.open++;
    conns.add(conn);
    try {
      if (opts.greet !== undefined) return await writeAll(conn, enc.encode(opts.greet));
      const chunks: Uint8Array[] = [];
      const buf = new Uint8Array(65536);
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        if (opts.stream) await writeAll(conn, buf.slice(0, n));
        chunks.push(buf.slice(0, n));
      }
      const got = concatAll(chunks);
      up.received.push(got);
      if (!opts.stream) await writeAll(conn, opts.reply ? opts.reply(got) : got);
    } catch {
      /* reset by the test */
    } finally {
      conns.delete(conn);
      up.open--;
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  void (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      const h = serve(conn);
      handlers.add(h);
      void h.then(() => handlers.delete(h));
    }
  })();
  return up;
}

export async function writeAll(c: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await c.write(bytes.subarray(off));
}

export function concatAll(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/**
 * Reads `conn` until it ends; returns the bytes (a reset counts as the end). Throws when it has
 * not ended within `timeoutMs` (a FIN that never came), closing it.
 */
export async function readAll(conn: Deno.Conn, timeoutMs = 10_000): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    try {
      conn.close();
    } catch { /* closed */ }
  }, timeoutMs);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
  } catch { /* reset */ }
  clearTimeout(timer);
  if (late) throw new Error(`The connection did not end within ${timeoutMs} ms`);
  return concatAll(chunks);
}

/** Sends `text`, half-closes, and reads the answer to its end. */
export async function exchange(port: number, text: string | Uint8Array): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, typeof text === "string" ? enc.encode(text) : text);
    await conn.closeWrite();
    return dec.decode(await readAll(conn));
  } finally {
    try {
      conn.close();
    } catch { /* closed by readAll's deadline */ }
  }
}

/** The logger records named "tcp access" (one per closed connection). */
export function accessRecords(records: Record<string, unknown>[]): Record<string, unknown>[] {
  return records.filter((r) => r.msg === "tcp access");
}

/** Waits for the `n`th tcp access record (1-based) and returns it. */
export function nthAccess(
  records: Record<string, unknown>[],
  n: number,
): Promise<Record<string, unknown>> {
  return waitFor(() => accessRecords(records)[n - 1], { what: `tcp access record ${n}` });
}

/** File descriptors this process holds now (Linux). */
export function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

/**
 * An address whose connects hang (a target that is down behind a firewall): a listener that never
 * accepts, its accept queue filled, so that Linux drops further SYNs.
 */
export async function blackhole(): Promise<{ addr: string } & AsyncDisposable> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const fillers: Deno.Conn[] = [];
  for (;;) {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 200);
    try {
      fillers.push(await Deno.connect({ hostname: "127.0.0.1", port, signal: ac.signal }));
    } catch {
      break; // this connect hung: the queue is full
    } finally {
      clearTimeout(timer);
    }
  }
  return {
    addr: `127.0.0.1:${port}`,
    [Symbol.asyncDispose]() {
      for (const c of fillers) c.close();
      listener.close();
      return Promise.resolve();
    },
  };
}
