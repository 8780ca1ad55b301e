// The top-level `tcp` key: layer-4 listeners whose connections are relayed byte for byte to
// upstream targets (nginx's `stream`, HAProxy's `mode tcp`), or by the TLS ClientHello's server
// name without terminating TLS (passthrough). Cross-field rules: validate_tcp.ts.

import { z } from "zod";
import { Duration, IpAccess, PassiveHealth } from "./schema_route.ts";

/** Upstream addresses, `host:port`, tried in turn (round robin; a failed connect moves on). */
const Targets = z.array(z.string()).min(1);

export const TcpTimeouts = z.object({
  /** Connecting to one target; past it the next target is tried. */
  connect: Duration.prefault("5s"),
  /** No byte either way for this long closes both sides ("0s": never). */
  idle: Duration.prefault("1h"),
  /** With `sni`: how long the client may take to send its whole ClientHello. */
  client_hello: Duration.prefault("5s"),
}).strict();

/**
 * Active health checks of a tcp entry's targets: a TCP connect to each, every `interval`; a target
 * whose connects keep failing leaves the turns until they succeed again (nginx's stream
 * `health_check`, HAProxy's `check`). With `proxy_protocol`, a probe sends the LOCAL / UNKNOWN header
 * first.
 */
export const TcpHealthCheck = z.object({
  interval: Duration.prefault("10s"),
  /** A connect not done within it fails. */
  timeout: Duration.prefault("2s"),
  /** Consecutive failed connects that mark a target down. */
  unhealthy_threshold: z.int().positive().default(3),
  /** Consecutive successful connects that bring a target back. */
  healthy_threshold: z.int().positive().default(2),
  /** Written once connected (HAProxy's `tcp-check send`), e.g. "PING\r\n". */
  send: z.string().min(1).optional(),
  /** Text the target's answer must contain within `timeout` (HAProxy's `tcp-check expect string`). */
  expect: z.string().min(1).optional(),
  /**
   * Bytes written once connected, in hex ("00000008 04d2162f": spaces allowed), for a binary
   * protocol (HAProxy's `tcp-check send-binary`); instead of `send`.
   */
  send_hex: z.string().min(1).optional(),
  /** Bytes, in hex, the answer must contain (`tcp-check expect binary`); instead of `expect`. */
  expect_hex: z.string().min(1).optional(),
}).strict();

/** How much of a target's answer a health check searches for `expect` (its first 4 KiB). */
export const HEALTH_ANSWER_BYTES = 4096;

/**
 * Load balancers in front of the entry (AWS NLB, HAProxy `send-proxy`) whose connections begin
 * with a PROXY protocol header (v1 or v2) naming the client, as the top-level
 * `accept_proxy_protocol` for the HTTP listeners (nginx stream `listen … proxy_protocol`).
 */
export const TcpAcceptProxyProtocol = z.object({
  /** Their addresses or CIDR blocks; connections from anyone else carry no header. */
  from: z.array(z.string()).min(1),
  /** How long such a connection may take to send its header before it is closed ("0s": no limit). */
  timeout: Duration.prefault("5s"),
}).strict();

/** One `tcp` entry; its key names it in logs, metrics and `/status`. */
export const TcpEntry = z.object({
  listen_addr: z.string(),
  /** Exactly one of `targets` and `sni`. */
  targets: Targets.optional(),
  /** TLS passthrough: server name (or `*.` wildcard of one label) → targets. */
  sni: z.record(z.string(), Targets).optional(),
  /** With `sni`: where a ClientHello without a (DNS) name, or with no matching one, goes. */
  default: Targets.optional(),
  /** A PROXY protocol header first to the upstream, with the client's address. */
  proxy_protocol: z.enum(["v1", "v2"]).optional(),
  /** Off unless set: the PROXY header balancers in `from` send first names the client. */
  accept_proxy_protocol: TcpAcceptProxyProtocol.optional(),
  timeouts: TcpTimeouts.prefault({}),
  /** Open connections past which new ones are closed at once (per worker). */
  max_connections: z.int().positive().default(10_000),
  /**
   * Open connections from one client address past which its new ones are closed at once (per
   * worker; IPv6 clients counted by their /64). Unset: no limit but max_connections.
   */
  max_connections_per_ip: z.int().positive().optional(),
  /** Client IP allow/deny lists, as the HTTP `ip_access`. */
  ip_access: IpAccess.optional(),
  /**
   * Failed connects to a target (refused, or no answer within `timeouts.connect`) take it out of
   * the turns for a while, as the HTTP routes' `passive_health` (no `statuses` or `max_latency`
   * here: a connection has no answer to time).
   */
  passive_health: PassiveHealth.omit({ statuses: true, max_latency: true }).prefault({}),
  /** Off unless set: connects to every target on a timer (see TcpHealthCheck). */
  health_check: TcpHealthCheck.optional(),
}).strict();

/** The `tcp` map: entry name → entry. */
export const TcpEntries = z.record(z.string(), TcpEntry);

export type TcpEntryConfig = z.output<typeof TcpEntry>;
