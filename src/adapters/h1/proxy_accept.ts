// `accept_proxy_protocol`: the PROXY header a load balancer (AWS NLB, HAProxy `send-proxy`, …)
// sends first on each connection it makes to Prox, read before any HTTP or TLS byte. Only peers
// in `from` are read this way; the header names the client the connection carries.

import { cidrContains, parseIp } from "../../domain/ip.ts";
import type { Cidr } from "../../domain/ip.ts";
import { readProxyHeader, V2_MAX } from "../../domain/proxy_protocol_parse.ts";
import { socketReader } from "../socket_read.ts";
import { unmapped } from "../http_serve.ts";
import { timerDelay } from "../../config/duration.ts";

/** The listener's setting: who sends the header, and how long it may take. */
export interface AcceptProxyProtocol {
  from: readonly Cidr[];
  /** 0: no limit (`0s`, as for the other connection timeouts). */
  timeoutMs: number;
}

/** True when the connection's peer is one of the senders the setting names. */
export function sendsProxyHeader(pp: AcceptProxyProtocol, conn: Deno.Conn): boolean {
  const addr = parseIp((conn.remoteAddr as Deno.NetAddr).hostname);
  return addr !== null && pp.from.some((c) => cidrContains(c, addr));
}

/** The client a PROXY header named (null: the connection's own peer), and the bytes after it. */
export interface Proxied {
  client: { hostname: string; port: number } | null;
  rest: Uint8Array;
}

/**
 * What readProxied says of a connection closed (or reset) before its first byte: a balancer's
 * plain TCP health check, no broken header (nginx and HAProxy's `dontlognull` stay quiet too).
 */
export const CLOSED_EMPTY = "closed before sending a byte";

/**
 * Reads the header at the start of `conn`: what it says, or why there is none (the caller closes
 * the connection then; CLOSED_EMPTY: none was sent). Gives up after `timeoutMs` (0: never),
 * closing `conn`.
 */
export async function readProxied(conn: Deno.Conn, timeoutMs: number): Promise<Proxied | string> {
  const read = socketReader(conn);
  // A v1 line fits in 107 bytes; a v2 header with TLVs may take more (V2_MAX at most).
  let buf = new Uint8Array(256);
  let end = 0;
  let late = false;
  // `0s` is no limit, and a delay past a timer's range (24.8 days) is its longest: setTimeout
  // would run either at once, closing every connection before its header came.
  const timer = timeoutMs > 0
    ? setTimeout(() => {
      late = true;
      try {
        conn.close();
      } catch { /* closed already */ }
    }, timerDelay(timeoutMs))
    : undefined;
  try {
    for (;;) {
      const r = readProxyHeader(buf, end);
      if (r.kind === "bad") return r.reason;
      if (r.kind === "header") {
        const client = r.source && { hostname: unmapped(r.source.hostname), port: r.source.port };
        return { client, rest: buf.slice(r.size, end) };
      }
      if (end === buf.length) {
        const bigger = new Uint8Array(Math.min(buf.length * 4, V2_MAX));
        bigger.set(buf);
        buf = bigger;
      }
      const n = await read(buf.subarray(end));
      if (n === 0) return end === 0 ? CLOSED_EMPTY : "closed before its PROXY header was complete";
      end += n;
    }
  } catch {
    if (late) return `no PROXY header within ${timeoutMs} ms`;
    return end === 0 ? CLOSED_EMPTY : "reset before its PROXY header";
  } finally {
    clearTimeout(timer);
  }
}
