// The JwksFetcher port on Deno's fetch: a JWK Set is a small public JSON document, fetched rarely
// (proxy/jwks.ts), so the platform client is enough. Redirects are followed (IdPs move them);
// the body is read up to a cap and the whole exchange is bounded by a timeout.

import type { JwksAnswer, JwksFetcher } from "../ports.ts";

/** Fetches JWK Sets with `fetch`; `client` (a Deno.HttpClient) may add trusted CAs. */
export function createJwksFetcher(client?: Deno.HttpClient): JwksFetcher {
  return {
    async fetch(url, opts): Promise<JwksAnswer> {
      const signal = AbortSignal.timeout(opts.timeoutMs);
      let res: Response;
      try {
        res = await fetch(url, {
          signal,
          headers: { accept: "application/jwk-set+json, application/json" },
          ...(client ? { client } : {}),
        });
      } catch (err) {
        throw new Error(fetchFailure(err, { signal, timeoutMs: opts.timeoutMs }));
      }
      // fetch follows a redirect from https to http: keys that sign tokens would then come over
      // an unprotected connection (what validate warns about for an http jwks_url).
      if (/^https:/i.test(url) && res.url.startsWith("http:")) {
        await res.body?.cancel().catch(() => {});
        throw new Error(`JWK Set redirected from https to http (${res.url}): refused`);
      }
      const reader = res.body?.getReader();
      const chunks: Uint8Array[] = [];
      let size = 0;
      try {
        while (reader) {
          const { done, value } = await reader.read();
          if (done) break;
          size += value.length;
          if (size > opts.maxBytes) throw new Error(`JWK Set larger than ${opts.maxBytes} bytes`);
          chunks.push(value);
        }
      } finally {
        await reader?.cancel().catch(() => {});
      }
      const bytes = new Uint8Array(size);
      let at = 0;
      for (const c of chunks) {
        bytes.set(c, at);
        at += c.length;
      }
      return {
        status: res.status,
        body: new TextDecoder().decode(bytes),
        cacheControl: res.headers.get("cache-control"),
      };
    },
  };
}

/**
 * Why fetch failed, said plainly: its TypeError says only "fetch failed"; the reason (a
 * certificate, DNS, a refused connection) is in its cause.
 */
function fetchFailure(err: unknown, o: { signal: AbortSignal; timeoutMs: number }): string {
  if (o.signal.aborted) return `No answer within ${o.timeoutMs} ms`;
  const cause = err instanceof Error ? err.cause : undefined;
  const text = cause instanceof Error ? cause.message : err instanceof Error ? err.message : "";
  // "error sending request for url (…): client error (Connect): dns error: …" → from "client".
  return text.replace(/^error sending request for url \([^)]*\): /, "") || String(err);
}
