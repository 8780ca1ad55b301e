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

/** One `tcp` entry; its key names it in logs, metrics and `/status`. */
export const TcpEntry = z.object({
  listen_addr: z.string(),
  /** Exactly one of `targets` and `sni`. */
  targets: Targets.optional(),
  /** TLS passthrough: server name (or `*.` wildcard of one label) → targets. */
  sni: z.record(z.string(), Targets).optional(),
  /** With `sni`: where a ClientHello without a name, or with no matching one, goes. */
  default: Targets.optional(),
  /** A PROXY protocol header first to the upstream, with the client's address. */
  proxy_protocol: z.enum(["v1", "v2"]).optional(),
  timeouts: TcpTimeouts.prefault({}),
  /** Open connections past which new ones are closed at once (per worker). */
  max_connections: z.int().positive().default(10_000),
  /** Client IP allow/deny lists, as the HTTP `ip_access`. */
  ip_access: IpAccess.optional(),
  /**
   * Failed connects to a target (refused, or no answer within `timeouts.connect`) take it out of
   * the turns for a while, as the HTTP routes' `passive_health` (no `statuses` here).
   */
  passive_health: PassiveHealth.omit({ statuses: true }).prefault({}),
}).strict();

/** The `tcp` map: entry name → entry. */
export const TcpEntries = z.record(z.string(), TcpEntry);

export type TcpEntryConfig = z.output<typeof TcpEntry>;
