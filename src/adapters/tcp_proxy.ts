// One `tcp` entry's connections: accept, with `accept_proxy_protocol` read a balancer's PROXY
// header (its client is the client from then on), check ip_access and the connection limits, with
// `sni` read the ClientHello (without answering it), connect to a target (round robin; a failed
// connect moves to the next), send the PROXY header and the bytes already read, then relay both
// ways until both sides have finished (a FIN is passed on with closeWrite), an error, or the idle
// timeout.

import type { ListenAddr } from "../config/listen.ts";
import { formatListenAddr } from "../config/listen.ts";
import type { TcpEntryConfig } from "../config/schema.ts";
import { compileIpAccess, ipVerdict, withListFiles } from "../domain/ip_access.ts";
import { listFilesOf } from "../config/validate_access.ts";
import { ipGroupKey, parseCidr } from "../domain/ip.ts";
import type { Cidr } from "../domain/ip.ts";
import { CLOSED_EMPTY, readProxied, sendsProxyHeader } from "./h1/proxy_accept.ts";
import type { AcceptProxyProtocol } from "./h1/proxy_accept.ts";
import type { IpAccess } from "../domain/ip_access.ts";
import { createSelector } from "../domain/balancer.ts";
import { compileSni, matchSni, parseHostPort } from "../domain/tcp_route.ts";
import type { HostPort, SniTable } from "../domain/tcp_route.ts";
import { proxyHeader } from "../domain/proxy_protocol.ts";
import type { Logger } from "../ports.ts";
import type { TcpMetrics, TcpOutcome, TcpRecord } from "./tcp_observe.ts";
import { ACCEPT_BACKOFF_INITIAL, acceptFailed } from "../domain/accept_backoff.ts";
import { closeQuietly, connectAny, readHello } from "./tcp_open.ts";
import type { TargetGroup } from "./tcp_open.ts";
import { ACTIVE_INITIAL, PASSIVE_INITIAL } from "../domain/health.ts";
import { passivePolicyOf } from "../proxy/pool.ts";
import { timerDelay } from "../config/duration.ts";

/** An entry compiled for its connections; `print` tells a changed entry from an unchanged one. */
export interface TcpPlan {
  name: string;
  entry: TcpEntryConfig;
  print: string;
  access: IpAccess | null;
  /** `accept_proxy_protocol`: the balancers whose connections begin with a PROXY header. */
  acceptProxy: AcceptProxyProtocol | null;
  plain: TargetGroup | null;
  sni: SniTable<TargetGroup> | null;
}

/**
 * What decides a plan: the entry and the content of its `ip_access` list files (an unchanged
 * print keeps the plan, and with it its targets' passive health, across a reload).
 */
export function tcpPrint(entry: TcpEntryConfig, files?: ReadonlyMap<string, string>): string {
  const lists = listFilesOf(entry.ip_access);
  return JSON.stringify(lists.length === 0 ? entry : [entry, lists.map((f) => files?.get(f))]);
}

/** Compiles one entry (validated: its targets parse). */
export function compileTcp(
  name: string,
  entry: TcpEntryConfig,
  files?: ReadonlyMap<string, string>,
): TcpPlan {
  const policy = passivePolicyOf(entry.passive_health);
  const group = (list: string[]): TargetGroup => ({
    targets: list.map((t) => parseHostPort(t) as HostPort),
    labels: list,
    selector: createSelector(
      "round_robin",
      list.map((id) => ({ id, weight: 1, backup: false })),
    ),
    health: list.map(() => PASSIVE_INITIAL),
    policy,
    active: list.map(() => ACTIVE_INITIAL),
  });
  const sni = entry.sni
    ? compileSni(
      Object.fromEntries(Object.entries(entry.sni).map(([k, v]) => [k, group(v)])),
      entry.default ? group(entry.default) : undefined,
    )
    : null;
  return {
    name,
    entry,
    print: tcpPrint(entry, files),
    access: entry.ip_access
      ? compileIpAccess(withListFiles(entry.ip_access, (f) => files?.get(f)))
      : null,
    acceptProxy: entry.accept_proxy_protocol
      ? {
        from: entry.accept_proxy_protocol.from.map((c) => parseCidr(c) as Cidr),
        timeoutMs: entry.accept_proxy_protocol.timeout,
      }
      : null,
    plain: entry.targets ? group(entry.targets) : null,
    sni,
  };
}

/** A connection being relayed; `cut` closes it now with that outcome. */
export interface LiveConn {
  cut(outcome: TcpOutcome): void;
  readonly done: Promise<void>;
}

/** What the connections of a listener share with the rest of Prox. */
export interface TcpDeps {
  logger: Logger;
  metrics: TcpMetrics | null;
  access: () => ((rec: TcpRecord) => void) | undefined;
  random: () => number;
  /** A target's health checks changed their verdict (`health_check`; notify). */
  onTargetHealth?: (change: TcpTargetChange) => void;
}

/** A tcp target marked down, or back up, by health checks. */
export interface TcpTargetChange {
  name: string;
  target: string;
  up: boolean;
  reason: string;
}

/** A bound tcp listener. */
export interface TcpListener {
  readonly addr: ListenAddr;
  /** Stops accepting (connections go on). */
  close(): void;
}

const EMPTY = new Uint8Array(0);
/** A TLS alert record (RFC 8446 §6): fatal (2), unrecognized_name (112). */
const UNRECOGNIZED_NAME = new Uint8Array([21, 3, 3, 0, 2, 2, 112]);
/** Per direction and connection (nginx's proxy_buffer_size is 16k too): 10,000 take 320 MiB. */
const CHUNK = 16 * 1024;

/**
 * Binds `addr` and relays each connection under the plan `plan()` returns when it arrives (a
 * reload that changes the entry but not its address swaps the plan). Connections join `conns`,
 * and count in `perIp` by client address (IPv6 by /64), while they last.
 */
export function listenTcp(
  addr: ListenAddr,
  o: {
    plan: () => TcpPlan;
    conns: Set<LiveConn>;
    perIp: Map<string, number>;
    reusePort: boolean;
    deps: TcpDeps;
  },
): TcpListener {
  const listener = Deno.listen({
    hostname: addr.hostname,
    port: addr.port,
    ...(o.reusePort ? { reusePort: true } : {}),
  });
  const bound = { hostname: addr.hostname, port: (listener.addr as Deno.NetAddr).port };
  let closed = false;
  void (async () => {
    let backoff = ACCEPT_BACKOFF_INITIAL;
    while (!closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (closed) return;
        // EMFILE and the like: keep the port and try again, backing off; an accept that works in
        // between does not reset it (accept_backoff.ts), and the line is logged once a minute.
        const r = acceptFailed(backoff, Date.now());
        backoff = r.state;
        if (r.log) {
          o.deps.logger.error("TCP listener could not accept; trying again", {
            name: o.plan().name,
            addr: formatListenAddr(bound),
            error: String(err),
            retryInMs: r.delayMs,
            ...(r.suppressed ? { notLogged: r.suppressed } : {}),
          });
        }
        await new Promise((res) => setTimeout(res, r.delayMs));
        continue;
      }
      relay(conn, o.plan(), o);
    }
  })();
  return {
    addr: bound,
    close() {
      if (closed) return;
      closed = true;
      try {
        listener.close();
      } catch { /* already closed */ }
    },
  };
}

/** IPv4 clients of a dual-stack listener (`::ffff:10.0.0.1`) named as IPv4, as the HTTP side does. */
function plainAddr(a: Deno.NetAddr): { hostname: string; port: number } {
  const h = a.hostname;
  return { hostname: h.startsWith("::ffff:") && h.includes(".") ? h.slice(7) : h, port: a.port };
}

/** Relays one accepted connection to its end, then logs and counts it once. */
function relay(
  conn: Deno.TcpConn,
  plan: TcpPlan,
  o: { conns: Set<LiveConn>; perIp: Map<string, number>; deps: TcpDeps },
): void {
  const { deps } = o;
  const { entry, name } = plan;
  const started = performance.now();
  const time = Date.now();
  /** The client: the connection's peer, or the one a balancer's PROXY header names. */
  let client = plainAddr(conn.remoteAddr as Deno.NetAddr);
  const local = plainAddr(conn.localAddr as Deno.NetAddr);
  let upstream: Deno.TcpConn | null = null;
  let target: string | null = null;
  let serverName: string | null | undefined;
  let bytesIn = 0;
  let bytesOut = 0;
  let outcome: TcpOutcome | null = null;
  let error: string | undefined;
  let lastActive = started;
  /** Aborts a connect under way when the connection ends first. */
  const stop = new AbortController();
  /** Ends the connection with `why` (the first reason given wins). */
  const end = (why: TcpOutcome, message?: string) => {
    if (outcome === null) {
      outcome = why;
      error = message;
      stop.abort();
    }
    closeQuietly(conn);
    closeQuietly(upstream);
  };
  const finish = () => {
    const rec: TcpRecord = {
      time,
      name,
      clientIp: client.hostname,
      clientPort: client.port,
      target,
      ...(plan.sni ? { serverName: serverName ?? null } : {}),
      bytesIn,
      bytesOut,
      durationMs: performance.now() - started,
      outcome: outcome ?? "closed",
      ...(error !== undefined ? { error } : {}),
    };
    deps.metrics?.connection(name, rec.outcome);
    deps.access()?.(rec);
  };

  if (o.conns.size >= entry.max_connections) {
    end("over_limit", `${entry.max_connections} connections are open`);
    finish();
    return;
  }
  /** The client's key in `perIp` once counted there. */
  let ipKey: string | null = null;
  /** Why the client may not go on (ip_access, max_connections_per_ip); else counts it, null. */
  const refusal = (): [TcpOutcome, string] | null => {
    if (plan.access && !ipVerdict(plan.access, client.hostname).allowed) {
      return ["denied", "ip_access"];
    }
    // Counted with a limit or without (a reload may set one: the open ones count against it).
    const key = ipGroupKey(client.hostname);
    const fromIp = o.perIp.get(key) ?? 0;
    const perIp = entry.max_connections_per_ip;
    if (perIp !== undefined && fromIp >= perIp) {
      return ["over_limit", `${fromIp} connections from ${key} are open`];
    }
    o.perIp.set(key, fromIp + 1);
    ipKey = key;
    return null;
  };
  // A balancer's connection is judged by the client its header names, once read.
  const proxied = plan.acceptProxy !== null && sendsProxyHeader(plan.acceptProxy, conn);
  const refused = proxied ? null : refusal();
  if (refused) {
    end(...refused);
    finish();
    return;
  }
  let settle = () => {};
  const live: LiveConn = {
    cut: (why) => end(why, why === "shutdown" ? "cut by shutdown or reload" : undefined),
    done: new Promise<void>((r) => settle = r),
  };
  o.conns.add(live);
  let timer: ReturnType<typeof setTimeout> | undefined;

  const run = async () => {
    /** The client's bytes read with a PROXY header. */
    let pre: Uint8Array = EMPTY;
    if (proxied) {
      const got = await readProxied(conn, plan.acceptProxy!.timeoutMs);
      if (outcome !== null) return;
      // Closed before a byte (a balancer's TCP health check): closed, as without a header.
      if (got === CLOSED_EMPTY) return end("closed");
      if (typeof got === "string") return end("bad_proxy_header", got);
      if (got.client) client = got.client;
      pre = got.rest;
      const refused = refusal();
      if (refused) return end(...refused);
    }
    let first: Uint8Array = pre;
    let group = plan.plain;
    if (!plan.sni && pre.length) {
      bytesIn += pre.length;
      deps.metrics?.bytes(name, "received", pre.length);
    }
    if (plan.sni) {
      const hello = await readHello(conn, entry.timeouts.client_hello, pre);
      bytesIn += hello.bytes.length;
      if (hello.bytes.length) deps.metrics?.bytes(name, "received", hello.bytes.length);
      if (outcome !== null) return;
      if (hello.kind !== "hello") return end(hello.kind, hello.reason);
      // A name that is not a DNS name is logged as sent and routed as no name (`default`).
      serverName = hello.invalidName ?? hello.serverName;
      first = hello.bytes;
      group = matchSni(plan.sni, hello.serverName);
      if (!group && hello.invalidName !== undefined) {
        return end("bad_hello", "a server_name that is not a DNS name, and no default");
      }
      if (!group) {
        // RFC 6066 §3: a fatal unrecognized_name alert, which clients name, rather than an EOF.
        await writeAll(conn, UNRECOGNIZED_NAME).then(() => {
          bytesOut += UNRECOGNIZED_NAME.length;
          deps.metrics?.bytes(name, "sent", UNRECOGNIZED_NAME.length);
        }, () => {});
        return end("no_route", `no sni key matches ${hello.serverName ?? "(no server name)"}`);
      }
    }
    const connected = await connectAny(group!, entry.timeouts.connect, {
      random: deps.random,
      logger: deps.logger,
      name,
      cancel: stop.signal,
    });
    if ("error" in connected) return end("connect_failed", connected.error);
    upstream = connected.conn;
    target = connected.target;
    // Cut (shutdown, reload) while connecting: the new connection goes too.
    if (outcome !== null) return end(outcome);
    conn.setNoDelay(true);
    upstream.setNoDelay(true);
    const header = entry.proxy_protocol
      ? proxyHeader(entry.proxy_protocol, {
        source: { ip: client.hostname, port: client.port },
        destination: { ip: local.hostname, port: local.port },
      })
      : EMPTY;
    if (header.length || first.length) await writeAll(upstream, concat(header, first));
    lastActive = performance.now();
    const idle = entry.timeouts.idle;
    if (idle > 0) {
      const check = () => {
        const left = lastActive + idle - performance.now();
        if (left <= 0) return end("idle_timeout", `no byte either way for ${idle} ms`);
        timer = setTimeout(check, timerDelay(left + 1));
      };
      timer = setTimeout(check, timerDelay(idle));
    }
    const fail = (err: unknown) => end("reset", err instanceof Error ? err.message : String(err));
    const up = upstream;
    await Promise.all([
      pump(conn, up, (n) => {
        bytesIn += n;
        lastActive = performance.now();
        deps.metrics?.bytes(name, "received", n);
      }).catch(fail),
      pump(up, conn, (n) => {
        bytesOut += n;
        lastActive = performance.now();
        deps.metrics?.bytes(name, "sent", n);
      }).catch(fail),
    ]);
  };
  void run().catch((err) => end("reset", err instanceof Error ? err.message : String(err)))
    .finally(() => {
      clearTimeout(timer);
      end("closed");
      o.conns.delete(live);
      if (ipKey !== null) {
        const left = (o.perIp.get(ipKey) ?? 1) - 1;
        if (left > 0) o.perIp.set(ipKey, left);
        else o.perIp.delete(ipKey);
      }
      finish();
      settle();
    });
}

/** Copies `from` to `to` until `from` ends, then passes the end on (FIN, with closeWrite). */
async function pump(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  counted: (n: number) => void,
): Promise<void> {
  const buf = new Uint8Array(CHUNK);
  for (;;) {
    const n = await from.read(buf);
    if (n === null) break;
    counted(n);
    await writeAll(to, buf.subarray(0, n));
  }
  try {
    await to.closeWrite();
  } catch { /* the peer is gone already: its own direction reports it */ }
}

async function writeAll(to: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await to.write(bytes.subarray(off));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
