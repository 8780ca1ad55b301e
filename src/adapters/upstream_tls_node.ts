// TLS through node:tls, for what Deno's own TLS client cannot do: skip certificate verification
// (`insecure_skip_verify`, for development upstreams with self-signed certificates), and present
// a client certificate on a connection Prox opened itself (`client_cert`: Deno.startTls takes
// none, and Deno.connectTls, which does, gives no TCP_NODELAY and no way to write a PROXY
// protocol header first or to verify a name other than the one it connects to). This adapts a
// node:tls socket to the byte Transport the HTTP/1.1 and HTTP/2 clients read and write.

import { connect as connectTcp, isIP } from "node:net";
import type { Socket } from "node:net";
import { connect } from "node:tls";
import type { TLSSocket } from "node:tls";
import type { Transport } from "./upstream_h1_conn.ts";

const HIGH_WATER = 256 * 1024;

/** Connects with TLS; resolves once the handshake is done. */
export function connectNodeTls(
  o: {
    hostname: string;
    port: number;
    serverName?: string;
    alpn: string[];
    signal: AbortSignal;
    /** False: any certificate is accepted (`insecure_skip_verify`). */
    verify: boolean;
    /**
     * Trusted instead of the default roots (node:tls replaces them; passing them along costs
     * ~15 ms of parsing per connection in Deno); absent: the default roots, DENO_CERT's too.
     */
    caCerts?: string[];
    client?: { cert: string; key: string };
    /** Written first, before TLS (`proxy_protocol`). */
    proxyHeader?: Uint8Array;
  },
): Promise<{ transport: Transport; alpn: string | null }> {
  const name = o.serverName ?? o.hostname;
  return new Promise((resolve, reject) => {
    if (o.signal.aborted) return reject(new Error("aborted"));
    let sock: TLSSocket | undefined;
    let settled = false;
    const raw = connectTcp({ host: o.hostname, port: o.port }, () => {
      raw.setNoDelay(true);
      if (!o.proxyHeader) return tls(raw);
      raw.write(o.proxyHeader, (err?: Error | null) => err ? fail(err) : tls(raw));
    });
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      // TLS 1.2 judges the client certificate inside the handshake, and node:tls in Deno drops
      // the upstream's alert: an end after its hello (bytes came) is most likely a refusal.
      if (o.client && raw.bytesRead > 0 && /disconnected before secure TLS/i.test(err.message)) {
        err = new Error(
          "the upstream ended the TLS handshake after its hello: it may not accept the client " +
            "certificate (tls.client_cert)",
          { cause: err },
        );
      }
      o.signal.removeEventListener("abort", onAbort);
      sock?.destroy();
      raw.destroy();
      reject(err);
    };
    const onAbort = () => fail(new Error("aborted"));
    o.signal.addEventListener("abort", onAbort, { once: true });
    raw.once("error", fail);
    const tls = (socket: Socket) => {
      const s = connect({
        socket,
        // No SNI for an IP (RFC 6066 §3): node:tls refuses one ("fd00::2" has letters in it).
        servername: isIP(name) ? undefined : name,
        // The name verified when there is no SNI to carry it.
        host: name,
        rejectUnauthorized: o.verify,
        ca: o.verify && o.caCerts ? o.caCerts : undefined,
        cert: o.client?.cert,
        key: o.client?.key,
        ALPNProtocols: o.alpn,
      });
      sock = s;
      s.once("error", fail);
      s.once("secureConnect", () => {
        if (settled) return;
        settled = true;
        o.signal.removeEventListener("abort", onAbort);
        s.off("error", fail);
        const alpn = typeof s.alpnProtocol === "string" ? s.alpnProtocol : null;
        resolve({ transport: adapt(s, o.client !== undefined), alpn });
      });
    };
  });
}

/**
 * The socket as a Transport. `presented`: a client certificate went out. Under TLS 1.3 the
 * upstream judges it after the client's handshake is done, and one that refuses it closes the
 * connection; node:tls in Deno drops its alert (certificate_required, certificate_expired…), so
 * an end before the first byte says what it most likely means.
 */
function adapt(sock: TLSSocket, presented: boolean): Transport {
  const chunks: Uint8Array[] = [];
  let received = false;
  let closedHere = false;
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
    received = true;
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
        if (ended && presented && !received && !closedHere) {
          throw new Error(
            "nothing after the TLS handshake: it may not accept the client certificate " +
              "(tls.client_cert)",
          );
        }
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
      closedHere = true;
      ended = true;
      sock.destroy();
      notify();
    },
  };
}
