// Cross-field rules of access control: `ip_access` (top level and per route), `basic_auth` and
// `cors` beside the route's header rules.

import { formatEntry, listFileLines, parseAccessEntry } from "../domain/ip_access.ts";
import {
  bcryptCost,
  bcryptTime,
  HASH_HINT,
  hashProblem,
  parseHtpasswd,
} from "../domain/htpasswd.ts";
import type {
  BasicAuthConfig,
  ClientCertConfig,
  Config,
  CorsConfig,
  HeaderRulesConfig,
  IpAccessConfig,
} from "./schema.ts";
import { CORS_RESPONSE_FIELDS, originRegex, suffixAdmitted, unescapedDot } from "../domain/cors.ts";
import type { ValidateEnv } from "./validate.ts";
import type { Report } from "./validate_route.ts";
import { checkJwtAuth } from "./validate_jwt.ts";
import { BACKTRACK_HINT, backtrackRisk, compileRegex } from "../domain/conditions.ts";
import { isSha256Fingerprint } from "../domain/client_cert.ts";

/** The list files (`allow_file`, `deny_file`) of one `ip_access`. */
export function listFilesOf(lists: IpAccessConfig | undefined): string[] {
  if (!lists) return [];
  const of = (f: string | string[] | undefined) => typeof f === "string" ? [f] : f ?? [];
  return [...of(lists.allow_file), ...of(lists.deny_file)];
}

/** Every list file the config's `ip_access` blocks name (top level, routes, tcp entries). */
export function ipAccessFiles(config: Config): string[] {
  return [
    ...new Set([
      ...listFilesOf(config.ip_access),
      ...Object.values(config.routes).flatMap((r) => listFilesOf(r.ip_access)),
      ...Object.values(config.tcp ?? {}).flatMap((e) => listFilesOf(e.ip_access)),
    ]),
  ];
}

/** Checks the top-level `ip_access` and every route's, and every route's `basic_auth` and `jwt_auth`. */
export function validateAccess(
  config: Config,
  opts: { err: Report; warn: Report; env: ValidateEnv },
): void {
  // Each list file is read and checked once, however many lists name it.
  const lists = { ...opts, listFiles: new Map<string, ListFileCheck>() };
  if (config.ip_access) checkIpAccess(config.ip_access, ["ip_access"], lists);
  for (const [name, e] of Object.entries(config.tcp ?? {})) {
    if (e.ip_access) checkIpAccess(e.ip_access, ["tcp", name, "ip_access"], lists);
  }
  for (const [key, route] of Object.entries(config.routes)) {
    if (route.ip_access) checkIpAccess(route.ip_access, ["routes", key, "ip_access"], lists);
    if (route.basic_auth) checkBasicAuth(route.basic_auth, ["routes", key, "basic_auth"], opts);
    if (route.jwt_auth) checkJwtAuth(route, ["routes", key, "jwt_auth"], opts);
    if (route.client_cert) {
      checkClientCert(route.client_cert, ["routes", key, "client_cert"], { ...opts, config });
    }
    if ("cors" in route && route.cors) checkCors(route.cors, ["routes", key, "cors"], opts);
    if ("cors" in route && route.cors && "response_headers" in route && route.response_headers) {
      checkCorsRules(route.response_headers, ["routes", key, "response_headers"], opts);
    }
  }
}

/**
 * A route's `client_cert`: its regexes and fingerprints, and a listener that asks for
 * certificates at all (without `tls.client_auth` no request has one, and every one gets 403).
 */
function checkClientCert(
  rule: ClientCertConfig,
  path: (string | number)[],
  o: { err: Report; warn: Report; config: Config },
): void {
  if (!o.config.tls?.client_auth) {
    o.err(
      path,
      "client_cert needs tls.client_auth: without it no client presents a certificate, and " +
        "every request would be refused",
      "Add tls: { client_auth: { ca_cert: <your clients' CA>, mode: verify_if_given } }",
    );
  }
  for (const k of ["subject_matches", "san_matches"] as const) {
    const src = rule[k];
    if (src === undefined) continue;
    const re = compileRegex(src);
    if (typeof re === "string") o.err([...path, k], re);
    else {
      const risk = backtrackRisk(re);
      if (risk) o.warn([...path, k], `Regular expression /${src}/: ${risk}`, BACKTRACK_HINT);
    }
  }
  rule.fingerprints?.forEach((f, i) => {
    if (!isSha256Fingerprint(f)) {
      o.err(
        [...path, "fingerprints", i],
        `"${f}" is no SHA-256 fingerprint (64 hex digits, colons allowed)`,
        "openssl x509 -in client.pem -noout -fingerprint -sha256 prints it",
      );
    }
  });
}

/** `allow_origin_regex` entries whose unescaped `.` admits look-alike names anyone can register. */
function checkCors(cors: CorsConfig, path: (string | number)[], o: { warn: Report }): void {
  cors.allow_origin_regex?.forEach((src, i) => {
    const re = originRegex(src);
    const other = typeof re === "string" ? undefined : suffixAdmitted(re, src);
    if (other !== undefined) {
      o.warn(
        [...path, "allow_origin_regex", i],
        `/${src}/ admits ${other}, another site (its host may be followed by anything)` +
          (cors.allow_credentials
            ? ": with allow_credentials it could read a signed-in user's data"
            : ""),
        String.raw`End the host where it ends: https://([a-z0-9-]+\.)?example\.com(:\d+)?`,
      );
      return;
    }
    const at = unescapedDot(src);
    if (at === undefined) return;
    const look = `${src.slice(0, at)}x${src.slice(at + 1)}`.replaceAll("\\", "");
    const example = /[()[\]|*+?{}^$]/.test(look)
      ? ""
      : `, so it admits ${look} (anyone can register it)`;
    o.warn(
      [...path, "allow_origin_regex", i],
      `The unescaped . in /${src}/ matches any character, not only a dot${example}`,
      `Write \\. for a dot (in YAML double quotes "\\\\."), or list the origin in allow_origins`,
    );
  });
}

/** Access-Control-* fields a route's header rules set, which its `cors` replaces anyway. */
function checkCorsRules(
  rules: HeaderRulesConfig,
  path: (string | number)[],
  o: { warn: Report },
): void {
  const owned = (name: string) =>
    (CORS_RESPONSE_FIELDS as readonly string[]).includes(name.toLowerCase());
  for (const op of ["add", "set", "append"] as const) {
    for (const name of Object.keys(rules[op] ?? {})) {
      if (!owned(name)) continue;
      o.warn(
        [...path, op, name],
        `${name} is set by the route's cors, which replaces this rule's value on every answer`,
        "Remove the rule and say it in cors (allow_origins, allow_credentials, expose_headers…)",
      );
    }
  }
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

const SLOW_HINT = "Hash it again with cost 10 to 12 (`prox hash-password`, `htpasswd -nbB -C 10`)";

/** Above this bcrypt cost a check takes a noticeable time on Prox's event loop (≈120 ms at 10). */
const MAX_QUICK_COST = 12;

/** Users, hashes, the realm and the htpasswd file. */
function checkBasicAuth(
  auth: BasicAuthConfig,
  path: (string | number)[],
  opts: { err: Report; warn: Report; env: ValidateEnv },
): void {
  const { err, warn } = opts;
  if (CONTROL.test(auth.realm)) {
    err([...path, "realm"], "realm contains a control character", "Use printable text");
  } else if (/[\u0100-\uffff]/.test(auth.realm)) {
    // A Headers value cannot hold them: every challenge, so every request without credentials,
    // would fail with 500.
    err(
      [...path, "realm"],
      "realm has characters a header field cannot carry (beyond Latin-1)",
      "Use ASCII text: the realm goes in the WWW-Authenticate field",
    );
  }
  const costs: [(string | number)[], number][] = [];
  for (const [user, hash] of Object.entries(auth.users)) {
    const at = [...path, "users", user];
    if (user === "" || user.includes(":") || CONTROL.test(user)) {
      err(
        at,
        `Invalid user name "${user}": a Basic user name is not empty and has no colon or control character`,
      );
    }
    const why = hashProblem(hash);
    if (why && bcryptCost(hash) !== null) {
      err(at, `The password of user "${user}" is ${why}`, SLOW_HINT);
    } else if (why) {
      err(
        at,
        `The password of user "${user}" is ${why}: only bcrypt hashes are accepted`,
        HASH_HINT,
      );
    } else costs.push([at, bcryptCost(hash)!]);
  }
  const file = auth.users_file;
  let fileUsers = 0;
  if (file !== undefined) {
    const at = [...path, "users_file"];
    const found = opts.env.exists(file);
    const read = found ? opts.env.readText?.(file) : undefined;
    if (!found) {
      err(
        at,
        `htpasswd file not found: ${file}`,
        "Fix the path (a relative one starts from the working directory of prox)",
      );
    } else if (read !== undefined && "error" in read) {
      err(at, read.error, read.hint.replace("the page", "the file"));
    } else if (read !== undefined) {
      const parsed = parseHtpasswd(read.text);
      fileUsers = parsed.users.size;
      for (const p of parsed.problems) {
        err(
          at,
          `${file}:${p.line}: ${p.message}`,
          p.message.includes("listed again")
            ? "Keep one line per user"
            : p.message.includes("bcrypt hash of cost")
            ? SLOW_HINT
            : HASH_HINT,
        );
      }
      for (const [user, hash] of parsed.users) {
        if (user in auth.users) {
          warn([...path, "users", user], `User "${user}" is in ${file} too: this entry wins`);
        }
        costs.push([at, bcryptCost(hash)!]);
      }
    } else fileUsers = 1; // not read here (unknown content): assume it has users
  }
  if (
    Object.keys(auth.users).length === 0 && fileUsers === 0 &&
    (file === undefined || opts.env.exists(file))
  ) {
    err(
      path,
      "basic_auth has no users: every request would be refused",
      "Add users: { NAME: HASH } (hash with `prox hash-password`) or a users_file",
    );
  }
  const slow = costs.find(([, c]) => c > MAX_QUICK_COST);
  if (slow) {
    warn(
      slow[0],
      `bcrypt cost ${slow[1]}: each password check takes about ${
        bcryptTime(slow[1])
      } of Prox's CPU (a successful one is then cached)`,
      SLOW_HINT,
    );
  }
}

/**
 * What a list file held, once read (a file named by many routes is read and told of once);
 * `trouble`: a problem with it was reported, or its content is unknown.
 */
type ListFileCheck = { entries: number; trouble: boolean };

/** The most bad lines of one list file reported one by one (a feed of the wrong format). */
const MAX_BAD_LINES = 10;

/** Reads and checks one list file, reporting its problems at `at`. */
function checkListFile(
  file: string,
  at: (string | number)[],
  opts: { err: Report; env: ValidateEnv },
): ListFileCheck {
  if (!opts.env.exists(file)) {
    opts.err(
      at,
      `List file not found: ${file}`,
      "Fix the path (a relative one starts from the working directory of prox)",
    );
    return { entries: 0, trouble: true };
  }
  const read = opts.env.readText?.(file);
  // No reader (a unit test's env): nothing to say of the content.
  if (read === undefined) return { entries: 0, trouble: true };
  if ("error" in read) {
    opts.err(at, read.error, read.hint.replace("the page", "the file"));
    return { entries: 0, trouble: true };
  }
  let entries = 0;
  let bad = 0;
  for (const l of listFileLines(read.text)) {
    if (!("problem" in l)) {
      entries++;
    } else if (++bad <= MAX_BAD_LINES) {
      opts.err(
        at,
        `${file}:${l.line}: ${l.problem}`,
        "One address or CIDR block per line (e.g. 203.0.113.0/24); # starts a comment",
      );
    }
  }
  if (bad > MAX_BAD_LINES) {
    opts.err(
      at,
      `${file}: ${bad - MAX_BAD_LINES} more lines are no entry`,
      "One address or CIDR block per line (e.g. 203.0.113.0/24); # starts a comment",
    );
  }
  return { entries, trouble: bad > 0 };
}

/** Entries that do not parse (errors), host bits past the prefix and entries in both lists. */
function checkIpAccess(
  lists: IpAccessConfig,
  path: (string | number)[],
  opts: { err: Report; warn: Report; env: ValidateEnv; listFiles: Map<string, ListFileCheck> },
): void {
  /** Entries the allow files hold, and whether one of them has a problem reported. */
  let allowEntries = 0;
  let allowTrouble = false;
  for (const key of ["allow_file", "deny_file"] as const) {
    const files = typeof lists[key] === "string" ? [lists[key] as string] : lists[key] ?? [];
    files.forEach((file, i) => {
      const at = typeof lists[key] === "string" ? [...path, key] : [...path, key, i];
      let check = opts.listFiles.get(file);
      if (!check) {
        check = checkListFile(file, at, opts);
        opts.listFiles.set(file, check);
      }
      if (key !== "allow_file") return;
      allowEntries += check.entries;
      allowTrouble ||= check.trouble;
    });
  }
  if (lists.allow_file !== undefined && lists.allow.length === 0 && allowEntries === 0) {
    const files = typeof lists.allow_file === "string" ? [lists.allow_file] : lists.allow_file;
    if (!allowTrouble) {
      opts.err(
        [...path, "allow_file"],
        `${files.join(", ")} ${
          files.length === 1 ? "holds" : "hold"
        } no entry: an allow list of none would refuse every client`,
        "Add entries, or remove allow_file; replace a feed whole (write a new file, then rename it over the old one)",
      );
    }
  }
  const denied = new Map<string, string>();
  for (const text of lists.deny) {
    const e = parseAccessEntry(text);
    if (e) denied.set(formatEntry(e), text);
  }
  for (const list of ["allow", "deny"] as const) {
    lists[list].forEach((text, i) => {
      const at = [...path, list, i];
      const e = parseAccessEntry(text);
      if (!e) {
        opts.err(at, `Invalid address or CIDR block "${text}"`, entryHint(text));
        return;
      }
      const block = formatEntry(e);
      if (e.hostBits) {
        const address = text.trim().slice(0, text.trim().indexOf("/"));
        opts.warn(
          at,
          `"${text}" has address bits set past its prefix length: it means ${block}`,
          `Write "${block}" for the block, or "${address}" for the one address`,
        );
      }
      if (list === "allow" && denied.has(block)) {
        opts.warn(
          at,
          `${block} is in both allow and deny: deny wins`,
          `Remove "${text}" from allow, or "${denied.get(block)}" from deny`,
        );
      }
    });
  }
}

/** The fix for an entry that is not an address, a CIDR block or `all`. */
function entryHint(text: string): string {
  const s = text.trim();
  if (/^\[.*\](\/\d+)?$/.test(s)) {
    return `Write the address without brackets: ${s.replace(/[[\]]/g, "")}`;
  }
  if (s.includes("%")) return "Remove the zone id (%…): zones are not matched";
  if (/^[a-z][a-z0-9.-]*$/i.test(s) && /[a-z]/i.test(s.split(".").at(-1)!)) {
    return "Host names are not resolved: write the address or block";
  }
  const len = /\/(\d+)$/.exec(s)?.[1];
  if (len !== undefined) {
    return s.includes(":")
      ? `An IPv6 prefix length is 0 to 128 (here ${len})`
      : `An IPv4 prefix length is 0 to 32 (here ${len})`;
  }
  return "Use an address, a CIDR block or all, e.g. 10.0.0.0/8, 2001:db8::/32, ::1";
}
