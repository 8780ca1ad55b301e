// The `rate_limit_store.url` check: what the Redis client (ioredis) can connect to. A URL it
// cannot parse made start-up fail with a bare "Invalid URL" carrying the password, and a reload
// log it; a database that is not a number failed every connection attempt.

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
