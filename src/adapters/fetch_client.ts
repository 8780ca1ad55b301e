// A fetch()-based UpstreamClient: the simple fallback (and the HTTP/2 path). It keeps the
// original Host (allowHost), never follows redirects, and maps failures to ProxyError.
// Note: fetch() decodes gzip/br when the request allows it; the faster hand-written HTTP/1.1
// client passes bytes through untouched and is preferred for http:// upstreams.

import { ProxyError } from "../domain/errors.ts";
import type { UpstreamClient, UpstreamRequest } from "../ports.ts";

/** Creates an UpstreamClient on Deno's fetch with one HTTP client per TLS setting. */
export function createFetchClient(): UpstreamClient {
  const clients = new Map<string, Deno.HttpClient>();
  const clientFor = (req: UpstreamRequest): Deno.HttpClient => {
    const key = JSON.stringify(req.tls ?? {});
    let c = clients.get(key);
    if (!c) {
      c = Deno.createHttpClient({
        allowHost: true,
        caCerts: req.tls?.caCerts,
      });
      clients.set(key, c);
    }
    return c;
  };
  return {
    async send(req: UpstreamRequest): Promise<Response> {
      const ctl = new AbortController();
      const onAbort = () => ctl.abort(new ProxyError("client_gone", "Client went away"));
      req.signal?.addEventListener("abort", onAbort, { once: true });
      const limit = req.timeouts.connect + req.timeouts.responseHeader;
      const timer = limit > 0
        ? setTimeout(() => ctl.abort(new ProxyError("timeout", "Upstream timed out")), limit)
        : undefined;
      try {
        const res = await fetch(req.url, {
          method: req.method,
          headers: req.headers,
          body: req.body,
          redirect: "manual",
          client: clientFor(req),
          signal: ctl.signal,
        });
        return res;
      } catch (err) {
        if (ctl.signal.aborted && ctl.signal.reason instanceof ProxyError) throw ctl.signal.reason;
        if (err instanceof ProxyError) throw err;
        const msg = err instanceof Error ? err.message : String(err);
        const refused = /refused|connect|dns|resolve|unreachable/i.test(msg);
        throw new ProxyError(
          refused ? "connect" : "upstream_reset",
          `Cannot reach upstream "${req.url.origin}": ${msg}`,
          { source: req.url.origin, sentNothing: refused, cause: err },
        );
      } finally {
        clearTimeout(timer);
        req.signal?.removeEventListener("abort", onAbort);
      }
    },
    close(): Promise<void> {
      for (const c of clients.values()) c.close();
      clients.clear();
      return Promise.resolve();
    },
  };
}
