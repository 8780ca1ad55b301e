// The `rate_limit_store` checks, chiefly its url: what the Redis client (ioredis) can connect to.
// A URL it cannot parse made start-up fail with a bare "Invalid URL" carrying the password, and a
// reload log it; a database that is not a number failed every connection attempt.

import type { Config } from "./schema.ts";
import type { Report } from "./validate_route.ts";

/** Cross-field rules of `rate_limit_store`. */
export function validateRateLimitStore(
  store: Config["rate_limit_store"],
  opts: { err: Report; warn: Report; env?: (name: string) => string | undefined },
): void {
  const problem = store.url ? redisUrlProblem(store.url) : "url is required when type is redis";
  if (store.type === "redis" && !problem) {
    checkPasswordEnv(["rate_limit_store"], store.url!, store.password_env, opts);
  }
  if (store.type === "redis" && problem) {
    opts.err(
      ["rate_limit_store", store.url ? "url" : "type"],
      problem,
      'Use e.g. url: "redis://127.0.0.1:6379" (rediss:// for TLS)',
    );
  } else if (store.type === "redis" && store.timeout <= 0) {
    // The Redis client times a command out after 0 ms: decisions failed at random (a third of
    // them against a local Redis), each one then following on_error.
    opts.err(
      ["rate_limit_store", "timeout"],
      "timeout must be greater than 0",
      "E.g. timeout: 100ms (how long a request waits for Redis before on_error applies)",
    );
  } else if (store.type === "memory" && store.url !== undefined) {
    // Without type: redis the counters stay in each process, whatever the url says.
    opts.warn(
      ["rate_limit_store", "url"],
      "url is ignored: type is memory (the default)",
      "Add type: redis to share the counters through Redis",
    );
  }
}

/**
 * `password_env` (at `base`): a variable that is set (when the environment can be read here),
 * and a url that gives no password of its own (which would be the one sent: which one is meant?).
 */
export function checkPasswordEnv(
  base: string[],
  url: string,
  name: string | undefined,
  opts: { err: Report; env?: (name: string) => string | undefined },
): void {
  if (name === undefined) return;
  let inUrl = false;
  try {
    const u = new URL(url);
    inUrl = u.password !== "" || [...u.searchParams.keys()].some((k) => k === "password");
  } catch { /* the url's own error */ }
  if (inUrl) {
    opts.err(
      [...base, "password_env"],
      "Both the url and password_env give the Redis password",
      `Take the password out of the url (redis://user@host:6379, or redis://host:6379) and keep it in ${name}`,
    );
  } else if (opts.env && opts.env(name) === undefined) {
    opts.err(
      [...base, "password_env"],
      `Environment variable ${name} is not set`,
      `Export ${name} to Prox (e.g. in its systemd unit: Environment=…)`,
    );
  }
}

/** Why `url` is not a usable Redis URL, or null. Messages never show the password. */
export function redisUrlProblem(url: string): string | null {
  const shown = `Invalid Redis URL "${hidePassword(url)}"`;
  if (!/^rediss?:\/\/[^/]/i.test(url)) return shown;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return shown;
  }
  if (u.hostname === "") return `${shown}: no host`;
  if (!/^(\/|\/\d{1,9})?$/.test(u.pathname)) {
    return `${shown}: the path is the database number, e.g. /0`;
  }
  try {
    decodeURIComponent(u.username);
    decodeURIComponent(u.password);
  } catch {
    return `${shown}: the user name or password has a stray % (write %25 for %)`;
  }
  return null;
}

/** `url` with the password (`user:PASSWORD@`, `?password=`) replaced by `***`. */
function hidePassword(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^/:@]*:)[^/]*@/i, "$1***@")
    .replace(/([?&][^=&]*(?:pass|secret|token)[^=&]*=)[^&#]*/gi, "$1***");
}
