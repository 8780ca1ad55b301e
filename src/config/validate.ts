// Cross-field rules that the schema cannot express: addresses, TLS modes, files named, route
// conflicts. Pure: file checks go through the `exists` callback.

import { parseListenAddr } from "./listen.ts";
import { statusMatcher } from "../domain/health.ts";
import { parseCidr } from "../domain/ip.ts";
import { parseRouteKey } from "../domain/router.ts";
import { compileRouteRules } from "../domain/rules.ts";
import type { RouteRulesSpec, RuleProblem } from "../domain/rules.ts";
import type { Config, RateLimitConfig } from "./schema.ts";
import { workersIssues } from "./workers_rules.ts";
import type { ConfigIssue, ParseResult } from "./parse.ts";
import { dotted, sortIssues } from "./parse.ts";

/** What validation may ask of the outside world. */
export interface ValidateEnv {
  /** True when the path exists (relative paths are relative to the working directory). */
  exists(path: string): boolean;
  /** Environment lookup for `{env.NAME}` placeholders (none when absent). */
  env?: (name: string) => string | undefined;
}

/** Runs every cross-field rule; returns issues (errors and warnings) in file order. */
export function validateConfig(
  config: Config,
  parsed: Pick<ParseResult, "locate">,
  opts: { file: string; env: ValidateEnv },
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const add = (
    severity: ConfigIssue["severity"],
    path: (string | number)[],
    message: string,
    hint?: string,
  ) =>
    issues.push({
      severity,
      file: opts.file,
      ...parsed.locate(path),
      path: dotted(path),
      message,
      hint,
    });
  const err = (p: (string | number)[], m: string, h?: string) => add("error", p, m, h);
  const warn = (p: (string | number)[], m: string, h?: string) => add("warning", p, m, h);

  const addr = parseListenAddr(config.listen_addr);
  if (typeof addr === "string") err(["listen_addr"], addr);
  if (config.admin) {
    const a = parseListenAddr(config.admin.listen_addr);
    if (typeof a === "string") err(["admin", "listen_addr"], a);
  }
  if (config.http_redirect) {
    const a = parseListenAddr(config.http_redirect.listen_addr);
    if (typeof a === "string") err(["http_redirect", "listen_addr"], a);
  }

  const store = config.rate_limit_store;
  if (store.type === "redis" && !/^rediss?:\/\/[^/]/.test(store.url ?? "")) {
    err(
      ["rate_limit_store", store.url ? "url" : "type"],
      store.url ? `Invalid Redis URL "${store.url}"` : "url is required when type is redis",
      'Use e.g. url: "redis://127.0.0.1:6379" (rediss:// for TLS)',
    );
  }

  // Routes
  const keys = Object.keys(config.routes);
  if (keys.length === 0) {
    err(
      ["routes"],
      "At least one route is required",
      'Add a route, e.g. "/": { type: static, root: ./static }',
    );
  }
  const seen = new Map<string, string>();
  for (const key of keys) {
    const route = config.routes[key];
    if (!key.startsWith("/") && !/^[a-z0-9*][a-z0-9.*-]*(:\d+)?(\/.*)?$/i.test(key)) {
      err(
        ["routes", key],
        `Route path "${key}" must start with "/" (or with a host, e.g. "example.com/api")`,
      );
      continue;
    }
    const { host, prefix } = parseRouteKey(key);
    const hosts = [host ?? "", ...(route.hosts ?? [])].sort().join(",");
    const norm = `${hosts}|${prefix}`;
    const other = seen.get(norm);
    if (other !== undefined) {
      err(
        ["routes", key],
        `Routes "${other}" and "${key}" match the same requests`,
        "Remove one of them or give them different hosts",
      );
    } else {
      seen.set(norm, key);
    }
    if ("path_rewrite" in route && route.path_rewrite !== undefined) {
      if (route.path_rewrite === "") {
        err(
          ["routes", key, "path_rewrite"],
          "Path rewrite cannot be empty",
          'Use "/" to strip the route prefix',
        );
      } else if (!route.path_rewrite.startsWith("/")) {
        err(["routes", key, "path_rewrite"], 'Path rewrite must start with "/"');
      }
    }
    const problems: RuleProblem[] = [];
    compileRouteRules(route as RouteRulesSpec, {
      env: opts.env.env ?? (() => undefined),
      problems,
    });
    for (const p of problems) err(["routes", key, ...p.path], p.message, p.hint);
    if (
      route.type === "redirect" && /^https?:\/\//i.test(route.target) && !URL.canParse(route.target)
    ) {
      err(["routes", key, "target"], `Invalid redirect URL "${route.target}"`);
    }
    validateRateLimits(route, ["routes", key], { err, warn });
    if (route.type === "static" && !opts.env.exists(route.root)) {
      err(
        ["routes", key, "root"],
        `Directory not found: ${route.root}`,
        "Create it or fix the path (relative to the working directory)",
      );
    }
    if (route.type === "static" && opts.env.exists(route.root)) {
      for (const k of ["spa_fallback", "not_found_page", "index"] as const) {
        const f = route[k]?.replace(/^\/+/, "");
        if (f === undefined || (k === "index" && f === "index.html")) continue;
        if (f === "" || f.split("/").some((seg) => seg === ".." || seg === ".")) {
          err(["routes", key, k], `${k} must name a file inside root`, 'E.g. "index.html"');
        } else if (k !== "index" && !opts.env.exists(`${route.root}/${f}`)) {
          warn(
            ["routes", key, k],
            `File not found: ${route.root}/${f}`,
            "The path is relative to root; until it exists the plain 404 is served",
          );
        }
      }
    }
    if (route.type === "websocket") {
      for (const k of ["insecure_skip_verify", "server_name"] as const) {
        if (!route.tls?.[k]) continue;
        warn(
          ["routes", key, "tls", k],
          `tls.${k} has no effect on websocket routes: Deno's WebSocket client cannot set it`,
          k === "server_name"
            ? "The target's host is the verification name"
            : "Trust the upstream's CA with tls.ca_cert instead",
        );
      }
      if (route.max_message_size !== undefined && route.max_message_size > 64 * 1024 * 1024) {
        warn(
          ["routes", key, "max_message_size"],
          "Messages over 64 MiB are dropped by Deno's WebSocket implementation whatever the limit",
        );
      }
    }
    if (route.type === "load_balance") {
      const urls = route.targets.map((t) => typeof t === "string" ? t : t.url);
      urls.forEach((u, i) => {
        if (urls.indexOf(u) !== i) {
          err(
            ["routes", key, "targets", i],
            `Duplicate target "${u}"`,
            "List each target once; use weight to send it more traffic",
          );
        }
      });
    }
  }

  // Health checks and trusted proxies
  const hc = config.health_check;
  if (hc.timeout_secs >= hc.interval_secs && hc.enabled) {
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
      err(["backend_health_paths", target], `Health path "${path}" must start with "/"`);
    }
  }
  // Load balancing, health and retries (status selectors and patterns are compiled at start-up).
  const statusRule = (path: (string | number)[], sel: Parameters<typeof statusMatcher>[0]) => {
    try {
      statusMatcher(sel);
    } catch (e) {
      err(path, (e as Error).message);
    }
  };
  const regexRule = (path: (string | number)[], re: string | undefined) => {
    if (re === undefined) return;
    try {
      new RegExp(re);
    } catch (e) {
      const why = (e as Error).message.replace(/^Invalid regular expression: /, "");
      err(path, `Invalid regular expression ${why}`);
    }
  };
  statusRule(["health_check", "expected_status"], hc.expected_status);
  regexRule(["health_check", "body_match"], hc.body_match);
  statusRule(["passive_health", "statuses"], config.passive_health.statuses);
  for (const [key, r] of Object.entries(config.routes)) {
    if (r.type !== "proxy" && r.type !== "load_balance") continue;
    if (r.health_check?.expected_status !== undefined) {
      statusRule(
        ["routes", key, "health_check", "expected_status"],
        r.health_check.expected_status,
      );
    }
    regexRule(["routes", key, "health_check", "body_match"], r.health_check?.body_match);
    if (r.passive_health) {
      statusRule(["routes", key, "passive_health", "statuses"], r.passive_health.statuses);
    }
    if (r.retries) statusRule(["routes", key, "retries", "on_status"], r.retries.on_status);
    if (r.type !== "load_balance") continue;
    if (r.hash_on && r.strategy !== "consistent_hash") {
      warn(["routes", key, "hash_on"], `hash_on has no effect with strategy ${r.strategy}`);
    }
    if (r.hash_on && r.hash_on.type !== "ip" && !r.hash_on.name) {
      err(
        ["routes", key, "hash_on"],
        `hash_on type ${r.hash_on.type} needs a name`,
        `e.g. hash_on: { type: ${r.hash_on.type}, name: ${
          r.hash_on.type === "cookie" ? "session" : "x-user-id"
        } }`,
      );
    }
    if (r.targets.every((t) => typeof t !== "string" && t.backup)) {
      err(["routes", key, "targets"], "Every target is a backup", "Leave at least one primary");
    }
  }

  config.trusted_proxies.forEach((c, i) => {
    if (!parseCidr(c)) {
      err(
        ["trusted_proxies", i],
        `Invalid CIDR "${c}"`,
        "Use an address or a block, e.g. 10.0.0.0/8 or ::1",
      );
    }
  });

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
      if (!tls.cert_path) err(["tls"], "key_path is set but cert_path is missing");
      else if (!opts.env.exists(tls.cert_path)) {
        err(["tls", "cert_path"], `Certificate file not found: ${tls.cert_path}`);
      }
      if (!tls.key_path) err(["tls"], "cert_path is set but key_path is missing");
      else if (!opts.env.exists(tls.key_path)) {
        err(["tls", "key_path"], `Private key file not found: ${tls.key_path}`);
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
      validateAcme(tls.acme, { err, warn, config });
    }
  }
  if (config.protocols.http3_enabled && !tls) {
    err(
      ["protocols", "http3_enabled"],
      "HTTP/3 requires TLS",
      "Add a tls section with cert_path and key_path (or acme)",
    );
  }
  // Accepted for compatibility with the Rust Prox, but without effect on Deno.serve.
  const inactive = ["http2_max_frame_size", "http2_max_concurrent_streams"] as const;
  for (const k of inactive) {
    if (config.protocols[k] !== undefined) {
      warn(["protocols", k], `${k} has no effect: Deno's HTTP/2 settings are fixed`);
    }
  }
  if (!config.protocols.http2_enabled) {
    warn(
      ["protocols", "http2_enabled"],
      "http2_enabled: false has no effect: HTTP/2 cannot be turned off on Deno's HTTP server",
    );
  }
  for (const w of workersIssues(config)) add(w.severity, w.path, w.message, w.hint);
  sortIssues(issues);
  return issues;
}

type Report = (p: (string | number)[], m: string, h?: string) => void;

const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const DOMAIN =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function validateAcme(
  acme: NonNullable<NonNullable<Config["tls"]>["acme"]>,
  opts: { err: Report; warn: Report; config: Config },
): void {
  const { err, warn } = opts;
  const base = ["tls", "acme"];
  if (acme.domains.length === 0) {
    err([...base, "domains"], "At least one domain must be specified for ACME");
  }
  acme.domains.forEach((d, i) => {
    if (d.startsWith("*.")) {
      err(
        [...base, "domains", i],
        `Wildcard domain "${d}" needs DNS-01, which Prox does not support`,
      );
    } else if (!DOMAIN.test(d)) {
      err(
        [...base, "domains", i],
        `Invalid domain name "${d}"`,
        "Use a plain host name such as example.com",
      );
    }
  });
  if (!EMAIL.test(acme.email)) {
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

/** Cross-field rules of a route's `rate_limit` and `rate_limits`. */
function validateRateLimits(
  route: { rate_limit?: RateLimitConfig; rate_limits?: RateLimitConfig[] },
  at: (string | number)[],
  opts: { err: Report; warn: Report },
): void {
  const { err, warn } = opts;
  const limits: [(string | number)[], RateLimitConfig][] = [];
  if (route.rate_limit) limits.push([[...at, "rate_limit"], route.rate_limit]);
  route.rate_limits?.forEach((l, i) => limits.push([[...at, "rate_limits", i], l]));
  const names = new Set<string>();
  for (const [path, rl] of limits) {
    if (rl.name !== undefined) {
      if (names.has(rl.name)) err([...path, "name"], `Duplicate rate limit name "${rl.name}"`);
      names.add(rl.name);
    }
    if (rl.header_name !== undefined && !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(rl.header_name)) {
      err([...path, "header_name"], `Invalid header name "${rl.header_name}"`);
    }
    if (rl.by === "header" && !rl.header_name) {
      err(path, "header_name is required when rate limiting by header");
    }
    if (rl.by === "cookie" && !rl.cookie_name) {
      err(path, "cookie_name is required when rate limiting by cookie");
    }
    if (rl.by === "query" && !rl.query_param) {
      err(path, "query_param is required when rate limiting by query");
    }
    rl.exempt_ips.forEach((c, i) => {
      if (!parseCidr(c)) {
        err(
          [...path, "exempt_ips", i],
          `Invalid CIDR "${c}"`,
          "Use an address or a block, e.g. 10.0.0.0/8 or ::1",
        );
      }
    });
    if (
      rl.burst !== undefined &&
      (rl.algorithm === "fixed_window" || rl.algorithm === "sliding_window")
    ) {
      warn(
        [...path, "burst"],
        `burst is ignored by ${rl.algorithm}`,
        "Use algorithm: token_bucket or gcra for a burst different from requests",
      );
    }
    if (["header", "cookie", "query"].includes(rl.by) && rl.on_missing_key === "allow") {
      warn(
        [...path, "by"],
        `Requests without the ${rl.by} are not limited (on_missing_key: allow)`,
        "Set on_missing_key: deny so a client cannot skip the limit by omitting it",
      );
    }
  }
}
