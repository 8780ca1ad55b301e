// Mutual TLS (`tls.client_auth`): Deno's TLS server (Deno.listenTls, Deno.serve) cannot ask a
// client for a certificate, node:tls's server can (its `requestCert` and `ca` reach rustls's
// client verifier). The engine relays each client connection to such a server on 127.0.0.1, as it
// does for `tls.sni`, and serves the decrypted connections it hands over, wrapped here in the
// parts of Deno.TlsConn the engines use (read, write, close, remoteAddr, handshake).

import type tls from "node:tls";
import type { ClientCert } from "../../ports.ts";
import type { RevocationCheck } from "../../domain/crl.ts";
import type { OcspChecker } from "../ocsp_check.ts";
import { chainBuilder, type SignedChain } from "./client_chain.ts";
import { X509Certificate } from "node:crypto";
import {
  certificateNames,
  keyUsageAllowsSigning,
  subjectAltNames,
} from "../../domain/x509_names.ts";

/** `tls.client_auth`, with the CA file read. */
export interface ClientAuth {
  /** PEM: the CAs a client's certificate must chain to. */
  ca: string;
  /** `require`: a client without a certificate fails the handshake; else it may present none. */
  required: boolean;
  /**
   * `crl_file`'s lists (node:tls's `crl` option is ignored on Deno: checked here). Read at each
   * handshake: a reload puts new lists here without a new listener.
   */
  crl?: RevocationCheck;
  /** `crl_expired: refuse`: a certificate whose issuer's list is past its next update is refused. */
  refuseStale?: boolean;
  /** The lists' PEM text: a reload rechecks the open connections only when it changed. */
  crlText?: string;
  /** `ocsp`: each certificate's status asked of its responder before the connection is served. */
  ocsp?: OcspChecker;
}

/**
 * Why a client was refused, as `prox_tls_client_refused_total` counts it: the handshake failed
 * (no certificate where one is required, an unknown CA: TLS's own refusals), none was presented
 * or it did not verify (verify_if_given), its keyUsage, crl_file (revoked, its list out of
 * date, or a certificate of its chain whose issuer has no list there), OCSP (revoked, unknown, or no status learned under on_error: refuse).
 */
export type ClientRefusal =
  | "handshake"
  | "no_certificate"
  | "unverified"
  | "key_usage"
  | "crl_revoked"
  | "crl_expired"
  | "crl_missing"
  | "ocsp_revoked"
  | "ocsp_unknown"
  | "ocsp_error";

/** A decrypted connection, as the engines read and write a Deno.TlsConn. */
export interface ClientAuthConn {
  readonly remoteAddr: Deno.NetAddr;
  /** The client's verified certificate; null when it presented none (`verify_if_given`). */
  readonly clientCert: ClientCert | null;
  handshake(): Promise<{ alpnProtocol: string | null }>;
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
}

/** What the engine accepts from: a loopback listener whose port is known once it is bound. */
export interface ClientAuthListener {
  /** Resolves with the bound port (node's listen binds in the background). */
  readonly port: Promise<number>;
  accept(): Promise<ClientAuthConn>;
  /**
   * Closes the open connections whose certificate (or a certificate of its chain) `auth.crl`
   * now lists as revoked (a reload's new lists); returns how many.
   */
  recheck(): number;
  close(): void;
}

/** How long a closed connection's last bytes (and TLS close_notify) may take to go out. */
const CLOSE_MS = 5_000;

/** Bytes read and not yet taken past which the socket is paused. */
const HIGH_WATER = 256 * 1024;

/** A node TLSSocket read and written as a Deno connection. */
class NodeTlsConn implements ClientAuthConn {
  readonly remoteAddr: Deno.NetAddr;
  readonly clientCert: ClientCert | null;
  readonly #socket: tls.TLSSocket;
  readonly #alpn: string | null;
  #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #failed: Error | null = null;
  #wake: (() => void) | null = null;

  constructor(socket: tls.TLSSocket, clientCert: ClientCert | null) {
    this.#socket = socket;
    this.clientCert = clientCert;
    this.#alpn = typeof socket.alpnProtocol === "string" ? socket.alpnProtocol : null;
    this.remoteAddr = {
      transport: "tcp",
      hostname: socket.remoteAddress ?? "127.0.0.1",
      port: socket.remotePort ?? 0,
    };
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued > HIGH_WATER) socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (err: Error) => {
      this.#failed ??= err;
      this.#notify();
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  handshake(): Promise<{ alpnProtocol: string | null }> {
    // Handed over by 'secureConnection': the handshake is done.
    return Promise.resolve({ alpnProtocol: this.#alpn });
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#failed) throw this.#failed;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    const first = this.#chunks[0];
    const n = Math.min(p.length, first.length);
    p.set(first.subarray(0, n));
    if (n === first.length) this.#chunks.shift();
    else this.#chunks[0] = first.subarray(n);
    this.#queued -= n;
    if (this.#queued <= HIGH_WATER / 4 && this.#socket.isPaused()) this.#socket.resume();
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#failed) return Promise.reject(this.#failed);
    // Copied: the engines reuse their buffers once a write has resolved, and node may still hold
    // a reference to what it queued.
    const copy = p.slice();
    return new Promise((resolve, reject) => {
      this.#socket.write(copy, (err) => err ? reject(err) : resolve(p.length));
    });
  }

  closeWrite(): Promise<void> {
    // (A destroyed socket may never call end's callback: its close settles it too.)
    if (this.#socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#socket.once("close", () => resolve());
      this.#socket.end(() => resolve());
    });
  }

  close(): void {
    // The TLS close_notify first, as Deno's TLS connections send it (a client that sees the TCP
    // end without it may report a truncated answer: OpenSSL's "unexpected eof"); the socket is
    // destroyed once that is written, or at once when it cannot be.
    const socket = this.#socket;
    this.#ended = true;
    this.#notify();
    if (socket.destroyed) return;
    // (After closeWrite the end is queued already: destroying now would drop it.) A peer that does
    // not take what is queued has CLOSE_MS, then the socket goes.
    const timer = setTimeout(() => socket.destroy(), CLOSE_MS);
    socket.once("close", () => clearTimeout(timer));
    if (!socket.writableEnded) socket.end();
    if (socket.writableFinished) socket.destroy();
    else socket.once("finish", () => socket.destroy());
  }
}

/** The fields of a node peer certificate Prox reads. */
interface PeerCertificate {
  raw?: Uint8Array;
  serialNumber?: string;
  fingerprint256?: string;
  valid_to?: string;
  /** The next certificate up the verified chain (detailed); itself for the trust anchor. */
  issuerCertificate?: PeerCertificate;
}

/** Why a certificate of a client's chain is refused by `crl_file`. */
type CrlRefusal =
  | { cert: Uint8Array; why: "revoked" }
  | { cert: Uint8Array; why: "missing" }
  | { cert: Uint8Array; why: "stale"; since: number };

/**
 * The first certificate of `chain` (the client's, then each issuer up to the trust anchor, which
 * ca_cert vouches for and no list here can revoke) that `crl` holds revoked, whose issuer has no
 * list there (nginx's ssl_crl checks every certificate, X509_V_FLAG_CRL_CHECK_ALL, and refuses
 * one it cannot: "unable to get certificate CRL"), or (`refuseStale`) whose issuer's list is
 * past its next update at `now`; null when none is.
 */
function refusedInChain(
  chain: SignedChain,
  crl: RevocationCheck,
  refuseStale: boolean,
  now: number,
): CrlRefusal | null {
  const below = chain.selfSigned || chain.trusted ? chain.certs.slice(0, -1) : chain.certs;
  // An intermediate the root's list revokes revokes whatever it issued (RFC 5280 §6.3); a
  // revocation is the reason given before a list missing further along.
  const revoked = below.find((c) => crl.revoked(c));
  if (revoked) return { cert: revoked, why: "revoked" };
  for (const c of below) {
    if (!crl.listed(c)) return { cert: c, why: "missing" };
    // A list out of date cannot say this certificate was not revoked since (RFC 5280 §6.3.3).
    const stale = refuseStale ? crl.staleSince(c, now) : null;
    if (stale !== null) return { cert: c, why: "stale", since: stale };
  }
  return null;
}

/**
 * Why OCSP refuses `chain` (its leaf, or with `check: chain` each certificate below the trust
 * anchor, asked about in turn), or null; an error that `on_error: allow` lets through goes to
 * `onError`.
 */
async function ocspVerdict(
  chain: SignedChain,
  ocsp: OcspChecker,
  onError?: (reason: string) => void,
): Promise<{ reason: string; kind: ClientRefusal } | null> {
  const { certs } = chain;
  for (let i = 0; i < certs.length; i++) {
    const issuer = certs[i + 1];
    // A root, or a certificate of ca_cert without its issuer (an intermediate as the trust
    // anchor): no one above it to ask.
    if (!issuer && (chain.selfSigned || chain.trusted)) return null;
    if (!issuer) {
      return {
        reason: "OCSP: the certificate's issuer is not in its verified chain",
        kind: "ocsp_error",
      };
    }
    const v = await ocsp.check(certs[i], issuer);
    if (v.error !== undefined && v.refused === null) onError?.(v.error);
    if (v.refused !== null) {
      return {
        reason: i === 0
          ? v.refused
          : `${v.refused} (an intermediate: ${namesOf(certs[i]).subject})`,
        kind: v.kind === "revoked"
          ? "ocsp_revoked"
          : v.kind === "unknown"
          ? "ocsp_unknown"
          : "ocsp_error",
      };
    }
    if (ocsp.mode === "leaf") break;
  }
  return null;
}

/** The certificates of node's detailed peer certificate (the client's, then what it links). */
function sentChain(peer: PeerCertificate): Uint8Array[] {
  const out: Uint8Array[] = [];
  let c: PeerCertificate | undefined = peer;
  for (let depth = 0; c?.raw && depth < 100; depth++) {
    out.push(c.raw);
    if (c.issuerCertificate === c) break;
    c = c.issuerCertificate;
  }
  return out;
}

/** A certificate's serial (upper-case hex) and subject, for a log line. */
function serialAndSubject(raw: Uint8Array): string {
  try {
    return `serial ${new X509Certificate(raw).serialNumber.toUpperCase()}, ${namesOf(raw).subject}`;
  } catch {
    return "<unreadable>";
  }
}

/**
 * The subject and issuer as RFC 4514 writes them, read from the certificate (node's objects leave
 * out DC and UID and group repeated attributes); one that cannot be read says so.
 */
function namesOf(raw: Uint8Array): { subject: string; issuer: string } {
  try {
    return certificateNames(raw);
  } catch {
    return { subject: "<unreadable>", issuer: "<unreadable>" };
  }
}

/** The subjectAltName list of a DER certificate; one that cannot be read says so. */
function sanOf(raw: Uint8Array): string {
  try {
    return subjectAltNames(raw);
  } catch {
    return "<unreadable>";
  }
}

/** What the routes see of a verified client certificate (exported for its test). */
export function clientCertOf(cert: PeerCertificate): ClientCert | null {
  if (!cert.raw || cert.raw.length === 0) return null;
  const b64 = btoa(String.fromCharCode(...cert.raw));
  const pem = `-----BEGIN CERTIFICATE-----\n${
    b64.match(/.{1,64}/g)!.join("\n")
  }\n-----END CERTIFICATE-----\n`;
  const notAfter = cert.valid_to ? new Date(cert.valid_to) : null;
  return {
    ...namesOf(cert.raw),
    serial: (cert.serialNumber ?? "").toUpperCase(),
    fingerprint: (cert.fingerprint256 ?? "").replaceAll(":", "").toLowerCase(),
    // (Not node's subjectaltname: Deno's leaves a value holding ", " ambiguous.)
    san: sanOf(cert.raw),
    notAfter: notAfter && !isNaN(notAfter.getTime()) ? notAfter.toISOString() : "",
    pem,
  };
}

/** A client certificate's keyUsage allows the signature its TLS handshake made. */
function signs(raw: Uint8Array): boolean {
  try {
    return keyUsageAllowsSigning(raw);
  } catch {
    return false;
  }
}

/**
 * Listens on 127.0.0.1 (a free port) with `cert` and `key`, asking every client for a certificate
 * that `auth.ca` verifies. Connections come out of `accept` once their handshake is done; one that
 * fails it (no certificate where one is required, or one that does not verify) is closed by TLS.
 */
export function listenClientAuth(
  pair: { cert: string; key: string },
  opts: {
    auth: ClientAuth;
    alpnProtocols: string[];
    /** A handshake refused (the client's certificate, or its absence), and which refusal. */
    onRefused?: (reason: string, kind: ClientRefusal) => void;
    /** An OCSP status not learned, the client let in (`on_error: allow`). */
    onOcspError?: (reason: string) => void;
  },
): ClientAuthListener {
  const ready: ClientAuthConn[] = [];
  const waiting: { resolve: (c: ClientAuthConn) => void; reject: (e: Error) => void }[] = [];
  let closed = false;
  let server: tls.Server | null = null;
  const chainOf = chainBuilder(opts.auth.ca);
  /** The open connections that presented a certificate, with it (bounded by the connections). */
  const open = new Map<tls.TLSSocket, { peer: PeerCertificate; cert: ClientCert }>();
  const onSecure = (socket: tls.TLSSocket) => {
    socket.on("error", () => {});
    if (closed) return void socket.destroy();
    const peer = socket.getPeerCertificate(true) as unknown as PeerCertificate;
    const cert = clientCertOf(peer);
    // With verify_if_given node hands over a client whose certificate did not verify too
    // (`authorized` false): only one that presented none goes on.
    if (!socket.authorized && (cert !== null || opts.auth.required)) {
      opts.onRefused?.(
        String(socket.authorizationError ?? "unverified certificate"),
        cert === null ? "no_certificate" : "unverified",
      );
      return void socket.destroy();
    }
    if (cert !== null && !signs(peer.raw!)) {
      opts.onRefused?.(
        `certificate's keyUsage does not allow digital signatures (${cert.subject}; RFC 5280 §4.2.1.3)`,
        "key_usage",
      );
      return void socket.destroy();
    }
    const chain = cert !== null && (opts.auth.crl || opts.auth.ocsp)
      ? chainOf(peer.raw!, sentChain(peer).slice(1))
      : null;
    const refused = chain !== null && opts.auth.crl
      ? refusedInChain(chain, opts.auth.crl, opts.auth.refuseStale ?? false, Date.now())
      : null;
    if (refused !== null) {
      const what = refused.why === "revoked"
        ? "certificate revoked"
        : refused.why === "stale"
        ? `certificate's issuer's revocation list out of date since ${
          new Date(refused.since).toISOString()
        }`
        : `no revocation list of the certificate's issuer (${
          namesOf(refused.cert).issuer
        }) in crl_file, so it cannot be checked`;
      const leaf = refused.cert === chain!.certs[0];
      opts.onRefused?.(
        `${what} (${
          leaf ? `serial ${cert!.serial}, ${cert!.subject}` : serialAndSubject(refused.cert)
        })` +
          (leaf ? "" : ` in the chain of ${cert!.subject}`) +
          (refused.why === "missing" ? ": add that CA's CRL to crl_file" : ""),
        refused.why === "revoked"
          ? "crl_revoked"
          : refused.why === "stale"
          ? "crl_expired"
          : "crl_missing",
      );
      return void socket.destroy();
    }
    const conn = new NodeTlsConn(socket, cert);
    if (cert !== null) {
      open.set(socket, { peer, cert });
      socket.once("close", () => open.delete(socket));
    }
    const handOver = () => {
      if (closed || socket.destroyed) return void socket.destroy();
      const w = waiting.shift();
      if (w) w.resolve(conn);
      else ready.push(conn);
    };
    if (chain === null || !opts.auth.ocsp) return handOver();
    // The connection (its first bytes kept by the conn) waits for the responder's word.
    void ocspVerdict(chain, opts.auth.ocsp, opts.onOcspError).then((refused) => {
      // The listener closed meanwhile (its checker aborted the request): no verdict to report.
      if (closed) return void socket.destroy();
      if (refused === null) return handOver();
      opts.onRefused?.(refused.reason, refused.kind);
      socket.destroy();
    });
  };
  // node:tls is loaded only for a listener that asks for client certificates.
  const port = (async () => {
    const { createServer } = await import("node:tls");
    if (closed) throw new Error("Listener closed");
    const s = server = createServer({
      cert: pair.cert,
      key: pair.key,
      ca: opts.auth.ca,
      requestCert: true,
      rejectUnauthorized: opts.auth.required,
      // A client that ends its side after its request (close_notify, then FIN) still gets the
      // answer, as on Deno's TLS listener: node would otherwise end this side at once, unwritten.
      allowHalfOpen: true,
      ALPNProtocols: opts.alpnProtocols,
    });
    s.on("secureConnection", onSecure);
    s.on("tlsClientError", (err: Error) => opts.onRefused?.(err.message, "handshake"));
    await new Promise<void>((resolve, reject) => {
      s.once("listening", resolve);
      s.once("error", reject);
      s.listen(0, "127.0.0.1");
    });
    s.on("error", () => {});
    return (s.address() as { port: number }).port;
  })();
  port.catch(() => {});
  return {
    port,
    accept() {
      if (closed) return Promise.reject(new Error("Listener closed"));
      const c = ready.shift();
      if (c) return Promise.resolve(c);
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
    recheck() {
      const crl = opts.auth.crl;
      if (!crl) return 0;
      let cut = 0;
      for (const [socket, { peer, cert }] of open) {
        let chain: ReturnType<typeof chainOf>;
        try {
          chain = chainOf(peer.raw!, sentChain(peer).slice(1));
        } catch {
          continue;
        }
        // Only a revocation ends a connection: a list gone stale or missing refuses new
        // handshakes, but does not say that this client may no longer be served.
        const refused = refusedInChain(chain, crl, false, 0);
        if (refused?.why !== "revoked") continue;
        const revoked = refused.cert;
        const leaf = revoked === chain.certs[0];
        opts.onRefused?.(
          `certificate revoked by a new revocation list, open connection closed (${
            leaf ? `serial ${cert.serial}, ${cert.subject}` : serialAndSubject(revoked)
          })` + (leaf ? "" : ` in the chain of ${cert.subject}`),
          "crl_revoked",
        );
        open.delete(socket);
        socket.destroy();
        cut++;
      }
      return cut;
    },
    close() {
      if (closed) return;
      closed = true;
      server?.close();
      for (const c of ready.splice(0)) c.close();
      for (const w of waiting.splice(0)) w.reject(new Error("Listener closed"));
    },
  };
}
