// Socket reads without Deno.Conn.read's bookkeeping, and writes without Conn.write's method (which
// only calls the same op after checking its argument). Conn.read keeps each pending read in a Set
// of its connection's (for ref() and unref()), adding it before and deleting it after: the delete
// empties the Set, which shrinks its table, so every read of a long-lived connection left a new
// table hanging off an old object. Under load that was about 120 of the 138 bytes per request that
// outlived a scavenge (the sampling heap profiler, 50 connections), the garbage that grew the old
// generation until a full GC paused the process for 20-30 ms about every 25 s. Where Deno exposes
// the op behind Conn.read and the connection's resource id (Deno.internal's core.read and the
// "Deno.internal.rid" property, both in Deno 2), reads go to the op directly: the same op, bytes,
// errors and end of stream, without the Set and one async frame fewer. Prox never unrefs these
// connections, the only thing that Set is for. Elsewhere (a Deno without them, or a socket from
// node:tls), through the socket's own read.

/** Reads into `p`, which must not be empty; resolves with the bytes read, 0 at end of stream. */
export type SocketRead = (p: Uint8Array) => Promise<number>;

type OpRead = (rid: number, p: Uint8Array) => Promise<number>;
type OpWrite = (rid: number, p: Uint8Array) => Promise<number>;

const internals = (Deno as unknown as Record<
  symbol,
  { core?: { read?: unknown; write?: unknown } } | undefined
>)[
  (Deno as unknown as { internal: symbol }).internal
];
const opRead = typeof internals?.core?.read === "function"
  ? internals.core.read as OpRead
  : undefined;
const opWrite = typeof internals?.core?.write === "function"
  ? internals.core.write as OpWrite
  : undefined;
/** The property holding a Deno socket's resource id, once seen on one. */
let ridKey: symbol | undefined;

function ridOf(conn: object): number | undefined {
  ridKey ??= Object.getOwnPropertySymbols(conn).find((s) => s.description === "Deno.internal.rid");
  const rid = ridKey === undefined ? undefined : (conn as Record<symbol, unknown>)[ridKey];
  return typeof rid === "number" ? rid : undefined;
}

/** A reader for `conn` (a Deno.Conn, or anything with its `read`). */
export function socketReader(conn: { read(p: Uint8Array): Promise<number | null> }): SocketRead {
  const rid = opRead ? ridOf(conn) : undefined;
  if (rid !== undefined) return (p) => opRead!(rid, p);
  return (p) => conn.read(p).then((n) => n ?? 0);
}

/** Writes some of `p` (not empty) to a socket; resolves with the bytes written. */
export type SocketWrite = (p: Uint8Array) => Promise<number>;

/**
 * A writer for `conn`: the op behind Conn.write, called directly where Deno exposes it (Conn.write
 * is that call behind a method and its checks: about 0.2 µs less per write), else `conn.write`.
 */
export function socketWriter(conn: { write(p: Uint8Array): Promise<number> }): SocketWrite {
  const rid = opWrite ? ridOf(conn) : undefined;
  if (rid !== undefined) return (p) => opWrite!(rid, p);
  return (p) => conn.write(p);
}

/** Whether reads skip Conn.read here (for the tests). */
export function readsDirect(conn: object): boolean {
  return opRead !== undefined && ridOf(conn) !== undefined;
}

/** Whether writes skip Conn.write here (for the tests). */
export function writesDirect(conn: object): boolean {
  return opWrite !== undefined && ridOf(conn) !== undefined;
}
