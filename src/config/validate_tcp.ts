// Cross-field rules of the top-level `tcp` entries: addresses, targets, `targets` versus `sni`,
// SNI keys and multi-worker ports. Listener clashes with the HTTP listeners are checked with the
// others in validate.ts; `ip_access` lists in validate_access.ts.

import { parseListenAddr } from "./listen.ts";
import type { Config } from "./schema.ts";
import type { Report } from "./validate_route.ts";
import { parseHostPort, sniKeyProblem } from "../domain/tcp_route.ts";
import type { HostPort } from "../domain/tcp_route.ts";
import type { ListenAddr } from "./listen.ts";
import { hexBytes, hexProblem } from "../domain/hex_bytes.ts";
import { HEALTH_ANSWER_BYTES } from "./schema_tcp.ts";
import { parseCidr } from "../domain/ip.ts";
import { TRUST_FEW, wholeFamily } from "./trusted_blocks.ts";

/** Whether `t` reaches the listener `addr` itself (its address, or loopback on a wildcard). */
function isOwnListener(addr: ListenAddr, t: HostPort): boolean {
  if (addr.port === 0 || t.port !== addr.port) return false;
  const host = t.host.toLowerCase().replace(/\.$/, "");
  const v4Loopback = host === "localhost" || /^127\.\d+\.\d+\.\d+$/.test(host);
  const loopback = v4Loopback || host === "::1";
  // [::] takes IPv4 too (dual-stack); 0.0.0.0 IPv4 alone.
  return host === addr.hostname || (addr.hostname === "::" && loopback) ||
    (addr.hostname === "0.0.0.0" && v4Loopback) ||
    (host === "localhost" && (addr.hostname === "::1" || addr.hostname.startsWith("127.")));
}

/** Checks every entry of `config.tcp`. */
export function validateTcp(config: Config, o: { err: Report; warn: Report }): void {
  for (const [name, e] of Object.entries(config.tcp ?? {})) {
    const at = (...p: (string | number)[]) => ["tcp", name, ...p];
    const addr = parseListenAddr(e.listen_addr);
    // Port 0 with workers > 1: workers_rules.ts.
    if (typeof addr === "string") o.err(at("listen_addr"), addr);
    if (e.targets && e.sni) {
      o.err(
        at("sni"),
        `tcp.${name} has both targets and sni`,
        "Keep targets to relay every connection to them, or sni to route TLS by server name",
      );
    } else if (!e.targets && !e.sni) {
      o.err(
        at(),
        `tcp.${name} has neither targets nor sni`,
        'Add targets: ["10.0.0.5:5432"], or sni: { "db.example.com": ["10.0.0.7:443"] }',
      );
    }
    const hc = e.health_check;
    if (hc && hc.interval < 1000) {
      o.err(
        at("health_check", "interval"),
        `A health check every ${hc.interval} ms connects to each target ${
          Math.round(1000 / Math.max(hc.interval, 1))
        } times a second`,
        "Use 1s or more (10s is usual)",
      );
    } else if (hc && hc.timeout >= hc.interval) {
      o.err(
        at("health_check", "timeout"),
        `timeout (${hc.timeout} ms) must be shorter than interval (${hc.interval} ms): a probe ` +
          "would still be connecting when the next begins",
        "Shorten timeout, or lengthen interval",
      );
    } else if (hc && hc.timeout === 0) {
      o.err(at("health_check", "timeout"), "timeout 0s would fail every probe", "Use e.g. 2s");
    }
    for (const [text, hex] of [["send", "send_hex"], ["expect", "expect_hex"]] as const) {
      if (hc?.[text] !== undefined && hc[hex] !== undefined) {
        o.err(
          at("health_check", hex),
          `${text} and ${hex} are both set: the probe ${text}s one or the other`,
          `Keep ${text} for text, ${hex} for bytes`,
        );
      }
      const why = hc?.[hex] === undefined ? null : hexProblem(hc[hex]);
      if (why !== null) {
        o.err(
          at("health_check", hex),
          `${hex} ${why}`,
          'Write bytes as pairs of hex digits, spaces allowed: "00000008 04d2162f"',
        );
      }
    }
    // An answer is searched in its first 4 KiB: a longer expect could never be found there, and
    // every probe would fail.
    const expected = hc?.expect_hex !== undefined && hexProblem(hc.expect_hex) === null
      ? ["expect_hex", hexBytes(hc.expect_hex).length] as const
      : hc?.expect !== undefined
      ? ["expect", new TextEncoder().encode(hc.expect).length] as const
      : null;
    if (expected !== null && expected[1] > HEALTH_ANSWER_BYTES) {
      o.err(
        at("health_check", expected[0]),
        `${expected[0]} is ${expected[1]} bytes long: a probe looks for it in the first ` +
          `${HEALTH_ANSWER_BYTES} bytes of the answer, so every probe would fail`,
        "Expect a shorter part of the answer, e.g. its first line",
      );
    }
    if (e.sni && Object.keys(e.sni).length === 0 && !e.default) {
      o.err(
        at("sni"),
        `tcp.${name}.sni names no server and there is no default: every connection would be closed`,
        'Add a server name, e.g. sni: { "db.example.com": ["10.0.0.7:443"] }, or a default',
      );
    }
    if (e.default && !e.sni) {
      o.err(
        at("default"),
        `tcp.${name}.default is for sni entries (ClientHellos no sni key matches)`,
        "Move these addresses into targets, or add an sni table",
      );
    }
    const checkTargets = (list: string[] | undefined, ...p: (string | number)[]) =>
      list?.forEach((t, i) => {
        const r = parseHostPort(t);
        if (typeof r === "string") o.err(at(...p, i), r);
        else if (typeof addr !== "string" && isOwnListener(addr, r)) {
          o.err(
            at(...p, i),
            `tcp target ${t} is this entry's own listener (${e.listen_addr}): each connection ` +
              "would open another until no descriptor is left",
            "Name the upstream's address",
          );
        }
      });
    checkTargets(e.targets, "targets");
    checkTargets(e.default, "default");
    const seen = new Map<string, string>();
    for (const [key, targets] of Object.entries(e.sni ?? {})) {
      const problem = sniKeyProblem(key);
      if (problem) {
        o.err(at("sni", key), `Invalid sni key: ${problem}`);
        continue;
      }
      const norm = key.toLowerCase().replace(/\.$/, "");
      const twin = seen.get(norm);
      if (twin !== undefined) {
        o.err(
          at("sni", key),
          `sni keys "${twin}" and "${key}" name the same server (names are case-insensitive)`,
          "Keep one of them",
        );
      }
      seen.set(norm, key);
      checkTargets(targets, "sni", key);
    }
    e.accept_proxy_protocol?.from.forEach((c, i) => {
      const block = parseCidr(c);
      if (!block) {
        o.err(
          at("accept_proxy_protocol", "from", i),
          `Invalid CIDR "${c}"`,
          "Use the load balancer's address or block, e.g. 10.0.0.0/8 or ::1",
        );
      } else if (wholeFamily(block)) {
        o.warn(
          at("accept_proxy_protocol", "from", i),
          `"${c}" trusts every ${
            wholeFamily(block)
          } client: each can set its own address through ` +
            "a PROXY protocol header (what ip_access, max_connections_per_ip and the access log see)",
          TRUST_FEW,
        );
      }
    });
    if (e.timeouts.connect === 0) {
      o.err(
        at("timeouts", "connect"),
        "timeouts.connect of 0s would fail every connection",
        'Give the time a target may take to accept, e.g. "5s"',
      );
    }
    if (e.sni && e.timeouts.client_hello === 0) {
      o.err(
        at("timeouts", "client_hello"),
        "timeouts.client_hello of 0s would refuse every client",
        'Give the time a client may take to send its ClientHello, e.g. "5s"',
      );
    }
  }
}
