// TLS without certificate verification (`insecure_skip_verify`, for development upstreams with
// self-signed certificates). Deno.connectTls cannot skip verification, node:tls can; this adapts
// a node:tls socket to the byte Transport the HTTP/1.1 client reads and writes.

import { isIP } from "node:net";
import { connect } from "node:tls";
import type { TLSSocket } from "node:tls";
import type { Transport } from "./upstream_h1_conn.ts";

const HIGH_WATER = 256 * 1024;

/** Connects with TLS, accepting any certificate; resolves once the handshake is done. */
export function connectInsecureTls(
  o: { hostname: string; port: number; serverName?: string; alpn: string[]; signal: AbortSignal },
): Promise<{ transport: Transport; alpn: string | null }> {
  const name = o.serverName ?? o.hostname;
  return new Promise((resolve, reject) => {
    const sock: TLSSocket = connect({
      host: o.hostname,
      port: o.port,
      // No SNI for an IP (RFC 6066 §3): node:tls refuses one ("fd00::2" has letters in it).
      servername: isIP(name) ? undefined : name,
      rejectUnauthorized: false,
      ALPNProtocols: o.alpn,
    });
    const onAbort = () => sock.destroy(new Error("aborted"));
    o.signal.addEventListener("abort", onAbort, { once: true });
    const fail = (err: Error) => {
      o.signal.removeEventListener("abort", onAbort);
      reject(err);
    };
    sock.once("error", fail);
    sock.once("secureConnect", () => {
      o.signal.removeEventListener("abort", onAbort);
      sock.off("error", fail);
      sock.setNoDelay(true);
      const alpn = typeof sock.alpnProtocol === "string" ? sock.alpnProtocol : null;
      resolve({ transport: adapt(sock), alpn });
    });
  });
}

function adapt(sock: TLSSocket): Transport {
  const chunks: Uint8Array[] = [];
  let queued = 0;
  let ended = false;
  let error: Error | null = null;
  let wake: (() => void) | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  sock.on("data", (b: Uint8Array) => {
    chunks.push(b);
    queued += b.byteLength;
    if (queued > HIGH_WATER) sock.pause();
    notify();
  });
  sock.on("end", () => {
    ended = true;
    notify();
  });
  sock.on("close", () => {
    ended = true;
    notify();
  });
  sock.on("error", (e: Error) => {
    error = e;
    notify();
  });
  return {
    async read(p: Uint8Array): Promise<number | null> {
      while (chunks.length === 0) {
        if (error) throw error;
        if (ended) return null;
        await new Promise<void>((r) => wake = r);
      }
      let n = 0;
      while (n < p.byteLength && chunks.length > 0) {
        const c = chunks[0];
        const k = Math.min(c.byteLength, p.byteLength - n);
        p.set(c.subarray(0, k), n);
        n += k;
        if (k === c.byteLength) chunks.shift();
        else chunks[0] = c.subarray(k);
      }
      queued -= n;
      if (queued <= HIGH_WATER && sock.isPaused()) sock.resume();
      return n;
    },
    write(p: Uint8Array): Promise<number> {
      if (error) return Promise.reject(error);
      return new Promise((resolve, reject) => {
        sock.write(p, (err?: Error | null) => err ? reject(err) : resolve(p.byteLength));
      });
    },
    close(): void {
      ended = true;
      sock.destroy();
      notify();
    },
  };
}
