// Peers and helpers for the upstream client's unit tests (src/adapters/upstream_client*_test.ts):
// raw TCP servers for what Deno.serve never sends (1xx, trailers, resets, stale keep-alive), and
// request and assertion helpers.
import assert from "node:assert/strict";
import { ProxyError } from "../src/domain/errors.ts";
import type { UpstreamRequest, UpstreamTimeouts } from "../src/ports.ts";

/** Timeouts for test requests. */
export const T: UpstreamTimeouts = { connect: 2_000, responseHeader: 5_000, idle: 5_000 };
const enc = new TextEncoder();
const dec = new TextDecoder();

/** An UpstreamRequest for `url` (GET, no body, Host from the URL unless given). */
export function request(
  url: string,
  o: Partial<Omit<UpstreamRequest, "origin" | "target" | "headers">> & { headers?: HeadersInit } =
    {},
): UpstreamRequest {
  const u = new URL(url);
  const headers = new Headers(o.headers);
  if (!headers.has("host")) headers.set("host", u.host);
  return {
    method: "GET",
    body: null,
    timeouts: T,
    ...o,
    origin: u,
    target: u.pathname + u.search,
    headers,
  };
}

/** A raw TCP server: `onConn` gets each accepted connection. Dispose to stop. */
export function rawServer(onConn: (c: Deno.Conn, n: number) => Promise<void>) {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tasks: Promise<void>[] = [];
  const loop = (async () => {
    let n = 0;
    for await (const c of l) {
      tasks.push(
        onConn(c, n++).catch(() => {}).finally(() => {
          try {
            c.close();
          } catch { /* closed */ }
        }),
      );
    }
  })();
  return {
    url: `http://127.0.0.1:${(l.addr as Deno.NetAddr).port}`,
    async [Symbol.asyncDispose]() {
      l.close();
      await loop.catch(() => {});
      await Promise.all(tasks);
    },
  };
}

/** Reads from `c` until a full request head (and `bodyBytes` more) arrived. */
export async function readRequest(c: Deno.Conn, bodyBytes = 0): Promise<string | null> {
  const buf = new Uint8Array(65536);
  let text = "";
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0 && text.length >= end + 4 + bodyBytes) return text;
    const n = await c.read(buf);
    if (n === null) return null;
    text += dec.decode(buf.subarray(0, n));
  }
}

/** Writes a string (ASCII) to a raw connection. */
export const write = (c: Deno.Conn, s: string) => c.write(enc.encode(s));
/** Writes all of `bytes`. */
export async function writeAll(c: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await c.write(bytes.subarray(off));
}

/** Awaits `p`, which must fail with a ProxyError of `kind`; returns it. */
export async function rejects(p: Promise<unknown>, kind: string): Promise<ProxyError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ProxyError, `not a ProxyError: ${err}`);
    assert.equal(err.kind, kind, err.message);
    return err;
  }
  throw new Error(`expected a ${kind} error`);
}
