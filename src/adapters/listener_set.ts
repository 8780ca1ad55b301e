// The set of running TCP listeners, changed as a transaction on reload: listeners whose address
// and TLS material are unchanged keep running; changed ones are bound first (same port: with
// SO_REUSEPORT), and only after the whole reload succeeded are the old ones drained.

import { formatListenAddr, parseListenAddr } from "../config/listen.ts";
import type { ListenAddr } from "../config/listen.ts";
import type { Config } from "../config/schema.ts";
import type { Handler, Logger, Metrics } from "../ports.ts";
import { listen } from "./http_serve.ts";
import { listenH1 } from "./h1/server.ts";
import type {
  ConnectionCounts,
  ConnectionLimits,
  OnDemandHook,
  SniCertificate,
} from "./h1/server.ts";
import type { ClientAuth } from "./h1/tls_client_auth.ts";
import { revocationCheck } from "../domain/crl.ts";
import { createOcspChecker } from "./ocsp_check.ts";
import { unsignedLists } from "./crl_verify.ts";
import type { AcceptProxyProtocol } from "./h1/proxy_accept.ts";
import { parseCidr } from "../domain/ip.ts";
import type { Cidr } from "../domain/ip.ts";
import { otelEnabled } from "./otel.ts";
import type { Listener } from "./http_serve.ts";
import { timerDelay } from "../config/duration.ts";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { certificateNames, pemBlock } from "./pem_chain.ts";

/** What one listener should be: a stable id ("main", "redirect", …), address, TLS, handler. */
export interface ListenerPlan {
  id: string;
  addr: ListenAddr;
  cert?: string;
  key?: string;
  handler: Handler;
  /** Counts requests in progress on this listener (prox_active_connections). */
  metrics?: Metrics;
  /**
   * `protocols.http1_engine`: who serves the listener, Deno.serve or Prox's own engines
   * (h1/server.ts; with TLS, HTTP/2 too: h2/connection.ts).
   */
  engine?: "deno" | "prox";
  /** `protocols.http1_idle_timeout` in ms, for the engine (0: no limit). */
  idleMs?: number;
  /** `protocols.http1_header_timeout` in ms, for the engine (0: no limit of its own). */
  headerMs?: number;
  /** `protocols.http2_enabled` (Prox's engine only: Deno.serve always offers HTTP/2). */
  http2?: boolean;
  /** `protocols.http2_max_concurrent_streams` and `http2_max_frame_size` (Prox's engine only). */
  maxStreams?: number;
  maxFrame?: number;
  /** `protocols.websocket_enabled`: the HTTP/2 engine offers extended CONNECT (RFC 8441). */
  websocket?: boolean;
  /** `accept_proxy_protocol` (Prox's engine only: it reads the header before HTTP or TLS). */
  proxyProtocol?: AcceptProxyProtocol;
  /** `limits.max_connections` and `max_connections_per_ip` (Prox's engine only). */
  connectionLimits?: ConnectionLimits;
  /** `tls.sni`: more certificates, chosen by the name a client asks for (Prox's engine only). */
  sni?: SniCertificate[];
  /** `tls.client_auth`, its CA file read (Prox's engine only). */
  clientAuth?: ClientAuth;
  /** `tls.acme.on_demand`: certificates obtained for names no other holds (Prox's engine only). */
  onDemand?: OnDemandHook;
}

/**
 * The listeners a config asks for: the main one when there is TLS material or no TLS at all
 * (`tls` null: ACME before its first certificate, then only the plain-HTTP listeners run, for
 * HTTP-01), the `http_redirect` one, and ACME's own plain-HTTP address when it differs.
 */
export function listenerPlans(
  c: Config,
  o: {
    tls: { cert?: string; key?: string } | null;
    /** `tls.sni`'s certificates, read (readSniFiles). */
    sni?: SniCertificate[];
    /** `tls.client_auth`, read (readClientAuth). */
    clientAuth?: ClientAuth;
    /** `tls.acme.on_demand`'s certificates (one hook for the server's life: no listener change). */
    onDemand?: OnDemandHook;
    serve: Handler;
    redirect: Handler;
    metrics: Metrics;
  },
): ListenerPlan[] {
  // PROX_H1_ENGINE=prox|deno overrides the config's choice: how the test suite runs on either.
  // Deno's OpenTelemetry makes the server span of a request in Deno.serve, which the engine
  // bypasses: with tracing on, Deno.serve serves.
  const forced = Deno.env.get("PROX_H1_ENGINE");
  const engine = otelEnabled((k) => Deno.env.get(k))
    ? "deno"
    : forced === "prox" || forced === "deno"
    ? forced
    : c.protocols.http1_engine;
  const app = c.accept_proxy_protocol;
  // A balancer that sends PROXY headers to the HTTPS port sends them to port 80 too (AWS: per
  // target group): the plain listeners (redirects, ACME's HTTP-01) read them as the main one does.
  // Only Prox's engine reads a header (validate refuses http1_engine: deno with it).
  const proxied = app
    ? {
      engine: "prox" as const,
      proxyProtocol: {
        from: app.from.map(parseCidr).filter((x): x is Cidr => x !== null),
        timeoutMs: app.timeout,
      },
    }
    : {};
  const plans: ListenerPlan[] = o.tls
    ? [{
      id: "main",
      addr: addrOf(c.listen_addr),
      handler: o.serve,
      metrics: o.metrics,
      engine,
      idleMs: c.protocols.http1_idle_timeout,
      headerMs: c.protocols.http1_header_timeout,
      http2: c.protocols.http2_enabled,
      maxStreams: c.protocols.http2_max_concurrent_streams || undefined,
      maxFrame: c.protocols.http2_max_frame_size || undefined,
      websocket: c.protocols.websocket_enabled,
      // Set without limits too, so Prox's engine counts the connections from the start: a reload
      // that adds a limit (as one does under a flood) counts those already open against it.
      connectionLimits: {
        total: c.limits.max_connections,
        perIp: c.limits.max_connections_per_ip,
        ipv6Prefix: c.limits.ipv6_prefix,
      },
      // Only Prox's engine counts connections (Deno.serve shows none): the limits keep it on
      // where tracing or PROX_H1_ENGINE=deno would put Deno.serve there (a config's own
      // http1_engine: deno is warned about by validate).
      ...((c.limits.max_connections || c.limits.max_connections_per_ip) &&
          c.protocols.http1_engine !== "deno"
        ? { engine: "prox" as const }
        : {}),
      // Only Prox's engine serves more than one certificate (Deno.serve takes one): `sni` keeps
      // it on where tracing or PROX_H1_ENGINE=deno would put Deno.serve there.
      ...(o.sni && o.sni.length > 0 ? { sni: o.sni, engine: "prox" as const } : {}),
      // Likewise client certificates, which Deno.serve cannot ask for.
      ...(o.clientAuth ? { clientAuth: o.clientAuth, engine: "prox" as const } : {}),
      // And on-demand certificates, which need the ClientHello read first.
      ...(o.onDemand ? { onDemand: o.onDemand, engine: "prox" as const } : {}),
      ...o.tls,
      ...proxied,
    }]
    : [];
  if (c.http_redirect) {
    plans.push({
      id: "http_redirect",
      addr: addrOf(c.http_redirect.listen_addr),
      handler: o.redirect,
      ...proxied,
    });
  }
  const acmeHttp = c.tls?.acme?.enabled ? c.tls.acme.http_listen_addr : undefined;
  if (acmeHttp && acmeHttp !== c.http_redirect?.listen_addr) {
    plans.push({ id: "acme_http", addr: addrOf(acmeHttp), handler: o.redirect, ...proxied });
  }
  return plans;
}

/**
 * What to do about a bind error a first-time user meets: a port in use, an address this machine
 * does not have, a port below 1024 without the right to bind it (Linux refuses it to other users
 * than root unless the binary has the capability).
 */
export function bindHint(err: unknown, port: number): string {
  if (err instanceof Deno.errors.AddrInUse) {
    return ` (another program listens there: stop it or choose another port; \`ss -ltnp 'sport = :${port}'\` names it)`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return " (no network interface of this machine has that address: `ip addr` lists them; 0.0.0.0 or [::] listens on all)";
  }
  return err instanceof Deno.errors.PermissionDenied && port > 0 && port < 1024
    ? " (ports below 1024 need root or the CAP_NET_BIND_SERVICE capability, e.g. `sudo setcap cap_net_bind_service=+ep prox`; or use a port from 1024 up)"
    : "";
}

/** A listener that could not be bound; `planId` says which (for locating it in the config). */
export class ListenError extends Error {
  constructor(message: string, readonly planId: string) {
    super(message);
  }
}

/** The config key of a plan's address (`main` → `listen_addr`). */
export function listenKey(planId: string): string[] {
  if (planId === "http_redirect") return ["http_redirect", "listen_addr"];
  if (planId === "acme_http") return ["tls", "acme", "http_listen_addr"];
  if (planId === "admin") return ["admin", "listen_addr"];
  if (planId.startsWith("tcp:")) return ["tcp", planId.slice(4), "listen_addr"];
  return ["listen_addr"];
}

function addrOf(text: string): ListenAddr {
  const addr = parseListenAddr(text);
  if (typeof addr === "string") throw new Error(addr);
  return addr;
}

/** Listeners bound for a pending change; `commit` makes them current, `abort` closes them. */
export interface StagedListeners {
  /** Number of listeners this change binds (0 when nothing changed). */
  readonly bound: number;
  /** Swaps in the new listeners and drains the replaced ones in the background. */
  commit(): void;
  abort(): Promise<void>;
}

/** The running listeners, keyed by plan id. */
export interface ListenerSet {
  readonly listeners: readonly Listener[];
  get(id: string): Listener | undefined;
  /** The current listeners with their plan ids, in plan order. */
  named(): [string, Listener][];
  /** Binds every plan that differs from what runs; throws (binding nothing) when one fails. */
  stage(plans: ListenerPlan[]): Promise<StagedListeners>;
  /** Drains every listener (current and replaced) for up to `graceMs`, then stops waiting. */
  shutdown(graceMs: number): Promise<void>;
  /** Waits at most `ms` more for listeners whose drain timed out (answers still being written). */
  settled(ms: number): Promise<void>;
}

/**
 * SO_REUSEPORT lets a replacement listener (or a new Prox process during an upgrade) bind the
 * port while the old one still drains. Needs Linux and Deno's unstable net API (deno.json
 * enables it; a bare `deno run dist/prox.js` does not, and then same-port rebinds fail).
 */
export const REUSE_PORT = Deno.build.os === "linux" && "QuicEndpoint" in Deno;

interface Entry {
  plan: ListenerPlan;
  listener: Listener;
  /** Identity of what was bound: configured address + TLS material. */
  print: string;
  /** The limits its engine reads per connection: a reload changes them in place. */
  limits?: ConnectionLimits;
  /** `tls.client_auth` as its engine reads it per handshake: a reload changes the lists in place. */
  auth?: ClientAuth;
}

function fingerprint(plan: ListenerPlan): string {
  return `${plan.addr.hostname}|${plan.addr.port}|${plan.cert ?? ""}|${plan.key ?? ""}|${
    ownEngine(plan)
      ? `prox|${plan.idleMs ?? ""}|${plan.headerMs ?? ""}|${plan.http2 ?? ""}|${
        plan.maxStreams ?? ""
      }|${plan.maxFrame ?? ""}|${plan.websocket ?? ""}|${
        JSON.stringify(plan.proxyProtocol ?? null)
      }|${
        // The two limits change live (`live` below); how addresses are grouped does not: the
        // open connections are counted under their groups.
        plan.connectionLimits?.ipv6Prefix ?? ""}|${
        (plan.sni ?? []).map((c) => c.cert + c.key).join("|")
      }|${
        plan.clientAuth
          // The revocation lists change live (`live` below): a list renewed every few hours
          // must not close every connection and WebSocket.
          ? `${plan.clientAuth.required}|${
            JSON.stringify(plan.clientAuth.ocsp?.config ?? null)
          }|${plan.clientAuth.ca}`
          : ""
      }|${plan.onDemand ? "on_demand" : ""}`
      : "deno"
  }`;
}

/** Whether Prox's own engines serve the plan. */
function ownEngine(plan: ListenerPlan): boolean {
  return plan.engine === "prox";
}

/** Creates an empty listener set; call `stage(plans)` then `commit()` to start listeners. */
export function createListenerSet(opts: {
  logger: Logger;
  drainMs: () => number;
  /** Called for each listener a change replaces, before it drains. */
  onReplace?: (l: Listener) => void;
  /**
   * With tracing on: server spans for the requests of Prox's engines, which Deno.serve would make
   * (otel.ts); only `accept_proxy_protocol` keeps the engines on then.
   */
  spans?: (handler: Handler) => Handler;
}): ListenerSet {
  const { logger } = opts;
  let current = new Map<string, Entry>();
  // Replaced listeners still finishing their requests (bounded by the number of reloads that
  // changed listeners within one drain period).
  const draining = new Set<Promise<void>>();
  // Shutdowns still running after their drain timed out (one per listener at most).
  const overdue = new Set<Promise<void>>();
  let closed = false;
  // The connections the listeners of each plan hold against `limits` (one entry per plan).
  const connectionCounts = new Map<string, ConnectionCounts>();
  const countsOf = (id: string): ConnectionCounts => {
    let c = connectionCounts.get(id);
    if (!c) connectionCounts.set(id, c = { open: 0, perIp: new Map() });
    return c;
  };

  /** Puts a kept listener's new limits where its engine reads them. */
  const live = (e: Entry) => {
    if (!e.limits || !e.plan.connectionLimits) return;
    e.limits.total = e.plan.connectionLimits.total;
    e.limits.perIp = e.plan.connectionLimits.perIp;
  };
  /** Puts a kept listener's new revocation lists where its handshakes read them. */
  const liveLists = (e: Entry) => {
    const next = e.plan.clientAuth;
    if (!e.auth || !next) return;
    // Each reload reads the file anew: only other text is a renewal (a recheck parses every open
    // client's chain again).
    const renewed = e.auth.crlText !== next.crlText;
    e.auth.crl = next.crl;
    e.auth.crlText = next.crlText;
    e.auth.refuseStale = next.refuseStale;
    // A client the new lists revoke is not served on: its connections (and WebSockets) close.
    const cut = renewed ? e.listener.recheckClients?.() ?? 0 : 0;
    if (cut > 0) {
      logger.info("Connections of revoked client certificates closed", { id: e.plan.id, cut });
    }
  };

  const drain = (l: Listener, graceMs: number): Promise<void> => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) =>
      timer = setTimeout(() => r("timeout"), timerDelay(graceMs))
    );
    const done = l.shutdown({ bodyWaitMs: timerDelay(graceMs) });
    return Promise.race([done.then(() => "done" as const), timeout]).then(
      (outcome) => {
        clearTimeout(timer);
        if (outcome === "timeout") {
          const rest = done.then(() => {}, () => {});
          overdue.add(rest);
          void rest.then(() => overdue.delete(rest));
          // Deno cannot cut connections once a graceful shutdown began; process exit does.
          logger.warn("Drain timeout reached; remaining connections are cut at exit", {
            addr: formatListenAddr(l),
            graceMs,
          });
        }
      },
    );
  };

  return {
    get listeners() {
      return [...current.values()].map((e) => e.listener);
    },
    get: (id) => current.get(id)?.listener,
    named: () => [...current].map(([id, e]) => [id, e.listener]),
    async stage(plans) {
      if (closed) throw new Error("Cannot bind listeners: shutting down");
      const next = new Map<string, Entry>();
      const fresh: Entry[] = [];
      try {
        for (const plan of plans) {
          const print = fingerprint(plan);
          const old = current.get(plan.id);
          if (old && old.print === print) {
            next.set(plan.id, { ...old, plan });
            continue;
          }
          // Same configured address: rebind the port actually in use (matters for port 0).
          const sameAddr = old && old.plan.addr.hostname === plan.addr.hostname &&
            old.plan.addr.port === plan.addr.port;
          const addr = sameAddr ? { ...plan.addr, port: old.listener.port } : plan.addr;
          let listener: Listener;
          // Counted across the listeners of this plan: a replaced one's still count.
          const limits = plan.connectionLimits && {
            ...plan.connectionLimits,
            counts: countsOf(plan.id),
          };
          // A copy, which later reloads update: the plan is replaced at each.
          const auth = plan.clientAuth && { ...plan.clientAuth };
          try {
            listener = ownEngine(plan)
              ? listenH1(addr, {
                handler: opts.spans ? opts.spans(plan.handler) : plan.handler,
                logger,
                reusePort: REUSE_PORT,
                metrics: plan.metrics,
                idleMs: plan.idleMs,
                headerMs: plan.headerMs,
                cert: plan.cert,
                key: plan.key,
                http2: plan.http2,
                maxStreams: plan.maxStreams,
                maxFrame: plan.maxFrame,
                websocket: plan.websocket,
                proxyProtocol: plan.proxyProtocol,
                connectionLimits: limits,
                sni: plan.sni,
                clientAuth: auth,
                onDemand: plan.onDemand,
              })
              : listen(addr, {
                handler: plan.handler,
                logger,
                cert: plan.cert,
                key: plan.key,
                reusePort: REUSE_PORT,
                metrics: plan.metrics,
              });
          } catch (err) {
            const hint = sameAddr && !REUSE_PORT
              ? " (rebinding a port in use needs SO_REUSEPORT: Linux and --unstable-net)"
              : bindHint(err, addr.port);
            throw new ListenError(
              `Cannot listen on ${formatListenAddr(addr)}: ${(err as Error).message}${hint}`,
              plan.id,
            );
          }
          const entry = { plan, listener, print, limits, auth };
          fresh.push(entry);
          next.set(plan.id, entry);
        }
      } catch (err) {
        await Promise.all(fresh.map((e) => e.listener.close()));
        throw err;
      }
      return {
        bound: fresh.length,
        commit() {
          // Shutdown began while this change was being bound: it must not outlive the drain.
          if (closed) {
            for (const e of fresh) void e.listener.close();
            return;
          }
          const replaced = [...current.values()].filter((e) =>
            next.get(e.plan.id)?.listener !== e.listener
          );
          current = next;
          // `max_connections` and `max_connections_per_ip` of a kept listener change live, as on
          // HTTP/3, not by a new listener (which would close every WebSocket on it).
          for (const e of next.values()) {
            live(e);
            liveLists(e);
          }
          for (const e of fresh) {
            logger.info("Listener started", {
              id: e.plan.id,
              addr: formatListenAddr(e.listener),
              tls: e.listener.tls,
              ...(e.listener.engine === "prox" ? { engine: "prox" } : {}),
            });
          }
          for (const e of replaced) {
            logger.info("Draining replaced listener", {
              id: e.plan.id,
              addr: formatListenAddr(e.listener),
            });
            opts.onReplace?.(e.listener);
            const p = drain(e.listener, opts.drainMs()).finally(() => draining.delete(p));
            draining.add(p);
          }
        },
        async abort() {
          await Promise.all(fresh.map((e) => e.listener.close()));
        },
      };
    },
    async shutdown(graceMs) {
      closed = true;
      const all = [...current.values()].map((e) => drain(e.listener, graceMs));
      await Promise.all([...all, ...draining]);
    },
    async settled(ms) {
      if (overdue.size === 0) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((r) => timer = setTimeout(r, ms));
      await Promise.race([Promise.all([...overdue]), late]);
      clearTimeout(timer);
    },
  };
}

/** TLS certificate and key files the config names (watched for live rotation). */
export function tlsPaths(c: Config): string[] {
  return [
    ...(c.tls?.cert_path && c.tls.key_path ? [c.tls.cert_path, c.tls.key_path] : []),
    ...(c.tls?.sni ?? []).flatMap((e) => [e.cert_path, e.key_path]),
    ...(c.tls?.client_auth ? [c.tls.client_auth.ca_cert] : []),
    ...(c.tls?.client_auth?.crl_file ? [c.tls.client_auth.crl_file] : []),
  ];
}

/** `tls.client_auth` with its CA file read; undefined without it. */
export async function readClientAuth(c: Config): Promise<ClientAuth | undefined> {
  const auth = c.tls?.client_auth;
  if (!auth) return undefined;
  const ca = (await Deno.readTextFile(auth.ca_cert)).replaceAll("\uFEFF", "");
  // A CA file truncated by a rotation would let node:tls verify against nothing at all.
  if (!ca.includes("-----BEGIN CERTIFICATE-----")) {
    throw new Error(`CA certificate file holds no PEM certificate: ${auth.ca_cert}`);
  }
  const ocsp = auth.ocsp ? { ocsp: createOcspChecker(auth.ocsp) } : {};
  if (!auth.crl_file) return { ca, required: auth.mode === "require", ...ocsp };
  const crlText = await Deno.readTextFile(auth.crl_file);
  // Throws for a file that holds no list (a rotation half done): the reload fails and the
  // listener keeps the lists it has.
  const crl = revocationCheck(crlText);
  // A list from another CA, or altered after signing, is refused as `prox validate` refuses it.
  const refused = unsignedLists(crlText, ca);
  if (refused.length > 0) {
    throw new Error(`Revocation list file ${auth.crl_file}: ${refused.join("; ")}`);
  }
  return {
    ca,
    required: auth.mode === "require",
    crl,
    crlText,
    refuseStale: auth.crl_expired === "refuse",
    ...ocsp,
  };
}

/** Reads the certificate and key the config names (none: plain TCP). */
export async function readTlsFiles(c: Config): Promise<{ cert?: string; key?: string }> {
  if (!c.tls?.cert_path || !c.tls.key_path) return {};
  // Byte-order marks (a file saved by Notepad, or concatenated with one) go: rustls skips a
  // block whose BEGIN line has one, so the key went missing or an intermediate silently left
  // the served chain, while validation (node:crypto) read the file fine.
  const cert = (await Deno.readTextFile(c.tls.cert_path)).replaceAll("\uFEFF", "");
  const key = (await Deno.readTextFile(c.tls.key_path)).replaceAll("\uFEFF", "");
  // An empty file (a rotation that truncates, then writes) must fail the load or reload: the
  // listener would otherwise start without TLS.
  if (cert.trim() === "") throw new Error(`Certificate file is empty: ${c.tls.cert_path}`);
  if (key.trim() === "") throw new Error(`Private key file is empty: ${c.tls.key_path}`);
  // Validation read them too, but a rotation may have replaced one since (a cert written before
  // its key): say so, rather than the listener's "keys may not be consistent: KeyMismatch".
  if (!keyOfFirstCertificate(cert, key)) {
    throw new Error(
      `Private key ${c.tls.key_path} does not belong to the first certificate in ${c.tls.cert_path}`,
    );
  }
  return { cert, key };
}

/**
 * `tls.sni`'s pairs, read as readTlsFiles reads the main one, each with the names its first
 * certificate's subjectAltName holds (what clients verify, so what the choice goes by).
 */
export async function readSniFiles(c: Config): Promise<SniCertificate[]> {
  const out: SniCertificate[] = [];
  for (const entry of c.tls?.sni ?? []) {
    const { cert, key } = await readTlsFiles({ tls: entry } as Config);
    out.push({ cert: cert!, key: key!, names: certificateNames(cert!) });
  }
  return out;
}

/** False only when both parse and the key is not the first certificate's (else the bind says). */
function keyOfFirstCertificate(cert: string, key: string): boolean {
  try {
    const x = new X509Certificate(pemBlock(cert, "CERTIFICATE")!);
    return x.checkPrivateKey(createPrivateKey(pemBlock(key, "PRIVATE KEY")!));
  } catch {
    return true;
  }
}

/** Linux's net.ipv4.tcp_migrate_req ("0"/"1"), or null where it does not exist. */
export function tcpMigrateReq(): string | null {
  try {
    return Deno.readTextFileSync("/proc/sys/net/ipv4/tcp_migrate_req").trim();
  } catch {
    return null;
  }
}
