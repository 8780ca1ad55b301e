// `proxy_protocol`, `tls.insecure_skip_verify` and `tls.server_name` for WebSocket upstreams.
// Deno's WebSocket client opens its own connection, so it is pointed (Deno.createHttpClient's
// `proxy: { transport: "unix" }`) at a relay made for this one connection: a Unix socket in a
// private directory whose single connection goes to the upstream as Prox's own client connects
// (the PROXY header first, then TLS for wss as the route's `tls` says; the client speaks plain
// HTTP to a proxy socket), its request line turned from the absolute form Deno sends a proxy back
// into the path.

import { ProxyError } from "../domain/errors.ts";
import type { UpstreamTls } from "../ports.ts";
import { connectUpstream } from "./upstream_client.ts";
import type { Transport } from "./upstream_h1_conn.ts";

/** The longest request line the relay rewrites (Deno's handshake sends far less). */
const MAX_LINE = 16 * 1024;
/** The longest handshake head the relay rewrites a Host field in. */
const MAX_HEAD = 256 * 1024;

/** A relay for one WebSocket connection; `close` ends it (and its connection, if any). */
export interface WebSocketRelay {
  client: Deno.HttpClient;
  close(): void;
  /**
   * Why the relay could not reach the upstream, if it could not: Deno's client sees only its
   * relay connection closed (and, retrying, the socket gone: "No such file or directory").
   */
  failure(): ProxyError | null;
}

/**
 * Starts the relay for `url`. The upstream is connected when Deno's client connects to the
 * relay; a failure closes that connection, which the client reports as a failed handshake.
 */
export async function startRelay(
  url: URL,
  o: {
    proxyHeader?: Uint8Array;
    tls?: UpstreamTls;
    connectTimeout: number;
    host?: string;
    /** A `unix:` target's origin, connected to instead of `url`'s host. */
    unix?: URL;
  },
): Promise<WebSocketRelay> {
  const { dir, listener } = await relaySocket();
  const path = `${dir}/${SOCKET}`;
  let local: Deno.Conn | null = null;
  let up: Transport | null = null;
  let closed = false;
  let failure: ProxyError | null = null;
  const cleanup = () => {
    try {
      listener.close();
    } catch { /* closed */ }
    Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const close = () => {
    if (closed) return;
    closed = true;
    cleanup();
    for (const c of [local, up]) {
      try {
        c?.close();
      } catch { /* closed */ }
    }
  };
  (async () => {
    local = await listener.accept();
    cleanup(); // one connection only
    const origin = o.unix ?? new URL(url.href.replace(/^ws/, "http"));
    ({ transport: up } = await connectUpstream(origin, {
      tls: o.tls,
      timeoutMs: o.connectTimeout,
      proxyHeader: o.proxyHeader,
    }));
    if (closed) return close();
    await relayBytes(local, up, o.host);
  })().catch((err) => {
    // Noted before the relay's connection closes, which is all Deno's client sees of it.
    if (!up && err instanceof ProxyError) failure = err;
  }).finally(close);
  // The client speaks plain HTTP to a proxy socket, wss too: TLS is the relay's (o.tls).
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path } });
  return { client, close, failure: () => failure };
}

const SOCKET = "relay.sock";
/** The longest Unix socket path (sun_path holds 108 bytes with the final NUL). */
const MAX_SOCKET_PATH = 107;

/**
 * A listening socket in a new private directory (0700: this process only) under TMPDIR, or under
 * /tmp when TMPDIR's path is too long for a Unix socket. A directory that cannot be listened in
 * is removed again.
 */
async function relaySocket(): Promise<{ dir: string; listener: Deno.Listener }> {
  const length = (d: string) => new TextEncoder().encode(`${d}/${SOCKET}`).byteLength;
  let dir = "TMPDIR";
  try {
    dir = await Deno.makeTempDir({ prefix: "prox-ws-" });
    if (length(dir) > MAX_SOCKET_PATH) {
      await Deno.remove(dir);
      dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "prox-ws-" });
    }
    return { dir, listener: Deno.listen({ transport: "unix", path: `${dir}/${SOCKET}` }) };
  } catch (err) {
    if (dir !== "TMPDIR") await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new ProxyError(
      "internal",
      `Cannot open the WebSocket relay's Unix socket in ${dir} (proxy_protocol): ${
        err instanceof Error ? err.message : String(err)
      }`,
      { cause: err },
    );
  }
}

/**
 * Copies both ways until either side ends; the first line loses its absolute-form target, and
 * with `host` the handshake's Host field is that (Deno's client sends the URL's).
 */
async function relayBytes(local: Deno.Conn, up: Transport, host?: string): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  let head = new Uint8Array(0);
  // The request line, or with `host` the whole head (Deno's handshake carries the client's
  // fields, bounded by the listener's header limits).
  const end = (b: Uint8Array) => host === undefined ? b.indexOf(10) : headEnd(b);
  const limit = host === undefined ? MAX_LINE : MAX_HEAD;
  for (;;) {
    const n = await local.read(buf);
    if (n === null) return;
    const joined = new Uint8Array(head.length + n);
    joined.set(head);
    joined.set(buf.subarray(0, n), head.length);
    head = joined;
    if (end(head) >= 0) break;
    if (head.length > limit) throw new ProxyError("protocol", "WebSocket request head too long");
  }
  const cut = end(head);
  // One character a byte, so that a field's non-ASCII bytes go on as they came.
  let text = "";
  for (let i = 0; i < cut; i += 8192) {
    text += String.fromCharCode(...head.subarray(i, Math.min(cut, i + 8192)));
  }
  // "GET http://host:port/path HTTP/1.1" → "GET /path HTTP/1.1" (RFC 9112 §3.2.1 origin form).
  let fixed = text.replace(
    /^(\S+) [a-z]+:\/\/[^/\s]*(\/\S*)? /i,
    (_, m, p) => `${m} ${p ?? "/"} `,
  );
  // A function, not a replacement string: in that, `$&`, `$'` or `` $` `` in a Host (each valid
  // in a reg-name, RFC 3986 §3.2.2) copied parts of the head into the field (a second Host).
  if (host !== undefined) fixed = fixed.replace(/\r\nhost:[^\r\n]*/i, () => `\r\nhost: ${host}`);
  await writeAll(up, Uint8Array.from(fixed, (c) => c.charCodeAt(0)));
  await writeAll(up, head.subarray(cut));
  const pump = async (from: { read(p: Uint8Array): Promise<number | null> }, to: Transport) => {
    const b = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await from.read(b);
      if (n === null) return;
      await writeAll(to, b.subarray(0, n));
    }
  };
  await Promise.race([pump(local, up), pump(up, local)]);
}

/** Where the head's blank line starts (its last field's CRLF kept), or -1. */
function headEnd(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

async function writeAll(to: Transport, bytes: Uint8Array): Promise<void> {
  for (let n = 0; n < bytes.byteLength;) n += await to.write(bytes.subarray(n));
}
