// Cross-field rules that the schema cannot express: addresses, TLS modes, files named, route
// conflicts (the routes' own rules are in validate_route.ts). Pure: file checks go through the
// `exists` callback.

import { isLoopback, listenersOverlap, parseListenAddr } from "./listen.ts";
import { parseCidr, parseIp } from "../domain/ip.ts";
import { parseResolver } from "../domain/acme_dns.ts";
import { parseRouteKey } from "../domain/router.ts";
import { checkPasswordEnv, redisUrlProblem, validateRateLimitStore } from "./redis_url.ts";
import type { Config } from "./schema.ts";
import { workersIssues } from "./workers_rules.ts";
import type { ConfigIssue, ParseResult } from "./parse.ts";
import { validatePages } from "./validate_pages.ts";
import { checkRedirectTargets } from "./validate_redirect.ts";
import { checkHeadBody, checkRegex, checkStatus, validateRoutes } from "./validate_route.ts";
import { validateAccess } from "./validate_access.ts";
import { validateTcp } from "./validate_tcp.ts";
import { TRUST_FEW, wholeFamily } from "./trusted_blocks.ts";
import type { Report } from "./validate_route.ts";
import { dotted, sortIssues } from "./parse.ts";
import type { CertificateNames } from "./cert_names.ts";
import {
  checkCaFile,
  checkCrlFile,
  validateHsts,
  validateOnDemand,
  validatePair,
  validateSni,
} from "./validate_tls.ts";

/** What validation may ask of the outside world. */
/** An empty certificate or key file: what belongs in it (a copy or a renewal cut short). */
export const EMPTY_CERT_HINT =
  "It should hold the PEM certificate, then its intermediates (-----BEGIN CERTIFICATE-----): " +
  "copy it again, or point cert_path at the full chain (certbot: fullchain.pem)";
export const EMPTY_KEY_HINT =
  "It should hold the PEM private key (-----BEGIN PRIVATE KEY-----): copy it again, or point " +
  "key_path at it (certbot: privkey.pem)";

export interface ValidateEnv {
  /** True when the path exists (relative paths are relative to the working directory). */
  exists(path: string): boolean;
  /** Environment lookup for `{env.NAME}` placeholders (none when absent). */
  env?: (name: string) => string | undefined;
  /**
   * A text file's content (an error page), or why it cannot be read (permissions, not UTF-8);
   * omitted: not read.
   */
  readText?: (path: string) => { text: string } | { error: string; hint: string };
  /** What kind of file a path is, and its size (null when absent); omitted: not checked. */
  stat?: (path: string) => { isFile: boolean; isDirectory?: boolean; size: number } | null;
  /**
   * The certificate file's first certificate: its validity (ms) and whether the key file holds
   * its private key, or why they cannot be read; omitted: not checked.
   */
  certificate?: (
    certPath: string,
    keyPath: string,
  ) => {
    notBefore?: number;
    notAfter: number;
    keyMatches: boolean;
    names?: CertificateNames;
    /** node:crypto's asymmetricKeyType, with the curve of an EC key ("rsa", "ec secp521r1"). */
    keyType?: string;
    /** The issuer of a lone certificate whose intermediate should follow it in the file. */
    missingIssuer?: string;
    /** The certificate asks clients to require a stapled OCSP answer (RFC 7633 must-staple). */
    mustStaple?: boolean;
    /** X.509 version (1 or 3): rustls, so Deno's HTTP client, takes no v1 client certificate. */
    version?: number;
  } | {
    error: string;
    field: "cert_path" | "key_path";
    hint?: string;
  };
  /** The wall clock (ms since the epoch) for the expiry warning; omitted: not checked. */
  now?: () => number;
  /**
   * Why revocation lists (PEM text) are not all signed by a certificate of a CA file (PEM text),
   * one line per list refused (empty: all verify); omitted: not checked.
   */
  unsignedLists?: (crlText: string, caText: string) => string[];
}

/** The fix for a file a config names that is not there. */
const FILE_HINT = "Fix the path (a relative one starts from the working directory of prox)";

/** Runs every cross-field rule; returns issues (errors and warnings) in file order. */
export function validateConfig(
  config: Config,
  parsed: Pick<ParseResult, "locate" | "written">,
  opts: { file: string; env: ValidateEnv },
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const add = (
    severity: ConfigIssue["severity"],
    path: (string | number)[],
    message: string,
    hint?: string,
  ) => {
    // A value the file does not hold is a default: say so, or "timeout_secs (2)" puzzles.
    const unwritten = parsed.written && !parsed.written(path);
    const note = `${String(path.at(-1))} is not in the file: its default applies`;
    issues.push({
      severity,
      file: opts.file,
      ...parsed.locate(path),
      path: dotted(path),
      message,
      hint: unwritten ? (hint ? `${hint} (${note})` : note) : hint,
    });
  };
  const err = (p: (string | number)[], m: string, h?: string) => add("error", p, m, h);
  const warn = (p: (string | number)[], m: string, h?: string) => add("warning", p, m, h);

  const addr = parseListenAddr(config.listen_addr);
  if (typeof addr === "string") err(["listen_addr"], addr);
  if (config.admin) {
    const a = parseListenAddr(config.admin.listen_addr);
    if (typeof a === "string") err(["admin", "listen_addr"], a);
    else if (config.admin.token === undefined && !isLoopback(a.hostname)) {
      warn(
        ["admin", "listen_addr"],
        "The admin listener is reachable from other machines and has no token: whoever reaches " +
          "it can read the config (secrets redacted) and reload it",
        "Set admin.token, or bind admin.listen_addr to 127.0.0.1",
      );
    }
    // An empty token would mean "no token": an admin API open to whoever reaches it.
    if (config.admin.token !== undefined && config.admin.token.trim() === "") {
      err(
        ["admin", "token"],
        "admin.token is empty, which would leave the admin API without authentication",
        "Set a long random token, or remove the key (then bind admin.listen_addr to 127.0.0.1)",
      );
    }
  }
  if (config.http_redirect) {
    const a = parseListenAddr(config.http_redirect.listen_addr);
    if (typeof a === "string") err(["http_redirect", "listen_addr"], a);
    if (!config.tls) {
      err(
        ["http_redirect"],
        "http_redirect sends clients to HTTPS, but listen_addr has no TLS",
        "Add a tls section (cert_path and key_path, or acme), or remove http_redirect",
      );
    }
  }
  // ACME's plain-HTTP listener; on http_redirect's very address it is that listener.
  const acmeHttp = config.tls?.acme?.enabled ? config.tls.acme.http_listen_addr : undefined;
  const acmePath = ["tls", "acme", "http_listen_addr"];
  if (acmeHttp !== undefined) {
    const a = parseListenAddr(acmeHttp);
    if (typeof a === "string") err(acmePath, a);
  }
  // Two listeners on one address: SO_REUSEPORT would split connections between them.
  const listeners: [string[], string][] = [[["listen_addr"], config.listen_addr]];
  if (config.admin) listeners.push([["admin", "listen_addr"], config.admin.listen_addr]);
  if (config.http_redirect) {
    listeners.push([["http_redirect", "listen_addr"], config.http_redirect.listen_addr]);
  }
  if (acmeHttp !== undefined && acmeHttp !== config.http_redirect?.listen_addr) {
    listeners.push([acmePath, acmeHttp]);
  }
  for (const [name, e] of Object.entries(config.tcp ?? {})) {
    listeners.push([["tcp", name, "listen_addr"], e.listen_addr]);
  }
  for (let i = 1; i < listeners.length; i++) {
    const [path, text] = listeners[i];
    const a = parseListenAddr(text);
    if (typeof a === "string") continue;
    for (const [other, otherText] of listeners.slice(0, i)) {
      const b = parseListenAddr(otherText);
      if (typeof b !== "string" && listenersOverlap(a, b)) {
        const every = (h: string) => h === "::" ? "every address" : "every IPv4 address";
        err(
          path,
          a.hostname === b.hostname
            ? `${dotted(path)} (${text}) is the same address as ${dotted(other)} (${otherText})`
            : a.hostname === "::" || a.hostname === "0.0.0.0"
            ? `${dotted(path)} (${text}) listens on ${every(a.hostname)}, so on ` +
              `${dotted(other)}'s port ${a.port} (${otherText}) too`
            : `${dotted(path)} (${text}) shares port ${a.port} with ${dotted(other)} ` +
              `(${otherText}), which listens on ${every(b.hostname)}`,
          "Give each listener its own port",
        );
      }
    }
  }

  validateRateLimitStore(config.rate_limit_store, { err, warn, env: opts.env.env });

  validateRoutes(config, { err, warn, env: opts.env });
  validatePages(config, { err, warn, env: opts.env });
  checkRedirectTargets(config, { err, warn });
  validateAccess(config, { err, warn, env: opts.env });
  validateTcp(config, { err, warn });

  // Health checks and trusted proxies
  const hc = config.health_check;
  healthCheckZeros(hc, { err, warn });
  if (hc.timeout_secs >= hc.interval_secs && hc.interval_secs > 0 && hc.enabled) {
    warn(
      ["health_check", "timeout_secs"],
      `timeout_secs (${hc.timeout_secs}) is not shorter than interval_secs (${hc.interval_secs})`,
      "Use a timeout shorter than the interval so probes do not overlap",
    );
  }
  const allTargets = new Set(
    Object.values(config.routes).flatMap((r) =>
      r.type === "proxy"
        ? [r.target]
        : r.type === "load_balance"
        ? r.targets.map((t) => typeof t === "string" ? t : t.url)
        : []
    ),
  );
  for (const [target, path] of Object.entries(config.backend_health_paths)) {
    if (!allTargets.has(target)) {
      warn(
        ["backend_health_paths", target],
        `No route has the target "${target}"`,
        "Keys must equal a proxy or load_balance target exactly",
      );
    }
    if (!path.startsWith("/")) {
      err(
        ["backend_health_paths", target],
        `Health path "${path}" must start with "/"`,
        `Write "/${path}"`,
      );
    }
  }
  // Request paths start with "/": any other metrics path would never be served.
  if (!config.metrics.path.startsWith("/")) {
    err(
      ["metrics", "path"],
      `Metrics path "${config.metrics.path}" must start with "/"`,
      `Write "/${config.metrics.path}"`,
    );
  }
  // The metrics endpoint answers before routing: a route for the same path never sees its GETs.
  if (config.metrics.on_main_listener) {
    for (const key of Object.keys(config.routes)) {
      if (parseRouteKey(key).prefix !== config.metrics.path) continue;
      warn(
        ["metrics", "path"],
        `GET ${config.metrics.path} on the main listener is answered with Prox's metrics, ` +
          `never by route "${key}"`,
        "Choose another metrics.path (e.g. /prox/metrics), or serve metrics on the admin listener",
      );
    }
  }
  // Status selectors and patterns are compiled at start-up: report what would not compile.
  checkStatus(err, ["health_check", "expected_status"], hc.expected_status);
  checkRegex(err, ["health_check", "body_match"], hc.body_match);
  checkHeadBody(err, ["health_check"], hc);
  checkStatus(err, ["passive_health", "statuses"], config.passive_health.statuses);
  const alf = config.log.access_log_filter;
  if (alf) {
    if (alf.status) checkStatus(err, ["log", "access_log_filter", "status"], alf.status);
    if (!alf.status && alf.min_duration === undefined && !alf.retried && !alf.failed) {
      err(
        ["log", "access_log_filter"],
        "An access_log_filter without status, min_duration, retried: true or failed: true lets no " +
          "line through",
        'List what to log, e.g. { status: ["5xx"], min_duration: 1s }, or use access_log: false',
      );
    }
  }

  config.trusted_proxies.forEach((c, i) => {
    const block = parseCidr(c);
    if (!block) {
      err(
        ["trusted_proxies", i],
        `Invalid CIDR "${c}"`,
        "Use an address or a block, e.g. 10.0.0.0/8 or ::1",
      );
    } else if (wholeFamily(block)) {
      warn(
        ["trusted_proxies", i],
        `"${c}" trusts every ${wholeFamily(block)} client: each can set its own address through ` +
          "X-Forwarded-For (what ip_access, rate limits and the access log see), and its scheme " +
          "and host through X-Forwarded-Proto, -Host and Forwarded",
        TRUST_FEW,
      );
    }
  });

  const app = config.accept_proxy_protocol;
  app?.from.forEach((c, i) => {
    const block = parseCidr(c);
    if (!block) {
      err(
        ["accept_proxy_protocol", "from", i],
        `Invalid CIDR "${c}"`,
        "Use the load balancer's address or block, e.g. 10.0.0.0/8 or ::1",
      );
    } else if (wholeFamily(block)) {
      warn(
        ["accept_proxy_protocol", "from", i],
        `"${c}" trusts every ${wholeFamily(block)} client: each can set its own address through ` +
          "a PROXY protocol header (what ip_access, rate limits and the access log see)",
        TRUST_FEW,
      );
    }
  });
  if (app && config.protocols.http1_engine === "deno") {
    err(
      ["accept_proxy_protocol"],
      "accept_proxy_protocol needs Prox's own engine: http1_engine: deno reads each connection itself, PROXY header and all",
      "Remove protocols.http1_engine: deno (the default, prox, reads the header)",
    );
  }

  // The access log file's directory must be there (the file is created in it).
  const logFile = config.log.access_log_file;
  if (logFile !== undefined) {
    const slash = logFile.lastIndexOf("/");
    const dir = slash < 0 ? "." : slash === 0 ? "/" : logFile.slice(0, slash);
    const st = opts.env.stat?.(logFile);
    if (st?.isDirectory) {
      err(["log", "access_log_file"], `${logFile} is a directory`, "Name a file in it");
    } else if (opts.env.stat && !opts.env.stat(dir)?.isDirectory) {
      err(
        ["log", "access_log_file"],
        `The access log's directory does not exist: ${dir}`,
        `Create it (mkdir -p ${dir}), or ${FILE_HINT.toLowerCase()}`,
      );
    }
    if (config.log.access_log === false) {
      warn(
        ["log", "access_log_file"],
        "access_log_file has no effect with access_log: false",
        "Remove it, or turn access_log on",
      );
    }
  }

  // TLS
  const tls = config.tls;
  if (tls) {
    const manual = tls.cert_path !== undefined || tls.key_path !== undefined;
    if (manual && tls.acme) {
      err(
        ["tls"],
        "Cannot specify both manual certificates (cert_path/key_path) and ACME configuration",
        "Remove either cert_path/key_path or acme",
      );
    } else if (manual) {
      const others = tls.sni ? validateSni(tls.sni, { err, warn, env: opts.env, config }) : [];
      const before = issues.length;
      if (!tls.cert_path) {
        err(
          ["tls"],
          "key_path is set but cert_path is missing",
          "Add cert_path: the PEM certificate chain",
        );
      } else if (!opts.env.exists(tls.cert_path)) {
        err(["tls", "cert_path"], `Certificate file not found: ${tls.cert_path}`, FILE_HINT);
      } else if (opts.env.stat?.(tls.cert_path)?.size === 0) {
        err(["tls", "cert_path"], `Certificate file is empty: ${tls.cert_path}`, EMPTY_CERT_HINT);
      }
      if (!tls.key_path) {
        err(
          ["tls"],
          "cert_path is set but key_path is missing",
          "Add key_path: the PEM private key",
        );
      } else if (!opts.env.exists(tls.key_path)) {
        err(["tls", "key_path"], `Private key file not found: ${tls.key_path}`, FILE_HINT);
      } else if (opts.env.stat?.(tls.key_path)?.size === 0) {
        err(["tls", "key_path"], `Private key file is empty: ${tls.key_path}`, EMPTY_KEY_HINT);
      }
      if (issues.length === before) {
        validatePair(tls.cert_path!, tls.key_path!, { err, warn, env: opts.env, config, others });
      }
    } else if (!tls.acme) {
      err(
        ["tls"],
        "TLS configuration must specify either manual certificates (cert_path + key_path) or ACME configuration",
      );
    } else if (!tls.acme.enabled) {
      err(
        ["tls", "acme", "enabled"],
        "ACME is disabled and no certificate files are given, so TLS has no certificate",
        "Set enabled: true, or use cert_path and key_path instead, or remove the tls section",
      );
    } else {
      validateAcme(tls.acme, { err, warn, config, env: opts.env });
      if (tls.acme.on_demand) validateOnDemand(tls.acme.on_demand, { err, warn, config });
      if (tls.sni) validateSni(tls.sni, { err, warn, env: opts.env, config });
    }
    if (tls.hsts) validateHsts(tls.hsts, warn);
  }
  if (config.protocols.http3_enabled && !tls) {
    err(
      ["protocols", "http3_enabled"],
      "HTTP/3 requires TLS",
      "Add a tls section with cert_path and key_path (or acme)",
    );
  }
  // Prox's own engines (the default) honour the HTTP/2 settings; Deno.serve has its own, fixed.
  if (config.protocols.http1_engine === "deno") {
    const inactive = ["http2_max_frame_size", "http2_max_concurrent_streams"] as const;
    for (const k of inactive) {
      if (config.protocols[k] !== undefined) {
        warn(
          ["protocols", k],
          `${k} has no effect with http1_engine: deno: Deno's HTTP/2 settings are fixed`,
          "Leave it out, or remove http1_engine: deno",
        );
      }
    }
    if (!config.protocols.http2_enabled) {
      warn(
        ["protocols", "http2_enabled"],
        "http2_enabled: false has no effect with http1_engine: deno: HTTP/2 cannot be turned " +
          "off on Deno's HTTP server",
        "Leave it out, or remove http1_engine: deno",
      );
    }
  }
  for (const key of ["http1_idle_timeout", "http1_header_timeout"]) {
    const asked = parsed.written?.(["protocols", key]) ?? false;
    if (asked && config.protocols.http1_engine === "deno") {
      warn(
        ["protocols", key],
        `${key} has no effect here: it applies to Prox's own engines, and Deno's ` +
          "HTTP server closes no idle connection",
        "Leave it out, or remove http1_engine: deno",
      );
    }
  }
  if (tls?.client_auth) {
    const ca = ["tls", "client_auth", "ca_cert"];
    checkCaFile(ca, tls.client_auth.ca_cert, { err, env: opts.env, peer: "a client's" });
    checkCrlFile(["tls", "client_auth", "crl_file"], tls.client_auth.crl_file, {
      err,
      warn,
      env: opts.env,
      caFile: tls.client_auth.ca_cert,
      allowExpired: tls.client_auth.crl_expired === "allow",
    });
    const ocsp = tls.client_auth.ocsp;
    if (ocsp?.responder !== undefined && !/^https?:\/\/[^/]/i.test(ocsp.responder)) {
      err(
        ["tls", "client_auth", "ocsp", "responder"],
        `"${ocsp.responder}" is no http:// or https:// URL`,
        "E.g. responder: http://ocsp.example.com (the CA's OCSP URL; unset: each certificate's own)",
      );
    } else if (ocsp?.responder !== undefined) {
      try {
        new URL(ocsp.responder);
      } catch {
        err(
          ["tls", "client_auth", "ocsp", "responder"],
          `"${ocsp.responder}" is no valid URL`,
          "E.g. responder: http://ocsp.example.com",
        );
      }
    }
    if (ocsp && ocsp.timeout <= 0) {
      err(
        ["tls", "client_auth", "ocsp", "timeout"],
        "timeout must be greater than 0",
        "E.g. timeout: 3s (how long a handshake waits for the responder)",
      );
    } else if (ocsp && ocsp.timeout > 30_000) {
      // Each connection of a client whose answer is not kept waits that long for a responder
      // that does not answer, its socket held meanwhile.
      warn(
        ["tls", "client_auth", "ocsp", "timeout"],
        `A handshake may wait ${Math.round(ocsp.timeout / 1000)} s for the OCSP responder`,
        "E.g. timeout: 3s; clients give up on a silent server long before",
      );
    }
    if (config.protocols.http1_engine === "deno") {
      err(
        ["tls", "client_auth"],
        "tls.client_auth needs Prox's own engines: Deno's HTTP server cannot ask clients for " +
          "certificates",
        "Remove http1_engine: deno",
      );
    }
    // A client that reached the same routes over HTTP/3 would need no certificate.
    if (config.protocols.http3_enabled) {
      err(
        ["protocols", "http3_enabled"],
        "HTTP/3 cannot ask clients for certificates (Deno's QUIC has no client authentication): " +
          "with tls.client_auth, a client would reach the routes over HTTP/3 without one",
        "Leave HTTP/3 off (remove http3_enabled: true) while tls.client_auth is set",
      );
    }
  }
  if (tls?.sni && config.protocols.http1_engine === "deno") {
    err(
      ["tls", "sni"],
      "tls.sni needs Prox's own engines: Deno's HTTP server takes one certificate",
      "Remove http1_engine: deno",
    );
  } else if (tls?.sni && config.protocols.http3_enabled) {
    warn(
      ["tls", "sni"],
      "HTTP/3 serves only the main certificate (Deno's QUIC takes one): clients that ask HTTP/3 " +
        "for a name only a tls.sni certificate holds fail there and fall back to HTTP/2",
      "Put the names in the main certificate, or leave HTTP/3 off",
    );
  }
  for (const k of ["max_connections", "max_connections_per_ip"] as const) {
    if (config.limits[k] === undefined) continue;
    if (config.protocols.http1_engine === "deno") {
      warn(
        ["limits", k],
        `${k} has no effect with http1_engine: deno: Deno's HTTP server shows Prox no connections`,
        "Remove http1_engine: deno, or cap connections in front of Prox",
      );
    } else if (
      k === "max_connections_per_ip" && config.trusted_proxies.length > 0 &&
      !config.accept_proxy_protocol
    ) {
      warn(
        ["limits", k],
        "max_connections_per_ip counts connections by their TCP peer: behind trusted_proxies " +
          "that is the proxy, whose connections carry many clients",
        "Have the proxy send a PROXY protocol header (accept_proxy_protocol), whose client " +
          "address is counted instead, or leave the limit to the proxy",
      );
    }
  }
  for (const w of workersIssues(config)) add(w.severity, w.path, w.message, w.hint);
  sortIssues(issues);
  return issues;
}

const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const DOMAIN =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** The form to write an invalid ACME domain in: without a trailing dot, or in punycode. */
function domainFix(d: string): string | null {
  const wild = d.startsWith("*.") ? "*." : "";
  const name = d.slice(wild.length);
  if (name.endsWith(".") && DOMAIN.test(name.slice(0, -1))) {
    return `Write it without the trailing dot: ${wild}${name.slice(0, -1)}`;
  }
  if (!/[^\u0020-\u007e]/.test(name)) return null;
  try {
    const ascii = new URL(`http://${name}/`).hostname;
    return DOMAIN.test(ascii) ? `Write it in its ASCII (punycode) form: ${wild}${ascii}` : null;
  } catch {
    return null;
  }
}

function validateAcme(
  acme: NonNullable<NonNullable<Config["tls"]>["acme"]>,
  opts: { err: Report; warn: Report; config: Config; env: ValidateEnv },
): void {
  const { err, warn } = opts;
  const base = ["tls", "acme"];
  checkCaFile([...base, "ca_cert"], acme.ca_cert, { ...opts, peer: "the ACME server's" });
  if (acme.domains.length === 0) {
    err(
      [...base, "domains"],
      "At least one domain must be specified for ACME",
      "List the names to certify, e.g. domains: [example.com, www.example.com]",
    );
  }
  const dns01 = acme.challenge === "dns-01";
  acme.domains.forEach((d, i) => {
    if (d.startsWith("*.") && !dns01) {
      err(
        [...base, "domains", i],
        `Wildcard domain "${d}" needs the DNS-01 challenge: a CA validates wildcards only through DNS`,
        "Set challenge: dns-01 and a dns: section (webhook or command) that publishes the TXT record",
      );
    } else if (d.startsWith("*.") && !DOMAIN.test(d.slice(2))) {
      err(
        [...base, "domains", i],
        `Invalid wildcard domain "${d}"`,
        domainFix(d) ?? "Use one leading label of *, such as *.example.com",
      );
    } else if (d.startsWith("*.")) {
      // A valid wildcard under DNS-01.
    } else if (parseIp(d)) {
      // acme-client orders every name as a DNS identifier, which CAs refuse for an address.
      err(
        [...base, "domains", i],
        `ACME domain "${d}" is an IP address: Prox orders certificates for DNS names only`,
        "List the DNS names clients use, or give the certificate for the address with cert_path and key_path",
      );
    } else if (!DOMAIN.test(d)) {
      err(
        [...base, "domains", i],
        `Invalid domain name "${d}"`,
        domainFix(d) ?? "Use a plain host name such as example.com",
      );
    }
  });
  if (acme.email !== undefined && !EMAIL.test(acme.email)) {
    err(
      [...base, "email"],
      `Invalid email address "${acme.email}"`,
      "Use an address such as admin@example.com",
    );
  }
  if (acme.renewal_days_before_expiry < 1 || acme.renewal_days_before_expiry > 89) {
    err(
      [...base, "renewal_days_before_expiry"],
      `renewal_days_before_expiry must be between 1 and 89, got ${acme.renewal_days_before_expiry}`,
    );
  }
  if (acme.staging && acme.ca_url !== undefined) {
    warn(
      [...base, "staging"],
      "staging: true has no effect: ca_url names the ACME directory",
      "Remove staging, or remove ca_url to use Let's Encrypt's staging directory",
    );
  }
  if (acme.ca_url !== undefined && !/^https:\/\//.test(acme.ca_url)) {
    err([...base, "ca_url"], `ACME directory URL "${acme.ca_url}" must start with https://`);
  }
  if (acme.challenge === "tls-alpn-01") {
    err(
      [...base, "challenge"],
      "TLS-ALPN-01 cannot be done on Deno: its TLS stack (rustls) rejects the challenge certificate's critical acmeIdentifier extension",
      "Use challenge: http-01 (the default) with an HTTP listener on port 80",
    );
  }
  validateAcmeDns(acme, opts);
  validateAcmeEab(acme, opts);
  const problem = acme.redis && redisUrlProblem(acme.redis.url);
  if (problem) {
    err(
      [...base, "redis", "url"],
      problem,
      'Use e.g. url: "redis://127.0.0.1:6379" (rediss:// for TLS)',
    );
  } else if (acme.redis && acme.redis.timeout <= 0) {
    err(
      [...base, "redis", "timeout"],
      "timeout must be greater than 0",
      "E.g. timeout: 5s (how long an ACME step waits for Redis)",
    );
  }
  if (acme.redis && !problem) {
    checkPasswordEnv([...base, "redis"], acme.redis.url, acme.redis.password_env, {
      err,
      env: opts.env.env,
    });
  }
  if (dns01) return;
  const httpAddrs = [acme.http_listen_addr, opts.config.http_redirect?.listen_addr].filter(
    (a): a is string => a !== undefined,
  );
  const on80 = httpAddrs.some((a) => {
    const p = parseListenAddr(a);
    return typeof p !== "string" && p.port === 80;
  });
  if (!on80 && acme.ca_url === undefined) {
    warn(
      [...base],
      "No HTTP listener on port 80: Let's Encrypt validates HTTP-01 challenges on port 80",
      'Set tls.acme.http_listen_addr: "0.0.0.0:80" (or http_redirect.listen_addr)',
    );
  }
}

/**
 * A MAC key as CAs and their tools hand them out: base64url (ZeroSSL, pebble), base64, either with
 * padding (Terraform's b64url_mac_key). acme-client's decoder takes both alphabets alike.
 */
const EAB_KEY = /^[A-Za-z0-9+/_-]+={0,2}$/;

/** `tls.acme.eab`: a key id and one MAC key (given, or named by an environment variable). */
function validateAcmeEab(
  acme: NonNullable<NonNullable<Config["tls"]>["acme"]>,
  opts: { err: Report; env: ValidateEnv },
): void {
  const eab = acme.eab;
  if (!eab) return;
  const base = ["tls", "acme", "eab"];
  if ((eab.hmac_key === undefined) === (eab.hmac_key_env === undefined)) {
    opts.err(
      base,
      "External account binding needs its MAC key: give exactly one of hmac_key and hmac_key_env",
      "Copy the EAB HMAC key from the CA's account page into hmac_key, or export it and name the variable in hmac_key_env",
    );
    return;
  }
  const fromEnv = eab.hmac_key_env !== undefined;
  const key = fromEnv ? opts.env.env?.(eab.hmac_key_env!) : eab.hmac_key!;
  const path = [...base, fromEnv ? "hmac_key_env" : "hmac_key"];
  const where = fromEnv ? `Environment variable ${eab.hmac_key_env}` : "hmac_key";
  if (key === undefined && fromEnv && opts.env.env) {
    opts.err(
      path,
      `Environment variable ${eab.hmac_key_env} is not set`,
      `Export ${eab.hmac_key_env} to Prox (e.g. in its systemd unit: Environment=…)`,
    );
  } else if (key !== undefined && !EAB_KEY.test(key)) {
    // acme-client's base64 decoding skips what is not base64: a stray quote or space would sign
    // with another key, and the CA would only say the binding's signature is wrong.
    opts.err(
      path,
      key === ""
        ? `${where} is empty`
        : `${where} is not a base64url MAC key (letters, digits, - and _ only)`,
      "Copy the EAB HMAC key exactly as the CA shows it, without quotes or spaces",
    );
  }
}

/** `tls.acme.dns`: needed by DNS-01 (one way to publish the record), useless without it. */
function validateAcmeDns(
  acme: NonNullable<NonNullable<Config["tls"]>["acme"]>,
  opts: { err: Report; warn: Report; env: ValidateEnv },
): void {
  const { err, warn } = opts;
  const base = ["tls", "acme", "dns"];
  const dns = acme.dns;
  if (acme.challenge !== "dns-01") {
    if (dns) {
      warn(
        base,
        `dns has no effect with challenge: ${acme.challenge}`,
        "Set challenge: dns-01 to publish TXT records through it, or remove dns",
      );
    }
    return;
  }
  if (!dns || (dns.webhook === undefined) === (dns.command === undefined)) {
    err(
      dns ? base : ["tls", "acme", "challenge"],
      dns
        ? "DNS-01 publishes its TXT record through a webhook or a command: give exactly one"
        : "challenge: dns-01 needs a dns: section saying how to publish the TXT record",
      "Add dns: { webhook: https://dns-hook.internal/acme } (POST /present and /cleanup, as lego's httpreq) or dns: { command: [/usr/local/bin/dns-hook] } (run with present|cleanup <fqdn> <value>, as lego's exec)",
    );
  }
  if (!dns) return;
  if (dns.webhook !== undefined) {
    let url: URL | null = null;
    try {
      url = new URL(dns.webhook);
    } catch { /* reported below */ }
    if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
      err(
        [...base, "webhook"],
        `Webhook URL "${dns.webhook}" is not an http(s) URL`,
        "Use a URL such as https://dns-hook.internal/acme",
      );
    }
  } else if (dns.command !== undefined && dns.command[0].trim() === "") {
    err([...base, "command", 0], "The DNS command is empty", "Give the hook's path first");
  } else if (
    dns.command !== undefined && dns.command[0].includes("/") && !opts.env.exists(dns.command[0])
  ) {
    // Else the first order finds out, maybe at a renewal months from now.
    err(
      [...base, "command", 0],
      `DNS command ${dns.command[0]} does not exist`,
      "Give the hook's path (absolute, or relative to the working directory)",
    );
  }
  checkCaFile([...base, "ca_cert"], dns.ca_cert, { ...opts, peer: "the DNS webhook's" });
  if (
    dns.webhook === undefined &&
    (dns.headers !== undefined || dns.token_env !== undefined || dns.ca_cert !== undefined)
  ) {
    warn(
      [
        ...base,
        dns.headers !== undefined
          ? "headers"
          : dns.token_env !== undefined
          ? "token_env"
          : "ca_cert",
      ],
      "headers, token_env and ca_cert are for the webhook only; the command gets Prox's environment",
      "Remove them, or read the secret from the environment in the command",
    );
  }
  const token = dns.token_env !== undefined && opts.env.env ? opts.env.env(dns.token_env) : null;
  if (token === undefined || token === "") {
    err(
      [...base, "token_env"],
      `Environment variable ${dns.token_env} is ${token === "" ? "empty" : "not set"}`,
      `Export ${dns.token_env} to Prox (e.g. in its systemd unit: Environment=…)`,
    );
  }
  // fetch refuses these at every order, with an error that names no key.
  for (const [name, value] of Object.entries(dns.headers ?? {})) {
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) {
      err(
        [...base, "headers", name],
        `"${name}" is not a valid header name`,
        "Use letters, digits and -, such as X-Api-Key",
      );
    } else if (/[\r\n\0]/.test(value)) {
      err(
        [...base, "headers", name],
        `The value of header ${name} contains a line break or NUL`,
        "Put the value on one line",
      );
    }
  }
  (dns.resolvers ?? []).forEach((r, i) => {
    if (typeof parseResolver(r) === "string") {
      err(
        [...base, "resolvers", i],
        `DNS resolver "${r}" is not an IP address with an optional port`,
        'Use an address such as "10.0.0.53", "10.0.0.53:53" or "[2001:db8::53]:53"',
      );
    }
  });
  if (dns.propagation_timeout <= 0) {
    err(
      [...base, "propagation_timeout"],
      "propagation_timeout must be longer than 0s",
      "Set it to how long the DNS provider may take, e.g. 120s",
    );
  }
}

/**
 * The zeros the Rust Prox accepted in `health_check`: thresholds of 0 acted as 1 and an interval
 * of 0 probed without pause (both load, with a warning); a timeout of 0 timed out every probe and
 * marked every target down, so it is an error while checks are enabled.
 */
function healthCheckZeros(
  hc: Config["health_check"],
  o: {
    err: (p: string[], m: string, h?: string) => void;
    warn: (p: string[], m: string, h?: string) => void;
  },
): void {
  if (!hc.enabled) return;
  if (hc.timeout_secs === 0) {
    o.err(
      ["health_check", "timeout_secs"],
      "timeout_secs: 0 times out every probe, so every target would be marked down (the Rust Prox did that too)",
      "Set timeout_secs: 1 or more, or enabled: false",
    );
  }
  if (hc.interval_secs === 0) {
    o.warn(
      ["health_check", "interval_secs"],
      "interval_secs: 0 (the Rust Prox probed without pause) probes every second",
      "Set interval_secs: 1 or more",
    );
  }
  for (const k of ["unhealthy_threshold", "healthy_threshold"] as const) {
    if (hc[k] === 0) {
      o.warn(
        ["health_check", k],
        `${k}: 0 acts as 1 (as in the Rust Prox): one probe result decides`,
        `Set ${k}: 1`,
      );
    }
  }
}
