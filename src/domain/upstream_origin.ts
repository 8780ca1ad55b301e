// Upstream origins: `http://host:port` and `https://host:port` targets, and `unix:/path/app.sock`
// ones (HTTP/1.1 or h2c over a Unix domain socket, as nginx's `http://unix:/path:` and Caddy's
// `unix//path`). A unix target's origin is a URL with protocol "unix:" whose path is the socket's,
// percent-encoded; it has no host and its `origin` is "null", so code that names or keys an
// upstream goes through these functions.

/** True for a `unix:` target (an HTTP upstream listening on a Unix domain socket). */
export function isUnixTarget(target: string): boolean {
  return target.startsWith("unix:");
}

/**
 * The origin URL of `unix:<path>`. `#` and `?` are escaped too (encodeURI leaves them): they
 * would start a fragment or query, and `/tmp/a#b.sock` connected to `/tmp/a`.
 */
export function unixOrigin(target: string): URL {
  return new URL("unix:" + encodeURI(target.slice("unix:".length)).replace(/[#?]/g, escape1));
}

const escape1 = (c: string) => c === "#" ? "%23" : "%3F";

/** The file system path of a unix origin's socket. */
export function socketPath(origin: URL): string {
  return decodeURIComponent(origin.pathname);
}

/**
 * How logs, errors and `/status` name an origin: `https://host:port`, or `unix:/path` as the
 * config wrote it.
 */
export function originName(origin: URL): string {
  return origin.protocol === "unix:" ? "unix:" + socketPath(origin) : origin.origin;
}

/** The Host a request to the origin carries unless `preserve_host`: `localhost` on a socket. */
export function originHost(origin: URL): string {
  // Every request asks: an http(s) origin answers with its host alone (reading `protocol` too
  // would build a string per request); only a unix one has none.
  const host = origin.host;
  return host !== "" || origin.protocol !== "unix:" ? host : "localhost";
}
