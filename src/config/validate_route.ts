// Cross-field rules of the routes: keys and conflicts, path rewrites, header and body rules,
// static files, websocket and load-balancing options, status selectors, patterns and rate limits.

import { statusMatcher } from "../domain/health.ts";
import { parseCidr, parseIp } from "../domain/ip.ts";
import { parseRouteKey } from "../domain/router.ts";
import { normalizePath } from "../domain/rewrite.ts";
import {
  BACKTRACK_HINT,
  backtrackRisk,
  compileRegex,
  encodedPathProblem,
} from "../domain/conditions.ts";
import { CLIENT_ADDRESS_FIELDS } from "../domain/headers.ts";
import { compileMatch, compileRouteRules, fieldValueProblem } from "../domain/rules.ts";
import type { RouteRulesSpec, RuleProblem } from "../domain/rules.ts";
import type { CacheConfig, Config, RateLimitConfig } from "./schema.ts";
import type { BandwidthConfig, ConcurrencyLimitConfig, RouteConfig } from "./schema_route.ts";
import { bandwidthText } from "../domain/bandwidth.ts";
import { mirrorUrls, validateMirror } from "./validate_mirror.ts";
import { numericHostSurprise } from "./schema_route.ts";
import type { ValidateEnv } from "./validate.ts";
import { warnRedirectLoops } from "./validate_redirect.ts";
import { warnForwardAuthLoops } from "./validate_forward_auth.ts";
import { checkUpstreamTlsFiles } from "./validate_tls.ts";

/** A header field name or cookie name: a token (RFC 9110 §5.6.2). */
const HASH_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Reports an issue at a config path, with an optional hint. */
export type Report = (p: (string | number)[], m: string, h?: string) => void;

/** Checks every route of `config.routes`. */
export function validateRoutes(
  config: Config,
  opts: { err: Report; warn: Report; env: ValidateEnv },
): void {
  const { err, warn } = opts;
  const keys = Object.keys(config.routes);
  if (keys.length === 0) {
    err(
      ["routes"],
      "At least one route is required",
      'Add a route, e.g. "/": { type: static, root: ./static }',
    );
  }
  const seen = new Map<string, string>();
  /** Conditional routes by hosts, prefix and match. */
  const seenMatch = new Map<string, string>();
  const badKeys = new Set<string>();
  for (const key of keys) {
    const route = config.routes[key];
    const slash = key.indexOf("/");
    const idn = slash > 0 ? asciiHost(key.slice(0, slash)) : undefined;
    if (idn) {
      err(
        ["routes", key],
        `Route "${key}" has a host with non-ASCII letters; clients send it as "${idn}"`,
        `Write "${idn}${key.slice(slash)}"`,
      );
      badKeys.add(key);
      continue;
    }
    const v6 = /^\[[0-9a-f:.]+\](?=\/)/i.exec(key)?.[0];
    const v6Form = v6 === undefined ? undefined : ipv6Form(v6);
    if (v6 !== undefined && v6Form !== v6) {
      err(
        ["routes", key],
        v6Form
          ? `Route "${key}" has an IPv6 address clients send as "${v6Form}"`
          : `Route "${key}" has an invalid IPv6 address "${v6}"`,
        v6Form
          ? `Write "${v6Form}${key.slice(v6.length)}"`
          : "Write it as in a URL, e.g. [::1]/api",
      );
      badKeys.add(key);
      continue;
    }
    if (
      !key.startsWith("/") && v6 === undefined && !/^[a-z0-9*][a-z0-9.*-]*(:\d+)?\/.*$/i.test(key)
    ) {
      err(
        ["routes", key],
        `Route path "${key}" must start with "/" (or with a host and a path, e.g. "example.com/api")`,
        key.includes("/") ? undefined : `Write "/${key}" for a path, "${key}/" for a host`,
      );
      badKeys.add(key);
      continue;
    }
    const hash = key.indexOf("#");
    if (key.includes("?") || (hash >= 0 && !route.match)) {
      err(
        ["routes", key],
        key.includes("?")
          ? `Route "${key}" contains "?": routes match the path only, never the query`
          : `Route "${key}" has a name after "#" but no match: a name tells apart routes of one ` +
            "prefix that a request's method, headers or query choose between",
        key.includes("?")
          ? "Use match: { query_has: … } on the route, or a condition in a rule"
          : `Add match (e.g. match: { has_header: { name: X-Canary } }), or write "${
            key.slice(0, hash)
          }"`,
      );
      badKeys.add(key);
      continue;
    }
    if (hash >= 0 && !/^#[A-Za-z0-9_.-]+$/.test(key.slice(hash))) {
      err(
        ["routes", key],
        `Route "${key}": the name after "#" may hold letters, digits, "_", "." and "-"`,
        `e.g. "${key.slice(0, hash)}#canary"`,
      );
      badKeys.add(key);
      continue;
    }
    // Requests arrive with `.` and `..` resolved (RFC 3986 §5.2.4): such a prefix never matches.
    if (parseRouteKey(key).prefix.split("/").some((s) => s === "." || s === "..")) {
      const slash = key.indexOf("/");
      const resolved = normalizePath(key.slice(slash));
      err(
        ["routes", key],
        `Route "${key}" has a dot segment (. or ..): request paths arrive with them resolved, ` +
          "so it never matches",
        resolved.ok ? `Write "${key.slice(0, slash)}${resolved.path}"` : undefined,
      );
      badKeys.add(key);
      continue;
    }
    // `/api/*` or `/*` (a glob elsewhere) is a prefix here, with a literal `*`: it takes almost
    // nothing, and `/api` everything under /api.
    const { prefix: keyPrefix } = parseRouteKey(key);
    if (keyPrefix.includes("*")) {
      const slash = key.indexOf("/");
      const before = keyPrefix.slice(0, keyPrefix.indexOf("*"));
      const plain = before.slice(0, before.lastIndexOf("/")) || "/";
      warn(
        ["routes", key],
        `Route "${key}": "*" is no wildcard in a path: a route key is a prefix, and this one ` +
          `takes only paths with a literal "*"`,
        `Write "${key.slice(0, slash)}${plain}" for every path under it (and match: ` +
          "{ path_matches: … } for more than a prefix)",
      );
    }
    if (/^[^/]*:\d+\//.test(key)) {
      err(
        ["routes", key],
        `Route "${key}" names a port: hosts are matched without their port, so it never matches`,
        `Write "${key.replace(/:\d+\//, "/")}" (one listener serves one port)`,
      );
      badKeys.add(key);
      continue;
    }
    (route.hosts ?? []).forEach((h, i) => {
      if (h.startsWith("[")) {
        const form = ipv6Form(h);
        if (form !== h) {
          err(
            ["routes", key, "hosts", i],
            form
              ? `Host "${h}" is sent by clients as "${form}"`
              : `Invalid IPv6 host "${h}": write it as in a URL, e.g. [::1]`,
            form ? `Write "${form}"` : undefined,
          );
        }
        return;
      }
      if (!HOST_PATTERN.test(h)) {
        const idn = asciiHost(h);
        err(
          ["routes", key, "hosts", i],
          idn
            ? `Invalid host "${h}": clients send a name with non-ASCII letters as "${idn}"`
            : `Invalid host "${h}": a host name or *.domain, without scheme, port or path`,
          idn ? `Write "${idn}"` : undefined,
        );
      }
    });
    const { host, prefix } = parseRouteKey(key);
    // Hosts are matched lower-cased; no hosts means any host. Two routes conflict when they share
    // a prefix and any host.
    const hosts = [...(host ? [host] : []), ...(route.hosts ?? [])].map((h) =>
      h.toLowerCase().replace(/\.$/, "")
    );
    // Conditional routes share their prefix with others by design.
    for (const h of route.match ? [] : hosts.length > 0 ? new Set(hosts) : [""]) {
      const norm = `${h}|${prefix}`;
      const other = seen.get(norm);
      if (other !== undefined) {
        err(
          ["routes", key],
          `Routes "${other}" and "${key}" match the same requests${h ? ` for host ${h}` : ""}`,
          "Remove one of them or give them different hosts",
        );
        break;
      }
      seen.set(norm, key);
    }
    if (route.match) {
      // Of two with the same prefix, hosts and match, the first written always wins.
      const norm = `${[...new Set(hosts)].sort().join(",")}|${prefix}|${
        JSON.stringify(route.match)
      }`;
      const other = seenMatch.get(norm);
      if (other !== undefined) {
        warn(
          ["routes", key, "match"],
          `Route "${key}" never takes a request: "${other}" comes first with the same match`,
          "Change its match, or remove one of them",
        );
      } else seenMatch.set(norm, key);
    }
    if ("path_rewrite" in route && route.path_rewrite !== undefined) {
      if (route.path_rewrite === "") {
        err(
          ["routes", key, "path_rewrite"],
          "Path rewrite cannot be empty",
          'Use "/" to strip the route prefix',
        );
      } else if (!route.path_rewrite.startsWith("/")) {
        err(
          ["routes", key, "path_rewrite"],
          'Path rewrite must start with "/"',
          `Write "/${route.path_rewrite}"`,
        );
      } else if (/[?#]/.test(route.path_rewrite)) {
        // "/v2?k=1" sent "/v2?k=1/x?q=1"; "/v2#x" sent "/v2", without the path or the query.
        err(
          ["routes", key, "path_rewrite"],
          'Path rewrite cannot contain "?" or "#": the upstream gets the client\'s query string',
          "Remove the query or fragment",
        );
      } else if (/(?:^|\/)\.\.?(?:\/|$)/.test(route.path_rewrite)) {
        err(
          ["routes", key, "path_rewrite"],
          'Path rewrite cannot contain "." or ".." segments',
          "Write the path they resolve to",
        );
      }
    }
    if ("path_regex" in route && route.path_regex) {
      const list = Array.isArray(route.path_regex) ? route.path_regex : [route.path_regex];
      list.forEach((r, i) => {
        const at = Array.isArray(route.path_regex)
          ? ["routes", key, "path_regex", i]
          : ["routes", key, "path_regex"];
        const re = compileRegex(r.match);
        if (typeof re === "string") err([...at, "match"], re);
        const encoded = encodedPathProblem(r.match, "path_regex");
        if (encoded) warn([...at, "match"], encoded.message, encoded.hint);
        const risk = typeof re === "string" ? null : backtrackRisk(re);
        if (risk) {
          warn([...at, "match"], `Regular expression /${r.match}/: ${risk}`, BACKTRACK_HINT);
        }
        const missing = typeof re === "string" ? null : missingGroup(re, r.replace);
        if (missing) {
          // JavaScript leaves such a reference as written: "${id}" went upstream as "$%7Bid%7D".
          err(
            [...at, "replace"],
            `replace refers to ${missing}: the match has no group ${
              missing.replace(/^\$\{?<?|[>}]$/g, "")
            }`,
            missing.startsWith("${")
              ? `Write $<${missing.slice(2, -1)}> (JavaScript's form of Rust's \${name})`
              : "Refer to a group of the match: $1 by number, $<name> by name (write $$ for a $)",
          );
        } else if (!/^[/$]/.test(r.replace)) {
          err(
            [...at, "replace"],
            `replace "${r.replace}" is no path: the upstream's path starts with /`,
            `Write "/${r.replace}"`,
          );
        } else if (/[?#]/.test(r.replace)) {
          err(
            [...at, "replace"],
            'replace cannot hold "?" or "#": the upstream gets the client\'s query string',
            "Match on the query with a conditional route (match: { query_has: … }) instead",
          );
        }
      });
    }
    const problems: RuleProblem[] = [];
    compileRouteRules(route as RouteRulesSpec, {
      env: opts.env.env ?? (() => undefined),
      problems,
    });
    if (route.match) compileMatch(route.match, problems);
    for (const p of problems) {
      (p.warning ? warn : err)(["routes", key, ...p.path], p.message, p.hint);
    }
    if (
      route.type === "redirect" && /^https?:\/\//i.test(route.target) && !URL.canParse(route.target)
    ) {
      err(["routes", key, "target"], `Invalid redirect URL "${route.target}"`);
    }
    if (route.type === "redirect" && !/^([a-z][a-z0-9+.-]*:|\/)/i.test(route.target)) {
      // `target: www.example.com` from /old/x sent the browser to /old/www.example.com/x.
      const host = /^[\w-]+(\.[\w-]+)+(:\d+)?(\/|$)/.test(route.target);
      warn(
        ["routes", key, "target"],
        `Redirect target "${route.target}" is relative: browsers resolve it against the ` +
          "request's path",
        host
          ? `Write https://${route.target} for another site, or /${route.target} for a path here`
          : `Start it with / for a path on this site (/${route.target}) or with https:// for another`,
      );
    }
    if (route.type === "respond" && [204, 205, 304].includes(route.status)) {
      // No content on these (RFC 9110 §15.3.5, §15.3.6, §15.4.5): a body would never be sent.
      for (const k of ["body", "content_type"] as const) {
        if (route[k] !== undefined) {
          err(
            ["routes", key, k],
            `A ${route.status} answer has no content: ${k} would never be sent`,
            `Remove ${k}, or answer with another status`,
          );
        }
      }
    }
    validateRateLimits(route, ["routes", key], { err, warn });
    if ("concurrency_limit" in route && route.concurrency_limit) {
      validateConcurrency(route, ["routes", key, "concurrency_limit"], { err, warn });
    }
    if ("bandwidth" in route && route.bandwidth) {
      warnSlowBandwidth(route, ["routes", key, "bandwidth", "rate"], {
        idle: config.timeouts.idle,
        warn,
      });
    }
    if ((route.type === "proxy" || route.type === "load_balance") && route.cache) {
      validateCache(route.cache, ["routes", key, "cache"], { err, warn });
      const shared = config.cache?.max_size;
      const object = route.cache === true ? 1 << 20 : route.cache.max_object_size;
      if (shared !== undefined && object > shared) {
        err(
          ["cache", "max_size"],
          `cache.max_size (${sizeText(shared)}) is smaller than route "${key}"'s ` +
            `max_object_size (${sizeText(object)}): no response that large could be stored`,
          "Raise the top-level cache.max_size or lower the route's max_object_size",
        );
      }
    }
    if (route.type === "static" && route.cache_control !== undefined) {
      // Sent on every file: a control character crashed the process, "€" gave 500.
      const why = fieldValueProblem(route.cache_control);
      if (why) err(["routes", key, "cache_control"], `cache_control ${why}`);
    }
    if (route.type === "static" && !opts.env.exists(route.root)) {
      err(
        ["routes", key, "root"],
        `Directory not found: ${route.root}`,
        "Create it or fix the path (relative to the working directory)",
      );
    }
    if (route.type === "static" && opts.env.stat?.(route.root)?.isFile) {
      err(
        ["routes", key, "root"],
        `root is a file, not a directory: ${route.root}`,
        "Name the directory that holds the files",
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
      if (route.max_frame_size !== undefined) {
        warn(
          ["routes", key, "max_frame_size"],
          "max_frame_size has no effect: Deno reassembles incoming frames and sends each relayed " +
            "message as one frame",
          "max_message_size bounds the messages relayed",
        );
      }
      if (route.max_message_size !== undefined && route.max_message_size > 64 * 1024 * 1024) {
        warn(
          ["routes", key, "max_message_size"],
          "Messages over 64 MiB are dropped by Deno's WebSocket implementation whatever the limit",
        );
      }
    }
    if (
      (route.type === "proxy" || route.type === "load_balance") &&
      (route.upstream_protocol === "h2c" || route.upstream_protocol === "h2")
    ) {
      const h2c = route.upstream_protocol === "h2c";
      const urls: [(string | number)[], string][] = route.type === "proxy"
        ? [[["target"], route.target]]
        : route.targets.map((t, i) => [["targets", i], typeof t === "string" ? t : t.url]);
      // h2c is for http targets, h2 for https ones.
      const wrong = urls.find(([, u]) => u.toLowerCase().startsWith("https:") === h2c);
      if (wrong) {
        err(
          ["routes", key, ...wrong[0]],
          h2c
            ? "upstream_protocol h2c is HTTP/2 without TLS: an https target cannot take it"
            : "upstream_protocol h2 is HTTP/2 over TLS: an http target cannot take it",
          h2c
            ? "Use an http:// target, or upstream_protocol: h2 for HTTP/2 over TLS"
            : "Use an https:// target, or upstream_protocol: h2c for HTTP/2 without TLS",
        );
      }
      if (config.protocols.http1_engine === "deno") {
        warn(
          ["routes", key, "upstream_protocol"],
          "The upstream's trailers (gRPC's status) are dropped with http1_engine: deno: " +
            "Deno's HTTP server cannot send them, so gRPC calls through this route fail",
          "Remove protocols.http1_engine: deno (Prox's own HTTP/2 engine passes trailers on)",
        );
      }
      if (route.proxy_protocol) {
        err(
          ["routes", key, "proxy_protocol"],
          `proxy_protocol cannot be combined with upstream_protocol ${route.upstream_protocol}: ` +
            "an HTTP/2 connection carries many clients' requests, and a PROXY header names one " +
            "client",
          "Remove one of them",
        );
      }
    }
    if (
      (route.type === "proxy" || route.type === "load_balance") && route.grpc_web &&
      route.upstream_protocol !== "h2c" && route.upstream_protocol !== "h2"
    ) {
      err(
        ["routes", key, "grpc_web"],
        "grpc_web needs HTTP/2 to the targets, which gRPC services speak",
        "Add upstream_protocol: h2c (or h2 for https targets) to the route",
      );
    }
    if (
      (route.type === "proxy" || route.type === "load_balance") &&
      route.health_check?.grpc_service !== undefined
    ) {
      const hc = route.health_check;
      if (route.upstream_protocol !== "h2c" && route.upstream_protocol !== "h2") {
        err(
          ["routes", key, "health_check", "grpc_service"],
          "gRPC health checks need HTTP/2 to the targets",
          "Add upstream_protocol: h2c (or h2 for https targets) to the route",
        );
      }
      for (const k of ["path", "method", "expected_status", "body_match"] as const) {
        if (hc[k] === undefined) continue;
        warn(
          ["routes", key, "health_check", k],
          `${k} has no effect with grpc_service: the probe calls grpc.health.v1.Health/Check ` +
            "and wants SERVING",
          `Remove ${k}`,
        );
      }
    }
    // Credentials in a target URL are never sent, and the URL is shown by /status and used as a
    // metrics label: refuse them rather than publish a password.
    const targetUrls: [(string | number)[], string][] = route.type === "load_balance"
      ? [
        ...route.targets.map((t, i): [(string | number)[], string] => [
          ["targets", i],
          typeof t === "string" ? t : t.url,
        ]),
        ...(route.discover?.dns
          ? [[["discover", "dns"], route.discover.dns] as [string[], string]]
          : []),
      ]
      : route.type === "proxy" || route.type === "websocket"
      ? [[["target"], route.target]]
      : [];
    if (route.type === "proxy" || route.type === "load_balance") {
      const m = route.mirror;
      if (m) {
        for (const [at, u] of mirrorUrls(m.target)) targetUrls.push([["mirror", ...at], u]);
        validateMirror(route, { err, warn, at: ["routes", key, "mirror"] });
      }
    }
    for (const [at, u] of targetUrls) {
      if (/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(u)) {
        err(
          ["routes", key, ...at],
          "A target URL cannot carry credentials: Prox does not send them, and /status and the " +
            "metrics would show them",
          'Send them as a header: request_headers: { set: { Authorization: "Basic …" } }',
        );
      }
      const numeric = numericHostSurprise(u);
      if (numeric) {
        warn(
          ["routes", key, ...at],
          `Target host ${numeric.written} is the address ${numeric.address}: a number with a ` +
            "leading 0 is octal (0x: hex) in a URL",
          `Write ${numeric.address}, or the address you meant without leading zeros`,
        );
      }
      // The upstream URL is target path + request path + the client's query: a query here was
      // dropped without a word.
      if (/^[a-z][a-z0-9+.-]*:\/\/[^?#]*\?/i.test(u)) {
        err(
          ["routes", key, ...at],
          "A target URL cannot carry a query: Prox would drop it (the upstream gets the client's " +
            "query string)",
          "Remove the query from the target",
        );
      }
    }
    // A client certificate (or a CA) on a route reached over plain HTTP was never used.
    if (
      "tls" in route && route.tls && targetUrls.length > 0 &&
      !targetUrls.some(([, u]) => /^(https|wss):\/\//i.test(u))
    ) {
      warn(
        ["routes", key, "tls"],
        "tls has no effect: no target of the route is https:// (http:// and unix: targets are " +
          "reached without TLS)",
        "Use an https:// target, or remove tls",
      );
    }
    for (const [at, u] of targetUrls) {
      if (!u.startsWith("unix:") || at[0] === "mirror") continue;
      const path = u.slice("unix:".length);
      // sun_path holds 108 bytes with the final NUL: Deno.connect refuses a longer path (502).
      const bytes = new TextEncoder().encode(path).byteLength;
      if (bytes > 107) {
        err(
          ["routes", key, ...at],
          `Unix socket path ${path} is ${bytes} bytes long: a Unix socket's path can be at most 107`,
          "Have the upstream listen at a shorter path, or write one relative to the working " +
            "directory of prox",
        );
      } else if (!opts.env.exists(path)) {
        warn(
          ["routes", key, ...at],
          `No Unix socket at ${path} yet: requests get 502 until the upstream listens there`,
          "Start the upstream first, or fix the path (a relative one starts from the working " +
            "directory of prox)",
        );
      }
    }
    if (route.type === "load_balance") validateDiscover(key, route, { err, warn });
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
  warnRedirectLoops(config, { warn, skip: badKeys });
  warnForwardAuthLoops(config, { warn, skip: badKeys });
  checkUpstreamTlsFiles(config, { err, warn, env: opts.env });

  // Status selectors and patterns are compiled at start-up: report what would not compile.
  for (const [key, r] of Object.entries(config.routes)) {
    if (r.type !== "proxy" && r.type !== "load_balance") continue;
    if (r.health_check?.expected_status !== undefined) {
      checkStatus(
        err,
        ["routes", key, "health_check", "expected_status"],
        r.health_check.expected_status,
      );
    }
    checkRegex(err, ["routes", key, "health_check", "body_match"], r.health_check?.body_match);
    const hc = r.health_check;
    if (hc?.method !== undefined || hc?.body_match !== undefined) {
      const g = config.health_check;
      checkHeadBody(err, ["routes", key, "health_check"], {
        method: hc.method ?? g.method,
        body_match: hc.body_match ?? g.body_match,
      });
    }
    if (r.passive_health) {
      checkStatus(err, ["routes", key, "passive_health", "statuses"], r.passive_health.statuses);
    }
    if (r.retries) checkStatus(err, ["routes", key, "retries", "on_status"], r.retries.on_status);
    if (r.type !== "load_balance") continue;
    if (r.slow_start && r.strategy === "first") {
      warn(
        ["routes", key, "slow_start"],
        "slow_start has no effect with strategy first: the first available target takes all",
        "Remove slow_start, or use a strategy that shares load (e.g. round_robin)",
      );
    }
    // Weights that differ within a tier (primaries, backups) mean shares the strategy ignores.
    const tiers = [false, true].map((backup) =>
      new Set(
        r.targets.filter((t) => typeof t === "string" ? !backup : t.backup === backup)
          .map((t) => typeof t === "string" ? 1 : t.weight),
      )
    );
    if ((r.strategy === "round_robin" || r.strategy === "first") && tiers.some((w) => w.size > 1)) {
      warn(
        ["routes", key, "targets"],
        `weight has no effect with strategy ${r.strategy}: ${
          r.strategy === "first"
            ? "the first available target takes all"
            : "each available target takes its turn"
        }`,
        "Use strategy weighted_round_robin for shares by weight (or random, least_connections, " +
          "power_of_two, consistent_hash)",
      );
    }
    const stickySecret = typeof r.sticky === "object" ? r.sticky.secret_env : undefined;
    if (stickySecret !== undefined && opts.env.env && !opts.env.env(stickySecret)) {
      err(
        ["routes", key, "sticky", "secret_env"],
        `Environment variable ${stickySecret} is not set`,
        `Export ${stickySecret} to Prox, the same value on every instance (e.g. openssl rand -hex 32)`,
      );
    }
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
    // Not a token (RFC 9110 §5.1, RFC 6265 §4.1.1): a header name made every request throw (500),
    // and a cookie name could never match, so no request had a key.
    if (r.hash_on?.name && r.hash_on.type !== "ip" && !HASH_NAME.test(r.hash_on.name)) {
      const what = r.hash_on.type === "header" ? "a header field name" : "a cookie name";
      err(
        ["routes", key, "hash_on", "name"],
        `hash_on name "${r.hash_on.name}" is not ${what}`,
        `Use letters, digits and - _ . (e.g. ${
          r.hash_on.type === "header" ? "x-user-id" : "session"
        })`,
      );
    }
    if (r.targets.length > 0 && r.targets.every((t) => typeof t !== "string" && t.backup)) {
      err(["routes", key, "targets"], "Every target is a backup", "Leave at least one primary");
    }
  }
}

/** Reports a status selector (`expected_status`, `statuses`, `on_status`) that does not compile. */
export function checkStatus(
  err: Report,
  path: (string | number)[],
  sel: Parameters<typeof statusMatcher>[0],
): void {
  try {
    statusMatcher(sel);
  } catch (e) {
    err(path, (e as Error).message);
  }
}

/** Reports `body_match` on HEAD probes: the response has no body, so the target is always down. */
export function checkHeadBody(
  err: Report,
  path: string[],
  hc: { method: "GET" | "HEAD"; body_match?: string },
): void {
  if (hc.method !== "HEAD" || hc.body_match === undefined) return;
  err(
    [...path, "body_match"],
    "body_match cannot match a HEAD probe: a HEAD response has no body",
    "Use method: GET with body_match, or drop body_match",
  );
}

/** Reports a regular expression (`body_match`) that does not compile. */
export function checkRegex(err: Report, path: (string | number)[], re: string | undefined): void {
  if (re === undefined) return;
  try {
    new RegExp(re);
  } catch (e) {
    const why = (e as Error).message.replace(/^Invalid regular expression: /, "");
    err(path, `Invalid regular expression ${why}`);
  }
}

/** Cross-field rules of a route's `rate_limit` and `rate_limits`. */
function validateRateLimits(
  route: { rate_limit?: RateLimitConfig; rate_limits?: RateLimitConfig[]; jwt_auth?: unknown },
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
      if (names.has(rl.name)) {
        err(
          [...path, "name"],
          `Duplicate rate limit name "${rl.name}"`,
          "Give each limit of the route its own name (it names the limit in RateLimit headers)",
        );
      }
      names.add(rl.name);
    }
    if (rl.header_name !== undefined && rl.by !== "header") {
      // The Rust Prox read header_name only for by: header; its configs keep loading.
      warn(
        [...path, "header_name"],
        `header_name is ignored when rate limiting by ${rl.by}`,
        "Remove it, or set by: header",
      );
    } else if (
      rl.header_name !== undefined && !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(rl.header_name)
    ) {
      err([...path, "header_name"], `Invalid header name "${rl.header_name}"`);
    } else if (
      rl.header_name !== undefined && CLIENT_ADDRESS_FIELDS.has(rl.header_name.toLowerCase())
    ) {
      // The client writes these, unless a proxy in front replaces them (one that appends to
      // X-Forwarded-For leaves the client's own first entry, which is the key): a fresh value per
      // request is a fresh quota.
      warn(
        [...path, "header_name"],
        `${rl.header_name} is a field a client sets (unless a proxy in front replaces it): each ` +
          "request can name a key of its own and skip the limit",
        "Use by: ip, with trusted_proxies naming the proxies in front (their X-Forwarded-For is read)",
      );
    }
    if (rl.period <= 0) {
      // As the seed: a zero period would make every request a new window (no limit at all).
      err([...path, "period"], "Period duration must be greater than 0", 'E.g. period: "1m"');
    }
    if (rl.by === "header" && !rl.header_name) {
      err(
        path,
        "header_name is required when rate limiting by header",
        "E.g. header_name: X-Api-Key",
      );
    }
    if (rl.by === "cookie" && !rl.cookie_name) {
      err(
        path,
        "cookie_name is required when rate limiting by cookie",
        "E.g. cookie_name: session",
      );
    }
    if (rl.by === "jwt_claim" && !rl.claim) {
      err(path, "claim is required when rate limiting by jwt_claim", "E.g. claim: sub");
    }
    if (rl.by === "jwt_claim" && !route.jwt_auth) {
      err(
        [...path, "by"],
        "by: jwt_claim needs jwt_auth on the route: there is no token to read the claim from",
        "Add jwt_auth to the route, or limit by ip",
      );
    }
    if (rl.claim !== undefined && rl.by !== "jwt_claim") {
      warn([...path, "claim"], `claim is ignored when rate limiting by ${rl.by}`);
    }
    if (rl.by === "query" && !rl.query_param) {
      err(path, "query_param is required when rate limiting by query", "E.g. query_param: api_key");
    }
    checkExemptIps(err, path, rl.exempt_ips);
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

/** A route's `concurrency_limit`: the key its `by` needs, and its exempt addresses. */
function validateConcurrency(
  route: { concurrency_limit?: ConcurrencyLimitConfig; jwt_auth?: unknown },
  path: (string | number)[],
  opts: { err: Report; warn: Report },
): void {
  const { err, warn } = opts;
  const cl = route.concurrency_limit!;
  const needs = { header: "header_name", cookie: "cookie_name", query: "query_param" } as const;
  const field = needs[cl.by as keyof typeof needs] ?? (cl.by === "jwt_claim" ? "claim" : undefined);
  if (field && !cl[field]) {
    err(path, `${field} is required with by: ${cl.by}`, `E.g. ${field}: ${EXAMPLE_KEY[field]}`);
  }
  if (cl.header_name !== undefined && !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(cl.header_name)) {
    err([...path, "header_name"], `Invalid header name "${cl.header_name}"`);
  }
  if (cl.by === "jwt_claim" && !route.jwt_auth) {
    err(
      [...path, "by"],
      "by: jwt_claim needs jwt_auth on the route: there is no token to read the claim from",
      "Add jwt_auth to the route, or limit by ip",
    );
  }
  for (const k of ["header_name", "cookie_name", "query_param", "claim"] as const) {
    if (cl[k] !== undefined && k !== field) warn([...path, k], `${k} is ignored with by: ${cl.by}`);
  }
  checkExemptIps(err, path, cl.exempt_ips);
  if (["header", "cookie", "query"].includes(cl.by) && cl.on_missing_key === "allow") {
    warn(
      [...path, "by"],
      `Requests without the ${cl.by} are not limited (on_missing_key: allow)`,
      "Set on_missing_key: deny so a client cannot skip the limit by omitting it",
    );
  }
}

/** A limit's `exempt_ips`: each an address or a CIDR block. */
function checkExemptIps(err: Report, path: (string | number)[], list: readonly string[]): void {
  list.forEach((c, i) => {
    if (!parseCidr(c)) {
      err(
        [...path, "exempt_ips", i],
        `Invalid CIDR "${c}"`,
        "Use an address or a block, e.g. 10.0.0.0/8 or ::1",
      );
    }
  });
}

const EXAMPLE_KEY = {
  header_name: "X-Api-Key",
  cookie_name: "session",
  query_param: "api_key",
  claim: "sub",
} as const;

/** A route's `hosts` entry: a host name (or IP address) or `*.domain`. */
const HOST_PATTERN =
  /^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$/i;

/**
 * The form in which clients send an IPv6 literal host (`[0:0::1]` → `[::1]`, lower case, as the
 * URL parser writes it, and so does the router read it), or undefined when it is not one.
 */
function ipv6Form(host: string): string | undefined {
  if (!/^\[[0-9a-f:.]+\]$/i.test(host)) return undefined;
  try {
    return new URL(`http://${host}`).hostname;
  } catch {
    return undefined;
  }
}

/** The ASCII (IDNA, RFC 5891) form of a host with non-ASCII letters, as clients send it. */
function asciiHost(host: string): string | undefined {
  if (!/[\u0080-\uffff]/.test(host)) return undefined;
  const wild = host.startsWith("*.") ? "*." : "";
  try {
    return wild + new URL(`http://${host.slice(wild.length)}`).hostname;
  } catch {
    return undefined;
  }
}

/** A route's `cache`: an object must fit in the store, and a stored object must be reachable. */
function validateCache(
  cache: CacheConfig,
  path: (string | number)[],
  o: { err: Report; warn: Report },
): void {
  if (typeof cache !== "object") return;
  if (cache.max_object_size > cache.max_size) {
    o.err(
      [...path, "max_object_size"],
      `max_object_size (${sizeText(cache.max_object_size)}) exceeds max_size ` +
        `(${sizeText(cache.max_size)}): no response that large could be stored`,
      "Lower max_object_size or raise max_size",
    );
  }
  if (cache.default_ttl === 0) {
    o.warn(
      [...path, "default_ttl"],
      "default_ttl 0s stores responses without freshness information as already stale",
      "Remove default_ttl to leave them uncached, or give a duration such as 10s",
    );
  }
}

/** A byte count as it would be written: 2 MiB, 512 KiB or 1000 bytes. */
/** The most an upstream read hands on at once (adapters/upstream_h1.ts READ_SIZE). */
const UPSTREAM_READ = 64 * 1024;
/** `timeouts.idle` when neither the route nor the top level sets it (proxy/snapshot.ts). */
const DEFAULT_IDLE_MS = 60_000;

/**
 * A `bandwidth` rate below 1 KiB/s (bytes, not bits and not KiB: `rate: 512` sends a 10 MiB file
 * in almost six hours), or one at which an upstream read takes longer to send than
 * `timeouts.idle`, after which the upstream client ends the exchange as a client that stalled.
 */
function warnSlowBandwidth(
  route: RouteConfig,
  at: (string | number)[],
  o: { idle: number | undefined; warn: Report },
): void {
  const policy = (route as { bandwidth: BandwidthConfig }).bandwidth;
  const rate = policy.rate;
  if (rate < 1024) {
    o.warn(
      at,
      `bandwidth rate ${rate} is ${rate} bytes per second: a 1 MiB answer takes ` +
        `${Math.round((1 << 20) / rate / 60)} minutes`,
      `Write a unit if more was meant, e.g. ${rate}KiB`,
    );
    return;
  }
  if (route.type !== "proxy" && route.type !== "load_balance") return;
  const idle = route.timeouts?.idle ?? o.idle ?? DEFAULT_IDLE_MS;
  const readMs = UPSTREAM_READ / rate * 1000;
  if (idle === 0 || readMs <= idle) return;
  const s = Math.ceil(readMs / 1000);
  o.warn(
    at,
    `At ${bandwidthText(policy)} one upstream read of up to 64 KiB takes ${s} s to send, ` +
      `longer than timeouts.idle (${idle / 1000} s), which then ends the download as a client ` +
      "that read nothing",
    `Raise timeouts.idle above ${s} s, or the rate`,
  );
}

function sizeText(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} bytes`;
}

/**
 * The first `$…` reference in a `path_regex` replace that names no group of `re` (`$2` with one
 * group, `$<id>` without that name, Rust's `${id}`), or null. `$$`, `$&`, `` $` `` and `$'` are
 * JavaScript's own.
 */
function missingGroup(re: RegExp, replace: string): string | null {
  const m = new RegExp(`${re.source}|`, re.flags.replace(/[gy]/g, "")).exec("")!;
  const groups = m.length - 1;
  const names = new Set(Object.keys(m.groups ?? {}));
  for (const ref of replace.matchAll(/\$(\$|[&`']|\d{1,2}|<[^>]*>|\{[^}]*\}|)/g)) {
    const r = ref[1];
    if (r === "$" || r === "&" || r === "`" || r === "'") continue;
    if (/^\d/.test(r)) {
      // "$10" with fewer than ten groups is $1 and a 0, as JavaScript reads it.
      const n = Number(r) <= groups ? Number(r) : Number(r[0]);
      if (n === 0 || n > groups) return `$${r}`;
    } else if (r.startsWith("<")) {
      if (!names.has(r.slice(1, -1))) return `$${r}`;
    } else if (r.startsWith("{")) return `$${r}`;
  }
  return null;
}

/** Not both `targets` and `discover`, and what `discover` needs to find any. */
function validateDiscover(
  key: string,
  route: Extract<Config["routes"][string], { type: "load_balance" }>,
  o: { err: Report; warn: Report },
): void {
  const d = route.discover;
  // A route with neither is a schema error (schema_route.ts).
  if (!d) return;
  if (route.targets.length > 0) {
    o.err(
      ["routes", key, "discover"],
      "A route takes its targets from targets or from discover, not both",
      "Remove targets (discover finds them all), or use a route of its own for each",
    );
  }
  if ((d.dns === undefined) === (d.srv === undefined)) {
    o.err(
      ["routes", key, "discover"],
      d.dns === undefined
        ? "discover needs dns (a URL whose name has the addresses) or srv (an SRV name)"
        : "discover takes dns or srv, not both",
      'Write e.g. discover: { dns: "http://app:8080" } or discover: { srv: "_http._tcp.app.service.consul" }',
    );
  }
  // RFC 2782 weights become target weights, which these strategies ignore (as targets' do).
  if (d.srv !== undefined && (route.strategy === "round_robin" || route.strategy === "first")) {
    o.warn(
      ["routes", key, "discover", "srv"],
      `The SRV records' weights have no effect with strategy ${route.strategy}: ${
        route.strategy === "first"
          ? "the first available target takes all"
          : "each available target takes its turn"
      } (their priorities still make backups)`,
      "Use strategy weighted_round_robin for shares by weight (or random, least_connections, " +
        "power_of_two, consistent_hash)",
    );
  }
  if (d.srv === undefined && d.scheme !== "http") {
    o.warn(
      ["routes", key, "discover", "scheme"],
      "discover.scheme has no effect with dns: the URL's scheme applies",
      "Remove scheme, or write https:// in dns",
    );
  }
  const host = d.dns === undefined ? null : hostOfUrl(d.dns);
  if (host !== null && (parseIp(host.replace(/^\[|\]$/g, "")) !== null)) {
    o.err(
      ["routes", key, "discover", "dns"],
      `discover.dns names the address ${host}: there is nothing to look up`,
      `Write the address as a target (targets: [${d.dns}]), or a host name here`,
    );
  }
  if (d.resolver !== undefined && parseResolver(d.resolver) === null) {
    o.err(
      ["routes", key, "discover", "resolver"],
      `Invalid resolver "${d.resolver}": an IP address, with a port if not 53`,
      'Write e.g. "10.0.0.2", "127.0.0.1:8600" or "[fd00::53]:53"',
    );
  }
  if (d.refresh < 1000) {
    o.err(
      ["routes", key, "discover", "refresh"],
      "discover.refresh must be at least 1s",
      "Use e.g. refresh: 30s",
    );
  }
}

/** The host of an http(s) URL as written (`[::1]` with brackets), or null. */
function hostOfUrl(u: string): string | null {
  try {
    return new URL(u).hostname;
  } catch {
    return null;
  }
}

/** `ip` or `ip:port` (`[v6]:port`) → address and port, or null when it is neither. */
export function parseResolver(text: string): { ipAddr: string; port: number } | null {
  const m = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/.exec(text) ??
    /^([0-9.]+)(?::(\d{1,5}))?$/.exec(text) ?? /^([0-9a-fA-F:]*:[0-9a-fA-F:]*)()$/.exec(text);
  if (!m || parseIp(m[1]) === null) return null;
  const port = m[2] ? Number(m[2]) : 53;
  return port >= 1 && port <= 65535 ? { ipAddr: m[1], port } : null;
}
